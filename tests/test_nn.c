/* test_nn.c: the pieces around the backend: the counter-based RNG (Philox known answers),
 * the named-tensor table, torchvision's initialization, the ResNet table against
 * torchvision's parameter counts, the learning-rate schedule, SGD over a blob, weights
 * loading errors, and the guards of the ResNet forward. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dsc/backbone.h"
#include "dsc/optim.h"
#include "dsc/rng.h"
#include "dsc/weights.h"
#include "test.h"

static void test_philox_known_answers(void) {
  /* Random123's known-answer vectors for Philox4x32-10. */
  uint32_t out[4];
  const uint32_t zero[4] = {0, 0, 0, 0};
  dsc_philox4x32(0, zero, out);
  CHECK(out[0] == 0x6627e8d5u && out[1] == 0xe169c58du && out[2] == 0xbc57ac4cu &&
            out[3] == 0x9b00dbd8u,
        "philox(0,0) = %08x %08x %08x %08x", out[0], out[1], out[2], out[3]);
  const uint32_t ones[4] = {0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu};
  dsc_philox4x32(0xffffffffffffffffull, ones, out);
  CHECK(out[0] == 0x408f276du && out[1] == 0x41c83b0eu && out[2] == 0xa20bc7c6u &&
            out[3] == 0x6d5451fdu,
        "philox(ff,ff) = %08x %08x %08x %08x", out[0], out[1], out[2], out[3]);
}

static void test_rng_distributions(void) {
  /* 200k normals: mean 0 and variance 1 within 5 standard errors. */
  const int n = 200000;
  double s = 0, s2 = 0, u = 0;
  for (int i = 0; i < n; i++) {
    double z = dsc_rng_normal(42, DSC_RNG_BENCH, 3, (uint32_t)i, 0);
    s += z, s2 += z * z;
    u += dsc_rng_uniform(42, DSC_RNG_BENCH, 4, (uint32_t)i, 0);
  }
  double mean = s / n, var = s2 / n - mean * mean;
  CHECK(fabs(mean) < 5 / sqrt(n), "normal mean %g", mean);
  CHECK(fabs(var - 1) < 5 * sqrt(2.0 / n), "normal variance %g", var);
  CHECK(fabs(u / n - 0.5) < 5 * sqrt(1 / 12.0 / n), "uniform mean %g", u / n);
  CHECK(dsc_rng_normal(1, 1, 2, 3, 4) == dsc_rng_normal(1, 1, 2, 3, 4), "not a pure function");
  CHECK(dsc_rng_normal(1, 1, 2, 3, 4) != dsc_rng_normal(2, 1, 2, 3, 4), "seed ignored");
}

static void test_table(void) {
  dsc_table t = {0};
  int64_t a[2] = {3, 5}, b[1] = {7};
  size_t off = 99;
  CHECK_OK(dsc_table_add(&t, "a", DSC_ROLE_PARAM, DSC_KIND_OTHER, 2, a, &off));
  CHECK(off == 0, "first offset %zu", off);
  CHECK_OK(dsc_table_add(&t, "b", DSC_ROLE_BUFFER, DSC_KIND_OTHER, 1, b, &off));
  CHECK(off == 0, "buffers have their own blob: offset %zu", off);
  CHECK_OK(dsc_table_add(&t, "c", DSC_ROLE_PARAM, DSC_KIND_OTHER, 1, b, &off));
  CHECK(off == 16, "64-byte aligned offset %zu", off);
  CHECK_ERR(dsc_table_add(&t, "a", DSC_ROLE_PARAM, DSC_KIND_OTHER, 1, b, NULL), "twice");
  CHECK(dsc_table_find(&t, "c") && dsc_table_find(&t, "c")->numel == 7, "find");
  CHECK(!dsc_table_find(&t, "d"), "find absent");
  CHECK(t.param_numel == 32 && t.buffer_numel == 16, "totals %zu %zu", t.param_numel, t.buffer_numel);
  dsc_table_free(&t);
}

