/* cuda_ssl_contrast.cu: the CUDA backend's dense self-supervised ops that are not clustering
 * (src/backend/ssl_ops.h): copy, row gather, queue write, pooled key, per-row L2 norm and its
 * backward, correspondence and neighbors, InfoNCE (one or several heads) and triplet losses,
 * finiteness flag.
 *
 * Each op computes the host function of the same name (src/ssl/ssl_norm.c, ssl_match.c,
 * loss_contrast.c, ssl_host_ops.c: same formulas, tie rules, `+=` of scale * gradient, NULL
 * gradient skips, mean over rows), with these conventions:
 *  - every pointer is device memory except `heads` (a host array whose pos / loss members are
 *    device pointers); every scalar result is ONE double written to device memory;
 *  - all work is issued on impl->stream, nothing waits for the GPU;
 *  - no atomics: each reduction is a fixed-order tree (shared-memory halving with
 *    CT_THREADS threads, or a 32-lane xor butterfly), so results are bitwise reproducible on
 *    one GPU model and build. They differ from the host's sequential sums only by double
 *    rounding of the summation order (and by cuBLAS's float products in the gemms);
 *  - accumulations of norms, dot products and losses are in double, like the host's;
 *  - scratch: CUDA_SLOT_CONTRAST_A (logit chunk, similarity matrices), _B (gemm product G, row
 *    losses of triplet), _C (per-row losses and positive coefficients of InfoNCE, partial
 *    flags of nonfinite). Every op asks for its slots before launching anything.
 * Formulas: norm (METHOD.md §1), pooled key w^b, correspondence c(n,i) and enqueue (§3),
 * InfoNCE L_ins / L_pix / L_nei (§4.1-4.3), triplet L_tri (§4.4). */
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "backend/cuda/cuda_internal.h"

/* Threads per block of every kernel here (the block reductions assume exactly this). */
#define CT_THREADS 256
#define CT_WARPS (CT_THREADS / 32)
#define FULL_MASK 0xffffffffu

/* The clamp of norm (METHOD.md §1), as in ssl_norm.c. */
#define NORM_EPS 1e-12

/* InfoNCE: at most this many heads (loss_contrast.c's limit); the logit chunk holds at most
 * INFONCE_WORK floats (256 MiB) and at most INFONCE_MAX_CHUNK rows; the positives'
 * coefficients of one chunk at most INFONCE_COEF doubles (128 MiB). */
#define INFONCE_MAX_HEADS 4
#define INFONCE_WORK ((int64_t)1 << 26)
#define INFONCE_MAX_CHUNK ((int64_t)8192)
#define INFONCE_COEF ((int64_t)1 << 24)

/* match / neighbors: the similarity matrices of one batch of images hold at most this many
 * floats (256 MiB); a single image may exceed it (p*p < 2^31 is checked). */
#define SIM_WORK ((int64_t)1 << 26)

/* nonfinite: blocks of the first pass (their flags are combined by one block). */
#define NONFINITE_BLOCKS 1024u

/* ------------------------------------------------------------------------------------------ */
/* Reductions (all threads of the block / warp must call them).                                */

/* Sum over the block of one double per thread, fixed-order halving tree in `sh`
 * (CT_THREADS doubles); every thread gets the total. Ends with a barrier, so `sh` may be
 * reused at once. */
__device__ static double block_sum_double(double v, double *sh) {
  const int tid = threadIdx.x;
  sh[tid] = v;
  __syncthreads();
  for (int s = CT_THREADS / 2; s > 0; s >>= 1) {
    if (tid < s) sh[tid] += sh[tid + s];
    __syncthreads();
  }
  const double total = sh[0];
  __syncthreads();
  return total;
}

/* Maximum over the block (values compared with `>`; callers never pass NaN). */
__device__ static float block_max_float(float v, float *sh) {
  const int tid = threadIdx.x;
  sh[tid] = v;
  __syncthreads();
  for (int s = CT_THREADS / 2; s > 0; s >>= 1) {
    if (tid < s) sh[tid] = sh[tid + s] > sh[tid] ? sh[tid + s] : sh[tid];
    __syncthreads();
  }
  const float m = sh[0];
  __syncthreads();
  return m;
}

/* Sum over the 32 lanes of a warp by an xor butterfly: every lane ends with the same bits
 * (each step adds the same two partial sums, in either order, and + is commutative). */
__device__ static double warp_sum_double(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
  return v;
}

/* Dot product of two rows of d floats in double, lanes striding over the elements; every
 * lane gets the result. */
__device__ static double warp_dot(const float *a, const float *b, int d, int lane) {
  double s = 0.0;
  for (int i = lane; i < d; i += 32) s += (double)a[i] * (double)b[i];
  return warp_sum_double(s);
}

/* Warp-per-row kernels: the global warp index and the number of warps of the launch. The
 * row loop is uniform within a warp, so the shuffles always have all 32 lanes. */
__device__ static int64_t global_warp(void) {
  return ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / 32;
}
__device__ static int64_t warp_count(void) { return ((int64_t)gridDim.x * blockDim.x) / 32; }

/* ------------------------------------------------------------------------------------------ */
/* copy, gather_rows, enqueue                                                                  */

