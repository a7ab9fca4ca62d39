/* ref_backend.c: the reference backend ("ref"): its op table and constructor, host memory,
 * elementwise ops, SGD and EMA. The arithmetic ops live in ref_conv.c, ref_bn.c,
 * ref_pool.c, ref_dense.c and ref_seg.c (conventions in ref_ops.h and backend.h); bn_update_running
 * and the argument checks are shared with the CPU backend (backend_check.c).
 *
 * Memory is host memory: alloc is a zero-filled aligned_alloc with 64-byte alignment (size
 * rounded up to a multiple of 64, at least 64), upload/download are memcpy. The backend
 * keeps no state (impl is NULL), so any number of instances can coexist. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/ref/ref_ops.h"

#define REF_ALIGN 64

static dsc_status *ref_alloc(dsc_backend *be, size_t bytes, void **out) {
  if (!out) return dsc_errorf("alloc: out must not be NULL");
  *out = NULL;
  size_t rounded = bytes == 0 ? REF_ALIGN : bytes;
  if (rounded > SIZE_MAX - (REF_ALIGN - 1))
    return dsc_errorf("alloc: %zu bytes is too large", bytes);
  rounded = (rounded + REF_ALIGN - 1) / REF_ALIGN * REF_ALIGN;
  void *p = aligned_alloc(REF_ALIGN, rounded);
  if (!p) return dsc_errorf("alloc: out of memory allocating %zu bytes", bytes);
  memset(p, 0, rounded);
  *out = p;
  return NULL;
}

static void ref_free(dsc_backend *be, void *p) { free(p); }

static dsc_status *ref_upload(dsc_backend *be, void *dst, const void *host_src, size_t bytes) {
  if (bytes == 0) return NULL;
  if (!dst || !host_src) return dsc_errorf("upload: NULL pointer for %zu bytes", bytes);
  memcpy(dst, host_src, bytes);
  return NULL;
}

static dsc_status *ref_download(dsc_backend *be, void *host_dst, const void *src, size_t bytes) {
  if (bytes == 0) return NULL;
  if (!host_dst || !src) return dsc_errorf("download: NULL pointer for %zu bytes", bytes);
  memcpy(host_dst, src, bytes);
  return NULL;
}

static dsc_status *ref_zero(dsc_backend *be, float *x, size_t n) {
  if (n == 0) return NULL;
  if (!x) return dsc_errorf("zero: NULL pointer for %zu floats", n);
  for (size_t i = 0; i < n; i++) x[i] = 0.0f;
  return NULL;
}

/* y = max(x, 0); NaN stays NaN as in torch.relu. */
static dsc_status *ref_relu_forward(dsc_backend *be, float *y, const float *x, size_t n) {
  if (n == 0) return NULL;
  if (!y || !x) return dsc_errorf("relu_forward: NULL pointer for %zu floats", n);
  for (size_t i = 0; i < n; i++) y[i] = (x[i] > 0.0f || isnan(x[i])) ? x[i] : 0.0f;
  return NULL;
}

/* dx = dy where y > 0, else 0 (PyTorch's threshold_backward: zero where y <= 0). dx may
 * alias dy: each element reads its own dy before writing. */
static dsc_status *ref_relu_backward(dsc_backend *be, float *dx, const float *dy, const float *y,
                                     size_t n) {
  if (n == 0) return NULL;
  if (!dx || !dy || !y) return dsc_errorf("relu_backward: NULL pointer for %zu floats", n);
  for (size_t i = 0; i < n; i++) dx[i] = y[i] <= 0.0f ? 0.0f : dy[i];
  return NULL;
}

static dsc_status *ref_add_inplace(dsc_backend *be, float *y, const float *x, size_t n) {
  if (n == 0) return NULL;
  if (!y || !x) return dsc_errorf("add_inplace: NULL pointer for %zu floats", n);
  for (size_t i = 0; i < n; i++) y[i] = (float)((double)y[i] + (double)x[i]);
  return NULL;
}

/* torch.optim.SGD with dampening 0 (METHOD.md §5):
 *   g' = g + wd*p;  buf = mom*buf + g';  p -= lr*(nesterov ? g' + mom*buf : buf).
 * The buffer starts at zero, so the first step gives buf = g' as PyTorch's clone does.
 * Each element is computed in double and rounded where PyTorch stores (buf, p). buf may
 * be NULL only when momentum is 0 (PyTorch keeps no buffer then). */
static dsc_status *ref_sgd_step(dsc_backend *be, size_t n, float *p, const float *g, float *buf,
                                float lr, float momentum, float weight_decay, int nesterov) {
  DSC_TRY(backend_check_sgd(n, p, g, buf, lr, momentum, weight_decay, nesterov));
  if (n == 0) return NULL;
  const double dlr = lr, mom = momentum, wd = weight_decay;
  for (size_t i = 0; i < n; i++) {
    double gp = (double)g[i] + wd * (double)p[i];
    double step = gp;
    if (buf) {
      float b = (float)(mom * (double)buf[i] + gp);
      buf[i] = b;
      step = nesterov ? gp + mom * (double)b : (double)b;
    }
    p[i] = (float)((double)p[i] - dlr * step);
  }
  return NULL;
}

/* shadow = m*shadow + (1-m)*p (the momentum encoder, METHOD.md §5). */
static dsc_status *ref_ema(dsc_backend *be, size_t n, float *shadow, const float *p, float m) {
  DSC_TRY(backend_check_ema(n, shadow, p, m));
  if (n == 0) return NULL;
  const double dm = m;
  for (size_t i = 0; i < n; i++)
    shadow[i] = (float)(dm * (double)shadow[i] + (1.0 - dm) * (double)p[i]);
  return NULL;
}

static void ref_destroy(dsc_backend *be) { free(be); }

dsc_status *dsc_backend_ref_new(dsc_backend **out) {
  if (!out) return dsc_errorf("dsc_backend_ref_new: out must not be NULL");
  *out = NULL;
  dsc_backend *be = calloc(1, sizeof *be);
  if (!be) return dsc_errorf("dsc_backend_ref_new: out of memory");
  be->name = "ref";
  be->impl = NULL;
  be->destroy = ref_destroy;
  be->alloc = ref_alloc;
  be->free = ref_free;
  be->upload = ref_upload;
  be->download = ref_download;
  be->zero = ref_zero;
  be->conv2d_forward = ref_conv2d_forward;
  be->conv2d_backward = ref_conv2d_backward;
  be->bn_forward_train = ref_bn_forward_train;
  be->bn_forward_eval = ref_bn_forward_eval;
  be->bn_backward = ref_bn_backward;
  be->bn_update_running = backend_bn_update_running_host;
  be->relu_forward = ref_relu_forward;
  be->relu_backward = ref_relu_backward;
  be->add_inplace = ref_add_inplace;
  be->maxpool_forward = ref_maxpool_forward;
  be->maxpool_backward = ref_maxpool_backward;
  be->gap_forward = ref_gap_forward;
  be->gap_backward = ref_gap_backward;
  be->linear_forward = ref_linear_forward;
  be->linear_backward = ref_linear_backward;
  be->gemm = ref_gemm;
  be->resize_bilinear_forward = ref_resize_bilinear_forward;
  be->resize_bilinear_backward = ref_resize_bilinear_backward;
  be->channel_scale = ref_channel_scale;
  be->softmax_ce = ref_softmax_ce;
  be->sgd_step = ref_sgd_step;
  be->ema = ref_ema;
  be->synchronize = backend_synchronize_host;
  *out = be;
  return NULL;
}
