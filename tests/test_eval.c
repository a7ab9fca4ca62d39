/* test_eval.c: the evaluation library (include/dsc/eval.h) against hand-computed cases:
 * confusion/IoU/mIoU/pixel accuracy with an empty class and ignore pixels, Hungarian on small
 * matrices with known optima and against brute force, bilinear upsampling (PyTorch
 * align_corners=False) and its adjoint, k-NN's weighted vote, the linear probe, the dense
 * probe on a task that is linear in the features, and cluster segmentation on one-hot
 * features. All synthetic data comes from the counter RNG, so runs are deterministic.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "dsc/eval.h"
#include "dsc/rng.h"
#include "test.h"

static void test_scores_hand(void) {
  /* 3 classes; class 2 appears only at ignored pixels, so its IoU is NaN. */
  const uint8_t truth[9] = {0, 0, 1, 1, 255, 0, 255, 1, 1};
  const int32_t pred[9] = {0, 1, 1, 1, 2, 0, 0, 0, 1};
  dsc_confusion cm;
  CHECK_OK(dsc_confusion_init(&cm, 3));
  CHECK_OK(dsc_confusion_add(&cm, 9, truth, pred));
  const int64_t want[9] = {2, 1, 0, 1, 3, 0, 0, 0, 0};
  for (int i = 0; i < 9; i++) CHECK(cm.counts[i] == want[i], "counts[%d] = %lld", i, (long long)cm.counts[i]);
  CHECK(cm.ignored == 2, "ignored %lld", (long long)cm.ignored);
  dsc_seg_scores s;
  CHECK_OK(dsc_seg_scores_compute(&cm, &s));
  /* class 0: TP 2, row 3, col 3 -> 2/4; class 1: TP 3, row 4, col 4 -> 3/5. */
  CHECK(fabs(s.iou[0] - 0.5) < 1e-12, "iou0 %g", s.iou[0]);
  CHECK(fabs(s.iou[1] - 0.6) < 1e-12, "iou1 %g", s.iou[1]);
  CHECK(isnan(s.iou[2]), "iou2 %g", s.iou[2]);
  CHECK(s.valid_classes == 2, "valid %d", s.valid_classes);
  CHECK(fabs(s.miou - 0.55) < 1e-12, "miou %g", s.miou);
  CHECK(fabs(s.pixel_acc - 5.0 / 7.0) < 1e-12, "acc %g", s.pixel_acc);
  CHECK(s.correct == 5 && s.labeled == 7 && s.ignored == 2, "counts %lld %lld %lld",
        (long long)s.correct, (long long)s.labeled, (long long)s.ignored);
  dsc_seg_scores_free(&s);

  /* Errors name the value and leave the matrix unchanged. */
  const uint8_t bad_t[2] = {0, 7};
  const int32_t bad_p[2] = {0, 0};
  CHECK_ERR(dsc_confusion_add(&cm, 2, bad_t, bad_p), "truth[1] = 7");
  const uint8_t ok_t[2] = {0, 1};
  const int32_t neg_p[2] = {0, -1};
  CHECK_ERR(dsc_confusion_add(&cm, 2, ok_t, neg_p), "pred[1] = -1");
  CHECK(cm.counts[0] == 2, "matrix changed by a failed add");
  dsc_confusion_free(&cm);
  dsc_confusion_free(&cm);
  CHECK_ERR(dsc_confusion_init(&cm, 0), "classes");
  CHECK_ERR(dsc_confusion_init(&cm, 255), "classes");
}

static void check_assign(int rows, int cols, const double *w, const int *want, double want_total) {
  int got[8];
  double total = 0;
  CHECK_OK(dsc_hungarian_max(rows, cols, w, got, &total));
  CHECK(fabs(total - want_total) < 1e-12, "%dx%d total %g, want %g", rows, cols, total, want_total);
  for (int r = 0; r < rows; r++) CHECK(got[r] == want[r], "%dx%d row %d -> %d, want %d", rows, cols, r, got[r], want[r]);
}