dsc_status *cuda_ssl_copy(dsc_backend *be, void *dst, const void *src, size_t bytes) {
  if (bytes == 0) return NULL;
  if (!dst || !src) return dsc_errorf("cuda_ssl_copy: NULL pointer for %zu bytes", bytes);
  cuda_impl *impl = cuda_impl_of(be);
  CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, impl->stream));
  return NULL;
}

/* One thread per 32-bit word of the output: word w of row r. */
__global__ static void gather_rows_kernel(int64_t rows, int64_t words, uint32_t *dst,
                                          int64_t dst_blk, int64_t dst_stride,
                                          const uint32_t *src, const int32_t *idx,
                                          int64_t idx_group, int64_t idx_base) {
  const int64_t total = rows * words;
  const int64_t step = (int64_t)gridDim.x * blockDim.x;
  for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += step) {
    const int64_t r = e / words, w = e % words;
    const int64_t from = (idx_group ? (r / idx_group) * idx_base : 0) + (int64_t)idx[r];
    const int64_t to = (r / dst_blk) * dst_stride + r % dst_blk;
    dst[to * words + w] = src[from * words + w];
  }
}

dsc_status *cuda_ssl_gather_rows(dsc_backend *be, int64_t rows, int64_t words, void *dst,
                                 int64_t dst_blk, int64_t dst_stride, const void *src,
                                 const int32_t *idx, int64_t idx_group, int64_t idx_base) {
  if (rows < 0 || words < 1 || dst_blk < 1 || dst_stride < 1 || idx_group < 0 || idx_base < 0)
    return dsc_errorf("cuda_ssl_gather_rows: bad shape (rows %lld, words %lld, dst_blk %lld, "
                      "dst_stride %lld, idx_group %lld, idx_base %lld)",
                      (long long)rows, (long long)words, (long long)dst_blk,
                      (long long)dst_stride, (long long)idx_group, (long long)idx_base);
  if (rows == 0) return NULL;
  if (!dst || !src || !idx) return dsc_errorf("cuda_ssl_gather_rows: NULL pointer");
  if (rows > INT64_MAX / words)
    return dsc_errorf("cuda_ssl_gather_rows: %lld rows of %lld words overflow",
                      (long long)rows, (long long)words);
  cuda_impl *impl = cuda_impl_of(be);
  gather_rows_kernel<<<cuda_blocks((size_t)(rows * words), CT_THREADS), CT_THREADS, 0,
                       impl->stream>>>(rows, words, (uint32_t *)dst, dst_blk, dst_stride,
                                       (const uint32_t *)src, idx, idx_group, idx_base);
  CUDA_LAUNCH_CHECK();
  return NULL;
}

/* One thread per queue element written: e = k*n + i (i fastest, so the writes along a queue
 * row are coalesced); queue[k*L + ptr + i] = keys[i*d + k]. */
__global__ static void enqueue_kernel(int n, int d, int64_t L, int64_t ptr, float *queue,
                                      const float *keys) {
  const int64_t total = (int64_t)n * d;
  const int64_t step = (int64_t)gridDim.x * blockDim.x;
  for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += step) {
    const int64_t k = e / n, i = e % n;
    queue[k * L + ptr + i] = keys[i * d + k];
  }
}

