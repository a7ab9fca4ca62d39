/* test_augment.c: the two-view augmentation (src/data/augment.c) against torchvision 0.14 and
 * the statistics of its draws.
 *
 * Fixtures (tests/golden/augment/, written by tools/reference/make_augment_fixtures.py): a 64x48
 * RGB image and label map, and for each case of cases.txt (parameters fixed by hand) torchvision's
 * normalized 32x32 output and its nearest-resampled label map. Files are found under
 * tests/golden/augment/ (run from the repository root) or $DSC_TEST_AUGMENT.
 *
 * Tolerances are absolute, in normalized units (1/std ~ 4.4 times the [0,1] scale): float32
 * against torch float32 differs by summation order (resize, contrast mean, blur: torch convolves
 * with the 2-D outer-product kernel, we apply the 1-D kernel twice) and by the rounding of the
 * hue conversion's divisions.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsc/augment.h"
#include "test.h"

#define FIX_W 64
#define FIX_H 48
#define FIX_S 32

static const char *fix_dir(void) {
  const char *d = getenv("DSC_TEST_AUGMENT");
  return d && *d ? d : "tests/golden/augment";
}

/* Reads exactly `size` bytes of fix_dir()/name into buf; returns 0 on success. */
static int fix_read(const char *name, void *buf, size_t size) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", fix_dir(), name);
  FILE *f = fopen(path, "rb");
  if (!f) {
    printf("  cannot open %s\n", path);
    return -1;
  }
  size_t got = fread(buf, 1, size, f);
  int extra = fgetc(f);
  fclose(f);
  if (got != size || extra != EOF) {
    printf("  %s: expected %zu bytes\n", path, size);
    return -1;
  }
  return 0;
}

static double max_abs_diff(const float *a, const float *b, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; i++) {
    double d = fabs((double)a[i] - (double)b[i]);
    if (!(d <= m)) m = d; /* NaN propagates */
  }
  return m;
}

/* Tolerance of a case by its name prefix: max |C - torch| in normalized units. */
static double case_tolerance(const char *name) {
  /* measured: hue and jitter <= 4e-6, chains and blur <= 2.4e-6, the rest <= 1.7e-6 */
  if (!strncmp(name, "hue", 3)) return 2e-5;    /* HSV round trip: divisions, floor of h * 6 */
  if (!strncmp(name, "jitter", 6)) return 2e-5; /* includes a hue shift */
  if (!strncmp(name, "chain", 5)) return 2e-5;  /* every op, hue included */
  if (!strncmp(name, "blur", 4)) return 1e-5;   /* separable vs 2-D kernel summation order */
  return 1e-5; /* crop/resize, brightness, contrast (mean summation order), saturation, gray, flip */
}