static void test_hungarian_small(void) {
  const double a[9] = {1, 2, 3, 3, 1, 2, 2, 3, 1};
  const int wa[3] = {2, 0, 1};
  check_assign(3, 3, a, wa, 9);
  const double b[8] = {1, 9, 3, 4, 8, 9, 2, 1};
  const int wb[2] = {1, 0};
  check_assign(2, 4, b, wb, 17);
  const double c[8] = {1, 8, 9, 9, 3, 2, 4, 1}; /* the transpose of b */
  const int wc[4] = {1, 0, -1, -1};
  check_assign(4, 2, c, wc, 17);
  const double one[1] = {-5};
  const int wone[1] = {0};
  check_assign(1, 1, one, wone, -5);
  int r2c[2];
  const double inf[2] = {1, INFINITY};
  CHECK_ERR(dsc_hungarian_max(1, 2, inf, r2c, NULL), "weight[1]");
  CHECK_ERR(dsc_hungarian_max(0, 2, inf, r2c, NULL), "rows");
}

static double brute_best(int n, const double *w, int *perm, int depth, double acc, int used) {
  if (depth == n) return acc;
  double best = -INFINITY;
  for (int j = 0; j < n; j++) {
    if (used & (1 << j)) continue;
    perm[depth] = j;
    double v = brute_best(n, w, perm, depth + 1, acc + w[depth * n + j], used | (1 << j));
    if (v > best) best = v;
  }
  return best;
}

static void test_hungarian_brute(void) {
  for (int t = 0; t < 20; t++) {
    double w[36];
    for (int i = 0; i < 36; i++) {
      double u = dsc_rng_uniform(11, DSC_RNG_BENCH, (uint32_t)t, (uint32_t)i, 0);
      w[i] = t % 2 ? floor(u * 5) : u * 10 - 3; /* integer weights give ties */
    }
    int perm[6], got[6];
    double want = brute_best(6, w, perm, 0, 0, 0), total;
    CHECK_OK(dsc_hungarian_max(6, 6, w, got, &total));
    CHECK(fabs(total - want) < 1e-9, "trial %d: total %.12g, brute force %.12g", t, total, want);
    int seen = 0;
    for (int r = 0; r < 6; r++) {
      CHECK(got[r] >= 0 && got[r] < 6 && !(seen & (1 << got[r])), "trial %d: not a permutation", t);
      if (got[r] >= 0 && got[r] < 6) seen |= 1 << got[r];
    }
  }
}

static void test_cluster_match(void) {
  /* Clusters are a relabeling of the classes: cluster 0 = class 2, 1 = 0, 2 = 1. */
  const int64_t conf[9] = {1, 0, 9, 8, 1, 0, 0, 7, 2};
  int map[3];
  CHECK_OK(dsc_cluster_match(3, 3, conf, map));
  CHECK(map[0] == 2 && map[1] == 0 && map[2] == 1, "map %d %d %d", map[0], map[1], map[2]);
  const int64_t neg[1] = {-1};
  CHECK_ERR(dsc_cluster_match(1, 1, neg, map), "conf[0][0]");
}

static void test_upsample(void) {
  const float x[4] = {0, 1, 2, 3};
  const float want[16] = {0,   0.25f, 0.75f, 1,    0.5f, 0.75f, 1.25f, 1.5f,
                          1.5f, 1.75f, 2.25f, 2.5f, 2,    2.25f, 2.75f, 3};
  float y[16];
  CHECK_OK(dsc_upsample_bilinear(1, 2, 2, 1, x, 4, 4, y));
  for (int i = 0; i < 16; i++) CHECK(fabsf(y[i] - want[i]) < 1e-6f, "y[%d] = %g, want %g", i, y[i], want[i]);
  /* Adjoint: <U a, b> = <a, U^T b>, also for a shrinking axis and several channels. */
  enum { N = 2, H = 3, W = 5, C = 3, OH = 7, OW = 4 };
  float a[N * H * W * C], ua[N * OH * OW * C], b[N * OH * OW * C], utb[N * H * W * C];
  for (int i = 0; i < N * H * W * C; i++) a[i] = (float)dsc_rng_normal(3, DSC_RNG_BENCH, 1, i, 0);
  for (int i = 0; i < N * OH * OW * C; i++) b[i] = (float)dsc_rng_normal(3, DSC_RNG_BENCH, 2, i, 0);
  CHECK_OK(dsc_upsample_bilinear(N, H, W, C, a, OH, OW, ua));
  CHECK_OK(dsc_upsample_bilinear_adjoint(N, H, W, C, utb, OH, OW, b));
  double l = 0, r = 0;
  for (int i = 0; i < N * OH * OW * C; i++) l += (double)ua[i] * b[i];
  for (int i = 0; i < N * H * W * C; i++) r += (double)a[i] * utb[i];
  CHECK(fabs(l - r) < 1e-4 * (fabs(l) + 1), "<Ua,b> %g != <a,U^T b> %g", l, r);
  CHECK_ERR(dsc_upsample_bilinear(1, 0, 2, 1, x, 4, 4, y), "input size");
}

