/* test_image.c: image decoding, EXIF orientation, resizing and the eval transform against
 * Pillow / torchvision fixtures (tests/golden/images/, written by
 * tools/reference/make_image_fixtures.py), plus bad and corrupted inputs.
 *
 * Tolerances:
 *   - decoded pixels: exact. Pillow and TurboJPEG here are the same libjpeg-turbo with the same
 *     settings (accurate integer IDCT, smooth upsampling), and PNG is lossless; a difference means
 *     a decoder setting or a conversion rule drifted, which is what this test is for. (A different
 *     libjpeg-turbo release or a non-libjpeg-turbo PIL could differ by a level or two on chroma
 *     edges; regenerate the fixtures with that PIL rather than loosening.)
 *   - Pillow uint8 resize and the eval transform: exact (same fixed-point arithmetic; the float
 *     normalization is compared bit for bit with torchvision's via eval_norm_lut.f32).
 *   - float antialiased resize vs torch.nn.functional.interpolate(antialias=True): max abs
 *     difference 1e-4 on the 0..255 scale (AA_TOL). The weights are bit-identical to PyTorch's
 *     (checked by resizing one-hot rows); the sums differ in the last bit for a few percent of
 *     the values (measured max 3.1e-5 = 2 ulp near 255): PyTorch's compiled kernel does not
 *     round its multiply-adds exactly like plain C (neither separate nor fused multiply-adds
 *     reproduce all of its values).
 * Files are found under tests/golden/images/ (run from the repository root) or $DSC_TEST_IMAGES.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsc/image.h"
#include "test.h"

#define AA_TOL 1e-4

static const char *fixture_dir(void) {
  const char *d = getenv("DSC_TEST_IMAGES");
  return d && *d ? d : "tests/golden/images";
}

static void fixture_path(char *buf, size_t n, const char *name) {
  snprintf(buf, n, "%s/%s", fixture_dir(), name);
}

/* Whole file into memory (malloc'd, with a NUL after the end for sscanf), NULL if unreadable. */
static uint8_t *slurp(const char *name, size_t *size) {
  char p[512];
  fixture_path(p, sizeof p, name);
  FILE *f = fopen(p, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *b = malloc((size_t)(n > 0 ? n : 0) + 1);
  if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
    free(b);
    b = NULL;
  }
  if (b) b[n] = 0;
  fclose(f);
  *size = (size_t)n;
  return b;
}

/* Binary PPM (P6, maxval 255) as written by Pillow: the expected pixels, read without the code
 * under test. */
static int ppm_read(const char *name, dsc_image *img) {
  size_t n;
  uint8_t *b = slurp(name, &n);
  img->rgb = NULL;
  if (!b) return 0;
  int w = 0, h = 0, maxval = 0, off = 0;
  if (sscanf((const char *)b, "P6 %d %d %d%n", &w, &h, &maxval, &off) != 3 || maxval != 255 ||
      (size_t)off + 1 + (size_t)w * h * 3 != n) {
    free(b);
    return 0;
  }
  img->w = w;
  img->h = h;
  img->rgb = malloc((size_t)w * h * 3);
  memcpy(img->rgb, b + off + 1, (size_t)w * h * 3);
  free(b);
  return 1;
}

static float *f32_read(const char *name, size_t count) {
  size_t n;
  uint8_t *b = slurp(name, &n);
  if (!b || n != count * 4) {
    free(b);
    return NULL;
  }
  float *f = malloc(count * sizeof *f);
  memcpy(f, b, n); /* fixtures are little-endian, as is every machine we build for */
  free(b);
  return f;
}

/* Decodes `input` and compares with `expected` (PPM) exactly. */
static void check_decode(const char *input, const char *expected) {
  char p[512];
  fixture_path(p, sizeof p, input);
  dsc_image got = {0}, want = {0};
  CHECK(ppm_read(expected, &want), "cannot read fixture %s", expected);
  dsc_status *st = dsc_image_decode_file(p, &got);
  if (st) {
    CHECK(0, "%s: %s", input, st->msg);
    dsc_status_free(st);
  } else if (want.rgb) {
    CHECK(got.w == want.w && got.h == want.h, "%s: size %dx%d, Pillow %dx%d", input, got.w, got.h,
          want.w, want.h);
    if (got.w == want.w && got.h == want.h) {
      size_t n = (size_t)got.w * got.h * 3, diff = 0;
      int maxd = 0;
      for (size_t i = 0; i < n; i++) {
        int d = abs((int)got.rgb[i] - (int)want.rgb[i]);
        if (d) diff++;
        if (d > maxd) maxd = d;
      }
      CHECK(diff == 0, "%s: %zu of %zu values differ from Pillow (max %d levels)", input, diff, n, maxd);
    }
  }
  dsc_image_free(&got);
  dsc_image_free(&want);
}

static void check_decode_same(const char *input) {
  char ppm[256];
  snprintf(ppm, sizeof ppm, "%.*s.ppm", (int)(strrchr(input, '.') - input), input);
  check_decode(input, ppm);
}

/* ---------------------------------------------------------------- decoding ----------------- */

static void test_jpeg_kinds(void) {
  const char *files[] = {"jpeg_baseline_420.jpg", "jpeg_baseline_422.jpg", "jpeg_baseline_444.jpg",
                         "jpeg_progressive.jpg",  "jpeg_gray.jpg",         "jpeg_cmyk.jpg",
                         "jpeg_cmyk_noadobe.jpg", "jpeg_ycck.jpg"};
  for (size_t i = 0; i < sizeof files / sizeof *files; i++) check_decode_same(files[i]);
}

static void test_jpeg_exif_orientation(void) {
  char name[64];
  for (int o = 1; o <= 8; o++) {
    snprintf(name, sizeof name, "jpeg_exif_%d.jpg", o);
    check_decode_same(name);
  }
  check_decode_same("jpeg_exif_6_be.jpg");   /* big-endian TIFF block */
  check_decode_same("jpeg_exif_8_long.jpg"); /* orientation stored as LONG */
  check_decode_same("jpeg_exif_bad.jpg");    /* IFD offset outside the block: no orientation */
  check_decode_same("jpeg_exif_two.jpg");    /* two Exif blocks: the first counts */
}

