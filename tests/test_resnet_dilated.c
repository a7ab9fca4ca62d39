/* test_resnet_dilated.c: the dilated ResNet-50 (dsc_resnet_init_layout, output stride 8) against
 * PyTorch, the reference backend against the CPU backend on it, and the standard layout unchanged.
 *
 * Fixture tests/golden/resnet50_d8.safetensors (tools/reference/make_dilated_golden.py): torchvision
 * resnet50(replace_stride_with_dilation=[False, True, True]) on a 2x3x64x64 input, parameters from
 * the shared generator (tests/golden_init.h), one training-mode forward, loss = sum(C5 * T) / N with
 * T = golden "c5.target", its gradients for a few parameters, the running statistics of a few BNs,
 * and an evaluation-mode C5; float64 reference. Tensors above 4096 elements are stored as 4096
 * samples + the full L2 norm (both compared). Tolerances (relative L2) are beside each check; as in
 * test_resnet_golden.c an entry's bound is max(bound, 10 x f32err), f32err being float32 PyTorch's
 * own distance from float64, stored in the fixture: the training-mode gradients of this network
 * are ill-conditioned (float32 PyTorch lands 1e-2 away from float64 on everything below the last
 * block; the two float32 dsc backends differ from each other by as much), while forwards and the
 * evaluation-mode C5 are not (f32err 1e-6..6e-5) and are held tight.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsc/resnet.h"
#include "dsc/safetensors.h"
#include "golden_init.h"
#include "test.h"

#define SAMPLES 4096
#define F32_MARGIN 10.0

typedef struct net_run {
  dsc_backend *be;
  dsc_table table;
  dsc_resnet net;
  float *params, *grads, *buffers; /* backend blobs */
} net_run;

/* Builds the network on `be` (taken over) with every tensor from the shared generator. */
static int run_setup(net_run *r, dsc_backend *be, const dsc_resnet_config *cfg,
                     const dsc_resnet_layout *layout) {
  memset(r, 0, sizeof *r);
  r->be = be;
  if (!be) return -1;
  CHECK_OK(dsc_resnet_init_layout(&r->net, be, cfg, layout, &r->table, ""));
  if (test_current_failed) return -1;
  size_t pbytes = r->table.param_numel * sizeof(float), bbytes = r->table.buffer_numel * sizeof(float);
  float *hp = calloc(r->table.param_numel, sizeof(float)), *hb = calloc(r->table.buffer_numel, sizeof(float));
  for (int i = 0; i < r->table.count; i++)
    golden_fill_entry(&r->table.entries[i], r->table.entries[i].name, hp, hb);
  CHECK_OK(be->alloc(be, pbytes, (void **)&r->params));
  CHECK_OK(be->alloc(be, pbytes, (void **)&r->grads));
  CHECK_OK(be->alloc(be, bbytes, (void **)&r->buffers));
  if (!test_current_failed) {
    CHECK_OK(be->upload(be, r->params, hp, pbytes));
    CHECK_OK(be->upload(be, r->buffers, hb, bbytes));
    dsc_resnet_bind(&r->net, r->params, r->grads, r->buffers);
  }
  free(hp), free(hb);
  return test_current_failed ? -1 : 0;
}

static void run_teardown(net_run *r) {
  dsc_resnet_free(&r->net);
  if (r->be) {
    r->be->free(r->be, r->params);
    r->be->free(r->be, r->grads);
    r->be->free(r->be, r->buffers);
    r->be->destroy(r->be);
  }
  dsc_table_free(&r->table);
}

/* A host copy of `numel` floats of backend memory (caller frees). */
static float *host_copy(dsc_backend *be, const float *src, size_t numel) {
  float *h = malloc(numel * sizeof(float));
  CHECK_OK(be->download(be, h, src, numel * sizeof(float)));
  return h;
}

/* The golden "input" (NCHW) as NHWC. */
static float *golden_input_nhwc(int n, int h, int w) {
  size_t numel = (size_t)n * 3 * h * w;
  float *nchw = malloc(numel * sizeof(float)), *x = malloc(numel * sizeof(float));
  golden_fill("input", 0.0, 1.0, nchw, numel);
  nchw_to_nhwc(nchw, x, n, 3, h, w);
  free(nchw);
  return x;
}

