/* backend.h: the op table. The only interface between model code (nn/, ssl/, optim/) and
 * the libraries that do the arithmetic (oneDNN, OpenBLAS, cuDNN, cuBLAS, CUDA kernels).
 *
 * Conventions (hold for every op of every backend):
 *  - Activations are NHWC, float32, contiguous: x[((n*H + h)*W + w)*C + c].
 *  - Weights are in PyTorch's layout: conv OIHW, linear [out,in]. A backend may cache
 *    its own weight layout, but must not assume weights are unchanged between calls.
 *  - Forward:  (out, saved..., in, weights..., shape).
 *    Backward: (d_in, d_weight..., d_out, in, weights..., saved..., shape).
 *  - PARAMETER gradients ACCUMULATE (+=). ACTIVATION gradients OVERWRITE (=).
 *    A NULL activation-gradient pointer means "not needed" and skips that work; a NULL
 *    optional weight (bias, residual) means "absent".
 *  - Pointers are backend memory (host memory for cpu/ref). Outputs never alias inputs
 *    unless an op says so.
 *  - Every op returns NULL on success or an error (status.h); ops with valid shapes on a
 *    healthy backend do not fail.
 *  - Reductions are deterministic for a fixed thread count.
 */
#ifndef DSC_BACKEND_H
#define DSC_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "dsc/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Output size of a convolution or pooling window along one axis (PyTorch's formula,
 * floor mode). */
static inline int dsc_conv_out_size(int in, int kernel, int stride, int pad, int dilation) {
  return (in + 2 * pad - dilation * (kernel - 1) - 1) / stride + 1;
}

/* conv2d: x (n,h,w,c_in) * weight (c_out,c_in,kh,kw) [+ bias (c_out)] -> y (n,oh,ow,c_out).
 * Symmetric padding `pad`, equal stride and dilation on both axes, groups = 1. */
typedef struct dsc_conv_shape {
  int n, h, w, c_in, c_out;
  int kh, kw, stride, pad, dilation;
} dsc_conv_shape;

static inline int dsc_conv_oh(const dsc_conv_shape *s) {
  return dsc_conv_out_size(s->h, s->kh, s->stride, s->pad, s->dilation);
}
static inline int dsc_conv_ow(const dsc_conv_shape *s) {
  return dsc_conv_out_size(s->w, s->kw, s->stride, s->pad, s->dilation);
}

/* batchnorm2d over x (n,h,w,c). Training mode normalizes each of `groups` groups of
 * n/groups consecutive images with that group's own batch statistics (METHOD.md §5):
 * saved mean/var are [groups][c], var biased. Optional fusions after the affine step:
 * `+ residual` (same shape as x) then ReLU. */
typedef struct dsc_bn_shape {
  int n, h, w, c;
  int groups; /* >= 1, divides n */
  float eps;  /* 1e-5 */
  int relu;   /* apply ReLU after affine (+ residual) */
} dsc_bn_shape;

/* max/avg pool window over x (n,h,w,c) -> y (n,oh,ow,c). Max-pool padding is -inf. */
typedef struct dsc_pool_shape {
  int n, h, w, c;
  int k, stride, pad;
} dsc_pool_shape;

typedef struct dsc_backend dsc_backend;
struct dsc_ssl_ops; /* src/backend/ssl_ops.h */

struct dsc_backend {
  const char *name; /* "ref", "cpu", "cuda" */
  void *impl;       /* backend-private state */
  void (*destroy)(dsc_backend *be);
  /* The dense self-supervised ops (src/backend/ssl_ops.h) on this backend's memory; NULL for
   * host-memory backends (ref, cpu), which use src/ssl/'s host implementations. */
  const struct dsc_ssl_ops *ssl;
  /* Waits until every op issued so far has finished (a no-op on host backends); for timing. */
  dsc_status *(*synchronize)(dsc_backend *be);
  /* Device memory in use on this backend's device (total - free, the driver's view: this process's
   * allocations, library workspaces and context, and any other process's), in bytes; NULL on host
   * backends. For reports (dsc bench step). */
  dsc_status *(*device_memory_used)(dsc_backend *be, size_t *bytes);

  /* ---- memory ---- */
  dsc_status *(*alloc)(dsc_backend *be, size_t bytes, void **out); /* zero-filled, 64-B aligned */
  void (*free)(dsc_backend *be, void *p);
  dsc_status *(*upload)(dsc_backend *be, void *dst, const void *host_src, size_t bytes);
  dsc_status *(*download)(dsc_backend *be, void *host_dst, const void *src, size_t bytes);
  dsc_status *(*zero)(dsc_backend *be, float *x, size_t n);

