/* kmeans.c: online spherical k-means on the key pixels and the cluster contrast L_km
 * (spec/METHOD.md §4.5; interface in include/dsc/ssl_loss.h).
 *
 * Conventions:
 *  - Rows are embeddings of `d` floats, row-major; centroids (k, d) likewise.
 *  - Assignment: the scores rows x k come from be->gemm in float32 (chunks of KM_CHUNK rows,
 *    so the work memory is bounded); argmax per row (OpenMP over rows: independent), ties to
 *    the smallest k (METHOD.md §1).
 *  - Update and cluster means: sums in double, accumulated in row order (deterministic for any
 *    thread count), then norm(x) = x / max(|x|, 1e-12) in double, stored as float.
 *  - An empty cluster keeps its centroid.
 *  - L_km: cluster means, their norms, the logits, log-sum-exp and the backward all in double
 *    (m = |P| <= k is small); the result is accumulated into dv_a as float.
 */
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dsc/rng.h"
#include "dsc/ssl_loss.h"

/* Rows per gemm call of the assignment step: KM_CHUNK x k floats of scores at a time. */
#define KM_CHUNK 4096

#define KM_NORM_EPS 1e-12

dsc_status *dsc_kmeans_init_rows(int64_t rows, int k, uint64_t seed, uint64_t step,
                                 int64_t *chosen) {
  if (k < 1) return dsc_errorf("k-means initialization: need clusters >= 1, got %d", k);
  if (rows < k)
    return dsc_errorf("k-means initialization: %d clusters need at least %d pixels, the batch has %" PRId64
                      " (lower method.clusters or enlarge the batch)",
                      k, k, rows);
  int64_t *perm = malloc((size_t)rows * sizeof *perm);
  if (!perm) return dsc_errorf("k-means initialization: out of memory for %" PRId64 " pixels", rows);
  for (int64_t i = 0; i < rows; i++) perm[i] = i;
  /* Partial Fisher-Yates: position t receives a uniform pick among the rows not yet taken. */
  for (int t = 0; t < k; t++) {
    double u = dsc_rng_uniform(seed, DSC_RNG_KMEANS, (uint32_t)step, (uint32_t)t, 0);
    int64_t j = t + (int64_t)floor(u * (double)(rows - t));
    if (j >= rows) j = rows - 1; /* u < 1, so only a rounding guard */
    int64_t tmp = perm[t];
    perm[t] = perm[j];
    perm[j] = tmp;
    chosen[t] = perm[t];
  }
  free(perm);
  return NULL;
}

dsc_status *dsc_kmeans_init(int64_t rows, int d, int k, const float *v, uint64_t seed,
                            uint64_t step, float *centroids) {
  if (k < 1 || d < 1)
    return dsc_errorf("k-means initialization: need clusters >= 1 and dimension >= 1, got %d clusters, d %d",
                      k, d);
  int64_t *chosen = malloc((size_t)k * sizeof *chosen);
  if (!chosen) return dsc_errorf("k-means initialization: out of memory");
  dsc_status *st = dsc_kmeans_init_rows(rows, k, seed, step, chosen);
  for (int t = 0; !st && t < k; t++)
    memcpy(centroids + (size_t)t * d, v + (size_t)chosen[t] * d, (size_t)d * sizeof *centroids);
  free(chosen);
  return st;
}

/* labels[r] = argmax_c centroids_c . v_r over rows [0, rows), ties to the smallest c. */
static dsc_status *kmeans_assign(dsc_backend *be, int64_t rows, int d, int k, const float *v,
                                 const float *centroids, float *scores, int32_t *labels) {
  for (int64_t r0 = 0; r0 < rows; r0 += KM_CHUNK) {
    int m = (int)(rows - r0 < KM_CHUNK ? rows - r0 : KM_CHUNK);
    /* scores (m, k) = v[r0 .. r0+m) (m, d) * centroids^T (d, k) */
    DSC_TRY(be->gemm(be, 0, 1, m, k, d, 1.0f, v + (size_t)r0 * d, d, centroids, d, 0.0f, scores, k));
#pragma omp parallel for schedule(static) if ((size_t)m * k >= ((size_t)1 << 16))
    for (int i = 0; i < m; i++) {
      const float *s = scores + (size_t)i * k;
      int best = 0;
      for (int c = 1; c < k; c++)
        if (s[c] > s[best]) best = c;
      labels[r0 + i] = best;
    }
  }
  return NULL;
}

/* centroids_c = norm(mean of the rows labelled c) for every non-empty c; sum (k, d) and
 * count (k) are work buffers. */
