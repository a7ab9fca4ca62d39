/* image_png.c: PNG to RGB8 through libpng, matching Pillow's open + convert("RGB").
 *
 * libpng reports errors by longjmp. All of that is confined to png_run(), the only function that
 * calls setjmp: it touches only the png_job it is given (no local variable lives across the jump),
 * and everything it allocates hangs off the job, which png_job_free() releases on every path.
 *
 * libpng is asked only to unpack 1/2/4-bit samples to one byte each, to strip 16-bit samples to
 * their high byte (except grey, see below), and to de-interlace; every conversion to RGB is
 * written here, after Pillow:
 *   grey 1/2/4/8    v * 255 / (2^depth - 1) replicated        (Pillow "1", "L;2", "L;4", "L")
 *   grey 16         min(v, 255) replicated                     (mode "I", then convert clips)
 *   grey+alpha, RGB, RGBA (8 or 16)   alpha dropped, high byte  ("LA", "RGB;16B", "RGBA;16B", ...)
 *   palette         PLTE lookup; entries past PLTE are Pillow's grey ramp (i, i, i); tRNS ignored
 * gAMA, sRGB, iCCP and the like are ignored, as Pillow ignores them; libpng is told to skip them.
 * An eXIf chunk (before or after the image data) gives the orientation, as Pillow's getexif does.
 * Errors after the last image row (a damaged chunk after IDAT, a missing IEND) are ignored, as
 * Pillow ignores them; any error before that fails the decode.
 */
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/image_codecs.h"

typedef struct png_job {
  /* input */
  const uint8_t *bytes;
  size_t size, pos;
  int64_t max_pixels;
  /* libpng state */
  png_structp png;
  png_infop info;
  /* results */
  char msg[256];       /* libpng's error message */
  int rows_done;       /* every image row has been read */
  uint32_t w, h;
  int bit_depth, color_type;
  size_t rowbytes;     /* of the unpacked rows in `raw` */
  uint8_t *raw;        /* h * rowbytes, as libpng delivers them */
  png_bytep *rows;     /* row pointers into raw */
  uint8_t palette[256 * 3];
  uint8_t *exif;       /* copy of the eXIf payload (TIFF block), or NULL */
  size_t exif_size;
  int too_large;       /* refused by the pixel cap before allocating */
} png_job;

static void png_on_error(png_structp png, png_const_charp msg) {
  png_job *job = png_get_error_ptr(png);
  snprintf(job->msg, sizeof job->msg, "%s", msg ? msg : "unknown libpng error");
  png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg) {
  (void)png;
  (void)msg; /* benign problems: Pillow ignores them too, and a library must not print */
}

static void png_on_read(png_structp png, png_bytep dst, size_t n) {
  png_job *job = png_get_io_ptr(png);
  if (n > job->size - job->pos) png_error(png, "truncated PNG (the file ends inside a chunk)");
  memcpy(dst, job->bytes + job->pos, n);
  job->pos += n;
}

/* Keeps a copy of the eXIf payload if libpng has read one and we have none yet. */
static void png_take_exif(png_job *job) {
  png_bytep data = NULL;
  png_uint_32 n = 0;
  if (job->exif || !png_get_eXIf_1(job->png, job->info, &n, &data) || !data || n == 0) return;
  job->exif = malloc(n);
  if (!job->exif) return; /* orientation is lost, the image is not */
  memcpy(job->exif, data, n);
  job->exif_size = n;
}

