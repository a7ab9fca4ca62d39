/* ref_dense.c: the reference backend's linear layer and GEMM (see ref_ops.h).
 *
 * Linear: x (n,in), w (out,in) as PyTorch's nn.Linear, b (out) optional, y (n,out):
 *   y = x w^T + b;  dx = dy w (=);  dw += dy^T x;  db += sum_n dy.
 * GEMM: row-major C (m,n) = alpha*op(A) op(B) + beta*C with op(A) (m,k), op(B) (k,n).
 * A is stored (m,k) with row stride lda, or (k,m) when trans_a; B likewise. As in BLAS,
 * beta == 0 means C is not read (NaN or garbage in C does not propagate). Every dot
 * product is a double sum. */
#include <stddef.h>

#include "backend/ref/ref_ops.h"

static dsc_status *linear_shape_check(const char *op, int n, int in, int out) {
  if (n < 1 || in < 1 || out < 1)
    return dsc_errorf("%s: sizes must be >= 1 (n=%d in=%d out=%d)", op, n, in, out);
  return NULL;
}

dsc_status *ref_linear_forward(dsc_backend *be, int n, int in, int out, float *y, const float *x,
                               const float *w, const float *b) {
  DSC_TRY(linear_shape_check("linear_forward", n, in, out));
  if (!y || !x || !w) return dsc_errorf("linear_forward: y, x, w must not be NULL");
  for (int i = 0; i < n; i++)
    for (int o = 0; o < out; o++) {
      double acc = b ? (double)b[o] : 0.0;
      for (int k = 0; k < in; k++)
        acc += (double)x[(size_t)i * in + k] * (double)w[(size_t)o * in + k];
      y[(size_t)i * out + o] = (float)acc;
    }
  return NULL;
}

dsc_status *ref_linear_backward(dsc_backend *be, int n, int in, int out, float *dx, float *dw,
                                float *db, const float *dy, const float *x, const float *w) {
  DSC_TRY(linear_shape_check("linear_backward", n, in, out));
  if (!dy) return dsc_errorf("linear_backward: dy must not be NULL");
  if (dx && !w) return dsc_errorf("linear_backward: dx requested but w is NULL");
  if (dw && !x) return dsc_errorf("linear_backward: dw requested but x is NULL");
  if (dx)
    for (int i = 0; i < n; i++)
      for (int k = 0; k < in; k++) {
        double acc = 0.0;
        for (int o = 0; o < out; o++)
          acc += (double)dy[(size_t)i * out + o] * (double)w[(size_t)o * in + k];
        dx[(size_t)i * in + k] = (float)acc;
      }
  if (dw)
    for (int o = 0; o < out; o++)
      for (int k = 0; k < in; k++) {
        double acc = 0.0;
        for (int i = 0; i < n; i++)
          acc += (double)dy[(size_t)i * out + o] * (double)x[(size_t)i * in + k];
        float *p = &dw[(size_t)o * in + k];
        *p = (float)((double)*p + acc);
      }
  if (db)
    for (int o = 0; o < out; o++) {
      double acc = 0.0;
      for (int i = 0; i < n; i++) acc += (double)dy[(size_t)i * out + o];
      db[o] = (float)((double)db[o] + acc);
    }
  return NULL;
}

dsc_status *ref_gemm(dsc_backend *be, int trans_a, int trans_b, int m, int n, int k, float alpha,
                     const float *a, int lda, const float *b, int ldb, float beta, float *c,
                     int ldc) {
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
  for (int i = 0; i < m; i++)
    for (int j = 0; j < n; j++) {
      double acc = 0.0;
      for (int p = 0; p < k; p++) {
        double av = trans_a ? a[(size_t)p * lda + i] : a[(size_t)i * lda + p];
        double bv = trans_b ? b[(size_t)j * ldb + p] : b[(size_t)p * ldb + j];
        acc += av * bv;
      }
      float *cp = &c[(size_t)i * ldc + j];
      double prior = beta == 0.0f ? 0.0 : (double)beta * (double)*cp;
      *cp = (float)((double)alpha * acc + prior);
    }
  return NULL;
}
