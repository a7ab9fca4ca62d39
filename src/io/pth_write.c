/* pth_write.c: dsc_pth_write, PyTorch checkpoints as torch.save writes them (include/dsc/pth.h).
 *
 * Layout (what torch.save in PyTorch 1.13 writes to a buffer, plus the byteorder record of
 * PyTorch >= 2.1, which older versions ignore):
 *   archive/data.pkl     pickle protocol 2 of {"state_dict": OrderedDict, "meta": {...}}
 *   archive/byteorder    "little"
 *   archive/data/<i>     the bytes of tensor i (one storage per tensor, key "<i>")
 *   archive/version      "3\n"
 * Every record is STORED (no compression) and its data start at a multiple of 64 bytes of the
 * file: like torch, each local header carries an extra field "FB" (0x4246) of 'Z' bytes whose
 * length pads the header to the boundary. libzip writes the entries of a new archive in
 * index order, so the offsets are known in advance; the finished archive is walked once to
 * check every record's data offset before anything is saved.
 *
 * Each tensor is pickled as torch does:
 *   torch._utils._rebuild_tensor_v2(
 *       BINPERSID ('storage', torch.<T>Storage, "<i>", "cpu", numel), 0, size, stride,
 *       False, collections.OrderedDict())
 * with contiguous strides (stride[d] = prod of max(size[k], 1) for k > d, as torch computes
 * them). These are only globals that torch.load(weights_only=True) accepts.
 *
 * libzip writes the zip into memory (a small source of our own, mem_sink) and the bytes are
 * saved with dsc_file_write_atomic, so a failure leaves no partial file behind. The records'
 * data are handed to libzip without copying; the archive buffer is the only copy made.
 */
#include "dsc/pth.h"

#include "dsc/atomic_file.h"
#include "io/pickle_write.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zip.h>

#define PTH_ALIGN 64
#define PTH_ARCHIVE "archive/"
#define PTH_PAD_FIELD_ID 0x4246 /* "FB", as torch's writer */
#define PTH_LOCAL_HEADER 30     /* fixed part of a zip local file header */

/* The PyTorch 1.13 storage class of a dtype, or NULL when there is none. */
static const char *storage_class(dsc_dtype t) {
  switch (t) {
    case DSC_F32: return "FloatStorage";
    case DSC_F64: return "DoubleStorage";
    case DSC_F16: return "HalfStorage";
    case DSC_BF16: return "BFloat16Storage";
    case DSC_I64: return "LongStorage";
    case DSC_I32: return "IntStorage";
    case DSC_I16: return "ShortStorage";
    case DSC_I8: return "CharStorage";
    case DSC_U8: return "ByteStorage";
    case DSC_BOOL: return "BoolStorage";
    default: return NULL;
  }
}

/* Python batches dict items by 1000 per SETITEMS; so do we. */
#define PTH_BATCH 1000

static void pickle_tensor(dsc_pkw *w, const dsc_st_tensor *t, int index) {
  char key[24];
  snprintf(key, sizeof key, "%d", index);
  int64_t stride[DSC_MAX_DIMS];
  int64_t s = 1;
  for (int d = t->ndim - 1; d >= 0; d--) {
    stride[d] = s;
    s *= t->shape[d] > 1 ? t->shape[d] : 1;
  }
  dsc_pkw_cstr(w, t->name);
  dsc_pkw_global(w, "torch._utils", "_rebuild_tensor_v2");
  dsc_pkw_op(w, DSC_PK_MARK);
  /* persistent id of the storage */
  dsc_pkw_op(w, DSC_PK_MARK);
  dsc_pkw_memo_str(w, "storage");
  dsc_pkw_global(w, "torch", storage_class(t->dtype));
  dsc_pkw_cstr(w, key);
  dsc_pkw_memo_str(w, "cpu");
  dsc_pkw_int(w, (int64_t)dsc_st_numel(t));
  dsc_pkw_op(w, DSC_PK_TUPLE);
  dsc_pkw_op(w, DSC_PK_BINPERSID);
  dsc_pkw_int(w, 0); /* storage offset */
  dsc_pkw_int_tuple(w, t->shape, t->ndim);
  dsc_pkw_int_tuple(w, stride, t->ndim);
  dsc_pkw_bool(w, 0); /* requires_grad */
  dsc_pkw_global(w, "collections", "OrderedDict"); /* backward hooks */
  dsc_pkw_op(w, DSC_PK_EMPTY_TUPLE);
  dsc_pkw_op(w, DSC_PK_REDUCE);
  dsc_pkw_op(w, DSC_PK_TUPLE);
  dsc_pkw_op(w, DSC_PK_REDUCE);
}

