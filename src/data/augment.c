/* augment.c: the two-view augmentation of METHOD.md §6 (include/dsc/augment.h): drawing the
 * parameters of a view with the counter-based RNG, and applying them as torchvision's tensor
 * functional ops on float32 images.
 *
 * Drawing (torchvision 0.14's rules, our RNG): every number is
 *   dsc_rng_uniform(seed, DSC_RNG_AUGMENT, epoch, index, (view << 16) | draw)
 * with fixed draw numbers, so a view is a pure function of (seed, epoch, index, view) and
 * changing one step never shifts the draws of another:
 *   draw 2k, 2k+1 (k = 0..9)  RandomResizedCrop try k: area fraction U(scale), log aspect ratio
 *   20, 21                    crop top, crop left of the accepted try
 *   22                        ColorJitter applied (u < jitter_p)
 *   23, 24, 25, 26            brightness, contrast, saturation factors, hue shift
 *   27, 28, 29                Fisher-Yates permutation of the four jitter operations
 *   30                        grayscale applied (u < gray_p)
 *   31, 32                    blur applied (u < blur_p), its sigma
 *   33                        flip applied (u < flip_p)
 * Integers in [0, n) are floor(u * n). Crop sizes are computed in double and rounded half to
 * even as Python's round().
 *
 * Applying, float32 throughout, in the order of METHOD.md §6:
 *   1. crop + resize: dsc_image_resize_region_f32 (torch interpolate, bilinear, antialias) on
 *      the uint8 values as float (0..255), then / 255 (the scaling of convert_image_dtype /
 *      ToTensor), deinterleaved into a planar scratch image;
 *   2. ColorJitter ops in p->order, each as torchvision.transforms.functional_tensor: blends
 *      ratio * a + (1 - ratio) * b clamped to [0, 1]; contrast blends with the mean of the
 *      grayscale image; hue through _rgb2hsv / _hsv2rgb with the same float operations;
 *   3. grayscale: 0.2989 R + 0.587 G + 0.114 B in float32, replicated to the 3 channels;
 *   4. Gaussian blur: kernel size 2 ceil(3 sigma) + 1, float32 1-D Gaussian normalized to sum
 *      1, reflect padding, applied separably (torchvision convolves with the outer product of
 *      the same 1-D kernels; results agree to float rounding);
 *   5. horizontal flip and 6. (x - mean) / std with dsc_image_mean / dsc_image_std, written
 *      interleaved (HWC) into the caller's buffer in one pass.
 * A label map gets the crop with PyTorch's 'nearest' index rule (src = min(floor(dst * scale),
 * in - 1), scale = in / out in float) and the flip; nothing photometric.
 * Memory: one scratch allocation per call (planar image, blur buffers, kernel), besides the
 * resize's own coefficient tables. Loops are per plane and branch-light so they vectorize.
 */
#include "dsc/augment.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dsc/rng.h"

/* Draw numbers (low 16 bits of the third counter word), see the header comment. */
enum {
  DRAW_CROP = 0, /* 2k: scale, 2k+1: log ratio, k < CROP_TRIES */
  DRAW_TOP = 20,
  DRAW_LEFT = 21,
  DRAW_JITTER = 22,
  DRAW_BRIGHTNESS = 23,
  DRAW_CONTRAST = 24,
  DRAW_SATURATION = 25,
  DRAW_HUE = 26,
  DRAW_ORDER = 27, /* 27, 28, 29 */
  DRAW_GRAY = 30,
  DRAW_BLUR = 31,
  DRAW_SIGMA = 32,
  DRAW_FLIP = 33,
};
#define CROP_TRIES 10
/* Largest output side: keeps size*size*3 and the scratch sizes far from overflow. */
#define AUG_MAX_SIZE 16384

