/* metrics.c: segmentation scores (confusion matrix, IoU, mIoU, pixel accuracy), the
 * Hungarian assignment and the cluster-to-class matching of unsupervised segmentation,
 * PyTorch-exact bilinear upsampling (align_corners=False) and its adjoint, and the eval
 * library's gemm fallback. Conventions: include/dsc/eval.h.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dsc/eval.h"
#include "eval/eval_internal.h"

/* ---- gemm and normalization helpers ---- */

dsc_status *eval_gemm(dsc_backend *be, int trans_a, int trans_b, int m, int n, int k,
                      float alpha, const float *a, int lda, const float *b, int ldb, float beta,
                      float *c, int ldc) {
  if (m <= 0 || n <= 0) return NULL;
  if (be) return be->gemm(be, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
#pragma omp parallel for schedule(static)
  for (int i = 0; i < m; i++) {
    float *ci = c + (size_t)i * ldc;
    if (trans_b) {
      /* B(p, j) = b[j*ldb + p]: dot products over p. */
      for (int j = 0; j < n; j++) {
        const float *bj = b + (size_t)j * ldb;
        float s = 0;
        if (!trans_a) {
          const float *ai = a + (size_t)i * lda;
          for (int p = 0; p < k; p++) s += ai[p] * bj[p];
        } else {
          for (int p = 0; p < k; p++) s += a[(size_t)p * lda + i] * bj[p];
        }
        ci[j] = alpha * s + (beta == 0.0f ? 0.0f : beta * ci[j]);
      }
    } else {
      /* B(p, j) = b[p*ldb + j]: accumulate rows of B. */
      if (beta == 0.0f) {
        for (int j = 0; j < n; j++) ci[j] = 0;
      } else if (beta != 1.0f) {
        for (int j = 0; j < n; j++) ci[j] *= beta;
      }
      for (int p = 0; p < k; p++) {
        float aip = alpha * (trans_a ? a[(size_t)p * lda + i] : a[(size_t)i * lda + p]);
        if (aip == 0.0f) continue;
        const float *bp = b + (size_t)p * ldb;
        for (int j = 0; j < n; j++) ci[j] += aip * bp[j];
      }
    }
  }
  return NULL;
}

void eval_l2norm_rows(int64_t rows, int d, const float *x, float *y) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = x + (size_t)r * d;
    float *yr = y + (size_t)r * d;
    double ss = 0;
    for (int j = 0; j < d; j++) ss += (double)xr[j] * xr[j];
    double nrm = sqrt(ss);
    float inv = (float)(1.0 / (nrm > 1e-12 ? nrm : 1e-12));
    for (int j = 0; j < d; j++) yr[j] = xr[j] * inv;
  }
}

/* ---- confusion and scores ---- */

dsc_status *dsc_confusion_init(dsc_confusion *cm, int classes) {
  if (!cm) return dsc_errorf("dsc_confusion_init: cm is NULL");
  memset(cm, 0, sizeof *cm);
  if (classes < 1 || classes > 254)
    return dsc_errorf("dsc_confusion_init: classes = %d, must be in [1, 254]", classes);
  cm->counts = calloc((size_t)classes * classes, sizeof *cm->counts);
  if (!cm->counts) return dsc_errorf("dsc_confusion_init: out of memory (%d classes)", classes);
  cm->classes = classes;
  return NULL;
}

void dsc_confusion_free(dsc_confusion *cm) {
  if (!cm) return;
  free(cm->counts);
  cm->counts = NULL;
  cm->classes = 0;
  cm->ignored = 0;
}

