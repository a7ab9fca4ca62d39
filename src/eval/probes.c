/* probes.c: the learned and unlearned evaluation protocols of METHOD.md §7 on cached
 * features: k-NN, the linear probe on pooled features, the dense linear probe (1x1
 * classifier on bilinearly upsampled C5 logits) and unsupervised segmentation by spherical
 * k-means with Hungarian matching. Conventions: include/dsc/eval.h.
 *
 * Standardization is folded into the classifier: with mu, sd the train per-channel mean and
 * std, logits = W ((x - mu) / sd) + b = W' x + b' where W' = W / sd and b' = b - W' mu, so the
 * features are never copied; a gradient G' = dL/dW' computed on raw features becomes
 * dL/dW = (G' - gb mu) / sd. The folded W', b' (float32) are what the predictions use and what
 * dsc_linear_probe_fit hands out for `dsc eval --save-probe` (include/dsc/probe_file.h).
 */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dsc/eval.h"
#include "dsc/probe_file.h"
#include "dsc/rng.h"
#include "eval/eval_internal.h"

#define PROBE_SHUFFLE_TAG 0xE7A1u
#define KMEANS_TAG 0xE7A1u

/* ---- k-NN ---- */

enum { KNN_BLOCK = 256 };

/* Every label of `what` (n of them) in [0, classes), else an error naming the first bad one. */
static dsc_status *labels_check(const char *fn, const char *what, const int32_t *labels, int64_t n,
                                int classes) {
  for (int64_t i = 0; i < n; i++)
    if (labels[i] < 0 || labels[i] >= classes)
      return dsc_errorf("%s: %s[%lld] = %d is not in [0, %d)", fn, what, (long long)i, labels[i],
                        classes);
  return NULL;
}

dsc_status *dsc_knn_classify(dsc_backend *be, int64_t n_train, int64_t n_test, int d,
                             const float *train, const int32_t *train_labels, const float *test,
                             const int32_t *test_labels, int classes, int k, double tau,
                             int32_t *pred, double *top1) {
  const char *fn = "dsc_knn_classify";
  if (n_train < 1 || n_train > INT_MAX)
    return dsc_errorf("%s: n_train = %lld, must be in [1, %d]", fn, (long long)n_train, INT_MAX);
  if (n_test < 0) return dsc_errorf("%s: n_test = %lld < 0", fn, (long long)n_test);
  if (d < 1) return dsc_errorf("%s: d = %d, must be >= 1", fn, d);
  if (classes < 1) return dsc_errorf("%s: classes = %d, must be >= 1", fn, classes);
  if (k < 1 || k > n_train)
    return dsc_errorf("%s: k = %d, must be in [1, n_train = %lld]", fn, k, (long long)n_train);
  if (!(tau > 0) || !isfinite(tau)) return dsc_errorf("%s: tau = %g, must be > 0", fn, tau);
  if (!train) return dsc_errorf("%s: train is NULL", fn);
  if (!train_labels) return dsc_errorf("%s: train_labels is NULL", fn);
  if (n_test > 0 && !test) return dsc_errorf("%s: test is NULL", fn);
  DSC_TRY(labels_check(fn, "train_labels", train_labels, n_train, classes));
  if (test_labels) DSC_TRY(labels_check(fn, "test_labels", test_labels, n_test, classes));
  if (top1) *top1 = NAN;
  if (n_test == 0) return NULL;

  float *tn = malloc((size_t)n_train * d * sizeof *tn);
  float *qb = malloc((size_t)KNN_BLOCK * d * sizeof *qb);
  float *sims = malloc((size_t)KNN_BLOCK * n_train * sizeof *sims);
  float *tops = malloc((size_t)KNN_BLOCK * k * sizeof *tops);
  int32_t *topi = malloc((size_t)KNN_BLOCK * k * sizeof *topi);
  double *votes = malloc((size_t)KNN_BLOCK * classes * sizeof *votes);
  int32_t *pb = malloc((size_t)KNN_BLOCK * sizeof *pb);
  dsc_status *st = NULL;
  if (!tn || !qb || !sims || !tops || !topi || !votes || !pb) {
    st = dsc_errorf("%s: out of memory (%lld train rows)", fn, (long long)n_train);
    goto done;
  }
  eval_l2norm_rows(n_train, d, train, tn);
  int64_t correct = 0;
  for (int64_t r0 = 0; r0 < n_test; r0 += KNN_BLOCK) {
    int bm = (int)(n_test - r0 < KNN_BLOCK ? n_test - r0 : KNN_BLOCK);
    eval_l2norm_rows(bm, d, test + (size_t)r0 * d, qb);
    st = eval_gemm(be, 0, 1, bm, (int)n_train, d, 1.0f, qb, d, tn, d, 0.0f, sims, (int)n_train);
    if (st) goto done;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < bm; i++) {
      const float *s = sims + (size_t)i * n_train;
      float *ts = tops + (size_t)i * k;
      int32_t *ti = topi + (size_t)i * k;
      int have = 0;
      /* Sorted by similarity descending; scanning j upward and inserting after equal
       * similarities keeps the smaller train index first among ties. */
      for (int64_t j = 0; j < n_train; j++) {
        float v = s[j];
        if (have == k && !(v > ts[k - 1])) continue;
        int pos = have < k ? have : k - 1;
        while (pos > 0 && ts[pos - 1] < v) {
          ts[pos] = ts[pos - 1];
          ti[pos] = ti[pos - 1];
          pos--;
        }
        ts[pos] = v;
        ti[pos] = (int32_t)j;
        if (have < k) have++;
      }
      double *vt = votes + (size_t)i * classes;
      for (int c = 0; c < classes; c++) vt[c] = 0;
      for (int t = 0; t < k; t++) vt[train_labels[ti[t]]] += exp((double)ts[t] / tau);
      int best = 0;
      for (int c = 1; c < classes; c++)
        if (vt[c] > vt[best]) best = c;
      pb[i] = best;
    }
    for (int i = 0; i < bm; i++) {
      if (pred) pred[r0 + i] = pb[i];
      if (test_labels && pb[i] == test_labels[r0 + i]) correct++;
    }
  }
  if (top1 && test_labels) *top1 = (double)correct / (double)n_test;
