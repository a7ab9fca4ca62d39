/* test_gradcam.c: Grad-CAM of `dsc viz gradcam` (include/dsc/gradcam.h) against PyTorch, and the linear
 * probe file of `dsc eval --save-probe` (include/dsc/probe_file.h).
 *
 * Fixture tests/golden/gradcam.safetensors (tools/reference/make_gradcam_golden.py): the golden resnet18
 * with the small stem (parameters from the shared generator, tests/golden_init.h) in evaluation mode on
 * one 24 x 40 input, its C5 (3 x 5 x 512, float64 rounded to float32), and for both targets (a probe
 * class, a pixel's dense similarity) torch.autograd's y, alpha, cam and upsampled cam in float64.
 * Tolerances:
 *  - from the stored C5: the C side does the same double arithmetic on the same float32 numbers in
 *    another order, so 1e-10 relative (score, alpha, cam); the upsampled cam is float32
 *    (dsc_upsample_bilinear), values in [0, 1]: 1e-6 absolute.
 *  - from dsc's own C5 (ref and CPU backends, float32): C5 itself within 1e-5 relative L2 of the
 *    float64 one (as test_resnet_dilated's eval C5; the fixture's own float32 PyTorch run is 4.7e-7
 *    away, dsc measured 1.2e-7 ref, 1.3e-6 cpu). A relative change e of C5 moves y, alpha and the
 *    un-normalized cam by about e (relative to their scale) and the normalized cam by about 2e, so
 *    scores and alpha are checked at 1e-5 relative and the cams at 1e-4 absolute (measured at most
 *    2.2e-6, cpu probe cam; every error is printed).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dsc/backbone.h"
#include "dsc/eval.h"
#include "dsc/gradcam.h"
#include "dsc/probe_file.h"
#include "dsc/safetensors.h"
#include "golden_init.h"
#include "test.h"

#define FIXTURE "tests/golden/gradcam.safetensors"
#define GH 24
#define GW 40
#define H5 3
#define W5 5
#define C5 512
#define P5 (H5 * W5)

/* A stored F64 tensor of numel elements (malloc'd), NULL with the test failed otherwise. */
static double *fixture_f64(const dsc_safetensors *f, const char *name, size_t numel) {
  const dsc_st_tensor *t = dsc_st_find(f, name);
  if (!t || t->dtype != DSC_F64 || dsc_st_numel(t) != numel) {
    CHECK(0, "%s: missing, not F64 or not %zu elements", name, numel);
    return NULL;
  }
  double *d = malloc(numel * sizeof *d);
  memcpy(d, dsc_st_data(f, t), numel * sizeof *d);
  return d;
}

static int64_t fixture_i64(const dsc_safetensors *f, const char *name, size_t i) {
  const dsc_st_tensor *t = dsc_st_find(f, name);
  if (!t || t->dtype != DSC_I64 || dsc_st_numel(t) <= i) {
    CHECK(0, "%s: missing, not I64 or too short", name);
    return -1;
  }
  int64_t v;
  memcpy(&v, (const char *)dsc_st_data(f, t) + i * sizeof v, sizeof v);
  return v;
}

static double max_abs_diff(const double *a, const double *b, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; i++) m = fmax(m, fabs(a[i] - b[i]));
  return m;
}

static double max_rel_diff(const double *a, const double *b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; i++) num = fmax(num, fabs(a[i] - b[i])), den = fmax(den, fabs(b[i]));
  return den > 0 ? num / den : num;
}

typedef struct fixture {
  dsc_safetensors *f;
  float *c5;       /* NHWC (H5, W5, C5) */
  float *weight, *bias;
  int k, px, py, cell_x, cell_y;
} fixture;

static int fixture_open(fixture *fx) {
  memset(fx, 0, sizeof *fx);
  CHECK_OK(dsc_st_open(FIXTURE, &fx->f));
  if (!fx->f) return -1;
  float *nchw = test_fixture_f32(fx->f, "c5", (size_t)C5 * P5);
  fx->weight = test_fixture_f32(fx->f, "probe.weight", (size_t)3 * C5);
  fx->bias = test_fixture_f32(fx->f, "probe.bias", 3);
  fx->k = (int)fixture_i64(fx->f, "probe.class", 0);
  fx->px = (int)fixture_i64(fx->f, "pixel", 0), fx->py = (int)fixture_i64(fx->f, "pixel", 1);
  fx->cell_x = (int)fixture_i64(fx->f, "cell", 0), fx->cell_y = (int)fixture_i64(fx->f, "cell", 1);
  if (nchw) {
    fx->c5 = malloc((size_t)C5 * P5 * sizeof(float));
    nchw_to_nhwc(nchw, fx->c5, 1, C5, H5, W5);
  }
  free(nchw);
  return fx->c5 && fx->weight && fx->bias && !test_current_failed ? 0 : -1;
}

