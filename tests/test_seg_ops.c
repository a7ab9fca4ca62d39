/* test_seg_ops.c: the segmentation-head ops of backend.h (resize_bilinear_forward/_backward,
 * channel_scale, softmax_ce) on the ref and cpu backends (cpu at 1 and 2 threads).
 *
 * Golden checks read tests/golden/seg_ops.safetensors (tools/reference/make_seg_ops_golden.py:
 * PyTorch float64 F.interpolate(bilinear, align_corners=False) with autograd, F.cross_entropy
 * with ignore_index=255, Dropout2d's x * mask / (1 - p), from float32 inputs, stored float32).
 * Tolerance GOLDEN_TOL = 1e-5 relative (L2 over a tensor, |.| for the loss): the fixture's own
 * error is one float32 rounding (6e-8); the backends compute the tap weights in float (as
 * PyTorch's float kernels do; the reference's float64 run uses double weights, a relative
 * difference of about 1e-7) and, on cpu, sums of at most four products per output, a handful per
 * dx element and expf/float sums over the classes (a few ulps each, ~1e-6 at worst); 1e-5 leaves
 * a factor of 10 above that and is far below any real mistake (a wrong tap or weight moves
 * results by percents).
 * The cpu backend is also compared with ref on larger random shapes at CPU_TOL = 1e-5, for the
 * same reasons. Exact checks: the same-size resize copies, channel_scale (one product), the
 * gather backward and softmax_ce's chunked loss do not depend on the thread count (1 vs 2
 * threads bitwise), and two softmax_ce runs at 2 threads give the same bits. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "dsc/safetensors.h"
#include "test.h"

#define GOLDEN "tests/golden/seg_ops.safetensors"
#define GOLDEN_TOL 1e-5
#define CPU_TOL 1e-5

/* be[0] = ref, be[1] = cpu 1 thread, be[2] = cpu 2 threads */
#define N_BE 3
static const char *be_label[N_BE] = {"ref", "cpu1", "cpu2"};

static int open_backends(dsc_backend *be[N_BE]) {
  memset(be, 0, N_BE * sizeof be[0]);
  CHECK_OK(dsc_backend_ref_new(&be[0]));
  CHECK_OK(dsc_backend_cpu_new(1, &be[1]));
  CHECK_OK(dsc_backend_cpu_new(2, &be[2]));
  return be[0] && be[1] && be[2];
}

static void close_backends(dsc_backend *be[N_BE]) {
  for (int i = 0; i < N_BE; i++)
    if (be[i]) be[i]->destroy(be[i]);
}

static dsc_safetensors *open_golden(void) {
  dsc_safetensors *f = NULL;
  CHECK_OK(dsc_st_open(GOLDEN, &f));
  return f;
}

/* The shape of tensor `name` (ndim dims expected) into dims; 0 when absent or of another rank. */
static int golden_shape(const dsc_safetensors *f, const char *name, int ndim, int *dims) {
  const dsc_st_tensor *t = dsc_st_find(f, name);
  CHECK(t && t->ndim == ndim, "%s: absent or not %d-dimensional", name, ndim);
  if (!t || t->ndim != ndim) return 0;
  for (int i = 0; i < ndim; i++) dims[i] = (int)t->shape[i];
  return 1;
}

static int bitwise_equal(const float *a, const float *b, size_t n) {
  return memcmp(a, b, n * sizeof(float)) == 0;
}

/* ---- golden ---- */

