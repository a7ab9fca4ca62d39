/* ref_ops.h: private to the reference backend (src/backend/ref/). Declares the op
 * functions that ref_backend.c puts into the dsc_backend table, one group per source file.
 *
 * The reference backend is the test oracle: naive, single-threaded, plain loops, every
 * sum accumulated in double, no library calls. Conventions are backend.h's (NHWC
 * activations, OIHW conv weights, [out,in] linear weights, parameter gradients +=,
 * activation gradients =, NULL optional pointers skip work). Every op first validates its arguments with the
 * shared backend_check_<op> (backend_check.h), which returns an error naming the op and the
 * bad value. bn_update_running is the shared host loop backend_bn_update_running_host. */
#ifndef DSC_REF_OPS_H
#define DSC_REF_OPS_H

#include "backend/backend.h"
#include "backend/backend_check.h"

/* ref_conv.c */
dsc_status *ref_conv2d_forward(dsc_backend *be, const dsc_conv_shape *s, float *y, const float *x,
                               const float *w, const float *b);
dsc_status *ref_conv2d_backward(dsc_backend *be, const dsc_conv_shape *s, float *dx, float *dw,
                                float *db, const float *dy, const float *x, const float *w);

/* ref_bn.c */
dsc_status *ref_bn_forward_train(dsc_backend *be, const dsc_bn_shape *s, float *y, float *save_mean,
                                 float *save_var, const float *x, const float *gamma,
                                 const float *beta, const float *residual);
dsc_status *ref_bn_forward_eval(dsc_backend *be, const dsc_bn_shape *s, float *y, const float *x,
                                const float *gamma, const float *beta, const float *running_mean,
                                const float *running_var, const float *residual);
dsc_status *ref_bn_backward(dsc_backend *be, const dsc_bn_shape *s, float *dx, float *dgamma,
                            float *dbeta, float *dresidual, const float *dy, const float *x,
                            const float *y, const float *gamma, const float *save_mean,
                            const float *save_var);

/* ref_pool.c */
dsc_status *ref_maxpool_forward(dsc_backend *be, const dsc_pool_shape *s, float *y, int32_t *argmax,
                                const float *x);
dsc_status *ref_maxpool_backward(dsc_backend *be, const dsc_pool_shape *s, float *dx,
                                 const float *dy, const int32_t *argmax);
dsc_status *ref_gap_forward(dsc_backend *be, int n, int hw, int c, float *y, const float *x);
dsc_status *ref_gap_backward(dsc_backend *be, int n, int hw, int c, float *dx, const float *dy);

/* ref_dense.c */
dsc_status *ref_linear_forward(dsc_backend *be, int n, int in, int out, float *y, const float *x,
                               const float *w, const float *b);
dsc_status *ref_linear_backward(dsc_backend *be, int n, int in, int out, float *dx, float *dw,
                                float *db, const float *dy, const float *x, const float *w);
dsc_status *ref_gemm(dsc_backend *be, int trans_a, int trans_b, int m, int n, int k, float alpha,
                     const float *a, int lda, const float *b, int ldb, float beta, float *c,
                     int ldc);

/* ref_seg.c */
dsc_status *ref_resize_bilinear_forward(dsc_backend *be, int n, int h, int w, int c, int oh,
                                        int ow, float *y, const float *x);
dsc_status *ref_resize_bilinear_backward(dsc_backend *be, int n, int h, int w, int c, int oh,
                                         int ow, float *dx, const float *dy);
dsc_status *ref_channel_scale(dsc_backend *be, int n, int hw, int c, float *y, const float *x,
                              const float *scale);
dsc_status *ref_softmax_ce(dsc_backend *be, int64_t pixels, int classes, const float *logits,
                           const uint8_t *labels, int ignore, float grad_scale, float *loss_sum,
                           float *dlogits);

#endif
