/* cuda_ssl_cluster.cu: the clustering ssl ops of the CUDA backend (ssl_ops.h): the k-means
 * initialization and iterations (METHOD.md §4.5 steps 1-2), the cluster contrast L_km (§4.5
 * steps 4-5) and the prototype terms L_pm / L_ce with Sinkhorn-Knopp codes (§4.6, §4.7).
 * Host references, mirrored formula by formula: dsc_kmeans_init, dsc_kmeans_run and
 * dsc_loss_kmeans (src/ssl/kmeans.c), dsc_sinkhorn and dsc_loss_proto (src/ssl/loss_proto.c).
 *
 * Conventions (cuda_internal.h's, plus):
 *  - All pointers are device memory; scalar results (loss, |P|) are one double each written to
 *    device memory. Nothing here waits for the GPU except kmeans_init (one small upload of the
 *    host-drawn row indices, once per run).
 *  - GEMMs: row-major like backend.h's gemm, but through this file's own cublasGemmEx call with
 *    CUBLAS_COMPUTE_32F_PEDANTIC: plain fp32 in both precision modes (in bf16 mode the handle
 *    allows TF32, which cuda_internal.h rules out for norms, softmax and Sinkhorn; the scores
 *    here feed argmax, Sinkhorn at eps = 0.05 and softmax, and the prototype gradient is a
 *    reduction over all pixels).
 *  - Deterministic reductions, no atomics: every sum has a fixed order (sequential loops,
 *    fixed-size block trees, warp butterflies whose lanes all end with the same value since
 *    IEEE addition is commutative). Maxima are order-independent; "x > m" comparisons ignore
 *    NaN as the host loops do. Argmax ties go to the smallest index as on the host.
 *  - Where rounding can differ from the host: the score GEMMs (cuBLAS fp32 vs the host
 *    backend's gemm), double sums whose association differs (per-segment partial sums, block
 *    trees, warp trees instead of one sequential loop), FMA contraction in device code, and
 *    the device's double exp/log (within 1 ulp). Differences are at double rounding level
 *    except through the fp32 GEMMs; a discrete choice (argmax) within rounding of a tie may
 *    differ (ssl_ops.h).
 *  - Argument errors the host functions detect by reading label / match arrays cannot be
 *    detected without waiting for the GPU: rows with an out-of-range label (L_km) or match
 *    (prototype loss) are left out of every sum and gradient and the loss is written as NaN,
 *    so the step's finiteness check reports it.
 *  - Scratch: CUDA_SLOT_CLUSTER_A..D, carved into 256-byte aligned pieces per op; no op here
 *    calls another op that uses these slots.
 */
#include <float.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_internal.h"

/* Block size of every kernel here (a power of two: the block trees rely on it). */
#define CL_THREADS 256
/* Column tile of the per-cluster sums: one thread per column, CL_COLS columns per block. */
#define CL_COLS 128
/* Labels staged in shared memory per tile of the per-cluster sums. */
#define CL_TILE 256
/* Row segments of the per-cluster sums: at least KM_SEG_MIN rows each, at most KM_SEG_MAX. */
#define KM_SEG_MIN 4096
#define KM_SEG_MAX 64
/* Score chunk of the assignment step: at most KM_CHUNK_FLOATS floats (256 MiB). */
#define KM_CHUNK_FLOATS ((int64_t)64 * 1024 * 1024)
/* METHOD.md §1: norm(x) = x / max(|x|, 1e-12). */
#define KM_NORM_EPS 1e-12
/* Fixed grid of the whole-matrix reductions of Sinkhorn (max, sum). */
#define SK_RED_BLOCKS 512
/* Rows per segment of Sinkhorn's per-prototype (column) sums. */
#define SK_ROWSEG 256

/* ------------------------------------------------------------------------------------------ */
/* helpers                                                                                    */

/* Row-major C (m,n) = alpha op(A) op(B) + beta C in plain fp32 (see the file comment); the
 * column-major product C^T = op(B)^T op(A)^T. m, n, k >= 1. */
static dsc_status *cl_gemm(cuda_impl *impl, int trans_a, int trans_b, int m, int n, int k,
                           float alpha, const float *a, int lda, const float *b, int ldb,
                           float beta, float *c, int ldc) {
  CUBLAS_TRY(cublasGemmEx(impl->cublas, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                          trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &alpha, b, CUDA_R_32F,
                          ldb, a, CUDA_R_32F, lda, &beta, c, CUDA_R_32F, ldc,
                          CUBLAS_COMPUTE_32F_PEDANTIC, CUBLAS_GEMM_DEFAULT));
  return NULL;
}

/* Offset of a new piece of `bytes` bytes in a scratch layout (256-byte aligned). */
static size_t cl_carve(size_t *used, size_t bytes) {
  size_t off = (*used + 255) / 256 * 256;
  *used = off + bytes;
  return off;
}

static void *cl_at(void *base, size_t off) { return (void *)((char *)base + off); }

/* Sum over the block (blockDim.x == CL_THREADS); every thread must call it; all get the sum. */
__device__ static double block_sum(double v, double *sh) {
  const int t = threadIdx.x;
  sh[t] = v;
  __syncthreads();
  for (int s = CL_THREADS / 2; s > 0; s >>= 1) {
    if (t < s) sh[t] += sh[t + s];
    __syncthreads();
  }
  double r = sh[0];
  __syncthreads();
  return r;
}

/* Maximum over the block ignoring NaN (as "if (x > m) m = x"); same calling rules. */
__device__ static double block_max(double v, double *sh) {
  const int t = threadIdx.x;
  sh[t] = v;
  __syncthreads();
  for (int s = CL_THREADS / 2; s > 0; s >>= 1) {
    if (t < s && sh[t + s] > sh[t]) sh[t] = sh[t + s];
    __syncthreads();
  }
  double r = sh[0];
  __syncthreads();
  return r;
}

/* Butterfly sum / max over a full warp: every lane ends with the same value. */
__device__ static double warp_sum(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ static double warp_max(double v) {
  for (int o = 16; o > 0; o >>= 1) {
    double w = __shfl_xor_sync(0xffffffffu, v, o);
    if (w > v) v = w;
  }
  return v;
}

/* Warp id and warp count of a grid-stride loop with one warp per row. */
__device__ static int64_t warp_id(void) {
  return ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
}
__device__ static int64_t warp_count(void) { return ((int64_t)gridDim.x * blockDim.x) >> 5; }

/* log-sum-exp of s/tau over a row of k scores in double (loss_proto.c's row_lse), one warp;
 * each lane reads only the entries c = lane (mod 32). */
__device__ static double warp_row_lse(const float *s, int k, double inv_tau, int lane) {
  double mx = -INFINITY;
  for (int c = lane; c < k; c += 32) {
    double x = (double)s[c] * inv_tau;
    if (x > mx) mx = x;
  }
  mx = warp_max(mx);
  double se = 0;
  for (int c = lane; c < k; c += 32) se += exp((double)s[c] * inv_tau - mx);
  se = warp_sum(se);
  return mx + log(se);
}

/* ------------------------------------------------------------------------------------------ */
/* k-means kernels                                                                            */

/* centroids[t] = v[idx[t]] for t < k. */
__global__ static void km_gather_kernel(int k, int d, const int64_t *idx, const float *v,
                                        float *centroids) {
  const int64_t total = (int64_t)k * d;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t t = i / d, j = i % d;
    centroids[i] = v[idx[t] * d + j];
  }
}

