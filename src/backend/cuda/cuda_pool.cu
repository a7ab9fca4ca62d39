/* cuda_pool.cu: the CUDA backend's max-pool (with argmax) and global average pool
 * (conventions in cuda_internal.h and backend.h; the host versions are ref_pool.c and
 * cpu_pool.c, whose results these kernels reproduce bit for bit).
 *
 * Max-pool forward: x (n,h,w,c) -> y (n,oh,ow,c), square window k, stride, symmetric padding
 * that never wins (-inf), floor mode. One thread per output element (channel fastest, so a
 * warp reads 32 consecutive channels of each input pixel), grid-stride over all outputs.
 * The window is scanned rows then columns; a value replaces the running maximum when it is
 * greater or NaN (PyTorch's CPU rule: the first of equal maxima wins, NaN propagates, the
 * last NaN of a window is the one reported). argmax = ih*w + iw of the chosen input within
 * its image, starting at the window's first in-image position.
 * Max-pool backward is a gather without atomics: one thread per INPUT element sums, in output
 * order (oy, then ox, ascending), the dy of the outputs whose window covers it and whose
 * argmax names it, and writes (=) the sum. That is the host reference's scatter sum in the
 * same order, so the result is identical. An argmax outside the covering windows (only
 * possible for a corrupt argmax) contributes nothing, as in cpu_pool.c; unlike ref_pool.c,
 * an out-of-range argmax is not reported (that would need a host read).
 * Global average pool: forward one thread per (image, channel) summing its hw values in
 * order in double, y = (float)(sum / hw); backward one thread per dx element,
 * dx = (float)((double)dy / hw) (=). */
#include <math_constants.h>
#include <stddef.h>
#include <stdint.h>

#include "backend/cuda/cuda_internal.h"
#include "backend/backend_check.h"

#define POOL_THREADS 256u

static __device__ __forceinline__ int imin_d(int a, int b) { return a < b ? a : b; }
static __device__ __forceinline__ int imax_d(int a, int b) { return a > b ? a : b; }
/* ceil(a / b) for b > 0 and any sign of a */
static __device__ __forceinline__ int div_ceil_d(int a, int b) {
  return a >= 0 ? (a + b - 1) / b : -(-a / b);
}

static __global__ void k_maxpool_forward(float *y, int32_t *argmax, const float *x,
                                         int64_t total, int H, int W, int C, int K, int st,
                                         int pad, int OH, int OW) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int64_t q = i / C; /* output pixel (n, oy, ox) */
    const int c = (int)(i - q * C);
    const int64_t t = q / OW;
    const int ox = (int)(q - t * OW);
    const int64_t n = t / OH;
    const int oy = (int)(t - n * OH);
    const int y0 = oy * st - pad, x0 = ox * st - pad;
    const int y_lo = imax_d(y0, 0), y_hi = imin_d(y0 + K, H);
    const int x_lo = imax_d(x0, 0), x_hi = imin_d(x0 + K, W);
    const float *xn = x + n * H * W * (int64_t)C + c;
    float best = -CUDART_INF_F;
    int32_t best_idx = y_lo * W + x_lo;
    for (int iy = y_lo; iy < y_hi; iy++)
      for (int ix = x_lo; ix < x_hi; ix++) {
        const int32_t pos = iy * W + ix;
        const float v = xn[(int64_t)pos * C];
        if (v > best || isnan(v)) {
          best = v;
          best_idx = pos;
        }
      }
    y[i] = best;
    argmax[i] = best_idx;
  }
}

static __global__ void k_maxpool_backward(float *dx, const float *dy, const int32_t *argmax,
                                          int64_t total, int H, int W, int C, int K, int st,
                                          int pad, int OH, int OW) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int64_t q = i / C; /* input pixel (n, iy, ix) */
    const int c = (int)(i - q * C);
    const int64_t t = q / W;
    const int ix = (int)(q - t * W);
    const int64_t n = t / H;
    const int iy = (int)(t - n * H);
    /* outputs oy with oy*st - pad <= iy <= oy*st - pad + K - 1, likewise ox */
    const int oy_lo = imax_d(0, div_ceil_d(iy + pad - K + 1, st));
    const int oy_hi = imin_d(OH - 1, (iy + pad) / st);
    const int ox_lo = imax_d(0, div_ceil_d(ix + pad - K + 1, st));
    const int ox_hi = imin_d(OW - 1, (ix + pad) / st);
    const int32_t pos = iy * W + ix;
    float d = 0.0f;
    for (int oy = oy_lo; oy <= oy_hi; oy++)
      for (int ox = ox_lo; ox <= ox_hi; ox++) {
        const int64_t o = ((n * OH + oy) * OW + ox) * (int64_t)C + c;
        if (argmax[o] == pos) d += dy[o];
      }
    dx[i] = d;
  }
}

