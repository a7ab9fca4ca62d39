/* image.h: decoding JPEG/PNG files to RGB8 and the evaluation transform (`dsc embed`).
 *
 * Decoding reproduces what PyTorch users run, `ImageOps.exif_transpose(Image.open(f)).convert("RGB")`
 * with Pillow over libjpeg-turbo: JPEG through TurboJPEG (accurate DCT, smooth chroma upsampling:
 * the same libjpeg-turbo code path as PIL, so pixels are identical), PNG through libpng, the EXIF
 * orientation applied, every layout reduced to 8-bit RGB the way Pillow's convert("RGB") does it:
 *   - grey / grey+alpha / RGBA / palette(+tRNS): alpha and transparency dropped, never composited;
 *     a palette index past the PLTE entries shows Pillow's grey ramp (i, i, i);
 *   - 1/2/4-bit grey scaled to 0..255 (bit replication);
 *   - 16-bit RGB, RGBA and grey+alpha keep the high byte of each sample;
 *   - 16-bit grey is clipped to 0..255 (Pillow reads it as 32-bit mode "I", whose convert("RGB")
 *     saturates: a full-range 16-bit grey image comes out mostly white, exactly as in PyTorch);
 *   - CMYK and YCCK JPEGs are read with Adobe's inverted convention (Pillow assumes it for every
 *     4-component JPEG: ink C = 255 - stored C, K = 255 - stored K) and converted as Pillow's
 *     convert("RGB"): R = (255 - K) - round((255 - K) * C / 255), likewise G and B.
 * EXIF orientation comes from a JPEG's first APP1 "Exif" block or a PNG's eXIf chunk. Not
 * reproduced: Pillow's fallbacks to an XMP tiff:Orientation or an ImageMagick "Raw profile type
 * exif" text chunk in PNGs (rare), and Pillow's exception on a malformed EXIF block (here the
 * orientation is simply ignored).
 * The format is recognised by content (magic bytes), never by the file name. Any failure (unknown
 * format, corrupt or truncated data, an image above the pixel cap) is an error naming the file
 * (`label`) and the reason; nothing is allocated for an image before its size is checked.
 *
 * Images are `dsc_image`: w x h pixels, row-major interleaved RGB8 (h*w*3 bytes), owned by the
 * struct and released with dsc_image_free.
 */
#ifndef DSC_IMAGE_H
#define DSC_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "dsc/status.h"

typedef struct dsc_image {
  int w, h;
  uint8_t *rgb; /* h*w*3, row-major RGB8 */
} dsc_image;

/* Largest image the decoders accept (pixels), whatever a caller asks for. */
#define DSC_IMAGE_MAX_PIXELS ((int64_t)1 << 28)
/* Largest file dsc_image_decode_file reads (bytes). */
#define DSC_IMAGE_MAX_FILE_BYTES ((int64_t)1 << 30)

/* Decodes a JPEG or PNG file. On error *out is left empty ({0, 0, NULL}). */
dsc_status *dsc_image_decode_file(const char *path, dsc_image *out);
/* Decodes an in-memory JPEG or PNG; `label` names it in errors (e.g. its path or archive entry). */
dsc_status *dsc_image_decode_memory(const void *bytes, size_t size, const char *label, dsc_image *out);
/* The same with a pixel cap (w*h) chosen by the caller (`data.max_pixels`); max_pixels <= 0 or
 * above DSC_IMAGE_MAX_PIXELS means DSC_IMAGE_MAX_PIXELS. */
dsc_status *dsc_image_decode_file_capped(const char *path, int64_t max_pixels, dsc_image *out);
dsc_status *dsc_image_decode_memory_capped(const void *bytes, size_t size, const char *label,
                                           int64_t max_pixels, dsc_image *out);
/* Reads only a file's header (JPEG: the segments before the first scan, PNG: IHDR and the chunk
 * headers up to the first eXIf chunk) and gives the size the decoders would return, AFTER EXIF
 * orientation (w and h swapped for orientations 5..8), so crops can be planned in the oriented
 * image; *is_jpeg (may be NULL) is 1 for a JPEG, 0 for a PNG. Cheap: no pixel is decoded. Header
 * only: a file it accepts can still fail to decode (damaged data, the pixel cap), so callers must
 * handle decode errors and use the decoded size. Errors name the file, as the decoders'. */
dsc_status *dsc_image_probe_file(const char *path, int *w, int *h, int *is_jpeg);