static void golden_resize_case(dsc_backend *be[N_BE], const dsc_safetensors *f, const char *cs) {
  char nx[64], ny[64], ndy[64], ndx[64];
  snprintf(nx, sizeof nx, "resize.%s.x", cs);
  snprintf(ny, sizeof ny, "resize.%s.y", cs);
  snprintf(ndy, sizeof ndy, "resize.%s.dy", cs);
  snprintf(ndx, sizeof ndx, "resize.%s.dx", cs);
  int xd[4], yd[4];
  if (!golden_shape(f, nx, 4, xd) || !golden_shape(f, ny, 4, yd)) return;
  const int n = xd[0], h = xd[1], w = xd[2], c = xd[3], oh = yd[1], ow = yd[2];
  const size_t nin = (size_t)n * h * w * c, nout = (size_t)n * oh * ow * c;
  float *x = test_fixture_f32(f, nx, nin), *y = test_fixture_f32(f, ny, nout);
  float *dy = test_fixture_f32(f, ndy, nout), *dx = test_fixture_f32(f, ndx, nin);
  float *got_y[N_BE], *got_dx[N_BE];
  for (int b = 0; b < N_BE; b++) {
    got_y[b] = calloc(nout, sizeof(float));
    got_dx[b] = calloc(nin, sizeof(float));
    if (!x || !y || !dy || !dx) continue;
    char what[96];
    CHECK_OK(be[b]->resize_bilinear_forward(be[b], n, h, w, c, oh, ow, got_y[b], x));
    CHECK_OK(be[b]->resize_bilinear_backward(be[b], n, h, w, c, oh, ow, got_dx[b], dy));
    snprintf(what, sizeof what, "%s %s y (%dx%d -> %dx%d)", be_label[b], cs, h, w, oh, ow);
    CHECK_CLOSE(what, got_y[b], y, nout, GOLDEN_TOL);
    snprintf(what, sizeof what, "%s %s dx (%dx%d -> %dx%d)", be_label[b], cs, h, w, oh, ow);
    CHECK_CLOSE(what, got_dx[b], dx, nin, GOLDEN_TOL);
    if (oh == h && ow == w)
      CHECK(bitwise_equal(got_y[b], x, nin) && bitwise_equal(got_dx[b], dy, nin),
            "%s %s: the same-size resize must copy exactly", be_label[b], cs);
  }
  CHECK(bitwise_equal(got_y[1], got_y[2], nout) && bitwise_equal(got_dx[1], got_dx[2], nin),
        "%s: cpu at 1 and 2 threads differ", cs);
  for (int b = 0; b < N_BE; b++) free(got_y[b]), free(got_dx[b]);
  free(x), free(y), free(dy), free(dx);
}

static void test_golden_resize(void) {
  dsc_backend *be[N_BE];
  dsc_safetensors *f = open_golden();
  if (f && open_backends(be)) {
    const char *cases[] = {"up", "down", "same", "one", "odd", "mixed"};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) golden_resize_case(be, f, cases[i]);
  }
  close_backends(be);
  dsc_st_close(f);
}

