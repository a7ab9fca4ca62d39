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
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "backend/ref/ref_ops.h"

dsc_status *ref_maxpool_forward(dsc_backend *be, const dsc_pool_shape *s, float *y, int32_t *argmax,
                                const float *x) {
  DSC_TRY(backend_check_maxpool_forward(s, y, argmax, x));
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
  DSC_TRY(backend_check_maxpool_backward(s, dx, dy, argmax));
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
  DSC_TRY(backend_check_gap_forward(n, hw, c, y, x));
  for (int i = 0; i < n; i++)
    for (int ch = 0; ch < c; ch++) {
      double acc = 0.0;
      for (int p = 0; p < hw; p++) acc += (double)x[((size_t)i * hw + p) * c + ch];
      y[(size_t)i * c + ch] = (float)(acc / hw);
    }
  return NULL;
}

dsc_status *ref_gap_backward(dsc_backend *be, int n, int hw, int c, float *dx, const float *dy) {
  DSC_TRY(backend_check_gap_backward(n, hw, c, dx, dy));
  for (int i = 0; i < n; i++)
    for (int p = 0; p < hw; p++)
      for (int ch = 0; ch < c; ch++)
        dx[((size_t)i * hw + p) * c + ch] = (float)((double)dy[(size_t)i * c + ch] / hw);
  return NULL;
}
