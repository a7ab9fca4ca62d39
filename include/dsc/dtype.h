/* dtype.h: element types of stored tensors (safetensors' names) and their sizes.
 * Computation is float32; other types appear in files (I64 counters, F16/BF16/F64 weights
 * from other tools) and are converted on load. */
#ifndef DSC_DTYPE_H
#define DSC_DTYPE_H

#include <stddef.h>

typedef enum dsc_dtype {
  DSC_F32,
  DSC_F16,
  DSC_BF16,
  DSC_F64,
  DSC_I64,
  DSC_I32,
  DSC_I16,
  DSC_I8,
  DSC_U64,
  DSC_U32,
  DSC_U16,
  DSC_U8,
  DSC_BOOL,
  DSC_DTYPE_COUNT
} dsc_dtype;

#define DSC_MAX_DIMS 8

/* "F32", "I64", ... as safetensors writes them. */
const char *dsc_dtype_name(dsc_dtype t);
/* Parses a safetensors dtype name; returns 0 on success, -1 if unknown. */
int dsc_dtype_from_name(const char *name, dsc_dtype *out);
/* Bytes per element. */
size_t dsc_dtype_size(dsc_dtype t);

#endif
