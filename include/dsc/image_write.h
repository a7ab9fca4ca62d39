/* image_write.h: PNG files written with libpng (the scene generator's images and masks, and every
 * picture of `dsc viz`). Writes are atomic (a temporary file renamed into place) and errors name the
 * file. Implementation: src/data/image_write.c. */
#ifndef DSC_IMAGE_WRITE_H
#define DSC_IMAGE_WRITE_H

#include <stdint.h>

#include "dsc/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* An 8-bit RGB PNG of w x h pixels from rgb (h, w, 3) row-major. */
dsc_status *dsc_png_write_rgb(const char *path, int w, int h, const uint8_t *rgb);

/* An 8-bit index PNG of w x h pixels from idx (h, w): a palette PNG when `palette` (256 RGB
 * triplets) is not NULL — the samples stay the indices, so readers that take the raw samples (VOC
 * tools, dsc's seg reader) get the class ids back — else a greyscale PNG of the indices. */
dsc_status *dsc_png_write_index(const char *path, int w, int h, const uint8_t *idx,
                                const uint8_t (*palette)[3]);

/* The PASCAL VOC colour map (class k's colour, 255 = ignore is cream (224, 224, 192)). */
void dsc_voc_palette(uint8_t palette[256][3]);

#ifdef __cplusplus
}
#endif

#endif