dsc_status *cuda_ssl_enqueue(dsc_backend *be, int n, int d, int64_t L, int64_t ptr, float *queue,
                             const float *keys) {
  if (n < 0 || d < 1 || L < 1)
    return dsc_errorf("cuda_ssl_enqueue: bad shape n = %d, d = %d, L = %lld", n, d, (long long)L);
  if (ptr < 0 || ptr + n > L)
    return dsc_errorf("cuda_ssl_enqueue: %d keys at %lld do not fit a queue of %lld", n,
                      (long long)ptr, (long long)L);
  if (n == 0) return NULL;
  if (!queue || !keys) return dsc_errorf("cuda_ssl_enqueue: NULL pointer");
  cuda_impl *impl = cuda_impl_of(be);
  enqueue_kernel<<<cuda_blocks((size_t)n * d, CT_THREADS), CT_THREADS, 0, impl->stream>>>(
      n, d, L, ptr, queue, keys);
  CUDA_LAUNCH_CHECK();
  return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* l2norm_rows, l2norm_rows_backward, pool_norm (ssl_norm.c, ssl_host_ops.c)                   */

/* A warp per row: |x_r| in double (lane-strided sums, butterfly), then y = x / max(|x|, eps).
 * Each element is read and written by the same lane, so y may alias x. */
__global__ static void l2norm_kernel(int64_t rows, int d, float *y, float *norms,
                                     const float *x) {
  const int lane = threadIdx.x & 31;
  const int64_t nw = warp_count();
  for (int64_t r = global_warp(); r < rows; r += nw) {
    const float *xr = x + r * d;
    float *yr = y + r * d;
    double ss = 0.0;
    for (int i = lane; i < d; i += 32) ss += (double)xr[i] * (double)xr[i];
    ss = warp_sum_double(ss);
    const double n = sqrt(ss);
    const double inv = 1.0 / (n > NORM_EPS ? n : NORM_EPS);
    if (norms && lane == 0) norms[r] = (float)n;
    for (int i = lane; i < d; i += 32) yr[i] = (float)((double)xr[i] * inv);
  }
}

static dsc_status *launch_l2norm(cuda_impl *impl, int64_t rows, int d, float *y, float *norms,
                                 const float *x) {
  l2norm_kernel<<<cuda_blocks((size_t)rows * 32, CT_THREADS), CT_THREADS, 0, impl->stream>>>(
      rows, d, y, norms, x);
  CUDA_LAUNCH_CHECK();
  return NULL;
}

dsc_status *cuda_ssl_l2norm_rows(dsc_backend *be, int64_t rows, int d, float *y, float *norms,
                                 const float *x) {
  if (rows < 0 || d < 1)
    return dsc_errorf("cuda_ssl_l2norm_rows: bad shape rows = %lld, d = %d", (long long)rows, d);
  if (rows == 0) return NULL;
  if (!y || !x) return dsc_errorf("cuda_ssl_l2norm_rows: NULL pointer");
  return launch_l2norm(cuda_impl_of(be), rows, d, y, norms, x);
}

/* A warp per row: dx = (dy - y (y . dy)) / |x| when |x| > eps, else dy / eps (the dot in
 * double). Each element is read and written by the same lane, so dx may alias dy. */
__global__ static void l2norm_backward_kernel(int64_t rows, int d, float *dx, const float *dy,
                                              const float *y, const float *norms) {
  const int lane = threadIdx.x & 31;
  const int64_t nw = warp_count();
  for (int64_t r = global_warp(); r < rows; r += nw) {
    const float *dyr = dy + r * d, *yr = y + r * d;
    float *dxr = dx + r * d;
    const double n = (double)norms[r];
    if (n > NORM_EPS) {
      const double dot = warp_dot(yr, dyr, d, lane);
      const double inv = 1.0 / n;
      for (int i = lane; i < d; i += 32)
        dxr[i] = (float)(((double)dyr[i] - (double)yr[i] * dot) * inv);
    } else {
      for (int i = lane; i < d; i += 32) dxr[i] = (float)((double)dyr[i] / NORM_EPS);
    }
  }
}

dsc_status *cuda_ssl_l2norm_rows_backward(dsc_backend *be, int64_t rows, int d, float *dx,
                                          const float *dy, const float *y, const float *norms) {
  if (rows < 0 || d < 1)
    return dsc_errorf("cuda_ssl_l2norm_rows_backward: bad shape rows = %lld, d = %d",
                      (long long)rows, d);
  if (rows == 0) return NULL;
  if (!dx || !dy || !y || !norms)
    return dsc_errorf("cuda_ssl_l2norm_rows_backward: NULL pointer");
  cuda_impl *impl = cuda_impl_of(be);
  l2norm_backward_kernel<<<cuda_blocks((size_t)rows * 32, CT_THREADS), CT_THREADS, 0,
                           impl->stream>>>(rows, d, dx, dy, y, norms);
  CUDA_LAUNCH_CHECK();
  return NULL;
}

/* One thread per output element (image i, channel k): the mean over the image's p rows,
 * summed in double in increasing j (the host's order, so the mean is the host's bits). */
__global__ static void pool_mean_kernel(int n, int p, int d, const float *x, float *y) {
  const int64_t total = (int64_t)n * d;
  const int64_t step = (int64_t)gridDim.x * blockDim.x;
  for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += step) {
    const int64_t i = e / d, k = e % d;
    const float *xi = x + i * p * d + k;
    double s = 0.0;
    for (int j = 0; j < p; j++) s += (double)xi[(int64_t)j * d];
    y[e] = (float)(s / p);
  }
}

dsc_status *cuda_ssl_pool_norm(dsc_backend *be, int n, int p, int d, const float *x, float *y) {
  if (n < 0 || p < 1 || d < 1)
    return dsc_errorf("cuda_ssl_pool_norm: bad shape n = %d, p = %d, d = %d", n, p, d);
  if (n == 0) return NULL;
  if (!x || !y) return dsc_errorf("cuda_ssl_pool_norm: NULL pointer");
  cuda_impl *impl = cuda_impl_of(be);
  pool_mean_kernel<<<cuda_blocks((size_t)n * d, CT_THREADS), CT_THREADS, 0, impl->stream>>>(
      n, p, d, x, y);
  CUDA_LAUNCH_CHECK();
  return launch_l2norm(impl, n, d, y, NULL, y);
}

/* ------------------------------------------------------------------------------------------ */
/* match, neighbors (ssl_match.c)                                                              */

/* Similarities are ranked by value, larger first, then by smaller index. A NaN similarity
 * (never produced by finite normalized features) ranks as -inf, so the order stays total
 * and every choice is a valid index. */
__device__ static float rank_value(float v) { return v == v ? v : -INFINITY; }
__device__ static bool ranks_before(float va, int ja, float vb, int jb) {
  return va > vb || (va == vb && ja < jb);
}

/* The best (value, index) of a warp's lane candidates (index -1: none); every lane gets it
 * (the rule is a total order, so both lanes of a pair pick the same one). */
