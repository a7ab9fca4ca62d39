/* test_fcn.c: the FCN segmentation model of `dsc finetune seg` (include/dsc/fcn.h).
 *
 *  - head_golden_{ref,cpu}: the head's training forward (with a given Dropout2d mask), loss,
 *    backward and BN running statistics, and its evaluation forward, against PyTorch
 *    (tests/golden/fcn_head.safetensors, tools/reference/make_fcn_golden.py). Tolerances: the
 *    reference is float64 (its own float32 run is within 6e-7 of it, the fixture's f32err.*); dsc
 *    computes in float32 with other summation orders, so forward values are checked to 1e-5 and
 *    gradients, which pass through two batch-norm backwards, to 1e-4 relative L2.
 *  - poly_schedule: mmseg's poly learning rate.
 *  - slide_inference: windows that cover the image equal whole-image inference; overlapping
 *    windows average their logits (mmseg's slide_inference).
 *  - tiny_finetune_learns: a ResNet-18 (small stem) with the head, trained for a few dozen steps on
 *    an easy synthetic set (red and blue rectangles on grey noise), whose training loss falls and
 *    whose val mIoU beats the best constant prediction; its evaluation in groups of images (3 per
 *    forward over 8 val images: groups 3, 3, 2) scores as one image at a time.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsc/fcn.h"
#include "dsc/image_write.h"
#include "dsc/rng.h"
#include "dsc/seg_data.h"
#include "dsc/weights.h"
#include "fixture_files.h"
#include "test.h"

#define GOLDEN "tests/golden/fcn_head.safetensors"

static void head_golden(dsc_backend *be) {
  dsc_safetensors *f = NULL;
  CHECK_OK(dsc_st_open(GOLDEN, &f));
  if (!f) return;
  const int N = 2, H5 = 5, W5 = 6, CIN = 32, CH = 16, K = 5, OH = 19, OW = 23;
  dsc_fcn_config cfg = {{18, 0}, {{0}, {0}}, CH, K, 0.1f};
  dsc_fcn m;
  CHECK_OK(dsc_fcn_create_head(&m, be, &cfg, CIN, 7));
  CHECK_OK(dsc_weights_load(f, &m.table, "decode_head.", "decode_head.", m.host_params, m.host_buffers, 0));
  CHECK_OK(dsc_fcn_upload(&m, NULL));

  const size_t n5 = (size_t)N * H5 * W5, nout = (size_t)N * OH * OW;
  float *input = test_fixture_f32(f, "input", n5 * CIN), *mask = test_fixture_f32(f, "mask", (size_t)N * CH);
  const dsc_st_tensor *lt = dsc_st_find(f, "labels");
  CHECK(lt && dsc_st_numel(lt) == nout, "fixture labels");
  if (!input || !mask || !lt) goto done;
  const uint8_t *labels = dsc_st_data(f, lt);
  float scale[2 * 16];
  for (int i = 0; i < N * CH; i++) scale[i] = mask[i] / 0.9f;

  float *c5 = NULL, *dc5 = NULL;
  CHECK_OK(be->alloc(be, n5 * CIN * sizeof(float), (void **)&c5));
  CHECK_OK(be->alloc(be, n5 * CIN * sizeof(float), (void **)&dc5));
  CHECK_OK(be->upload(be, c5, input, n5 * CIN * sizeof(float)));
  CHECK_OK(be->zero(be, m.grads, m.table.param_numel));
  dsc_fcn_step_info info;
  CHECK_OK(dsc_fcn_head_train(&m, c5, N, H5, W5, labels, OH, OW, 0, 0, scale, dc5, &info));
  float *want_loss = test_fixture_f32(f, "loss", 1);
  if (want_loss) CHECK(fabs(info.loss - want_loss[0]) <= 1e-5 * fabs(want_loss[0]), "loss %.8g, PyTorch %.8g", info.loss, want_loss[0]);
  size_t labeled = 0;
  for (size_t i = 0; i < nout; i++) labeled += labels[i] != 255;
  CHECK(info.labeled == (int64_t)labeled, "labeled %lld, want %zu", (long long)info.labeled, labeled);

  /* Activations (NHWC in both). */
  float *got = malloc(nout * K * sizeof(float)), *want;
  CHECK_OK(be->download(be, got, m.logits, n5 * K * sizeof(float)));
  if ((want = test_fixture_f32(f, "logits", n5 * K))) CHECK_CLOSE("logits", got, want, n5 * K, 1e-5);
  free(want);
  CHECK_OK(be->download(be, got, m.up, nout * K * sizeof(float)));
  if ((want = test_fixture_f32(f, "up", nout * K))) CHECK_CLOSE("up", got, want, nout * K, 1e-5);
  free(want);
  float *gin = malloc(n5 * CIN * sizeof(float));
  CHECK_OK(be->download(be, gin, dc5, n5 * CIN * sizeof(float)));
  if ((want = test_fixture_f32(f, "grad.input", n5 * CIN))) CHECK_CLOSE("grad.input", gin, want, n5 * CIN, 1e-4);
  free(want);
  free(gin);

  /* Parameter gradients and running statistics, by name. */
  float *grads = malloc(m.table.param_numel * sizeof(float));
  CHECK_OK(be->download(be, grads, m.grads, m.table.param_numel * sizeof(float)));
  CHECK_OK(dsc_fcn_download(&m, NULL));
  char name[160];
  for (int i = 0; i < m.table.count; i++) {
    const dsc_tensor_entry *e = &m.table.entries[i];
    if (e->role == DSC_ROLE_PARAM) {
      snprintf(name, sizeof name, "grad.%s", e->name);
      if ((want = test_fixture_f32(f, name, e->numel))) CHECK_CLOSE(name, grads + e->offset, want, e->numel, 1e-4);
    } else {
      snprintf(name, sizeof name, "after.%s", e->name);
      if ((want = test_fixture_f32(f, name, e->numel))) CHECK_CLOSE(name, m.host_buffers + e->offset, want, e->numel, 1e-5);
    }
    free(want);
  }
  CHECK(m.head_batches_tracked == 1, "head num_batches_tracked %lld", (long long)m.head_batches_tracked);
  free(grads);

  /* Evaluation forward with the updated running statistics. */
  const float *logits = NULL;
  CHECK_OK(dsc_fcn_head_eval(&m, c5, N, H5, W5, &logits));
  if (logits) {
    CHECK_OK(be->download(be, got, logits, n5 * K * sizeof(float)));
    if ((want = test_fixture_f32(f, "eval.logits", n5 * K))) CHECK_CLOSE("eval.logits", got, want, n5 * K, 1e-5);
    free(want);
  }
  /* A label the model does not have is refused, naming it. */
  uint8_t *bad = malloc(nout);
  memcpy(bad, labels, nout);
  bad[7] = 5;
  CHECK_ERR(dsc_fcn_head_train(&m, c5, N, H5, W5, bad, OH, OW, 1, 0, scale, dc5, &info), "label 5");
  free(bad);
  free(got);
  free(want_loss);
  be->free(be, c5);
  be->free(be, dc5);
