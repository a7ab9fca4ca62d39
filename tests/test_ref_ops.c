/* test_ref_ops.c: tests of the reference backend (src/backend/ref/), the oracle every other
 * backend is compared against.
 *
 * Every backward is checked by central finite differences of L = sum(out * R) for a fixed
 * random R, on all coordinates of tiny shapes. The tolerance of each FD check has two parts:
 *  - atol from float32 rounding of the forward: the ref backend rounds each output once
 *    from double, so L is off by at most 2^-24 * S with S = sum|out*R|; the central
 *    difference divides the difference of two such errors by 2*eps, giving 2^-24*S/eps,
 *    doubled for safety (S moves a little at the perturbed points). The perturbation is the
 *    exactly representable (float)(x+eps) - (float)(x-eps), so the step adds no error.
 *  - rtol against the typical gradient magnitude, |an - fd| <= atol + rtol*(|fd| + rms(fd)):
 *    1e-5 for ops that are (piecewise) linear in the checked input, where the central
 *    difference is exact and only the single float rounding of the analytic gradient and
 *    the saved float statistics remain; larger for BN's dx, where the O(eps^2) truncation
 *    error of the central difference is the limit (the value is written at each check).
 * Where the checked function is linear in the input (conv, linear, gap) the step is large
 * (EPS_LINEAR), which is exact and shrinks atol; elsewhere it is 1e-2.
 * ReLU and max-pool kinks: inputs are built (or conditioned) so that no decision lies within
 * reach of a perturbation; the tests count such near-ties and require the count to be 0.
 * FD checks tie the backward to the forward; the forward itself is pinned to PyTorch by a few
 * constants (test forward_matches_pytorch, generating script beside them) and hand-computed
 * cases. All data comes from a small deterministic PRNG (splitmix64) seeded per test. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "test.h"

/* ---------------------------------------------------------------- helpers */

/* Step for checks of functions linear in the checked input (conv, linear, gap): any step
 * gives the exact derivative, a large one keeps atol = 2^-23*S/eps small. */
#define EPS_LINEAR 0.25f
/* rtol where the central difference is exact (linear or piecewise linear away from kinks):
 * covers the analytic gradient's one float rounding (6e-8) and, for BN, its use of the
 * float-saved statistics, with margin. */
#define RTOL_LINEAR 1e-5

typedef struct test_rng {
  uint64_t state;
} test_rng;

