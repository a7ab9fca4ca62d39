/* loss_contrast.c: the contrastive loss terms with a queue of negatives (InfoNCE: L_ins,
 * L_pix, L_nei, spec/METHOD.md §4.1-4.3) and the triplet term (L_tri, §4.4), declared in
 * include/dsc/ssl_loss.h (its conventions hold: unweighted mean in *loss, scale * gradient
 * accumulated into dq, keys / positives / queue constant).
 *
 * InfoNCE never holds a rows x L logit matrix. Rows go in chunks of at most INFONCE_CHUNK
 * rows, fewer when L is large (chunk * L <= INFONCE_WORK floats, 32 MiB). Per chunk:
 *   1. W (chunk, L) = q_chunk queue / tau        (be->gemm, float)
 *   2. per row: e_j = exp(l_j - mq) relative to the queue logits' maximum mq (float, fast_exp.h,
 *      summed in double); then per head, in double, the npos positive logits (dot products of q
 *      with pos), the maximum m of all the head's logits, lse_all = m + log(sum of exp(l - m)),
 *      lse_pos likewise over the positives, loss_r = lse_all - lse_pos; W_j becomes
 *      sum_h scale_h e_j exp(mq - m_h) / sum_all_h (the heads' softmax weights, combined)
 *   3. G (chunk, d) = W queue^T                   (be->gemm, once for all heads)
 *   4. dq_r += (G_r + sum_h scale_h sum_t (softmax_all_t - softmax_pos_t) pos_hrt) / (rows tau)
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

#define INFONCE_MAX_HEADS 4

/* One head's positives for one row: their logits pl (npos) and, after infonce_row, the
 * coefficients coef (npos) of the positive half of step 4. */
typedef struct row_head {
  int npos;
  const float *pos; /* (npos, d) */
  double *pl, *coef;
  double loss, wq;  /* the row's loss; the weight of e_j in this head's queue softmax */
} row_head;

/* Step 2 for one row and every head: w (L) holds the row's queue logits on entry and, when
 * `grad` is set, sum_h scale_h * softmax_h(queue logits) on exit. The queue exponentials are
 * taken once, relative to the queue's own maximum mq (e_j = exp(w_j - mq) <= 1, in float by
 * fast_exp.h, summed in double); each head then combines them with its positives in double,
 * relative to its own maximum, so no head's terms are lost to underflow whatever the others
 * hold. */
static void infonce_row(int d, int64_t L, const float *q, double inv_tau, int grad, float *w,
                        int n_heads, row_head *hd, const float *scale) {
  const float mq = L > 0 ? row_max(w, L) : -INFINITY;
  double sum_q = 0.0; /* sum of exp(w_j - mq) */
  if (L > 0) {
    if (grad) {
#pragma omp simd reduction(+ : sum_q)
      for (int64_t j = 0; j < L; j++) {
        const float e = dsc_fast_exp_nonpos(w[j] - mq);
        w[j] = e;
        sum_q += (double)e;
      }
    } else {
#pragma omp simd reduction(+ : sum_q)
      for (int64_t j = 0; j < L; j++) sum_q += (double)dsc_fast_exp_nonpos(w[j] - mq);
    }
  }
  double wq_total = 0.0;
  for (int h = 0; h < n_heads; h++) {
    row_head *r = &hd[h];
    double m_pos = -INFINITY;
    for (int t = 0; t < r->npos; t++) {
      const float *pt = r->pos + (size_t)t * d;
      double dot = 0.0;
      for (int i = 0; i < d; i++) dot += (double)q[i] * (double)pt[i];
      r->pl[t] = dot * inv_tau;
      if (r->pl[t] > m_pos) m_pos = r->pl[t];
    }
    const double m = (double)mq > m_pos ? (double)mq : m_pos;
    double sum_pos = 0.0, sum_all = L > 0 ? sum_q * exp((double)mq - m) : 0.0;
    for (int t = 0; t < r->npos; t++) {
      sum_pos += exp(r->pl[t] - m_pos);
      sum_all += exp(r->pl[t] - m);
    }
    r->loss = (m + log(sum_all)) - (m_pos + log(sum_pos));
    if (!grad) continue;
    /* dloss/dl_j = softmax_all_j - [j positive] softmax_pos_j */
    for (int t = 0; t < r->npos; t++)
      r->coef[t] = exp(r->pl[t] - m) / sum_all - exp(r->pl[t] - m_pos) / sum_pos;
    r->wq = L > 0 ? exp((double)mq - m) / sum_all : 0.0;
    wq_total += (double)scale[h] * r->wq;
  }
  if (grad && L > 0) {
    const float f = (float)wq_total;
#pragma omp simd
    for (int64_t j = 0; j < L; j++) w[j] *= f;
  }
}

