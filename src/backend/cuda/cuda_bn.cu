/* cuda_bn.cu: the CUDA backend's grouped batch normalization (conventions in cuda_internal.h
 * and backend.h; the host versions are ref_bn.c, cpu_bn.c and backend_check.c's
 * backend_bn_update_running_host).
 *
 * x, y, residual (n,h,w,c) NHWC, so the activations are P = n*h*w rows of C channels.
 * Training splits the batch into G = s->groups groups of n/G consecutive images, which are
 * the contiguous rows [g*m, (g+1)*m) with m = (n/G)*h*w (METHOD.md §5: BatchNorm behaves as on
 * the paper's 8 GPUs x 32 images). save_mean/save_var are [G][C] (group-major), var biased.
 *
 * Reductions (statistics and gradient sums), deterministic and without atomics:
 *   stage 1  grid (ceil(C/32), min(G*S, 65535)) of 32x8 blocks: threadIdx.x walks channels
 *            (a warp reads 128 consecutive bytes of a row), threadIdx.y one of 8 row lanes.
 *            Block (tile, g, s) reduces the fixed row slice s of group g: each thread sums its
 *            rows (row lane, +8, +16, ...) in order in double, then thread ty = 0 adds the 8
 *            lanes in order and writes one double partial per (g, c, s) into the CUDA_SLOT_BN
 *            scratch, laid out [g][c][s]. S (slices per group) and the rows per slice depend
 *            on the shape only (about 2048 blocks in all, at least 256 rows per slice), so the
 *            result is bitwise reproducible for a shape on one GPU model and build.
 *   stage 2  one warp per channel: for g = 0..G-1 in order, lane l sums partials s = l, l+32,
 *            ... in order, then a fixed shuffle tree gives lane 0 the total, and lane 0 derives
 *            the per-(g, c) coefficients (double) and, in the backward, the dgamma/dbeta sums
 *            over the groups in group order.
 *   stage 3  an elementwise pass, grid (ceil(C/32), rows/8 capped) of 32x8 blocks, each thread
 *            one channel, looping over the groups and grid-striding over the rows of each.
 *
 * Forward statistics: ONE pass over x, numerically safe in double by shifting: with
 * k = x[first row of the group, c], S1 = sum(x - k), S2 = sum((x - k)^2) in double,
 *   mean = k + S1/m, var = S2/m - (S1/m)^2 (clamped at 0; biased).
 * The shift removes the cancellation of the textbook E[x^2] - mean^2 when |mean| >> std, so
 * this agrees with the reference's two-pass double statistics to double rounding.
 * Normalization as ref_bn.c, in double and rounded once:
 *   y = act((float)(((double)x - mean)*scale + beta [+ residual])), scale = gamma/sqrt(var+eps),
 * act = ReLU keeping NaN and mapping -0 to 0 (ref's bn_finish). The forward normalizes with
 * the double statistics; the backward reads the saved float ones (as the host).
 * Eval: the same elementwise pass with mean = running_mean, scale = gamma/sqrt(running_var+eps)
 * (groups ignored); the result equals ref_bn.c's bit for bit. The host-only check
 * running_var + eps > 0 (backend_check_bn_forward_eval reads running_var) is NOT made here:
 * the statistics are device memory; a non-positive running_var + eps gives NaN/inf outputs.
 * Backward (ref_bn.c's formula), dz = dy zeroed where y <= 0 when s->relu (PyTorch's
 * threshold_backward; a NaN y passes dy, like ref_bn.c and relu_backward):
 *   stage 1: S1 = sum dz, S2 = sum dz*((double)x - mean) per (g, c); dresidual = dz (=).
 *   stage 2: invstd = 1/sqrt(var+eps), T = S2*invstd (= sum dz*xhat), k = gamma*invstd/m;
 *            dbeta[c] += sum_g S1, dgamma[c] += sum_g T (summed over groups in double and
 *            rounded once, as cpu_bn.c; ref_bn.c rounds after each group's add).
 *   stage 3: dx = (float)(k*(m*dz - S1 - xhat*T)), xhat = (x - mean)*invstd (=; skipped when
 *            dx is NULL; dz is read back from dresidual when that was written).
 * Running update (backend.h's formula, backend_bn_update_running_host's loop): one thread per
 * channel, in double, groups in order.
 * The host is C11 without FMA contraction; double products that feed a sum use
 * __dmul_rn/__dadd_rn/__dsub_rn so nvcc cannot fuse them: eval, running update and the
 * elementwise formulas round exactly like the host; the train forward and the backward differ
 * from ref_bn.c only through the summation order of the statistics / gradient sums (double). */
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "backend/cuda/cuda_internal.h"
#include "backend/backend_check.h"

