/* test_ssl_contrast.c: per-row L2 normalization, the correspondence and neighbors, and the
 * InfoNCE and triplet terms (src/ssl/ssl_norm.c, ssl_match.c, loss_contrast.c;
 * spec/METHOD.md §1, §3, §4.1-4.4).
 *
 * Golden checks read tests/golden/loss_contrast.safetensors (written by
 * tools/reference/make_loss_golden_contrast.py: PyTorch float64 from float32 inputs) and run
 * on both the cpu and the ref backend. Tolerances, each stated beside its check: a loss within
 * relative 1e-5 and a gradient within max-abs 1e-5 * max|grad| + 1e-7 (float32 storage and
 * float gemm products, double sums). The rest needs no fixture: finite differences of every
 * gradient, exact ties, argument errors, and a large InfoNCE case (more rows than one chunk)
 * against a naive double-precision loop written here. */
#include <stdint.h>

#include "dsc/safetensors.h"
#include "dsc/ssl_loss.h"
#include "ssl/fast_exp.h"
#include "test.h"

#define GOLDEN "tests/golden/loss_contrast.safetensors"

/* ---- helpers ---- */

/* Deterministic test data: splitmix64 of (seed, index) to a uniform in [-1, 1). */
static float test_uniform(uint64_t seed, uint64_t i) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ull + i + 0x632BE59BD9B4E019ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return (float)((double)(z >> 11) * 0x1.0p-53 * 2.0 - 1.0);
}

/* rows x d uniform values, each row normalized. */
static float *test_rows(uint64_t seed, int64_t rows, int d) {
  float *x = malloc((size_t)(rows * d) * sizeof(float));
  for (int64_t i = 0; i < rows * d; i++) x[i] = test_uniform(seed, (uint64_t)i);
  dsc_l2norm_rows(rows, d, x, NULL, x);
  return x;
}

/* Tensor `name` of the fixture as floats (converted from F32/F64); NULL (and a failed check)
 * when absent. *numel receives its element count. */
static float *golden_f32(const dsc_safetensors *f, const char *name, size_t *numel) {
  const dsc_st_tensor *t = dsc_st_find(f, name);
  CHECK(t != NULL, "%s: no tensor %s", GOLDEN, name);
  if (!t) return NULL;
  size_t n = dsc_st_numel(t);
  float *x = malloc((n ? n : 1) * sizeof(float));
  CHECK_OK(dsc_st_read_f32(f, name, x, n));
  if (numel) *numel = n;
  return x;
}

/* An F64 scalar of the fixture. */
static double golden_f64(const dsc_safetensors *f, const char *name) {
  const dsc_st_tensor *t = dsc_st_find(f, name);
  CHECK(t && t->dtype == DSC_F64 && dsc_st_numel(t) == 1, "%s: no F64 scalar %s", GOLDEN,
        name);
  double v = 0.0;
  if (t && t->dtype == DSC_F64 && dsc_st_numel(t) == 1) memcpy(&v, dsc_st_data(f, t), 8);
  return v;
}

/* An I32 tensor of the fixture (copied). */
static int32_t *golden_i32(const dsc_safetensors *f, const char *name, size_t *numel) {
  const dsc_st_tensor *t = dsc_st_find(f, name);
  CHECK(t && t->dtype == DSC_I32, "%s: no I32 tensor %s", GOLDEN, name);
  if (!t || t->dtype != DSC_I32) return NULL;
  *numel = dsc_st_numel(t);
  int32_t *x = malloc(*numel * sizeof(int32_t));
  memcpy(x, dsc_st_data(f, t), *numel * sizeof(int32_t));
  return x;
}

static double max_abs(const float *x, size_t n) {
  double m = 0.0;
  for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)x[i]));
  return m;
}

/* The gradient check used throughout: max |got - want| <= rel * max|want| + abs_tol. */
static void check_grad(const char *what, const float *got, const float *want, size_t n,
                       double rel, double abs_tol) {
  double err = 0.0;
  for (size_t i = 0; i < n; i++) err = fmax(err, fabs((double)got[i] - (double)want[i]));
  const double tol = rel * max_abs(want, n) + abs_tol;
  CHECK(err <= tol, "%s: max-abs error %.3g > %.3g", what, err, tol);
}

static void check_loss(const char *what, double got, double want, double rel) {
  const double err = fabs(got - want) / fmax(fabs(want), 1e-300);
  CHECK(err <= rel, "%s: loss %.9g vs %.9g, relative error %.3g > %.3g", what, got, want, err,
        rel);
}

/* The two backends every backend-using test runs on. */
static int backends_open(dsc_backend *be[2]) {
  be[0] = be[1] = NULL;
  CHECK_OK(dsc_backend_cpu_new(1, &be[0]));
  CHECK_OK(dsc_backend_ref_new(&be[1]));
  return be[0] && be[1];
}

