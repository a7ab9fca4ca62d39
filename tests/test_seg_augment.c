/* test_seg_augment.c: the segmentation training augmentation (include/dsc/seg_augment.h):
 * determinism, label values, exact output size (canaries past the buffers), flip of image and
 * label together on a known pattern, the padding, the cat_max_ratio retries on a synthetic map
 * with one dominant class, the photometric distortion's range and its leaving the label alone,
 * and odd sizes (1x1, 3x500, 500x3, 1x4000) and huge ratios.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dsc/seg_augment.h"
#include "test.h"

#define CANARY 64

typedef struct out_buf {
  float *x;
  uint8_t *l;
  size_t n; /* crop pixels */
} out_buf;

static out_buf out_new(const dsc_seg_aug_config *c) {
  out_buf o;
  o.n = (size_t)c->crop_w * c->crop_h;
  o.x = malloc((o.n * 3 + CANARY) * sizeof(float));
  o.l = malloc(o.n + CANARY);
  for (size_t i = 0; i < o.n * 3 + CANARY; i++) o.x[i] = -1234.5f;
  memset(o.l, 0xA5, o.n + CANARY);
  return o;
}

static int out_canaries_ok(const out_buf *o) {
  for (size_t i = 0; i < CANARY; i++)
    if (o->x[o->n * 3 + i] != -1234.5f || o->l[o->n + i] != 0xA5) return 0;
  return 1;
}

static void out_free(out_buf *o) {
  free(o->x);
  free(o->l);
}

/* The uint8 value a normalized output sample came from. */
static float unnormalize(float v, int c) { return v * 255.0f * dsc_image_std[c] + 255.0f * dsc_image_mean[c]; }

static dsc_image make_image(int w, int h) {
  dsc_image img = {w, h, malloc((size_t)w * h * 3)};
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++) {
      uint8_t *p = img.rgb + 3 * ((size_t)y * w + x);
      p[0] = (uint8_t)(x * 29 + y * 3);
      p[1] = (uint8_t)(y * 17 + 5);
      p[2] = (uint8_t)(x * y + 100);
    }
  return img;
}

/* A label map with values from {3, 7, 200, 255} in blocks. */
static uint8_t *make_label(int w, int h) {
  static const uint8_t v[4] = {3, 7, 200, 255};
  uint8_t *l = malloc((size_t)w * h);
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++) l[(size_t)y * w + x] = v[(x / 5 + y / 7) % 4];
  return l;
}

/* A config that keeps the image at its size (ratio 1, scale = image size) and crops nothing. */
static dsc_seg_aug_config identity_config(int w, int h) {
  return (dsc_seg_aug_config){.scale_w = w, .scale_h = h, .ratio_min = 1, .ratio_max = 1, .crop_w = w,
                              .crop_h = h, .cat_max_ratio = 1, .flip_prob = 0, .photometric = 0};
}

static void test_deterministic_and_labels(void) {
  dsc_image img = make_image(120, 80);
  uint8_t *lab = make_label(120, 80);
  dsc_seg_aug_config c = dsc_seg_aug_config_voc();
  c.crop_w = c.crop_h = 96;
  out_buf a = out_new(&c), b = out_new(&c), d = out_new(&c);
  int differ = 0;
  for (uint32_t i = 0; i < 12; i++) {
    CHECK_OK(dsc_seg_augment(&c, &img, lab, 42, 1, i, a.x, a.l));
    CHECK_OK(dsc_seg_augment(&c, &img, lab, 42, 1, i, b.x, b.l));
    CHECK_OK(dsc_seg_augment(&c, &img, lab, 43, 1, i, d.x, d.l));
    CHECK(memcmp(a.x, b.x, a.n * 3 * sizeof(float)) == 0 && memcmp(a.l, b.l, a.n) == 0, "image %u: same key, same output", i);
    differ += memcmp(a.x, d.x, a.n * 3 * sizeof(float)) != 0;
    int bad = 0;
    for (size_t p = 0; p < a.n; p++) bad += a.l[p] != 3 && a.l[p] != 7 && a.l[p] != 200 && a.l[p] != 255;
    CHECK(bad == 0, "image %u: %d label values not from the input", i, bad);
    CHECK(out_canaries_ok(&a), "image %u: nothing written past the crop", i);
  }
  CHECK(differ >= 11, "another seed gives other outputs (%d of 12)", differ);
  out_free(&a);
  out_free(&b);
  out_free(&d);
  dsc_image_free(&img);
  free(lab);
}

