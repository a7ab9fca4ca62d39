/* backend_check.c: the argument checks every backend runs before an op (see
 * backend_check.h), plus the host running-statistics update of batch norm.
 *
 * Sizes are compared in 64 bits or double, so that absurd shapes are reported rather than
 * overflowing int. Error messages start with the op's name as backend.h spells it. */
#include <limits.h>
#include <math.h>
#include <string.h>

#include "backend/backend_check.h"

/* ---- shapes ---- */

dsc_status *backend_check_conv(const char *op, const dsc_conv_shape *s) {
  if (!s) return dsc_errorf("%s: shape is NULL", op);
  if (s->n < 1 || s->h < 1 || s->w < 1 || s->c_in < 1 || s->c_out < 1)
    return dsc_errorf("%s: sizes must be >= 1 (n=%d h=%d w=%d c_in=%d c_out=%d)", op, s->n, s->h,
                      s->w, s->c_in, s->c_out);
  if (s->kh < 1 || s->kw < 1)
    return dsc_errorf("%s: kernel %dx%d must be >= 1x1", op, s->kh, s->kw);
  if (s->stride < 1) return dsc_errorf("%s: stride %d must be >= 1", op, s->stride);
  if (s->dilation < 1) return dsc_errorf("%s: dilation %d must be >= 1", op, s->dilation);
  if (s->pad < 0) return dsc_errorf("%s: pad %d must be >= 0", op, s->pad);
  const long long eff_h = (long long)s->dilation * (s->kh - 1) + 1;
  const long long eff_w = (long long)s->dilation * (s->kw - 1) + 1;
  const long long padded_h = (long long)s->h + 2LL * s->pad;
  const long long padded_w = (long long)s->w + 2LL * s->pad;
  if (padded_h > INT_MAX || padded_w > INT_MAX || eff_h > INT_MAX || eff_w > INT_MAX)
    return dsc_errorf("%s: padded input %lldx%lld or dilated kernel %lldx%lld exceeds int", op,
                      padded_h, padded_w, eff_h, eff_w);
  if (padded_h < eff_h || padded_w < eff_w)
    return dsc_errorf("%s: padded input %lldx%lld is smaller than the dilated kernel %lldx%lld", op,
                      padded_h, padded_w, eff_h, eff_w);
  return NULL;
}

dsc_status *backend_check_bn(const char *op, const dsc_bn_shape *s, int training) {
  if (!s) return dsc_errorf("%s: shape is NULL", op);
  if (s->n < 1 || s->h < 1 || s->w < 1 || s->c < 1)
    return dsc_errorf("%s: sizes must be >= 1 (n=%d h=%d w=%d c=%d)", op, s->n, s->h, s->w, s->c);
  if (!(s->eps >= 0.0f) || isinf(s->eps))
    return dsc_errorf("%s: eps %g must be finite and >= 0", op, (double)s->eps);
  if (!training) return NULL;
  if (s->groups < 1) return dsc_errorf("%s: groups %d must be >= 1", op, s->groups);
  if (s->n % s->groups != 0)
    return dsc_errorf("%s: groups %d does not divide the batch n=%d", op, s->groups, s->n);
  const double m = (double)(s->n / s->groups) * s->h * s->w; /* values per group and channel */
  if (m < 2)
    return dsc_errorf(
        "%s: each of the %d groups holds %.0f value(s) per channel; training "
        "batch norm needs more than 1 (n=%d h=%d w=%d)",
        op, s->groups, m, s->n, s->h, s->w);
  return NULL;
}

dsc_status *backend_check_pool(const char *op, const dsc_pool_shape *s) {
  if (!s) return dsc_errorf("%s: shape is NULL", op);
  if (s->n < 1 || s->h < 1 || s->w < 1 || s->c < 1)
    return dsc_errorf("%s: sizes must be >= 1 (n=%d h=%d w=%d c=%d)", op, s->n, s->h, s->w, s->c);
  if (s->k < 1) return dsc_errorf("%s: kernel %d must be >= 1", op, s->k);
  if (s->stride < 1) return dsc_errorf("%s: stride %d must be >= 1", op, s->stride);
  if (s->pad < 0 || s->pad > s->k / 2)
    return dsc_errorf("%s: pad %d must be in [0, kernel/2 = %d]", op, s->pad, s->k / 2);
  const long long padded_h = (long long)s->h + 2LL * s->pad;
  const long long padded_w = (long long)s->w + 2LL * s->pad;
  if (padded_h > INT_MAX || padded_w > INT_MAX)
    return dsc_errorf("%s: padded input %lldx%lld exceeds int", op, padded_h, padded_w);
  if (padded_h < s->k || padded_w < s->k)
    return dsc_errorf("%s: padded input %lldx%lld is smaller than the kernel %d", op, padded_h,
                      padded_w, s->k);
  if ((long long)s->h * s->w > INT32_MAX)
    return dsc_errorf("%s: image %dx%d has too many pixels for int32 argmax", op, s->h, s->w);
  return NULL;
}

