/* test_cpu_ops.c: the CPU backend (src/backend/cpu/) against the reference backend, op by
 * op, on many shapes; plus the contract details the model relies on: parameter gradients
 * accumulate, NULL gradients skip work, the conv primitive cache returns identical results,
 * and results are bitwise reproducible for a fixed thread count.
 *
 * Tolerances (relative L2 against ref, which accumulates every sum in double):
 *   forward ops 1e-5: fp32 sums of at most a few thousand products (conv: ci*kh*kw) or
 *     a float normalization, whose rounding error is ~1e-7 relative;
 *   backward ops 1e-4: the weight gradient sums n*oh*ow products and the BN gradient
 *     subtracts two projections from dy, so fp32 cancellation costs more digits;
 *   max-pool, ReLU, add, SGD, EMA, GAP backward: 0 (same float operations in the same
 *     order as ref, so they must agree exactly).
 * Inputs come from a fixed-seed generator, so every run sees the same numbers. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "test.h"

#define TOL_FWD 1e-5
#define TOL_BWD 1e-4

/* ---- helpers ---- */



static float *copy_buf(const float *src, size_t n) {
  float *p = malloc((n ? n : 1) * sizeof *p);
  memcpy(p, src, n * sizeof *p);
  return p;
}

static float *fill_buf(size_t n, float v) {
  float *p = malloc((n ? n : 1) * sizeof *p);
  for (size_t i = 0; i < n; i++) p[i] = v;
  return p;
}

static int same_bits(const void *a, const void *b, size_t bytes) { return memcmp(a, b, bytes) == 0; }

static dsc_backend *ref_be(void) {
  dsc_backend *be = NULL;
  CHECK_OK(dsc_backend_ref_new(&be));
  return be;
}

static dsc_backend *cpu_be(int threads) {
  dsc_backend *be = NULL;
  CHECK_OK(dsc_backend_cpu_new(threads, &be));
  return be;
}

/* ---- convolution ---- */

typedef struct conv_case {
  const char *what;
  dsc_conv_shape s;
  int bias;
} conv_case;

/* Every distinct convolution of torchvision's ResNet-18/34/50 (channels as in the model,
 * spatial sizes shrunk), the small 3x3 stem, the necks' 1x1 convs with bias, and odd
 * shapes: n, h, w, c_in, c_out, kh, kw, stride, pad, dilation. */
static const conv_case conv_cases[] = {
    {"stem 7x7/2 p3", {2, 16, 16, 3, 64, 7, 7, 2, 3, 1}, 0},
    {"small stem 3x3/1", {2, 8, 8, 3, 64, 3, 3, 1, 1, 1}, 0},
    {"basic 3x3 64", {2, 8, 8, 64, 64, 3, 3, 1, 1, 1}, 0},
    {"basic 3x3/2 64->128", {2, 8, 8, 64, 128, 3, 3, 2, 1, 1}, 0},
    {"basic 3x3 128", {2, 4, 4, 128, 128, 3, 3, 1, 1, 1}, 0},
    {"down 1x1/2 64->128", {2, 8, 8, 64, 128, 1, 1, 2, 0, 1}, 0},
    {"basic 3x3/2 128->256", {2, 6, 6, 128, 256, 3, 3, 2, 1, 1}, 0},
    {"basic 3x3 256", {2, 3, 3, 256, 256, 3, 3, 1, 1, 1}, 0},
    {"down 1x1/2 128->256", {2, 6, 6, 128, 256, 1, 1, 2, 0, 1}, 0},
    {"basic 3x3/2 256->512", {2, 4, 4, 256, 512, 3, 3, 2, 1, 1}, 0},
    {"basic 3x3 512", {2, 2, 2, 512, 512, 3, 3, 1, 1, 1}, 0},
    {"down 1x1/2 256->512", {2, 4, 4, 256, 512, 1, 1, 2, 0, 1}, 0},
    {"bottle 1x1 64->64", {2, 6, 6, 64, 64, 1, 1, 1, 0, 1}, 0},
    {"bottle 1x1 64->256", {2, 6, 6, 64, 256, 1, 1, 1, 0, 1}, 0},
    {"bottle 1x1 256->64", {2, 6, 6, 256, 64, 1, 1, 1, 0, 1}, 0},
    {"bottle 1x1 256->128", {2, 6, 6, 256, 128, 1, 1, 1, 0, 1}, 0},
    {"bottle 3x3/2 128", {2, 6, 6, 128, 128, 3, 3, 2, 1, 1}, 0},
    {"bottle 1x1 128->512", {2, 3, 3, 128, 512, 1, 1, 1, 0, 1}, 0},
    {"down 1x1/2 256->512 odd", {2, 5, 5, 256, 512, 1, 1, 2, 0, 1}, 0},
    {"bottle 1x1 512->128", {2, 3, 3, 512, 128, 1, 1, 1, 0, 1}, 0},
    {"bottle 1x1 512->256", {2, 4, 4, 512, 256, 1, 1, 1, 0, 1}, 0},
    {"bottle 3x3/2 256", {2, 4, 4, 256, 256, 3, 3, 2, 1, 1}, 0},
    {"bottle 1x1 256->1024", {2, 2, 2, 256, 1024, 1, 1, 1, 0, 1}, 0},
    {"down 1x1/2 512->1024", {2, 4, 4, 512, 1024, 1, 1, 2, 0, 1}, 0},
    {"bottle 1x1 1024->256", {2, 2, 2, 1024, 256, 1, 1, 1, 0, 1}, 0},
    {"bottle 1x1 1024->512", {2, 2, 2, 1024, 512, 1, 1, 1, 0, 1}, 0},
    {"bottle 3x3/2 512", {2, 3, 3, 512, 512, 3, 3, 2, 1, 1}, 0},
    {"bottle 1x1 512->2048", {2, 2, 1, 512, 2048, 1, 1, 1, 0, 1}, 0},
    {"down 1x1/2 1024->2048", {2, 2, 2, 1024, 2048, 1, 1, 2, 0, 1}, 0},
    {"bottle 1x1 2048->512", {2, 1, 2, 2048, 512, 1, 1, 1, 0, 1}, 0},
    {"neck 1x1 2048->128 bias", {2, 2, 2, 2048, 128, 1, 1, 1, 0, 1}, 1},
    {"neck 1x1 64->64 bias", {4, 3, 3, 64, 64, 1, 1, 1, 0, 1}, 1},
    {"odd 7x5 3->5 3x3", {3, 7, 5, 3, 5, 3, 3, 1, 1, 1}, 1},
    {"odd 7x5 5->17 3x3/2", {3, 7, 5, 5, 17, 3, 3, 2, 1, 1}, 0},
    {"odd 7x5 17->3 1x1/2", {4, 7, 5, 17, 3, 1, 1, 2, 0, 1}, 1},
    {"odd 9x7 3->17 7x7/2 p3", {2, 9, 7, 3, 17, 7, 7, 2, 3, 1}, 0},
    {"odd 3x5 kernel no pad", {2, 6, 7, 5, 3, 3, 5, 1, 0, 1}, 1},
    {"dilation 2 3x3", {2, 9, 8, 16, 17, 3, 3, 1, 2, 2}, 0},
    {"dilation 2 3x3/2", {2, 11, 9, 17, 16, 3, 3, 2, 2, 2}, 1},
    {"batch 1 1x1", {1, 4, 4, 32, 48, 1, 1, 1, 0, 1}, 0},
    /* outputs of at most 2x2: weight gradient by per-tap GEMMs; at most 4x4: forward
     * avoids brgconv (cpu_conv.c) */
    {"tiny 3x3 on 1x1 (taps off the image)", {2, 1, 1, 8, 16, 3, 3, 1, 1, 1}, 1},
    {"tiny 3x3 dilation 2 on 2x2", {3, 2, 2, 16, 8, 3, 3, 1, 2, 2}, 0},
    {"tiny 3x3/2 4x4 -> 2x2", {4, 4, 4, 32, 64, 3, 3, 2, 1, 1}, 1},
    {"small 3x3 4x4 -> 4x4", {4, 4, 4, 16, 32, 3, 3, 1, 1, 1}, 0},
};
#define N_CONV_CASES ((int)(sizeof conv_cases / sizeof conv_cases[0]))

