/* ref_seg.c: the reference backend's segmentation-head ops (see ref_ops.h and backend.h's
 * "segmentation head"): bilinear resize forward and backward, per-channel scale (Dropout2d),
 * softmax cross-entropy with an ignored label. The oracle for cpu_seg.c and cuda_seg.cu.
 *
 * Resize (PyTorch's F.interpolate(mode='bilinear', align_corners=False), no antialiasing):
 * output coordinate Y of an axis of `in` -> `out` samples the source coordinate
 *   s = max((Y + 0.5) * scale - 0.5, 0),  scale = in / out,
 * computed in float as PyTorch's CPU kernel does (area_pixel_compute_source_index, also
 * eval_bilinear_taps in src/eval/metrics.c); taps i0 = min(floor(s), in - 1),
 * i1 = min(i0 + 1, in - 1), weights 1 - l and l with l = s - i0 (float). Each output is the sum
 * of the four products weight_y * weight_x * x in double, rounded once. Equal sizes copy.
 * The backward scatters every dy element into a double copy of dx with the same four weights,
 * in output order, then rounds: the exact adjoint of the forward up to that one rounding.
 * Softmax cross-entropy: per row in double, m = max, lse = m + log(sum exp(x - m)),
 * loss = lse - x[label], p = exp(x - lse); sums over rows in double. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/ref/ref_ops.h"

/* The source taps of output index o along an axis of `in` -> `out` (float, as PyTorch). */
static void ref_taps(int o, int in, int out, int *i0, int *i1, float *l) {
  const float scale = (float)in / (float)out;
  float s = ((float)o + 0.5f) * scale - 0.5f;
  if (s < 0.0f) s = 0.0f;
  int a = (int)s;
  if (a > in - 1) a = in - 1;
  *i0 = a;
  *i1 = a < in - 1 ? a + 1 : a;
  *l = s - (float)a;
}

dsc_status *ref_resize_bilinear_forward(dsc_backend *be, int n, int h, int w, int c, int oh,
                                        int ow, float *y, const float *x) {
  (void)be;
  DSC_TRY(backend_check_resize_bilinear("resize_bilinear_forward", n, h, w, c, oh, ow, y, x));
  if (oh == h && ow == w) {
    memcpy(y, x, (size_t)n * h * w * c * sizeof *y);
    return NULL;
  }
  for (int i = 0; i < n; i++)
    for (int Y = 0; Y < oh; Y++) {
      int y0, y1;
      float ly;
      ref_taps(Y, h, oh, &y0, &y1, &ly);
      for (int X = 0; X < ow; X++) {
        int x0, x1;
        float lx;
        ref_taps(X, w, ow, &x0, &x1, &lx);
        const double wy[2] = {1.0 - (double)ly, (double)ly}, wx[2] = {1.0 - (double)lx, (double)lx};
        const int ys[2] = {y0, y1}, xs[2] = {x0, x1};
        for (int ch = 0; ch < c; ch++) {
          double acc = 0.0;
          for (int a = 0; a < 2; a++)
            for (int b = 0; b < 2; b++)
              acc += wy[a] * wx[b] * (double)x[(((size_t)i * h + ys[a]) * w + xs[b]) * c + ch];
          y[(((size_t)i * oh + Y) * ow + X) * c + ch] = (float)acc;
        }
      }
    }
  return NULL;
}

dsc_status *ref_resize_bilinear_backward(dsc_backend *be, int n, int h, int w, int c, int oh,
                                         int ow, float *dx, const float *dy) {
  (void)be;
  DSC_TRY(backend_check_resize_bilinear("resize_bilinear_backward", n, h, w, c, oh, ow, dx, dy));
  const size_t total = (size_t)n * h * w * c;
  if (oh == h && ow == w) {
    memcpy(dx, dy, total * sizeof *dx);
    return NULL;
  }
  double *acc = calloc(total, sizeof *acc);
  if (!acc)
    return dsc_errorf("resize_bilinear_backward: out of memory for %zu doubles (n=%d h=%d w=%d c=%d)",
                      total, n, h, w, c);
  for (int i = 0; i < n; i++)
    for (int Y = 0; Y < oh; Y++) {
      int y0, y1;
      float ly;
      ref_taps(Y, h, oh, &y0, &y1, &ly);
      for (int X = 0; X < ow; X++) {
        int x0, x1;
        float lx;
        ref_taps(X, w, ow, &x0, &x1, &lx);
        const double wy[2] = {1.0 - (double)ly, (double)ly}, wx[2] = {1.0 - (double)lx, (double)lx};
        const int ys[2] = {y0, y1}, xs[2] = {x0, x1};
        for (int ch = 0; ch < c; ch++) {
          const double g = (double)dy[(((size_t)i * oh + Y) * ow + X) * c + ch];
          for (int a = 0; a < 2; a++)
            for (int b = 0; b < 2; b++)
              acc[(((size_t)i * h + ys[a]) * w + xs[b]) * c + ch] += wy[a] * wx[b] * g;
        }
      }
    }
  for (size_t k = 0; k < total; k++) dx[k] = (float)acc[k];
  free(acc);
  return NULL;
}

dsc_status *ref_channel_scale(dsc_backend *be, int n, int hw, int c, float *y, const float *x,
                              const float *scale) {
  (void)be;
  DSC_TRY(backend_check_channel_scale(n, hw, c, y, x, scale));
  for (int i = 0; i < n; i++)
    for (int p = 0; p < hw; p++)
      for (int ch = 0; ch < c; ch++) {
        const size_t k = ((size_t)i * hw + p) * c + ch;
        y[k] = x[k] * scale[(size_t)i * c + ch];
      }
  return NULL;
}

/* A label that is neither `ignore` nor < classes breaks the caller's guarantee; the reference
 * reports it (the fast backends do not read labels twice to check). */
dsc_status *ref_softmax_ce(dsc_backend *be, int64_t pixels, int classes, const float *logits,
                           const uint8_t *labels, int ignore, float grad_scale, float *loss_sum,
                           float *dlogits) {
  (void)be;
  DSC_TRY(backend_check_softmax_ce(pixels, classes, logits, labels, ignore, loss_sum));
  double total = 0.0;
  for (int64_t r = 0; r < pixels; r++) {
    const float *row = logits + (size_t)r * classes;
    float *drow = dlogits ? dlogits + (size_t)r * classes : NULL;
    const int label = labels[r];
    if (label == ignore) {
      if (drow)
        for (int k = 0; k < classes; k++) drow[k] = 0.0f;
      continue;
    }
    if (label >= classes)
      return dsc_errorf("softmax_ce: labels[%lld] = %d is neither ignore (%d) nor < classes (%d)",
                        (long long)r, label, ignore, classes);
    double m = (double)row[0];
    for (int k = 1; k < classes; k++)
      if ((double)row[k] > m) m = (double)row[k];
    double s = 0.0;
    for (int k = 0; k < classes; k++) s += exp((double)row[k] - m);
    const double lse = m + log(s);
    total += lse - (double)row[label];
    if (drow)
      for (int k = 0; k < classes; k++) {
        const double p = exp((double)row[k] - lse);
        drow[k] = (float)((double)grad_scale * (p - (k == label ? 1.0 : 0.0)));
      }
  }
  loss_sum[0] = (float)total;
  return NULL;
}
