/* pth_read.c: reading PyTorch checkpoints (the reading half of include/dsc/pth.h).
 *
 * Both formats end in the same place: a pickle (interpreted by pickle_read.c) whose tensors
 * refer to storages by key, and a way to get each storage's raw bytes.
 *   zip (PyTorch >= 1.6): records "<dir>/data.pkl" (the pickle) and "<dir>/data/<key>" (each
 *     storage, numel * element size bytes), opened with libzip from a memory buffer with
 *     ZIP_CHECKCONS; records must be stored (uncompressed) and unencrypted, and libzip checks
 *     each record's CRC as it is read. An optional "<dir>/byteorder" must say "little".
 *   legacy: consecutive pickles -- the magic number 0x1950a86a20f9469cfc6c, the protocol
 *     version 1001, a sys_info dict, the object, the list of storage keys -- then, for each
 *     key in that order, an 8-byte little-endian element count (equal to the numel in the
 *     storage's persistent id) and the raw bytes (count * element size of its type).
 * The state dict is the top-level dict when all its values are tensors, else its "state_dict"
 * entry, else its "model" entry (a dict holding a tensor), else the top-level dict when it
 * holds a tensor among other things. Its entries are taken in
 * order, a key set twice keeping its first position and last value (as a Python dict);
 * entries whose key is not a str or whose value is not a tensor are skipped. Each tensor is
 * copied contiguous out of its storage after checking that offset + sum((size-1)*stride)
 * lies inside it (storages are read once per key, zip records group by group), then all
 * are handed to a safetensors writer and returned as an in-memory file.
 * Errors: one line "<path>: <problem>", naming the record, tensor or opcode.
 */
#include "dsc/pth.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zip.h>

#include "io/pickle_read.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "pth_read.c copies little-endian storage bytes as host values: it needs a little-endian host"
#endif

/* More entries than any real model has; bounds the (quadratic) name checks of the writer. */
#define PTH_MAX_TENSORS (1 << 14)
/* The materialized tensors may take at most FACTOR x the file size + SLACK bytes: a real
 * checkpoint stores its storages, so only views that overlap (tied weights, stride-0
 * expansions) exceed the file size; a few hundred hostile bytes cannot ask for gigabytes. */
#define PTH_OUTPUT_FACTOR 4
#define PTH_OUTPUT_SLACK (256 << 20)
#define PTH_MAX_ZIP_ENTRIES (1 << 20)

/* Legacy format's first pickle: this integer, little-endian. */
static const unsigned char legacy_magic[10] = {0x6c, 0xfc, 0x9c, 0x46, 0xf9,
                                               0x20, 0x6a, 0xa8, 0x50, 0x19};

int dsc_pth_sniff(const void *head, size_t n) {
  const unsigned char *h = head;
  if (n >= 4 && h[0] == 'P' && h[1] == 'K' &&
      ((h[2] == 3 && h[3] == 4) || (h[2] == 5 && h[3] == 6)))
    return 1;
  return n >= 2 && h[0] == 0x80 && h[1] >= 2 && h[1] <= 5;
}

/* ---- messages ---- */

/* Text from the file, quoted, control characters escaped, shortened past 80 bytes. */
typedef struct quoted {
  char s[400];
} quoted;

static quoted quote(const char *p, size_t n) {
  quoted q;
  size_t o = 0;
  q.s[o++] = '"';
  for (size_t i = 0; i < n && o < sizeof q.s - 8; i++) {
    unsigned char c = (unsigned char)p[i];
    if (i == 80) {
      memcpy(q.s + o, "...", 3);
      o += 3;
      break;
    }
    if (c < 0x20 || c == 0x7f || c == '"' || c == '\\')
      o += (size_t)snprintf(q.s + o, sizeof q.s - o, c == '"' || c == '\\' ? "\\%c" : "\\x%02x", c);
    else
      q.s[o++] = (char)c;
  }
  q.s[o++] = '"';
  q.s[o] = 0;
  return q;
}

/* ---- the state dict ---- */

typedef struct entry {
  const char *name; /* in the pickle's input, not terminated */
  size_t name_len;
  const dsc_pickle_tensor *tensor;
  void *data;       /* materialized, contiguous */
  size_t nbytes;
} entry;

/* How many of dict d's values are tensors; *all when every value is one. */
static size_t dict_tensors(const dsc_pickle_value *d, bool *all) {
  size_t n = 0;
  if (all) *all = d && d->kind == DSC_PV_DICT && d->u.seq.count > 0;
  if (!d || d->kind != DSC_PV_DICT) return 0;
  for (size_t i = 1; i < d->u.seq.count; i += 2) {
    if (d->u.seq.items[i]->kind == DSC_PV_TENSOR) n++;
    else if (all) *all = false;
  }
  return n;
}

