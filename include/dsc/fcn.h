/* fcn.h: the FCN semantic-segmentation model of `dsc finetune seg` (METHOD.md §7, the paper's
 * VOC/Cityscapes protocol; mmsegmentation's FCNHead without concat_input or auxiliary head):
 *
 *   C5 = ResNet(x)                        (optionally dilated: dsc_resnet_layout, e.g. D8)
 *   a0 = ReLU(BN(conv3x3(C5)))            channels `channels` (256), padding 1, no conv bias
 *   a1 = ReLU(BN(conv3x3(a0)))
 *   d  = Dropout2d(a1, p)                 training only: whole channels of an image kept with
 *                                         probability 1 - p, kept ones scaled by 1 / (1 - p)
 *   logits = conv1x1(d) + bias            `classes` outputs
 *   up = bilinear(logits -> label size)   align_corners = False
 *   loss = CrossEntropy(up, labels, ignore 255), mean over the non-ignored pixels
 *
 * Tensors (one dsc_table, blobs as DESIGN.md): the backbone under "backbone." + torchvision's
 * names; the head under mmsegmentation's names, so a checkpoint reads as mmseg's state dict:
 * decode_head.convs.{0,1}.conv.weight, decode_head.convs.{0,1}.bn.{weight,bias,running_mean,
 * running_var}, decode_head.conv_seg.{weight,bias}.
 *
 * Initialization (mmseg's): the backbone as torchvision's (or loaded weights); the head convs
 * kaiming-normal (fan_out, ReLU gain), BN gamma 1 beta 0, conv_seg normal(0, 0.01) with bias 0.
 * Draws come from the counter-based RNG keyed by (seed, tensor name, element).
 *
 * BN: training forwards use the batch's statistics (one group: the whole batch) and update the
 * running ones (momentum 0.1) in the backbone and the head; evaluation uses the running ones.
 * Dropout masks: channel c of image i at step s is kept when
 * dsc_rng_uniform(seed, DSC_RNG_DROPOUT, s, i, c) >= p, so a step is a pure function of its inputs.
 */
#ifndef DSC_FCN_H
#define DSC_FCN_H

#include <stdint.h>

#include "dsc/dataset.h"
#include "dsc/eval.h"
#include "dsc/optim.h"
#include "dsc/params.h"
#include "dsc/resnet.h"
#include "dsc/safetensors.h"

typedef struct dsc_fcn_config {
  dsc_resnet_config backbone;
  dsc_resnet_layout layout; /* all 0: the standard ResNet */
  int channels;             /* head width, 256 */
  int classes;              /* 1..254 */
  float dropout;            /* Dropout2d probability in [0, 1), 0.1 */
} dsc_fcn_config;

typedef struct dsc_fcn {
  dsc_backend *be; /* not owned */
  dsc_fcn_config cfg;
  dsc_table table;
  dsc_resnet net;   /* valid when has_backbone */
  int has_backbone; /* 0: a head alone (dsc_fcn_create_head) */
  int in_channels;  /* channels of the head's input (C5) */
  /* Backend blobs (params, grads, SGD momentum, buffers) and host copies. */
  float *params, *grads, *momentum, *buffers;
  float *host_params, *host_buffers;
  int64_t head_batches_tracked; /* training forwards of the head's BNs */
  /* Offsets of the head's tensors in the parameter / buffer blobs. */
  size_t w_off[2], gamma_off[2], beta_off[2], mean_off[2], var_off[2], seg_w_off, seg_b_off;
  /* Activation plan for (n, h5, w5, out_h, out_w); rebuilt when that changes. */
  int plan_n, plan_h5, plan_w5, plan_oh, plan_ow;
  void *arena; /* one backend allocation holding every buffer below */
  float *z[2], *a[2], *drop, *logits, *up, *dup, *dlogits, *dd, *da, *dz, *dc5;
  float *save_mean[2], *save_var[2], *scale, *loss_sum;
  uint8_t *labels;
  int last_train_n; /* batch of the last training forward (backward needs it) */
} dsc_fcn;

/* Builds the model on `be` with gradients and SGD momentum, initialized from `seed`. Errors: a bad
 * config (named), out of memory. */
dsc_status *dsc_fcn_create(dsc_fcn *m, dsc_backend *be, const dsc_fcn_config *cfg, uint64_t seed);
/* The head alone on inputs of `in_channels` channels, without a backbone (cfg->backbone and
 * cfg->layout unused): for tests of the head, and heads on features computed elsewhere. Only the
 * dsc_fcn_head_* functions and the tensor functions apply to it. */
dsc_status *dsc_fcn_create_head(dsc_fcn *m, dsc_backend *be, const dsc_fcn_config *cfg, int in_channels,
                                uint64_t seed);
void dsc_fcn_free(dsc_fcn *m);

/* Loads a backbone from any weights file dsc reads (dsc checkpoint or export, torchvision .pth, a
 * fine-tuning checkpoint: dsc_weights_open / dsc_weights_detect_resnet), replacing the backbone's
 * initialization; the head keeps its own. Its depth and stem must be the model's. allow_partial
 * as dsc_weights_load. */
dsc_status *dsc_fcn_load_backbone(dsc_fcn *m, const char *path, int allow_partial);

/* The learning rate of mmseg's poly schedule at step s of S (0-based):
 * (lr - min_lr) * (1 - s / S)^power + min_lr. */
