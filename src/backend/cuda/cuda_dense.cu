/* cuda_dense.cu: the CUDA backend's linear layers and row-major GEMMs on cuBLAS (conventions in
 * cuda_internal.h and backend.h: row-major matrices, linear weights [out,in], dx =, dw +=,
 * db +=). Mirrors src/backend/cpu/cpu_dense.c.
 *
 * Row-major to cuBLAS: a row-major matrix with row stride ld is, read column-major, its
 * transpose with leading dimension ld. So the row-major C (m,n) = op(A) op(B) is computed as
 * the column-major C^T (n,m) = op(B)^T op(A)^T: cublasSgemm(op_b, op_a, n, m, k, B, ldb, A, lda,
 * C, ldc), with op_x = T exactly when trans_x is set.
 *
 * Precision (METHOD.md §5, "Precision"): the handle's math mode is set by cuda_backend.cu, plain
 * fp32 (CUBLAS_DEFAULT_MATH) in fp32 mode, TF32 tensor cores in bf16 mode. cuBLAS GEMMs on one
 * stream are deterministic for a given GPU model and library build.
 *
 * The bias gradient is a column sum of dy in double, in a fixed order (dense_colsum below), like
 * the CPU backend's double loop; only the association of the double additions differs, far
 * below float resolution. */
#include <stddef.h>

#include "backend/backend_check.h"
#include "backend/cuda/cuda_internal.h"

#define DENSE_THREADS 256
/* Column-sum tiling: 32 columns per block (one warp reads 32 consecutive floats of a row), 8
 * rows in flight per block, each block summing one chunk of at least DENSE_COLSUM_MIN_ROWS
 * rows, at most DENSE_COLSUM_MAX_CHUNKS chunks. */
#define DENSE_COLSUM_TX 32
#define DENSE_COLSUM_TY 8
#define DENSE_COLSUM_MIN_ROWS 64
#define DENSE_COLSUM_MAX_CHUNKS 256

/* y[r*cols + j] = b[j] for every row r. */
static __global__ void dense_broadcast_rows(float *y, const float *b, int64_t rows, int cols) {
  const int64_t total = rows * (int64_t)cols;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x)
    y[i] = b[i % cols];
}

/* C = beta * C over `batch` row-major (m,n) matrices at stride sc (the k = 0 GEMM); C is not
 * read when beta is 0 (BLAS rule: C's old contents, NaN included, are ignored). */
static __global__ void dense_scale(float *c, int64_t batch, int m, int n, int ldc,
                                   long long sc, float beta) {
  const int64_t per = (int64_t)m * n, total = batch * per;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t bi = i / per, r = (i % per) / n, j = i % n;
    float *cp = c + bi * (int64_t)sc + r * (int64_t)ldc + j;
    *cp = beta == 0.0f ? 0.0f : beta * *cp;
  }
}

/* Stage 1 of the column sum of x (rows, cols): block (bx, by) sums rows
 * [by*chunk_rows, min(rows, (by+1)*chunk_rows)) of columns [bx*32, bx*32+32). Thread (tx, ty)
 * adds rows ty, ty+8, ... of the chunk in increasing order in double; the 8 partial sums of a
 * column are then added in ty order by thread (tx, 0) and written to partial[by*cols + col].
 * Every thread reaches the __syncthreads (no early return). */
static __global__ void dense_colsum_partial(const float *x, int64_t rows, int cols,
                                            int64_t chunk_rows, double *partial) {
  __shared__ double sh[DENSE_COLSUM_TY][DENSE_COLSUM_TX];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t col = (int64_t)blockIdx.x * DENSE_COLSUM_TX + tx;
  const int64_t r0 = (int64_t)blockIdx.y * chunk_rows;
  const int64_t r1 = r0 + chunk_rows < rows ? r0 + chunk_rows : rows;
  double acc = 0.0;
  if (col < cols)
    for (int64_t r = r0 + ty; r < r1; r += DENSE_COLSUM_TY) acc += (double)x[r * cols + col];
  sh[ty][tx] = acc;
  __syncthreads();
  if (ty == 0 && col < cols) {
    double s = 0.0;
    for (int k = 0; k < DENSE_COLSUM_TY; k++) s += sh[k][tx];
    partial[(int64_t)blockIdx.y * cols + col] = s;
  }
}

/* Stage 2: out[j] += sum over chunks (in chunk order) of partial[chunk*cols + j]. */
static __global__ void dense_colsum_finish(const double *partial, int chunks, int cols,
                                           float *out) {
  for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < cols;
       j += (int64_t)gridDim.x * blockDim.x) {
    double s = 0.0;
    for (int k = 0; k < chunks; k++) s += partial[(int64_t)k * cols + j];
    out[j] = (float)((double)out[j] + s);
  }
}

dsc_status *cuda_colsum_add(cuda_impl *impl, cuda_slot slot, const float *x, int64_t rows,
                            int cols, float *out) {
  int64_t chunk_rows = (rows + DENSE_COLSUM_MAX_CHUNKS - 1) / DENSE_COLSUM_MAX_CHUNKS;
  if (chunk_rows < DENSE_COLSUM_MIN_ROWS) chunk_rows = DENSE_COLSUM_MIN_ROWS;
  const int chunks = (int)((rows + chunk_rows - 1) / chunk_rows); /* 1..256 */
  double *partial = NULL;
  DSC_TRY(cuda_scratch(impl, slot, (size_t)chunks * (size_t)cols * sizeof(double),
                       (void **)&partial));
  const dim3 block(DENSE_COLSUM_TX, DENSE_COLSUM_TY);
  const dim3 grid((unsigned)((cols + DENSE_COLSUM_TX - 1) / DENSE_COLSUM_TX), (unsigned)chunks);
  dense_colsum_partial<<<grid, block, 0, impl->stream>>>(x, rows, cols, chunk_rows, partial);
  CUDA_LAUNCH_CHECK();
  dense_colsum_finish<<<cuda_blocks((size_t)cols, DENSE_THREADS), DENSE_THREADS, 0,
                        impl->stream>>>(partial, chunks, cols, out);
  CUDA_LAUNCH_CHECK();
  return NULL;
}

