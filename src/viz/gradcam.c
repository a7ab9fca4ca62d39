/* gradcam.c: Grad-CAM of C5 for a probe class or a pixel's dense similarity, its upsampling, the jet
 * colour map and the overlay of `dsc viz gradcam` (the definition and the derivation of both
 * gradients: include/dsc/gradcam.h). Everything before the upsampling is in double. */
#include "dsc/gradcam.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dsc/eval.h"

dsc_status *dsc_gradcam_cell(int x, int y, int in_w, int in_h, int w5, int h5, int *cell_x,
                             int *cell_y) {
  if (in_w < 1 || in_h < 1 || w5 < 1 || h5 < 1)
    return dsc_errorf("dsc_gradcam_cell: invalid sizes (input %dx%d, C5 %dx%d)", in_w, in_h, w5, h5);
  if (x < 0 || y < 0 || x >= in_w || y >= in_h)
    return dsc_errorf("--pixel %d,%d is outside the %dx%d input image (x in 0..%d, y in 0..%d)", x, y, in_w,
                      in_h, in_w - 1, in_h - 1);
  *cell_x = (int)((int64_t)x * w5 / in_w);
  *cell_y = (int)((int64_t)y * h5 / in_h);
  return NULL;
}

/* alpha for the pixel target (see gradcam.h); returns y. */
static double pixel_alpha(const float *a, int64_t P, int c, int64_t p0, double *alpha, double *work) {
  double *norm = work, *dot = work + P; /* |A_p|, A_p . b */
  const float *b = a + p0 * c;
  for (int64_t p = 0; p < P; p++) {
    double s = 0, d = 0;
    for (int j = 0; j < c; j++) {
      s += (double)a[p * c + j] * a[p * c + j];
      d += (double)a[p * c + j] * b[j];
    }
    norm[p] = sqrt(s), dot[p] = d;
  }
  const double nb = norm[p0] > DSC_GRADCAM_EPS ? norm[p0] : DSC_GRADCAM_EPS;
  const int b_live = norm[p0] > DSC_GRADCAM_EPS;
  double y = 0, coef_b = 0; /* alpha = sum_p (ca_p + cb_p) A_p + coef_b b, before 1/P^2 */
  memset(alpha, 0, (size_t)c * sizeof *alpha);
  for (int64_t p = 0; p < P; p++) {
    const double np = norm[p] > DSC_GRADCAM_EPS ? norm[p] : DSC_GRADCAM_EPS;
    const double cosv = dot[p] / (np * nb);
    y += cosv;
    /* d cos/da at a = A_p: b / (np nb) - [live] cos A_p / |A_p|^2 */
    coef_b += 1.0 / (np * nb);
    double coef_a = norm[p] > DSC_GRADCAM_EPS ? -cosv / (norm[p] * norm[p]) : 0.0;
    /* d cos/db with a = A_p: A_p / (np nb) - [b live] cos b / |b|^2 */
    coef_a += 1.0 / (np * nb);
    if (b_live) coef_b -= cosv / (norm[p0] * norm[p0]);
    for (int j = 0; j < c; j++) alpha[j] += coef_a * a[p * c + j];
  }
  const double scale = 1.0 / ((double)P * (double)P);
  for (int j = 0; j < c; j++) alpha[j] = (alpha[j] + coef_b * b[j]) * scale;
  return y / (double)P;
}