void dsc_aug_config_default(dsc_aug_config *cfg, int size) {
  cfg->size = size;
  cfg->scale_min = 0.2f;
  cfg->scale_max = 1.0f;
  cfg->ratio_min = 3.0f / 4.0f;
  cfg->ratio_max = 4.0f / 3.0f;
  cfg->jitter_p = 0.8f;
  cfg->brightness = 0.4f;
  cfg->contrast = 0.4f;
  cfg->saturation = 0.4f;
  cfg->hue = 0.1f;
  cfg->gray_p = 0.2f;
  cfg->blur_p = 0.5f;
  cfg->sigma_min = 0.1f;
  cfg->sigma_max = 2.0f;
  cfg->flip_p = 0.5f;
}

typedef struct aug_stream {
  uint64_t seed;
  uint32_t epoch, index, view;
} aug_stream;

static double aug_u(const aug_stream *s, uint32_t draw) {
  return dsc_rng_uniform(s->seed, DSC_RNG_AUGMENT, s->epoch, s->index, (s->view << 16) | draw);
}

/* Uniform integer in [0, n), n >= 1. */
static int aug_int(const aug_stream *s, uint32_t draw, int n) {
  int v = (int)(aug_u(s, draw) * (double)n);
  return v < n - 1 ? v : n - 1;
}

static double aug_uniform(const aug_stream *s, uint32_t draw, double lo, double hi) {
  return lo + (hi - lo) * aug_u(s, draw);
}

/* torchvision RandomResizedCrop.get_params with our draws. */
static void aug_draw_crop(const dsc_aug_config *cfg, int W, int H, const aug_stream *s,
                          dsc_aug_params *out) {
  if (W < 1 || H < 1) { /* no pixels: an empty crop, which dsc_aug_apply rejects */
    out->crop_top = out->crop_left = out->crop_h = out->crop_w = 0;
    return;
  }
  double area = (double)W * (double)H;
  double lr0 = log((double)cfg->ratio_min), lr1 = log((double)cfg->ratio_max);
  for (int k = 0; k < CROP_TRIES; k++) {
    double target = area * aug_uniform(s, DRAW_CROP + 2 * k, cfg->scale_min, cfg->scale_max);
    double ratio = exp(aug_uniform(s, DRAW_CROP + 2 * k + 1, lr0, lr1));
    double wd = nearbyint(sqrt(target * ratio)), hd = nearbyint(sqrt(target / ratio));
    if (wd > 0 && wd <= W && hd > 0 && hd <= H) {
      int w = (int)wd, h = (int)hd;
      out->crop_h = h;
      out->crop_w = w;
      out->crop_top = aug_int(s, DRAW_TOP, H - h + 1);
      out->crop_left = aug_int(s, DRAW_LEFT, W - w + 1);
      return;
    }
  }
  /* Fallback: the central crop with the ratio clamped into [ratio_min, ratio_max]. */
  double in_ratio = (double)W / (double)H;
  int w = W, h = H;
  if (in_ratio < (double)cfg->ratio_min) {
    h = (int)nearbyint((double)W / (double)cfg->ratio_min);
  } else if (in_ratio > (double)cfg->ratio_max) {
    w = (int)nearbyint((double)H * (double)cfg->ratio_max);
  }
  if (h < 1) h = 1; /* only for degenerate ratios (torchvision would fail on an empty crop) */
  if (w < 1) w = 1;
  if (h > H) h = H;
  if (w > W) w = W;
  out->crop_h = h;
  out->crop_w = w;
  out->crop_top = (H - h) / 2;
  out->crop_left = (W - w) / 2;
}

