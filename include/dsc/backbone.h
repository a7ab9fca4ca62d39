/* backbone.h: a ResNet with its own blobs on a backend — what evaluation, embedding,
 * benchmarks and tests need when there is no full training model around it.
 *
 * Blobs: params, grads (optional), momentum (optional), buffers on the backend; host copies
 * for initialization, loading and saving. Tensor names are torchvision's, no prefix.
 */
#ifndef DSC_BACKBONE_H
#define DSC_BACKBONE_H

#include "dsc/resnet.h"

typedef struct dsc_backbone {
  dsc_backend *be; /* not owned */
  dsc_table table;
  dsc_resnet net;
  float *params, *grads, *momentum, *buffers; /* backend memory; grads/momentum may be NULL */
  float *host_params, *host_buffers;
} dsc_backbone;

/* Builds the network and allocates its blobs (gradients and SGD momentum when trainable),
 * with torchvision's initialization from `seed` uploaded. */
dsc_status *dsc_backbone_create(dsc_backbone *m, dsc_backend *be, const dsc_resnet_config *cfg,
                                int trainable, uint64_t seed);
/* Host blobs -> backend blobs. */
dsc_status *dsc_backbone_upload(dsc_backbone *m);
/* Backend blobs -> host blobs. */
dsc_status *dsc_backbone_download(dsc_backbone *m);
/* Loads torchvision-named weights (under "" or "backbone.") from a safetensors file into
 * the host and backend blobs. */
dsc_status *dsc_backbone_load(dsc_backbone *m, const char *path, int allow_partial);
/* Writes the backbone with torchvision's keys (no prefix) to a safetensors file, with
 * string metadata pairs (keys[i], values[i]). */
dsc_status *dsc_backbone_save(dsc_backbone *m, const char *path, int n_meta,
                              const char *const *keys, const char *const *values);
void dsc_backbone_free(dsc_backbone *m);

/* The synthetic training step of `dsc selfcheck` and `dsc bench step` (and of
 * bench/torch_step.py): zero gradients, training forward of x (n,h,w,3) with one BN group,
 * loss = <pool(C5), weights> where `weights` (n x C5-channels, e.g. target/n) sits at the
 * start of `work`, backward, SGD (momentum 0.9, Nesterov, weight decay 1e-4) at rate `lr`.
 * `work` is backend memory of at least 2*n*C + 16 + n*h5*w5*C floats. */
dsc_status *dsc_backbone_synthetic_step(dsc_backbone *m, const float *x, int n, int h, int w,
                                        float *work, float lr, double *loss);

#endif