static void fixture_close(fixture *fx) {
  free(fx->c5), free(fx->weight), free(fx->bias);
  dsc_st_close(fx->f);
}

static dsc_gradcam_target fixture_target(const fixture *fx, const char *which) {
  dsc_gradcam_target t = {.kind = DSC_GRADCAM_PIXEL, .x = fx->px, .y = fx->py, .in_w = GW, .in_h = GH};
  if (!strcmp(which, "probe"))
    t = (dsc_gradcam_target){.kind = DSC_GRADCAM_PROBE, .weight = fx->weight, .bias = fx->bias, .classes = 3,
                             .class_index = fx->k};
  return t;
}

/* Grad-CAM of A against the fixture's target `which`: tolerances for score/alpha/cam and cam_up. */
static void check_target(const fixture *fx, const char *which, const float *a, double tol_rel, double tol_cam,
                         double tol_up, const char *label) {
  char key[64];
  dsc_gradcam_target t = fixture_target(fx, which);
  double cam[P5], *alpha = malloc(C5 * sizeof *alpha);
  float up[GH * GW];
  dsc_gradcam_result r;
  CHECK_OK(dsc_gradcam(a, H5, W5, C5, &t, cam, alpha, &r));
  CHECK_OK(dsc_gradcam_upsample(cam, H5, W5, GH, GW, up));
  snprintf(key, sizeof key, "%s.score", which);
  double *want_score = fixture_f64(fx->f, key, 1);
  snprintf(key, sizeof key, "%s.alpha", which);
  double *want_alpha = fixture_f64(fx->f, key, C5);
  snprintf(key, sizeof key, "%s.cam", which);
  double *want_cam = fixture_f64(fx->f, key, P5);
  snprintf(key, sizeof key, "%s.cam_up", which);
  double *want_up = fixture_f64(fx->f, key, GH * GW);
  if (want_score && want_alpha && want_cam && want_up) {
    double e_score = fabs(r.score - *want_score) / fabs(*want_score);
    double e_alpha = max_rel_diff(alpha, want_alpha, C5), e_cam = max_abs_diff(cam, want_cam, P5), e_up = 0;
    for (int i = 0; i < GH * GW; i++) e_up = fmax(e_up, fabs(up[i] - want_up[i]));
    printf("  %s %s: y %.6f (rel. err %.2e), alpha max rel. err %.2e, cam max err %.2e, upsampled %.2e\n",
           label, which, r.score, e_score, e_alpha, e_cam, e_up);
    CHECK(e_score <= tol_rel, "%s %s: score %.17g vs %.17g", label, which, r.score, *want_score);
    CHECK(e_alpha <= tol_rel, "%s %s: alpha error %.3g > %.3g", label, which, e_alpha, tol_rel);
    CHECK(e_cam <= tol_cam, "%s %s: cam error %.3g > %.3g", label, which, e_cam, tol_cam);
    CHECK(e_up <= tol_up, "%s %s: upsampled cam error %.3g > %.3g", label, which, e_up, tol_up);
    double mx = 0;
    for (int p = 0; p < P5; p++) mx = fmax(mx, cam[p]);
    CHECK(mx == 1.0, "%s %s: the cam's maximum is %.17g, not 1", label, which, mx);
    if (t.kind == DSC_GRADCAM_PIXEL)
      CHECK(r.cell_x == fx->cell_x && r.cell_y == fx->cell_y, "cell %d,%d, want %d,%d", r.cell_x, r.cell_y,
            fx->cell_x, fx->cell_y);
  }
  free(want_score), free(want_alpha), free(want_cam), free(want_up), free(alpha);
}

/* From the stored C5: both targets to double rounding. */
static void test_golden_from_stored_c5(void) {
  fixture fx;
  if (fixture_open(&fx) == 0) {
    check_target(&fx, "probe", fx.c5, 1e-10, 1e-10, 1e-6, "stored C5");
    check_target(&fx, "pixel", fx.c5, 1e-10, 1e-10, 1e-6, "stored C5");
  }
  fixture_close(&fx);
}