__device__ static void warp_best(float *v, int *j) {
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(FULL_MASK, *v, o);
    const int oj = __shfl_xor_sync(FULL_MASK, *j, o);
    if (oj >= 0 && (*j < 0 || ranks_before(ov, oj, *v, *j))) {
      *v = ov;
      *j = oj;
    }
  }
}

/* A warp per similarity row r (rows of p floats at s + r*p): out[r] = the first j with the
 * largest value (the host's scan replacing on strictly larger). */
__global__ static void match_argmax_kernel(int64_t rows, int p, const float *s, int32_t *out) {
  const int lane = threadIdx.x & 31;
  const int64_t nw = warp_count();
  for (int64_t r = global_warp(); r < rows; r += nw) {
    const float *row = s + r * p;
    float bv = -INFINITY;
    int bj = -1;
    for (int j = lane; j < p; j += 32) {
      const float v = rank_value(row[j]);
      if (bj < 0 || v > bv) { /* j increases: a tie keeps the smaller index */
        bv = v;
        bj = j;
      }
    }
    warp_best(&bv, &bj);
    if (lane == 0) out[r] = bj;
  }
}

/* A warp per similarity row r = img*p + i: the k first j != i in the ranking, by k passes;
 * pass t takes the best candidate ranking after pass t-1's choice (the order is total, so
 * this lists exactly the host's sorted top-k). */
__global__ static void neighbors_topk_kernel(int64_t rows, int p, int k, const float *s,
                                             int32_t *idx) {
  const int lane = threadIdx.x & 31;
  const int64_t nw = warp_count();
  for (int64_t r = global_warp(); r < rows; r += nw) {
    const float *row = s + r * p;
    const int i = (int)(r % p);
    float pv = INFINITY;
    int pj = -1; /* the previous choice; -1 before the first pass */
    for (int t = 0; t < k; t++) {
      float bv = -INFINITY;
      int bj = -1;
      for (int j = lane; j < p; j += 32) {
        if (j == i) continue;
        const float v = rank_value(row[j]);
        if (pj >= 0 && !ranks_before(pv, pj, v, j)) continue; /* already chosen */
        if (bj < 0 || v > bv) {
          bv = v;
          bj = j;
        }
      }
      warp_best(&bv, &bj);
      if (lane == 0) idx[r * k + t] = bj;
      pv = bv;
      pj = bj;
    }
  }
}

/* Common checks of match / neighbors (ssl_match.c's match_check). */
static dsc_status *sim_check(const char *what, int n, int p, int c, const float *a,
                             const float *b, const void *out) {
  if (n < 0 || p < 1 || c < 1)
    return dsc_errorf("%s: bad shape n = %d, p = %d, c = %d (need n >= 0, p >= 1, c >= 1)", what,
                      n, p, c);
  if ((int64_t)p * p > (int64_t)INT_MAX)
    return dsc_errorf("%s: p = %d pixels is too many (p*p must fit an int)", what, p);
  if (n > 0 && (!a || !b || !out)) return dsc_errorf("%s: NULL pointer", what);
  return NULL;
}

/* Images per similarity batch, and the scratch (slot A) for that many p x p matrices. */
static dsc_status *sim_scratch(cuda_impl *impl, int n, int p, int *batch, float **s) {
  const int64_t pp = (int64_t)p * p;
  int64_t nb = SIM_WORK / pp;
  if (nb < 1) nb = 1;
  if (nb > n) nb = n;
  *batch = (int)nb;
  void *buf = NULL;
  DSC_TRY(cuda_scratch(impl, CUDA_SLOT_CONTRAST_A, (size_t)(nb * pp) * sizeof(float), &buf));
  *s = (float *)buf;
  return NULL;
}

/* S[b] (p, p) = A[b] (p, c) B[b] (p, c)^T for `nb` images (row-major, batched). */
static dsc_status *sim_batch(dsc_backend *be, int nb, int p, int c, const float *a,
                             const float *b, float *s) {
  return cuda_gemm_batched(be, 0, 1, p, p, c, 1.0f, a, c, (long long)p * c, b, c,
                           (long long)p * c, 0.0f, s, p, (long long)p * p, nb);
}

dsc_status *cuda_ssl_match(dsc_backend *be, int n, int p, int c, const float *u_a,
                           const float *u_b, int32_t *match) {
  DSC_TRY(sim_check("cuda_ssl_match", n, p, c, u_a, u_b, match));
  if (n == 0) return NULL;
  cuda_impl *impl = cuda_impl_of(be);
  int nb = 0;
  float *s = NULL;
  DSC_TRY(sim_scratch(impl, n, p, &nb, &s));
  for (int img = 0; img < n; img += nb) {
    const int cnt = n - img < nb ? n - img : nb;
    const int64_t off = (int64_t)img * p * c;
    DSC_TRY(dsc_status_wrap(sim_batch(be, cnt, p, c, u_a + off, u_b + off, s), "cuda_ssl_match"));
    const int64_t rows = (int64_t)cnt * p;
    match_argmax_kernel<<<cuda_blocks((size_t)rows * 32, CT_THREADS), CT_THREADS, 0,
                          impl->stream>>>(rows, p, s, match + (int64_t)img * p);
    CUDA_LAUNCH_CHECK();
  }
  return NULL;
}