static void test_golden_cases(void) {
  uint8_t *rgb = malloc(FIX_W * FIX_H * 3), *lab = malloc(FIX_W * FIX_H);
  float *want = malloc(sizeof(float) * FIX_S * FIX_S * 3), *got = malloc(sizeof(float) * FIX_S * FIX_S * 3);
  uint8_t want_lab[FIX_S * FIX_S], got_lab[FIX_S * FIX_S];
  CHECK(fix_read("src_64x48.rgb", rgb, FIX_W * FIX_H * 3) == 0, "source image");
  CHECK(fix_read("label_64x48.u8", lab, FIX_W * FIX_H) == 0, "label map");
  char path[512];
  snprintf(path, sizeof path, "%s/cases.txt", fix_dir());
  FILE *f = fopen(path, "r");
  CHECK(f != NULL, "cannot open %s", path);
  if (!f || test_current_failed) goto done;
  dsc_image img = {FIX_W, FIX_H, rgb};
  dsc_aug_config cfg;
  dsc_aug_config_default(&cfg, FIX_S);
  char line[512];
  int cases = 0;
  while (fgets(line, sizeof line, f)) {
    char name[64];
    dsc_aug_params p;
    memset(&p, 0, sizeof p);
    int n = sscanf(line, "%63s %d %d %d %d %d %d %d %d %d %f %f %f %f %d %d %f %d", name, &p.crop_top,
                   &p.crop_left, &p.crop_h, &p.crop_w, &p.jitter, &p.order[0], &p.order[1], &p.order[2],
                   &p.order[3], &p.brightness, &p.contrast, &p.saturation, &p.hue, &p.gray, &p.blur,
                   &p.sigma, &p.flip);
    CHECK(n == 18, "cases.txt line \"%s\": %d fields", line, n);
    if (n != 18) continue;
    char fname[128];
    snprintf(fname, sizeof fname, "%s.f32", name);
    CHECK(fix_read(fname, want, sizeof(float) * FIX_S * FIX_S * 3) == 0, "%s", fname);
    snprintf(fname, sizeof fname, "%s.lbl", name);
    CHECK(fix_read(fname, want_lab, sizeof want_lab) == 0, "%s", fname);
    CHECK_OK(dsc_aug_apply(&cfg, &p, &img, got, lab, got_lab));
    double err = max_abs_diff(got, want, (size_t)FIX_S * FIX_S * 3), tol = case_tolerance(name);
    printf("  %-16s max |C - torchvision| = %.2e (tolerance %.0e)\n", name, err, tol);
    CHECK(err <= tol, "%s: max abs error %.3g > %.3g", name, err, tol);
    int lab_bad = 0;
    for (int i = 0; i < FIX_S * FIX_S; i++) lab_bad += got_lab[i] != want_lab[i];
    CHECK(lab_bad == 0, "%s: %d label pixels differ from torch's nearest", name, lab_bad);
    cases++;
  }
  fclose(f);
  CHECK(cases >= 20, "only %d cases read", cases);
done:
  free(rgb);
  free(lab);
  free(want);
  free(got);
}

static void test_config_default(void) {
  dsc_aug_config c;
  dsc_aug_config_default(&c, 224);
  CHECK(c.size == 224, "size");
  CHECK(c.scale_min == 0.2f && c.scale_max == 1.0f, "scale");
  CHECK(c.ratio_min == 0.75f && fabsf(c.ratio_max - 4.0f / 3.0f) < 1e-7f, "ratio");
  CHECK(c.jitter_p == 0.8f && c.brightness == 0.4f && c.contrast == 0.4f && c.saturation == 0.4f &&
            c.hue == 0.1f, "jitter");
  CHECK(c.gray_p == 0.2f, "gray");
  CHECK(c.blur_p == 0.5f && c.sigma_min == 0.1f && c.sigma_max == 2.0f, "blur");
  CHECK(c.flip_p == 0.5f, "flip");
}

static void test_blur_kernel_size(void) {
  CHECK(dsc_aug_blur_kernel_size(0.1f) == 3, "0.1");
  CHECK(dsc_aug_blur_kernel_size(0.9f) == 7, "0.9");
  CHECK(dsc_aug_blur_kernel_size(1.0f) == 7, "1.0");
  CHECK(dsc_aug_blur_kernel_size(2.0f) == 13, "2.0");
}

static int params_equal(const dsc_aug_params *a, const dsc_aug_params *b) {
  return memcmp(a, b, sizeof *a) == 0;
}

static void test_draw_pure(void) {
  dsc_aug_config cfg;
  dsc_aug_config_default(&cfg, 224);
  dsc_aug_params a, b;
  dsc_aug_draw(&cfg, 500, 375, 42, 3, 17, 0, &a);
  dsc_aug_draw(&cfg, 500, 375, 42, 3, 17, 0, &b);
  CHECK(params_equal(&a, &b), "same arguments, different parameters");
  /* different view, image, epoch or seed: different crops almost surely; over 50 images at
   * least 45 must differ in the crop */
  int diff_view = 0, diff_index = 0, diff_epoch = 0, diff_seed = 0;
  for (uint32_t i = 0; i < 50; i++) {
    dsc_aug_params q, k;
    dsc_aug_draw(&cfg, 500, 375, 42, 3, i, 0, &q);
    dsc_aug_draw(&cfg, 500, 375, 42, 3, i, 1, &k);
    diff_view += q.crop_top != k.crop_top || q.crop_w != k.crop_w || q.crop_left != k.crop_left;
    dsc_aug_draw(&cfg, 500, 375, 42, 3, i + 1000, 0, &k);
    diff_index += q.crop_top != k.crop_top || q.crop_w != k.crop_w || q.crop_left != k.crop_left;
    dsc_aug_draw(&cfg, 500, 375, 42, 4, i, 0, &k);
    diff_epoch += q.crop_top != k.crop_top || q.crop_w != k.crop_w || q.crop_left != k.crop_left;
    dsc_aug_draw(&cfg, 500, 375, 43, 3, i, 0, &k);
    diff_seed += q.crop_top != k.crop_top || q.crop_w != k.crop_w || q.crop_left != k.crop_left;
  }
  CHECK(diff_view >= 45 && diff_index >= 45 && diff_epoch >= 45 && diff_seed >= 45,
        "views %d, images %d, epochs %d, seeds %d of 50 differ", diff_view, diff_index, diff_epoch,
        diff_seed);
}

