/* detectron2.c: detectron2 .pkl weight files (include/dsc/detectron2.h).
 *
 * Names: a torchvision ResNet key is parsed strictly (conv1.weight, bn1.<bn param>,
 * layerN.B.convK.weight, layerN.B.bnK.<bn param>, layerN.B.downsample.0.weight,
 * layerN.B.downsample.1.<bn param>, with N in 1..4, K in 1..3, B a block index without
 * leading zeros, <bn param> one of weight/bias/running_mean/running_var) and rewritten the
 * way MoCo's / DenseCL's convert-pretrain-to-detectron2.py do it. Anything else is an error.
 *
 * File: pickle protocol 4 written with src/io/pickle_write.h, mirroring what numpy 1.24 and
 * pickle.dumps(..., protocol=4) emit for each array:
 *   numpy.core.multiarray._reconstruct(numpy.ndarray, (0,), b'b')       REDUCE
 *   BUILD (1, shape, dtype, False, raw bytes)
 * where dtype is numpy.dtype('<code>', False, True) REDUCE, BUILD (3, '<' or '|', None, None,
 * None, -1, -1, 0) ('|' for one-byte types, as numpy writes them). No FRAME opcodes.
 */
#include "dsc/detectron2.h"

#include "dsc/atomic_file.h"
#include "io/pickle_write.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- names ---- */

static int is_bn_param(const char *s) {
  return strcmp(s, "weight") == 0 || strcmp(s, "bias") == 0 || strcmp(s, "running_mean") == 0 ||
         strcmp(s, "running_var") == 0;
}

/* Parses a block index ("0", "12"; no sign, no leading zeros) into *out. */
static int parse_index(const char *s, size_t n, long *out) {
  if (n == 0 || n > 6 || (n > 1 && s[0] == '0')) return 0;
  long v = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') return 0;
    v = v * 10 + (s[i] - '0');
  }
  *out = v;
  return 1;
}

/* Writes the detectron2 name of a well-formed key into buf, or returns 0 if the key is not a
 * torchvision ResNet key. */
static int map_name(const char *k, char *buf, size_t cap) {
  if (strcmp(k, "conv1.weight") == 0) return snprintf(buf, cap, "stem.conv1.weight") > 0;
  if (strncmp(k, "bn1.", 4) == 0 && is_bn_param(k + 4))
    return snprintf(buf, cap, "stem.conv1.norm.%s", k + 4) > 0;
  /* layerN.B.rest */
  if (strncmp(k, "layer", 5) != 0 || k[5] < '1' || k[5] > '4' || k[6] != '.') return 0;
  int stage = k[5] - '0' + 1;
  const char *b = k + 7;
  const char *dot = strchr(b, '.');
  long block;
  if (!dot || !parse_index(b, (size_t)(dot - b), &block)) return 0;
  const char *rest = dot + 1;
  if (strncmp(rest, "conv", 4) == 0 && rest[4] >= '1' && rest[4] <= '3' &&
      strcmp(rest + 5, ".weight") == 0)
    return snprintf(buf, cap, "res%d.%ld.conv%c.weight", stage, block, rest[4]) > 0;
  if (strncmp(rest, "bn", 2) == 0 && rest[2] >= '1' && rest[2] <= '3' && rest[3] == '.' &&
      is_bn_param(rest + 4))
    return snprintf(buf, cap, "res%d.%ld.conv%c.norm.%s", stage, block, rest[2], rest + 4) > 0;
  if (strcmp(rest, "downsample.0.weight") == 0)
    return snprintf(buf, cap, "res%d.%ld.shortcut.weight", stage, block) > 0;
  if (strncmp(rest, "downsample.1.", 13) == 0 && is_bn_param(rest + 13))
    return snprintf(buf, cap, "res%d.%ld.shortcut.norm.%s", stage, block, rest + 13) > 0;
  return 0;
}