/* The loss target T = golden "c5.target" in C5's NCHW shape, returned NHWC. */
static float *golden_target_nhwc(int n, int h, int w, int c) {
  size_t numel = (size_t)n * c * h * w;
  float *nchw = malloc(numel * sizeof(float)), *t = malloc(numel * sizeof(float));
  golden_fill("c5.target", 0.0, 1.0, nchw, numel);
  nchw_to_nhwc(nchw, t, n, c, h, w);
  free(nchw);
  return t;
}

/* Training forward, loss = sum(C5 * T) / N, backward (gradients zeroed first). Returns the loss. */
static double train_step(net_run *r, const float *x, int n, int h, int w, dsc_resnet_features *f) {
  dsc_backend *be = r->be;
  CHECK_OK(be->zero(be, r->grads, r->table.param_numel));
  CHECK_OK(dsc_resnet_forward(&r->net, x, n, h, w, 1, 1, f));
  if (test_current_failed) return NAN;
  int c = f->channels[3];
  size_t numel = (size_t)n * f->h[3] * f->w[3] * c;
  float *t = golden_target_nhwc(n, f->h[3], f->w[3], c);
  float *c5 = host_copy(be, f->c[3], numel), *dc5 = malloc(numel * sizeof(float));
  double loss = 0;
  for (size_t i = 0; i < numel; i++) {
    loss += (double)c5[i] * t[i];
    dc5[i] = t[i] / (float)n;
  }
  float *dc5_dev = NULL;
  CHECK_OK(be->alloc(be, numel * sizeof(float), (void **)&dc5_dev));
  if (dc5_dev) {
    CHECK_OK(be->upload(be, dc5_dev, dc5, numel * sizeof(float)));
    CHECK_OK(dsc_resnet_backward(&r->net, dc5_dev));
    be->free(be, dc5_dev);
  }
  free(t), free(c5), free(dc5);
  return loss / n;
}

/* ---- (1) golden test against PyTorch ---- */

/* Copies tensor `name` of `dtype` and exactly `bytes` bytes into dst. */
static void read_raw(const dsc_safetensors *f, const char *name, dsc_dtype dtype, void *dst,
                     size_t bytes) {
  const dsc_st_tensor *t = dsc_st_find(f, name);
  CHECK(t && t->dtype == dtype && dsc_st_nbytes(t) == bytes, "fixture tensor %s: absent or not "
        "of the expected dtype and size", name);
  if (t && t->dtype == dtype && dsc_st_nbytes(t) == bytes) memcpy(dst, dsc_st_data(f, t), bytes);
}

/* max(tol, F32_MARGIN * f32err.<key>): the bound for fixture entry `key`. */
static double bound_for(const dsc_safetensors *f, const char *key, double tol) {
  char name[300];
  snprintf(name, sizeof name, "f32err.%s", key);
  float e = 0;
  CHECK_OK(dsc_st_read_f32(f, name, &e, 1));
  return F32_MARGIN * e > tol ? F32_MARGIN * e : tol;
}

/* Compares host `got` (PyTorch's layout) with entry `key`: whole, or as @sample + @norm.
 * Returns the relative L2 error (of the samples where sampled). */
static double compare_entry(const dsc_safetensors *f, const char *key, const float *got,
                          size_t numel, double tol) {
  char name[300];
  tol = bound_for(f, key, tol);
  double err = NAN;
  if (dsc_st_find(f, key)) {
    float *want = test_fixture_f32(f, key, numel);
    if (want) err = test_rel_l2(got, want, numel);
    CHECK(want && err <= tol, "%s: relative L2 error %.3g > %.3g", key, err, tol);
    free(want);
    return err;
  }
  snprintf(name, sizeof name, "%s@sample", key);
  float *want = test_fixture_f32(f, name, SAMPLES);
  if (!want) return err;
  float *sample = malloc(SAMPLES * sizeof(float));
  for (size_t k = 0; k < SAMPLES; k++) sample[k] = got[(k * numel) / SAMPLES];
  err = test_rel_l2(sample, want, SAMPLES);
  CHECK(err <= tol, "%s: relative L2 error %.3g > %.3g", name, err, tol);
  snprintf(name, sizeof name, "%s@norm", key);
  float norm_want = 0;
  CHECK_OK(dsc_st_read_f32(f, name, &norm_want, 1));
  double norm = 0;
  for (size_t i = 0; i < numel; i++) norm += (double)got[i] * got[i];
  norm = sqrt(norm);
  CHECK(fabs(norm - norm_want) <= tol * norm_want, "%s: %.9g vs %.9g (bound %.2g)", name, norm,
        (double)norm_want, tol);
  free(sample), free(want);
  return err;
}