/* What the CPU backend computed for one case on the first pass: y, dx, dw, db. */
typedef struct conv_result {
  float *y, *dx, *dw, *db;
} conv_result;

/* One case against ref: forward; backward with every gradient (dw, db start non-zero to
 * check +=, dx starts as garbage to check =); backward with dx == NULL; the same calls
 * twice must give identical bits. Keeps the CPU results in *keep. */
static void conv_case_run(dsc_backend *ref, dsc_backend *cpu, const conv_case *cc, int seed,
                          conv_result *keep) {
  const dsc_conv_shape *s = &cc->s;
  const int oh = dsc_conv_oh(s), ow = dsc_conv_ow(s);
  const size_t nx = (size_t)s->n * s->h * s->w * s->c_in;
  const size_t ny = (size_t)s->n * oh * ow * s->c_out;
  const size_t nw = (size_t)s->c_out * s->c_in * s->kh * s->kw, nb = (size_t)s->c_out;
  float *x = test_rand_buf(nx, seed, -1, 1), *w = test_rand_buf(nw, seed + 1, -0.5f, 0.5f);
  float *b = cc->bias ? test_rand_buf(nb, seed + 2, -1, 1) : NULL;
  float *dy = test_rand_buf(ny, seed + 3, -1, 1);
  float *w0 = test_rand_buf(nw, seed + 4, -0.1f, 0.1f), *b0 = test_rand_buf(nb, seed + 5, -0.1f, 0.1f);

  float *y_ref = fill_buf(ny, 0), *y_cpu = fill_buf(ny, 7), *y_cpu2 = fill_buf(ny, 9);
  CHECK_OK(ref->conv2d_forward(ref, s, y_ref, x, w, b));
  CHECK_OK(cpu->conv2d_forward(cpu, s, y_cpu, x, w, b));
  CHECK_OK(cpu->conv2d_forward(cpu, s, y_cpu2, x, w, b));
  CHECK_CLOSE(cc->what, y_cpu, y_ref, ny, TOL_FWD);
  CHECK(same_bits(y_cpu, y_cpu2, ny * sizeof *y_cpu), "%s: second forward differs", cc->what);

  float *dx_ref = fill_buf(nx, 0), *dw_ref = copy_buf(w0, nw), *db_ref = copy_buf(b0, nb);
  CHECK_OK(ref->conv2d_backward(ref, s, dx_ref, dw_ref, cc->bias ? db_ref : NULL, dy, x, w));
  float *dx1 = fill_buf(nx, 3), *dw1 = copy_buf(w0, nw), *db1 = copy_buf(b0, nb);
  CHECK_OK(cpu->conv2d_backward(cpu, s, dx1, dw1, cc->bias ? db1 : NULL, dy, x, w));
  CHECK_CLOSE(cc->what, dx1, dx_ref, nx, TOL_BWD);
  CHECK_CLOSE(cc->what, dw1, dw_ref, nw, TOL_BWD);
  if (cc->bias) CHECK_CLOSE(cc->what, db1, db_ref, nb, TOL_BWD);

  /* again, plus dx == NULL: identical bits */
  float *dx2 = fill_buf(nx, -5), *dw2 = copy_buf(w0, nw), *db2 = copy_buf(b0, nb);
  float *dw3 = copy_buf(w0, nw), *db3 = copy_buf(b0, nb);
  CHECK_OK(cpu->conv2d_backward(cpu, s, dx2, dw2, cc->bias ? db2 : NULL, dy, x, w));
  CHECK_OK(cpu->conv2d_backward(cpu, s, NULL, dw3, cc->bias ? db3 : NULL, dy, x, w));
  CHECK(same_bits(dx1, dx2, nx * sizeof *dx1), "%s: second dx differs", cc->what);
  CHECK(same_bits(dw1, dw2, nw * sizeof *dw1), "%s: second dw differs", cc->what);
  CHECK(same_bits(dw1, dw3, nw * sizeof *dw1), "%s: dw with dx == NULL differs", cc->what);
  if (cc->bias) CHECK(same_bits(db1, db3, nb * sizeof *db1), "%s: db differs", cc->what);

  keep->y = y_cpu, keep->dx = dx1, keep->dw = dw1, keep->db = db1;
  free(x), free(w), free(b), free(dy), free(w0), free(b0);
  free(y_ref), free(y_cpu2), free(dx_ref), free(dw_ref), free(db_ref);
  free(dx2), free(dw2), free(db2), free(dw3), free(db3);
}