#define BN_TX 32               /* channels per block (threadIdx.x) */
#define BN_TY 8                /* row lanes per block (threadIdx.y) */
#define BN_STATS_BLOCKS 2048   /* target stage-1 blocks over all channel tiles and groups */
#define BN_APPLY_BLOCKS 2048   /* target elementwise blocks */
#define BN_MIN_ROWS 256        /* fewest rows per stage-1 slice */
#define BN_FINISH_THREADS 256u /* stage 2: 8 warps per block, a warp per channel */

/* Launch geometry of one call; depends on the shape only. */
typedef struct bn_plan {
  int C, G;
  int64_t m;        /* rows per group */
  unsigned ctiles;  /* ceil(C / BN_TX) */
  int64_t S;        /* stage-1 row slices per group */
  int64_t rps;      /* rows per slice */
  unsigned stats_y; /* stage-1 grid.y (grid-stride over G*S) */
  unsigned apply_y; /* stage-3 grid.y (grid-stride over the rows of a group) */
} bn_plan;

static __host__ __device__ inline int64_t i64_min(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t i64_max(int64_t a, int64_t b) { return a > b ? a : b; }
static inline int64_t i64_div_ceil(int64_t a, int64_t b) { return (a + b - 1) / b; }

static bn_plan bn_plan_make(int C, int G, int64_t m) {
  bn_plan p;
  p.C = C;
  p.G = G;
  p.m = m;
  p.ctiles = (unsigned)i64_div_ceil(C, BN_TX);
  const int64_t s_target = i64_max(1, BN_STATS_BLOCKS / ((int64_t)G * p.ctiles));
  p.rps = i64_max(i64_div_ceil(m, s_target), BN_MIN_ROWS);
  p.S = i64_div_ceil(m, p.rps);
  p.stats_y = (unsigned)i64_min((int64_t)G * p.S, 65535);
  const int64_t ay = i64_min(i64_div_ceil(m, BN_TY), i64_max(1, BN_APPLY_BLOCKS / p.ctiles));
  p.apply_y = (unsigned)i64_max(1, i64_min(ay, 65535));
  return p;
}

/* ---- device helpers ---- */

/* Sum of p[0..S) over a warp: lane l adds s = l, l+32, ... in order, then a fixed shuffle
 * tree. Every lane of the warp must call it; the total is valid in lane 0. */
static __device__ double bn_warp_sum(const double *p, int64_t S, int lane) {
  double v = 0.0;
  for (int64_t s = lane; s < S; s += 32) v += p[s];
  for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  return v;
}

/* One output of the forward: act((float)((x - mu)*sc + b [+ r])), ref_bn.c's rounding. */
static __device__ __forceinline__ float bn_out(float xv, float rv, int has_res, double mu,
                                               double sc, double b, int relu) {
  double z = __dadd_rn(__dmul_rn((double)xv - mu, sc), b);
  if (has_res) z += (double)rv;
  float out = (float)z;
  if (relu && !(out > 0.0f) && !isnan(out)) out = 0.0f;
  return out;
}

/* dz = dy, zeroed where y <= 0 when masking. */
static __device__ __forceinline__ float bn_dz(float dyv, float yv, int mask) {
  return (mask && yv <= 0.0f) ? 0.0f : dyv;
}

/* One dx of the backward: (float)(k*(m*dz - s1 - xhat*t)), xhat = (x - mu)*invstd. */
static __device__ __forceinline__ float bn_dx_elem(float dz, float xv, double mu, double invstd,
                                                   double k, double dm, double s1, double t) {
  const double xhat = ((double)xv - mu) * invstd;
  double v = __dsub_rn(__dmul_rn(dm, (double)dz), s1);
  v = __dsub_rn(v, __dmul_rn(xhat, t));
  return (float)__dmul_rn(k, v);
}

/* ---- stage 1: partial sums ---- */

/* p1[(g*C + c)*S + s] = sum (x - k), p2[...] = sum (x - k)^2 over slice s of group g,
 * k = x[g*m, c]. */
static __global__ void k_bn_stats(const float *x, int64_t m, int C, int G, int64_t S,
                                  int64_t rps, double *p1, double *p2) {
  __shared__ double sh1[BN_TY][BN_TX], sh2[BN_TY][BN_TX];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int c = blockIdx.x * BN_TX + tx;
  const int active = c < C;
  const int64_t GS = (int64_t)G * S;
  for (int64_t gs = blockIdx.y; gs < GS; gs += gridDim.y) {
    const int64_t g = gs / S, s = gs - g * S;
    const int64_t r0 = s * rps, r1 = i64_min(r0 + rps, m);
    double a1 = 0.0, a2 = 0.0;
    if (active) {
      const float *xg = x + g * m * (int64_t)C + c;
      const double k = (double)xg[0];
      int64_t r = r0 + ty;
      for (; r + 3 * BN_TY < r1; r += 4 * BN_TY) {
        const float v0 = xg[r * C], v1 = xg[(r + BN_TY) * C];
        const float v2 = xg[(r + 2 * BN_TY) * C], v3 = xg[(r + 3 * BN_TY) * C];
        double d = (double)v0 - k;
        a1 += d;
        a2 += d * d;
        d = (double)v1 - k;
        a1 += d;
        a2 += d * d;
        d = (double)v2 - k;
        a1 += d;
        a2 += d * d;
        d = (double)v3 - k;
        a1 += d;
        a2 += d * d;
      }
      for (; r < r1; r += BN_TY) {
        const double d = (double)xg[r * C] - k;
        a1 += d;
        a2 += d * d;
      }
    }
    sh1[ty][tx] = a1;
    sh2[ty][tx] = a2;
    __syncthreads();
    if (ty == 0 && active) {
      double t1 = 0.0, t2 = 0.0;
      for (int j = 0; j < BN_TY; j++) {
        t1 += sh1[j][tx];
        t2 += sh2[j][tx];
      }
      const int64_t o = (g * C + c) * S + s;
      p1[o] = t1;
      p2[o] = t2;
    }
    __syncthreads(); /* sh1/sh2 are rewritten by the next slice */
  }
}

/* p1 = sum dz, p2 = sum dz*(x - mean) over slice s of group g (mean = save_mean, float);
 * dresidual = dz when not NULL. y is read only when relu. */
static __global__ void k_bn_grad_stats(const float *dy, const float *y, const float *x,
                                       const float *save_mean, float *dresidual, int64_t m,
                                       int C, int G, int64_t S, int64_t rps, int relu,
                                       double *p1, double *p2) {
  __shared__ double sh1[BN_TY][BN_TX], sh2[BN_TY][BN_TX];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int c = blockIdx.x * BN_TX + tx;
  const int active = c < C;
  const int64_t GS = (int64_t)G * S;
  for (int64_t gs = blockIdx.y; gs < GS; gs += gridDim.y) {
    const int64_t g = gs / S, s = gs - g * S;
    const int64_t r0 = s * rps, r1 = i64_min(r0 + rps, m);
    double a1 = 0.0, a2 = 0.0;
    if (active) {
      const int64_t base = g * m * (int64_t)C + c;
      const double mu = (double)save_mean[g * C + c];
      int64_t r = r0 + ty;
      for (; r + 3 * BN_TY < r1; r += 4 * BN_TY) {
        int64_t i[4];
        float dz[4], xv[4];
        for (int u = 0; u < 4; u++) i[u] = base + (r + u * BN_TY) * C;
        for (int u = 0; u < 4; u++) {
          dz[u] = bn_dz(dy[i[u]], relu ? y[i[u]] : 0.0f, relu);
          xv[u] = x[i[u]];
        }
        for (int u = 0; u < 4; u++) {
          a1 += (double)dz[u];
          a2 += (double)dz[u] * ((double)xv[u] - mu);
        }
        if (dresidual)
          for (int u = 0; u < 4; u++) dresidual[i[u]] = dz[u];
      }
      for (; r < r1; r += BN_TY) {
        const int64_t ii = base + r * C;
        const float d = bn_dz(dy[ii], relu ? y[ii] : 0.0f, relu);
        a1 += (double)d;
        a2 += (double)d * ((double)x[ii] - mu);
        if (dresidual) dresidual[ii] = d;
      }
    }
    sh1[ty][tx] = a1;
    sh2[ty][tx] = a2;
    __syncthreads();
    if (ty == 0 && active) {
      double t1 = 0.0, t2 = 0.0;
      for (int j = 0; j < BN_TY; j++) {
        t1 += sh1[j][tx];
        t2 += sh2[j][tx];
      }
      const int64_t o = (g * C + c) * S + s;
      p1[o] = t1;
      p2[o] = t2;
    }
    __syncthreads(); /* sh1/sh2 are rewritten by the next slice */
  }
}

/* ---- stage 2: per-(group, channel) coefficients ---- */

static __global__ void k_bn_stats_finish(const float *x, const float *gamma, const double *p1,
                                         const double *p2, int64_t m, int C, int G, int64_t S,
                                         double eps, float *save_mean, float *save_var,
                                         double *cmean, double *cscale) {
  const int lane = threadIdx.x & 31;
  const int64_t warp = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  const int64_t nwarps = ((int64_t)gridDim.x * blockDim.x) >> 5;
  const double dm = (double)m;
  for (int64_t c = warp; c < C; c += nwarps) /* warp-uniform: every lane reaches the shuffles */
    for (int g = 0; g < G; g++) {
      const int64_t gc = (int64_t)g * C + c;
      const double s1 = bn_warp_sum(p1 + gc * S, S, lane);
      const double s2 = bn_warp_sum(p2 + gc * S, S, lane);
      if (lane == 0) {
        const double k = (double)x[(int64_t)g * m * C + c]; /* stage 1's shift */
        const double mk = s1 / dm;
        double var = s2 / dm - mk * mk;
        if (var < 0.0) var = 0.0; /* rounding only; NaN stays NaN */
        const double mean = k + mk;
        save_mean[gc] = (float)mean;
        save_var[gc] = (float)var;
        cmean[gc] = mean;
        cscale[gc] = (double)gamma[c] / sqrt(var + eps);
      }
    }
}

static __global__ void k_bn_grad_finish(const float *gamma, const float *save_var,
                                        const double *p1, const double *p2, int64_t m, int C,
                                        int G, int64_t S, double eps, float *dgamma,
                                        float *dbeta, double *cinvstd, double *ck, double *cs1,
                                        double *ct) {
  const int lane = threadIdx.x & 31;
  const int64_t warp = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  const int64_t nwarps = ((int64_t)gridDim.x * blockDim.x) >> 5;
  const double dm = (double)m;
  for (int64_t c = warp; c < C; c += nwarps) { /* warp-uniform */
    double tot_b = 0.0, tot_g = 0.0;
    for (int g = 0; g < G; g++) {
      const int64_t gc = (int64_t)g * C + c;
      const double s1 = bn_warp_sum(p1 + gc * S, S, lane);
      const double s2 = bn_warp_sum(p2 + gc * S, S, lane);
      if (lane == 0) {
        const double invstd = 1.0 / sqrt((double)save_var[gc] + eps);
        const double t = s2 * invstd; /* sum dz*xhat */
        cinvstd[gc] = invstd;
        ck[gc] = (double)gamma[c] * invstd / dm;
        cs1[gc] = s1;
        ct[gc] = t;
        tot_b += s1;
        tot_g += t;
      }
    }
    if (lane == 0) {
      if (dbeta) dbeta[c] = (float)((double)dbeta[c] + tot_b);
      if (dgamma) dgamma[c] = (float)((double)dgamma[c] + tot_g);
    }
  }
}

/* Eval coefficients from the running statistics, one thread per channel. */
static __global__ void k_bn_eval_coef(const float *gamma, const float *running_mean,
                                      const float *running_var, int C, double eps,
                                      double *cmean, double *cscale) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  for (int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; c < C; c += stride) {
    cmean[c] = (double)running_mean[c];
    cscale[c] = (double)gamma[c] / sqrt((double)running_var[c] + eps);
  }
}

