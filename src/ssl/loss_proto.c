/* loss_proto.c: SwAV's Sinkhorn-Knopp codes and the prototype terms L_pm (swapped
 * prediction, dsc-pm) and L_ce (hard-code cross-entropy, dsc-ce) (spec/METHOD.md §4.6,
 * §4.7; interface in include/dsc/ssl_loss.h).
 *
 * Conventions:
 *  - Scores and codes are (rows, k) row-major floats; Sinkhorn's K x B matrix Q of SwAV is
 *    their transpose, so Q's "row sums" are sums over the rows of `codes` for one prototype
 *    and Q's "column sums" are the sums along one row of `codes`.
 *  - Sinkhorn: the maximum of S/eps, exp(S/eps - max) and every sum are in double; entries
 *    are stored as float after each step (exp results below FLT_MIN become 0). Each
 *    normalization multiplies by 1 / (max(sum, FLT_MIN) * count) computed in double; the
 *    final "Q *= B" is folded into the last column normalization (whose "/ B" it cancels).
 *  - Softmax / log-sum-exp of s / tau per row in double. With q a code row (summing to
 *    sigma, 1 up to rounding or 0 for a row Sinkhorn flushed), the cross-entropy
 *    -sum_k q_k log p_k = sigma * lse - q . s / tau and its gradient w.r.t. s is
 *    (sigma * softmax - q) / tau.
 *  - Gradients reach v_a (through s^a) and the prototypes (through s^a and, for SWAP, s^b)
 *    by be->gemm; codes are constants. Rows are independent in the per-row loops (OpenMP
 *    over rows), and the loss is summed in row order afterwards, so the result does not
 *    depend on the thread count.
 *  - Work memory: the score and code matrices (n*p, k) (Sinkhorn needs all rows at once).
 */
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dsc/ssl_loss.h"

/* q[c] *= factor for one row; the factor is computed by the caller in double. */
static void row_scale(float *q, int k, double factor) {
  for (int c = 0; c < k; c++) q[c] = (float)((double)q[c] * factor);
}

/* SwAV's "Q /= rowsum(Q); Q /= K": each prototype's codes (a column of `codes`) divided by
 * max(their sum, FLT_MIN) * K, sums in double in row order. `acc` (k doubles) makes it one
 * pass over the rows; without it (allocation failed) each prototype is summed on its own. */
static void sinkhorn_proto_normalize(int64_t b, int k, float *codes, double *acc) {
  if (!acc) {
    for (int c = 0; c < k; c++) {
      double s = 0;
      for (int64_t r = 0; r < b; r++) s += codes[(size_t)r * k + c];
      double f = 1.0 / ((s > FLT_MIN ? s : FLT_MIN) * (double)k);
      for (int64_t r = 0; r < b; r++)
        codes[(size_t)r * k + c] = (float)((double)codes[(size_t)r * k + c] * f);
    }
    return;
  }
  for (int c = 0; c < k; c++) acc[c] = 0;
  for (int64_t r = 0; r < b; r++) {
    const float *q = codes + (size_t)r * k;
    for (int c = 0; c < k; c++) acc[c] += q[c];
  }
  for (int c = 0; c < k; c++) acc[c] = 1.0 / ((acc[c] > FLT_MIN ? acc[c] : FLT_MIN) * (double)k);
#pragma omp parallel for schedule(static) if ((size_t)b * k >= ((size_t)1 << 16))
  for (int64_t r = 0; r < b; r++) {
    float *q = codes + (size_t)r * k;
    for (int c = 0; c < k; c++) q[c] = (float)((double)q[c] * acc[c]);
  }
}