/* Parameter counts of torchvision's resnet18/34/50 without fc (torchvision 0.14). */
static void test_resnet_tables(void) {
  static const struct {
    int depth, small;
    size_t params;
    int tensors;
  } cases[] = {
      {18, 0, 11176512, 100}, {34, 0, 21284672, 180}, {50, 0, 23508032, 265},
      {18, 1, 11168832, 100},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    dsc_backend *be = NULL;
    CHECK_OK(dsc_backend_ref_new(&be));
    dsc_table t = {0};
    dsc_resnet net;
    dsc_resnet_config cfg = {cases[i].depth, cases[i].small};
    CHECK_OK(dsc_resnet_init(&net, be, &cfg, &t, "backbone."));
    size_t params = 0;
    for (int k = 0; k < t.count; k++)
      if (t.entries[k].role == DSC_ROLE_PARAM) params += t.entries[k].numel;
    CHECK(params == cases[i].params, "resnet%d: %zu parameters", cases[i].depth, params);
    CHECK(t.count == cases[i].tensors, "resnet%d: %d tensors", cases[i].depth, t.count);
    CHECK(dsc_table_find(&t, "backbone.layer1.0.bn1.running_mean"), "prefixed names");
    CHECK(net.out_channels == (cases[i].depth == 50 ? 2048 : 512), "C5 channels");
    dsc_resnet_free(&net);
    dsc_table_free(&t);
    be->destroy(be);
  }
  dsc_resnet net;
  dsc_table t = {0};
  dsc_resnet_config bad = {101, 0};
  CHECK_ERR(dsc_resnet_init(&net, NULL, &bad, &t, ""), "depth 101");
  dsc_resnet_free(&net);
  dsc_table_free(&t);
}

static void test_init_statistics(void) {
  dsc_backend *be = NULL;
  CHECK_OK(dsc_backend_ref_new(&be));
  dsc_backbone m, m2;
  dsc_resnet_config cfg = {18, 0};
  CHECK_OK(dsc_backbone_create(&m, be, &cfg, 0, 7));
  CHECK_OK(dsc_backbone_create(&m2, be, &cfg, 0, 7));
  CHECK(memcmp(m.host_params, m2.host_params, m.table.param_numel * sizeof(float)) == 0,
        "same seed, different initialization");
  for (int i = 0; i < m.table.count; i++) {
    const dsc_tensor_entry *e = &m.table.entries[i];
    const float *v = (e->role == DSC_ROLE_PARAM ? m.host_params : m.host_buffers) + e->offset;
    double s = 0, s2 = 0;
    for (size_t k = 0; k < e->numel; k++) s += v[k], s2 += (double)v[k] * v[k];
    double mean = s / e->numel, var = s2 / e->numel - mean * mean;
    if (e->kind == DSC_KIND_CONV_WEIGHT) {
      /* kaiming_normal_(fan_out, relu): std sqrt(2 / (out*kh*kw)), within sampling error */
      double want = 2.0 / ((double)e->shape[0] * e->shape[2] * e->shape[3]);
      CHECK(fabs(var / want - 1) < 6 * sqrt(2.0 / e->numel), "%s: variance %g, want %g", e->name, var, want);
    } else {
      double want = (e->kind == DSC_KIND_BN_WEIGHT || e->kind == DSC_KIND_BN_VAR) ? 1 : 0;
      CHECK(mean == want && var == 0, "%s: %g", e->name, mean);
    }
  }
  dsc_backbone_free(&m);
  dsc_backbone_free(&m2);
  be->destroy(be);
}

static void test_lr_schedule(void) {
  dsc_lr_schedule s = {0.3, 512, 100, 10};
  CHECK_OK(dsc_lr_schedule_check(&s));
  double scale = 0.3 * 512 / 256;
  CHECK(fabs(dsc_lr_at(&s, 0) - scale * 0.1) < 1e-12, "warm-up step 0: %g", dsc_lr_at(&s, 0));
  CHECK(fabs(dsc_lr_at(&s, 9) - scale) < 1e-12, "warm-up end: %g", dsc_lr_at(&s, 9));
  CHECK(fabs(dsc_lr_at(&s, 10) - scale) < 1e-12, "cosine start: %g", dsc_lr_at(&s, 10));
  CHECK(fabs(dsc_lr_at(&s, 55) - scale * 0.5) < 1e-12, "cosine middle: %g", dsc_lr_at(&s, 55));
  double want = scale * 0.5 * (1 + cos(M_PI * 89.0 / 90.0));
  CHECK(fabs(dsc_lr_at(&s, 99) - want) < 1e-12, "last step %g vs %g", dsc_lr_at(&s, 99), want);
  dsc_lr_schedule none = {0.1, 256, 4, 0};
  CHECK(fabs(dsc_lr_at(&none, 0) - 0.1) < 1e-12, "no warm-up starts at base");
  dsc_lr_schedule bad1 = {0.1, 256, 10, 10}, bad2 = {-1, 256, 10, 0}, bad3 = {0.1, 0, 10, 0};
  CHECK_ERR(dsc_lr_schedule_check(&bad1), "warmup_steps");
  CHECK_ERR(dsc_lr_schedule_check(&bad2), "optim.lr");
  CHECK_ERR(dsc_lr_schedule_check(&bad3), "data.batch");
}

