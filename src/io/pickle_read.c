/* pickle_read.c: the bounded pickle virtual machine of pickle_read.h.
 *
 * Opcodes understood (names as in Python's pickletools): PROTO, FRAME, STOP, MARK, POP,
 * POP_MARK, DUP, NONE, NEWTRUE, NEWFALSE, BININT, BININT1, BININT2, LONG1, LONG4, BINFLOAT,
 * SHORT_BINUNICODE, BINUNICODE, BINUNICODE8, SHORT_BINBYTES, BINBYTES, BINBYTES8,
 * SHORT_BINSTRING, BINSTRING, EMPTY_TUPLE, TUPLE, TUPLE1-3, EMPTY_LIST, APPEND, APPENDS,
 * LIST, EMPTY_DICT, DICT, SETITEM, SETITEMS, GLOBAL, STACK_GLOBAL, REDUCE, BUILD, NEWOBJ,
 * BINPERSID, BINPUT, LONG_BINPUT, MEMOIZE, BINGET, LONG_BINGET.
 *
 * The machine follows Python 3's Unpickler: MARK starts a new, empty stack segment (values
 * below the innermost mark cannot be popped), POP on an empty segment pops the mark, the
 * memo is a table index -> value. Every read of the input goes through take(), which
 * checks the remaining length first; every count taken from the input is compared with
 * what is left before anything is allocated from it. Values are bump-allocated in arena
 * blocks (capped at DSC_PICKLE_MAX_ARENA bytes); the stack and memo are heap arrays owned by
 * one load. Each opcode consumes at least one input byte and does work proportional to the
 * values it moves, so a load takes time linear in its input.
 */
#include "io/pickle_read.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- arena ---- */

typedef struct arena_block {
  struct arena_block *next;
  size_t used, cap;
  max_align_t data[]; /* cap bytes */
} arena_block;

struct dsc_pickle_reader {
  arena_block *blocks;
  size_t arena_bytes;                /* total capacity of all blocks */
  dsc_pickle_storage **storages;     /* heap array, in creation order */
  size_t storage_count, storage_cap;
  dsc_pickle_value *none, *yes, *no, *empty_tuple; /* immutable singletons */
};

#define ARENA_BLOCK (64u * 1024u)

/* n bytes aligned to 8 from the arena; NULL when the cap is reached or malloc fails. */
static void *arena_alloc(dsc_pickle_reader *r, size_t n) {
  n = (n + 7u) & ~(size_t)7u;
  arena_block *b = r->blocks;
  if (!b || b->cap - b->used < n) {
    size_t cap = n > ARENA_BLOCK ? n : ARENA_BLOCK;
    if (cap > DSC_PICKLE_MAX_ARENA || r->arena_bytes > DSC_PICKLE_MAX_ARENA - cap) return NULL;
    b = malloc(sizeof *b + cap);
    if (!b) return NULL;
    b->next = r->blocks;
    b->used = 0;
    b->cap = cap;
    r->blocks = b;
    r->arena_bytes += cap;
  }
  void *p = (unsigned char *)b->data + b->used;
  b->used += n;
  return p;
}

/* ---- reader ---- */

static dsc_pickle_value *value_alloc(dsc_pickle_reader *r, dsc_pickle_kind kind) {
  dsc_pickle_value *v = arena_alloc(r, sizeof *v);
  if (v) {
    memset(v, 0, sizeof *v);
    v->kind = kind;
  }
  return v;
}

dsc_status *dsc_pickle_reader_new(dsc_pickle_reader **out) {
  *out = NULL;
  dsc_pickle_reader *r = calloc(1, sizeof *r);
  if (!r) return dsc_errorf("pickle: out of memory");
  r->none = value_alloc(r, DSC_PV_NONE);
  r->yes = value_alloc(r, DSC_PV_BOOL);
  r->no = value_alloc(r, DSC_PV_BOOL);
  r->empty_tuple = value_alloc(r, DSC_PV_TUPLE);
  if (!r->none || !r->yes || !r->no || !r->empty_tuple) {
    dsc_pickle_reader_free(r);
    return dsc_errorf("pickle: out of memory");
  }
  r->yes->u.i = 1;
  *out = r;
  return NULL;
}

void dsc_pickle_reader_free(dsc_pickle_reader *r) {
  if (!r) return;
  arena_block *b = r->blocks;
  while (b) {
    arena_block *next = b->next;
    free(b);
    b = next;
  }
  free(r->storages);
  free(r);
}