static dsc_status *build_pickle(const char *path, const dsc_safetensors *src,
                                unsigned char **out, size_t *len) {
  int n = dsc_st_count(src);
  for (int i = 0; i < n; i++) {
    const dsc_st_tensor *t = dsc_st_get(src, i);
    if (!storage_class(t->dtype))
      return dsc_errorf("%s: tensor \"%s\" has dtype %s, which PyTorch has no storage for "
                        "(U16/U32/U64 are not supported by torch.save in 1.13)",
                        path, t->name, dsc_dtype_name(t->dtype));
  }
  dsc_pkw w;
  dsc_pkw_init(&w, 2);
  dsc_pkw_op(&w, DSC_PK_EMPTY_DICT);
  dsc_pkw_op(&w, DSC_PK_MARK);
  dsc_pkw_cstr(&w, "state_dict");
  dsc_pkw_global(&w, "collections", "OrderedDict");
  dsc_pkw_op(&w, DSC_PK_EMPTY_TUPLE);
  dsc_pkw_op(&w, DSC_PK_REDUCE);
  for (int b = 0; b < n; b += PTH_BATCH) {
    dsc_pkw_op(&w, DSC_PK_MARK);
    for (int i = b; i < n && i < b + PTH_BATCH; i++) pickle_tensor(&w, dsc_st_get(src, i), i);
    dsc_pkw_op(&w, DSC_PK_SETITEMS);
  }
  dsc_pkw_cstr(&w, "meta");
  dsc_pkw_op(&w, DSC_PK_EMPTY_DICT);
  int m = dsc_st_meta_count(src);
  for (int b = 0; b < m; b += PTH_BATCH) {
    dsc_pkw_op(&w, DSC_PK_MARK);
    for (int i = b; i < m && i < b + PTH_BATCH; i++) {
      const char *k = dsc_st_meta_key(src, i);
      dsc_pkw_cstr(&w, k);
      dsc_pkw_cstr(&w, dsc_st_meta(src, k));
    }
    dsc_pkw_op(&w, DSC_PK_SETITEMS);
  }
  dsc_pkw_op(&w, DSC_PK_SETITEMS);
  return dsc_status_wrap(dsc_pkw_finish(&w, out, len), "%s", path);
}

/* One zip record to write. */
typedef struct pth_record {
  char name[48];
  const void *data;
  size_t len;
} pth_record;

static uint32_t rd32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint16_t rd16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }

/* Walks the local headers of the finished archive: every record where expected, stored,
 * with its data on a PTH_ALIGN boundary. Guards against a libzip that lays entries out
 * differently than predicted (the file would still load, but not memory-mappable). */
static dsc_status *check_layout(const char *path, const unsigned char *z, size_t size,
                                const pth_record *rec, int n) {
  size_t off = 0;
  for (int i = 0; i < n; i++) {
    size_t name_len = strlen(rec[i].name);
    if (size < PTH_LOCAL_HEADER || off > size - PTH_LOCAL_HEADER || rd32(z + off) != 0x04034b50u)
      return dsc_errorf("%s: internal error: no zip local header for \"%s\" at offset %zu",
                        path, rec[i].name, off);
    const unsigned char *h = z + off;
    size_t data = off + PTH_LOCAL_HEADER + rd16(h + 26) + rd16(h + 28);
    if (rd16(h + 8) != 0 || rd16(h + 26) != name_len ||
        memcmp(h + PTH_LOCAL_HEADER, rec[i].name, name_len) != 0 || rd32(h + 18) != rec[i].len)
      return dsc_errorf("%s: internal error: unexpected zip local header for \"%s\" at offset %zu",
                        path, rec[i].name, off);
    if (data % PTH_ALIGN != 0)
      return dsc_errorf("%s: internal error: record \"%s\" starts at offset %zu, not a multiple "
                        "of %d", path, rec[i].name, data, PTH_ALIGN);
    off = data + rec[i].len;
  }
  return NULL;
}

/* ---- an in-memory libzip target ----
 * libzip writes the archive through this source into one growable buffer (reserved to the
 * predicted size up front, so a model is copied once), instead of libzip's own buffer
 * source, which would need a second copy to get the bytes out. It supports what
 * zip_open_from_source + zip_close need for a new archive: reading (of an empty archive),
 * seeking, and writing with seeks back (libzip rewrites each local header after its data). */
typedef struct mem_sink {
  unsigned char *buf; /* the archive being written, then the committed one */
  size_t len, cap;    /* bytes written so far; allocated */
  size_t pos;         /* write position */
  size_t read_pos;    /* read position in the committed archive */
  size_t committed;   /* size of the committed archive (0 until COMMIT_WRITE) */
  zip_error_t err;
} mem_sink;