static void backends_close(dsc_backend *be[2]) {
  for (int i = 0; i < 2; i++)
    if (be[i]) be[i]->destroy(be[i]);
}

/* ---- golden ---- */

static void test_golden_l2norm(void) {
  dsc_safetensors *f = NULL;
  CHECK_OK(dsc_st_open(GOLDEN, &f));
  if (!f) return;
  size_t n = 0;
  float *x = golden_f32(f, "l2norm.x", &n), *dy = golden_f32(f, "l2norm.dy", NULL);
  float *y_w = golden_f32(f, "l2norm.y", NULL), *nm_w = golden_f32(f, "l2norm.norms", NULL);
  float *dx_w = golden_f32(f, "l2norm.dx", NULL);
  const int d = 8, rows = (int)(n / d), zero = 3;
  if (x && dy && y_w && nm_w && dx_w) {
    float *y = malloc(n * sizeof(float)), *nm = malloc(rows * sizeof(float));
    float *dx = malloc(n * sizeof(float));
    dsc_l2norm_rows(rows, d, y, nm, x);
    check_grad("l2norm y", y, y_w, n, 1e-6, 1e-7);           /* one rounding of x / |x| */
    check_grad("l2norm norms", nm, nm_w, rows, 1e-6, 0.0);   /* one rounding of sqrt */
    dsc_l2norm_rows_backward(rows, d, dx, dy, y, nm);
    /* The zero row (dx = dy / 1e-12, ~1e12) apart from the others: 1e-5 relative each. */
    for (int r = 0; r < rows; r++) {
      char what[64];
      snprintf(what, sizeof what, "l2norm dx row %d", r);
      check_grad(what, dx + r * d, dx_w + r * d, d, 1e-5, r == zero ? 0.0 : 1e-7);
    }
    CHECK(nm[zero] == 0.0f, "zero row norm %g", (double)nm[zero]);
    /* y may alias x; dx may alias dy. */
    float *xa = malloc(n * sizeof(float));
    memcpy(xa, x, n * sizeof(float));
    dsc_l2norm_rows(rows, d, xa, NULL, xa);
    CHECK(memcmp(xa, y, n * sizeof(float)) == 0, "in-place normalization differs");
    memcpy(xa, dy, n * sizeof(float));
    dsc_l2norm_rows_backward(rows, d, xa, xa, y, nm);
    CHECK(memcmp(xa, dx, n * sizeof(float)) == 0, "in-place backward differs");
    free(xa);
    free(y);
    free(nm);
    free(dx);
  }
  free(x);
  free(dy);
  free(y_w);
  free(nm_w);
  free(dx_w);
  dsc_st_close(f);
}

static void test_golden_match(void) {
  dsc_safetensors *f = NULL;
  dsc_backend *be[2];
  CHECK_OK(dsc_st_open(GOLDEN, &f));
  if (!f || !backends_open(be)) {
    dsc_st_close(f);
    backends_close(be);
    return;
  }
  const dsc_st_tensor *t = dsc_st_find(f, "match.u_a");
  CHECK(t && t->ndim == 3, "match.u_a shape");
  if (t && t->ndim == 3) {
    const int n = (int)t->shape[0], p = (int)t->shape[1], c = (int)t->shape[2];
    float *ua = golden_f32(f, "match.u_a", NULL), *ub = golden_f32(f, "match.u_b", NULL);
    size_t cnt = 0;
    int32_t *want = golden_i32(f, "match.idx", &cnt);
    int32_t *got = malloc((size_t)n * p * 3 * sizeof(int32_t));
    for (int b = 0; b < 2 && ua && ub && want; b++) {
      CHECK_OK(dsc_ssl_match(be[b], n, p, c, ua, ub, got));
      /* exact: the fixture's decisions are at least 1e-4 apart */
      CHECK(cnt == (size_t)n * p && memcmp(got, want, cnt * sizeof(int32_t)) == 0,
            "%s: match differs from PyTorch's argmax", be[b]->name);
      const int ks[2] = {1, 3};
      for (int kk = 0; kk < 2; kk++) {
        char name[64];
        snprintf(name, sizeof name, "neighbors.k%d.idx", ks[kk]);
        size_t kc = 0;
        int32_t *kw = golden_i32(f, name, &kc);
        if (!kw) continue;
        CHECK_OK(dsc_ssl_neighbors(be[b], n, p, c, ks[kk], ua, got));
        CHECK(kc == (size_t)n * p * ks[kk] && memcmp(got, kw, kc * sizeof(int32_t)) == 0,
              "%s: %s differs from PyTorch's topk", be[b]->name, name);
        free(kw);
      }
    }
    free(got);
    free(want);
    free(ua);
    free(ub);
  }
  backends_close(be);
  dsc_st_close(f);
}

