/* cpu_bn.c: the CPU backend's batch normalization, hand-written OpenMP + SIMD loops
 * (conventions in cpu_ops.h and backend.h; measured against oneDNN's batch normalization
 * in docs/performance.md, "CPU ops").
 *
 * x, y, residual (n,h,w,c) NHWC. Training splits the batch into `groups` groups of n/groups
 * consecutive images, which are contiguous: group g is the pixels [g*m, (g+1)*m) with
 * m = (n/groups)*h*w (METHOD.md §5). save_mean/save_var are [groups][c], var biased.
 *
 * Why by hand: batch norm is memory-bound, and fusing the residual add and the ReLU into it
 * saves whole passes over the activations. Memory passes per call:
 *   forward train: read x (statistics), read x [+ residual], write y;
 *   backward:      read dy [+ y for the ReLU mask] + x, write dz (into dresidual when wanted)
 *                  then read dz (or dy, y) + x, write dx.
 * Statistics: each thread sums a contiguous pixel range per channel in double (sum and sum
 * of squares; var = E[x^2] - mean^2 in double is exact enough for activations, whose mean
 * is not 1e8 standard deviations away from zero), and partials are combined in thread
 * order, so results are bitwise reproducible for a fixed thread count. The normalization
 * itself is float: y = (x - mean)*scale + beta with scale = gamma/sqrt(var+eps).
 * Backward, with dz = dy masked by y > 0 when s->relu and xc = x - mean:
 *   dbeta += sum dz, dgamma += invstd*sum(dz*xc), dresidual = dz,
 *   dx = k1*dz + k2*xc + k3, k1 = gamma*invstd, k2 = -k1*invstd^2*sum(dz*xc)/m,
 *   k3 = -k1*sum(dz)/m   (the exact training gradient, coefficients in double). */
#include <math.h>
#include <omp.h>
#include <stddef.h>

#include "backend/cpu/cpu_ops.h"

/* One pixel's normalization: y = act((x - mean)*scale + beta [+ r]). Inlined with
 * constant flags so each variant becomes its own vector loop. ReLU keeps NaN. */
static inline __attribute__((always_inline)) void bn_apply_pixel(float *restrict y, const float *restrict x,
                                  const float *restrict r, const float *restrict mean,
                                  const float *restrict scale, const float *restrict beta,
                                  int C, int has_res, int relu) {
  #pragma omp simd
  for (int c = 0; c < C; c++) {
    float v = (x[c] - mean[c]) * scale[c] + beta[c];
    if (has_res) v += r[c];
    if (relu) v = v < 0.0f ? 0.0f : v;
    y[c] = v;
  }
}

/* Applies the normalization to pixels [lo, hi); mean/scale are [groups][c], group of
 * pixel p is p / m. */
static void bn_apply_range(float *y, const float *x, const float *r, const float *mean,
                           const float *scale, const float *beta, int C, size_t m, size_t lo,
                           size_t hi, int relu) {
  for (size_t p = lo; p < hi; p++) {
    const size_t g = p / m, o = p * (size_t)C;
    const float *mg = mean + g * C, *sg = scale + g * C;
    if (r && relu) bn_apply_pixel(y + o, x + o, r + o, mg, sg, beta, C, 1, 1);
    else if (r) bn_apply_pixel(y + o, x + o, r + o, mg, sg, beta, C, 1, 0);
    else if (relu) bn_apply_pixel(y + o, x + o, NULL, mg, sg, beta, C, 0, 1);
    else bn_apply_pixel(y + o, x + o, NULL, mg, sg, beta, C, 0, 0);
  }
}

/* Per-thread partial sums, shared by the forward statistics and the backward gradient
 * sums: the work buffer holds T blocks part[t][g][0..2C) of doubles (two sums per group and
 * channel), then `floats` * GC floats of per-(group, channel) coefficients. */
static dsc_status *bn_work_get(cpu_impl *impl, size_t GC, size_t floats, double **part,
                               float **coef) {
  const size_t T = (size_t)impl->threads;
  DSC_TRY(cpu_work_get(impl, T * 2 * GC * sizeof(double) + floats * GC * sizeof(float),
                       (void **)part));
  *coef = (float *)(*part + T * 2 * GC);
  return NULL;
}

/* Thread t's block of the partial sums, zeroed. */
static double *bn_part_zeroed(double *part, size_t GC, int t) {
  double *acc = part + (size_t)t * 2 * GC;
  for (size_t i = 0; i < 2 * GC; i++) acc[i] = 0.0;
  return acc;
}

