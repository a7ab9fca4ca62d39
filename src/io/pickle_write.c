/* pickle_write.c: the hand-written pickle emitter (src/io/pickle_write.h).
 *
 * Encodings follow CPython's pickler for the same protocol: integers as BININT1 (0..255),
 * BININT2 (..65535), BININT (int32) or LONG1 (shortest little-endian two's complement);
 * strings as SHORT_BINUNICODE (protocol 4, < 256 bytes), BINUNICODE or BINUNICODE8; bytes as
 * SHORT_BINBYTES / BINBYTES / BINBYTES8. Memo puts are BINPUT / LONG_BINPUT in protocol 2 and
 * MEMOIZE in protocol 4; gets are BINGET / LONG_BINGET. All multi-byte fields little-endian.
 */
#include "io/pickle_write.h"

#include <stdlib.h>
#include <string.h>

enum {
  PK_PROTO = 0x80,
  PK_BININT = 'J',
  PK_BININT1 = 'K',
  PK_BININT2 = 'M',
  PK_LONG1 = 0x8a,
  PK_BINUNICODE = 'X',
  PK_SHORT_BINUNICODE = 0x8c,
  PK_BINUNICODE8 = 0x8d,
  PK_BINBYTES = 'B',
  PK_SHORT_BINBYTES = 'C',
  PK_BINBYTES8 = 0x8e,
  PK_GLOBAL = 'c',
  PK_STACK_GLOBAL = 0x93,
  PK_BINPUT = 'q',
  PK_LONG_BINPUT = 'r',
  PK_MEMOIZE = 0x94,
  PK_BINGET = 'h',
  PK_LONG_BINGET = 'j'
};

static void fail(dsc_pkw *w, dsc_status *st) {
  if (!w->err) w->err = st;
  else dsc_status_free(st);
}

/* Makes room for n more bytes; returns 0 on success. */
static int reserve(dsc_pkw *w, size_t n) {
  if (w->err) return -1;
  if (n <= w->cap - w->len) return 0;
  if (n > SIZE_MAX / 2 - w->len) {
    fail(w, dsc_errorf("pickle: stream larger than the address space"));
    return -1;
  }
  size_t cap = w->cap ? 2 * w->cap : 4096;
  if (cap - w->len < n) cap = w->len + n;
  unsigned char *p = realloc(w->buf, cap);
  if (!p) {
    fail(w, dsc_errorf("pickle: out of memory growing the stream to %zu bytes", cap));
    return -1;
  }
  w->buf = p;
  w->cap = cap;
  return 0;
}

static void put(dsc_pkw *w, const void *p, size_t n) {
  if (n == 0 || reserve(w, n)) return;
  memcpy(w->buf + w->len, p, n);
  w->len += n;
}

static void put_byte(dsc_pkw *w, unsigned v) {
  unsigned char b = (unsigned char)v;
  put(w, &b, 1);
}

static void put_le(dsc_pkw *w, uint64_t v, int nbytes) {
  unsigned char b[8];
  for (int i = 0; i < nbytes; i++) b[i] = (unsigned char)(v >> (8 * i));
  put(w, b, (size_t)nbytes);
}

void dsc_pkw_init(dsc_pkw *w, int proto) {
  memset(w, 0, sizeof *w);
  w->proto = proto;
  if (proto != 2 && proto != 4) {
    fail(w, dsc_errorf("pickle: protocol %d not supported by the writer (2 or 4)", proto));
    return;
  }
  put_byte(w, PK_PROTO);
  put_byte(w, (unsigned)proto);
}

void dsc_pkw_free(dsc_pkw *w) {
  free(w->buf);
  for (int i = 0; i < w->memo_count; i++) free(w->memo[i].key);
  free(w->memo);
  dsc_status_free(w->err);
  memset(w, 0, sizeof *w);
}

void dsc_pkw_reserve(dsc_pkw *w, size_t n) { (void)reserve(w, n); }

void dsc_pkw_op(dsc_pkw *w, int op) { put_byte(w, (unsigned)op); }

void dsc_pkw_int(dsc_pkw *w, int64_t v) {
  if (v >= 0 && v < 256) {
    put_byte(w, PK_BININT1);
    put_le(w, (uint64_t)v, 1);
  } else if (v >= 0 && v < 65536) {
    put_byte(w, PK_BININT2);
    put_le(w, (uint64_t)v, 2);
  } else if (v >= INT32_MIN && v <= INT32_MAX) {
    put_byte(w, PK_BININT);
    put_le(w, (uint64_t)v, 4);
  } else {
    /* Shortest two's complement: drop top bytes that only repeat the sign. */
    int n = 8;
    while (n > 1) {
      int64_t top = v >> (8 * (n - 1));           /* arithmetic shift: sign kept */
      int next_sign = (int)((v >> (8 * (n - 1) - 1)) & 1);
      if (!((top == 0 && !next_sign) || (top == -1 && next_sign))) break;
      n--;
    }
    put_byte(w, PK_LONG1);
    put_byte(w, (unsigned)n);
    put_le(w, (uint64_t)v, n);
  }
}

void dsc_pkw_bool(dsc_pkw *w, int v) { put_byte(w, v ? DSC_PK_NEWTRUE : DSC_PK_NEWFALSE); }

void dsc_pkw_str(dsc_pkw *w, const char *s, size_t n) {
  if (w->proto >= 4 && n < 256) {
    put_byte(w, PK_SHORT_BINUNICODE);
    put_le(w, n, 1);
  } else if (n <= UINT32_MAX) {
    put_byte(w, PK_BINUNICODE);
    put_le(w, n, 4);
  } else if (w->proto >= 4) {
    put_byte(w, PK_BINUNICODE8);
    put_le(w, n, 8);
  } else {
    fail(w, dsc_errorf("pickle: a string of %zu bytes does not fit protocol %d", n, w->proto));
    return;
  }
  put(w, s, n);
}