/* ---- stage 3: elementwise passes ---- */

/* y = bn_out(x, residual) with coefficients [G][C]; rows of group g are [g*m, (g+1)*m). */
static __global__ void k_bn_apply(float *y, const float *x, const float *residual,
                                  const double *cmean, const double *cscale, const float *beta,
                                  int64_t m, int C, int G, int relu) {
  const int c = blockIdx.x * BN_TX + threadIdx.x;
  if (c >= C) return; /* no barriers in this kernel */
  const int has_res = residual != NULL;
  const double b = (double)beta[c];
  const int64_t stride = (int64_t)gridDim.y * BN_TY;
  for (int g = 0; g < G; g++) {
    const double mu = cmean[(int64_t)g * C + c], sc = cscale[(int64_t)g * C + c];
    const int64_t base = (int64_t)g * m * C + c;
    int64_t r = (int64_t)blockIdx.y * BN_TY + threadIdx.y;
    for (; r + 3 * stride < m; r += 4 * stride) {
      int64_t i[4];
      float xv[4], rv[4];
      for (int u = 0; u < 4; u++) i[u] = base + (r + u * stride) * C;
      for (int u = 0; u < 4; u++) {
        xv[u] = x[i[u]];
        rv[u] = has_res ? residual[i[u]] : 0.0f;
      }
      for (int u = 0; u < 4; u++) y[i[u]] = bn_out(xv[u], rv[u], has_res, mu, sc, b, relu);
    }
    for (; r < m; r += stride) {
      const int64_t ii = base + r * C;
      y[ii] = bn_out(x[ii], has_res ? residual[ii] : 0.0f, has_res, mu, sc, b, relu);
    }
  }
}

