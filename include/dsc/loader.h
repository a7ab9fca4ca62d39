/* loader.h: the data loader: worker threads turning dataset images into batches of NHWC floats.
 *
 * Each epoch, the dataset's N images are ordered by a permutation drawn with the counter-based
 * RNG keyed by (seed, epoch) (Fisher-Yates: for i = N-1 .. 1, j = floor(u * (i + 1)) with
 * u = dsc_rng_uniform(seed, DSC_RNG_SHUFFLE, epoch, i, 0)), or kept in index order when
 * shuffle is off. The ordered list is cut into global batches of `batch` images (the last one
 * shorter, or dropped with drop_last). Sharding: with `world` processes, rank r takes the
 * consecutive slice [floor(r*S/world), floor((r+1)*S/world)) of every global batch of size S,
 * so the ranks' local batches are equal (batch/world; batch must be a multiple of world) except
 * possibly in the last, short, global batch, where a rank may even get 0 images. The union of
 * all ranks' batches is exactly one epoch.
 *
 * Every image of a batch is decoded and augmented independently: view v of dataset image i in
 * epoch e is dsc_aug_draw(cfg, w, h, seed, e, i, v) applied by dsc_aug_apply, so every output is
 * a pure function of (seed, epoch, index, view) and batches are bitwise identical whatever the
 * number of workers. In eval mode there is one view, dsc_image_eval_transform(resize, size).
 * The crops are drawn for the image's full (oriented) size, read from its header; when both
 * views' crops will be shrunk by 2x or more (dsc_image_dct_denominator), a JPEG is decoded at
 * 1/2, 1/4 or 1/8 in the DCT domain and the crops are mapped onto the smaller image
 * (left' = floor(left * w' / w), right' = ceil(right * w' / w), likewise rows): the same regions
 * to within one reduced pixel, resampled from the reduced decode (as Pillow's draft mode).
 * full_decode turns this off. Label maps (seg) always use full-size decodes.
 *
 * Bad files: an image that fails to load (decode error, pixel cap, unreadable) is replaced by
 * the next usable dataset index (i+1, i+2, ... wrapping), so a batch is never short and depends
 * only on the dataset; the file is reported once through `warn` (or stderr when warn is NULL),
 * counted, and remembered (dsc_loader_bad_count / dsc_loader_bad_file). With `strict`, the first
 * bad file is instead an error naming it, returned by dsc_loader_next. If no image is usable
 * the loader fails with an error naming the dataset. A 1x1 image is usable (the crop is the
 * whole pixel, upsampled), as in torchvision. After an error every call returns it again.
 *
 * Threads: `workers` pthreads fill a ring of `prefetch` batch slots ahead of the consumer;
 * dsc_loader_next blocks until the next batch is complete. A returned batch stays valid until
 * the next dsc_loader_next / dsc_loader_start_epoch / dsc_loader_free call. dsc_loader_free
 * stops and joins every thread and frees everything, also in the middle of an epoch.
 */
#ifndef DSC_LOADER_H
#define DSC_LOADER_H

#include <stddef.h>
#include <stdint.h>

#include "dsc/augment.h"
#include "dsc/dataset.h"
#include "dsc/status.h"

typedef struct dsc_loader_config {
  int batch;          /* global batch over all ranks (data.batch) */
  int workers;        /* worker threads (>= 1) */
  int prefetch;       /* batch slots in the ring (>= 1; 0: 2) */
  int drop_last;      /* drop the last short global batch */
  int shuffle;        /* per-epoch permutation (0: index order, e.g. evaluation) */
  int rank, world;    /* shard: this process's rank in [0, world); world 0 means 1 */
  uint64_t seed;
  int strict;         /* data.strict: a bad file is an error */
  int eval;           /* eval mode: one view by dsc_image_eval_transform, no augmentation */
  int eval_resize;    /* eval mode: shorter side before the center crop (0: size * 8 / 7) */
  int full_decode;    /* never use DCT-domain reduced JPEG decodes */
  dsc_aug_config aug; /* training views; aug.size is the output size in both modes */
  /* Called for each bad file the first time it is met (may be called from worker threads,
   * never concurrently); NULL prints "dsc: warning: <msg>" to stderr. */
  void (*warn)(void *ctx, const char *msg);
  void *warn_ctx;
} dsc_loader_config;

/* Batch of n images, size x size. a and b are n*size*size*3 floats, NHWC (b NULL in eval
 * mode); labels (n) when the dataset has classes; label maps (n*size*size, 255 = ignore)
 * geometrically transformed with view a / b when the dataset is seg and not in eval mode. */
typedef struct dsc_batch {
  int n, size;
  uint32_t epoch;
  size_t step;         /* batch number within the epoch */
  float *a, *b;
  int32_t *labels;
  uint8_t *label_map_a, *label_map_b;
  uint32_t *indices;   /* the dataset index each image came from (after replacement) */
} dsc_batch;

typedef struct dsc_loader dsc_loader;

/* Creates the loader and starts its threads (idle until an epoch starts). `ds` must outlive it. */
dsc_status *dsc_loader_open(const dsc_dataset *ds, const dsc_loader_config *cfg, dsc_loader **out);
/* Starts epoch `epoch` (abandoning what is left of the current one). */
dsc_status *dsc_loader_start_epoch(dsc_loader *l, uint32_t epoch);
/* Starts epoch `epoch` at its batch `first_batch` (the earlier batches are never loaded): how a
 * resumed run continues in the middle of an epoch. Past the end: the epoch is already over. */
dsc_status *dsc_loader_start_epoch_at(dsc_loader *l, uint32_t epoch, size_t first_batch);
/* Batches this rank gets per epoch. */
size_t dsc_loader_batches_per_epoch(const dsc_loader *l);
/* The next batch of the epoch in *out, or *out = NULL at its end. */
dsc_status *dsc_loader_next(dsc_loader *l, const dsc_batch **out);
/* Bad files met so far (each once): count, and the i-th one's path and reason. */
size_t dsc_loader_bad_count(dsc_loader *l);
void dsc_loader_bad_file(dsc_loader *l, size_t i, const char **path, const char **reason);
void dsc_loader_free(dsc_loader *l);

#endif
