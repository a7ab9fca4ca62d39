/* cpu_dense.c: the CPU backend's linear layers and general GEMM (conventions in cpu_ops.h
 * and backend.h: row-major matrices, linear weights [out,in]).
 *
 * GEMM is oneDNN's dnnl_sgemm (row-major, fp32), not OpenBLAS, for two measured reasons
 * (docs/performance.md, "CPU ops"): it runs on the same OpenMP threads as every other op,
 * so no second thread pool spins beside them (Debian's OpenBLAS is the pthread build), and
 * it is 2-6x faster here: OpenBLAS 0.3.21 does not recognize this CPU and falls back to its
 * SSE3 "Prescott" kernels, and even with OPENBLAS_CORETYPE=SkylakeX its threaded GEMM
 * trails oneDNN's. oneDNN splits a GEMM the same way for a given size and thread count, so
 * results are reproducible for a fixed thread count. The bias gradient is a column sum in
 * double. */
#include <stddef.h>
#include <string.h>

#include <dnnl_debug.h>

#include "backend/cpu/cpu_ops.h"

/* C (m,n) = alpha * op(A) op(B) + beta * C, row-major, after the caller's checks. */
static dsc_status *dense_sgemm(int trans_a, int trans_b, int m, int n, int k, float alpha,
                               const float *a, int lda, const float *b, int ldb, float beta,
                               float *c, int ldc) {
  dnnl_status_t st = dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', m, n, k, alpha, a,
                                lda, b, ldb, beta, c, ldc);
  if (st != dnnl_success)
    return DSC_ERR_AT("oneDNN sgemm (m=%d n=%d k=%d): %s", m, n, k, dnnl_status2str(st));
  return NULL;
}

/* y (n,out) = x (n,in) * w^T + b */
dsc_status *cpu_linear_forward(dsc_backend *be, int n, int in, int out, float *y,
                               const float *x, const float *w, const float *b) {
  DSC_TRY(backend_check_linear_forward(n, in, out, y, x, w));
  cpu_threads_enter(cpu_impl_of(be));
  if (b)
    for (int i = 0; i < n; i++) memcpy(y + (size_t)i * out, b, (size_t)out * sizeof *y);
  return dense_sgemm(0, 1, n, out, in, 1.0f, x, in, w, in, b ? 1.0f : 0.0f, y, out);
}

/* dx (n,in) = dy * w (=, NULL skips); dw (out,in) += dy^T x; db += sum_n dy (NULL skips). */
dsc_status *cpu_linear_backward(dsc_backend *be, int n, int in, int out, float *dx, float *dw,
                                float *db, const float *dy, const float *x, const float *w) {
  DSC_TRY(backend_check_linear_backward(n, in, out, dx, dw, dy, x, w));
  cpu_impl *impl = cpu_impl_of(be);
  cpu_threads_enter(impl);
  if (dx) DSC_TRY(dense_sgemm(0, 0, n, in, out, 1.0f, dy, out, w, in, 0.0f, dx, in));
  if (dw) DSC_TRY(dense_sgemm(1, 0, out, in, n, 1.0f, dy, out, x, in, 1.0f, dw, in));
  if (db) {
    double *acc = NULL;
    DSC_TRY(cpu_work_get(impl, (size_t)out * sizeof *acc, (void **)&acc));
    for (int j = 0; j < out; j++) acc[j] = 0.0;
    for (int i = 0; i < n; i++) {
      const float *row = dy + (size_t)i * out;
      for (int j = 0; j < out; j++) acc[j] += (double)row[j];
    }
    for (int j = 0; j < out; j++) db[j] = (float)((double)db[j] + acc[j]);
  }
  return NULL;
}

/* Row-major C (m,n) = alpha * op(A) op(B) + beta * C; C is not read when beta == 0. */
dsc_status *cpu_gemm(dsc_backend *be, int trans_a, int trans_b, int m, int n, int k,
                     float alpha, const float *a, int lda, const float *b, int ldb, float beta,
                     float *c, int ldc) {
  DSC_TRY(backend_check_gemm(trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc));
  if (m == 0 || n == 0) return NULL;
  if (k == 0) { /* C = beta*C, without reading C when beta is 0 */
    for (int i = 0; i < m; i++)
      for (int j = 0; j < n; j++) {
        float *cp = c + (size_t)i * ldc + j;
        *cp = beta == 0.0f ? 0.0f : beta * *cp;
      }
    return NULL;
  }
  cpu_threads_enter(cpu_impl_of(be));
  return dense_sgemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
