/* cuda_seg.cu: the CUDA backend's segmentation-head ops (backend.h's "segmentation head";
 * conventions in cuda_internal.h; the host versions are ref_seg.c, the oracle, and cpu_seg.c,
 * whose formulas these kernels follow).
 *
 * Taps of output index o along an axis of `in` -> `out` (float, as PyTorch's
 * area_pixel_compute_source_index): s = max((o + 0.5) * (in / out) - 0.5, 0),
 * i0 = min(floor s, in - 1), i1 = min(i0 + 1, in - 1), weights 1 - l, l with l = s - i0.
 * Forward: one thread per output element (channel fastest),
 * y = wy0 * (wx0 * x00 + wx1 * x01) + wy1 * (wx0 * x10 + wx1 * x11). Equal sizes copy.
 * Backward is a gather without atomics: one thread per dx element sums, in output order (Y,
 * then X ascending), weight_y * weight_x * dy over the outputs whose taps touch it. i0 is
 * non-decreasing in o, so the outputs touching source i are the contiguous range of o with
 * i0(o) in [i - 1, i]; its ends are found from an estimate corrected by stepping (seg_first_ge).
 * Deterministic: each dx element is written by one thread in a fixed order.
 * channel_scale: one thread per element, y = x * scale[image, channel] (y may alias x).
 * softmax_ce: one thread per row (grid-stride over a grid that depends only on `pixels`):
 * max, float sum of expf, dlogits = grad_scale * (p - onehot), row loss m + log(sum) - x[label]
 * in double summed per thread in row order; each block reduces its threads' sums in a fixed
 * tree into a partial in the CUDA_SLOT_SEG scratch, and one block then sums the partials in a
 * fixed order into loss_sum[0]. Labels are not validated (that would need a host read): a
 * label that is neither ignore nor < classes is treated as ignored, so no row is read past
 * its end. */
#include <stddef.h>
#include <stdint.h>

#include "backend/cuda/cuda_internal.h"
#include "backend/backend_check.h"

#define SEG_THREADS 256u

static __device__ __forceinline__ int seg_tap0(int o, int in, int out, float *l) {
  const float scale = (float)in / (float)out;
  float s = ((float)o + 0.5f) * scale - 0.5f;
  if (s < 0.0f) s = 0.0f;
  int a = (int)s;
  if (a > in - 1) a = in - 1;
  *l = s - (float)a;
  return a;
}

/* The weight of output o on source i. */
static __device__ __forceinline__ float seg_weight(int o, int i, int in, int out) {
  float l;
  const int a = seg_tap0(o, in, out, &l);
  const int b = a < in - 1 ? a + 1 : a;
  float v = 0.0f;
  if (a == i) v += 1.0f - l;
  if (b == i) v += l;
  return v;
}

/* Smallest o in [0, out] with i0(o) >= t (out when none): start from the real-valued inverse
 * of the tap formula and step until the condition holds exactly. */
static __device__ int seg_first_ge(int t, int in, int out) {
  float l;
  int o = (int)floorf(((float)t + 0.5f) * ((float)out / (float)in) - 0.5f);
  if (o < 0) o = 0;
  if (o > out) o = out;
  while (o > 0 && seg_tap0(o - 1, in, out, &l) >= t) o--;
  while (o < out && seg_tap0(o, in, out, &l) < t) o++;
  return o;
}

static __global__ void k_resize_forward(float *y, const float *x, int64_t total, int H, int W,
                                        int C, int OH, int OW) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int64_t q = i / C; /* output pixel (n, Y, X) */
    const int c = (int)(i - q * C);
    const int64_t t = q / OW;
    const int X = (int)(q - t * OW);
    const int64_t n = t / OH;
    const int Y = (int)(t - n * OH);
    float ly, lx;
    const int y0 = seg_tap0(Y, H, OH, &ly), x0 = seg_tap0(X, W, OW, &lx);
    const int y1 = y0 < H - 1 ? y0 + 1 : y0, x1 = x0 < W - 1 ? x0 + 1 : x0;
    const float *xn = x + n * H * W * (int64_t)C + c;
    const float a = xn[((int64_t)y0 * W + x0) * C], b = xn[((int64_t)y0 * W + x1) * C];
    const float p = xn[((int64_t)y1 * W + x0) * C], r = xn[((int64_t)y1 * W + x1) * C];
    y[i] = (1.0f - ly) * ((1.0f - lx) * a + lx * b) + ly * ((1.0f - lx) * p + lx * r);
  }
}

