/* test_seg_data.c: the FCN fine-tuning inputs (include/dsc/seg_data.h): feeder batches equal to
 * dsc_seg_augment applied directly to the permuted images (across an epoch boundary, with 1 and
 * 3 threads, steps asked out of order), bad files replaced and reported once (or an error naming
 * the file under strict), freeing at any moment, the config errors, a Cityscapes-layout dataset
 * through the feeder, and the evaluation images (resize geometry and pixels, labels untouched).
 *
 * Fixtures are small VOC / Cityscapes folders written under /tmp and removed at the end.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsc/dataset.h"
#include "dsc/image_write.h"
#include "dsc/rng.h"
#include "dsc/seg_data.h"
#include "fixture_files.h"
#include "test.h"

/* An RGB PNG of w x h whose pixels depend on seed. */
static void write_rgb(const char *path, int w, int h, int seed) {
  uint8_t *px = malloc((size_t)w * h * 3);
  for (int i = 0; i < w * h * 3; i++) px[i] = (uint8_t)(seed * 31 + 7 * i + (i * i) % 13);
  CHECK_OK(dsc_png_write_rgb(path, w, h, px));
  free(px);
}

/* A grey label PNG of w x h: three classes in vertical bands plus some ignore pixels. */
static void write_label(const char *path, int w, int h, int seed) {
  uint8_t *m = malloc((size_t)w * h);
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++)
      m[y * w + x] = (x + y + seed) % 11 == 0 ? 255 : (uint8_t)(1 + (seed + 3 * x / w) % 5);
  CHECK_OK(dsc_png_write_index(path, w, h, m, NULL));
  free(m);
}

/* A VOC folder with n images "i<k>" of varied sizes listed in train.txt; `corrupt` (or -1) gets
 * a text file as its image, `missized` (or -1) a label map of the wrong size. */
static char *make_voc(int n, int corrupt, int missized) {
  char *d = fixture_tmpdir("seg_data");
  fixture_mkdirs(d, "JPEGImages");
  fixture_mkdirs(d, "SegmentationClass");
  fixture_mkdirs(d, "ImageSets/Segmentation");
  char rel[256], list[1024] = "";
  for (int k = 0; k < n; k++) {
    int w = 14 + 3 * k, h = 10 + (5 * k) % 9;
    snprintf(rel, sizeof rel, "JPEGImages/i%d.png", k);
    if (k == corrupt) fixture_write_bytes(fixture_path(d, rel), "not an image", 12);
    else write_rgb(fixture_path(d, rel), w, h, k);
    snprintf(rel, sizeof rel, "SegmentationClass/i%d.png", k);
    write_label(fixture_path(d, rel), k == missized ? w + 1 : w, h, k);
    snprintf(list + strlen(list), sizeof list - strlen(list), "i%d\n", k);
  }
  fixture_write_bytes(fixture_path(d, "ImageSets/Segmentation/train.txt"), list, strlen(list));
  return d;
}

static dsc_dataset *open_ds(const char *d, dsc_dataset_format fmt) {
  dsc_dataset *ds = NULL;
  CHECK_OK(dsc_dataset_open(&(dsc_dataset_config){.path = d, .format = fmt}, &ds));
  return ds;
}

static dsc_seg_aug_config small_aug(void) {
  return (dsc_seg_aug_config){.scale_w = 40, .scale_h = 24, .ratio_min = 0.5, .ratio_max = 2.0, .crop_w = 16,
                              .crop_h = 12, .cat_max_ratio = 0.75, .flip_prob = 0.5, .photometric = 1};
}

typedef struct warn_log {
  int calls;
  char last[1200];
} warn_log;

static void count_warn(void *ctx, const char *msg) {
  warn_log *w = ctx;
  w->calls++;
  snprintf(w->last, sizeof w->last, "%s", msg);
}

/* The batch of `step` computed directly (header's rule): permutation, next usable image,
 * dsc_seg_augment. Buffers hold B images. */