size_t dsc_pickle_reader_storage_count(const dsc_pickle_reader *r) { return r->storage_count; }

const dsc_pickle_storage *dsc_pickle_reader_storage(const dsc_pickle_reader *r, size_t i) {
  return i < r->storage_count ? r->storages[i] : NULL;
}

const char *dsc_pickle_kind_name(dsc_pickle_kind k) {
  static const char *names[] = {"None", "bool",  "int",    "int",     "float",  "str",   "bytes",
                                "tuple", "list", "dict",   "global",  "storage", "tensor", "object"};
  return (unsigned)k < sizeof names / sizeof names[0] ? names[k] : "?";
}

static bool bytes_is(const char *s, size_t n, const char *text) {
  size_t t = strlen(text);
  return n == t && memcmp(s, text, t) == 0;
}

int dsc_pickle_str_is(const dsc_pickle_value *v, const char *text) {
  return v && v->kind == DSC_PV_STR && bytes_is(v->u.str.s, v->u.str.n, text);
}

dsc_pickle_value *dsc_pickle_dict_get(const dsc_pickle_value *d, const char *key) {
  if (!d || d->kind != DSC_PV_DICT) return NULL;
  for (size_t i = d->u.seq.count; i >= 2; i -= 2)
    if (dsc_pickle_str_is(d->u.seq.items[i - 2], key)) return d->u.seq.items[i - 1];
  return NULL;
}

/* ---- one load ---- */

enum {
  OP_MARK = '(', OP_STOP = '.', OP_POP = '0', OP_POP_MARK = '1', OP_DUP = '2',
  OP_BINFLOAT = 'G', OP_BININT = 'J', OP_BININT1 = 'K', OP_BININT2 = 'M', OP_NONE = 'N',
  OP_BINPERSID = 'Q', OP_REDUCE = 'R', OP_BINSTRING = 'T', OP_SHORT_BINSTRING = 'U',
  OP_BINUNICODE = 'X', OP_APPEND = 'a', OP_BUILD = 'b', OP_GLOBAL = 'c', OP_DICT = 'd',
  OP_EMPTY_DICT = '}', OP_APPENDS = 'e', OP_BINGET = 'h', OP_LONG_BINGET = 'j', OP_LIST = 'l',
  OP_EMPTY_LIST = ']', OP_BINPUT = 'q', OP_LONG_BINPUT = 'r', OP_SETITEM = 's', OP_TUPLE = 't',
  OP_EMPTY_TUPLE = ')', OP_SETITEMS = 'u', OP_BINBYTES = 'B', OP_SHORT_BINBYTES = 'C',
  OP_PROTO = 0x80, OP_NEWOBJ = 0x81, OP_TUPLE1 = 0x85, OP_TUPLE2 = 0x86, OP_TUPLE3 = 0x87,
  OP_NEWTRUE = 0x88, OP_NEWFALSE = 0x89, OP_LONG1 = 0x8a, OP_LONG4 = 0x8b,
  OP_SHORT_BINUNICODE = 0x8c, OP_BINUNICODE8 = 0x8d, OP_BINBYTES8 = 0x8e,
  OP_STACK_GLOBAL = 0x93, OP_MEMOIZE = 0x94, OP_FRAME = 0x95
};

typedef struct load_state {
  dsc_pickle_reader *r;
  const unsigned char *buf;
  size_t start, len, pos; /* this pickle begins at buf[start] */
  size_t op_at; /* offset of the current opcode */
  int op;
  dsc_pickle_value **stack;
  size_t sp, stack_cap;
  size_t marks[DSC_PICKLE_MAX_MARKS]; /* stack heights at each MARK */
  size_t nmarks;
  dsc_pickle_value **memo;
  size_t memo_cap, memo_count;
} load_state;

static dsc_status *fail(const load_state *st, const char *what) {
  return dsc_errorf("%s (opcode 0x%02x at byte %zu)", what, st->op, st->op_at);
}

static dsc_status *oom(const load_state *st) {
  return dsc_errorf("out of memory (more than %llu MiB of values) at byte %zu",
                    (unsigned long long)(DSC_PICKLE_MAX_ARENA >> 20), st->op_at);
}

