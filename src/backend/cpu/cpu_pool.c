/* cpu_pool.c: the CPU backend's max-pool and global average pool, OpenMP loops vectorized
 * over channels (conventions in cpu_ops.h and backend.h).
 *
 * Max-pool: x (n,h,w,c) -> y (n,oh,ow,c), square window k, stride, symmetric padding that
 * never wins (-inf), floor mode. The window is scanned rows then columns and a value
 * replaces the running maximum when it is greater or NaN (PyTorch's CPU rule: the first of
 * equal maxima wins, NaN propagates); argmax = ih*w + iw of the chosen input, starting at
 * the window's first in-image position. Parallel over output rows.
 * Max-pool backward is a gather, not a scatter: each input pixel sums, in output order,
 * the dy of the outputs whose window covers it and whose argmax names it. Threads own
 * disjoint input rows, so there are no racing adds and the result does not depend on the
 * thread count (it equals the reference's scatter sum exactly). An argmax that names no
 * covered pixel contributes nothing.
 * Global average pool: x (n,hw,c) -> y (n,c), sums in double; backward dx = dy/hw. */
#include <math.h>
#include <omp.h>
#include <stddef.h>
#include <stdint.h>

#include "backend/cpu/cpu_ops.h"

static inline int imin(int a, int b) { return a < b ? a : b; }
static inline int imax(int a, int b) { return a > b ? a : b; }
/* ceil(a / b) for b > 0 and any sign of a */
static inline int div_ceil(int a, int b) { return a >= 0 ? (a + b - 1) / b : -(-a / b); }

dsc_status *cpu_maxpool_forward(dsc_backend *be, const dsc_pool_shape *s, float *y,
                                int32_t *argmax, const float *x) {
  DSC_TRY(backend_check_maxpool_forward(s, y, argmax, x));
  cpu_impl *impl = cpu_impl_of(be);
  cpu_threads_enter(impl);
  const int H = s->h, W = s->w, C = s->c, K = s->k, st = s->stride, pad = s->pad;
  const int OH = dsc_conv_out_size(H, K, st, pad, 1), OW = dsc_conv_out_size(W, K, st, pad, 1);
  const long long rows = (long long)s->n * OH;
#pragma omp parallel for schedule(static) num_threads(impl->threads)
  for (long long r = 0; r < rows; r++) {
    const int n = (int)(r / OH), oy = (int)(r % OH);
    const int y0 = oy * st - pad, y_lo = imax(y0, 0), y_hi = imin(y0 + K, H);
    const float *xn = x + (size_t)n * H * W * C;
    for (int ox = 0; ox < OW; ox++) {
      const int x0 = ox * st - pad, x_lo = imax(x0, 0), x_hi = imin(x0 + K, W);
      const size_t o = ((size_t)r * OW + ox) * C;
      float *restrict best = y + o;
      int32_t *restrict idx = argmax + o;
      const int32_t first = y_lo * W + x_lo;
      #pragma omp simd
      for (int c = 0; c < C; c++) {
        best[c] = -INFINITY;
        idx[c] = first;
      }
      for (int iy = y_lo; iy < y_hi; iy++)
        for (int ix = x_lo; ix < x_hi; ix++) {
          const int32_t pos = iy * W + ix;
          const float *restrict xp = xn + (size_t)pos * C;
          #pragma omp simd
          for (int c = 0; c < C; c++) {
            const float v = xp[c];
            const int take = v > best[c] || v != v;
            best[c] = take ? v : best[c];
            idx[c] = take ? pos : idx[c];
          }
        }
    }
  }
  return NULL;
}

dsc_status *cpu_maxpool_backward(dsc_backend *be, const dsc_pool_shape *s, float *dx,
                                 const float *dy, const int32_t *argmax) {
  DSC_TRY(backend_check_maxpool_backward(s, dx, dy, argmax));
  cpu_impl *impl = cpu_impl_of(be);
  cpu_threads_enter(impl);
  const int H = s->h, W = s->w, C = s->c, K = s->k, st = s->stride, pad = s->pad;
  const int OH = dsc_conv_out_size(H, K, st, pad, 1), OW = dsc_conv_out_size(W, K, st, pad, 1);
  const long long rows = (long long)s->n * H;
#pragma omp parallel for schedule(static) num_threads(impl->threads)
  for (long long r = 0; r < rows; r++) {
    const int n = (int)(r / H), iy = (int)(r % H);
    /* outputs oy with oy*st - pad <= iy <= oy*st - pad + K - 1 */
    const int oy_lo = imax(0, div_ceil(iy + pad - K + 1, st)),
              oy_hi = imin(OH - 1, (iy + pad) / st);
    for (int ix = 0; ix < W; ix++) {
      const int ox_lo = imax(0, div_ceil(ix + pad - K + 1, st)),
                ox_hi = imin(OW - 1, (ix + pad) / st);
      const int32_t pos = iy * W + ix;
      float *restrict d = dx + ((size_t)r * W + ix) * C;
      #pragma omp simd
      for (int c = 0; c < C; c++) d[c] = 0.0f;
      for (int oy = oy_lo; oy <= oy_hi; oy++)
        for (int ox = ox_lo; ox <= ox_hi; ox++) {
          const size_t o = (((size_t)n * OH + oy) * OW + ox) * C;
          const float *restrict g = dy + o;
          const int32_t *restrict a = argmax + o;
          #pragma omp simd
          for (int c = 0; c < C; c++) d[c] += a[c] == pos ? g[c] : 0.0f;
        }
    }
  }
  return NULL;
}

dsc_status *cpu_gap_forward(dsc_backend *be, int n, int hw, int c, float *y, const float *x) {
  DSC_TRY(backend_check_gap_forward(n, hw, c, y, x));
  cpu_impl *impl = cpu_impl_of(be);
  cpu_threads_enter(impl);
  enum { CHUNK = 64 };
  const int chunks = (c + CHUNK - 1) / CHUNK;
  const long long tasks = (long long)n * chunks;
#pragma omp parallel for schedule(static) num_threads(impl->threads)
  for (long long t = 0; t < tasks; t++) {
    const int i = (int)(t / chunks), c0 = (int)(t % chunks) * CHUNK, cn = imin(CHUNK, c - c0);
    double acc[CHUNK];
    #pragma omp simd
    for (int k = 0; k < cn; k++) acc[k] = 0.0;
    const float *xi = x + (size_t)i * hw * c + c0;
    for (int p = 0; p < hw; p++)
      #pragma omp simd
      for (int k = 0; k < cn; k++) acc[k] += (double)xi[(size_t)p * c + k];
    #pragma omp simd
    for (int k = 0; k < cn; k++) y[(size_t)i * c + c0 + k] = (float)(acc[k] / hw);
  }
  return NULL;
}

dsc_status *cpu_gap_backward(dsc_backend *be, int n, int hw, int c, float *dx,
                             const float *dy) {
  DSC_TRY(backend_check_gap_backward(n, hw, c, dx, dy));
  cpu_impl *impl = cpu_impl_of(be);
  cpu_threads_enter(impl);
  const long long rows = (long long)n * hw;
#pragma omp parallel for schedule(static) num_threads(impl->threads)
  for (long long r = 0; r < rows; r++) {
    const float *restrict g = dy + (size_t)(r / hw) * c;
    float *restrict d = dx + (size_t)r * c;
    #pragma omp simd
    for (int k = 0; k < c; k++) d[k] = (float)((double)g[k] / hw);
  }
  return NULL;
}