static void kmeans_update(int64_t rows, int d, int k, const float *v, const int32_t *labels,
                          double *sum, int64_t *count, float *centroids) {
  memset(sum, 0, (size_t)k * d * sizeof *sum);
  memset(count, 0, (size_t)k * sizeof *count);
  for (int64_t r = 0; r < rows; r++) {
    double *s = sum + (size_t)labels[r] * d;
    const float *x = v + (size_t)r * d;
    for (int j = 0; j < d; j++) s[j] += x[j];
    count[labels[r]]++;
  }
  for (int c = 0; c < k; c++) {
    if (count[c] == 0) continue;
    double *s = sum + (size_t)c * d;
    double nrm = 0;
    for (int j = 0; j < d; j++) {
      s[j] /= (double)count[c];
      nrm += s[j] * s[j];
    }
    nrm = sqrt(nrm);
    double inv = 1.0 / (nrm > KM_NORM_EPS ? nrm : KM_NORM_EPS);
    for (int j = 0; j < d; j++) centroids[(size_t)c * d + j] = (float)(s[j] * inv);
  }
}

dsc_status *dsc_kmeans_run(dsc_backend *be, int64_t rows, int d, int k, int iters,
                           const float *v, float *centroids, int32_t *labels,
                           int32_t *history) {
  if (k < 1 || d < 1 || iters < 1 || rows < 0)
    return dsc_errorf("k-means: need clusters >= 1, dimension >= 1, iterations >= 1 and pixels >= 0, "
                      "got %d clusters, d %d, %d iterations, %" PRId64 " pixels",
                      k, d, iters, rows);
  size_t chunk = (size_t)(rows < KM_CHUNK ? rows : KM_CHUNK);
  float *scores = malloc((chunk ? chunk : 1) * (size_t)k * sizeof *scores);
  double *sum = malloc((size_t)k * d * sizeof *sum);
  int64_t *count = malloc((size_t)k * sizeof *count);
  dsc_status *st = NULL;
  if (!scores || !sum || !count) {
    st = dsc_errorf("k-means: out of memory (%d clusters, d %d)", k, d);
    goto done;
  }
  for (int it = 0; it < iters; it++) {
    st = kmeans_assign(be, rows, d, k, v, centroids, scores, labels);
    if (st) goto done;
    if (history) memcpy(history + (size_t)it * rows, labels, (size_t)rows * sizeof *labels);
    kmeans_update(rows, d, k, v, labels, sum, count, centroids);
  }
done:
  free(scores);
  free(sum);
  free(count);
  return st;
}

/* out (m, d) = norm(mean of the rows of v labelled P[i]) in double; len[i] = |mean| before
 * the clamp. slot[c] = index of cluster c in P or -1; cnt (k) per-cluster counts. */
static void kmeans_cluster_means(int64_t rows, int d, const float *v, const int32_t *y,
                                 const int *slot, const int64_t *cnt, const int *P, int m,
                                 double *out, double *len) {
  memset(out, 0, (size_t)m * d * sizeof *out);
  for (int64_t r = 0; r < rows; r++) {
    int s = slot[y[r]];
    if (s < 0) continue;
    const float *x = v + (size_t)r * d;
    double *o = out + (size_t)s * d;
    for (int j = 0; j < d; j++) o[j] += x[j];
  }
  for (int i = 0; i < m; i++) {
    double *o = out + (size_t)i * d;
    double nrm = 0;
    for (int j = 0; j < d; j++) {
      o[j] /= (double)cnt[P[i]];
      nrm += o[j] * o[j];
    }
    nrm = sqrt(nrm);
    len[i] = nrm;
    double inv = 1.0 / (nrm > KM_NORM_EPS ? nrm : KM_NORM_EPS);
    for (int j = 0; j < d; j++) o[j] *= inv;
  }
}

