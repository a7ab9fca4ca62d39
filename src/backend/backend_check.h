/* backend_check.h: argument validation shared by every backend (ref, cpu, and any later
 * one), so that each op's shape rules and error messages are written once.
 *
 * Each backend_check_<op> validates the arguments of the backend.h op of that name, in the
 * order the op's contract states them, and returns NULL when they are valid or an error
 * naming the op and the bad value (the tests match on these messages). They only read the
 * shape structs and scalars and compare pointers against NULL: they never dereference
 * tensor memory, so they suit device-memory backends too. The one exception is
 * backend_check_bn_forward_eval, which reads running_var and is therefore host-only.
 *
 * Ops that may be a no-op (gemm with m or n zero, sgd_step and ema with n zero) require
 * their pointers only when there is work; the op itself returns early after the check.
 *
 * backend_bn_update_running_host is not a check but a whole op: the running-statistics
 * update as one host loop, put into the op table by both host backends (ref and cpu). */
#ifndef DSC_BACKEND_CHECK_H
#define DSC_BACKEND_CHECK_H

#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Shape checks, `op` names the op in the message. */
dsc_status *backend_check_conv(const char *op, const dsc_conv_shape *s);
/* `training`: also check groups and that each group holds more than one value per channel. */
dsc_status *backend_check_bn(const char *op, const dsc_bn_shape *s, int training);
dsc_status *backend_check_pool(const char *op, const dsc_pool_shape *s);
dsc_status *backend_check_linear(const char *op, int n, int in, int out);
dsc_status *backend_check_gap(const char *op, int n, int hw, int c);

/* Whole-argument checks of one op (shape and required pointers). */
dsc_status *backend_check_conv2d_forward(const dsc_conv_shape *s, const float *y, const float *x,
                                         const float *w);
dsc_status *backend_check_conv2d_backward(const dsc_conv_shape *s, const float *dx,
                                          const float *dw, const float *dy, const float *x,
                                          const float *w);
dsc_status *backend_check_bn_forward_train(const dsc_bn_shape *s, const float *y,
                                           const float *save_mean, const float *save_var,
                                           const float *x, const float *gamma,
                                           const float *beta);
/* Host memory only: also requires running_var[c] + eps > 0 for every channel. */
dsc_status *backend_check_bn_forward_eval(const dsc_bn_shape *s, const float *y, const float *x,
                                          const float *gamma, const float *beta,
                                          const float *running_mean, const float *running_var);
dsc_status *backend_check_bn_backward(const dsc_bn_shape *s, const float *dy, const float *x,
                                      const float *y, const float *gamma,
                                      const float *save_mean, const float *save_var);
dsc_status *backend_check_bn_update_running(const dsc_bn_shape *s, const float *running_mean,
                                            const float *running_var, const float *save_mean,
                                            const float *save_var, float momentum);
dsc_status *backend_check_maxpool_forward(const dsc_pool_shape *s, const float *y,
                                          const int32_t *argmax, const float *x);
dsc_status *backend_check_maxpool_backward(const dsc_pool_shape *s, const float *dx,
                                           const float *dy, const int32_t *argmax);
dsc_status *backend_check_gap_forward(int n, int hw, int c, const float *y, const float *x);
dsc_status *backend_check_gap_backward(int n, int hw, int c, const float *dx, const float *dy);
dsc_status *backend_check_linear_forward(int n, int in, int out, const float *y, const float *x,
                                         const float *w);
dsc_status *backend_check_linear_backward(int n, int in, int out, const float *dx,
                                          const float *dw, const float *dy, const float *x,
                                          const float *w);
dsc_status *backend_check_gemm(int trans_a, int trans_b, int m, int n, int k, const float *a,
                               int lda, const float *b, int ldb, const float *c, int ldc);
/* Segmentation head. resize_bilinear: `op` is "resize_bilinear_forward" (out = y, in = x) or
 * "resize_bilinear_backward" (out = dx, in = dy); sizes >= 1, pointers non-NULL, n*h*w*c and
 * n*oh*ow*c below 2^60 elements. */
dsc_status *backend_check_resize_bilinear(const char *op, int n, int h, int w, int c, int oh, int ow,
                                          const float *out, const float *in);
dsc_status *backend_check_channel_scale(int n, int hw, int c, const float *y, const float *x,
                                        const float *scale);
/* pixels >= 0 (0: loss_sum = 0 and nothing else is read), classes in [1, 65535], ignore in
 * [0, 255], loss_sum non-NULL, logits and labels non-NULL when pixels > 0, pixels*classes below
 * 2^60. Labels themselves are not read (device memory); grad_scale is not checked. */
dsc_status *backend_check_softmax_ce(int64_t pixels, int classes, const float *logits,
                                     const uint8_t *labels, int ignore, const float *loss_sum);
dsc_status *backend_check_sgd(size_t n, const float *p, const float *g, const float *buf,
                              float lr, float momentum, float weight_decay, int nesterov);
dsc_status *backend_check_ema(size_t n, const float *shadow, const float *p, float m);

/* The bn_update_running op for host-memory backends (backend.h's formula, in double). */
dsc_status *backend_bn_update_running_host(dsc_backend *be, const dsc_bn_shape *s,
                                           float *running_mean, float *running_var,
                                           const float *save_mean, const float *save_var,
                                           float momentum);

/* The synchronize op of host-memory backends: every op has finished when it returns. */
dsc_status *backend_synchronize_host(dsc_backend *be);

#ifdef __cplusplus
}
#endif

#endif