/* The second pass, after every shape is in the cache: same inputs, same bits. */
static void conv_case_recheck(dsc_backend *cpu, const conv_case *cc, int seed,
                              conv_result *keep) {
  const dsc_conv_shape *s = &cc->s;
  const size_t nx = (size_t)s->n * s->h * s->w * s->c_in;
  const size_t ny = (size_t)s->n * dsc_conv_oh(s) * dsc_conv_ow(s) * s->c_out;
  const size_t nw = (size_t)s->c_out * s->c_in * s->kh * s->kw, nb = (size_t)s->c_out;
  float *x = test_rand_buf(nx, seed, -1, 1), *w = test_rand_buf(nw, seed + 1, -0.5f, 0.5f);
  float *b = cc->bias ? test_rand_buf(nb, seed + 2, -1, 1) : NULL;
  float *dy = test_rand_buf(ny, seed + 3, -1, 1);
  float *dw = test_rand_buf(nw, seed + 4, -0.1f, 0.1f), *db = test_rand_buf(nb, seed + 5, -0.1f, 0.1f);
  float *y = fill_buf(ny, 1), *dx = fill_buf(nx, 1);
  CHECK_OK(cpu->conv2d_forward(cpu, s, y, x, w, b));
  CHECK_OK(cpu->conv2d_backward(cpu, s, dx, dw, cc->bias ? db : NULL, dy, x, w));
  CHECK(same_bits(y, keep->y, ny * sizeof *y) && same_bits(dx, keep->dx, nx * sizeof *dx) &&
            same_bits(dw, keep->dw, nw * sizeof *dw) &&
            (!cc->bias || same_bits(db, keep->db, nb * sizeof *db)),
        "%s: results from the cached primitives differ from the first pass", cc->what);
  free(x), free(w), free(b), free(dy), free(dw), free(db), free(y), free(dx);
  free(keep->y), free(keep->dx), free(keep->dw), free(keep->db);
}

static void test_conv_vs_ref(void) {
  dsc_backend *ref = ref_be(), *cpu = cpu_be(2);
  conv_result keep[N_CONV_CASES];
  for (int i = 0; i < N_CONV_CASES; i++) conv_case_run(ref, cpu, &conv_cases[i], 100 + i, &keep[i]);
  for (int i = 0; i < N_CONV_CASES; i++) conv_case_recheck(cpu, &conv_cases[i], 100 + i, &keep[i]);
  cpu->destroy(cpu);
  ref->destroy(ref);
}

/* Calling backward twice doubles the parameter gradients (dw, db +=), exactly. */
static void test_conv_accumulates(void) {
  dsc_backend *cpu = cpu_be(2);
  const dsc_conv_shape s = {2, 6, 6, 8, 16, 3, 3, 1, 1, 1};
  const size_t nx = 2 * 6 * 6 * 8, ny = 2 * 6 * 6 * 16, nw = 16 * 8 * 9;
  float *x = test_rand_buf(nx, 1, -1, 1), *w = test_rand_buf(nw, 2, -1, 1), *dy = test_rand_buf(ny, 3, -1, 1);
  float *dw = fill_buf(nw, 0), *db = fill_buf(16, 0), *dw1 = NULL, *db1 = NULL;
  CHECK_OK(cpu->conv2d_backward(cpu, &s, NULL, dw, db, dy, x, w));
  dw1 = copy_buf(dw, nw), db1 = copy_buf(db, 16);
  CHECK_OK(cpu->conv2d_backward(cpu, &s, NULL, dw, db, dy, x, w));
  int exact = 1;
  for (size_t i = 0; i < nw; i++) exact &= dw[i] == 2 * dw1[i];
  for (size_t i = 0; i < 16; i++) exact &= db[i] == 2 * db1[i];
  CHECK(exact, "second backward did not double dw and db");
  /* db without dw (bias-only gradient) */
  float *db_only = fill_buf(16, 0);
  CHECK_OK(cpu->conv2d_backward(cpu, &s, NULL, NULL, db_only, dy, x, w));
  CHECK_CLOSE("db without dw", db_only, db1, 16, TOL_FWD);
  free(x), free(w), free(dy), free(dw), free(db), free(dw1), free(db1), free(db_only);
  cpu->destroy(cpu);
}

/* Results do not depend on the thread count beyond rounding; bitwise equal for the same
 * count across two backend instances. */
static void test_conv_threads(void) {
  dsc_backend *a = cpu_be(1), *b = cpu_be(2), *c = cpu_be(2);
  const dsc_conv_shape s = {3, 9, 9, 32, 24, 3, 3, 2, 1, 1};
  const int oh = dsc_conv_oh(&s), ow = dsc_conv_ow(&s);
  const size_t nx = 3 * 9 * 9 * 32, ny = (size_t)3 * oh * ow * 24, nw = 24 * 32 * 9;
  float *x = test_rand_buf(nx, 4, -1, 1), *w = test_rand_buf(nw, 5, -1, 1), *dy = test_rand_buf(ny, 6, -1, 1);
  float *ya = fill_buf(ny, 0), *yb = fill_buf(ny, 0), *yc = fill_buf(ny, 0);
  float *dwa = fill_buf(nw, 0), *dwb = fill_buf(nw, 0), *dwc = fill_buf(nw, 0);
  CHECK_OK(a->conv2d_forward(a, &s, ya, x, w, NULL));
  CHECK_OK(b->conv2d_forward(b, &s, yb, x, w, NULL));
  CHECK_OK(c->conv2d_forward(c, &s, yc, x, w, NULL));
  CHECK_OK(a->conv2d_backward(a, &s, NULL, dwa, NULL, dy, x, w));
  CHECK_OK(b->conv2d_backward(b, &s, NULL, dwb, NULL, dy, x, w));
  CHECK_OK(c->conv2d_backward(c, &s, NULL, dwc, NULL, dy, x, w));
  CHECK_CLOSE("y 1 vs 2 threads", ya, yb, ny, TOL_FWD);
  CHECK_CLOSE("dw 1 vs 2 threads", dwa, dwb, nw, TOL_BWD);
  CHECK(same_bits(yb, yc, ny * sizeof *yb), "two 2-thread backends differ in y");
  CHECK(same_bits(dwb, dwc, nw * sizeof *dwb), "two 2-thread backends differ in dw");
  free(x), free(w), free(dy), free(ya), free(yb), free(yc), free(dwa), free(dwb), free(dwc);
  a->destroy(a), b->destroy(b), c->destroy(c);
}

