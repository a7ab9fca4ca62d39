/* image_jpeg.c: JPEG to RGB8 through TurboJPEG (libjpeg-turbo), matching Pillow's decode.
 *
 * Before decoding, one pass over the marker structure (every length bounds-checked) finds the
 * first APP1 "Exif" block (the one Pillow uses for exif_transpose) and checks that the data reach
 * an end-of-image marker: a file cut short is an error, as in Pillow ("image file is truncated"),
 * where libjpeg would only warn and fill the rest with grey. libjpeg's other warnings (corrupt
 * entropy data, extraneous bytes) are accepted, as Pillow accepts them.
 *
 * Decoding uses the accurate integer IDCT and smooth chroma upsampling, Pillow's settings, and
 * TurboJPEG's scan limit (a progressive file with hundreds of scans is refused instead of taking
 * minutes). Grey JPEGs are replicated to RGB; CMYK/YCCK ones are decoded to CMYK by libjpeg and
 * converted here as Pillow's "CMYK;I" raw mode followed by convert("RGB") (include/dsc/image.h).
 *
 * Scaled decoding (image_jpeg_decode_scaled, denominators 2, 4, 8) is libjpeg's DCT-domain
 * scaling through TurboJPEG's scaling factors, the same as Pillow's Image.draft: the output is
 * TJSCALED(w, 1/denom) x TJSCALED(h, 1/denom) (rounded up), then oriented. The pixel cap applies
 * to the full-size image, so whether a file is accepted never depends on the scale asked for.
 * The probe (image_jpeg_probe) reads only the segments before the first scan: the frame header
 * through TurboJPEG's header parser, the EXIF orientation through the same walk as the decoder.
 */
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

#include "data/image_codecs.h"

/* What the marker walk found. */
typedef struct jpeg_layout {
  const uint8_t *exif; /* TIFF block of the first APP1 "Exif\0\0", or NULL */
  size_t exif_size;
  int complete;     /* an EOI marker follows the entropy-coded data */
  int reached_scan; /* a whole SOS segment lies inside the data (set by the header-only walk) */
} jpeg_layout;

static size_t be16(const uint8_t *p) { return (size_t)p[0] << 8 | p[1]; }

/* Skips entropy-coded data from `pos`; returns the offset of the next marker's 0xFF, or `n` if
 * the data end first. Inside a scan 0xFF is followed by 0x00 (a stuffed byte), by RST0..7, by
 * 0xFF fill bytes, or begins a marker. */
static size_t jpeg_skip_entropy(const uint8_t *b, size_t n, size_t pos) {
  while (pos < n) {
    const uint8_t *ff = memchr(b + pos, 0xFF, n - pos);
    if (!ff) return n;
    pos = (size_t)(ff - b);
    if (pos + 1 >= n) return n;
    uint8_t next = b[pos + 1];
    if (next == 0x00 || (next >= 0xD0 && next <= 0xD7)) {
      pos += 2;
    } else if (next == 0xFF) {
      pos += 1;
    } else {
      return pos;
    }
  }
  return n;
}

/* Walks the segments from SOI to EOI, or only up to the end of the first SOS segment when
 * `header_only`. Mirrors libjpeg's reading: bytes before a marker that are not 0xFF are skipped
 * (libjpeg warns about them), fill bytes 0xFF are skipped, stand-alone markers have no length. */
static void jpeg_walk(const uint8_t *b, size_t n, int header_only, jpeg_layout *lay) {
  memset(lay, 0, sizeof *lay);
  size_t pos = 2; /* after SOI */
  int seen_scan = 0;
  while (pos < n) {
    if (b[pos] != 0xFF) {
      const uint8_t *ff = memchr(b + pos, 0xFF, n - pos);
      if (!ff) return;
      pos = (size_t)(ff - b);
    }
    while (pos < n && b[pos] == 0xFF) pos++;
    if (pos >= n) return;
    uint8_t marker = b[pos++];
    if (marker == 0xD9) { /* EOI */
      lay->complete = seen_scan;
      return;
    }
    if (marker == 0x01 || marker == 0xD8 || (marker >= 0xD0 && marker <= 0xD7)) continue;
    if (n - pos < 2) return;
    size_t len = be16(b + pos);
    if (len < 2 || len > n - pos) return; /* cut inside a segment */
    const uint8_t *payload = b + pos + 2;
    size_t plen = len - 2;
    if (marker == 0xE1 && !seen_scan && !lay->exif && plen >= 5 && memcmp(payload, "Exif\0", 5) == 0) {
      /* Pillow keeps the first APP1 starting "Exif\0" and parses it only after "Exif\0\0". */
      lay->exif = payload; /* non-NULL marks "first block taken" */
      lay->exif_size = 0;
      if (plen >= 6 && payload[5] == 0) {
        lay->exif = payload + 6;
        lay->exif_size = plen - 6;
      }
    }
    pos += len;
    if (marker == 0xDA) { /* SOS: entropy-coded data follow */
      seen_scan = 1;
      lay->reached_scan = 1;
      if (header_only) return;
      pos = jpeg_skip_entropy(b, n, pos);
    }
  }
}

/* Pillow's cmyk2rgb after its "CMYK;I" unpacking (ink = 255 - stored): with nk = 255 - K,
 * R = nk - nk*C/255 rounded as its MULDIV255. The stored values go in; the inversion is folded. */
