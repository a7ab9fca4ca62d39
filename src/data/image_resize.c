/* image_resize.c: antialiased bilinear resizing and the evaluation transform of `dsc embed`.
 *
 * Two resamplers, both the "triangle filter whose support widens with the downscale factor"
 * (antialiasing) of Pillow's ImagingResample, applied separably (width pass, then height pass):
 *
 *   - uint8 (dsc_image_resize_u8, the eval transform): Pillow's own arithmetic, so the result is
 *     bit-exact with torchvision's Resize on a PIL image, which is what users run for evaluation:
 *     weights in double, normalised per output pixel, converted to 22-bit fixed point; each pass
 *     sums in int32 with rounding and clamps to uint8 (the width pass is rounded to uint8 before
 *     the height pass, as in Pillow).
 *   - float (dsc_image_resize_region_f32, for augmentation): PyTorch's _upsample_bilinear2d_aa on
 *     float tensors (torchvision's tensor path with antialias=True), weights computed in float with
 *     PyTorch's mixed float/double expressions, sums in float in index order, no rounding between
 *     passes. It matches PyTorch to float rounding (tests/test_image.c states the tolerance).
 *
 * For one output coordinate i with scale = in/out (both conventions):
 *   center = (i + 0.5) * scale, support = max(scale, 1), xmin = max(int(center - support + 0.5), 0),
 *   xmax = min(int(center + support + 0.5), in), w_j = tri((xmin + j - center + 0.5) / max(scale, 1)),
 *   tri(x) = max(0, 1 - |x|), weights divided by their sum.
 * A pass whose size does not change is skipped (Pillow and PyTorch both skip it).
 */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dsc/image.h"

const float dsc_image_mean[3] = {0.485f, 0.456f, 0.406f};
const float dsc_image_std[3] = {0.229f, 0.224f, 0.225f};

/* ---------------------------------------------------------------- Pillow, uint8 ------------ */

enum { PIL_PRECISION_BITS = 32 - 8 - 2 };

/* Fixed-point coefficients for output coordinates [first, first + count) of a resize in -> out. */
typedef struct pil_coeffs {
  int ksize;      /* coefficients per output coordinate */
  int *bounds;    /* count x {xmin, xmax (number of taps)} */
  int32_t *k;     /* count x ksize */
} pil_coeffs;

static void pil_coeffs_free(pil_coeffs *c) {
  free(c->bounds);
  free(c->k);
  c->bounds = NULL;
  c->k = NULL;
}

static double pil_triangle(double x) {
  if (x < 0.0) x = -x;
  return x < 1.0 ? 1.0 - x : 0.0;
}

