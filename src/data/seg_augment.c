/* seg_augment.c: mmsegmentation's FCN training augmentation (include/dsc/seg_augment.h).
 *
 * Conventions: images are RGB8 row-major, label maps one byte per pixel, outputs NHWC floats.
 * The resized image is never materialized: the crop window is chosen on the resized geometry
 * (the label sampled by nearest neighbour on the fly for the cat_max_ratio test) and only the
 * window's pixels are resampled. Random draws use fixed counter slots (below) so adding a draw
 * never shifts another. The bilinear resampler and the normalization are also used by the
 * evaluation images of seg_data.c, through data/seg_resize.h.
 */
#include "dsc/seg_augment.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "data/seg_resize.h"
#include "dsc/rng.h"

/* Counter slots of dsc_rng_uniform(seed, DSC_RNG_SEG_AUGMENT, epoch, image, slot). */
enum {
  SLOT_RATIO = 0,
  SLOT_CROP = 1, /* try k (0..10): offset y at 1 + 2k, offset x at 2 + 2k */
  SLOT_FLIP = 30,
  SLOT_BRIGHT_ON = 40,
  SLOT_BRIGHT_DELTA = 41,
  SLOT_MODE = 42,
  SLOT_CONTRAST_ON = 43,
  SLOT_CONTRAST_ALPHA = 44,
  SLOT_SAT_ON = 45,
  SLOT_SAT_ALPHA = 46,
  SLOT_HUE_ON = 47,
  SLOT_HUE_DELTA = 48,
};

#define SEG_CROP_TRIES 10
#define SEG_MAX_SIDE (1 << 30)

dsc_seg_aug_config dsc_seg_aug_config_voc(void) {
  return (dsc_seg_aug_config){.scale_w = 2048, .scale_h = 512, .ratio_min = 0.5, .ratio_max = 2.0,
                              .crop_w = 512, .crop_h = 512, .cat_max_ratio = 0.75, .flip_prob = 0.5,
                              .photometric = 1};
}

dsc_seg_aug_config dsc_seg_aug_config_cityscapes(void) {
  dsc_seg_aug_config c = dsc_seg_aug_config_voc();
  c.scale_h = 1024;
  c.crop_w = 1024;
  return c;
}

typedef struct seg_key {
  uint64_t seed;
  uint32_t epoch, image;
} seg_key;

static double seg_u(const seg_key *k, uint32_t slot) {
  return dsc_rng_uniform(k->seed, DSC_RNG_SEG_AUGMENT, k->epoch, k->image, slot);
}

/* numpy's randint(lo, hi): an integer in [lo, hi). */
static int seg_randint(const seg_key *k, uint32_t slot, int lo, int hi) {
  int v = lo + (int)floor(seg_u(k, slot) * (double)(hi - lo));
  return v < hi ? v : hi - 1;
}

/* ---- (a) resize geometry ---- */

/* OpenCV INTER_NEAREST source index of destination index d. */
static int seg_nearest(int d, int src, int dst) {
  double ifx = 1.0 / ((double)dst / (double)src);
  int s = (int)floor(d * ifx);
  return s < src - 1 ? s : src - 1;
}

/* OpenCV INTER_LINEAR taps of destination index d: s0, s1 and 11-bit weights w0 + w1 = 2048. */
static void seg_linear(int d, int src, int dst, int *s0, int *s1, int *w1) {
  double scale = (double)src / (double)dst;
  float f = (float)((d + 0.5) * scale - 0.5);
  int s = (int)floorf(f);
  f -= (float)s;
  if (s < 0) f = 0, s = 0;
  if (s >= src - 1) f = 0, s = src - 1;
  *s0 = s;
  *s1 = s + 1 < src ? s + 1 : src - 1;
  *w1 = (int)lrintf(f * 2048.0f);
}

void dsc_seg_linear_taps(int x0, int n, int src, int dst, int *tap) {
  for (int x = 0; x < n; x++) seg_linear(x0 + x, src, dst, &tap[3 * x], &tap[3 * x + 1], &tap[3 * x + 2]);
}