static void test_conv_errors(void) {
  dsc_backend *cpu = cpu_be(2);
  float buf[64] = {0};
  dsc_conv_shape s = {1, 2, 2, 1, 1, 5, 5, 1, 0, 1};
  CHECK_ERR(cpu->conv2d_forward(cpu, &s, buf, buf, buf, NULL), "smaller than the dilated kernel");
  s = (dsc_conv_shape){1, 4, 4, 1, 1, 3, 3, 0, 1, 1};
  CHECK_ERR(cpu->conv2d_forward(cpu, &s, buf, buf, buf, NULL), "stride");
  s = (dsc_conv_shape){1, 4, 4, 1, 1, 3, 3, 1, 1, 1};
  CHECK_ERR(cpu->conv2d_forward(cpu, &s, NULL, buf, buf, NULL), "must not be NULL");
  CHECK_ERR(cpu->conv2d_backward(cpu, &s, buf, NULL, NULL, buf, buf, NULL), "w is NULL");
  s = (dsc_conv_shape){1, 4, 4, 1, 1, 3, 3, 1, 1 << 30, 1};
  CHECK_ERR(cpu->conv2d_forward(cpu, &s, buf, buf, buf, NULL), "exceeds int");
  cpu->destroy(cpu);
}

/* ---- batch normalization ---- */

typedef struct bn_case {
  dsc_bn_shape s;
  int residual;
  float offset; /* added to x: a mean far from zero stresses the variance formula */
} bn_case;

static const bn_case bn_cases[] = {
    {{4, 5, 3, 17, 1, 1e-5f, 0}, 0, 0.0f},
    {{4, 5, 3, 17, 2, 1e-5f, 1}, 0, 0.0f},
    {{4, 5, 3, 17, 4, 1e-5f, 1}, 1, 0.0f},
    {{8, 4, 4, 64, 4, 1e-5f, 0}, 1, 0.0f},
    {{8, 4, 4, 64, 2, 1e-5f, 1}, 1, 3.0f},
    {{2, 7, 5, 3, 1, 1e-5f, 1}, 0, 0.0f},
    {{2, 7, 5, 3, 2, 1e-3f, 0}, 1, -2.0f},
    {{4, 1, 1, 256, 2, 1e-5f, 0}, 0, 0.0f}, /* 2 values per channel per group */
    {{8, 7, 7, 2048, 8, 1e-5f, 1}, 1, 0.0f},
    {{2, 16, 16, 5, 1, 1e-5f, 1}, 1, 10.0f},
};
#define N_BN_CASES ((int)(sizeof bn_cases / sizeof bn_cases[0]))

