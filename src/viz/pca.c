/* pca.c: the dense-feature maps of `dsc viz maps` — principal components of C5 pixel features,
 * their projection to RGB by percentiles, and mask-matched colours for k-means cluster maps
 * (include/dsc/viz.h).
 *
 * Features are rows of d floats (one per pixel, as the backbone's NHWC output). All sums are in
 * double, in a fixed order, so the maps are the same bytes on every run. The components come
 * from block power iteration on the implicit covariance (X - mean)^T (X - mean) / rows: no d x d
 * matrix is formed, which keeps ResNet-50's 2048 channels cheap.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dsc/viz.h"

#define PCA_MAX_K 8
#define PCA_MAX_ITERS 500
#define PCA_TOL 1e-10

/* A fixed, generic start vector entry in [-1, 1) (an integer hash of (j, c)). */
static double pca_start(int j, int c) {
  uint64_t z = (uint64_t)j * 0x9E3779B97F4A7C15ull + (uint64_t)(c + 1) * 0xBF58476D1CE4E5B9ull;
  z ^= z >> 31;
  z *= 0x94D049BB133111EBull;
  z ^= z >> 29;
  return (double)(z >> 11) / 4503599627370496.0 - 1.0; /* 2^52 */
}

/* Gram-Schmidt of rows v (k, d) in order; a row that vanishes is replaced by the first
 * standard basis vector that is independent of the rows before it. */
static void pca_orthonormalize(double *v, int k, int d) {
  for (int c = 0; c < k; c++) {
    double *r = v + (size_t)c * d;
    for (int attempt = -1; attempt < d; attempt++) {
      if (attempt >= 0) {
        memset(r, 0, (size_t)d * sizeof *r);
        r[attempt] = 1;
      }
      double before = 0;
      for (int j = 0; j < d; j++) before += r[j] * r[j];
      for (int p = 0; p < c; p++) {
        const double *q = v + (size_t)p * d;
        double dot = 0;
        for (int j = 0; j < d; j++) dot += r[j] * q[j];
        for (int j = 0; j < d; j++) r[j] -= dot * q[j];
      }
      double norm = 0;
      for (int j = 0; j < d; j++) norm += r[j] * r[j];
      if (norm > 1e-24 * before && norm > 1e-300) {
        double inv = 1 / sqrt(norm);
        for (int j = 0; j < d; j++) r[j] *= inv;
        break;
      }
    }
  }
}

/* p (rows, k) = (x - mean) v^T. */
static void pca_project(const float *x, int64_t rows, int d, int k, const double *mean,
                        const double *v, double *p) {
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = x + (size_t)r * d;
    for (int c = 0; c < k; c++) {
      const double *vc = v + (size_t)c * d;
      double s = 0;
      for (int j = 0; j < d; j++) s += ((double)xr[j] - mean[j]) * vc[j];
      p[r * k + c] = s;
    }
  }
}

