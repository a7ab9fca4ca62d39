/* image_decode.c: reading image files, recognising their format by content, EXIF orientation.
 *
 * dsc_image_decode_* read the whole file, look at its first bytes and hand it to the JPEG or PNG
 * decoder (image_jpeg.c, image_png.c). Other formats get an error naming them. The EXIF parser
 * here serves both decoders (JPEG APP1 "Exif", PNG eXIf): it trusts no offset or count in the
 * block, so a malformed block only means "no orientation". Orientation is applied as Pillow's
 * ImageOps.exif_transpose (see include/dsc/image.h).
 *
 * dsc_image_probe_file reads as little as it can: the first 64 KiB (the whole file only when a
 * JPEG's header segments run past them), and for a PNG the chunk headers, read at their offsets,
 * plus the payload of the first eXIf chunk. dsc_image_decode_file_scaled hands JPEGs to the
 * scaled JPEG decoder and everything else to the ordinary path.
 */
#include <errno.h>
#include <fcntl.h>
#include <zlib.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/image_codecs.h"
#include "dsc/image.h"

void dsc_image_free(dsc_image *img) {
  if (!img) return;
  free(img->rgb);
  img->rgb = NULL;
  img->w = img->h = 0;
}

dsc_status *image_alloc(dsc_image *img, int w, int h, int64_t max_pixels, const char *label) {
  img->w = img->h = 0;
  img->rgb = NULL;
  if (w <= 0 || h <= 0) return dsc_errorf("%s: invalid image size %dx%d", label, w, h);
  if ((int64_t)w * h > max_pixels)
    return dsc_errorf("%s: image is %dx%d = %lld pixels, above the limit of %lld", label, w, h,
                      (long long)w * h, (long long)max_pixels);
  img->rgb = malloc((size_t)w * (size_t)h * 3);
  if (!img->rgb) return dsc_errorf("%s: out of memory for a %dx%d image", label, w, h);
  img->w = w;
  img->h = h;
  return NULL;
}

/* ---------------------------------------------------------------- format dispatch ---------- */

static int bytes_start_with(const uint8_t *b, size_t n, const char *magic, size_t m) {
  return n >= m && memcmp(b, magic, m) == 0;
}

/* Names a format we recognise but do not decode, or NULL. */
static const char *image_format_unsupported(const uint8_t *b, size_t n) {
  if (bytes_start_with(b, n, "GIF87a", 6) || bytes_start_with(b, n, "GIF89a", 6)) return "GIF";
  if (n >= 12 && memcmp(b, "RIFF", 4) == 0 && memcmp(b + 8, "WEBP", 4) == 0) return "WebP";
  if (bytes_start_with(b, n, "BM", 2)) return "BMP";
  if (bytes_start_with(b, n, "II*\0", 4) || bytes_start_with(b, n, "MM\0*", 4)) return "TIFF";
  if (n >= 12 && memcmp(b + 4, "ftyp", 4) == 0) return "HEIF/AVIF/MP4";
  return NULL;
}

dsc_status *dsc_image_decode_memory_capped(const void *bytes, size_t size, const char *label,
                                           int64_t max_pixels, dsc_image *out) {
  if (!out) return dsc_errorf("dsc_image_decode_memory: NULL output");
  out->w = out->h = 0;
  out->rgb = NULL;
  if (!label) label = "(memory)";
  if (!bytes && size) return dsc_errorf("%s: NULL data", label);
  if (max_pixels <= 0 || max_pixels > DSC_IMAGE_MAX_PIXELS) max_pixels = DSC_IMAGE_MAX_PIXELS;
  const uint8_t *b = bytes;
  if (size == 0) return dsc_errorf("%s: empty file", label);
  if (bytes_start_with(b, size, "\xff\xd8\xff", 3))
    return image_jpeg_decode(b, size, label, max_pixels, out);
  if (bytes_start_with(b, size, "\x89PNG\r\n\x1a\n", 8))
    return image_png_decode(b, size, label, max_pixels, out);
  const char *other = image_format_unsupported(b, size);
  if (other) return dsc_errorf("%s: %s images are not supported (JPEG and PNG only)", label, other);
  return dsc_errorf("%s: not a JPEG or PNG image (unrecognised content)", label);
}

dsc_status *dsc_image_decode_memory(const void *bytes, size_t size, const char *label, dsc_image *out) {
  return dsc_image_decode_memory_capped(bytes, size, label, 0, out);
}

