/* safetensors.c: the safetensors reader and writer (include/dsc/safetensors.h).
 *
 * Reader: the whole file is read into one heap buffer, then parse_file() checks, in this
 * order, the 8-byte length prefix, the header length against DSC_ST_MAX_HEADER and the file
 * size (before anything is allocated from it), the JSON (jansson, duplicate keys rejected),
 * every entry, and finally that the tensors' byte ranges, sorted by offset, tile the data
 * buffer exactly. Only then is a dsc_safetensors handed out, so accessors need no checks.
 * Every error message is "<path or label>: <problem>" on one line; names taken from the
 * file are quoted with control characters escaped and long ones shortened.
 *
 * Writer: tensors are kept in the order added and laid out back to back from offset 0;
 * the header JSON is built with jansson (JSON_COMPACT, keys in insertion order with
 * "__metadata__" first) and padded with spaces so that 8 + H is a multiple of 8.
 */
#include "dsc/safetensors.h"

#include "dsc/atomic_file.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c stores and reads tensor data as host bytes: it needs a little-endian host"
#endif

struct dsc_safetensors {
  char *path;                 /* path or label, for messages */
  unsigned char *bytes;       /* the whole file */
  size_t size;
  const unsigned char *data;  /* start of the data buffer inside bytes */
  uint64_t data_size;
  dsc_st_tensor *tensors;     /* sorted by (begin, end, position in the JSON) */
  int count;
  char **meta_keys, **meta_values; /* in JSON order */
  int meta_count;
};

/* ---- messages ---- */

/* Copies `src` into dst (capacity cap >= 8) with backslash escapes for control characters
 * (and for backslashes and double quotes when `quotes`), shortened with "..." when longer than max_len source bytes
 * or than dst allows. The result is always one line. */
static void text_escape(char *dst, size_t cap, const char *src, size_t max_len, bool quotes) {
  size_t o = 0;
  size_t i = 0;
  for (; src[i] && i < max_len; i++) {
    unsigned char c = (unsigned char)src[i];
    char piece[8];
    if (c == '\n') snprintf(piece, sizeof piece, "\\n");
    else if (c == '\t') snprintf(piece, sizeof piece, "\\t");
    else if (quotes && (c == '"' || c == '\\')) snprintf(piece, sizeof piece, "\\%c", c);
    else if (c < 0x20 || c == 0x7f) snprintf(piece, sizeof piece, "\\x%02x", c);
    else snprintf(piece, sizeof piece, "%c", c);
    size_t len = strlen(piece);
    if (o + len + 4 > cap) break; /* keep room for "..." and the terminator */
    memcpy(dst + o, piece, len);
    o += len;
  }
  if (src[i]) {
    memcpy(dst + o, "...", 3);
    o += 3;
  }
  dst[o] = '\0';
}

/* A quoted tensor name or key fit for a message. */
typedef struct quoted {
  char s[200];
} quoted;

static quoted quote(const char *name) {
  quoted q;
  char inner[sizeof q.s - 2];
  text_escape(inner, sizeof inner, name, 120, true);
  snprintf(q.s, sizeof q.s, "\"%s\"", inner);
  return q;
}

/* "<label>: <formatted problem>". */
static dsc_status *st_fail(const char *label, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static dsc_status *st_fail(const char *label, const char *fmt, ...) {
  char problem[800];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(problem, sizeof problem, fmt, ap);
  va_end(ap);
  char where[320];
  text_escape(where, sizeof where, label, 300, false);
  return dsc_errorf("%s: %s", where, problem);
}

static const char *json_kind(const json_t *v) {
  switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "a list";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a real number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
  }
  return "unknown";
}

/* ---- shapes and sizes ---- */

/* Product of dims into *out (0 if any dim is 0); false if it overflows uint64. */
static bool shape_numel(const int64_t *shape, int ndim, uint64_t *out) {
  uint64_t n = 1;
  for (int d = 0; d < ndim; d++) {
    if (shape[d] == 0) {
      *out = 0;
      return true;
    }
  }
  for (int d = 0; d < ndim; d++) {
    if (__builtin_mul_overflow(n, (uint64_t)shape[d], &n)) return false;
  }
  *out = n;
  return true;
}

