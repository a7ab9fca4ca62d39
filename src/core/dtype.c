/* dtype.c: names and sizes of the element types (include/dsc/dtype.h). */
#include "dsc/dtype.h"

#include <string.h>

static const struct {
  const char *name;
  size_t size;
} dtype_info[DSC_DTYPE_COUNT] = {
    [DSC_F32] = {"F32", 4}, [DSC_F16] = {"F16", 2}, [DSC_BF16] = {"BF16", 2},
    [DSC_F64] = {"F64", 8}, [DSC_I64] = {"I64", 8}, [DSC_I32] = {"I32", 4},
    [DSC_I16] = {"I16", 2}, [DSC_I8] = {"I8", 1},   [DSC_U64] = {"U64", 8},
    [DSC_U32] = {"U32", 4}, [DSC_U16] = {"U16", 2}, [DSC_U8] = {"U8", 1},
    [DSC_BOOL] = {"BOOL", 1},
};

const char *dsc_dtype_name(dsc_dtype t) {
  return (t >= 0 && t < DSC_DTYPE_COUNT) ? dtype_info[t].name : "?";
}

int dsc_dtype_from_name(const char *name, dsc_dtype *out) {
  for (int i = 0; i < DSC_DTYPE_COUNT; i++) {
    if (strcmp(name, dtype_info[i].name) == 0) {
      *out = (dsc_dtype)i;
      return 0;
    }
  }
  return -1;
}

size_t dsc_dtype_size(dsc_dtype t) {
  return (t >= 0 && t < DSC_DTYPE_COUNT) ? dtype_info[t].size : 0;
}