void dsc_aug_draw(const dsc_aug_config *cfg, int img_w, int img_h, uint64_t seed, uint32_t epoch,
                  uint32_t index, uint32_t view, dsc_aug_params *out) {
  aug_stream s = {seed, epoch, index, view};
  memset(out, 0, sizeof *out);
  aug_draw_crop(cfg, img_w, img_h, &s, out);

  for (int i = 0; i < 4; i++) out->order[i] = i;
  out->brightness = out->contrast = out->saturation = 1.0f;
  out->hue = 0.0f;
  out->jitter = aug_u(&s, DRAW_JITTER) < (double)cfg->jitter_p;
  if (out->jitter) {
    /* torchvision's _check_input: factors in [max(0, 1 - x), 1 + x], hue in [-h, h]. */
    double b = cfg->brightness, c = cfg->contrast, sa = cfg->saturation, h = cfg->hue;
    out->brightness = (float)aug_uniform(&s, DRAW_BRIGHTNESS, fmax(0.0, 1.0 - b), 1.0 + b);
    out->contrast = (float)aug_uniform(&s, DRAW_CONTRAST, fmax(0.0, 1.0 - c), 1.0 + c);
    out->saturation = (float)aug_uniform(&s, DRAW_SATURATION, fmax(0.0, 1.0 - sa), 1.0 + sa);
    out->hue = (float)aug_uniform(&s, DRAW_HUE, -h, h);
    for (int i = 3; i > 0; i--) { /* Fisher-Yates */
      int j = aug_int(&s, DRAW_ORDER + (uint32_t)(3 - i), i + 1);
      int t = out->order[i];
      out->order[i] = out->order[j];
      out->order[j] = t;
    }
  }
  out->gray = aug_u(&s, DRAW_GRAY) < (double)cfg->gray_p;
  out->blur = aug_u(&s, DRAW_BLUR) < (double)cfg->blur_p;
  out->sigma = out->blur ? (float)aug_uniform(&s, DRAW_SIGMA, cfg->sigma_min, cfg->sigma_max) : 0.0f;
  out->flip = aug_u(&s, DRAW_FLIP) < (double)cfg->flip_p;
}

int dsc_aug_blur_kernel_size(float sigma) {
  return 2 * (int)ceil(3.0 * (double)sigma) + 1;
}

/* ---- photometric ops on a planar float image r, g, b of n pixels ---- */

static inline float aug_clamp01(float v) { return v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v); }

/* torchvision _blend with a constant second image: ratio * x + (1 - ratio) * c, clamped. */
static void aug_blend_const(float *x, size_t n, float ratio, float c) {
  float other = (float)(1.0 - (double)ratio) * c;
  for (size_t i = 0; i < n; i++) x[i] = aug_clamp01(ratio * x[i] + other);
}

static inline float aug_luma(float r, float g, float b) {
  return 0.2989f * r + 0.587f * g + 0.114f * b;
}

static void aug_brightness(float *r, float *g, float *b, size_t n, float f) {
  /* blend with zeros: (1 - f) * 0 = 0 */
  aug_blend_const(r, n, f, 0.0f);
  aug_blend_const(g, n, f, 0.0f);
  aug_blend_const(b, n, f, 0.0f);
}

static void aug_contrast(float *r, float *g, float *b, size_t n, float f) {
  double sum = 0.0;
  for (size_t i = 0; i < n; i++) sum += (double)aug_luma(r[i], g[i], b[i]);
  float mean = (float)(sum / (double)n);
  aug_blend_const(r, n, f, mean);
  aug_blend_const(g, n, f, mean);
  aug_blend_const(b, n, f, mean);
}

static void aug_saturation(float *r, float *g, float *b, size_t n, float f) {
  float fo = (float)(1.0 - (double)f);
  for (size_t i = 0; i < n; i++) {
    float l = aug_luma(r[i], g[i], b[i]);
    float ol = fo * l;
    r[i] = aug_clamp01(f * r[i] + ol);
    g[i] = aug_clamp01(f * g[i] + ol);
    b[i] = aug_clamp01(f * b[i] + ol);
  }
}

/* torchvision adjust_hue on [0,1] floats: _rgb2hsv, h = (h + shift) mod 1, _hsv2rgb, with the
 * same float32 operations. fmod(h / 6 + 1, 1) and the remainder of h + shift are written as
 * conditional subtractions: for arguments in [-0.5, 2) (all that occur with |shift| <= 0.5)
 * they give the same floats. */