/* "[2, 3, 4]" into buf. */
static void shape_format(char *buf, size_t cap, const int64_t *shape, int ndim) {
  size_t o = (size_t)snprintf(buf, cap, "[");
  for (int d = 0; d < ndim && o < cap; d++)
    o += (size_t)snprintf(buf + o, cap - o, d ? ", %lld" : "%lld", (long long)shape[d]);
  if (o < cap) snprintf(buf + o, cap - o, "]");
}

/* ---- reader ---- */

void dsc_st_close(dsc_safetensors *f) {
  if (!f) return;
  for (int i = 0; i < f->count; i++) free(f->tensors[i].name);
  for (int i = 0; i < f->meta_count; i++) {
    free(f->meta_keys[i]);
    free(f->meta_values[i]);
  }
  free(f->tensors);
  free(f->meta_keys);
  free(f->meta_values);
  free(f->bytes);
  free(f->path);
  free(f);
}

/* A non-negative JSON integer into *out; false otherwise. */
static bool json_to_u64(const json_t *v, uint64_t *out) {
  if (!json_is_integer(v)) return false;
  json_int_t x = json_integer_value(v);
  if (x < 0) return false;
  *out = (uint64_t)x;
  return true;
}

/* "<label>: tensor <quoted name>: <formatted problem>". Quoting happens only here, on the
 * error path, so valid headers with many entries cost nothing for it. */