dsc_status *dsc_confusion_add(dsc_confusion *cm, int64_t pixels, const uint8_t *truth,
                              const int32_t *pred) {
  if (!cm || !cm->counts || cm->classes < 1)
    return dsc_errorf("dsc_confusion_add: cm is not initialized (dsc_confusion_init)");
  if (pixels < 0) return dsc_errorf("dsc_confusion_add: pixels = %lld < 0", (long long)pixels);
  if (pixels > 0 && (!truth || !pred))
    return dsc_errorf("dsc_confusion_add: %s is NULL", truth ? "pred" : "truth");
  int K = cm->classes;
  /* Validate everything first so that an error leaves the matrix unchanged. */
  for (int64_t i = 0; i < pixels; i++) {
    if (truth[i] != DSC_EVAL_IGNORE && truth[i] >= K)
      return dsc_errorf("dsc_confusion_add: truth[%lld] = %d is neither 255 (ignore) nor a "
                        "class < %d",
                        (long long)i, truth[i], K);
    if (truth[i] != DSC_EVAL_IGNORE && (pred[i] < 0 || pred[i] >= K))
      return dsc_errorf("dsc_confusion_add: pred[%lld] = %d is not a class in [0, %d)",
                        (long long)i, pred[i], K);
  }
  for (int64_t i = 0; i < pixels; i++) {
    if (truth[i] == DSC_EVAL_IGNORE)
      cm->ignored++;
    else
      cm->counts[(size_t)truth[i] * K + pred[i]]++;
  }
  return NULL;
}

dsc_status *dsc_seg_scores_compute(const dsc_confusion *cm, dsc_seg_scores *out) {
  if (!out) return dsc_errorf("dsc_seg_scores_compute: out is NULL");
  memset(out, 0, sizeof *out);
  if (!cm || !cm->counts || cm->classes < 1)
    return dsc_errorf("dsc_seg_scores_compute: cm is not initialized (dsc_confusion_init)");
  int K = cm->classes;
  out->iou = malloc((size_t)K * sizeof *out->iou);
  if (!out->iou) return dsc_errorf("dsc_seg_scores_compute: out of memory");
  out->classes = K;
  out->ignored = cm->ignored;
  double sum = 0;
  for (int c = 0; c < K; c++) {
    int64_t tp = cm->counts[(size_t)c * K + c], row = 0, col = 0;
    for (int j = 0; j < K; j++) {
      row += cm->counts[(size_t)c * K + j];
      col += cm->counts[(size_t)j * K + c];
    }
    out->correct += tp;
    out->labeled += row;
    int64_t uni = row + col - tp;
    if (uni == 0) {
      out->iou[c] = NAN;
    } else {
      out->iou[c] = (double)tp / (double)uni;
      sum += out->iou[c];
      out->valid_classes++;
    }
  }
  out->miou = out->valid_classes ? sum / out->valid_classes : NAN;
  out->pixel_acc = out->labeled ? (double)out->correct / (double)out->labeled : NAN;
  return NULL;
}

void dsc_seg_scores_free(dsc_seg_scores *s) {
  if (!s) return;
  free(s->iou);
  s->iou = NULL;
}

/* ---- Hungarian assignment ---- */

/* Minimum-cost assignment of every row to a distinct column, n <= m, cost (n, m) row-major
 * in double: the shortest augmenting path method with potentials (u rows, v columns),
 * 1-indexed with column 0 as the virtual start. match_col[j] = row of column j (0 = none). */
static void hungarian_min(int n, int m, const double *cost, int *row_to_col) {
  double *u = calloc((size_t)n + 1, sizeof *u), *v = calloc((size_t)m + 1, sizeof *v);
  double *minv = malloc(((size_t)m + 1) * sizeof *minv);
  int *p = calloc((size_t)m + 1, sizeof *p), *way = calloc((size_t)m + 1, sizeof *way);
  char *used = malloc((size_t)m + 1);
  for (int i = 1; i <= n; i++) {
    p[0] = i;
    int j0 = 0;
    for (int j = 0; j <= m; j++) {
      minv[j] = INFINITY;
      used[j] = 0;
    }
    do {
      used[j0] = 1;
      int i0 = p[j0], j1 = -1;
      double delta = INFINITY;
      for (int j = 1; j <= m; j++) {
        if (used[j]) continue;
        double cur = cost[(size_t)(i0 - 1) * m + (j - 1)] - u[i0] - v[j];
        if (cur < minv[j]) {
          minv[j] = cur;
          way[j] = j0;
        }
        if (minv[j] < delta) {
          delta = minv[j];
          j1 = j;
        }
      }
      for (int j = 0; j <= m; j++) {
        if (used[j]) {
          u[p[j]] += delta;
          v[j] -= delta;
        } else {
          minv[j] -= delta;
        }
      }
      j0 = j1;
    } while (p[j0] != 0);
    do {
      int j1 = way[j0];
      p[j0] = p[j1];
      j0 = j1;
    } while (j0);
  }
  for (int i = 0; i < n; i++) row_to_col[i] = -1;
  for (int j = 1; j <= m; j++)
    if (p[j]) row_to_col[p[j] - 1] = j - 1;
  free(u);
  free(v);
  free(minv);
  free(p);
  free(way);
  free(used);
}