static void test_forward_guards(void) {
  dsc_backend *be = NULL;
  CHECK_OK(dsc_backend_ref_new(&be));
  dsc_backbone m;
  dsc_resnet_config cfg = {18, 1};
  CHECK_OK(dsc_backbone_create(&m, be, &cfg, 1, 0));
  float x[4 * 8 * 8 * 3] = {0};
  CHECK_ERR(dsc_resnet_forward(&m.net, x, 4, 8, 8, 1, 3, NULL), "does not divide");
  CHECK_ERR(dsc_resnet_forward(&m.net, x, 1, 8, 8, 1, 1, NULL), "need more than 1");
  CHECK_ERR(dsc_resnet_backward(&m.net, x), "without a training forward");
  CHECK_ERR(dsc_resnet_forward(&m.net, x, 0, 8, 8, 1, 1, NULL), "empty input");
  dsc_backbone_free(&m);
  be->destroy(be);
}

/* Saves a ResNet-18 and loads it back exactly; a file of another architecture, a partial
 * file and a mis-shaped tensor are refused by name. */
static void test_weights_roundtrip_and_errors(void) {
  char dir[256];
  test_temp_template(dir, sizeof dir, "nn");
  CHECK(mkdtemp(dir) != NULL, "mkdtemp");
  char p18[256], p34[256];
  snprintf(p18, sizeof p18, "%s/r18.safetensors", dir);
  snprintf(p34, sizeof p34, "%s/r34.safetensors", dir);
  dsc_backend *be = NULL;
  CHECK_OK(dsc_backend_ref_new(&be));
  dsc_backbone a, b, c;
  dsc_resnet_config r18 = {18, 0}, r34 = {34, 0};
  CHECK_OK(dsc_backbone_create(&a, be, &r18, 0, 1));
  CHECK_OK(dsc_backbone_create(&b, be, &r18, 0, 2));
  CHECK_OK(dsc_backbone_create(&c, be, &r34, 0, 3));
  CHECK_OK(dsc_backbone_save(&a, p18, 0, NULL, NULL));
  CHECK_OK(dsc_backbone_save(&c, p34, 0, NULL, NULL));
  CHECK_OK(dsc_backbone_load(&b, p18, 0));
  CHECK(memcmp(a.host_params, b.host_params, a.table.param_numel * sizeof(float)) == 0,
        "round trip changed the parameters");
  CHECK_ERR(dsc_backbone_load(&c, p18, 0), "missing");
  CHECK_ERR(dsc_backbone_load(&b, p34, 0), "unexpected [layer1.2.conv1.weight");
  CHECK_OK(dsc_backbone_load(&c, p18, 1)); /* --allow-partial */
  CHECK_ERR(dsc_backbone_load(&b, "/nonexistent.safetensors", 0), "/nonexistent.safetensors");
  dsc_safetensors *f = NULL;
  CHECK_OK(dsc_st_open(p18, &f));
  dsc_resnet_config got;
  const char *prefix;
  if (f) {
    CHECK_OK(dsc_weights_detect_resnet(f, &got, &prefix));
    CHECK(got.depth == 18 && !got.small_stem && !strcmp(prefix, ""), "detected %d", got.depth);
    /* Loading into a small-stem model: conv1.weight is mis-shaped. */
    dsc_table t = {0};
    dsc_resnet net;
    dsc_resnet_config small = {18, 1};
    CHECK_OK(dsc_resnet_init(&net, be, &small, &t, ""));
    float *hp = calloc(t.param_numel, sizeof(float)), *hb = calloc(t.buffer_numel, sizeof(float));
    CHECK_ERR(dsc_weights_load(f, &t, "", "", hp, hb, 0), "mis-shaped [conv1.weight (file [64,3,7,7], model [64,3,3,3])]");
    free(hp), free(hb);
    dsc_resnet_free(&net);
    dsc_table_free(&t);
    dsc_st_close(f);
  }
  dsc_backbone_free(&a);
  dsc_backbone_free(&b);
  dsc_backbone_free(&c);
  be->destroy(be);
  unlink(p18);
  unlink(p34);
  rmdir(dir);
}

static const dsc_test tests[] = {
    {"philox_known_answers", test_philox_known_answers},
    {"rng_distributions", test_rng_distributions},
    {"table", test_table},
    {"resnet_tables", test_resnet_tables},
    {"init_statistics", test_init_statistics},
    {"lr_schedule", test_lr_schedule},
    {"forward_guards", test_forward_guards},
    {"weights_roundtrip_and_errors", test_weights_roundtrip_and_errors},
};
TEST_MAIN(tests)