/* Every libpng call. Returns 0 when the image rows were read, -1 with job->msg otherwise. */
static int png_run(png_job *job) {
  if (setjmp(png_jmpbuf(job->png))) return job->rows_done ? 0 : -1;

  /* Chunks that change nothing in Pillow's pixels: skip them (faster, less exposed code). */
  static const png_byte ignored[] =
      "bKGD\0cHRM\0gAMA\0hIST\0iCCP\0iTXt\0oFFs\0pCAL\0pHYs\0sBIT\0sCAL\0sPLT\0sRGB\0tEXt\0tIME\0zTXt\0";
  png_set_keep_unknown_chunks(job->png, PNG_HANDLE_CHUNK_NEVER, ignored, (int)(sizeof ignored / 5));
  png_set_read_fn(job->png, job, png_on_read);
  png_read_info(job->png, job->info);

  job->w = png_get_image_width(job->png, job->info);
  job->h = png_get_image_height(job->png, job->info);
  job->bit_depth = png_get_bit_depth(job->png, job->info);
  job->color_type = png_get_color_type(job->png, job->info);
  if ((int64_t)job->w * job->h > job->max_pixels) {
    job->too_large = 1;
    return -1;
  }
  if (job->color_type == PNG_COLOR_TYPE_PALETTE) {
    png_colorp plte = NULL;
    int n = 0;
    for (int i = 0; i < 256; i++) memset(job->palette + i * 3, i, 3); /* Pillow's grey ramp */
    if (png_get_PLTE(job->png, job->info, &plte, &n) && plte) {
      if (n > 256) n = 256;
      for (int i = 0; i < n; i++) {
        job->palette[i * 3 + 0] = plte[i].red;
        job->palette[i * 3 + 1] = plte[i].green;
        job->palette[i * 3 + 2] = plte[i].blue;
      }
    }
  }
  if (job->bit_depth < 8) png_set_packing(job->png);
  if (job->bit_depth == 16 && job->color_type != PNG_COLOR_TYPE_GRAY) png_set_strip_16(job->png);
  png_set_interlace_handling(job->png);
  png_read_update_info(job->png, job->info);
  png_take_exif(job);

  job->rowbytes = png_get_rowbytes(job->png, job->info);
  job->raw = malloc(job->rowbytes * job->h);
  job->rows = malloc(sizeof *job->rows * job->h);
  if (!job->raw || !job->rows) png_error(job->png, "out of memory");
  for (uint32_t y = 0; y < job->h; y++) job->rows[y] = job->raw + (size_t)y * job->rowbytes;
  png_read_image(job->png, job->rows);
  job->rows_done = 1;

  png_read_end(job->png, job->info); /* for an eXIf chunk after IDAT; errors here are ignored */
  png_take_exif(job);
  return 0;
}

/* Converts job->raw to RGB8 in out (allocated by the caller to w x h). */
static void png_to_rgb(const png_job *job, dsc_image *out) {
  const int ct = job->color_type, depth = job->bit_depth;
  const int gray_scale = depth < 8 ? 255 / ((1 << depth) - 1) : 1;
  for (uint32_t y = 0; y < job->h; y++) {
    const uint8_t *s = job->raw + (size_t)y * job->rowbytes;
    uint8_t *d = out->rgb + (size_t)y * job->w * 3;
    for (uint32_t x = 0; x < job->w; x++, d += 3) {
      switch (ct) {
        case PNG_COLOR_TYPE_GRAY:
          if (depth == 16) {
            const unsigned v = (unsigned)s[2 * x] << 8 | s[2 * x + 1];
            d[0] = d[1] = d[2] = (uint8_t)(v > 255 ? 255 : v);
          } else {
            d[0] = d[1] = d[2] = (uint8_t)(s[x] * gray_scale);
          }
          break;
        case PNG_COLOR_TYPE_GRAY_ALPHA:
          d[0] = d[1] = d[2] = s[2 * x];
          break;
        case PNG_COLOR_TYPE_RGB:
          memcpy(d, s + 3 * x, 3);
          break;
        case PNG_COLOR_TYPE_RGB_ALPHA:
          memcpy(d, s + 4 * x, 3);
          break;
        default: /* palette */
          memcpy(d, job->palette + 3 * s[x], 3);
          break;
      }
    }
  }
}

static void png_job_free(png_job *job) {
  if (job->png) png_destroy_read_struct(&job->png, job->info ? &job->info : NULL, NULL);
  free(job->raw);
  free(job->rows);
  free(job->exif);
}

dsc_status *image_png_decode(const uint8_t *bytes, size_t size, const char *label,
                             int64_t max_pixels, dsc_image *out) {
  out->w = out->h = 0;
  out->rgb = NULL;
  png_job job;
  memset(&job, 0, sizeof job);
  job.bytes = bytes;
  job.size = size;
  job.max_pixels = max_pixels;
  job.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &job, png_on_error, png_on_warning);
  if (job.png) job.info = png_create_info_struct(job.png);
  if (!job.png || !job.info) {
    png_job_free(&job);
    return dsc_errorf("%s: cannot initialise libpng (out of memory)", label);
  }
  dsc_status *st = NULL;
  if (png_run(&job) != 0) {
    if (job.too_large)
      st = dsc_errorf("%s: image is %ux%u = %lld pixels, above the limit of %lld", label,
                      (unsigned)job.w, (unsigned)job.h, (long long)job.w * job.h, (long long)max_pixels);
    else
      st = dsc_errorf("%s: cannot decode PNG: %s", label, job.msg);
  }
  if (!st) st = image_alloc(out, (int)job.w, (int)job.h, max_pixels, label);
  if (!st) {
    png_to_rgb(&job, out);
    if (job.exif_size) {
      st = dsc_image_orient(out, dsc_image_exif_orientation(job.exif, job.exif_size));
      if (st) st = dsc_status_wrap(st, "%s", label);
    }
  }
  png_job_free(&job);
  if (st) dsc_image_free(out);
  return st;
}