done:
  free(input);
  free(mask);
  dsc_fcn_free(&m);
  dsc_st_close(f);
}

static void head_golden_ref(void) {
  dsc_backend *be = NULL;
  CHECK_OK(dsc_backend_ref_new(&be));
  if (be) head_golden(be);
  if (be) be->destroy(be);
}

static void head_golden_cpu(void) {
  dsc_backend *be = NULL;
  CHECK_OK(dsc_backend_cpu_new(2, &be));
  if (be) head_golden(be);
  if (be) be->destroy(be);
}

static void poly_schedule(void) {
  CHECK(dsc_poly_lr(0.01, 1e-4, 0.9, 0, 100) == 0.01, "step 0 is the base rate");
  double want = (0.01 - 1e-4) * pow(0.5, 0.9) + 1e-4;
  CHECK(fabs(dsc_poly_lr(0.01, 1e-4, 0.9, 50, 100) - want) < 1e-15, "half way");
  CHECK(fabs(dsc_poly_lr(0.01, 1e-4, 0.9, 100, 100) - 1e-4) < 1e-15, "the end is min_lr");
  CHECK(dsc_poly_lr(0.01, 0, 1.0, 25, 100) == 0.0075, "power 1 is linear");
}

static void slide_inference(void) {
  dsc_backend *be = NULL;
  CHECK_OK(dsc_backend_cpu_new(2, &be));
  if (!be) return;
  dsc_fcn_config cfg = {{18, 1}, {{0}, {0}}, 8, 3, 0.1f};
  dsc_fcn m;
  CHECK_OK(dsc_fcn_create(&m, be, &cfg, 3));
  const int H = 24, W = 40, K = 3;
  float *x = test_rand_buf((size_t)H * W * 3, 11, -2, 2);
  float *whole = malloc((size_t)H * W * K * sizeof(float)), *slide = malloc((size_t)H * W * K * sizeof(float));
  dsc_fcn_eval_config wc = {0}, sc = {1, 64, 64, 10, 10, 0, 0, 0, 0, 0, 0};
  CHECK_OK(dsc_fcn_infer(&m, x, H, W, &wc, whole));
  CHECK_OK(dsc_fcn_infer(&m, x, H, W, &sc, slide));
  CHECK(memcmp(whole, slide, (size_t)H * W * K * sizeof(float)) == 0, "a window larger than the image is whole inference");
  /* Windows 24x24 at stride 16: columns [0, 24) and [16, 40), averaged on [16, 24). */
  dsc_fcn_eval_config s2 = {1, 24, 24, 16, 16, 0, 0, 0, 0, 0, 0};
  CHECK_OK(dsc_fcn_infer(&m, x, H, W, &s2, slide));
  float *crop = malloc((size_t)H * 24 * 3 * sizeof(float)), *a = malloc((size_t)H * 24 * K * sizeof(float)),
        *b = malloc((size_t)H * 24 * K * sizeof(float));
  for (int y = 0; y < H; y++) memcpy(crop + (size_t)y * 24 * 3, x + (size_t)y * W * 3, 24 * 3 * sizeof(float));
  CHECK_OK(dsc_fcn_infer(&m, crop, H, 24, &wc, a));
  for (int y = 0; y < H; y++) memcpy(crop + (size_t)y * 24 * 3, x + ((size_t)y * W + 16) * 3, 24 * 3 * sizeof(float));
  CHECK_OK(dsc_fcn_infer(&m, crop, H, 24, &wc, b));
  double err = 0;
  for (int y = 0; y < H; y++)
    for (int xx = 0; xx < W; xx++)
      for (int k = 0; k < K; k++) {
        float want = xx < 16 ? a[((size_t)y * 24 + xx) * K + k]
                     : xx >= 24 ? b[((size_t)y * 24 + xx - 16) * K + k]
                                : (a[((size_t)y * 24 + xx) * K + k] + b[((size_t)y * 24 + xx - 16) * K + k]) / 2;
        err = fmax(err, fabs(want - slide[((size_t)y * W + xx) * K + k]));
      }
  CHECK(err < 1e-6, "slide inference differs from the window average by %g", err);
  free(crop);
  free(a);
  free(b);
  free(x);
  free(whole);
  free(slide);
  dsc_fcn_free(&m);
  be->destroy(be);
}