/* From dsc's own eval-mode forward of the fixture's input on the ref and CPU backends. */
static void test_golden_from_backbone(void) {
  fixture fx;
  if (fixture_open(&fx) != 0) {
    fixture_close(&fx);
    return;
  }
  float *in = test_fixture_f32(fx.f, "input", (size_t)3 * GH * GW);
  float *gen = malloc((size_t)3 * GH * GW * sizeof *gen), *x = malloc((size_t)3 * GH * GW * sizeof *x);
  golden_fill("gradcam.input", 0.0, 1.0, gen, (size_t)3 * GH * GW);
  CHECK(in && !memcmp(in, gen, (size_t)3 * GH * GW * sizeof *gen),
        "the C generator differs from golden_init.py on gradcam.input");
  if (in) nchw_to_nhwc(in, x, 1, 3, GH, GW);
  for (int b = 0; in && b < 2; b++) {
    dsc_backend *be = NULL;
    CHECK_OK(b == 0 ? dsc_backend_ref_new(&be) : dsc_backend_cpu_new(1, &be));
    if (!be) continue;
    dsc_backbone m = {0};
    dsc_resnet_config cfg = {.depth = 18, .small_stem = 1};
    float *dx = NULL, *a = malloc((size_t)C5 * P5 * sizeof *a);
    CHECK_OK(dsc_backbone_create(&m, be, &cfg, 0, 0));
    for (int i = 0; !test_current_failed && i < m.table.count; i++)
      golden_fill_entry(&m.table.entries[i], m.table.entries[i].name, m.host_params, m.host_buffers);
    if (!test_current_failed) CHECK_OK(dsc_backbone_upload(&m));
    if (!test_current_failed) CHECK_OK(be->alloc(be, (size_t)3 * GH * GW * sizeof(float), (void **)&dx));
    dsc_resnet_features f;
    if (dx) CHECK_OK(be->upload(be, dx, x, (size_t)3 * GH * GW * sizeof(float)));
    if (dx) CHECK_OK(dsc_resnet_forward(&m.net, dx, 1, GH, GW, 0, 1, &f));
    if (!test_current_failed) {
      CHECK(f.h[3] == H5 && f.w[3] == W5 && f.channels[3] == C5, "C5 is %dx%dx%d", f.h[3], f.w[3], f.channels[3]);
      CHECK_OK(be->download(be, a, f.c[3], (size_t)C5 * P5 * sizeof *a));
      double e = test_rel_l2(a, fx.c5, (size_t)C5 * P5);
      printf("  %s backend: C5 relative L2 error %.2e\n", b ? "cpu" : "ref", e);
      CHECK(e <= 1e-5, "C5 relative L2 error %.3g", e);
      check_target(&fx, "probe", a, 1e-5, 1e-4, 1e-4, b ? "cpu C5" : "ref C5");
      check_target(&fx, "pixel", a, 1e-5, 1e-4, 1e-4, b ? "cpu C5" : "ref C5");
    }
    if (dx) be->free(be, dx);
    free(a);
    dsc_backbone_free(&m);
    be->destroy(be);
  }
  free(in), free(gen), free(x);
  fixture_close(&fx);
}

/* Hand-checkable cases: the probe's alpha is weight/P; a constant A gives y = 1 and a flat cam;
 * cam all zero when no position is positive; errors name the option and value. */