void dsc_sinkhorn(int64_t b, int k, const float *scores, float eps, int iters, float *codes) {
  if (b <= 0 || k <= 0) return;
  size_t total = (size_t)b * (size_t)k;
  double mx = -INFINITY;
  for (size_t i = 0; i < total; i++) {
    double s = (double)scores[i] / (double)eps;
    if (s > mx) mx = s;
  }
  /* Q = exp(S/eps - max), flushed below FLT_MIN (rows in parallel: each entry is independent) */
#pragma omp parallel for schedule(static) if (total >= ((size_t)1 << 16))
  for (int64_t r = 0; r < b; r++) {
    for (int c = 0; c < k; c++) {
      size_t i = (size_t)r * k + c;
      float f = (float)exp((double)scores[i] / (double)eps - mx);
      codes[i] = f < FLT_MIN ? 0.0f : f;
    }
  }
  /* Q /= sum(Q) */
  double sum = 0;
  for (size_t i = 0; i < total; i++) sum += codes[i];
  double inv = 1.0 / (sum > FLT_MIN ? sum : FLT_MIN);
  for (size_t i = 0; i < total; i++) codes[i] = (float)((double)codes[i] * inv);

  double *acc = malloc((size_t)k * sizeof *acc);
  for (int it = 0; it < iters; it++) {
    sinkhorn_proto_normalize(b, k, codes, acc);
    /* "Q /= colsum(Q); Q /= B": each sample's row divided by max(its sum, FLT_MIN) * B; the
     * last iteration's "/ B" cancels the final "Q *= B" and is left out. */
    double per = it == iters - 1 ? 1.0 : (double)b;
#pragma omp parallel for schedule(static) if (total >= ((size_t)1 << 16))
    for (int64_t r = 0; r < b; r++) {
      float *q = codes + (size_t)r * k;
      double s = 0;
      for (int c = 0; c < k; c++) s += q[c];
      row_scale(q, k, 1.0 / ((s > FLT_MIN ? s : FLT_MIN) * per));
    }
  }
  free(acc);
  /* Q *= B (already folded in when there was an iteration) */
  if (iters <= 0)
    for (size_t i = 0; i < total; i++) codes[i] = (float)((double)codes[i] * (double)b);
}

/* log-sum-exp of s/tau over a row of k scores, in double. */
static double row_lse(const float *s, int k, double inv_tau) {
  double mx = -INFINITY;
  for (int c = 0; c < k; c++) {
    double x = (double)s[c] * inv_tau;
    if (x > mx) mx = x;
  }
  double se = 0;
  for (int c = 0; c < k; c++) se += exp((double)s[c] * inv_tau - mx);
  return mx + log(se);
}

/* For a score row s (k) with target code q (k): returns -sum_c q_c log softmax(s/tau)_c and,
 * when grad is not NULL, writes grad = (sigma softmax(s/tau) - q) / tau * gscale, sigma = sum q.
 * grad may alias s. */
static double proto_soft_ce(const float *s, const float *q, int k, double inv_tau, double gscale,
                            float *grad) {
  double sigma = 0, qs = 0;
  for (int c = 0; c < k; c++) {
    sigma += q[c];
    qs += (double)q[c] * ((double)s[c] * inv_tau);
  }
  double lse = row_lse(s, k, inv_tau);
  if (grad) {
    for (int c = 0; c < k; c++) {
      double p = exp((double)s[c] * inv_tau - lse);
      grad[c] = (float)((sigma * p - (double)q[c]) * inv_tau * gscale);
    }
  }
  return sigma * lse - qs;
}

/* Hard-target version: returns lse(s/tau) - s_t/tau; grad = (softmax - onehot(t)) / tau * gscale. */
static double proto_hard_ce(const float *s, int t, int k, double inv_tau, double gscale, float *grad) {
  double lse = row_lse(s, k, inv_tau);
  double st = (double)s[t] * inv_tau;
  if (grad) {
    for (int c = 0; c < k; c++) {
      double p = exp((double)s[c] * inv_tau - lse);
      grad[c] = (float)((p - (c == t ? 1.0 : 0.0)) * inv_tau * gscale);
    }
  }
  return lse - st;
}