static dsc_status *tensor_fail(const char *label, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static dsc_status *tensor_fail(const char *label, const char *name, const char *fmt, ...) {
  char problem[600];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(problem, sizeof problem, fmt, ap);
  va_end(ap);
  return st_fail(label, "tensor %s: %s", quote(name).s, problem);
}

/* Parses one tensor entry `name: value` into *t (name not yet set). */
static dsc_status *parse_tensor(const char *label, const char *name, json_t *value,
                                dsc_st_tensor *t) {
  if (!json_is_object(value))
    return tensor_fail(label, name, "entry is %s, expected an object", json_kind(value));
  const char *key;
  json_t *field;
  json_object_foreach(value, key, field) {
    if (strcmp(key, "dtype") && strcmp(key, "shape") && strcmp(key, "data_offsets"))
      return tensor_fail(label, name, "unknown field %s", quote(key).s);
  }

  json_t *dtype = json_object_get(value, "dtype");
  if (!dtype) return tensor_fail(label, name, "missing field \"dtype\"");
  if (!json_is_string(dtype))
    return tensor_fail(label, name, "dtype is %s, expected a string", json_kind(dtype));
  if (dsc_dtype_from_name(json_string_value(dtype), &t->dtype) != 0)
    return tensor_fail(label, name, "unknown dtype %s", quote(json_string_value(dtype)).s);

  json_t *shape = json_object_get(value, "shape");
  if (!shape) return tensor_fail(label, name, "missing field \"shape\"");
  if (!json_is_array(shape))
    return tensor_fail(label, name, "shape is %s, expected a list of non-negative integers",
                       json_kind(shape));
  size_t ndim = json_array_size(shape);
  if (ndim > DSC_MAX_DIMS)
    return tensor_fail(label, name, "shape has %zu dims, more than the %d supported", ndim,
                       DSC_MAX_DIMS);
  t->ndim = (int)ndim;
  for (size_t d = 0; d < ndim; d++) {
    uint64_t dim;
    json_t *v = json_array_get(shape, d);
    if (!json_to_u64(v, &dim))
      return tensor_fail(label, name, "shape[%zu] is %s, expected a non-negative integer", d,
                         json_is_integer(v) ? "negative" : json_kind(v));
    t->shape[d] = (int64_t)dim;
  }

  json_t *offsets = json_object_get(value, "data_offsets");
  if (!offsets) return tensor_fail(label, name, "missing field \"data_offsets\"");
  if (!json_is_array(offsets) || json_array_size(offsets) != 2 ||
      !json_to_u64(json_array_get(offsets, 0), &t->begin) ||
      !json_to_u64(json_array_get(offsets, 1), &t->end))
    return tensor_fail(label, name, "data_offsets must be a list of two non-negative integers");
  if (t->begin > t->end)
    return tensor_fail(label, name, "data_offsets [%llu, %llu] end before they begin",
                       (unsigned long long)t->begin, (unsigned long long)t->end);

  uint64_t numel = 0, nbytes = 0;
  bool fits = shape_numel(t->shape, t->ndim, &numel) &&
              !__builtin_mul_overflow(numel, (uint64_t)dsc_dtype_size(t->dtype), &nbytes);
  if (fits && nbytes == t->end - t->begin) return NULL;
  char shape_text[DSC_MAX_DIMS * 24 + 4];
  shape_format(shape_text, sizeof shape_text, t->shape, t->ndim);
  if (!fits) return tensor_fail(label, name, "shape %s has too many elements", shape_text);
  return tensor_fail(label, name,
                     "shape %s of %s needs %llu bytes but data_offsets [%llu, %llu] hold %llu",
                     shape_text, dsc_dtype_name(t->dtype), (unsigned long long)nbytes,
                     (unsigned long long)t->begin, (unsigned long long)t->end,
                     (unsigned long long)(t->end - t->begin));
}

/* Copies "__metadata__" (already known to be present) into f. */
static dsc_status *parse_metadata(const char *label, json_t *meta, dsc_safetensors *f) {
  if (!json_is_object(meta))
    return st_fail(label, "__metadata__ is %s, expected an object of strings", json_kind(meta));
  size_t n = json_object_size(meta);
  f->meta_keys = calloc(n ? n : 1, sizeof *f->meta_keys);
  f->meta_values = calloc(n ? n : 1, sizeof *f->meta_values);
  if (!f->meta_keys || !f->meta_values) return st_fail(label, "out of memory for metadata");
  const char *key;
  json_t *value;
  json_object_foreach(meta, key, value) {
    if (!json_is_string(value))
      return st_fail(label, "__metadata__ value of %s is %s, expected a string", quote(key).s,
                     json_kind(value));
    char *k = strdup(key), *v = strdup(json_string_value(value));
    if (!k || !v) {
      free(k);
      free(v);
      return st_fail(label, "out of memory for metadata");
    }
    f->meta_keys[f->meta_count] = k;
    f->meta_values[f->meta_count] = v;
    f->meta_count++;
  }
  return NULL;
}

/* A tensor with its position in the JSON, for a stable sort by offsets. */
typedef struct tensor_order {
  dsc_st_tensor t;
  size_t json_index;
} tensor_order;

static int tensor_order_cmp(const void *pa, const void *pb) {
  const tensor_order *a = pa, *b = pb;
  if (a->t.begin != b->t.begin) return a->t.begin < b->t.begin ? -1 : 1;
  if (a->t.end != b->t.end) return a->t.end < b->t.end ? -1 : 1;
  return a->json_index < b->json_index ? -1 : a->json_index > b->json_index;
}

/* Checks that the sorted ranges cover [0, data_size) exactly, each once. */
static dsc_status *check_layout(const char *label, const dsc_st_tensor *ts, int n,
                                uint64_t data_size) {
  uint64_t expected = 0;
  for (int i = 0; i < n; i++) {
    const dsc_st_tensor *t = &ts[i];
    if (t->begin < expected)
      return st_fail(label, "tensor %s (bytes [%llu, %llu)) overlaps tensor %s (bytes [%llu, %llu))",
                     quote(t->name).s, (unsigned long long)t->begin, (unsigned long long)t->end,
                     quote(ts[i - 1].name).s, (unsigned long long)ts[i - 1].begin,
                     (unsigned long long)ts[i - 1].end);
    if (t->begin > expected)
      return st_fail(label, "bytes [%llu, %llu) of the data buffer belong to no tensor (a hole "
                            "before tensor %s)",
                     (unsigned long long)expected, (unsigned long long)t->begin,
                     quote(t->name).s);
    expected = t->end;
  }
  if (expected > data_size)
    return st_fail(label, "tensor %s ends at byte %llu, past the end of the %llu-byte data buffer",
                   quote(ts[n - 1].name).s, (unsigned long long)expected,
                   (unsigned long long)data_size);
  if (expected < data_size)
    return st_fail(label, "%llu trailing bytes after the last tensor's data (the data buffer has "
                          "%llu bytes, tensors cover %llu)",
                   (unsigned long long)(data_size - expected), (unsigned long long)data_size,
                   (unsigned long long)expected);
  return NULL;
}

/* Validates f->bytes/f->size and fills in the rest of f. */
static dsc_status *parse_file(dsc_safetensors *f) {
  const char *label = f->path;
  if (f->size < 8)
    return st_fail(label, "file has %zu bytes, too short for the 8-byte header length", f->size);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; i--) header_len = (header_len << 8) | f->bytes[i];
  if (header_len > DSC_ST_MAX_HEADER)
    return st_fail(label, "header length %llu exceeds the limit of %u bytes",
                   (unsigned long long)header_len, DSC_ST_MAX_HEADER);
  if (header_len > f->size - 8)
    return st_fail(label, "header length %llu goes past the end of the file (%zu bytes)",
                   (unsigned long long)header_len, f->size);
  f->data = f->bytes + 8 + header_len;
  f->data_size = f->size - 8 - header_len;

  json_error_t jerr;
  json_t *root = json_loadb((const char *)f->bytes + 8, (size_t)header_len,
                            JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
  if (!root) {
    char why[sizeof jerr.text + 16];
    text_escape(why, sizeof why, jerr.text, sizeof jerr.text, false);
    return st_fail(label, "header is not valid JSON: %s (at byte %d of the header)", why,
                   jerr.position);
  }
  dsc_status *st = NULL;
  tensor_order *order = NULL;
  if (!json_is_object(root)) {
    st = st_fail(label, "header is %s, expected a JSON object", json_kind(root));
    goto done;
  }
  json_t *meta = json_object_get(root, "__metadata__");
  size_t n = json_object_size(root) - (meta ? 1 : 0);
  if (n > INT32_MAX) {
    st = st_fail(label, "too many tensors (%zu)", n);
    goto done;
  }
  if (meta && (st = parse_metadata(label, meta, f))) goto done;

  order = calloc(n ? n : 1, sizeof *order);
  f->tensors = calloc(n ? n : 1, sizeof *f->tensors);
  if (!order || !f->tensors) {
    st = st_fail(label, "out of memory for %zu tensors", n);
    goto done;
  }
  const char *name;
  json_t *value;
  size_t k = 0;
  json_object_foreach(root, name, value) {
    if (value == meta) continue;
    if ((st = parse_tensor(label, name, value, &order[k].t))) goto done;
    order[k].t.name = (char *)name;
    order[k].json_index = k;
    k++;
  }
  /* order[].t.name still points at jansson's key strings, alive until root is freed. */
  qsort(order, n, sizeof *order, tensor_order_cmp);
  for (size_t i = 0; i < n; i++) {
    f->tensors[i] = order[i].t;
    f->tensors[i].name = strdup(order[i].t.name);
    if (!f->tensors[i].name) {
      st = st_fail(label, "out of memory for tensor names");
      goto done;
    }
    f->count++;
  }
  st = check_layout(label, f->tensors, f->count, f->data_size);
done:
  free(order);
  json_decref(root);
  return st;
}

/* Takes ownership of bytes (malloc'd, may be NULL when size is 0). */
static dsc_status *open_owned(unsigned char *bytes, size_t size, const char *label,
                              dsc_safetensors **out) {
  *out = NULL;
  dsc_safetensors *f = calloc(1, sizeof *f);
  char *path = strdup(label);
  if (!f || !path) {
    free(f);
    free(path);
    free(bytes);
    return st_fail(label, "out of memory");
  }
  f->path = path;
  f->bytes = bytes;
  f->size = size;
  dsc_status *st = parse_file(f);
  if (st) {
    dsc_st_close(f);
    return st;
  }
  *out = f;
  return NULL;
}

dsc_status *dsc_st_open_memory(const void *bytes, size_t size, const char *label,
                               dsc_safetensors **out) {
  *out = NULL;
  unsigned char *copy = malloc(size ? size : 1);
  if (!copy) return st_fail(label, "out of memory for %zu bytes", size);
  if (size) memcpy(copy, bytes, size);
  return open_owned(copy, size, label, out);
}

dsc_status *dsc_st_open(const char *path, dsc_safetensors **out) {
  *out = NULL;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return st_fail(path, "cannot open: %s", strerror(errno));
  struct stat sb;
  if (fstat(fd, &sb) != 0) {
    int e = errno;
    close(fd);
    return st_fail(path, "cannot stat: %s", strerror(e));
  }
  if (S_ISDIR(sb.st_mode)) {
    close(fd);
    return st_fail(path, "is a directory, not a safetensors file");
  }
  if (!S_ISREG(sb.st_mode)) {
    close(fd);
    return st_fail(path, "is not a regular file");
  }
  if ((uint64_t)sb.st_size > SIZE_MAX - 1) {
    close(fd);
    return st_fail(path, "file too large to load (%lld bytes)", (long long)sb.st_size);
  }
  size_t size = (size_t)sb.st_size;
  unsigned char *bytes = malloc(size ? size : 1);
  if (!bytes) {
    close(fd);
    return st_fail(path, "out of memory for %zu bytes", size);
  }
  size_t got = 0;
  while (got < size) {
    ssize_t r = read(fd, bytes + got, size - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      int e = errno;
      close(fd);
      free(bytes);
      return st_fail(path, "read failed: %s", strerror(e));
    }
    if (r == 0) {
      close(fd);
      free(bytes);
      return st_fail(path, "file shrank while being read (%zu of %zu bytes)", got, size);
    }
    got += (size_t)r;
  }
  close(fd);
  return open_owned(bytes, size, path, out);
}

const char *dsc_st_path(const dsc_safetensors *f) { return f->path; }

int dsc_st_count(const dsc_safetensors *f) { return f->count; }

const dsc_st_tensor *dsc_st_get(const dsc_safetensors *f, int i) {
  return (i >= 0 && i < f->count) ? &f->tensors[i] : NULL;
}

const dsc_st_tensor *dsc_st_find(const dsc_safetensors *f, const char *name) {
  for (int i = 0; i < f->count; i++)
    if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
  return NULL;
}

const void *dsc_st_data(const dsc_safetensors *f, const dsc_st_tensor *t) {
  return f->data + t->begin;
}

size_t dsc_st_numel(const dsc_st_tensor *t) {
  uint64_t n = 0;
  shape_numel(t->shape, t->ndim, &n); /* validated on open: cannot overflow */
  return (size_t)n;
}

size_t dsc_st_nbytes(const dsc_st_tensor *t) { return (size_t)(t->end - t->begin); }

int dsc_st_meta_count(const dsc_safetensors *f) { return f->meta_count; }

const char *dsc_st_meta_key(const dsc_safetensors *f, int i) {
  return (i >= 0 && i < f->meta_count) ? f->meta_keys[i] : NULL;
}

const char *dsc_st_meta(const dsc_safetensors *f, const char *key) {
  for (int i = 0; i < f->meta_count; i++)
    if (strcmp(f->meta_keys[i], key) == 0) return f->meta_values[i];
  return NULL;
}

/* IEEE binary16 bits to float (exact: every half is a float). */
static float half_to_float(uint16_t h) {
  uint32_t sign = (uint32_t)(h >> 15) << 31;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0 && mant == 0) {
    bits = sign;
  } else if (exp == 0) { /* subnormal: renormalize */
    uint32_t e = 113;    /* 127 - 15 + 1 */
    while (!(mant & 0x400)) {
      mant <<= 1;
      e--;
    }
    bits = sign | (e << 23) | ((mant & 0x3ff) << 13);
  } else if (exp == 31) { /* inf / nan, payload kept */
    bits = sign | (0xffu << 23) | (mant << 13);
  } else {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  }
  float f;
  memcpy(&f, &bits, sizeof f);
  return f;
}

