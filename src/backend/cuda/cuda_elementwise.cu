/* cuda_elementwise.cu: the CUDA backend's elementwise ops: ReLU forward/backward, in-place
 * add, the SGD step and the EMA of the momentum encoder (METHOD.md §5), and the bf16
 * conversions cuda_conv.cu uses (conventions in cuda_internal.h and backend.h).
 *
 * Every op is one grid-stride kernel on impl->stream, one thread per element (per four
 * elements when every pointer is 16-byte aligned: float4 loads and stores, then the n % 4
 * tail one by one). n == 0 is a no-op, as on the host. Each thread reads an element's inputs
 * before writing its output, so relu_backward's dx may alias dy.
 *
 * Element results equal the host backends' bit for bit:
 *  - relu:          y = x > 0 || isnan(x) ? x : 0 (NaN kept, -0 -> 0; ref_backend.c, cpu_elementwise.c)
 *  - relu_backward: dx = y <= 0 ? 0 : dy (PyTorch's threshold_backward: a NaN y passes dy)
 *  - add_inplace:   y += x (one float add: equal to the reference's add in double rounded once)
 *  - sgd_step:      torch.optim.SGD with dampening 0, each element in double and rounded where
 *                   PyTorch stores (buf, p), with the host's operation order (ref_backend.c,
 *                   cpu_optim.c):  g' = g + wd*p;  buf = (float)(mom*buf + g');
 *                   p = (float)(p - lr*(nesterov ? g' + mom*buf : buf));  buf NULL (momentum 0):
 *                   p = (float)(p - lr*g').
 *  - ema:           shadow = (float)(m*shadow + (1-m)*p) in double.
 *   The host is C11 compiled without contraction (ISO mode: -ffp-contract=off), so the double
 *   products and sums here use __dmul_rn/__dadd_rn/__dsub_rn, which nvcc never fuses into an
 *   FMA: the same roundings as the host.
 *  - to_bf16 / from_bf16: round to nearest even (__float2bfloat16_rn), exact widening back. */
#include <stddef.h>
#include <stdint.h>

#include "backend/cuda/cuda_internal.h"
#include "backend/backend_check.h"

#define EW_THREADS 256u

static inline int ew_aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

/* Grid for a kernel that covers `items` (float4 groups or elements) in a grid-stride loop. */
static inline unsigned ew_grid(size_t items) { return cuda_blocks(items, EW_THREADS); }

/* ---- per-element functions (shared by the scalar and the float4 paths) ---- */

static __device__ __forceinline__ float relu_elem(float v) {
  return (v > 0.0f || isnan(v)) ? v : 0.0f;
}

static __device__ __forceinline__ float relu_bw_elem(float dy, float y) {
  return y <= 0.0f ? 0.0f : dy;
}

/* One SGD element: updates *p, and *b when has_buf (b always points at a valid float; the
 * caller passes a dummy when there is no buffer). */
static __device__ __forceinline__ void sgd_elem(float *p, const float g, float *b, int has_buf,
                                                double lr, double mom, double wd, int nesterov) {
  const double pd = (double)*p;
  const double gp = __dadd_rn((double)g, __dmul_rn(wd, pd));
  double step = gp;
  if (has_buf) {
    const float nb = (float)__dadd_rn(__dmul_rn(mom, (double)*b), gp);
    *b = nb;
    step = nesterov ? __dadd_rn(gp, __dmul_rn(mom, (double)nb)) : (double)nb;
  }
  *p = (float)__dsub_rn(pd, __dmul_rn(lr, step));
}

static __device__ __forceinline__ float ema_elem(float sh, float p, double m, double om) {
  return (float)__dadd_rn(__dmul_rn(m, (double)sh), __dmul_rn(om, (double)p));
}

/* ---- kernels: vec != 0 means every pointer is 16-byte aligned ---- */