dsc_status *dsc_loss_proto(dsc_backend *be, dsc_proto_loss_kind kind, int n, int p, int d,
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
  int64_t rows = (int64_t)n * p;
  if (rows > 0x7fffffff)
    return dsc_errorf("prototype loss: %" PRId64 " pixels exceed the gemm's int range", rows);
  for (int64_t r = 0; r < rows; r++) {
    if (match[r] < 0 || match[r] >= p)
      return dsc_errorf("prototype loss: match[%" PRId64 "] = %d outside [0, %d) pixels", r,
                        (int)match[r], p);
  }
  int swap = kind == DSC_PROTO_SWAP;
  size_t rk = (size_t)rows * k;
  float *sa = malloc(rk * sizeof *sa);
  float *sb = malloc(rk * sizeof *sb);
  float *qb = malloc(rk * sizeof *qb);
  float *qa = swap ? malloc(rk * sizeof *qa) : NULL;
  double *row_loss = malloc((size_t)rows * sizeof *row_loss);
  int64_t *first = NULL, *next = NULL;
  dsc_status *st = NULL;
  if (!sa || !sb || !qb || (swap && !qa) || !row_loss) {
    st = dsc_errorf("prototype loss: out of memory for %" PRId64 " x %d scores", rows, k);
    goto done;
  }
  int R = (int)rows;
  /* s^a = v_a C^T, s^b = v_b C^T: (rows, k) */
  st = be->gemm(be, 0, 1, R, k, d, 1.0f, v_a, d, protos, d, 0.0f, sa, k);
  if (st) goto done;
  st = be->gemm(be, 0, 1, R, k, d, 1.0f, v_b, d, protos, d, 0.0f, sb, k);
  if (st) goto done;
  dsc_sinkhorn(rows, k, sb, eps, iters, qb);
  if (swap) dsc_sinkhorn(rows, k, sa, eps, iters, qa);

  double inv_tau = 1.0 / (double)tau;
  double gscale = (double)scale / (double)rows;
  int want_grad = dv_a || dprotos;

  /* First term (both kinds): prediction of the key code from s^a; sa becomes its gradient. */
#pragma omp parallel for schedule(static) if (rk >= ((size_t)1 << 16))
  for (int64_t r = 0; r < rows; r++) {
    int64_t c = (r / p) * p + match[r];
    float *s = sa + (size_t)r * k;
    float *g = want_grad ? s : NULL;
    if (swap) {
      row_loss[r] = proto_soft_ce(s, qb + (size_t)c * k, k, inv_tau, gscale, g);
    } else {
      const float *q = qb + (size_t)c * k;
      int t = 0;
      for (int j = 1; j < k; j++)
        if (q[j] > q[t]) t = j;
      if (ce_target) ce_target[r] = t;
      row_loss[r] = proto_hard_ce(s, t, k, inv_tau, gscale, g);
    }
  }
  double total = 0;
  for (int64_t r = 0; r < rows; r++) total += row_loss[r];

  if (swap) {
    /* Second term: prediction of q^a[r] from s^b[c(r)]. Key row c collects the query rows
     * that match it (a linked list in ascending r), so its gradient row
     * sum_r (sigma_r softmax(s^b_c / tau) - q^a_r) / tau is formed once, in double, and
     * written over sb[c]. */
    first = malloc((size_t)rows * sizeof *first);
    next = malloc((size_t)rows * sizeof *next);
    if (!first || !next) {
      st = dsc_errorf("prototype loss: out of memory for %" PRId64 " pixels", rows);
      goto done;
    }
    for (int64_t c = 0; c < rows; c++) first[c] = -1;
    for (int64_t r = rows - 1; r >= 0; r--) {
      int64_t c = (r / p) * p + match[r];
      next[r] = first[c];
      first[c] = r;
    }
#pragma omp parallel for schedule(static) if (rk >= ((size_t)1 << 16))
    for (int64_t c = 0; c < rows; c++) {
      float *s = sb + (size_t)c * k;
      double lc = 0;
      if (first[c] < 0) {
        memset(s, 0, (size_t)k * sizeof *s);
      } else {
        double lse = row_lse(s, k, inv_tau);
        double sigma = 0;
        for (int64_t r = first[c]; r >= 0; r = next[r]) {
          const float *q = qa + (size_t)r * k;
          double sq = 0, qs = 0;
          for (int j = 0; j < k; j++) {
            sq += q[j];
            qs += (double)q[j] * (double)s[j] * inv_tau;
          }
          sigma += sq;
          lc += sq * lse - qs;
        }
        if (want_grad) {
          for (int j = 0; j < k; j++) {
            double qsum = 0;
            for (int64_t r = first[c]; r >= 0; r = next[r]) qsum += qa[(size_t)r * k + j];
            double pj = exp((double)s[j] * inv_tau - lse);
            s[j] = (float)((sigma * pj - qsum) * inv_tau * gscale);
          }
        }
      }
      row_loss[c] = lc;
    }
    for (int64_t c = 0; c < rows; c++) total += row_loss[c];
  }
  *loss = total / (double)rows;

  /* dv_a += (dloss/ds^a) C; dprotos += (dloss/ds^a)^T v_a [+ (dloss/ds^b)^T v_b] (scale and
   * 1/rows are already in the score gradients). */
  if (dv_a) {
    st = be->gemm(be, 0, 0, R, d, k, 1.0f, sa, k, protos, d, 1.0f, dv_a, d);
    if (st) goto done;
  }
  if (dprotos) {
    st = be->gemm(be, 1, 0, k, d, R, 1.0f, sa, k, v_a, d, 1.0f, dprotos, d);
    if (st) goto done;
    if (swap) {
      st = be->gemm(be, 1, 0, k, d, R, 1.0f, sb, k, v_b, d, 1.0f, dprotos, d);
      if (st) goto done;
    }
  }
done:
  free(sa);
  free(sb);
  free(qb);
  free(qa);
  free(row_loss);
  free(first);
  free(next);
  return st;
}
