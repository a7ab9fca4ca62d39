/* ref_conv.c: the reference backend's 2-D convolution (see ref_ops.h for the conventions).
 *
 * x (n,h,w,ci) NHWC, weight (co,ci,kh,kw) OIHW, y (n,oh,ow,co) NHWC. Output (oy,ox) reads
 * input (oy*stride - pad + ky*dilation, ox*stride - pad + kx*dilation); positions outside
 * the image read zero (PyTorch's symmetric zero padding). Every output is a direct sum
 * in double; the backward is written in gather form (each gradient element sums its own
 * contributions), so no scratch memory and no scatter order to worry about. */
#include <stddef.h>

#include "backend/ref/ref_ops.h"

dsc_status *ref_conv2d_forward(dsc_backend *be, const dsc_conv_shape *s, float *y, const float *x,
                               const float *w, const float *b) {
  DSC_TRY(backend_check_conv2d_forward(s, y, x, w));
  const int oh = dsc_conv_oh(s), ow = dsc_conv_ow(s);
  const int H = s->h, W = s->w, CI = s->c_in, CO = s->c_out, KH = s->kh, KW = s->kw;
  for (int n = 0; n < s->n; n++)
    for (int oy = 0; oy < oh; oy++)
      for (int ox = 0; ox < ow; ox++)
        for (int co = 0; co < CO; co++) {
          double acc = b ? (double)b[co] : 0.0;
          for (int ky = 0; ky < KH; ky++) {
            int iy = oy * s->stride - s->pad + ky * s->dilation;
            if (iy < 0 || iy >= H) continue;
            for (int kx = 0; kx < KW; kx++) {
              int ix = ox * s->stride - s->pad + kx * s->dilation;
              if (ix < 0 || ix >= W) continue;
              const float *xp = x + (((size_t)n * H + iy) * W + ix) * CI;
              for (int ci = 0; ci < CI; ci++)
                acc += (double)xp[ci] * (double)w[(((size_t)co * CI + ci) * KH + ky) * KW + kx];
            }
          }
          y[(((size_t)n * oh + oy) * ow + ox) * CO + co] = (float)acc;
        }
  return NULL;
}

dsc_status *ref_conv2d_backward(dsc_backend *be, const dsc_conv_shape *s, float *dx, float *dw,
                                float *db, const float *dy, const float *x, const float *w) {
  DSC_TRY(backend_check_conv2d_backward(s, dx, dw, dy, x, w));
  const int oh = dsc_conv_oh(s), ow = dsc_conv_ow(s);
  const int H = s->h, W = s->w, CI = s->c_in, CO = s->c_out, KH = s->kh, KW = s->kw;
  const int st = s->stride, pad = s->pad, dil = s->dilation;

  /* dx[n,iy,ix,ci] = sum over (ky,kx,co) with iy = oy*st - pad + ky*dil for an integer
   * output row oy in [0,oh) (same for columns) of dy[n,oy,ox,co] * w[co,ci,ky,kx]. */
  if (dx) {
    for (int n = 0; n < s->n; n++)
      for (int iy = 0; iy < H; iy++)
        for (int ix = 0; ix < W; ix++)
          for (int ci = 0; ci < CI; ci++) {
            double acc = 0.0;
            for (int ky = 0; ky < KH; ky++) {
              int ty = iy + pad - ky * dil;
              if (ty < 0 || ty % st != 0 || ty / st >= oh) continue;
              int oy = ty / st;
              for (int kx = 0; kx < KW; kx++) {
                int tx = ix + pad - kx * dil;
                if (tx < 0 || tx % st != 0 || tx / st >= ow) continue;
                int ox = tx / st;
                const float *dyp = dy + (((size_t)n * oh + oy) * ow + ox) * CO;
                for (int co = 0; co < CO; co++)
                  acc += (double)dyp[co] * (double)w[(((size_t)co * CI + ci) * KH + ky) * KW + kx];
              }
            }
            dx[(((size_t)n * H + iy) * W + ix) * CI + ci] = (float)acc;
          }
  }

  /* dw[co,ci,ky,kx] += sum over (n,oy,ox) of dy[n,oy,ox,co] * x[n,iy,ix,ci]. */
  if (dw) {
    for (int co = 0; co < CO; co++)
      for (int ci = 0; ci < CI; ci++)
        for (int ky = 0; ky < KH; ky++)
          for (int kx = 0; kx < KW; kx++) {
            double acc = 0.0;
            for (int n = 0; n < s->n; n++)
              for (int oy = 0; oy < oh; oy++) {
                int iy = oy * st - pad + ky * dil;
                if (iy < 0 || iy >= H) continue;
                for (int ox = 0; ox < ow; ox++) {
                  int ix = ox * st - pad + kx * dil;
                  if (ix < 0 || ix >= W) continue;
                  acc += (double)dy[(((size_t)n * oh + oy) * ow + ox) * CO + co] *
                         (double)x[(((size_t)n * H + iy) * W + ix) * CI + ci];
                }
              }
            float *p = &dw[(((size_t)co * CI + ci) * KH + ky) * KW + kx];
            *p = (float)((double)*p + acc);
          }
  }

  /* db[co] += sum over (n,oy,ox) of dy. */
  if (db) {
    for (int co = 0; co < CO; co++) {
      double acc = 0.0;
      for (size_t i = 0; i < (size_t)s->n * oh * ow; i++) acc += (double)dy[i * CO + co];
      db[co] = (float)((double)db[co] + acc);
    }
  }
  return NULL;
}