static void test_png_kinds(void) {
  const char *files[] = {"png_gray1.png",        "png_gray2.png",           "png_gray4.png",
                         "png_gray8.png",        "png_gray8_trns.png",      "png_gray16.png",
                         "png_graya8.png",       "png_graya16.png",         "png_rgb8.png",
                         "png_rgb8_trns.png",    "png_rgb16.png",           "png_rgba8.png",
                         "png_rgba16.png",       "png_rgb8_interlaced.png", "png_rgba16_interlaced.png",
                         "png_pal8.png",         "png_pal4_oob.png",        "png_pal2_interlaced.png",
                         "png_pal8_trns.png",    "png_exif_6.png"};
  for (size_t i = 0; i < sizeof files / sizeof *files; i++) check_decode_same(files[i]);
}

/* The format comes from the bytes: a PNG handed over under a .jpg label decodes as PNG. */
static void test_decode_by_content(void) {
  size_t n;
  uint8_t *b = slurp("png_rgb8.png", &n);
  CHECK(b != NULL, "missing fixture");
  if (!b) return;
  dsc_image img = {0}, want = {0};
  CHECK_OK(dsc_image_decode_memory(b, n, "photo.jpg", &img));
  CHECK(ppm_read("png_rgb8.ppm", &want), "missing fixture");
  CHECK(img.rgb && want.rgb && img.w == want.w && img.h == want.h &&
            memcmp(img.rgb, want.rgb, (size_t)img.w * img.h * 3) == 0,
        "PNG bytes under a .jpg name");
  dsc_image_free(&img);
  dsc_image_free(&want);
  free(b);
}

/* ---------------------------------------------------------------- bad input ---------------- */

/* Decoding `name` fails with a message that names the file and contains `reason`. */
static void check_bad_file(const char *name, const char *reason) {
  char p[512];
  fixture_path(p, sizeof p, name);
  dsc_image img = {1, 1, (uint8_t *)p};
  CHECK_ERR(dsc_image_decode_file(p, &img), p);
  CHECK_ERR(dsc_image_decode_file(p, &img), reason);
  CHECK(img.rgb == NULL && img.w == 0 && img.h == 0, "%s: output not left empty", name);
}

static void test_bad_inputs(void) {
  check_bad_file("bad_empty.jpg", "empty file");
  check_bad_file("bad_text.jpg", "not a JPEG or PNG");
  check_bad_file("bad_random.bin", "not a JPEG or PNG");
  check_bad_file("bad_truncated.jpg", "truncated");
  check_bad_file("bad_truncated.png", "truncated");
  check_bad_file("bad_gif.gif", "GIF images are not supported");
  check_bad_file("no_such_file.png", "No such file");
  char dir[512];
  snprintf(dir, sizeof dir, "%s", fixture_dir());
  dsc_image img = {0};
  CHECK_ERR(dsc_image_decode_file(dir, &img), "is a directory");
  CHECK_ERR(dsc_image_decode_memory(NULL, 0, "nothing.png", &img), "nothing.png: empty file");
  CHECK_ERR(dsc_image_decode_memory("\xff\xd8\xff", 3, "tiny.jpg", &img), "tiny.jpg");
  CHECK_ERR(dsc_image_decode_memory("\x89PNG\r\n\x1a\n", 8, "tiny.png", &img), "tiny.png");
  CHECK(img.rgb == NULL, "output not left empty");
}

/* Every proper prefix of a JPEG is refused (its end-of-image marker is missing); PNG prefixes
 * that cut the image data are refused, and none crashes (run under ASan by `make asan`). */
static void test_truncation_sweep(void) {
  const char *jpegs[] = {"jpeg_baseline_420.jpg", "jpeg_progressive.jpg", "jpeg_cmyk.jpg", "jpeg_exif_6.jpg"};
  for (size_t f = 0; f < sizeof jpegs / sizeof *jpegs; f++) {
    size_t n;
    uint8_t *b = slurp(jpegs[f], &n);
    CHECK(b != NULL, "missing %s", jpegs[f]);
    if (!b) continue;
    size_t accepted = 0;
    for (size_t len = 0; len < n; len++) {
      uint8_t *copy = malloc(len ? len : 1); /* exact-size buffer: ASan sees any over-read */
      memcpy(copy, b, len);
      dsc_image img = {0};
      dsc_status *st = dsc_image_decode_memory(copy, len, jpegs[f], &img);
      if (!st) accepted++;
      dsc_status_free(st);
      dsc_image_free(&img);
      free(copy);
    }
    CHECK(accepted == 0, "%s: %zu truncated versions decoded", jpegs[f], accepted);
    free(b);
  }
  const char *pngs[] = {"png_rgb8.png", "png_rgb8_interlaced.png", "png_pal4_oob.png", "png_exif_6.png"};
  for (size_t f = 0; f < sizeof pngs / sizeof *pngs; f++) {
    size_t n;
    uint8_t *b = slurp(pngs[f], &n);
    CHECK(b != NULL, "missing %s", pngs[f]);
    if (!b) continue;
    dsc_image full = {0};
    CHECK_OK(dsc_image_decode_memory(b, n, pngs[f], &full));
    /* The file ends with IDAT's CRC (4 bytes) and IEND (12): a prefix shorter than n - 16 cuts
     * the image data, and must fail. Longer ones may decode (Pillow, too, ignores a damaged tail)
     * but then give the full image. */
    size_t bad_accepted = 0;
    for (size_t len = 0; len < n; len++) {
      uint8_t *copy = malloc(len ? len : 1);
      memcpy(copy, b, len);
      dsc_image img = {0};
      dsc_status *st = dsc_image_decode_memory(copy, len, pngs[f], &img);
      if (!st) {
        if (len < n - 16) bad_accepted++;
        CHECK(full.rgb && img.w == full.w && img.h == full.h &&
                  memcmp(img.rgb, full.rgb, (size_t)img.w * img.h * 3) == 0,
              "%s: a prefix of %zu bytes decoded to a different image", pngs[f], len);
      }
      dsc_status_free(st);
      dsc_image_free(&img);
      free(copy);
    }
    CHECK(bad_accepted == 0, "%s: %zu prefixes missing image data decoded", pngs[f], bad_accepted);
    dsc_image_free(&full);
    free(b);
  }
}