/* An easy set: grey noise with a red rectangle (class 1) and a blue one (class 2) in each image. */
static void write_easy_set(const char *d, int n_train, int n_val, int S) {
  fixture_mkdirs(d, "JPEGImages");
  fixture_mkdirs(d, "SegmentationClass");
  fixture_mkdirs(d, "ImageSets/Segmentation");
  uint8_t *rgb = malloc((size_t)S * S * 3), *lab = malloc((size_t)S * S);
  char rel[128], list_train[8192] = "", list_val[8192] = "";
  for (int k = 0; k < n_train + n_val; k++) {
    for (int p = 0; p < S * S; p++) {
      uint8_t g = (uint8_t)(100 + 40 * dsc_rng_uniform(5, DSC_RNG_BENCH, (uint32_t)k, (uint32_t)p, 0));
      rgb[p * 3] = rgb[p * 3 + 1] = rgb[p * 3 + 2] = g;
      lab[p] = 0;
    }
    for (int c = 1; c <= 2; c++) {
      int w = S / 4 + (int)(dsc_rng_uniform(5, DSC_RNG_BENCH, (uint32_t)k, 100000 + c, 0) * S / 4);
      int h = S / 4 + (int)(dsc_rng_uniform(5, DSC_RNG_BENCH, (uint32_t)k, 100000 + c, 1) * S / 4);
      int x0 = (int)(dsc_rng_uniform(5, DSC_RNG_BENCH, (uint32_t)k, 100000 + c, 2) * (S - w));
      int y0 = (int)(dsc_rng_uniform(5, DSC_RNG_BENCH, (uint32_t)k, 100000 + c, 3) * (S - h));
      for (int y = y0; y < y0 + h; y++)
        for (int x = x0; x < x0 + w; x++) {
          uint8_t *px = rgb + ((size_t)y * S + x) * 3;
          px[0] = c == 1 ? 220 : 30, px[1] = 40, px[2] = c == 1 ? 30 : 220;
          lab[(size_t)y * S + x] = (uint8_t)c;
        }
    }
    char id[32];
    snprintf(id, sizeof id, "img%03d", k);
    snprintf(rel, sizeof rel, "JPEGImages/%s.png", id);
    CHECK_OK(dsc_png_write_rgb(fixture_path(d, rel), S, S, rgb));
    snprintf(rel, sizeof rel, "SegmentationClass/%s.png", id);
    CHECK_OK(dsc_png_write_index(fixture_path(d, rel), S, S, lab, NULL));
    char *list = k < n_train ? list_train : list_val;
    snprintf(list + strlen(list), 8192 - strlen(list), "%s\n", id);
  }
  fixture_write_bytes(fixture_path(d, "ImageSets/Segmentation/train.txt"), list_train, strlen(list_train));
  fixture_write_bytes(fixture_path(d, "ImageSets/Segmentation/val.txt"), list_val, strlen(list_val));
  free(rgb);
  free(lab);
}