static void aug_hue(float *r, float *g, float *b, size_t n, float shift) {
  for (size_t i = 0; i < n; i++) {
    float R = r[i], G = g[i], B = b[i];
    float maxc = R > G ? R : G, minc = R < G ? R : G;
    maxc = maxc > B ? maxc : B;
    minc = minc < B ? minc : B;
    int eqc = maxc == minc;
    float cr = maxc - minc;
    float s = cr / (eqc ? 1.0f : maxc);
    float crd = eqc ? 1.0f : cr;
    float rc = (maxc - R) / crd, gc = (maxc - G) / crd, bc = (maxc - B) / crd;
    /* torch multiplies by the masks, as here */
    float hr = (float)(maxc == R) * (bc - gc);
    float hg = (float)((maxc == G) & (maxc != R)) * ((2.0f + rc) - bc);
    float hb = (float)((maxc != G) & (maxc != R)) * ((4.0f + gc) - rc);
    float h = (hr + hg) + hb;
    h = h / 6.0f + 1.0f;
    float hm = h - 1.0f;
    h = h >= 1.0f ? hm : h;
    h = h + shift;
    float hp = h + 1.0f, hn = h - 1.0f;
    h = h < 0.0f ? hp : (h >= 1.0f ? hn : h);
    /* _hsv2rgb: sector i = floor(6 h) mod 6 (6 h reaches 6 only when h + 1 rounded to 1) */
    float v = maxc;
    float h6 = h * 6.0f;
    float fi = (float)(int)h6; /* floor: h6 >= 0 (truncation vectorizes, floorf does not) */
    float f = h6 - fi;
    float p = aug_clamp01(v * (1.0f - s));
    float q = aug_clamp01(v * (1.0f - s * f));
    float t = aug_clamp01(v * (1.0f - s * (1.0f - f)));
    float fi6 = fi - 6.0f;
    float sec = fi >= 6.0f ? fi6 : fi;
    /* torch's einsum with the one-hot sector mask; v, q, t, p are finite and >= 0, so the
     * zero terms are exact and the sum is the selected value. Sectors 0..5:
     * R = v q p p t v, G = t v v q p p, B = p p t v v q */
    float m0 = (float)(sec == 0.0f), m1 = (float)(sec == 1.0f), m2 = (float)(sec == 2.0f);
    float m3 = (float)(sec == 3.0f), m4 = (float)(sec == 4.0f), m5 = (float)(sec == 5.0f);
    float o0 = (m0 + m5) * v + m1 * q + m4 * t + (m2 + m3) * p;
    float o1 = (m1 + m2) * v + m3 * q + m0 * t + (m4 + m5) * p;
    float o2 = (m3 + m4) * v + m5 * q + m2 * t + (m0 + m1) * p;
    r[i] = o0;
    g[i] = o1;
    b[i] = o2;
  }
}

static void aug_gray(float *r, float *g, float *b, size_t n) {
  for (size_t i = 0; i < n; i++) {
    float l = aug_luma(r[i], g[i], b[i]);
    r[i] = l;
    g[i] = l;
    b[i] = l;
  }
}

/* torchvision _get_gaussian_kernel1d in float32: x = -half..half, exp(-0.5 (x / sigma)^2),
 * divided by its sum. */
static void aug_gauss_kernel(float sigma, int k, float *kern) {
  int half = k / 2;
  float sum = 0.0f;
  for (int i = 0; i < k; i++) {
    float x = (float)(i - half) / sigma;
    kern[i] = expf(-0.5f * (x * x));
    sum += kern[i];
  }
  for (int i = 0; i < k; i++) kern[i] /= sum;
}

/* Reflect padding index (torch 'reflect': the edge sample is not repeated), iterated so any
 * offset lands inside [0, n). */
static int aug_reflect(int i, int n) {
  if (n == 1) return 0;
  int period = 2 * (n - 1);
  i %= period;
  if (i < 0) i += period;
  return i < n ? i : period - i;
}

/* Blurs one s x s plane in place: horizontal pass into tmp through a padded line buffer,
 * vertical pass back with reflected row indices. */