/* The state dict: the top-level dict when all its values are tensors, else its
 * "state_dict" or "model" entry when that is a dict holding a tensor, else the top-level
 * dict when it holds a tensor (a training checkpoint like {"epoch": 3, "best_acc1":
 * tensor(76.1), "state_dict": {...}} gives its state_dict, not best_acc1). */
static dsc_status *state_dict_find(const char *label, const dsc_pickle_value *top,
                                   const dsc_pickle_value **out) {
  if (top->kind != DSC_PV_DICT)
    return dsc_errorf("%s: the checkpoint holds a %s, not a dict of tensors", label,
                      dsc_pickle_kind_name(top->kind));
  const char *keys[] = {"state_dict", "model"};
  bool all;
  size_t top_tensors = dict_tensors(top, &all);
  if (all) {
    *out = top;
    return NULL;
  }
  for (int k = 0; k < 2; k++) {
    const dsc_pickle_value *v = dsc_pickle_dict_get(top, keys[k]);
    if (dict_tensors(v, NULL) > 0) {
      *out = v;
      return NULL;
    }
  }
  if (top_tensors > 0) {
    *out = top;
    return NULL;
  }
  for (int k = 0; k < 2; k++) {
    const dsc_pickle_value *v = dsc_pickle_dict_get(top, keys[k]);
    if (v && v->kind == DSC_PV_OBJECT)
      return dsc_errorf("%s: its \"%s\" entry is a pickled object, not a dict of tensors (a "
                        "whole module? save its state_dict() instead)",
                        label, keys[k]);
    if (v)
      return dsc_errorf("%s: its \"%s\" entry is not a dict of tensors (found: %s)", label,
                        keys[k], dsc_pickle_kind_name(v->kind));
  }
  return dsc_errorf("%s: no state dict: the top-level dict holds no tensor and no "
                    "\"state_dict\" or \"model\" entry",
                    label);
}

typedef struct key_ref {
  const char *s;
  size_t n;
  size_t index;
} key_ref;

static int bytes_cmp(const char *a, size_t na, const char *b, size_t nb) {
  int c = memcmp(a, b, na < nb ? na : nb);
  if (c) return c;
  return na < nb ? -1 : na > nb;
}

static int key_ref_cmp(const void *pa, const void *pb) {
  const key_ref *a = pa, *b = pb;
  int c = bytes_cmp(a->s, a->n, b->s, b->n);
  if (c) return c;
  return a->index < b->index ? -1 : a->index > b->index;
}

/* The tensors of dict d in order, duplicates resolved as a Python dict does. */
static dsc_status *state_dict_entries(const char *label, const dsc_pickle_value *d,
                                      entry **out, size_t *count) {
  *out = NULL;
  *count = 0;
  size_t pairs = d->u.seq.count / 2;
  key_ref *refs = malloc((pairs ? pairs : 1) * sizeof *refs);
  size_t *value_of = malloc((pairs ? pairs : 1) * sizeof *value_of); /* pair -> value pair */
  if (!refs || !value_of) {
    free(refs);
    free(value_of);
    return dsc_errorf("%s: out of memory", label);
  }
  size_t nref = 0;
  for (size_t i = 0; i < pairs; i++) {
    const dsc_pickle_value *k = d->u.seq.items[2 * i];
    value_of[i] = SIZE_MAX; /* SIZE_MAX: dropped */
    if (k->kind != DSC_PV_STR) continue;
    refs[nref++] = (key_ref){k->u.str.s, k->u.str.n, i};
  }
  qsort(refs, nref, sizeof *refs, key_ref_cmp);
  for (size_t a = 0; a < nref;) {
    size_t b = a + 1;
    while (b < nref && bytes_cmp(refs[a].s, refs[a].n, refs[b].s, refs[b].n) == 0) b++;
    value_of[refs[a].index] = refs[b - 1].index; /* first position, last value */
    a = b;
  }
  free(refs);
  size_t n = 0;
  for (size_t i = 0; i < pairs; i++)
    if (value_of[i] != SIZE_MAX && d->u.seq.items[2 * value_of[i] + 1]->kind == DSC_PV_TENSOR) n++;
  if (n > PTH_MAX_TENSORS) {
    free(value_of);
    return dsc_errorf("%s: the state dict holds %zu tensors (at most %d)", label, n,
                      PTH_MAX_TENSORS);
  }
  entry *e = calloc(n ? n : 1, sizeof *e);
  if (!e) {
    free(value_of);
    return dsc_errorf("%s: out of memory", label);
  }
  size_t j = 0;
  for (size_t i = 0; i < pairs; i++) {
    if (value_of[i] == SIZE_MAX) continue;
    const dsc_pickle_value *v = d->u.seq.items[2 * value_of[i] + 1];
    if (v->kind != DSC_PV_TENSOR) continue;
    e[j].name = d->u.seq.items[2 * i]->u.str.s;
    e[j].name_len = d->u.seq.items[2 * i]->u.str.n;
    e[j].tensor = v->u.tensor;
    j++;
  }
  free(value_of);
  *out = e;
  *count = n;
  return NULL;
}