static void test_identity_and_flip(void) {
  const int w = 9, h = 5;
  dsc_image img = make_image(w, h);
  uint8_t *lab = make_label(w, h);
  dsc_seg_aug_config c = identity_config(w, h);
  out_buf a = out_new(&c), f = out_new(&c);
  CHECK_OK(dsc_seg_augment(&c, &img, lab, 1, 0, 0, a.x, a.l));
  int bad = 0;
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++) {
      size_t p = (size_t)y * w + x;
      for (int ch = 0; ch < 3; ch++) bad += fabsf(unnormalize(a.x[3 * p + ch], ch) - img.rgb[3 * p + ch]) > 1e-3f;
      bad += a.l[p] != lab[p];
    }
  CHECK(bad == 0, "scale 1, no crop: the image and label come back (%d differences)", bad);
  c.flip_prob = 1;
  CHECK_OK(dsc_seg_augment(&c, &img, lab, 1, 0, 0, f.x, f.l));
  bad = 0;
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++) {
      size_t p = (size_t)y * w + x, q = (size_t)y * w + (w - 1 - x);
      for (int ch = 0; ch < 3; ch++) bad += f.x[3 * p + ch] != a.x[3 * q + ch];
      bad += f.l[p] != a.l[q];
    }
  CHECK(bad == 0, "flip mirrors image and label together (%d differences)", bad);
  /* the known pattern: top-left output pixel is the input's top-right */
  CHECK(fabsf(unnormalize(f.x[0], 0) - img.rgb[3 * (w - 1)]) < 1e-3f && f.l[0] == lab[w - 1], "corner");
  /* flip_prob 0.5 flips about half the images */
  c.flip_prob = 0.5;
  int flips = 0;
  for (uint32_t i = 0; i < 200; i++) {
    CHECK_OK(dsc_seg_augment(&c, &img, lab, 5, 0, i, f.x, f.l));
    flips += f.l[0] != a.l[0] || memcmp(f.x, a.x, a.n * 3 * sizeof(float)) != 0;
  }
  CHECK(flips > 70 && flips < 130, "%d of 200 flipped", flips);
  out_free(&a);
  out_free(&f);
  dsc_image_free(&img);
  free(lab);
}

static void test_pad(void) {
  const int w = 10, h = 6;
  dsc_image img = make_image(w, h);
  uint8_t *lab = make_label(w, h);
  dsc_seg_aug_config c = identity_config(w, h);
  c.crop_w = 16;
  c.crop_h = 13;
  out_buf o = out_new(&c);
  CHECK_OK(dsc_seg_augment(&c, &img, lab, 1, 0, 0, o.x, o.l));
  int bad = 0;
  for (int y = 0; y < 13; y++)
    for (int x = 0; x < 16; x++) {
      size_t p = (size_t)y * 16 + x;
      if (y < h && x < w) bad += o.l[p] != lab[(size_t)y * w + x];
      else bad += o.l[p] != 255 || o.x[3 * p] != 0 || o.x[3 * p + 1] != 0 || o.x[3 * p + 2] != 0;
    }
  CHECK(bad == 0 && out_canaries_ok(&o), "image at the top left, label 255 and image 0 around (%d bad)", bad);
  out_free(&o);
  dsc_image_free(&img);
  free(lab);
}

/* mmseg's acceptance test of a window, recomputed from the output label. */
static int window_ok(const uint8_t *l, size_t n, double ratio) {
  size_t count[256] = {0}, total = 0, top = 0, classes = 0;
  for (size_t p = 0; p < n; p++) count[l[p]]++;
  for (int c = 0; c < 255; c++)
    if (count[c]) {
      classes++;
      total += count[c];
      if (count[c] > top) top = count[c];
    }
  return classes > 1 && (double)top / (double)total < ratio;
}