static dsc_status *pil_coeffs_make(int in_size, int out_size, int first, int count, pil_coeffs *c) {
  const double scale = (double)in_size / out_size;
  const double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = 1.0 * filterscale; /* bilinear filter support is 1 */
  const int ksize = (int)ceil(support) * 2 + 1;
  c->ksize = ksize;
  c->bounds = malloc(sizeof *c->bounds * 2 * (size_t)count);
  c->k = malloc(sizeof *c->k * (size_t)ksize * (size_t)count);
  double *w = malloc(sizeof *w * (size_t)ksize);
  if (!c->bounds || !c->k || !w) {
    free(w);
    pil_coeffs_free(c);
    return dsc_errorf("resize: out of memory for %d x %d coefficients", count, ksize);
  }
  for (int i = 0; i < count; i++) {
    const int xx = first + i;
    const double center = (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    int xmin = (int)(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = (int)(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; x++) {
      w[x] = pil_triangle((x + xmin - center + 0.5) * ss);
      ww += w[x];
    }
    int32_t *k = c->k + (size_t)i * ksize;
    for (int x = 0; x < ksize; x++) {
      double v = x < xmax ? (ww != 0.0 ? w[x] / ww : w[x]) : 0.0;
      k[x] = (int32_t)(v < 0 ? -0.5 + v * (1 << PIL_PRECISION_BITS) : 0.5 + v * (1 << PIL_PRECISION_BITS));
    }
    c->bounds[2 * i] = xmin;
    c->bounds[2 * i + 1] = xmax;
  }
  free(w);
  return NULL;
}

static uint8_t pil_clip8(int32_t v) {
  v >>= PIL_PRECISION_BITS; /* sums are >= 0 here: weights are non-negative */
  return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* Resizes `in` (w x h RGB8) to out_w x out_h as Pillow and writes only the output window
 * [x0, x0 + cw) x [y0, y0 + ch) to `dst` (cw x ch RGB8). */
static dsc_status *pil_resize_window(const dsc_image *in, int out_w, int out_h, int x0, int y0,
                                     int cw, int ch, uint8_t *dst) {
  const int need_h = out_w != in->w, need_v = out_h != in->h;
  pil_coeffs hc = {0}, vc = {0};
  uint8_t *tmp = NULL;
  int32_t *acc = NULL;
  dsc_status *st = NULL;
  /* Rows of `in` the window needs: all rows the vertical coefficients touch. */
  int ry0 = y0, ry1 = y0 + ch;
  if (need_v) {
    st = pil_coeffs_make(in->h, out_h, y0, ch, &vc);
    if (st) goto done;
    ry0 = vc.bounds[0];
    ry1 = vc.bounds[2 * (ch - 1)] + vc.bounds[2 * (ch - 1) + 1];
    for (int i = 0; i < ch; i++) {
      if (vc.bounds[2 * i] < ry0) ry0 = vc.bounds[2 * i];
      if (vc.bounds[2 * i] + vc.bounds[2 * i + 1] > ry1) ry1 = vc.bounds[2 * i] + vc.bounds[2 * i + 1];
    }
  }
  const int rows = ry1 - ry0;
  /* Width pass into tmp (rows x cw), rounded to uint8 as Pillow's intermediate image. */
  tmp = malloc((size_t)rows * (size_t)cw * 3);
  if (!tmp) {
    st = dsc_errorf("resize: out of memory");
    goto done;
  }
  if (need_h) {
    st = pil_coeffs_make(in->w, out_w, x0, cw, &hc);
    if (st) goto done;
    for (int r = 0; r < rows; r++) {
      const uint8_t *src = in->rgb + (size_t)(ry0 + r) * in->w * 3;
      uint8_t *t = tmp + (size_t)r * cw * 3;
      for (int i = 0; i < cw; i++) {
        const int xmin = hc.bounds[2 * i], n = hc.bounds[2 * i + 1];
        const int32_t *k = hc.k + (size_t)i * hc.ksize;
        int32_t s0 = 1 << (PIL_PRECISION_BITS - 1), s1 = s0, s2 = s0;
        for (int x = 0; x < n; x++) {
          const uint8_t *p = src + (size_t)(xmin + x) * 3;
          s0 += p[0] * k[x];
          s1 += p[1] * k[x];
          s2 += p[2] * k[x];
        }
        t[3 * i] = pil_clip8(s0);
        t[3 * i + 1] = pil_clip8(s1);
        t[3 * i + 2] = pil_clip8(s2);
      }
    }
  } else {
    for (int r = 0; r < rows; r++)
      memcpy(tmp + (size_t)r * cw * 3, in->rgb + ((size_t)(ry0 + r) * in->w + x0) * 3, (size_t)cw * 3);
  }
  /* Height pass into dst, a row of int32 sums at a time (integer sums: any order is exact). */
  if (need_v) {
    const size_t row = (size_t)cw * 3;
    acc = malloc(sizeof *acc * row);
    if (!acc) {
      st = dsc_errorf("resize: out of memory");
      goto done;
    }
    for (int j = 0; j < ch; j++) {
      const int ymin = vc.bounds[2 * j] - ry0, n = vc.bounds[2 * j + 1];
      const int32_t *k = vc.k + (size_t)j * vc.ksize;
      for (size_t c = 0; c < row; c++) acc[c] = 1 << (PIL_PRECISION_BITS - 1);
      for (int y = 0; y < n; y++) {
        const uint8_t *t = tmp + (size_t)(ymin + y) * row;
        const int32_t ky = k[y];
        for (size_t c = 0; c < row; c++) acc[c] += t[c] * ky;
      }
      uint8_t *d = dst + (size_t)j * row;
      for (size_t c = 0; c < row; c++) d[c] = pil_clip8(acc[c]);
    }
  } else {
    memcpy(dst, tmp, (size_t)ch * cw * 3);
  }
done:
  free(tmp);
  free(acc);
  pil_coeffs_free(&hc);
  pil_coeffs_free(&vc);
  return st;
}

static dsc_status *image_check(const dsc_image *img, const char *who) {
  if (!img || !img->rgb || img->w <= 0 || img->h <= 0) return dsc_errorf("%s: empty image", who);
  return NULL;
}

dsc_status *dsc_image_resize_u8(const dsc_image *in, int out_w, int out_h, dsc_image *out) {
  if (!out) return dsc_errorf("dsc_image_resize_u8: NULL output");
  out->w = out->h = 0;
  out->rgb = NULL;
  DSC_TRY(image_check(in, "dsc_image_resize_u8"));
  if (out_w <= 0 || out_h <= 0 || (int64_t)out_w * out_h > DSC_IMAGE_MAX_PIXELS)
    return dsc_errorf("dsc_image_resize_u8: invalid output size %dx%d", out_w, out_h);
  uint8_t *rgb = malloc((size_t)out_w * (size_t)out_h * 3);
  if (!rgb) return dsc_errorf("dsc_image_resize_u8: out of memory for %dx%d", out_w, out_h);
  dsc_status *st = pil_resize_window(in, out_w, out_h, 0, 0, out_w, out_h, rgb);
  if (st) {
    free(rgb);
    return st;
  }
  out->w = out_w;
  out->h = out_h;
  out->rgb = rgb;
  return NULL;
}

/* ---------------------------------------------------------------- PyTorch, float ----------- */

/* Float weights for a resize in -> out, PyTorch's _compute_weights_aa with scalar_t = float
 * (the casts reproduce its float/double promotions). */
typedef struct aa_coeffs {
  int ksize;
  int *xmin, *xsize; /* out entries */
  float *w;          /* out x ksize */
} aa_coeffs;

static void aa_coeffs_free(aa_coeffs *c) {
  free(c->xmin);
  free(c->xsize);
  free(c->w);
  memset(c, 0, sizeof *c);
}

static float aa_triangle(float x) {
  if (x < 0.0f) x = -x;
  return x < 1.0f ? 1.0f - x : 0.0f;
}

static dsc_status *aa_coeffs_make(int in_size, int out_size, aa_coeffs *c) {
  const float scale = (float)in_size / (float)out_size;
  const float support = scale >= 1.0f ? (float)(1.0 * scale) : 1.0f; /* (interp_size 2) * 0.5 */
  const int ksize = (int)ceilf(support) * 2 + 1;
  c->ksize = ksize;
  c->xmin = malloc(sizeof *c->xmin * (size_t)out_size);
  c->xsize = malloc(sizeof *c->xsize * (size_t)out_size);
  c->w = calloc((size_t)out_size * (size_t)ksize, sizeof *c->w);
  if (!c->xmin || !c->xsize || !c->w) {
    aa_coeffs_free(c);
    return dsc_errorf("resize: out of memory for %d x %d weights", out_size, ksize);
  }
  const float invscale = scale >= 1.0f ? (float)(1.0 / scale) : 1.0f;
  for (int i = 0; i < out_size; i++) {
    const float center = (float)(scale * (i + 0.5));
    int64_t xmin = (int64_t)(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int64_t xmax = (int64_t)(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    const int n = (int)(xmax - xmin);
    float *w = c->w + (size_t)i * ksize;
    float total = 0.0f;
    for (int j = 0; j < n; j++) {
      w[j] = aa_triangle((float)(((float)(j + xmin) - center + 0.5) * invscale));
      total += w[j];
    }
    if (total != 0.0f)
      for (int j = 0; j < n; j++) w[j] /= total;
    c->xmin[i] = (int)xmin;
    c->xsize[i] = n;
  }
  return NULL;
}

dsc_status *dsc_image_resize_region_f32(const dsc_image *img, int top, int left, int crop_h,
                                        int crop_w, int out_h, int out_w, float *out) {
  DSC_TRY(image_check(img, "dsc_image_resize_region_f32"));
  if (!out) return dsc_errorf("dsc_image_resize_region_f32: NULL output");
  if (top < 0 || left < 0 || crop_h <= 0 || crop_w <= 0 || crop_h > img->h - top || crop_w > img->w - left)
    return dsc_errorf("dsc_image_resize_region_f32: region (top %d, left %d, %dx%d) outside the %dx%d image",
                      top, left, crop_w, crop_h, img->w, img->h);
  if (out_h <= 0 || out_w <= 0 || (int64_t)out_w * out_h > DSC_IMAGE_MAX_PIXELS)
    return dsc_errorf("dsc_image_resize_region_f32: invalid output size %dx%d", out_w, out_h);
  aa_coeffs hc = {0}, vc = {0};
  float *tmp = NULL;
  dsc_status *st = NULL;
  const size_t stride = (size_t)img->w * 3;
  const uint8_t *src = img->rgb + (size_t)top * stride + (size_t)left * 3;
  /* Width pass: crop_h x out_w floats (or the crop as float when the width is unchanged). */
  tmp = malloc(sizeof *tmp * (size_t)crop_h * (size_t)out_w * 3);
  if (!tmp) {
    st = dsc_errorf("dsc_image_resize_region_f32: out of memory");
    goto done;
  }
  if (out_w != crop_w) {
    st = aa_coeffs_make(crop_w, out_w, &hc);
    if (st) goto done;
    for (int y = 0; y < crop_h; y++) {
      const uint8_t *row = src + (size_t)y * stride;
      float *t = tmp + (size_t)y * out_w * 3;
      for (int i = 0; i < out_w; i++) {
        const uint8_t *p = row + (size_t)hc.xmin[i] * 3;
        const float *w = hc.w + (size_t)i * hc.ksize;
        for (int c = 0; c < 3; c++) {
          float s = (float)p[c] * w[0];
          for (int j = 1; j < hc.xsize[i]; j++) s += (float)p[3 * j + c] * w[j];
          t[3 * i + c] = s;
        }
      }
    }
  } else {
    for (int y = 0; y < crop_h; y++)
      for (int i = 0; i < crop_w * 3; i++) tmp[(size_t)y * out_w * 3 + i] = (float)src[(size_t)y * stride + i];
  }
  /* Height pass into out. */
  if (out_h != crop_h) {
    st = aa_coeffs_make(crop_h, out_h, &vc);
    if (st) goto done;
    const size_t row = (size_t)out_w * 3;
    for (int j = 0; j < out_h; j++) {
      /* Each output value still sums its taps in index order (PyTorch's order); the loop over
       * the row is innermost only so that it vectorizes. */
      const float *w = vc.w + (size_t)j * vc.ksize;
      const float *t = tmp + (size_t)vc.xmin[j] * row;
      float *d = out + (size_t)j * row;
      for (size_t c = 0; c < row; c++) d[c] = t[c] * w[0];
      for (int y = 1; y < vc.xsize[j]; y++) {
        const float *ty = t + (size_t)y * row;
        const float wy = w[y];
        for (size_t c = 0; c < row; c++) d[c] += ty[c] * wy;
      }
    }
  } else {
    memcpy(out, tmp, sizeof *tmp * (size_t)out_h * out_w * 3);
  }
done:
  free(tmp);
  aa_coeffs_free(&hc);
  aa_coeffs_free(&vc);
  return st;
}

/* ---------------------------------------------------------------- eval transform ----------- */

dsc_status *dsc_image_eval_size(int w, int h, int resize, int *out_w, int *out_h) {
  if (w <= 0 || h <= 0 || resize <= 0) return dsc_errorf("eval resize: invalid sizes (%dx%d image, resize %d)", w, h, resize);
  const int w_short = w <= h;
  const int64_t shorter = w_short ? w : h, longer = w_short ? h : w;
  /* Python: int(resize * long / short), the product exact, the division in double. */
  const double nl = (double)((int64_t)resize * longer) / (double)shorter;
  if (nl > INT_MAX / 4)
    return dsc_errorf("eval resize: a %dx%d image resized to shorter side %d is too large", w, h, resize);
  const int new_long = (int)nl;
  *out_w = w_short ? resize : new_long;
  *out_h = w_short ? new_long : resize;
  if (*out_w <= 0 || *out_h <= 0)
    return dsc_errorf("eval resize: a %dx%d image resized to shorter side %d is empty", w, h, resize);
  return NULL;
}

/* torchvision's center_crop offset along one axis of length n for a crop of `size`: pads with
 * (size - n) // 2 leading zeros when the crop is larger, else int(round((n - size) / 2.0)) with
 * Python's round-half-to-even. Returns the first kept coordinate (negative inside padding). */
static int center_crop_offset(int n, int size) {
  if (size > n) return -((size - n) / 2);
  const int d = n - size, half = d / 2;
  if (d % 2 == 0) return half;
  return half % 2 == 0 ? half : half + 1; /* half + 0.5 rounds to the even neighbour */
}

dsc_status *dsc_image_eval_transform(const dsc_image *img, int resize, int size, float *out) {
  DSC_TRY(image_check(img, "dsc_image_eval_transform"));
  if (!out) return dsc_errorf("dsc_image_eval_transform: NULL output");
  if (size <= 0 || resize <= 0)
    return dsc_errorf("dsc_image_eval_transform: invalid resize %d / size %d", resize, size);
  int rw = img->w, rh = img->h;
  if (!(img->w == size && img->h == size)) DSC_TRY(dsc_image_eval_size(img->w, img->h, resize, &rw, &rh));
  /* The crop window in resized coordinates, and its part inside the resized image. */
  const int left = center_crop_offset(rw, size), top = center_crop_offset(rh, size);
  const int x0 = left < 0 ? 0 : left, y0 = top < 0 ? 0 : top;
  const int x1 = left + size < rw ? left + size : rw, y1 = top + size < rh ? top + size : rh;
  const int cw = x1 - x0, ch = y1 - y0;
  uint8_t *win = malloc((size_t)cw * (size_t)ch * 3);
  if (!win) return dsc_errorf("dsc_image_eval_transform: out of memory");
  dsc_status *st = pil_resize_window(img, rw, rh, x0, y0, cw, ch, win);
  if (st) {
    free(win);
    return st;
  }
  /* ToTensor + Normalize: (v / 255 - mean) / std in float32, zero padding outside the image. */
  float lut[3][256];
  for (int c = 0; c < 3; c++)
    for (int v = 0; v < 256; v++) lut[c][v] = ((float)v / 255.0f - dsc_image_mean[c]) / dsc_image_std[c];
  for (int y = 0; y < size; y++) {
    const int ry = top + y;
    for (int x = 0; x < size; x++) {
      const int rx = left + x;
      float *o = out + ((size_t)y * size + x) * 3;
      if (ry < y0 || ry >= y1 || rx < x0 || rx >= x1) {
        o[0] = lut[0][0];
        o[1] = lut[1][0];
        o[2] = lut[2][0];
      } else {
        const uint8_t *p = win + ((size_t)(ry - y0) * cw + (rx - x0)) * 3;
        o[0] = lut[0][p[0]];
        o[1] = lut[1][p[1]];
        o[2] = lut[2][p[2]];
      }
    }
  }
  free(win);
  return NULL;
}
