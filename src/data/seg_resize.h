/* seg_resize.h: the OpenCV-exact bilinear resampling and the normalization of seg_augment.c,
 * shared with the evaluation images of seg_data.c so both resize pixels identically; private to
 * src/data/. Implemented in seg_augment.c.
 */
#ifndef DSC_DATA_SEG_RESIZE_H
#define DSC_DATA_SEG_RESIZE_H

#include <stddef.h>
#include <stdint.h>

#include "dsc/image.h"

/* OpenCV INTER_LINEAR column taps of destination columns x0 .. x0+n-1 of an axis resized from
 * src to dst pixels: tap[3k], tap[3k+1] are the source columns s0, s1 of column x0+k and tap[3k+2]
 * its 11-bit weight w1 (w0 = 2048 - w1). */
void dsc_seg_linear_taps(int x0, int n, int src, int dst, int *tap);

/* Row y of `img` resized to (any width) x nh by OpenCV INTER_LINEAR (its fixed-point rounding),
 * at the n columns whose taps dsc_seg_linear_taps gave: n RGB8 pixels into out. */
void dsc_seg_linear_row(const dsc_image *img, int y, int nh, const int *tap, int n, uint8_t *out);

/* n RGB8 pixels into NHWC floats, dsc_seg_augment step (e): (v - 255 * mean) / (255 * std)
 * with dsc_image_mean / dsc_image_std. */
void dsc_seg_normalize(const uint8_t *px, size_t n, float *out);

#endif