static uint8_t cmyk_channel(uint8_t stored_c, uint8_t stored_k) {
  int c = 255 - stored_c, nk = stored_k; /* nk = 255 - (255 - stored_k) */
  int t = c * nk + 128;
  int v = nk - (((t >> 8) + t) >> 8);
  return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

int image_jpeg_denominator_supported(int denom) {
  if (denom == 1) return 1;
  if (denom != 2 && denom != 4 && denom != 8) return 0;
  int n = 0;
  const tjscalingfactor *sf = tjGetScalingFactors(&n);
  for (int i = 0; sf && i < n; i++)
    if (sf[i].num == 1 && sf[i].denom == denom) return 1;
  return 0;
}

dsc_status *image_jpeg_probe(const uint8_t *bytes, size_t size, const char *label, int *w, int *h,
                             int *need_more) {
  *w = *h = 0;
  *need_more = 0;
  jpeg_layout lay;
  jpeg_walk(bytes, size, 1, &lay);
  if (!lay.reached_scan) {
    *need_more = 1;
    return dsc_errorf("%s: truncated or corrupt JPEG (no complete header before the first scan)", label);
  }
  tjhandle tj = tjInitDecompress();
  if (!tj) return dsc_errorf("%s: cannot initialise TurboJPEG: %s", label, tjGetErrorStr2(NULL));
  dsc_status *st = NULL;
  int jw = 0, jh = 0, subsamp = 0, colorspace = 0;
  if (tjDecompressHeader3(tj, bytes, (unsigned long)size, &jw, &jh, &subsamp, &colorspace) != 0)
    st = dsc_errorf("%s: invalid JPEG: %s", label, tjGetErrorStr2(tj));
  else if (jw <= 0 || jh <= 0)
    st = dsc_errorf("%s: invalid image size %dx%d", label, jw, jh);
  tjDestroy(tj);
  if (st) return st;
  const int orientation = lay.exif_size ? dsc_image_exif_orientation(lay.exif, lay.exif_size) : 1;
  *w = orientation >= 5 ? jh : jw;
  *h = orientation >= 5 ? jw : jh;
  return NULL;
}

dsc_status *image_jpeg_decode(const uint8_t *bytes, size_t size, const char *label,
                              int64_t max_pixels, dsc_image *out) {
  return image_jpeg_decode_scaled(bytes, size, label, max_pixels, 1, out);
}

dsc_status *image_jpeg_decode_scaled(const uint8_t *bytes, size_t size, const char *label,
                                     int64_t max_pixels, int denom, dsc_image *out) {
  out->w = out->h = 0;
  out->rgb = NULL;
  if (!image_jpeg_denominator_supported(denom))
    return dsc_errorf("%s: unsupported JPEG scale 1/%d (1, 2, 4 or 8)", label, denom);
  jpeg_layout lay;
  jpeg_walk(bytes, size, 0, &lay);
  if (!lay.complete)
    return dsc_errorf("%s: truncated or corrupt JPEG (the data end before the end-of-image marker)", label);

  tjhandle tj = tjInitDecompress();
  if (!tj) return dsc_errorf("%s: cannot initialise TurboJPEG: %s", label, tjGetErrorStr2(NULL));
  dsc_status *st = NULL;
  uint8_t *cmyk = NULL;
  int w = 0, h = 0, subsamp = 0, colorspace = 0;
  if (tjDecompressHeader3(tj, bytes, (unsigned long)size, &w, &h, &subsamp, &colorspace) != 0) {
    st = dsc_errorf("%s: invalid JPEG: %s", label, tjGetErrorStr2(tj));
    goto done;
  }
  if (denom > 1) { /* the cap is on the full-size image, as for an unscaled decode */
    if ((int64_t)w * h > max_pixels) {
      st = dsc_errorf("%s: image is %dx%d = %lld pixels, above the limit of %lld", label, w, h,
                      (long long)w * h, (long long)max_pixels);
      goto done;
    }
    const tjscalingfactor sf = {1, denom};
    w = TJSCALED(w, sf);
    h = TJSCALED(h, sf);
  }
  st = image_alloc(out, w, h, max_pixels, label);
  if (st) goto done;

  const int flags = TJFLAG_ACCURATEDCT | TJFLAG_LIMITSCANS;
  const int four = colorspace == TJCS_CMYK || colorspace == TJCS_YCCK;
  int rc;
  if (four) {
    cmyk = malloc((size_t)w * (size_t)h * 4);
    if (!cmyk) {
      st = dsc_errorf("%s: out of memory for a %dx%d CMYK image", label, w, h);
      goto done;
    }
    rc = tjDecompress2(tj, bytes, (unsigned long)size, cmyk, w, w * 4, h, TJPF_CMYK, flags);
  } else {
    rc = tjDecompress2(tj, bytes, (unsigned long)size, out->rgb, w, w * 3, h, TJPF_RGB, flags);
  }
  if (rc != 0 && tjGetErrorCode(tj) != TJERR_WARNING) {
    st = dsc_errorf("%s: cannot decode JPEG: %s", label, tjGetErrorStr2(tj));
    goto done;
  }
  if (four) {
    const size_t npix = (size_t)w * (size_t)h;
    for (size_t i = 0; i < npix; i++) {
      const uint8_t *s = cmyk + i * 4;
      uint8_t *d = out->rgb + i * 3;
      d[0] = cmyk_channel(s[0], s[3]);
      d[1] = cmyk_channel(s[1], s[3]);
      d[2] = cmyk_channel(s[2], s[3]);
    }
  }
  if (lay.exif_size) {
    st = dsc_image_orient(out, dsc_image_exif_orientation(lay.exif, lay.exif_size));
    if (st) st = dsc_status_wrap(st, "%s", label);
  }

done:
  free(cmyk);
  tjDestroy(tj);
  if (st) dsc_image_free(out);
  return st;
}
