/* test_ssl_cluster.c: online k-means, L_km, Sinkhorn, L_pm and L_ce (src/ssl/kmeans.c,
 * src/ssl/loss_proto.c; spec/METHOD.md §4.5-4.7).
 *
 * Golden: tests/golden/loss_cluster.safetensors from tools/reference/make_loss_golden_cluster.py
 * (PyTorch float64, formulas straight from METHOD.md, gradients by autograd, inputs stored as
 * float32 and free of near-ties: every argmax wins by > 1e-4). Each check runs with the cpu
 * backend (2 threads) and the ref backend. Tolerances, written beside each check:
 *   losses            relative error <= 1e-5 (float32 inputs, double sums: ~1e-7 expected)
 *   gradients         max-abs error <= 1e-5 * max|grad| + 1e-7
 *   codes, centroids  max-abs error <= 1e-5 (values in [0, 1])
 *   labels, targets   exact
 * Unit checks: finite differences of every gradient, |P| < 2, empty clusters, the
 * initialization's contract, Sinkhorn's marginals and its FLT_MIN rule, ties to the smallest
 * index, accumulation (+=), and cpu against ref at a realistic dimension.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "dsc/rng.h"
#include "dsc/safetensors.h"
#include "dsc/ssl_loss.h"
#include "test.h"

#define GOLDEN "tests/golden/loss_cluster.safetensors"

/* ---- helpers ---- */

static dsc_backend *backend_make(int cpu) {
  dsc_backend *be = NULL;
  if (cpu)
    CHECK_OK(dsc_backend_cpu_new(2, &be));
  else
    CHECK_OK(dsc_backend_ref_new(&be));
  return be;
}

/* Rows of normal draws, normalized per row in double. */
static float *rand_rows(int64_t rows, int d, uint32_t stream) {
  float *x = malloc((size_t)rows * d * sizeof *x);
  for (int64_t r = 0; r < rows; r++) {
    double v[1024], s = 0;
    for (int j = 0; j < d; j++) {
      v[j] = dsc_rng_normal(1234, DSC_RNG_BENCH, stream, (uint32_t)r, (uint32_t)j);
      s += v[j] * v[j];
    }
    for (int j = 0; j < d; j++) x[(size_t)r * d + j] = (float)(v[j] / sqrt(s));
  }
  return x;
}

static double max_abs(const float *a, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; i++)
    if (fabs((double)a[i]) > m) m = fabs((double)a[i]);
  return m;
}

static double max_abs_diff(const float *a, const float *b, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; i++) {
    double e = fabs((double)a[i] - (double)b[i]);
    if (!(e <= m)) m = e; /* a NaN propagates as the error */
  }
  return m;
}

/* Gradient check: max-abs error <= 1e-5 * max|want| + 1e-7. */
static void check_grad(const char *what, const float *got, const float *want, size_t n) {
  double tol = 1e-5 * max_abs(want, n) + 1e-7;
  double e = max_abs_diff(got, want, n);
  CHECK(e <= tol, "%s: max-abs error %.3g > %.3g", what, e, tol);
}

static void check_loss(const char *what, double got, double want) {
  double e = fabs(got - want) / fmax(fabs(want), 1e-30);
  CHECK(e <= 1e-5, "%s: %.9g vs %.9g, relative error %.3g > 1e-5", what, got, want, e);
}

typedef struct golden {
  dsc_safetensors *f;
  int n, p, d, k, kp, km_iters, sk_iters;
  float tau_km, tau_pm, eps;
} golden;

static int golden_meta_int(const golden *g, const char *key) {
  const char *v = dsc_st_meta(g->f, key);
  CHECK(v != NULL, "metadata %s missing", key);
  return v ? atoi(v) : 0;
}

static float golden_meta_float(const golden *g, const char *key) {
  const char *v = dsc_st_meta(g->f, key);
  CHECK(v != NULL, "metadata %s missing", key);
  return v ? (float)atof(v) : 0.0f;
}

static int golden_open(golden *g) {
  memset(g, 0, sizeof *g);
  dsc_status *st = dsc_st_open(GOLDEN, &g->f);
  CHECK(st == NULL, "%s", st ? st->msg : "");
  if (st) {
    dsc_status_free(st);
    return 0;
  }
  g->n = golden_meta_int(g, "n");
  g->p = golden_meta_int(g, "p");
  g->d = golden_meta_int(g, "d");
  g->k = golden_meta_int(g, "k");
  g->kp = golden_meta_int(g, "kp");
  g->km_iters = golden_meta_int(g, "km_iters");
  g->sk_iters = golden_meta_int(g, "sinkhorn_iters");
  g->tau_km = golden_meta_float(g, "tau_km");
  g->tau_pm = golden_meta_float(g, "tau_pm");
  g->eps = golden_meta_float(g, "eps");
  return 1;
}

static float *golden_f32(const golden *g, const char *name, size_t numel) {
  float *x = calloc(numel ? numel : 1, sizeof *x);
  CHECK_OK(dsc_st_read_f32(g->f, name, x, numel));
  return x;
}

static int32_t *golden_i32(const golden *g, const char *name, size_t numel) {
  int32_t *x = calloc(numel ? numel : 1, sizeof *x);
  const dsc_st_tensor *t = dsc_st_find(g->f, name);
  CHECK(t && t->dtype == DSC_I32 && dsc_st_numel(t) == numel, "%s: missing or not I32[%zu]",
        name, numel);
  if (t && t->dtype == DSC_I32 && dsc_st_numel(t) == numel)
    memcpy(x, dsc_st_data(g->f, t), numel * sizeof *x);
  return x;
}

