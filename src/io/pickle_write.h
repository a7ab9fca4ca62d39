/* pickle_write.h: emitting Python pickle streams by hand (for the .pth and detectron2 writers).
 *
 * A dsc_pkw is a growable byte buffer plus emitters for the few opcodes a checkpoint needs,
 * for protocol 2 (PyTorch's torch.save) or protocol 4 (what pickle.dumps gives numpy arrays
 * by default). Each emitter picks the shortest encoding the protocol allows (BININT1 /
 * BININT / LONG1, SHORT_BINUNICODE / BINUNICODE / BINUNICODE8, ...). Globals and strings
 * emitted with dsc_pkw_global / dsc_pkw_memo_str are memoized the first time (BINPUT or
 * MEMOIZE) and fetched again with BINGET / LONG_BINGET afterwards, as Python's pickler does.
 * No FRAME opcodes are written (optional in protocol 4).
 *
 * Errors are sticky: an emitter that cannot allocate (or is asked for something the
 * protocol cannot express) records the first error and later emitters do nothing;
 * dsc_pkw_finish reports it. So callers emit a whole stream and check once.
 */
#ifndef DSC_PICKLE_WRITE_H
#define DSC_PICKLE_WRITE_H

#include <stddef.h>
#include <stdint.h>

#include "dsc/status.h"

/* Opcodes used by the writers (names as in Python's pickletools). */
enum {
  DSC_PK_MARK = '(',
  DSC_PK_STOP = '.',
  DSC_PK_NONE = 'N',
  DSC_PK_REDUCE = 'R',
  DSC_PK_BUILD = 'b',
  DSC_PK_BINPERSID = 'Q',
  DSC_PK_EMPTY_DICT = '}',
  DSC_PK_EMPTY_TUPLE = ')',
  DSC_PK_TUPLE = 't',
  DSC_PK_TUPLE1 = 0x85,
  DSC_PK_TUPLE2 = 0x86,
  DSC_PK_TUPLE3 = 0x87,
  DSC_PK_SETITEM = 's',
  DSC_PK_SETITEMS = 'u',
  DSC_PK_NEWTRUE = 0x88,
  DSC_PK_NEWFALSE = 0x89
};

typedef struct dsc_pkw_memo {
  char *key;  /* "g:module\nname" for globals, "s:text" for strings */
  uint32_t index;
} dsc_pkw_memo;

typedef struct dsc_pkw {
  unsigned char *buf;
  size_t len, cap;
  int proto;           /* 2 or 4 */
  uint32_t next_memo;  /* next memo index */
  dsc_pkw_memo *memo;
  int memo_count, memo_cap;
  dsc_status *err;     /* first error, sticky */
} dsc_pkw;

/* Starts a stream (writes PROTO). proto is 2 or 4. Never fails: errors surface in finish. */
void dsc_pkw_init(dsc_pkw *w, int proto);
/* Frees the buffer, the memo table and any pending error. */
void dsc_pkw_free(dsc_pkw *w);

/* Makes room for n more bytes up front (a writer that knows the stream's size avoids
 * copying it while it grows). */
void dsc_pkw_reserve(dsc_pkw *w, size_t n);

/* One opcode without argument (the DSC_PK_* constants). */
void dsc_pkw_op(dsc_pkw *w, int op);
void dsc_pkw_int(dsc_pkw *w, int64_t v);
void dsc_pkw_bool(dsc_pkw *w, int v);
/* A str from n bytes of UTF-8 (not checked: the callers' strings come from validated
 * safetensors headers). */
void dsc_pkw_str(dsc_pkw *w, const char *s, size_t n);
/* Same for a NUL-terminated string. */
void dsc_pkw_cstr(dsc_pkw *w, const char *s);
/* A memoized str: emitted once, fetched from the memo afterwards. */
void dsc_pkw_memo_str(dsc_pkw *w, const char *s);
/* A bytes object (protocol >= 3 only; an error in protocol 2). p may be NULL when n is 0. */
void dsc_pkw_bytes(dsc_pkw *w, const void *p, size_t n);
/* A memoized global: GLOBAL "module\nname\n" in protocol 2, two strs + STACK_GLOBAL in 4. */
void dsc_pkw_global(dsc_pkw *w, const char *module, const char *name);
/* A tuple of ints (shape, stride): EMPTY_TUPLE / TUPLE1-3 / MARK ... TUPLE. */
void dsc_pkw_int_tuple(dsc_pkw *w, const int64_t *v, int n);

/* Writes STOP and hands over the stream (*out, *len; the caller frees *out), or returns the
 * first error. `w` is freed either way. */
dsc_status *dsc_pkw_finish(dsc_pkw *w, unsigned char **out, size_t *len);

#endif