/* Opens a regular file for reading and gives its size (at most DSC_IMAGE_MAX_FILE_BYTES). */
static dsc_status *file_open_regular(const char *path, int *fd_out, size_t *size) {
  *fd_out = -1;
  *size = 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return dsc_errorf("%s: cannot open: %s", path, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int e = errno;
    close(fd);
    return dsc_errorf("%s: cannot stat: %s", path, strerror(e));
  }
  if (S_ISDIR(st.st_mode)) {
    close(fd);
    return dsc_errorf("%s: is a directory, not an image file", path);
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return dsc_errorf("%s: not a regular file", path);
  }
  if (st.st_size > DSC_IMAGE_MAX_FILE_BYTES) {
    close(fd);
    return dsc_errorf("%s: file is %lld bytes, above the limit of %lld", path,
                      (long long)st.st_size, (long long)DSC_IMAGE_MAX_FILE_BYTES);
  }
  *fd_out = fd;
  *size = (size_t)st.st_size;
  return NULL;
}

/* Reads up to n bytes at `off` into buf, retrying short reads; *got is what was read (less than
 * n only at the end of the file). */
static dsc_status *file_read_at(int fd, const char *path, uint8_t *buf, size_t n, size_t off,
                                size_t *got) {
  *got = 0;
  while (*got < n) {
    ssize_t r = pread(fd, buf + *got, n - *got, (off_t)(off + *got));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return dsc_errorf("%s: read error: %s", path, strerror(errno));
    if (r == 0) break;
    *got += (size_t)r;
  }
  return NULL;
}

/* Reads a whole regular file. */
static dsc_status *file_read_all(const char *path, uint8_t **data, size_t *size) {
  *data = NULL;
  *size = 0;
  int fd;
  size_t n;
  DSC_TRY(file_open_regular(path, &fd, &n));
  uint8_t *buf = malloc(n ? n : 1);
  if (!buf) {
    close(fd);
    return dsc_errorf("%s: out of memory reading %zu bytes", path, n);
  }
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, buf + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      int e = errno;
      free(buf);
      close(fd);
      return dsc_errorf("%s: read error: %s", path, strerror(e));
    }
    if (r == 0) break; /* the file shrank while we read it: decode what is there */
    got += (size_t)r;
  }
  close(fd);
  *data = buf;
  *size = got;
  return NULL;
}

dsc_status *dsc_image_decode_file_capped(const char *path, int64_t max_pixels, dsc_image *out) {
  if (!out) return dsc_errorf("dsc_image_decode_file: NULL output");
  out->w = out->h = 0;
  out->rgb = NULL;
  if (!path) return dsc_errorf("dsc_image_decode_file: NULL path");
  uint8_t *data;
  size_t size;
  DSC_TRY(file_read_all(path, &data, &size));
  dsc_status *st = dsc_image_decode_memory_capped(data, size, path, max_pixels, out);
  free(data);
  return st;
}

dsc_status *dsc_image_decode_file(const char *path, dsc_image *out) {
  return dsc_image_decode_file_capped(path, 0, out);
}

dsc_status *dsc_image_decode_file_scaled(const char *path, int64_t max_pixels, int denom,
                                         dsc_image *out) {
  if (!out) return dsc_errorf("dsc_image_decode_file_scaled: NULL output");
  out->w = out->h = 0;
  out->rgb = NULL;
  if (!path) return dsc_errorf("dsc_image_decode_file_scaled: NULL path");
  if (denom != 1 && denom != 2 && denom != 4 && denom != 8)
    return dsc_errorf("%s: invalid scale denominator %d (1, 2, 4 or 8)", path, denom);
  if (denom == 1) return dsc_image_decode_file_capped(path, max_pixels, out);
  if (max_pixels <= 0 || max_pixels > DSC_IMAGE_MAX_PIXELS) max_pixels = DSC_IMAGE_MAX_PIXELS;
  uint8_t *data;
  size_t size;
  DSC_TRY(file_read_all(path, &data, &size));
  dsc_status *st;
  if (bytes_start_with(data, size, "\xff\xd8\xff", 3))
    st = image_jpeg_decode_scaled(data, size, path, max_pixels, denom, out);
  else
    st = dsc_image_decode_memory_capped(data, size, path, max_pixels, out);
  free(data);
  return st;
}

int dsc_image_dct_denominator(int crop_w, int crop_h, int out_size) {
  if (crop_w <= 0 || crop_h <= 0 || out_size <= 0) return 1;
  for (int denom = 8; denom >= 2; denom /= 2)
    if (crop_w / denom >= out_size && crop_h / denom >= out_size) return denom;
  return 1;
}