static void test_golden_infonce(void) {
  dsc_safetensors *f = NULL;
  dsc_backend *be[2];
  CHECK_OK(dsc_st_open(GOLDEN, &f));
  if (!f || !backends_open(be)) {
    dsc_st_close(f);
    backends_close(be);
    return;
  }
  const char *cases[] = {"infonce_a", "infonce_b", "infonce_c"};
  for (int ci = 0; ci < 3; ci++) {
    char name[64];
    snprintf(name, sizeof name, "%s.pos", cases[ci]);
    const dsc_st_tensor *tp = dsc_st_find(f, name);
    snprintf(name, sizeof name, "%s.queue", cases[ci]);
    const dsc_st_tensor *tq = dsc_st_find(f, name);
    CHECK(tp && tp->ndim == 3 && tq && tq->ndim == 2, "%s: shapes", cases[ci]);
    if (!(tp && tp->ndim == 3 && tq && tq->ndim == 2)) continue;
    const int64_t rows = tp->shape[0], L = tq->shape[1];
    const int npos = (int)tp->shape[1], d = (int)tp->shape[2];
    float *q, *pos, *queue, *want, tau = 0.0f;
    snprintf(name, sizeof name, "%s.q", cases[ci]);
    q = golden_f32(f, name, NULL);
    snprintf(name, sizeof name, "%s.pos", cases[ci]);
    pos = golden_f32(f, name, NULL);
    snprintf(name, sizeof name, "%s.queue", cases[ci]);
    queue = golden_f32(f, name, NULL);
    snprintf(name, sizeof name, "%s.grad", cases[ci]);
    want = golden_f32(f, name, NULL);
    snprintf(name, sizeof name, "%s.tau", cases[ci]);
    CHECK_OK(dsc_st_read_f32(f, name, &tau, 1));
    snprintf(name, sizeof name, "%s.loss", cases[ci]);
    const double loss_want = golden_f64(f, name);
    float *dq[2] = {calloc((size_t)(rows * d), sizeof(float)),
                    calloc((size_t)(rows * d), sizeof(float))};
    double loss[2] = {0, 0};
    for (int b = 0; b < 2 && q && pos && queue && want; b++) {
      char what[96];
      snprintf(what, sizeof what, "%s on %s", cases[ci], be[b]->name);
      CHECK_OK(dsc_loss_infonce(be[b], rows, d, npos, L, q, pos, queue, tau, 1.0f, &loss[b],
                                dq[b]));
      check_loss(what, loss[b], loss_want, 1e-5);                   /* relative 1e-5 */
      check_grad(what, dq[b], want, (size_t)(rows * d), 1e-5, 1e-7); /* 1e-5 max + 1e-7 */
    }
    /* cpu vs ref directly: the same bounds (float gemm vs double gemm). */
    check_loss("infonce cpu vs ref", loss[0], loss[1], 1e-5);
    check_grad("infonce cpu vs ref", dq[0], dq[1], (size_t)(rows * d), 1e-5, 1e-7);
    free(dq[0]);
    free(dq[1]);
    free(q);
    free(pos);
    free(queue);
    free(want);
  }
  backends_close(be);
  dsc_st_close(f);
}

static void test_golden_triplet(void) {
  dsc_safetensors *f = NULL;
  CHECK_OK(dsc_st_open(GOLDEN, &f));
  if (!f) return;
  const dsc_st_tensor *tn = dsc_st_find(f, "triplet.nei");
  CHECK(tn && tn->ndim == 3, "triplet.nei shape");
  if (tn && tn->ndim == 3) {
    const int64_t rows = tn->shape[0];
    const int k = (int)tn->shape[1], d = (int)tn->shape[2];
    float *q = golden_f32(f, "triplet.q", NULL), *pos = golden_f32(f, "triplet.pos", NULL);
    float *nei = golden_f32(f, "triplet.nei", NULL), *want = golden_f32(f, "triplet.grad", NULL);
    float margin = 0.0f;
    CHECK_OK(dsc_st_read_f32(f, "triplet.margin", &margin, 1));
    const double loss_want = golden_f64(f, "triplet.loss");
    float *dq = calloc((size_t)(rows * d), sizeof(float));
    double loss = 0.0;
    if (q && pos && nei && want) {
      dsc_loss_triplet(rows, d, k, q, pos, nei, margin, 1.0f, &loss, dq);
      check_loss("triplet", loss, loss_want, 1e-5);                  /* relative 1e-5 */
      check_grad("triplet", dq, want, (size_t)(rows * d), 1e-5, 1e-7); /* 1e-5 max + 1e-7 */
    }
    free(dq);
    free(q);
    free(pos);
    free(nei);
    free(want);
  }
  dsc_st_close(f);
}