static void entries_free(entry *e, size_t n) {
  if (!e) return;
  for (size_t i = 0; i < n; i++) free(e[i].data);
  free(e);
}

/* Checks that the tensor's storage is one dsc reads and sets e->nbytes; called before any
 * storage is fetched. */
static dsc_status *entry_check(const char *label, entry *e) {
  const dsc_pickle_tensor *t = e->tensor;
  if (t->error)
    return dsc_errorf("%s: tensor %s: %s", label, quote(e->name, e->name_len).s, t->error);
  if (memchr(e->name, 0, e->name_len))
    return dsc_errorf("%s: tensor %s: name contains a NUL byte", label,
                      quote(e->name, e->name_len).s);
  if (t->storage->dtype < 0)
    return dsc_errorf("%s: tensor %s: unsupported storage type %s", label,
                      quote(e->name, e->name_len).s,
                      quote(t->storage->type, t->storage->type_len).s);
  uint64_t numel = 1, nbytes;
  for (int d = 0; d < t->ndim; d++)
    if (__builtin_mul_overflow(numel, (uint64_t)t->size[d], &numel))
      return dsc_errorf("%s: tensor %s: too many elements", label, quote(e->name, e->name_len).s);
  if (__builtin_mul_overflow(numel, (uint64_t)t->storage->elsize, &nbytes) ||
      nbytes > SIZE_MAX / 4)
    return dsc_errorf("%s: tensor %s: too many elements", label, quote(e->name, e->name_len).s);
  e->nbytes = (size_t)nbytes;
  return NULL;
}

/* Copies entry e contiguous out of `root` (root_numel elements of the storage's type). */
static dsc_status *entry_materialize(const char *label, entry *e, const unsigned char *root,
                                     uint64_t root_numel) {
  const dsc_pickle_tensor *t = e->tensor;
  const dsc_pickle_storage *s = t->storage;
  quoted name = quote(e->name, e->name_len);
  size_t es = s->elsize;
  uint64_t base = 0, limit = root_numel;
  if (s->has_view) {
    if ((uint64_t)s->view_offset > root_numel ||
        (uint64_t)s->view_numel > root_numel - (uint64_t)s->view_offset)
      return dsc_errorf("%s: tensor %s: storage view [%lld, +%lld) outside its storage of %llu "
                        "elements",
                        label, name.s, (long long)s->view_offset, (long long)s->view_numel,
                        (unsigned long long)root_numel);
    base = (uint64_t)s->view_offset;
    limit = (uint64_t)s->view_numel;
  }
  size_t nbytes = e->nbytes, numel = nbytes / es; /* from entry_check */
  if (numel == 0) return NULL;
  /* Highest element index touched, relative to the (view) storage. */
  uint64_t last = (uint64_t)t->offset, span;
  for (int d = 0; d < t->ndim; d++)
    if (__builtin_mul_overflow((uint64_t)(t->size[d] - 1), (uint64_t)t->stride[d], &span) ||
        __builtin_add_overflow(last, span, &last))
      return dsc_errorf("%s: tensor %s: offset and strides overflow", label, name.s);
  if (last >= limit)
    return dsc_errorf("%s: tensor %s: storage too small for tensor (element %llu of %llu "
                      "needed)",
                      label, name.s, (unsigned long long)last, (unsigned long long)limit);
  unsigned char *dst = malloc(nbytes);
  if (!dst) return dsc_errorf("%s: tensor %s: out of memory for %zu bytes", label, name.s, nbytes);
  e->data = dst;
  const unsigned char *src = root + (base + (uint64_t)t->offset) * es;
  /* Odometer over all dims but the last; the last dim is one memcpy when its stride is 1. */
  int nd = t->ndim;
  size_t inner = nd ? (size_t)t->size[nd - 1] : 1;
  size_t inner_stride = nd ? (size_t)t->stride[nd - 1] : 1;
  int64_t idx[DSC_MAX_DIMS] = {0};
  size_t rows = numel / inner;
  for (size_t r = 0; r < rows; r++) {
    size_t at = 0;
    for (int d = 0; d < nd - 1; d++) at += (size_t)idx[d] * (size_t)t->stride[d];
    const unsigned char *row = src + at * es;
    if (inner_stride == 1 || inner == 1) {
      memcpy(dst, row, inner * es);
      dst += inner * es;
    } else {
      for (size_t i = 0; i < inner; i++, dst += es) memcpy(dst, row + i * inner_stride * es, es);
    }
    for (int d = nd - 2; d >= 0; d--) {
      if (++idx[d] < t->size[d]) break;
      idx[d] = 0;
    }
  }
  return NULL;
}

