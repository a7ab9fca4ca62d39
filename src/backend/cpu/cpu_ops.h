/* cpu_ops.h: private to the fast CPU backend (src/backend/cpu/). Declares the backend's
 * state and the op functions that cpu_backend.c puts into the dsc_backend table, one group
 * per source file.
 *
 * The CPU backend: oneDNN (C API) for convolution and GEMM, hand-written OpenMP loops for
 * everything memory-bound (batch norm with its residual/ReLU fusion, pooling, elementwise,
 * SGD, EMA). Conventions are backend.h's (NHWC activations, OIHW conv
 * weights, [out,in] linear weights, parameter gradients +=, activation gradients =).
 * Arguments are validated by the checks shared with the reference backend
 * (backend_check.h), and bn_update_running is the shared host loop
 * backend_bn_update_running_host.
 *
 * Threads: every op first calls cpu_threads_enter(), which sets OpenMP's thread count for
 * the calling thread (omp_set_num_threads; oneDNN's OpenMP runtime follows it). Loops split
 * work into static contiguous ranges per thread, and every reduction combines per-thread
 * partials in thread order, so results are bitwise reproducible for a fixed thread count.
 *
 * One instance is not reentrant: ops of one backend must not run concurrently (they share
 * the oneDNN stream, the primitive cache and the scratch buffers). Two instances may. */
#ifndef DSC_CPU_OPS_H
#define DSC_CPU_OPS_H

#include <dnnl.h>
#include <stdint.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/backend_check.h"

typedef struct cpu_conv_entry cpu_conv_entry; /* cpu_conv.c */

/* A backend-owned, 64-byte aligned buffer that grows on demand and never shrinks. */
typedef struct cpu_buffer {
  void *p;
  size_t bytes;
} cpu_buffer;

typedef struct cpu_impl {
  int threads; /* OpenMP threads used by every op (oneDNN's included) */
  dnnl_engine_t engine;
  dnnl_stream_t stream;
  /* Shared by every op, which is possible because one op runs at a time: */
  cpu_buffer scratch; /* oneDNN user scratchpad of every primitive */
  cpu_buffer weights; /* conv weights in oneDNN's layout, and the raw weight gradient */
  cpu_buffer work;    /* the hand-written kernels' per-thread partial sums */
  /* Convolution primitive cache: one entry per distinct (shape, bias) pair. */
  cpu_conv_entry **convs;
  int n_convs, cap_convs;
} cpu_impl;

static inline cpu_impl *cpu_impl_of(dsc_backend *be) { return (cpu_impl *)be->impl; }

/* cpu_backend.c */
void cpu_threads_enter(cpu_impl *impl);
/* Makes `b` at least `bytes` long (contents are not kept when it grows); `what` names it
 * in the out-of-memory error. */
dsc_status *cpu_buffer_reserve(cpu_buffer *b, size_t bytes, const char *what);
/* The work buffer, at least `bytes` long, valid until the next call. */
dsc_status *cpu_work_get(cpu_impl *impl, size_t bytes, void **out);
/* Splits [0, total) into `parts` contiguous ranges; range `i` is [*lo, *hi). */
static inline void cpu_split(size_t total, int parts, int i, size_t *lo, size_t *hi) {
  size_t base = total / (size_t)parts, rem = total % (size_t)parts;
  size_t ui = (size_t)i;
  *lo = ui * base + (ui < rem ? ui : rem);
  *hi = *lo + base + (ui < rem ? 1 : 0);
}

/* v where cond holds, else +0.0f, by masking the bits. Unlike `cond ? v : 0.0f` this keeps
 * loops vectorizable when a floating-point operation follows the select (GCC refuses to
 * if-convert those under its default -ftrapping-math). Exact: no arithmetic on v. */
static inline float cpu_keep_if(int cond, float v) {
  uint32_t bits;
  memcpy(&bits, &v, sizeof bits);
  bits &= (uint32_t)0 - (uint32_t)(cond != 0);
  memcpy(&v, &bits, sizeof v);
  return v;
}