static void test_knn_hand(void) {
  /* Class 0: one train point at angle 0; class 1: two at angle 0.6 rad (scaled, to check the
   * normalization). The test point at angle 0.1 has class 1 as its plain k = 3 majority, but
   * exp(s / 0.07) makes the single much closer class-0 neighbor win. */
  const float train[6] = {2 * cosf(0.6f), 2 * sinf(0.6f), 5, 0, 0.5f * cosf(0.6f), 0.5f * sinf(0.6f)};
  const int32_t tl[3] = {1, 0, 1};
  const float test[2] = {cosf(0.1f), sinf(0.1f)};
  const int32_t want0[1] = {0};
  int32_t pred[1];
  double top1;
  CHECK_OK(dsc_knn_classify(NULL, 3, 1, 2, train, tl, test, want0, 2, 3, DSC_KNN_TAU, pred, &top1));
  CHECK(pred[0] == 0 && top1 == 1.0, "weighted vote: pred %d top1 %g", pred[0], top1);
  CHECK_OK(dsc_knn_classify(NULL, 3, 1, 2, train, tl, test, want0, 2, 3, 100.0, pred, &top1));
  CHECK(pred[0] == 1 && top1 == 0.0, "near-uniform vote: pred %d top1 %g", pred[0], top1);
  CHECK_OK(dsc_knn_classify(NULL, 3, 1, 2, train, tl, test, NULL, 2, 1, DSC_KNN_TAU, pred, &top1));
  CHECK(pred[0] == 0 && isnan(top1), "k = 1: pred %d", pred[0]);
  /* Equal vote totals go to the smallest class (class 1 listed first). */
  const float tie[4] = {1, 0, 1, 0};
  const int32_t tiel[2] = {1, 0};
  CHECK_OK(dsc_knn_classify(NULL, 2, 1, 2, tie, tiel, test, NULL, 2, 2, DSC_KNN_TAU, pred, NULL));
  CHECK(pred[0] == 0, "tie: pred %d", pred[0]);
  CHECK_ERR(dsc_knn_classify(NULL, 3, 1, 2, train, tl, test, NULL, 2, 4, DSC_KNN_TAU, pred, NULL), "k = 4");
  const int32_t badl[3] = {1, 0, 2};
  CHECK_ERR(dsc_knn_classify(NULL, 3, 1, 2, train, badl, test, NULL, 2, 1, DSC_KNN_TAU, pred, NULL),
            "train_labels[2] = 2");
}

/* Gaussian blobs: sample i of class y = mean_y + noise, means on the first coordinates. */
static void blobs(int n, int d, int classes, double sep, uint32_t stream, float *x, int32_t *y) {
  for (int i = 0; i < n; i++) {
    y[i] = i % classes;
    for (int j = 0; j < d; j++) {
      double m = (j == y[i]) ? sep : 0;
      x[(size_t)i * d + j] = (float)(m + 1.0 + dsc_rng_normal(5, DSC_RNG_BENCH, stream, i, j));
    }
  }
}