/* Decodes at reduced size for crops that will be shrunk anyway (issue #3): a JPEG is decoded at
 * 1/denom (denom 1, 2, 4 or 8) with libjpeg-turbo's DCT-domain scaling (TurboJPEG's scaling
 * factors, as Pillow's Image.draft), output TJSCALED(w, 1/denom) x TJSCALED(h, 1/denom), i.e.
 * ceil(w / denom) x ceil(h / denom) in the file's stored orientation, then the EXIF orientation is
 * applied. Scaled pixel (x, y) before orientation covers full-size pixels [x*denom, (x+1)*denom)
 * (the last column/row may cover fewer); after a mirroring orientation that partial block is the
 * first one. The pixel cap (as dsc_image_decode_file_capped) applies to the full-size image. A PNG,
 * or denom == 1: exactly dsc_image_decode_file_capped. Any other denom is an error. */
dsc_status *dsc_image_decode_file_scaled(const char *path, int64_t max_pixels, int denom, dsc_image *out);

/* The DCT scale for a crop_w x crop_h crop that will be resized to out_size x out_size: the
 * largest denom in {1, 2, 4, 8} with crop_w / denom >= out_size and crop_h / denom >= out_size,
 * so a scaled decode never takes the crop below the output size (the crop is shrunk by at least
 * 2x for any denom > 1); 1 when no reduction qualifies or an argument is not positive. */
int dsc_image_dct_denominator(int crop_w, int crop_h, int out_size);

/* Frees the pixels and zeroes the struct; NULL or an empty image is fine. */
void dsc_image_free(dsc_image *img);

/* The EXIF orientation (1..8) in a TIFF-structured EXIF block (the bytes after "Exif\0\0"):
 * tag 0x0112 of IFD0 as SHORT or LONG with count 1, the last one if repeated (as Pillow). Returns 1
 * when it is absent, out of range or the block is malformed; every read is bounds-checked. */
int dsc_image_exif_orientation(const void *tiff, size_t size);
/* Applies an EXIF orientation in place as Pillow's ImageOps.exif_transpose (2 mirror, 3 rotate
 * 180, 4 flip, 5 transpose, 6 rotate 90 clockwise, 7 transverse, 8 rotate 90 counter-clockwise;
 * 5..8 swap w and h). Orientation 1 or any other value leaves the image unchanged. */
dsc_status *dsc_image_orient(dsc_image *img, int orientation);

/* Resizes to out_w x out_h as Pillow's Image.resize(..., BILINEAR) on an RGB image: a triangle
 * filter whose support grows with the downscale factor (antialiasing), 22-bit fixed-point
 * weights, horizontal pass rounded to uint8 then vertical pass. Bit-exact with Pillow 9.x. */
dsc_status *dsc_image_resize_u8(const dsc_image *in, int out_w, int out_h, dsc_image *out);

/* Resizes the region (top, left, crop_h, crop_w) of `img` to out_h x out_w in float, as
 * torch.nn.functional.interpolate(x.float(), (out_h, out_w), mode="bilinear",
 * align_corners=False, antialias=True) on the cropped uint8 tensor (torchvision's
 * resized_crop / resize(antialias=True) on tensors, before any rounding back to uint8): float
 * weights computed as PyTorch does, width pass then height pass, a pass skipped when its size
 * does not change. Output values keep the 0..255 scale, HWC (out_h*out_w*3 floats). The region
 * must lie inside the image. */
dsc_status *dsc_image_resize_region_f32(const dsc_image *img, int top, int left, int crop_h,
                                        int crop_w, int out_h, int out_w, float *out_hwc);

/* torchvision's Resize(int) output size: the shorter side becomes `resize`, the longer
 * int(resize * long / short); a square image becomes resize x resize. */
dsc_status *dsc_image_eval_size(int w, int h, int resize, int *out_w, int *out_h);

/* ImageNet normalization constants of the evaluation transform (torchvision's Normalize). */
extern const float dsc_image_mean[3];
extern const float dsc_image_std[3];

/* The evaluation transform of `dsc embed` (spec/INTERFACES.md): torchvision's
 * Compose([Resize(resize), CenterCrop(size), ToTensor(), Normalize(mean, std)]) on the PIL image,
 * bit-exact: Pillow's bilinear resize (dsc_image_resize_u8 arithmetic, computed only for the
 * pixels the crop keeps), crop top = round-half-even((h - size) / 2) (Python's round), zero
 * padding when the crop is larger than the resized image (torchvision pads), then
 * (v / 255 - mean) / std in float32. One deviation from torchvision, from the spec: an image
 * already size x size is used as is (no resize). Output: size*size*3 floats, HWC. */
dsc_status *dsc_image_eval_transform(const dsc_image *img, int resize, int size, float *out_hwc);

#endif