/* One thread per row of a score chunk (m, K): the first maximum (kmeans.c's kmeans_assign). */
__global__ static void km_argmax_kernel(int m, int K, const float *scores, int32_t *labels,
                                        int32_t *hist) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < m;
       i += (int64_t)gridDim.x * blockDim.x) {
    const float *s = scores + i * K;
    int best = 0;
    float bv = s[0];
    for (int c = 1; c < K; c++) {
      if (s[c] > bv) {
        bv = s[c];
        best = c;
      }
    }
    labels[i] = best;
    if (hist) hist[i] = best;
  }
}

/* Per-cluster partial sums in double over one segment of rows, in row order.
 * Grid (K * S, ceil(d / CL_COLS)), CL_COLS threads: block x = c * S + s handles cluster c and
 * rows [s*seg, min(rows, (s+1)*seg)); thread column j = blockIdx.y * CL_COLS + threadIdx.x.
 * psum[(c*S + s)*d + j] = sum of v[r][j] over rows r of the segment with labels[r] == c;
 * pcnt[c*S + s] = their count (written by the blocks with blockIdx.y == 0). Labels outside
 * [0, K) match no cluster. */
__global__ static void km_partial_sums_kernel(int64_t rows, int d, int K, int S, int64_t seg,
                                              const float *v, const int32_t *labels,
                                              double *psum, int64_t *pcnt) {
  __shared__ int32_t lab[CL_TILE];
  const int c = (int)(blockIdx.x / (unsigned)S);
  const int s = (int)(blockIdx.x % (unsigned)S);
  const int j = (int)blockIdx.y * CL_COLS + (int)threadIdx.x;
  const int64_t r0 = (int64_t)s * seg;
  const int64_t r1 = r0 + seg < rows ? r0 + seg : rows;
  double acc = 0;
  int64_t cnt = 0;
  for (int64_t t0 = r0; t0 < r1; t0 += CL_TILE) { /* same bounds for the whole block */
    const int nt = (int)(r1 - t0 < CL_TILE ? r1 - t0 : CL_TILE);
    for (int i = threadIdx.x; i < nt; i += blockDim.x) lab[i] = labels[t0 + i];
    __syncthreads();
    for (int i = 0; i < nt; i++) {
      if (lab[i] == c) {
        cnt++;
        if (j < d) acc += (double)v[(t0 + i) * d + j];
      }
    }
    __syncthreads();
  }
  if (j < d) psum[((int64_t)c * S + s) * d + j] = acc;
  if (blockIdx.y == 0 && threadIdx.x == 0) pcnt[(int64_t)c * S + s] = cnt;
}

/* One block (CL_THREADS) per cluster c: count = sum of pcnt, mean = (sum of psum) / count,
 * x = mean / max(|mean|, 1e-12) (kmeans.c's kmeans_update / kmeans_cluster_means). Skips c
 * when slot is given and slot[c] < 0, and when count == 0 (an empty cluster keeps its
 * centroid). Writes centroids[c] = (float)x and/or e[c] = x (double), len[c] = |mean|. */
__global__ static void km_finalize_kernel(int K, int S, int d, const double *psum,
                                          const int64_t *pcnt, const int *slot, float *centroids,
                                          double *e, double *len) {
  __shared__ double sh[CL_THREADS];
  const int c = blockIdx.x;
  if (c >= K) return;
  if (slot && slot[c] < 0) return; /* uniform over the block */
  int64_t count = 0;
  for (int s = 0; s < S; s++) count += pcnt[(int64_t)c * S + s];
  if (count == 0) return; /* uniform over the block */
  const double *ps = psum + (int64_t)c * S * d;
  double sq = 0;
  for (int j = threadIdx.x; j < d; j += blockDim.x) {
    double sum = 0;
    for (int s = 0; s < S; s++) sum += ps[(int64_t)s * d + j];
    const double mean = sum / (double)count;
    sq += mean * mean;
  }
  const double nrm = sqrt(block_sum(sq, sh));
  const double inv = 1.0 / (nrm > KM_NORM_EPS ? nrm : KM_NORM_EPS);
  for (int j = threadIdx.x; j < d; j += blockDim.x) {
    double sum = 0;
    for (int s = 0; s < S; s++) sum += ps[(int64_t)s * d + j];
    const double x = sum / (double)count * inv;
    if (centroids) centroids[(int64_t)c * d + j] = (float)x;
    if (e) e[(int64_t)c * d + j] = x;
  }
  if (len && threadIdx.x == 0) len[c] = nrm;
}

/* ------------------------------------------------------------------------------------------ */
/* L_km kernels (dsc_loss_kmeans)                                                             */

/* One block: cnt_x[c] = sum of the partial counts; then thread 0 builds P (clusters with
 * rows in both views, ascending), slot[c] (index in P or -1), info[0] = |P|,
 * info[1] = 1 when some label was outside [0, K) (the counts do not add up to rows), and
 * *present = |P|. */
__global__ static void km_presence_kernel(int64_t rows, int K, int S, const int64_t *pcnt_a,
                                          const int64_t *pcnt_b, int64_t *cnt_a, int64_t *cnt_b,
                                          int *slot, int *P, int *info, double *present) {
  for (int c = threadIdx.x; c < K; c += blockDim.x) {
    int64_t ca = 0, cb = 0;
    for (int s = 0; s < S; s++) {
      ca += pcnt_a[(int64_t)c * S + s];
      cb += pcnt_b[(int64_t)c * S + s];
    }
    cnt_a[c] = ca;
    cnt_b[c] = cb;
  }
  __syncthreads();
  if (threadIdx.x != 0) return;
  int m = 0;
  int64_t ta = 0, tb = 0;
  for (int c = 0; c < K; c++) {
    ta += cnt_a[c];
    tb += cnt_b[c];
    slot[c] = -1;
    if (cnt_a[c] > 0 && cnt_b[c] > 0) {
      slot[c] = m;
      P[m++] = c;
    }
  }
  info[0] = m;
  info[1] = (ta != rows || tb != rows) ? 1 : 0;
  if (present) *present = (double)m;
}

