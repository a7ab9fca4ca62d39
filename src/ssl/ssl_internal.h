/* ssl_internal.h: pieces shared by the files of src/ssl/ that are not public API:
 * the two-layer necks (METHOD.md §2) and the walk over every checkpoint tensor (METHOD.md §8). */
#ifndef DSC_SSL_INTERNAL_H
#define DSC_SSL_INTERNAL_H

#include "dsc/dtype.h"
#include "dsc/weights.h"
#include "dsc/ssl.h"

/* Neck forward on `rows` vectors: hidden = ReLU(x W1^T + b1) (rows, C), out = hidden W2^T + b2
 * (rows, D). The global neck runs on pooled C5 (N rows), the dense neck on every pixel of C5
 * (N*P rows; a 1x1 conv on NHWC rows is exactly this). */
dsc_status *ssl_neck_forward(dsc_backend *be, const dsc_ssl_neck *nk, const float *params,
                             int rows, const float *x, float *hidden, float *out);
/* Backward: dx (rows, C) = (overwrite; NULL skips), parameter gradients +=. dhidden is work
 * memory (rows, C). */
dsc_status *ssl_neck_backward(dsc_backend *be, const dsc_ssl_neck *nk, const float *params,
                              float *grads, int rows, const float *x, const float *hidden,
                              const float *dout, float *dhidden, float *dx);

/* Calls `fn` for every checkpoint tensor of the model (METHOD.md §8), in a fixed order, with
 * its name (prefix + checkpoint name), dtype (F32, or I64 for counters), shape and the address
 * of its data in snapshot `s`. Stops at and returns the first error of fn. */
typedef dsc_weights_fn ssl_tensor_fn;
dsc_status *ssl_for_each_tensor(const dsc_ssl_model *m, dsc_ssl_snapshot *s, const char *prefix,
                                ssl_tensor_fn fn, void *ctx);

/* Frees the step's work memory (ssl_step.c). */
void ssl_step_work_free(dsc_ssl_model *m);

#endif