static void test_cat_max_ratio(void) {
  /* class 1 everywhere but a 16x16 corner of class 2 and a strip of ignore */
  const int w = 40, h = 40;
  dsc_image img = make_image(w, h);
  uint8_t *lab = malloc((size_t)w * h);
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++) lab[(size_t)y * w + x] = x < 16 && y < 16 ? 2 : x >= 38 ? 255 : 1;
  dsc_seg_aug_config c = identity_config(w, h);
  c.crop_w = c.crop_h = 16;
  out_buf o = out_new(&c);
  int ok_plain = 0, ok_retry = 0;
  for (uint32_t i = 0; i < 200; i++) {
    c.cat_max_ratio = 1;
    CHECK_OK(dsc_seg_augment(&c, &img, lab, 9, 0, i, o.x, o.l));
    ok_plain += window_ok(o.l, o.n, 0.75);
    c.cat_max_ratio = 0.75;
    CHECK_OK(dsc_seg_augment(&c, &img, lab, 9, 0, i, o.x, o.l));
    ok_retry += window_ok(o.l, o.n, 0.75);
  }
  printf("  windows with no class above 75%%: %d/200 without retries, %d/200 with\n", ok_plain, ok_retry);
  CHECK(ok_plain < 50 && ok_retry > 120, "retries find balanced windows (%d -> %d of 200)", ok_plain, ok_retry);
  /* a map of one class only: every try fails, the 11th window is used, no hang or error */
  memset(lab, 4, (size_t)w * h);
  c.cat_max_ratio = 0.75;
  CHECK_OK(dsc_seg_augment(&c, &img, lab, 9, 0, 0, o.x, o.l));
  CHECK(o.l[0] == 4 && o.l[o.n - 1] == 4, "single class");
  out_free(&o);
  dsc_image_free(&img);
  free(lab);
}

static void test_photometric(void) {
  const int w = 64, h = 48;
  dsc_image img = make_image(w, h);
  /* saturated and grey pixels too, the HSV edge cases */
  for (int x = 0; x < w; x++) {
    uint8_t *p = img.rgb + 3 * x;
    p[0] = x % 2 ? 255 : 0, p[1] = x % 3 ? 255 : 0, p[2] = (uint8_t)(x * 4);
    p = img.rgb + 3 * ((size_t)w + x);
    p[0] = p[1] = p[2] = (uint8_t)(x * 4);
  }
  uint8_t *lab = make_label(w, h);
  dsc_seg_aug_config c = identity_config(w, h);
  out_buf plain = out_new(&c), ph = out_new(&c);
  int changed = 0, off_grid = 0, out_of_range = 0, label_diff = 0;
  for (uint32_t i = 0; i < 40; i++) {
    c.photometric = 0;
    CHECK_OK(dsc_seg_augment(&c, &img, lab, 3, 2, i, plain.x, plain.l));
    c.photometric = 1;
    CHECK_OK(dsc_seg_augment(&c, &img, lab, 3, 2, i, ph.x, ph.l));
    label_diff += memcmp(plain.l, ph.l, plain.n) != 0;
    changed += memcmp(plain.x, ph.x, plain.n * 3 * sizeof(float)) != 0;
    for (size_t p = 0; p < ph.n * 3; p++) {
      float v = unnormalize(ph.x[p], (int)(p % 3));
      out_of_range += v < -1e-3f || v > 255.001f;
      off_grid += fabsf(v - roundf(v)) > 1e-3f;
    }
  }
  CHECK(label_diff == 0, "label untouched (%d differ)", label_diff);
  CHECK(changed > 30, "distortion changes most images (%d of 40)", changed);
  CHECK(out_of_range == 0 && off_grid == 0, "values stay uint8 (%d out of range, %d not integers)", out_of_range, off_grid);
  out_free(&plain);
  out_free(&ph);
  dsc_image_free(&img);
  free(lab);
}

