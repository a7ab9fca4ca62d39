/* ref_pool.c: the reference backend's max-pool and global average pool (see ref_ops.h).
 *
 * Max-pool: x (n,h,w,c) -> y (n,oh,ow,c), square window k, stride, symmetric padding that
 * never wins (-inf), floor mode. The window is scanned rows then columns; a value replaces
 * the running maximum when it is greater or NaN (PyTorch's CPU rule, so the first of equal
 * maxima wins and NaN propagates). argmax holds ih*w + iw of the chosen input; it starts
 * at the first in-image position, which PyTorch also reports for an all -inf window.
 * Backward: dx = 0, then dx[argmax] += dy (a float sum of at most ceil(k/stride)^2 terms,
 * in output order, like PyTorch).
 * Global average pool: x (n,hw,c) -> y (n,c), sums in double; backward dx = dy/hw. */
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "backend/ref/ref_ops.h"

static dsc_status *pool_shape_check(const char *op, const dsc_pool_shape *s) {
  if (!s) return dsc_errorf("%s: shape is NULL", op);
  if (s->n < 1 || s->h < 1 || s->w < 1 || s->c < 1)
    return dsc_errorf("%s: sizes must be >= 1 (n=%d h=%d w=%d c=%d)", op, s->n, s->h, s->w, s->c);
  if (s->k < 1) return dsc_errorf("%s: kernel %d must be >= 1", op, s->k);
  if (s->stride < 1) return dsc_errorf("%s: stride %d must be >= 1", op, s->stride);
  if (s->pad < 0 || s->pad > s->k / 2)
    return dsc_errorf("%s: pad %d must be in [0, kernel/2 = %d]", op, s->pad, s->k / 2);
  long long padded_h = (long long)s->h + 2LL * s->pad, padded_w = (long long)s->w + 2LL * s->pad;
  if (padded_h > INT_MAX || padded_w > INT_MAX)
    return dsc_errorf("%s: padded input %lldx%lld exceeds int", op, padded_h, padded_w);
  if (padded_h < s->k || padded_w < s->k)
    return dsc_errorf("%s: padded input %lldx%lld is smaller than the kernel %d", op, padded_h,
                      padded_w, s->k);
  if ((long long)s->h * s->w > INT32_MAX)
    return dsc_errorf("%s: image %dx%d has too many pixels for int32 argmax", op, s->h, s->w);
  return NULL;
}

dsc_status *ref_maxpool_forward(dsc_backend *be, const dsc_pool_shape *s, float *y, int32_t *argmax,
                                const float *x) {
  DSC_TRY(pool_shape_check("maxpool_forward", s));
  if (!y || !argmax || !x) return dsc_errorf("maxpool_forward: y, argmax, x must not be NULL");
  const int H = s->h, W = s->w, C = s->c;
  const int oh = dsc_conv_out_size(H, s->k, s->stride, s->pad, 1);
  const int ow = dsc_conv_out_size(W, s->k, s->stride, s->pad, 1);
  for (int n = 0; n < s->n; n++)
    for (int oy = 0; oy < oh; oy++)
      for (int ox = 0; ox < ow; ox++) {
        int y0 = oy * s->stride - s->pad, x0 = ox * s->stride - s->pad;
        int y_lo = y0 < 0 ? 0 : y0, x_lo = x0 < 0 ? 0 : x0;
        int y_hi = y0 + s->k < H ? y0 + s->k : H, x_hi = x0 + s->k < W ? x0 + s->k : W;
        for (int c = 0; c < C; c++) {
          float best = -INFINITY;
          int32_t best_idx = y_lo * W + x_lo;
          for (int iy = y_lo; iy < y_hi; iy++)
            for (int ix = x_lo; ix < x_hi; ix++) {
              float v = x[(((size_t)n * H + iy) * W + ix) * C + c];
              if (v > best || isnan(v)) {
                best = v;
                best_idx = iy * W + ix;
              }
            }
          size_t o = (((size_t)n * oh + oy) * ow + ox) * C + c;
          y[o] = best;
          argmax[o] = best_idx;
        }
      }
  return NULL;
}

dsc_status *ref_maxpool_backward(dsc_backend *be, const dsc_pool_shape *s, float *dx,
                                 const float *dy, const int32_t *argmax) {
  DSC_TRY(pool_shape_check("maxpool_backward", s));
  if (!dx || !dy || !argmax) return dsc_errorf("maxpool_backward: dx, dy, argmax must not be NULL");
  const int H = s->h, W = s->w, C = s->c;
  const int oh = dsc_conv_out_size(H, s->k, s->stride, s->pad, 1);
  const int ow = dsc_conv_out_size(W, s->k, s->stride, s->pad, 1);
  memset(dx, 0, (size_t)s->n * H * W * C * sizeof *dx);
  for (int n = 0; n < s->n; n++)
    for (size_t op = 0; op < (size_t)oh * ow; op++)
      for (int c = 0; c < C; c++) {
        size_t o = ((size_t)n * oh * ow + op) * C + c;
        int32_t a = argmax[o];
        if (a < 0 || a >= H * W)
          return dsc_errorf("maxpool_backward: argmax[%zu] = %d is outside the %dx%d image", o,
                            (int)a, H, W);
        dx[((size_t)n * H * W + (size_t)a) * C + c] += dy[o];
      }
  return NULL;
}

dsc_status *ref_gap_forward(dsc_backend *be, int n, int hw, int c, float *y, const float *x) {
  if (n < 1 || hw < 1 || c < 1)
    return dsc_errorf("gap_forward: sizes must be >= 1 (n=%d hw=%d c=%d)", n, hw, c);
  if (!y || !x) return dsc_errorf("gap_forward: y, x must not be NULL");
  for (int i = 0; i < n; i++)
    for (int ch = 0; ch < c; ch++) {
      double acc = 0.0;
      for (int p = 0; p < hw; p++) acc += (double)x[((size_t)i * hw + p) * c + ch];
      y[(size_t)i * c + ch] = (float)(acc / hw);
    }
  return NULL;
}

dsc_status *ref_gap_backward(dsc_backend *be, int n, int hw, int c, float *dx, const float *dy) {
  if (n < 1 || hw < 1 || c < 1)
    return dsc_errorf("gap_backward: sizes must be >= 1 (n=%d hw=%d c=%d)", n, hw, c);
  if (!dx || !dy) return dsc_errorf("gap_backward: dx, dy must not be NULL");
  for (int i = 0; i < n; i++)
    for (int p = 0; p < hw; p++)
      for (int ch = 0; ch < c; ch++)
        dx[((size_t)i * hw + p) * c + ch] = (float)((double)dy[(size_t)i * c + ch] / hw);
  return NULL;
}