/* |observed rate - p| within 5 standard errors over n draws. */
static void check_rate(const char *what, int hits, int n, double p) {
  double rate = (double)hits / n, se = sqrt(p * (1 - p) / n);
  CHECK(fabs(rate - p) <= 5 * se, "%s rate %.4f, expected %.2f +- %.4f", what, rate, p, 5 * se);
}

static void test_draw_statistics(void) {
  dsc_aug_config cfg;
  dsc_aug_config_default(&cfg, 224);
  const int N = 20000, W = 500, H = 375;
  int jit = 0, gray = 0, blur = 0, flip = 0, bad = 0, perm_count[24] = {0};
  double min_frac = 1e9, max_frac = 0, min_ratio = 1e9, max_ratio = 0, sum_log_ratio = 0;
  double sum_sigma = 0, sum_b = 0, sum_h = 0;
  int left_lo = 0, left_hi = 0; /* crops touching the left / right edge: both must happen */
  for (int i = 0; i < N; i++) {
    dsc_aug_params p;
    dsc_aug_draw(&cfg, W, H, 7, 1, (uint32_t)i, (uint32_t)(i & 1), &p);
    if (p.crop_h < 1 || p.crop_w < 1 || p.crop_top < 0 || p.crop_left < 0 || p.crop_top + p.crop_h > H ||
        p.crop_left + p.crop_w > W)
      bad++;
    double frac = (double)p.crop_w * p.crop_h / ((double)W * H), ratio = (double)p.crop_w / p.crop_h;
    min_frac = fmin(min_frac, frac);
    max_frac = fmax(max_frac, frac);
    min_ratio = fmin(min_ratio, ratio);
    max_ratio = fmax(max_ratio, ratio);
    sum_log_ratio += log(ratio);
    left_lo += p.crop_left == 0;
    left_hi += p.crop_left + p.crop_w == W;
    if (p.jitter) {
      jit++;
      sum_b += p.brightness;
      sum_h += p.hue;
      if (p.brightness < 0.6f || p.brightness > 1.4f || p.contrast < 0.6f || p.contrast > 1.4f ||
          p.saturation < 0.6f || p.saturation > 1.4f || p.hue < -0.1f || p.hue > 0.1f)
        bad++;
      int seen = 0, code = 0;
      for (int k = 0; k < 4; k++) {
        if (p.order[k] >= 0 && p.order[k] < 4) seen |= 1 << p.order[k];
      }
      if (seen != 15) bad++;
      /* Lehmer code of the permutation -> 0..23 */
      for (int k = 0; k < 4; k++) {
        int smaller = 0;
        for (int m = k + 1; m < 4; m++) smaller += p.order[m] < p.order[k];
        code = code * (4 - k) + smaller;
      }
      if (code >= 0 && code < 24) perm_count[code]++;
    } else if (p.brightness != 1.0f || p.contrast != 1.0f || p.saturation != 1.0f || p.hue != 0.0f) {
      bad++;
    }
    gray += p.gray;
    if (p.blur) {
      blur++;
      sum_sigma += p.sigma;
      if (p.sigma < 0.1f || p.sigma > 2.0f) bad++;
    }
    flip += p.flip;
  }
  CHECK(bad == 0, "%d draws out of range", bad);
  /* rounding w and h to pixels moves the area fraction and ratio by well under 2% here */
  CHECK(min_frac >= 0.2 * 0.98 && max_frac <= 1.0, "area fraction in [%.4f, %.4f]", min_frac, max_frac);
  CHECK(min_frac < 0.21, "smallest area fraction %.4f: the low end is never drawn", min_frac);
  CHECK(min_ratio >= 0.75 * 0.98 && max_ratio <= 4.0 / 3.0 * 1.02, "ratio in [%.4f, %.4f]", min_ratio,
        max_ratio);
  CHECK(min_ratio < 0.77 && max_ratio > 1.30, "ratio range [%.4f, %.4f] too narrow", min_ratio, max_ratio);
  CHECK(left_lo > 100 && left_hi > 100, "crops at the left edge %d, right edge %d", left_lo, left_hi);
  check_rate("jitter", jit, N, 0.8);
  check_rate("gray", gray, N, 0.2);
  check_rate("blur", blur, N, 0.5);
  check_rate("flip", flip, N, 0.5);
  /* uniform factors: mean brightness 1 (sd 0.4/sqrt(3)), mean hue 0, mean sigma 1.05 */
  CHECK(fabs(sum_b / jit - 1.0) < 5 * 0.2309 / sqrt(jit), "mean brightness %.4f", sum_b / jit);
  CHECK(fabs(sum_h / jit) < 5 * 0.0577 / sqrt(jit), "mean hue %.4f", sum_h / jit);
  CHECK(fabs(sum_sigma / blur - 1.05) < 5 * 0.5485 / sqrt(blur), "mean sigma %.4f", sum_sigma / blur);
  (void)sum_log_ratio;
  /* every order of the four jitter operations, each with probability 1/24 */
  double pp = 1.0 / 24, se = sqrt(pp * (1 - pp) / jit);
  for (int c = 0; c < 24; c++)
    CHECK(fabs((double)perm_count[c] / jit - pp) <= 5 * se, "order %d drawn %d of %d", c, perm_count[c], jit);
}