static int entry_key_cmp(const void *pa, const void *pb) {
  const entry *a = *(const entry *const *)pa, *b = *(const entry *const *)pb;
  return bytes_cmp(a->tensor->storage->key, a->tensor->storage->key_len,
                   b->tensor->storage->key, b->tensor->storage->key_len);
}

/* Storage bytes by key: zip reads a record (owned, freed by the caller), legacy points into
 * the file. *numel is the root storage's element count. */
typedef struct storage_source {
  dsc_status *(*fetch)(struct storage_source *src, const dsc_pickle_storage *s,
                       const unsigned char **bytes, uint64_t *numel, void **owned);
  const char *label;
  zip_t *za;
  size_t archive_size;
  const char *dir;
  size_t dir_len;
  struct legacy_blob *blobs; /* legacy: sorted by key */
  size_t nblobs;
} storage_source;

/* Materializes every entry (storages fetched once per key) and returns the safetensors. */
static dsc_status *entries_finish(storage_source *src, entry *e, size_t n,
                                  dsc_safetensors **out) {
  const char *label = src->label;
  uint64_t total = 0, limit = PTH_OUTPUT_FACTOR * (uint64_t)src->archive_size + PTH_OUTPUT_SLACK;
  for (size_t i = 0; i < n; i++) {
    DSC_TRY(entry_check(label, &e[i]));
    total += e[i].nbytes; /* each below SIZE_MAX / 4: no overflow before the check */
    if (total > limit)
      return dsc_errorf("%s: the tensors would take more than %llu bytes, %d x the file size + "
                        "%d MiB (stride-0 or overlapping views of small storages?)",
                        label, (unsigned long long)limit, PTH_OUTPUT_FACTOR,
                        PTH_OUTPUT_SLACK >> 20);
  }
  entry **by_key = malloc((n ? n : 1) * sizeof *by_key);
  if (!by_key) return dsc_errorf("%s: out of memory", label);
  for (size_t i = 0; i < n; i++) by_key[i] = &e[i];
  qsort(by_key, n, sizeof *by_key, entry_key_cmp);
  dsc_status *err = NULL;
  for (size_t a = 0; a < n && !err;) {
    size_t b = a + 1;
    while (b < n && entry_key_cmp(&by_key[a], &by_key[b]) == 0) b++;
    const dsc_pickle_storage *s = by_key[a]->tensor->storage;
    for (size_t i = a + 1; i < b && !err; i++) {
      const dsc_pickle_storage *o = by_key[i]->tensor->storage;
      if (o->elsize != s->elsize || o->numel != s->numel)
        err = dsc_errorf("%s: storage %s is used with two different types or sizes (%s)", label,
                         quote(s->key, s->key_len).s,
                         quote(by_key[i]->name, by_key[i]->name_len).s);
    }
    const unsigned char *bytes = NULL;
    uint64_t numel = 0;
    void *owned = NULL;
    if (!err) err = src->fetch(src, s, &bytes, &numel, &owned);
    for (size_t i = a; i < b && !err; i++) err = entry_materialize(label, by_key[i], bytes, numel);
    free(owned);
    a = b;
  }
  free(by_key);
  if (err) return err;
  dsc_st_writer *w = NULL;
  DSC_TRY(dsc_st_writer_new(&w));
  char *name = NULL;
  for (size_t i = 0; i < n && !err; i++) {
    name = malloc(e[i].name_len + 1);
    if (!name) {
      err = dsc_errorf("%s: out of memory", label);
      break;
    }
    memcpy(name, e[i].name, e[i].name_len);
    name[e[i].name_len] = 0;
    const dsc_pickle_tensor *t = e[i].tensor;
    err = dsc_status_wrap(
        dsc_st_writer_add(w, name, (dsc_dtype)t->storage->dtype, t->ndim, t->size, e[i].data),
        "%s", label);
    free(name);
  }
  if (!err) err = dsc_st_writer_open(w, label, out);
  dsc_st_writer_free(w);
  return err;
}