static void bn_case_run(dsc_backend *ref, dsc_backend *cpu, const bn_case *bc, int seed) {
  const dsc_bn_shape *s = &bc->s;
  const size_t nx = (size_t)s->n * s->h * s->w * s->c, C = (size_t)s->c;
  const size_t GC = (size_t)s->groups * C;
  char what[96];
  snprintf(what, sizeof what, "bn n=%d %dx%dx%d G=%d res=%d relu=%d", s->n, s->h, s->w, s->c,
           s->groups, bc->residual, s->relu);
  float *x = test_rand_buf(nx, seed, -1 + bc->offset, 2 + bc->offset);
  float *gamma = test_rand_buf(C, seed + 1, 0.5f, 1.5f), *beta = test_rand_buf(C, seed + 2, -0.5f, 0.5f);
  float *res = bc->residual ? test_rand_buf(nx, seed + 3, -1, 1) : NULL;
  float *dy = test_rand_buf(nx, seed + 4, -1, 1);
  float *g0 = test_rand_buf(C, seed + 5, -0.1f, 0.1f), *b0 = test_rand_buf(C, seed + 6, -0.1f, 0.1f);

  /* training forward */
  float *y_ref = fill_buf(nx, 0), *m_ref = fill_buf(GC, 0), *v_ref = fill_buf(GC, 0);
  float *y_cpu = fill_buf(nx, 5), *m_cpu = fill_buf(GC, 5), *v_cpu = fill_buf(GC, 5);
  CHECK_OK(ref->bn_forward_train(ref, s, y_ref, m_ref, v_ref, x, gamma, beta, res));
  CHECK_OK(cpu->bn_forward_train(cpu, s, y_cpu, m_cpu, v_cpu, x, gamma, beta, res));
  CHECK_CLOSE(what, y_cpu, y_ref, nx, TOL_FWD);
  CHECK_CLOSE(what, m_cpu, m_ref, GC, TOL_FWD);
  CHECK_CLOSE(what, v_cpu, v_ref, GC, TOL_FWD);
  float *y2 = fill_buf(nx, 0), *m2 = fill_buf(GC, 0), *v2 = fill_buf(GC, 0);
  CHECK_OK(cpu->bn_forward_train(cpu, s, y2, m2, v2, x, gamma, beta, res));
  CHECK(same_bits(y2, y_cpu, nx * sizeof *y2) && same_bits(m2, m_cpu, GC * sizeof *m2) &&
            same_bits(v2, v_cpu, GC * sizeof *v2),
        "%s: second forward differs", what);

  /* backward, all outputs; both backends read the same saved statistics and y */
  float *dx_ref = fill_buf(nx, 0), *dg_ref = copy_buf(g0, C), *db_ref = copy_buf(b0, C);
  float *dr_ref = fill_buf(nx, 0);
  CHECK_OK(ref->bn_backward(ref, s, dx_ref, dg_ref, db_ref, dr_ref, dy, x, y_ref, gamma, m_ref,
                            v_ref));
  float *dx = fill_buf(nx, 9), *dg = copy_buf(g0, C), *db = copy_buf(b0, C);
  float *dr = fill_buf(nx, 9);
  CHECK_OK(cpu->bn_backward(cpu, s, dx, dg, db, dr, dy, x, y_ref, gamma, m_ref, v_ref));
  CHECK_CLOSE(what, dx, dx_ref, nx, TOL_BWD);
  CHECK_CLOSE(what, dg, dg_ref, C, TOL_BWD);
  CHECK_CLOSE(what, db, db_ref, C, TOL_BWD);
  CHECK_CLOSE(what, dr, dr_ref, nx, 0.0);

  /* without dresidual, then without dx: same bits for what is computed */
  float *dx2 = fill_buf(nx, 1), *dg2 = copy_buf(g0, C), *db2 = copy_buf(b0, C);
  float *dg3 = copy_buf(g0, C), *db3 = copy_buf(b0, C);
  CHECK_OK(cpu->bn_backward(cpu, s, dx2, dg2, db2, NULL, dy, x, y_ref, gamma, m_ref, v_ref));
  CHECK_OK(cpu->bn_backward(cpu, s, NULL, dg3, db3, NULL, dy, x, y_ref, gamma, m_ref, v_ref));
  CHECK_CLOSE(what, dx2, dx_ref, nx, TOL_BWD);
  CHECK(same_bits(dg2, dg, C * sizeof *dg) && same_bits(db2, db, C * sizeof *db) &&
            same_bits(dg3, dg, C * sizeof *dg) && same_bits(db3, db, C * sizeof *db),
        "%s: parameter gradients depend on which outputs are requested", what);
  /* accumulate: a second call adds the same gradient again */
  float *dg_ref2 = copy_buf(dg_ref, C);
  CHECK_OK(ref->bn_backward(ref, s, NULL, dg_ref2, NULL, NULL, dy, x, y_ref, gamma, m_ref, v_ref));
  CHECK_OK(cpu->bn_backward(cpu, s, NULL, dg3, NULL, NULL, dy, x, y_ref, gamma, m_ref, v_ref));
  CHECK_CLOSE(what, dg3, dg_ref2, C, TOL_BWD);

  /* eval forward with running statistics */
  float *rm = test_rand_buf(C, seed + 7, -0.5f, 0.5f), *rv = test_rand_buf(C, seed + 8, 0.5f, 2.0f);
  CHECK_OK(ref->bn_forward_eval(ref, s, y_ref, x, gamma, beta, rm, rv, res));
  CHECK_OK(cpu->bn_forward_eval(cpu, s, y_cpu, x, gamma, beta, rm, rv, res));
  CHECK_CLOSE(what, y_cpu, y_ref, nx, TOL_FWD);

  /* running update: same formula in double on both sides */
  float *rm2 = copy_buf(rm, C), *rv2 = copy_buf(rv, C);
  CHECK_OK(ref->bn_update_running(ref, s, rm, rv, m_ref, v_ref, 0.1f));
  CHECK_OK(cpu->bn_update_running(cpu, s, rm2, rv2, m_ref, v_ref, 0.1f));
  CHECK(same_bits(rm, rm2, C * sizeof *rm) && same_bits(rv, rv2, C * sizeof *rv),
        "%s: running update differs from ref", what);

  free(x), free(gamma), free(beta), free(res), free(dy), free(g0), free(b0);
  free(y_ref), free(m_ref), free(v_ref), free(y_cpu), free(m_cpu), free(v_cpu);
  free(y2), free(m2), free(v2), free(dx_ref), free(dg_ref), free(db_ref), free(dr_ref);
  free(dx), free(dg), free(db), free(dr), free(dx2), free(dg2), free(db2), free(dg3), free(db3);
  free(dg_ref2), free(rm), free(rv), free(rm2), free(rv2);
}

static void test_bn_vs_ref(void) {
  dsc_backend *ref = ref_be(), *cpu = cpu_be(2);
  for (int i = 0; i < N_BN_CASES; i++) bn_case_run(ref, cpu, &bn_cases[i], 200 + i);
  cpu->destroy(cpu);
  dsc_backend *cpu3 = cpu_be(3); /* more threads than cores, uneven splits */
  for (int i = 0; i < N_BN_CASES; i++) bn_case_run(ref, cpu3, &bn_cases[i], 300 + i);
  cpu3->destroy(cpu3);
  ref->destroy(ref);
}

static void test_bn_errors(void) {
  dsc_backend *cpu = cpu_be(2);
  float buf[64] = {0};
  dsc_bn_shape s = {3, 2, 2, 4, 2, 1e-5f, 0};
  CHECK_ERR(cpu->bn_forward_train(cpu, &s, buf, buf, buf, buf, buf, buf, NULL), "does not divide");
  s = (dsc_bn_shape){2, 1, 1, 4, 2, 1e-5f, 0};
  CHECK_ERR(cpu->bn_forward_train(cpu, &s, buf, buf, buf, buf, buf, buf, NULL), "more than 1");
  s = (dsc_bn_shape){2, 2, 2, 4, 1, 1e-5f, 1};
  CHECK_ERR(cpu->bn_backward(cpu, &s, buf, buf, buf, NULL, buf, buf, NULL, buf, buf, buf),
            "y is NULL");
  cpu->destroy(cpu);
}

/* ---- pooling ---- */