done:
  free(tn);
  free(qb);
  free(sims);
  free(tops);
  free(topi);
  free(votes);
  free(pb);
  return st;
}

/* ---- shared probe machinery ---- */

dsc_probe_config dsc_linear_probe_defaults(void) {
  dsc_probe_config c = {.epochs = 100, .batch = 256, .lr = 1e-3, .weight_decay = 1e-4, .seed = 0};
  return c;
}

dsc_probe_config dsc_dense_probe_defaults(void) {
  dsc_probe_config c = {.epochs = 20, .batch = 16, .lr = 1e-3, .weight_decay = 1e-4, .seed = 0};
  return c;
}

dsc_cluster_config dsc_cluster_defaults(void) {
  dsc_cluster_config c = {.iters = 100, .seed = 0};
  return c;
}

static dsc_status *probe_config_check(const char *fn, const dsc_probe_config *cfg) {
  if (!cfg) return dsc_errorf("%s: cfg is NULL", fn);
  if (cfg->epochs < 1) return dsc_errorf("%s: cfg->epochs = %d, must be >= 1", fn, cfg->epochs);
  if (cfg->batch < 1) return dsc_errorf("%s: cfg->batch = %d, must be >= 1", fn, cfg->batch);
  if (!(cfg->lr > 0) || !isfinite(cfg->lr))
    return dsc_errorf("%s: cfg->lr = %g, must be > 0", fn, cfg->lr);
  if (!(cfg->weight_decay >= 0) || !isfinite(cfg->weight_decay))
    return dsc_errorf("%s: cfg->weight_decay = %g, must be >= 0", fn, cfg->weight_decay);
  return NULL;
}

/* A linear classifier in standardized space with Adam state, and its folded raw-space form. */
typedef struct probe_clf {
  int K, d;
  float *w, *b;       /* standardized space (K, d), (K) */
  float *wf, *bf;     /* folded for raw features */
  double *mu, *sd;    /* (d) */
  double *mw, *vw, *mb, *vb;
  float *gw, *gb;     /* raw-space gradient G' (K, d) and gb (K) */
  int64_t step, total_steps;
} probe_clf;

static void probe_clf_free(probe_clf *p) {
  free(p->w);
  free(p->b);
  free(p->wf);
  free(p->bf);
  free(p->mu);
  free(p->sd);
  free(p->mw);
  free(p->vw);
  free(p->mb);
  free(p->vb);
  free(p->gw);
  free(p->gb);
}

/* Allocates the classifier and sets mu/sd from rows (rows, d) of the train features. */
static dsc_status *probe_clf_init(probe_clf *p, const char *fn, int K, int d, int64_t rows,
                                  const float *x) {
  memset(p, 0, sizeof *p);
  p->K = K;
  p->d = d;
  size_t kd = (size_t)K * d;
  p->w = calloc(kd, sizeof(float));
  p->b = calloc(K, sizeof(float));
  p->wf = calloc(kd, sizeof(float));
  p->bf = calloc(K, sizeof(float));
  p->mu = calloc(d, sizeof(double));
  p->sd = calloc(d, sizeof(double));
  p->mw = calloc(kd, sizeof(double));
  p->vw = calloc(kd, sizeof(double));
  p->mb = calloc(K, sizeof(double));
  p->vb = calloc(K, sizeof(double));
  p->gw = calloc(kd, sizeof(float));
  p->gb = calloc(K, sizeof(float));
  if (!p->w || !p->b || !p->wf || !p->bf || !p->mu || !p->sd || !p->mw || !p->vw || !p->mb ||
      !p->vb || !p->gw || !p->gb) {
    probe_clf_free(p);
    return dsc_errorf("%s: out of memory (classifier %d x %d)", fn, K, d);
  }
  /* Per-channel mean and std over the rows (two passes, double, channels in parallel). */
#pragma omp parallel for schedule(static)
  for (int j = 0; j < d; j++) {
    double s = 0;
    for (int64_t r = 0; r < rows; r++) s += x[(size_t)r * d + j];
    double m = s / (double)rows, q = 0;
    for (int64_t r = 0; r < rows; r++) {
      double e = x[(size_t)r * d + j] - m;
      q += e * e;
    }
    double sd = sqrt(q / (double)rows);
    p->mu[j] = m;
    p->sd[j] = sd > 1e-6 ? sd : 1e-6;
  }
  return NULL;
}

