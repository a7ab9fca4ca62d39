/* ssl_host_ops.c: the dense self-supervised ops (src/backend/ssl_ops.h) for host-memory backends
 * (ref, cpu): thin adapters from the op table's signatures to the host implementations of
 * include/dsc/ssl_loss.h, which are the tested reference (PyTorch float64 fixtures). The only
 * work done here is what ssl_ops.h adds: row gathers, the queue write, the pooled key, and
 * scalar results stored as doubles. */
#include <math.h>
#include <string.h>

#include "backend/ssl_ops.h"

static dsc_status *host_copy(dsc_backend *be, void *dst, const void *src, size_t bytes) {
  if (bytes) memcpy(dst, src, bytes);
  return NULL;
}

static dsc_status *host_gather_rows(dsc_backend *be, int64_t rows, int64_t words, void *dst,
                                    int64_t dst_blk, int64_t dst_stride, const void *src,
                                    const int32_t *idx, int64_t idx_group, int64_t idx_base) {
  if (rows < 0 || words < 1 || dst_blk < 1 || dst_stride < 1)
    return dsc_errorf("gather_rows: bad shape (rows %lld, words %lld, dst_blk %lld, dst_stride %lld)",
                      (long long)rows, (long long)words, (long long)dst_blk, (long long)dst_stride);
  uint32_t *d = dst;
  const uint32_t *s = src;
  const size_t row_bytes = (size_t)words * sizeof(uint32_t);
  for (int64_t r = 0; r < rows; r++) {
    int64_t from = (idx_group ? (r / idx_group) * idx_base : 0) + idx[r];
    int64_t to = (r / dst_blk) * dst_stride + r % dst_blk;
    memcpy(d + to * words, s + from * words, row_bytes);
  }
  return NULL;
}

static dsc_status *host_enqueue(dsc_backend *be, int n, int d, int64_t L, int64_t ptr, float *queue,
                                const float *keys) {
  if (ptr < 0 || ptr + n > L)
    return dsc_errorf("enqueue: %d keys at %lld do not fit a queue of %lld", n, (long long)ptr,
                      (long long)L);
  for (int i = 0; i < n; i++)
    for (int k = 0; k < d; k++) queue[(size_t)k * L + ptr + i] = keys[(size_t)i * d + k];
  return NULL;
}

static dsc_status *host_pool_norm(dsc_backend *be, int n, int p, int d, const float *x, float *y) {
  for (int i = 0; i < n; i++) {
    for (int k = 0; k < d; k++) {
      double s = 0;
      for (int j = 0; j < p; j++) s += x[((size_t)i * p + j) * d + k];
      y[(size_t)i * d + k] = (float)(s / p);
    }
  }
  dsc_l2norm_rows(n, d, y, NULL, y);
  return NULL;
}

static dsc_status *host_l2norm_rows(dsc_backend *be, int64_t rows, int d, float *y, float *norms,
                                    const float *x) {
  dsc_l2norm_rows(rows, d, y, norms, x);
  return NULL;
}

static dsc_status *host_l2norm_rows_backward(dsc_backend *be, int64_t rows, int d, float *dx,
                                             const float *dy, const float *y, const float *norms) {
  dsc_l2norm_rows_backward(rows, d, dx, dy, y, norms);
  return NULL;
}

static dsc_status *host_triplet(dsc_backend *be, int64_t rows, int d, int k, const float *q,
                                const float *pos, const float *nei, float margin, float scale,
                                double *loss, float *dq) {
  dsc_loss_triplet(rows, d, k, q, pos, nei, margin, scale, loss, dq);
  return NULL;
}

static dsc_status *host_loss_kmeans(dsc_backend *be, int64_t rows, int d, int k, const float *v_a,
                                    const int32_t *y_a, const float *v_b, const int32_t *y_b,
                                    float tau, float scale, double *loss, float *dv_a,
                                    double *present) {
  int count = 0;
  DSC_TRY(dsc_loss_kmeans(rows, d, k, v_a, y_a, v_b, y_b, tau, scale, loss, dv_a, &count));
  if (present) *present = count;
  return NULL;
}

static dsc_status *host_kmeans_init(dsc_backend *be, int64_t rows, int d, int k, const float *v,
                                    uint64_t seed, uint64_t step, float *centroids) {
  return dsc_kmeans_init(rows, d, k, v, seed, step, centroids);
}

static dsc_status *host_nonfinite(dsc_backend *be, size_t n, const float *x, double *flag) {
  /* x * 0 is 0 for every finite x and NaN for inf or NaN: the sum is 0 exactly when all are
   * finite (vectorizes; no branch per element). */
  float probe = 0.0f;
#pragma omp simd reduction(+ : probe)
  for (size_t k = 0; k < n; k++) probe += x[k] * 0.0f;
  *flag = probe == 0.0f ? 0.0 : 1.0;
  return NULL;
}

const dsc_ssl_ops dsc_ssl_host_ops = {
    .copy = host_copy,
    .gather_rows = host_gather_rows,
    .enqueue = host_enqueue,
    .pool_norm = host_pool_norm,
    .l2norm_rows = host_l2norm_rows,
    .l2norm_rows_backward = host_l2norm_rows_backward,
    .match = dsc_ssl_match,
    .neighbors = dsc_ssl_neighbors,
    .infonce = dsc_loss_infonce,
    .infonce_heads = dsc_loss_infonce_heads,
    .triplet = host_triplet,
    .kmeans_init = host_kmeans_init,
    .kmeans_run = dsc_kmeans_run,
    .loss_kmeans = host_loss_kmeans,
    .loss_proto = dsc_loss_proto,
    .nonfinite = host_nonfinite,
};
