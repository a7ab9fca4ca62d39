/* eval_internal.h: helpers shared by the files of src/eval/ (not part of the public API).
 *
 * eval_gemm is backend.h's row-major gemm contract: C = alpha * op(A) op(B) + beta * C with
 * op(A) (m, k), op(B) (k, n). It calls be->gemm when `be` is not NULL, else a plain loop
 * (each C element computed by one thread in a fixed order, so deterministic).
 */
#ifndef DSC_EVAL_INTERNAL_H
#define DSC_EVAL_INTERNAL_H

#include <stdint.h>

#include "backend/backend.h"
#include "dsc/status.h"

dsc_status *eval_gemm(dsc_backend *be, int trans_a, int trans_b, int m, int n, int k,
                      float alpha, const float *a, int lda, const float *b, int ldb, float beta,
                      float *c, int ldc);

/* Rows of x (rows, d) scaled to unit L2 norm (norm clamped at 1e-12), into y (may alias). */
void eval_l2norm_rows(int64_t rows, int d, const float *x, float *y);

/* The bilinear source taps of output coordinate out_i when resizing `in` samples to `out`
 * (PyTorch align_corners=False, clamped at 0): value = (1 - l1) * v[i0] + l1 * v[i1]. */
void eval_bilinear_taps(int out_i, int in, int out, int *i0, int *i1, float *l1);

#endif