/* ---- accumulation and edge cases ---- */

/* dq += scale * grad with a prior content and a negative scale; NULL dq skips the gradient. */
static void test_infonce_accumulates(void) {
  dsc_backend *be = NULL;
  CHECK_OK(dsc_backend_ref_new(&be));
  if (!be) return;
  const int rows = 7, d = 5, npos = 2, L = 11;
  float *q = test_rows(1, rows, d), *pos = test_rows(2, rows * npos, d);
  float *kq = test_rows(3, L, d), *queue = malloc(sizeof(float) * d * L);
  for (int l = 0; l < L; l++)
    for (int i = 0; i < d; i++) queue[i * L + l] = kq[l * d + i];
  float g1[35] = {0}, g2[35];
  double l1 = 0, l2 = 0, l3 = 0;
  CHECK_OK(dsc_loss_infonce(be, rows, d, npos, L, q, pos, queue, 0.1f, 1.0f, &l1, g1));
  for (int i = 0; i < rows * d; i++) g2[i] = test_uniform(4, i);
  CHECK_OK(dsc_loss_infonce(be, rows, d, npos, L, q, pos, queue, 0.1f, -2.0f, &l2, g2));
  CHECK_OK(dsc_loss_infonce(be, rows, d, npos, L, q, pos, queue, 0.1f, 1.0f, &l3, NULL));
  CHECK(l1 == l2 && l1 == l3, "loss depends on scale or dq: %.17g %.17g %.17g", l1, l2, l3);
  float want[35];
  for (int i = 0; i < rows * d; i++) want[i] = test_uniform(4, i) - 2.0f * g1[i];
  check_grad("accumulated dq", g2, want, rows * d, 1e-6, 1e-7); /* two float roundings */
  /* L = 0 with one positive: every row's loss and gradient are exactly 0. */
  float z[35] = {0};
  CHECK_OK(dsc_loss_infonce(be, rows, d, 1, 0, q, pos, NULL, 0.2f, 1.0f, &l1, z));
  CHECK(l1 == 0.0 && max_abs(z, rows * d) == 0.0, "L = 0: loss %g", l1);
  CHECK_ERR(dsc_loss_infonce(be, rows, d, npos, L, q, pos, queue, 0.0f, 1.0f, &l1, NULL), "tau");
  CHECK_ERR(dsc_loss_infonce(be, rows, d, 0, L, q, pos, queue, 0.2f, 1.0f, &l1, NULL), "npos");
  free(q);
  free(pos);
  free(kq);
  free(queue);
  be->destroy(be);
}

static void test_triplet_accumulates(void) {
  const int rows = 4, d = 6, k = 3;
  float *q = test_rows(11, rows, d), *pos = test_rows(12, rows, d);
  float *nei = test_rows(13, rows * k, d);
  float g1[24] = {0}, g2[24], want[24];
  double l1 = 0, l2 = 0;
  dsc_loss_triplet(rows, d, k, q, pos, nei, 0.3f, 1.0f, &l1, g1);
  for (int i = 0; i < rows * d; i++) g2[i] = want[i] = test_uniform(14, i);
  dsc_loss_triplet(rows, d, k, q, pos, nei, 0.3f, 0.5f, &l2, g2);
  for (int i = 0; i < rows * d; i++) want[i] += 0.5f * g1[i];
  CHECK(l1 == l2 && l1 > 0.0, "loss %.17g vs %.17g", l1, l2);
  check_grad("accumulated triplet dq", g2, want, rows * d, 1e-6, 1e-7); /* two roundings */
  /* Hinges exactly at 0 (pos = nei, margin 0): loss 0 and gradient 0. */
  float *same = malloc(sizeof(float) * rows * k * d);
  for (int r = 0; r < rows; r++)
    for (int t = 0; t < k; t++) memcpy(same + (r * k + t) * d, pos + r * d, sizeof(float) * d);
  float z[24] = {0};
  dsc_loss_triplet(rows, d, k, q, pos, same, 0.0f, 1.0f, &l1, z);
  CHECK(l1 == 0.0 && max_abs(z, rows * d) == 0.0, "hinge at 0: loss %g", l1);
  free(same);
  free(q);
  free(pos);
  free(nei);
}

/* ---- finite differences ---- */

/* Central differences of the loss with respect to each element of q (a float copy, step h
 * in double added to it), against the analytic gradient: relative 1e-3 of max|grad| (+1e-5). */