/* Compares NHWC backend features with entry `key` (NCHW); returns the error. */
static double compare_features(const dsc_safetensors *f, dsc_backend *be, const char *key,
                               const float *c, int n, int h, int w, int ch, double tol) {
  size_t numel = (size_t)n * h * w * ch;
  float *nhwc = host_copy(be, c, numel), *nchw = malloc(numel * sizeof(float));
  nhwc_to_nchw(nhwc, nchw, n, h, w, ch);
  double err = compare_entry(f, key, nchw, numel, tol);
  free(nhwc), free(nchw);
  return err;
}

static void test_golden_d8(void) {
  const int n = 2, h = 64, w = 64;
  dsc_safetensors *f = NULL;
  CHECK_OK(dsc_st_open("tests/golden/resnet50_d8.safetensors", &f));
  if (!f) return;
  dsc_backend *be = NULL;
  CHECK_OK(dsc_backend_cpu_new(1, &be));
  dsc_resnet_config cfg = {.depth = 50, .small_stem = 0};
  dsc_resnet_layout layout;
  dsc_resnet_layout_dilated8(&layout);
  net_run r;
  if (run_setup(&r, be, &cfg, &layout) != 0) goto done;

  /* The C generator reproduces the fixture's input bit for bit. */
  size_t in_numel = (size_t)n * 3 * h * w;
  float *gen = malloc(in_numel * sizeof(float)), *stored = test_fixture_f32(f, "input", in_numel);
  golden_fill("input", 0.0, 1.0, gen, in_numel);
  CHECK(stored && memcmp(gen, stored, in_numel * sizeof(float)) == 0,
        "the C generator differs from tools/reference/golden_init.py on \"input\"");
  free(gen), free(stored);
  float *x_host = golden_input_nhwc(n, h, w), *x = NULL;
  CHECK_OK(be->alloc(be, in_numel * sizeof(float), (void **)&x));
  if (!x) goto done_x;
  CHECK_OK(be->upload(be, x, x_host, in_numel * sizeof(float)));

  /* Evaluation-mode C5 (BN on the generated running statistics): well conditioned, 1e-5. */
  dsc_resnet_features fe;
  double err_eval = NAN, err_c5 = NAN, worst_grad = 0;
  CHECK_OK(dsc_resnet_forward(&r.net, x, n, h, w, 0, 1, &fe));
  if (!test_current_failed)
    err_eval = compare_features(f, be, "eval.c5", fe.c[3], n, fe.h[3], fe.w[3], fe.channels[3], 1e-5);

  /* Training step: shapes exact; C2..C5 1e-4; loss 1e-5 (float64 sum of float32 products). */
  dsc_resnet_features ft;
  double loss = train_step(&r, x, n, h, w, &ft);
  if (test_current_failed) goto done_x;
  static const char *cname[4] = {"c2", "c3", "c4", "c5"};
  for (int l = 0; l < 4; l++) {
    char key[32];
    int64_t shape[4] = {0};
    snprintf(key, sizeof key, "shape.%s", cname[l]);
    read_raw(f, key, DSC_I64, shape, sizeof shape);
    CHECK(shape[0] == n && shape[1] == ft.channels[l] && shape[2] == ft.h[l] && shape[3] == ft.w[l],
          "%s: dsc (%d,%d,%d,%d), PyTorch (%lld,%lld,%lld,%lld)", cname[l], n, ft.channels[l],
          ft.h[l], ft.w[l], (long long)shape[0], (long long)shape[1], (long long)shape[2],
          (long long)shape[3]);
    CHECK(ft.h[l] == dsc_resnet_feature_side(&cfg, &layout, l, h),
          "%s side %d, dsc_resnet_feature_side says %d", cname[l], ft.h[l],
          dsc_resnet_feature_side(&cfg, &layout, l, h));
    err_c5 = compare_features(f, be, cname[l], ft.c[l], n, ft.h[l], ft.w[l], ft.channels[l], 1e-4);
  }
  CHECK(ft.h[3] == h / 8 && ft.w[3] == w / 8, "C5 %dx%d is not 1/8 of %dx%d", ft.h[3], ft.w[3], h, w);
  double loss_want = 0;
  read_raw(f, "loss", DSC_F64, &loss_want, sizeof loss_want);
  double loss_tol = bound_for(f, "loss", 1e-5);
  CHECK(fabs(loss - loss_want) <= loss_tol * fabs(loss_want), "loss %.9g vs %.9g", loss, loss_want);

  /* Gradients 1e-3 and running statistics after the step 1e-4, each widened to 10x f32err. */
  float *grads = host_copy(be, r.grads, r.table.param_numel);
  float *bufs = host_copy(be, r.buffers, r.table.buffer_numel);
  int n_grads = 0, n_stats = 0;
  for (int i = 0; i < r.table.count; i++) {
    const dsc_tensor_entry *e = &r.table.entries[i];
    char key[160], probe[200];
    snprintf(key, sizeof key, "%s.%s", e->role == DSC_ROLE_PARAM ? "grad" : "after1", e->name);
    snprintf(probe, sizeof probe, "f32err.%s", key);
    if (!dsc_st_find(f, probe)) continue; /* the fixture holds a chosen few */
    if (e->role == DSC_ROLE_PARAM) {
      double err = compare_entry(f, key, grads + e->offset, e->numel, 1e-3);
      if (err > worst_grad) worst_grad = err;
      n_grads++;
    } else {
      compare_entry(f, key, bufs + e->offset, e->numel, 1e-4);
      n_stats++;
    }
  }
  CHECK(n_grads == 12 && n_stats == 6, "compared %d gradients and %d running statistics, "
        "the fixture holds 12 and 6", n_grads, n_stats);
  printf("  vs PyTorch float64: eval C5 %.2e, training C5 %.2e, loss %.2e, worst gradient %.2e\n",
         err_eval, err_c5, fabs(loss - loss_want) / fabs(loss_want), worst_grad);
  free(grads), free(bufs);
done_x:
  if (x) be->free(be, x);
  free(x_host);
done:
  run_teardown(&r);
  dsc_st_close(f);
}

