/* ssl_neck.c: DenseCL's necks without BatchNorm (METHOD.md §2): Linear(C,C) -> ReLU ->
 * Linear(C,D) on rows of C floats. The global neck takes the pooled C5 of each image, the
 * dense neck every pixel of C5 (its 1x1 convolutions, weights [O,I,1,1], are the same
 * products on NHWC rows). */
#include "ssl/ssl_internal.h"

dsc_status *ssl_neck_forward(dsc_backend *be, const dsc_ssl_neck *nk, const float *params,
                             int rows, const float *x, float *hidden, float *out) {
  DSC_TRY(be->linear_forward(be, rows, nk->c, nk->c, hidden, x, params + nk->w1, params + nk->b1));
  DSC_TRY(be->relu_forward(be, hidden, hidden, (size_t)rows * nk->c));
  return be->linear_forward(be, rows, nk->c, nk->d, out, hidden, params + nk->w2, params + nk->b2);
}

dsc_status *ssl_neck_backward(dsc_backend *be, const dsc_ssl_neck *nk, const float *params,
                              float *grads, int rows, const float *x, const float *hidden,
                              const float *dout, float *dhidden, float *dx) {
  DSC_TRY(be->linear_backward(be, rows, nk->c, nk->d, dhidden, grads + nk->w2, grads + nk->b2,
                              dout, hidden, params + nk->w2));
  /* hidden is the ReLU's output: its mask is hidden > 0. */
  DSC_TRY(be->relu_backward(be, dhidden, dhidden, hidden, (size_t)rows * nk->c));
  return be->linear_backward(be, rows, nk->c, nk->c, dx, grads + nk->w1, grads + nk->b1, dhidden,
                             x, params + nk->w1);
}
