/* cuda_internal.h: private to the CUDA backend (src/backend/cuda/, compiled by nvcc as CUDA C++).
 * Declares the backend's state, the error-check macros, and the op functions that
 * cuda_backend.cu puts into the dsc_backend table and the dsc_ssl_ops table, one group per
 * source file:
 *   cuda_backend.cu     constructor, memory (alloc/free/upload/download/zero), synchronize,
 *                       scratch buffers, the two op tables
 *   cuda_conv.cu        conv2d forward/backward (cuDNN, NHWC; bf16 copies under bf16)
 *   cuda_bn.cu          grouped batch norm forward (train/eval), backward, running update
 *   cuda_pool.cu        max pool with argmax, global average pool
 *   cuda_elementwise.cu relu, add, sgd, ema, bf16 conversion
 *   cuda_dense.cu       linear forward/backward and row-major gemm (cuBLAS)
 *   cuda_seg.cu         bilinear resize forward/backward, channel scale, softmax cross-entropy
 *   cuda_ssl_contrast.cu  ssl ops: copy, gather_rows, enqueue, pool_norm, l2norm, match,
 *                       neighbors, infonce (+heads), triplet, nonfinite
 *   cuda_ssl_cluster.cu ssl ops: kmeans_init, kmeans_run, loss_kmeans, loss_proto (Sinkhorn)
 *
 * Conventions (backend.h's, plus):
 *  - Every op is issued on impl->stream (cuBLAS and cuDNN are bound to it) and returns without
 *    waiting for the GPU; only download, synchronize and the (rare) host reads an op documents
 *    wait. Errors of asynchronous work surface at the next checked call.
 *  - No float atomics: every reduction has a fixed order, so results are bitwise reproducible
 *    on one GPU model and build (cuDNN algorithms are restricted to deterministic ones).
 *  - fp32 mode (impl->bf16 == 0) never uses TF32: cuBLAS in CUBLAS_DEFAULT_MATH with pedantic
 *    fp32, cuDNN convolutions with CUDNN_FMA_MATH. bf16 mode: convolutions read bf16 copies
 *    of x, w (and dy) and write fp32 results through bf16 outputs converted back; GEMMs may
 *    use TF32 tensor cores. Reductions, norms, softmax, Sinkhorn: fp32 or double always.
 *  - Scratch memory comes from per-purpose slots (cuda_scratch); a slot is valid until the next
 *    cuda_scratch call on the same slot, so an op that calls another op must use different
 *    slots from it (each file owns the slots named after it).
 */
#ifndef DSC_CUDA_INTERNAL_H
#define DSC_CUDA_INTERNAL_H

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <cudnn.h>
#include <stdint.h>

#include "backend/backend.h"
#include "backend/ssl_ops.h"