/* ---- zip ---- */

/* Reads record `name` (stored, unencrypted, CRC checked by libzip) into a new buffer. */
static dsc_status *zip_record(zip_t *za, const char *label, const char *name, size_t archive_size,
                              unsigned char **out, size_t *len) {
  *out = NULL;
  *len = 0;
  quoted q = quote(name, strlen(name));
  zip_int64_t idx = zip_name_locate(za, name, ZIP_FL_ENC_RAW);
  if (idx < 0) return dsc_errorf("%s: missing record %s", label, q.s);
  zip_stat_t zs;
  zip_stat_init(&zs);
  if (zip_stat_index(za, (zip_uint64_t)idx, 0, &zs) != 0)
    return dsc_errorf("%s: record %s: %s", label, q.s, zip_strerror(za));
  if ((zs.valid & ZIP_STAT_COMP_METHOD) && zs.comp_method != ZIP_CM_STORE)
    return dsc_errorf("%s: record %s is compressed (method %d); torch.save stores records "
                      "uncompressed",
                      label, q.s, (int)zs.comp_method);
  if ((zs.valid & ZIP_STAT_ENCRYPTION_METHOD) && zs.encryption_method != ZIP_EM_NONE)
    return dsc_errorf("%s: record %s is encrypted", label, q.s);
  if (!(zs.valid & ZIP_STAT_SIZE) || zs.size > archive_size ||
      ((zs.valid & ZIP_STAT_COMP_SIZE) && zs.comp_size != zs.size))
    return dsc_errorf("%s: record %s: inconsistent size (%llu bytes in an archive of %zu)", label,
                      q.s, (unsigned long long)zs.size, archive_size);
  size_t size = (size_t)zs.size;
  unsigned char *buf = malloc(size ? size : 1);
  if (!buf) return dsc_errorf("%s: record %s: out of memory for %zu bytes", label, q.s, size);
  zip_file_t *zf = zip_fopen_index(za, (zip_uint64_t)idx, 0);
  if (!zf) {
    free(buf);
    return dsc_errorf("%s: record %s: %s", label, q.s, zip_strerror(za));
  }
  size_t got = 0;
  dsc_status *err = NULL;
  while (!err && got < size) {
    zip_int64_t r = zip_fread(zf, buf + got, size - got);
    if (r < 0) err = dsc_errorf("%s: record %s: %s", label, q.s, zip_file_strerror(zf));
    else if (r == 0) break;
    else got += (size_t)r;
  }
  if (!err && got == size) { /* one more read: libzip checks the CRC at the end */
    unsigned char extra;
    zip_int64_t r = zip_fread(zf, &extra, 1);
    if (r < 0) err = dsc_errorf("%s: record %s: %s", label, q.s, zip_file_strerror(zf));
    else if (r > 0) err = dsc_errorf("%s: record %s is longer than its header says", label, q.s);
  }
  zip_fclose(zf);
  if (!err && got != size)
    err = dsc_errorf("%s: record %s: truncated (%zu of %zu bytes)", label, q.s, got, size);
  if (err) {
    free(buf);
    return err;
  }
  *out = buf;
  *len = size;
  return NULL;
}

static dsc_status *zip_fetch(storage_source *src, const dsc_pickle_storage *s,
                             const unsigned char **bytes, uint64_t *numel, void **owned) {
  *owned = NULL;
  quoted key = quote(s->key, s->key_len);
  if (memchr(s->key, 0, s->key_len) || memchr(s->key, '/', s->key_len) || s->key_len > 200)
    return dsc_errorf("%s: invalid storage key %s", src->label, key.s);
  char name[512];
  snprintf(name, sizeof name, "%.*s/data/%.*s", (int)src->dir_len, src->dir, (int)s->key_len,
           s->key);
  unsigned char *buf;
  size_t len;
  DSC_TRY(zip_record(src->za, src->label, name, src->archive_size, &buf, &len));
  uint64_t want;
  if (__builtin_mul_overflow((uint64_t)s->numel, (uint64_t)s->elsize, &want) || want != len) {
    free(buf);
    return dsc_errorf("%s: record %s holds %zu bytes, its storage needs %lld x %zu", src->label,
                      quote(name, strlen(name)).s, len, (long long)s->numel, s->elsize);
  }
  *bytes = buf;
  *owned = buf;
  *numel = (uint64_t)s->numel;
  return NULL;
}