static void test_gradcam_small_cases(void) {
  /* 1 x 2 map, 2 channels: A_0 = (1, 0), A_1 = (0, 2). */
  const float a[4] = {1, 0, 0, 2};
  const float w[4] = {1, -1, 3, 0.5f}, bias[2] = {0.25f, -1};
  double cam[3], alpha[2];
  dsc_gradcam_result r;
  dsc_gradcam_target t = {.kind = DSC_GRADCAM_PROBE, .weight = w, .bias = bias, .classes = 2, .class_index = 0};
  CHECK_OK(dsc_gradcam(a, 1, 2, 2, &t, cam, alpha, &r));
  /* y = 1 * 0.5 - 1 * 1 + 0.25; alpha = (0.5, -0.5); cam = ReLU(0.5, -1) / 0.5 = (1, 0) */
  CHECK(fabs(r.score + 0.25) < 1e-15 && alpha[0] == 0.5 && alpha[1] == -0.5, "y %g alpha %g %g", r.score,
        alpha[0], alpha[1]);
  CHECK(cam[0] == 1 && cam[1] == 0 && r.max == 0.5, "cam %g %g max %g", cam[0], cam[1], r.max);
  /* class 1: alpha = (1.5, 0.25) -> raw cam (1.5, 0.5) -> (1, 1/3) */
  t.class_index = 1;
  CHECK_OK(dsc_gradcam(a, 1, 2, 2, &t, cam, NULL, &r));
  CHECK(cam[0] == 1 && fabs(cam[1] - 1.0 / 3) < 1e-15, "cam %g %g", cam[0], cam[1]);
  /* negative everywhere: all zero */
  const float wneg[4] = {-1, -1, -1, -1};
  t.weight = wneg;
  CHECK_OK(dsc_gradcam(a, 1, 2, 2, &t, cam, NULL, &r));
  CHECK(cam[0] == 0 && cam[1] == 0 && r.max == 0, "cam %g %g", cam[0], cam[1]);
  t.class_index = 2;
  CHECK_ERR(dsc_gradcam(a, 1, 2, 2, &t, cam, NULL, &r), "--class 2 is out of range: the probe has 2 classes");
  t.class_index = -1;
  CHECK_ERR(dsc_gradcam(a, 1, 2, 2, &t, cam, NULL, &r), "out of range");

  /* pixel target: identical vectors everywhere -> y = 1, alpha = 0 -> the cam is all zero. */
  const float same[6] = {1, 2, 1, 2, 1, 2};
  dsc_gradcam_target tp = {.kind = DSC_GRADCAM_PIXEL, .x = 0, .y = 0, .in_w = 3, .in_h = 1};
  CHECK_OK(dsc_gradcam(same, 1, 3, 2, &tp, cam, alpha, &r));
  CHECK(fabs(r.score - 1) < 1e-15 && fabs(alpha[0]) < 1e-15 && fabs(alpha[1]) < 1e-15, "y %g alpha %g %g",
        r.score, alpha[0], alpha[1]);
  /* orthogonal pair: A_0 = (1, 0), A_1 = (0, 2), p0 = 0. y = (1 + 0) / 2. Sum over q of dcos/da:
   * q=0: b/1 - 1 * (1,0) = 0; q=1: b/2 - 0 = (0.5, 0). Sum over p of dcos/db: p=0: (1,0) - (1,0) = 0;
   * p=1: (0,2)/2 - 0 = (0, 1). alpha = ((0.5, 0) + (0, 1)) / 4 = (0.125, 0.25);
   * cam = ReLU(0.125, 0.5) / 0.5 = (0.25, 1). */
  tp.in_w = 2;
  CHECK_OK(dsc_gradcam(a, 1, 2, 2, &tp, cam, alpha, &r));
  CHECK(fabs(r.score - 0.5) < 1e-15 && fabs(alpha[0] - 0.125) < 1e-15 && fabs(alpha[1] - 0.25) < 1e-15,
        "y %g alpha %g %g", r.score, alpha[0], alpha[1]);
  CHECK(fabs(cam[0] - 0.25) < 1e-15 && cam[1] == 1, "cam %g %g", cam[0], cam[1]);
  tp.x = 2;
  CHECK_ERR(dsc_gradcam(a, 1, 2, 2, &tp, cam, NULL, &r), "--pixel 2,0 is outside the 2x1 input image");
  tp.x = 0, tp.y = -1;
  CHECK_ERR(dsc_gradcam(a, 1, 2, 2, &tp, cam, NULL, &r), "outside");
  tp.kind = (dsc_gradcam_kind)7;
  CHECK_ERR(dsc_gradcam(a, 1, 2, 2, &tp, cam, NULL, &r), "unknown target kind");

  /* the cell rule: floor(x * w5 / W) */
  int cx, cy;
  CHECK_OK(dsc_gradcam_cell(31, 0, 32, 32, 4, 4, &cx, &cy));
  CHECK(cx == 3 && cy == 0, "cell %d,%d", cx, cy);
  CHECK_OK(dsc_gradcam_cell(7, 8, 32, 32, 4, 4, &cx, &cy));
  CHECK(cx == 0 && cy == 1, "cell %d,%d", cx, cy);
}