dsc_status *dsc_gradcam(const float *a, int h5, int w5, int c, const dsc_gradcam_target *t,
                        double *cam, double *alpha, dsc_gradcam_result *result) {
  if (!a || !cam || !t) return dsc_errorf("dsc_gradcam: NULL argument");
  if (h5 < 1 || w5 < 1 || c < 1) return dsc_errorf("dsc_gradcam: invalid C5 shape %dx%dx%d", h5, w5, c);
  const int64_t P = (int64_t)h5 * w5;
  dsc_gradcam_result r = {.cell_x = -1, .cell_y = -1};
  if (t->kind == DSC_GRADCAM_PROBE) {
    if (!t->weight || !t->bias) return dsc_errorf("dsc_gradcam: the probe target has no weight or bias");
    if (t->class_index < 0 || t->class_index >= t->classes)
      return dsc_errorf("--class %d is out of range: the probe has %d classes (0..%d)", t->class_index,
                        t->classes, t->classes - 1);
  } else if (t->kind == DSC_GRADCAM_PIXEL) {
    DSC_TRY(dsc_gradcam_cell(t->x, t->y, t->in_w, t->in_h, w5, h5, &r.cell_x, &r.cell_y));
  } else {
    return dsc_errorf("dsc_gradcam: unknown target kind %d", (int)t->kind);
  }
  double *al = alpha ? alpha : malloc((size_t)c * sizeof *al);
  double *work = t->kind == DSC_GRADCAM_PIXEL ? malloc((size_t)(2 * P) * sizeof *work) : NULL;
  if (!al || (t->kind == DSC_GRADCAM_PIXEL && !work)) {
    if (!alpha) free(al);
    free(work);
    return dsc_errorf("dsc_gradcam: out of memory");
  }
  if (t->kind == DSC_GRADCAM_PROBE) {
    const float *w = t->weight + (size_t)t->class_index * c;
    double y = t->bias[t->class_index];
    for (int j = 0; j < c; j++) {
      double mean = 0;
      for (int64_t p = 0; p < P; p++) mean += a[p * c + j];
      y += (double)w[j] * (mean / (double)P);
      al[j] = (double)w[j] / (double)P;
    }
    r.score = y;
  } else {
    r.score = pixel_alpha(a, P, c, (int64_t)r.cell_y * w5 + r.cell_x, al, work);
  }
  double mx = 0;
  for (int64_t p = 0; p < P; p++) {
    double s = 0;
    for (int j = 0; j < c; j++) s += al[j] * a[p * c + j];
    cam[p] = s > 0 ? s : 0;
    if (cam[p] > mx) mx = cam[p];
  }
  for (int64_t p = 0; p < P; p++) cam[p] = mx > 0 ? cam[p] / mx : 0;
  r.max = mx;
  if (result) *result = r;
  if (!alpha) free(al);
  free(work);
  return NULL;
}

dsc_status *dsc_gradcam_upsample(const double *cam, int h5, int w5, int H, int W, float *up) {
  if (!cam || !up || h5 < 1 || w5 < 1 || H < 1 || W < 1)
    return dsc_errorf("dsc_gradcam_upsample: invalid arguments (%dx%d to %dx%d)", w5, h5, W, H);
  float *src = malloc((size_t)h5 * w5 * sizeof *src);
  if (!src) return dsc_errorf("dsc_gradcam_upsample: out of memory");
  for (int64_t p = 0; p < (int64_t)h5 * w5; p++) src[p] = (float)cam[p];
  dsc_status *st = dsc_upsample_bilinear(1, h5, w5, 1, src, H, W, up);
  free(src);
  return st;
}

/* matplotlib's _jet_data: (x, value) anchors per channel, linear in between. */
static double segment(const double (*pts)[2], int n, double t) {
  for (int i = 1; i < n; i++)
    if (t <= pts[i][0]) {
      double u = (t - pts[i - 1][0]) / (pts[i][0] - pts[i - 1][0]);
      return pts[i - 1][1] + u * (pts[i][1] - pts[i - 1][1]);
    }
  return pts[n - 1][1];
}

dsc_rgb dsc_gradcam_jet(double t) {
  static const double red[5][2] = {{0, 0}, {0.35, 0}, {0.66, 1}, {0.89, 1}, {1, 0.5}};
  static const double green[6][2] = {{0, 0}, {0.125, 0}, {0.375, 1}, {0.64, 1}, {0.91, 0}, {1, 0}};
  static const double blue[5][2] = {{0, 0.5}, {0.11, 1}, {0.34, 1}, {0.65, 0}, {1, 0}};
  if (!(t > 0)) t = 0; /* NaN too */
  if (t > 1) t = 1;
  dsc_rgb out = {(uint8_t)lround(255 * segment(red, 5, t)), (uint8_t)lround(255 * segment(green, 6, t)),
                 (uint8_t)lround(255 * segment(blue, 5, t))};
  return out;
}

void dsc_gradcam_overlay(const uint8_t *rgb, const float *cam, int64_t pixels, uint8_t *out) {
  for (int64_t i = 0; i < pixels; i++) {
    dsc_rgb j = dsc_gradcam_jet(cam[i]);
    const uint8_t jc[3] = {j.r, j.g, j.b};
    for (int k = 0; k < 3; k++) out[i * 3 + k] = (uint8_t)((rgb[i * 3 + k] + jc[k] + 1) / 2);
  }
}

void dsc_gradcam_mark(dsc_canvas *c, int x, int y, int arm) {
  const dsc_rgb black = {0, 0, 0}, white = {255, 255, 255};
  if (arm < 1) arm = 1;
  dsc_canvas_line(c, x - arm, y, x + arm, y, 3, black);
  dsc_canvas_line(c, x, y - arm, x, y + arm, 3, black);
  dsc_canvas_line(c, x - arm, y, x + arm, y, 1, white);
  dsc_canvas_line(c, x, y - arm, x, y + arm, 1, white);
}