dsc_status *cuda_ssl_neighbors(dsc_backend *be, int n, int p, int c, int k, const float *u_a,
                               int32_t *idx) {
  DSC_TRY(sim_check("cuda_ssl_neighbors", n, p, c, u_a, u_a, idx));
  if (k < 1 || k >= p)
    return dsc_errorf("cuda_ssl_neighbors: k_nei = %d must be in [1, p) with p = %d pixels per "
                      "image", k, p);
  if (n == 0) return NULL;
  cuda_impl *impl = cuda_impl_of(be);
  int nb = 0;
  float *s = NULL;
  DSC_TRY(sim_scratch(impl, n, p, &nb, &s));
  for (int img = 0; img < n; img += nb) {
    const int cnt = n - img < nb ? n - img : nb;
    const float *a = u_a + (int64_t)img * p * c;
    DSC_TRY(dsc_status_wrap(sim_batch(be, cnt, p, c, a, a, s), "cuda_ssl_neighbors"));
    const int64_t rows = (int64_t)cnt * p;
    neighbors_topk_kernel<<<cuda_blocks((size_t)rows * 32, CT_THREADS), CT_THREADS, 0,
                            impl->stream>>>(rows, p, k, s, idx + (int64_t)img * p * k);
    CUDA_LAUNCH_CHECK();
  }
  return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* Mean of per-row losses                                                                      */

/* Where the means go: out[h] receives the mean of column h. */
typedef struct loss_outs {
  double *out[INFONCE_MAX_HEADS];
} loss_outs;

/* One block per column h of v (rows, ncol): out[h][0] = sum_r v[r*ncol + h] / rows (thread-
 * strided partial sums, then the block tree). */
__global__ static void mean_rows_kernel(int64_t rows, int ncol, const double *v,
                                       const __grid_constant__ loss_outs o) {
  __shared__ double sh[CT_THREADS];
  const int h = blockIdx.x;
  if (h >= ncol) return; /* uniform per block: the whole block leaves before any barrier */
  double s = 0.0;
  for (int64_t r = threadIdx.x; r < rows; r += CT_THREADS) s += v[r * ncol + h];
  const double total = block_sum_double(s, sh);
  if (threadIdx.x == 0) o.out[h][0] = rows > 0 ? total / (double)rows : 0.0;
}

/* ------------------------------------------------------------------------------------------ */
/* InfoNCE (loss_contrast.c)                                                                   */

/* The heads as the kernels see them: positives pos[h] (rows, npos[h], d), gradient scale, and
 * off[h] = the head's first slot in a row's positive coefficients (total_pos per row). */
typedef struct infonce_dev_heads {
  int n_heads;
  int npos[INFONCE_MAX_HEADS];
  int off[INFONCE_MAX_HEADS];
  float scale[INFONCE_MAX_HEADS];
  const float *pos[INFONCE_MAX_HEADS];
} infonce_dev_heads;

/* Step 2 of loss_contrast.c for the rows [r0, r0 + cr) of one chunk, one block per row:
 *  - w (cr, L) holds the queue logits q.queue/tau (float, from the gemm);
 *  - each warp takes positives (flat index u over all heads' positives) and writes their
 *    logits pl = (q . pos) / tau in double into coef[r*total_pos + u];
 *  - mq = max of the row's queue logits; sum_q = sum_j expf(w_j - mq) (float exps summed in
 *    double, like the host's fast_exp sum); with grad, w_j = e_j;
 *  - thread 0, all in double as the host: per head m_pos, m, lse's, the row loss into
 *    loss_rows[(r0 + r)*n_heads + h], and with grad the positive coefficients
 *    softmax_all - softmax_pos over coef[.. + u] and wq = exp(mq - m)/sum_all;
 *  - with grad, w_j = e_j * (float)(sum_h scale_h wq_h): the combined softmax weights.
 * L = 0 (no queue): the queue terms vanish, as on the host. */
__global__ static void infonce_row_kernel(int cr, int64_t r0, int d, int64_t L, const float *q,
                                          float *w, double inv_tau, int grad,
                                          const __grid_constant__ infonce_dev_heads hd,
                                          int total_pos, double *coef, double *loss_rows) {
  __shared__ double shd[CT_THREADS];
  __shared__ float shf[CT_THREADS];
  __shared__ float s_factor;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  for (int r = blockIdx.x; r < cr; r += gridDim.x) {
    const int64_t row = r0 + r;
    const float *qr = q + row * d;
    float *wr = w + (int64_t)r * L;
    double *cf = coef + (int64_t)r * total_pos;

    /* positive logits (warp-uniform loop: u depends only on the warp) */
    for (int u = warp; u < total_pos; u += CT_WARPS) {
      int h = 0;
      while (h + 1 < hd.n_heads && u >= hd.off[h + 1]) h++;
      const int t = u - hd.off[h];
      const float *pt = hd.pos[h] + (row * hd.npos[h] + t) * d;
      const double dot = warp_dot(qr, pt, d, lane);
      if (lane == 0) cf[u] = dot * inv_tau;
    }

    /* queue logits: maximum, then exponentials and their sum */
    float m_loc = -INFINITY;
    for (int64_t j = tid; j < L; j += CT_THREADS) {
      const float v = wr[j];
      m_loc = v > m_loc ? v : m_loc;
    }
    const float mq = block_max_float(m_loc, shf);
    double s_loc = 0.0;
    for (int64_t j = tid; j < L; j += CT_THREADS) {
      const float e = expf(wr[j] - mq);
      if (grad) wr[j] = e;
      s_loc += (double)e;
    }
    /* its barriers also publish the warps' cf writes to thread 0 */
    const double sum_q = block_sum_double(s_loc, shd);

    if (tid == 0) {
      double wq_total = 0.0;
      for (int h = 0; h < hd.n_heads; h++) {
        double *pl = cf + hd.off[h];
        const int np = hd.npos[h];
        double m_pos = -INFINITY;
        for (int t = 0; t < np; t++)
          if (pl[t] > m_pos) m_pos = pl[t];
        const double m = (double)mq > m_pos ? (double)mq : m_pos;
        double sum_pos = 0.0, sum_all = L > 0 ? sum_q * exp((double)mq - m) : 0.0;
        for (int t = 0; t < np; t++) {
          sum_pos += exp(pl[t] - m_pos);
          sum_all += exp(pl[t] - m);
        }
        loss_rows[row * hd.n_heads + h] = (m + log(sum_all)) - (m_pos + log(sum_pos));
        if (!grad) continue;
        /* dloss/dl_j = softmax_all_j - [j positive] softmax_pos_j */
        for (int t = 0; t < np; t++)
          pl[t] = exp(pl[t] - m) / sum_all - exp(pl[t] - m_pos) / sum_pos;
        const double wq = L > 0 ? exp((double)mq - m) / sum_all : 0.0;
        wq_total += (double)hd.scale[h] * wq;
      }
      s_factor = (float)wq_total;
    }
    __syncthreads();
    if (grad) {
      const float f = s_factor;
      for (int64_t j = tid; j < L; j += CT_THREADS) wr[j] *= f;
    }
    __syncthreads(); /* s_factor and cf are rewritten by the next row */
  }
}

/* Step 4 of loss_contrast.c, one thread per element (r, i) of the chunk:
 *   dq[r0+r][i] += gbase * (G[r][i] + sum_h scale_h sum_t coef[r][off_h + t] pos_h[r0+r][t][i])
 * in double, rounded to float once (G = W queue^T; NULL when L = 0). */
__global__ static void infonce_dq_kernel(int cr, int64_t r0, int d, const float *g,
                                         const __grid_constant__ infonce_dev_heads hd,
                                         int total_pos, const double *coef, double gbase,
                                         float *dq) {
  const int64_t total = (int64_t)cr * d;
  const int64_t step = (int64_t)gridDim.x * blockDim.x;
  for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += step) {
    const int64_t r = e / d, i = e % d, row = r0 + r;
    double v = g ? (double)g[e] : 0.0;
    for (int h = 0; h < hd.n_heads; h++) {
      const int np = hd.npos[h];
      const float *pr = hd.pos[h] + row * np * d + i;
      const double *cf = coef + r * total_pos + hd.off[h];
      double vh = 0.0;
      for (int t = 0; t < np; t++) vh += cf[t] * (double)pr[(int64_t)t * d];
      v += (double)hd.scale[h] * vh;
    }
    float *o = dq + row * d + i;
    *o = (float)((double)*o + gbase * v);
  }
}