static double golden_scalar(const golden *g, const char *name) {
  float x = 0;
  CHECK_OK(dsc_st_read_f32(g->f, name, &x, 1));
  const dsc_st_tensor *t = dsc_st_find(g->f, name);
  if (t && t->dtype == DSC_F64) {
    double v;
    memcpy(&v, dsc_st_data(g->f, t), sizeof v);
    return v;
  }
  return x;
}

/* ---- golden tests ---- */

static void golden_kmeans_with(int cpu) {
  golden g;
  if (!golden_open(&g)) return;
  dsc_backend *be = backend_make(cpu);
  int64_t rows = (int64_t)g.n * g.p;
  size_t rd = (size_t)rows * g.d, kd = (size_t)g.k * g.d;
  float *v_a = golden_f32(&g, "v_a", rd), *v_b = golden_f32(&g, "v_b", rd);
  float *cent = golden_f32(&g, "km.init", kd);
  float *want_cent = golden_f32(&g, "km.centroids", kd);
  int32_t *match = golden_i32(&g, "match", (size_t)rows);
  int32_t *want_hist = golden_i32(&g, "km.history", (size_t)g.km_iters * rows);
  int32_t *want_lab = golden_i32(&g, "km.labels", (size_t)rows);
  int32_t *want_lab_a = golden_i32(&g, "km.labels_a", (size_t)rows);
  float *want_grad = golden_f32(&g, "km.grad_v_a", rd);
  int32_t *hist = malloc((size_t)g.km_iters * rows * sizeof *hist);
  int32_t *lab = malloc((size_t)rows * sizeof *lab), *lab_a = malloc((size_t)rows * sizeof *lab_a);
  float *grad = calloc(rd, sizeof *grad);

  CHECK_OK(dsc_kmeans_run(be, rows, g.d, g.k, g.km_iters, v_b, cent, lab, hist));
  /* labels exact */
  CHECK(memcmp(hist, want_hist, (size_t)g.km_iters * rows * sizeof *hist) == 0, "k-means history differs");
  CHECK(memcmp(lab, want_lab, (size_t)rows * sizeof *lab) == 0, "k-means labels differ");
  /* centroids: max-abs <= 1e-5 */
  double ec = max_abs_diff(cent, want_cent, kd);
  CHECK(ec <= 1e-5, "centroids: max-abs error %.3g > 1e-5", ec);

  for (int64_t r = 0; r < rows; r++) lab_a[r] = lab[(r / g.p) * g.p + match[r]];
  CHECK(memcmp(lab_a, want_lab_a, (size_t)rows * sizeof *lab_a) == 0, "query labels differ");
  double loss = -1;
  int present = -1;
  CHECK_OK(dsc_loss_kmeans(rows, g.d, g.k, v_a, lab_a, v_b, lab, g.tau_km, 1.0f, &loss, grad, &present));
  int32_t *want_present = golden_i32(&g, "km.present", 1);
  CHECK(present == want_present[0], "present %d, want %d", present, (int)want_present[0]); /* exact */
  free(want_present);
  check_loss("L_km", loss, golden_scalar(&g, "km.loss"));
  check_grad("L_km dv_a", grad, want_grad, rd);

  free(v_a), free(v_b), free(cent), free(want_cent), free(match), free(want_hist);
  free(want_lab), free(want_lab_a), free(want_grad), free(hist), free(lab), free(lab_a), free(grad);
  if (be) be->destroy(be);
  dsc_st_close(g.f);
}

static void test_golden_kmeans_cpu(void) { golden_kmeans_with(1); }
static void test_golden_kmeans_ref(void) { golden_kmeans_with(0); }

/* scores (rows, k) = x (rows, d) protos^T in double, stored as float. */
static void scores_double(int64_t rows, int d, int k, const float *x, const float *protos, float *s) {
  for (int64_t r = 0; r < rows; r++)
    for (int c = 0; c < k; c++) {
      double acc = 0;
      for (int j = 0; j < d; j++) acc += (double)x[(size_t)r * d + j] * (double)protos[(size_t)c * d + j];
      s[(size_t)r * k + c] = (float)acc;
    }
}

static void test_golden_sinkhorn(void) {
  golden g;
  if (!golden_open(&g)) return;
  int64_t rows = (int64_t)g.n * g.p;
  size_t rd = (size_t)rows * g.d, rk = (size_t)rows * g.kp;
  float *v_a = golden_f32(&g, "v_a", rd), *v_b = golden_f32(&g, "v_b", rd);
  float *protos = golden_f32(&g, "protos", (size_t)g.kp * g.d);
  float *s = malloc(rk * sizeof *s), *q = malloc(rk * sizeof *q);
  const char *names[2] = {"pm.codes_a", "pm.codes_b"};
  for (int v = 0; v < 2; v++) {
    float *want = golden_f32(&g, names[v], rk);
    scores_double(rows, g.d, g.kp, v == 0 ? v_a : v_b, protos, s);
    dsc_sinkhorn(rows, g.kp, s, g.eps, g.sk_iters, q);
    double e = max_abs_diff(q, want, rk);
    CHECK(e <= 1e-5, "%s: max-abs error %.3g > 1e-5", names[v], e); /* codes: max-abs <= 1e-5 */
    free(want);
  }
  free(v_a), free(v_b), free(protos), free(s), free(q);
  dsc_st_close(g.f);
}