dsc_status *dsc_pca(const float *x, int64_t rows, int d, int k, double *mean, double *components,
                    double *variances) {
  if (rows < 1 || d < 1 || k < 1 || k > PCA_MAX_K || k > d)
    return dsc_errorf("PCA of %lld rows of %d features: need rows >= 1 and 1 <= k (%d) <= min(d, %d)",
                      (long long)rows, d, k, PCA_MAX_K);
  double *v = components;
  double *w = malloc((size_t)k * d * sizeof *w), *p = malloc((size_t)rows * k * sizeof *p);
  if (!w || !p) {
    free(w), free(p);
    return dsc_errorf("out of memory for the PCA of %lld x %d features", (long long)rows, d);
  }
  for (int j = 0; j < d; j++) mean[j] = 0;
  for (int64_t r = 0; r < rows; r++)
    for (int j = 0; j < d; j++) mean[j] += x[(size_t)r * d + j];
  for (int j = 0; j < d; j++) mean[j] /= (double)rows;
  for (int c = 0; c < k; c++)
    for (int j = 0; j < d; j++) v[(size_t)c * d + j] = pca_start(j, c);
  pca_orthonormalize(v, k, d);
  for (int it = 0; it < PCA_MAX_ITERS; it++) {
    pca_project(x, rows, d, k, mean, v, p);
    memset(w, 0, (size_t)k * d * sizeof *w);
    for (int64_t r = 0; r < rows; r++) {
      const float *xr = x + (size_t)r * d;
      for (int c = 0; c < k; c++) {
        double pc = p[r * k + c];
        double *wc = w + (size_t)c * d;
        for (int j = 0; j < d; j++) wc[j] += pc * ((double)xr[j] - mean[j]);
      }
    }
    pca_orthonormalize(w, k, d);
    double moved = 0;
    for (int c = 0; c < k; c++) {
      double dot = 0;
      for (int j = 0; j < d; j++) dot += w[(size_t)c * d + j] * v[(size_t)c * d + j];
      moved = fmax(moved, 1 - fabs(dot));
    }
    memcpy(v, w, (size_t)k * d * sizeof *v);
    if (moved < PCA_TOL) break;
  }
  /* variances, decreasing order, sign convention */
  pca_project(x, rows, d, k, mean, v, p);
  double var[PCA_MAX_K];
  for (int c = 0; c < k; c++) {
    double s = 0;
    for (int64_t r = 0; r < rows; r++) s += p[r * k + c] * p[r * k + c];
    var[c] = s / (double)rows;
  }
  for (int a = 1; a < k; a++) /* insertion sort: stable for equal variances */
    for (int b = a; b > 0 && var[b] > var[b - 1]; b--) {
      double t = var[b];
      var[b] = var[b - 1], var[b - 1] = t;
      for (int j = 0; j < d; j++) {
        double u = v[(size_t)b * d + j];
        v[(size_t)b * d + j] = v[(size_t)(b - 1) * d + j], v[(size_t)(b - 1) * d + j] = u;
      }
    }
  for (int c = 0; c < k; c++) {
    double *vc = v + (size_t)c * d;
    int big = 0;
    for (int j = 1; j < d; j++)
      if (fabs(vc[j]) > fabs(vc[big])) big = j;
    if (vc[big] < 0)
      for (int j = 0; j < d; j++) vc[j] = -vc[j];
    if (variances) variances[c] = var[c];
  }
  free(w), free(p);
  return NULL;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Percentile q of sorted s (n): linear between ranks floor(q (n-1)) and the next. */
static double percentile(const double *s, int64_t n, double q) {
  double pos = q * (double)(n - 1);
  int64_t lo = (int64_t)floor(pos);
  if (lo >= n - 1) return s[n - 1];
  return s[lo] + (pos - (double)lo) * (s[lo + 1] - s[lo]);
}

dsc_status *dsc_pca_rgb(const float *x, int64_t rows, int d, const double *mean,
                        const double *components, uint8_t *rgb) {
  if (rows < 1) return dsc_errorf("PCA colours of no rows");
  double *p = malloc((size_t)rows * 3 * sizeof *p), *s = malloc((size_t)rows * sizeof *s);
  if (!p || !s) {
    free(p), free(s);
    return dsc_errorf("out of memory for the PCA colours of %lld rows", (long long)rows);
  }
  pca_project(x, rows, d, 3, mean, components, p);
  double lo[3], hi[3], widest = 0;
  for (int c = 0; c < 3; c++) {
    for (int64_t r = 0; r < rows; r++) s[r] = p[r * 3 + c];
    qsort(s, (size_t)rows, sizeof *s, cmp_double);
    lo[c] = percentile(s, rows, 0.01), hi[c] = percentile(s, rows, 0.99);
    widest = fmax(widest, hi[c] - lo[c]);
  }
  for (int c = 0; c < 3; c++) {
    /* a component without spread (or only rounding noise next to the others) is mid-grey */
    int flat = !(hi[c] - lo[c] > 1e-6 * widest) || !(hi[c] > lo[c]);
    for (int64_t r = 0; r < rows; r++) {
      double t = flat ? 128 : 255 * (p[r * 3 + c] - lo[c]) / (hi[c] - lo[c]);
      rgb[r * 3 + c] = (uint8_t)(t < 0 ? 0 : t > 255 ? 255 : lround(t));
    }
  }
  free(p), free(s);
  return NULL;
}

void dsc_cluster_match_colors(const int32_t *labels, const uint8_t *reference, int64_t rows,
                              int k, uint8_t *out_index) {
  if (k < 1) return;
  int64_t *count = calloc((size_t)k * 255, sizeof *count);
  int *taken = calloc(255, sizeof *taken), *done = calloc((size_t)k, sizeof *done);
  if (!count || !taken || !done) { /* no memory for matching: plain cluster order */
    for (int c = 0; c < k; c++) out_index[c] = (uint8_t)(c % 255);
    free(count), free(taken), free(done);
    return;
  }
  for (int64_t r = 0; r < rows; r++)
    if (reference[r] != 255 && labels[r] >= 0 && labels[r] < k) count[(size_t)labels[r] * 255 + reference[r]]++;
  for (;;) {
    int64_t best = 0;
    int bc = -1, bk = -1;
    for (int c = 0; c < k; c++) {
      if (done[c]) continue;
      for (int cls = 0; cls < 255; cls++)
        if (!taken[cls] && count[(size_t)c * 255 + cls] > best) best = count[(size_t)c * 255 + cls], bc = c, bk = cls;
    }
    if (bc < 0) break;
    out_index[bc] = (uint8_t)bk, done[bc] = 1, taken[bk] = 1;
  }
  int next = 0;
  for (int c = 0; c < k; c++) {
    if (done[c]) continue;
    while (next < 254 && taken[next]) next++;
    out_index[c] = (uint8_t)next;
    taken[next] = 1;
  }
  free(count), free(taken), free(done);
}