void dsc_seg_linear_row(const dsc_image *img, int y, int nh, const int *tap, int n, uint8_t *out) {
  const int w = img->w;
  int y0, y1, wy1;
  seg_linear(y, img->h, nh, &y0, &y1, &wy1);
  const int64_t wy0 = 2048 - wy1;
  const uint8_t *r0 = img->rgb + (size_t)y0 * w * 3, *r1 = img->rgb + (size_t)y1 * w * 3;
  for (int x = 0; x < n; x++) {
    const int x0 = 3 * tap[3 * x], x1 = 3 * tap[3 * x + 1];
    const int64_t wx1 = tap[3 * x + 2], wx0 = 2048 - wx1;
    for (int c = 0; c < 3; c++) {
      int64_t a = r0[x0 + c] * wx0 + r0[x1 + c] * wx1, b = r1[x0 + c] * wx0 + r1[x1 + c] * wx1;
      out[3 * x + c] = (uint8_t)((a * wy0 + b * wy1 + ((int64_t)1 << 21)) >> 22);
    }
  }
}

/* ---- (e) normalization ---- */

void dsc_seg_normalize(const uint8_t *px, size_t n, float *out) {
  float mean[3], std[3];
  for (int c = 0; c < 3; c++) {
    mean[c] = (float)(255.0 * dsc_image_mean[c]);
    std[c] = (float)(255.0 * dsc_image_std[c]);
  }
  for (size_t i = 0; i < n; i++)
    for (int c = 0; c < 3; c++) out[3 * i + c] = ((float)px[3 * i + c] - mean[c]) / std[c];
}

/* ---- (d) photometric distortion on uint8 RGB ---- */

/* numpy: (img.astype(float32) * alpha + beta).clip(0, 255).astype(uint8) */
static uint8_t seg_convert(uint8_t v, float alpha, float beta) {
  float x = (float)v * alpha + beta;
  if (x < 0) x = 0;
  if (x > 255) x = 255;
  return (uint8_t)x;
}

static int seg_floor_shift12(int64_t x) { return (int)(x >= 0 ? x >> 12 : -((-x + 4095) >> 12)); }

/* OpenCV's 8-bit RGB -> HSV (H in [0, 180)), its integer tables and rounding. */
static void seg_rgb2hsv(const uint8_t *p, uint8_t *hsv) {
  int r = p[0], g = p[1], b = p[2];
  int v = b > g ? b : g;
  v = v > r ? v : r;
  int vmin = b < g ? b : g;
  vmin = vmin < r ? vmin : r;
  int diff = v - vmin;
  int64_t sdiv = v ? (int64_t)lrint((255 << 12) / (double)v) : 0;
  int64_t hdiv = diff ? (int64_t)lrint((180 << 12) / (6.0 * diff)) : 0;
  int s = seg_floor_shift12(diff * sdiv + (1 << 11));
  int h = v == r ? g - b : v == g ? b - r + 2 * diff : r - g + 4 * diff;
  h = seg_floor_shift12(h * hdiv + (1 << 11));
  if (h < 0) h += 180;
  hsv[0] = (uint8_t)h;
  hsv[1] = (uint8_t)s;
  hsv[2] = (uint8_t)v;
}