static void ref_batch(const dsc_dataset *ds, const dsc_seg_feeder_config *cfg, int64_t step, float *img,
                      uint8_t *lab, uint32_t *idx) {
  size_t n = dsc_dataset_size(ds), B = (size_t)cfg->batch, per = n / B;
  uint32_t e = (uint32_t)(step / (int64_t)per);
  size_t b = (size_t)(step % (int64_t)per);
  uint32_t *perm = malloc(n * sizeof *perm);
  for (size_t i = 0; i < n; i++) perm[i] = (uint32_t)i;
  for (size_t i = n - 1; i > 0; i--) {
    size_t j = (size_t)(dsc_rng_uniform(cfg->seed, DSC_RNG_SHUFFLE, e, (uint32_t)i, 0) * (double)(i + 1));
    uint32_t t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
  size_t px = (size_t)cfg->aug.crop_w * cfg->aug.crop_h;
  for (size_t k = 0; k < B; k++) {
    for (size_t t = 0; t < n; t++) {
      size_t i = (perm[b * B + k] + t) % n;
      dsc_image im;
      uint8_t *map = NULL;
      dsc_status *st = dsc_dataset_load(ds, i, &im, NULL, &map);
      if (st) {
        dsc_status_free(st);
        continue;
      }
      CHECK_OK(dsc_seg_augment(&cfg->aug, &im, map, cfg->seed, e, (uint32_t)i, img + k * px * 3, lab + k * px));
      idx[k] = (uint32_t)i;
      dsc_image_free(&im);
      free(map);
      break;
    }
  }
  free(perm);
}

/* Checks the feeder's batch of `step` against ref_batch, bitwise. */
static void check_step(dsc_seg_feeder *f, const dsc_dataset *ds, const dsc_seg_feeder_config *cfg, int64_t step) {
  const dsc_seg_batch *b = NULL;
  CHECK_OK(dsc_seg_feeder_get(f, step, &b));
  if (!b) return;
  size_t B = (size_t)cfg->batch, px = (size_t)cfg->aug.crop_w * cfg->aug.crop_h;
  float *img = malloc(B * px * 3 * sizeof *img);
  uint8_t *lab = malloc(B * px);
  uint32_t *idx = malloc(B * sizeof *idx);
  ref_batch(ds, cfg, step, img, lab, idx);
  CHECK(b->n == cfg->batch && b->h == cfg->aug.crop_h && b->w == cfg->aug.crop_w && b->step == step,
        "step %lld: batch %d x %dx%d, step %lld", (long long)step, b->n, b->h, b->w, (long long)b->step);
  CHECK(memcmp(b->indices, idx, B * sizeof *idx) == 0, "step %lld: indices differ (%u vs %u)", (long long)step,
        b->indices[0], idx[0]);
  CHECK(memcmp(b->images, img, B * px * 3 * sizeof *img) == 0, "step %lld: images differ", (long long)step);
  CHECK(memcmp(b->labels, lab, B * px) == 0, "step %lld: labels differ", (long long)step);
  free(img);
  free(lab);
  free(idx);
}

static void test_batches_match_direct(void) {
  char *d = make_voc(7, -1, -1);
  dsc_dataset *ds = open_ds(d, DSC_DATASET_SEG);
  if (ds) {
    dsc_seg_feeder_config cfg = {.batch = 3, .threads = 1, .seed = 17, .aug = small_aug()};
    for (int threads = 1; threads <= 3; threads += 2) {
      cfg.threads = threads;
      dsc_seg_feeder *f = NULL;
      CHECK_OK(dsc_seg_feeder_open(ds, &cfg, &f));
      if (!f) continue;
      CHECK(dsc_seg_feeder_batches_per_epoch(f) == 2, "%lld batches per epoch",
            (long long)dsc_seg_feeder_batches_per_epoch(f));
      /* in order across two epoch boundaries (2 batches per epoch), then out of order */
      for (int64_t s = 0; s < 5; s++) check_step(f, ds, &cfg, s);
      check_step(f, ds, &cfg, 5);
      check_step(f, ds, &cfg, 2);
      check_step(f, ds, &cfg, 3);
      check_step(f, ds, &cfg, 3); /* the same step twice */
      check_step(f, ds, &cfg, 0);
      CHECK(dsc_seg_feeder_bad_count(f) == 0, "%zu bad", dsc_seg_feeder_bad_count(f));
      dsc_seg_feeder_free(f);
    }
    /* a batch of the whole dataset: every image once per epoch */
    cfg.batch = 7;
    cfg.threads = 2;
    dsc_seg_feeder *f = NULL;
    CHECK_OK(dsc_seg_feeder_open(ds, &cfg, &f));
    if (f) {
      const dsc_seg_batch *b = NULL;
      CHECK_OK(dsc_seg_feeder_get(f, 1, &b));
      int seen[7] = {0};
      for (int k = 0; b && k < 7; k++) seen[b->indices[k] % 7]++;
      int all = 1;
      for (int k = 0; k < 7; k++) all &= seen[k] == 1;
      CHECK(b && all, "each image once in a whole-dataset batch");
      check_step(f, ds, &cfg, 1);
    }
    dsc_seg_feeder_free(f);
  }
  dsc_dataset_free(ds);
  fixture_rm_rf(d);
  free(d);
}

/* The same steps from feeders with 1 and 3 threads, compared with each other. */
static void test_threads_agree(void) {
  char *d = make_voc(6, -1, -1);
  dsc_dataset *ds = open_ds(d, DSC_DATASET_SEG);
  if (ds) {
    dsc_seg_feeder_config cfg = {.batch = 2, .threads = 1, .seed = 5, .aug = small_aug()};
    dsc_seg_feeder *f1 = NULL, *f3 = NULL;
    CHECK_OK(dsc_seg_feeder_open(ds, &cfg, &f1));
    cfg.threads = 3;
    CHECK_OK(dsc_seg_feeder_open(ds, &cfg, &f3));
    size_t px = 16 * 12;
    for (int64_t s = 0; f1 && f3 && s < 7; s++) {
      const dsc_seg_batch *a = NULL, *b = NULL;
      CHECK_OK(dsc_seg_feeder_get(f1, s, &a));
      CHECK_OK(dsc_seg_feeder_get(f3, s, &b));
      if (!a || !b) break;
      CHECK(memcmp(a->images, b->images, 2 * px * 3 * sizeof(float)) == 0 && memcmp(a->labels, b->labels, 2 * px) == 0 &&
                memcmp(a->indices, b->indices, 2 * sizeof(uint32_t)) == 0,
            "step %lld differs between 1 and 3 threads", (long long)s);
    }
    dsc_seg_feeder_free(f1);
    dsc_seg_feeder_free(f3);
  }
  dsc_dataset_free(ds);
  fixture_rm_rf(d);
  free(d);
}

static void test_bad_files(void) {
  /* image 2 is not an image, image 4's label map is one column too wide */
  char *d = make_voc(6, 2, 4);
  dsc_dataset *ds = open_ds(d, DSC_DATASET_SEG);
  if (ds) {
    warn_log log = {0};
    dsc_seg_feeder_config cfg = {.batch = 2, .threads = 2, .seed = 3, .aug = small_aug(), .warn = count_warn,
                                 .warn_ctx = &log};
    dsc_seg_feeder *f = NULL;
    CHECK_OK(dsc_seg_feeder_open(ds, &cfg, &f));
    /* two epochs (3 batches each): every image asked for twice */
    for (int64_t s = 0; f && s < 6; s++) {
      check_step(f, ds, &cfg, s);
      const dsc_seg_batch *b = NULL;
      CHECK_OK(dsc_seg_feeder_get(f, s, &b));
      for (int k = 0; b && k < 2; k++)
        CHECK(b->indices[k] != 2 && b->indices[k] != 4, "step %lld uses bad image %u", (long long)s, b->indices[k]);
    }
    if (f) {
      CHECK(dsc_seg_feeder_bad_count(f) == 2 && log.calls == 2, "%zu bad, %d warnings", dsc_seg_feeder_bad_count(f),
            log.calls);
      const char *p0 = NULL, *r0 = NULL, *p1 = NULL, *r1 = NULL;
      dsc_seg_feeder_bad_file(f, 0, &p0, &r0);
      dsc_seg_feeder_bad_file(f, 1, &p1, &r1);
      int found_img = 0, found_map = 0;
      for (int q = 0; q < 2; q++) {
        const char *p = q ? p1 : p0, *r = q ? r1 : r0;
        if (p && strstr(p, "JPEGImages/i2.png")) found_img = 1;
        if (p && strstr(p, "JPEGImages/i4.png") && r && strstr(r, "SegmentationClass/i4.png")) found_map = 1;
      }
      CHECK(found_img && found_map, "bad files: %s (%s), %s (%s)", p0 ? p0 : "-", r0 ? r0 : "-", p1 ? p1 : "-",
            r1 ? r1 : "-");
      CHECK(strstr(log.last, "skipping bad image") != NULL, "warning: %s", log.last);
      const char *p = NULL, *r = NULL;
      dsc_seg_feeder_bad_file(f, 2, &p, &r);
      CHECK(p == NULL && r == NULL, "no third bad file");
    }
    dsc_seg_feeder_free(f);
    f = NULL;
    /* strict: the step holding image 2 fails naming it; the warning is never called */
    cfg.strict = 1;
    log.calls = 0;
    CHECK_OK(dsc_seg_feeder_open(ds, &cfg, &f));
    int failed = 0;
    for (int64_t s = 0; f && s < 3; s++) {
      const dsc_seg_batch *b = NULL;
      dsc_status *st = dsc_seg_feeder_get(f, s, &b);
      if (st) {
        CHECK(strstr(st->msg, "JPEGImages/i2.png") || strstr(st->msg, "SegmentationClass/i4.png"), "error: %s",
              st->msg);
        CHECK(b == NULL, "no batch with an error");
        failed++;
        dsc_status_free(st);
      }
    }
    CHECK(failed >= 1 && log.calls == 0, "%d steps failed under strict, %d warnings", failed, log.calls);
    dsc_seg_feeder_free(f);
  }
  dsc_dataset_free(ds);
  fixture_rm_rf(d);
  free(d);
  /* no usable image at all */
  d = make_voc(2, 0, 1);
  ds = open_ds(d, DSC_DATASET_SEG);
  if (ds) {
    warn_log log = {0};
    dsc_seg_feeder_config cfg = {.batch = 1, .threads = 1, .aug = small_aug(), .warn = count_warn, .warn_ctx = &log};
    dsc_seg_feeder *f = NULL;
    CHECK_OK(dsc_seg_feeder_open(ds, &cfg, &f));
    const dsc_seg_batch *b = NULL;
    if (f) CHECK_ERR(dsc_seg_feeder_get(f, 0, &b), "no usable image");
    dsc_seg_feeder_free(f);
  }
  dsc_dataset_free(ds);
  fixture_rm_rf(d);
  free(d);
}

static void test_free_anytime(void) {
  char *d = make_voc(8, -1, -1);
  dsc_dataset *ds = open_ds(d, DSC_DATASET_SEG);
  if (ds) {
    dsc_seg_aug_config big = small_aug();
    big.scale_w = 400; /* slower images, so freeing meets work in flight */
    big.scale_h = 300;
    big.crop_w = 200;
    big.crop_h = 150;
    dsc_seg_feeder_config cfg = {.batch = 4, .threads = 3, .seed = 9, .aug = big};
    dsc_seg_feeder *f = NULL;
    /* right after open */
    CHECK_OK(dsc_seg_feeder_open(ds, &cfg, &f));
    dsc_seg_feeder_free(f);
    f = NULL;
    /* right after get (step 1 is being prefetched) */
    CHECK_OK(dsc_seg_feeder_open(ds, &cfg, &f));
    const dsc_seg_batch *b = NULL;
    if (f) CHECK_OK(dsc_seg_feeder_get(f, 0, &b));
    CHECK(b != NULL, "batch 0");
    dsc_seg_feeder_free(f);
    f = NULL;
    /* right after an out-of-order get that discarded the prefetch */
    CHECK_OK(dsc_seg_feeder_open(ds, &cfg, &f));
    if (f) CHECK_OK(dsc_seg_feeder_get(f, 0, &b));
    if (f) CHECK_OK(dsc_seg_feeder_get(f, 7, &b));
    CHECK(b != NULL && b->step == 7, "batch 7");
    dsc_seg_feeder_free(f);
    dsc_seg_feeder_free(NULL);
  }
  dsc_dataset_free(ds);
  fixture_rm_rf(d);
  free(d);
}

static void test_config_errors(void) {
  char *d = make_voc(3, -1, -1);
  dsc_dataset *ds = open_ds(d, DSC_DATASET_SEG);
  if (ds) {
    dsc_seg_feeder *f = NULL;
    dsc_seg_feeder_config cfg = {.batch = 0, .threads = 1, .aug = small_aug()};
    CHECK_ERR(dsc_seg_feeder_open(ds, &cfg, &f), "got 0");
    cfg.batch = 4;
    CHECK_ERR(dsc_seg_feeder_open(ds, &cfg, &f), "got 4");
    cfg.batch = 3;
    cfg.threads = 0;
    CHECK_ERR(dsc_seg_feeder_open(ds, &cfg, &f), "threads must be in [1, 256] (got 0)");
    cfg.threads = 1;
    cfg.aug.crop_w = 0;
    CHECK_ERR(dsc_seg_feeder_open(ds, &cfg, &f), "crop 0x12");
    cfg.aug = small_aug();
    cfg.aug.ratio_min = 0;
    CHECK_ERR(dsc_seg_feeder_open(ds, &cfg, &f), "ratio [0, 2]");
    cfg.aug = small_aug();
    cfg.aug.ratio_max = 0.25;
    CHECK_ERR(dsc_seg_feeder_open(ds, &cfg, &f), "ratio [0.5, 0.25]");
    CHECK(f == NULL, "nothing opened");
    cfg.aug = small_aug();
    CHECK_OK(dsc_seg_feeder_open(ds, &cfg, &f));
    const dsc_seg_batch *b = NULL;
    if (f) CHECK_ERR(dsc_seg_feeder_get(f, -1, &b), "step -1");
    dsc_seg_feeder_free(f);
    dsc_seg_eval_item it;
    CHECK_ERR(dsc_seg_eval_load(ds, 3, 0, 0, &it), "image 3 outside");
    CHECK_ERR(dsc_seg_eval_load(ds, 0, 512, 0, &it), "scale 512x0");
    CHECK(it.image == NULL && it.label == NULL, "nothing allocated");
  }
  dsc_dataset_free(ds);
  /* a dataset without label maps */
  ds = open_ds(fixture_path(d, "JPEGImages"), DSC_DATASET_FOLDER);
  if (ds) {
    dsc_seg_feeder *f = NULL;
    dsc_seg_feeder_config cfg = {.batch = 1, .threads = 1, .aug = small_aug()};
    CHECK_ERR(dsc_seg_feeder_open(ds, &cfg, &f), "label maps");
    dsc_seg_eval_item it;
    CHECK_ERR(dsc_seg_eval_load(ds, 0, 0, 0, &it), "label maps");
  }
  dsc_dataset_free(ds);
  fixture_rm_rf(d);
  free(d);
}

static void test_cityscapes_feeder(void) {
  char *d = fixture_tmpdir("seg_data");
  fixture_mkdirs(d, "leftImg8bit/train/bonn");
  fixture_mkdirs(d, "gtFine/train/bonn");
  char rel[256];
  for (int k = 0; k < 3; k++) {
    int w = 24, h = 12;
    snprintf(rel, sizeof rel, "leftImg8bit/train/bonn/bonn_%06d_000019_leftImg8bit.png", k);
    write_rgb(fixture_path(d, rel), w, h, k);
    uint8_t m[24 * 12];
    for (int p = 0; p < w * h; p++) m[p] = (uint8_t)((p / 3 + k) % 34); /* label ids 0..33 */
    snprintf(rel, sizeof rel, "gtFine/train/bonn/bonn_%06d_000019_gtFine_labelIds.png", k);
    CHECK_OK(dsc_png_write_index(fixture_path(d, rel), w, h, m, NULL));
  }
  dsc_dataset *ds = open_ds(d, DSC_DATASET_CITYSCAPES);
  if (ds) {
    dsc_seg_feeder_config cfg = {.batch = 2, .threads = 2, .seed = 11, .aug = small_aug()};
    dsc_seg_feeder *f = NULL;
    CHECK_OK(dsc_seg_feeder_open(ds, &cfg, &f));
    if (f) {
      check_step(f, ds, &cfg, 0);
      const dsc_seg_batch *b = NULL;
      CHECK_OK(dsc_seg_feeder_get(f, 0, &b));
      int bad = 0, train = 0;
      for (int p = 0; b && p < 2 * 16 * 12; p++) {
        bad += b->labels[p] >= DSC_CITYSCAPES_CLASSES && b->labels[p] != 255;
        train += b->labels[p] < DSC_CITYSCAPES_CLASSES;
      }
      CHECK(b && !bad && train > 0, "%d labels outside the train ids, %d train ids", bad, train);
    }
    dsc_seg_feeder_free(f);
  }
  dsc_dataset_free(ds);
  fixture_rm_rf(d);
  free(d);
}

static void test_eval_items(void) {
  char *d = fixture_tmpdir("seg_data");
  fixture_mkdirs(d, "JPEGImages");
  fixture_mkdirs(d, "SegmentationClass");
  fixture_mkdirs(d, "ImageSets/Segmentation");
  write_rgb(fixture_path(d, "JPEGImages/a.png"), 40, 30, 1);
  write_label(fixture_path(d, "SegmentationClass/a.png"), 40, 30, 1);
  const uint8_t two[6] = {0, 10, 20, 100, 110, 120}; /* 2x1: (0,10,20) then (100,110,120) */
  CHECK_OK(dsc_png_write_rgb(fixture_path(d, "JPEGImages/b.png"), 2, 1, two));
  write_label(fixture_path(d, "SegmentationClass/b.png"), 2, 1, 2);
  fixture_write_bytes(fixture_path(d, "ImageSets/Segmentation/val.txt"), "a\nb\n", 4);
  dsc_dataset *ds = NULL;
  CHECK_OK(dsc_dataset_open(&(dsc_dataset_config){.path = d, .format = DSC_DATASET_SEG, .split = "val"}, &ds));
  if (ds) {
    float mean[3], std[3];
    for (int c = 0; c < 3; c++) {
      mean[c] = (float)(255.0 * dsc_image_mean[c]);
      std[c] = (float)(255.0 * dsc_image_std[c]);
    }
    dsc_image im;
    uint8_t *map = NULL;
    CHECK_OK(dsc_dataset_load(ds, 0, &im, NULL, &map));
    /* 40x30 at scale 2048x512: f = min(2048 / 40, 512 / 30) = 17.07 -> 683 x 512 */
    dsc_seg_eval_item it;
    CHECK_OK(dsc_seg_eval_load(ds, 0, 2048, 512, &it));
    CHECK(it.w == 683 && it.h == 512 && it.label_w == 40 && it.label_h == 30, "%dx%d, label %dx%d", it.w, it.h,
          it.label_w, it.label_h);
    if (it.image && map && it.w == 683 && it.h == 512) {
      CHECK(memcmp(it.label, map, 40 * 30) == 0, "label untouched");
      /* the same resampler as dsc_seg_augment: ratio 1, no crop, flip or distortion */
      dsc_seg_aug_config a = {.scale_w = 2048, .scale_h = 512, .ratio_min = 1, .ratio_max = 1, .crop_w = 700,
                              .crop_h = 520, .cat_max_ratio = 1, .flip_prob = 0, .photometric = 0};
      float *o = malloc((size_t)700 * 520 * 3 * sizeof *o);
      uint8_t *l = malloc((size_t)700 * 520);
      CHECK_OK(dsc_seg_augment(&a, &im, map, 1, 0, 0, o, l));
      int diff = 0;
      for (int y = 0; y < 512; y++)
        diff += memcmp(it.image + (size_t)y * 683 * 3, o + (size_t)y * 700 * 3, 683 * 3 * sizeof *o) != 0;
      CHECK(diff == 0, "%d rows differ from dsc_seg_augment's resize", diff);
      free(o);
      free(l);
    }
    dsc_seg_eval_item_free(&it);
    CHECK(it.image == NULL && it.label == NULL, "freed");
    /* scale 0x0: the image's own size, only normalized */
    CHECK_OK(dsc_seg_eval_load(ds, 0, 0, 0, &it));
    CHECK(it.w == 40 && it.h == 30, "%dx%d", it.w, it.h);
    int bad = 0;
    for (int p = 0; it.image && im.rgb && p < 40 * 30 * 3; p++)
      bad += it.image[p] != ((float)im.rgb[p] - mean[p % 3]) / std[p % 3];
    CHECK(it.image && bad == 0, "%d values differ from (v - 255 mean) / (255 std)", bad);
    dsc_seg_eval_item_free(&it);
    dsc_image_free(&im);
    free(map);
    /* 2x1 at scale 4x2 (f = 2), by hand: OpenCV's source positions (d + 0.5) / 2 - 0.5 are -0.25, 0.25,
     * 0.75, 1.25, clamped at the edges: p0, 0.75 p0 + 0.25 p1, 0.25 p0 + 0.75 p1, p1 (both rows alike) */
    CHECK_OK(dsc_seg_eval_load(ds, 1, 4, 2, &it));
    CHECK(it.w == 4 && it.h == 2 && it.label_w == 2 && it.label_h == 1, "%dx%d", it.w, it.h);
    if (it.image && it.w == 4 && it.h == 2) {
      const uint8_t want[4][3] = {{0, 10, 20}, {25, 35, 45}, {75, 85, 95}, {100, 110, 120}};
      int wrong = 0;
      for (int y = 0; y < 2; y++)
        for (int x = 0; x < 4; x++)
          for (int c = 0; c < 3; c++)
            wrong += it.image[(y * 4 + x) * 3 + c] != ((float)want[x][c] - mean[c]) / std[c];
      CHECK(wrong == 0, "%d values differ from the hand-computed resize", wrong);
    }
    dsc_seg_eval_item_free(&it);
  }
  dsc_dataset_free(ds);
  fixture_rm_rf(d);
  free(d);
}

static const dsc_test tests[] = {
    {"batches_match_direct", test_batches_match_direct},
    {"threads_agree", test_threads_agree},
    {"bad_files", test_bad_files},
    {"free_anytime", test_free_anytime},
    {"config_errors", test_config_errors},
    {"cityscapes_feeder", test_cityscapes_feeder},
    {"eval_items", test_eval_items},
};

TEST_MAIN(tests)