static uint64_t rng_next(uint64_t *s) { /* xorshift64*: deterministic mutations */
  *s ^= *s >> 12;
  *s ^= *s << 25;
  *s ^= *s >> 27;
  return *s * 2685821657736338717ULL;
}

/* Random byte changes in valid files: every decode either succeeds or returns an error. */
static void test_mutations(void) {
  const char *files[] = {"jpeg_baseline_420.jpg", "jpeg_progressive.jpg", "jpeg_ycck.jpg",
                         "jpeg_exif_6_be.jpg",    "png_rgb8_interlaced.png", "png_pal4_oob.png",
                         "png_gray16.png",        "png_exif_6.png"};
  uint64_t s = 0x9E3779B97F4A7C15ULL;
  int ok = 0, err = 0;
  for (size_t f = 0; f < sizeof files / sizeof *files; f++) {
    size_t n;
    uint8_t *b = slurp(files[f], &n);
    CHECK(b != NULL, "missing %s", files[f]);
    if (!b) continue;
    for (int t = 0; t < 150; t++) {
      uint8_t *copy = malloc(n);
      memcpy(copy, b, n);
      int flips = 1 + (int)(rng_next(&s) % 4);
      /* bias towards the headers, where lengths, offsets and sizes live */
      size_t span = (t % 2) ? n : (n < 400 ? n : 400);
      for (int k = 0; k < flips; k++) copy[rng_next(&s) % span] = (uint8_t)rng_next(&s);
      dsc_image img = {0};
      dsc_status *st = dsc_image_decode_memory(copy, n, files[f], &img);
      if (st) {
        err++;
        CHECK(strstr(st->msg, files[f]) != NULL, "error does not name the file: %s", st->msg);
      } else {
        ok++;
        CHECK(img.rgb && img.w > 0 && img.h > 0, "%s: success without pixels", files[f]);
      }
      dsc_status_free(st);
      dsc_image_free(&img);
      free(copy);
    }
    free(b);
  }
  printf("  mutations: %d decoded, %d refused\n", ok, err);
}

static void test_pixel_cap(void) {
  size_t n;
  uint8_t *jpg = slurp("jpeg_baseline_420.jpg", &n);
  CHECK(jpg != NULL, "missing fixture");
  if (!jpg) return;
  dsc_image img = {0};
  CHECK_ERR(dsc_image_decode_memory_capped(jpg, n, "cap.jpg", 1000, &img), "above the limit of 1000");
  CHECK_OK(dsc_image_decode_memory_capped(jpg, n, "cap.jpg", 67 * 45, &img));
  dsc_image_free(&img);
  /* A SOF claiming 60000 x 60000 is refused before anything is allocated for it. */
  for (size_t i = 2; i + 9 < n; i++) {
    if (jpg[i] == 0xFF && jpg[i + 1] == 0xC0) {
      jpg[i + 5] = 0xEA, jpg[i + 6] = 0x60, jpg[i + 7] = 0xEA, jpg[i + 8] = 0x60;
      break;
    }
  }
  CHECK_ERR(dsc_image_decode_memory(jpg, n, "huge.jpg", &img), "above the limit");
  free(jpg);

  uint8_t *png = slurp("png_rgb8.png", &n);
  CHECK(png != NULL, "missing fixture");
  if (!png) return;
  CHECK_ERR(dsc_image_decode_memory_capped(png, n, "cap.png", 100, &img), "cap.png: image is 37x23");
  /* IHDR claiming 30000 x 30000 with a valid CRC. */
  png[16] = 0, png[17] = 0, png[18] = 0x75, png[19] = 0x30;
  png[20] = 0, png[21] = 0, png[22] = 0x75, png[23] = 0x30;
  uint32_t crc = 0xFFFFFFFFu;
  for (size_t i = 12; i < 29; i++) { /* CRC-32 of "IHDR" + 13 data bytes */
    crc ^= png[i];
    for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1)));
  }
  crc ^= 0xFFFFFFFFu;
  png[29] = (uint8_t)(crc >> 24), png[30] = (uint8_t)(crc >> 16), png[31] = (uint8_t)(crc >> 8), png[32] = (uint8_t)crc;
  CHECK_ERR(dsc_image_decode_memory(png, n, "huge.png", &img), "above the limit");
  free(png);
  CHECK(img.rgb == NULL, "output not left empty");
}

/* ---------------------------------------------------------------- EXIF / orientation ------- */