/* For a square image, the accepted crops of torchvision's rule: the mean area fraction and the
 * log ratio's symmetry. */
static void test_draw_crop_square(void) {
  dsc_aug_config cfg;
  dsc_aug_config_default(&cfg, 224);
  const int N = 20000, W = 400;
  double sum_log_ratio = 0, sum_log_ratio2 = 0;
  for (int i = 0; i < N; i++) {
    dsc_aug_params p;
    dsc_aug_draw(&cfg, W, W, 99, 0, (uint32_t)i, 0, &p);
    double lr = log((double)p.crop_w / p.crop_h);
    sum_log_ratio += lr;
    sum_log_ratio2 += lr * lr;
  }
  double mean = sum_log_ratio / N, sd = sqrt(sum_log_ratio2 / N - mean * mean);
  /* the square image rejects wide and tall crops alike: the log ratio stays centred */
  CHECK(fabs(mean) < 5 * sd / sqrt(N), "mean log ratio %.5f (sd %.4f)", mean, sd);
}

static void test_draw_fallback(void) {
  dsc_aug_config cfg;
  dsc_aug_config_default(&cfg, 224);
  dsc_aug_params p;
  /* 1000x10: no try fits (h >= sqrt(2000 / (4/3)) > 10), so the centre crop with ratio 4/3 */
  for (uint32_t i = 0; i < 20; i++) {
    dsc_aug_draw(&cfg, 1000, 10, 5, 0, i, 0, &p);
    CHECK(p.crop_h == 10 && p.crop_w == 13 && p.crop_top == 0 && p.crop_left == 493,
          "wide fallback: top %d left %d %dx%d", p.crop_top, p.crop_left, p.crop_h, p.crop_w);
    dsc_aug_draw(&cfg, 10, 1000, 5, 0, i, 0, &p);
    CHECK(p.crop_w == 10 && p.crop_h == 13 && p.crop_left == 0 && p.crop_top == 493,
          "tall fallback: top %d left %d %dx%d", p.crop_top, p.crop_left, p.crop_h, p.crop_w);
  }
  /* 1x1 image: the fallback is the whole pixel; apply works on it */
  dsc_aug_draw(&cfg, 1, 1, 5, 0, 0, 0, &p);
  CHECK(p.crop_h == 1 && p.crop_w == 1 && p.crop_top == 0 && p.crop_left == 0, "1x1");
  /* no pixels: an empty crop */
  dsc_aug_draw(&cfg, 0, 5, 5, 0, 0, 0, &p);
  CHECK(p.crop_h == 0 && p.crop_w == 0, "0x5 image: crop %dx%d", p.crop_h, p.crop_w);

  /* apply the wide fallback to a 1000x10 image with a label map (checked by ASan) */
  uint8_t *rgb = malloc(1000 * 10 * 3), *lab = malloc(1000 * 10), lab_out[16 * 16];
  for (int i = 0; i < 1000 * 10 * 3; i++) rgb[i] = (uint8_t)(i * 7);
  for (int i = 0; i < 1000 * 10; i++) lab[i] = (uint8_t)(i % 1000 >= 493 && i % 1000 < 506 ? 4 : 9);
  dsc_image img = {1000, 10, rgb};
  dsc_aug_config_default(&cfg, 16);
  float out[16 * 16 * 3];
  dsc_aug_draw(&cfg, 1000, 10, 5, 0, 0, 0, &p);
  p.flip = 0;
  CHECK_OK(dsc_aug_apply(&cfg, &p, &img, out, lab, lab_out));
  int lbad = 0;
  for (int i = 0; i < 16 * 16; i++) lbad += lab_out[i] != 4; /* the crop's columns 493..505 are class 4 */
  CHECK(lbad == 0, "%d label pixels outside the centre crop's class", lbad);
  free(rgb);
  free(lab);
}

