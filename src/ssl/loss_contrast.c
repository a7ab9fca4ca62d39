/* loss_contrast.c: the contrastive loss terms with a queue of negatives (InfoNCE: L_ins,
 * L_pix, L_nei, spec/METHOD.md §4.1-4.3) and the triplet term (L_tri, §4.4), declared in
 * include/dsc/ssl_loss.h (its conventions hold: unweighted mean in *loss, scale * gradient
 * accumulated into dq, keys / positives / queue constant).
 *
 * InfoNCE never holds a rows x L logit matrix. Rows go in chunks of at most INFONCE_CHUNK
 * rows, fewer when L is large (chunk * L <= INFONCE_WORK floats, 32 MiB). Per chunk:
 *   1. W (chunk, L) = q_chunk queue / tau        (be->gemm, float)
 *   2. per row, in double: the npos positive logits (dot products of q with pos), the max
 *      m of all logits, e_j = exp(l_j - m) stored back into W as float and summed, so
 *      lse_all = m + log(sum_all e), lse_pos likewise over the positives;
 *      loss_r = lse_all - lse_pos; W_j becomes the softmax weight e_j / sum_all
 *   3. G (chunk, d) = W queue^T                   (be->gemm)
 *   4. dq_r += scale / (rows tau) * (G_r + sum_t (softmax_all_t - softmax_pos_t) pos_rt)
 * since dloss_r/dl_j = softmax_all_j - [j < npos] softmax_pos_j and dl_j/dq_r = key_j / tau.
 * Per-row work runs in an OpenMP loop over the chunk's rows; each row is computed by one
 * thread and the row losses are summed in row order afterwards, so the result depends on
 * the thread count only through the backend's gemm. */
#include <limits.h>
#include <math.h>
#include <stdlib.h>

#include "dsc/ssl_loss.h"
#include "ssl/fast_exp.h"

#define INFONCE_CHUNK 256
#define INFONCE_WORK ((int64_t)1 << 23)

/* The largest of x[0..n) (-inf when n = 0). A maximum does not depend on the order, so the
 * loop may be vectorized (omp simd). */
static float row_max(const float *x, int64_t n) {
  float m = -INFINITY;
#pragma omp simd reduction(max : m)
  for (int64_t j = 0; j < n; j++) m = x[j] > m ? x[j] : m;
  return m;
}

/* Step 2 and the positive half of step 4 for one row: w (L) holds the row's queue logits
 * on entry and, when `grad` is set, its softmax weights on exit; pl (npos) is scratch.
 * Returns loss_r; coef (npos) receives softmax_all_t - softmax_pos_t for the positives. */
static double infonce_row(int d, int npos, int64_t L, const float *q, const float *pos,
                          double inv_tau, int grad, float *w, double *pl, double *coef) {
  double m = -INFINITY;
  for (int t = 0; t < npos; t++) {
    const float *pt = pos + (size_t)t * d;
    double dot = 0.0;
    for (int i = 0; i < d; i++) dot += (double)q[i] * (double)pt[i];
    pl[t] = dot * inv_tau;
    if (pl[t] > m) m = pl[t];
  }
  const double m_pos = m;
  const float mq = row_max(w, L);
  if ((double)mq > m) m = mq;
  double sum_pos_m = 0.0; /* sum of exp(pl - m_pos) */
  for (int t = 0; t < npos; t++) sum_pos_m += exp(pl[t] - m_pos);
  double sum_all = 0.0; /* sum of exp(l - m) over all logits */
  for (int t = 0; t < npos; t++) sum_all += exp(pl[t] - m);
  /* The queue terms: exp of float arguments <= 0 (fast_exp.h, vectorized), summed in double.
   * m >= every logit, so (float)(w - m) <= 0 and the largest term is 1. */
  const float mf = (float)m;
  double sum_q = 0.0;
  if (!grad) {
#pragma omp simd reduction(+ : sum_q)
    for (int64_t j = 0; j < L; j++) sum_q += (double)dsc_fast_exp_nonpos(w[j] - mf);
    sum_all += sum_q * exp((double)mf - m);
    return (m + log(sum_all)) - (m_pos + log(sum_pos_m));
  }
#pragma omp simd reduction(+ : sum_q)
  for (int64_t j = 0; j < L; j++) {
    const float e = dsc_fast_exp_nonpos(w[j] - mf);
    w[j] = e;
    sum_q += (double)e;
  }
  /* exp(w - mf) = exp(w - m) * exp(m - mf): the rounding of m to float cancels exactly. */
  const double corr = exp((double)mf - m);
  sum_all += sum_q * corr;
  const double inv_all = 1.0 / sum_all;
  const float wscale = (float)(corr * inv_all);
#pragma omp simd
  for (int64_t j = 0; j < L; j++) w[j] *= wscale;
  for (int t = 0; t < npos; t++)
    coef[t] = exp(pl[t] - m) * inv_all - exp(pl[t] - m_pos) / sum_pos_m;
  return (m + log(sum_all)) - (m_pos + log(sum_pos_m));
}

