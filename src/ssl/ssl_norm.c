/* ssl_norm.c: per-row L2 normalization and its backward (spec/METHOD.md §1,
 * norm(x) = x / max(|x|, 1e-12)), declared in include/dsc/ssl_loss.h.
 *
 * Conventions: rows of `d` contiguous floats; norms and dot products are accumulated in
 * double and every output element is rounded to float once. Each row is finished before
 * the next is read, so y may alias x and dx may alias dy. */
#include <math.h>

#include "dsc/ssl_loss.h"

/* The clamp of METHOD.md §1. */
#define NORM_EPS 1e-12

void dsc_l2norm_rows(int64_t rows, int d, float *y, float *norms, const float *x) {
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = x + r * d;
    float *yr = y + r * d;
    double ss = 0.0;
    for (int i = 0; i < d; i++) ss += (double)xr[i] * (double)xr[i];
    const double n = sqrt(ss);
    const double inv = 1.0 / (n > NORM_EPS ? n : NORM_EPS);
    if (norms) norms[r] = (float)n;
    for (int i = 0; i < d; i++) yr[i] = (float)((double)xr[i] * inv);
  }
}

void dsc_l2norm_rows_backward(int64_t rows, int d, float *dx, const float *dy, const float *y,
                              const float *norms) {
  for (int64_t r = 0; r < rows; r++) {
    const float *dyr = dy + r * d, *yr = y + r * d;
    float *dxr = dx + r * d;
    const double n = norms[r];
    if (n > NORM_EPS) {
      double dot = 0.0;
      for (int i = 0; i < d; i++) dot += (double)yr[i] * (double)dyr[i];
      const double inv = 1.0 / n;
      for (int i = 0; i < d; i++) dxr[i] = (float)(((double)dyr[i] - (double)yr[i] * dot) * inv);
    } else {
      for (int i = 0; i < d; i++) dxr[i] = (float)((double)dyr[i] / NORM_EPS);
    }
  }
}