dsc_status *cuda_ssl_infonce_heads(dsc_backend *be, int64_t rows, int d, int64_t L,
                                   const float *q, const float *queue, float tau, int n_heads,
                                   const dsc_infonce_head *heads, float *dq) {
  if (n_heads < 1 || n_heads > INFONCE_MAX_HEADS || !heads)
    return dsc_errorf("cuda_ssl_infonce: %d heads (1..%d)", n_heads, INFONCE_MAX_HEADS);
  if (rows < 0 || d < 1 || L < 0)
    return dsc_errorf("cuda_ssl_infonce: bad shape rows = %lld, d = %d, L = %lld",
                      (long long)rows, d, (long long)L);
  if (L > INT_MAX)
    return dsc_errorf("cuda_ssl_infonce: queue length L = %lld is too large", (long long)L);
  if (!(tau > 0.0f))
    return dsc_errorf("cuda_ssl_infonce: temperature tau = %g must be > 0", (double)tau);
  infonce_dev_heads hd;
  memset(&hd, 0, sizeof hd);
  hd.n_heads = n_heads;
  loss_outs outs;
  memset(&outs, 0, sizeof outs);
  int64_t total_pos = 0;
  for (int h = 0; h < n_heads; h++) {
    if (!heads[h].loss) return dsc_errorf("cuda_ssl_infonce: NULL loss of head %d", h);
    if (heads[h].npos < 1)
      return dsc_errorf("cuda_ssl_infonce: bad shape npos = %d (head %d)", heads[h].npos, h);
    if (rows > 0 && !heads[h].pos)
      return dsc_errorf("cuda_ssl_infonce: NULL positives of head %d", h);
    hd.npos[h] = heads[h].npos;
    hd.off[h] = (int)total_pos;
    hd.scale[h] = heads[h].scale;
    hd.pos[h] = heads[h].pos;
    outs.out[h] = heads[h].loss;
    total_pos += heads[h].npos;
    if (total_pos > INFONCE_COEF)
      return dsc_errorf("cuda_ssl_infonce: %lld positives per row are too many",
                        (long long)total_pos);
  }
  cuda_impl *impl = cuda_impl_of(be);
  if (rows == 0) {
    for (int h = 0; h < n_heads; h++)
      CUDA_TRY(cudaMemsetAsync(heads[h].loss, 0, sizeof(double), impl->stream)); /* 0.0 */
    return NULL;
  }
  if (!q || (L > 0 && !queue)) return dsc_errorf("cuda_ssl_infonce: NULL input");

  /* chunk rows: chunk*L <= INFONCE_WORK, chunk*total_pos <= INFONCE_COEF */
  int64_t chunk = L > 0 ? INFONCE_WORK / L : INFONCE_MAX_CHUNK;
  if (chunk > INFONCE_MAX_CHUNK) chunk = INFONCE_MAX_CHUNK;
  if (chunk > INFONCE_COEF / total_pos) chunk = INFONCE_COEF / total_pos;
  if (chunk < 1) chunk = 1;
  if (chunk > rows) chunk = rows;
  const int grad = dq != NULL;

  void *buf_w = NULL, *buf_g = NULL, *buf_c = NULL;
  if (L > 0)
    DSC_TRY(cuda_scratch(impl, CUDA_SLOT_CONTRAST_A, (size_t)(chunk * L) * sizeof(float), &buf_w));
  if (L > 0 && grad)
    DSC_TRY(cuda_scratch(impl, CUDA_SLOT_CONTRAST_B, (size_t)(chunk * d) * sizeof(float), &buf_g));
  const size_t n_loss = (size_t)rows * (size_t)n_heads;
  DSC_TRY(cuda_scratch(impl, CUDA_SLOT_CONTRAST_C,
                       (n_loss + (size_t)(chunk * total_pos)) * sizeof(double), &buf_c));
  float *w = (float *)buf_w, *g = (float *)buf_g;
  double *loss_rows = (double *)buf_c; /* (rows, n_heads) */
  double *coef = loss_rows + n_loss;   /* (chunk, total_pos) */

  const double inv_tau = 1.0 / (double)tau;
  const double gbase = 1.0 / ((double)rows * (double)tau);
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int cr = (int)(rows - r0 < chunk ? rows - r0 : chunk);
    const float *qc = q + r0 * d;
    /* 1. W (cr, L) = q_chunk queue / tau */
    if (L > 0)
      DSC_TRY(dsc_status_wrap(cuda_gemm(be, 0, 0, cr, (int)L, d, (float)inv_tau, qc, d, queue,
                                        (int)L, 0.0f, w, (int)L),
                              "cuda_ssl_infonce"));
    /* 2. per-row losses, positive coefficients, softmax weights */
    infonce_row_kernel<<<(unsigned)cr, CT_THREADS, 0, impl->stream>>>(
        cr, r0, d, L, q, w, inv_tau, grad, hd, (int)total_pos, coef, loss_rows);
    CUDA_LAUNCH_CHECK();
    if (!grad) continue;
    /* 3. G (cr, d) = W queue^T */
    if (L > 0)
      DSC_TRY(dsc_status_wrap(cuda_gemm(be, 0, 1, cr, d, (int)L, 1.0f, w, (int)L, queue, (int)L,
                                        0.0f, g, d),
                              "cuda_ssl_infonce"));
    /* 4. dq += (G + positives' part) / (rows tau) */
    infonce_dq_kernel<<<cuda_blocks((size_t)cr * d, CT_THREADS), CT_THREADS, 0, impl->stream>>>(
        cr, r0, d, L > 0 ? g : NULL, hd, (int)total_pos, coef, gbase, dq);
    CUDA_LAUNCH_CHECK();
  }
  mean_rows_kernel<<<(unsigned)n_heads, CT_THREADS, 0, impl->stream>>>(rows, n_heads, loss_rows,
                                                                        outs);
  CUDA_LAUNCH_CHECK();
  return NULL;
}