static uint64_t rng_next(test_rng *r) {
  uint64_t z = (r->state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* Uniform in [-1, 1), a multiple of 2^-23. */
static float rng_uniform(test_rng *r) {
  return (float)((double)(rng_next(r) >> 40) * (1.0 / 16777216.0) * 2.0 - 1.0);
}

static void fill_uniform(test_rng *r, float *x, size_t n, float scale, float offset) {
  for (size_t i = 0; i < n; i++) x[i] = rng_uniform(r) * scale + offset;
}

static float *fbuf(size_t n) {
  float *p = calloc(n ? n : 1, sizeof *p);
  if (!p) abort();
  return p;
}

static dsc_backend *ref_backend(void) {
  dsc_backend *be = NULL;
  dsc_status *st = dsc_backend_ref_new(&be);
  if (st) {
    printf("dsc_backend_ref_new: %s\n", st->msg);
    abort();
  }
  return be;
}

/* A forward pass as a function of the buffers in ctx: returns L = sum(out*R) in double and
 * stores S = sum|out*R| in *abs_sum. */
typedef double (*fd_loss_fn)(void *ctx, double *abs_sum);

/* Central finite-difference check of `analytic` = dL/d(param) on all n coordinates. */
static void fd_check(const char *what, float *param, size_t n, const float *analytic,
                     fd_loss_fn loss, void *ctx, float eps, double rtol) {
  double S = 0.0;
  loss(ctx, &S);
  const double atol = 2.0 * S / 16777216.0 / eps; /* 2 * 2^-24 * S / eps, see top */
  double *fd = malloc((n ? n : 1) * sizeof *fd);
  if (!fd) abort();
  double sq = 0.0;
  for (size_t i = 0; i < n; i++) {
    const float v = param[i];
    const float up = v + eps, down = v - eps;
    double s_unused;
    param[i] = up;
    double lp = loss(ctx, &s_unused);
    param[i] = down;
    double lm = loss(ctx, &s_unused);
    param[i] = v;
    fd[i] = (lp - lm) / ((double)up - (double)down);
    sq += fd[i] * fd[i];
  }
  loss(ctx, &S); /* restore the forward outputs at the unperturbed point */
  const double rms = n ? sqrt(sq / (double)n) : 0.0;
  double worst = 0.0;
  size_t worst_i = 0;
  for (size_t i = 0; i < n; i++) {
    double allowed = atol + rtol * (fabs(fd[i]) + rms);
    double ratio = fabs((double)analytic[i] - fd[i]) / allowed;
    if (ratio > worst) {
      worst = ratio;
      worst_i = i;
    }
  }
  CHECK(worst <= 1.0,
        "%s: coordinate %zu analytic %.8g vs finite difference %.8g exceeds atol %.3g + rtol %.3g "
        "(x%.3g of the allowance; eps %g, %zu coordinates)",
        what, worst_i, (double)analytic[worst_i], fd[worst_i], atol, rtol, worst, (double)eps,
        n);
  free(fd);
}

static double dot_out_r(const float *out, const float *r, size_t n, double *abs_sum) {
  double l = 0.0, s = 0.0;
  for (size_t i = 0; i < n; i++) {
    double t = (double)out[i] * (double)r[i];
    l += t;
    s += fabs(t);
  }
  *abs_sum = s;
  return l;
}

/* Fails the current test with the op's message if a call returned an error; returns 1 if
 * it did so callers can stop. */
static int failed_call(dsc_status *st, const char *what) {
  if (!st) return 0;
  printf("  %s: unexpected error: %s\n", what, st->msg);
  dsc_status_free(st);
  test_current_failed = 1;
  return 1;
}

/* ---------------------------------------------------------------- forward vs PyTorch */

/* Forward semantics pinned to PyTorch 1.13 (float64 on the same float32 inputs): conv with
 * stride 2, pad 1, dilation 2 and a 2x3 kernel; BN training with groups 2 + residual + ReLU
 * and the averaged running update; max-pool 3x3/2 pad 1 with many ties. The constants were
 * printed by this script (/usr/bin/python3), which replays the test's splitmix64:
 *
 * import torch, torch.nn.functional as F
 * M = (1 << 64) - 1
 * class Rng:
 *     def __init__(s, seed): s.state = seed
 *     def next(s):
 *         s.state = (s.state + 0x9E3779B97F4A7C15) & M
 *         z = s.state
 *         z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
 *         z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
 *         return z ^ (z >> 31)
 *     def uniform(s, n):
 *         return torch.tensor([(s.next() >> 40) / 16777216.0 * 2 - 1 for _ in range(n)],
 *                             dtype=torch.float64)
 * def nhwc(t, shape): return t.reshape(shape).permute(0, 3, 1, 2)
 * def out(t): return t.permute(0, 2, 3, 1).reshape(-1)
 * def c_float(v): s = "%.9g" % v; return s + ("" if "." in s or "e" in s else ".0") + "f"
 * def emit(name, t, ints=False):
 *     print("static const %s %s[%d] = {%s};" % ("int32_t" if ints else "float", name,
 *           t.numel(), ", ".join(str(v) if ints else c_float(v) for v in t.tolist())))
 * r = Rng(2024)  # conv: x (1,5,6,2), w (2,2,2,3), b (2); stride 2, pad 1, dilation 2
 * x = r.uniform(60); w = r.uniform(24); b = r.uniform(2)
 * emit("golden_conv_y", out(F.conv2d(nhwc(x, (1, 5, 6, 2)), w.reshape(2, 2, 2, 3), b,
 *                                    stride=2, padding=1, dilation=2)))
 * r = Rng(2025)  # bn: x, res (4,1,2,2); groups 2, residual, relu; running (0,1) + update
 * x = nhwc(r.uniform(16), (4, 1, 2, 2)); res = nhwc(r.uniform(16), (4, 1, 2, 2))
 * g = torch.tensor([1.25, -0.75], dtype=torch.float64)
 * be = torch.tensor([0.5, 0.25], dtype=torch.float64)
 * ys, rms, rvs = [], [], []
 * for k in range(2):
 *     rm, rv = torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
 *     ys.append(F.batch_norm(x[2 * k:2 * k + 2], rm, rv, g, be, training=True,
 *                            momentum=0.1, eps=1e-5))
 *     rms.append(rm); rvs.append(rv)
 * emit("golden_bn_y", out(torch.relu(torch.cat(ys) + res)))
 * emit("golden_bn_running", torch.cat([(rms[0] + rms[1]) / 2, (rvs[0] + rvs[1]) / 2]))
 * r = Rng(2026)  # maxpool 3x3 stride 2 pad 1 on x (1,5,5,1) rounded to integers (ties)
 * x = torch.round(r.uniform(25) * 2).float()
 * y, i = F.max_pool2d(nhwc(x, (1, 5, 5, 1)), 3, 2, 1, return_indices=True)
 * emit("golden_pool_y", out(y)); emit("golden_pool_argmax", out(i), True)
 */
static const float golden_conv_y[12] = {-0.0243895612f, -0.591346017f, 0.374127837f,
                                        0.840162981f,   0.399045068f,  0.422562498f,
                                        0.458348603f,   -0.389362667f, 0.674308054f,
                                        -0.0843330086f, 0.335003907f,  -0.74921883f};
static const float golden_bn_y[16] = {0.0f,         0.0f,        0.0f,         0.669464934f,
                                      0.613715921f, 0.743573331f, 1.02802313f, 0.104758476f,
                                      0.295485212f, 0.0f,         1.98481665f, 0.0f,
                                      0.688204862f, 0.0f,         0.0f,        2.27652697f};
static const float golden_bn_running[4] = {0.0115761101f, 0.055179514f, 0.948620417f,
                                           0.926962184f};
static const float golden_pool_y[9] = {2.0f, 2.0f, 1.0f, 2.0f, 2.0f, 1.0f, 1.0f, 1.0f, 0.0f};
static const int32_t golden_pool_argmax[9] = {6, 6, 4, 6, 6, 14, 20, 21, 18};

/* Both sides are float32 roundings of (nearly) the same double: allow 2 ulp of values <= 1. */
static void check_golden(const char *what, const float *got, const float *want, size_t n) {
  for (size_t i = 0; i < n; i++)
    CHECK(fabsf(got[i] - want[i]) <= 2.4e-7f * fmaxf(1.0f, fabsf(want[i])),
          "%s[%zu] = %.9g, PyTorch %.9g", what, i, got[i], want[i]);
}

static void test_forward_matches_pytorch(void) {
  dsc_backend *be = ref_backend();
  { /* conv */
    test_rng rng = {2024};
    float x[60], w[24], b[2], y[12];
    fill_uniform(&rng, x, 60, 1.0f, 0.0f);
    fill_uniform(&rng, w, 24, 1.0f, 0.0f);
    fill_uniform(&rng, b, 2, 1.0f, 0.0f);
    dsc_conv_shape s = {1, 5, 6, 2, 2, 2, 3, 2, 1, 2};
    CHECK(dsc_conv_oh(&s) == 3 && dsc_conv_ow(&s) == 2, "conv output %dx%d, PyTorch 3x2",
          dsc_conv_oh(&s), dsc_conv_ow(&s));
    CHECK_OK(be->conv2d_forward(be, &s, y, x, w, b));
    check_golden("conv y", y, golden_conv_y, 12);
  }
  { /* batch norm, groups 2, residual, relu, running update */
    test_rng rng = {2025};
    float x[16], res[16], y[16], mean[4], var[4];
    fill_uniform(&rng, x, 16, 1.0f, 0.0f);
    fill_uniform(&rng, res, 16, 1.0f, 0.0f);
    const float gamma[2] = {1.25f, -0.75f}, beta[2] = {0.5f, 0.25f};
    float running[4] = {0.0f, 0.0f, 1.0f, 1.0f}; /* mean[2], var[2] */
    dsc_bn_shape s = {4, 1, 2, 2, 2, 1e-5f, 1};
    CHECK_OK(be->bn_forward_train(be, &s, y, mean, var, x, gamma, beta, res));
    CHECK_OK(be->bn_update_running(be, &s, running, running + 2, mean, var, 0.1f));
    check_golden("bn y", y, golden_bn_y, 16);
    check_golden("bn running", running, golden_bn_running, 4);
  }
  { /* max-pool with ties */
    test_rng rng = {2026};
    float x[25], y[9];
    int32_t am[9];
    for (int i = 0; i < 25; i++) x[i] = nearbyintf(rng_uniform(&rng) * 2.0f);
    dsc_pool_shape s = {1, 5, 5, 1, 3, 2, 1};
    CHECK_OK(be->maxpool_forward(be, &s, y, am, x));
    check_golden("pool y", y, golden_pool_y, 9);
    for (int i = 0; i < 9; i++)
      CHECK(am[i] == golden_pool_argmax[i], "pool argmax[%d] = %d, PyTorch %d", i, am[i],
            golden_pool_argmax[i]);
  }
  be->destroy(be);
}

/* ---------------------------------------------------------------- conv */

typedef struct conv_ctx {
  dsc_backend *be;
  dsc_conv_shape s;
  float *x, *w, *b, *y, *r;
  size_t ny;
} conv_ctx;

static double conv_loss(void *p, double *abs_sum) {
  conv_ctx *c = p;
  if (failed_call(c->be->conv2d_forward(c->be, &c->s, c->y, c->x, c->w, c->b), "conv2d_forward"))
    return 0.0;
  return dot_out_r(c->y, c->r, c->ny, abs_sum);
}

static void conv_fd_case(dsc_backend *be, dsc_conv_shape s, int with_bias, uint64_t seed) {
  char what[160];
  snprintf(what, sizeof what,
           "conv n%d %dx%dx%d->%d k%dx%d stride %d pad %d dilation %d %s", s.n, s.h, s.w,
           s.c_in, s.c_out, s.kh, s.kw, s.stride, s.pad, s.dilation,
           with_bias ? "bias" : "no bias");
  test_rng rng = {seed};
  const int oh = dsc_conv_oh(&s), ow = dsc_conv_ow(&s);
  const size_t nx = (size_t)s.n * s.h * s.w * s.c_in, nw = (size_t)s.c_out * s.c_in * s.kh * s.kw;
  const size_t ny = (size_t)s.n * oh * ow * s.c_out;
  conv_ctx c = {be, s, fbuf(nx), fbuf(nw), with_bias ? fbuf(s.c_out) : NULL, fbuf(ny), fbuf(ny),
                ny};
  float *dx = fbuf(nx), *dw = fbuf(nw), *db = fbuf(s.c_out);
  fill_uniform(&rng, c.x, nx, 1.0f, 0.0f);
  fill_uniform(&rng, c.w, nw, 0.5f, 0.0f);
  if (c.b) fill_uniform(&rng, c.b, s.c_out, 1.0f, 0.0f);
  fill_uniform(&rng, c.r, ny, 1.0f, 0.0f);
  CHECK_OK(be->conv2d_backward(be, &s, dx, dw, c.b ? db : NULL, c.r, c.x, c.w));
  char sub[200];
  /* Conv is linear in x, w and b: the central difference is exact for any step, so a large
   * one (EPS_LINEAR) keeps the rounding term atol small. */
  snprintf(sub, sizeof sub, "%s: dx", what);
  fd_check(sub, c.x, nx, dx, conv_loss, &c, EPS_LINEAR, RTOL_LINEAR);
  snprintf(sub, sizeof sub, "%s: dw", what);
  fd_check(sub, c.w, nw, dw, conv_loss, &c, EPS_LINEAR, RTOL_LINEAR);
  if (c.b) {
    snprintf(sub, sizeof sub, "%s: db", what);
    fd_check(sub, c.b, s.c_out, db, conv_loss, &c, EPS_LINEAR, RTOL_LINEAR);
  }
  free(c.x), free(c.w), free(c.b), free(c.y), free(c.r), free(dx), free(dw), free(db);
}

static void test_conv_backward_fd(void) {
  dsc_backend *be = ref_backend();
  /*                    n  h  w ci co kh kw st pad dil */
  conv_fd_case(be, (dsc_conv_shape){2, 5, 5, 3, 4, 3, 3, 1, 1, 1}, 1, 1);
  conv_fd_case(be, (dsc_conv_shape){2, 7, 6, 3, 4, 3, 3, 2, 1, 1}, 0, 2);
  conv_fd_case(be, (dsc_conv_shape){1, 6, 7, 2, 3, 3, 3, 1, 2, 2}, 1, 3);
  conv_fd_case(be, (dsc_conv_shape){2, 4, 5, 2, 3, 1, 3, 1, 1, 1}, 1, 4);
  conv_fd_case(be, (dsc_conv_shape){1, 7, 5, 2, 2, 3, 1, 2, 0, 2}, 0, 5);
  conv_fd_case(be, (dsc_conv_shape){2, 5, 6, 4, 3, 1, 1, 2, 0, 1}, 0, 6);
  conv_fd_case(be, (dsc_conv_shape){1, 9, 8, 3, 2, 7, 7, 2, 3, 1}, 1, 7);
  conv_fd_case(be, (dsc_conv_shape){1, 6, 6, 2, 2, 2, 3, 2, 1, 2}, 1, 8);
  be->destroy(be);
}

/* ---------------------------------------------------------------- batch norm */

typedef struct bn_ctx {
  dsc_backend *be;
  dsc_bn_shape s;
  float *x, *gamma, *beta, *res, *y, *mean, *var, *r;
  size_t nx;
} bn_ctx;

static double bn_loss(void *p, double *abs_sum) {
  bn_ctx *c = p;
  if (failed_call(c->be->bn_forward_train(c->be, &c->s, c->y, c->mean, c->var, c->x, c->gamma,
                                          c->beta, c->res),
                  "bn_forward_train"))
    return 0.0;
  return dot_out_r(c->y, c->r, c->nx, abs_sum);
}

/* Pre-activation values z = gamma*xhat + beta (+ res) of training BN, in double. Returns
 * the largest |xhat| and the largest |gamma|/std over all groups and channels. */
static void bn_preact(const dsc_bn_shape *s, const float *x, const float *gamma,
                      const float *beta, const float *res, double *z, double *max_xhat,
                      double *max_gain) {
  const int C = s->c;
  const size_t m = (size_t)(s->n / s->groups) * s->h * s->w;
  *max_xhat = 0.0;
  *max_gain = 0.0;
  for (int g = 0; g < s->groups; g++)
    for (int c = 0; c < C; c++) {
      double mean = 0.0, var = 0.0;
      for (size_t p = g * m; p < (g + 1) * m; p++) mean += x[p * C + c];
      mean /= (double)m;
      for (size_t p = g * m; p < (g + 1) * m; p++)
        var += (x[p * C + c] - mean) * (x[p * C + c] - mean);
      var /= (double)m;
      double sd = sqrt(var + (double)s->eps);
      if (fabs(gamma[c]) / sd > *max_gain) *max_gain = fabs(gamma[c]) / sd;
      for (size_t p = g * m; p < (g + 1) * m; p++) {
        size_t i = p * C + c;
        double xhat = (x[i] - mean) / sd;
        if (fabs(xhat) > *max_xhat) *max_xhat = fabs(xhat);
        z[i] = gamma[c] * xhat + beta[c] + (res ? res[i] : 0.0);
      }
    }
}

/* Moves inputs away from the ReLU kink: no pre-activation may lie within `margin` of 0,
 * where margin is twice the largest change one eps step of any checked input (x, gamma,
 * beta, residual) can make to any pre-activation. Pushing x changes the statistics a
 * little, so it iterates; returns the number of near-ties left (the caller requires 0). */
static int bn_condition_for_relu(const dsc_bn_shape *s, float *x, const float *gamma,
                                 const float *beta, const float *res, float eps) {
  const size_t nx = (size_t)s->n * s->h * s->w * s->c;
  double *z = malloc(nx * sizeof *z);
  if (!z) abort();
  int near = 0;
  for (int iter = 0; iter < 100; iter++) {
    double max_xhat, max_gain;
    bn_preact(s, x, gamma, beta, res, z, &max_xhat, &max_gain);
    double step = fmax(1.0, fmax(max_xhat, max_gain));
    double margin = 2.0 * eps * step;
    near = 0;
    for (size_t i = 0; i < nx; i++) {
      if (fabs(z[i]) >= margin) continue;
      near++;
      int c = (int)(i % (size_t)s->c);
      double dir = (z[i] >= 0 ? 1.0 : -1.0) * (gamma[c] >= 0 ? 1.0 : -1.0);
      x[i] += (float)(dir * 3.0 * margin / fmax(fabs(gamma[c]), 1e-3));
    }
    if (!near) break;
  }
  free(z);
  return near;
}

static void bn_fd_case(dsc_backend *be, int groups, int with_res, int relu, uint64_t seed) {
  char what[120];
  snprintf(what, sizeof what, "bn train groups %d%s%s", groups, with_res ? " +residual" : "",
           relu ? " relu" : "");
  dsc_bn_shape s = {4, 3, 2, 3, groups, 1e-5f, relu};
  const size_t nx = (size_t)s.n * s.h * s.w * s.c;
  test_rng rng = {seed};
  bn_ctx c = {be, s, fbuf(nx), fbuf(s.c), fbuf(s.c), with_res ? fbuf(nx) : NULL, fbuf(nx),
              fbuf((size_t)groups * s.c), fbuf((size_t)groups * s.c), fbuf(nx), nx};
  for (size_t i = 0; i < nx; i++) /* per-channel offset and scale, as real activations */
    c.x[i] = rng_uniform(&rng) * (1.0f + 0.5f * (float)(i % 3)) + 0.3f * (float)(i % 3);
  const float gamma[3] = {1.3f, -0.7f, 0.9f}, beta[3] = {0.2f, -0.1f, 0.4f};
  memcpy(c.gamma, gamma, sizeof gamma);
  memcpy(c.beta, beta, sizeof beta);
  if (c.res) fill_uniform(&rng, c.res, nx, 1.0f, 0.0f);
  fill_uniform(&rng, c.r, nx, 1.0f, 0.0f);
  const float eps_x = 1e-2f;
  if (relu) {
    int near = bn_condition_for_relu(&s, c.x, c.gamma, c.beta, c.res, eps_x);
    CHECK(near == 0, "%s: %d pre-activations stay within reach of the ReLU kink", what, near);
  }
  double unused;
  bn_loss(&c, &unused);
  float *dx = fbuf(nx), *dg = fbuf(s.c), *db = fbuf(s.c), *dres = fbuf(nx);
  CHECK_OK(be->bn_backward(be, &s, dx, dg, db, c.res ? dres : NULL, c.r, c.x, c.y, c.gamma,
                           c.mean, c.var));
  char sub[200];
  /* dx: BN is nonlinear in x (through mean and var), so the step must be small (1e-2 on
   * unit-scale data) and the central difference carries an O(eps^2) truncation error;
   * rtol 1e-4 of the gradient scale bounds it (measured total error <= 4e-5 of the scale,
   * mostly the rounding term). The step also sets the ReLU margin above. */
  snprintf(sub, sizeof sub, "%s: dx", what);
  fd_check(sub, c.x, nx, dx, bn_loss, &c, eps_x, 1e-4);
  /* gamma, beta and residual enter linearly (ReLU is piecewise linear, kinks out of reach);
   * the step stays eps_x because the ReLU margin was computed for it. */
  snprintf(sub, sizeof sub, "%s: dgamma", what);
  fd_check(sub, c.gamma, s.c, dg, bn_loss, &c, eps_x, RTOL_LINEAR);
  snprintf(sub, sizeof sub, "%s: dbeta", what);
  fd_check(sub, c.beta, s.c, db, bn_loss, &c, eps_x, RTOL_LINEAR);
  if (c.res) {
    snprintf(sub, sizeof sub, "%s: dresidual", what);
    fd_check(sub, c.res, nx, dres, bn_loss, &c, eps_x, RTOL_LINEAR);
  }
  free(c.x), free(c.gamma), free(c.beta), free(c.res), free(c.y), free(c.mean), free(c.var);
  free(c.r), free(dx), free(dg), free(db), free(dres);
}

static void test_bn_backward_fd(void) {
  dsc_backend *be = ref_backend();
  uint64_t seed = 100;
  for (int groups = 1; groups <= 2; groups++)
    for (int with_res = 0; with_res <= 1; with_res++)
      for (int relu = 0; relu <= 1; relu++) bn_fd_case(be, groups, with_res, relu, seed++);
  be->destroy(be);
}

/* Grouped BN must be exactly G independent groups=1 calls on consecutive image blocks (the
 * same double arithmetic in the same order, so bitwise equal). */
static void test_bn_grouped_equals_separate(void) {
  dsc_backend *be = ref_backend();
  const int G = 2, C = 3;
  dsc_bn_shape s = {4, 3, 2, C, G, 1e-5f, 1};
  dsc_bn_shape s1 = s;
  s1.n = s.n / G;
  s1.groups = 1;
  const size_t nx = (size_t)s.n * s.h * s.w * C, nx1 = nx / G;
  test_rng rng = {7};
  float *x = fbuf(nx), *res = fbuf(nx), *dy = fbuf(nx);
  fill_uniform(&rng, x, nx, 2.0f, 0.5f);
  fill_uniform(&rng, res, nx, 1.0f, 0.0f);
  fill_uniform(&rng, dy, nx, 1.0f, 0.0f);
  for (size_t i = nx1; i < nx; i++) x[i] = x[i] * 3.0f - 1.0f; /* group 1: other statistics */
  const float gamma[3] = {1.1f, 0.6f, -1.4f}, beta[3] = {0.1f, 0.2f, -0.3f};
  float *y = fbuf(nx), *mean = fbuf(G * C), *var = fbuf(G * C), *dx = fbuf(nx), *dres = fbuf(nx);
  float dg[3] = {0}, db[3] = {0};
  CHECK_OK(be->bn_forward_train(be, &s, y, mean, var, x, gamma, beta, res));
  CHECK_OK(be->bn_backward(be, &s, dx, dg, db, dres, dy, x, y, gamma, mean, var));
  float *y1 = fbuf(nx), *mean1 = fbuf(G * C), *var1 = fbuf(G * C), *dx1 = fbuf(nx),
        *dres1 = fbuf(nx);
  float dg1[3] = {0}, db1[3] = {0};
  for (int g = 0; g < G; g++) {
    size_t o = (size_t)g * nx1;
    CHECK_OK(be->bn_forward_train(be, &s1, y1 + o, mean1 + g * C, var1 + g * C, x + o, gamma,
                                  beta, res + o));
    CHECK_OK(be->bn_backward(be, &s1, dx1 + o, dg1, db1, dres1 + o, dy + o, x + o, y1 + o,
                             gamma, mean1 + g * C, var1 + g * C));
  }
  CHECK(!memcmp(y, y1, nx * sizeof *y), "grouped y differs from per-group calls");
  CHECK(!memcmp(mean, mean1, G * C * sizeof *mean), "grouped mean differs");
  CHECK(!memcmp(var, var1, G * C * sizeof *var), "grouped var differs");
  CHECK(!memcmp(dx, dx1, nx * sizeof *dx), "grouped dx differs");
  CHECK(!memcmp(dres, dres1, nx * sizeof *dres), "grouped dresidual differs");
  CHECK(!memcmp(dg, dg1, sizeof dg), "grouped dgamma differs from the per-group sum");
  CHECK(!memcmp(db, db1, sizeof db), "grouped dbeta differs from the per-group sum");
  /* The two groups really have different statistics (else the test proves nothing). */
  CHECK(fabsf(mean[0] - mean[C]) > 0.1f, "group means %g and %g are too close", mean[0],
        mean[C]);
  free(x), free(res), free(dy), free(y), free(mean), free(var), free(dx), free(dres);
  free(y1), free(mean1), free(var1), free(dx1), free(dres1);
  be->destroy(be);
}

/* Saved statistics and the running update against a hand computation in double:
 * per group mean and biased var; running = 0.9*running + 0.1*avg_g(mean_g), and
 * 0.9*running + 0.1*avg_g(var_g * m/(m-1)) with m = (n/G)*h*w (METHOD.md §5). */
static void test_bn_running_update(void) {
  dsc_backend *be = ref_backend();
  const int G = 2, C = 2;
  dsc_bn_shape s = {4, 2, 3, C, G, 1e-5f, 0};
  const size_t nx = (size_t)s.n * s.h * s.w * C, m = nx / C / G;
  test_rng rng = {11};
  float *x = fbuf(nx), *y = fbuf(nx), mean[4], var[4];
  fill_uniform(&rng, x, nx, 2.0f, 1.0f);
  const float gamma[2] = {1, 1}, beta[2] = {0, 0};
  float rmean[2] = {0.5f, -0.25f}, rvar[2] = {2.0f, 0.75f};
  double want_mean[2], want_var[2];
  for (int c = 0; c < C; c++) {
    double avg_mean = 0, avg_uvar = 0;
    for (int g = 0; g < G; g++) {
      double sum = 0, sq = 0;
      for (size_t p = g * m; p < (g + 1) * m; p++) sum += x[p * C + c];
      double mu = sum / (double)m;
      for (size_t p = g * m; p < (g + 1) * m; p++) sq += (x[p * C + c] - mu) * (x[p * C + c] - mu);
      avg_mean += mu / G;
      avg_uvar += sq / (double)(m - 1) / G;
    }
    want_mean[c] = 0.9 * rmean[c] + 0.1 * avg_mean;
    want_var[c] = 0.9 * rvar[c] + 0.1 * avg_uvar;
  }
  CHECK_OK(be->bn_forward_train(be, &s, y, mean, var, x, gamma, beta, NULL));
  CHECK_OK(be->bn_update_running(be, &s, rmean, rvar, mean, var, 0.1f));
  /* Float storage of saved stats and the result: a few ulp. */
  for (int c = 0; c < C; c++) {
    CHECK(fabs(rmean[c] - want_mean[c]) <= 1e-6 * fmax(1.0, fabs(want_mean[c])),
          "running_mean[%d] %.8g, want %.8g", c, rmean[c], want_mean[c]);
    CHECK(fabs(rvar[c] - want_var[c]) <= 1e-6 * fmax(1.0, fabs(want_var[c])),
          "running_var[%d] %.8g, want %.8g", c, rvar[c], want_var[c]);
  }
  free(x), free(y);
  be->destroy(be);
}

/* Eval mode: y = act(gamma*(x - rmean)/sqrt(rvar + eps) + beta [+ res]), by hand in double. */
static void test_bn_eval(void) {
  dsc_backend *be = ref_backend();
  for (int variant = 0; variant < 2; variant++) {
    const int C = 3;
    dsc_bn_shape s = {2, 2, 2, C, 1, 1e-5f, variant};
    const size_t nx = (size_t)s.n * s.h * s.w * C;
    test_rng rng = {21 + (uint64_t)variant};
    float *x = fbuf(nx), *res = fbuf(nx), *y = fbuf(nx);
    double *want = malloc(nx * sizeof *want);
    fill_uniform(&rng, x, nx, 2.0f, 0.0f);
    fill_uniform(&rng, res, nx, 1.0f, 0.0f);
    const float gamma[3] = {1.5f, -0.5f, 0.8f}, beta[3] = {0.1f, 0.0f, -0.2f};
    const float rmean[3] = {0.2f, -0.3f, 0.05f}, rvar[3] = {0.5f, 2.0f, 1e-3f};
    const float *r = variant ? res : NULL;
    for (size_t i = 0; i < nx; i++) {
      int c = (int)(i % C);
      double z = gamma[c] * (x[i] - (double)rmean[c]) / sqrt((double)rvar[c] + 1e-5f) + beta[c];
      if (r) z += r[i];
      want[i] = (variant && z < 0) ? 0.0 : z;
    }
    CHECK_OK(be->bn_forward_eval(be, &s, y, x, gamma, beta, rmean, rvar, r));
    for (size_t i = 0; i < nx; i++) /* one float rounding of a double result */
      CHECK(fabs(y[i] - want[i]) <= 2e-7 * fmax(1.0, fabs(want[i])),
            "eval variant %d y[%zu] %.8g want %.8g", variant, i, y[i], want[i]);
    free(x), free(res), free(y), free(want);
  }
  be->destroy(be);
}

/* ---------------------------------------------------------------- relu, pooling */

typedef struct relu_ctx {
  dsc_backend *be;
  float *x, *y, *r;
  size_t n;
} relu_ctx;

static double relu_loss(void *p, double *abs_sum) {
  relu_ctx *c = p;
  if (failed_call(c->be->relu_forward(c->be, c->y, c->x, c->n), "relu_forward")) return 0.0;
  return dot_out_r(c->y, c->r, c->n, abs_sum);
}

static void test_relu_backward_fd(void) {
  dsc_backend *be = ref_backend();
  const size_t n = 64;
  const float eps = 1e-2f;
  test_rng rng = {31};
  relu_ctx c = {be, fbuf(n), fbuf(n), fbuf(n), n};
  for (size_t i = 0; i < n; i++) { /* |x| >= 0.05 > eps: no input can cross the kink */
    float u = rng_uniform(&rng);
    c.x[i] = u >= 0 ? 0.05f + u : -0.05f + u;
  }
  fill_uniform(&rng, c.r, n, 1.0f, 0.0f);
  int near = 0;
  for (size_t i = 0; i < n; i++) near += fabsf(c.x[i]) < 2 * eps;
  CHECK(near == 0, "%d inputs within 2*eps of the ReLU kink", near);
  double unused;
  relu_loss(&c, &unused);
  float *dx = fbuf(n);
  CHECK_OK(be->relu_backward(be, dx, c.r, c.y, n));
  fd_check("relu: dx", c.x, n, dx, relu_loss, &c, eps, RTOL_LINEAR);
  /* dx may alias dy. */
  float *inplace = fbuf(n);
  memcpy(inplace, c.r, n * sizeof *inplace);
  CHECK_OK(be->relu_backward(be, inplace, inplace, c.y, n));
  CHECK(!memcmp(inplace, dx, n * sizeof *dx), "relu_backward in place differs");
  free(c.x), free(c.y), free(c.r), free(dx), free(inplace);
  be->destroy(be);
}

typedef struct pool_ctx {
  dsc_backend *be;
  dsc_pool_shape s;
  float *x, *y, *r;
  int32_t *argmax;
  size_t ny;
} pool_ctx;

static double pool_loss(void *p, double *abs_sum) {
  pool_ctx *c = p;
  if (failed_call(c->be->maxpool_forward(c->be, &c->s, c->y, c->argmax, c->x), "maxpool_forward"))
    return 0.0;
  return dot_out_r(c->y, c->r, c->ny, abs_sum);
}

static void maxpool_fd_case(dsc_backend *be, dsc_pool_shape s, uint64_t seed) {
  const int oh = dsc_conv_out_size(s.h, s.k, s.stride, s.pad, 1);
  const int ow = dsc_conv_out_size(s.w, s.k, s.stride, s.pad, 1);
  const size_t nx = (size_t)s.n * s.h * s.w * s.c, ny = (size_t)s.n * oh * ow * s.c;
  const float eps = 1e-2f, spacing = 0.05f;
  test_rng rng = {seed};
  pool_ctx c = {be, s, fbuf(nx), fbuf(ny), fbuf(ny), calloc(ny, sizeof(int32_t)), ny};
  /* Distinct values spaced 0.05 > 2*eps apart (a shuffled ramp): no perturbation can change
   * any window's winner. */
  for (size_t i = 0; i < nx; i++) c.x[i] = ((float)i - (float)nx / 2) * spacing;
  for (size_t i = nx - 1; i > 0; i--) {
    size_t j = (size_t)(rng_next(&rng) % (i + 1));
    float t = c.x[i];
    c.x[i] = c.x[j];
    c.x[j] = t;
  }
  fill_uniform(&rng, c.r, ny, 1.0f, 0.0f);
  double unused;
  pool_loss(&c, &unused);
  float *dx = fbuf(nx);
  CHECK_OK(be->maxpool_backward(be, &s, dx, c.r, c.argmax));
  char what[100];
  snprintf(what, sizeof what, "maxpool k%d stride %d pad %d: dx", s.k, s.stride, s.pad);
  fd_check(what, c.x, nx, dx, pool_loss, &c, eps, RTOL_LINEAR);
  free(c.x), free(c.y), free(c.r), free(c.argmax), free(dx);
}

static void test_maxpool_backward_fd(void) {
  dsc_backend *be = ref_backend();
  maxpool_fd_case(be, (dsc_pool_shape){2, 7, 6, 3, 3, 2, 1}, 41);
  maxpool_fd_case(be, (dsc_pool_shape){1, 8, 8, 2, 3, 2, 1}, 42);
  maxpool_fd_case(be, (dsc_pool_shape){2, 5, 4, 2, 2, 2, 0}, 43);
  be->destroy(be);
}

/* Ties: the first maximum in scan order (rows, then columns) wins; argmax = ih*w + iw;
 * padding never wins. Also a hand-computed 3x3/2 pad 1 example on a 4x4 image. */
static void test_maxpool_ties_and_values(void) {
  dsc_backend *be = ref_backend();
  dsc_pool_shape s = {1, 4, 4, 1, 3, 2, 1};
  /* All equal: each window's first in-image element wins. */
  float x[16], y[4], dx[16];
  int32_t am[4];
  for (int i = 0; i < 16; i++) x[i] = -2.0f; /* negative: padding (-inf) must not win */
  CHECK_OK(be->maxpool_forward(be, &s, y, am, x));
  /* Windows start at rows/cols -1 and 1: first in-image positions (0,0) (0,1) (1,0) (1,1). */
  const int32_t want_all_equal[4] = {0, 1, 4, 5};
  for (int i = 0; i < 4; i++) {
    CHECK(y[i] == -2.0f, "all-equal y[%d] = %g", i, y[i]);
    CHECK(am[i] == want_all_equal[i], "all-equal argmax[%d] = %d, want %d", i, am[i],
          want_all_equal[i]);
  }
  /* All -inf: no value beats the initial -inf, argmax stays at the window's first in-image
   * position (as PyTorch). */
  for (int i = 0; i < 16; i++) x[i] = -INFINITY;
  CHECK_OK(be->maxpool_forward(be, &s, y, am, x));
  for (int i = 0; i < 4; i++)
    CHECK(y[i] == -INFINITY && am[i] == want_all_equal[i],
          "all -inf: y[%d] = %g argmax %d, want %d", i, y[i], am[i], want_all_equal[i]);
  /* Two equal maxima in the last window (rows 1..3, cols 1..3): (1,3) comes before (3,1)
   * in scan order; in the first window (rows 0..1, cols 0..1), (0,1) before (1,0). */
  const float x2[16] = {0, 5, 1, 2,
                        5, 0, 1, 9,
                        3, 4, 2, 1,
                        1, 9, 0, 8};
  CHECK_OK(be->maxpool_forward(be, &s, y, am, x2));
  const float want_y[4] = {5, 9, 9, 9};
  const int32_t want_am[4] = {1, 7, 13, 7};
  for (int i = 0; i < 4; i++) {
    CHECK(y[i] == want_y[i], "ties y[%d] = %g, want %g", i, y[i], want_y[i]);
    CHECK(am[i] == want_am[i], "ties argmax[%d] = %d, want %d", i, am[i], want_am[i]);
  }
  /* Backward: input 7 is chosen by two windows, its gradients add. */
  const float dy[4] = {1, 2, 3, 4};
  CHECK_OK(be->maxpool_backward(be, &s, dx, dy, am));
  for (int i = 0; i < 16; i++) {
    float want = i == 1 ? 1.0f : i == 7 ? 6.0f : i == 13 ? 3.0f : 0.0f;
    CHECK(dx[i] == want, "dx[%d] = %g, want %g", i, dx[i], want);
  }
  /* NaN propagates (PyTorch: a NaN always replaces the running maximum). */
  float x3[16];
  memcpy(x3, x2, sizeof x3);
  x3[5] = NAN;
  CHECK_OK(be->maxpool_forward(be, &s, y, am, x3));
  CHECK(isnan(y[0]) && am[0] == 5, "NaN window: y %g argmax %d", y[0], am[0]);
  be->destroy(be);
}

typedef struct gap_ctx {
  dsc_backend *be;
  int n, hw, c;
  float *x, *y, *r;
} gap_ctx;

static double gap_loss(void *p, double *abs_sum) {
  gap_ctx *c = p;
  if (failed_call(c->be->gap_forward(c->be, c->n, c->hw, c->c, c->y, c->x), "gap_forward"))
    return 0.0;
  return dot_out_r(c->y, c->r, (size_t)c->n * c->c, abs_sum);
}

static void test_gap_backward_fd(void) {
  dsc_backend *be = ref_backend();
  const int n = 2, hw = 6, ch = 3;
  test_rng rng = {51};
  gap_ctx c = {be, n, hw, ch, fbuf(n * hw * ch), fbuf(n * ch), fbuf(n * ch)};
  fill_uniform(&rng, c.x, n * hw * ch, 1.0f, 0.0f);
  fill_uniform(&rng, c.r, n * ch, 1.0f, 0.0f);
  float *dx = fbuf(n * hw * ch);
  CHECK_OK(be->gap_backward(be, n, hw, ch, dx, c.r));
  fd_check("gap: dx", c.x, (size_t)n * hw * ch, dx, gap_loss, &c, EPS_LINEAR, RTOL_LINEAR);
  /* Forward by hand: image 1, channel 2. */
  double sum = 0;
  for (int p = 0; p < hw; p++) sum += c.x[(hw + p) * ch + 2];
  double unused;
  gap_loss(&c, &unused);
  CHECK(fabs(c.y[ch + 2] - sum / hw) <= 2e-7, "gap y %.8g want %.8g", c.y[ch + 2], sum / hw);
  free(c.x), free(c.y), free(c.r), free(dx);
  be->destroy(be);
}

/* ---------------------------------------------------------------- dense */

typedef struct linear_ctx {
  dsc_backend *be;
  int n, in, out;
  float *x, *w, *b, *y, *r;
} linear_ctx;

static double linear_loss(void *p, double *abs_sum) {
  linear_ctx *c = p;
  if (failed_call(c->be->linear_forward(c->be, c->n, c->in, c->out, c->y, c->x, c->w, c->b),
                  "linear_forward"))
    return 0.0;
  return dot_out_r(c->y, c->r, (size_t)c->n * c->out, abs_sum);
}

static void test_linear_backward_fd(void) {
  dsc_backend *be = ref_backend();
  const int n = 3, in = 5, out = 4;
  test_rng rng = {61};
  linear_ctx c = {be, n, in, out, fbuf(n * in), fbuf(out * in), fbuf(out), fbuf(n * out),
                  fbuf(n * out)};
  fill_uniform(&rng, c.x, n * in, 1.0f, 0.0f);
  fill_uniform(&rng, c.w, out * in, 1.0f, 0.0f);
  fill_uniform(&rng, c.b, out, 1.0f, 0.0f);
  fill_uniform(&rng, c.r, n * out, 1.0f, 0.0f);
  float *dx = fbuf(n * in), *dw = fbuf(out * in), *db = fbuf(out);
  CHECK_OK(be->linear_backward(be, n, in, out, dx, dw, db, c.r, c.x, c.w));
  /* Linear in each of x, w, b: exact central differences up to rounding (EPS_LINEAR). */
  fd_check("linear: dx", c.x, (size_t)n * in, dx, linear_loss, &c, EPS_LINEAR, RTOL_LINEAR);
  fd_check("linear: dw", c.w, (size_t)out * in, dw, linear_loss, &c, EPS_LINEAR, RTOL_LINEAR);
  fd_check("linear: db", c.b, (size_t)out, db, linear_loss, &c, EPS_LINEAR, RTOL_LINEAR);
  /* Forward by hand, and without bias. */
  double unused;
  linear_loss(&c, &unused);
  double want = c.b[3];
  for (int k = 0; k < in; k++) want += (double)c.x[2 * in + k] * c.w[3 * in + k];
  CHECK(fabs(c.y[2 * out + 3] - want) <= 2e-7 * fmax(1, fabs(want)), "linear y %.8g want %.8g",
        c.y[2 * out + 3], want);
  CHECK_OK(be->linear_forward(be, n, in, out, c.y, c.x, c.w, NULL));
  CHECK(fabs(c.y[2 * out + 3] - (want - c.b[3])) <= 2e-7 * fmax(1, fabs(want)),
        "linear without bias y %.8g want %.8g", c.y[2 * out + 3], want - c.b[3]);
  free(c.x), free(c.w), free(c.b), free(c.y), free(c.r), free(dx), free(dw), free(db);
  be->destroy(be);
}

/* All four transpose combinations, padded leading dimensions, alpha and beta, against a
 * plain triple loop in double; beta = 0 must ignore NaN in C; k = 0 scales C by beta. */
static void test_gemm_all_trans(void) {
  dsc_backend *be = ref_backend();
  const int m = 5, n = 4, k = 3, pad = 2;
  test_rng rng = {71};
  for (int ta = 0; ta <= 1; ta++)
    for (int tb = 0; tb <= 1; tb++) {
      const int a_rows = ta ? k : m, a_cols = ta ? m : k;
      const int b_rows = tb ? n : k, b_cols = tb ? k : n;
      const int lda = a_cols + pad, ldb = b_cols + pad, ldc = n + pad;
      float *a = fbuf((size_t)a_rows * lda), *b = fbuf((size_t)b_rows * ldb);
      float *c = fbuf((size_t)m * ldc), *c0 = fbuf((size_t)m * ldc);
      fill_uniform(&rng, a, (size_t)a_rows * lda, 1.0f, 0.0f);
      fill_uniform(&rng, b, (size_t)b_rows * ldb, 1.0f, 0.0f);
      fill_uniform(&rng, c0, (size_t)m * ldc, 1.0f, 0.0f);
      memcpy(c, c0, (size_t)m * ldc * sizeof *c);
      const float alpha = 0.7f, beta = -0.3f;
      CHECK_OK(be->gemm(be, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc));
      for (int i = 0; i < m; i++)
        for (int j = 0; j < ldc; j++) {
          double want = c0[(size_t)i * ldc + j]; /* padding columns stay untouched */
          if (j < n) {
            double acc = 0;
            for (int p = 0; p < k; p++) {
              double av = ta ? a[(size_t)p * lda + i] : a[(size_t)i * lda + p];
              double bv = tb ? b[(size_t)j * ldb + p] : b[(size_t)p * ldb + j];
              acc += av * bv;
            }
            want = alpha * acc + beta * want;
          }
          double got = c[(size_t)i * ldc + j];
          CHECK(fabs(got - want) <= 2e-7 * fmax(1, fabs(want)),
                "gemm ta %d tb %d C[%d,%d] = %.8g, want %.8g", ta, tb, i, j, got, want);
        }
      /* beta = 0: C is overwritten, NaN in C does not propagate. */
      for (size_t i = 0; i < (size_t)m * ldc; i++) c[i] = NAN;
      CHECK_OK(be->gemm(be, ta, tb, m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c, ldc));
      int nans = 0;
      for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) nans += isnan(c[(size_t)i * ldc + j]);
      CHECK(nans == 0, "gemm ta %d tb %d beta 0: %d NaN leaked from C", ta, tb, nans);
      free(a), free(b), free(c), free(c0);
    }
  float c[2] = {2.0f, -4.0f};
  CHECK_OK(be->gemm(be, 0, 0, 1, 2, 0, 1.0f, NULL, 1, NULL, 2, 0.5f, c, 2));
  CHECK(c[0] == 1.0f && c[1] == -2.0f, "gemm k=0: C = %g %g, want 1 -2", c[0], c[1]);
  be->destroy(be);
}

/* ---------------------------------------------------------------- accumulate semantics */

static int all_close_ratio(const float *got, const float *base, size_t n, float ratio) {
  for (size_t i = 0; i < n; i++)
    if (fabsf(got[i] - ratio * base[i]) > 1e-6f * fmaxf(1.0f, fabsf(ratio * base[i]))) return 0;
  return 1;
}

/* Parameter gradients accumulate (a second backward doubles them); activation gradients
 * overwrite (a garbage-filled dx ends equal to one backward's dx); NULL skips. */
static void test_accumulate_semantics(void) {
  dsc_backend *be = ref_backend();
  test_rng rng = {81};
  { /* conv */
    dsc_conv_shape s = {2, 5, 5, 3, 4, 3, 3, 2, 1, 1};
    const size_t nx = 150, nw = 108, ny = (size_t)2 * dsc_conv_oh(&s) * dsc_conv_ow(&s) * 4;
    float *x = fbuf(nx), *w = fbuf(nw), *dy = fbuf(ny), *dx1 = fbuf(nx), *dx2 = fbuf(nx);
    float *dw1 = fbuf(nw), *dw2 = fbuf(nw), db1[4] = {0}, db2[4] = {0};
    fill_uniform(&rng, x, nx, 1, 0);
    fill_uniform(&rng, w, nw, 1, 0);
    fill_uniform(&rng, dy, ny, 1, 0);
    CHECK_OK(be->conv2d_backward(be, &s, dx1, dw1, db1, dy, x, w));
    for (size_t i = 0; i < nx; i++) dx2[i] = 1e6f;
    CHECK_OK(be->conv2d_backward(be, &s, dx2, dw2, db2, dy, x, w));
    CHECK_OK(be->conv2d_backward(be, &s, dx2, dw2, db2, dy, x, w));
    CHECK(!memcmp(dx1, dx2, nx * sizeof *dx1), "conv dx is not overwritten");
    CHECK(all_close_ratio(dw2, dw1, nw, 2.0f), "conv dw does not accumulate");
    CHECK(all_close_ratio(db2, db1, 4, 2.0f), "conv db does not accumulate");
    /* NULL dx and db: only dw moves. */
    CHECK_OK(be->conv2d_backward(be, &s, NULL, dw2, NULL, dy, x, w));
    CHECK(all_close_ratio(dw2, dw1, nw, 3.0f), "conv dw with NULL dx/db");
    CHECK(all_close_ratio(db2, db1, 4, 2.0f), "conv db moved although NULL was passed");
    free(x), free(w), free(dy), free(dx1), free(dx2), free(dw1), free(dw2);
  }
  { /* batch norm, groups 2, residual and relu */
    dsc_bn_shape s = {4, 2, 2, 3, 2, 1e-5f, 1};
    const size_t nx = 48;
    float *x = fbuf(nx), *res = fbuf(nx), *y = fbuf(nx), *dy = fbuf(nx), *dx1 = fbuf(nx),
          *dx2 = fbuf(nx), *dr1 = fbuf(nx), *dr2 = fbuf(nx), mean[6], var[6];
    const float gamma[3] = {1, 2, -1}, beta[3] = {0.1f, 0, 0.2f};
    float dg1[3] = {0}, db1[3] = {0}, dg2[3] = {0}, db2[3] = {0};
    fill_uniform(&rng, x, nx, 1, 0);
    fill_uniform(&rng, res, nx, 1, 0);
    fill_uniform(&rng, dy, nx, 1, 0);
    CHECK_OK(be->bn_forward_train(be, &s, y, mean, var, x, gamma, beta, res));
    CHECK_OK(be->bn_backward(be, &s, dx1, dg1, db1, dr1, dy, x, y, gamma, mean, var));
    for (size_t i = 0; i < nx; i++) dx2[i] = dr2[i] = 1e6f;
    CHECK_OK(be->bn_backward(be, &s, dx2, dg2, db2, dr2, dy, x, y, gamma, mean, var));
    CHECK_OK(be->bn_backward(be, &s, dx2, dg2, db2, dr2, dy, x, y, gamma, mean, var));
    CHECK(!memcmp(dx1, dx2, nx * sizeof *dx1), "bn dx is not overwritten");
    CHECK(!memcmp(dr1, dr2, nx * sizeof *dr1), "bn dresidual is not overwritten");
    CHECK(all_close_ratio(dg2, dg1, 3, 2.0f), "bn dgamma does not accumulate");
    CHECK(all_close_ratio(db2, db1, 3, 2.0f), "bn dbeta does not accumulate");
    CHECK_OK(be->bn_backward(be, &s, NULL, dg2, db2, NULL, dy, x, y, gamma, mean, var));
    CHECK(all_close_ratio(dg2, dg1, 3, 3.0f), "bn dgamma with NULL dx");
    free(x), free(res), free(y), free(dy), free(dx1), free(dx2), free(dr1), free(dr2);
  }
  { /* linear */
    const int n = 3, in = 4, out = 2;
    float x[12], w[8], dy[6], dx1[12], dx2[12], dw1[8] = {0}, dw2[8] = {0}, db1[2] = {0},
                                                db2[2] = {0};
    fill_uniform(&rng, x, 12, 1, 0);
    fill_uniform(&rng, w, 8, 1, 0);
    fill_uniform(&rng, dy, 6, 1, 0);
    CHECK_OK(be->linear_backward(be, n, in, out, dx1, dw1, db1, dy, x, w));
    for (int i = 0; i < 12; i++) dx2[i] = 1e6f;
    CHECK_OK(be->linear_backward(be, n, in, out, dx2, dw2, db2, dy, x, w));
    CHECK_OK(be->linear_backward(be, n, in, out, dx2, dw2, db2, dy, x, w));
    CHECK(!memcmp(dx1, dx2, sizeof dx1), "linear dx is not overwritten");
    CHECK(all_close_ratio(dw2, dw1, 8, 2.0f), "linear dw does not accumulate");
    CHECK(all_close_ratio(db2, db1, 2, 2.0f), "linear db does not accumulate");
  }
  be->destroy(be);
}

/* ---------------------------------------------------------------- optimizer, EMA, memory */

/* Three SGD steps against torch.optim.SGD's update written out in double (METHOD.md §5):
 * g' = g + wd*p; buf = mom*buf + g' (buf starts at 0); p -= lr*(nesterov ? g' + mom*buf : buf). */
static void test_sgd_step(void) {
  dsc_backend *be = ref_backend();
  const size_t n = 37;
  for (int nesterov = 0; nesterov <= 1; nesterov++) {
    test_rng rng = {91 + (uint64_t)nesterov};
    float *p = fbuf(n), *buf = fbuf(n), *g = fbuf(n);
    double *pd = malloc(n * sizeof *pd), *bd = calloc(n, sizeof *bd);
    fill_uniform(&rng, p, n, 1, 0);
    for (size_t i = 0; i < n; i++) pd[i] = p[i];
    const float lr = 0.3f, mom = 0.9f, wd = 1e-4f;
    for (int step = 0; step < 3; step++) {
      fill_uniform(&rng, g, n, 1, 0);
      CHECK_OK(be->sgd_step(be, n, p, g, buf, lr, mom, wd, nesterov));
      for (size_t i = 0; i < n; i++) {
        double gp = g[i] + (double)wd * pd[i];
        bd[i] = (double)mom * bd[i] + gp;
        pd[i] -= (double)lr * (nesterov ? gp + (double)mom * bd[i] : bd[i]);
      }
    }
    /* The backend rounds p and buf to float at every step; three steps: a few ulp. */
    for (size_t i = 0; i < n; i++) {
      CHECK(fabs(p[i] - pd[i]) <= 1e-6 * fmax(1, fabs(pd[i])), "nesterov %d p[%zu] %.8g want %.8g",
            nesterov, i, p[i], pd[i]);
      CHECK(fabs(buf[i] - bd[i]) <= 1e-6 * fmax(1, fabs(bd[i])),
            "nesterov %d buf[%zu] %.8g want %.8g", nesterov, i, buf[i], bd[i]);
    }
    free(p), free(buf), free(g), free(pd), free(bd);
  }
  /* momentum 0 without a buffer: plain p -= lr*(g + wd*p). */
  float p[2] = {1.0f, -2.0f}, g[2] = {0.5f, 0.25f};
  CHECK_OK(be->sgd_step(be, 2, p, g, NULL, 0.1f, 0.0f, 0.01f, 0));
  const double want0 = 1.0 - 0.1 * (0.5 + 0.01), want1 = -2.0 - 0.1 * (0.25 - 0.02);
  CHECK(fabs(p[0] - want0) < 1e-7 && fabs(p[1] - want1) < 1e-7,
        "sgd without momentum: %.8g %.8g, want %.8g %.8g", p[0], p[1], want0, want1);
  be->destroy(be);
}

static void test_ema(void) {
  dsc_backend *be = ref_backend();
  const size_t n = 29;
  test_rng rng = {101};
  float *sh = fbuf(n), *p = fbuf(n);
  double *want = malloc(n * sizeof *want);
  fill_uniform(&rng, sh, n, 1, 0);
  fill_uniform(&rng, p, n, 1, 0);
  /* m is passed as the float 0.999f: the hand computation uses the same value. */
  const double m = (double)0.999f;
  for (size_t i = 0; i < n; i++) want[i] = m * sh[i] + (1 - m) * p[i];
  CHECK_OK(be->ema(be, n, sh, p, 0.999f));
  for (size_t i = 0; i < n; i++)
    CHECK(fabs(sh[i] - want[i]) <= 1e-7 * fmax(1, fabs(want[i])), "ema[%zu] %.9g want %.9g", i,
          sh[i], want[i]);
  /* m = 1 keeps the shadow, m = 0 copies p. */
  float keep[2] = {3, 4}, src[2] = {-1, -2};
  CHECK_OK(be->ema(be, 2, keep, src, 1.0f));
  CHECK(keep[0] == 3 && keep[1] == 4, "ema m=1 changed the shadow");
  CHECK_OK(be->ema(be, 2, keep, src, 0.0f));
  CHECK(keep[0] == -1 && keep[1] == -2, "ema m=0 did not copy");
  free(sh), free(p), free(want);
  be->destroy(be);
}

static void test_memory_and_elementwise(void) {
  dsc_backend *be = ref_backend();
  CHECK(!strcmp(be->name, "ref"), "name %s", be->name);
  const size_t sizes[3] = {0, 13, 1000};
  for (int k = 0; k < 3; k++) {
    void *p = NULL;
    CHECK_OK(be->alloc(be, sizes[k], &p));
    CHECK(p && ((uintptr_t)p % 64) == 0, "alloc(%zu) returned %p, not 64-byte aligned", sizes[k],
          p);
    size_t zeros = 0;
    for (size_t i = 0; i < sizes[k]; i++) zeros += ((unsigned char *)p)[i] == 0;
    CHECK(zeros == sizes[k], "alloc(%zu) is not zero-filled", sizes[k]);
    be->free(be, p);
  }
  float host[5] = {1, -2, 3, -4, 5}, back[5], *d = NULL;
  CHECK_OK(be->alloc(be, sizeof host, (void **)&d));
  CHECK_OK(be->upload(be, d, host, sizeof host));
  CHECK_OK(be->download(be, back, d, sizeof back));
  CHECK(!memcmp(host, back, sizeof host), "upload/download round trip");
  CHECK_OK(be->add_inplace(be, d, host, 5));
  CHECK(d[0] == 2 && d[3] == -8, "add_inplace: %g %g", d[0], d[3]);
  CHECK_OK(be->relu_forward(be, back, d, 5));
  CHECK(back[0] == 2 && back[1] == 0 && back[4] == 10, "relu: %g %g %g", back[0], back[1], back[4]);
  CHECK_OK(be->zero(be, d, 5));
  for (int i = 0; i < 5; i++) CHECK(d[i] == 0, "zero left d[%d] = %g", i, d[i]);
  be->free(be, d);
  be->free(be, NULL);
  be->destroy(be);
}

/* Invalid shapes and arguments give errors naming the op and the bad value. */
static void test_invalid_shapes(void) {
  dsc_backend *be = ref_backend();
  float buf[4096] = {0};
  int32_t ibuf[64] = {0};
  const dsc_conv_shape ok_conv = {1, 4, 4, 2, 2, 3, 3, 1, 1, 1};
  dsc_conv_shape cs = ok_conv;
  CHECK_OK(be->conv2d_forward(be, &cs, buf, buf + 1024, buf + 2048, NULL));
  cs.stride = 0;
  CHECK_ERR(be->conv2d_forward(be, &cs, buf, buf, buf, NULL), "conv2d_forward: stride 0");
  cs = ok_conv, cs.kw = 0;
  CHECK_ERR(be->conv2d_backward(be, &cs, buf, buf, NULL, buf, buf, buf),
            "conv2d_backward: kernel 3x0");
  cs = ok_conv, cs.dilation = 0;
  CHECK_ERR(be->conv2d_forward(be, &cs, buf, buf, buf, NULL), "dilation 0");
  cs = ok_conv, cs.pad = -1;
  CHECK_ERR(be->conv2d_forward(be, &cs, buf, buf, buf, NULL), "pad -1");
  cs = ok_conv, cs.kh = 7, cs.pad = 1;
  CHECK_ERR(be->conv2d_forward(be, &cs, buf, buf, buf, NULL), "smaller than the dilated kernel");
  cs = ok_conv, cs.pad = 2000000000;
  CHECK_ERR(be->conv2d_forward(be, &cs, buf, buf, buf, NULL), "exceeds int");
  cs = ok_conv, cs.c_in = 0;
  CHECK_ERR(be->conv2d_forward(be, &cs, buf, buf, buf, NULL), "c_in=0");

  float g[4] = {1, 1, 1, 1}, b[4] = {0}, mean[16], var[16];
  dsc_bn_shape bs = {4, 2, 2, 2, 3, 1e-5f, 0};
  CHECK_ERR(be->bn_forward_train(be, &bs, buf, mean, var, buf, g, b, NULL),
            "bn_forward_train: groups 3 does not divide the batch n=4");
  bs.groups = 0;
  CHECK_ERR(be->bn_backward(be, &bs, buf, g, b, NULL, buf, buf, buf, g, mean, var),
            "bn_backward: groups 0");
  bs = (dsc_bn_shape){2, 1, 1, 2, 2, 1e-5f, 0}; /* one value per channel per group */
  CHECK_ERR(be->bn_forward_train(be, &bs, buf, mean, var, buf, g, b, NULL), "more than 1");
  CHECK_ERR(be->bn_update_running(be, &bs, g, b, mean, var, 0.1f), "bn_update_running");
  bs = (dsc_bn_shape){2, 2, 2, 2, 1, 1e-5f, 0};
  CHECK_ERR(be->bn_update_running(be, &bs, g, b, mean, var, 1.5f), "momentum 1.5");
  float neg_var[2] = {-1, 1};
  CHECK_ERR(be->bn_forward_eval(be, &bs, buf, buf, g, b, b, neg_var, NULL), "running_var[0]");
  bs.relu = 1;
  CHECK_ERR(be->bn_backward(be, &bs, buf, g, b, NULL, buf, buf, NULL, g, mean, var), "y is NULL");

  dsc_pool_shape ps = {1, 4, 4, 1, 3, 2, 2};
  CHECK_ERR(be->maxpool_forward(be, &ps, buf, ibuf, buf), "maxpool_forward: pad 2");
  ps = (dsc_pool_shape){1, 4, 4, 1, 0, 2, 0};
  CHECK_ERR(be->maxpool_forward(be, &ps, buf, ibuf, buf), "kernel 0");
  ps = (dsc_pool_shape){1, 4, 4, 1, 3, 0, 1};
  CHECK_ERR(be->maxpool_backward(be, &ps, buf, buf, ibuf), "maxpool_backward: stride 0");
  ps = (dsc_pool_shape){1, 4, 4, 1, 3, 2, 1};
  ibuf[2] = 16; /* outside the 4x4 image */
  CHECK_ERR(be->maxpool_backward(be, &ps, buf, buf, ibuf), "argmax[2] = 16");
  CHECK_ERR(be->gap_forward(be, 0, 4, 2, buf, buf), "gap_forward: sizes must be >= 1 (n=0");
  CHECK_ERR(be->gap_backward(be, 1, 0, 2, buf, buf), "hw=0");
  CHECK_ERR(be->linear_forward(be, 2, 0, 3, buf, buf, buf, NULL), "linear_forward: sizes");
  CHECK_ERR(be->linear_backward(be, 2, 3, -1, buf, buf, NULL, buf, buf, buf), "out=-1");
  CHECK_ERR(be->gemm(be, 0, 0, 2, 3, 4, 1, buf, 3, buf, 3, 0, buf, 3), "gemm: lda 3");
  CHECK_ERR(be->gemm(be, 0, 1, 2, 3, 4, 1, buf, 4, buf, 3, 0, buf, 3), "gemm: ldb 3");
  CHECK_ERR(be->gemm(be, 1, 0, 2, 3, 4, 1, buf, 2, buf, 3, 0, buf, 2), "gemm: ldc 2");
  CHECK_ERR(be->gemm(be, 0, 0, -1, 3, 4, 1, buf, 4, buf, 3, 0, buf, 3), "m=-1");
  CHECK_ERR(be->sgd_step(be, 4, buf, buf, buf, -0.1f, 0.9f, 0, 0), "sgd_step: lr -0.1");
  CHECK_ERR(be->sgd_step(be, 4, buf, buf, buf, 0.1f, 0.0f, 0, 1), "nesterov needs momentum");
  CHECK_ERR(be->sgd_step(be, 4, buf, buf, NULL, 0.1f, 0.9f, 0, 0), "needs a buffer");
  CHECK_ERR(be->ema(be, 4, buf, buf, 1.5f), "ema: m 1.5");
  void *p = NULL;
  CHECK_ERR(be->alloc(be, SIZE_MAX, &p), "alloc");
  CHECK(p == NULL, "failed alloc left a pointer");
  be->destroy(be);
}

static const dsc_test tests[] = {
    {"forward_matches_pytorch", test_forward_matches_pytorch},
    {"conv_backward_fd", test_conv_backward_fd},
    {"bn_backward_fd", test_bn_backward_fd},
    {"bn_grouped_equals_separate", test_bn_grouped_equals_separate},
    {"bn_running_update", test_bn_running_update},
    {"bn_eval", test_bn_eval},
    {"relu_backward_fd", test_relu_backward_fd},
    {"maxpool_backward_fd", test_maxpool_backward_fd},
    {"maxpool_ties_and_values", test_maxpool_ties_and_values},
    {"gap_backward_fd", test_gap_backward_fd},
    {"linear_backward_fd", test_linear_backward_fd},
    {"gemm_all_trans", test_gemm_all_trans},
    {"accumulate_semantics", test_accumulate_semantics},
    {"sgd_step", test_sgd_step},
    {"ema", test_ema},
    {"memory_and_elementwise", test_memory_and_elementwise},
    {"invalid_shapes", test_invalid_shapes},
};

TEST_MAIN(tests)