dsc_status *dsc_st_read_f32(const dsc_safetensors *f, const char *name, float *dst,
                            size_t numel) {
  const dsc_st_tensor *t = dsc_st_find(f, name);
  if (!t) return st_fail(f->path, "no tensor %s", quote(name).s);
  size_t have = dsc_st_numel(t);
  if (have != numel) {
    char shape_text[DSC_MAX_DIMS * 24 + 4];
    shape_format(shape_text, sizeof shape_text, t->shape, t->ndim);
    return st_fail(f->path, "tensor %s has %zu elements (shape %s), expected %zu",
                   quote(name).s, have, shape_text, numel);
  }
  const unsigned char *src = dsc_st_data(f, t);
  switch (t->dtype) {
    case DSC_F32:
      if (numel) memcpy(dst, src, numel * sizeof(float));
      return NULL;
    case DSC_F64:
      for (size_t i = 0; i < numel; i++) {
        double d;
        memcpy(&d, src + 8 * i, sizeof d);
        dst[i] = (float)d;
      }
      return NULL;
    case DSC_F16:
      for (size_t i = 0; i < numel; i++) {
        uint16_t h;
        memcpy(&h, src + 2 * i, sizeof h);
        dst[i] = half_to_float(h);
      }
      return NULL;
    case DSC_BF16:
      for (size_t i = 0; i < numel; i++) {
        uint16_t h;
        memcpy(&h, src + 2 * i, sizeof h);
        uint32_t bits = (uint32_t)h << 16;
        memcpy(&dst[i], &bits, sizeof bits);
      }
      return NULL;
    default:
      return st_fail(f->path, "tensor %s has dtype %s, expected a float type (F32, F64, F16, BF16)",
                     quote(name).s, dsc_dtype_name(t->dtype));
  }
}