/* jet's anchors (matplotlib) and the 50/50 overlay. */
static void test_jet_overlay(void) {
  dsc_rgb lo = dsc_gradcam_jet(0), hi = dsc_gradcam_jet(1), mid = dsc_gradcam_jet(0.5), nan = dsc_gradcam_jet(NAN);
  CHECK(lo.r == 0 && lo.g == 0 && lo.b == 128, "jet(0) = %d,%d,%d", lo.r, lo.g, lo.b);
  CHECK(hi.r == 128 && hi.g == 0 && hi.b == 0, "jet(1) = %d,%d,%d", hi.r, hi.g, hi.b);
  /* t = 0.5: red (0.5-0.35)/0.31, green 1, blue 1 - (0.5-0.34)/0.31 */
  CHECK(mid.r == lround(255 * 0.15 / 0.31) && mid.g == 255 && mid.b == lround(255 * (1 - 0.16 / 0.31)),
        "jet(0.5) = %d,%d,%d", mid.r, mid.g, mid.b);
  CHECK(nan.r == lo.r && nan.g == lo.g && nan.b == lo.b, "jet(NaN) is not jet(0)");
  const uint8_t img[6] = {255, 255, 255, 0, 10, 21};
  const float cam[2] = {1, 0};
  uint8_t out[6];
  dsc_gradcam_overlay(img, cam, 2, out);
  CHECK(out[0] == 192 && out[1] == 128 && out[2] == 128, "overlay %d,%d,%d", out[0], out[1], out[2]);
  CHECK(out[3] == 0 && out[4] == 5 && out[5] == 75, "overlay %d,%d,%d", out[3], out[4], out[5]);
}

/* The saved probe (raw space) reproduces the probe's own predictions; file round trip; classes by
 * name and index; errors. */
