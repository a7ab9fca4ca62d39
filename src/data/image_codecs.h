/* image_codecs.h: the format decoders behind dsc_image_decode_* (private to src/data/).
 *
 * Each decoder takes the whole file in memory, a label for its errors and a pixel cap already
 * clamped to DSC_IMAGE_MAX_PIXELS; it returns an RGB8 image with its EXIF orientation applied, or
 * an error "<label>: <reason>" with *out left empty. They share no state: any number may run at
 * once on different threads.
 */
#ifndef DSC_DATA_IMAGE_CODECS_H
#define DSC_DATA_IMAGE_CODECS_H

#include <stddef.h>
#include <stdint.h>

#include "dsc/image.h"

dsc_status *image_jpeg_decode(const uint8_t *bytes, size_t size, const char *label,
                              int64_t max_pixels, dsc_image *out);
/* The same at 1/denom scale (denom 1, 2, 4 or 8; 1 is image_jpeg_decode): libjpeg's DCT-domain
 * scaling, output TJSCALED(w, 1/denom) x TJSCALED(h, 1/denom), then oriented. The cap applies to
 * the full-size image. */
dsc_status *image_jpeg_decode_scaled(const uint8_t *bytes, size_t size, const char *label,
                                     int64_t max_pixels, int denom, dsc_image *out);
/* Whether image_jpeg_decode_scaled takes `denom` (1 always; 2, 4, 8 when TurboJPEG offers them). */
int image_jpeg_denominator_supported(int denom);
/* The size after EXIF orientation from the segments before the first scan, which must lie in
 * `bytes` (a prefix of the file is enough): when they do not, an error with *need_more = 1. */
dsc_status *image_jpeg_probe(const uint8_t *bytes, size_t size, const char *label, int *w, int *h,
                             int *need_more);
dsc_status *image_png_decode(const uint8_t *bytes, size_t size, const char *label,
                             int64_t max_pixels, dsc_image *out);

/* Allocates w*h*3 bytes for `img` after checking 0 < w, h and w*h <= max_pixels. */
dsc_status *image_alloc(dsc_image *img, int w, int h, int64_t max_pixels, const char *label);

#endif