static int sink_reserve(mem_sink *s, size_t need) {
  if (need <= s->cap) return 0;
  size_t cap = s->cap ? s->cap : 65536;
  while (cap < need) {
    if (cap > SIZE_MAX / 2) return -1;
    cap *= 2;
  }
  unsigned char *p = realloc(s->buf, cap);
  if (!p) return -1;
  s->buf = p;
  s->cap = cap;
  return 0;
}

static zip_int64_t sink_cb(void *ud, void *data, zip_uint64_t n, zip_source_cmd_t cmd) {
  mem_sink *s = ud;
  switch (cmd) {
    case ZIP_SOURCE_SUPPORTS:
      return ZIP_SOURCE_SUPPORTS_WRITABLE;
    case ZIP_SOURCE_OPEN:
      s->read_pos = 0;
      return 0;
    case ZIP_SOURCE_READ: {
      size_t left = s->committed - s->read_pos;
      size_t k = n < left ? (size_t)n : left;
      if (k) memcpy(data, s->buf + s->read_pos, k);
      s->read_pos += k;
      return (zip_int64_t)k;
    }
    case ZIP_SOURCE_CLOSE:
      return 0;
    case ZIP_SOURCE_STAT: {
      zip_stat_t *st = data;
      zip_stat_init(st);
      st->size = s->committed;
      st->valid |= ZIP_STAT_SIZE;
      return sizeof *st;
    }
    case ZIP_SOURCE_SEEK: {
      zip_int64_t off = zip_source_seek_compute_offset(s->read_pos, s->committed, data, n, &s->err);
      if (off < 0) return -1;
      s->read_pos = (size_t)off;
      return 0;
    }
    case ZIP_SOURCE_TELL:
      return (zip_int64_t)s->read_pos;
    case ZIP_SOURCE_BEGIN_WRITE:
      s->len = s->pos = 0;
      return 0;
    case ZIP_SOURCE_WRITE:
      if (n > SIZE_MAX - s->pos || sink_reserve(s, s->pos + (size_t)n)) {
        zip_error_set(&s->err, ZIP_ER_MEMORY, 0);
        return -1;
      }
      memcpy(s->buf + s->pos, data, (size_t)n);
      s->pos += (size_t)n;
      if (s->pos > s->len) s->len = s->pos;
      return (zip_int64_t)n;
    case ZIP_SOURCE_SEEK_WRITE: {
      zip_int64_t off = zip_source_seek_compute_offset(s->pos, s->len, data, n, &s->err);
      if (off < 0) return -1;
      s->pos = (size_t)off;
      return 0;
    }
    case ZIP_SOURCE_TELL_WRITE:
      return (zip_int64_t)s->pos;
    case ZIP_SOURCE_COMMIT_WRITE:
      s->committed = s->len;
      return 0;
    case ZIP_SOURCE_ROLLBACK_WRITE:
      s->len = s->pos = 0;
      return 0;
    case ZIP_SOURCE_REMOVE:
      s->len = s->pos = s->committed = 0;
      return 0;
    case ZIP_SOURCE_ERROR:
      return zip_error_to_data(&s->err, data, n);
    case ZIP_SOURCE_FREE:
      return 0;
    default:
      zip_error_set(&s->err, ZIP_ER_OPNOTSUPP, 0);
      return -1;
  }
}