/* Both sums of group g, channel c over the T threads' blocks, in thread order. */
static void bn_part_sum(const double *part, int T, int G, int C, size_t g, size_t c,
                        double *s1, double *s2) {
  double a = 0.0, b = 0.0;
  for (int u = 0; u < T; u++) {
    const double *blk = part + ((size_t)u * G + g) * 2 * C;
    a += blk[c];
    b += blk[C + c];
  }
  *s1 = a;
  *s2 = b;
}

/* Per-thread statistics: acc[g][0..C) += x, acc[g][C..2C) += x^2 over pixels [lo, hi). */
static void bn_stats_range(double *acc, const float *x, int C, size_t m, size_t lo, size_t hi) {
  for (size_t p = lo; p < hi; p++) {
    double *restrict s1 = acc + (p / m) * 2 * (size_t)C;
    double *restrict s2 = s1 + C;
    const float *restrict xp = x + p * (size_t)C;
    #pragma omp simd
    for (int c = 0; c < C; c++) {
      double v = (double)xp[c];
      s1[c] += v;
      s2[c] += v * v;
    }
  }
}

dsc_status *cpu_bn_forward_train(dsc_backend *be, const dsc_bn_shape *s, float *y,
                                 float *save_mean, float *save_var, const float *x,
                                 const float *gamma, const float *beta, const float *residual) {
  DSC_TRY(backend_check_bn_forward_train(s, y, save_mean, save_var, x, gamma, beta));
  cpu_impl *impl = cpu_impl_of(be);
  cpu_threads_enter(impl);
  const int T = impl->threads, C = s->c, G = s->groups;
  const size_t GC = (size_t)G * C, m = (size_t)(s->n / G) * s->h * s->w, P = m * G;
  double *part = NULL;
  float *mean = NULL;
  DSC_TRY(bn_work_get(impl, GC, 2, &part, &mean));
  float *scale = mean + GC;
  const double dm = (double)m, eps = (double)s->eps;
#pragma omp parallel num_threads(T)
  {
    const int t = omp_get_thread_num();
    size_t lo, hi;
    cpu_split(P, T, t, &lo, &hi);
    bn_stats_range(bn_part_zeroed(part, GC, t), x, C, m, lo, hi);
#pragma omp barrier
#pragma omp for schedule(static)
    for (size_t gc = 0; gc < GC; gc++) {
      const size_t g = gc / C, c = gc % C;
      double s1, s2;
      bn_part_sum(part, T, G, C, g, c, &s1, &s2);
      double mu = s1 / dm, var = s2 / dm - mu * mu;
      if (var < 0.0) var = 0.0;
      save_mean[gc] = (float)mu;
      save_var[gc] = (float)var;
      mean[gc] = (float)mu;
      scale[gc] = (float)((double)gamma[c] / sqrt(var + eps));
    }
    bn_apply_range(y, x, residual, mean, scale, beta, C, m, lo, hi, s->relu);
  }
  return NULL;
}

dsc_status *cpu_bn_forward_eval(dsc_backend *be, const dsc_bn_shape *s, float *y,
                                const float *x, const float *gamma, const float *beta,
                                const float *running_mean, const float *running_var,
                                const float *residual) {
  DSC_TRY(backend_check_bn_forward_eval(s, y, x, gamma, beta, running_mean, running_var));
  const int C = s->c;
  cpu_impl *impl = cpu_impl_of(be);
  cpu_threads_enter(impl);
  const int T = impl->threads;
  float *scale = NULL;
  DSC_TRY(cpu_work_get(impl, (size_t)C * sizeof *scale, (void **)&scale));
  for (int c = 0; c < C; c++)
    scale[c] = (float)((double)gamma[c] / sqrt((double)running_var[c] + (double)s->eps));
  const size_t P = (size_t)s->n * s->h * s->w;
#pragma omp parallel num_threads(T)
  {
    size_t lo, hi;
    cpu_split(P, T, omp_get_thread_num(), &lo, &hi);
    bn_apply_range(y, x, residual, running_mean, scale, beta, C, P, lo, hi, s->relu);
  }
  return NULL;
}

/* Backward pass 1 over pixels [lo, hi): acc[g][0..C) += dz, acc[g][C..2C) += dz*(x-mean);
 * dz is written to dz_out when it is not NULL. */
static inline __attribute__((always_inline)) void bn_grad_stats_pixel(double *restrict s1, double *restrict s2,
                                       float *restrict dz_out, const float *restrict dy,
                                       const float *restrict y, const float *restrict x,
                                       const float *restrict mean, int C, int relu,
                                       int store) {
  #pragma omp simd
  for (int c = 0; c < C; c++) {
    const float dz = relu ? cpu_keep_if(y[c] > 0.0f, dy[c]) : dy[c];
    if (store) dz_out[c] = dz;
    s1[c] += (double)dz;
    s2[c] += (double)dz * (double)(x[c] - mean[c]);
  }
}