void dsc_pkw_cstr(dsc_pkw *w, const char *s) { dsc_pkw_str(w, s, strlen(s)); }

void dsc_pkw_bytes(dsc_pkw *w, const void *p, size_t n) {
  if (w->proto < 3) {
    fail(w, dsc_errorf("pickle: bytes objects need protocol 3 or later (stream is %d)",
                       w->proto));
    return;
  }
  if (n < 256) {
    put_byte(w, PK_SHORT_BINBYTES);
    put_le(w, n, 1);
  } else if (n <= UINT32_MAX) {
    put_byte(w, PK_BINBYTES);
    put_le(w, n, 4);
  } else {
    put_byte(w, PK_BINBYTES8);
    put_le(w, n, 8);
  }
  put(w, p, n);
}

/* The memo index of `key`, or -1 when it has not been memoized yet. */
static int64_t memo_find(const dsc_pkw *w, const char *key) {
  for (int i = 0; i < w->memo_count; i++)
    if (strcmp(w->memo[i].key, key) == 0) return w->memo[i].index;
  return -1;
}

static void memo_get(dsc_pkw *w, uint32_t index) {
  if (index < 256) {
    put_byte(w, PK_BINGET);
    put_le(w, index, 1);
  } else {
    put_byte(w, PK_LONG_BINGET);
    put_le(w, index, 4);
  }
}

/* Memoizes the object on top of the stack under `key` (already known to be absent). */
static void memo_put(dsc_pkw *w, const char *key) {
  if (w->err) return;
  if (w->memo_count == w->memo_cap) {
    int cap = w->memo_cap ? 2 * w->memo_cap : 16;
    dsc_pkw_memo *m = realloc(w->memo, (size_t)cap * sizeof *m);
    if (!m) {
      fail(w, dsc_errorf("pickle: out of memory growing the memo"));
      return;
    }
    w->memo = m;
    w->memo_cap = cap;
  }
  char *k = strdup(key);
  if (!k) {
    fail(w, dsc_errorf("pickle: out of memory growing the memo"));
    return;
  }
  uint32_t index = w->next_memo++;
  w->memo[w->memo_count].key = k;
  w->memo[w->memo_count].index = index;
  w->memo_count++;
  if (w->proto >= 4) {
    put_byte(w, PK_MEMOIZE);
  } else if (index < 256) {
    put_byte(w, PK_BINPUT);
    put_le(w, index, 1);
  } else {
    put_byte(w, PK_LONG_BINPUT);
    put_le(w, index, 4);
  }
}

/* "<tag>:<a>[\n<b>]" in a malloc'ed string, or NULL (error recorded). */
static char *memo_key(dsc_pkw *w, char tag, const char *a, const char *b) {
  size_t la = strlen(a), lb = b ? strlen(b) : 0;
  char *k = malloc(la + lb + 4);
  if (!k) {
    fail(w, dsc_errorf("pickle: out of memory"));
    return NULL;
  }
  k[0] = tag;
  k[1] = ':';
  memcpy(k + 2, a, la);
  size_t n = 2 + la;
  if (b) {
    k[n++] = '\n';
    memcpy(k + n, b, lb);
    n += lb;
  }
  k[n] = '\0';
  return k;
}

void dsc_pkw_memo_str(dsc_pkw *w, const char *s) {
  char *key = memo_key(w, 's', s, NULL);
  if (!key) return;
  int64_t idx = memo_find(w, key);
  if (idx >= 0) {
    memo_get(w, (uint32_t)idx);
  } else {
    dsc_pkw_cstr(w, s);
    memo_put(w, key);
  }
  free(key);
}

void dsc_pkw_global(dsc_pkw *w, const char *module, const char *name) {
  char *key = memo_key(w, 'g', module, name);
  if (!key) return;
  int64_t idx = memo_find(w, key);
  if (idx >= 0) {
    memo_get(w, (uint32_t)idx);
  } else {
    if (w->proto >= 4) {
      dsc_pkw_memo_str(w, module);
      dsc_pkw_memo_str(w, name);
      put_byte(w, PK_STACK_GLOBAL);
    } else {
      put_byte(w, PK_GLOBAL);
      put(w, module, strlen(module));
      put_byte(w, '\n');
      put(w, name, strlen(name));
      put_byte(w, '\n');
    }
    memo_put(w, key);
  }
  free(key);
}

void dsc_pkw_int_tuple(dsc_pkw *w, const int64_t *v, int n) {
  if (n == 0) {
    dsc_pkw_op(w, DSC_PK_EMPTY_TUPLE);
    return;
  }
  if (n > 3) dsc_pkw_op(w, DSC_PK_MARK);
  for (int i = 0; i < n; i++) dsc_pkw_int(w, v[i]);
  static const int small[4] = {0, DSC_PK_TUPLE1, DSC_PK_TUPLE2, DSC_PK_TUPLE3};
  dsc_pkw_op(w, n <= 3 ? small[n] : DSC_PK_TUPLE);
}

dsc_status *dsc_pkw_finish(dsc_pkw *w, unsigned char **out, size_t *len) {
  put_byte(w, DSC_PK_STOP);
  *out = NULL;
  *len = 0;
  if (w->err) {
    dsc_status *st = w->err;
    w->err = NULL;
    dsc_pkw_free(w);
    return st;
  }
  *out = w->buf;
  *len = w->len;
  w->buf = NULL;
  dsc_pkw_free(w);
  return NULL;
}