static void golden_proto_with(int cpu, dsc_proto_loss_kind kind) {
  golden g;
  if (!golden_open(&g)) return;
  dsc_backend *be = backend_make(cpu);
  const char *pre = kind == DSC_PROTO_SWAP ? "pm" : "ce";
  char name[64];
  int64_t rows = (int64_t)g.n * g.p;
  size_t rd = (size_t)rows * g.d, kd = (size_t)g.kp * g.d;
  float *v_a = golden_f32(&g, "v_a", rd), *v_b = golden_f32(&g, "v_b", rd);
  float *protos = golden_f32(&g, "protos", kd);
  int32_t *match = golden_i32(&g, "match", (size_t)rows);
  snprintf(name, sizeof name, "%s.grad_v_a", pre);
  float *want_gv = golden_f32(&g, name, rd);
  snprintf(name, sizeof name, "%s.grad_protos", pre);
  float *want_gp = golden_f32(&g, name, kd);
  float *gv = calloc(rd, sizeof *gv), *gp = calloc(kd, sizeof *gp);
  int32_t *target = malloc((size_t)rows * sizeof *target);
  double loss = -1;
  CHECK_OK(dsc_loss_proto(be, kind, g.n, g.p, g.d, g.kp, v_a, v_b, match, protos, g.tau_pm, g.eps,
                          g.sk_iters, 1.0f, &loss, gv, gp, target));
  snprintf(name, sizeof name, "%s.loss", pre);
  check_loss(name, loss, golden_scalar(&g, name));
  check_grad("dv_a", gv, want_gv, rd);
  check_grad("dprotos", gp, want_gp, kd);
  if (kind == DSC_PROTO_CE) {
    int32_t *want_t = golden_i32(&g, "ce.target", (size_t)rows);
    CHECK(memcmp(target, want_t, (size_t)rows * sizeof *target) == 0, "CE targets differ"); /* exact */
    free(want_t);
  }
  free(v_a), free(v_b), free(protos), free(match), free(want_gv), free(want_gp), free(gv), free(gp);
  free(target);
  if (be) be->destroy(be);
  dsc_st_close(g.f);
}

static void test_golden_pm_cpu(void) { golden_proto_with(1, DSC_PROTO_SWAP); }
static void test_golden_pm_ref(void) { golden_proto_with(0, DSC_PROTO_SWAP); }
static void test_golden_ce_cpu(void) { golden_proto_with(1, DSC_PROTO_CE); }
static void test_golden_ce_ref(void) { golden_proto_with(0, DSC_PROTO_CE); }

/* ---- finite differences ----
 * Central differences with h = 1e-3 on float inputs (the step actually taken, (x+h) - (x-h) in
 * float, is the denominator); the losses are sums in double, so the truncation error O(h^2)
 * dominates (observed ~3e-5 of max|grad| at most). Tolerance: max-abs error <= 1e-4 * max|grad| + 1e-6. */

#define FD_H 1e-3f

static void fd_check(const char *what, const float *analytic, const float *numeric, size_t n) {
  double tol = 1e-4 * max_abs(numeric, n) + 1e-6;
  double e = max_abs_diff(analytic, numeric, n);
  CHECK(e <= tol, "%s: analytic vs finite differences max-abs %.3g > %.3g", what, e, tol);
}

static void test_fd_kmeans(void) {
  const int n = 2, p = 12, d = 6, k = 4;
  int64_t rows = (int64_t)n * p;
  float *v_a = rand_rows(rows, d, 1), *v_b = rand_rows(rows, d, 2);
  int32_t y_a[24], y_b[24];
  for (int r = 0; r < rows; r++) {
    y_b[r] = r % k;
    y_a[r] = (r * 7 + 1) % k;
  }
  float *grad = calloc((size_t)rows * d, sizeof *grad), *num = calloc((size_t)rows * d, sizeof *num);
  double loss;
  int present;
  CHECK_OK(dsc_loss_kmeans(rows, d, k, v_a, y_a, v_b, y_b, 0.2f, 1.0f, &loss, grad, &present));
  CHECK(present == k && loss > 0, "present %d loss %g", present, loss);
  for (size_t i = 0; i < (size_t)rows * d; i++) {
    float x0 = v_a[i], xp = x0 + FD_H, xm = x0 - FD_H;
    double lp, lm;
    v_a[i] = xp;
    CHECK_OK(dsc_loss_kmeans(rows, d, k, v_a, y_a, v_b, y_b, 0.2f, 1.0f, &lp, NULL, NULL));
    v_a[i] = xm;
    CHECK_OK(dsc_loss_kmeans(rows, d, k, v_a, y_a, v_b, y_b, 0.2f, 1.0f, &lm, NULL, NULL));
    v_a[i] = x0;
    num[i] = (float)((lp - lm) / ((double)xp - (double)xm));
  }
  fd_check("L_km dv_a", grad, num, (size_t)rows * d);
  free(v_a), free(v_b), free(grad), free(num);
}

/* L_pm with the codes held fixed (METHOD.md: codes are constants), in double: the function
 * whose gradient dsc_loss_proto returns. */