/* ---- (2) reference backend vs CPU backend ---- */

static void test_ref_vs_cpu(void) {
  /* 2x3x32x32, standard stem: C5 is 4x4 (BN in layer4 sees 32 values per channel). Smaller
   * inputs are worse conditioned (at 24x24 even layer4.2's gradients differ by 2e-2 between the
   * backends); this one costs about 3 s in the naive reference backend. The evaluation-mode
   * forward is compared with PyTorch in golden_d8. */
  const int n = 2, h = 32, w = 32;
  dsc_resnet_config cfg = {.depth = 50, .small_stem = 0};
  dsc_resnet_layout layout;
  dsc_resnet_layout_dilated8(&layout);
  net_run runs[2];
  dsc_backend *bes[2] = {NULL, NULL};
  CHECK_OK(dsc_backend_ref_new(&bes[0]));
  CHECK_OK(dsc_backend_cpu_new(1, &bes[1]));
  int ok = run_setup(&runs[0], bes[0], &cfg, &layout) == 0;
  ok = (run_setup(&runs[1], bes[1], &cfg, &layout) == 0) && ok;
  size_t in_numel = (size_t)n * h * w * 3;
  float *x_host = golden_input_nhwc(n, h, w);
  float *c[2][4] = {{NULL}}, *grads[2] = {NULL}, *bufs[2] = {NULL};
  double loss[2] = {0, 0};
  dsc_resnet_features ft[2];
  size_t c_numel[4] = {0};
  for (int b = 0; ok && b < 2; b++) {
    dsc_backend *be = bes[b];
    float *x = NULL;
    CHECK_OK(be->alloc(be, in_numel * sizeof(float), (void **)&x));
    if (!x) break;
    CHECK_OK(be->upload(be, x, x_host, in_numel * sizeof(float)));
    loss[b] = train_step(&runs[b], x, n, h, w, &ft[b]);
    for (int l = 0; !test_current_failed && l < 4; l++) {
      c_numel[l] = (size_t)n * ft[b].h[l] * ft[b].w[l] * ft[b].channels[l];
      c[b][l] = host_copy(be, ft[b].c[l], c_numel[l]);
    }
    grads[b] = host_copy(be, runs[b].grads, runs[b].table.param_numel);
    bufs[b] = host_copy(be, runs[b].buffers, runs[b].table.buffer_numel);
    be->free(be, x);
  }
  if (ok && !test_current_failed) {
    CHECK(ft[1].h[3] == 4 && ft[1].w[3] == 4 && ft[0].h[3] == 4, "C5 %dx%d, expected 4x4",
          ft[1].h[3], ft[1].w[3]);
    /* Training-mode forwards: C2, C3 1e-4; C4, C5 1e-3, because BN on batch statistics
     * amplifies float32 rounding with depth (float32 PyTorch is 2.4e-5 / 6.4e-5 from float64 on
     * C4 / C5 at 2x64x64 and 7.6e-5 on C5 here; the two backends measure 2.9e-5 / 9.5e-5): 10x
     * that, the golden tests' rule. */
    static const char *cname[4] = {"c2", "c3", "c4", "c5"};
    static const double ctol[4] = {1e-4, 1e-4, 1e-3, 1e-3};
    for (int l = 0; l < 4; l++) {
      double err = test_rel_l2(c[1][l], c[0][l], c_numel[l]);
      CHECK(err <= ctol[l], "%s: cpu vs ref relative L2 %.3g > %.3g", cname[l], err, ctol[l]);
    }
    /* The loss sums C5 * T over T of mean 0, so it cancels: bound its difference by 1e-4 of
     * sum |C5| / N >= sum |C5 * T| / N. */
    double scale = 0;
    for (size_t i = 0; i < c_numel[3]; i++) scale += fabs((double)c[0][3][i]);
    scale /= n; /* |T| <= 1 */
    CHECK(fabs(loss[1] - loss[0]) <= 1e-4 * scale, "loss cpu %.9g ref %.9g (scale %.3g)", loss[1],
          loss[0], scale);
    /* Gradients: below the last block the training-mode backward is ill-conditioned (float32
     * PyTorch is 1e-2..4e-2 from float64 at this size), so each tensor gets 1e-1 (an error in the
     * wiring or a dilation gives O(1)); the last block's (layer4.2) and layer4's BN gradients are
     * well conditioned and held to 1e-3 (measured: 1.5e-4 in layer4.2, 3.9e-2 elsewhere, both
     * backends single-threaded). Running statistics 1e-4. The worst of each is printed. */
    double worst_loose = 0, worst_tight = 0;
    const char *worst_loose_name = "", *worst_tight_name = "";
    for (int i = 0; i < runs[1].table.count; i++) {
      const dsc_tensor_entry *e = &runs[1].table.entries[i];
      if (e->role == DSC_ROLE_PARAM) {
        int tight = strncmp(e->name, "layer4.2.", 9) == 0;
        double err = test_rel_l2(grads[1] + e->offset, grads[0] + e->offset, e->numel);
        double tol = tight ? 1e-3 : 1e-1;
        CHECK(err <= tol, "grad %s: cpu vs ref relative L2 %.3g > %.3g", e->name, err, tol);
        if (tight && err > worst_tight) worst_tight = err, worst_tight_name = e->name;
        if (!tight && err > worst_loose) worst_loose = err, worst_loose_name = e->name;
      } else {
        CHECK_CLOSE(e->name, bufs[1] + e->offset, bufs[0] + e->offset, e->numel, 1e-4);
      }
    }
    printf("  cpu vs ref gradients: worst %.2e (%s) in layer4.2, %.2e (%s) elsewhere\n", worst_tight,
           worst_tight_name, worst_loose, worst_loose_name);
  }
  for (int b = 0; b < 2; b++) {
    free(grads[b]), free(bufs[b]);
    for (int l = 0; l < 4; l++) free(c[b][l]);
    if (bes[b] && (runs[b].be || !ok)) run_teardown(&runs[b]);
  }
  free(x_host);
}