/* dx from dz (= dzsrc masked by y <= 0 when mask) and the stage-2 coefficients. */
static __global__ void k_bn_dx(float *dx, const float *dzsrc, const float *y, const float *x,
                               const float *save_mean, const double *cinvstd, const double *ck,
                               const double *cs1, const double *ct, int64_t m, int C, int G,
                               int mask) {
  const int c = blockIdx.x * BN_TX + threadIdx.x;
  if (c >= C) return; /* no barriers in this kernel */
  const double dm = (double)m;
  const int64_t stride = (int64_t)gridDim.y * BN_TY;
  for (int g = 0; g < G; g++) {
    const int64_t gc = (int64_t)g * C + c;
    const double mu = (double)save_mean[gc], invstd = cinvstd[gc], k = ck[gc], s1 = cs1[gc],
                 t = ct[gc];
    const int64_t base = (int64_t)g * m * C + c;
    int64_t r = (int64_t)blockIdx.y * BN_TY + threadIdx.y;
    for (; r + 3 * stride < m; r += 4 * stride) {
      int64_t i[4];
      float dz[4], xv[4];
      for (int u = 0; u < 4; u++) i[u] = base + (r + u * stride) * C;
      for (int u = 0; u < 4; u++) {
        dz[u] = bn_dz(dzsrc[i[u]], mask ? y[i[u]] : 0.0f, mask);
        xv[u] = x[i[u]];
      }
      for (int u = 0; u < 4; u++) dx[i[u]] = bn_dx_elem(dz[u], xv[u], mu, invstd, k, dm, s1, t);
    }
    for (; r < m; r += stride) {
      const int64_t ii = base + r * C;
      const float dz = bn_dz(dzsrc[ii], mask ? y[ii] : 0.0f, mask);
      dx[ii] = bn_dx_elem(dz, x[ii], mu, invstd, k, dm, s1, t);
    }
  }
}