/* cpu_conv.c */
dsc_status *cpu_conv2d_forward(dsc_backend *be, const dsc_conv_shape *s, float *y,
                               const float *x, const float *w, const float *b);
dsc_status *cpu_conv2d_backward(dsc_backend *be, const dsc_conv_shape *s, float *dx,
                                float *dw, float *db, const float *dy, const float *x,
                                const float *w);
void cpu_conv_cache_free(cpu_impl *impl);

/* cpu_bn.c */
dsc_status *cpu_bn_forward_train(dsc_backend *be, const dsc_bn_shape *s, float *y,
                                 float *save_mean, float *save_var, const float *x,
                                 const float *gamma, const float *beta, const float *residual);
dsc_status *cpu_bn_forward_eval(dsc_backend *be, const dsc_bn_shape *s, float *y,
                                const float *x, const float *gamma, const float *beta,
                                const float *running_mean, const float *running_var,
                                const float *residual);
dsc_status *cpu_bn_backward(dsc_backend *be, const dsc_bn_shape *s, float *dx, float *dgamma,
                            float *dbeta, float *dresidual, const float *dy, const float *x,
                            const float *y, const float *gamma, const float *save_mean,
                            const float *save_var);

/* cpu_pool.c */
dsc_status *cpu_maxpool_forward(dsc_backend *be, const dsc_pool_shape *s, float *y,
                                int32_t *argmax, const float *x);
dsc_status *cpu_maxpool_backward(dsc_backend *be, const dsc_pool_shape *s, float *dx,
                                 const float *dy, const int32_t *argmax);
dsc_status *cpu_gap_forward(dsc_backend *be, int n, int hw, int c, float *y, const float *x);
dsc_status *cpu_gap_backward(dsc_backend *be, int n, int hw, int c, float *dx,
                             const float *dy);

/* cpu_elementwise.c */
dsc_status *cpu_relu_forward(dsc_backend *be, float *y, const float *x, size_t n);
dsc_status *cpu_relu_backward(dsc_backend *be, float *dx, const float *dy, const float *y,
                              size_t n);
dsc_status *cpu_add_inplace(dsc_backend *be, float *y, const float *x, size_t n);

/* cpu_optim.c */
dsc_status *cpu_sgd_step(dsc_backend *be, size_t n, float *p, const float *g, float *buf,
                         float lr, float momentum, float weight_decay, int nesterov);
dsc_status *cpu_ema(dsc_backend *be, size_t n, float *shadow, const float *p, float m);

/* cpu_dense.c */
dsc_status *cpu_linear_forward(dsc_backend *be, int n, int in, int out, float *y,
                               const float *x, const float *w, const float *b);
dsc_status *cpu_linear_backward(dsc_backend *be, int n, int in, int out, float *dx, float *dw,
                                float *db, const float *dy, const float *x, const float *w);
dsc_status *cpu_gemm(dsc_backend *be, int trans_a, int trans_b, int m, int n, int k,
                     float alpha, const float *a, int lda, const float *b, int ldb, float beta,
                     float *c, int ldc);

/* cpu_seg.c */
dsc_status *cpu_resize_bilinear_forward(dsc_backend *be, int n, int h, int w, int c, int oh,
                                        int ow, float *y, const float *x);
dsc_status *cpu_resize_bilinear_backward(dsc_backend *be, int n, int h, int w, int c, int oh,
                                         int ow, float *dx, const float *dy);
dsc_status *cpu_channel_scale(dsc_backend *be, int n, int hw, int c, float *y, const float *x,
                              const float *scale);
dsc_status *cpu_softmax_ce(dsc_backend *be, int64_t pixels, int classes, const float *logits,
                           const uint8_t *labels, int ignore, float grad_scale, float *loss_sum,
                           float *dlogits);

#endif