static void test_linear_probe(void) {
  enum { D = 8, NTR = 400, NTE = 200 };
  static float xtr[NTR * D], xte[NTE * D];
  static int32_t ytr[NTR], yte[NTE], pred[NTE];
  dsc_probe_config cfg = dsc_linear_probe_defaults();
  cfg.batch = 64;
  cfg.epochs = 30;
  cfg.lr = 1e-2;
  dsc_linear_probe_result r;
  /* Two blobs 10 sigma apart along a shifted axis: linearly separable. */
  blobs(NTR, D, 2, 10.0, 1, xtr, ytr);
  blobs(NTE, D, 2, 10.0, 2, xte, yte);
  CHECK_OK(dsc_linear_probe(NULL, &cfg, NTR, NTE, D, 2, xtr, ytr, xte, yte, pred, &r));
  CHECK(r.test_top1 == 1.0 && r.train_top1 == 1.0, "2 blobs: train %g test %g", r.train_top1, r.test_top1);
  int agree = 1;
  for (int i = 0; i < NTE; i++) agree &= pred[i] == yte[i];
  CHECK(agree, "predictions differ from the labels");
  /* Three classes, 4 sigma apart. */
  blobs(NTR, D, 3, 4.0, 3, xtr, ytr);
  blobs(NTE, D, 3, 4.0, 4, xte, yte);
  CHECK_OK(dsc_linear_probe(NULL, &cfg, NTR, NTE, D, 3, xtr, ytr, xte, yte, pred, &r));
  CHECK(r.test_top1 > 0.95 && r.train_top1 > 0.95 && r.train_loss < 0.3, "3 blobs: train %g test %g loss %g",
        r.train_top1, r.test_top1, r.train_loss);
  /* Deterministic: a second run gives identical predictions. */
  int32_t pred2[NTE];
  dsc_linear_probe_result r2;
  CHECK_OK(dsc_linear_probe(NULL, &cfg, NTR, NTE, D, 3, xtr, ytr, xte, yte, pred2, &r2));
  CHECK(memcmp(pred, pred2, sizeof pred2) == 0 && r.train_loss == r2.train_loss, "not deterministic");
  cfg.epochs = 0;
  CHECK_ERR(dsc_linear_probe(NULL, &cfg, NTR, NTE, D, 3, xtr, ytr, xte, yte, pred, &r), "cfg->epochs");
}

/* Dense task: features (n, 4, 4, C) random; label = argmax of the bilinearly upsampled
 * A f + a (8 x 8), so the class is exactly a linear function of the upsampled feature. */
static void dense_task(int n, uint32_t stream, float *f, uint8_t *lab, const float *A, const float *a) {
  enum { C = 8, K = 3 };
  for (int i = 0; i < n * 16 * C; i++) f[i] = (float)dsc_rng_normal(9, DSC_RNG_BENCH, stream, i, 0);
  float *z = malloc((size_t)n * 16 * K * sizeof *z), *up = malloc((size_t)n * 64 * K * sizeof *up);
  for (int p = 0; p < n * 16; p++)
    for (int k = 0; k < K; k++) {
      float s = a[k];
      for (int j = 0; j < C; j++) s += A[k * C + j] * f[p * C + j];
      z[p * K + k] = s;
    }
  CHECK_OK(dsc_upsample_bilinear(n, 4, 4, K, z, 8, 8, up));
  for (int q = 0; q < n * 64; q++) {
    int best = 0;
    for (int k = 1; k < K; k++)
      if (up[q * K + k] > up[q * K + best]) best = k;
    lab[q] = (q % 29 == 0) ? 255 : (uint8_t)best;
  }
  free(z);
  free(up);
}

static void test_dense_probe(void) {
  enum { C = 8, K = 3, NTR = 200, NTE = 50 };
  float A[K * C], a[K] = {0.3f, 0.0f, -0.2f};
  for (int i = 0; i < K * C; i++) A[i] = (float)dsc_rng_normal(9, DSC_RNG_BENCH, 100, i, 0);
  static float ftr[NTR * 16 * C], fte[NTE * 16 * C];
  static uint8_t ltr[NTR * 64], lte[NTE * 64];
  static int32_t pred[NTE * 64];
  dense_task(NTR, 1, ftr, ltr, A, a);
  dense_task(NTE, 2, fte, lte, A, a);
  dsc_dense_set tr = {NTR, 4, 4, C, ftr, 8, 8, ltr}, te = {NTE, 4, 4, C, fte, 8, 8, lte};
  dsc_probe_config cfg = dsc_dense_probe_defaults();
  cfg.epochs = 30;
  cfg.lr = 3e-2;
  dsc_confusion cm;
  CHECK_OK(dsc_confusion_init(&cm, K));
  dsc_dense_probe_result r;
  CHECK_OK(dsc_dense_probe(NULL, &cfg, K, &tr, &te, pred, &cm, &r));
  CHECK(r.test.miou > 0.9 && r.test.pixel_acc > 0.95, "dense probe: mIoU %g acc %g loss %g",
        r.test.miou, r.test.pixel_acc, r.train_loss);
  CHECK(r.test.ignored > 0 && cm.ignored == r.test.ignored, "ignored %lld", (long long)r.test.ignored);
  int64_t ok = 0, lab = 0;
  for (int q = 0; q < NTE * 64; q++)
    if (lte[q] != 255) {
      lab++;
      ok += pred[q] == lte[q];
    }
  CHECK(fabs((double)ok / lab - r.test.pixel_acc) < 1e-12, "test_pred disagrees with the scores");
  printf("  dense probe: mIoU %.4f pixel acc %.4f train loss %.4f\n", r.test.miou, r.test.pixel_acc,
         r.train_loss);
  dsc_dense_probe_result_free(&r);
  te.c = 4;
  CHECK_ERR(dsc_dense_probe(NULL, &cfg, K, &tr, &te, pred, NULL, &r), "test->c = 4");
  te.c = C;
  ltr[5] = 9;
  CHECK_ERR(dsc_dense_probe(NULL, &cfg, K, &tr, &te, pred, NULL, &r), "train->labels[5]");
  dsc_confusion_free(&cm);
}