/* ---- running statistics ---- */

static __global__ void k_bn_running(int C, int G, double m, double mom, float *running_mean,
                                    float *running_var, const float *save_mean,
                                    const float *save_var) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  for (int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; c < C; c += stride) {
    double mean_avg = 0.0, var_avg = 0.0;
    for (int g = 0; g < G; g++) {
      mean_avg += (double)save_mean[(int64_t)g * C + c];
      var_avg += __dmul_rn((double)save_var[(int64_t)g * C + c], m) / (m - 1.0);
    }
    mean_avg /= G;
    var_avg /= G;
    running_mean[c] =
        (float)__dadd_rn(__dmul_rn(1.0 - mom, (double)running_mean[c]), __dmul_rn(mom, mean_avg));
    running_var[c] =
        (float)__dadd_rn(__dmul_rn(1.0 - mom, (double)running_var[c]), __dmul_rn(mom, var_avg));
  }
}

/* ---- ops ---- */

dsc_status *cuda_bn_forward_train(dsc_backend *be, const dsc_bn_shape *s, float *y,
                                  float *save_mean, float *save_var, const float *x,
                                  const float *gamma, const float *beta, const float *residual) {
  DSC_TRY(backend_check_bn_forward_train(s, y, save_mean, save_var, x, gamma, beta));
  cuda_impl *impl = cuda_impl_of(be);
  const int C = s->c, G = s->groups;
  const bn_plan p = bn_plan_make(C, G, (int64_t)(s->n / G) * s->h * s->w);
  const size_t GC = (size_t)G * C, parts = GC * (size_t)p.S;
  double *scratch = NULL;
  DSC_TRY(cuda_scratch(impl, CUDA_SLOT_BN, (2 * parts + 2 * GC) * sizeof(double),
                       (void **)&scratch));
  double *p1 = scratch, *p2 = p1 + parts, *cmean = p2 + parts, *cscale = cmean + GC;
  const dim3 block(BN_TX, BN_TY);
  k_bn_stats<<<dim3(p.ctiles, p.stats_y), block, 0, impl->stream>>>(x, p.m, C, G, p.S, p.rps,
                                                                     p1, p2);
  CUDA_LAUNCH_CHECK();
  k_bn_stats_finish<<<cuda_blocks((size_t)C * 32, BN_FINISH_THREADS), BN_FINISH_THREADS, 0,
                      impl->stream>>>(x, gamma, p1, p2, p.m, C, G, p.S, (double)s->eps,
                                      save_mean, save_var, cmean, cscale);
  CUDA_LAUNCH_CHECK();
  k_bn_apply<<<dim3(p.ctiles, p.apply_y), block, 0, impl->stream>>>(y, x, residual, cmean, cscale,
                                                                     beta, p.m, C, G, s->relu);
  CUDA_LAUNCH_CHECK();
  return NULL;
}