/* ---------------------------------------------------------------- probing ------------------ */

#define PROBE_PREFIX ((size_t)64 << 10)

static uint32_t be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* A PNG's size after orientation: IHDR from the prefix, then the chunk headers read one by one
 * for the first eXIf chunk that libpng would keep (intact CRC, "II" or "MM" first), before or
 * after the image data, up to IEND or the first unreadable chunk header. */
static dsc_status *png_probe(int fd, size_t file_size, const uint8_t *head, size_t head_size,
                             const char *path, int *w, int *h) {
  if (head_size < 33 || be32(head + 8) != 13 || memcmp(head + 12, "IHDR", 4) != 0)
    return dsc_errorf("%s: invalid PNG: no IHDR chunk after the signature", path);
  const uint32_t pw = be32(head + 16), ph = be32(head + 20);
  if (pw == 0 || ph == 0 || pw > 0x7fffffffu || ph > 0x7fffffffu)
    return dsc_errorf("%s: invalid PNG image size %ux%u", path, pw, ph);
  int orientation = 1;
  size_t off = 8;
  while (file_size - off >= 12) { /* a chunk is at least length, type, CRC */
    uint8_t hdr[8];
    size_t got;
    DSC_TRY(file_read_at(fd, path, hdr, 8, off, &got));
    if (got < 8) break;
    const uint32_t len = be32(hdr);
    if (len > 0x7fffffffu || len > file_size - off - 12) break;
    if (memcmp(hdr + 4, "IEND", 4) == 0) break;
    if (memcmp(hdr + 4, "eXIf", 4) == 0 && len >= 2) {
      uint8_t *chunk = malloc((size_t)len + 8); /* type, data, CRC */
      if (!chunk) return dsc_errorf("%s: out of memory for a %u-byte eXIf chunk", path, len);
      dsc_status *st = file_read_at(fd, path, chunk, (size_t)len + 8, off + 4, &got);
      if (st) {
        free(chunk);
        return st;
      }
      int kept = 0;
      if (got == (size_t)len + 8 && crc32(crc32(0, NULL, 0), chunk, len + 4) == be32(chunk + 4 + len) &&
          (memcmp(chunk + 4, "II", 2) == 0 || memcmp(chunk + 4, "MM", 2) == 0)) {
        orientation = dsc_image_exif_orientation(chunk + 4, len);
        kept = 1;
      }
      free(chunk);
      if (kept) break;
    }
    off += (size_t)len + 12;
  }
  *w = orientation >= 5 ? (int)ph : (int)pw;
  *h = orientation >= 5 ? (int)pw : (int)ph;
  return NULL;
}

dsc_status *dsc_image_probe_file(const char *path, int *w, int *h, int *is_jpeg) {
  if (!w || !h) return dsc_errorf("dsc_image_probe_file: NULL output");
  *w = *h = 0;
  if (is_jpeg) *is_jpeg = 0;
  if (!path) return dsc_errorf("dsc_image_probe_file: NULL path");
  int fd;
  size_t size;
  DSC_TRY(file_open_regular(path, &fd, &size));
  size_t want = size < PROBE_PREFIX ? size : PROBE_PREFIX;
  uint8_t *buf = malloc(want ? want : 1);
  dsc_status *st = NULL;
  size_t got = 0;
  if (!buf) {
    st = dsc_errorf("%s: out of memory reading %zu bytes", path, want);
    goto done;
  }
  st = file_read_at(fd, path, buf, want, 0, &got);
  if (st) goto done;
  if (got == 0) {
    st = dsc_errorf("%s: empty file", path);
  } else if (bytes_start_with(buf, got, "\xff\xd8\xff", 3)) {
    int need_more = 0;
    st = image_jpeg_probe(buf, got, path, w, h, &need_more);
    if (st && need_more && got < size) { /* header segments past the prefix: read it all */
      dsc_status_free(st);
      free(buf);
      buf = malloc(size);
      if (!buf) {
        st = dsc_errorf("%s: out of memory reading %zu bytes", path, size);
        goto done;
      }
      st = file_read_at(fd, path, buf, size, 0, &got);
      if (!st) st = image_jpeg_probe(buf, got, path, w, h, &need_more);
    }
    if (!st && is_jpeg) *is_jpeg = 1;
  } else if (bytes_start_with(buf, got, "\x89PNG\r\n\x1a\n", 8)) {
    st = png_probe(fd, size, buf, got, path, w, h);
  } else {
    const char *other = image_format_unsupported(buf, got);
    if (other)
      st = dsc_errorf("%s: %s images are not supported (JPEG and PNG only)", path, other);
    else
      st = dsc_errorf("%s: not a JPEG or PNG image (unrecognised content)", path);
  }
done:
  free(buf);
  close(fd);
  if (st) *w = *h = 0;
  return st;
}