static void tiny_finetune_learns(void) {
  char *d = fixture_tmpdir("fcn");
  const int S = 32, B = 8, STEPS = 60;
  write_easy_set(d, 32, 8, S);
  dsc_dataset *train = NULL, *val = NULL;
  CHECK_OK(dsc_dataset_open(&(dsc_dataset_config){d, DSC_DATASET_SEG, "train", 0}, &train));
  CHECK_OK(dsc_dataset_open(&(dsc_dataset_config){d, DSC_DATASET_SEG, "val", 0}, &val));
  dsc_backend *be = NULL;
  CHECK_OK(dsc_backend_cpu_new(2, &be));
  dsc_seg_feeder *feeder = NULL;
  dsc_seg_aug_config aug = {S, S, 1.0, 1.0, S, S, 1.0, 0.5, 0};
  dsc_seg_feeder_config fc = {B, 2, 1, 1, aug, NULL, NULL};
  if (train) CHECK_OK(dsc_seg_feeder_open(train, &fc, &feeder));
  dsc_fcn_config cfg = {{18, 1}, {{0}, {0}}, 64, 3, 0.1f};
  dsc_fcn m;
  memset(&m, 0, sizeof m);
  if (be) CHECK_OK(dsc_fcn_create(&m, be, &cfg, 1));
  float *x = NULL;
  if (be) CHECK_OK(be->alloc(be, (size_t)B * S * S * 3 * sizeof(float), (void **)&x));
  const dsc_sgd_config sgd = {0.9f, 5e-4f, 0};
  double first = 0, last = 0;
  for (int s = 0; feeder && m.be && x && s < STEPS && !test_current_failed; s++) {
    const dsc_seg_batch *b = NULL;
    CHECK_OK(dsc_seg_feeder_get(feeder, s, &b));
    if (!b) break;
    CHECK_OK(be->upload(be, x, b->images, (size_t)B * S * S * 3 * sizeof(float)));
    dsc_fcn_step_info info;
    CHECK_OK(dsc_fcn_train_step(&m, x, b->labels, B, S, S, s, 1, &sgd, dsc_poly_lr(0.1, 1e-4, 0.9, s, STEPS), &info));
    CHECK(isfinite(info.loss), "step %d loss %g", s, info.loss);
    if (s < 5) first += info.loss / 5;
    if (s >= STEPS - 5) last += info.loss / 5;
  }
  CHECK(last < 0.5 * first, "training loss %.4f over the first 5 steps, %.4f over the last 5: it did not fall by half",
        first, last);
  if (val && m.be && !test_current_failed) {
    /* Images of one size share a forward within max_pixels: the same scores as one at a time, up to
     * argmax near-ties from the convolutions' batch-dependent summation order. */
    dsc_fcn_eval_config ec = {0}, grouped = {0};
    grouped.max_pixels = 3 * S * S;
    dsc_seg_scores sc = {0}, sg = {0};
    CHECK_OK(dsc_fcn_evaluate(&m, val, &ec, &sc));
    CHECK_OK(dsc_fcn_evaluate(&m, val, &grouped, &sg));
    CHECK(sc.labeled == sg.labeled && fabs(sc.pixel_acc - sg.pixel_acc) < 1e-3,
          "grouped evaluation: pixel accuracy %.6f, one image at a time %.6f", sg.pixel_acc, sc.pixel_acc);
    dsc_seg_scores_free(&sg);
    /* The best constant prediction (all background) scores IoU_bg = background share < 1 on
     * class 0 and 0 on the others: mIoU < 1/3. */
    CHECK(sc.miou > 0.5, "val mIoU %.3f does not beat the best constant prediction (< 0.334) by a margin", sc.miou);
    printf("  tiny fine-tune: loss %.4f -> %.4f, val mIoU %.3f, pixel accuracy %.3f\n", first, last, sc.miou,
           sc.pixel_acc);
    dsc_seg_scores_free(&sc);
  }
  if (x) be->free(be, x);
  if (m.be) dsc_fcn_free(&m);
  dsc_seg_feeder_free(feeder);
  if (be) be->destroy(be);
  dsc_dataset_free(train);
  dsc_dataset_free(val);
  fixture_rm_rf(d);
  free(d);
}

static const dsc_test tests[] = {
    {"head_golden_ref", head_golden_ref},
    {"head_golden_cpu", head_golden_cpu},
    {"poly_schedule", poly_schedule},
    {"slide_inference", slide_inference},
    {"tiny_finetune_learns", tiny_finetune_learns},
};

TEST_MAIN(tests)