dsc_status *cuda_bn_forward_eval(dsc_backend *be, const dsc_bn_shape *s, float *y, const float *x,
                                 const float *gamma, const float *beta, const float *running_mean,
                                 const float *running_var, const float *residual) {
  /* backend_check_bn_forward_eval reads running_var (host memory): the shape check and the
   * pointer check only; running_var + eps > 0 is not verified on the GPU. */
  DSC_TRY(backend_check_bn("bn_forward_eval", s, 0));
  if (!y || !x || !gamma || !beta || !running_mean || !running_var)
    return dsc_errorf("bn_forward_eval: y, x, gamma, beta, running stats must not be NULL");
  cuda_impl *impl = cuda_impl_of(be);
  const int C = s->c;
  const bn_plan p = bn_plan_make(C, 1, (int64_t)s->n * s->h * s->w);
  double *scratch = NULL;
  DSC_TRY(cuda_scratch(impl, CUDA_SLOT_BN, 2 * (size_t)C * sizeof(double), (void **)&scratch));
  double *cmean = scratch, *cscale = scratch + C;
  k_bn_eval_coef<<<cuda_blocks((size_t)C, 256), 256, 0, impl->stream>>>(
      gamma, running_mean, running_var, C, (double)s->eps, cmean, cscale);
  CUDA_LAUNCH_CHECK();
  k_bn_apply<<<dim3(p.ctiles, p.apply_y), dim3(BN_TX, BN_TY), 0, impl->stream>>>(
      y, x, residual, cmean, cscale, beta, p.m, C, 1, s->relu);
  CUDA_LAUNCH_CHECK();
  return NULL;
}