/* wf = w / sd, bf = b - wf . mu */
static void probe_clf_fold(probe_clf *p) {
  for (int k = 0; k < p->K; k++) {
    double bb = p->b[k];
    for (int j = 0; j < p->d; j++) {
      double wf = p->w[(size_t)k * p->d + j] / p->sd[j];
      p->wf[(size_t)k * p->d + j] = (float)wf;
      bb -= wf * p->mu[j];
    }
    p->bf[k] = (float)bb;
  }
}

/* One Adam step from the raw-space gradient in gw, gb (already averaged over the batch). */
static void probe_clf_adam(probe_clf *p, const dsc_probe_config *cfg) {
  const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
  p->step++;
  double lr = cfg->lr * 0.5 *
              (1.0 + cos(M_PI * (double)(p->step - 1) / (double)p->total_steps));
  double c1 = 1.0 - pow(b1, (double)p->step), c2 = 1.0 - pow(b2, (double)p->step);
  for (int k = 0; k < p->K; k++) {
    double gbk = p->gb[k];
    for (int j = 0; j < p->d; j++) {
      size_t i = (size_t)k * p->d + j;
      double g = (p->gw[i] - gbk * p->mu[j]) / p->sd[j] + cfg->weight_decay * p->w[i];
      p->mw[i] = b1 * p->mw[i] + (1 - b1) * g;
      p->vw[i] = b2 * p->vw[i] + (1 - b2) * g * g;
      p->w[i] -= (float)(lr * (p->mw[i] / c1) / (sqrt(p->vw[i] / c2) + eps));
    }
    p->mb[k] = b1 * p->mb[k] + (1 - b1) * gbk;
    p->vb[k] = b2 * p->vb[k] + (1 - b2) * gbk * gbk;
    p->b[k] -= (float)(lr * (p->mb[k] / c1) / (sqrt(p->vb[k] / c2) + eps));
  }
  probe_clf_fold(p);
}