static void test_cluster_seg(void) {
  /* Features are the class one-hots (scaled by varying positive factors); classes are a
   * checkerboard-ish pattern, with some ignore pixels whose features are arbitrary. */
  enum { N = 6, S = 4, K = 4 };
  static float f[N * S * S * K];
  static uint8_t lab[N * S * S];
  static int32_t pred[N * S * S];
  for (int q = 0; q < N * S * S; q++) {
    int cls = (q * 7 + q / 5) % K;
    for (int k = 0; k < K; k++) f[q * K + k] = k == cls ? (float)(1 + q % 3) : 0.0f;
    lab[q] = q % 11 == 0 ? 255 : (uint8_t)cls;
  }
  dsc_dense_set set = {N, S, S, K, f, S, S, lab};
  dsc_cluster_config cfg = dsc_cluster_defaults();
  dsc_seg_scores s;
  int map[K];
  CHECK_OK(dsc_cluster_seg(NULL, &cfg, K, &set, pred, map, &s));
  CHECK(s.miou == 1.0 && s.pixel_acc == 1.0, "cluster seg: mIoU %g acc %g", s.miou, s.pixel_acc);
  for (int q = 0; q < N * S * S; q++)
    if (lab[q] != 255) CHECK(pred[q] == lab[q], "pred[%d] = %d, truth %d", q, pred[q], lab[q]);
  dsc_seg_scores_free(&s);
  cfg.iters = 0;
  CHECK_ERR(dsc_cluster_seg(NULL, &cfg, K, &set, pred, map, &s), "cfg->iters");
}

/* The cpu backend's gemm gives the same k-NN predictions and probe accuracies. */
static void test_cpu_backend(void) {
  dsc_backend *be = NULL;
  CHECK_OK(dsc_backend_cpu_new(2, &be));
  if (!be) return;
  enum { D = 16, NTR = 300, NTE = 100 };
  static float xtr[NTR * D], xte[NTE * D];
  static int32_t ytr[NTR], yte[NTE], p0[NTE], p1[NTE];
  blobs(NTR, D, 3, 2.0, 7, xtr, ytr);
  blobs(NTE, D, 3, 2.0, 8, xte, yte);
  double t0, t1;
  CHECK_OK(dsc_knn_classify(NULL, NTR, NTE, D, xtr, ytr, xte, yte, 3, DSC_KNN_K, DSC_KNN_TAU, p0, &t0));
  CHECK_OK(dsc_knn_classify(be, NTR, NTE, D, xtr, ytr, xte, yte, 3, DSC_KNN_K, DSC_KNN_TAU, p1, &t1));
  CHECK(t0 == t1 && t0 > 0.6, "knn top1 loop %g cpu %g", t0, t1);
  dsc_probe_config cfg = dsc_linear_probe_defaults();
  cfg.epochs = 20;
  dsc_linear_probe_result r;
  CHECK_OK(dsc_linear_probe(be, &cfg, NTR, NTE, D, 3, xtr, ytr, xte, yte, p1, &r));
  CHECK(r.test_top1 > 0.6, "linear probe on cpu: %g", r.test_top1);
  be->destroy(be);
}

static const dsc_test tests[] = {
    {"scores_hand", test_scores_hand},       {"hungarian_small", test_hungarian_small},
    {"hungarian_brute", test_hungarian_brute}, {"cluster_match", test_cluster_match},
    {"upsample", test_upsample},             {"knn_hand", test_knn_hand},
    {"linear_probe", test_linear_probe},     {"dense_probe", test_dense_probe},
    {"cluster_seg", test_cluster_seg},       {"cpu_backend", test_cpu_backend},
};

TEST_MAIN(tests)