static double pm_fixed_codes(int n, int p, int d, int k, const float *v_a, const float *v_b,
                             const int32_t *match, const float *protos, const float *qa,
                             const float *qb, double tau) {
  int64_t rows = (int64_t)n * p;
  double total = 0;
  double sa[64], sb[64];
  for (int64_t r = 0; r < rows; r++) {
    int64_t c = (r / p) * p + match[r];
    double ma = -INFINITY, mb = -INFINITY;
    for (int j = 0; j < k; j++) {
      double a = 0, b = 0;
      for (int t = 0; t < d; t++) {
        a += (double)v_a[(size_t)r * d + t] * protos[(size_t)j * d + t];
        b += (double)v_b[(size_t)c * d + t] * protos[(size_t)j * d + t];
      }
      sa[j] = a / tau, sb[j] = b / tau;
      ma = fmax(ma, sa[j]), mb = fmax(mb, sb[j]);
    }
    double ea = 0, eb = 0;
    for (int j = 0; j < k; j++) ea += exp(sa[j] - ma), eb += exp(sb[j] - mb);
    double la = ma + log(ea), lb = mb + log(eb);
    for (int j = 0; j < k; j++)
      total -= qb[(size_t)c * k + j] * (sa[j] - la) + qa[(size_t)r * k + j] * (sb[j] - lb);
  }
  return total / (double)rows;
}

static void test_fd_proto_swap(void) {
  const int n = 2, p = 5, d = 6, k = 7;
  const float tau = 0.1f, eps = 0.05f;
  int64_t rows = (int64_t)n * p;
  dsc_backend *be = backend_make(0);
  float *v_a = rand_rows(rows, d, 3), *v_b = rand_rows(rows, d, 4), *protos = rand_rows(k, d, 5);
  int32_t match[10] = {3, 0, 0, 4, 1, 2, 2, 4, 0, 1};
  size_t rk = (size_t)rows * k, rd = (size_t)rows * d, kd = (size_t)k * d;
  float *s = malloc(rk * sizeof *s), *qa = malloc(rk * sizeof *qa), *qb = malloc(rk * sizeof *qb);
  scores_double(rows, d, k, v_a, protos, s);
  dsc_sinkhorn(rows, k, s, eps, 3, qa);
  scores_double(rows, d, k, v_b, protos, s);
  dsc_sinkhorn(rows, k, s, eps, 3, qb);
  float *gv = calloc(rd, sizeof *gv), *gp = calloc(kd, sizeof *gp);
  float *nv = calloc(rd, sizeof *nv), *np = calloc(kd, sizeof *np);
  double loss;
  CHECK_OK(dsc_loss_proto(be, DSC_PROTO_SWAP, n, p, d, k, v_a, v_b, match, protos, tau, eps, 3, 1.0f,
                          &loss, gv, gp, NULL));
  double l0 = pm_fixed_codes(n, p, d, k, v_a, v_b, match, protos, qa, qb, tau);
  CHECK(fabs(loss - l0) <= 1e-6 * fabs(l0), "L_pm %.9g vs fixed-code loss %.9g", loss, l0);
  for (int which = 0; which < 2; which++) {
    float *x = which == 0 ? v_a : protos, *num = which == 0 ? nv : np;
    size_t cnt = which == 0 ? rd : kd;
    for (size_t i = 0; i < cnt; i++) {
      float x0 = x[i], xp = x0 + FD_H, xm = x0 - FD_H;
      x[i] = xp;
      double lp = pm_fixed_codes(n, p, d, k, v_a, v_b, match, protos, qa, qb, tau);
      x[i] = xm;
      double lm = pm_fixed_codes(n, p, d, k, v_a, v_b, match, protos, qa, qb, tau);
      x[i] = x0;
      num[i] = (float)((lp - lm) / ((double)xp - (double)xm));
    }
  }
  fd_check("L_pm dv_a", gv, nv, rd);
  fd_check("L_pm dprotos", gp, np, kd);
  free(v_a), free(v_b), free(protos), free(s), free(qa), free(qb), free(gv), free(gp), free(nv), free(np);
  if (be) be->destroy(be);
}

/* L_ce's codes enter only through the hard targets, which stay put under small perturbations
 * (checked), so dsc_loss_proto itself is differentiated. */
static void test_fd_proto_ce(void) {
  const int n = 2, p = 5, d = 6, k = 7;
  const float tau = 0.1f, eps = 0.05f;
  int64_t rows = (int64_t)n * p;
  dsc_backend *be = backend_make(0);
  float *v_a = rand_rows(rows, d, 6), *v_b = rand_rows(rows, d, 7), *protos = rand_rows(k, d, 8);
  int32_t match[10] = {1, 1, 4, 0, 2, 3, 0, 4, 2, 2}, t0[10], t1[10];
  size_t rd = (size_t)rows * d, kd = (size_t)k * d;
  float *gv = calloc(rd, sizeof *gv), *gp = calloc(kd, sizeof *gp);
  float *nv = calloc(rd, sizeof *nv), *np = calloc(kd, sizeof *np);
  double loss;
  CHECK_OK(dsc_loss_proto(be, DSC_PROTO_CE, n, p, d, k, v_a, v_b, match, protos, tau, eps, 3, 1.0f,
                          &loss, gv, gp, t0));
  int moved = 0;
  for (int which = 0; which < 2; which++) {
    float *x = which == 0 ? v_a : protos, *num = which == 0 ? nv : np;
    size_t cnt = which == 0 ? rd : kd;
    for (size_t i = 0; i < cnt; i++) {
      float x0 = x[i], xp = x0 + FD_H, xm = x0 - FD_H;
      double lp, lm;
      x[i] = xp;
      CHECK_OK(dsc_loss_proto(be, DSC_PROTO_CE, n, p, d, k, v_a, v_b, match, protos, tau, eps, 3, 1.0f,
                              &lp, NULL, NULL, t1));
      moved += memcmp(t0, t1, sizeof t0) != 0;
      x[i] = xm;
      CHECK_OK(dsc_loss_proto(be, DSC_PROTO_CE, n, p, d, k, v_a, v_b, match, protos, tau, eps, 3, 1.0f,
                              &lm, NULL, NULL, t1));
      moved += memcmp(t0, t1, sizeof t0) != 0;
      x[i] = x0;
      num[i] = (float)((lp - lm) / ((double)xp - (double)xm));
    }
  }
  CHECK(moved == 0, "%d perturbations moved a CE target", moved);
  fd_check("L_ce dv_a", gv, nv, rd);
  fd_check("L_ce dprotos", gp, np, kd);
  free(v_a), free(v_b), free(protos), free(gv), free(gp), free(nv), free(np);
  if (be) be->destroy(be);
}