/* Fisher-Yates permutation of [0, n) for one epoch. */
static void probe_permutation(int64_t n, uint64_t seed, int epoch, int64_t *perm) {
  for (int64_t i = 0; i < n; i++) perm[i] = i;
  for (int64_t i = 0; i + 1 < n; i++) {
    double u = dsc_rng_uniform(seed, DSC_RNG_SHUFFLE, (uint32_t)epoch, (uint32_t)i,
                               PROBE_SHUFFLE_TAG);
    int64_t j = i + (int64_t)(u * (double)(n - i));
    if (j >= n) j = n - 1;
    int64_t t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
}

/* In place: logits row (K) -> softmax probabilities; returns -log p[y] (y < 0: 0). */
static double softmax_ce_row(float *z, int K, int y) {
  float m = z[0];
  for (int c = 1; c < K; c++)
    if (z[c] > m) m = z[c];
  double s = 0;
  for (int c = 0; c < K; c++) s += exp((double)z[c] - m);
  double lse = m + log(s), loss = y >= 0 ? lse - z[y] : 0.0;
  for (int c = 0; c < K; c++) z[c] = (float)exp((double)z[c] - lse);
  return loss;
}

static int argmax_row(const float *z, int K) {
  int best = 0;
  for (int c = 1; c < K; c++)
    if (z[c] > z[best]) best = c;
  return best;
}

/* logits (rows, K) = x (rows, d) wf^T + bf */
static dsc_status *probe_logits(dsc_backend *be, const probe_clf *p, int rows, const float *x,
                                float *logits) {
  DSC_TRY(eval_gemm(be, 0, 1, rows, p->K, p->d, 1.0f, x, p->d, p->wf, p->d, 0.0f, logits, p->K));
  for (int r = 0; r < rows; r++)
    for (int c = 0; c < p->K; c++) logits[(size_t)r * p->K + c] += p->bf[c];
  return NULL;
}

/* gw = dlogits^T x, gb = column sums of dlogits (rows, K), both overwritten. */
static dsc_status *probe_grad(dsc_backend *be, probe_clf *p, int rows, const float *x,
                              const float *dlogits) {
  DSC_TRY(eval_gemm(be, 1, 0, p->K, p->d, rows, 1.0f, dlogits, p->K, x, p->d, 0.0f, p->gw, p->d));
  for (int c = 0; c < p->K; c++) {
    double s = 0;
    for (int r = 0; r < rows; r++) s += dlogits[(size_t)r * p->K + c];
    p->gb[c] = (float)s;
  }
  return NULL;
}

/* ---- linear probe ---- */

/* Predictions (and mean CE, correct count when labels are given) of rows of x. */
static dsc_status *linear_eval(dsc_backend *be, const probe_clf *p, int64_t n, const float *x,
                               const int32_t *labels, int32_t *pred, float *buf, int bufrows,
                               double *loss, int64_t *correct) {
  double l = 0;
  int64_t ok = 0;
  for (int64_t r0 = 0; r0 < n; r0 += bufrows) {
    int m = (int)(n - r0 < bufrows ? n - r0 : bufrows);
    DSC_TRY(probe_logits(be, p, m, x + (size_t)r0 * p->d, buf));
    for (int r = 0; r < m; r++) {
      float *z = buf + (size_t)r * p->K;
      int a = argmax_row(z, p->K);
      if (pred) pred[r0 + r] = a;
      if (labels) {
        ok += a == labels[r0 + r];
        l += softmax_ce_row(z, p->K, labels[r0 + r]);
      }
    }
  }
  if (loss) *loss = n ? l / (double)n : NAN;
  if (correct) *correct = ok;
  return NULL;
}

dsc_status *dsc_linear_probe(dsc_backend *be, const dsc_probe_config *cfg, int64_t n_train,
                             int64_t n_test, int d, int classes, const float *train,
                             const int32_t *train_labels, const float *test,
                             const int32_t *test_labels, int32_t *test_pred,
                             dsc_linear_probe_result *out) {
  return dsc_linear_probe_fit(be, cfg, n_train, n_test, d, classes, train, train_labels, test,
                              test_labels, test_pred, out, NULL, NULL);
}

/* include/dsc/probe_file.h: the same training, and the classifier the predictions used (the
 * folded raw-space wf, bf: logits = wf x + bf on raw pooled features). */
dsc_status *dsc_linear_probe_fit(dsc_backend *be, const dsc_probe_config *cfg, int64_t n_train,
                                 int64_t n_test, int d, int classes, const float *train,
                                 const int32_t *train_labels, const float *test,
                                 const int32_t *test_labels, int32_t *test_pred,
                                 dsc_linear_probe_result *out, float *raw_weight,
                                 float *raw_bias) {
  const char *fn = "dsc_linear_probe";
  DSC_TRY(probe_config_check(fn, cfg));
  if (!out) return dsc_errorf("%s: out is NULL", fn);
  if (n_train < 1) return dsc_errorf("%s: n_train = %lld, must be >= 1", fn, (long long)n_train);
  if (n_test < 0) return dsc_errorf("%s: n_test = %lld < 0", fn, (long long)n_test);
  if (d < 1) return dsc_errorf("%s: d = %d, must be >= 1", fn, d);
  if (classes < 2) return dsc_errorf("%s: classes = %d, must be >= 2", fn, classes);
  if (!train) return dsc_errorf("%s: train is NULL", fn);
  if (!train_labels) return dsc_errorf("%s: train_labels is NULL", fn);
  if (n_test > 0 && !test) return dsc_errorf("%s: test is NULL", fn);
  DSC_TRY(labels_check(fn, "train_labels", train_labels, n_train, classes));
  if (test_labels) DSC_TRY(labels_check(fn, "test_labels", test_labels, n_test, classes));

  probe_clf p;
  DSC_TRY(probe_clf_init(&p, fn, classes, d, n_train, train));
  int bs = cfg->batch < n_train ? cfg->batch : (int)n_train;
  int64_t per_epoch = (n_train + bs - 1) / bs;
  p.total_steps = per_epoch * cfg->epochs;
  probe_clf_fold(&p);
  int64_t *perm = malloc((size_t)n_train * sizeof *perm);
  float *xb = malloc((size_t)bs * d * sizeof *xb);
  float *zb = malloc((size_t)bs * classes * sizeof *zb);
  dsc_status *st = NULL;
  if (!perm || !xb || !zb) {
    st = dsc_errorf("%s: out of memory", fn);
    goto done;
  }
  for (int e = 0; e < cfg->epochs; e++) {
    probe_permutation(n_train, cfg->seed, e, perm);
    for (int64_t s0 = 0; s0 < n_train; s0 += bs) {
      int m = (int)(n_train - s0 < bs ? n_train - s0 : bs);
      for (int r = 0; r < m; r++)
        memcpy(xb + (size_t)r * d, train + (size_t)perm[s0 + r] * d, (size_t)d * sizeof *xb);
      if ((st = probe_logits(be, &p, m, xb, zb))) goto done;
      for (int r = 0; r < m; r++) {
        float *z = zb + (size_t)r * classes;
        softmax_ce_row(z, classes, train_labels[perm[s0 + r]]);
        z[train_labels[perm[s0 + r]]] -= 1.0f;
        for (int c = 0; c < classes; c++) z[c] /= (float)m;
      }
      if ((st = probe_grad(be, &p, m, xb, zb))) goto done;
      probe_clf_adam(&p, cfg);
    }
  }
  int64_t ok = 0;
  if ((st = linear_eval(be, &p, n_train, train, train_labels, NULL, zb, bs, &out->train_loss, &ok)))
    goto done;
  out->train_top1 = (double)ok / (double)n_train;
  out->test_top1 = NAN;
  if (n_test > 0) {
    if ((st = linear_eval(be, &p, n_test, test, test_labels, test_pred, zb, bs, NULL, &ok)))
      goto done;
    if (test_labels) out->test_top1 = (double)ok / (double)n_test;
  }
  if (raw_weight) memcpy(raw_weight, p.wf, (size_t)classes * d * sizeof *raw_weight);
  if (raw_bias) memcpy(raw_bias, p.bf, (size_t)classes * sizeof *raw_bias);
done:
  free(perm);
  free(xb);
  free(zb);
  probe_clf_free(&p);
  return st;
}

/* ---- dense linear probe ---- */

static dsc_status *dense_set_check(const char *fn, const char *name, const dsc_dense_set *s,
                                   int classes) {
  if (!s) return dsc_errorf("%s: %s is NULL", fn, name);
  if (s->n < 1) return dsc_errorf("%s: %s->n = %lld, must be >= 1", fn, name, (long long)s->n);
  if (s->h5 < 1 || s->w5 < 1)
    return dsc_errorf("%s: %s feature size %dx%d, must be >= 1x1", fn, name, s->h5, s->w5);
  if (s->c < 1) return dsc_errorf("%s: %s->c = %d, must be >= 1", fn, name, s->c);
  if (s->H < 1 || s->W < 1)
    return dsc_errorf("%s: %s label size %dx%d, must be >= 1x1", fn, name, s->H, s->W);
  if ((int64_t)s->n * s->h5 * s->w5 > INT_MAX)
    return dsc_errorf("%s: %s has %lld feature pixels, more than %d", fn, name,
                      (long long)s->n * s->h5 * s->w5, INT_MAX);
  if (!s->features) return dsc_errorf("%s: %s->features is NULL", fn, name);
  if (!s->labels) return dsc_errorf("%s: %s->labels is NULL", fn, name);
  int64_t px = s->n * s->H * s->W;
  for (int64_t i = 0; i < px; i++)
    if (s->labels[i] != DSC_EVAL_IGNORE && s->labels[i] >= classes)
      return dsc_errorf("%s: %s->labels[%lld] (map %lld) = %d is neither 255 (ignore) nor a "
                        "class < %d",
                        fn, name, (long long)i, (long long)(i / ((int64_t)s->H * s->W)),
                        s->labels[i], classes);
  return NULL;
}

/* One label map's work at label resolution, fused so that the upsampled logits are never
 * stored: for each label pixel, its logits are the bilinear blend (dsc_upsample_bilinear's
 * taps) of the 4 neighboring C5 logit rows of z5 (h5*w5, K). With pred != NULL: pred = argmax
 * (ties: smallest class). Otherwise: *loss = sum of the cross-entropies of the non-ignored
 * pixels, *count = their number, and dz5 (h5*w5, K) = U^T (softmax - onehot), overwritten
 * (the adjoint of the upsampling applied pixel by pixel). */
static void dense_map(int h5, int w5, int K, const float *z5, int H, int W, const uint8_t *lab,
                      const int *ty0, const int *ty1, const float *tly, const int *tx0,
                      const int *tx1, const float *tlx, float *dz5, double *loss,
                      int64_t *count, int32_t *pred) {
  float zz[256];
  double l = 0;
  int64_t cnt = 0;
  if (!pred) memset(dz5, 0, (size_t)h5 * w5 * K * sizeof *dz5);
  for (int Y = 0; Y < H; Y++) {
    float ly = tly[Y];
    for (int X = 0; X < W; X++) {
      int y = lab[(size_t)Y * W + X];
      if (!pred && y == DSC_EVAL_IGNORE) continue;
      float lx = tlx[X];
      float w00 = (1 - ly) * (1 - lx), w01 = (1 - ly) * lx, w10 = ly * (1 - lx), w11 = ly * lx;
      size_t o00 = ((size_t)ty0[Y] * w5 + tx0[X]) * K, o01 = ((size_t)ty0[Y] * w5 + tx1[X]) * K;
      size_t o10 = ((size_t)ty1[Y] * w5 + tx0[X]) * K, o11 = ((size_t)ty1[Y] * w5 + tx1[X]) * K;
      for (int k = 0; k < K; k++)
        zz[k] = w00 * z5[o00 + k] + w01 * z5[o01 + k] + w10 * z5[o10 + k] + w11 * z5[o11 + k];
      if (pred) {
        pred[(size_t)Y * W + X] = argmax_row(zz, K);
        continue;
      }
      float m = zz[0];
      for (int k = 1; k < K; k++)
        if (zz[k] > m) m = zz[k];
      float s = 0, zy = zz[y] - m;
      for (int k = 0; k < K; k++) {
        zz[k] = expf(zz[k] - m);
        s += zz[k];
      }
      l += (double)logf(s) - (double)zy;
      float inv = 1.0f / s;
      for (int k = 0; k < K; k++) {
        float g = zz[k] * inv - (k == y ? 1.0f : 0.0f);
        dz5[o00 + k] += w00 * g;
        dz5[o01 + k] += w01 * g;
        dz5[o10 + k] += w10 * g;
        dz5[o11 + k] += w11 * g;
      }
      cnt++;
    }
  }
  if (loss) *loss = l;
  if (count) *count = cnt;
}

/* Bilinear tap tables of a set (label size from C5 size): 3 arrays of H then 3 of W. */
typedef struct dense_taps {
  int *y0, *y1, *x0, *x1;
  float *ly, *lx;
} dense_taps;

static void dense_taps_free(dense_taps *t) {
  free(t->y0);
  free(t->y1);
  free(t->x0);
  free(t->x1);
  free(t->ly);
  free(t->lx);
}

static int dense_taps_init(dense_taps *t, const dsc_dense_set *s) {
  t->y0 = malloc((size_t)s->H * sizeof(int));
  t->y1 = malloc((size_t)s->H * sizeof(int));
  t->ly = malloc((size_t)s->H * sizeof(float));
  t->x0 = malloc((size_t)s->W * sizeof(int));
  t->x1 = malloc((size_t)s->W * sizeof(int));
  t->lx = malloc((size_t)s->W * sizeof(float));
  if (!t->y0 || !t->y1 || !t->ly || !t->x0 || !t->x1 || !t->lx) return 0;
  for (int Y = 0; Y < s->H; Y++) eval_bilinear_taps(Y, s->h5, s->H, &t->y0[Y], &t->y1[Y], &t->ly[Y]);
  for (int X = 0; X < s->W; X++) eval_bilinear_taps(X, s->w5, s->W, &t->x0[X], &t->x1[X], &t->lx[X]);
  return 1;
}

dsc_status *dsc_dense_probe(dsc_backend *be, const dsc_probe_config *cfg, int classes,
                            const dsc_dense_set *train, const dsc_dense_set *test,
                            int32_t *test_pred, dsc_confusion *test_confusion,
                            dsc_dense_probe_result *out) {
  const char *fn = "dsc_dense_probe";
  DSC_TRY(probe_config_check(fn, cfg));
  if (!out) return dsc_errorf("%s: out is NULL", fn);
  memset(out, 0, sizeof *out);
  if (classes < 2 || classes > 254)
    return dsc_errorf("%s: classes = %d, must be in [2, 254]", fn, classes);
  DSC_TRY(dense_set_check(fn, "train", train, classes));
  DSC_TRY(dense_set_check(fn, "test", test, classes));
  if (train->c != test->c)
    return dsc_errorf("%s: train->c = %d but test->c = %d", fn, train->c, test->c);
  if (test_confusion && (!test_confusion->counts || test_confusion->classes != classes))
    return dsc_errorf("%s: test_confusion must be initialized with %d classes", fn, classes);

  int c = train->c;
  probe_clf p;
  DSC_TRY(probe_clf_init(&p, fn, classes, c, train->n * train->h5 * train->w5, train->features));
  int bs = cfg->batch < train->n ? cfg->batch : (int)train->n;
  int64_t per_epoch = (train->n + bs - 1) / bs;
  p.total_steps = per_epoch * cfg->epochs;
  probe_clf_fold(&p);

  size_t tpx5 = (size_t)train->h5 * train->w5, tpxl = (size_t)train->H * train->W;
  size_t spx5 = (size_t)test->h5 * test->w5, spxl = (size_t)test->H * test->W;
  size_t px5 = tpx5 > spx5 ? tpx5 : spx5;
  int64_t *perm = malloc((size_t)train->n * sizeof *perm);
  float *xb = malloc((size_t)bs * tpx5 * c * sizeof *xb);
  float *z5 = malloc((size_t)bs * px5 * classes * sizeof *z5);
  float *dz5 = malloc((size_t)bs * tpx5 * classes * sizeof *dz5);
  double *img_loss = malloc((size_t)bs * sizeof *img_loss);
  int64_t *img_count = malloc((size_t)bs * sizeof *img_count);
  int32_t *pb = malloc((size_t)bs * spxl * sizeof *pb);
  dense_taps ttr = {0}, tte = {0};
  dsc_confusion cm = {0};
  dsc_status *st = NULL;
  if (!perm || !xb || !z5 || !dz5 || !img_loss || !img_count || !pb ||
      !dense_taps_init(&ttr, train) || !dense_taps_init(&tte, test)) {
    st = dsc_errorf("%s: out of memory", fn);
    goto done;
  }
  double epoch_loss = 0;
  for (int e = 0; e < cfg->epochs; e++) {
    probe_permutation(train->n, cfg->seed, e, perm);
    double loss_sum = 0;
    int64_t loss_count = 0;
    for (int64_t s0 = 0; s0 < train->n; s0 += bs) {
      int m = (int)(train->n - s0 < bs ? train->n - s0 : bs);
      for (int r = 0; r < m; r++)
        memcpy(xb + (size_t)r * tpx5 * c, train->features + (size_t)perm[s0 + r] * tpx5 * c,
               tpx5 * c * sizeof *xb);
      if ((st = probe_logits(be, &p, (int)(m * tpx5), xb, z5))) goto done;
      /* Each map by one thread into its own dz5 rows; sums taken in order afterwards. */
#pragma omp parallel for schedule(static)
      for (int r = 0; r < m; r++)
        dense_map(train->h5, train->w5, classes, z5 + (size_t)r * tpx5 * classes, train->H,
                  train->W, train->labels + (size_t)perm[s0 + r] * tpxl, ttr.y0, ttr.y1, ttr.ly,
                  ttr.x0, ttr.x1, ttr.lx, dz5 + (size_t)r * tpx5 * classes, &img_loss[r],
                  &img_count[r], NULL);
      int64_t cnt = 0;
      for (int r = 0; r < m; r++) {
        loss_sum += img_loss[r];
        cnt += img_count[r];
      }
      loss_count += cnt;
      if (cnt > 0) {
        float inv = 1.0f / (float)cnt;
        for (size_t q = 0; q < (size_t)m * tpx5 * classes; q++) dz5[q] *= inv;
      }
      if ((st = probe_grad(be, &p, (int)(m * tpx5), xb, dz5))) goto done;
      probe_clf_adam(&p, cfg);
    }
    epoch_loss = loss_count ? loss_sum / (double)loss_count : NAN;
  }
  out->train_loss = epoch_loss;

  /* Test predictions into the confusion. */
  if ((st = dsc_confusion_init(&cm, classes))) goto done;
  for (int64_t s0 = 0; s0 < test->n; s0 += bs) {
    int m = (int)(test->n - s0 < bs ? test->n - s0 : bs);
    if ((st = probe_logits(be, &p, (int)(m * spx5), test->features + (size_t)s0 * spx5 * c, z5)))
      goto done;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < m; r++)
      dense_map(test->h5, test->w5, classes, z5 + (size_t)r * spx5 * classes, test->H, test->W,
                test->labels + (size_t)(s0 + r) * spxl, tte.y0, tte.y1, tte.ly, tte.x0, tte.x1,
                tte.lx, NULL, NULL, NULL, pb + (size_t)r * spxl);
    const uint8_t *lab = test->labels + (size_t)s0 * spxl;
    if ((st = dsc_confusion_add(&cm, (int64_t)m * spxl, lab, pb))) goto done;
    if (test_confusion && (st = dsc_confusion_add(test_confusion, (int64_t)m * spxl, lab, pb)))
      goto done;
    if (test_pred) memcpy(test_pred + (size_t)s0 * spxl, pb, (size_t)m * spxl * sizeof *pb);
  }
  st = dsc_seg_scores_compute(&cm, &out->test);
done:
  dsc_confusion_free(&cm);
  dense_taps_free(&ttr);
  dense_taps_free(&tte);
  free(perm);
  free(xb);
  free(z5);
  free(dz5);
  free(img_loss);
  free(img_count);
  free(pb);
  probe_clf_free(&p);
  return st;
}