dsc_status *dsc_detectron2_name(const char *key, char *out, size_t cap) {
  if (cap > 0) out[0] = '\0';
  size_t n = strlen(key);
  const char *suffix = ".num_batches_tracked";
  size_t ns = strlen(suffix);
  if (strncmp(key, "fc.", 3) == 0)
    return dsc_errorf("\"%.200s\": the classifier (fc.*) has no counterpart in detectron2's "
                      "ResNet backbone", key);
  if (strcmp(key, "num_batches_tracked") == 0 ||
      (n >= ns && strcmp(key + n - ns, suffix) == 0))
    return dsc_errorf("\"%.200s\": detectron2's frozen BatchNorm has no num_batches_tracked",
                      key);
  char buf[128];
  if (n >= 64 || !map_name(key, buf, sizeof buf))
    return dsc_errorf("\"%.200s\" is not a torchvision ResNet key (conv1.weight, bn1.*, "
                      "layer1-4.<block>.{conv1-3,bn1-3,downsample.0,downsample.1}.*)", key);
  size_t len = strlen(buf);
  if (len >= cap)
    return dsc_errorf("\"%.200s\": detectron2 name \"%s\" does not fit %zu bytes", key, buf, cap);
  memcpy(out, buf, len + 1);
  return NULL;
}

/* ---- writing ---- */

/* numpy's dtype code ("f4") and byte-order character for a dtype; 0 if numpy has none. */
static int numpy_dtype(dsc_dtype t, const char **code, const char **order) {
  *order = "<";
  switch (t) {
    case DSC_F32: *code = "f4"; return 1;
    case DSC_F64: *code = "f8"; return 1;
    case DSC_F16: *code = "f2"; return 1;
    case DSC_I64: *code = "i8"; return 1;
    case DSC_I32: *code = "i4"; return 1;
    case DSC_I16: *code = "i2"; return 1;
    case DSC_U64: *code = "u8"; return 1;
    case DSC_U32: *code = "u4"; return 1;
    case DSC_U16: *code = "u2"; return 1;
    case DSC_I8: *code = "i1"; *order = "|"; return 1;
    case DSC_U8: *code = "u1"; *order = "|"; return 1;
    case DSC_BOOL: *code = "b1"; *order = "|"; return 1;
    default: return 0;
  }
}

static void pickle_array(dsc_pkw *w, const dsc_safetensors *src, const dsc_st_tensor *t) {
  const char *code, *order;
  numpy_dtype(t->dtype, &code, &order);
  /* _reconstruct(ndarray, (0,), b'b') */
  dsc_pkw_global(w, "numpy.core.multiarray", "_reconstruct");
  dsc_pkw_global(w, "numpy", "ndarray");
  int64_t zero = 0;
  dsc_pkw_int_tuple(w, &zero, 1);
  dsc_pkw_bytes(w, "b", 1);
  dsc_pkw_op(w, DSC_PK_TUPLE3);
  dsc_pkw_op(w, DSC_PK_REDUCE);
  /* state: (1, shape, dtype, is_fortran, data) */
  dsc_pkw_op(w, DSC_PK_MARK);
  dsc_pkw_int(w, 1);
  dsc_pkw_int_tuple(w, t->shape, t->ndim);
  dsc_pkw_global(w, "numpy", "dtype");
  dsc_pkw_cstr(w, code);
  dsc_pkw_bool(w, 0);
  dsc_pkw_bool(w, 1);
  dsc_pkw_op(w, DSC_PK_TUPLE3);
  dsc_pkw_op(w, DSC_PK_REDUCE);
  dsc_pkw_op(w, DSC_PK_MARK);
  dsc_pkw_int(w, 3);
  dsc_pkw_memo_str(w, order);
  dsc_pkw_op(w, DSC_PK_NONE);
  dsc_pkw_op(w, DSC_PK_NONE);
  dsc_pkw_op(w, DSC_PK_NONE);
  dsc_pkw_int(w, -1);
  dsc_pkw_int(w, -1);
  dsc_pkw_int(w, 0);
  dsc_pkw_op(w, DSC_PK_TUPLE);
  dsc_pkw_op(w, DSC_PK_BUILD);
  dsc_pkw_bool(w, 0);
  dsc_pkw_bytes(w, dsc_st_data(src, t), dsc_st_nbytes(t));
  dsc_pkw_op(w, DSC_PK_TUPLE);
  dsc_pkw_op(w, DSC_PK_BUILD);
}