static uint8_t seg_sat_u8(float x) {
  long v = lrintf(x * 255.0f);
  return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* OpenCV's 8-bit HSV -> RGB (through its float conversion, rounded). */
static void seg_hsv2rgb(const uint8_t *hsv, uint8_t *p) {
  float h = hsv[0], s = hsv[1] * (1.0f / 255.0f), v = hsv[2] * (1.0f / 255.0f), r, g, b;
  if (s == 0) {
    r = g = b = v;
  } else {
    static const int sector_data[6][3] = {{1, 3, 0}, {1, 0, 2}, {3, 0, 1}, {0, 2, 1}, {0, 1, 3}, {2, 1, 0}};
    h *= 6.0f / 180.0f;
    while (h >= 6) h -= 6;
    int sector = (int)floorf(h);
    h -= (float)sector;
    if (sector < 0 || sector >= 6) sector = 0, h = 0;
    float tab[4] = {v, v * (1.0f - s), v * (1.0f - s * h), v * (1.0f - s * (1.0f - h))};
    b = tab[sector_data[sector][0]];
    g = tab[sector_data[sector][1]];
    r = tab[sector_data[sector][2]];
  }
  p[0] = seg_sat_u8(r);
  p[1] = seg_sat_u8(g);
  p[2] = seg_sat_u8(b);
}

static void seg_contrast(const seg_key *k, uint8_t *px, size_t n) {
  if (seg_randint(k, SLOT_CONTRAST_ON, 0, 2) == 0) return;
  float alpha = (float)(0.5 + seg_u(k, SLOT_CONTRAST_ALPHA));
  for (size_t i = 0; i < 3 * n; i++) px[i] = seg_convert(px[i], alpha, 0);
}

static void seg_photometric(const seg_key *k, uint8_t *px, size_t n) {
  if (seg_randint(k, SLOT_BRIGHT_ON, 0, 2)) {
    float beta = (float)(-32.0 + 64.0 * seg_u(k, SLOT_BRIGHT_DELTA));
    for (size_t i = 0; i < 3 * n; i++) px[i] = seg_convert(px[i], 1, beta);
  }
  int mode = seg_randint(k, SLOT_MODE, 0, 2);
  if (mode == 1) seg_contrast(k, px, n);
  if (seg_randint(k, SLOT_SAT_ON, 0, 2)) {
    float alpha = (float)(0.5 + seg_u(k, SLOT_SAT_ALPHA));
    for (size_t i = 0; i < n; i++) {
      uint8_t hsv[3];
      seg_rgb2hsv(px + 3 * i, hsv);
      hsv[1] = seg_convert(hsv[1], alpha, 0);
      seg_hsv2rgb(hsv, px + 3 * i);
    }
  }
  if (seg_randint(k, SLOT_HUE_ON, 0, 2)) {
    int delta = seg_randint(k, SLOT_HUE_DELTA, -18, 18);
    for (size_t i = 0; i < n; i++) {
      uint8_t hsv[3];
      seg_rgb2hsv(px + 3 * i, hsv);
      hsv[0] = (uint8_t)(((hsv[0] + delta) % 180 + 180) % 180);
      seg_hsv2rgb(hsv, px + 3 * i);
    }
  }
  if (mode == 0) seg_contrast(k, px, n);
}

/* ---- the pipeline ---- */

/* 1 when the label window (ch x cw at oy, ox of the nw x nh resized map) passes mmseg's test:
 * more than one non-ignored class and the largest below cat_max_ratio of the non-ignored pixels. */
static int seg_window_ok(const uint8_t *label, int w, int h, int nw, int nh, int oy, int ox, int ch, int cw,
                         double cat_max_ratio, int *xmap) {
  size_t count[256] = {0};
  for (int x = 0; x < cw; x++) xmap[x] = seg_nearest(ox + x, w, nw);
  for (int y = 0; y < ch; y++) {
    const uint8_t *row = label + (size_t)seg_nearest(oy + y, h, nh) * (size_t)w;
    for (int x = 0; x < cw; x++) count[row[xmap[x]]]++;
  }
  size_t classes = 0, total = 0, top = 0;
  for (int c = 0; c < 255; c++) {
    if (!count[c]) continue;
    classes++;
    total += count[c];
    if (count[c] > top) top = count[c];
  }
  return classes > 1 && (double)top / (double)total < cat_max_ratio;
}

dsc_status *dsc_seg_augment(const dsc_seg_aug_config *cfg, const dsc_image *img, const uint8_t *label,
                            uint64_t seed, uint32_t epoch, uint32_t image, float *out_hwc,
                            uint8_t *out_label) {
  if (!img || !img->rgb || img->w < 1 || img->h < 1 || !label)
    return dsc_errorf("seg augment: empty image or missing label map");
  if (cfg->scale_w < 1 || cfg->scale_h < 1 || cfg->crop_w < 1 || cfg->crop_h < 1 ||
      !(cfg->ratio_min > 0) || !(cfg->ratio_max >= cfg->ratio_min) || !isfinite(cfg->ratio_max))
    return dsc_errorf("seg augment: bad config (scale %dx%d, ratio [%g, %g], crop %dx%d)", cfg->scale_w,
                      cfg->scale_h, cfg->ratio_min, cfg->ratio_max, cfg->crop_w, cfg->crop_h);
  const seg_key key = {seed, epoch, image};
  const int w = img->w, h = img->h;

  /* (a) the resized size */
  double ratio = cfg->ratio_min + seg_u(&key, SLOT_RATIO) * (cfg->ratio_max - cfg->ratio_min);
  double tw = floor(cfg->scale_w * ratio), th = floor(cfg->scale_h * ratio);
  double t_long = tw > th ? tw : th, t_short = tw < th ? tw : th;
  double f_long = t_long / (double)(w > h ? w : h), f_short = t_short / (double)(w < h ? w : h);
  double f = f_long < f_short ? f_long : f_short;
  double dw = floor(w * f + 0.5), dh = floor(h * f + 0.5);
  if (dw > SEG_MAX_SIDE || dh > SEG_MAX_SIDE)
    return dsc_errorf("seg augment: a %dx%d image resized by ratio %g would be %.0fx%.0f (above 2^30 per side)",
                      w, h, ratio, dw, dh);
  const int nw = dw < 1 ? 1 : (int)dw, nh = dh < 1 ? 1 : (int)dh;

  /* (b) the crop window */
  const int cw = cfg->crop_w < nw ? cfg->crop_w : nw, ch = cfg->crop_h < nh ? cfg->crop_h : nh;
  const int margin_x = nw - cw, margin_y = nh - ch;
  int *xmap = malloc((size_t)cw * sizeof *xmap);
  uint8_t *px = malloc((size_t)cw * (size_t)ch * 3);
  uint8_t *lab = malloc((size_t)cw * (size_t)ch);
  int *tap = malloc((size_t)cw * 3 * sizeof *tap);
  if (!xmap || !px || !lab || !tap) {
    free(xmap);
    free(px);
    free(lab);
    free(tap);
    return dsc_errorf("seg augment: out of memory for a %dx%d crop", cw, ch);
  }
  int oy = seg_randint(&key, SLOT_CROP, 0, margin_y + 1), ox = seg_randint(&key, SLOT_CROP + 1, 0, margin_x + 1);
  if (cfg->cat_max_ratio < 1) {
    for (int t = 1; t <= SEG_CROP_TRIES; t++) {
      if (seg_window_ok(label, w, h, nw, nh, oy, ox, ch, cw, cfg->cat_max_ratio, xmap)) break;
      oy = seg_randint(&key, SLOT_CROP + 2 * t, 0, margin_y + 1);
      ox = seg_randint(&key, SLOT_CROP + 2 * t + 1, 0, margin_x + 1);
    }
  }

  /* the window's label (nearest) and image (bilinear) */
  for (int x = 0; x < cw; x++) xmap[x] = seg_nearest(ox + x, w, nw);
  for (int y = 0; y < ch; y++) {
    const uint8_t *row = label + (size_t)seg_nearest(oy + y, h, nh) * (size_t)w;
    for (int x = 0; x < cw; x++) lab[(size_t)y * cw + x] = row[xmap[x]];
  }
  dsc_seg_linear_taps(ox, cw, w, nw, tap);
  for (int y = 0; y < ch; y++) dsc_seg_linear_row(img, oy + y, nh, tap, cw, px + (size_t)y * cw * 3);

  /* (c) flip */
  if (seg_u(&key, SLOT_FLIP) < cfg->flip_prob) {
    for (int y = 0; y < ch; y++) {
      uint8_t *o = px + (size_t)y * cw * 3, *l = lab + (size_t)y * cw;
      for (int a = 0, b = cw - 1; a < b; a++, b--) {
        uint8_t t = l[a];
        l[a] = l[b];
        l[b] = t;
        for (int c = 0; c < 3; c++) {
          t = o[3 * a + c];
          o[3 * a + c] = o[3 * b + c];
          o[3 * b + c] = t;
        }
      }
    }
  }

  /* (d) photometric distortion */
  if (cfg->photometric) seg_photometric(&key, px, (size_t)cw * (size_t)ch);

  /* (e) normalize, then pad to crop size (image 0, label 255) */
  for (int y = 0; y < cfg->crop_h; y++) {
    float *o = out_hwc + (size_t)y * cfg->crop_w * 3;
    uint8_t *l = out_label + (size_t)y * cfg->crop_w;
    const int valid = y < ch ? cw : 0;
    if (valid) {
      dsc_seg_normalize(px + (size_t)y * cw * 3, (size_t)cw, o);
      memcpy(l, lab + (size_t)y * cw, (size_t)cw);
    }
    for (int x = valid; x < cfg->crop_w; x++) {
      o[3 * x] = o[3 * x + 1] = o[3 * x + 2] = 0;
      l[x] = 255;
    }
  }
  free(xmap);
  free(px);
  free(lab);
  free(tap);
  return NULL;
}