static dsc_status *zip_parse(const unsigned char *bytes, size_t size, const char *label,
                             dsc_safetensors **out) {
  zip_error_t ze;
  zip_error_init(&ze);
  zip_source_t *zsrc = zip_source_buffer_create(bytes, size, 0, &ze);
  if (!zsrc) {
    dsc_status *err = dsc_errorf("%s: %s", label, zip_error_strerror(&ze));
    zip_error_fini(&ze);
    return err;
  }
  zip_t *za = zip_open_from_source(zsrc, ZIP_RDONLY | ZIP_CHECKCONS, &ze);
  if (!za) {
    dsc_status *err = dsc_errorf("%s: not a readable zip archive (truncated or corrupt?): %s",
                                 label, zip_error_strerror(&ze));
    zip_source_free(zsrc);
    zip_error_fini(&ze);
    return err;
  }
  zip_error_fini(&ze);
  dsc_status *err = NULL;
  unsigned char *pkl = NULL;
  size_t pkl_len = 0;
  dsc_pickle_reader *r = NULL;
  entry *e = NULL;
  size_t n = 0;
  char dir[256];
  size_t dir_len = 0;
  int found = 0;
  zip_int64_t count = zip_get_num_entries(za, 0);
  if (count < 0 || count > PTH_MAX_ZIP_ENTRIES)
    err = dsc_errorf("%s: zip archive with %lld entries", label, (long long)count);
  for (zip_int64_t i = 0; !err && i < count; i++) {
    const char *name = zip_get_name(za, (zip_uint64_t)i, ZIP_FL_ENC_RAW);
    if (!name) continue;
    size_t len = strlen(name);
    const char *suffix = "/data.pkl";
    size_t sl = strlen(suffix);
    if (len <= sl || strcmp(name + len - sl, suffix) != 0) continue;
    if (memchr(name, '/', len - sl)) continue;
    if (found++) {
      err = dsc_errorf("%s: more than one top-level folder holds a data.pkl (%s and %s/)", label,
                       quote(name, len).s, quote(dir, dir_len).s);
      break;
    }
    if (len - sl >= sizeof dir) {
      err = dsc_errorf("%s: folder name %s too long", label, quote(name, len - sl).s);
      break;
    }
    dir_len = len - sl;
    memcpy(dir, name, dir_len);
    dir[dir_len] = 0;
  }
  if (!err && !found)
    err = dsc_errorf("%s: zip archive without a <folder>/data.pkl record (not a PyTorch "
                     "checkpoint?)",
                     label);
  char name[300];
  if (!err) {
    snprintf(name, sizeof name, "%s/byteorder", dir);
    if (zip_name_locate(za, name, ZIP_FL_ENC_RAW) >= 0) {
      unsigned char *bo = NULL;
      size_t bo_len = 0;
      err = zip_record(za, label, name, size, &bo, &bo_len);
      if (!err && !(bo_len == 6 && memcmp(bo, "little", 6) == 0))
        err = dsc_errorf("%s: record %s says %s: only little-endian checkpoints are supported",
                         label, quote(name, strlen(name)).s, quote((char *)bo, bo_len).s);
      free(bo);
    }
  }
  if (!err) {
    snprintf(name, sizeof name, "%s/data.pkl", dir);
    err = zip_record(za, label, name, size, &pkl, &pkl_len);
  }
  if (!err) err = dsc_pickle_reader_new(&r);
  dsc_pickle_value *top = NULL;
  if (!err) {
    size_t pos = 0;
    err = dsc_status_wrap(dsc_pickle_reader_load(r, pkl, pkl_len, &pos, &top), "%s: %s", label,
                          quote(name, strlen(name)).s);
  }
  const dsc_pickle_value *sd = NULL;
  if (!err) err = state_dict_find(label, top, &sd);
  if (!err) err = state_dict_entries(label, sd, &e, &n);
  if (!err) {
    storage_source src = {zip_fetch, label, za, size, dir, dir_len, NULL, 0};
    err = entries_finish(&src, e, n, out);
  }
  entries_free(e, n);
  dsc_pickle_reader_free(r);
  free(pkl);
  zip_discard(za);
  return err;
}

/* ---- legacy ---- */

typedef struct legacy_blob {
  const char *key;
  size_t key_len;
  const dsc_pickle_storage *storage; /* first one created with this key */
  size_t order;                      /* creation order */
  const unsigned char *data;         /* NULL until the key's raw data are found */
  uint64_t numel;
} legacy_blob;

