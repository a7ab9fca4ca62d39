/* ssl_match.c: the dense correspondence c(n,i) and the k_nei neighbors of each query pixel
 * (spec/METHOD.md §3, §4.3), declared in include/dsc/ssl_loss.h.
 *
 * Per image n, one be->gemm gives the p x p similarity matrix S = A B^T of the image's
 * pixel rows (A = u_a[n], B = u_b[n] for the match, B = u_a[n] for the neighbors), into a
 * work buffer of p*p floats reused across images. The choices are then made on S as the
 * backend computed it: argmax / top-k scanning j in increasing order and replacing only on
 * a strictly larger value, so ties go to the smallest j (METHOD.md §1). Rows of S are
 * independent, so the OpenMP split over rows changes nothing in the results. */
#include <limits.h>
#include <stdlib.h>

#include "dsc/ssl_loss.h"

/* Common argument checks; `what` names the function in the message. */
static dsc_status *match_check(const char *what, const dsc_backend *be, int n, int p, int c,
                               const float *a, const float *b, const void *out) {
  if (!be || !be->gemm) return dsc_errorf("%s: no backend", what);
  if (n < 0 || p < 1 || c < 1)
    return dsc_errorf("%s: bad shape n = %d, p = %d, c = %d (need n >= 0, p >= 1, c >= 1)",
                      what, n, p, c);
  if ((int64_t)p * p > (int64_t)INT_MAX)
    return dsc_errorf("%s: p = %d pixels is too many (p*p must fit an int)", what, p);
  if (n > 0 && (!a || !b || !out)) return dsc_errorf("%s: NULL array", what);
  return NULL;
}

/* S (p, p) = A (p, c) B (p, c)^T. */
static dsc_status *match_similarity(dsc_backend *be, int p, int c, const float *a,
                                    const float *b, float *s) {
  return be->gemm(be, 0, 1, p, p, c, 1.0f, a, c, b, c, 0.0f, s, p);
}

dsc_status *dsc_ssl_match(dsc_backend *be, int n, int p, int c, const float *u_a,
                          const float *u_b, int32_t *match) {
  DSC_TRY(match_check("dsc_ssl_match", be, n, p, c, u_a, u_b, match));
  if (n == 0) return NULL;
  float *s = malloc((size_t)p * p * sizeof(float));
  if (!s) return dsc_errorf("dsc_ssl_match: out of memory for a %d x %d similarity matrix", p, p);
  dsc_status *st = NULL;
  for (int img = 0; img < n && !st; img++) {
    const size_t off = (size_t)img * p * c;
    st = match_similarity(be, p, c, u_a + off, u_b + off, s);
    if (st) break;
    int32_t *out = match + (size_t)img * p;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < p; i++) {
      const float *row = s + (size_t)i * p;
      int best = 0;
      for (int j = 1; j < p; j++)
        if (row[j] > row[best]) best = j;
      out[i] = best;
    }
  }
  free(s);
  return dsc_status_wrap(st, "dsc_ssl_match");
}

/* Whether candidate (sj, j) ranks before (sk, k): larger similarity first, then smaller index. */
static int nei_before(float sj, int j, float sk, int k) {
  return sj > sk || (sj == sk && j < k);
}

/* The k best j != i of row `row` (length p) into out[0..k), best first. `top` is k floats
 * of scratch holding the similarities of out. Insertion into the sorted list: a candidate
 * enters only when it ranks before the current last, and scanning j upward keeps equal
 * values in index order. */
static void nei_topk(const float *row, int p, int i, int k, int32_t *out, float *top) {
  int have = 0;
  for (int j = 0; j < p; j++) {
    if (j == i) continue;
    const float v = row[j];
    if (have == k && !nei_before(v, j, top[k - 1], out[k - 1])) continue;
    int pos = have < k ? have : k - 1;
    while (pos > 0 && nei_before(v, j, top[pos - 1], out[pos - 1])) {
      top[pos] = top[pos - 1];
      out[pos] = out[pos - 1];
      pos--;
    }
    top[pos] = v;
    out[pos] = j;
    if (have < k) have++;
  }
}

dsc_status *dsc_ssl_neighbors(dsc_backend *be, int n, int p, int c, int k, const float *u_a,
                              int32_t *idx) {
  DSC_TRY(match_check("dsc_ssl_neighbors", be, n, p, c, u_a, u_a, idx));
  if (k < 1 || k >= p)
    return dsc_errorf("dsc_ssl_neighbors: k_nei = %d must be in [1, p) with p = %d pixels "
                      "per image", k, p);
  if (n == 0) return NULL;
  float *s = malloc((size_t)p * p * sizeof(float));
  float *top = malloc((size_t)p * k * sizeof(float));
  dsc_status *st = NULL;
  if (!s || !top) {
    st = dsc_errorf("out of memory for a %d x %d similarity matrix", p, p);
  }
  for (int img = 0; img < n && !st; img++) {
    const float *a = u_a + (size_t)img * p * c;
    st = match_similarity(be, p, c, a, a, s);
    if (st) break;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < p; i++)
      nei_topk(s + (size_t)i * p, p, i, k, idx + ((size_t)img * p + i) * k, top + (size_t)i * k);
  }
  free(top);
  free(s);
  return dsc_status_wrap(st, "dsc_ssl_neighbors");
}