static void test_probe_file(void) {
  enum { NTR = 120, NTE = 60, D = 6, K = 3 };
  /* three classes along different channels, features with a large offset and scale so the
   * standardization matters */
  float *xtr = test_rand_buf((size_t)NTR * D, 11, -1, 1), *xte = test_rand_buf((size_t)NTE * D, 12, -1, 1);
  int32_t ytr[NTR], yte[NTE], pred[NTE];
  for (int i = 0; i < NTR + NTE; i++) {
    float *row = i < NTR ? xtr + (size_t)i * D : xte + (size_t)(i - NTR) * D;
    int y = i % K;
    (i < NTR ? ytr : yte)[i < NTR ? i : i - NTR] = y;
    row[y] += 3.0f;
    for (int j = 0; j < D; j++) row[j] = 50 + 20 * row[j] * (float)(j + 1);
  }
  dsc_probe_config cfg = dsc_linear_probe_defaults();
  cfg.epochs = 30, cfg.batch = 32;
  dsc_linear_probe_result r, r0;
  dsc_probe_file p = {.classes = K, .c = D};
  p.weight = malloc((size_t)K * D * sizeof(float)), p.bias = malloc(K * sizeof(float));
  char *names[K] = {"cat", "dog", "7"};
  p.class_names = names;
  CHECK_OK(dsc_linear_probe_fit(NULL, &cfg, NTR, NTE, D, K, xtr, ytr, xte, yte, pred, &r, p.weight, p.bias));
  /* the same numbers as dsc_linear_probe */
  int32_t pred0[NTE];
  CHECK_OK(dsc_linear_probe(NULL, &cfg, NTR, NTE, D, K, xtr, ytr, xte, yte, pred0, &r0));
  CHECK(r.test_top1 == r0.test_top1 && !memcmp(pred, pred0, sizeof pred), "fit and dsc_linear_probe differ");
  CHECK(r.test_top1 > 0.9, "the probe learned nothing (top1 %.3f)", r.test_top1);

  test_tmpdir dir = test_tmpdir_make("gradcam");
  char path[4200];
  snprintf(path, sizeof path, "%s/probe.safetensors", dir.path);
  const char *keys[1] = {"weights"}, *values[1] = {"w.safetensors"};
  CHECK_OK(dsc_probe_file_save(path, &p, 1, keys, values));
  dsc_probe_file q;
  CHECK_OK(dsc_probe_file_load(path, &q));
  if (!test_current_failed) {
    CHECK(q.classes == K && q.c == D && !memcmp(q.weight, p.weight, (size_t)K * D * sizeof(float)) &&
              !memcmp(q.bias, p.bias, K * sizeof(float)),
          "the probe file does not round-trip");
    CHECK(q.class_names && !strcmp(q.class_names[0], "cat") && !strcmp(q.class_names[2], "7"), "class names");
    /* raw-space logits in double reproduce every prediction (argmax; a tie within float rounding of
     * the eval's float32 gemm would be reported) */
    int agree = 0;
    for (int i = 0; i < NTE; i++) {
      double z[K];
      dsc_probe_file_logits(&q, xte + (size_t)i * D, z);
      int best = 0;
      for (int k = 1; k < K; k++)
        if (z[k] > z[best]) best = k;
      agree += best == pred[i];
    }
    CHECK(agree == NTE, "the saved probe predicts %d of %d test rows as the probe did", agree, NTE);
    int k = -1;
    CHECK_OK(dsc_probe_file_class(&q, "dog", &k));
    CHECK(k == 1, "dog -> %d", k);
    CHECK_OK(dsc_probe_file_class(&q, "7", &k)); /* a name wins over an index */
    CHECK(k == 2, "7 -> %d", k);
    CHECK_OK(dsc_probe_file_class(&q, "0", &k));
    CHECK(k == 0, "0 -> %d", k);
    CHECK_ERR(dsc_probe_file_class(&q, "3", &k), "--class 3: not a class of the probe (3 classes: index 0..2 or one of cat, dog, 7)");
    CHECK_ERR(dsc_probe_file_class(&q, "bird", &k), "--class bird");
    CHECK_ERR(dsc_probe_file_class(&q, "-1", &k), "--class -1");
  }
  dsc_probe_file_free(&q);

  /* a hand-made probe: class_names as a comma-joined string, or absent; wrong shapes */
  dsc_st_writer *w = NULL;
  int64_t ws[2] = {2, 3}, bs[1] = {2}, bad[1] = {3};
  float zeros[6] = {0};
  CHECK_OK(dsc_st_writer_new(&w));
  CHECK_OK(dsc_st_writer_add(w, "weight", DSC_F32, 2, ws, zeros));
  CHECK_OK(dsc_st_writer_add(w, "bias", DSC_F32, 1, bs, zeros));
  CHECK_OK(dsc_st_writer_meta(w, "class_names", "a,b"));
  CHECK_OK(dsc_st_writer_save(w, path));
  CHECK_OK(dsc_probe_file_load(path, &q));
  CHECK(q.class_names && !strcmp(q.class_names[1], "b"), "comma-joined class names");
  dsc_probe_file_free(&q);
  dsc_st_writer_free(w);
  CHECK_OK(dsc_st_writer_new(&w));
  CHECK_OK(dsc_st_writer_add(w, "weight", DSC_F32, 2, ws, zeros));
  CHECK_OK(dsc_st_writer_add(w, "bias", DSC_F32, 1, bs, zeros));
  CHECK_OK(dsc_st_writer_meta(w, "class_names", "[\"a\",\"b\",\"c\"]"));
  CHECK_OK(dsc_st_writer_save(w, path));
  CHECK_ERR(dsc_probe_file_load(path, &q), "class_names names more than 2 class(es), but weight has 2 rows");
  dsc_st_writer_free(w);
  CHECK_OK(dsc_st_writer_new(&w));
  CHECK_OK(dsc_st_writer_add(w, "weight", DSC_F32, 2, ws, zeros));
  CHECK_OK(dsc_st_writer_add(w, "bias", DSC_F32, 1, bad, zeros));
  CHECK_OK(dsc_st_writer_save(w, path));
  CHECK_ERR(dsc_probe_file_load(path, &q), "bias must be [K] = [2]");
  dsc_st_writer_free(w);
  CHECK_OK(dsc_st_writer_new(&w));
  CHECK_OK(dsc_st_writer_add(w, "weight", DSC_F32, 2, ws, zeros));
  CHECK_OK(dsc_st_writer_save(w, path));
  CHECK_ERR(dsc_probe_file_load(path, &q), "not a linear probe");
  dsc_st_writer_free(w);
  CHECK_OK(dsc_st_writer_new(&w));
  CHECK_OK(dsc_st_writer_add(w, "weight", DSC_F32, 2, ws, zeros));
  CHECK_OK(dsc_st_writer_add(w, "bias", DSC_F32, 1, bs, zeros));
  CHECK_OK(dsc_st_writer_save(w, path));
  CHECK_OK(dsc_probe_file_load(path, &q));
  CHECK(q.class_names == NULL, "no class names");
  int k = -1;
  CHECK_OK(dsc_probe_file_class(&q, "1", &k));
  CHECK(k == 1, "index 1 -> %d", k);
  dsc_probe_file_free(&q);
  dsc_st_writer_free(w);
  unlink(path);
  test_tmpdir_remove(&dir);
  free(p.weight), free(p.bias), free(xtr), free(xte);
}

static const dsc_test tests[] = {
    {"golden_from_stored_c5", test_golden_from_stored_c5},
    {"golden_from_backbone", test_golden_from_backbone},
    {"small_cases", test_gradcam_small_cases},
    {"jet_overlay", test_jet_overlay},
    {"probe_file", test_probe_file},
};

TEST_MAIN(tests)