dsc_status *backend_check_linear(const char *op, int n, int in, int out) {
  if (n < 1 || in < 1 || out < 1)
    return dsc_errorf("%s: sizes must be >= 1 (n=%d in=%d out=%d)", op, n, in, out);
  return NULL;
}

dsc_status *backend_check_gap(const char *op, int n, int hw, int c) {
  if (n < 1 || hw < 1 || c < 1)
    return dsc_errorf("%s: sizes must be >= 1 (n=%d hw=%d c=%d)", op, n, hw, c);
  return NULL;
}

/* ---- convolution ---- */

dsc_status *backend_check_conv2d_forward(const dsc_conv_shape *s, const float *y, const float *x,
                                         const float *w) {
  DSC_TRY(backend_check_conv("conv2d_forward", s));
  if (!y || !x || !w) return dsc_errorf("conv2d_forward: y, x and w must not be NULL");
  return NULL;
}

dsc_status *backend_check_conv2d_backward(const dsc_conv_shape *s, const float *dx,
                                          const float *dw, const float *dy, const float *x,
                                          const float *w) {
  DSC_TRY(backend_check_conv("conv2d_backward", s));
  if (!dy) return dsc_errorf("conv2d_backward: dy must not be NULL");
  if (dx && !w) return dsc_errorf("conv2d_backward: dx requested but w is NULL");
  if (dw && !x) return dsc_errorf("conv2d_backward: dw requested but x is NULL");
  return NULL;
}

/* ---- batch normalization ---- */

dsc_status *backend_check_bn_forward_train(const dsc_bn_shape *s, const float *y,
                                           const float *save_mean, const float *save_var,
                                           const float *x, const float *gamma,
                                           const float *beta) {
  DSC_TRY(backend_check_bn("bn_forward_train", s, 1));
  if (!y || !save_mean || !save_var || !x || !gamma || !beta)
    return dsc_errorf("bn_forward_train: y, save_mean, save_var, x, gamma, beta must not be NULL");
  return NULL;
}

dsc_status *backend_check_bn_forward_eval(const dsc_bn_shape *s, const float *y, const float *x,
                                          const float *gamma, const float *beta,
                                          const float *running_mean, const float *running_var) {
  DSC_TRY(backend_check_bn("bn_forward_eval", s, 0));
  if (!y || !x || !gamma || !beta || !running_mean || !running_var)
    return dsc_errorf("bn_forward_eval: y, x, gamma, beta, running stats must not be NULL");
  for (int c = 0; c < s->c; c++)
    if (!(running_var[c] + s->eps > 0.0f))
      return dsc_errorf("bn_forward_eval: running_var[%d] + eps = %g is not positive", c,
                        (double)running_var[c] + (double)s->eps);
  return NULL;
}

dsc_status *backend_check_bn_backward(const dsc_bn_shape *s, const float *dy, const float *x,
                                      const float *y, const float *gamma,
                                      const float *save_mean, const float *save_var) {
  DSC_TRY(backend_check_bn("bn_backward", s, 1));
  if (!dy || !x || !gamma || !save_mean || !save_var)
    return dsc_errorf("bn_backward: dy, x, gamma, save_mean, save_var must not be NULL");
  if (s->relu && !y) return dsc_errorf("bn_backward: relu is set but y is NULL");
  return NULL;
}

dsc_status *backend_check_bn_update_running(const dsc_bn_shape *s, const float *running_mean,
                                            const float *running_var, const float *save_mean,
                                            const float *save_var, float momentum) {
  DSC_TRY(backend_check_bn("bn_update_running", s, 1));
  if (!running_mean || !running_var || !save_mean || !save_var)
    return dsc_errorf("bn_update_running: running and saved statistics must not be NULL");
  if (!(momentum >= 0.0f && momentum <= 1.0f))
    return dsc_errorf("bn_update_running: momentum %g is outside [0,1]", (double)momentum);
  return NULL;
}

/* A host helper, not a check: ref and cpu both put it into their op table as
 * bn_update_running, since the statistics are only [groups][c] floats and the loop costs
 * nothing next to the batch norm itself. A device backend (CUDA) has its own kernel for
 * this op and must not use this function, which reads and writes host memory. Per channel,
 * with m = (n/groups)*h*w, in double:
 *   rmean = (1-mom)*rmean + mom*avg_g(mean_g); rvar = (1-mom)*rvar + mom*avg_g(var_g*m/(m-1)). */