/* ---------------------------------------------------------------- EXIF orientation --------- */

typedef struct exif_reader {
  const uint8_t *b;
  size_t n;
  int big_endian;
} exif_reader;

/* 16/32-bit reads at `off`; return 0 when they would leave the block. */
static int exif_u16(const exif_reader *r, size_t off, uint32_t *v) {
  if (off > r->n || r->n - off < 2) return 0;
  const uint8_t *p = r->b + off;
  *v = r->big_endian ? (uint32_t)(p[0] << 8 | p[1]) : (uint32_t)(p[1] << 8 | p[0]);
  return 1;
}

static int exif_u32(const exif_reader *r, size_t off, uint32_t *v) {
  if (off > r->n || r->n - off < 4) return 0;
  const uint8_t *p = r->b + off;
  if (r->big_endian)
    *v = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
  else
    *v = (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
  return 1;
}

int dsc_image_exif_orientation(const void *tiff, size_t size) {
  enum { TAG_ORIENTATION = 0x0112, TYPE_SHORT = 3, TYPE_LONG = 4 };
  if (!tiff || size < 8) return 1;
  exif_reader r = {tiff, size, 0};
  if (memcmp(r.b, "II", 2) == 0)
    r.big_endian = 0;
  else if (memcmp(r.b, "MM", 2) == 0)
    r.big_endian = 1;
  else
    return 1;
  uint32_t magic, ifd, count;
  if (!exif_u16(&r, 2, &magic) || magic != 42) return 1;
  if (!exif_u32(&r, 4, &ifd) || !exif_u16(&r, ifd, &count)) return 1;
  int orientation = 1;
  /* Entries are 12 bytes: tag u16, type u16, count u32, value-or-offset (4 bytes, inline here). */
  for (uint32_t i = 0; i < count; i++) {
    size_t e = (size_t)ifd + 2 + (size_t)i * 12;
    uint32_t tag, type, n, value;
    if (!exif_u16(&r, e, &tag) || !exif_u16(&r, e + 2, &type) || !exif_u32(&r, e + 4, &n)) break;
    if (tag != TAG_ORIENTATION || n != 1) continue;
    if (type == TYPE_SHORT) {
      if (!exif_u16(&r, e + 8, &value)) break;
    } else if (type == TYPE_LONG) {
      if (!exif_u32(&r, e + 8, &value)) break;
    } else {
      continue;
    }
    orientation = (value >= 1 && value <= 8) ? (int)value : 1;
  }
  return orientation;
}

dsc_status *dsc_image_orient(dsc_image *img, int orientation) {
  if (!img || !img->rgb) return dsc_errorf("dsc_image_orient: empty image");
  if (orientation < 2 || orientation > 8) return NULL;
  const int w = img->w, h = img->h;
  const int swap = orientation >= 5;
  const int ow = swap ? h : w, oh = swap ? w : h;
  uint8_t *dst = malloc((size_t)w * (size_t)h * 3);
  if (!dst) return dsc_errorf("dsc_image_orient: out of memory for a %dx%d image", w, h);
  /* For each output pixel (x, y), the source pixel (sx, sy). */
  for (int y = 0; y < oh; y++) {
    for (int x = 0; x < ow; x++) {
      int sx, sy;
      switch (orientation) {
        case 2: sx = w - 1 - x; sy = y; break;          /* mirror left-right */
        case 3: sx = w - 1 - x; sy = h - 1 - y; break;  /* rotate 180 */
        case 4: sx = x; sy = h - 1 - y; break;          /* flip top-bottom */
        case 5: sx = y; sy = x; break;                  /* transpose */
        case 6: sx = y; sy = h - 1 - x; break;          /* rotate 90 clockwise */
        case 7: sx = w - 1 - y; sy = h - 1 - x; break;  /* transverse */
        default: sx = w - 1 - y; sy = x; break;         /* 8: rotate 90 counter-clockwise */
      }
      const uint8_t *s = img->rgb + ((size_t)sy * w + sx) * 3;
      uint8_t *d = dst + ((size_t)y * ow + x) * 3;
      d[0] = s[0];
      d[1] = s[1];
      d[2] = s[2];
    }
  }
  free(img->rgb);
  img->rgb = dst;
  img->w = ow;
  img->h = oh;
  return NULL;
}