/* G[i*K + j] = e^a_{P[i]} . e^b_{P[j]} / tau for i, j < m (one thread per pair, sequential
 * over d as the host). */
__global__ static void km_logits_kernel(int K, int d, const int *info, const int *P,
                                        const double *ea, const double *eb, float tau,
                                        double *G) {
  const int m = info[0];
  if (info[1] || m < 2) return;
  const int64_t total = (int64_t)m * m;
  for (int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
       idx += (int64_t)gridDim.x * blockDim.x) {
    const int i = (int)(idx / m), j = (int)(idx % m);
    const double *x = ea + (int64_t)P[i] * d;
    const double *y = eb + (int64_t)P[j] * d;
    double s = 0;
    for (int t = 0; t < d; t++) s += x[t] * y[t];
    G[(int64_t)i * K + j] = s / (double)tau;
  }
}

/* One block: per logit row i < m (one thread each, sequential over j as the host) the
 * log-sum-exp, rl[i] = lse - G[i][i], and G[i][j] := (softmax_ij - [i == j]) / m; then
 * thread 0 writes *loss = sum_i rl[i] / m in row order (0 when m < 2, NaN when a label was
 * out of range). */
__global__ static void km_softmax_kernel(int K, const int *info, double *G, double *rl,
                                         double *loss) {
  const int m = info[0];
  const int bad = info[1];
  if (!bad && m >= 2) {
    for (int i = threadIdx.x; i < m; i += blockDim.x) {
      double *gi = G + (int64_t)i * K;
      double mx = -INFINITY;
      for (int j = 0; j < m; j++)
        if (gi[j] > mx) mx = gi[j];
      double se = 0;
      for (int j = 0; j < m; j++) se += exp(gi[j] - mx);
      const double lse = mx + log(se);
      rl[i] = lse - gi[i];
      for (int j = 0; j < m; j++) gi[j] = (exp(gi[j] - lse) - (i == j ? 1.0 : 0.0)) / (double)m;
    }
  }
  __syncthreads();
  if (threadIdx.x != 0) return;
  if (bad) {
    *loss = (double)NAN;
  } else if (m < 2) {
    *loss = 0;
  } else {
    double total = 0;
    for (int i = 0; i < m; i++) total += rl[i];
    *loss = total / (double)m;
  }
}

/* One block per logit row i < m, cluster c = P[i]: dm[c] = scale / cnt_a[c] * the gradient of
 * the mean of cluster c: de = sum_j G_ij e^b_{P[j]} / tau, then through the normalization
 * (de - e (e . de)) / |mean| (de / 1e-12 when clamped). Each thread owns columns t, so the
 * two passes over dm[c] need no synchronization beyond the block sum. */
__global__ static void km_dmean_kernel(int K, int d, const int *info, const int *P,
                                       const double *G, const double *ea, const double *eb,
                                       const double *len_a, const int64_t *cnt_a, float tau,
                                       float scale, double *dm) {
  __shared__ double sh[CL_THREADS];
  const int m = info[0];
  const int i = blockIdx.x;
  if (info[1] || m < 2 || i >= m) return; /* uniform over the block */
  const int c = P[i];
  const double *e = ea + (int64_t)c * d;
  double *di = dm + (int64_t)c * d;
  const double *gi = G + (int64_t)i * K;
  double dot = 0;
  for (int t = threadIdx.x; t < d; t += blockDim.x) {
    double acc = 0;
    for (int j = 0; j < m; j++) {
      const double w = gi[j] / (double)tau;
      acc += w * eb[(int64_t)P[j] * d + t];
    }
    di[t] = acc;
    dot += e[t] * acc;
  }
  dot = block_sum(dot, sh);
  const double l = len_a[c];
  const double f = (double)scale / (double)cnt_a[c];
  for (int t = threadIdx.x; t < d; t += blockDim.x) {
    double x = di[t];
    if (l > KM_NORM_EPS)
      x = (x - e[t] * dot) / l;
    else
      x = x / KM_NORM_EPS;
    di[t] = x * f;
  }
}

/* dv_a[r][t] += (float)dm[y_a[r]][t] for rows whose cluster is in P. */
__global__ static void km_scatter_kernel(int64_t rows, int d, int K, const int *info,
                                         const int32_t *y_a, const int *slot, const double *dm,
                                         float *dv_a) {
  if (info[1] || info[0] < 2) return;
  const int64_t total = rows * d;
  for (int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
       idx += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = idx / d, t = idx % d;
    const int32_t c = y_a[r];
    if (c < 0 || c >= K || slot[c] < 0) continue;
    dv_a[idx] += (float)dm[(int64_t)c * d + t];
  }
}

/* ------------------------------------------------------------------------------------------ */
/* Sinkhorn kernels (dsc_sinkhorn)                                                            */

/* part[block] = max over a grid-stride share of (double)s[i] / eps (NaN ignored). */
__global__ static void sk_max_partial_kernel(int64_t total, const float *s, float eps,
                                             double *part) {
  __shared__ double sh[CL_THREADS];
  double mx = -INFINITY;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    const double x = (double)s[i] / (double)eps;
    if (x > mx) mx = x;
  }
  mx = block_max(mx, sh);
  if (threadIdx.x == 0) part[blockIdx.x] = mx;
}

__global__ static void sk_max_final_kernel(int nparts, const double *part, double *out) {
  __shared__ double sh[CL_THREADS];
  double mx = -INFINITY;
  for (int i = threadIdx.x; i < nparts; i += blockDim.x)
    if (part[i] > mx) mx = part[i];
  mx = block_max(mx, sh);
  if (threadIdx.x == 0) *out = mx;
}

/* q = (float)exp(s / eps - max), 0 below FLT_MIN. */
__global__ static void sk_exp_kernel(int64_t total, const float *s, float eps, const double *mx,
                                     float *q) {
  const double m = *mx;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    const float f = (float)exp((double)s[i] / (double)eps - m);
    q[i] = f < FLT_MIN ? 0.0f : f;
  }
}

/* part[block] = sum over a grid-stride share of q (double). */
__global__ static void sk_sum_partial_kernel(int64_t total, const float *q, double *part) {
  __shared__ double sh[CL_THREADS];
  double acc = 0;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x)
    acc += q[i];
  acc = block_sum(acc, sh);
  if (threadIdx.x == 0) part[blockIdx.x] = acc;
}

/* *inv = 1 / max(sum of the parts, FLT_MIN). */
__global__ static void sk_sum_final_kernel(int nparts, const double *part, double *inv) {
  __shared__ double sh[CL_THREADS];
  double acc = 0;
  for (int i = threadIdx.x; i < nparts; i += blockDim.x) acc += part[i];
  acc = block_sum(acc, sh);
  if (threadIdx.x == 0) *inv = 1.0 / (acc > FLT_MIN ? acc : FLT_MIN);
}