/* Builds the archive in memory; on success *out (malloc'ed) holds its *size bytes. */
static dsc_status *build_zip(const char *path, const pth_record *rec, int n,
                             unsigned char **out, size_t *size) {
  *out = NULL;
  *size = 0;
  /* Every record's timestamp is 1980-01-01 00:00 local time (the zip epoch, as torch writes),
   * so equal inputs give equal files. */
  struct tm epoch = {0};
  epoch.tm_year = 80;
  epoch.tm_mday = 1;
  epoch.tm_isdst = -1;
  time_t mtime = mktime(&epoch);
  char zeds[PTH_ALIGN]; /* the padding bytes, as torch fills them */
  memset(zeds, 'Z', sizeof zeds);

  /* Predicted size: local headers + padding + data, central directory (46 + name each),
   * end record; reserved so that the archive is written without reallocation. */
  size_t predicted = 22 + 56;
  for (int i = 0; i < n; i++)
    predicted += PTH_LOCAL_HEADER + 4 + PTH_ALIGN + rec[i].len + 2 * (46 + strlen(rec[i].name));
  mem_sink sink = {0};
  zip_error_init(&sink.err);
  if (sink_reserve(&sink, predicted)) {
    zip_error_fini(&sink.err);
    return dsc_errorf("%s: out of memory for a %zu-byte archive", path, predicted);
  }
  zip_error_t zerr;
  zip_error_init(&zerr);
  zip_source_t *src = zip_source_function_create(sink_cb, &sink, &zerr);
  zip_t *za = src ? zip_open_from_source(src, ZIP_TRUNCATE, &zerr) : NULL;
  if (!za) {
    dsc_status *st = dsc_errorf("%s: starting the archive: %s", path, zip_error_strerror(&zerr));
    zip_error_fini(&zerr);
    if (src) zip_source_free(src);
    free(sink.buf);
    zip_error_fini(&sink.err);
    return st;
  }
  zip_error_fini(&zerr);

  dsc_status *st = NULL;
  size_t off = 0; /* where the next local header will start */
  for (int i = 0; i < n && !st; i++) {
    size_t name_len = strlen(rec[i].name);
    if (rec[i].len >= 0xFFFFFFFFu) {
      st = dsc_errorf("%s: record \"%s\" has %zu bytes; records of 4 GiB or more are not "
                      "supported", path, rec[i].name, rec[i].len);
      break;
    }
    size_t fixed = off + PTH_LOCAL_HEADER + name_len + 4; /* 4: the extra field's header */
    size_t pad = (PTH_ALIGN - fixed % PTH_ALIGN) % PTH_ALIGN;
    zip_source_t *s = zip_source_buffer(za, rec[i].len ? rec[i].data : "", rec[i].len, 0);
    zip_int64_t idx = s ? zip_file_add(za, rec[i].name, s, ZIP_FL_ENC_UTF_8) : -1;
    if (idx < 0) {
      if (s) zip_source_free(s);
      st = dsc_errorf("%s: adding \"%s\" to the archive: %s", path, rec[i].name,
                      zip_strerror(za));
      break;
    }
    if (zip_set_file_compression(za, (zip_uint64_t)idx, ZIP_CM_STORE, 0) < 0 ||
        zip_file_set_mtime(za, (zip_uint64_t)idx, mtime, 0) < 0 ||
        zip_file_extra_field_set(za, (zip_uint64_t)idx, PTH_PAD_FIELD_ID, ZIP_EXTRA_FIELD_NEW,
                                 (const zip_uint8_t *)zeds, (zip_uint16_t)pad, ZIP_FL_LOCAL) < 0)
      st = dsc_errorf("%s: setting up \"%s\" in the archive: %s", path, rec[i].name,
                      zip_strerror(za));
    off = fixed + pad + rec[i].len;
  }
  if (!st && zip_close(za) < 0)
    st = dsc_errorf("%s: writing the archive: %s", path, zip_strerror(za));
  else if (!st)
    za = NULL; /* closed: libzip freed it and the source */
  if (za) zip_discard(za); /* frees the source too */
  zip_error_fini(&sink.err);
  if (!st) st = check_layout(path, sink.buf, sink.committed, rec, n);
  if (st) {
    free(sink.buf);
    return st;
  }
  *out = sink.buf;
  *size = sink.committed;
  return NULL;
}

dsc_status *dsc_pth_write(const char *path, const dsc_safetensors *src) {
  unsigned char *pkl = NULL;
  size_t pkl_len = 0;
  DSC_TRY(build_pickle(path, src, &pkl, &pkl_len));

  int n = dsc_st_count(src);
  pth_record *rec = calloc((size_t)n + 3, sizeof *rec);
  if (!rec) {
    free(pkl);
    return dsc_errorf("%s: out of memory", path);
  }
  int r = 0;
  snprintf(rec[r].name, sizeof rec[r].name, PTH_ARCHIVE "data.pkl");
  rec[r].data = pkl;
  rec[r++].len = pkl_len;
  snprintf(rec[r].name, sizeof rec[r].name, PTH_ARCHIVE "byteorder");
  rec[r].data = "little";
  rec[r++].len = 6;
  for (int i = 0; i < n; i++, r++) {
    const dsc_st_tensor *t = dsc_st_get(src, i);
    snprintf(rec[r].name, sizeof rec[r].name, PTH_ARCHIVE "data/%d", i);
    rec[r].data = dsc_st_data(src, t);
    rec[r].len = dsc_st_nbytes(t);
  }
  snprintf(rec[r].name, sizeof rec[r].name, PTH_ARCHIVE "version");
  rec[r].data = "3\n";
  rec[r++].len = 2;

  unsigned char *zbytes = NULL;
  size_t zsize = 0;
  dsc_status *st = build_zip(path, rec, r, &zbytes, &zsize);
  free(rec);
  free(pkl);
  if (st) return st;
  const void *parts[1] = {zbytes};
  size_t lens[1] = {zsize};
  st = dsc_file_write_atomic(path, 1, parts, lens);
  free(zbytes);
  return st;
}
