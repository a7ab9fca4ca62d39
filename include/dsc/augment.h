/* augment.h: the two-view augmentation of METHOD.md §6 (MoCo-v2 "aug+", DenseCL), each
 * operation as torchvision defines it, and the evaluation transform's segmentation twin.
 *
 * Drawing and applying are separate: dsc_aug_draw turns (seed, epoch, image index, view)
 * into the parameters of one view with the counter-based RNG (include/dsc/rng.h, purpose
 * DSC_RNG_AUGMENT), so a view never depends on thread or process counts; dsc_aug_apply
 * performs them. Tests set parameters by hand to compare with torchvision.
 *
 * Order (METHOD.md §6): RandomResizedCrop(size, scale, ratio, bilinear antialiased) ->
 * with p_jitter ColorJitter(b, c, s, h) in a random order of the four -> with p_gray
 * grayscale -> with p_blur GaussianBlur(sigma) -> with p_flip horizontal flip -> to [0,1],
 * normalize with ImageNet mean/std. Geometric steps (crop, flip) also apply to a label map
 * (nearest); photometric ones never touch it.
 */
#ifndef DSC_AUGMENT_H
#define DSC_AUGMENT_H

#include <stdint.h>

#include "dsc/image.h"
#include "dsc/status.h"

typedef struct dsc_aug_config {
  int size;                       /* output size x size (224) */
  float scale_min, scale_max;     /* RandomResizedCrop area fraction (0.2, 1.0) */
  float ratio_min, ratio_max;     /* aspect ratio, drawn log-uniformly (3/4, 4/3) */
  float jitter_p;                 /* 0.8 */
  float brightness, contrast, saturation, hue; /* 0.4, 0.4, 0.4, 0.1 */
  float gray_p;                   /* 0.2 */
  float blur_p, sigma_min, sigma_max; /* 0.5, 0.1, 2.0 */
  float flip_p;                   /* 0.5 */
} dsc_aug_config;

/* The parameters of one view. */
typedef struct dsc_aug_params {
  int crop_top, crop_left, crop_h, crop_w; /* region of the source image */
  int jitter;                              /* ColorJitter applied */
  int order[4];                            /* 0 brightness, 1 contrast, 2 saturation, 3 hue */
  float brightness, contrast, saturation, hue; /* factors (hue: shift in [-0.5, 0.5]) */
  int gray;                                /* grayscale applied */
  int blur;                                /* blur applied */
  float sigma;                             /* its sigma in output pixels */
  int flip;                                /* horizontal flip applied */
} dsc_aug_params;

/* METHOD.md §6 defaults for output size `size`. */
void dsc_aug_config_default(dsc_aug_config *cfg, int size);

/* Draws the parameters of view `view` (0 = a/query, 1 = b/key) of image `index` in `epoch`
 * for an image of img_w x img_h pixels. Pure function of its arguments. */
void dsc_aug_draw(const dsc_aug_config *cfg, int img_w, int img_h, uint64_t seed, uint32_t epoch,
                  uint32_t index, uint32_t view, dsc_aug_params *out);

/* The Gaussian blur's kernel size for `sigma` (METHOD.md §6): 2 * ceil(3 * sigma) + 1, with
 * 3 * sigma computed in double. */
int dsc_aug_blur_kernel_size(float sigma);

/* Applies `p` to `img`: writes size*size*3 normalized floats, HWC, into out_hwc. When
 * `label` (img->h x img->w, one byte per pixel) is given, also writes the geometrically
 * transformed label map (size x size, nearest) into label_out. */
dsc_status *dsc_aug_apply(const dsc_aug_config *cfg, const dsc_aug_params *p,
                          const dsc_image *img, float *out_hwc, const uint8_t *label,
                          uint8_t *label_out);

#endif
