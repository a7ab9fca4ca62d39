/* eval.h: the evaluation protocols of METHOD.md §7 on features already computed (cached in
 * host memory): segmentation scores, Hungarian matching, k-NN, the linear probe, the dense
 * linear probe and unsupervised segmentation by k-means. This library knows nothing about
 * backbones, datasets or files: the caller (`dsc eval`) extracts the features once and hands
 * them here.
 *
 * Conventions (hold for every function here):
 *  - Host memory. Features are float32 rows; dense features are NHWC (n, h5, w5, c), i.e.
 *    pixel (i, y, x) is the contiguous vector features[((i*h5 + y)*w5 + x)*c ...].
 *  - Label maps are uint8 (n, H, W); DSC_EVAL_IGNORE (255) marks pixels that are not scored
 *    and not trained on; any other value must be < classes (an error names the value).
 *    Class labels of whole images are int32 in [0, classes).
 *  - Predictions are int32 in [0, classes).
 *  - `be` is used only for its gemm (row-major, backend.h) and must be a host-memory backend
 *    (cpu or ref); NULL means a built-in blocked loop (slower, same results up to float
 *    rounding). Pass the cpu backend for real evaluations.
 *  - Everything is deterministic for a fixed backend and thread count: random draws (probe
 *    mini-batch order, k-means++ seeding) come from the counter RNG (rng.h) keyed by the
 *    configured seed; ties go to the smallest index.
 *  - Every function validates its arguments and returns an error naming the bad argument.
 *  - Accumulations (losses, scores, vote totals) are in double.
 */
#ifndef DSC_EVAL_H
#define DSC_EVAL_H

#include <stdint.h>

#include "backend/backend.h"
#include "dsc/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DSC_EVAL_IGNORE 255

/* ---- segmentation scores ---- */

/* A confusion matrix: counts[t*classes + p] = pixels of truth class t predicted as p
 * (row = truth, column = prediction); `ignored` = pixels whose truth is 255. */
typedef struct dsc_confusion {
  int classes;
  int64_t ignored;
  int64_t *counts; /* classes*classes, owned */
} dsc_confusion;

/* Allocates a zeroed classes x classes matrix (classes in [1, 254]). */
dsc_status *dsc_confusion_init(dsc_confusion *cm, int classes);
/* Frees counts; safe on a zeroed or already freed struct. */
void dsc_confusion_free(dsc_confusion *cm);
/* Adds `pixels` pixels: truth (uint8, 255 = ignore, else < classes) against pred (int32 in
 * [0, classes)). On error (a bad truth value or prediction, named with its index) the matrix
 * is left unchanged. */
dsc_status *dsc_confusion_add(dsc_confusion *cm, int64_t pixels, const uint8_t *truth,
                              const int32_t *pred);

/* Scores of a confusion matrix.
 *  iou[c] = TP / (TP + FP + FN), NaN when class c is absent from both truth and prediction;
 *  miou = mean of iou over the classes whose iou is not NaN (mmsegmentation's nanmean
 *         convention), NaN when there are none;
 *  pixel_acc = correct / labeled (labeled = non-ignored pixels), NaN when labeled = 0. */
typedef struct dsc_seg_scores {
  int classes;
  double *iou; /* classes, owned */
  double miou;
  double pixel_acc;
  int valid_classes; /* classes with a non-NaN iou */
  int64_t correct, labeled, ignored;
} dsc_seg_scores;

dsc_status *dsc_seg_scores_compute(const dsc_confusion *cm, dsc_seg_scores *out);
/* Frees iou; safe on a zeroed or already freed struct. */
void dsc_seg_scores_free(dsc_seg_scores *s);

/* ---- assignment ---- */

/* Maximum-weight assignment on weight (rows, cols) row-major, rows and cols >= 1 and
 * arbitrary (rectangular allowed): min(rows, cols) pairs, each row and column used at most
 * once, maximizing the total weight. row_to_col[r] = the column of row r, or -1 for an
 * unmatched row (only when rows > cols). *total (may be NULL) = the sum of the matched
 * weights. Weights must be finite. Hungarian algorithm with potentials, O(n^2 m). */
dsc_status *dsc_hungarian_max(int rows, int cols, const double *weight, int *row_to_col,
                              double *total);