/* Drawn parameters on various image sizes, including tiny outputs where the blur's reflect
 * padding is wider than the image: outputs are finite, labels come from the source. */
static void test_apply_drawn(void) {
  const int sizes[][3] = {{500, 375, 24}, {37, 53, 16}, {3, 2, 4}, {1, 1, 2}, {64, 48, 1}, {90, 7, 5}};
  for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
    int W = sizes[si][0], H = sizes[si][1], S = sizes[si][2];
    uint8_t *rgb = malloc((size_t)W * H * 3), *lab = malloc((size_t)W * H), *lab_out = malloc((size_t)S * S);
    float *out = malloc(sizeof(float) * S * S * 3);
    for (int i = 0; i < W * H * 3; i++) rgb[i] = (uint8_t)((i * 131) ^ (i >> 3));
    for (int i = 0; i < W * H; i++) lab[i] = (uint8_t)(i % 5 == 4 ? 255 : i % 5);
    dsc_image img = {W, H, rgb};
    dsc_aug_config cfg;
    dsc_aug_config_default(&cfg, S);
    for (uint32_t v = 0; v < 40; v++) {
      dsc_aug_params p;
      dsc_aug_draw(&cfg, W, H, 11, 2, v / 2, v % 2, &p);
      if (v == 0) { /* force every op once */
        p.jitter = p.gray = p.blur = p.flip = 1;
        p.sigma = 2.0f;
        p.brightness = 1.2f;
        p.contrast = 0.8f;
        p.saturation = 1.3f;
        p.hue = 0.1f;
      }
      CHECK_OK(dsc_aug_apply(&cfg, &p, &img, out, lab, lab_out));
      int bad = 0;
      for (int i = 0; i < S * S * 3; i++) bad += !isfinite(out[i]) || fabsf(out[i]) > 3.0f;
      for (int i = 0; i < S * S; i++) bad += !(lab_out[i] < 5 || lab_out[i] == 255);
      CHECK(bad == 0, "%dx%d -> %d, view %u: %d bad values", W, H, S, v, bad);
    }
    free(rgb);
    free(lab);
    free(lab_out);
    free(out);
  }
}