/* ---- contracts ---- */

static void test_kmeans_loss_too_few_clusters(void) {
  const int rows = 8, d = 4, k = 3;
  float *v_a = rand_rows(rows, d, 9), *v_b = rand_rows(rows, d, 10);
  int32_t y_a[8], y_b[8];
  for (int r = 0; r < rows; r++) y_a[r] = 1, y_b[r] = r < 4 ? 1 : 2; /* P = {1} */
  float grad[32];
  for (int i = 0; i < 32; i++) grad[i] = 0.25f;
  double loss = -1;
  int present = -1;
  CHECK_OK(dsc_loss_kmeans(rows, d, k, v_a, y_a, v_b, y_b, 0.2f, 1.0f, &loss, grad, &present));
  CHECK(loss == 0 && present == 1, "loss %g present %d", loss, present);
  int untouched = 1;
  for (int i = 0; i < 32; i++) untouched &= grad[i] == 0.25f;
  CHECK(untouched, "dv_a changed with |P| = 1");
  for (int r = 0; r < rows; r++) y_b[r] = 0; /* P empty */
  CHECK_OK(dsc_loss_kmeans(rows, d, k, v_a, y_a, v_b, y_b, 0.2f, 1.0f, &loss, grad, &present));
  CHECK(loss == 0 && present == 0, "loss %g present %d", loss, present);
  y_b[0] = 3;
  CHECK_ERR(dsc_loss_kmeans(rows, d, k, v_a, y_a, v_b, y_b, 0.2f, 1.0f, &loss, grad, NULL), "outside");
  free(v_a), free(v_b);
}

/* Cluster 2's centroid points away from every row, so it is empty in every iteration and must
 * come back bit for bit; the others move. */
static void test_kmeans_empty_cluster(void) {
  const int rows = 6, d = 3, k = 3;
  float v[18] = {1, 0.1f, 0, 0.9f, 0.2f, 0, 1, 0, 0.1f, 0, 1, 0.1f, 0.1f, 0.9f, 0, 0, 1, 0};
  for (int r = 0; r < rows; r++) {
    double s = 0;
    for (int j = 0; j < d; j++) s += (double)v[r * d + j] * v[r * d + j];
    for (int j = 0; j < d; j++) v[r * d + j] = (float)(v[r * d + j] / sqrt(s));
  }
  float c[9] = {1, 0, 0, 0, 1, 0, -0.6f, -0.8f, 0};
  float c0[9];
  memcpy(c0, c, sizeof c);
  int32_t lab[6], hist[3 * 6];
  dsc_backend *be = backend_make(1);
  CHECK_OK(dsc_kmeans_run(be, rows, d, k, 3, v, c, lab, hist));
  for (int i = 0; i < 3 * rows; i++) CHECK(hist[i] != 2, "history[%d] = 2", i);
  CHECK(memcmp(c + 6, c0 + 6, 3 * sizeof *c) == 0, "empty cluster's centroid changed");
  CHECK(memcmp(c, c0, 6 * sizeof *c) != 0, "non-empty centroids did not move");
  CHECK(memcmp(lab, hist + 2 * rows, sizeof lab) == 0, "labels are not the last iteration's");
  int32_t want[6] = {0, 0, 0, 1, 1, 1};
  CHECK(memcmp(lab, want, sizeof lab) == 0, "labels %d %d %d %d %d %d", lab[0], lab[1], lab[2], lab[3],
        lab[4], lab[5]);
  /* centroid 0 = norm(mean of rows 0..2), in double */
  double m[3] = {0, 0, 0}, s = 0;
  for (int r = 0; r < 3; r++)
    for (int j = 0; j < d; j++) m[j] += v[r * d + j] / 3.0;
  for (int j = 0; j < d; j++) s += m[j] * m[j];
  for (int j = 0; j < d; j++) CHECK(fabs(c[j] - m[j] / sqrt(s)) <= 1e-7, "centroid 0[%d] = %g", j, c[j]);
  CHECK_ERR(dsc_kmeans_run(be, rows, d, k, 0, v, c, lab, NULL), "iterations");
  if (be) be->destroy(be);
}

