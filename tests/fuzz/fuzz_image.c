/* fuzz_image.c: libFuzzer harness for the JPEG/PNG decoders (docs/fuzzing.md, "Image decoders").
 *
 * Each input is taken as a whole image file and decoded with dsc_image_decode_memory_capped under
 * a small pixel cap (FUZZ_MAX_PIXELS, so the fuzzer spends its time in the parsers rather than in
 * allocating huge images). A rejected input must give a one-line error starting with the label
 * and leave the output empty; an accepted one must have a size within the cap, and then every
 * pixel is read by a checksum and by the evaluation transform to a small size, so
 * AddressSanitizer sees any pixel the decoder failed to write inside its buffer.
 * A JPEG also goes through the header-only probe and the DCT-scaled decoder (image_codecs.h, the
 * same code dsc_image_probe_file / dsc_image_decode_file_scaled use on a file's bytes), with a
 * scale picked from the input's length: when the full decode succeeds, the probe must give its
 * size and a successful scaled decode must be ceil(w / denom) x ceil(h / denom). A PNG is written
 * to an in-memory file (memfd) for dsc_image_probe_file, whose PNG path reads a file at offsets:
 * its errors must name the file, and when the decode succeeds it must agree on the size.
 * Any violated expectation aborts, which libFuzzer reports as a crash.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "data/image_codecs.h"
#include "dsc/image.h"

#define FUZZ_LABEL "fuzz.img"
#define FUZZ_MAX_PIXELS ((int64_t)1 << 22)
#define FUZZ_RESIZE 20
#define FUZZ_SIZE 16

static void fuzz_expect(int cond) {
  if (!cond) abort();
}

/* A failed call: one line, starting with the label, output left empty. */
static void fuzz_expect_error(dsc_status *st, const dsc_image *img) {
  fuzz_expect(img->w == 0 && img->h == 0 && img->rgb == NULL);
  fuzz_expect(strncmp(st->msg, FUZZ_LABEL ": ", strlen(FUZZ_LABEL) + 2) == 0);
  fuzz_expect(strchr(st->msg, '\n') == NULL);
  dsc_status_free(st);
}

static unsigned fuzz_touch(const dsc_image *img) {
  fuzz_expect(img->w > 0 && img->h > 0 && img->rgb != NULL);
  unsigned checksum = 0;
  const size_t n = (size_t)img->w * (size_t)img->h * 3;
  for (size_t i = 0; i < n; i++) checksum += img->rgb[i];
  return checksum;
}

/* Probe and scaled decode of a JPEG whose full decode gave `full` (w == 0 when it failed). */
static unsigned fuzz_jpeg_extras(const uint8_t *data, size_t size, const dsc_image *full) {
  int pw = 0, ph = 0, need_more = 0;
  dsc_status *st = image_jpeg_probe(data, size, FUZZ_LABEL, &pw, &ph, &need_more);
  if (st) {
    fuzz_expect(full->w == 0);
    dsc_image empty = {0, 0, NULL};
    fuzz_expect_error(st, &empty);
  } else if (full->w) {
    fuzz_expect(pw == full->w && ph == full->h);
  }
  const int denom = 2 << (size % 3);
  dsc_image scaled;
  st = image_jpeg_decode_scaled(data, size, FUZZ_LABEL, FUZZ_MAX_PIXELS, denom, &scaled);
  if (st) {
    fuzz_expect_error(st, &scaled);
    return 0;
  }
  if (full->w) {
    fuzz_expect(scaled.w == (full->w + denom - 1) / denom);
    fuzz_expect(scaled.h == (full->h + denom - 1) / denom);
  }
  unsigned checksum = fuzz_touch(&scaled);
  dsc_image_free(&scaled);
  return checksum;
}

/* dsc_image_probe_file on the bytes as a file (a PNG here; other formats end in its dispatch). */
static void fuzz_png_probe(const uint8_t *data, size_t size, const dsc_image *full) {
  int fd = memfd_create("fuzz_image", MFD_CLOEXEC);
  fuzz_expect(fd >= 0);
  fuzz_expect(write(fd, data, size) == (ssize_t)size);
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  int w = -1, h = -1, is_jpeg = -1;
  dsc_status *st = dsc_image_probe_file(path, &w, &h, &is_jpeg);
  if (st) {
    fuzz_expect(strncmp(st->msg, path, strlen(path)) == 0 && strchr(st->msg, '\n') == NULL);
    fuzz_expect(w == 0 && h == 0 && is_jpeg == 0);
    dsc_status_free(st);
  } else {
    fuzz_expect(w > 0 && h > 0 && is_jpeg == 0);
    if (full->w) fuzz_expect(w == full->w && h == full->h);
  }
  close(fd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  dsc_image img;
  unsigned checksum = 0;
  dsc_status *st = dsc_image_decode_memory_capped(data, size, FUZZ_LABEL, FUZZ_MAX_PIXELS, &img);
  if (st) {
    fuzz_expect_error(st, &img);
  } else {
    fuzz_expect((int64_t)img.w * img.h <= FUZZ_MAX_PIXELS);
    checksum += fuzz_touch(&img);
    float out[FUZZ_SIZE * FUZZ_SIZE * 3];
    st = dsc_image_eval_transform(&img, FUZZ_RESIZE, FUZZ_SIZE, out);
    fuzz_expect(st == NULL);
    for (size_t i = 0; i < sizeof out / sizeof *out; i++)
      fuzz_expect(out[i] > -3.0f && out[i] < 3.0f); /* normalized 0..255: about -2.1..2.7, never NaN */
  }
  if (size >= 3 && memcmp(data, "\xff\xd8\xff", 3) == 0) checksum += fuzz_jpeg_extras(data, size, &img);
  if (size >= 8 && memcmp(data, "\x89PNG\r\n\x1a\n", 8) == 0) fuzz_png_probe(data, size, &img);
  dsc_image_free(&img);
  volatile unsigned sink = checksum; /* keeps the reads from being optimized away */
  (void)sink;
  return 0;
}