/* q = (float)((double)q * f), f = *fptr (device) when given, else fval. */
__global__ static void sk_scale_kernel(int64_t total, float *q, const double *fptr,
                                       double fval) {
  const double f = fptr ? *fptr : fval;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x)
    q[i] = (float)((double)q[i] * f);
}

/* Per-prototype partial sums: grid (nseg, ceil(k / CL_COLS)), CL_COLS threads; thread column
 * c sums q[r][c] over the rows r of segment blockIdx.x in row order (coalesced over c). */
__global__ static void sk_col_partial_kernel(int64_t b, int k, const float *q, double *part) {
  const int c = (int)blockIdx.y * CL_COLS + (int)threadIdx.x;
  if (c >= k) return;
  const int64_t r0 = (int64_t)blockIdx.x * SK_ROWSEG;
  const int64_t r1 = r0 + SK_ROWSEG < b ? r0 + SK_ROWSEG : b;
  double acc = 0;
  for (int64_t r = r0; r < r1; r++) acc += q[r * k + c];
  part[(int64_t)blockIdx.x * k + c] = acc;
}

/* fac[c] = 1 / (max(sum of the segments in order, FLT_MIN) * k): "Q /= rowsum(Q); Q /= K". */
__global__ static void sk_col_factor_kernel(int nseg, int k, const double *part, double *fac) {
  for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < k; c += gridDim.x * blockDim.x) {
    double s = 0;
    for (int g = 0; g < nseg; g++) s += part[(int64_t)g * k + c];
    fac[c] = 1.0 / ((s > FLT_MIN ? s : FLT_MIN) * (double)k);
  }
}

/* One warp per row: q[r][c] = (float)(q * fac[c]) (the per-prototype normalization, rounded
 * to float as the host stores it), then the row sum s in double and
 * q[r][c] = (float)(q * 1 / (max(s, FLT_MIN) * per)): "Q /= colsum(Q); Q /= B". Each lane
 * touches only its entries c = lane (mod 32). */
__global__ static void sk_row_kernel(int64_t b, int k, float *q, const double *fac, double per) {
  const int lane = threadIdx.x & 31;
  for (int64_t r = warp_id(); r < b; r += warp_count()) {
    float *row = q + r * k;
    double s = 0;
    for (int c = lane; c < k; c += 32) {
      const float x = (float)((double)row[c] * fac[c]);
      row[c] = x;
      s += x;
    }
    s = warp_sum(s);
    const double f = 1.0 / ((s > FLT_MIN ? s : FLT_MIN) * per);
    for (int c = lane; c < k; c += 32) row[c] = (float)((double)row[c] * f);
  }
}

/* ------------------------------------------------------------------------------------------ */
/* prototype-loss kernels (dsc_loss_proto)                                                    */

/* One thread per image n: the query rows of each key row c = n*p + j (those i with
 * match[n*p+i] == j), ascending, as a counting sort within the image: kcnt[c] rows at
 * klist[kstart[c] ..]. nbad[n] = number of match values outside [0, p) (left out). Every
 * thread touches only indices of its own image. */
__global__ static void pr_invert_kernel(int n, int p, const int32_t *match, int32_t *kcnt,
                                        int32_t *kstart, int32_t *klist, int32_t *nbad) {
  for (int64_t img = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; img < n;
       img += (int64_t)gridDim.x * blockDim.x) {
    const int64_t base = img * p;
    for (int j = 0; j < p; j++) kcnt[base + j] = 0;
    int bad = 0;
    for (int i = 0; i < p; i++) {
      const int32_t j = match[base + i];
      if (j < 0 || j >= p)
        bad++;
      else
        kcnt[base + j]++;
    }
    int32_t acc = (int32_t)base;
    for (int j = 0; j < p; j++) {
      kstart[base + j] = acc;
      acc += kcnt[base + j];
      kcnt[base + j] = 0;
    }
    for (int i = 0; i < p; i++) {
      const int32_t j = match[base + i];
      if (j < 0 || j >= p) continue;
      const int64_t c = base + j;
      klist[kstart[c] + kcnt[c]] = (int32_t)(base + i);
      kcnt[c]++;
    }
    nbad[img] = bad;
  }
}

/* First term, one warp per query row r with key row c = (r/p)*p + match[r]:
 *   SWAP: soft cross-entropy against q^b[c] (proto_soft_ce): loss = sigma lse - q . s / tau,
 *         grad = (sigma softmax - q) / tau * gscale;
 *   CE:   t = first argmax of q^b[c] (ce_target[r] = t), loss = lse - s_t / tau,
 *         grad = (softmax - onehot(t)) / tau * gscale (proto_hard_ce).
 * The gradient overwrites the score row (want_grad). A row with an invalid match gets loss 0,
 * a zero gradient and target 0. */
__global__ static void pr_term1_kernel(int swap, int64_t rows, int p, int k,
                                       const int32_t *match, float *sa, const float *qb,
                                       double inv_tau, double gscale, int want_grad,
                                       int32_t *ce_target, double *row_loss) {
  const int lane = threadIdx.x & 31;
  for (int64_t r = warp_id(); r < rows; r += warp_count()) {
    float *s = sa + r * k;
    const int32_t mj = match[r];
    if (mj < 0 || mj >= p) {
      if (want_grad)
        for (int c = lane; c < k; c += 32) s[c] = 0.0f;
      if (lane == 0) {
        row_loss[r] = 0;
        if (ce_target) ce_target[r] = 0;
      }
      continue;
    }
    const float *q = qb + ((r / p) * p + mj) * k;
    const double lse = warp_row_lse(s, k, inv_tau, lane);
    if (swap) {
      double sigma = 0, qs = 0;
      for (int c = lane; c < k; c += 32) {
        sigma += q[c];
        qs += (double)q[c] * ((double)s[c] * inv_tau);
      }
      sigma = warp_sum(sigma);
      qs = warp_sum(qs);
      if (want_grad) {
        for (int c = lane; c < k; c += 32) {
          const double pc = exp((double)s[c] * inv_tau - lse);
          s[c] = (float)((sigma * pc - (double)q[c]) * inv_tau * gscale);
        }
      }
      if (lane == 0) row_loss[r] = sigma * lse - qs;
    } else {
      /* first maximum within the lane's ascending entries, then the warp's: larger value,
       * or equal value and smaller index */
      float bv = 0.0f;
      int bi = -1;
      for (int c = lane; c < k; c += 32) {
        if (bi < 0 || q[c] > bv) {
          bv = q[c];
          bi = c;
        }
      }
      for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (oi >= 0 && (bi < 0 || ov > bv || (ov == bv && oi < bi))) {
          bv = ov;
          bi = oi;
        }
      }
      const int t = bi; /* k >= 1, so some lane had an entry: t >= 0 */
      const double st = (double)s[t] * inv_tau;
      __syncwarp(); /* every lane has read s[t] before the owner of t overwrites it */
      if (want_grad) {
        for (int c = lane; c < k; c += 32) {
          const double pc = exp((double)s[c] * inv_tau - lse);
          s[c] = (float)((pc - (c == t ? 1.0 : 0.0)) * inv_tau * gscale);
        }
      }
      if (lane == 0) {
        row_loss[r] = lse - st;
        if (ce_target) ce_target[r] = t;
      }
    }
  }
}