static void test_exif_parser(void) {
  /* little-endian, IFD0 at 8 with one entry: Orientation SHORT 6 */
  uint8_t le[] = {'I', 'I', 42, 0, 8, 0, 0, 0, 1, 0, 0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0};
  CHECK(dsc_image_exif_orientation(le, sizeof le) == 6, "LE SHORT");
  uint8_t be[] = {'M', 'M', 0, 42, 0, 0, 0, 8, 0, 1, 0x01, 0x12, 0, 4, 0, 0, 0, 1, 0, 0, 0, 3, 0, 0, 0, 0};
  CHECK(dsc_image_exif_orientation(be, sizeof be) == 3, "BE LONG");
  /* every truncation of the blocks: never a read out of bounds (ASan), orientation 1 when cut */
  for (size_t n = 0; n < sizeof le; n++) {
    uint8_t *c = malloc(n ? n : 1);
    memcpy(c, le, n);
    int o = dsc_image_exif_orientation(c, n);
    CHECK(o == (n >= 20 ? 6 : 1), "LE block cut to %zu bytes gave %d", n, o);
    free(c);
  }
  le[18] = 9; /* out of range */
  CHECK(dsc_image_exif_orientation(le, sizeof le) == 1, "orientation 9");
  le[18] = 6;
  le[12] = 7; /* type UNDEFINED */
  CHECK(dsc_image_exif_orientation(le, sizeof le) == 1, "wrong type");
  le[12] = 3;
  le[8] = 0xFF, le[9] = 0xFF; /* 65535 entries in a 26-byte block */
  CHECK(dsc_image_exif_orientation(le, sizeof le) == 6, "huge entry count");
  le[4] = 0xF0, le[5] = 0xFF, le[6] = 0xFF, le[7] = 0xFF; /* IFD offset near 2^32 */
  CHECK(dsc_image_exif_orientation(le, sizeof le) == 1, "IFD offset out of range");
  CHECK(dsc_image_exif_orientation(NULL, 10) == 1, "NULL");
  /* random blocks with a valid header */
  uint64_t s = 12345;
  for (int t = 0; t < 2000; t++) {
    size_t n = 8 + rng_next(&s) % 64;
    uint8_t *c = malloc(n);
    for (size_t i = 0; i < n; i++) c[i] = (uint8_t)rng_next(&s);
    memcpy(c, t % 2 ? "II*\0\x08\0\0\0" : "MM\0*\0\0\0\x08", 8); /* IFD0 at 8 */
    int o = dsc_image_exif_orientation(c, n);
    CHECK(o >= 1 && o <= 8, "orientation %d", o);
    free(c);
  }
}

static void test_orient_algebra(void) {
  dsc_image a = {3, 2, malloc(18)};
  for (int i = 0; i < 18; i++) a.rgb[i] = (uint8_t)(i * 7);
  uint8_t orig[18];
  memcpy(orig, a.rgb, 18);
  /* 6 then 8, 3 twice, 2 twice, 5 twice, 7 twice: identity */
  const int pairs[][2] = {{6, 8}, {8, 6}, {3, 3}, {2, 2}, {4, 4}, {5, 5}, {7, 7}};
  for (size_t i = 0; i < sizeof pairs / sizeof *pairs; i++) {
    CHECK_OK(dsc_image_orient(&a, pairs[i][0]));
    if (pairs[i][0] >= 5) CHECK(a.w == 2 && a.h == 3, "orientation %d keeps the size", pairs[i][0]);
    CHECK_OK(dsc_image_orient(&a, pairs[i][1]));
    CHECK(a.w == 3 && a.h == 2 && memcmp(a.rgb, orig, 18) == 0, "%d then %d", pairs[i][0], pairs[i][1]);
  }
  /* 6 = rotate 90 clockwise: the top-left pixel moves to the top-right */
  CHECK_OK(dsc_image_orient(&a, 6));
  CHECK(memcmp(a.rgb + 3, orig, 3) == 0, "rotate 90 clockwise");
  CHECK_OK(dsc_image_orient(&a, 1)); /* no-op */
  CHECK_OK(dsc_image_orient(&a, 0));
  dsc_image_free(&a);
  CHECK_ERR(dsc_image_orient(&a, 3), "empty image");
}

/* ---------------------------------------------------------------- resizing ----------------- */

static void test_resize_u8_vs_pillow(void) {
  const int sizes[][2] = {{20, 13}, {17, 60}, {90, 70}, {61, 20}, {7, 43}}; /* PIL_RESIZES */
  dsc_image src = {0};
  CHECK(ppm_read("aa_src.ppm", &src), "missing aa_src.ppm");
  if (!src.rgb) return;
  for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
    char name[64];
    snprintf(name, sizeof name, "pil_resize_%dx%d.ppm", sizes[i][0], sizes[i][1]);
    dsc_image want = {0}, got = {0};
    CHECK(ppm_read(name, &want), "missing %s", name);
    CHECK_OK(dsc_image_resize_u8(&src, sizes[i][0], sizes[i][1], &got));
    if (want.rgb && got.rgb) {
      size_t n = (size_t)got.w * got.h * 3, diff = 0;
      for (size_t k = 0; k < n; k++) diff += got.rgb[k] != want.rgb[k];
      CHECK(diff == 0, "%s: %zu of %zu values differ from Pillow", name, diff, n);
    }
    dsc_image_free(&want);
    dsc_image_free(&got);
  }
  dsc_image out = {0};
  CHECK_ERR(dsc_image_resize_u8(&src, 0, 5, &out), "invalid output size");
  dsc_image_free(&src);
}

static void test_resize_f32_vs_torch(void) {
  static const struct {
    const char *name;
    int top, left, ch, cw, oh, ow;
  } cases[] = {/* AA_CASES in make_image_fixtures.py */
               {"down", 0, 0, 43, 61, 13, 20},       {"mixed", 0, 0, 43, 61, 60, 17},
               {"region_down", 5, 7, 25, 30, 9, 11}, {"region_up", 3, 2, 9, 12, 21, 29},
               {"width_only", 0, 0, 43, 61, 43, 20}, {"height_only", 0, 0, 43, 61, 11, 61}};
  dsc_image src = {0};
  CHECK(ppm_read("aa_src.ppm", &src), "missing aa_src.ppm");
  if (!src.rgb) return;
  double worst = 0;
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    char name[64];
    snprintf(name, sizeof name, "aa_%s.f32", cases[i].name);
    size_t n = (size_t)cases[i].oh * cases[i].ow * 3;
    float *want = f32_read(name, n), *got = malloc(n * sizeof *got);
    CHECK(want != NULL, "missing %s", name);
    CHECK_OK(dsc_image_resize_region_f32(&src, cases[i].top, cases[i].left, cases[i].ch, cases[i].cw,
                                         cases[i].oh, cases[i].ow, got));
    if (want) {
      double maxd = 0;
      size_t exact = 0;
      for (size_t k = 0; k < n; k++) {
        double d = fabs((double)got[k] - want[k]);
        if (d > maxd) maxd = d;
        exact += got[k] == want[k];
      }
      if (maxd > worst) worst = maxd;
      CHECK(maxd <= AA_TOL, "%s: max abs difference %.3g > %.3g", name, maxd, AA_TOL);
      printf("  %s: max |dsc - torch| = %.3g, %zu/%zu bit-exact\n", name, maxd, exact, n);
    }
    free(want);
    free(got);
  }
  float tmp[3];
  CHECK_ERR(dsc_image_resize_region_f32(&src, 40, 0, 10, 10, 1, 1, tmp), "outside");
  CHECK_ERR(dsc_image_resize_region_f32(&src, 0, 0, 10, 10, 0, 1, tmp), "invalid output size");
  dsc_image_free(&src);
}