dsc_status *backend_bn_update_running_host(dsc_backend *be, const dsc_bn_shape *s,
                                           float *running_mean, float *running_var,
                                           const float *save_mean, const float *save_var,
                                           float momentum) {
  (void)be;
  DSC_TRY(backend_check_bn_update_running(s, running_mean, running_var, save_mean, save_var,
                                          momentum));
  const int C = s->c, G = s->groups;
  const double m = (double)((size_t)(s->n / G) * s->h * s->w);
  const double mom = (double)momentum;
  for (int c = 0; c < C; c++) {
    double mean_avg = 0.0, var_avg = 0.0;
    for (int g = 0; g < G; g++) {
      mean_avg += (double)save_mean[(size_t)g * C + c];
      var_avg += (double)save_var[(size_t)g * C + c] * m / (m - 1.0);
    }
    mean_avg /= G;
    var_avg /= G;
    running_mean[c] = (float)((1.0 - mom) * (double)running_mean[c] + mom * mean_avg);
    running_var[c] = (float)((1.0 - mom) * (double)running_var[c] + mom * var_avg);
  }
  return NULL;
}

/* ---- pooling ---- */

dsc_status *backend_check_maxpool_forward(const dsc_pool_shape *s, const float *y,
                                          const int32_t *argmax, const float *x) {
  DSC_TRY(backend_check_pool("maxpool_forward", s));
  if (!y || !argmax || !x) return dsc_errorf("maxpool_forward: y, argmax, x must not be NULL");
  return NULL;
}

dsc_status *backend_check_maxpool_backward(const dsc_pool_shape *s, const float *dx,
                                           const float *dy, const int32_t *argmax) {
  DSC_TRY(backend_check_pool("maxpool_backward", s));
  if (!dx || !dy || !argmax) return dsc_errorf("maxpool_backward: dx, dy, argmax must not be NULL");
  return NULL;
}

dsc_status *backend_check_gap_forward(int n, int hw, int c, const float *y, const float *x) {
  DSC_TRY(backend_check_gap("gap_forward", n, hw, c));
  if (!y || !x) return dsc_errorf("gap_forward: y, x must not be NULL");
  return NULL;
}

dsc_status *backend_check_gap_backward(int n, int hw, int c, const float *dx, const float *dy) {
  DSC_TRY(backend_check_gap("gap_backward", n, hw, c));
  if (!dx || !dy) return dsc_errorf("gap_backward: dx, dy must not be NULL");
  return NULL;
}

/* ---- dense ---- */

dsc_status *backend_check_linear_forward(int n, int in, int out, const float *y, const float *x,
                                         const float *w) {
  DSC_TRY(backend_check_linear("linear_forward", n, in, out));
  if (!y || !x || !w) return dsc_errorf("linear_forward: y, x, w must not be NULL");
  return NULL;
}

dsc_status *backend_check_linear_backward(int n, int in, int out, const float *dx,
                                          const float *dw, const float *dy, const float *x,
                                          const float *w) {
  DSC_TRY(backend_check_linear("linear_backward", n, in, out));
  if (!dy) return dsc_errorf("linear_backward: dy must not be NULL");
  if (dx && !w) return dsc_errorf("linear_backward: dx requested but w is NULL");
  if (dw && !x) return dsc_errorf("linear_backward: dw requested but x is NULL");
  return NULL;
}

dsc_status *backend_check_gemm(int trans_a, int trans_b, int m, int n, int k, const float *a,
                               int lda, const float *b, int ldb, const float *c, int ldc) {
  if (m < 0 || n < 0 || k < 0)
    return dsc_errorf("gemm: sizes must be >= 0 (m=%d n=%d k=%d)", m, n, k);
  const int a_cols = trans_a ? m : k, b_cols = trans_b ? k : n;
  if (lda < (a_cols > 1 ? a_cols : 1))
    return dsc_errorf("gemm: lda %d is less than A's stored row length %d", lda, a_cols);
  if (ldb < (b_cols > 1 ? b_cols : 1))
    return dsc_errorf("gemm: ldb %d is less than B's stored row length %d", ldb, b_cols);
  if (ldc < (n > 1 ? n : 1))
    return dsc_errorf("gemm: ldc %d is less than C's row length %d", ldc, n);
  if (m > 0 && n > 0 && (!c || (k > 0 && (!a || !b))))
    return dsc_errorf("gemm: a, b, c must not be NULL");
  return NULL;
}

/* ---- segmentation head ---- */