/* Second term (SWAP), one warp per key row c: the query rows r of klist (ascending) predict
 * q^a[r] from s^b[c]: loss_c = sum_r (sigma_r lse_c - q^a[r] . s^b[c] / tau), and the
 * gradient row (sum_r sigma_r softmax - sum_r q^a[r]) / tau * gscale overwrites s^b[c]
 * (want_grad); a key row no query row matches becomes 0 (loss_proto.c). */
__global__ static void pr_term2_kernel(int64_t rows, int k, const int32_t *kcnt,
                                       const int32_t *kstart, const int32_t *klist, float *sb,
                                       const float *qa, double inv_tau, double gscale,
                                       int want_grad, double *row_loss2) {
  const int lane = threadIdx.x & 31;
  for (int64_t c = warp_id(); c < rows; c += warp_count()) {
    float *s = sb + c * k;
    const int32_t cnt = kcnt[c];
    const int32_t *list = klist + kstart[c];
    if (cnt == 0) {
      for (int j = lane; j < k; j += 32) s[j] = 0.0f;
      if (lane == 0) row_loss2[c] = 0;
      continue;
    }
    const double lse = warp_row_lse(s, k, inv_tau, lane);
    double sigma = 0, lc = 0;
    for (int i = 0; i < cnt; i++) {
      const float *q = qa + (int64_t)list[i] * k;
      double sq = 0, qs = 0;
      for (int j = lane; j < k; j += 32) {
        sq += q[j];
        qs += (double)q[j] * (double)s[j] * inv_tau;
      }
      sq = warp_sum(sq);
      qs = warp_sum(qs);
      sigma += sq;
      lc += sq * lse - qs;
    }
    if (want_grad) {
      for (int j = lane; j < k; j += 32) {
        double qsum = 0;
        for (int i = 0; i < cnt; i++) qsum += qa[(int64_t)list[i] * k + j];
        const double pj = exp((double)s[j] * inv_tau - lse);
        s[j] = (float)((sigma * pj - qsum) * inv_tau * gscale);
      }
    }
    if (lane == 0) row_loss2[c] = lc;
  }
}

/* One block: *loss = (sum of row_loss [+ sum of row_loss2]) / rows, NaN when some match was
 * out of range. */
__global__ static void pr_loss_kernel(int64_t rows, int n, const double *row_loss,
                                      const double *row_loss2, const int32_t *nbad,
                                      double *loss) {
  __shared__ double sh[CL_THREADS];
  double a = 0, b2 = 0, nb = 0;
  for (int64_t r = threadIdx.x; r < rows; r += blockDim.x) {
    a += row_loss[r];
    if (row_loss2) b2 += row_loss2[r];
  }
  for (int i = threadIdx.x; i < n; i += blockDim.x) nb += (double)nbad[i];
  a = block_sum(a, sh);
  b2 = block_sum(b2, sh);
  nb = block_sum(nb, sh);
  if (threadIdx.x == 0) *loss = nb > 0 ? (double)NAN : (a + b2) / (double)rows;
}

/* ------------------------------------------------------------------------------------------ */
/* host side                                                                                  */

dsc_status *cuda_ssl_kmeans_init(dsc_backend *be, int64_t rows, int d, int k, const float *v,
                                 uint64_t seed, uint64_t step, float *centroids) {
  if (k < 1 || d < 1)
    return dsc_errorf("k-means initialization: need clusters >= 1 and dimension >= 1, got %d clusters, d %d",
                      k, d);
  if (!v || !centroids)
    return dsc_errorf("k-means initialization: v and centroids must not be NULL");
  cuda_impl *impl = cuda_impl_of(be);
  int64_t *perm = (int64_t *)malloc((size_t)k * sizeof *perm);
  if (!perm) return dsc_errorf("k-means initialization: out of memory");
  /* The host rule of dsc_kmeans_init: perm[0 .. k) are the chosen rows. */
  dsc_status *rows_st = dsc_kmeans_init_rows(rows, k, seed, step, perm);
  if (rows_st) {
    free(perm);
    return rows_st;
  }
  void *buf = NULL;
  dsc_status *st = cuda_scratch(impl, CUDA_SLOT_CLUSTER_A, (size_t)k * sizeof(int64_t), &buf);
  if (st) {
    free(perm);
    return st;
  }
  /* Stream-ordered upload (earlier work on the stream may still use the slot), then wait so
   * that the host array may be freed. */
  cudaError_t e = cudaMemcpyAsync(buf, perm, (size_t)k * sizeof(int64_t), cudaMemcpyHostToDevice,
                                  impl->stream);
  if (e == cudaSuccess) e = cudaStreamSynchronize(impl->stream);
  free(perm);
  if (e != cudaSuccess)
    return DSC_ERR_AT("CUDA error %s (%s) uploading the %d k-means initialization rows",
                      cudaGetErrorName(e), cudaGetErrorString(e), k);
  km_gather_kernel<<<cuda_blocks((size_t)k * (size_t)d, CL_THREADS), CL_THREADS, 0,
                     impl->stream>>>(k, d, (const int64_t *)buf, v, centroids);
  CUDA_LAUNCH_CHECK();
  return NULL;
}

/* Segments of the per-cluster sums over `rows` rows: *seg rows each, *S of them (>= 1). */
static void km_segments(int64_t rows, int64_t *seg, int *S) {
  int64_t sg = (rows + KM_SEG_MAX - 1) / KM_SEG_MAX;
  if (sg < KM_SEG_MIN) sg = KM_SEG_MIN;
  int64_t s = (rows + sg - 1) / sg;
  if (s < 1) s = 1;
  *seg = sg;
  *S = (int)s;
}