/* The cluster-to-class mapping of unsupervised segmentation (METHOD.md §7): conf (clusters,
 * classes) row-major, conf[k*classes + c] = pixels of cluster k whose truth is c (ignored
 * pixels excluded). IoU(k, c) = conf[k,c] / (|cluster k| + |class c| - conf[k,c]) (0 when
 * the union is empty); Hungarian maximizes the total IoU. cluster_to_class[k] = the class
 * of cluster k, or -1 when clusters > classes and k is left unmatched. */
dsc_status *dsc_cluster_match(int clusters, int classes, const int64_t *conf,
                              int *cluster_to_class);

/* ---- bilinear upsampling (PyTorch F.interpolate(mode='bilinear', align_corners=False)) ----
 *
 * NHWC x (n, h, w, c) -> y (n, H, W, c), with the source coordinate of output row Y being
 * sy = max((Y + 0.5) * h / H - 0.5, 0), y0 = floor(sy), y1 = min(y0 + 1, h - 1),
 * ly = sy - y0, and likewise for columns; y = the bilinear blend of the 4 taps. */
dsc_status *dsc_upsample_bilinear(int64_t n, int h, int w, int c, const float *x, int H, int W,
                                  float *y);
/* The adjoint (the gradient of the upsampling): dx (n, h, w, c) = U^T dy, overwritten. */
dsc_status *dsc_upsample_bilinear_adjoint(int64_t n, int h, int w, int c, float *dx, int H,
                                          int W, const float *dy);

/* ---- k-NN (METHOD.md §7) ----
 *
 * Features are L2-normalized (copies; norm(x) = x / max(|x|, 1e-12)); similarity s = cosine;
 * for each test row the k most similar train rows (similarity ties: smaller train index)
 * vote for their label with weight exp(s / tau); the prediction is the class with the
 * largest vote total (ties: smallest class). pred (n_test) receives the predictions (may be
 * NULL); *top1 (may be NULL) = the fraction of test rows with pred == test_labels (requires
 * test_labels; NaN when test_labels is NULL). k in [1, n_train]; the similarities are
 * computed in blocks of test rows through gemm (be or the built-in loop), never a full
 * n_test x n_train matrix. METHOD.md: k = 20, tau = 0.07 (DSC_KNN_K, DSC_KNN_TAU). */
#define DSC_KNN_K 20
#define DSC_KNN_TAU 0.07
dsc_status *dsc_knn_classify(dsc_backend *be, int64_t n_train, int64_t n_test, int d,
                             const float *train, const int32_t *train_labels, const float *test,
                             const int32_t *test_labels, int classes, int k, double tau,
                             int32_t *pred, double *top1);

/* ---- linear probes ----
 *
 * Both probes: features standardized per channel with the TRAIN set's mean and std
 * (std floored at 1e-6; the same affine map applied to the test set), a linear classifier
 * W (classes, c), b (classes) initialized to zero, softmax cross-entropy (mean over the
 * batch's samples / non-ignored pixels) plus weight_decay/2 * |W|^2 (not on b), trained by
 * Adam (beta1 0.9, beta2 0.999, eps 1e-8) with a cosine learning-rate decay from lr to 0
 * over all steps, mini-batches drawn from a per-epoch permutation (Fisher-Yates with
 * dsc_rng_uniform(seed, DSC_RNG_SHUFFLE, epoch, i, 0xE7A1)); the last batch of an epoch may
 * be smaller. Predictions are argmax of the logits (ties: smallest class). */
typedef struct dsc_probe_config {
  int epochs;          /* >= 1 */
  int batch;           /* samples (linear) or label maps (dense) per step, >= 1 */
  double lr;           /* peak learning rate, > 0 */
  double weight_decay; /* >= 0 */
  uint64_t seed;
} dsc_probe_config;

/* Defaults: linear {epochs 100, batch 256, lr 1e-3, wd 1e-4, seed 0};
 *           dense  {epochs 20, batch 16, lr 1e-3, wd 1e-4, seed 0}. */
dsc_probe_config dsc_linear_probe_defaults(void);
dsc_probe_config dsc_dense_probe_defaults(void);

typedef struct dsc_linear_probe_result {
  double train_loss; /* mean cross-entropy (without weight decay) on the train set at the end */
  double train_top1; /* on the train set with the final classifier */
  double test_top1;  /* NaN when test_labels is NULL */
} dsc_linear_probe_result;

