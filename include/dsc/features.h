/* features.h: frozen-backbone features for the evaluation protocols (METHOD.md §7, `dsc eval`).
 *
 * A feature backbone is a ResNet on the CPU backend in eval mode (BN with running statistics)
 * whose weights come from one of:
 *   - a dsc pretraining checkpoint: its online backbone, `backbone.*` (METHOD.md §8);
 *   - other weights: torchvision's ResNet keys, with no prefix (`dsc export`, torchvision,
 *     timm) or another known one (weights.h), as .safetensors or PyTorch .pth;
 *   - random initialization: torchvision's (dsc_resnet_init_weights) from a seed — the
 *     baseline row of the evaluation tables.
 * Architecture and stem are detected from the tensors (dsc_weights_detect_resnet); when the
 * caller also names them, a difference is an error.
 *
 * Extraction runs the eval forward over a dataset in index order, in batches, and keeps in
 * host memory what the probes need, once per split:
 *   pooled  (n, c)        global average pool of C5 (computed in double), with the image
 *                         labels (imagefolder, idx) — for k-NN and the linear probe;
 *   dense   (n, h5, w5, c) C5 itself, NHWC, with the label maps (seg) — for the dense
 *                         linear probe and unsupervised segmentation.
 * Every image becomes size x size by the evaluation transform of `dsc embed`
 * (dsc_image_eval_transform: an image already size x size is used as it is, scaled to [0,1]
 * and normalized with ImageNet mean/std; any other is resized, shorter side to `resize`
 * with Pillow's bilinear filter, and center-cropped to `size`). A label map follows the same
 * geometry with nearest sampling (dsc_label_map_eval_transform); pixels of the crop outside
 * the resized image are 255 (ignore).
 * Images that fail to load are skipped with a warning and counted (or, with `strict`, are an
 * error naming the file); the kept images stay in dataset order. Results do not depend on the
 * batch size or thread count beyond float rounding of the convolutions (eval-mode BN treats
 * each image on its own).
 */
#ifndef DSC_FEATURES_H
#define DSC_FEATURES_H

#include <stdint.h>

#include "dsc/backbone.h"
#include "dsc/dataset.h"
#include "dsc/status.h"

typedef enum dsc_weights_source {
  DSC_WEIGHTS_RANDOM = 0,     /* torchvision's initialization from a seed */
  DSC_WEIGHTS_CHECKPOINT = 1, /* a dsc checkpoint's backbone.* tensors */
  DSC_WEIGHTS_EXPORTED = 2,   /* torchvision-named tensors, no prefix or another known one */
} dsc_weights_source;

/* "random", "checkpoint" or "exported". */
const char *dsc_weights_source_name(dsc_weights_source s);

typedef struct dsc_feature_backbone_config {
  const char *weights; /* a .safetensors or .pth path, or "random" */
  int depth;           /* 18, 34 or 50; 0: from the file (required for "random") */
  int small_stem;      /* 0 standard, 1 small; -1: from the file (random: -1 means standard) */
  uint64_t seed;       /* random initialization only */
  int threads;         /* CPU backend threads (0: all cores) */
  int allow_partial;   /* 1: load what matches (load report on stderr); 0: exact match only */
} dsc_feature_backbone_config;

typedef struct dsc_feature_backbone {
  dsc_backend *be; /* owned: the CPU backend */
  dsc_backbone net;
  dsc_resnet_config cfg;
  dsc_weights_source source;
  int threads; /* resolved thread count (image decoding uses as many) */
  int n_meta; /* the file's __metadata__, copied (0 for random) */
  char **meta_keys, **meta_values;
} dsc_feature_backbone;

/* Opens the backend, builds the network and loads (or initializes) its weights. Errors name the
 * file and what is wrong: missing or unreadable file, no ResNet inside, a missing or mis-shaped
 * tensor, an architecture or stem other than the one asked for. On error nothing is left
 * allocated. */
dsc_status *dsc_feature_backbone_open(const dsc_feature_backbone_config *cfg,
                                      dsc_feature_backbone *out);
/* The value of the weights file's metadata `key`, or NULL. */
const char *dsc_feature_backbone_meta(const dsc_feature_backbone *m, const char *key);
void dsc_feature_backbone_free(dsc_feature_backbone *m);

enum {
  DSC_FEATURES_POOLED = 1, /* keep pooled C5 (and image labels when the dataset has them) */
  DSC_FEATURES_DENSE = 2,  /* keep C5 (and label maps when the dataset has them) */
};

typedef struct dsc_feature_config {
  int size;           /* working size (images become size x size) */
  int resize;         /* shorter side before the center crop, for images not already size x size */
  int batch;          /* images per forward (>= 1) */
  int64_t max_images; /* use the first max_images images of the dataset (0: all) */
  int strict;         /* an image that fails to load is an error instead of skipped */
  int verbose;        /* progress lines on stderr */
  const char *what;   /* names the split in messages, e.g. "seg train" (may be NULL) */
} dsc_feature_config;

/* The features of one split, host memory. */
typedef struct dsc_features {
  int64_t n;        /* images kept */
  int c, h, w;      /* C5 channels and grid */
  float *pooled;    /* (n, c), or NULL */
  float *dense;     /* (n, h, w, c), or NULL */
  int32_t *labels;  /* (n) class of each image, or NULL (dataset without image labels) */
  int n_classes;    /* the dataset's class count (imagefolder, idx), else 0 */
  int size;         /* label map side (= the working size) */
  uint8_t *maps;    /* (n, size, size) label maps, 255 = ignore, or NULL (no maps / no dense) */
  int max_label;    /* largest label below 255 in the maps; -1 when none or no maps */
  int64_t skipped;  /* images that failed to load */
  double seconds;   /* wall time of the extraction (decode + forward + copies) */
} dsc_features;

/* Runs the backbone over `ds` and keeps what `what` (DSC_FEATURES_* bits) asks for. */
dsc_status *dsc_features_extract(dsc_feature_backbone *m, const dsc_dataset *ds,
                                 const dsc_feature_config *cfg, int what, dsc_features *out);
void dsc_features_free(dsc_features *f);

/* The label map twin of dsc_image_eval_transform: `map` (h x w) becomes size x size (as is when
 * it already is); otherwise resized to torchvision's Resize(resize) output size with PyTorch's
 * 'nearest' rule (src = min(floor(dst * in / out), in - 1)), then center-cropped like the
 * image (same offsets, round half to even), 255 outside the resized map. */
dsc_status *dsc_label_map_eval_transform(const uint8_t *map, int w, int h, int resize, int size,
                                         uint8_t *out);

#endif