static void aug_blur_plane(float *plane, float *tmp, float *line, int s, const float *kern, int k) {
  int half = k / 2;
  for (int y = 0; y < s; y++) {
    const float *src = plane + (size_t)y * s;
    float *dst = tmp + (size_t)y * s;
    for (int x = 0; x < half; x++) {
      line[x] = src[aug_reflect(x - half, s)];
      line[s + half + x] = src[aug_reflect(s + x, s)];
    }
    memcpy(line + half, src, sizeof(float) * (size_t)s);
    for (int x = 0; x < s; x++) dst[x] = 0.0f;
    for (int j = 0; j < k; j++) {
      float kj = kern[j];
      const float *l = line + j;
      for (int x = 0; x < s; x++) dst[x] += kj * l[x];
    }
  }
  for (int y = 0; y < s; y++) {
    float *dst = plane + (size_t)y * s;
    for (int x = 0; x < s; x++) dst[x] = 0.0f;
    for (int j = 0; j < k; j++) {
      float kj = kern[j];
      const float *row = tmp + (size_t)aug_reflect(y + j - half, s) * s;
      for (int x = 0; x < s; x++) dst[x] += kj * row[x];
    }
  }
}

/* ---- validation and the chain ---- */

static dsc_status *aug_check(const dsc_aug_config *cfg, const dsc_aug_params *p, const dsc_image *img,
                             const float *out_hwc, const uint8_t *label, const uint8_t *label_out) {
  if (!cfg || !p || !img || !out_hwc) return dsc_errorf("dsc_aug_apply: NULL argument");
  if (cfg->size < 1 || cfg->size > AUG_MAX_SIZE)
    return dsc_errorf("dsc_aug_apply: output size %d outside [1, %d]", cfg->size, AUG_MAX_SIZE);
  if (!img->rgb || img->w < 1 || img->h < 1)
    return dsc_errorf("dsc_aug_apply: empty image (%dx%d)", img->w, img->h);
  if ((label == NULL) != (label_out == NULL))
    return dsc_errorf("dsc_aug_apply: label and label_out must be given together");
  if (p->crop_h < 1 || p->crop_w < 1 || p->crop_top < 0 || p->crop_left < 0 ||
      p->crop_top > img->h - p->crop_h || p->crop_left > img->w - p->crop_w)
    return dsc_errorf("dsc_aug_apply: crop (top %d, left %d, %dx%d) outside the %dx%d image",
                      p->crop_top, p->crop_left, p->crop_h, p->crop_w, img->w, img->h);
  if (p->jitter) {
    int seen = 0;
    for (int i = 0; i < 4; i++) {
      if (p->order[i] < 0 || p->order[i] > 3 || (seen & (1 << p->order[i])))
        return dsc_errorf("dsc_aug_apply: jitter order is not a permutation of 0..3");
      seen |= 1 << p->order[i];
    }
    if (!(p->brightness >= 0.0f && p->contrast >= 0.0f && p->saturation >= 0.0f) ||
        !isfinite(p->brightness) || !isfinite(p->contrast) || !isfinite(p->saturation))
      return dsc_errorf("dsc_aug_apply: jitter factors must be finite and >= 0");
    if (!(p->hue >= -0.5f && p->hue <= 0.5f))
      return dsc_errorf("dsc_aug_apply: hue shift %g outside [-0.5, 0.5]", (double)p->hue);
  }
  if (p->blur && !(p->sigma > 0.0f && p->sigma <= 4.0f * (float)cfg->size))
    return dsc_errorf("dsc_aug_apply: blur sigma %g outside (0, 4 * size]", (double)p->sigma);
  return NULL;
}

static void aug_label(const dsc_aug_params *p, const uint8_t *label, int img_w, int size, int flip,
                      uint8_t *out) {
  float sy = (float)p->crop_h / (float)size, sx = (float)p->crop_w / (float)size;
  for (int y = 0; y < size; y++) {
    int iy = (int)floorf((float)y * sy);
    if (iy > p->crop_h - 1) iy = p->crop_h - 1;
    const uint8_t *row = label + (size_t)(p->crop_top + iy) * (size_t)img_w + (size_t)p->crop_left;
    uint8_t *o = out + (size_t)y * (size_t)size;
    for (int x = 0; x < size; x++) {
      int ix = (int)floorf((float)x * sx);
      if (ix > p->crop_w - 1) ix = p->crop_w - 1;
      o[flip ? size - 1 - x : x] = row[ix];
    }
  }
}