static void test_fd_infonce(void) {
  dsc_backend *be = NULL;
  CHECK_OK(dsc_backend_ref_new(&be));
  if (!be) return;
  const int rows = 5, d = 6, npos = 3, L = 9;
  const float tau = 0.1f;
  float *q = test_rows(21, rows, d), *pos = test_rows(22, rows * npos, d);
  float *queue = test_rows(23, d, L); /* any [d][L] values serve as keys */
  float g[30] = {0}, fd[30];
  double loss = 0;
  CHECK_OK(dsc_loss_infonce(be, rows, d, npos, L, q, pos, queue, tau, 1.0f, &loss, g));
  const double h = 1e-3;
  for (int i = 0; i < rows * d; i++) {
    const float keep = q[i];
    double lp = 0, lm = 0;
    q[i] = (float)(keep + h);
    const double hp = (double)q[i] - keep;
    CHECK_OK(dsc_loss_infonce(be, rows, d, npos, L, q, pos, queue, tau, 1.0f, &lp, NULL));
    q[i] = (float)(keep - h);
    const double hm = keep - (double)q[i];
    CHECK_OK(dsc_loss_infonce(be, rows, d, npos, L, q, pos, queue, tau, 1.0f, &lm, NULL));
    q[i] = keep;
    fd[i] = (float)((lp - lm) / (hp + hm));
  }
  check_grad("infonce finite differences", g, fd, rows * d, 1e-3, 1e-5);
  free(q);
  free(pos);
  free(queue);
  be->destroy(be);
}

static void test_fd_triplet(void) {
  const int rows = 6, d = 5, k = 3;
  const float margin = 0.3f;
  float *q = test_rows(31, rows, d), *pos = test_rows(32, rows, d);
  float *nei = test_rows(33, rows * k, d);
  /* Every hinge must be clear of 0 by much more than the step. */
  int active = 0;
  for (int r = 0; r < rows; r++)
    for (int t = 0; t < k; t++) {
      double qp = 0, qm = 0;
      for (int i = 0; i < d; i++) {
        qp += q[r * d + i] * pos[r * d + i];
        qm += q[r * d + i] * nei[(r * k + t) * d + i];
      }
      const double hng = qm - qp + margin;
      CHECK(fabs(hng) > 1e-2, "test data: hinge %d,%d at %g", r, t, hng);
      active += hng > 0;
    }
  CHECK(active > 0 && active < rows * k, "test data: %d of %d hinges active", active, rows * k);
  float g[30] = {0}, fd[30];
  double loss = 0;
  dsc_loss_triplet(rows, d, k, q, pos, nei, margin, 1.0f, &loss, g);
  const double h = 1e-3;
  for (int i = 0; i < rows * d; i++) {
    const float keep = q[i];
    double lp = 0, lm = 0;
    q[i] = (float)(keep + h);
    const double hp = (double)q[i] - keep;
    dsc_loss_triplet(rows, d, k, q, pos, nei, margin, 1.0f, &lp, NULL);
    q[i] = (float)(keep - h);
    const double hm = keep - (double)q[i];
    dsc_loss_triplet(rows, d, k, q, pos, nei, margin, 1.0f, &lm, NULL);
    q[i] = keep;
    fd[i] = (float)((lp - lm) / (hp + hm));
  }
  check_grad("triplet finite differences", g, fd, rows * d, 1e-3, 1e-5);
  free(q);
  free(pos);
  free(nei);
}

/* loss = sum(norm(x) * dy) differentiated numerically, with row 2 of x zero (step 1e-14
 * there, inside the |x| < 1e-12 region where y = x / 1e-12). Relative 1e-3 per row. */
static void test_fd_l2norm(void) {
  enum { R = 4, D = 5 };
  float x[R * D], dy[R * D], y[R * D], nm[R], dx[R * D], yp[R * D], fd[R * D];
  for (int i = 0; i < R * D; i++) {
    x[i] = 2.0f * test_uniform(41, i);
    dy[i] = test_uniform(42, i);
  }
  for (int i = 0; i < D; i++) x[2 * D + i] = 0.0f;
  dsc_l2norm_rows(R, D, y, nm, x);
  dsc_l2norm_rows_backward(R, D, dx, dy, y, nm);
  for (int i = 0; i < R * D; i++) {
    const double h = i / D == 2 ? 1e-14 : 1e-3;
    const float keep = x[i];
    double lp = 0, lm = 0;
    x[i] = (float)(keep + h);
    const double hp = (double)x[i] - keep;
    dsc_l2norm_rows(R, D, yp, NULL, x);
    for (int j = 0; j < R * D; j++) lp += (double)yp[j] * dy[j];
    x[i] = (float)(keep - h);
    const double hm = keep - (double)x[i];
    dsc_l2norm_rows(R, D, yp, NULL, x);
    for (int j = 0; j < R * D; j++) lm += (double)yp[j] * dy[j];
    x[i] = keep;
    fd[i] = (float)((lp - lm) / (hp + hm));
  }
  for (int r = 0; r < R; r++) {
    char what[64];
    snprintf(what, sizeof what, "l2norm finite differences row %d", r);
    check_grad(what, dx + r * D, fd + r * D, D, 1e-3, r == 2 ? 0.0 : 1e-5);
  }
  CHECK(fabs(dx[2 * D] - dy[2 * D] / 1e-12) <= 1e-6 * fabs(dy[2 * D] / 1e-12),
        "zero row: dx %g, dy / 1e-12 %g", (double)dx[2 * D], dy[2 * D] / 1e-12);
}

