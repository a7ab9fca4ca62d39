/* image_write.c: PNG files through libpng (include/dsc/image_write.h).
 *
 * Every write goes to a temporary file beside the target, "<path>.tmp.<pid>.<tid>" (unique to
 * the writing thread, so concurrent writers never share one), created with mode 0666 less the
 * umask, and is renamed onto `path` only once libpng has written the whole image and the file is
 * closed without error: readers see the old file or the new one, never a partial one. On any
 * failure the temporary file is removed and the error names `path`. The bytes depend only on the
 * pixels (no tIME chunk, fixed zlib level and filters), so equal images give equal files.
 *
 * libpng reports errors by longjmp: png_encode() is the only function that calls setjmp; it
 * touches only the png_writer it is given, and no local variable of it lives across the jump.
 */
#include "dsc/image_write.h"

#include <errno.h>
#include <fcntl.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* PNG's own limit on a side is 2^31 - 1; dsc writes nothing near it. */
#define PNG_WRITE_MAX_SIDE 65536

typedef struct png_writer {
  FILE *f;
  png_structp png;
  png_infop info;
  int w, h;
  int color_type;
  const uint8_t *pixels;        /* h rows of w * channels bytes */
  int channels;
  const uint8_t (*palette)[3];  /* 256 entries, palette images only */
  char msg[256];                /* libpng's error message */
} png_writer;

static void png_write_on_error(png_structp png, png_const_charp msg) {
  png_writer *wr = png_get_error_ptr(png);
  snprintf(wr->msg, sizeof wr->msg, "%s", msg ? msg : "unknown libpng error");
  png_longjmp(png, 1);
}

static void png_write_on_warning(png_structp png, png_const_charp msg) {
  (void)png;
  (void)msg; /* a library must not print */
}

/* Every libpng call. Returns 0 when the whole image was written, -1 with wr->msg otherwise. */
static int png_encode(png_writer *wr) {
  if (setjmp(png_jmpbuf(wr->png))) return -1;
  png_init_io(wr->png, wr->f);
  png_set_compression_level(wr->png, 6);
  png_set_IHDR(wr->png, wr->info, (png_uint_32)wr->w, (png_uint_32)wr->h, 8, wr->color_type,
               PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  if (wr->color_type == PNG_COLOR_TYPE_PALETTE) {
    png_color plte[256];
    for (int i = 0; i < 256; i++) {
      plte[i].red = wr->palette[i][0];
      plte[i].green = wr->palette[i][1];
      plte[i].blue = wr->palette[i][2];
    }
    png_set_PLTE(wr->png, wr->info, plte, 256);
  }
  png_write_info(wr->png, wr->info);
  size_t stride = (size_t)wr->w * (size_t)wr->channels;
  for (int y = 0; y < wr->h; y++) png_write_row(wr->png, (png_const_bytep)(wr->pixels + (size_t)y * stride));
  png_write_end(wr->png, wr->info);
  return 0;
}

/* Writes the image described by `wr` (pixels, size, colour type) to `path` atomically. */
static dsc_status *png_write_atomic(const char *path, png_writer *wr) {
  char tmp[4096];
  int n = snprintf(tmp, sizeof tmp, "%s.tmp.%ld.%ld", path, (long)getpid(), (long)syscall(SYS_gettid));
  if (n < 0 || (size_t)n >= sizeof tmp) return dsc_errorf("%s: path too long to write", path);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (fd < 0 && errno == EEXIST) { /* left by a dead process that had our pid and tid */
    unlink(tmp);
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  }
  if (fd < 0) return dsc_errorf("%s: cannot create the temporary file %s: %s", path, tmp, strerror(errno));
  wr->f = fdopen(fd, "wb");
  if (!wr->f) {
    dsc_status *st = dsc_errorf("%s: cannot write: %s", path, strerror(errno));
    close(fd);
    unlink(tmp);
    return st;
  }
  dsc_status *st = NULL;
  wr->png = png_create_write_struct(PNG_LIBPNG_VER_STRING, wr, png_write_on_error, png_write_on_warning);
  if (wr->png) wr->info = png_create_info_struct(wr->png);
  if (!wr->png || !wr->info) st = dsc_errorf("%s: out of memory for the PNG encoder", path);
  else if (png_encode(wr) != 0) st = dsc_errorf("%s: PNG write failed: %s", path, wr->msg);
  if (wr->png) png_destroy_write_struct(&wr->png, wr->info ? &wr->info : NULL);
  int write_failed = ferror(wr->f);
  int write_errno = errno;
  if (fclose(wr->f) != 0 && !write_failed) {
    write_failed = 1;
    write_errno = errno;
  }
  wr->f = NULL;
  if (!st && write_failed) st = dsc_errorf("%s: cannot write: %s", path, strerror(write_errno));
  if (!st && rename(tmp, path) != 0)
    st = dsc_errorf("%s: cannot rename %s onto it: %s", path, tmp, strerror(errno));
  if (st) unlink(tmp);
  return st;
}

static dsc_status *png_check_args(const char *path, int w, int h, const void *pixels) {
  if (!path || !path[0]) return dsc_errorf("PNG write: empty file name");
  if (w < 1 || h < 1 || w > PNG_WRITE_MAX_SIDE || h > PNG_WRITE_MAX_SIDE)
    return dsc_errorf("%s: cannot write a %dx%d PNG (sides 1..%d)", path, w, h, PNG_WRITE_MAX_SIDE);
  if (!pixels) return dsc_errorf("%s: no pixels to write", path);
  return NULL;
}

dsc_status *dsc_png_write_rgb(const char *path, int w, int h, const uint8_t *rgb) {
  DSC_TRY(png_check_args(path, w, h, rgb));
  png_writer wr = {.w = w, .h = h, .color_type = PNG_COLOR_TYPE_RGB, .pixels = rgb, .channels = 3};
  return png_write_atomic(path, &wr);
}

dsc_status *dsc_png_write_index(const char *path, int w, int h, const uint8_t *idx,
                                const uint8_t (*palette)[3]) {
  DSC_TRY(png_check_args(path, w, h, idx));
  png_writer wr = {.w = w, .h = h, .pixels = idx, .channels = 1, .palette = palette,
                   .color_type = palette ? PNG_COLOR_TYPE_PALETTE : PNG_COLOR_TYPE_GRAY};
  return png_write_atomic(path, &wr);
}

/* The VOC colour map: the bits of k, taken three at a time (red, green, blue), fill each
 * channel from its most significant bit down. */
void dsc_voc_palette(uint8_t palette[256][3]) {
  for (int k = 0; k < 256; k++) {
    int c = k, r = 0, g = 0, b = 0;
    for (int bit = 7; bit >= 0; bit--) {
      r |= (c & 1) << bit;
      g |= ((c >> 1) & 1) << bit;
      b |= ((c >> 2) & 1) << bit;
      c >>= 3;
    }
    palette[k][0] = (uint8_t)r;
    palette[k][1] = (uint8_t)g;
    palette[k][2] = (uint8_t)b;
  }
}