void dsc_dense_probe_result_free(dsc_dense_probe_result *r) {
  if (r) dsc_seg_scores_free(&r->test);
}

/* ---- unsupervised segmentation ---- */

/* k-means++ seeding on unit rows v (rows, d): centroids (K, d). dist = 1 - max cosine. */
static dsc_status *kmeanspp(dsc_backend *be, int64_t rows, int d, int K, const float *v,
                            uint64_t seed, float *cent, float *sim, double *dist) {
  for (int t = 0; t < K; t++) {
    double u = dsc_rng_uniform(seed, DSC_RNG_KMEANS, KMEANS_TAG, (uint32_t)t, 0);
    int64_t pick = -1;
    if (t > 0) {
      double total = 0;
      for (int64_t r = 0; r < rows; r++) total += dist[r];
      if (total > 0) {
        double target = u * total, cum = 0;
        for (int64_t r = 0; r < rows; r++) {
          cum += dist[r];
          if (dist[r] > 0 && cum > target) {
            pick = r;
            break;
          }
        }
        if (pick < 0) /* rounding at the very end: the last row with positive distance */
          for (int64_t r = rows - 1; r >= 0 && pick < 0; r--)
            if (dist[r] > 0) pick = r;
      }
    }
    if (pick < 0) { /* first centroid, or every row already at distance 0 */
      pick = (int64_t)(u * (double)rows);
      if (pick >= rows) pick = rows - 1;
    }
    memcpy(cent + (size_t)t * d, v + (size_t)pick * d, (size_t)d * sizeof *cent);
    DSC_TRY(eval_gemm(be, 0, 1, (int)rows, 1, d, 1.0f, v, d, cent + (size_t)t * d, d, 0.0f, sim,
                      1));
    for (int64_t r = 0; r < rows; r++) {
      double dd = 1.0 - (double)sim[r];
      if (dd < 0) dd = 0;
      if (t == 0 || dd < dist[r]) dist[r] = dd;
    }
  }
  return NULL;
}

