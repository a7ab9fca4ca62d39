/* cpu_dense.c: the CPU backend's linear layers and general GEMM on OpenBLAS's cblas_sgemm
 * (conventions in cpu_ops.h and backend.h: row-major matrices, linear weights [out,in]).
 *
 * Debian's libopenblas is the pthread build with its own thread pool: every call first
 * sets its thread count to the backend's (openblas_set_num_threads, process-global), so
 * OpenBLAS and the OpenMP ops never both run more threads than the backend was given.
 * OpenBLAS partitions a GEMM the same way for a given size and thread count, so results
 * are reproducible for a fixed thread count. The bias gradient is a column sum in double. */
#include <cblas.h>
#include <stddef.h>
#include <string.h>

#include "backend/cpu/cpu_ops.h"

static void dense_threads_enter(cpu_impl *impl) {
  cpu_threads_enter(impl);
  if (openblas_get_num_threads() != impl->threads) openblas_set_num_threads(impl->threads);
}

static dsc_status *dense_shape_check(const char *op, int n, int in, int out) {
  if (n < 1 || in < 1 || out < 1)
    return dsc_errorf("%s: sizes must be >= 1 (n=%d in=%d out=%d)", op, n, in, out);
  return NULL;
}

/* y (n,out) = x (n,in) * w^T + b */
dsc_status *cpu_linear_forward(dsc_backend *be, int n, int in, int out, float *y,
                               const float *x, const float *w, const float *b) {
  DSC_TRY(dense_shape_check("linear_forward", n, in, out));
  if (!y || !x || !w) return dsc_errorf("linear_forward: y, x, w must not be NULL");
  dense_threads_enter(cpu_impl_of(be));
  if (b)
    for (int i = 0; i < n; i++) memcpy(y + (size_t)i * out, b, (size_t)out * sizeof *y);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1.0f, x, in, w, in,
              b ? 1.0f : 0.0f, y, out);
  return NULL;
}

/* dx (n,in) = dy * w (=, NULL skips); dw (out,in) += dy^T x; db += sum_n dy (NULL skips). */
dsc_status *cpu_linear_backward(dsc_backend *be, int n, int in, int out, float *dx, float *dw,
                                float *db, const float *dy, const float *x, const float *w) {
  DSC_TRY(dense_shape_check("linear_backward", n, in, out));
  if (!dy) return dsc_errorf("linear_backward: dy must not be NULL");
  if (dx && !w) return dsc_errorf("linear_backward: dx requested but w is NULL");
  if (dw && !x) return dsc_errorf("linear_backward: dw requested but x is NULL");
  cpu_impl *impl = cpu_impl_of(be);
  dense_threads_enter(impl);
  if (dx)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, in, out, 1.0f, dy, out, w, in,
                0.0f, dx, in);
  if (dw)
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, n, 1.0f, dy, out, x, in,
                1.0f, dw, in);
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
  if (m < 0 || n < 0 || k < 0)
    return dsc_errorf("gemm: sizes must be >= 0 (m=%d n=%d k=%d)", m, n, k);
  const int a_cols = trans_a ? m : k, b_cols = trans_b ? k : n;
  if (lda < (a_cols > 1 ? a_cols : 1))
    return dsc_errorf("gemm: lda %d is less than A's stored row length %d", lda, a_cols);
  if (ldb < (b_cols > 1 ? b_cols : 1))
    return dsc_errorf("gemm: ldb %d is less than B's stored row length %d", ldb, b_cols);
  if (ldc < (n > 1 ? n : 1))
    return dsc_errorf("gemm: ldc %d is less than C's row length %d", ldc, n);
  if (m == 0 || n == 0) return NULL;
  if (!c || (k > 0 && (!a || !b))) return dsc_errorf("gemm: a, b, c must not be NULL");
  dense_threads_enter(cpu_impl_of(be));
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  return NULL;
}