static void golden_ce_case(dsc_backend *be[N_BE], const dsc_safetensors *f, const char *cs) {
  char nl[64], nlab[64], nloss[64], ng[64];
  snprintf(nl, sizeof nl, "ce.%s.logits", cs);
  snprintf(nlab, sizeof nlab, "ce.%s.labels", cs);
  snprintf(nloss, sizeof nloss, "ce.%s.loss_sum", cs);
  snprintf(ng, sizeof ng, "ce.%s.grad", cs);
  int ld[2];
  if (!golden_shape(f, nl, 2, ld)) return;
  const int64_t pixels = ld[0];
  const int classes = ld[1];
  const size_t nlog = (size_t)pixels * classes;
  const dsc_st_tensor *tl = dsc_st_find(f, nlab);
  CHECK(tl && tl->dtype == DSC_U8 && dsc_st_numel(tl) == (size_t)pixels, "%s: not U8 [%lld]",
        nlab, (long long)pixels);
  float *logits = test_fixture_f32(f, nl, nlog), *grad = test_fixture_f32(f, ng, nlog);
  float *loss_want = test_fixture_f32(f, nloss, 1);
  if (!tl || tl->dtype != DSC_U8 || dsc_st_numel(tl) != (size_t)pixels || !logits || !grad ||
      !loss_want) {
    free(logits), free(grad), free(loss_want);
    return;
  }
  uint8_t *labels = malloc((size_t)pixels);
  memcpy(labels, dsc_st_data(f, tl), (size_t)pixels);
  int64_t valid = 0;
  for (int64_t r = 0; r < pixels; r++) valid += labels[r] != 255;
  /* The mean's gradient scale; with every label ignored any finite scale gives zeros. */
  const float scale = valid > 0 ? 1.0f / (float)valid : 1.0f;
  float loss[N_BE];
  float *dl[N_BE];
  for (int b = 0; b < N_BE; b++) {
    dl[b] = malloc(nlog * sizeof(float));
    for (size_t k = 0; k < nlog; k++) dl[b][k] = NAN; /* every element must be written */
    loss[b] = NAN;
    CHECK_OK(be[b]->softmax_ce(be[b], pixels, classes, logits, labels, 255, scale, &loss[b], dl[b]));
    const double e = fabs((double)loss[b] - loss_want[0]) / fmax(fabs(loss_want[0]), 1e-30);
    CHECK(loss_want[0] == 0.0f ? loss[b] == 0.0f : e <= GOLDEN_TOL,
          "%s %s: loss_sum %.9g vs %.9g (relative %.3g)", be_label[b], cs, (double)loss[b],
          (double)loss_want[0], e);
    char what[96];
    snprintf(what, sizeof what, "%s %s dlogits", be_label[b], cs);
    CHECK_CLOSE(what, dl[b], grad, nlog, GOLDEN_TOL);
    if (valid == 0)
      for (size_t k = 0; k < nlog; k++)
        if (dl[b][k] != 0.0f) {
          CHECK(0, "%s %s: dlogits[%zu] = %g, want 0 (every label ignored)", be_label[b], cs, k,
                (double)dl[b][k]);
          break;
        }
    /* dlogits NULL: the loss alone, the same bits. */
    float loss2 = NAN;
    CHECK_OK(be[b]->softmax_ce(be[b], pixels, classes, logits, labels, 255, scale, &loss2, NULL));
    CHECK(loss2 == loss[b], "%s %s: loss without dlogits %.9g != %.9g", be_label[b], cs,
          (double)loss2, (double)loss[b]);
  }
  CHECK(loss[1] == loss[2] && bitwise_equal(dl[1], dl[2], nlog), "%s: cpu at 1 and 2 threads differ",
        cs);
  for (int b = 0; b < N_BE; b++) free(dl[b]);
  free(labels), free(logits), free(grad), free(loss_want);
}

static void test_golden_softmax_ce(void) {
  dsc_backend *be[N_BE];
  dsc_safetensors *f = open_golden();
  if (f && open_backends(be)) {
    const char *cases[] = {"basic", "large", "allignored", "wide"};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) golden_ce_case(be, f, cases[i]);
  }
  close_backends(be);
  dsc_st_close(f);
}

static void test_golden_channel_scale(void) {
  dsc_backend *be[N_BE];
  dsc_safetensors *f = open_golden();
  int xd[3];
  if (f && open_backends(be) && golden_shape(f, "dropout.x", 3, xd)) {
    const int n = xd[0], hw = xd[1], c = xd[2];
    const size_t nx = (size_t)n * hw * c;
    float *x = test_fixture_f32(f, "dropout.x", nx), *s = test_fixture_f32(f, "dropout.scale", (size_t)n * c);
    float *y = test_fixture_f32(f, "dropout.y", nx);
    if (x && s && y)
      for (int b = 0; b < N_BE; b++) {
        float *got = malloc(nx * sizeof(float)), *inplace = malloc(nx * sizeof(float));
        CHECK_OK(be[b]->channel_scale(be[b], n, hw, c, got, x, s));
        /* a single float product of float32 values: exact against the float64 result rounded */
        CHECK(bitwise_equal(got, y, nx), "%s: channel_scale differs from x * scale", be_label[b]);
        memcpy(inplace, x, nx * sizeof(float));
        CHECK_OK(be[b]->channel_scale(be[b], n, hw, c, inplace, inplace, s)); /* y == x */
        CHECK(bitwise_equal(inplace, y, nx), "%s: channel_scale in place differs", be_label[b]);
        free(got), free(inplace);
      }
    free(x), free(s), free(y);
  }
  close_backends(be);
  dsc_st_close(f);
}