/* ---------------------------------------------------------------- eval transform ----------- */

static void test_eval_size(void) {
  int w, h;
  CHECK_OK(dsc_image_eval_size(300, 200, 256, &w, &h));
  CHECK(w == 384 && h == 256, "300x200 -> %dx%d", w, h);
  CHECK_OK(dsc_image_eval_size(131, 197, 81, &w, &h));
  CHECK(w == 81 && h == 121, "131x197 -> %dx%d", w, h); /* int(81 * 197 / 131) = int(121.8) */
  CHECK_OK(dsc_image_eval_size(500, 500, 256, &w, &h));
  CHECK(w == 256 && h == 256, "square -> %dx%d", w, h);
  CHECK_OK(dsc_image_eval_size(500, 375, 256, &w, &h));
  CHECK(w == 341 && h == 256, "500x375 -> %dx%d", w, h);
  CHECK_ERR(dsc_image_eval_size(0, 5, 256, &w, &h), "invalid");
}

static const float *norm_lut(void) {
  static float lut[3 * 256];
  static int loaded;
  if (!loaded) {
    float *f = f32_read("eval_norm_lut.f32", 3 * 256);
    if (!f) return NULL;
    memcpy(lut, f, sizeof lut);
    free(f);
    loaded = 1;
  }
  return lut;
}

/* dsc_image_eval_transform of `src` equals torchvision's output, i.e. LUT[expected crop], bit
 * for bit; expected == NULL means "the decoded source itself" (already size x size). */
static void check_eval(const char *src, int resize, int size, const char *expected) {
  char p[512];
  fixture_path(p, sizeof p, src);
  dsc_image img = {0}, want = {0};
  const float *lut = norm_lut();
  CHECK(lut != NULL, "missing eval_norm_lut.f32");
  CHECK_OK(dsc_image_decode_file(p, &img));
  if (expected) {
    CHECK(ppm_read(expected, &want), "missing %s", expected);
  } else if (img.rgb) {
    want.w = img.w, want.h = img.h;
    want.rgb = malloc((size_t)img.w * img.h * 3);
    memcpy(want.rgb, img.rgb, (size_t)img.w * img.h * 3);
  }
  size_t n = (size_t)size * size * 3;
  float *out = malloc(n * sizeof *out);
  if (img.rgb && want.rgb && lut) {
    CHECK(want.w == size && want.h == size, "%s: fixture is %dx%d", src, want.w, want.h);
    CHECK_OK(dsc_image_eval_transform(&img, resize, size, out));
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += memcmp(&out[i], &lut[(i % 3) * 256 + want.rgb[i]], 4) != 0;
    CHECK(bad == 0, "%s resize %d size %d: %zu of %zu values differ from torchvision", src, resize,
          size, bad, n);
  }
  free(out);
  dsc_image_free(&img);
  dsc_image_free(&want);
}

static void test_eval_landscape(void) {
  check_eval("eval_landscape.jpg", 256, 224, "eval_landscape_r256_s224.ppm"); /* defaults */
  check_eval("eval_landscape.jpg", 32, 28, "eval_landscape_r32_s28.ppm");     /* strong downscale */
}

static void test_eval_portrait(void) {
  check_eval("eval_portrait.png", 81, 64, "eval_portrait_r81_s64.ppm"); /* half-even offsets */
  check_eval("eval_portrait.png", 100, 96, "eval_portrait_r100_s96.ppm");
}

static void test_eval_small_upscaled(void) {
  check_eval("eval_small.png", 64, 56, "eval_small_r64_s56.ppm");
  check_eval("eval_small.png", 48, 56, "eval_small_r48_s56.ppm"); /* crop > image: zero padding */
  check_eval("eval_noresize.png", 64, 56, "eval_noresize_r64_s56.ppm");
}

static void test_eval_already_size(void) {
  check_eval("eval_square224.png", 256, 224, NULL);
}

static void test_eval_errors(void) {
  dsc_image empty = {0};
  float out[12];
  CHECK_ERR(dsc_image_eval_transform(&empty, 256, 224, out), "empty image");
  uint8_t px[12] = {0};
  dsc_image tiny = {2, 2, px};
  CHECK_ERR(dsc_image_eval_transform(&tiny, 0, 2, out), "invalid");
  CHECK_ERR(dsc_image_eval_transform(&tiny, 2, 0, out), "invalid");
  CHECK_OK(dsc_image_eval_transform(&tiny, 2, 2, out)); /* 2x2 as is: normalized zeros */
  for (int c = 0; c < 3; c++)
    CHECK(out[c] == (0.0f - dsc_image_mean[c]) / dsc_image_std[c], "channel %d of a black pixel", c);
}

/* ---------------------------------------------------------------- probe and scaled decode -- */

/* The probe gives the decoded (oriented) size without decoding, and says which format it saw. */
static void check_probe_matches(const char *name, int want_jpeg) {
  char p[512];
  fixture_path(p, sizeof p, name);
  dsc_image img = {0};
  int w = -1, h = -1, is_jpeg = -1;
  CHECK_OK(dsc_image_decode_file(p, &img));
  CHECK_OK(dsc_image_probe_file(p, &w, &h, &is_jpeg));
  CHECK(w == img.w && h == img.h, "%s: probe %dx%d, decode %dx%d", name, w, h, img.w, img.h);
  CHECK(is_jpeg == want_jpeg, "%s: is_jpeg %d", name, is_jpeg);
  dsc_image_free(&img);
}