dsc_status *dsc_hungarian_max(int rows, int cols, const double *weight, int *row_to_col,
                              double *total) {
  if (rows < 1) return dsc_errorf("dsc_hungarian_max: rows = %d, must be >= 1", rows);
  if (cols < 1) return dsc_errorf("dsc_hungarian_max: cols = %d, must be >= 1", cols);
  if (!weight) return dsc_errorf("dsc_hungarian_max: weight is NULL");
  if (!row_to_col) return dsc_errorf("dsc_hungarian_max: row_to_col is NULL");
  for (int64_t i = 0; i < (int64_t)rows * cols; i++)
    if (!isfinite(weight[i]))
      return dsc_errorf("dsc_hungarian_max: weight[%lld] (row %lld, col %lld) is not finite",
                        (long long)i, (long long)(i / cols), (long long)(i % cols));
  int transpose = rows > cols;
  int n = transpose ? cols : rows, m = transpose ? rows : cols;
  double *cost = malloc((size_t)n * m * sizeof *cost);
  int *assign = malloc((size_t)n * sizeof *assign);
  if (!cost || !assign) {
    free(cost);
    free(assign);
    return dsc_errorf("dsc_hungarian_max: out of memory (%d x %d)", rows, cols);
  }
  for (int i = 0; i < n; i++)
    for (int j = 0; j < m; j++)
      cost[(size_t)i * m + j] =
          -(transpose ? weight[(size_t)j * cols + i] : weight[(size_t)i * cols + j]);
  hungarian_min(n, m, cost, assign);
  if (!transpose) {
    for (int r = 0; r < rows; r++) row_to_col[r] = assign[r];
  } else {
    for (int r = 0; r < rows; r++) row_to_col[r] = -1;
    for (int c = 0; c < cols; c++) row_to_col[assign[c]] = c;
  }
  if (total) {
    double t = 0;
    for (int r = 0; r < rows; r++)
      if (row_to_col[r] >= 0) t += weight[(size_t)r * cols + row_to_col[r]];
    *total = t;
  }
  free(cost);
  free(assign);
  return NULL;
}

dsc_status *dsc_cluster_match(int clusters, int classes, const int64_t *conf,
                              int *cluster_to_class) {
  if (clusters < 1) return dsc_errorf("dsc_cluster_match: clusters = %d, must be >= 1", clusters);
  if (classes < 1) return dsc_errorf("dsc_cluster_match: classes = %d, must be >= 1", classes);
  if (!conf) return dsc_errorf("dsc_cluster_match: conf is NULL");
  if (!cluster_to_class) return dsc_errorf("dsc_cluster_match: cluster_to_class is NULL");
  int64_t *rs = calloc((size_t)clusters, sizeof *rs), *cs = calloc((size_t)classes, sizeof *cs);
  double *iou = malloc((size_t)clusters * classes * sizeof *iou);
  if (!rs || !cs || !iou) {
    free(rs);
    free(cs);
    free(iou);
    return dsc_errorf("dsc_cluster_match: out of memory");
  }
  dsc_status *st = NULL;
  for (int k = 0; k < clusters && !st; k++)
    for (int c = 0; c < classes; c++) {
      int64_t x = conf[(size_t)k * classes + c];
      if (x < 0) {
        st = dsc_errorf("dsc_cluster_match: conf[%d][%d] = %lld < 0", k, c, (long long)x);
        break;
      }
      rs[k] += x;
      cs[c] += x;
    }
  if (!st) {
    for (int k = 0; k < clusters; k++)
      for (int c = 0; c < classes; c++) {
        int64_t x = conf[(size_t)k * classes + c], uni = rs[k] + cs[c] - x;
        iou[(size_t)k * classes + c] = uni > 0 ? (double)x / (double)uni : 0.0;
      }
    st = dsc_hungarian_max(clusters, classes, iou, cluster_to_class, NULL);
  }
  free(rs);
  free(cs);
  free(iou);
  return st;
}

/* ---- bilinear upsampling ---- */