/* The flip mirrors the unflipped output exactly (image and label). */
static void test_apply_flip_mirrors(void) {
  uint8_t *rgb = malloc(FIX_W * FIX_H * 3), *lab = malloc(FIX_W * FIX_H), l0[20 * 20], l1[20 * 20];
  for (int i = 0; i < FIX_W * FIX_H * 3; i++) rgb[i] = (uint8_t)(i * 37 + (i >> 5));
  for (int i = 0; i < FIX_W * FIX_H; i++) lab[i] = (uint8_t)(i % 17);
  dsc_image img = {FIX_W, FIX_H, rgb};
  dsc_aug_config cfg;
  dsc_aug_config_default(&cfg, 20);
  dsc_aug_params p = {.crop_top = 4, .crop_left = 9, .crop_h = 33, .crop_w = 27, .jitter = 1,
                      .order = {3, 0, 2, 1}, .brightness = 1.1f, .contrast = 0.9f, .saturation = 1.2f,
                      .hue = 0.05f, .blur = 1, .sigma = 1.7f};
  float a[20 * 20 * 3], b[20 * 20 * 3];
  CHECK_OK(dsc_aug_apply(&cfg, &p, &img, a, lab, l0));
  p.flip = 1;
  CHECK_OK(dsc_aug_apply(&cfg, &p, &img, b, lab, l1));
  int bad = 0;
  for (int y = 0; y < 20; y++)
    for (int x = 0; x < 20; x++) {
      for (int c = 0; c < 3; c++) bad += a[(y * 20 + x) * 3 + c] != b[(y * 20 + 19 - x) * 3 + c];
      bad += l0[y * 20 + x] != l1[y * 20 + 19 - x];
    }
  CHECK(bad == 0, "%d values are not mirrored", bad);
  free(rgb);
  free(lab);
}

static void test_apply_errors(void) {
  uint8_t rgb[8 * 6 * 3] = {0}, lab[8 * 6] = {0}, lab_out[4 * 4];
  dsc_image img = {8, 6, rgb};
  dsc_aug_config cfg;
  dsc_aug_config_default(&cfg, 4);
  float out[4 * 4 * 3];
  dsc_aug_params p = {.crop_top = 0, .crop_left = 0, .crop_h = 6, .crop_w = 8, .order = {0, 1, 2, 3},
                      .brightness = 1, .contrast = 1, .saturation = 1};
  CHECK_OK(dsc_aug_apply(&cfg, &p, &img, out, lab, lab_out));
  dsc_aug_params q = p;
  q.crop_top = 1;
  CHECK_ERR(dsc_aug_apply(&cfg, &q, &img, out, NULL, NULL), "outside");
  q = p;
  q.crop_w = 0;
  CHECK_ERR(dsc_aug_apply(&cfg, &q, &img, out, NULL, NULL), "outside");
  q = p;
  q.crop_left = -1;
  CHECK_ERR(dsc_aug_apply(&cfg, &q, &img, out, NULL, NULL), "outside");
  q = p;
  q.jitter = 1;
  q.order[2] = 0;
  CHECK_ERR(dsc_aug_apply(&cfg, &q, &img, out, NULL, NULL), "permutation");
  q = p;
  q.jitter = 1;
  q.hue = 0.6f;
  CHECK_ERR(dsc_aug_apply(&cfg, &q, &img, out, NULL, NULL), "hue");
  q = p;
  q.blur = 1;
  q.sigma = 0.0f;
  CHECK_ERR(dsc_aug_apply(&cfg, &q, &img, out, NULL, NULL), "sigma");
  CHECK_ERR(dsc_aug_apply(&cfg, &p, &img, out, lab, NULL), "together");
  dsc_aug_config bad = cfg;
  bad.size = 0;
  CHECK_ERR(dsc_aug_apply(&bad, &p, &img, out, NULL, NULL), "size");
  dsc_image empty = {0, 0, NULL};
  CHECK_ERR(dsc_aug_apply(&cfg, &p, &empty, out, NULL, NULL), "empty");
}

static const dsc_test tests[] = {
    {"golden_cases", test_golden_cases},
    {"config_default", test_config_default},
    {"blur_kernel_size", test_blur_kernel_size},
    {"draw_pure", test_draw_pure},
    {"draw_statistics", test_draw_statistics},
    {"draw_crop_square", test_draw_crop_square},
    {"draw_fallback", test_draw_fallback},
    {"apply_drawn", test_apply_drawn},
    {"apply_flip_mirrors", test_apply_flip_mirrors},
    {"apply_errors", test_apply_errors},
};

TEST_MAIN(tests)