/* ---- ties and argument errors ---- */

static void test_ties(void) {
  dsc_backend *be[2];
  if (!backends_open(be)) {
    backends_close(be);
    return;
  }
  enum { P = 8, C = 6 };
  float *rnd = test_rows(51, P, C), *e = test_rows(52, 1, C);
  float ua[P * C], ub[P * C];
  int32_t got[P * 3];
  for (int b = 0; b < 2; b++) {
    const char *bn = be[b]->name;
    /* Every query equals e; u_b rows 3 and 6 equal e, the others are random (dot < 1). */
    for (int i = 0; i < P; i++) {
      memcpy(ua + i * C, e, sizeof(float) * C);
      memcpy(ub + i * C, i == 3 || i == 6 ? e : rnd + i * C, sizeof(float) * C);
    }
    CHECK_OK(dsc_ssl_match(be[b], 1, P, C, ua, ub, got));
    for (int i = 0; i < P; i++) CHECK(got[i] == 3, "%s: match[%d] = %d, want 3", bn, i, got[i]);
    /* All of u_b equal: every match is 0. */
    for (int i = 0; i < P; i++) memcpy(ub + i * C, rnd, sizeof(float) * C);
    CHECK_OK(dsc_ssl_match(be[b], 1, P, C, ua, ub, got));
    for (int i = 0; i < P; i++) CHECK(got[i] == 0, "%s: match[%d] = %d, want 0", bn, i, got[i]);
    /* All of u_a equal: the neighbors of i are the smallest indices other than i. */
    CHECK_OK(dsc_ssl_neighbors(be[b], 1, P, C, 3, ua, got));
    for (int i = 0; i < P; i++) {
      int want[3], w = 0;
      for (int j = 0; j < P && w < 3; j++)
        if (j != i) want[w++] = j;
      for (int t = 0; t < 3; t++)
        CHECK(got[i * 3 + t] == want[t], "%s: all equal: nei[%d][%d] = %d, want %d", bn, i, t,
              got[i * 3 + t], want[t]);
    }
    /* Rows 1, 4 and 6 equal e, the others random: the neighbors of 4 are 1 then 6, of 6 are
     * 1 then 4, of 1 are 4 then 6. */
    for (int i = 0; i < P; i++)
      memcpy(ua + i * C, i == 1 || i == 4 || i == 6 ? e : rnd + i * C, sizeof(float) * C);
    CHECK_OK(dsc_ssl_neighbors(be[b], 1, P, C, 2, ua, got));
    const int want2[3][3] = {{1, 4, 6}, {4, 1, 6}, {6, 1, 4}};
    for (int c = 0; c < 3; c++) {
      const int i = want2[c][0];
      CHECK(got[i * 2] == want2[c][1] && got[i * 2 + 1] == want2[c][2],
            "%s: nei[%d] = {%d, %d}, want {%d, %d}", bn, i, got[i * 2], got[i * 2 + 1],
            want2[c][1], want2[c][2]);
    }
  }
  free(rnd);
  free(e);
  backends_close(be);
}

static void test_errors(void) {
  dsc_backend *be = NULL;
  CHECK_OK(dsc_backend_ref_new(&be));
  if (!be) return;
  float u[4 * 3] = {0};
  int32_t idx[16];
  CHECK_ERR(dsc_ssl_neighbors(be, 1, 4, 3, 4, u, idx), "k_nei");
  CHECK_ERR(dsc_ssl_neighbors(be, 1, 4, 3, 5, u, idx), "k_nei");
  CHECK_ERR(dsc_ssl_neighbors(be, 1, 4, 3, 0, u, idx), "k_nei");
  CHECK_ERR(dsc_ssl_neighbors(be, 1, 1, 3, 1, u, idx), "k_nei");
  CHECK_OK(dsc_ssl_neighbors(be, 1, 4, 3, 3, u, idx));
  CHECK_ERR(dsc_ssl_match(be, 1, 0, 3, u, u, idx), "p = 0");
  be->destroy(be);
}