static __global__ void k_relu_forward(float *y, const float *x, size_t n, int vec) {
  const size_t stride = (size_t)gridDim.x * blockDim.x;
  const size_t tid = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  size_t start = 0;
  if (vec) {
    const size_t n4 = n / 4;
    const float4 *x4 = (const float4 *)x;
    float4 *y4 = (float4 *)y;
    for (size_t i = tid; i < n4; i += stride) {
      float4 v = x4[i];
      v.x = relu_elem(v.x);
      v.y = relu_elem(v.y);
      v.z = relu_elem(v.z);
      v.w = relu_elem(v.w);
      y4[i] = v;
    }
    start = n4 * 4;
  }
  for (size_t i = start + tid; i < n; i += stride) y[i] = relu_elem(x[i]);
}

static __global__ void k_relu_backward(float *dx, const float *dy, const float *y, size_t n, int vec) {
  const size_t stride = (size_t)gridDim.x * blockDim.x;
  const size_t tid = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  size_t start = 0;
  if (vec) {
    const size_t n4 = n / 4;
    const float4 *dy4 = (const float4 *)dy, *y4 = (const float4 *)y;
    float4 *dx4 = (float4 *)dx;
    for (size_t i = tid; i < n4; i += stride) {
      const float4 g = dy4[i], v = y4[i];
      float4 o;
      o.x = relu_bw_elem(g.x, v.x);
      o.y = relu_bw_elem(g.y, v.y);
      o.z = relu_bw_elem(g.z, v.z);
      o.w = relu_bw_elem(g.w, v.w);
      dx4[i] = o;
    }
    start = n4 * 4;
  }
  for (size_t i = start + tid; i < n; i += stride) dx[i] = relu_bw_elem(dy[i], y[i]);
}

static __global__ void k_add_inplace(float *y, const float *x, size_t n, int vec) {
  const size_t stride = (size_t)gridDim.x * blockDim.x;
  const size_t tid = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  size_t start = 0;
  if (vec) {
    const size_t n4 = n / 4;
    const float4 *x4 = (const float4 *)x;
    float4 *y4 = (float4 *)y;
    for (size_t i = tid; i < n4; i += stride) {
      const float4 a = x4[i];
      float4 v = y4[i];
      v.x += a.x;
      v.y += a.y;
      v.z += a.z;
      v.w += a.w;
      y4[i] = v;
    }
    start = n4 * 4;
  }
  for (size_t i = start + tid; i < n; i += stride) y[i] += x[i];
}

/* buf may be NULL (then has_buf = 0 and it is never touched). */
static __global__ void k_sgd_step(size_t n, float *p, const float *g, float *buf, double lr, double mom,
                           double wd, int nesterov, int vec) {
  const size_t stride = (size_t)gridDim.x * blockDim.x;
  const size_t tid = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  const int has_buf = buf != NULL;
  size_t start = 0;
  if (vec) {
    const size_t n4 = n / 4;
    float4 *p4 = (float4 *)p, *b4 = (float4 *)buf;
    const float4 *g4 = (const float4 *)g;
    for (size_t i = tid; i < n4; i += stride) {
      float4 pv = p4[i];
      const float4 gv = g4[i];
      float4 bv = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      if (has_buf) bv = b4[i];
      sgd_elem(&pv.x, gv.x, &bv.x, has_buf, lr, mom, wd, nesterov);
      sgd_elem(&pv.y, gv.y, &bv.y, has_buf, lr, mom, wd, nesterov);
      sgd_elem(&pv.z, gv.z, &bv.z, has_buf, lr, mom, wd, nesterov);
      sgd_elem(&pv.w, gv.w, &bv.w, has_buf, lr, mom, wd, nesterov);
      if (has_buf) b4[i] = bv;
      p4[i] = pv;
    }
    start = n4 * 4;
  }
  for (size_t i = start + tid; i < n; i += stride) {
    float pv = p[i], bv = has_buf ? buf[i] : 0.0f;
    sgd_elem(&pv, g[i], &bv, has_buf, lr, mom, wd, nesterov);
    if (has_buf) buf[i] = bv;
    p[i] = pv;
  }
}

