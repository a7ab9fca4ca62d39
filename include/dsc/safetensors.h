/* safetensors.h: reading and writing safetensors files (checkpoints, exports, step dumps).
 *
 * The format: an 8-byte little-endian u64 header length H, then H bytes of UTF-8 JSON
 * (an object mapping tensor name -> {"dtype", "shape", "data_offsets": [begin, end]}, plus
 * an optional "__metadata__" object of string -> string), then the data buffer. Offsets
 * are relative to the start of the data buffer.
 *
 * Reading (dsc_st_open, dsc_st_open_memory) loads the whole file into memory and validates
 * everything before returning: the header length (capped at DSC_ST_MAX_HEADER bytes), the
 * JSON, every entry's fields, the dtypes, that each byte range holds exactly numel*size
 * bytes, and that the ranges tile the data buffer exactly (no holes, overlaps or trailing
 * bytes). Afterwards no accessor can read outside the file. Every error is one line that
 * starts with the file's path (or the label given to dsc_st_open_memory) and names the
 * problem. The reader is stricter than the reference implementation in one respect: a
 * tensor entry with a key other than dtype/shape/data_offsets is rejected.
 *
 * Writing (dsc_st_writer_*) lays tensors out contiguously in the order they were added,
 * writes header keys in that order ("__metadata__" first when present), pads the header
 * with spaces so that the data buffer starts at a multiple of 8 bytes, and saves
 * atomically (temporary file, fsync, rename).
 *
 * Data are stored as the host's bytes, which must be little-endian (checked at compile
 * time in safetensors.c).
 */
#ifndef DSC_SAFETENSORS_H
#define DSC_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "dsc/dtype.h"
#include "dsc/status.h"

/* The largest header accepted (bytes), as in the reference implementation. */
#define DSC_ST_MAX_HEADER 100000000u

typedef struct dsc_st_tensor {
  char *name;
  dsc_dtype dtype;
  int ndim;
  int64_t shape[DSC_MAX_DIMS];
  uint64_t begin, end; /* byte offsets in the data buffer */
} dsc_st_tensor;

/* Opaque: path or label, file bytes, tensors (in offset order), metadata (in file order). */
typedef struct dsc_safetensors dsc_safetensors;

/* Reads and validates the whole file. On error *out is NULL. */
dsc_status *dsc_st_open(const char *path, dsc_safetensors **out);
/* Same from bytes in memory (copied; the caller keeps `bytes`); `label` stands in for the
 * path in error messages. */
dsc_status *dsc_st_open_memory(const void *bytes, size_t size, const char *label,
                               dsc_safetensors **out);
void dsc_st_close(dsc_safetensors *f);

/* The path or label the file was opened with. */
const char *dsc_st_path(const dsc_safetensors *f);
int dsc_st_count(const dsc_safetensors *f);
/* i in [0, count), in file (offset) order; NULL when out of range. */
const dsc_st_tensor *dsc_st_get(const dsc_safetensors *f, int i);
/* NULL when absent. */
const dsc_st_tensor *dsc_st_find(const dsc_safetensors *f, const char *name);
/* The tensor's end - begin bytes; may be unaligned (use memcpy). */
const void *dsc_st_data(const dsc_safetensors *f, const dsc_st_tensor *t);
/* Product of the shape (1 for a 0-dim scalar). */
size_t dsc_st_numel(const dsc_st_tensor *t);
/* end - begin. */
size_t dsc_st_nbytes(const dsc_st_tensor *t);

int dsc_st_meta_count(const dsc_safetensors *f);
/* i in [0, meta_count), in file order; NULL when out of range. */
const char *dsc_st_meta_key(const dsc_safetensors *f, int i);
/* The value of metadata `key`; NULL if absent. */
const char *dsc_st_meta(const dsc_safetensors *f, const char *key);

/* Copies tensor `name` into dst (numel floats) converting F32/F64/F16/BF16 to float; errors
 * name the file and tensor on absence, wrong numel or non-float dtype. */
dsc_status *dsc_st_read_f32(const dsc_safetensors *f, const char *name, float *dst,
                            size_t numel);

typedef struct dsc_st_writer dsc_st_writer;
dsc_status *dsc_st_writer_new(dsc_st_writer **out);
/* Data pointer is borrowed until save (it may be NULL when the tensor has no elements);
 * name copied. Duplicate names, "__metadata__", names that are not UTF-8, ndim outside
 * [0, DSC_MAX_DIMS] and negative dims are errors. */
dsc_status *dsc_st_writer_add(dsc_st_writer *w, const char *name, dsc_dtype dtype, int ndim,
                              const int64_t *shape, const void *data);
/* Both strings copied; a key given twice is an error. */
dsc_status *dsc_st_writer_meta(dsc_st_writer *w, const char *key, const char *value);
/* Atomic: writes PATH.tmp.<pid>, fflush + fsync, rename over PATH; on any error removes the
 * temp file and leaves PATH as it was. The writer can be saved again or freed. */
dsc_status *dsc_st_writer_save(dsc_st_writer *w, const char *path);
/* The writer's content as an opened, validated file in memory (tensors copied), exactly what
 * a save followed by dsc_st_open would give; `label` stands in for the path in messages. How
 * importers of other formats (PyTorch .pth) hand their tensors to the rest of dsc. */
dsc_status *dsc_st_writer_open(const dsc_st_writer *w, const char *label, dsc_safetensors **out);
void dsc_st_writer_free(dsc_st_writer *w);

/* For `dsc info`: prints a table of the file's tensors (name, dtype, shape, bytes), a total
 * line, and the metadata as key = value lines (long values truncated with "..."). */
dsc_status *dsc_st_print_info(const char *path, FILE *out);

#endif