static void bn_grad_stats_range(double *acc, float *dz_out, const float *dy, const float *y,
                                const float *x, const float *mean, int C, size_t m, size_t lo,
                                size_t hi, int relu) {
  for (size_t p = lo; p < hi; p++) {
    const size_t g = p / m, o = p * (size_t)C;
    double *s1 = acc + g * 2 * (size_t)C, *s2 = s1 + C;
    const float *mg = mean + g * C;
    if (relu && dz_out) bn_grad_stats_pixel(s1, s2, dz_out + o, dy + o, y + o, x + o, mg, C, 1, 1);
    else if (relu) bn_grad_stats_pixel(s1, s2, NULL, dy + o, y + o, x + o, mg, C, 1, 0);
    else if (dz_out) bn_grad_stats_pixel(s1, s2, dz_out + o, dy + o, NULL, x + o, mg, C, 0, 1);
    else bn_grad_stats_pixel(s1, s2, NULL, dy + o, NULL, x + o, mg, C, 0, 0);
  }
}

/* Backward pass 2: dx = k1*dz + k2*(x - mean) + k3, dz = dy masked by y > 0 if relu. */
static inline __attribute__((always_inline)) void bn_dx_pixel(float *restrict dx, const float *restrict dy,
                               const float *restrict y, const float *restrict x,
                               const float *restrict mean, const float *restrict k1,
                               const float *restrict k2, const float *restrict k3, int C,
                               int relu) {
  #pragma omp simd
  for (int c = 0; c < C; c++) {
    const float dz = relu ? cpu_keep_if(y[c] > 0.0f, dy[c]) : dy[c];
    dx[c] = k1[c] * dz + k2[c] * (x[c] - mean[c]) + k3[c];
  }
}

dsc_status *cpu_bn_backward(dsc_backend *be, const dsc_bn_shape *s, float *dx, float *dgamma,
                            float *dbeta, float *dresidual, const float *dy, const float *x,
                            const float *y, const float *gamma, const float *save_mean,
                            const float *save_var) {
  DSC_TRY(backend_check_bn_backward(s, dy, x, y, gamma, save_mean, save_var));
  cpu_impl *impl = cpu_impl_of(be);
  cpu_threads_enter(impl);
  const int T = impl->threads, C = s->c, G = s->groups, relu = s->relu;
  const size_t GC = (size_t)G * C, m = (size_t)(s->n / G) * s->h * s->w, P = m * G;
  double *part = NULL;
  float *k1 = NULL;
  DSC_TRY(bn_work_get(impl, GC, 3, &part, &k1));
  float *k2 = k1 + GC, *k3 = k2 + GC;
  const double dm = (double)m, eps = (double)s->eps;
#pragma omp parallel num_threads(T)
  {
    const int t = omp_get_thread_num();
    size_t lo, hi;
    cpu_split(P, T, t, &lo, &hi);
    bn_grad_stats_range(bn_part_zeroed(part, GC, t), dresidual, dy, y, x, save_mean, C, m, lo,
                        hi, relu);
#pragma omp barrier
#pragma omp single
    {
      for (int c = 0; c < C; c++) {
        double sum_dbeta = 0.0, sum_dgamma = 0.0;
        for (int g = 0; g < G; g++) {
          double s1, s2;
          bn_part_sum(part, T, G, C, (size_t)g, (size_t)c, &s1, &s2);
          const size_t gc = (size_t)g * C + c;
          double invstd = 1.0 / sqrt((double)save_var[gc] + eps);
          double kk = (double)gamma[c] * invstd;
          sum_dbeta += s1;
          sum_dgamma += s2 * invstd;
          k1[gc] = (float)kk;
          k2[gc] = (float)(-kk * invstd * invstd * s2 / dm);
          k3[gc] = (float)(-kk * s1 / dm);
        }
        if (dbeta) dbeta[c] = (float)((double)dbeta[c] + sum_dbeta);
        if (dgamma) dgamma[c] = (float)((double)dgamma[c] + sum_dgamma);
      }
    }
    /* the implicit barrier of `single` publishes k1..k3 */
    if (dx) {
      /* dz is already in dresidual when it was asked for: read it instead of dy and y. */
      const float *dzsrc = dresidual ? dresidual : dy;
      const int mask = relu && !dresidual;
      for (size_t p = lo; p < hi; p++) {
        const size_t g = p / m, o = p * (size_t)C;
        const float *mg = save_mean + g * C;
        if (mask)
          bn_dx_pixel(dx + o, dzsrc + o, y + o, x + o, mg, k1 + g * C, k2 + g * C, k3 + g * C, C, 1);
        else
          bn_dx_pixel(dx + o, dzsrc + o, NULL, x + o, mg, k1 + g * C, k2 + g * C, k3 + g * C, C, 0);
      }
    }
  }
  return NULL;
}