/* ---- a large InfoNCE case against a naive loop ---- */

/* rows 300 (more than one chunk of 256), L 1000, d 16, npos 2, tau 0.07, on both backends,
 * against a double-precision loop over the whole logit matrix written here. */
static void test_infonce_large(void) {
  dsc_backend *be[2];
  if (!backends_open(be)) {
    backends_close(be);
    return;
  }
  const int rows = 300, d = 16, npos = 2, L = 1000;
  const double tau = (double)0.07f;
  float *q = test_rows(61, rows, d), *pos = test_rows(62, (int64_t)rows * npos, d);
  float *kq = test_rows(63, L, d), *queue = malloc(sizeof(float) * d * L);
  for (int l = 0; l < L; l++)
    for (int i = 0; i < d; i++) queue[i * L + l] = kq[l * d + i];
  /* naive: logits l_j (npos + L), loss_r = lse(all) - lse(pos), grad via the softmaxes */
  double loss_want = 0.0;
  float *g_want = calloc((size_t)rows * d, sizeof(float));
  double *lg = malloc(sizeof(double) * (npos + L));
  for (int r = 0; r < rows; r++) {
    const float *qr = q + r * d;
    for (int j = 0; j < npos + L; j++) {
      double s = 0.0;
      for (int i = 0; i < d; i++)
        s += (double)qr[i] * (j < npos ? pos[(r * npos + j) * d + i] : kq[(j - npos) * d + i]);
      lg[j] = s / tau;
    }
    double m = -INFINITY, mp = -INFINITY, sa = 0, sp = 0;
    for (int j = 0; j < npos + L; j++) m = fmax(m, lg[j]);
    for (int j = 0; j < npos; j++) mp = fmax(mp, lg[j]);
    for (int j = 0; j < npos + L; j++) sa += exp(lg[j] - m);
    for (int j = 0; j < npos; j++) sp += exp(lg[j] - mp);
    loss_want += (m + log(sa)) - (mp + log(sp));
    for (int i = 0; i < d; i++) {
      double v = 0.0;
      for (int j = 0; j < npos + L; j++) {
        const double w = exp(lg[j] - m) / sa - (j < npos ? exp(lg[j] - mp) / sp : 0.0);
        v += w * (j < npos ? pos[(r * npos + j) * d + i] : kq[(j - npos) * d + i]);
      }
      g_want[r * d + i] = (float)(v / (rows * tau));
    }
  }
  loss_want /= rows;
  float *g = malloc(sizeof(float) * rows * d);
  for (int b = 0; b < 2; b++) {
    double loss = 0.0;
    memset(g, 0, sizeof(float) * rows * d);
    CHECK_OK(dsc_loss_infonce(be[b], rows, d, npos, L, q, pos, queue, (float)tau, 1.0f, &loss,
                              g));
    check_loss(be[b]->name, loss, loss_want, 1e-5);               /* relative 1e-5 */
    check_grad(be[b]->name, g, g_want, (size_t)rows * d, 1e-5, 1e-7); /* 1e-5 max + 1e-7 */
  }
  /* Deterministic for a fixed thread count: two runs on a 2-thread cpu backend agree bit
   * for bit. */
  dsc_backend *be2 = NULL;
  CHECK_OK(dsc_backend_cpu_new(2, &be2));
  if (be2) {
    float *g2 = calloc((size_t)rows * d, sizeof(float));
    double l1 = 0.0, l2 = 0.0;
    memset(g, 0, sizeof(float) * rows * d);
    CHECK_OK(dsc_loss_infonce(be2, rows, d, npos, L, q, pos, queue, (float)tau, 1.0f, &l1, g));
    CHECK_OK(dsc_loss_infonce(be2, rows, d, npos, L, q, pos, queue, (float)tau, 1.0f, &l2, g2));
    CHECK(l1 == l2 && memcmp(g, g2, sizeof(float) * rows * d) == 0,
          "2 threads: two runs differ (loss %.17g vs %.17g)", l1, l2);
    free(g2);
    be2->destroy(be2);
  }
  free(g);
  free(lg);
  free(g_want);
  free(q);
  free(pos);
  free(kq);
  free(queue);
  backends_close(be);
}

/* The vectorized exp of the queue softmax (src/ssl/fast_exp.h) against libm in double over
 * its whole range [-87, 0] and at the edges: relative error <= 3e-7, i.e. 2.5 float ulps (the
 * rounding of r and of six Horner steps; measured 2.45e-7), and 0 below -87. The loss sums these
 * terms in double, so its relative error stays ~1e-7. */
