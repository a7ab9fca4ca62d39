/* ref_conv.c: the reference backend's 2-D convolution (see ref_ops.h for the conventions).
 *
 * x (n,h,w,ci) NHWC, weight (co,ci,kh,kw) OIHW, y (n,oh,ow,co) NHWC. Output (oy,ox) reads
 * input (oy*stride - pad + ky*dilation, ox*stride - pad + kx*dilation); positions outside
 * the image read zero (PyTorch's symmetric zero padding). Every output is a direct sum
 * in double; the backward is written in gather form (each gradient element sums its own
 * contributions), so no scratch memory and no scatter order to worry about. */
#include <limits.h>
#include <stddef.h>

#include "backend/ref/ref_ops.h"

static dsc_status *conv_shape_check(const char *op, const dsc_conv_shape *s) {
  if (!s) return dsc_errorf("%s: shape is NULL", op);
  if (s->n < 1 || s->h < 1 || s->w < 1 || s->c_in < 1 || s->c_out < 1)
    return dsc_errorf("%s: sizes must be >= 1 (n=%d h=%d w=%d c_in=%d c_out=%d)", op, s->n, s->h,
                      s->w, s->c_in, s->c_out);
  if (s->kh < 1 || s->kw < 1)
    return dsc_errorf("%s: kernel %dx%d must be >= 1x1", op, s->kh, s->kw);
  if (s->stride < 1) return dsc_errorf("%s: stride %d must be >= 1", op, s->stride);
  if (s->dilation < 1) return dsc_errorf("%s: dilation %d must be >= 1", op, s->dilation);
  if (s->pad < 0) return dsc_errorf("%s: pad %d must be >= 0", op, s->pad);
  /* In 64 bits so that absurd shapes are reported rather than overflowing. */
  long long eff_h = (long long)s->dilation * (s->kh - 1) + 1;
  long long eff_w = (long long)s->dilation * (s->kw - 1) + 1;
  long long padded_h = (long long)s->h + 2LL * s->pad, padded_w = (long long)s->w + 2LL * s->pad;
  if (padded_h > INT_MAX || padded_w > INT_MAX || eff_h > INT_MAX || eff_w > INT_MAX)
    return dsc_errorf("%s: padded input %lldx%lld or dilated kernel %lldx%lld exceeds int", op,
                      padded_h, padded_w, eff_h, eff_w);
  if (padded_h < eff_h || padded_w < eff_w)
    return dsc_errorf("%s: padded input %lldx%lld is smaller than the dilated kernel %lldx%lld", op,
                      padded_h, padded_w, eff_h, eff_w);
  return NULL;
}

dsc_status *ref_conv2d_forward(dsc_backend *be, const dsc_conv_shape *s, float *y, const float *x,
                               const float *w, const float *b) {
  DSC_TRY(conv_shape_check("conv2d_forward", s));
  if (!y || !x || !w) return dsc_errorf("conv2d_forward: y, x and w must not be NULL");
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
  DSC_TRY(conv_shape_check("conv2d_backward", s));
  if (!dy) return dsc_errorf("conv2d_backward: dy must not be NULL");
  if (dx && !w) return dsc_errorf("conv2d_backward: dx requested but w is NULL");
  if (dw && !x) return dsc_errorf("conv2d_backward: dw requested but x is NULL");
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