dsc_status *dsc_aug_apply(const dsc_aug_config *cfg, const dsc_aug_params *p,
                          const dsc_image *img, float *out_hwc, const uint8_t *label,
                          uint8_t *label_out) {
  DSC_TRY(aug_check(cfg, p, img, out_hwc, label, label_out));
  int s = cfg->size;
  size_t n = (size_t)s * (size_t)s;
  int k = p->blur ? dsc_aug_blur_kernel_size(p->sigma) : 1;
  int half = k / 2;

  DSC_TRY(dsc_image_resize_region_f32(img, p->crop_top, p->crop_left, p->crop_h, p->crop_w, s, s,
                                      out_hwc));
  /* scratch: planes r, g, b | blur tmp plane | blur line (s + 2 half) | kernel (k) */
  float *scratch = malloc(sizeof(float) * (4 * n + (size_t)s + 2 * (size_t)half + (size_t)k));
  if (!scratch) return dsc_errorf("dsc_aug_apply: out of memory for a %dx%d view", s, s);
  float *r = scratch, *g = scratch + n, *b = scratch + 2 * n, *tmp = scratch + 3 * n;
  float *line = tmp + n, *kern = line + s + 2 * half;

  for (size_t i = 0; i < n; i++) {
    r[i] = out_hwc[3 * i] / 255.0f;
    g[i] = out_hwc[3 * i + 1] / 255.0f;
    b[i] = out_hwc[3 * i + 2] / 255.0f;
  }
  if (p->jitter) {
    for (int j = 0; j < 4; j++) {
      switch (p->order[j]) {
        case 0:
          if (p->brightness != 1.0f) aug_brightness(r, g, b, n, p->brightness);
          break;
        case 1:
          if (p->contrast != 1.0f) aug_contrast(r, g, b, n, p->contrast);
          break;
        case 2:
          if (p->saturation != 1.0f) aug_saturation(r, g, b, n, p->saturation);
          break;
        default:
          if (p->hue != 0.0f) aug_hue(r, g, b, n, p->hue);
          break;
      }
    }
  }
  if (p->gray) aug_gray(r, g, b, n);
  if (p->blur) {
    aug_gauss_kernel(p->sigma, k, kern);
    aug_blur_plane(r, tmp, line, s, kern, k);
    aug_blur_plane(g, tmp, line, s, kern, k);
    aug_blur_plane(b, tmp, line, s, kern, k);
  }
  const float m0 = dsc_image_mean[0], m1 = dsc_image_mean[1], m2 = dsc_image_mean[2];
  const float s0 = dsc_image_std[0], s1 = dsc_image_std[1], s2 = dsc_image_std[2];
  for (int y = 0; y < s; y++) {
    const float *rr = r + (size_t)y * s, *gr = g + (size_t)y * s, *br = b + (size_t)y * s;
    float *o = out_hwc + (size_t)y * s * 3;
    if (p->flip) {
      for (int x = 0; x < s; x++) {
        int xs = s - 1 - x;
        o[3 * x] = (rr[xs] - m0) / s0;
        o[3 * x + 1] = (gr[xs] - m1) / s1;
        o[3 * x + 2] = (br[xs] - m2) / s2;
      }
    } else {
      for (int x = 0; x < s; x++) {
        o[3 * x] = (rr[x] - m0) / s0;
        o[3 * x + 1] = (gr[x] - m1) / s1;
        o[3 * x + 2] = (br[x] - m2) / s2;
      }
    }
  }
  free(scratch);
  if (label) aug_label(p, label, img->w, s, p->flip, label_out);
  return NULL;
}