/* ---- (3) the standard layout is unchanged ---- */

static int tables_equal(const dsc_table *a, const dsc_table *b) {
  if (a->count != b->count || a->param_numel != b->param_numel || a->buffer_numel != b->buffer_numel)
    return 0;
  for (int i = 0; i < a->count; i++) {
    const dsc_tensor_entry *x = &a->entries[i], *y = &b->entries[i];
    if (strcmp(x->name, y->name) || x->offset != y->offset || x->numel != y->numel ||
        memcmp(x->shape, y->shape, sizeof x->shape))
      return 0;
  }
  return 1;
}

static void test_standard_layout_unchanged(void) {
  /* dsc_resnet_init, a NULL layout and the explicit standard values build the same network: same
   * table, bit-identical forward; the dilated layout has the same tensors (pretrained weights load
   * into it unchanged). */
  static const dsc_resnet_config cfgs[3] = {{.depth = 18, .small_stem = 1},
                                            {.depth = 34, .small_stem = 0},
                                            {.depth = 50, .small_stem = 0}};
  const dsc_resnet_layout explicit_std = {{1, 2, 2, 2}, {1, 1, 1, 1}};
  dsc_resnet_layout d8;
  dsc_resnet_layout_dilated8(&d8);
  for (int k = 0; k < 3; k++) {
    const dsc_resnet_config *cfg = &cfgs[k];
    net_run a, b;
    dsc_backend *be_a = NULL, *be_b = NULL;
    CHECK_OK(dsc_backend_cpu_new(1, &be_a));
    CHECK_OK(dsc_backend_cpu_new(1, &be_b));
    int ok = run_setup(&a, be_a, cfg, NULL) == 0;
    ok = run_setup(&b, be_b, cfg, &explicit_std) == 0 && ok;
    /* dsc_resnet_init's own table. */
    dsc_table t0 = {0};
    dsc_resnet n0;
    CHECK_OK(dsc_resnet_init(&n0, be_a, cfg, &t0, ""));
    CHECK(tables_equal(&t0, &a.table) && tables_equal(&t0, &b.table),
          "resnet%d: tables differ between dsc_resnet_init and the standard layout", cfg->depth);
    dsc_resnet_free(&n0);
    dsc_table_free(&t0);
    if (cfg->depth == 50) {
      dsc_table td = {0};
      dsc_resnet nd;
      CHECK_OK(dsc_resnet_init_layout(&nd, be_a, cfg, &d8, &td, ""));
      CHECK(tables_equal(&td, &a.table), "resnet50: the dilated layout has other tensors");
      dsc_resnet_free(&nd);
      dsc_table_free(&td);
    }
    if (ok) {
      const int n = 2, h = 40, w = 36;
      size_t in_numel = (size_t)n * h * w * 3;
      float *x = golden_input_nhwc(n, h, w); /* host backend: host memory */
      dsc_resnet_features fa, fb;
      for (int train = 0; train < 2; train++) {
        CHECK_OK(dsc_resnet_forward(&a.net, x, n, h, w, train, 1, &fa));
        CHECK_OK(dsc_resnet_forward(&b.net, x, n, h, w, train, 1, &fb));
        if (test_current_failed) break;
        for (int l = 0; l < 4; l++) {
          size_t numel = (size_t)n * fa.h[l] * fa.w[l] * fa.channels[l];
          CHECK(fa.h[l] == fb.h[l] && fa.w[l] == fb.w[l] &&
                    memcmp(fa.c[l], fb.c[l], numel * sizeof(float)) == 0,
                "resnet%d C%d (train %d): explicit standard layout differs", cfg->depth, l + 2, train);
        }
      }
      (void)in_numel;
      free(x);
    }
    run_teardown(&a);
    run_teardown(&b);
  }
}