  /* ---- convolution ----
   * y = conv(x, w) + b                                   x (n,h,w,ci)  y (n,oh,ow,co) */
  dsc_status *(*conv2d_forward)(dsc_backend *be, const dsc_conv_shape *s, float *y,
                                const float *x, const float *w, const float *b);
  /* dx = conv_transpose(dy, w) (=, skipped if NULL); dw += corr(x, dy); db += sum(dy)
   * (skipped if NULL). */
  dsc_status *(*conv2d_backward)(dsc_backend *be, const dsc_conv_shape *s, float *dx,
                                 float *dw, float *db, const float *dy, const float *x,
                                 const float *w);

  /* ---- batch normalization ----
   * Training: y = act(gamma*(x-mean_g)/sqrt(var_g+eps) + beta [+ residual]);
   * save_mean, save_var: [groups*c], biased batch variance of each group. */
  dsc_status *(*bn_forward_train)(dsc_backend *be, const dsc_bn_shape *s, float *y,
                                  float *save_mean, float *save_var, const float *x,
                                  const float *gamma, const float *beta,
                                  const float *residual);
  /* Eval: the same with running statistics (groups ignored). */
  dsc_status *(*bn_forward_eval)(dsc_backend *be, const dsc_bn_shape *s, float *y,
                                 const float *x, const float *gamma, const float *beta,
                                 const float *running_mean, const float *running_var,
                                 const float *residual);
  /* Backward of bn_forward_train. `y` is the forward output (used for the ReLU mask when
   * s->relu). dx =, dresidual = (the gradient reaching the residual input; NULL skips),
   * dgamma +=, dbeta +=. dx may be NULL when only parameter gradients are wanted. */
  dsc_status *(*bn_backward)(dsc_backend *be, const dsc_bn_shape *s, float *dx,
                             float *dgamma, float *dbeta, float *dresidual, const float *dy,
                             const float *x, const float *y, const float *gamma,
                             const float *save_mean, const float *save_var);
  /* PyTorch's running update, averaged over groups (METHOD.md §5): with m = (n/groups)*h*w,
   * rmean = (1-mom)*rmean + mom*avg_g(mean_g); rvar = (1-mom)*rvar + mom*avg_g(var_g*m/(m-1)). */
  dsc_status *(*bn_update_running)(dsc_backend *be, const dsc_bn_shape *s,
                                   float *running_mean, float *running_var,
                                   const float *save_mean, const float *save_var,
                                   float momentum);

  /* ---- elementwise ---- */
  dsc_status *(*relu_forward)(dsc_backend *be, float *y, const float *x, size_t n);
  /* dx = dy * (y > 0); dx may alias dy. */
  dsc_status *(*relu_backward)(dsc_backend *be, float *dx, const float *dy, const float *y,
                               size_t n);
  /* y += x */
  dsc_status *(*add_inplace)(dsc_backend *be, float *y, const float *x, size_t n);

  /* ---- pooling ----
   * Max-pool: argmax[i] is the flat index (ih*w + iw) within the image of the chosen input
   * of output element i (first maximum in window order on ties, as PyTorch). */
  dsc_status *(*maxpool_forward)(dsc_backend *be, const dsc_pool_shape *s, float *y,
                                 int32_t *argmax, const float *x);
  dsc_status *(*maxpool_backward)(dsc_backend *be, const dsc_pool_shape *s, float *dx,
                                  const float *dy, const int32_t *argmax);
  /* Global average pool: x (n,hw,c) -> y (n,c); backward dx = dy / hw broadcast. */
  dsc_status *(*gap_forward)(dsc_backend *be, int n, int hw, int c, float *y, const float *x);
  dsc_status *(*gap_backward)(dsc_backend *be, int n, int hw, int c, float *dx,
                              const float *dy);

  /* ---- dense layers ----
   * y (n,out) = x (n,in) * w^T (w: [out,in]) + b */
  dsc_status *(*linear_forward)(dsc_backend *be, int n, int in, int out, float *y,
                                const float *x, const float *w, const float *b);
  /* dx = dy * w (=, NULL skips); dw += dy^T x; db += sum_n dy (NULL skips). */
  dsc_status *(*linear_backward)(dsc_backend *be, int n, int in, int out, float *dx,
                                 float *dw, float *db, const float *dy, const float *x,
                                 const float *w);
  /* Row-major C (m,n) = alpha * op(A) op(B) + beta * C, op = transpose when trans_* != 0.
   * lda/ldb/ldc are row strides of the stored matrices. */
  dsc_status *(*gemm)(dsc_backend *be, int trans_a, int trans_b, int m, int n, int k,
                      float alpha, const float *a, int lda, const float *b, int ldb,
                      float beta, float *c, int ldc);