static __global__ void k_resize_backward(float *dx, const float *dy, int64_t total, int H, int W,
                                         int C, int OH, int OW) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int64_t q = i / C; /* input pixel (n, iy, ix) */
    const int c = (int)(i - q * C);
    const int64_t t = q / W;
    const int ix = (int)(q - t * W);
    const int64_t n = t / H;
    const int iy = (int)(t - n * H);
    const int Y_lo = seg_first_ge(iy - 1, H, OH), Y_hi = seg_first_ge(iy + 1, H, OH);
    const int X_lo = seg_first_ge(ix - 1, W, OW), X_hi = seg_first_ge(ix + 1, W, OW);
    const float *g = dy + n * OH * OW * (int64_t)C + c;
    float d = 0.0f;
    for (int Y = Y_lo; Y < Y_hi; Y++) {
      const float wy = seg_weight(Y, iy, H, OH);
      for (int X = X_lo; X < X_hi; X++)
        d += wy * seg_weight(X, ix, W, OW) * g[((int64_t)Y * OW + X) * C];
    }
    dx[i] = d;
  }
}

static __global__ void k_copy(float *dst, const float *src, int64_t total) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride)
    dst[i] = src[i];
}

static __global__ void k_channel_scale(float *y, const float *x, const float *scale, int64_t total,
                                       int hw, int C) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  const int64_t img = (int64_t)hw * C;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int64_t n = i / img;
    const int c = (int)(i % C);
    y[i] = x[i] * scale[n * C + c];
  }
}