dsc_status *cuda_bn_backward(dsc_backend *be, const dsc_bn_shape *s, float *dx, float *dgamma,
                             float *dbeta, float *dresidual, const float *dy, const float *x,
                             const float *y, const float *gamma, const float *save_mean,
                             const float *save_var) {
  DSC_TRY(backend_check_bn_backward(s, dy, x, y, gamma, save_mean, save_var));
  cuda_impl *impl = cuda_impl_of(be);
  const int C = s->c, G = s->groups, relu = s->relu ? 1 : 0;
  const bn_plan p = bn_plan_make(C, G, (int64_t)(s->n / G) * s->h * s->w);
  const size_t GC = (size_t)G * C, parts = GC * (size_t)p.S;
  double *scratch = NULL;
  DSC_TRY(cuda_scratch(impl, CUDA_SLOT_BN, (2 * parts + 4 * GC) * sizeof(double),
                       (void **)&scratch));
  double *p1 = scratch, *p2 = p1 + parts;
  double *cinvstd = p2 + parts, *ck = cinvstd + GC, *cs1 = ck + GC, *ct = cs1 + GC;
  const dim3 block(BN_TX, BN_TY);
  k_bn_grad_stats<<<dim3(p.ctiles, p.stats_y), block, 0, impl->stream>>>(
      dy, y, x, save_mean, dresidual, p.m, C, G, p.S, p.rps, relu, p1, p2);
  CUDA_LAUNCH_CHECK();
  k_bn_grad_finish<<<cuda_blocks((size_t)C * 32, BN_FINISH_THREADS), BN_FINISH_THREADS, 0,
                     impl->stream>>>(gamma, save_var, p1, p2, p.m, C, G, p.S, (double)s->eps,
                                     dgamma, dbeta, cinvstd, ck, cs1, ct);
  CUDA_LAUNCH_CHECK();
  if (dx) {
    /* dz is already in dresidual when it was asked for: read it instead of dy and y. */
    const float *dzsrc = dresidual ? dresidual : dy;
    const int mask = relu && !dresidual;
    k_bn_dx<<<dim3(p.ctiles, p.apply_y), block, 0, impl->stream>>>(
        dx, dzsrc, y, x, save_mean, cinvstd, ck, cs1, ct, p.m, C, G, mask);
    CUDA_LAUNCH_CHECK();
  }
  return NULL;
}

dsc_status *cuda_bn_update_running(dsc_backend *be, const dsc_bn_shape *s, float *running_mean,
                                   float *running_var, const float *save_mean,
                                   const float *save_var, float momentum) {
  DSC_TRY(backend_check_bn_update_running(s, running_mean, running_var, save_mean, save_var,
                                          momentum));
  cuda_impl *impl = cuda_impl_of(be);
  const int C = s->c, G = s->groups;
  const double m = (double)((size_t)(s->n / G) * s->h * s->w);
  k_bn_running<<<cuda_blocks((size_t)C, 256), 256, 0, impl->stream>>>(
      C, G, m, (double)momentum, running_mean, running_var, save_mean, save_var);
  CUDA_LAUNCH_CHECK();
  return NULL;
}