static void test_probe_matches_decode(void) {
  char name[64];
  for (int o = 1; o <= 8; o++) {
    snprintf(name, sizeof name, "jpeg_exif_%d.jpg", o);
    check_probe_matches(name, 1);
  }
  const char *jpegs[] = {"jpeg_exif_6_be.jpg", "jpeg_exif_8_long.jpg", "jpeg_exif_bad.jpg",
                         "jpeg_exif_two.jpg",  "jpeg_baseline_420.jpg", "jpeg_progressive.jpg",
                         "jpeg_gray.jpg",      "jpeg_cmyk.jpg",         "jpeg_ycck.jpg",
                         "eval_landscape.jpg"};
  for (size_t i = 0; i < sizeof jpegs / sizeof *jpegs; i++) check_probe_matches(jpegs[i], 1);
  const char *pngs[] = {"png_exif_6.png", "png_gray1.png",           "png_rgba16.png",
                        "png_pal8.png",   "png_rgb8_interlaced.png", "eval_portrait.png"};
  for (size_t i = 0; i < sizeof pngs / sizeof *pngs; i++) check_probe_matches(pngs[i], 0);
  int w = 0, h = 0;
  char p[512];
  fixture_path(p, sizeof p, "png_rgb8.png");
  CHECK_OK(dsc_image_probe_file(p, &w, &h, NULL)); /* is_jpeg is optional */
}

/* Writes `n` bytes to a fresh temporary file; its path goes to `path` (at least 64 bytes). */
static int temp_file_write(char *path, const uint8_t *bytes, size_t n) {
  test_temp_template(path, 64, "image");
  int fd = mkstemp(path);
  if (fd < 0) return 0;
  FILE *f = fdopen(fd, "wb");
  if (!f) return 0;
  int ok = fwrite(bytes, 1, n, f) == n;
  return fclose(f) == 0 && ok;
}

/* Header segments past the probe's first read (two 60 KB APP2 segments before the Exif block of
 * an orientation-6 JPEG), and a PNG whose eXIf chunk comes after the image data: the probe still
 * finds the orientation. */
static void test_probe_far_headers(void) {
  size_t n;
  uint8_t *jpg = slurp("jpeg_exif_6.jpg", &n);
  CHECK(jpg != NULL, "missing fixture");
  if (!jpg) return;
  const size_t seg = 60000, big_n = n + 2 * (seg + 2);
  uint8_t *big = malloc(big_n);
  memcpy(big, jpg, 2); /* SOI */
  size_t pos = 2;
  for (int k = 0; k < 2; k++) {
    big[pos] = 0xFF;
    big[pos + 1] = 0xE2;
    big[pos + 2] = (uint8_t)(seg >> 8);
    big[pos + 3] = (uint8_t)(seg & 0xFF);
    memset(big + pos + 4, 'x', seg - 2);
    pos += seg + 2;
  }
  memcpy(big + pos, jpg + 2, n - 2);
  char path[64];
  CHECK(temp_file_write(path, big, big_n), "cannot write a temporary file");
  dsc_image img = {0};
  int w = 0, h = 0, is_jpeg = 0;
  CHECK_OK(dsc_image_decode_file(path, &img));
  CHECK_OK(dsc_image_probe_file(path, &w, &h, &is_jpeg));
  CHECK(img.w == 30 && img.h == 40 && w == 30 && h == 40 && is_jpeg == 1,
        "far Exif: probe %dx%d, decode %dx%d (want 30x40)", w, h, img.w, img.h);
  dsc_image_free(&img);
  remove(path);
  free(big);
  free(jpg);

  uint8_t *png = slurp("png_exif_6.png", &n);
  CHECK(png != NULL, "missing fixture");
  if (!png) return;
  /* Chunks: move eXIf (its CRC covers only type and data) to just before IEND. */
  uint8_t *moved = malloc(n);
  size_t exif_at = 0, exif_len = 0, iend_at = 0, off = 8;
  while (off + 12 <= n) {
    size_t len = (size_t)png[off] << 24 | (size_t)png[off + 1] << 16 | (size_t)png[off + 2] << 8 | png[off + 3];
    if (memcmp(png + off + 4, "eXIf", 4) == 0) exif_at = off, exif_len = len + 12;
    if (memcmp(png + off + 4, "IEND", 4) == 0) iend_at = off;
    off += len + 12;
  }
  CHECK(exif_at && iend_at > exif_at, "png_exif_6.png: eXIf before IEND expected");
  if (exif_at && iend_at > exif_at) {
    size_t m = 0;
    memcpy(moved, png, exif_at), m = exif_at;
    memcpy(moved + m, png + exif_at + exif_len, iend_at - exif_at - exif_len), m += iend_at - exif_at - exif_len;
    memcpy(moved + m, png + exif_at, exif_len), m += exif_len;
    memcpy(moved + m, png + iend_at, n - iend_at), m += n - iend_at;
    CHECK(temp_file_write(path, moved, m), "cannot write a temporary file");
    dsc_image want = {0};
    char p[512];
    fixture_path(p, sizeof p, "png_exif_6.png");
    CHECK_OK(dsc_image_decode_file(p, &want));
    CHECK_OK(dsc_image_decode_file(path, &img));
    CHECK_OK(dsc_image_probe_file(path, &w, &h, &is_jpeg));
    CHECK(img.w == want.w && img.h == want.h && w == want.w && h == want.h && is_jpeg == 0,
          "eXIf after IDAT: probe %dx%d, decode %dx%d (want %dx%d)", w, h, img.w, img.h, want.w, want.h);
    dsc_image_free(&img);
    dsc_image_free(&want);
    remove(path);
  }
  free(moved);
  free(png);
}