/* ---- error checks: each returns a dsc_status naming the call, the file and the line ---- */
#define CUDA_TRY(call)                                                                      \
  do {                                                                                      \
    cudaError_t cuda_e_ = (call);                                                           \
    if (cuda_e_ != cudaSuccess)                                                             \
      return DSC_ERR_AT("CUDA error %s (%s) in %s", cudaGetErrorName(cuda_e_),              \
                        cudaGetErrorString(cuda_e_), #call);                                \
  } while (0)
#define CUBLAS_TRY(call)                                                                    \
  do {                                                                                      \
    cublasStatus_t cublas_e_ = (call);                                                      \
    if (cublas_e_ != CUBLAS_STATUS_SUCCESS)                                                 \
      return DSC_ERR_AT("cuBLAS error %d (%s) in %s", (int)cublas_e_,                       \
                        cublasGetStatusString(cublas_e_), #call);                           \
  } while (0)
#define CUDNN_TRY(call)                                                                     \
  do {                                                                                      \
    cudnnStatus_t cudnn_e_ = (call);                                                        \
    if (cudnn_e_ != CUDNN_STATUS_SUCCESS)                                                   \
      return DSC_ERR_AT("cuDNN error %d (%s) in %s", (int)cudnn_e_,                         \
                        cudnnGetErrorString(cudnn_e_), #call);                              \
  } while (0)
/* After every kernel launch: launch-configuration errors are reported at once. */
#define CUDA_LAUNCH_CHECK() CUDA_TRY(cudaPeekAtLastError())

/* Grid size for `n` items at `threads` per block, capped (kernels use grid-stride loops). */
static inline unsigned cuda_blocks(size_t n, unsigned threads) {
  size_t b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  if (b > 65535u * 16u) b = 65535u * 16u;
  return (unsigned)b;
}

/* Scratch slots, one per purpose (see the file comment). */
typedef enum cuda_slot {
  CUDA_SLOT_CONV_WS = 0,  /* cuDNN workspace (cuda_conv.cu) */
  CUDA_SLOT_CONV_X16,     /* bf16 copy of x / dy (cuda_conv.cu) */
  CUDA_SLOT_CONV_W16,     /* bf16 copy of w (cuda_conv.cu) */
  CUDA_SLOT_CONV_Y16,     /* bf16 output (cuda_conv.cu) */
  CUDA_SLOT_CONV_D16,     /* bf16 second operand of a backward (cuda_conv.cu) */
  CUDA_SLOT_BN,           /* cuda_bn.cu */
  CUDA_SLOT_POOL,         /* cuda_pool.cu */
  CUDA_SLOT_DENSE,        /* cuda_dense.cu */
  CUDA_SLOT_SEG,          /* cuda_seg.cu (softmax_ce's per-block partial sums) */
  CUDA_SLOT_CONTRAST_A,   /* cuda_ssl_contrast.cu */
  CUDA_SLOT_CONTRAST_B,
  CUDA_SLOT_CONTRAST_C,
  CUDA_SLOT_CLUSTER_A,    /* cuda_ssl_cluster.cu */
  CUDA_SLOT_CLUSTER_B,
  CUDA_SLOT_CLUSTER_C,
  CUDA_SLOT_CLUSTER_D,
  CUDA_SLOT_COUNT
} cuda_slot;

typedef struct cuda_buffer {
  void *p;
  size_t bytes;
} cuda_buffer;

typedef struct cuda_conv_cache cuda_conv_cache; /* cuda_conv.cu */

typedef struct cuda_impl {
  int device;
  int bf16;                 /* run.precision=bf16 */
  cudaStream_t stream;      /* every op's stream */
  cublasHandle_t cublas;    /* bound to stream */
  cudnnHandle_t cudnn;      /* bound to stream */
  cuda_buffer slot[CUDA_SLOT_COUNT];
  /* Upload staging: two pinned host buffers used in turn, each with the event of its last
   * copy, so the host can fill one while the GPU still reads the other. */
  cuda_buffer pinned[2];
  cudaEvent_t pinned_done[2];
  int pinned_next;
  cuda_conv_cache *conv_cache; /* cuda_conv.cu's descriptors and chosen algorithms */
} cuda_impl;

static inline cuda_impl *cuda_impl_of(dsc_backend *be) { return (cuda_impl *)be->impl; }

/* A scratch buffer of at least `bytes` bytes from `slot` (grows, never shrinks; growing waits
 * for the GPU before freeing the old buffer). */
dsc_status *cuda_scratch(cuda_impl *impl, cuda_slot slot, size_t bytes, void **out);

/* ---- core ops (backend.h) ---- */
dsc_status *cuda_conv2d_forward(dsc_backend *be, const dsc_conv_shape *s, float *y, const float *x,
                                const float *w, const float *b);
dsc_status *cuda_conv2d_backward(dsc_backend *be, const dsc_conv_shape *s, float *dx, float *dw,
                                 float *db, const float *dy, const float *x, const float *w);
void cuda_conv_cache_free(cuda_impl *impl);

dsc_status *cuda_bn_forward_train(dsc_backend *be, const dsc_bn_shape *s, float *y,
                                  float *save_mean, float *save_var, const float *x,
                                  const float *gamma, const float *beta, const float *residual);
dsc_status *cuda_bn_forward_eval(dsc_backend *be, const dsc_bn_shape *s, float *y, const float *x,
                                 const float *gamma, const float *beta, const float *running_mean,
                                 const float *running_var, const float *residual);
dsc_status *cuda_bn_backward(dsc_backend *be, const dsc_bn_shape *s, float *dx, float *dgamma,
                             float *dbeta, float *dresidual, const float *dy, const float *x,
                             const float *y, const float *gamma, const float *save_mean,
                             const float *save_var);
dsc_status *cuda_bn_update_running(dsc_backend *be, const dsc_bn_shape *s, float *running_mean,
                                   float *running_var, const float *save_mean,
                                   const float *save_var, float momentum);

dsc_status *cuda_relu_forward(dsc_backend *be, float *y, const float *x, size_t n);
dsc_status *cuda_relu_backward(dsc_backend *be, float *dx, const float *dy, const float *y,
                               size_t n);
dsc_status *cuda_add_inplace(dsc_backend *be, float *y, const float *x, size_t n);
dsc_status *cuda_sgd_step(dsc_backend *be, size_t n, float *p, const float *g, float *buf,
                          float lr, float momentum, float weight_decay, int nesterov);
dsc_status *cuda_ema(dsc_backend *be, size_t n, float *shadow, const float *p, float m);
/* bf16 conversions on impl->stream (round to nearest even), used by cuda_conv.cu. */
dsc_status *cuda_to_bf16(cuda_impl *impl, __nv_bfloat16 *dst, const float *src, size_t n);
dsc_status *cuda_from_bf16(cuda_impl *impl, float *dst, const __nv_bfloat16 *src, size_t n);

dsc_status *cuda_maxpool_forward(dsc_backend *be, const dsc_pool_shape *s, float *y,
                                 int32_t *argmax, const float *x);
dsc_status *cuda_maxpool_backward(dsc_backend *be, const dsc_pool_shape *s, float *dx,
                                  const float *dy, const int32_t *argmax);
dsc_status *cuda_gap_forward(dsc_backend *be, int n, int hw, int c, float *y, const float *x);
dsc_status *cuda_gap_backward(dsc_backend *be, int n, int hw, int c, float *dx, const float *dy);

dsc_status *cuda_linear_forward(dsc_backend *be, int n, int in, int out, float *y, const float *x,
                                const float *w, const float *b);
dsc_status *cuda_linear_backward(dsc_backend *be, int n, int in, int out, float *dx, float *dw,
                                 float *db, const float *dy, const float *x, const float *w);
dsc_status *cuda_gemm(dsc_backend *be, int trans_a, int trans_b, int m, int n, int k, float alpha,
                      const float *a, int lda, const float *b, int ldb, float beta, float *c,
                      int ldc);
dsc_status *cuda_resize_bilinear_forward(dsc_backend *be, int n, int h, int w, int c, int oh,
                                         int ow, float *y, const float *x);
dsc_status *cuda_resize_bilinear_backward(dsc_backend *be, int n, int h, int w, int c, int oh,
                                          int ow, float *dx, const float *dy);
dsc_status *cuda_channel_scale(dsc_backend *be, int n, int hw, int c, float *y, const float *x,
                               const float *scale);
dsc_status *cuda_softmax_ce(dsc_backend *be, int64_t pixels, int classes, const float *logits,
                            const uint8_t *labels, int ignore, float grad_scale, float *loss_sum,
                            float *dlogits);

/* out[j] += sum_r x[r*cols + j] (rows, cols >= 1): a deterministic two-stage column sum in double
 * (fixed order), partial sums in `slot`. The bias gradients of linear layers and convolutions. */
dsc_status *cuda_colsum_add(cuda_impl *impl, cuda_slot slot, const float *x, int64_t rows,
                            int cols, float *out);
/* gemm with `batch` matrices at strides sa, sb, sc floats (cublasSgemmStridedBatched,
 * row-major like cuda_gemm). */
dsc_status *cuda_gemm_batched(dsc_backend *be, int trans_a, int trans_b, int m, int n, int k,
                              float alpha, const float *a, int lda, long long sa, const float *b,
                              int ldb, long long sb, float beta, float *c, int ldc, long long sc,
                              int batch);

/* ---- ssl ops (ssl_ops.h) ---- */
dsc_status *cuda_ssl_copy(dsc_backend *be, void *dst, const void *src, size_t bytes);
dsc_status *cuda_ssl_gather_rows(dsc_backend *be, int64_t rows, int64_t words, void *dst,
                                 int64_t dst_blk, int64_t dst_stride, const void *src,
                                 const int32_t *idx, int64_t idx_group, int64_t idx_base);
dsc_status *cuda_ssl_enqueue(dsc_backend *be, int n, int d, int64_t L, int64_t ptr, float *queue,
                             const float *keys);
dsc_status *cuda_ssl_pool_norm(dsc_backend *be, int n, int p, int d, const float *x, float *y);
dsc_status *cuda_ssl_l2norm_rows(dsc_backend *be, int64_t rows, int d, float *y, float *norms,
                                 const float *x);
dsc_status *cuda_ssl_l2norm_rows_backward(dsc_backend *be, int64_t rows, int d, float *dx,
                                          const float *dy, const float *y, const float *norms);
dsc_status *cuda_ssl_match(dsc_backend *be, int n, int p, int c, const float *u_a,
                           const float *u_b, int32_t *match);
dsc_status *cuda_ssl_neighbors(dsc_backend *be, int n, int p, int c, int k, const float *u_a,
                               int32_t *idx);
dsc_status *cuda_ssl_infonce(dsc_backend *be, int64_t rows, int d, int npos, int64_t L,
                             const float *q, const float *pos, const float *queue, float tau,
                             float scale, double *loss, float *dq);
dsc_status *cuda_ssl_infonce_heads(dsc_backend *be, int64_t rows, int d, int64_t L,
                                   const float *q, const float *queue, float tau, int n_heads,
                                   const dsc_infonce_head *heads, float *dq);
dsc_status *cuda_ssl_triplet(dsc_backend *be, int64_t rows, int d, int k, const float *q,
                             const float *pos, const float *nei, float margin, float scale,
                             double *loss, float *dq);
dsc_status *cuda_ssl_nonfinite(dsc_backend *be, size_t n, const float *x, double *flag);

dsc_status *cuda_ssl_kmeans_init(dsc_backend *be, int64_t rows, int d, int k, const float *v,
                                 uint64_t seed, uint64_t step, float *centroids);
dsc_status *cuda_ssl_kmeans_run(dsc_backend *be, int64_t rows, int d, int k, int iters,
                                const float *v, float *centroids, int32_t *labels,
                                int32_t *history);
dsc_status *cuda_ssl_loss_kmeans(dsc_backend *be, int64_t rows, int d, int k, const float *v_a,
                                 const int32_t *y_a, const float *v_b, const int32_t *y_b,
                                 float tau, float scale, double *loss, float *dv_a,
                                 double *present);
dsc_status *cuda_ssl_loss_proto(dsc_backend *be, dsc_proto_loss_kind kind, int n, int p, int d,
                                int k, const float *v_a, const float *v_b, const int32_t *match,
                                const float *protos, float tau, float eps, int iters, float scale,
                                double *loss, float *dv_a, float *dprotos, int32_t *ce_target);

#endif