/* Points *p at the next n input bytes. */
static dsc_status *take(load_state *st, size_t n, const unsigned char **p) {
  if (st->len - st->pos < n)
    return dsc_errorf("truncated: opcode 0x%02x at byte %zu needs %zu bytes, %zu left",
                      st->op, st->op_at, n, st->len - st->pos);
  *p = st->buf + st->pos;
  st->pos += n;
  return NULL;
}

static uint64_t le_read(const unsigned char *p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

static dsc_status *take_uint(load_state *st, int n, uint64_t *v) {
  const unsigned char *p = NULL;
  DSC_TRY(take(st, (size_t)n, &p));
  *v = le_read(p, n);
  return NULL;
}

static dsc_status *push(load_state *st, dsc_pickle_value *v) {
  if (!v) return oom(st);
  if (st->sp == st->stack_cap) {
    if (st->stack_cap >= DSC_PICKLE_MAX_STACK) {
      char what[96];
      snprintf(what, sizeof what, "stack holds more than %u values", DSC_PICKLE_MAX_STACK);
      return fail(st, what);
    }
    size_t cap = st->stack_cap ? 2 * st->stack_cap : 256;
    dsc_pickle_value **grown = realloc(st->stack, cap * sizeof *grown);
    if (!grown) return oom(st);
    st->stack = grown;
    st->stack_cap = cap;
  }
  st->stack[st->sp++] = v;
  return NULL;
}

static size_t stack_base(const load_state *st) {
  return st->nmarks ? st->marks[st->nmarks - 1] : 0;
}

static dsc_status *pop(load_state *st, dsc_pickle_value **v) {
  if (st->sp <= stack_base(st)) return fail(st, "stack underflow");
  *v = st->stack[--st->sp];
  return NULL;
}

static dsc_status *top(load_state *st, dsc_pickle_value **v) {
  if (st->sp <= stack_base(st)) return fail(st, "stack underflow");
  *v = st->stack[st->sp - 1];
  return NULL;
}

/* Removes the values above the innermost mark and the mark; *items points at them in the
 * stack array, valid until the next push (NULL when there are none). */
static dsc_status *pop_mark(load_state *st, dsc_pickle_value ***items, size_t *n) {
  if (!st->nmarks) return fail(st, "no MARK to pop to");
  size_t base = st->marks[--st->nmarks];
  *n = st->sp - base;
  *items = *n ? st->stack + base : NULL;
  st->sp = base;
  return NULL;
}

static dsc_pickle_value *seq_new(load_state *st, dsc_pickle_kind kind, dsc_pickle_value **items,
                                 size_t n) {
  if (kind == DSC_PV_TUPLE && n == 0) return st->r->empty_tuple;
  dsc_pickle_value *v = value_alloc(st->r, kind);
  if (!v || n == 0) return v;
  v->u.seq.items = arena_alloc(st->r, n * sizeof *items);
  if (!v->u.seq.items) return NULL;
  memcpy(v->u.seq.items, items, n * sizeof *items);
  v->u.seq.count = v->u.seq.cap = n;
  return v;
}

/* Appends n values to a LIST or DICT (growing its array in the arena). */
static dsc_status *seq_append(load_state *st, dsc_pickle_value *v, dsc_pickle_value **items,
                              size_t n) {
  if (n == 0) return NULL;
  if (v->u.seq.cap - v->u.seq.count < n) {
    size_t cap = v->u.seq.cap ? v->u.seq.cap : 4;
    while (cap - v->u.seq.count < n) {
      if (cap > SIZE_MAX / (4 * sizeof *items)) return oom(st);
      cap *= 2;
    }
    dsc_pickle_value **grown = arena_alloc(st->r, cap * sizeof *grown);
    if (!grown) return oom(st);
    if (v->u.seq.count) memcpy(grown, v->u.seq.items, v->u.seq.count * sizeof *grown);
    v->u.seq.items = grown;
    v->u.seq.cap = cap;
  }
  memcpy(v->u.seq.items + v->u.seq.count, items, n * sizeof *items);
  v->u.seq.count += n;
  return NULL;
}

static dsc_status *push_int(load_state *st, int64_t i) {
  dsc_pickle_value *v = value_alloc(st->r, DSC_PV_INT);
  if (v) v->u.i = i;
  return push(st, v);
}

static dsc_status *push_text(load_state *st, dsc_pickle_kind kind, size_t n) {
  const unsigned char *p = NULL;
  DSC_TRY(take(st, n, &p));
  dsc_pickle_value *v = value_alloc(st->r, kind);
  if (v) {
    v->u.str.s = (const char *)p;
    v->u.str.n = n;
  }
  return push(st, v);
}

/* LONG1 / LONG4 payload of n bytes: little-endian two's complement. */
static dsc_status *push_long(load_state *st, uint64_t n) {
  if (n > DSC_PICKLE_MAX_LONG) {
    char what[96];
    snprintf(what, sizeof what, "integer of %llu bytes (at most %u)", (unsigned long long)n,
             DSC_PICKLE_MAX_LONG);
    return fail(st, what);
  }
  if (n > 8) return push_text(st, DSC_PV_BIGINT, (size_t)n);
  const unsigned char *p = NULL;
  DSC_TRY(take(st, (size_t)n, &p));
  uint64_t u = n ? le_read(p, (int)n) : 0;
  if (n > 0 && n < 8 && (p[n - 1] & 0x80)) u |= ~(uint64_t)0 << (8 * n); /* sign-extend */
  int64_t i;
  memcpy(&i, &u, sizeof i);
  return push_int(st, i);
}

static dsc_status *memo_put(load_state *st, uint64_t idx) {
  dsc_pickle_value *v = NULL;
  DSC_TRY(top(st, &v));
  /* Python numbers memo entries 0, 1, 2, ...: an index is never above the bytes read so far */
  if (idx >= DSC_PICKLE_MAX_MEMO || idx > st->pos - st->start) {
    char what[96];
    snprintf(what, sizeof what, "memo index %llu too large", (unsigned long long)idx);
    return fail(st, what);
  }
  if (idx >= st->memo_cap) {
    size_t cap = st->memo_cap ? st->memo_cap : 64;
    while (cap <= idx) cap *= 2;
    dsc_pickle_value **grown = realloc(st->memo, cap * sizeof *grown);
    if (!grown) return oom(st);
    memset(grown + st->memo_cap, 0, (cap - st->memo_cap) * sizeof *grown);
    st->memo = grown;
    st->memo_cap = cap;
  }
  if (!st->memo[idx]) st->memo_count++;
  st->memo[idx] = v;
  return NULL;
}

static dsc_status *memo_get(load_state *st, uint64_t idx) {
  if (idx >= st->memo_cap || !st->memo[idx]) {
    char what[96];
    snprintf(what, sizeof what, "memo index %llu not set", (unsigned long long)idx);
    return fail(st, what);
  }
  return push(st, st->memo[idx]);
}

/* One newline-terminated line of GLOBAL. */
static dsc_status *take_line(load_state *st, const char **s, size_t *n) {
  const unsigned char *start = st->buf + st->pos;
  const unsigned char *nl = memchr(start, '\n', st->len - st->pos);
  if (!nl) return fail(st, "truncated: GLOBAL name without newline");
  *s = (const char *)start;
  *n = (size_t)(nl - start);
  st->pos += *n + 1;
  return NULL;
}

static bool global_is(const dsc_pickle_value *g, const char *module, const char *name) {
  return g->kind == DSC_PV_GLOBAL && bytes_is(g->u.str.s, g->u.str.n, module) &&
         bytes_is(g->u.str.s2, g->u.str.n2, name);
}

/* ---- torch-specific interpretation ---- */

typedef struct storage_type {
  const char *name;
  int dtype; /* -1: dsc does not read it */
  size_t elsize;
} storage_type;

static const storage_type storage_types[] = {
    {"FloatStorage", DSC_F32, 4},   {"DoubleStorage", DSC_F64, 8},
    {"HalfStorage", DSC_F16, 2},    {"BFloat16Storage", DSC_BF16, 2},
    {"LongStorage", DSC_I64, 8},    {"IntStorage", DSC_I32, 4},
    {"ShortStorage", DSC_I16, 2},   {"CharStorage", DSC_I8, 1},
    {"ByteStorage", DSC_U8, 1},     {"BoolStorage", DSC_BOOL, 1},
    {"UntypedStorage", DSC_U8, 1},  {"ComplexFloatStorage", -1, 8},
    {"ComplexDoubleStorage", -1, 16}, {"ComplexHalfStorage", -1, 4},
    {"QInt8Storage", -1, 1},        {"QUInt8Storage", -1, 1},
    {"QInt32Storage", -1, 4},       {"QUInt4x2Storage", -1, 1},
    {"QUInt2x4Storage", -1, 1},
    /* dtype objects (torch.float32, ...) in place of a storage class */
    {"float32", DSC_F32, 4},        {"float", DSC_F32, 4},
    {"float64", DSC_F64, 8},        {"double", DSC_F64, 8},
    {"float16", DSC_F16, 2},        {"half", DSC_F16, 2},
    {"bfloat16", DSC_BF16, 2},      {"int64", DSC_I64, 8},
    {"long", DSC_I64, 8},           {"int32", DSC_I32, 4},
    {"int", DSC_I32, 4},            {"int16", DSC_I16, 2},
    {"short", DSC_I16, 2},          {"int8", DSC_I8, 1},
    {"uint8", DSC_U8, 1},           {"bool", DSC_BOOL, 1},
};

static bool is_text(const dsc_pickle_value *v) {
  return v->kind == DSC_PV_STR || v->kind == DSC_PV_BYTES;
}

static bool is_nonneg_int(const dsc_pickle_value *v) {
  return v->kind == DSC_PV_INT && v->u.i >= 0;
}

/* The value of BINPERSID: a STORAGE for ('storage', type, key, location, numel[, view]). */
static dsc_pickle_value *persistent_load(load_state *st, const dsc_pickle_value *pid) {
  dsc_pickle_reader *r = st->r;
  if (pid->kind != DSC_PV_TUPLE || (pid->u.seq.count != 5 && pid->u.seq.count != 6))
    return value_alloc(r, DSC_PV_OBJECT);
  dsc_pickle_value **it = pid->u.seq.items;
  if (!is_text(it[0]) || !bytes_is(it[0]->u.str.s, it[0]->u.str.n, "storage") ||
      it[1]->kind != DSC_PV_GLOBAL || !is_text(it[2]) || !is_nonneg_int(it[4]))
    return value_alloc(r, DSC_PV_OBJECT);
  const dsc_pickle_value *type = it[1];
  dsc_pickle_storage *s = arena_alloc(r, sizeof *s);
  dsc_pickle_value *v = value_alloc(r, DSC_PV_STORAGE);
  if (!s || !v) return NULL;
  memset(s, 0, sizeof *s);
  s->type = type->u.str.s2;
  s->type_len = type->u.str.n2;
  s->dtype = -1;
  if (bytes_is(type->u.str.s, type->u.str.n, "torch") ||
      bytes_is(type->u.str.s, type->u.str.n, "torch.cuda")) {
    for (size_t i = 0; i < sizeof storage_types / sizeof storage_types[0]; i++)
      if (bytes_is(s->type, s->type_len, storage_types[i].name)) {
        s->dtype = storage_types[i].dtype;
        s->elsize = storage_types[i].elsize;
        break;
      }
  }
  s->key = it[2]->u.str.s;
  s->key_len = it[2]->u.str.n;
  s->numel = it[4]->u.i;
  if (pid->u.seq.count == 6 && it[5]->kind != DSC_PV_NONE) {
    const dsc_pickle_value *view = it[5];
    if (view->kind != DSC_PV_TUPLE || view->u.seq.count != 3 ||
        !is_text(view->u.seq.items[0]) || !is_nonneg_int(view->u.seq.items[1]) ||
        !is_nonneg_int(view->u.seq.items[2]))
      return value_alloc(r, DSC_PV_OBJECT);
    s->has_view = 1;
    s->view_offset = view->u.seq.items[1]->u.i;
    s->view_numel = view->u.seq.items[2]->u.i;
  }
  if (r->storage_count == r->storage_cap) {
    size_t cap = r->storage_cap ? 2 * r->storage_cap : 64;
    dsc_pickle_storage **grown = realloc(r->storages, cap * sizeof *grown);
    if (!grown) return NULL;
    r->storages = grown;
    r->storage_cap = cap;
  }
  r->storages[r->storage_count++] = s;
  v->u.storage = s;
  return v;
}

/* Reads a tuple of non-negative ints into dims; returns its length or -1. */
static int int_tuple(const dsc_pickle_value *t, int64_t *dims, const char **error) {
  if (t->kind != DSC_PV_TUPLE) {
    *error = "size or stride is not a tuple";
    return -1;
  }
  if (t->u.seq.count > DSC_MAX_DIMS) {
    *error = "has more than 8 dimensions";
    return -1;
  }
  for (size_t i = 0; i < t->u.seq.count; i++) {
    if (!is_nonneg_int(t->u.seq.items[i])) {
      *error = "size or stride holds something other than a non-negative int";
      return -1;
    }
    dims[i] = t->u.seq.items[i]->u.i;
  }
  return (int)t->u.seq.count;
}

/* torch._utils._rebuild_tensor(_v2)(storage, storage_offset, size, stride, ...) */
static dsc_pickle_value *rebuild_tensor(load_state *st, const dsc_pickle_value *args) {
  dsc_pickle_tensor *t = arena_alloc(st->r, sizeof *t);
  dsc_pickle_value *v = value_alloc(st->r, DSC_PV_TENSOR);
  if (!t || !v) return NULL;
  memset(t, 0, sizeof *t);
  v->u.tensor = t;
  if (args->kind != DSC_PV_TUPLE || args->u.seq.count < 4) {
    t->error = "_rebuild_tensor has fewer than 4 arguments";
    return v;
  }
  dsc_pickle_value **a = args->u.seq.items;
  if (a[0]->kind != DSC_PV_STORAGE) {
    t->error = "its storage is not a storage record";
    return v;
  }
  if (!is_nonneg_int(a[1])) {
    t->error = "its storage offset is not a non-negative int";
    return v;
  }
  int nsize = int_tuple(a[2], t->size, &t->error);
  if (nsize < 0) return v;
  int nstride = int_tuple(a[3], t->stride, &t->error);
  if (nstride < 0) return v;
  if (nsize != nstride) {
    t->error = "size and stride differ in length";
    return v;
  }
  t->ndim = nsize;
  t->offset = a[1]->u.i;
  t->storage = a[0]->u.storage;
  return v;
}

/* The value of callable(*args) for REDUCE; depth bounds _rebuild_from_type_v2 nesting. */
static dsc_pickle_value *call(load_state *st, const dsc_pickle_value *fn,
                              const dsc_pickle_value *args, int depth) {
  dsc_pickle_reader *r = st->r;
  bool tuple = args->kind == DSC_PV_TUPLE;
  size_t argc = tuple ? args->u.seq.count : 0;
  if (global_is(fn, "collections", "OrderedDict") && tuple && argc == 0)
    return value_alloc(r, DSC_PV_DICT);
  if (global_is(fn, "torch._utils", "_rebuild_tensor_v2") ||
      global_is(fn, "torch._utils", "_rebuild_tensor"))
    return rebuild_tensor(st, args);
  if ((global_is(fn, "torch._utils", "_rebuild_parameter") ||
       global_is(fn, "torch._utils", "_rebuild_parameter_with_state")) &&
      argc >= 1 && args->u.seq.items[0]->kind == DSC_PV_TENSOR)
    return args->u.seq.items[0];
  if ((global_is(fn, "torch._tensor", "_rebuild_from_type_v2") ||
       global_is(fn, "torch._utils", "_rebuild_from_type_v2")) &&
      depth == 0 && argc >= 3 && args->u.seq.items[0]->kind == DSC_PV_GLOBAL)
    return call(st, args->u.seq.items[0], args->u.seq.items[2], depth + 1);
  return value_alloc(r, DSC_PV_OBJECT);
}

/* ---- the loop ---- */

static dsc_status *step(load_state *st, bool *stop, dsc_pickle_value **result) {
  dsc_pickle_reader *r = st->r;
  const unsigned char *p = NULL;
  uint64_t u;
  dsc_pickle_value *a = NULL, *b = NULL, *c = NULL, **items = NULL;
  size_t n = 0;
  st->op_at = st->pos;
  st->op = st->buf[st->pos++];
  switch (st->op) {
    case OP_PROTO:
      DSC_TRY(take_uint(st, 1, &u));
      if (u > 5) {
        char what[64];
        snprintf(what, sizeof what, "unsupported pickle protocol %llu", (unsigned long long)u);
        return fail(st, what);
      }
      return NULL;
    case OP_FRAME:
      return take_uint(st, 8, &u);
    case OP_STOP:
      DSC_TRY(pop(st, result));
      *stop = true;
      return NULL;
    case OP_MARK:
      if (st->nmarks == DSC_PICKLE_MAX_MARKS) {
        char what[64];
        snprintf(what, sizeof what, "nesting deeper than %u MARKs", DSC_PICKLE_MAX_MARKS);
        return fail(st, what);
      }
      st->marks[st->nmarks++] = st->sp;
      return NULL;
    case OP_POP:
      if (st->sp > stack_base(st)) {
        st->sp--;
        return NULL;
      }
      return pop_mark(st, &items, &n);
    case OP_POP_MARK:
      return pop_mark(st, &items, &n);
    case OP_DUP:
      DSC_TRY(top(st, &a));
      return push(st, a);
    case OP_NONE:
      return push(st, r->none);
    case OP_NEWTRUE:
      return push(st, r->yes);
    case OP_NEWFALSE:
      return push(st, r->no);
    case OP_BININT:
      DSC_TRY(take_uint(st, 4, &u));
      return push_int(st, (int32_t)(uint32_t)u);
    case OP_BININT1:
      DSC_TRY(take_uint(st, 1, &u));
      return push_int(st, (int64_t)u);
    case OP_BININT2:
      DSC_TRY(take_uint(st, 2, &u));
      return push_int(st, (int64_t)u);
    case OP_LONG1:
      DSC_TRY(take_uint(st, 1, &u));
      return push_long(st, u);
    case OP_LONG4:
      DSC_TRY(take_uint(st, 4, &u));
      if (u & 0x80000000u) return fail(st, "negative LONG4 length");
      return push_long(st, u);
    case OP_BINFLOAT: {
      DSC_TRY(take(st, 8, &p));
      uint64_t bits = 0;
      for (int i = 0; i < 8; i++) bits = (bits << 8) | p[i]; /* big-endian */
      a = value_alloc(r, DSC_PV_FLOAT);
      if (a) memcpy(&a->u.f, &bits, sizeof bits);
      return push(st, a);
    }
    case OP_SHORT_BINUNICODE:
    case OP_SHORT_BINBYTES:
    case OP_SHORT_BINSTRING:
      DSC_TRY(take_uint(st, 1, &u));
      return push_text(st, st->op == OP_SHORT_BINBYTES ? DSC_PV_BYTES : DSC_PV_STR, (size_t)u);
    case OP_BINUNICODE:
    case OP_BINBYTES:
    case OP_BINSTRING:
      DSC_TRY(take_uint(st, 4, &u));
      if (st->op == OP_BINSTRING && (u & 0x80000000u)) return fail(st, "negative BINSTRING length");
      return push_text(st, st->op == OP_BINBYTES ? DSC_PV_BYTES : DSC_PV_STR, (size_t)u);
    case OP_BINUNICODE8:
    case OP_BINBYTES8:
      DSC_TRY(take_uint(st, 8, &u));
      if (u > st->len - st->pos) {
        char what[128];
        snprintf(what, sizeof what, "truncated: %llu bytes of text claimed, %zu left",
                 (unsigned long long)u, st->len - st->pos);
        return fail(st, what);
      }
      return push_text(st, st->op == OP_BINBYTES8 ? DSC_PV_BYTES : DSC_PV_STR, (size_t)u);
    case OP_EMPTY_TUPLE:
      return push(st, r->empty_tuple);
    case OP_TUPLE:
      DSC_TRY(pop_mark(st, &items, &n));
      return push(st, seq_new(st, DSC_PV_TUPLE, items, n));
    case OP_TUPLE1:
    case OP_TUPLE2:
    case OP_TUPLE3:
      n = (size_t)(st->op - OP_TUPLE1 + 1);
      if (st->sp - stack_base(st) < n) return fail(st, "stack underflow");
      st->sp -= n;
      return push(st, seq_new(st, DSC_PV_TUPLE, st->stack + st->sp, n));
    case OP_EMPTY_LIST:
      return push(st, value_alloc(r, DSC_PV_LIST));
    case OP_LIST:
      DSC_TRY(pop_mark(st, &items, &n));
      return push(st, seq_new(st, DSC_PV_LIST, items, n));
    case OP_EMPTY_DICT:
      return push(st, value_alloc(r, DSC_PV_DICT));
    case OP_DICT:
      DSC_TRY(pop_mark(st, &items, &n));
      if (n % 2) return fail(st, "DICT with an odd number of items");
      return push(st, seq_new(st, DSC_PV_DICT, items, n));
    case OP_APPEND:
    case OP_SETITEM:
      n = st->op == OP_APPEND ? 1 : 2;
      if (st->sp - stack_base(st) < n + 1) return fail(st, "stack underflow");
      st->sp -= n;
      items = st->stack + st->sp;
      a = st->stack[st->sp - 1];
      goto add_items;
    case OP_APPENDS:
    case OP_SETITEMS:
      DSC_TRY(pop_mark(st, &items, &n));
      DSC_TRY(top(st, &a));
      if (st->op == OP_SETITEMS && n % 2) return fail(st, "SETITEMS with an odd number of items");
    add_items:
      if (a->kind == (st->op == OP_APPEND || st->op == OP_APPENDS ? DSC_PV_LIST : DSC_PV_DICT))
        return seq_append(st, a, items, n);
      if (a->kind == DSC_PV_OBJECT) return NULL; /* e.g. a defaultdict: contents not needed */
      {
        char what[64];
        snprintf(what, sizeof what, "adding items to a %s", dsc_pickle_kind_name(a->kind));
        return fail(st, what);
      }
    case OP_GLOBAL: {
      const char *mod = NULL, *name = NULL;
      size_t nmod = 0, nname = 0;
      DSC_TRY(take_line(st, &mod, &nmod));
      DSC_TRY(take_line(st, &name, &nname));
      a = value_alloc(r, DSC_PV_GLOBAL);
      if (a) {
        a->u.str.s = mod;
        a->u.str.n = nmod;
        a->u.str.s2 = name;
        a->u.str.n2 = nname;
      }
      return push(st, a);
    }
    case OP_STACK_GLOBAL:
      DSC_TRY(pop(st, &b));
      DSC_TRY(pop(st, &a));
      if (a->kind != DSC_PV_STR || b->kind != DSC_PV_STR)
        return fail(st, "STACK_GLOBAL of something other than two strings");
      c = value_alloc(r, DSC_PV_GLOBAL);
      if (c) {
        c->u.str.s = a->u.str.s;
        c->u.str.n = a->u.str.n;
        c->u.str.s2 = b->u.str.s;
        c->u.str.n2 = b->u.str.n;
      }
      return push(st, c);
    case OP_REDUCE:
      DSC_TRY(pop(st, &b));
      DSC_TRY(pop(st, &a));
      c = call(st, a, b, 0);
      return push(st, c);
    case OP_NEWOBJ:
      DSC_TRY(pop(st, &b));
      DSC_TRY(pop(st, &a));
      return push(st, value_alloc(r, global_is(a, "collections", "OrderedDict") ? DSC_PV_DICT
                                                                                : DSC_PV_OBJECT));
    case OP_BUILD:
      DSC_TRY(pop(st, &b));
      DSC_TRY(top(st, &a));
      if (a->kind == DSC_PV_DICT || a->kind == DSC_PV_OBJECT || a->kind == DSC_PV_TENSOR)
        return NULL; /* state (e.g. OrderedDict._metadata) not needed */
      {
        char what[64];
        snprintf(what, sizeof what, "BUILD on a %s", dsc_pickle_kind_name(a->kind));
        return fail(st, what);
      }
    case OP_BINPERSID:
      DSC_TRY(pop(st, &a));
      return push(st, persistent_load(st, a));
    case OP_BINPUT:
      DSC_TRY(take_uint(st, 1, &u));
      return memo_put(st, u);
    case OP_LONG_BINPUT:
      DSC_TRY(take_uint(st, 4, &u));
      return memo_put(st, u);
    case OP_MEMOIZE:
      return memo_put(st, st->memo_count);
    case OP_BINGET:
      DSC_TRY(take_uint(st, 1, &u));
      return memo_get(st, u);
    case OP_LONG_BINGET:
      DSC_TRY(take_uint(st, 4, &u));
      return memo_get(st, u);
    default:
      return dsc_errorf("unsupported pickle opcode 0x%02x at byte %zu", st->op, st->op_at);
  }
}

dsc_status *dsc_pickle_reader_load(dsc_pickle_reader *r, const unsigned char *buf, size_t len,
                                   size_t *pos, dsc_pickle_value **out) {
  *out = NULL;
  load_state *st = calloc(1, sizeof *st);
  if (!st) return dsc_errorf("pickle: out of memory");
  st->r = r;
  st->buf = buf;
  st->len = len;
  st->start = st->pos = *pos;
  dsc_status *err = NULL;
  bool stop = false;
  dsc_pickle_value *result = NULL;
  while (!err && !stop) {
    if (st->pos >= st->len) {
      err = dsc_errorf("truncated: ends at byte %zu without STOP", st->len);
      break;
    }
    err = step(st, &stop, &result);
  }
  if (!err) {
    *pos = st->pos;
    *out = result;
  }
  free(st->stack);
  free(st->memo);
  free(st);
  return err;
}