static void test_fast_exp(void) {
  double worst = 0.0;
  for (int i = 0; i <= 200000; i++) {
    float x = -87.0f * (float)i / 200000.0f;
    double want = exp((double)x), got = (double)dsc_fast_exp_nonpos(x);
    double rel = fabs(got - want) / want;
    if (rel > worst) worst = rel;
  }
  CHECK(worst <= 3e-7, "max relative error %.3g over [-87, 0]", worst);
  CHECK(dsc_fast_exp_nonpos(0.0f) == 1.0f, "exp(0) = %.9g", (double)dsc_fast_exp_nonpos(0.0f));
  CHECK(dsc_fast_exp_nonpos(-88.0f) == 0.0f && dsc_fast_exp_nonpos(-1e30f) == 0.0f &&
            dsc_fast_exp_nonpos(-INFINITY) == 0.0f, "underflow is not 0");
}

/* Two heads sharing the queue (L_pix + L_nei of dsc-nei) equal one call per head: losses to
 * 1e-9 relative and the summed gradient to 1e-6 * max (only the order of float roundings
 * differs: one combined softmax-weight product with the queue instead of two). Also with a
 * temperature of 0.02, where the heads' maxima differ by up to 100: each head keeps its own
 * terms (no underflow from the other head's larger logits). */
static void test_infonce_heads(void) {
  dsc_backend *be = NULL;
  CHECK_OK(dsc_backend_cpu_new(2, &be));
  if (!be) return;
  const int rows = 200, d = 16, k = 2, L = 700;
  float *q = test_rows(71, rows, d), *p1 = test_rows(72, rows, d);
  float *p2 = test_rows(73, (int64_t)rows * (1 + k), d), *kq = test_rows(74, L, d);
  float *queue = malloc(sizeof(float) * d * L);
  for (int l = 0; l < L; l++)
    for (int i = 0; i < d; i++) queue[i * L + l] = kq[l * d + i];
  float *g_sep = calloc((size_t)rows * d, sizeof(float)), *g_heads = calloc((size_t)rows * d, sizeof(float));
  const float taus[2] = {0.2f, 0.02f};
  for (int ti = 0; ti < 2; ti++) {
    double l1 = 0, l2 = 0, h1 = 0, h2 = 0;
    memset(g_sep, 0, sizeof(float) * rows * d);
    memset(g_heads, 0, sizeof(float) * rows * d);
    CHECK_OK(dsc_loss_infonce(be, rows, d, 1, L, q, p1, queue, taus[ti], 0.5f, &l1, g_sep));
    CHECK_OK(dsc_loss_infonce(be, rows, d, 1 + k, L, q, p2, queue, taus[ti], 0.3f, &l2, g_sep));
    dsc_infonce_head heads[2] = {{1, p1, 0.5f, &h1}, {1 + k, p2, 0.3f, &h2}};
    CHECK_OK(dsc_loss_infonce_heads(be, rows, d, L, q, queue, taus[ti], 2, heads, g_heads));
    CHECK(fabs(h1 - l1) <= 1e-9 * fabs(l1) && fabs(h2 - l2) <= 1e-9 * fabs(l2),
          "tau %g: heads %.12g %.12g vs separate %.12g %.12g", (double)taus[ti], h1, h2, l1, l2);
    double gmax = 0, err = 0;
    for (int i = 0; i < rows * d; i++) {
      gmax = fmax(gmax, fabs(g_sep[i]));
      err = fmax(err, fabs((double)g_heads[i] - g_sep[i]));
    }
    CHECK(err <= 1e-6 * gmax, "tau %g: gradient differs by %.3g (max %.3g)", (double)taus[ti], err, gmax);
  }
  double dummy = 0;
  dsc_infonce_head bad = {1, p1, 1.0f, &dummy};
  CHECK_ERR(dsc_loss_infonce_heads(be, rows, d, L, q, queue, 0.2f, 5, &bad, g_heads), "heads");
  free(g_sep);
  free(g_heads);
  free(q);
  free(p1);
  free(p2);
  free(kq);
  free(queue);
  be->destroy(be);
}

static const dsc_test tests[] = {
    {"infonce_heads", test_infonce_heads},
    {"fast_exp", test_fast_exp},
    {"golden_l2norm", test_golden_l2norm},
    {"golden_match", test_golden_match},
    {"golden_infonce", test_golden_infonce},
    {"golden_triplet", test_golden_triplet},
    {"infonce_accumulates", test_infonce_accumulates},
    {"triplet_accumulates", test_triplet_accumulates},
    {"fd_infonce", test_fd_infonce},
    {"fd_triplet", test_fd_triplet},
    {"fd_l2norm", test_fd_l2norm},
    {"ties", test_ties},
    {"errors", test_errors},
    {"infonce_large", test_infonce_large},
};

TEST_MAIN(tests)