dsc_status *dsc_loss_kmeans(int64_t rows, int d, int k, const float *v_a, const int32_t *y_a,
                            const float *v_b, const int32_t *y_b, float tau, float scale,
                            double *loss, float *dv_a, int *present) {
  if (k < 1 || d < 1 || rows < 0 || !(tau > 0))
    return dsc_errorf("L_km: need clusters >= 1, dimension >= 1, pixels >= 0 and tau > 0, got %d "
                      "clusters, d %d, %" PRId64 " pixels, tau %g",
                      k, d, rows, (double)tau);
  for (int64_t r = 0; r < rows; r++) {
    if (y_a[r] < 0 || y_a[r] >= k || y_b[r] < 0 || y_b[r] >= k)
      return dsc_errorf("L_km: pixel %" PRId64 " has labels %d (query) / %d (key) outside [0, %d) clusters",
                        r, (int)y_a[r], (int)y_b[r], k);
  }
  int64_t *cnt_a = calloc((size_t)k, sizeof *cnt_a);
  int64_t *cnt_b = calloc((size_t)k, sizeof *cnt_b);
  int *slot = malloc((size_t)k * sizeof *slot);
  int *P = malloc((size_t)k * sizeof *P);
  double *ea = NULL, *eb = NULL, *len_a = NULL, *len_b = NULL, *g = NULL, *dm = NULL;
  dsc_status *st = NULL;
  if (!cnt_a || !cnt_b || !slot || !P) {
    st = dsc_errorf("L_km: out of memory (%d clusters)", k);
    goto done;
  }
  for (int64_t r = 0; r < rows; r++) {
    cnt_a[y_a[r]]++;
    cnt_b[y_b[r]]++;
  }
  /* P: the clusters present in both views, ascending. */
  int m = 0;
  for (int c = 0; c < k; c++) {
    slot[c] = -1;
    if (cnt_a[c] > 0 && cnt_b[c] > 0) {
      slot[c] = m;
      P[m++] = c;
    }
  }
  if (present) *present = m;
  *loss = 0;
  if (m < 2) goto done;

  ea = malloc((size_t)m * d * sizeof *ea);
  eb = malloc((size_t)m * d * sizeof *eb);
  len_a = malloc((size_t)m * sizeof *len_a);
  len_b = malloc((size_t)m * sizeof *len_b);
  g = malloc((size_t)m * m * sizeof *g);
  dm = malloc((size_t)m * d * sizeof *dm);
  if (!ea || !eb || !len_a || !len_b || !g || !dm) {
    st = dsc_errorf("L_km: out of memory (%d clusters present, d %d)", m, d);
    goto done;
  }
  kmeans_cluster_means(rows, d, v_a, y_a, slot, cnt_a, P, m, ea, len_a);
  kmeans_cluster_means(rows, d, v_b, y_b, slot, cnt_b, P, m, eb, len_b);

  /* logits g[i][j] = e^a_i . e^b_j / tau; loss_i = lse_j - g[i][i]; then g becomes
   * dloss/dlogits = (softmax_ij - [i == j]) / m. */
  double total = 0;
  for (int i = 0; i < m; i++) {
    double *gi = g + (size_t)i * m;
    double mx = -INFINITY;
    for (int j = 0; j < m; j++) {
      double s = 0;
      for (int t = 0; t < d; t++) s += ea[(size_t)i * d + t] * eb[(size_t)j * d + t];
      gi[j] = s / (double)tau;
      if (gi[j] > mx) mx = gi[j];
    }
    double se = 0;
    for (int j = 0; j < m; j++) se += exp(gi[j] - mx);
    double lse = mx + log(se);
    total += lse - gi[i];
    for (int j = 0; j < m; j++) gi[j] = (exp(gi[j] - lse) - (i == j ? 1.0 : 0.0)) / (double)m;
  }
  *loss = total / (double)m;
  if (!dv_a) goto done;

  /* de^a_i = sum_j g_ij e^b_j / tau, then through e^a_i = norm(mean_i):
   * dmean_i = (de - e (e . de)) / |mean_i| (de / 1e-12 when clamped), and each row of
   * cluster P[i] receives dmean_i / count. */
  for (int i = 0; i < m; i++) {
    double *di = dm + (size_t)i * d;
    const double *e = ea + (size_t)i * d;
    for (int t = 0; t < d; t++) di[t] = 0;
    for (int j = 0; j < m; j++) {
      double w = g[(size_t)i * m + j] / (double)tau;
      for (int t = 0; t < d; t++) di[t] += w * eb[(size_t)j * d + t];
    }
    if (len_a[i] > KM_NORM_EPS) {
      double dot = 0;
      for (int t = 0; t < d; t++) dot += e[t] * di[t];
      for (int t = 0; t < d; t++) di[t] = (di[t] - e[t] * dot) / len_a[i];
    } else {
      for (int t = 0; t < d; t++) di[t] /= KM_NORM_EPS;
    }
    double f = (double)scale / (double)cnt_a[P[i]];
    for (int t = 0; t < d; t++) di[t] *= f;
  }
  for (int64_t r = 0; r < rows; r++) {
    int s = slot[y_a[r]];
    if (s < 0) continue;
    const double *di = dm + (size_t)s * d;
    float *o = dv_a + (size_t)r * d;
    for (int t = 0; t < d; t++) o[t] += (float)di[t];
  }
done:
  free(cnt_a);
  free(cnt_b);
  free(slot);
  free(P);
  free(ea);
  free(eb);
  free(len_a);
  free(len_b);
  free(g);
  free(dm);
  return st;
}
