/* pickle_read.h: a small, bounded reader of Python pickle streams (for the .pth reader).
 *
 * dsc_pickle_reader_load interprets the binary opcodes of protocols 2 to 5 that torch.save
 * and pickle.dumps emit for checkpoints (see pickle_read.c for the list); any other opcode is
 * an error "unsupported pickle opcode 0x.. at byte N". Nothing is ever executed: globals
 * are plain (module, name) values, and REDUCE / NEWOBJ / BUILD are interpreted only for the
 * callables a state dict needs:
 *   collections.OrderedDict()                          -> an empty dict
 *   torch._utils._rebuild_tensor_v2 / _rebuild_tensor  -> a tensor (storage, offset, size, stride)
 *   torch._utils._rebuild_parameter(_with_state)       -> its tensor argument
 *   torch._tensor._rebuild_from_type_v2(f, type, args) -> f(*args) when f is one of the above
 * Any other call gives an opaque OBJECT value, so unknown things elsewhere in a checkpoint
 * (optimizer state, an argparse Namespace, numpy arrays) load without failing. BUILD on a
 * dict, tensor or object is ignored (the state dict's _metadata). BINPERSID turns the
 * persistent id ('storage', torch.<X>Storage, key, location, numel[, view_metadata]) into a
 * STORAGE value (and records it, in creation order, for the legacy format's raw data);
 * other persistent ids become OBJECT values.
 *
 * Memory: every value lives in the reader's arena and is freed at once by
 * dsc_pickle_reader_free. Strings and bytes point into the input, which must outlive the
 * reader. Hard limits (stack size, mark nesting, memo size, arena bytes) and bounds checks
 * on every read mean that hostile input yields an error, never a crash, a hang or unbounded
 * memory; nothing recurses. Dicts keep every SETITEM in order (duplicate keys included):
 * dsc_pickle_dict_get returns the last value set for a key, as Python would.
 * Errors are one line without a file name ("<problem> at byte N", N an offset in the buffer
 * given to load); the caller prefixes the file and record.
 */
#ifndef DSC_PICKLE_READ_H
#define DSC_PICKLE_READ_H

#include <stddef.h>
#include <stdint.h>

#include "dsc/dtype.h"
#include "dsc/status.h"

/* Hard limits of one load (each breach is an error naming it). */
#define DSC_PICKLE_MAX_STACK (1u << 22)      /* values on the stack */
#define DSC_PICKLE_MAX_MARKS 1000u           /* nested MARKs */
#define DSC_PICKLE_MAX_MEMO (1u << 24)       /* memo indices */
#define DSC_PICKLE_MAX_ARENA (1ull << 30)    /* bytes of values per reader */
#define DSC_PICKLE_MAX_LONG 64u              /* bytes of a LONG1 / LONG4 integer */

typedef enum dsc_pickle_kind {
  DSC_PV_NONE,
  DSC_PV_BOOL,    /* i: 0 or 1 */
  DSC_PV_INT,     /* i: fits in int64 */
  DSC_PV_BIGINT,  /* s, n: little-endian two's complement bytes of a longer integer */
  DSC_PV_FLOAT,   /* f */
  DSC_PV_STR,     /* s, n: UTF-8 text (also Python 2 str from BINSTRING), not NUL-terminated */
  DSC_PV_BYTES,   /* s, n */
  DSC_PV_TUPLE,   /* items[0..count) */
  DSC_PV_LIST,    /* items[0..count) */
  DSC_PV_DICT,    /* items[2i] = key, items[2i+1] = value, for 2i < count */
  DSC_PV_GLOBAL,  /* s, n = module; s2, n2 = name */
  DSC_PV_STORAGE, /* storage */
  DSC_PV_TENSOR,  /* tensor */
  DSC_PV_OBJECT   /* anything else: an opaque result of a call or persistent id */
} dsc_pickle_kind;

typedef struct dsc_pickle_storage {
  const char *type;   /* the storage type's name ("FloatStorage", "UntypedStorage", "float32") */
  size_t type_len;
  int dtype;          /* a dsc_dtype, or -1 when dsc does not read this type */
  size_t elsize;      /* bytes per element (also for types dsc does not read); 0 if unknown */
  const char *key;    /* the storage's key (zip: record data/<key>; legacy: raw data order) */
  size_t key_len;
  int64_t numel;      /* elements of the (root) storage */
  int has_view;       /* legacy view_metadata (view_key, offset, size) was given */
  int64_t view_offset, view_numel; /* in elements of the root storage */
} dsc_pickle_storage;

typedef struct dsc_pickle_tensor {
  const dsc_pickle_storage *storage; /* NULL when `error` is set */
  int64_t offset;                    /* storage offset, in elements */
  int ndim;
  int64_t size[DSC_MAX_DIMS], stride[DSC_MAX_DIMS];
  const char *error; /* non-NULL: why this tensor cannot be read (static text) */
} dsc_pickle_tensor;

typedef struct dsc_pickle_value dsc_pickle_value;
struct dsc_pickle_value {
  dsc_pickle_kind kind;
  union {
    int64_t i;
    double f;
    struct {
      const char *s, *s2;
      size_t n, n2;
    } str;
    struct {
      dsc_pickle_value **items;
      size_t count, cap;
    } seq;
    dsc_pickle_storage *storage;
    dsc_pickle_tensor *tensor;
  } u;
};

typedef struct dsc_pickle_reader dsc_pickle_reader;

dsc_status *dsc_pickle_reader_new(dsc_pickle_reader **out);
/* Interprets one pickle from buf[*pos] up to and including its STOP; on success *pos is the
 * byte after STOP and *out the value on top of the stack. Values of earlier loads stay
 * valid (the memo does not carry over, as in Python). */
dsc_status *dsc_pickle_reader_load(dsc_pickle_reader *r, const unsigned char *buf, size_t len,
                                   size_t *pos, dsc_pickle_value **out);
/* Every STORAGE value created so far, in creation order (one per BINPERSID). */
size_t dsc_pickle_reader_storage_count(const dsc_pickle_reader *r);
const dsc_pickle_storage *dsc_pickle_reader_storage(const dsc_pickle_reader *r, size_t i);
void dsc_pickle_reader_free(dsc_pickle_reader *r);

/* 1 when v is a STR equal to the NUL-terminated `text`. */
int dsc_pickle_str_is(const dsc_pickle_value *v, const char *text);
/* The value of the last SETITEM of STR key `key` in dict d; NULL when absent or d not a dict. */
dsc_pickle_value *dsc_pickle_dict_get(const dsc_pickle_value *d, const char *key);
/* "dict", "tensor", ... for messages. */
const char *dsc_pickle_kind_name(dsc_pickle_kind k);

#endif