/* ---- writer ---- */

typedef struct writer_tensor {
  char *name;
  dsc_dtype dtype;
  int ndim;
  int64_t shape[DSC_MAX_DIMS];
  const void *data;
  uint64_t nbytes;
} writer_tensor;

struct dsc_st_writer {
  writer_tensor *tensors;
  int count, cap;
  char **meta_keys, **meta_values;
  int meta_count, meta_cap;
};

dsc_status *dsc_st_writer_new(dsc_st_writer **out) {
  *out = calloc(1, sizeof **out);
  if (!*out) return dsc_errorf("safetensors writer: out of memory");
  return NULL;
}

void dsc_st_writer_free(dsc_st_writer *w) {
  if (!w) return;
  for (int i = 0; i < w->count; i++) free(w->tensors[i].name);
  for (int i = 0; i < w->meta_count; i++) {
    free(w->meta_keys[i]);
    free(w->meta_values[i]);
  }
  free(w->tensors);
  free(w->meta_keys);
  free(w->meta_values);
  free(w);
}

/* True when s is valid UTF-8 (jansson's own check, via json_string). */
static bool text_is_utf8(const char *s) {
  json_t *j = json_string(s);
  json_decref(j);
  return j != NULL;
}

dsc_status *dsc_st_writer_add(dsc_st_writer *w, const char *name, dsc_dtype dtype, int ndim,
                              const int64_t *shape, const void *data) {
  if (!name) return dsc_errorf("safetensors writer: tensor name is NULL");
  quoted q = quote(name);
  if (strcmp(name, "__metadata__") == 0)
    return dsc_errorf("safetensors writer: \"__metadata__\" is reserved, not a tensor name");
  if (!text_is_utf8(name))
    return dsc_errorf("safetensors writer: tensor name %s is not valid UTF-8", q.s);
  if ((int)dtype < 0 || dtype >= DSC_DTYPE_COUNT)
    return dsc_errorf("safetensors writer: tensor %s: invalid dtype %d", q.s, (int)dtype);
  if (ndim < 0 || ndim > DSC_MAX_DIMS)
    return dsc_errorf("safetensors writer: tensor %s: ndim %d outside [0, %d]", q.s, ndim,
                      DSC_MAX_DIMS);
  if (ndim > 0 && !shape)
    return dsc_errorf("safetensors writer: tensor %s: shape is NULL", q.s);
  for (int d = 0; d < ndim; d++)
    if (shape[d] < 0)
      return dsc_errorf("safetensors writer: tensor %s: negative dim %lld", q.s,
                        (long long)shape[d]);
  uint64_t numel = 0, nbytes = 0;
  if (!shape_numel(shape, ndim, &numel) ||
      __builtin_mul_overflow(numel, (uint64_t)dsc_dtype_size(dtype), &nbytes) ||
      nbytes > (uint64_t)INT64_MAX)
    return dsc_errorf("safetensors writer: tensor %s: too many elements", q.s);
  if (nbytes && !data) return dsc_errorf("safetensors writer: tensor %s: data is NULL", q.s);
  for (int i = 0; i < w->count; i++)
    if (strcmp(w->tensors[i].name, name) == 0)
      return dsc_errorf("safetensors writer: duplicate tensor name %s", q.s);
  if (w->count == w->cap) {
    int cap = w->cap ? 2 * w->cap : 16;
    writer_tensor *grown = realloc(w->tensors, (size_t)cap * sizeof *grown);
    if (!grown) return dsc_errorf("safetensors writer: out of memory");
    w->tensors = grown;
    w->cap = cap;
  }
  writer_tensor *t = &w->tensors[w->count];
  memset(t, 0, sizeof *t);
  t->name = strdup(name);
  if (!t->name) return dsc_errorf("safetensors writer: out of memory");
  t->dtype = dtype;
  t->ndim = ndim;
  for (int d = 0; d < ndim; d++) t->shape[d] = shape[d];
  t->data = data;
  t->nbytes = nbytes;
  w->count++;
  return NULL;
}