/* ---- shapes, the side helper, refusals ---- */

static void test_feature_sides(void) {
  /* The forward's C2..C5 sizes equal dsc_resnet_feature_side; for the standard layout they
   * equal the stride-2 arithmetic the rest of the code computes on its own (ssl_step.c's
   * c5_side, cli/synthetic.c), so those stay valid. */
  dsc_resnet_layout d8, r18_s1;
  dsc_resnet_layout_dilated8(&d8);
  r18_s1 = (dsc_resnet_layout){{0, 0, 1, 1}, {0}}; /* stride 1 without dilation (basic blocks) */
  struct {
    dsc_resnet_config cfg;
    const dsc_resnet_layout *layout;
  } cases[] = {{{.depth = 18, .small_stem = 0}, NULL}, {{.depth = 18, .small_stem = 1}, NULL},
               {{.depth = 18, .small_stem = 0}, &r18_s1}, {{.depth = 50, .small_stem = 0}, &d8},
               {{.depth = 50, .small_stem = 1}, &d8}};
  /* Odd sizes exercise the rounding; the small stem keeps full resolution, so smaller inputs. */
  static const int sizes[2][2] = {{32, 37}, {8, 11}};
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    dsc_backend *be = NULL;
    CHECK_OK(dsc_backend_cpu_new(1, &be));
    if (!be) return;
    dsc_table t = {0};
    dsc_resnet net;
    CHECK_OK(dsc_resnet_init_layout(&net, be, &cases[k].cfg, cases[k].layout, &t, ""));
    size_t pn = t.param_numel, bn = t.buffer_numel;
    float *p = calloc(pn, sizeof(float)), *bf = calloc(bn, sizeof(float));
    for (int i = 0; i < t.count; i++) golden_fill_entry(&t.entries[i], t.entries[i].name, p, bf);
    dsc_resnet_bind(&net, p, NULL, bf);
    for (int s = 0; s < 2; s++) {
      int size = sizes[cases[k].cfg.small_stem][s];
      float *x = calloc((size_t)size * size * 3, sizeof(float));
      dsc_resnet_features f;
      CHECK_OK(dsc_resnet_forward(&net, x, 1, size, size, 0, 1, &f));
      for (int l = 0; !test_current_failed && l < 4; l++) {
        int side = dsc_resnet_feature_side(&cases[k].cfg, cases[k].layout, l, size);
        CHECK(f.h[l] == side && f.w[l] == side, "case %zu size %d C%d: forward %dx%d, helper %d", k,
              size, l + 2, f.h[l], f.w[l], side);
      }
      if (!cases[k].layout) {
        int c5 = size;
        if (!cases[k].cfg.small_stem)
          c5 = dsc_conv_out_size(dsc_conv_out_size(c5, 7, 2, 3, 1), 3, 2, 1, 1);
        for (int l = 0; l < 3; l++) c5 = dsc_conv_out_size(c5, 3, 2, 1, 1);
        CHECK(f.h[3] == c5, "case %zu size %d: C5 %d, the standard arithmetic %d", k, size, f.h[3], c5);
      }
      free(x);
    }
    dsc_resnet_free(&net);
    dsc_table_free(&t);
    free(p), free(bf);
    be->destroy(be);
  }
}

