/* golden_init.h: the deterministic tensor generator shared with tools/reference/golden_init.py.
 *
 * value(name, i) = float32(center + half * (2u - 1)), u = (splitmix64((fnv1a32(name) << 32) | i)
 * >> 40) * 2^-24, with (center, half) chosen by the kind of tensor (tools/reference/README.md).
 * The golden fixtures store no parameters: both sides generate them with this.
 */
#ifndef DSC_GOLDEN_INIT_H
#define DSC_GOLDEN_INIT_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "dsc/params.h"
#include "dsc/rng.h"

static inline uint64_t golden_splitmix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static inline void golden_fill(const char *name, double center, double half, float *dst,
                               size_t numel) {
  uint64_t h = dsc_fnv1a32(name);
  for (size_t i = 0; i < numel; i++) {
    uint64_t z = golden_splitmix64((h << 32) | (uint64_t)i);
    double u = (double)(z >> 40) * (1.0 / 16777216.0);
    dst[i] = (float)(center + half * (2.0 * u - 1.0));
  }
}

/* Fills one table entry (name without any prefix) in its blob by its kind. */
static inline void golden_fill_entry(const dsc_tensor_entry *e, const char *name, float *params,
                                     float *buffers) {
  float *dst = (e->role == DSC_ROLE_PARAM ? params : buffers) + e->offset;
  switch (e->kind) {
    case DSC_KIND_CONV_WEIGHT: {
      double fan_out = (double)e->shape[0] * e->shape[2] * e->shape[3];
      golden_fill(name, 0.0, sqrt(3.0) * sqrt(2.0 / fan_out), dst, e->numel);
      break;
    }
    case DSC_KIND_BN_WEIGHT: golden_fill(name, 1.0, 0.25, dst, e->numel); break;
    case DSC_KIND_BN_BIAS: golden_fill(name, 0.0, 0.1, dst, e->numel); break;
    case DSC_KIND_BN_MEAN: golden_fill(name, 0.0, 0.1, dst, e->numel); break;
    case DSC_KIND_BN_VAR: golden_fill(name, 1.0, 0.25, dst, e->numel); break;
    default: memset(dst, 0, e->numel * sizeof(float)); break;
  }
}

/* NHWC (n,h,w,c) -> NCHW, the layout of the PyTorch fixtures. */
static inline void nhwc_to_nchw(const float *src, float *dst, int n, int h, int w, int c) {
  for (int i = 0; i < n; i++)
    for (int y = 0; y < h; y++)
      for (int x = 0; x < w; x++)
        for (int k = 0; k < c; k++)
          dst[(((size_t)i * c + k) * h + y) * w + x] = src[(((size_t)i * h + y) * w + x) * c + k];
}

/* NCHW (n,c,h,w) -> NHWC, dsc's activation layout. */
static inline void nchw_to_nhwc(const float *src, float *dst, int n, int c, int h, int w) {
  for (int i = 0; i < n; i++)
    for (int k = 0; k < c; k++)
      for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
          dst[(((size_t)i * h + y) * w + x) * c + k] = src[(((size_t)i * c + k) * h + y) * w + x];
}

#endif
