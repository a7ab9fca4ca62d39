/* ssl_ops.h: the dense self-supervised ops of the op table (METHOD.md §1, §3-5): the pieces of
 * one training step that are not the networks (normalizations, correspondence, neighbors, every
 * loss term with its gradient, online k-means, Sinkhorn, queue writes, finiteness), on a
 * backend's own memory, so that src/ssl/ssl_step.c is written once for every backend.
 *
 * Host-memory backends (ref, cpu) leave dsc_backend.ssl NULL; model code calls
 * dsc_ssl_ops_of(be), which then returns &dsc_ssl_host_ops: the host implementations of
 * src/ssl/ (include/dsc/ssl_loss.h, tested against PyTorch float64). A device backend (cuda)
 * implements the same ops on its memory.
 *
 * Semantics: each op is the host function of the same name in include/dsc/ssl_loss.h (same
 * arguments, shapes, tie rules, `+=` of scaled gradients, NULL gradient skips), with these
 * differences, which let a device backend run a whole step without waiting on the GPU:
 *  - every pointer argument is backend memory, except `heads` itself (a host array whose
 *    `pos` and `loss` members are backend memory);
 *  - scalar results (losses, counts) are written as ONE double each to backend memory
 *    (`double *loss` points into backend memory; it is written, not accumulated);
 *  - results may differ from the host functions by float rounding (other summation orders),
 *    and hence a discrete choice (argmax, top-k, nearest centroid) within rounding of a tie may
 *    differ; a backend documents its bounds in its tests.
 */
#ifndef DSC_SSL_OPS_H
#define DSC_SSL_OPS_H

#include <stdint.h>

#include "backend/backend.h"
#include "dsc/ssl_loss.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dsc_ssl_ops {
  /* dst = src, `bytes` bytes (backend memory to backend memory, no overlap). */
  dsc_status *(*copy)(dsc_backend *be, void *dst, const void *src, size_t bytes);

  /* Row gather of 32-bit words (floats or int32), rows of `words` words. For r in [0, rows):
   *   source row  s(r) = (idx_group ? (r / idx_group) * idx_base : 0) + idx[r]
   *   target row  t(r) = (r / dst_blk) * dst_stride + (r % dst_blk)
   *   dst[t(r)] = src[s(r)]
   * (dst_blk = dst_stride = 1: contiguous rows.) Used for the shuffle-BN permutation of the
   * key images (idx_group 0), the matched key pixel c(n,i) (idx_group = idx_base = P), the
   * neighbors (idx_group = P*k, idx_base = P) and interleaving positives (dst_blk, dst_stride). */
  dsc_status *(*gather_rows)(dsc_backend *be, int64_t rows, int64_t words, void *dst,
                             int64_t dst_blk, int64_t dst_stride, const void *src,
                             const int32_t *idx, int64_t idx_group, int64_t idx_base);

  /* Enqueue (METHOD.md §3): queue[k*L + ptr + i] = keys[i*d + k] for i < n, k < d
   * (ptr + n <= L). */
  dsc_status *(*enqueue)(dsc_backend *be, int n, int d, int64_t L, int64_t ptr, float *queue,
                         const float *keys);

  /* y (n, d) = norm(mean over the p rows of image i of x (n*p, d)) (the pooled dense key
   * w^b of METHOD.md §3; mean accumulated in double on host backends). */
  dsc_status *(*pool_norm)(dsc_backend *be, int n, int p, int d, const float *x, float *y);

  dsc_status *(*l2norm_rows)(dsc_backend *be, int64_t rows, int d, float *y, float *norms,
                             const float *x);
  dsc_status *(*l2norm_rows_backward)(dsc_backend *be, int64_t rows, int d, float *dx,
                                      const float *dy, const float *y, const float *norms);

  dsc_status *(*match)(dsc_backend *be, int n, int p, int c, const float *u_a, const float *u_b,
                       int32_t *match);
  dsc_status *(*neighbors)(dsc_backend *be, int n, int p, int c, int k, const float *u_a,
                           int32_t *idx);

  dsc_status *(*infonce)(dsc_backend *be, int64_t rows, int d, int npos, int64_t L,
                         const float *q, const float *pos, const float *queue, float tau,
                         float scale, double *loss, float *dq);
  dsc_status *(*infonce_heads)(dsc_backend *be, int64_t rows, int d, int64_t L, const float *q,
                               const float *queue, float tau, int n_heads,
                               const dsc_infonce_head *heads, float *dq);
  dsc_status *(*triplet)(dsc_backend *be, int64_t rows, int d, int k, const float *q,
                         const float *pos, const float *nei, float margin, float scale,
                         double *loss, float *dq);

  /* k-means: the initialization's random row choice depends only on (rows, k, seed, step) and
   * is made on the host (dsc_kmeans_init's rule); the rows are then copied on the backend. */
  dsc_status *(*kmeans_init)(dsc_backend *be, int64_t rows, int d, int k, const float *v,
                             uint64_t seed, uint64_t step, float *centroids);
  dsc_status *(*kmeans_run)(dsc_backend *be, int64_t rows, int d, int k, int iters,
                            const float *v, float *centroids, int32_t *labels,
                            int32_t *history);
  /* `present` (NULL skips) receives |P| as a double. */
  dsc_status *(*loss_kmeans)(dsc_backend *be, int64_t rows, int d, int k, const float *v_a,
                             const int32_t *y_a, const float *v_b, const int32_t *y_b,
                             float tau, float scale, double *loss, float *dv_a,
                             double *present);

  dsc_status *(*loss_proto)(dsc_backend *be, dsc_proto_loss_kind kind, int n, int p, int d,
                            int k, const float *v_a, const float *v_b, const int32_t *match,
                            const float *protos, float tau, float eps, int iters, float scale,
                            double *loss, float *dv_a, float *dprotos, int32_t *ce_target);

  /* *flag (one double, backend memory) = 0 when all n values of x are finite, else nonzero. */
  dsc_status *(*nonfinite)(dsc_backend *be, size_t n, const float *x, double *flag);
} dsc_ssl_ops;

/* The host implementations (src/ssl/ssl_host_ops.c). */
extern const dsc_ssl_ops dsc_ssl_host_ops;

/* be->ssl, or the host implementations for a host-memory backend. */
static inline const dsc_ssl_ops *dsc_ssl_ops_of(const dsc_backend *be) {
  return be->ssl ? be->ssl : &dsc_ssl_host_ops;
}

#ifdef __cplusplus
}
#endif

#endif