/* Launch the per-cluster partial sums (km_partial_sums_kernel). */
static dsc_status *km_partial_sums(cuda_impl *impl, int64_t rows, int d, int K, int S,
                                   int64_t seg, const float *v, const int32_t *labels,
                                   double *psum, int64_t *pcnt) {
  const dim3 grid((unsigned)((int64_t)K * S), (unsigned)((d + CL_COLS - 1) / CL_COLS));
  km_partial_sums_kernel<<<grid, CL_COLS, 0, impl->stream>>>(rows, d, K, S, seg, v, labels,
                                                             psum, pcnt);
  CUDA_LAUNCH_CHECK();
  return NULL;
}

dsc_status *cuda_ssl_kmeans_run(dsc_backend *be, int64_t rows, int d, int k, int iters,
                                const float *v, float *centroids, int32_t *labels,
                                int32_t *history) {
  if (k < 1 || d < 1 || iters < 1 || rows < 0)
    return dsc_errorf("k-means: need clusters >= 1, dimension >= 1, iterations >= 1 and pixels >= 0, "
                      "got %d clusters, d %d, %d iterations, %" PRId64 " pixels",
                      k, d, iters, rows);
  if (rows == 0) return NULL; /* no assignment; every cluster is empty and keeps its centroid */
  if (!v || !centroids || !labels)
    return dsc_errorf("k-means: v, centroids and labels must not be NULL");
  if ((int64_t)k * KM_SEG_MAX > (int64_t)INT_MAX)
    return dsc_errorf("k-means: %d clusters are too many for this backend", k);
  cuda_impl *impl = cuda_impl_of(be);

  int64_t chunk = KM_CHUNK_FLOATS / k;
  if (chunk < 1) chunk = 1;
  if (chunk > rows) chunk = rows;
  if (chunk > INT_MAX) chunk = INT_MAX;
  int64_t seg;
  int S;
  km_segments(rows, &seg, &S);

  void *a = NULL, *b = NULL;
  DSC_TRY(cuda_scratch(impl, CUDA_SLOT_CLUSTER_A, (size_t)chunk * (size_t)k * sizeof(float), &a));
  size_t used = 0;
  const size_t o_psum = cl_carve(&used, (size_t)k * S * d * sizeof(double));
  const size_t o_pcnt = cl_carve(&used, (size_t)k * S * sizeof(int64_t));
  DSC_TRY(cuda_scratch(impl, CUDA_SLOT_CLUSTER_B, used, &b));
  float *scores = (float *)a;
  double *psum = (double *)cl_at(b, o_psum);
  int64_t *pcnt = (int64_t *)cl_at(b, o_pcnt);

  for (int it = 0; it < iters; it++) {
    /* assignment with the centroids of the previous update (kmeans_assign) */
    for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
      const int m = (int)(rows - r0 < chunk ? rows - r0 : chunk);
      /* scores (m, k) = v[r0 .. r0+m) (m, d) * centroids^T (d, k) */
      DSC_TRY(cl_gemm(impl, 0, 1, m, k, d, 1.0f, v + r0 * d, d, centroids, d, 0.0f, scores, k));
      km_argmax_kernel<<<cuda_blocks((size_t)m, CL_THREADS), CL_THREADS, 0, impl->stream>>>(
          m, k, scores, labels + r0, history ? history + (int64_t)it * rows + r0 : NULL);
      CUDA_LAUNCH_CHECK();
    }
    /* update (kmeans_update): sums in double in row order per segment, then normalize */
    DSC_TRY(km_partial_sums(impl, rows, d, k, S, seg, v, labels, psum, pcnt));
    km_finalize_kernel<<<(unsigned)k, CL_THREADS, 0, impl->stream>>>(k, S, d, psum, pcnt, NULL,
                                                                     centroids, NULL, NULL);
    CUDA_LAUNCH_CHECK();
  }
  return NULL;
}

dsc_status *cuda_ssl_loss_kmeans(dsc_backend *be, int64_t rows, int d, int k, const float *v_a,
                                 const int32_t *y_a, const float *v_b, const int32_t *y_b,
                                 float tau, float scale, double *loss, float *dv_a,
                                 double *present) {
  if (k < 1 || d < 1 || rows < 0 || !(tau > 0))
    return dsc_errorf("L_km: need clusters >= 1, dimension >= 1, pixels >= 0 and tau > 0, got %d "
                      "clusters, d %d, %" PRId64 " pixels, tau %g",
                      k, d, rows, (double)tau);
  if (!loss) return dsc_errorf("L_km: loss must not be NULL");
  if (rows > 0 && (!v_a || !y_a || !v_b || !y_b))
    return dsc_errorf("L_km: v_a, y_a, v_b and y_b must not be NULL");
  if ((int64_t)k * KM_SEG_MAX > (int64_t)INT_MAX)
    return dsc_errorf("L_km: %d clusters are too many for this backend", k);
  cuda_impl *impl = cuda_impl_of(be);
  int64_t seg;
  int S;
  km_segments(rows, &seg, &S);
  const size_t K = (size_t)k;

  void *a = NULL, *b = NULL;
  size_t ua = 0;
  const size_t o_psa = cl_carve(&ua, K * S * d * sizeof(double));
  const size_t o_psb = cl_carve(&ua, K * S * d * sizeof(double));
  const size_t o_pca = cl_carve(&ua, K * S * sizeof(int64_t));
  const size_t o_pcb = cl_carve(&ua, K * S * sizeof(int64_t));
  DSC_TRY(cuda_scratch(impl, CUDA_SLOT_CLUSTER_A, ua, &a));
  size_t ub = 0;
  const size_t o_ea = cl_carve(&ub, K * d * sizeof(double));
  const size_t o_eb = cl_carve(&ub, K * d * sizeof(double));
  const size_t o_dm = cl_carve(&ub, K * d * sizeof(double));
  const size_t o_la = cl_carve(&ub, K * sizeof(double));
  const size_t o_G = cl_carve(&ub, K * K * sizeof(double));
  const size_t o_rl = cl_carve(&ub, K * sizeof(double));
  const size_t o_ca = cl_carve(&ub, K * sizeof(int64_t));
  const size_t o_cb = cl_carve(&ub, K * sizeof(int64_t));
  const size_t o_slot = cl_carve(&ub, K * sizeof(int));
  const size_t o_P = cl_carve(&ub, K * sizeof(int));
  const size_t o_info = cl_carve(&ub, 2 * sizeof(int));
  DSC_TRY(cuda_scratch(impl, CUDA_SLOT_CLUSTER_B, ub, &b));
  double *psa = (double *)cl_at(a, o_psa), *psb = (double *)cl_at(a, o_psb);
  int64_t *pca = (int64_t *)cl_at(a, o_pca), *pcb = (int64_t *)cl_at(a, o_pcb);
  double *ea = (double *)cl_at(b, o_ea), *eb = (double *)cl_at(b, o_eb);
  double *dm = (double *)cl_at(b, o_dm), *len_a = (double *)cl_at(b, o_la);
  double *G = (double *)cl_at(b, o_G), *rl = (double *)cl_at(b, o_rl);
  int64_t *cnt_a = (int64_t *)cl_at(b, o_ca), *cnt_b = (int64_t *)cl_at(b, o_cb);
  int *slot = (int *)cl_at(b, o_slot), *P = (int *)cl_at(b, o_P);
  int *info = (int *)cl_at(b, o_info);

  /* counts and sums per cluster of both views, then P (kmeans_cluster_means, presence) */
  DSC_TRY(km_partial_sums(impl, rows, d, k, S, seg, v_a, y_a, psa, pca));
  DSC_TRY(km_partial_sums(impl, rows, d, k, S, seg, v_b, y_b, psb, pcb));
  km_presence_kernel<<<1, CL_THREADS, 0, impl->stream>>>(rows, k, S, pca, pcb, cnt_a, cnt_b,
                                                         slot, P, info, present);
  CUDA_LAUNCH_CHECK();
  km_finalize_kernel<<<(unsigned)k, CL_THREADS, 0, impl->stream>>>(k, S, d, psa, pca, slot, NULL,
                                                                   ea, len_a);
  CUDA_LAUNCH_CHECK();
  km_finalize_kernel<<<(unsigned)k, CL_THREADS, 0, impl->stream>>>(k, S, d, psb, pcb, slot, NULL,
                                                                   eb, NULL);
  CUDA_LAUNCH_CHECK();
  /* logits, loss, dloss/dlogits */
  km_logits_kernel<<<cuda_blocks(K * K, CL_THREADS), CL_THREADS, 0, impl->stream>>>(
      k, d, info, P, ea, eb, tau, G);
  CUDA_LAUNCH_CHECK();
  km_softmax_kernel<<<1, CL_THREADS, 0, impl->stream>>>(k, info, G, rl, loss);
  CUDA_LAUNCH_CHECK();
  if (!dv_a || rows == 0) return NULL;
  /* gradient through e^a's normalization and the mean back to the rows */
  km_dmean_kernel<<<(unsigned)k, CL_THREADS, 0, impl->stream>>>(k, d, info, P, G, ea, eb, len_a,
                                                                cnt_a, tau, scale, dm);
  CUDA_LAUNCH_CHECK();
  km_scatter_kernel<<<cuda_blocks((size_t)rows * (size_t)d, CL_THREADS), CL_THREADS, 0,
                      impl->stream>>>(rows, d, k, info, y_a, slot, dm, dv_a);
  CUDA_LAUNCH_CHECK();
  return NULL;
}