static void test_kmeans_init(void) {
  const int rows = 40, d = 5;
  float *v = rand_rows(rows, d, 11);
  float cent[40 * 5], again[40 * 5], other[40 * 5];
  CHECK_ERR(dsc_kmeans_init(rows, d, 41, v, 7, 3, cent), "clusters");
  CHECK_ERR(dsc_kmeans_init(rows, d, 41, v, 7, 3, cent), "pixels");
  for (int k = 1; k <= rows; k += 13) {
    CHECK_OK(dsc_kmeans_init(rows, d, k, v, 7, 3, cent));
    int used[40] = {0};
    for (int t = 0; t < k; t++) {
      int found = -1;
      for (int r = 0; r < rows && found < 0; r++)
        if (memcmp(cent + t * d, v + r * d, (size_t)d * sizeof *v) == 0) found = r;
      CHECK(found >= 0, "k %d: centroid %d is not a row", k, t);
      if (found >= 0) {
        CHECK(!used[found], "k %d: row %d drawn twice", k, found);
        used[found] = 1;
      }
    }
  }
  /* The whole permutation (k = rows) hits every row once; pure function of (seed, step). */
  CHECK_OK(dsc_kmeans_init(rows, d, rows, v, 7, 3, cent));
  CHECK_OK(dsc_kmeans_init(rows, d, rows, v, 7, 3, again));
  CHECK_OK(dsc_kmeans_init(rows, d, rows, v, 7, 4, other));
  CHECK(memcmp(cent, again, sizeof cent) == 0, "same seed and step gave different centroids");
  CHECK(memcmp(cent, other, sizeof cent) != 0, "another step gave the same centroids");
  /* the first pick, by the header's formula */
  int64_t j0 = (int64_t)floor(dsc_rng_uniform(7, DSC_RNG_KMEANS, 3, 0, 0) * rows);
  CHECK(memcmp(cent, v + j0 * d, (size_t)d * sizeof *v) == 0, "centroid 0 is not row %lld", (long long)j0);
  free(v);
}

static void test_sinkhorn_marginals(void) {
  const int b = 50, k = 7;
  float *x = rand_rows(b, 8, 12), *protos = rand_rows(k, 8, 13);
  float *s = malloc((size_t)b * k * sizeof *s), *q = malloc((size_t)b * k * sizeof *q);
  scores_double(b, 8, k, x, protos, s);
  /* rows sum to 1 after any number of iterations (|sum - 1| <= 1e-5) */
  dsc_sinkhorn(b, k, s, 0.05f, 3, q);
  double worst = 0;
  for (int r = 0; r < b; r++) {
    double t = 0;
    for (int c = 0; c < k; c++) t += q[r * k + c];
    worst = fmax(worst, fabs(t - 1));
  }
  CHECK(worst <= 1e-5, "row sums off by %.3g", worst);
  /* columns approach B/K as the iterations converge (eps 0.5 for a well-conditioned matrix,
   * 100 iterations: relative error <= 1e-4) */
  dsc_sinkhorn(b, k, s, 0.5f, 100, q);
  double cworst = 0;
  for (int c = 0; c < k; c++) {
    double t = 0;
    for (int r = 0; r < b; r++) t += q[r * k + c];
    cworst = fmax(cworst, fabs(t - (double)b / k) / ((double)b / k));
  }
  CHECK(cworst <= 1e-4, "column sums off B/K by %.3g relative", cworst);
  free(x), free(protos), free(s), free(q);
}

/* Scores 50 apart with eps 0.05: differences of 1000 in S/eps. exp underflows for most entries
 * (flushed to 0) and whole columns of Q vanish; nothing may become NaN or Inf. */
static void test_sinkhorn_extreme(void) {
  const int b = 6, k = 4;
  float s[24];
  for (int r = 0; r < b; r++)
    for (int c = 0; c < k; c++) s[r * k + c] = (r == 0 && c == 1) ? 50.0f : (float)(-(r + c) % 3) * 50.0f;
  float q[24];
  dsc_sinkhorn(b, k, s, 0.05f, 3, q);
  int finite = 1;
  for (int i = 0; i < 24; i++) finite &= isfinite(q[i]) && q[i] >= 0;
  CHECK(finite, "non-finite or negative code");
  for (int r = 0; r < b; r++) {
    double t = 0;
    for (int c = 0; c < k; c++) t += q[r * k + c];
    CHECK(fabs(t - 1) <= 1e-6 || t == 0, "row %d sums to %g", r, t);
  }
  CHECK(fabs(q[1] - 1) <= 1e-6, "row 0 should put its mass on prototype 1, got %g", q[1]);
  /* every score 1000/eps below the maximum except one: only that entry survives */
  for (int i = 0; i < 24; i++) s[i] = -50.0f;
  s[5] = 0;
  dsc_sinkhorn(b, k, s, 0.05f, 3, q);
  for (int i = 0; i < 24; i++) CHECK(q[i] == (i == 5 ? 1.0f : 0.0f), "q[%d] = %g", i, q[i]);
  /* exp(-95) = 5.5e-42 is a float subnormal, below FLT_MIN: flushed, so prototype 1 has no
   * mass and the sample keeps everything on prototype 0 (unflushed, the per-prototype
   * normalization would blow the subnormal up to half the row) */
  float s2[2] = {0.0f, -95.0f * 0.05f}, q2[2];
  dsc_sinkhorn(1, 2, s2, 0.05f, 3, q2);
  CHECK(q2[0] == 1.0f && q2[1] == 0.0f, "subnormal not flushed: %g %g", q2[0], q2[1]);

  /* the prototype losses stay finite on such scores (tau 0.001 on unit vectors) */
  const int n = 1, p = 6, d = 4;
  float *v_a = rand_rows(p, d, 14), *v_b = rand_rows(p, d, 15), *protos = rand_rows(k, d, 16);
  int32_t match[6] = {0, 1, 2, 3, 4, 5};
  float gv[24] = {0}, gp[16] = {0};
  dsc_backend *be = backend_make(0);
  for (int kind = 0; kind < 2; kind++) {
    double loss;
    CHECK_OK(dsc_loss_proto(be, (dsc_proto_loss_kind)kind, n, p, d, k, v_a, v_b, match, protos, 0.001f,
                            0.0005f, 3, 1.0f, &loss, gv, gp, NULL));
    CHECK(isfinite(loss), "kind %d: loss %g", kind, loss);
  }
  int ok = 1;
  for (int i = 0; i < 24; i++) ok &= isfinite(gv[i]);
  for (int i = 0; i < 16; i++) ok &= isfinite(gp[i]);
  CHECK(ok, "non-finite gradient");
  free(v_a), free(v_b), free(protos);
  if (be) be->destroy(be);
}

