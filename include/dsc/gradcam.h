/* gradcam.h: Grad-CAM (Selvaraju et al. 2017) of a backbone's C5 for `dsc viz gradcam` — the heat maps
 * of the DSC paper's Fig. 6 (docs/viz.md, "Grad-CAM"). This is the definition others check:
 *
 *  A         C5 of ONE image (layer4's output after its last ReLU, the backbone in evaluation mode:
 *            BN with running statistics), NHWC (h5, w5, C), seen as P = h5 * w5 rows A_p (row-major
 *            p = y * w5 + x) of C channels; the image preprocessed as `dsc viz maps` does.
 *  target y  one of
 *    probe   a linear classifier on the global-average-pooled C5 (include/dsc/probe_file.h), class K:
 *            y = weight[K] . (1/P) sum_p A_p + bias[K];
 *    pixel   p0 = the C5 cell holding input pixel (x, y) of the W x H input: (floor(x * w5 / W),
 *            floor(y * h5 / H)); y = (1/P) sum_p cos(A_p, A_p0), cos(u, v) = u.v / (max(|u|, 1e-12)
 *            max(|v|, 1e-12)) — the dense embedding's similarity to the chosen pixel; the gradient
 *            flows through both A_p and A_p0.
 *  Grad-CAM  alpha_c = (1/P) sum_p dy/dA_pc; cam_p = ReLU(sum_c alpha_c A_pc); cam /= max_p cam_p
 *            (all zero when that maximum is 0), then bilinearly upsampled to W x H (PyTorch's
 *            align_corners=False rule, dsc_upsample_bilinear).
 *
 * Both gradients are analytic functions of A (no backward through the backbone), in double:
 *   probe   dy/dA_p = weight[K] / P, so alpha = weight[K] / P.
 *   pixel   with n_p = max(|A_p|, eps), b = A_p0, cos_p = A_p.b / (n_p n_b), and [.] = 1 where the
 *           norm is above eps (the clamp passes no gradient where it is active):
 *             d cos(a, b)/da = b / (n_a n_b) - [|a| > eps] cos a / |a|^2
 *             d cos(a, b)/db = a / (n_a n_b) - [|b| > eps] cos b / |b|^2
 *           dy/dA_q = (1/P) d cos(A_q, b)/da + [q = p0] (1/P) sum_p d cos(A_p, b)/db, so
 *             alpha = (1/P^2) (sum_q d cos(A_q, b)/da + sum_p d cos(A_p, b)/db).
 *           A cell whose C5 vector is exactly zero has cos 0 and gradient b / (1e-12 n_b): by the
 *           definition it dominates alpha, which then points along A_p0 (the cam is then the ReLU of
 *           the unnormalized similarity to A_p0).
 */
#ifndef DSC_GRADCAM_H
#define DSC_GRADCAM_H

#include <stdint.h>

#include "dsc/status.h"
#include "dsc/viz.h"

#define DSC_GRADCAM_EPS 1e-12

typedef enum dsc_gradcam_kind {
  DSC_GRADCAM_PIXEL = 0,
  DSC_GRADCAM_PROBE = 1,
} dsc_gradcam_kind;

typedef struct dsc_gradcam_target {
  dsc_gradcam_kind kind;
  /* pixel: the pixel (x, y) of the in_w x in_h input */
  int x, y, in_w, in_h;
  /* probe: weight (classes, c), bias (classes), the class */
  const float *weight, *bias;
  int classes, class_index;
} dsc_gradcam_target;

typedef struct dsc_gradcam_result {
  double score;       /* y */
  double max;         /* max_p ReLU(sum_c alpha_c A_pc) before normalization */
  int cell_x, cell_y; /* pixel: p0's cell; probe: -1 */
} dsc_gradcam_result;

/* The C5 cell of input pixel (x, y): (x * w5 / W, y * h5 / H) floored. Errors name a pixel outside
 * the image. */
dsc_status *dsc_gradcam_cell(int x, int y, int in_w, int in_h, int w5, int h5, int *cell_x,
                             int *cell_y);

/* Grad-CAM of A (h5, w5, c) NHWC for target t: cam (h5 * w5, double) normalized to [0, 1], alpha (c,
 * double; may be NULL), result (may be NULL). Errors name the bad argument (class out of range,
 * pixel outside the input, missing probe tensors). */
dsc_status *dsc_gradcam(const float *a, int h5, int w5, int c, const dsc_gradcam_target *t,
                        double *cam, double *alpha, dsc_gradcam_result *result);

/* cam (h5, w5) bilinearly upsampled to (H, W) (dsc_upsample_bilinear, align_corners=False): up (H*W). */
dsc_status *dsc_gradcam_upsample(const double *cam, int h5, int w5, int H, int W, float *up);

/* matplotlib's "jet" colour map at t in [0, 1] (its piecewise-linear segment data; t clamped, NaN = 0). */
dsc_rgb dsc_gradcam_jet(double t);

/* The overlay: each pixel = round((image + jet(cam)) / 2) per channel, jet's channels as
 * round(255 * value); rgb and out (pixels * 3), cam (pixels). out may equal rgb. */
void dsc_gradcam_overlay(const uint8_t *rgb, const float *cam, int64_t pixels, uint8_t *out);

/* The pixel target's mark on a canvas: a cross centred at (x, y) with arms of `arm` pixels, white
 * lines of width 1 on black lines of width 3. */
void dsc_gradcam_mark(dsc_canvas *c, int x, int y, int arm);

#endif