static void maxpool_case(dsc_backend *ref, dsc_backend *cpu, dsc_pool_shape s, int ties, int seed) {
  const int oh = dsc_conv_out_size(s.h, s.k, s.stride, s.pad, 1);
  const int ow = dsc_conv_out_size(s.w, s.k, s.stride, s.pad, 1);
  const size_t nx = (size_t)s.n * s.h * s.w * s.c, ny = (size_t)s.n * oh * ow * s.c;
  float *x = test_rand_buf(nx, seed, -2, 2);
  if (ties)
    for (size_t i = 0; i < nx; i++) x[i] = (float)(int)(x[i] + 2.0f); /* values 0..3 */
  float *y_ref = fill_buf(ny, 0), *y_cpu = fill_buf(ny, 1);
  int32_t *a_ref = calloc(ny, sizeof *a_ref), *a_cpu = calloc(ny, sizeof *a_cpu);
  CHECK_OK(ref->maxpool_forward(ref, &s, y_ref, a_ref, x));
  CHECK_OK(cpu->maxpool_forward(cpu, &s, y_cpu, a_cpu, x));
  CHECK(same_bits(y_ref, y_cpu, ny * sizeof *y_ref), "maxpool y differs (k=%d s=%d p=%d)", s.k,
        s.stride, s.pad);
  CHECK(same_bits(a_ref, a_cpu, ny * sizeof *a_ref), "maxpool argmax differs (k=%d s=%d p=%d)",
        s.k, s.stride, s.pad);
  float *dy = test_rand_buf(ny, seed + 1, -1, 1), *dx_ref = fill_buf(nx, 0), *dx_cpu = fill_buf(nx, 4);
  CHECK_OK(ref->maxpool_backward(ref, &s, dx_ref, dy, a_ref));
  CHECK_OK(cpu->maxpool_backward(cpu, &s, dx_cpu, dy, a_ref));
  CHECK(same_bits(dx_ref, dx_cpu, nx * sizeof *dx_ref), "maxpool dx differs (k=%d s=%d p=%d)",
        s.k, s.stride, s.pad);
  free(x), free(y_ref), free(y_cpu), free(a_ref), free(a_cpu), free(dy), free(dx_ref), free(dx_cpu);
}

static void test_maxpool_vs_ref(void) {
  dsc_backend *ref = ref_be(), *cpu = cpu_be(2);
  const dsc_pool_shape shapes[] = {
      {2, 16, 16, 64, 3, 2, 1}, {2, 9, 9, 17, 3, 2, 1}, {3, 7, 5, 3, 3, 2, 1},
      {2, 8, 8, 5, 2, 2, 0},    {2, 6, 5, 16, 3, 1, 1}, {1, 5, 7, 33, 3, 3, 0},
      {2, 4, 4, 8, 1, 1, 0},    {1, 11, 11, 4, 5, 2, 2},
  };
  for (int i = 0; i < (int)(sizeof shapes / sizeof shapes[0]); i++) {
    maxpool_case(ref, cpu, shapes[i], 0, 400 + i);
    maxpool_case(ref, cpu, shapes[i], 1, 500 + i);
  }
  cpu->destroy(cpu);
  ref->destroy(ref);
}

static void test_pool_errors(void) {
  dsc_backend *cpu = cpu_be(2);
  float buf[64] = {0};
  int32_t am[64] = {0};
  dsc_pool_shape s = {1, 1 << 16, 1 << 16, 1, 3, 2, 1};
  CHECK_ERR(cpu->maxpool_forward(cpu, &s, buf, am, buf), "int32");
  s = (dsc_pool_shape){1, 4, 4, 1, 3, 2, 2};
  CHECK_ERR(cpu->maxpool_forward(cpu, &s, buf, am, buf), "pad");
  CHECK_ERR(cpu->gap_forward(cpu, 0, 4, 4, buf, buf), "sizes");
  cpu->destroy(cpu);
}

static void test_maxpool_bad_argmax(void) {
  dsc_backend *cpu = cpu_be(2);
  dsc_pool_shape s = {1, 4, 4, 2, 2, 2, 0};
  float dy[8] = {1, 1, 1, 1, 1, 1, 1, 1}, dx[32];
  int32_t a[8] = {-7, 1000, 0, 0, 2, 2, 10, 10};
  CHECK_OK(cpu->maxpool_backward(cpu, &s, dx, dy, a)); /* must not crash */
  /* only output (1,1) names a pixel of its own window (10 = row 2, column 2) */
  float sum = 0;
  for (int i = 0; i < 32; i++) sum += dx[i];
  CHECK(dx[20] == 1.0f && dx[21] == 1.0f && sum == 2.0f,
        "argmax entries outside their window should contribute nothing");
  cpu->destroy(cpu);
}

static void test_gap_vs_ref(void) {
  dsc_backend *ref = ref_be(), *cpu = cpu_be(2);
  const int cases[][3] = {{2, 49, 2048}, {3, 5, 17}, {1, 64, 65}, {8, 1, 3}};
  for (int i = 0; i < 4; i++) {
    const int n = cases[i][0], hw = cases[i][1], c = cases[i][2];
    const size_t nx = (size_t)n * hw * c, ny = (size_t)n * c;
    float *x = test_rand_buf(nx, 600 + i, -1, 1), *y_ref = fill_buf(ny, 0), *y_cpu = fill_buf(ny, 1);
    CHECK_OK(ref->gap_forward(ref, n, hw, c, y_ref, x));
    CHECK_OK(cpu->gap_forward(cpu, n, hw, c, y_cpu, x));
    CHECK_CLOSE("gap forward", y_cpu, y_ref, ny, TOL_FWD);
    float *dx_ref = fill_buf(nx, 0), *dx_cpu = fill_buf(nx, 1);
    CHECK_OK(ref->gap_backward(ref, n, hw, c, dx_ref, y_ref));
    CHECK_OK(cpu->gap_backward(cpu, n, hw, c, dx_cpu, y_ref));
    CHECK_CLOSE("gap backward", dx_cpu, dx_ref, nx, 0.0);
    free(x), free(y_ref), free(y_cpu), free(dx_ref), free(dx_cpu);
  }
  cpu->destroy(cpu);
  ref->destroy(ref);
}

/* ---- elementwise, SGD, EMA ---- */