static int blob_cmp(const void *pa, const void *pb) {
  const legacy_blob *a = pa, *b = pb;
  int c = bytes_cmp(a->key, a->key_len, b->key, b->key_len);
  if (c) return c;
  return a->order < b->order ? -1 : a->order > b->order;
}

static legacy_blob *blob_find(legacy_blob *blobs, size_t n, const char *key, size_t key_len) {
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = bytes_cmp(blobs[mid].key, blobs[mid].key_len, key, key_len);
    if (c == 0) return &blobs[mid];
    if (c < 0) lo = mid + 1;
    else hi = mid;
  }
  return NULL;
}

static dsc_status *legacy_fetch(storage_source *src, const dsc_pickle_storage *s,
                                const unsigned char **bytes, uint64_t *numel, void **owned) {
  *owned = NULL;
  legacy_blob *b = blob_find(src->blobs, src->nblobs, s->key, s->key_len);
  if (!b || !b->data)
    return dsc_errorf("%s: storage %s has no data (its key is not in the storage list)",
                      src->label, quote(s->key, s->key_len).s);
  if (b->storage->elsize != s->elsize || b->storage->numel != s->numel)
    return dsc_errorf("%s: storage %s is used with two different types or sizes", src->label,
                      quote(s->key, s->key_len).s);
  *bytes = b->data;
  *numel = b->numel;
  return NULL;
}

/* One of the legacy format's pickles (`what`), errors prefixed with the label. */
static dsc_status *legacy_load(dsc_pickle_reader *r, const unsigned char *bytes, size_t size,
                               size_t *pos, dsc_pickle_value **v, const char *label,
                               const char *what) {
  return dsc_status_wrap(dsc_pickle_reader_load(r, bytes, size, pos, v), "%s: legacy format's %s pickle",
                         label, what);
}

static dsc_status *legacy_parse(const unsigned char *bytes, size_t size, const char *label,
                                dsc_safetensors **out) {
  dsc_pickle_reader *r = NULL;
  DSC_TRY(dsc_pickle_reader_new(&r));
  dsc_status *err = NULL;
  size_t pos = 0;
  dsc_pickle_value *magic = NULL, *version = NULL, *sys_info = NULL, *top = NULL, *keys = NULL;
  legacy_blob *blobs = NULL;
  entry *e = NULL;
  size_t n = 0, nblobs = 0;
  err = legacy_load(r, bytes, size, &pos, &magic, label, "magic number");
  if (!err && !(magic->kind == DSC_PV_BIGINT && magic->u.str.n == sizeof legacy_magic &&
                memcmp(magic->u.str.s, legacy_magic, sizeof legacy_magic) == 0))
    err = dsc_errorf("%s: a pickle but not a PyTorch checkpoint (no torch magic number)", label);
  if (!err) err = legacy_load(r, bytes, size, &pos, &version, label, "protocol version");
  if (!err && !(version->kind == DSC_PV_INT && version->u.i == 1001))
    err = dsc_errorf("%s: unsupported legacy checkpoint protocol version (expected 1001)", label);
  if (!err) err = legacy_load(r, bytes, size, &pos, &sys_info, label, "sys_info");
  if (!err) {
    const dsc_pickle_value *le = dsc_pickle_dict_get(sys_info, "little_endian");
    if (sys_info->kind != DSC_PV_DICT)
      err = dsc_errorf("%s: legacy checkpoint: sys_info is a %s, not a dict", label,
                       dsc_pickle_kind_name(sys_info->kind));
    else if (le && le->kind == DSC_PV_BOOL && !le->u.i)
      err = dsc_errorf("%s: big-endian legacy checkpoints are not supported", label);
  }
  if (!err) err = legacy_load(r, bytes, size, &pos, &top, label, "object");
  if (!err) err = legacy_load(r, bytes, size, &pos, &keys, label, "storage key list");
  if (!err && keys->kind != DSC_PV_LIST)
    err = dsc_errorf("%s: legacy checkpoint: the storage key list is a %s", label,
                     dsc_pickle_kind_name(keys->kind));
  /* Every storage created by the pickles, by key (the first created with a key rules). */
  if (!err) {
    nblobs = dsc_pickle_reader_storage_count(r);
    blobs = calloc(nblobs ? nblobs : 1, sizeof *blobs);
    if (!blobs) err = dsc_errorf("%s: out of memory", label);
  }
  if (!err) {
    for (size_t i = 0; i < nblobs; i++) {
      const dsc_pickle_storage *s = dsc_pickle_reader_storage(r, i);
      blobs[i] = (legacy_blob){s->key, s->key_len, s, i, NULL, 0};
    }
    qsort(blobs, nblobs, sizeof *blobs, blob_cmp);
    size_t u = 0;
    for (size_t i = 0; i < nblobs; i++)
      if (u == 0 || bytes_cmp(blobs[u - 1].key, blobs[u - 1].key_len, blobs[i].key,
                              blobs[i].key_len) != 0)
        blobs[u++] = blobs[i];
    nblobs = u;
  }
  /* The raw data, in the order of the key list. */
  for (size_t k = 0; !err && k < keys->u.seq.count; k++) {
    const dsc_pickle_value *kv = keys->u.seq.items[k];
    if (kv->kind != DSC_PV_STR && kv->kind != DSC_PV_BYTES) {
      err = dsc_errorf("%s: legacy checkpoint: storage key %zu is a %s", label, k,
                       dsc_pickle_kind_name(kv->kind));
      break;
    }
    quoted q = quote(kv->u.str.s, kv->u.str.n);
    legacy_blob *b = blob_find(blobs, nblobs, kv->u.str.s, kv->u.str.n);
    if (!b) {
      err = dsc_errorf("%s: storage %s is listed but never used", label, q.s);
      break;
    }
    if (b->data) {
      err = dsc_errorf("%s: storage %s is listed twice", label, q.s);
      break;
    }
    if (b->storage->elsize == 0) {
      err = dsc_errorf("%s: storage %s has an unknown type %s", label, q.s,
                       quote(b->storage->type, b->storage->type_len).s);
      break;
    }
    if (size - pos < 8) {
      err = dsc_errorf("%s: truncated: storage %s at byte %zu lacks its 8-byte size", label, q.s,
                       pos);
      break;
    }
    uint64_t count = 0;
    for (int i = 7; i >= 0; i--) count = (count << 8) | bytes[pos + (size_t)i];
    pos += 8;
    if (count != (uint64_t)b->storage->numel) {
      err = dsc_errorf("%s: storage %s holds %llu elements, its record says %lld", label, q.s,
                       (unsigned long long)count, (long long)b->storage->numel);
      break;
    }
    if (count > (size - pos) / b->storage->elsize) {
      err = dsc_errorf("%s: truncated: storage %s needs %llu x %zu bytes at byte %zu, %zu left",
                       label, q.s, (unsigned long long)count, b->storage->elsize, pos, size - pos);
      break;
    }
    b->data = bytes + pos;
    b->numel = count;
    pos += (size_t)count * b->storage->elsize;
  }
  const dsc_pickle_value *sd = NULL;
  if (!err) err = state_dict_find(label, top, &sd);
  if (!err) err = state_dict_entries(label, sd, &e, &n);
  if (!err) {
    storage_source src = {legacy_fetch, label, NULL, size, NULL, 0, blobs, nblobs};
    err = entries_finish(&src, e, n, out);
  }
  entries_free(e, n);
  free(blobs);
  dsc_pickle_reader_free(r);
  return err;
}