/* Exact ties (small dyadic values: every product and sum is exact in float, whatever the
 * gemm's order) go to the smallest index. */
static void test_ties(void) {
  float v[4 * 4] = {0.5f, 0.5f, 0.5f, 0.5f, 1, 0, 0, 0, 0, 1, 0, 0, 0.5f, -0.5f, 0.5f, -0.5f};
  /* centroids 1 and 2 equal; centroid 0 and 3 tie on row 0 with 1, 2 */
  float c[4 * 4] = {0, 0, 1, 0, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0, 0, 0, 1};
  for (int cpu = 0; cpu < 2; cpu++) {
    float cc[16];
    memcpy(cc, c, sizeof c);
    int32_t hist[4];
    dsc_backend *be = backend_make(cpu);
    CHECK_OK(dsc_kmeans_run(be, 4, 4, 4, 1, v, cc, hist, NULL));
    /* row 0: scores 0.5, 1, 1, 0.5 -> 1; row 1: 0, 0.5, 0.5, 0 -> 1; row 2 likewise -> 1;
     * row 3: 0.5, 0, 0, -0.5 -> 0 */
    int32_t want[4] = {1, 1, 1, 0};
    CHECK(memcmp(hist, want, sizeof want) == 0, "%s: labels %d %d %d %d", cpu ? "cpu" : "ref", hist[0],
          hist[1], hist[2], hist[3]);

    /* CE targets: prototypes 0 and 1 equal, so every code row has equal entries 0 and 1 */
    float protos[3 * 4] = {0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0, 0, 0, 1};
    float vb[2 * 4] = {0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f};
    int32_t match[2] = {1, 0}, target[2] = {-1, -1};
    double loss;
    CHECK_OK(dsc_loss_proto(be, DSC_PROTO_CE, 1, 2, 4, 3, vb, vb, match, protos, 0.1f, 0.05f, 3, 1.0f,
                            &loss, NULL, NULL, target));
    CHECK(target[0] == 0 && target[1] == 0, "CE targets %d %d", target[0], target[1]);
    if (be) be->destroy(be);
  }
}

/* Gradients accumulate: starting from G0, the result is G0 + scale * grad. */
static void test_accumulate(void) {
  const int n = 2, p = 6, d = 5, k = 4;
  int64_t rows = (int64_t)n * p;
  size_t rd = (size_t)rows * d, kd = (size_t)k * d;
  float *v_a = rand_rows(rows, d, 17), *v_b = rand_rows(rows, d, 18), *protos = rand_rows(k, d, 19);
  int32_t match[12] = {0, 5, 4, 3, 2, 1, 1, 1, 0, 5, 5, 2}, y_a[12], y_b[12];
  for (int r = 0; r < rows; r++) y_a[r] = r % 3, y_b[r] = (r + 1) % 3;
  dsc_backend *be = backend_make(1);
  float *g1 = calloc(rd, sizeof *g1), *g2 = malloc(rd * sizeof *g2), *p1 = calloc(kd, sizeof *p1),
        *p2 = malloc(kd * sizeof *p2);
  double l1, l2;
  for (int term = 0; term < 3; term++) {
    memset(g1, 0, rd * sizeof *g1), memset(p1, 0, kd * sizeof *p1);
    for (size_t i = 0; i < rd; i++) g2[i] = 1.0f;
    for (size_t i = 0; i < kd; i++) p2[i] = -1.0f;
    if (term == 0) {
      CHECK_OK(dsc_loss_kmeans(rows, d, k, v_a, y_a, v_b, y_b, 0.2f, 1.0f, &l1, g1, NULL));
      CHECK_OK(dsc_loss_kmeans(rows, d, k, v_a, y_a, v_b, y_b, 0.2f, 0.5f, &l2, g2, NULL));
    } else {
      dsc_proto_loss_kind kind = term == 1 ? DSC_PROTO_SWAP : DSC_PROTO_CE;
      CHECK_OK(dsc_loss_proto(be, kind, n, p, d, k, v_a, v_b, match, protos, 0.1f, 0.05f, 3, 1.0f, &l1,
                              g1, p1, NULL));
      CHECK_OK(dsc_loss_proto(be, kind, n, p, d, k, v_a, v_b, match, protos, 0.1f, 0.05f, 3, 0.5f, &l2,
                              g2, p2, NULL));
      for (size_t i = 0; i < kd; i++) p1[i] = -1.0f + 0.5f * p1[i];
      check_grad("dprotos accumulated", p2, p1, kd);
    }
    CHECK(l1 == l2 && l1 > 0, "term %d: loss depends on scale (%g, %g)", term, l1, l2);
    for (size_t i = 0; i < rd; i++) g1[i] = 1.0f + 0.5f * g1[i];
    check_grad("dv_a accumulated", g2, g1, rd);
  }
  free(v_a), free(v_b), free(protos), free(g1), free(g2), free(p1), free(p2);
  if (be) be->destroy(be);
}