dsc_status *dsc_st_writer_meta(dsc_st_writer *w, const char *key, const char *value) {
  if (!key || !value) return dsc_errorf("safetensors writer: metadata key or value is NULL");
  quoted q = quote(key);
  if (!text_is_utf8(key) || !text_is_utf8(value))
    return dsc_errorf("safetensors writer: metadata %s: key or value is not valid UTF-8", q.s);
  for (int i = 0; i < w->meta_count; i++)
    if (strcmp(w->meta_keys[i], key) == 0)
      return dsc_errorf("safetensors writer: duplicate metadata key %s", q.s);
  if (w->meta_count == w->meta_cap) {
    int cap = w->meta_cap ? 2 * w->meta_cap : 8;
    char **keys = realloc(w->meta_keys, (size_t)cap * sizeof *keys);
    if (!keys) return dsc_errorf("safetensors writer: out of memory");
    w->meta_keys = keys;
    char **values = realloc(w->meta_values, (size_t)cap * sizeof *values);
    if (!values) return dsc_errorf("safetensors writer: out of memory");
    w->meta_values = values;
    w->meta_cap = cap;
  }
  char *k = strdup(key), *v = strdup(value);
  if (!k || !v) {
    free(k);
    free(v);
    return dsc_errorf("safetensors writer: out of memory");
  }
  w->meta_keys[w->meta_count] = k;
  w->meta_values[w->meta_count] = v;
  w->meta_count++;
  return NULL;
}