/* Multinomial logistic regression on pooled features train (n_train, d) with labels in
 * [0, classes), evaluated on test (n_test, d) (n_test may be 0). test_pred (n_test) may be
 * NULL. The trained classifier itself: dsc_linear_probe_fit (include/dsc/probe_file.h), which
 * returns it in raw pooled-feature space. */
dsc_status *dsc_linear_probe(dsc_backend *be, const dsc_probe_config *cfg, int64_t n_train,
                             int64_t n_test, int d, int classes, const float *train,
                             const int32_t *train_labels, const float *test,
                             const int32_t *test_labels, int32_t *test_pred,
                             dsc_linear_probe_result *out);

/* A set of dense features with their label maps: features (n, h5, w5, c) NHWC, labels
 * (n, H, W) uint8 (255 = ignore). The label size may differ from the feature size in
 * either direction. */
typedef struct dsc_dense_set {
  int64_t n;
  int h5, w5, c;
  const float *features;
  int H, W;
  const uint8_t *labels;
} dsc_dense_set;

typedef struct dsc_dense_probe_result {
  double train_loss;   /* mean cross-entropy over the last epoch's batches */
  dsc_seg_scores test; /* scores of the test set's predictions (owned: dsc_seg_scores_free) */
} dsc_dense_probe_result;

/* The dense linear probe (METHOD.md §7): a 1x1 conv classifier W (classes, c), b on the
 * (standardized) C5 features, logits computed at C5 resolution and bilinearly upsampled to
 * the label map (dsc_upsample_bilinear). Upsampling the logits equals upsampling the
 * features then applying the 1x1 conv, because both maps are linear and the bilinear weights
 * sum to 1 (so the bias passes through unchanged); computing at C5 resolution is cheaper.
 * Loss: softmax cross-entropy per label pixel, ignore 255, mean over the batch's
 * non-ignored pixels; its gradient flows to the C5 logits through the upsampling's adjoint.
 * train and test must have the same c; their sizes may differ. test_pred (test->n, H, W)
 * may be NULL; test_confusion (may be NULL) must be initialized with `classes` and is
 * accumulated into; out->test holds the test scores. */
dsc_status *dsc_dense_probe(dsc_backend *be, const dsc_probe_config *cfg, int classes,
                            const dsc_dense_set *train, const dsc_dense_set *test,
                            int32_t *test_pred, dsc_confusion *test_confusion,
                            dsc_dense_probe_result *out);
void dsc_dense_probe_result_free(dsc_dense_probe_result *r);

/* ---- unsupervised segmentation (METHOD.md §7) ---- */

typedef struct dsc_cluster_config {
  int iters;     /* maximum k-means iterations (stops earlier when no assignment changes) */
  uint64_t seed; /* k-means++ seeding */
} dsc_cluster_config;

/* Defaults: {iters 100, seed 0}. */
dsc_cluster_config dsc_cluster_defaults(void);

/* Spherical k-means with K = classes on the L2-normalized C5 pixel vectors of `set` (all
 * n*h5*w5 of them): k-means++ seeding (first centroid uniform, then each next one drawn
 * with probability proportional to 1 - max cosine to the chosen ones, draws from
 * dsc_rng_uniform(seed, DSC_RNG_KMEANS, 0xE7A1, t, 0)), then iterations of assign = argmax
 * cosine (ties: smallest cluster) and centroid = norm(mean of its pixels) (an empty
 * cluster keeps its centroid). Each label pixel's cluster is the argmax of the bilinearly
 * upsampled one-hot cluster maps (bilinear-of-one-hot, ties: smallest cluster; equal to
 * nearest assignment when h5 = H and w5 = W). Clusters are matched to classes by
 * dsc_cluster_match on the cluster-vs-class confusion of the non-ignored pixels.
 * test_pred (set->n, H, W) receives the mapped class of every pixel (may be NULL);
 * cluster_to_class (classes) may be NULL; out holds the scores (dsc_seg_scores_free). */
dsc_status *dsc_cluster_seg(dsc_backend *be, const dsc_cluster_config *cfg, int classes,
                            const dsc_dense_set *set, int32_t *pred, int *cluster_to_class,
                            dsc_seg_scores *out);

#ifdef __cplusplus
}
#endif

#endif
