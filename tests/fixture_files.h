/* fixture_files.h: writers of small fixture files for the data tests (test_dataset.c,
 * test_dataset_seg.c, test_loader.c): an 8-bit PNG writer on zlib (RGB, grey or palette, with an
 * optional false size in IHDR), raw bytes, folder trees and paths under a fixture root, and
 * temporary folders. */
#ifndef DSC_TEST_FIXTURE_FILES_H
#define DSC_TEST_FIXTURE_FILES_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "test.h"

static inline void fixture_put32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

static inline void fixture_png_chunk(FILE *f, const char *type, const uint8_t *data, uint32_t n) {
  uint8_t hdr[8], c[4];
  fixture_put32(hdr, n);
  memcpy(hdr + 4, type, 4);
  fwrite(hdr, 1, 8, f);
  if (n) fwrite(data, 1, n, f);
  uLong crc = crc32(0, (const Bytef *)type, 4);
  if (n) crc = crc32(crc, data, n);
  fixture_put32(c, (uint32_t)crc);
  fwrite(c, 1, 4, f);
}

/* Writes an 8-bit PNG: color type 2 (RGB, 3 bytes/pixel), 0 (grey) or 3 (palette of n_pal
 * RGB entries). claim_w/claim_h, when non-zero, replace the size written in IHDR. */
static inline void fixture_write_png(const char *path, int w, int h, int color_type,
                                     const uint8_t *px, const uint8_t *pal, int n_pal,
                                     uint32_t claim_w, uint32_t claim_h) {
  int bpp = color_type == 2 ? 3 : 1;
  size_t row = (size_t)w * bpp + 1, raw_n = row * (size_t)h;
  uint8_t *raw = malloc(raw_n ? raw_n : 1);
  for (int y = 0; y < h; y++) {
    raw[y * row] = 0;
    memcpy(raw + y * row + 1, px + (size_t)y * w * bpp, (size_t)w * bpp);
  }
  uLongf zn = compressBound(raw_n);
  uint8_t *z = malloc(zn);
  compress2(z, &zn, raw, raw_n, 6);
  FILE *f = fopen(path, "wb");
  if (f) {
    fwrite("\x89PNG\r\n\x1a\n", 1, 8, f);
    uint8_t ihdr[13] = {0};
    fixture_put32(ihdr, claim_w ? claim_w : (uint32_t)w);
    fixture_put32(ihdr + 4, claim_h ? claim_h : (uint32_t)h);
    ihdr[8] = 8;
    ihdr[9] = (uint8_t)color_type;
    fixture_png_chunk(f, "IHDR", ihdr, 13);
    if (color_type == 3) fixture_png_chunk(f, "PLTE", pal, (uint32_t)n_pal * 3);
    fixture_png_chunk(f, "IDAT", z, (uint32_t)zn);
    fixture_png_chunk(f, "IEND", NULL, 0);
    fclose(f);
  }
  free(raw);
  free(z);
}

static inline void fixture_write_bytes(const char *path, const void *data, size_t n) {
  FILE *f = fopen(path, "wb");
  if (!f) return;
  if (n) fwrite(data, 1, n, f);
  fclose(f);
}

/* A new folder under /tmp named after `what`; the caller frees the string. */
static inline char *fixture_tmpdir(const char *what) {
  char tmpl[256];
  test_temp_template(tmpl, sizeof tmpl, what);
  char *d = mkdtemp(tmpl);
  return d ? strdup(d) : NULL;
}

/* mkdir -p root/rel (root must exist). */
static inline void fixture_mkdirs(const char *root, const char *rel) {
  char p[1024];
  snprintf(p, sizeof p, "%s/%s", root, rel);
  for (char *s = p + strlen(root) + 1; *s; s++)
    if (*s == '/') {
      *s = 0;
      mkdir(p, 0755);
      *s = '/';
    }
  mkdir(p, 0755);
}

/* "root/rel" in one of four rotating static buffers (valid for the next three calls). */
static inline const char *fixture_path(const char *root, const char *rel) {
  static char buf[4][1024];
  static int k;
  k = (k + 1) % 4;
  snprintf(buf[k], sizeof buf[k], "%s/%s", root, rel);
  return buf[k];
}

static inline void fixture_rm_rf(const char *dir) {
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) printf("  could not remove %s\n", dir);
}

#endif