/* The header JSON (malloc'd, NUL-terminated) for w's tensors laid out back to back. */
static char *writer_header_json(const dsc_st_writer *w) {
  json_t *root = json_object();
  bool ok = root != NULL;
  if (ok && w->meta_count) {
    json_t *meta = json_object();
    ok = meta && json_object_set_new(root, "__metadata__", meta) == 0;
    for (int i = 0; ok && i < w->meta_count; i++)
      ok = json_object_set_new(meta, w->meta_keys[i], json_string(w->meta_values[i])) == 0;
  }
  uint64_t offset = 0;
  for (int i = 0; ok && i < w->count; i++) {
    const writer_tensor *t = &w->tensors[i];
    json_t *entry = json_object(), *shape = json_array(), *offsets = json_array();
    ok = entry && shape && offsets;
    for (int d = 0; ok && d < t->ndim; d++)
      ok = json_array_append_new(shape, json_integer(t->shape[d])) == 0;
    ok = ok && json_array_append_new(offsets, json_integer((json_int_t)offset)) == 0 &&
         json_array_append_new(offsets, json_integer((json_int_t)(offset + t->nbytes))) == 0;
    ok = ok && json_object_set_new(entry, "dtype", json_string(dsc_dtype_name(t->dtype))) == 0;
    ok = ok && json_object_set(entry, "shape", shape) == 0;
    ok = ok && json_object_set(entry, "data_offsets", offsets) == 0;
    ok = ok && json_object_set(root, t->name, entry) == 0;
    json_decref(shape);
    json_decref(offsets);
    json_decref(entry);
    offset += t->nbytes;
  }
  char *text = ok ? json_dumps(root, JSON_COMPACT) : NULL;
  json_decref(root);
  return text;
}