static void test_elementwise_vs_ref(void) {
  dsc_backend *ref = ref_be(), *cpu = cpu_be(2);
  const size_t sizes[] = {1, 37, 100003};
  for (int i = 0; i < 3; i++) {
    const size_t n = sizes[i];
    float *x = test_rand_buf(n, 700 + i, -1, 1), *dy = test_rand_buf(n, 710 + i, -1, 1);
    float *a = fill_buf(n, 0), *b = fill_buf(n, 1);
    CHECK_OK(ref->relu_forward(ref, a, x, n));
    CHECK_OK(cpu->relu_forward(cpu, b, x, n));
    CHECK_CLOSE("relu forward", b, a, n, 0.0);
    float *ga = fill_buf(n, 0), *gb = copy_buf(dy, n);
    CHECK_OK(ref->relu_backward(ref, ga, dy, a, n));
    CHECK_OK(cpu->relu_backward(cpu, gb, gb, a, n)); /* dx aliases dy */
    CHECK_CLOSE("relu backward", gb, ga, n, 0.0);
    float *sa = copy_buf(x, n), *sb = copy_buf(x, n);
    CHECK_OK(ref->add_inplace(ref, sa, dy, n));
    CHECK_OK(cpu->add_inplace(cpu, sb, dy, n));
    CHECK_CLOSE("add_inplace", sb, sa, n, 0.0);
    free(x), free(dy), free(a), free(b), free(ga), free(gb), free(sa), free(sb);
  }
  cpu->destroy(cpu);
  ref->destroy(ref);
}

static void test_sgd_ema_vs_ref(void) {
  dsc_backend *ref = ref_be(), *cpu = cpu_be(2);
  const size_t n = 70001;
  const struct { float lr, mom, wd; int nesterov, buffer; } cfg[] = {
      {0.03f, 0.9f, 1e-4f, 0, 1}, {0.1f, 0.9f, 5e-4f, 1, 1}, {0.5f, 0.0f, 1e-4f, 0, 0}};
  for (int i = 0; i < 3; i++) {
    float *p1 = test_rand_buf(n, 800 + i, -1, 1), *p2 = copy_buf(p1, n);
    float *b1 = fill_buf(n, 0), *b2 = fill_buf(n, 0);
    for (int step = 0; step < 3; step++) {
      float *g = test_rand_buf(n, 810 + 10 * i + step, -1, 1);
      CHECK_OK(ref->sgd_step(ref, n, p1, g, cfg[i].buffer ? b1 : NULL, cfg[i].lr, cfg[i].mom,
                             cfg[i].wd, cfg[i].nesterov));
      CHECK_OK(cpu->sgd_step(cpu, n, p2, g, cfg[i].buffer ? b2 : NULL, cfg[i].lr, cfg[i].mom,
                             cfg[i].wd, cfg[i].nesterov));
      free(g);
    }
    CHECK_CLOSE("sgd params", p2, p1, n, 0.0);
    CHECK_CLOSE("sgd buffer", b2, b1, n, 0.0);
    float *s1 = test_rand_buf(n, 900 + i, -1, 1), *s2 = copy_buf(s1, n);
    CHECK_OK(ref->ema(ref, n, s1, p1, 0.999f));
    CHECK_OK(cpu->ema(cpu, n, s2, p1, 0.999f));
    CHECK_CLOSE("ema", s2, s1, n, 0.0);
    free(p1), free(p2), free(b1), free(b2), free(s1), free(s2);
  }
  float one = 1;
  CHECK_ERR(cpu->sgd_step(cpu, 1, &one, &one, NULL, 0.1f, 0.9f, 0.0f, 0), "needs a buffer");
  CHECK_ERR(cpu->ema(cpu, 1, &one, &one, 1.5f), "outside");
  cpu->destroy(cpu);
  ref->destroy(ref);
}

/* ---- dense ---- */

static void test_linear_vs_ref(void) {
  dsc_backend *ref = ref_be(), *cpu = cpu_be(2);
  const int cases[][3] = {{8, 2048, 2048}, {64, 2048, 128}, {3, 5, 17}, {1, 7, 1}};
  for (int i = 0; i < 4; i++) {
    const int n = cases[i][0], in = cases[i][1], out = cases[i][2];
    const size_t nx = (size_t)n * in, ny = (size_t)n * out, nw = (size_t)out * in;
    float *x = test_rand_buf(nx, 1000 + i, -1, 1), *w = test_rand_buf(nw, 1010 + i, -0.1f, 0.1f);
    float *b = test_rand_buf(out, 1020 + i, -1, 1), *dy = test_rand_buf(ny, 1030 + i, -1, 1);
    float *ya = fill_buf(ny, 0), *yb = fill_buf(ny, 3);
    for (int with_b = 0; with_b < 2; with_b++) {
      CHECK_OK(ref->linear_forward(ref, n, in, out, ya, x, w, with_b ? b : NULL));
      CHECK_OK(cpu->linear_forward(cpu, n, in, out, yb, x, w, with_b ? b : NULL));
      CHECK_CLOSE("linear forward", yb, ya, ny, TOL_FWD);
    }
    float *dxa = fill_buf(nx, 0), *dxb = fill_buf(nx, 2);
    float *dwa = test_rand_buf(nw, 1040 + i, -1, 1), *dwb = copy_buf(dwa, nw);
    float *dba = test_rand_buf(out, 1050 + i, -1, 1), *dbb = copy_buf(dba, out);
    CHECK_OK(ref->linear_backward(ref, n, in, out, dxa, dwa, dba, dy, x, w));
    CHECK_OK(cpu->linear_backward(cpu, n, in, out, dxb, dwb, dbb, dy, x, w));
    CHECK_CLOSE("linear dx", dxb, dxa, nx, TOL_BWD);
    CHECK_CLOSE("linear dw", dwb, dwa, nw, TOL_BWD);
    CHECK_CLOSE("linear db", dbb, dba, out, TOL_BWD);
    CHECK_OK(cpu->linear_backward(cpu, n, in, out, NULL, dwb, NULL, dy, x, w));
    CHECK_OK(ref->linear_backward(ref, n, in, out, NULL, dwa, NULL, dy, x, w));
    CHECK_CLOSE("linear dw twice", dwb, dwa, nw, TOL_BWD);
    free(x), free(w), free(b), free(dy), free(ya), free(yb), free(dxa), free(dxb);
    free(dwa), free(dwb), free(dba), free(dbb);
  }
  cpu->destroy(cpu);
  ref->destroy(ref);
}