dsc_status *dsc_loss_infonce_heads(dsc_backend *be, int64_t rows, int d, int64_t L,
                                   const float *q, const float *queue, float tau, int n_heads,
                                   const dsc_infonce_head *heads, float *dq) {
  if (n_heads < 1 || n_heads > INFONCE_MAX_HEADS || !heads)
    return dsc_errorf("dsc_loss_infonce: %d heads (1..%d)", n_heads, INFONCE_MAX_HEADS);
  int max_pos = 0;
  for (int h = 0; h < n_heads; h++) {
    if (!heads[h].loss) return dsc_errorf("dsc_loss_infonce: NULL loss");
    *heads[h].loss = 0.0;
    if (heads[h].npos < 1) return dsc_errorf("dsc_loss_infonce: bad shape npos = %d", heads[h].npos);
    if (rows > 0 && !heads[h].pos) return dsc_errorf("dsc_loss_infonce: NULL input");
    if (heads[h].npos > max_pos) max_pos = heads[h].npos;
  }
  if (rows < 0 || d < 1 || L < 0)
    return dsc_errorf("dsc_loss_infonce: bad shape rows = %lld, d = %d, L = %lld",
                      (long long)rows, d, (long long)L);
  if (L > INT_MAX) return dsc_errorf("dsc_loss_infonce: queue length L = %lld is too large",
                                     (long long)L);
  if (!(tau > 0.0f)) return dsc_errorf("dsc_loss_infonce: temperature tau = %g must be > 0",
                                       (double)tau);
  if (rows == 0) return NULL;
  if (!q || (L > 0 && (!queue || !be || !be->gemm)))
    return dsc_errorf("dsc_loss_infonce: NULL input");

  int64_t chunk = L > 0 ? INFONCE_WORK / L : INFONCE_CHUNK;
  if (chunk > INFONCE_CHUNK) chunk = INFONCE_CHUNK;
  if (chunk < 1) chunk = 1;
  if (chunk > rows) chunk = rows;
  const double inv_tau = 1.0 / (double)tau;
  const double gbase = 1.0 / ((double)rows * (double)tau);
  float scale[INFONCE_MAX_HEADS];
  for (int h = 0; h < n_heads; h++) scale[h] = heads[h].scale;

  size_t per_row = (size_t)n_heads * 2 * (size_t)max_pos; /* pl and coef of every head */
  float *w = malloc((size_t)(chunk * (L > 0 ? L : 1)) * sizeof(float));
  float *g = malloc((size_t)chunk * d * sizeof(float));
  double *scratch = malloc((size_t)chunk * per_row * sizeof(double));
  double *lr = malloc((size_t)chunk * n_heads * sizeof(double));
  dsc_status *st = NULL;
  if (!w || !g || !scratch || !lr)
    st = dsc_errorf("dsc_loss_infonce: out of memory for a %lld x %lld work buffer",
                    (long long)chunk, (long long)L);
  double total[INFONCE_MAX_HEADS] = {0};
  for (int64_t r0 = 0; r0 < rows && !st; r0 += chunk) {
    const int cr = (int)(rows - r0 < chunk ? rows - r0 : chunk);
    const float *qc = q + (size_t)r0 * d;
    if (L > 0) {
      st = be->gemm(be, 0, 0, cr, (int)L, d, (float)inv_tau, qc, d, queue, (int)L, 0.0f, w,
                    (int)L);
      if (st) break;
    }
#pragma omp parallel for schedule(static)
    for (int r = 0; r < cr; r++) {
      row_head hd[INFONCE_MAX_HEADS];
      double *sr = scratch + (size_t)r * per_row;
      for (int h = 0; h < n_heads; h++) {
        hd[h].npos = heads[h].npos;
        hd[h].pos = heads[h].pos + (size_t)(r0 + r) * heads[h].npos * d;
        hd[h].pl = sr + (size_t)h * 2 * max_pos;
        hd[h].coef = hd[h].pl + max_pos;
      }
      infonce_row(d, L, qc + (size_t)r * d, inv_tau, dq != NULL, w + (size_t)r * L, n_heads, hd,
                  scale);
      for (int h = 0; h < n_heads; h++) lr[(size_t)r * n_heads + h] = hd[h].loss;
    }
    for (int r = 0; r < cr; r++)
      for (int h = 0; h < n_heads; h++) total[h] += lr[(size_t)r * n_heads + h];
    if (!dq) continue;
    if (L > 0) {
      st = be->gemm(be, 0, 1, cr, d, (int)L, 1.0f, w, (int)L, queue, (int)L, 0.0f, g, d);
      if (st) break;
    }
    /* step 4: dq_r += (G_r + sum_h scale_h sum_t coef_ht pos_ht) / (rows tau) */
#pragma omp parallel for schedule(static)
    for (int r = 0; r < cr; r++) {
      const double *sr = scratch + (size_t)r * per_row;
      float *dqr = dq + (size_t)(r0 + r) * d;
      for (int i = 0; i < d; i++) {
        double v = L > 0 ? (double)g[(size_t)r * d + i] : 0.0;
        for (int h = 0; h < n_heads; h++) {
          const float *pr = heads[h].pos + (size_t)(r0 + r) * heads[h].npos * d;
          const double *cf = sr + (size_t)h * 2 * max_pos + max_pos;
          double vh = 0.0;
          for (int t = 0; t < heads[h].npos; t++) vh += cf[t] * (double)pr[(size_t)t * d + i];
          v += (double)scale[h] * vh;
        }
        dqr[i] = (float)((double)dqr[i] + gbase * v);
      }
    }
  }
  free(lr);
  free(scratch);
  free(g);
  free(w);
  if (st) return dsc_status_wrap(st, "dsc_loss_infonce");
  for (int h = 0; h < n_heads; h++) *heads[h].loss = total[h] / (double)rows;
  return NULL;
}

dsc_status *dsc_loss_infonce(dsc_backend *be, int64_t rows, int d, int npos, int64_t L,
                             const float *q, const float *pos, const float *queue, float tau,
                             float scale, double *loss, float *dq) {
  dsc_infonce_head head = {npos, pos, scale, loss};
  if (!loss) return dsc_errorf("dsc_loss_infonce: NULL loss");
  return dsc_loss_infonce_heads(be, rows, d, L, q, queue, tau, 1, &head, dq);
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