/* Source taps of one output coordinate (PyTorch's area_pixel_compute_source_index with
 * align_corners=False and scale = in/out, clamped at 0). */
void eval_bilinear_taps(int out_i, int in, int out, int *i0, int *i1, float *l1) {
  float scale = (float)in / (float)out;
  float src = ((float)out_i + 0.5f) * scale - 0.5f;
  if (src < 0) src = 0;
  int a = (int)src;
  if (a > in - 1) a = in - 1;
  *i0 = a;
  *i1 = a < in - 1 ? a + 1 : a;
  *l1 = src - (float)a;
}

static dsc_status *upsample_check(const char *fn, int64_t n, int h, int w, int c, const void *x,
                                  int H, int W, const void *y) {
  if (n < 0) return dsc_errorf("%s: n = %lld < 0", fn, (long long)n);
  if (h < 1 || w < 1) return dsc_errorf("%s: input size %dx%d, must be >= 1x1", fn, h, w);
  if (H < 1 || W < 1) return dsc_errorf("%s: output size %dx%d, must be >= 1x1", fn, H, W);
  if (c < 1) return dsc_errorf("%s: c = %d, must be >= 1", fn, c);
  if (n > 0 && !x) return dsc_errorf("%s: input is NULL", fn);
  if (n > 0 && !y) return dsc_errorf("%s: output is NULL", fn);
  return NULL;
}

dsc_status *dsc_upsample_bilinear(int64_t n, int h, int w, int c, const float *x, int H, int W,
                                  float *y) {
  DSC_TRY(upsample_check("dsc_upsample_bilinear", n, h, w, c, x, H, W, y));
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n * H; i++) {
    int64_t b = i / H;
    int Y = (int)(i % H), y0, y1, x0, x1;
    float ly, lx;
    eval_bilinear_taps(Y, h, H, &y0, &y1, &ly);
    const float *img = x + (size_t)b * h * w * c;
    for (int X = 0; X < W; X++) {
      eval_bilinear_taps(X, w, W, &x0, &x1, &lx);
      float w00 = (1 - ly) * (1 - lx), w01 = (1 - ly) * lx, w10 = ly * (1 - lx), w11 = ly * lx;
      const float *p00 = img + ((size_t)y0 * w + x0) * c, *p01 = img + ((size_t)y0 * w + x1) * c;
      const float *p10 = img + ((size_t)y1 * w + x0) * c, *p11 = img + ((size_t)y1 * w + x1) * c;
      float *o = y + ((size_t)i * W + X) * c;
      for (int ch = 0; ch < c; ch++)
        o[ch] = w00 * p00[ch] + w01 * p01[ch] + w10 * p10[ch] + w11 * p11[ch];
    }
  }
  return NULL;
}

dsc_status *dsc_upsample_bilinear_adjoint(int64_t n, int h, int w, int c, float *dx, int H,
                                          int W, const float *dy) {
  DSC_TRY(upsample_check("dsc_upsample_bilinear_adjoint", n, h, w, c, dy, H, W, dx));
  /* One image per iteration: each thread owns its image's dx, scattered in a fixed order. */
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < n; b++) {
    float *g = dx + (size_t)b * h * w * c;
    memset(g, 0, (size_t)h * w * c * sizeof *g);
    for (int Y = 0; Y < H; Y++) {
      int y0, y1, x0, x1;
      float ly, lx;
      eval_bilinear_taps(Y, h, H, &y0, &y1, &ly);
      for (int X = 0; X < W; X++) {
        eval_bilinear_taps(X, w, W, &x0, &x1, &lx);
        float w00 = (1 - ly) * (1 - lx), w01 = (1 - ly) * lx, w10 = ly * (1 - lx), w11 = ly * lx;
        const float *d = dy + (((size_t)b * H + Y) * W + X) * c;
        float *g00 = g + ((size_t)y0 * w + x0) * c, *g01 = g + ((size_t)y0 * w + x1) * c;
        float *g10 = g + ((size_t)y1 * w + x0) * c, *g11 = g + ((size_t)y1 * w + x1) * c;
        for (int ch = 0; ch < c; ch++) {
          g00[ch] += w00 * d[ch];
          g01[ch] += w01 * d[ch];
          g10[ch] += w10 * d[ch];
          g11[ch] += w11 * d[ch];
        }
      }
    }
  }
  return NULL;
}