/* Sinkhorn scratch (per call, from the caller's layout). */
typedef struct sk_work {
  double *part;    /* SK_RED_BLOCKS */
  double *scal;    /* 2: [0] max of S/eps, [1] 1 / max(sum, FLT_MIN) */
  double *colpart; /* nseg * k */
  double *fac;     /* k */
} sk_work;

/* codes (b, k) = sinkhorn(scores) exactly as dsc_sinkhorn (the file comment of loss_proto.c):
 * the steps in its order, each rounding to float where it stores. b >= 1, k >= 1. */
static dsc_status *sinkhorn_dev(cuda_impl *impl, int64_t b, int k, const float *scores,
                                float eps, int iters, float *codes, const sk_work *w) {
  const int64_t total = b * k;
  const unsigned eb = cuda_blocks((size_t)total, CL_THREADS);
  sk_max_partial_kernel<<<SK_RED_BLOCKS, CL_THREADS, 0, impl->stream>>>(total, scores, eps,
                                                                        w->part);
  CUDA_LAUNCH_CHECK();
  sk_max_final_kernel<<<1, CL_THREADS, 0, impl->stream>>>(SK_RED_BLOCKS, w->part, w->scal);
  CUDA_LAUNCH_CHECK();
  sk_exp_kernel<<<eb, CL_THREADS, 0, impl->stream>>>(total, scores, eps, w->scal, codes);
  CUDA_LAUNCH_CHECK();
  /* Q /= sum(Q) */
  sk_sum_partial_kernel<<<SK_RED_BLOCKS, CL_THREADS, 0, impl->stream>>>(total, codes, w->part);
  CUDA_LAUNCH_CHECK();
  sk_sum_final_kernel<<<1, CL_THREADS, 0, impl->stream>>>(SK_RED_BLOCKS, w->part, w->scal + 1);
  CUDA_LAUNCH_CHECK();
  sk_scale_kernel<<<eb, CL_THREADS, 0, impl->stream>>>(total, codes, w->scal + 1, 0.0);
  CUDA_LAUNCH_CHECK();
  const int64_t nseg = (b + SK_ROWSEG - 1) / SK_ROWSEG;
  const dim3 cgrid((unsigned)nseg, (unsigned)((k + CL_COLS - 1) / CL_COLS));
  const unsigned rb = cuda_blocks((size_t)b * 32, CL_THREADS);
  for (int it = 0; it < iters; it++) {
    /* Q /= rowsum(Q); Q /= K (per prototype, folded into the row kernel's first step) */
    sk_col_partial_kernel<<<cgrid, CL_COLS, 0, impl->stream>>>(b, k, codes, w->colpart);
    CUDA_LAUNCH_CHECK();
    sk_col_factor_kernel<<<cuda_blocks((size_t)k, CL_THREADS), CL_THREADS, 0, impl->stream>>>(
        (int)nseg, k, w->colpart, w->fac);
    CUDA_LAUNCH_CHECK();
    /* Q /= colsum(Q); Q /= B, the last "/ B" cancelled by the final "Q *= B" */
    const double per = it == iters - 1 ? 1.0 : (double)b;
    sk_row_kernel<<<rb, CL_THREADS, 0, impl->stream>>>(b, k, codes, w->fac, per);
    CUDA_LAUNCH_CHECK();
  }
  if (iters <= 0) {
    sk_scale_kernel<<<eb, CL_THREADS, 0, impl->stream>>>(total, codes, NULL, (double)b);
    CUDA_LAUNCH_CHECK();
  }
  return NULL;
}