/* ---- entry points ---- */

dsc_status *dsc_pth_read_memory(const void *bytes, size_t size, const char *label,
                                dsc_safetensors **out) {
  *out = NULL;
  if (!label) label = "<memory>";
  const unsigned char *b = bytes;
  if (size >= 4 && b[0] == 'P' && b[1] == 'K') return zip_parse(b, size, label, out);
  if (size >= 2 && b[0] == 0x80) return legacy_parse(b, size, label, out);
  if (size >= 262 && memcmp(b + 257, "ustar", 5) == 0)
    return dsc_errorf("%s: a tar archive: checkpoints of PyTorch < 0.4 are not supported", label);
  return dsc_errorf("%s: not a PyTorch checkpoint (neither a zip archive nor a pickle)", label);
}

dsc_status *dsc_pth_read(const char *path, dsc_safetensors **out) {
  *out = NULL;
  FILE *f = fopen(path, "rb");
  if (!f) return dsc_errorf("%s: cannot open: %s", path, strerror(errno));
  struct stat sb;
  if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
    fclose(f);
    return dsc_errorf("%s: not a regular file", path);
  }
  size_t size = (size_t)sb.st_size;
  unsigned char *buf = malloc(size ? size : 1);
  if (!buf) {
    fclose(f);
    return dsc_errorf("%s: out of memory for %zu bytes", path, size);
  }
  size_t got = fread(buf, 1, size, f);
  int read_error = ferror(f);
  fclose(f);
  if (read_error || got != size) {
    free(buf);
    return dsc_errorf("%s: read error (%zu of %zu bytes)", path, got, size);
  }
  dsc_status *err = dsc_pth_read_memory(buf, size, path, out);
  free(buf);
  return err;
}