dsc_status *cuda_ssl_infonce(dsc_backend *be, int64_t rows, int d, int npos, int64_t L,
                             const float *q, const float *pos, const float *queue, float tau,
                             float scale, double *loss, float *dq) {
  if (!loss) return dsc_errorf("cuda_ssl_infonce: NULL loss");
  dsc_infonce_head head;
  head.npos = npos;
  head.pos = pos;
  head.scale = scale;
  head.loss = loss;
  return cuda_ssl_infonce_heads(be, rows, d, L, q, queue, tau, 1, &head, dq);
}

/* ------------------------------------------------------------------------------------------ */
/* triplet (loss_contrast.c's dsc_loss_triplet)                                                */

/* A warp per row: qp = q.p; per neighbor t, h = q.m_t - qp + margin (dots in double, every
 * lane holds the same h, so the branches are warp-uniform); the row's sum of active hinges
 * into loss_rows[r]; with dq, per block of 64 neighbors
 *   dq_i = (float)(dq_i + gscale * (-count p_i + sum_active m_t,i))  (the host's rounding). */
__global__ static void triplet_kernel(int64_t rows, int d, int k, const float *q,
                                      const float *pos, const float *nei, double margin,
                                      double gscale, double *loss_rows, float *dq) {
  const int lane = threadIdx.x & 31;
  const int64_t nw = warp_count();
  for (int64_t r = global_warp(); r < rows; r += nw) {
    const float *qr = q + r * d, *pr = pos + r * d, *nr = nei + r * k * d;
    const double qp = warp_dot(qr, pr, d, lane);
    double total = 0.0;
    for (int t0 = 0; t0 < k; t0 += 64) {
      const int t1 = k - t0 < 64 ? k : t0 + 64;
      uint64_t active = 0;
      int count = 0;
      for (int t = t0; t < t1; t++) {
        const double qm = warp_dot(qr, nr + (int64_t)t * d, d, lane);
        const double h = qm - qp + margin;
        if (!(h > 0.0)) continue;
        total += h;
        active |= (uint64_t)1 << (t - t0);
        count++;
      }
      if (!dq || count == 0) continue;
      for (int i = lane; i < d; i += 32) {
        double v = -(double)count * (double)pr[i];
        for (int t = t0; t < t1; t++)
          if (active >> (t - t0) & 1) v += (double)nr[(int64_t)t * d + i];
        dq[r * d + i] = (float)((double)dq[r * d + i] + gscale * v);
      }
    }
    if (lane == 0) loss_rows[r] = total;
  }
}