dsc_status *cuda_ssl_loss_proto(dsc_backend *be, dsc_proto_loss_kind kind, int n, int p, int d,
                                int k, const float *v_a, const float *v_b, const int32_t *match,
                                const float *protos, float tau, float eps, int iters, float scale,
                                double *loss, float *dv_a, float *dprotos, int32_t *ce_target) {
  if (kind != DSC_PROTO_SWAP && kind != DSC_PROTO_CE)
    return dsc_errorf("prototype loss: unknown kind %d", (int)kind);
  if (n < 1 || p < 1 || d < 1 || k < 1 || !(tau > 0) || !(eps > 0) || iters < 0)
    return dsc_errorf("prototype loss: need images, pixels, dimension, prototypes >= 1, tau > 0, "
                      "eps > 0, iterations >= 0; got n %d, p %d, d %d, %d prototypes, tau %g, eps %g, "
                      "%d iterations",
                      n, p, d, k, (double)tau, (double)eps, iters);
  const int64_t rows = (int64_t)n * p;
  if (rows > 0x7fffffff)
    return dsc_errorf("prototype loss: %" PRId64 " pixels exceed the gemm's int range", rows);
  if (!v_a || !v_b || !match || !protos || !loss)
    return dsc_errorf("prototype loss: v_a, v_b, match, protos and loss must not be NULL");
  cuda_impl *impl = cuda_impl_of(be);
  const int swap = kind == DSC_PROTO_SWAP;
  const int R = (int)rows;
  const size_t rk = (size_t)rows * (size_t)k;
  const int64_t nseg = (rows + SK_ROWSEG - 1) / SK_ROWSEG;

  void *a = NULL, *b = NULL, *c = NULL, *dd = NULL;
  size_t ua = 0, ub = 0, uc = 0, ud = 0;
  const size_t o_sa = cl_carve(&ua, rk * sizeof(float));
  const size_t o_sb = cl_carve(&ua, rk * sizeof(float));
  const size_t o_qb = cl_carve(&ub, rk * sizeof(float));
  const size_t o_qa = cl_carve(&ub, swap ? rk * sizeof(float) : 0);
  const size_t o_part = cl_carve(&uc, SK_RED_BLOCKS * sizeof(double));
  const size_t o_scal = cl_carve(&uc, 2 * sizeof(double));
  const size_t o_colp = cl_carve(&uc, (size_t)nseg * (size_t)k * sizeof(double));
  const size_t o_fac = cl_carve(&uc, (size_t)k * sizeof(double));
  const size_t o_rl = cl_carve(&ud, (size_t)rows * sizeof(double));
  const size_t o_rl2 = cl_carve(&ud, (size_t)rows * sizeof(double));
  const size_t o_kcnt = cl_carve(&ud, (size_t)rows * sizeof(int32_t));
  const size_t o_kst = cl_carve(&ud, (size_t)rows * sizeof(int32_t));
  const size_t o_kl = cl_carve(&ud, (size_t)rows * sizeof(int32_t));
  const size_t o_nbad = cl_carve(&ud, (size_t)n * sizeof(int32_t));
  DSC_TRY(cuda_scratch(impl, CUDA_SLOT_CLUSTER_A, ua, &a));
  DSC_TRY(cuda_scratch(impl, CUDA_SLOT_CLUSTER_B, ub, &b));
  DSC_TRY(cuda_scratch(impl, CUDA_SLOT_CLUSTER_C, uc, &c));
  DSC_TRY(cuda_scratch(impl, CUDA_SLOT_CLUSTER_D, ud, &dd));
  float *sa = (float *)cl_at(a, o_sa), *sb = (float *)cl_at(a, o_sb);
  float *qb = (float *)cl_at(b, o_qb), *qa = swap ? (float *)cl_at(b, o_qa) : NULL;
  sk_work w;
  w.part = (double *)cl_at(c, o_part);
  w.scal = (double *)cl_at(c, o_scal);
  w.colpart = (double *)cl_at(c, o_colp);
  w.fac = (double *)cl_at(c, o_fac);
  double *row_loss = (double *)cl_at(dd, o_rl), *row_loss2 = (double *)cl_at(dd, o_rl2);
  int32_t *kcnt = (int32_t *)cl_at(dd, o_kcnt), *kstart = (int32_t *)cl_at(dd, o_kst);
  int32_t *klist = (int32_t *)cl_at(dd, o_kl), *nbad = (int32_t *)cl_at(dd, o_nbad);

  /* s^a = v_a C^T, s^b = v_b C^T: (rows, k) */
  DSC_TRY(cl_gemm(impl, 0, 1, R, k, d, 1.0f, v_a, d, protos, d, 0.0f, sa, k));
  DSC_TRY(cl_gemm(impl, 0, 1, R, k, d, 1.0f, v_b, d, protos, d, 0.0f, sb, k));
  /* codes (no gradient): q^b over the key rows, q^a (SWAP) over the query rows, both before
   * the score rows are overwritten by their gradients */
  DSC_TRY(sinkhorn_dev(impl, rows, k, sb, eps, iters, qb, &w));
  if (swap) DSC_TRY(sinkhorn_dev(impl, rows, k, sa, eps, iters, qa, &w));
  pr_invert_kernel<<<cuda_blocks((size_t)n, CL_THREADS), CL_THREADS, 0, impl->stream>>>(
      n, p, match, kcnt, kstart, klist, nbad);
  CUDA_LAUNCH_CHECK();

  const double inv_tau = 1.0 / (double)tau;
  const double gscale = (double)scale / (double)rows;
  const int want_grad = dv_a || dprotos;
  const unsigned wb = cuda_blocks((size_t)rows * 32, CL_THREADS);
  /* first term (both kinds): prediction of the key code from s^a; sa becomes its gradient */
  pr_term1_kernel<<<wb, CL_THREADS, 0, impl->stream>>>(swap, rows, p, k, match, sa, qb, inv_tau,
                                                       gscale, want_grad,
                                                       swap ? NULL : ce_target, row_loss);
  CUDA_LAUNCH_CHECK();
  /* second term (SWAP): prediction of q^a[r] from s^b[c(r)]; sb becomes its gradient */
  if (swap) {
    pr_term2_kernel<<<wb, CL_THREADS, 0, impl->stream>>>(rows, k, kcnt, kstart, klist, sb, qa,
                                                         inv_tau, gscale, want_grad, row_loss2);
    CUDA_LAUNCH_CHECK();
  }
  pr_loss_kernel<<<1, CL_THREADS, 0, impl->stream>>>(rows, n, row_loss, swap ? row_loss2 : NULL,
                                                     nbad, loss);
  CUDA_LAUNCH_CHECK();

  /* dv_a += (dloss/ds^a) C; dprotos += (dloss/ds^a)^T v_a [+ (dloss/ds^b)^T v_b] (scale and
   * 1/rows are already in the score gradients) */
  if (dv_a) DSC_TRY(cl_gemm(impl, 0, 0, R, d, k, 1.0f, sa, k, protos, d, 1.0f, dv_a, d));
  if (dprotos) {
    DSC_TRY(cl_gemm(impl, 1, 0, k, d, R, 1.0f, sa, k, v_a, d, 1.0f, dprotos, d));
    if (swap) DSC_TRY(cl_gemm(impl, 1, 0, k, d, R, 1.0f, sb, k, v_b, d, 1.0f, dprotos, d));
  }
  return NULL;
}