/* ---- cpu against ref on larger shapes ---- */

static void resize_vs_ref(dsc_backend *be[N_BE], int n, int h, int w, int c, int oh, int ow,
                          uint64_t seed) {
  const size_t nin = (size_t)n * h * w * c, nout = (size_t)n * oh * ow * c;
  float *x = test_rand_buf(nin, seed, -1, 1), *dy = test_rand_buf(nout, seed + 1, -1, 1);
  float *y[N_BE], *dx[N_BE];
  for (int b = 0; b < N_BE; b++) {
    y[b] = malloc(nout * sizeof(float));
    dx[b] = malloc(nin * sizeof(float));
    CHECK_OK(be[b]->resize_bilinear_forward(be[b], n, h, w, c, oh, ow, y[b], x));
    CHECK_OK(be[b]->resize_bilinear_backward(be[b], n, h, w, c, oh, ow, dx[b], dy));
  }
  char what[96];
  for (int b = 1; b < N_BE; b++) {
    snprintf(what, sizeof what, "%s y n=%d %dx%d -> %dx%d c=%d", be_label[b], n, h, w, oh, ow, c);
    CHECK_CLOSE(what, y[b], y[0], nout, CPU_TOL);
    snprintf(what, sizeof what, "%s dx n=%d %dx%d -> %dx%d c=%d", be_label[b], n, h, w, oh, ow, c);
    CHECK_CLOSE(what, dx[b], dx[0], nin, CPU_TOL);
  }
  CHECK(bitwise_equal(y[1], y[2], nout) && bitwise_equal(dx[1], dx[2], nin),
        "%dx%d -> %dx%d: cpu at 1 and 2 threads differ", h, w, oh, ow);
  /* The adjoint identity <resize(x), dy> = <x, resize^T(dy)> on the reference (double sums). */
  double lhs = 0, rhs = 0;
  for (size_t k = 0; k < nout; k++) lhs += (double)y[0][k] * dy[k];
  for (size_t k = 0; k < nin; k++) rhs += (double)x[k] * dx[0][k];
  CHECK(fabs(lhs - rhs) <= 1e-5 * (fabs(lhs) + 1.0), "adjoint identity: %.9g vs %.9g", lhs, rhs);
  for (int b = 0; b < N_BE; b++) free(y[b]), free(dx[b]);
  free(x), free(dy);
}

static void test_resize_vs_ref(void) {
  dsc_backend *be[N_BE];
  if (open_backends(be)) {
    resize_vs_ref(be, 2, 64, 64, 21, 256, 256, 11);
    resize_vs_ref(be, 1, 33, 65, 3, 129, 257, 12);
    resize_vs_ref(be, 2, 129, 97, 5, 31, 40, 13);  /* downsampling by ~4 and ~2.4 */
    resize_vs_ref(be, 1, 40, 30, 4, 40, 77, 14);   /* rows same, columns up */
  }
  close_backends(be);
}

/* Labels in [0, classes) with every 7th ignored (255). */
static uint8_t *rand_labels(int64_t pixels, int classes, uint64_t seed) {
  float *u = test_rand_buf((size_t)pixels, seed, 0, 1);
  uint8_t *lab = malloc((size_t)pixels);
  for (int64_t r = 0; r < pixels; r++) {
    int v = (int)(u[r] * classes);
    lab[r] = r % 7 == 3 ? 255 : (uint8_t)(v < classes ? v : classes - 1);
  }
  free(u);
  return lab;
}