dsc_status *cuda_ssl_triplet(dsc_backend *be, int64_t rows, int d, int k, const float *q,
                             const float *pos, const float *nei, float margin, float scale,
                             double *loss, float *dq) {
  if (rows < 0 || d < 1 || k < 0)
    return dsc_errorf("cuda_ssl_triplet: bad shape rows = %lld, d = %d, k = %d", (long long)rows,
                      d, k);
  if (!loss) return dsc_errorf("cuda_ssl_triplet: NULL loss");
  cuda_impl *impl = cuda_impl_of(be);
  if (rows == 0) {
    CUDA_TRY(cudaMemsetAsync(loss, 0, sizeof(double), impl->stream)); /* 0.0 */
    return NULL;
  }
  if (!q || !pos || (k > 0 && !nei)) return dsc_errorf("cuda_ssl_triplet: NULL input");
  void *buf = NULL;
  DSC_TRY(cuda_scratch(impl, CUDA_SLOT_CONTRAST_B, (size_t)rows * sizeof(double), &buf));
  double *loss_rows = (double *)buf;
  const double gscale = (double)scale / (double)rows;
  triplet_kernel<<<cuda_blocks((size_t)rows * 32, CT_THREADS), CT_THREADS, 0, impl->stream>>>(
      rows, d, k, q, pos, nei, (double)margin, gscale, loss_rows, dq);
  CUDA_LAUNCH_CHECK();
  loss_outs outs;
  memset(&outs, 0, sizeof outs);
  outs.out[0] = loss;
  mean_rows_kernel<<<1, CT_THREADS, 0, impl->stream>>>(rows, 1, loss_rows, outs);
  CUDA_LAUNCH_CHECK();
  return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* nonfinite                                                                                   */

/* Pass 1: part[b] = 1 when block b's grid-stride share of x holds an inf or NaN. */
__global__ static void nonfinite_part_kernel(size_t n, const float *x, int *part) {
  int bad = 0;
  const size_t step = (size_t)gridDim.x * blockDim.x;
  for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += step)
    if (!isfinite(x[e])) bad = 1;
  bad = __syncthreads_or(bad);
  if (threadIdx.x == 0) part[blockIdx.x] = bad;
}

/* Pass 2 (one block): *flag = 1.0 if any part is set, else 0.0. */
__global__ static void nonfinite_final_kernel(int nparts, const int *part, double *flag) {
  int bad = 0;
  for (int b = threadIdx.x; b < nparts; b += CT_THREADS)
    if (part[b]) bad = 1;
  bad = __syncthreads_or(bad);
  if (threadIdx.x == 0) *flag = bad ? 1.0 : 0.0;
}

dsc_status *cuda_ssl_nonfinite(dsc_backend *be, size_t n, const float *x, double *flag) {
  if (!flag) return dsc_errorf("cuda_ssl_nonfinite: NULL flag");
  if (n > 0 && !x) return dsc_errorf("cuda_ssl_nonfinite: NULL input of %zu values", n);
  cuda_impl *impl = cuda_impl_of(be);
  unsigned blocks = cuda_blocks(n, CT_THREADS);
  if (blocks > NONFINITE_BLOCKS) blocks = NONFINITE_BLOCKS;
  void *buf = NULL;
  DSC_TRY(cuda_scratch(impl, CUDA_SLOT_CONTRAST_C, (size_t)blocks * sizeof(int), &buf));
  int *part = (int *)buf;
  nonfinite_part_kernel<<<blocks, CT_THREADS, 0, impl->stream>>>(n, x, part);
  CUDA_LAUNCH_CHECK();
  nonfinite_final_kernel<<<1, CT_THREADS, 0, impl->stream>>>((int)blocks, part, flag);
  CUDA_LAUNCH_CHECK();
  return NULL;
}