/* Element counts are compared in double so that no product overflows; 2^60 leaves every
 * backend room for int64 offsets in bytes. */
#define SEG_MAX_ELEMS 1152921504606846976.0 /* 2^60 */

dsc_status *backend_check_resize_bilinear(const char *op, int n, int h, int w, int c, int oh, int ow,
                                          const float *out, const float *in) {
  const int backward = strcmp(op, "resize_bilinear_backward") == 0;
  if (n < 1 || h < 1 || w < 1 || c < 1 || oh < 1 || ow < 1)
    return dsc_errorf("%s: sizes must be >= 1 (n=%d h=%d w=%d c=%d oh=%d ow=%d)", op, n, h, w, c,
                      oh, ow);
  const double in_elems = (double)n * h * w * c, out_elems = (double)n * oh * ow * c;
  if (in_elems >= SEG_MAX_ELEMS || out_elems >= SEG_MAX_ELEMS)
    return dsc_errorf("%s: %.0f input or %.0f output elements exceed 2^60 (n=%d h=%d w=%d c=%d "
                      "oh=%d ow=%d)",
                      op, in_elems, out_elems, n, h, w, c, oh, ow);
  if (!out || !in)
    return dsc_errorf("%s: %s must not be NULL", op, backward ? "dx and dy" : "y and x");
  return NULL;
}

dsc_status *backend_check_channel_scale(int n, int hw, int c, const float *y, const float *x,
                                        const float *scale) {
  if (n < 1 || hw < 1 || c < 1)
    return dsc_errorf("channel_scale: sizes must be >= 1 (n=%d hw=%d c=%d)", n, hw, c);
  if ((double)n * hw * c >= SEG_MAX_ELEMS)
    return dsc_errorf("channel_scale: %.0f elements exceed 2^60 (n=%d hw=%d c=%d)",
                      (double)n * hw * c, n, hw, c);
  if (!y || !x || !scale) return dsc_errorf("channel_scale: y, x and scale must not be NULL");
  return NULL;
}

dsc_status *backend_check_softmax_ce(int64_t pixels, int classes, const float *logits,
                                     const uint8_t *labels, int ignore, const float *loss_sum) {
  if (pixels < 0) return dsc_errorf("softmax_ce: pixels %lld must be >= 0", (long long)pixels);
  if (classes < 1 || classes > 65535)
    return dsc_errorf("softmax_ce: classes %d is outside [1, 65535]", classes);
  if (ignore < 0 || ignore > 255)
    return dsc_errorf("softmax_ce: ignore %d is outside [0, 255] (labels are uint8)", ignore);
  if ((double)pixels * classes >= SEG_MAX_ELEMS)
    return dsc_errorf("softmax_ce: %lld pixels x %d classes exceed 2^60 logits",
                      (long long)pixels, classes);
  if (!loss_sum) return dsc_errorf("softmax_ce: loss_sum must not be NULL");
  if (pixels > 0 && (!logits || !labels))
    return dsc_errorf("softmax_ce: logits and labels must not be NULL (pixels=%lld)",
                      (long long)pixels);
  return NULL;
}

/* ---- optimizer ---- */

dsc_status *backend_check_sgd(size_t n, const float *p, const float *g, const float *buf,
                              float lr, float momentum, float weight_decay, int nesterov) {
  if (!(lr >= 0.0f) || isinf(lr))
    return dsc_errorf("sgd_step: lr %g must be finite and >= 0", (double)lr);
  if (!(momentum >= 0.0f) || isinf(momentum))
    return dsc_errorf("sgd_step: momentum %g must be finite and >= 0", (double)momentum);
  if (!(weight_decay >= 0.0f) || isinf(weight_decay))
    return dsc_errorf("sgd_step: weight_decay %g must be finite and >= 0", (double)weight_decay);
  if (nesterov && momentum <= 0.0f)
    return dsc_errorf("sgd_step: nesterov needs momentum > 0 (got %g)", (double)momentum);
  if (n == 0) return NULL;
  if (!p || !g) return dsc_errorf("sgd_step: p and g must not be NULL");
  if (!buf && momentum != 0.0f)
    return dsc_errorf("sgd_step: momentum %g needs a buffer, got NULL", (double)momentum);
  return NULL;
}

dsc_status *backend_check_ema(size_t n, const float *shadow, const float *p, float m) {
  if (!(m >= 0.0f && m <= 1.0f)) return dsc_errorf("ema: m %g is outside [0,1]", (double)m);
  if (n > 0 && (!shadow || !p)) return dsc_errorf("ema: shadow and p must not be NULL");
  return NULL;
}

dsc_status *backend_synchronize_host(dsc_backend *be) {
  (void)be;
  return NULL;
}