  /* ---- segmentation head (FCN fine-tuning, METHOD.md §7) ----
   * Bilinear resize x (n,h,w,c) -> y (n,oh,ow,c), PyTorch's F.interpolate(mode='bilinear',
   * align_corners=False) without antialiasing, for any sizes (up or down): output row Y reads
   * source row sy = max((Y + 0.5) * h / oh - 0.5, 0), y0 = floor(sy), y1 = min(y0 + 1, h - 1),
   * ly = sy - y0 (weights 1 - ly, ly), likewise columns; oh == h and ow == w copy exactly. */
  dsc_status *(*resize_bilinear_forward)(dsc_backend *be, int n, int h, int w, int c, int oh,
                                         int ow, float *y, const float *x);
  /* Its gradient: dx (n,h,w,c) = the adjoint applied to dy (n,oh,ow,c), overwritten (=). */
  dsc_status *(*resize_bilinear_backward)(dsc_backend *be, int n, int h, int w, int c, int oh,
                                          int ow, float *dx, const float *dy);
  /* y[i,p,ch] = x[i,p,ch] * scale[i*c + ch] for x, y (n,hw,c) and scale (n,c): Dropout2d's
   * forward and backward with scale = keep / (1 - p). y may alias x. */
  dsc_status *(*channel_scale)(dsc_backend *be, int n, int hw, int c, float *y, const float *x,
                               const float *scale);
  /* Softmax cross-entropy of `pixels` rows of `classes` logits (NHWC rows, classes
   * contiguous) against uint8 labels (backend memory; `ignore` = no loss, no gradient; every
   * other label is < classes, which the caller guarantees). With p = softmax(row):
   *   loss_sum[0] = sum over non-ignored rows of -log p[label] (one float, backend memory,
   *                 overwritten; log-sum-exp with the row maximum subtracted);
   *   dlogits = grad_scale * (p - onehot(label)) on non-ignored rows, 0 on ignored ones (=);
   *             NULL skips it.
   * grad_scale = 1 / (non-ignored pixels) gives the gradient of the mean (PyTorch's
   * CrossEntropyLoss(ignore_index, reduction='mean')). */
  dsc_status *(*softmax_ce)(dsc_backend *be, int64_t pixels, int classes, const float *logits,
                            const uint8_t *labels, int ignore, float grad_scale, float *loss_sum,
                            float *dlogits);

  /* ---- optimizer and momentum encoder (one loop over a blob) ----
   * torch.optim.SGD: g' = g + wd*p; buf = mom*buf + g'; p -= lr*(nesterov ? g' + mom*buf : buf) */
  dsc_status *(*sgd_step)(dsc_backend *be, size_t n, float *p, const float *g, float *buf,
                          float lr, float momentum, float weight_decay, int nesterov);
  /* shadow = m*shadow + (1-m)*p */
  dsc_status *(*ema)(dsc_backend *be, size_t n, float *shadow, const float *p, float m);
};

/* Constructors. `threads` <= 0 means "all cores". */
dsc_status *dsc_backend_ref_new(dsc_backend **out);
dsc_status *dsc_backend_cpu_new(int threads, dsc_backend **out);
/* The CUDA backend (src/backend/cuda/) on GPU `device` (-1: $CUDA_VISIBLE_DEVICES' first).
 * bf16 = 1: convolutions take bf16 copies of their inputs and GEMMs may use TF32
 * (run.precision=bf16); 0: every product in plain fp32 (run.precision=fp32, used for checking).
 * Memory is device memory; upload/download are host<->device copies (download waits for the
 * GPU). A build without nvcc returns an error saying so. */
dsc_status *dsc_backend_cuda_new(int device, int bf16, dsc_backend **out);
/* 1 when this build has the CUDA backend compiled in. */
int dsc_backend_cuda_compiled(void);
/* The backend of run.device ("cpu" | "cuda") at run.precision ("fp32" | "bf16", resolved) with
 * `threads` CPU threads (src/backend/backend_open.c); clear errors for what cannot be had. */
dsc_status *dsc_backend_open(const char *device, const char *precision, int threads,
                             dsc_backend **out);
/* The same on GPU `gpu` (-1: the current device) when the device is cuda: how each process of a
 * multi-process run takes its own GPU (its local rank). */
dsc_status *dsc_backend_open_gpu(const char *device, const char *precision, int threads, int gpu,
                                 dsc_backend **out);

#ifdef __cplusplus
}
#endif

#endif