/* Python batches dict items by 1000 per SETITEMS; so do we. */
#define D2_BATCH 1000

dsc_status *dsc_detectron2_write(const char *path, const dsc_safetensors *src,
                                 const char *author) {
  int n = dsc_st_count(src);
  for (int i = 0; i < n; i++) {
    const dsc_st_tensor *t = dsc_st_get(src, i);
    const char *code, *order;
    if (!numpy_dtype(t->dtype, &code, &order))
      return dsc_errorf("%s: tensor \"%s\" has dtype %s, which has no numpy counterpart", path,
                        t->name, dsc_dtype_name(t->dtype));
  }
  /* The stream's size, roughly: the arrays' bytes, ~100 bytes of opcodes per array plus its
   * name, the metadata. Reserved so that the arrays are copied once. */
  size_t predicted = 4096 + strlen(author ? author : "");
  for (int i = 0; i < n; i++) {
    const dsc_st_tensor *t = dsc_st_get(src, i);
    predicted += dsc_st_nbytes(t) + strlen(t->name) + 128 + 10 * (size_t)t->ndim;
  }
  for (int i = 0; i < dsc_st_meta_count(src); i++) {
    const char *k = dsc_st_meta_key(src, i);
    predicted += strlen(k) + strlen(dsc_st_meta(src, k)) + 16;
  }
  dsc_pkw w;
  dsc_pkw_init(&w, 4);
  dsc_pkw_reserve(&w, predicted);
  dsc_pkw_op(&w, DSC_PK_EMPTY_DICT);
  dsc_pkw_op(&w, DSC_PK_MARK);
  dsc_pkw_cstr(&w, "model");
  dsc_pkw_op(&w, DSC_PK_EMPTY_DICT);
  for (int b = 0; b < n; b += D2_BATCH) {
    dsc_pkw_op(&w, DSC_PK_MARK);
    for (int i = b; i < n && i < b + D2_BATCH; i++) {
      const dsc_st_tensor *t = dsc_st_get(src, i);
      dsc_pkw_cstr(&w, t->name);
      pickle_array(&w, src, t);
    }
    dsc_pkw_op(&w, DSC_PK_SETITEMS);
  }
  dsc_pkw_cstr(&w, "__author__");
  dsc_pkw_cstr(&w, author ? author : "");
  dsc_pkw_cstr(&w, "matching_heuristics");
  dsc_pkw_bool(&w, 1);
  dsc_pkw_cstr(&w, "dsc");
  dsc_pkw_op(&w, DSC_PK_EMPTY_DICT);
  int m = dsc_st_meta_count(src);
  for (int b = 0; b < m; b += D2_BATCH) {
    dsc_pkw_op(&w, DSC_PK_MARK);
    for (int i = b; i < m && i < b + D2_BATCH; i++) {
      const char *k = dsc_st_meta_key(src, i);
      dsc_pkw_cstr(&w, k);
      dsc_pkw_cstr(&w, dsc_st_meta(src, k));
    }
    dsc_pkw_op(&w, DSC_PK_SETITEMS);
  }
  dsc_pkw_op(&w, DSC_PK_SETITEMS);
  unsigned char *bytes = NULL;
  size_t len = 0;
  DSC_TRY(dsc_status_wrap(dsc_pkw_finish(&w, &bytes, &len), "%s", path));
  const void *parts[1] = {bytes};
  size_t lens[1] = {len};
  dsc_status *st = dsc_file_write_atomic(path, 1, parts, lens);
  free(bytes);
  return st;
}