static void test_probe_errors(void) {
  const char *files[] = {"bad_empty.jpg", "bad_text.jpg", "bad_random.bin", "bad_gif.gif",
                         "no_such_file.png"};
  const char *reasons[] = {"empty file", "not a JPEG or PNG", "not a JPEG or PNG",
                           "GIF images are not supported", "No such file"};
  char p[512];
  for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
    fixture_path(p, sizeof p, files[i]);
    int w = 1, h = 1;
    CHECK_ERR(dsc_image_probe_file(p, &w, &h, NULL), p);
    CHECK_ERR(dsc_image_probe_file(p, &w, &h, NULL), reasons[i]);
    CHECK(w == 0 && h == 0, "%s: size not zeroed", files[i]);
  }
  int w, h;
  CHECK_ERR(dsc_image_probe_file(fixture_dir(), &w, &h, NULL), "is a directory");
  /* A JPEG cut inside its header segments, and a PNG cut inside IHDR. */
  size_t n;
  char path[64];
  uint8_t *jpg = slurp("jpeg_exif_6.jpg", &n);
  CHECK(jpg && temp_file_write(path, jpg, 100), "cannot write a temporary file");
  CHECK_ERR(dsc_image_probe_file(path, &w, &h, NULL), path);
  remove(path);
  free(jpg);
  uint8_t *png = slurp("png_rgb8.png", &n);
  CHECK(png && temp_file_write(path, png, 20), "cannot write a temporary file");
  CHECK_ERR(dsc_image_probe_file(path, &w, &h, NULL), "IHDR");
  remove(path);
  free(png);
}

/* Box-averages `in` by `denom` (a last partial block averages the pixels it has). */
static void box_downscale(const dsc_image *in, int denom, dsc_image *out) {
  out->w = (in->w + denom - 1) / denom;
  out->h = (in->h + denom - 1) / denom;
  out->rgb = malloc((size_t)out->w * out->h * 3);
  for (int y = 0; y < out->h; y++)
    for (int x = 0; x < out->w; x++)
      for (int c = 0; c < 3; c++) {
        int sum = 0, cnt = 0;
        for (int sy = y * denom; sy < (y + 1) * denom && sy < in->h; sy++)
          for (int sx = x * denom; sx < (x + 1) * denom && sx < in->w; sx++, cnt++)
            sum += in->rgb[((size_t)sy * in->w + sx) * 3 + c];
        out->rgb[((size_t)y * out->w + x) * 3 + c] = (uint8_t)((sum + cnt / 2) / cnt);
      }
}

static double mean_abs_diff(const dsc_image *a, const dsc_image *b) {
  double s = 0;
  const size_t n = (size_t)a->w * a->h * 3;
  for (size_t i = 0; i < n; i++) s += abs((int)a->rgb[i] - (int)b->rgb[i]);
  return s / (double)n;
}

/* Scaled JPEG decodes: size ceil(w / denom) x ceil(h / denom), denom 1 identical to the plain
 * decode, orientation applied after scaling (scaled(exif_o) == orient(scaled(exif_1), o) exactly:
 * the exif fixtures share their pixels), and content close to a box-averaged full decode on the
 * photo-like eval_landscape.jpg: mean absolute difference below SCALED_MAD levels (measured
 * 1.89, 1.20, 0.88 for 1/2, 1/4, 1/8). DCT scaling is not a box filter (it keeps each block's
 * lowest frequencies, and chroma is scaled before upsampling), so the small synthetic fixtures,
 * mostly 1-pixel detail, differ from a box average by up to 16 levels: checked for size only.
 * The scaled pixels were also compared with Pillow 9.4's Image.draft(mode, (w // denom,
 * h // denom)) + exif_transpose for every JPEG fixture here and denom 2, 4, 8: identical (same
 * libjpeg-turbo 2.1.5, same scaling), which is not a fixture because Pillow builds differ. */
#define SCALED_MAD 3.0
static void test_scaled_decode(void) {
  const char *files[] = {"eval_landscape.jpg", "jpeg_baseline_420.jpg", "jpeg_baseline_422.jpg",
                         "jpeg_baseline_444.jpg", "jpeg_progressive.jpg", "jpeg_gray.jpg",
                         "jpeg_cmyk.jpg", "jpeg_ycck.jpg", "jpeg_exif_1.jpg"};
  const int denoms[] = {2, 4, 8};
  char p[512];
  for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
    fixture_path(p, sizeof p, files[i]);
    dsc_image full = {0};
    CHECK_OK(dsc_image_decode_file(p, &full));
    if (!full.rgb) continue;
    for (size_t d = 0; d < sizeof denoms / sizeof *denoms; d++) {
      const int denom = denoms[d];
      dsc_image scaled = {0}, box = {0};
      CHECK_OK(dsc_image_decode_file_scaled(p, 0, denom, &scaled));
      if (!scaled.rgb) continue;
      box_downscale(&full, denom, &box);
      CHECK(scaled.w == box.w && scaled.h == box.h, "%s 1/%d: %dx%d, want %dx%d", files[i], denom,
            scaled.w, scaled.h, box.w, box.h);
      if (i == 0 && scaled.w == box.w && scaled.h == box.h) {
        double mad = mean_abs_diff(&scaled, &box);
        printf("  %s 1/%d: mean |scaled - box| = %.2f levels\n", files[i], denom, mad);
        CHECK(mad < SCALED_MAD, "%s 1/%d: mean abs difference %.2f", files[i], denom, mad);
      }
      dsc_image_free(&scaled);
      dsc_image_free(&box);
    }
    /* denom 1 is the ordinary decode */
    dsc_image same = {0};
    CHECK_OK(dsc_image_decode_file_scaled(p, 0, 1, &same));
    CHECK(same.rgb && same.w == full.w && same.h == full.h &&
              memcmp(same.rgb, full.rgb, (size_t)full.w * full.h * 3) == 0,
          "%s: denom 1 differs from the full decode", files[i]);
    dsc_image_free(&same);
    dsc_image_free(&full);
  }
  /* orientation after scaling */
  for (size_t d = 0; d < sizeof denoms / sizeof *denoms; d++) {
    dsc_image base = {0};
    fixture_path(p, sizeof p, "jpeg_exif_1.jpg");
    CHECK_OK(dsc_image_decode_file_scaled(p, 0, denoms[d], &base));
    for (int o = 2; o <= 8 && base.rgb; o++) {
      char name[64];
      snprintf(name, sizeof name, "jpeg_exif_%d.jpg", o);
      fixture_path(p, sizeof p, name);
      dsc_image got = {0}, want = {0};
      CHECK_OK(dsc_image_decode_file_scaled(p, 0, denoms[d], &got));
      want.w = base.w, want.h = base.h;
      want.rgb = malloc((size_t)base.w * base.h * 3);
      memcpy(want.rgb, base.rgb, (size_t)base.w * base.h * 3);
      CHECK_OK(dsc_image_orient(&want, o));
      CHECK(got.rgb && got.w == want.w && got.h == want.h &&
                memcmp(got.rgb, want.rgb, (size_t)got.w * got.h * 3) == 0,
            "%s 1/%d: not the oriented scaled image", name, denoms[d]);
      dsc_image_free(&got);
      dsc_image_free(&want);
    }
    dsc_image_free(&base);
  }
  /* a PNG ignores the scale */
  fixture_path(p, sizeof p, "png_exif_6.png");
  dsc_image a = {0}, b = {0};
  CHECK_OK(dsc_image_decode_file(p, &a));
  CHECK_OK(dsc_image_decode_file_scaled(p, 0, 8, &b));
  CHECK(a.rgb && b.rgb && a.w == b.w && a.h == b.h && memcmp(a.rgb, b.rgb, (size_t)a.w * a.h * 3) == 0,
        "PNG with denom 8 differs from the full decode");
  dsc_image_free(&a);
  dsc_image_free(&b);
}