/* Rows of softmax cross-entropy; partial[blockIdx.x] = this block's loss sum. */
static __global__ void k_softmax_ce(const float *logits, const uint8_t *labels, int64_t pixels,
                                    int classes, int ignore, float grad_scale, float *dlogits,
                                    double *partial) {
  __shared__ double sh[SEG_THREADS];
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  double acc = 0.0;
  for (int64_t r = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; r < pixels; r += stride) {
    const float *row = logits + r * classes;
    float *drow = dlogits ? dlogits + r * classes : NULL;
    const int label = labels[r];
    if (label == ignore || label >= classes) {
      if (drow)
        for (int j = 0; j < classes; j++) drow[j] = 0.0f;
      continue;
    }
    float m = row[0];
    for (int j = 1; j < classes; j++) m = fmaxf(m, row[j]);
    float s = 0.0f;
    for (int j = 0; j < classes; j++) s += expf(row[j] - m);
    if (drow) {
      const float inv = 1.0f / s;
      for (int j = 0; j < classes; j++)
        drow[j] = grad_scale * (expf(row[j] - m) * inv - (j == label ? 1.0f : 0.0f));
    }
    acc += (double)m + log((double)s) - (double)row[label];
  }
  sh[threadIdx.x] = acc;
  __syncthreads();
  for (unsigned h = SEG_THREADS / 2; h > 0; h /= 2) {
    if (threadIdx.x < h) sh[threadIdx.x] += sh[threadIdx.x + h];
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[blockIdx.x] = sh[0];
}

/* One block: loss_sum[0] = sum of the `count` partials, in a fixed order. */
static __global__ void k_sum_partials(const double *partial, unsigned count, float *loss_sum) {
  __shared__ double sh[SEG_THREADS];
  double acc = 0.0;
  for (unsigned k = threadIdx.x; k < count; k += blockDim.x) acc += partial[k];
  sh[threadIdx.x] = acc;
  __syncthreads();
  for (unsigned h = SEG_THREADS / 2; h > 0; h /= 2) {
    if (threadIdx.x < h) sh[threadIdx.x] += sh[threadIdx.x + h];
    __syncthreads();
  }
  if (threadIdx.x == 0) loss_sum[0] = (float)sh[0];
}

static dsc_status *seg_copy(cuda_impl *impl, float *dst, const float *src, int64_t total) {
  k_copy<<<cuda_blocks((size_t)total, SEG_THREADS), SEG_THREADS, 0, impl->stream>>>(dst, src,
                                                                                     total);
  CUDA_LAUNCH_CHECK();
  return NULL;
}

dsc_status *cuda_resize_bilinear_forward(dsc_backend *be, int n, int h, int w, int c, int oh,
                                         int ow, float *y, const float *x) {
  DSC_TRY(backend_check_resize_bilinear("resize_bilinear_forward", n, h, w, c, oh, ow, y, x));
  cuda_impl *impl = cuda_impl_of(be);
  const int64_t total = (int64_t)n * oh * ow * c;
  if (oh == h && ow == w) return seg_copy(impl, y, x, total);
  k_resize_forward<<<cuda_blocks((size_t)total, SEG_THREADS), SEG_THREADS, 0, impl->stream>>>(
      y, x, total, h, w, c, oh, ow);
  CUDA_LAUNCH_CHECK();
  return NULL;
}

dsc_status *cuda_resize_bilinear_backward(dsc_backend *be, int n, int h, int w, int c, int oh,
                                          int ow, float *dx, const float *dy) {
  DSC_TRY(backend_check_resize_bilinear("resize_bilinear_backward", n, h, w, c, oh, ow, dx, dy));
  cuda_impl *impl = cuda_impl_of(be);
  const int64_t total = (int64_t)n * h * w * c;
  if (oh == h && ow == w) return seg_copy(impl, dx, dy, total);
  k_resize_backward<<<cuda_blocks((size_t)total, SEG_THREADS), SEG_THREADS, 0, impl->stream>>>(
      dx, dy, total, h, w, c, oh, ow);
  CUDA_LAUNCH_CHECK();
  return NULL;
}

dsc_status *cuda_channel_scale(dsc_backend *be, int n, int hw, int c, float *y, const float *x,
                               const float *scale) {
  DSC_TRY(backend_check_channel_scale(n, hw, c, y, x, scale));
  cuda_impl *impl = cuda_impl_of(be);
  const int64_t total = (int64_t)n * hw * c;
  k_channel_scale<<<cuda_blocks((size_t)total, SEG_THREADS), SEG_THREADS, 0, impl->stream>>>(
      y, x, scale, total, hw, c);
  CUDA_LAUNCH_CHECK();
  return NULL;
}

dsc_status *cuda_softmax_ce(dsc_backend *be, int64_t pixels, int classes, const float *logits,
                            const uint8_t *labels, int ignore, float grad_scale, float *loss_sum,
                            float *dlogits) {
  DSC_TRY(backend_check_softmax_ce(pixels, classes, logits, labels, ignore, loss_sum));
  cuda_impl *impl = cuda_impl_of(be);
  if (pixels == 0) {
    CUDA_TRY(cudaMemsetAsync(loss_sum, 0, sizeof(float), impl->stream));
    return NULL;
  }
  unsigned blocks = cuda_blocks((size_t)pixels, SEG_THREADS);
  if (blocks > 4096u) blocks = 4096u; /* partials the final block sums; rows grid-stride */
  void *scratch = NULL;
  DSC_TRY(cuda_scratch(impl, CUDA_SLOT_SEG, blocks * sizeof(double), &scratch));
  double *partial = (double *)scratch;
  k_softmax_ce<<<blocks, SEG_THREADS, 0, impl->stream>>>(logits, labels, pixels, classes, ignore,
                                                         grad_scale, dlogits, partial);
  CUDA_LAUNCH_CHECK();
  k_sum_partials<<<1, SEG_THREADS, 0, impl->stream>>>(partial, blocks, loss_sum);
  CUDA_LAUNCH_CHECK();
  return NULL;
}