double dsc_poly_lr(double lr, double min_lr, double power, int64_t step, int64_t total);

typedef struct dsc_fcn_step_info {
  double loss;      /* mean cross-entropy over the batch's non-ignored pixels (0 when none) */
  int64_t labeled;  /* non-ignored pixels */
} dsc_fcn_step_info;

/* One training step on a batch of n images x (n, h, w, 3) NHWC (backend memory) with host labels
 * (n, h, w) uint8 (255 = ignore, other values < classes, else an error naming the value): zero
 * the gradients, training forward, loss, backward, SGD (torch.optim.SGD semantics) at `lr`.
 * `step` and `seed` key the dropout masks. */
dsc_status *dsc_fcn_train_step(dsc_fcn *m, const float *x, const uint8_t *labels, int n, int h,
                               int w, int64_t step, uint64_t seed, const dsc_sgd_config *sgd,
                               double lr, dsc_fcn_step_info *info);

/* Evaluation forward of x (n, h, w, 3) (backend memory): the logits bilinearly resized to the input
 * size, into host memory `out` (n, h, w, classes) NHWC (mmseg's encode_decode). */
dsc_status *dsc_fcn_predict(dsc_fcn *m, const float *x, int n, int h, int w, float *out);

/* The head alone (C5 given), for tests and for the parts above: training forward and backward of
 * c5 (n, h5, w5, C) with labels (n, oh, ow) on the host, returning the loss; accumulates the head's
 * parameter gradients and, when dc5 is not NULL, writes dL/dC5 (backend memory). Does not zero
 * gradients and does not step. `scale_host` (n * channels) overrides the dropout masks (NULL: drawn
 * from (seed, step)). */
dsc_status *dsc_fcn_head_train(dsc_fcn *m, const float *c5, int n, int h5, int w5, const uint8_t *labels,
                               int oh, int ow, int64_t step, uint64_t seed, const float *scale_host,
                               float *dc5, dsc_fcn_step_info *info);
/* Evaluation forward of the head: logits (n, h5, w5, classes) in backend memory owned by the model
 * (valid until the next call). */
dsc_status *dsc_fcn_head_eval(dsc_fcn *m, const float *c5, int n, int h5, int w5, const float **logits);

/* ---- evaluation (src/finetune/fcn_eval.c) ----
 * mmseg's test protocol: each image preprocessed by dsc_seg_eval_load (Resize to the test scale
 * keeping the ratio, Normalize), logits at that size by whole-image inference (dsc_fcn_predict) or
 * by sliding windows (mmseg's slide_inference: windows of crop_w x crop_h at stride_w x stride_h,
 * rows of windows at y1 = min(i * stride_h, h - crop_h) clipped to 0 (likewise columns), a window
 * no larger than the image, logits summed where windows overlap and divided by their count), then
 * bilinearly resized to the original label size (align_corners = False), argmax (ties: smallest
 * class), and a confusion matrix over the non-ignored pixels of every image. */
typedef struct dsc_fcn_eval_config {
  int slide;                 /* 0: whole image, 1: sliding windows */
  int crop_w, crop_h;        /* slide window */
  int stride_w, stride_h;    /* slide stride */
  int scale_w, scale_h;      /* test Resize img_scale; 0, 0: original size */
  int64_t max_images;        /* the first N images (0: all) */
  int strict;                /* an unreadable image is an error (else skipped with a warning) */
  int progress;              /* "evaluating i/n" on stderr */
  int64_t max_pixels;        /* whole mode: consecutive images of one size share a forward (at most 8)
                              * while their pixels stay within this (e.g. the training batch's);
                              * <= 0: one image per forward */
} dsc_fcn_eval_config;

/* Scores of the model on `val` (a dataset with label maps; labels must be < classes or 255, else
 * an error naming the file). `out` is owned by the caller (dsc_seg_scores_free). */
dsc_status *dsc_fcn_evaluate(dsc_fcn *m, const dsc_dataset *val, const dsc_fcn_eval_config *cfg,
                             dsc_seg_scores *out);

/* The logits (h, w, classes) of one preprocessed image x_host (h, w, 3) on the host, by whole or
 * sliding-window inference as in dsc_fcn_evaluate. */
dsc_status *dsc_fcn_infer(dsc_fcn *m, const float *x_host, int h, int w, const dsc_fcn_eval_config *cfg,
                          float *out);

/* Host blobs <-> backend blobs (parameters, buffers and SGD momentum). */
dsc_status *dsc_fcn_download(dsc_fcn *m, float *host_momentum);
dsc_status *dsc_fcn_upload(dsc_fcn *m, const float *host_momentum);

/* Adds every tensor of the model to `w` (parameters and buffers under their names, with
 * num_batches_tracked of each BN as an I64 scalar; with `host_momentum`, the SGD momentum as
 * "optim.momentum." + name), reading the host blobs, which must be current (dsc_fcn_download) and
 * outlive the save. */
dsc_status *dsc_fcn_add_tensors(dsc_fcn *m, dsc_st_writer *w, const float *host_momentum);
/* Reads every tensor written by dsc_fcn_add_tensors (with momentum when host_momentum is not
 * NULL) from `f` into the host blobs and uploads them; anything missing or mis-shaped is an error
 * naming it. */
dsc_status *dsc_fcn_read_tensors(dsc_fcn *m, const dsc_safetensors *f, float *host_momentum);

#endif