static void test_softmax_ce_vs_ref(void) {
  dsc_backend *be[N_BE];
  if (open_backends(be)) {
    const int64_t pixels = 2 * 96 * 96 + 17; /* several 1024-row chunks and a partial one */
    const int classes = 21;
    const size_t nl = (size_t)pixels * classes;
    float *logits = test_rand_buf(nl, 21, -6, 6);
    uint8_t *lab = rand_labels(pixels, classes, 22);
    float loss[N_BE], *dl[N_BE];
    for (int b = 0; b < N_BE; b++) {
      dl[b] = malloc(nl * sizeof(float));
      CHECK_OK(be[b]->softmax_ce(be[b], pixels, classes, logits, lab, 255, 1.0f / 1000, &loss[b],
                                 dl[b]));
    }
    for (int b = 1; b < N_BE; b++) {
      const double e = fabs((double)loss[b] - loss[0]) / fabs((double)loss[0]);
      CHECK(e <= CPU_TOL, "%s loss %.9g vs ref %.9g (relative %.3g)", be_label[b], (double)loss[b],
            (double)loss[0], e);
      CHECK_CLOSE(be_label[b], dl[b], dl[0], nl, CPU_TOL);
    }
    CHECK(loss[1] == loss[2], "softmax_ce loss: cpu at 1 and 2 threads differ");
    /* Determinism at 2 threads: two runs, the same bits. */
    float again = NAN;
    float *dl2 = malloc(nl * sizeof(float));
    CHECK_OK(be[2]->softmax_ce(be[2], pixels, classes, logits, lab, 255, 1.0f / 1000, &again, dl2));
    CHECK(memcmp(&again, &loss[2], sizeof again) == 0 && bitwise_equal(dl2, dl[2], nl),
          "softmax_ce at 2 threads: two runs differ (%.9g vs %.9g)", (double)again,
          (double)loss[2]);
    /* pixels = 0: loss 0, nothing read. */
    for (int b = 0; b < N_BE; b++) {
      float z = NAN;
      CHECK_OK(be[b]->softmax_ce(be[b], 0, classes, NULL, NULL, 255, 1.0f, &z, NULL));
      CHECK(z == 0.0f, "%s: pixels 0 gives loss %g", be_label[b], (double)z);
    }
    /* An ignore value other than 255 (here class 0) is honoured. */
    for (int b = 0; b < N_BE; b++) {
      uint8_t l2[2] = {0, 1};
      float lg[4] = {1, 2, 3, 4}, d[4], z = NAN;
      CHECK_OK(be[b]->softmax_ce(be[b], 2, 2, lg, l2, 0, 1.0f, &z, d));
      const double want = log(exp(3.0) + exp(4.0)) - 4.0;
      CHECK(fabs(z - want) <= 1e-6 && d[0] == 0.0f && d[1] == 0.0f, "%s: ignore 0: loss %.9g",
            be_label[b], (double)z);
    }
    for (int b = 0; b < N_BE; b++) free(dl[b]);
    free(dl2), free(logits), free(lab);
  }
  close_backends(be);
}

static void test_channel_scale_vs_ref(void) {
  dsc_backend *be[N_BE];
  if (open_backends(be)) {
    const int n = 3, hw = 50 * 40, c = 21;
    const size_t nx = (size_t)n * hw * c;
    float *x = test_rand_buf(nx, 31, -2, 2), *s = test_rand_buf((size_t)n * c, 32, 0, 2);
    float *y[N_BE];
    for (int b = 0; b < N_BE; b++) {
      y[b] = malloc(nx * sizeof(float));
      CHECK_OK(be[b]->channel_scale(be[b], n, hw, c, y[b], x, s));
    }
    CHECK(bitwise_equal(y[1], y[0], nx) && bitwise_equal(y[2], y[0], nx),
          "channel_scale: cpu differs from ref");
    memcpy(y[1], x, nx * sizeof(float));
    CHECK_OK(be[2]->channel_scale(be[2], n, hw, c, y[1], y[1], s));
    CHECK(bitwise_equal(y[1], y[0], nx), "channel_scale in place (cpu2) differs");
    for (int b = 0; b < N_BE; b++) free(y[b]);
    free(x), free(s);
  }
  close_backends(be);
}

/* ---- argument checks ---- */

