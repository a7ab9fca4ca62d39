/* seg_augment.h: the training augmentation of semantic-segmentation fine-tuning, as
 * mmsegmentation's (0.x) FCN train pipelines for PASCAL VOC (fcn_r50-d8_512x512_20k_voc12aug) and
 * Cityscapes (fcn_r50-d8_512x1024_40k_cityscapes):
 *
 *   Resize(img_scale, ratio_range=(0.5, 2.0)) -> RandomCrop(crop_size, cat_max_ratio=0.75)
 *   -> RandomFlip(prob=0.5) -> PhotoMetricDistortion -> Normalize(ImageNet, to_rgb)
 *   -> Pad(crop_size, pad_val=0, seg_pad_val=255)
 *
 * on an RGB8 image and its uint8 label map (class ids, 255 = ignore). Step by step:
 *
 * (a) Resize (mmseg `Resize`, keep_ratio=True, mmcv.imrescale): ratio = uniform in
 *     [ratio_min, ratio_max); target (int(scale_w * ratio), int(scale_h * ratio)); the scale factor
 *     is min(max(target) / max(w, h), min(target) / min(w, h)), so the long side fits the target's
 *     long side and the short side its short side, whichever is tighter; the new size is
 *     int(w * f + 0.5) x int(h * f + 0.5) (at least 1). The image is resampled bilinearly with
 *     OpenCV's INTER_LINEAR geometry (half-pixel centres, edges clamped, no antialiasing, 11-bit
 *     weights, rounded to uint8; rounding may differ from OpenCV's by 1), the label by nearest
 *     neighbour as OpenCV's INTER_NEAREST (source index floor(dst * src / dst_size)), so label
 *     values are only ever values of the input map.
 * (b) RandomCrop (mmseg `RandomCrop`): a crop_w x crop_h window (clipped to the resized image
 *     when smaller) at offsets uniform in [0, margin] on each axis; while cat_max_ratio < 1, up
 *     to 10 times: accept the window when its non-ignored pixels hold more than one class and the
 *     largest class covers less than cat_max_ratio of them, else draw a new window; after 10
 *     refusals the 11th window is used, as mmseg does. Only the crop is ever resampled: the
 *     resized image is never built in full, so large ratios cost no memory.
 * (c) RandomFlip (mmseg `RandomFlip`, horizontal): with probability flip_prob the crop's image
 *     and label are mirrored left-right together.
 * (d) PhotoMetricDistortion (mmseg's, on the uint8 crop; each step casts back to uint8 by
 *     clipping to [0, 255] and truncating as numpy's astype does):
 *       brightness: with p 0.5 add delta uniform in [-32, 32);
 *       mode = 0 or 1 with p 0.5 each; mode 1: contrast here (with p 0.5 multiply by alpha
 *         uniform in [0.5, 1.5));
 *       saturation: with p 0.5, in OpenCV's 8-bit HSV (H in [0, 180)), S *= alpha in [0.5, 1.5);
 *       hue: with p 0.5, H = (H + delta) mod 180, delta an integer uniform in [-18, 17]
 *         (numpy's randint(-18, 18));
 *       mode 0: contrast here.
 *     The label is untouched. photometric = 0 skips the step.
 * (e) Normalize then Pad (mmseg normalizes before padding): out = (v - 255 * mean) / std with
 *     dsc_image_mean / dsc_image_std (RGB); the window is placed at the top left of a
 *     crop_h x crop_w output and the rest (bottom and right) is padded with 0 in the normalized
 *     image (mmseg's pad_val=0 after Normalize) and 255 in the label.
 *
 * Randomness: every draw is dsc_rng_uniform(seed, DSC_RNG_SEG_AUGMENT, epoch, image, slot) with
 * a fixed slot per draw (listed in seg_augment.c), so the output is a pure function of (seed,
 * epoch, image, config, input) whatever the thread or call order.
 */
#ifndef DSC_SEG_AUGMENT_H
#define DSC_SEG_AUGMENT_H

#include <stdint.h>

#include "dsc/image.h"
#include "dsc/status.h"

typedef struct dsc_seg_aug_config {
  int scale_w, scale_h;       /* Resize img_scale (order irrelevant: long and short side) */
  double ratio_min, ratio_max; /* Resize ratio_range, 0 < min <= max */
  int crop_w, crop_h;         /* RandomCrop crop_size and Pad size */
  double cat_max_ratio;       /* RandomCrop; >= 1 disables the retries */
  double flip_prob;           /* RandomFlip prob */
  int photometric;            /* 1 = PhotoMetricDistortion, 0 = none */
} dsc_seg_aug_config;

/* mmseg's VOC-aug setting: img_scale 2048x512, ratio [0.5, 2], crop 512x512, cat_max_ratio 0.75,
 * flip 0.5, photometric distortion. */
dsc_seg_aug_config dsc_seg_aug_config_voc(void);
/* mmseg's Cityscapes setting: img_scale 2048x1024, crop 1024 wide x 512 high, the rest as VOC. */
dsc_seg_aug_config dsc_seg_aug_config_cityscapes(void);

/* Augments image `img` (w x h RGB8) and its w x h label map into out_hwc (crop_h * crop_w * 3
 * floats, NHWC for one image) and out_label (crop_h * crop_w). Errors: an empty image, a bad
 * config, a resized size beyond 2^30 per side. Thread-safe; allocates only crop-sized buffers. */
dsc_status *dsc_seg_augment(const dsc_seg_aug_config *cfg, const dsc_image *img, const uint8_t *label,
                            uint64_t seed, uint32_t epoch, uint32_t image, float *out_hwc,
                            uint8_t *out_label);

#endif