/* The 8-byte length and the space-padded header JSON (malloc'd, *len bytes) for w. */
static dsc_status *writer_head(const dsc_st_writer *w, const char *label, unsigned char **out,
                               size_t *len) {
  *out = NULL;
  char *json = writer_header_json(w);
  if (!json) return st_fail(label, "out of memory building the safetensors header");
  size_t json_len = strlen(json);
  size_t header_len = (json_len + 7) / 8 * 8;
  if (header_len > DSC_ST_MAX_HEADER) {
    free(json);
    return st_fail(label, "header of %zu bytes exceeds the limit of %u", header_len,
                   DSC_ST_MAX_HEADER);
  }
  unsigned char *head = malloc(8 + header_len);
  if (!head) {
    free(json);
    return st_fail(label, "out of memory for the header");
  }
  for (int i = 0; i < 8; i++) head[i] = (unsigned char)((uint64_t)header_len >> (8 * i));
  memcpy(head + 8, json, json_len);
  memset(head + 8 + json_len, ' ', header_len - json_len);
  free(json);
  *out = head;
  *len = 8 + header_len;
  return NULL;
}

dsc_status *dsc_st_writer_save(dsc_st_writer *w, const char *path) {
  unsigned char *head = NULL;
  size_t head_len = 0;
  DSC_TRY(writer_head(w, path, &head, &head_len));
  const void **parts = malloc((size_t)(w->count + 1) * sizeof *parts);
  size_t *lens = malloc((size_t)(w->count + 1) * sizeof *lens);
  dsc_status *st = NULL;
  if (!parts || !lens) {
    st = st_fail(path, "out of memory");
  } else {
    parts[0] = head;
    lens[0] = head_len;
    for (int i = 0; i < w->count; i++) {
      parts[i + 1] = w->tensors[i].data;
      lens[i + 1] = (size_t)w->tensors[i].nbytes;
    }
    st = dsc_file_write_atomic(path, w->count + 1, parts, lens);
  }
  free(parts);
  free(lens);
  free(head);
  return st;
}

dsc_status *dsc_st_writer_open(const dsc_st_writer *w, const char *label, dsc_safetensors **out) {
  *out = NULL;
  unsigned char *head = NULL;
  size_t head_len = 0;
  DSC_TRY(writer_head(w, label, &head, &head_len));
  size_t size = head_len;
  for (int i = 0; i < w->count; i++) size += (size_t)w->tensors[i].nbytes;
  unsigned char *bytes = realloc(head, size);
  if (!bytes) {
    free(head);
    return st_fail(label, "out of memory for %zu bytes", size);
  }
  size_t at = head_len;
  for (int i = 0; i < w->count; i++) {
    if (w->tensors[i].nbytes) memcpy(bytes + at, w->tensors[i].data, (size_t)w->tensors[i].nbytes);
    at += (size_t)w->tensors[i].nbytes;
  }
  return open_owned(bytes, size, label, out);
}