static __global__ void k_ema(size_t n, float *shadow, const float *p, double m, double om, int vec) {
  const size_t stride = (size_t)gridDim.x * blockDim.x;
  const size_t tid = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  size_t start = 0;
  if (vec) {
    const size_t n4 = n / 4;
    float4 *s4 = (float4 *)shadow;
    const float4 *p4 = (const float4 *)p;
    for (size_t i = tid; i < n4; i += stride) {
      float4 s = s4[i];
      const float4 v = p4[i];
      s.x = ema_elem(s.x, v.x, m, om);
      s.y = ema_elem(s.y, v.y, m, om);
      s.z = ema_elem(s.z, v.z, m, om);
      s.w = ema_elem(s.w, v.w, m, om);
      s4[i] = s;
    }
    start = n4 * 4;
  }
  for (size_t i = start + tid; i < n; i += stride) shadow[i] = ema_elem(shadow[i], p[i], m, om);
}

/* vec: src 16-byte aligned and dst 8-byte aligned (four bf16 = two __nv_bfloat162). */
static __global__ void k_to_bf16(__nv_bfloat16 *dst, const float *src, size_t n, int vec) {
  const size_t stride = (size_t)gridDim.x * blockDim.x;
  const size_t tid = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  size_t start = 0;
  if (vec) {
    const size_t n4 = n / 4;
    const float4 *s4 = (const float4 *)src;
    __nv_bfloat162 *d2 = (__nv_bfloat162 *)dst;
    for (size_t i = tid; i < n4; i += stride) {
      const float4 v = s4[i];
      __nv_bfloat162 lo, hi;
      lo.x = __float2bfloat16_rn(v.x);
      lo.y = __float2bfloat16_rn(v.y);
      hi.x = __float2bfloat16_rn(v.z);
      hi.y = __float2bfloat16_rn(v.w);
      d2[2 * i] = lo;
      d2[2 * i + 1] = hi;
    }
    start = n4 * 4;
  }
  for (size_t i = start + tid; i < n; i += stride) dst[i] = __float2bfloat16_rn(src[i]);
}

/* vec: src 8-byte aligned and dst 16-byte aligned. */
static __global__ void k_from_bf16(float *dst, const __nv_bfloat16 *src, size_t n, int vec) {
  const size_t stride = (size_t)gridDim.x * blockDim.x;
  const size_t tid = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  size_t start = 0;
  if (vec) {
    const size_t n4 = n / 4;
    const __nv_bfloat162 *s2 = (const __nv_bfloat162 *)src;
    float4 *d4 = (float4 *)dst;
    for (size_t i = tid; i < n4; i += stride) {
      const __nv_bfloat162 lo = s2[2 * i], hi = s2[2 * i + 1];
      d4[i] = make_float4(__bfloat162float(lo.x), __bfloat162float(lo.y), __bfloat162float(hi.x),
                          __bfloat162float(hi.y));
    }
    start = n4 * 4;
  }
  for (size_t i = start + tid; i < n; i += stride) dst[i] = __bfloat162float(src[i]);
}

/* ---- ops ---- */

dsc_status *cuda_relu_forward(dsc_backend *be, float *y, const float *x, size_t n) {
  if (n == 0) return NULL;
  if (!y || !x) return dsc_errorf("relu_forward: NULL pointer for %zu floats", n);
  cuda_impl *impl = cuda_impl_of(be);
  const int vec = ew_aligned16(y) && ew_aligned16(x);
  k_relu_forward<<<ew_grid(vec ? n / 4 + 1 : n), EW_THREADS, 0, impl->stream>>>(y, x, n, vec);
  CUDA_LAUNCH_CHECK();
  return NULL;
}