static void test_scaled_errors(void) {
  char p[512];
  dsc_image img = {1, 1, (uint8_t *)p};
  fixture_path(p, sizeof p, "bad_truncated.jpg");
  CHECK_ERR(dsc_image_decode_file_scaled(p, 0, 4, &img), p);
  CHECK_ERR(dsc_image_decode_file_scaled(p, 0, 4, &img), "truncated");
  CHECK(img.rgb == NULL && img.w == 0 && img.h == 0, "output not left empty");
  fixture_path(p, sizeof p, "no_such_file.jpg");
  CHECK_ERR(dsc_image_decode_file_scaled(p, 0, 2, &img), p);
  fixture_path(p, sizeof p, "bad_text.jpg");
  CHECK_ERR(dsc_image_decode_file_scaled(p, 0, 2, &img), "not a JPEG or PNG");
  fixture_path(p, sizeof p, "eval_landscape.jpg");
  CHECK_ERR(dsc_image_decode_file_scaled(p, 0, 3, &img), p);
  CHECK_ERR(dsc_image_decode_file_scaled(p, 0, 16, &img), "denominator");
  /* the cap is on the full size (300x200), not the scaled one */
  CHECK_ERR(dsc_image_decode_file_scaled(p, 300 * 200 - 1, 8, &img), "above the limit");
  CHECK_OK(dsc_image_decode_file_scaled(p, 300 * 200, 8, &img));
  CHECK(img.w == 38 && img.h == 25, "1/8 of 300x200 is %dx%d, want 38x25", img.w, img.h);
  dsc_image_free(&img);
}

static void test_dct_denominator(void) {
  CHECK(dsc_image_dct_denominator(500, 375, 224) == 1, "500x375 -> 224");
  CHECK(dsc_image_dct_denominator(448, 448, 224) == 2, "448x448 -> 224");
  CHECK(dsc_image_dct_denominator(447, 448, 224) == 1, "447x448 -> 224");
  CHECK(dsc_image_dct_denominator(1000, 800, 224) == 2, "1000x800 -> 224");
  CHECK(dsc_image_dct_denominator(1000, 900, 224) == 4, "1000x900 -> 224");
  CHECK(dsc_image_dct_denominator(2000, 1800, 224) == 8, "2000x1800 -> 224");
  CHECK(dsc_image_dct_denominator(4000, 4000, 96) == 8, "never above 8");
  CHECK(dsc_image_dct_denominator(200, 100, 96) == 1, "200x100 -> 96");
  CHECK(dsc_image_dct_denominator(0, 100, 10) == 1, "empty crop");
  CHECK(dsc_image_dct_denominator(100, 100, 0) == 1, "empty output");
  CHECK(dsc_image_dct_denominator(-8, -8, -1) == 1, "negative arguments");
}

static const dsc_test tests[] = {
    {"jpeg_kinds", test_jpeg_kinds},
    {"jpeg_exif_orientation", test_jpeg_exif_orientation},
    {"png_kinds", test_png_kinds},
    {"decode_by_content", test_decode_by_content},
    {"bad_inputs", test_bad_inputs},
    {"truncation_sweep", test_truncation_sweep},
    {"mutations", test_mutations},
    {"pixel_cap", test_pixel_cap},
    {"exif_parser", test_exif_parser},
    {"orient_algebra", test_orient_algebra},
    {"resize_u8_vs_pillow", test_resize_u8_vs_pillow},
    {"resize_f32_vs_torch", test_resize_f32_vs_torch},
    {"eval_size", test_eval_size},
    {"eval_landscape", test_eval_landscape},
    {"eval_portrait", test_eval_portrait},
    {"eval_small_upscaled", test_eval_small_upscaled},
    {"eval_already_size", test_eval_already_size},
    {"eval_errors", test_eval_errors},
    {"probe_matches_decode", test_probe_matches_decode},
    {"probe_far_headers", test_probe_far_headers},
    {"probe_errors", test_probe_errors},
    {"scaled_decode", test_scaled_decode},
    {"scaled_errors", test_scaled_errors},
    {"dct_denominator", test_dct_denominator},
};

TEST_MAIN(tests)