dsc_status *dsc_cluster_seg(dsc_backend *be, const dsc_cluster_config *cfg, int classes,
                            const dsc_dense_set *set, int32_t *pred, int *cluster_to_class,
                            dsc_seg_scores *out) {
  const char *fn = "dsc_cluster_seg";
  if (!out) return dsc_errorf("%s: out is NULL", fn);
  memset(out, 0, sizeof *out);
  if (!cfg) return dsc_errorf("%s: cfg is NULL", fn);
  if (cfg->iters < 1) return dsc_errorf("%s: cfg->iters = %d, must be >= 1", fn, cfg->iters);
  if (classes < 1 || classes > 254)
    return dsc_errorf("%s: classes = %d, must be in [1, 254]", fn, classes);
  DSC_TRY(dense_set_check(fn, "set", set, classes));
  int64_t rows = set->n * set->h5 * set->w5;
  if (rows < classes)
    return dsc_errorf("%s: %lld feature pixels, fewer than the %d clusters", fn, (long long)rows,
                      classes);
  int d = set->c, K = classes;
  size_t px5 = (size_t)set->h5 * set->w5, pxl = (size_t)set->H * set->W;
  float *v = malloc((size_t)rows * d * sizeof *v);
  float *cent = malloc((size_t)K * d * sizeof *cent);
  float *sim = malloc((size_t)rows * K * sizeof *sim);
  double *dist = malloc((size_t)rows * sizeof *dist);
  double *acc = malloc((size_t)K * d * sizeof *acc);
  int64_t *cnt = malloc((size_t)K * sizeof *cnt);
  int32_t *assign = malloc((size_t)rows * sizeof *assign);
  int32_t *cl = malloc((size_t)set->n * pxl * sizeof *cl);
  float *onehot = malloc(px5 * K * sizeof *onehot);
  float *up = malloc(pxl * K * sizeof *up);
  int64_t *conf = calloc((size_t)K * classes, sizeof *conf);
  int *map = malloc((size_t)K * sizeof *map);
  dsc_confusion cm = {0};
  dsc_status *st = NULL;
  if (!v || !cent || !sim || !dist || !acc || !cnt || !assign || !cl || !onehot || !up ||
      !conf || !map) {
    st = dsc_errorf("%s: out of memory (%lld feature pixels)", fn, (long long)rows);
    goto done;
  }
  eval_l2norm_rows(rows, d, set->features, v);
  if ((st = kmeanspp(be, rows, d, K, v, cfg->seed, cent, sim, dist))) goto done;
  for (int it = 0; it < cfg->iters; it++) {
    if ((st = eval_gemm(be, 0, 1, (int)rows, K, d, 1.0f, v, d, cent, d, 0.0f, sim, K)))
      goto done;
    int64_t changed = 0;
    for (int64_t r = 0; r < rows; r++) {
      int a = argmax_row(sim + (size_t)r * K, K);
      if (it == 0 || a != assign[r]) changed++;
      assign[r] = a;
    }
    if (changed == 0) break;
    memset(acc, 0, (size_t)K * d * sizeof *acc);
    memset(cnt, 0, (size_t)K * sizeof *cnt);
    for (int64_t r = 0; r < rows; r++) {
      double *a = acc + (size_t)assign[r] * d;
      const float *x = v + (size_t)r * d;
      for (int j = 0; j < d; j++) a[j] += x[j];
      cnt[assign[r]]++;
    }
    for (int k = 0; k < K; k++) {
      if (!cnt[k]) continue;
      double ss = 0;
      for (int j = 0; j < d; j++) ss += acc[(size_t)k * d + j] * acc[(size_t)k * d + j];
      double inv = 1.0 / (sqrt(ss) > 1e-12 ? sqrt(ss) : 1e-12);
      for (int j = 0; j < d; j++) cent[(size_t)k * d + j] = (float)(acc[(size_t)k * d + j] * inv);
    }
  }
  /* Bilinear-of-one-hot upsampling of every map's clusters, cluster-vs-class counts. */
  for (int64_t i = 0; i < set->n; i++) {
    memset(onehot, 0, px5 * K * sizeof *onehot);
    for (size_t q = 0; q < px5; q++) onehot[q * K + assign[(size_t)i * px5 + q]] = 1.0f;
    if ((st = dsc_upsample_bilinear(1, set->h5, set->w5, K, onehot, set->H, set->W, up)))
      goto done;
    const uint8_t *lab = set->labels + (size_t)i * pxl;
    for (size_t q = 0; q < pxl; q++) {
      int k = argmax_row(up + q * K, K);
      cl[(size_t)i * pxl + q] = k;
      if (lab[q] != DSC_EVAL_IGNORE) conf[(size_t)k * classes + lab[q]]++;
    }
  }
  if ((st = dsc_cluster_match(K, classes, conf, map))) goto done;
  for (size_t q = 0; q < (size_t)set->n * pxl; q++) cl[q] = map[cl[q]];
  if ((st = dsc_confusion_init(&cm, classes))) goto done;
  if ((st = dsc_confusion_add(&cm, set->n * (int64_t)pxl, set->labels, cl))) goto done;
  if ((st = dsc_seg_scores_compute(&cm, out))) goto done;
  if (pred) memcpy(pred, cl, (size_t)set->n * pxl * sizeof *pred);
  if (cluster_to_class) memcpy(cluster_to_class, map, (size_t)K * sizeof *map);
done:
  dsc_confusion_free(&cm);
  free(v);
  free(cent);
  free(sim);
  free(dist);
  free(acc);
  free(cnt);
  free(assign);
  free(cl);
  free(onehot);
  free(up);
  free(conf);
  free(map);
  return st;
}
