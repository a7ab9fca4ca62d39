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

dsc_status *ref_linear_forward(dsc_backend *be, int n, int in, int out, float *y, const float *x,
                               const float *w, const float *b) {
  DSC_TRY(backend_check_linear_forward(n, in, out, y, x, w));
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
  DSC_TRY(backend_check_linear_backward(n, in, out, dx, dw, dy, x, w));
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
  DSC_TRY(backend_check_gemm(trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc));
  if (m == 0 || n == 0) return NULL;
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