dsc_status *dsc_loss_infonce(dsc_backend *be, int64_t rows, int d, int npos, int64_t L,
                             const float *q, const float *pos, const float *queue, float tau,
                             float scale, double *loss, float *dq) {
  if (!loss) return dsc_errorf("dsc_loss_infonce: NULL loss");
  *loss = 0.0;
  if (rows < 0 || d < 1 || npos < 1 || L < 0)
    return dsc_errorf("dsc_loss_infonce: bad shape rows = %lld, d = %d, npos = %d, L = %lld",
                      (long long)rows, d, npos, (long long)L);
  if (L > INT_MAX) return dsc_errorf("dsc_loss_infonce: queue length L = %lld is too large",
                                     (long long)L);
  if (!(tau > 0.0f)) return dsc_errorf("dsc_loss_infonce: temperature tau = %g must be > 0",
                                       (double)tau);
  if (rows == 0) return NULL;
  if (!q || !pos || (L > 0 && (!queue || !be || !be->gemm)))
    return dsc_errorf("dsc_loss_infonce: NULL input");

  int64_t chunk = L > 0 ? INFONCE_WORK / L : INFONCE_CHUNK;
  if (chunk > INFONCE_CHUNK) chunk = INFONCE_CHUNK;
  if (chunk < 1) chunk = 1;
  if (chunk > rows) chunk = rows;
  const double inv_tau = 1.0 / (double)tau;
  const double gscale = (double)scale / ((double)rows * (double)tau);

  float *w = malloc((size_t)(chunk * (L > 0 ? L : 1)) * sizeof(float));
  float *g = malloc((size_t)chunk * d * sizeof(float));
  double *pl = malloc((size_t)chunk * npos * sizeof(double));
  double *coef = malloc((size_t)chunk * npos * sizeof(double));
  double *lr = malloc((size_t)chunk * sizeof(double));
  dsc_status *st = NULL;
  if (!w || !g || !pl || !coef || !lr)
    st = dsc_errorf("dsc_loss_infonce: out of memory for a %lld x %lld work buffer",
                    (long long)chunk, (long long)L);
  double total = 0.0;
  for (int64_t r0 = 0; r0 < rows && !st; r0 += chunk) {
    const int cr = (int)(rows - r0 < chunk ? rows - r0 : chunk);
    const float *qc = q + (size_t)r0 * d;
    const float *pc = pos + (size_t)r0 * npos * d;
    if (L > 0) {
      st = be->gemm(be, 0, 0, cr, (int)L, d, (float)inv_tau, qc, d, queue, (int)L, 0.0f, w,
                    (int)L);
      if (st) break;
    }
#pragma omp parallel for schedule(static)
    for (int r = 0; r < cr; r++)
      lr[r] = infonce_row(d, npos, L, qc + (size_t)r * d, pc + (size_t)r * npos * d, inv_tau,
                          dq != NULL, w + (size_t)r * L, pl + (size_t)r * npos,
                          coef + (size_t)r * npos);
    for (int r = 0; r < cr; r++) total += lr[r];
    if (!dq) continue;
    if (L > 0) {
      st = be->gemm(be, 0, 1, cr, d, (int)L, 1.0f, w, (int)L, queue, (int)L, 0.0f, g, d);
      if (st) break;
    }
#pragma omp parallel for schedule(static)
    for (int r = 0; r < cr; r++) {
      const float *pr = pc + (size_t)r * npos * d;
      const double *cf = coef + (size_t)r * npos;
      float *dqr = dq + (size_t)(r0 + r) * d;
      for (int i = 0; i < d; i++) {
        double v = L > 0 ? (double)g[(size_t)r * d + i] : 0.0;
        for (int t = 0; t < npos; t++) v += cf[t] * (double)pr[(size_t)t * d + i];
        dqr[i] = (float)((double)dqr[i] + gscale * v);
      }
    }
  }
  free(lr);
  free(coef);
  free(pl);
  free(g);
  free(w);
  if (st) return dsc_status_wrap(st, "dsc_loss_infonce");
  *loss = total / (double)rows;
  return NULL;
}

void dsc_loss_triplet(int64_t rows, int d, int k, const float *q, const float *pos,
                      const float *nei, float margin, float scale, double *loss, float *dq) {
  /* delta(q,p) - delta(q,m) + margin = q.m - q.p + margin; while positive its gradient
   * with respect to q is m - p. The neighbors go in blocks of 64 with a bit mask of the
   * active hinges, so each dq element is rounded to float once per block (once for the
   * usual k <= 64). */
  double total = 0.0;
  const double gscale = rows > 0 ? (double)scale / (double)rows : 0.0;
  for (int64_t r = 0; r < rows; r++) {
    const float *qr = q + r * d, *pr = pos + r * d, *nr = nei + r * k * d;
    double qp = 0.0;
    for (int i = 0; i < d; i++) qp += (double)qr[i] * (double)pr[i];
    for (int t0 = 0; t0 < k; t0 += 64) {
      const int t1 = k - t0 < 64 ? k : t0 + 64;
      uint64_t active = 0;
      int count = 0;
      for (int t = t0; t < t1; t++) {
        const float *mt = nr + (int64_t)t * d;
        double qm = 0.0;
        for (int i = 0; i < d; i++) qm += (double)qr[i] * (double)mt[i];
        const double h = qm - qp + (double)margin;
        if (!(h > 0.0)) continue;
        total += h;
        active |= (uint64_t)1 << (t - t0);
        count++;
      }
      if (!dq || count == 0) continue;
      for (int i = 0; i < d; i++) {
        double v = -(double)count * (double)pr[i];
        for (int t = t0; t < t1; t++)
          if (active >> (t - t0) & 1) v += (double)nr[(int64_t)t * d + i];
        dq[r * d + i] = (float)((double)dq[r * d + i] + gscale * v);
      }
    }
  }
  *loss = rows > 0 ? total / (double)rows : 0.0;
}
