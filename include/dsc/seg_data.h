/* seg_data.h: the inputs of FCN fine-tuning (`dsc finetune seg`): augmented training batches of
 * images with their label maps, and the test-time images of evaluation, from a dataset with label
 * maps (seg or cityscapes; dataset.h).
 *
 * Training order (as mmsegmentation's iteration-based runner over a drop_last loader): the
 * dataset's N images are cut into floor(N / B) batches per epoch; step s (0-based) is batch
 * s % floor(N / B) of epoch e = s / floor(N / B), whose images are entries [b*B, (b+1)*B) of that
 * epoch's permutation, drawn exactly as the pretraining loader's (loader.h: Fisher-Yates, for
 * i = N-1 .. 1, j = floor(u * (i + 1)) with u = dsc_rng_uniform(seed, DSC_RNG_SHUFFLE, e, i, 0)).
 * Image k of the batch is dataset image i = perm[b*B + k] augmented by
 * dsc_seg_augment(aug, img, label, seed, e, i, ...). So every batch is a pure function of (dataset,
 * config, step), whatever the number of threads, and a resumed run sees the same batches.
 *
 * Bad files: an image that fails to load (decode error, pixel cap, missing or mis-sized label
 * map) is replaced by the next usable dataset index (i+1, i+2, ... wrapping), reported once
 * through `warn` (NULL: "dsc: warning: <msg>" on stderr) and counted; with `strict` the first
 * bad file is an error naming it. No usable image at all is an error naming the dataset.
 *
 * Threads: `threads` workers decode and augment the images of a batch in parallel, and while the
 * caller trains on one batch the feeder already prepares the next (one batch ahead).
 */
#ifndef DSC_SEG_DATA_H
#define DSC_SEG_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "dsc/dataset.h"
#include "dsc/seg_augment.h"
#include "dsc/status.h"

typedef struct dsc_seg_feeder_config {
  int batch;              /* B >= 1, <= dataset size */
  int threads;            /* worker threads >= 1 */
  uint64_t seed;
  int strict;
  dsc_seg_aug_config aug; /* output is aug.crop_h x aug.crop_w */
  void (*warn)(void *ctx, const char *msg); /* never called concurrently */
  void *warn_ctx;
} dsc_seg_feeder_config;

/* One training batch: images (n, crop_h, crop_w, 3) NHWC normalized floats, labels
 * (n, crop_h, crop_w) uint8 (255 = ignore), and the dataset index of each image. */
typedef struct dsc_seg_batch {
  int n, h, w;
  int64_t step;
  float *images;
  uint8_t *labels;
  uint32_t *indices;
} dsc_seg_batch;

typedef struct dsc_seg_feeder dsc_seg_feeder;

/* Checks the config (errors name the bad value) and starts the worker threads. `ds` must have
 * label maps and outlive the feeder. */
dsc_status *dsc_seg_feeder_open(const dsc_dataset *ds, const dsc_seg_feeder_config *cfg,
                                dsc_seg_feeder **out);
/* Batches per epoch: floor(N / B). */
int64_t dsc_seg_feeder_batches_per_epoch(const dsc_seg_feeder *f);
/* The batch of step `step` (>= 0). When `step` is the one after the previous call's, it was
 * already being prepared; any other step is prepared now. Starts preparing step + 1. The batch
 * stays valid until the next call or dsc_seg_feeder_free. */
dsc_status *dsc_seg_feeder_get(dsc_seg_feeder *f, int64_t step, const dsc_seg_batch **out);
/* Bad files met so far (each once): count, and the i-th one's path and reason. */
size_t dsc_seg_feeder_bad_count(dsc_seg_feeder *f);
void dsc_seg_feeder_bad_file(dsc_seg_feeder *f, size_t i, const char **path, const char **reason);
/* Stops and joins the threads (also in the middle of a batch) and frees everything. NULL is fine. */
void dsc_seg_feeder_free(dsc_seg_feeder *f);

/* ---- evaluation images ----
 * mmseg's test pipeline (MultiScaleFlipAug without flip): Resize to img_scale keeping the ratio
 * (the rule of seg_augment.h step (a) with ratio 1: f = min(max(scale) / max(w, h),
 * min(scale) / min(w, h)), new size int(w * f + 0.5) x int(h * f + 0.5)), bilinear as OpenCV's
 * INTER_LINEAR (the same resampler as dsc_seg_augment), then Normalize (ImageNet mean and std).
 * scale_w = scale_h = 0 keeps the image's size. The label map stays at the original size: the
 * prediction is resized back to it (metrics are computed at the original resolution). */
typedef struct dsc_seg_eval_item {
  int w, h;         /* resized (network input) size */
  float *image;     /* h * w * 3 normalized floats, NHWC */
  int label_w, label_h; /* original size */
  uint8_t *label;   /* label_h * label_w, 255 = ignore */
} dsc_seg_eval_item;

/* Loads and preprocesses dataset image i. Errors name the file. On error nothing is left
 * allocated. Thread-safe. */
dsc_status *dsc_seg_eval_load(const dsc_dataset *ds, size_t i, int scale_w, int scale_h,
                              dsc_seg_eval_item *out);
void dsc_seg_eval_item_free(dsc_seg_eval_item *it);

#endif