static __global__ void k_gap_forward(float *y, const float *x, int64_t nc, int hw, int C) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < nc; i += stride) {
    const int64_t n = i / C;
    const int c = (int)(i - n * C);
    const float *xi = x + n * hw * (int64_t)C + c;
    double acc = 0.0;
    for (int p = 0; p < hw; p++) acc += (double)xi[(int64_t)p * C];
    y[i] = (float)(acc / hw);
  }
}

static __global__ void k_gap_backward(float *dx, const float *dy, int64_t total, int hw, int C) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  const int64_t img = (int64_t)hw * C; /* floats per image */
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int64_t n = i / img;
    const int c = (int)((i - n * img) % C);
    dx[i] = (float)((double)dy[n * C + c] / hw);
  }
}

dsc_status *cuda_maxpool_forward(dsc_backend *be, const dsc_pool_shape *s, float *y,
                                 int32_t *argmax, const float *x) {
  DSC_TRY(backend_check_maxpool_forward(s, y, argmax, x));
  cuda_impl *impl = cuda_impl_of(be);
  const int OH = dsc_conv_out_size(s->h, s->k, s->stride, s->pad, 1);
  const int OW = dsc_conv_out_size(s->w, s->k, s->stride, s->pad, 1);
  const int64_t total = (int64_t)s->n * OH * OW * s->c;
  k_maxpool_forward<<<cuda_blocks((size_t)total, POOL_THREADS), POOL_THREADS, 0, impl->stream>>>(
      y, argmax, x, total, s->h, s->w, s->c, s->k, s->stride, s->pad, OH, OW);
  CUDA_LAUNCH_CHECK();
  return NULL;
}

dsc_status *cuda_maxpool_backward(dsc_backend *be, const dsc_pool_shape *s, float *dx,
                                  const float *dy, const int32_t *argmax) {
  DSC_TRY(backend_check_maxpool_backward(s, dx, dy, argmax));
  cuda_impl *impl = cuda_impl_of(be);
  const int OH = dsc_conv_out_size(s->h, s->k, s->stride, s->pad, 1);
  const int OW = dsc_conv_out_size(s->w, s->k, s->stride, s->pad, 1);
  const int64_t total = (int64_t)s->n * s->h * s->w * s->c;
  k_maxpool_backward<<<cuda_blocks((size_t)total, POOL_THREADS), POOL_THREADS, 0, impl->stream>>>(
      dx, dy, argmax, total, s->h, s->w, s->c, s->k, s->stride, s->pad, OH, OW);
  CUDA_LAUNCH_CHECK();
  return NULL;
}

dsc_status *cuda_gap_forward(dsc_backend *be, int n, int hw, int c, float *y, const float *x) {
  DSC_TRY(backend_check_gap_forward(n, hw, c, y, x));
  cuda_impl *impl = cuda_impl_of(be);
  const int64_t nc = (int64_t)n * c;
  k_gap_forward<<<cuda_blocks((size_t)nc, POOL_THREADS), POOL_THREADS, 0, impl->stream>>>(
      y, x, nc, hw, c);
  CUDA_LAUNCH_CHECK();
  return NULL;
}

dsc_status *cuda_gap_backward(dsc_backend *be, int n, int hw, int c, float *dx,
                              const float *dy) {
  DSC_TRY(backend_check_gap_backward(n, hw, c, dx, dy));
  cuda_impl *impl = cuda_impl_of(be);
  const int64_t total = (int64_t)n * hw * c;
  k_gap_backward<<<cuda_blocks((size_t)total, POOL_THREADS), POOL_THREADS, 0, impl->stream>>>(
      dx, dy, total, hw, c);
  CUDA_LAUNCH_CHECK();
  return NULL;
}