/* Row-major C (m,n) = alpha op(A) op(B) + beta C after the caller's checks, m, n, k >= 1. */
static dsc_status *dense_sgemm(cuda_impl *impl, int trans_a, int trans_b, int m, int n, int k,
                               float alpha, const float *a, int lda, const float *b, int ldb,
                               float beta, float *c, int ldc) {
  CUBLAS_TRY(cublasSgemm(impl->cublas, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                         trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &alpha, b, ldb, a, lda,
                         &beta, c, ldc));
  return NULL;
}

/* y (n,out) = x (n,in) * w^T + b: the bias rows first, then the GEMM with beta = 1 (as the CPU
 * backend). */
dsc_status *cuda_linear_forward(dsc_backend *be, int n, int in, int out, float *y, const float *x,
                                const float *w, const float *b) {
  DSC_TRY(backend_check_linear_forward(n, in, out, y, x, w));
  cuda_impl *impl = cuda_impl_of(be);
  if (b) {
    dense_broadcast_rows<<<cuda_blocks((size_t)n * (size_t)out, DENSE_THREADS), DENSE_THREADS, 0,
                           impl->stream>>>(y, b, (int64_t)n, out);
    CUDA_LAUNCH_CHECK();
  }
  return dense_sgemm(impl, 0, 1, n, out, in, 1.0f, x, in, w, in, b ? 1.0f : 0.0f, y, out);
}

/* dx (n,in) = dy * w (=, NULL skips); dw (out,in) += dy^T x; db += sum_n dy (NULL skips). */
dsc_status *cuda_linear_backward(dsc_backend *be, int n, int in, int out, float *dx, float *dw,
                                 float *db, const float *dy, const float *x, const float *w) {
  DSC_TRY(backend_check_linear_backward(n, in, out, dx, dw, dy, x, w));
  cuda_impl *impl = cuda_impl_of(be);
  if (dx) DSC_TRY(dense_sgemm(impl, 0, 0, n, in, out, 1.0f, dy, out, w, in, 0.0f, dx, in));
  if (dw) DSC_TRY(dense_sgemm(impl, 1, 0, out, in, n, 1.0f, dy, out, x, in, 1.0f, dw, in));
  if (db) DSC_TRY(cuda_colsum_add(impl, CUDA_SLOT_DENSE, dy, (int64_t)n, out, db));
  return NULL;
}

/* Row-major C (m,n) = alpha * op(A) op(B) + beta * C; C is not read when beta == 0. */
dsc_status *cuda_gemm(dsc_backend *be, int trans_a, int trans_b, int m, int n, int k, float alpha,
                      const float *a, int lda, const float *b, int ldb, float beta, float *c,
                      int ldc) {
  DSC_TRY(backend_check_gemm(trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc));
  if (m == 0 || n == 0) return NULL;
  cuda_impl *impl = cuda_impl_of(be);
  if (k == 0) { /* C = beta*C, without reading C when beta is 0 */
    dense_scale<<<cuda_blocks((size_t)m * (size_t)n, DENSE_THREADS), DENSE_THREADS, 0,
                  impl->stream>>>(c, 1, m, n, ldc, 0, beta);
    CUDA_LAUNCH_CHECK();
    return NULL;
  }
  return dense_sgemm(impl, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

/* cuda_gemm on `batch` matrix triples: A_i = a + i*sa, B_i = b + i*sb, C_i = c + i*sc (floats).
 * The caller keeps the C_i from overlapping. */
dsc_status *cuda_gemm_batched(dsc_backend *be, int trans_a, int trans_b, int m, int n, int k,
                              float alpha, const float *a, int lda, long long sa, const float *b,
                              int ldb, long long sb, float beta, float *c, int ldc, long long sc,
                              int batch) {
  DSC_TRY(backend_check_gemm(trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc));
  if (batch < 0) return dsc_errorf("gemm_batched: batch %d must be >= 0", batch);
  if (sa < 0 || sb < 0 || sc < 0)
    return dsc_errorf("gemm_batched: strides must be >= 0 (sa=%lld sb=%lld sc=%lld)", sa, sb, sc);
  if (batch == 0 || m == 0 || n == 0) return NULL;
  cuda_impl *impl = cuda_impl_of(be);
  if (k == 0) {
    dense_scale<<<cuda_blocks((size_t)batch * (size_t)m * (size_t)n, DENSE_THREADS),
                  DENSE_THREADS, 0, impl->stream>>>(c, (int64_t)batch, m, n, ldc, sc, beta);
    CUDA_LAUNCH_CHECK();
    return NULL;
  }
  CUBLAS_TRY(cublasSgemmStridedBatched(impl->cublas, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                                       trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &alpha, b,
                                       ldb, sb, a, lda, sa, &beta, c, ldc, sc, batch));
  return NULL;
}