dsc_status *cuda_relu_backward(dsc_backend *be, float *dx, const float *dy, const float *y,
                               size_t n) {
  if (n == 0) return NULL;
  if (!dx || !dy || !y) return dsc_errorf("relu_backward: NULL pointer for %zu floats", n);
  cuda_impl *impl = cuda_impl_of(be);
  const int vec = ew_aligned16(dx) && ew_aligned16(dy) && ew_aligned16(y);
  k_relu_backward<<<ew_grid(vec ? n / 4 + 1 : n), EW_THREADS, 0, impl->stream>>>(dx, dy, y, n,
                                                                                  vec);
  CUDA_LAUNCH_CHECK();
  return NULL;
}

dsc_status *cuda_add_inplace(dsc_backend *be, float *y, const float *x, size_t n) {
  if (n == 0) return NULL;
  if (!y || !x) return dsc_errorf("add_inplace: NULL pointer for %zu floats", n);
  cuda_impl *impl = cuda_impl_of(be);
  const int vec = ew_aligned16(y) && ew_aligned16(x);
  k_add_inplace<<<ew_grid(vec ? n / 4 + 1 : n), EW_THREADS, 0, impl->stream>>>(y, x, n, vec);
  CUDA_LAUNCH_CHECK();
  return NULL;
}

dsc_status *cuda_sgd_step(dsc_backend *be, size_t n, float *p, const float *g, float *buf,
                          float lr, float momentum, float weight_decay, int nesterov) {
  DSC_TRY(backend_check_sgd(n, p, g, buf, lr, momentum, weight_decay, nesterov));
  if (n == 0) return NULL;
  cuda_impl *impl = cuda_impl_of(be);
  const int vec = ew_aligned16(p) && ew_aligned16(g) && (!buf || ew_aligned16(buf));
  k_sgd_step<<<ew_grid(vec ? n / 4 + 1 : n), EW_THREADS, 0, impl->stream>>>(
      n, p, g, buf, (double)lr, (double)momentum, (double)weight_decay, nesterov, vec);
  CUDA_LAUNCH_CHECK();
  return NULL;
}

dsc_status *cuda_ema(dsc_backend *be, size_t n, float *shadow, const float *p, float m) {
  DSC_TRY(backend_check_ema(n, shadow, p, m));
  if (n == 0) return NULL;
  cuda_impl *impl = cuda_impl_of(be);
  const double dm = (double)m, om = 1.0 - dm; /* the host's (1.0 - dm) */
  const int vec = ew_aligned16(shadow) && ew_aligned16(p);
  k_ema<<<ew_grid(vec ? n / 4 + 1 : n), EW_THREADS, 0, impl->stream>>>(n, shadow, p, dm, om, vec);
  CUDA_LAUNCH_CHECK();
  return NULL;
}

dsc_status *cuda_to_bf16(cuda_impl *impl, __nv_bfloat16 *dst, const float *src, size_t n) {
  if (n == 0) return NULL;
  if (!dst || !src) return dsc_errorf("cuda_to_bf16: NULL pointer for %zu floats", n);
  const int vec = ew_aligned16(src) && ((uintptr_t)dst & 7u) == 0;
  k_to_bf16<<<ew_grid(vec ? n / 4 + 1 : n), EW_THREADS, 0, impl->stream>>>(dst, src, n, vec);
  CUDA_LAUNCH_CHECK();
  return NULL;
}

dsc_status *cuda_from_bf16(cuda_impl *impl, float *dst, const __nv_bfloat16 *src, size_t n) {
  if (n == 0) return NULL;
  if (!dst || !src) return dsc_errorf("cuda_from_bf16: NULL pointer for %zu values", n);
  const int vec = ew_aligned16(dst) && ((uintptr_t)src & 7u) == 0;
  k_from_bf16<<<ew_grid(vec ? n / 4 + 1 : n), EW_THREADS, 0, impl->stream>>>(dst, src, n, vec);
  CUDA_LAUNCH_CHECK();
  return NULL;
}