/* cpu against ref at d 128 (the product of the assignment and the scores run through each
 * backend's gemm). k-means: the first assignment must agree on every row whose best centroid
 * wins by more than 1e-5 in double (near-ties are counted, not failed); L_pm: loss relative
 * 1e-5 and gradients max-abs 1e-5 * max + 1e-7 (smooth: no argmax). */
static void test_cpu_vs_ref(void) {
  const int n = 4, p = 49, d = 128, k = 40, kp = 30;
  int64_t rows = (int64_t)n * p;
  float *v_a = rand_rows(rows, d, 20), *v_b = rand_rows(rows, d, 21), *protos = rand_rows(kp, d, 22);
  int32_t *match = malloc((size_t)rows * sizeof *match);
  for (int64_t r = 0; r < rows; r++) match[r] = (int32_t)((r * 17 + 3) % p);
  dsc_backend *cpu = backend_make(1), *ref = backend_make(0);
  if (!cpu || !ref) return;
  float *c_cpu = malloc((size_t)k * d * sizeof *c_cpu), *c_ref = malloc((size_t)k * d * sizeof *c_ref);
  int32_t *l_cpu = malloc((size_t)rows * sizeof *l_cpu), *l_ref = malloc((size_t)rows * sizeof *l_ref);
  CHECK_OK(dsc_kmeans_init(rows, d, k, v_b, 5, 0, c_cpu));
  memcpy(c_ref, c_cpu, (size_t)k * d * sizeof *c_cpu);
  float *c0 = malloc((size_t)k * d * sizeof *c0);
  memcpy(c0, c_cpu, (size_t)k * d * sizeof *c0);
  CHECK_OK(dsc_kmeans_run(cpu, rows, d, k, 1, v_b, c_cpu, l_cpu, NULL));
  CHECK_OK(dsc_kmeans_run(ref, rows, d, k, 1, v_b, c_ref, l_ref, NULL));
  int bad = 0, near = 0;
  for (int64_t r = 0; r < rows; r++) {
    double best = -INFINITY, second = -INFINITY;
    for (int c = 0; c < k; c++) {
      double s = 0;
      for (int j = 0; j < d; j++) s += (double)v_b[(size_t)r * d + j] * c0[(size_t)c * d + j];
      if (s > best) second = best, best = s;
      else if (s > second) second = s;
    }
    if (best - second <= 1e-5) near++;
    else if (l_cpu[r] != l_ref[r]) bad++;
  }
  CHECK(bad == 0, "%d assignments differ between cpu and ref (%d near-ties)", bad, near);
  if (near) printf("  %d near-ties in the cpu-vs-ref k-means check\n", near);

  size_t rd = (size_t)rows * d, kd = (size_t)kp * d;
  float *gv1 = calloc(rd, sizeof *gv1), *gv2 = calloc(rd, sizeof *gv2);
  float *gp1 = calloc(kd, sizeof *gp1), *gp2 = calloc(kd, sizeof *gp2);
  double l1, l2;
  CHECK_OK(dsc_loss_proto(cpu, DSC_PROTO_SWAP, n, p, d, kp, v_a, v_b, match, protos, 0.1f, 0.05f, 3, 1.0f,
                          &l1, gv1, gp1, NULL));
  CHECK_OK(dsc_loss_proto(ref, DSC_PROTO_SWAP, n, p, d, kp, v_a, v_b, match, protos, 0.1f, 0.05f, 3, 1.0f,
                          &l2, gv2, gp2, NULL));
  check_loss("L_pm cpu vs ref", l1, l2);
  check_grad("L_pm dv_a cpu vs ref", gv1, gv2, rd);
  check_grad("L_pm dprotos cpu vs ref", gp1, gp2, kd);
  free(v_a), free(v_b), free(protos), free(match), free(c_cpu), free(c_ref), free(l_cpu), free(l_ref);
  free(c0), free(gv1), free(gv2), free(gp1), free(gp2);
  cpu->destroy(cpu);
  ref->destroy(ref);
}

static const dsc_test tests[] = {
    {"golden_kmeans_cpu", test_golden_kmeans_cpu},
    {"golden_kmeans_ref", test_golden_kmeans_ref},
    {"golden_sinkhorn", test_golden_sinkhorn},
    {"golden_pm_cpu", test_golden_pm_cpu},
    {"golden_pm_ref", test_golden_pm_ref},
    {"golden_ce_cpu", test_golden_ce_cpu},
    {"golden_ce_ref", test_golden_ce_ref},
    {"fd_kmeans", test_fd_kmeans},
    {"fd_proto_swap", test_fd_proto_swap},
    {"fd_proto_ce", test_fd_proto_ce},
    {"kmeans_loss_too_few_clusters", test_kmeans_loss_too_few_clusters},
    {"kmeans_empty_cluster", test_kmeans_empty_cluster},
    {"kmeans_init", test_kmeans_init},
    {"sinkhorn_marginals", test_sinkhorn_marginals},
    {"sinkhorn_extreme", test_sinkhorn_extreme},
    {"ties", test_ties},
    {"accumulate", test_accumulate},
    {"cpu_vs_ref", test_cpu_vs_ref},
};

TEST_MAIN(tests)