static void test_layout_refusals(void) {
  dsc_backend *be = NULL;
  CHECK_OK(dsc_backend_cpu_new(1, &be));
  if (!be) return;
  dsc_resnet net;
  dsc_table t = {0};
  dsc_resnet_config r18 = {.depth = 18, .small_stem = 0}, r50 = {.depth = 50, .small_stem = 0};
  dsc_resnet_layout d8;
  dsc_resnet_layout_dilated8(&d8);
  CHECK_ERR(dsc_resnet_init_layout(&net, be, &r18, &d8, &t, ""), "needs bottleneck blocks");
  dsc_resnet_free(&net);
  dsc_table_free(&t);
  dsc_resnet_layout bad = {{0, 3, 0, 0}, {0}};
  CHECK_ERR(dsc_resnet_init_layout(&net, be, &r50, &bad, &t, ""), "layer2: stride 3");
  dsc_resnet_free(&net);
  dsc_table_free(&t);
  bad = (dsc_resnet_layout){{0}, {0, 0, 0, 17}};
  CHECK_ERR(dsc_resnet_init_layout(&net, be, &r50, &bad, &t, ""), "layer4: dilation 17");
  dsc_resnet_free(&net);
  dsc_table_free(&t);
  bad = (dsc_resnet_layout){{0}, {-1, 0, 0, 0}};
  CHECK_ERR(dsc_resnet_init_layout(&net, be, &r50, &bad, &t, ""), "layer1: dilation -1");
  dsc_resnet_free(&net);
  dsc_table_free(&t);

  /* A dilated network cannot borrow a standard one's activations. */
  dsc_table t1 = {0}, t2 = {0};
  dsc_resnet std_net, dil_net;
  CHECK_OK(dsc_resnet_init(&std_net, be, &r50, &t1, ""));
  CHECK_OK(dsc_resnet_init_layout(&dil_net, be, &r50, &d8, &t2, ""));
  CHECK_ERR(dsc_resnet_borrow_activations(&dil_net, &std_net, 1, 32, 32, 1), "different architectures");
  dsc_resnet_free(&std_net);
  dsc_resnet_free(&dil_net);
  dsc_table_free(&t1);
  dsc_table_free(&t2);
  be->destroy(be);
}

static const dsc_test tests[] = {
    {"golden_d8", test_golden_d8},
    {"ref_vs_cpu", test_ref_vs_cpu},
    {"standard_layout_unchanged", test_standard_layout_unchanged},
    {"feature_sides", test_feature_sides},
    {"layout_refusals", test_layout_refusals},
};
TEST_MAIN(tests)