static void test_gemm_vs_ref(void) {
  dsc_backend *ref = ref_be(), *cpu = cpu_be(2);
  const int m = 33, n = 47, k = 29, pad = 3;
  for (int ta = 0; ta < 2; ta++)
    for (int tb = 0; tb < 2; tb++)
      for (int beta_zero = 0; beta_zero < 2; beta_zero++) {
        const int lda = (ta ? m : k) + pad, ldb = (tb ? k : n) + pad, ldc = n + pad;
        float *a = test_rand_buf((size_t)(ta ? k : m) * lda, 1100 + ta, -1, 1);
        float *b = test_rand_buf((size_t)(tb ? n : k) * ldb, 1110 + tb, -1, 1);
        float *c1 = test_rand_buf((size_t)m * ldc, 1120, -1, 1), *c2 = copy_buf(c1, (size_t)m * ldc);
        const float beta = beta_zero ? 0.0f : 0.5f;
        if (beta_zero) /* C must not be read when beta == 0 */
          for (size_t i = 0; i < (size_t)m * ldc; i++) c2[i] = (i % (size_t)ldc) < (size_t)n ? NAN : c1[i];
        CHECK_OK(ref->gemm(ref, ta, tb, m, n, k, 1.5f, a, lda, b, ldb, beta, c1, ldc));
        CHECK_OK(cpu->gemm(cpu, ta, tb, m, n, k, 1.5f, a, lda, b, ldb, beta, c2, ldc));
        CHECK_CLOSE("gemm", c2, c1, (size_t)m * ldc, TOL_FWD);
        free(a), free(b), free(c1), free(c2);
      }
  /* k == 0: C = beta*C (C not read when beta == 0) */
  float c0[4] = {1, 2, NAN, 4}, c1[4] = {1, 2, 3, 4};
  CHECK_OK(cpu->gemm(cpu, 0, 0, 2, 2, 0, 1.0f, NULL, 1, NULL, 2, 0.0f, c0, 2));
  CHECK_OK(cpu->gemm(cpu, 0, 0, 2, 2, 0, 1.0f, NULL, 1, NULL, 2, 0.5f, c1, 2));
  CHECK(c0[0] == 0 && c0[2] == 0 && c1[0] == 0.5f && c1[3] == 2.0f, "gemm with k == 0");
  /* a large product twice: identical bits (fixed thread count) */
  {
    const int m = 64, n = 2048, k = 512;
    float *a = test_rand_buf((size_t)m * k, 1130, -1, 1), *b = test_rand_buf((size_t)n * k, 1131, -1, 1);
    float *r1 = fill_buf((size_t)m * n, 0), *r2 = fill_buf((size_t)m * n, 0);
    float *r_ref = fill_buf((size_t)m * n, 0);
    CHECK_OK(cpu->gemm(cpu, 0, 1, m, n, k, 1.0f, a, k, b, k, 0.0f, r1, n));
    CHECK_OK(cpu->gemm(cpu, 0, 1, m, n, k, 1.0f, a, k, b, k, 0.0f, r2, n));
    CHECK_OK(ref->gemm(ref, 0, 1, m, n, k, 1.0f, a, k, b, k, 0.0f, r_ref, n));
    CHECK(same_bits(r1, r2, (size_t)m * n * sizeof *r1), "gemm twice differs");
    CHECK_CLOSE("gemm 64x2048x512", r1, r_ref, (size_t)m * n, TOL_FWD);
    free(a), free(b), free(r1), free(r2), free(r_ref);
  }
  float z = 0;
  CHECK_ERR(cpu->gemm(cpu, 0, 0, 2, 2, 2, 1, &z, 1, &z, 2, 0, &z, 2), "lda");
  cpu->destroy(cpu);
  ref->destroy(ref);
}

/* ---- memory ---- */

static void test_memory(void) {
  dsc_backend *cpu = cpu_be(0); /* all cores */
  void *p = NULL;
  CHECK_OK(cpu->alloc(cpu, 1000 * sizeof(float), &p));
  CHECK(p && ((uintptr_t)p % 64) == 0, "alloc must be 64-byte aligned");
  float host[1000];
  for (int i = 0; i < 1000; i++) host[i] = (float)i;
  int zero = 1;
  for (int i = 0; i < 1000; i++) zero &= ((float *)p)[i] == 0.0f;
  CHECK(zero, "alloc must zero-fill");
  CHECK_OK(cpu->upload(cpu, p, host, sizeof host));
  float back[1000];
  CHECK_OK(cpu->download(cpu, back, p, sizeof back));
  CHECK(same_bits(host, back, sizeof host), "upload/download round trip");
  CHECK_OK(cpu->zero(cpu, p, 1000));
  CHECK(((float *)p)[999] == 0.0f, "zero");
  cpu->free(cpu, p);
  float *big = NULL;
  CHECK_OK(cpu->alloc(cpu, 200000 * sizeof(float), (void **)&big));
  for (int i = 0; i < 200000; i++) big[i] = 1.0f;
  CHECK_OK(cpu->zero(cpu, big, 200000));
  int all = 1;
  for (int i = 0; i < 200000; i++) all &= big[i] == 0.0f;
  CHECK(all, "parallel zero");
  cpu->free(cpu, big);
  cpu->destroy(cpu);
}

static const dsc_test tests[] = {
    {"conv_vs_ref", test_conv_vs_ref},
    {"conv_accumulates", test_conv_accumulates},
    {"conv_threads", test_conv_threads},
    {"conv_errors", test_conv_errors},
    {"bn_vs_ref", test_bn_vs_ref},
    {"bn_errors", test_bn_errors},
    {"maxpool_vs_ref", test_maxpool_vs_ref},
    {"maxpool_bad_argmax", test_maxpool_bad_argmax},
    {"pool_errors", test_pool_errors},
    {"gap_vs_ref", test_gap_vs_ref},
    {"elementwise_vs_ref", test_elementwise_vs_ref},
    {"sgd_ema_vs_ref", test_sgd_ema_vs_ref},
    {"linear_vs_ref", test_linear_vs_ref},
    {"gemm_vs_ref", test_gemm_vs_ref},
    {"memory", test_memory},
};

TEST_MAIN(tests)