static void test_odd_sizes(void) {
  const int sizes[][2] = {{1, 1}, {3, 500}, {500, 3}, {1, 4000}, {4000, 1}, {2, 2}};
  dsc_seg_aug_config cfgs[2] = {dsc_seg_aug_config_voc(), dsc_seg_aug_config_cityscapes()};
  CHECK(cfgs[1].crop_w == 1024 && cfgs[1].crop_h == 512 && cfgs[1].scale_h == 1024, "cityscapes config");
  for (int k = 0; k < 2; k++) {
    out_buf o = out_new(&cfgs[k]);
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
      dsc_image img = make_image(sizes[s][0], sizes[s][1]);
      uint8_t *lab = make_label(sizes[s][0], sizes[s][1]);
      for (uint32_t i = 0; i < 3; i++) {
        CHECK_OK(dsc_seg_augment(&cfgs[k], &img, lab, 7, 0, i, o.x, o.l));
        int bad = 0;
        for (size_t p = 0; p < o.n; p++) bad += o.l[p] != 3 && o.l[p] != 7 && o.l[p] != 200 && o.l[p] != 255;
        CHECK(bad == 0 && out_canaries_ok(&o), "%dx%d: labels and size", sizes[s][0], sizes[s][1]);
      }
      /* huge ratios: a 50x resize is planned without building the resized image */
      dsc_seg_aug_config big = cfgs[k];
      big.ratio_min = big.ratio_max = 50;
      CHECK_OK(dsc_seg_augment(&big, &img, lab, 7, 0, 0, o.x, o.l));
      CHECK(out_canaries_ok(&o), "ratio 50");
      big.ratio_min = big.ratio_max = 1e12;
      CHECK_ERR(dsc_seg_augment(&big, &img, lab, 7, 0, 0, o.x, o.l), "above 2^30 per side");
      dsc_image_free(&img);
      free(lab);
    }
    out_free(&o);
  }
  dsc_seg_aug_config bad = dsc_seg_aug_config_voc();
  bad.ratio_min = 0;
  dsc_image img = make_image(4, 4);
  uint8_t lab[16] = {0};
  float x[512 * 512 * 3 / 64];
  uint8_t l[16];
  CHECK_ERR(dsc_seg_augment(&bad, &img, lab, 0, 0, 0, x, l), "bad config");
  dsc_image empty = {0, 0, NULL};
  CHECK_ERR(dsc_seg_augment(&bad, &empty, lab, 0, 0, 0, x, l), "empty image");
  dsc_image_free(&img);
}

/* The resize geometry: a 100x50 image under scale 2048x512 at ratio 1 becomes 1024x512 (the
 * short side binds), under 2048x1024 at ratio 0.5 also 1024x512 (long side binds: 1024/100 <
 * 512/50); checked through the crop's pad region of an oversized crop. */
static void test_resize_size(void) {
  dsc_image img = make_image(100, 50);
  uint8_t *lab = make_label(100, 50);
  const struct {
    int sw, sh;
    double r;
    int want_w, want_h;
  } cases[] = {{2048, 512, 1.0, 1024, 512}, {2048, 1024, 0.5, 1024, 512}, {300, 600, 1.0, 600, 300},
               {100, 100, 0.5, 50, 25}, {7, 1000, 1.0, 14, 7}};
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    dsc_seg_aug_config c = identity_config(1, 1);
    c.scale_w = cases[k].sw;
    c.scale_h = cases[k].sh;
    c.ratio_min = c.ratio_max = cases[k].r;
    c.crop_w = 1100;
    c.crop_h = 600;
    out_buf o = out_new(&c);
    CHECK_OK(dsc_seg_augment(&c, &img, lab, 1, 0, 0, o.x, o.l));
    /* the input has 255 blocks too: a column is inside when any of its first want_h rows is
     * not 255 (every column and row of the resized pattern crosses several blocks) */
    int w_ok = 1, h_ok = 1;
    for (int x = 0; x < c.crop_w; x++) {
      int inside = 0;
      for (int y = 0; y < cases[k].want_h && !inside; y++) inside = o.l[(size_t)y * c.crop_w + x] != 255;
      if ((x < cases[k].want_w) != inside) w_ok = 0;
    }
    for (int y = 0; y < c.crop_h; y++) {
      int inside = 0;
      for (int x = 0; x < cases[k].want_w && !inside; x++) inside = o.l[(size_t)y * c.crop_w + x] != 255;
      if ((y < cases[k].want_h) != inside) h_ok = 0;
    }
    CHECK(w_ok && h_ok, "case %zu: resized to %dx%d", k, cases[k].want_w, cases[k].want_h);
    out_free(&o);
  }
  dsc_image_free(&img);
  free(lab);
}

static const dsc_test tests[] = {
    {"deterministic_and_labels", test_deterministic_and_labels},
    {"identity_and_flip", test_identity_and_flip},
    {"pad", test_pad},
    {"cat_max_ratio", test_cat_max_ratio},
    {"photometric", test_photometric},
    {"odd_sizes", test_odd_sizes},
    {"resize_size", test_resize_size},
};

TEST_MAIN(tests)