static void test_checks(void) {
  dsc_backend *be[N_BE];
  if (open_backends(be)) {
    float buf[64] = {0}, loss = 0;
    uint8_t lab[4] = {0, 1, 255, 0}, bad[2] = {0, 7};
    for (int b = 0; b < N_BE; b++) {
      dsc_backend *B = be[b];
      CHECK_ERR(B->resize_bilinear_forward(B, 0, 2, 2, 1, 3, 3, buf, buf),
                "resize_bilinear_forward: sizes must be >= 1 (n=0");
      CHECK_ERR(B->resize_bilinear_forward(B, 1, 2, 2, 1, 3, 0, buf, buf), "ow=0");
      CHECK_ERR(B->resize_bilinear_forward(B, 1, 2, 2, 1, 3, 3, NULL, buf),
                "resize_bilinear_forward: y and x must not be NULL");
      CHECK_ERR(B->resize_bilinear_backward(B, 1, 2, 2, 1, 3, 3, buf, NULL),
                "resize_bilinear_backward: dx and dy must not be NULL");
      CHECK_ERR(B->resize_bilinear_backward(B, 1, 2, -1, 1, 3, 3, buf, buf),
                "resize_bilinear_backward: sizes must be >= 1");
      CHECK_ERR(B->resize_bilinear_forward(B, 65536, 65536, 65536, 1 << 20, 1, 1, buf, buf),
                "exceed 2^60");
      CHECK_ERR(B->channel_scale(B, 1, 0, 3, buf, buf, buf),
                "channel_scale: sizes must be >= 1 (n=1 hw=0 c=3)");
      CHECK_ERR(B->channel_scale(B, 1, 2, 3, buf, buf, NULL),
                "channel_scale: y, x and scale must not be NULL");
      CHECK_ERR(B->channel_scale(B, 1 << 30, 1 << 30, 4, buf, buf, buf), "exceed 2^60");
      CHECK_ERR(B->softmax_ce(B, -1, 3, buf, lab, 255, 1.0f, &loss, NULL),
                "softmax_ce: pixels -1 must be >= 0");
      CHECK_ERR(B->softmax_ce(B, 4, 0, buf, lab, 255, 1.0f, &loss, NULL),
                "softmax_ce: classes 0 is outside [1, 65535]");
      CHECK_ERR(B->softmax_ce(B, 4, 65536, buf, lab, 255, 1.0f, &loss, NULL),
                "classes 65536 is outside");
      CHECK_ERR(B->softmax_ce(B, 4, 3, buf, lab, 256, 1.0f, &loss, NULL),
                "softmax_ce: ignore 256 is outside [0, 255]");
      CHECK_ERR(B->softmax_ce(B, 4, 3, buf, lab, -1, 1.0f, &loss, NULL), "ignore -1 is outside");
      CHECK_ERR(B->softmax_ce(B, 4, 3, buf, lab, 255, 1.0f, NULL, NULL),
                "softmax_ce: loss_sum must not be NULL");
      CHECK_ERR(B->softmax_ce(B, 4, 3, NULL, lab, 255, 1.0f, &loss, NULL),
                "softmax_ce: logits and labels must not be NULL");
      CHECK_ERR(B->softmax_ce(B, 4, 3, buf, NULL, 255, 1.0f, &loss, NULL),
                "softmax_ce: logits and labels must not be NULL");
      CHECK_ERR(B->softmax_ce(B, (int64_t)1 << 50, 60000, buf, lab, 255, 1.0f, &loss, NULL),
                "exceed 2^60 logits");
      /* a label neither ignored nor < classes (host backends read labels) */
      CHECK_ERR(B->softmax_ce(B, 2, 3, buf, bad, 255, 1.0f, &loss, buf + 32),
                "softmax_ce: labels[1] = 7 is neither ignore (255) nor < classes (3)");
    }
  }
  close_backends(be);
}

static const dsc_test tests[] = {
    {"golden_resize", test_golden_resize},
    {"golden_softmax_ce", test_golden_softmax_ce},
    {"golden_channel_scale", test_golden_channel_scale},
    {"resize_vs_ref", test_resize_vs_ref},
    {"softmax_ce_vs_ref", test_softmax_ce_vs_ref},
    {"channel_scale_vs_ref", test_channel_scale_vs_ref},
    {"checks", test_checks},
};

TEST_MAIN(tests)
