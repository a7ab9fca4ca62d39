/* test_dataset.c: dataset indexing of every source (folder, imagefolder, idx, seg) on fixture
 * folders made in mkdtemp, and every kind of bad file (decoding fails with a reason naming it).
 *
 * Fixture images: PNGs from the small uncompressed-filter writer below (zlib compress2), JPEGs
 * from TurboJPEG's encoder. Unreadable files are simulated with a dangling symlink and a
 * self-referencing symlink (tests may run as root, for whom chmod 000 changes nothing).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <turbojpeg.h>
#include <unistd.h>
#include <zlib.h>

#include "dsc/dataset.h"
#include "fixture_files.h"
#include "test.h"

/* ---- fixture writers ---- */

/* An RGB PNG of w x h whose pixels encode (seed, x, y). */
static void write_rgb_png(const char *path, int w, int h, int seed) {
  uint8_t *px = malloc((size_t)w * h * 3);
  for (int i = 0; i < w * h; i++) {
    px[3 * i] = (uint8_t)(seed * 37 + i);
    px[3 * i + 1] = (uint8_t)(seed * 11 + 3 * i);
    px[3 * i + 2] = (uint8_t)(seed + 7 * i);
  }
  fixture_write_png(path, w, h, 2, px, NULL, 0, 0, 0);
  free(px);
}

static void write_jpeg(const char *path, int w, int h, int seed) {
  uint8_t *px = malloc((size_t)w * h * 3);
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++) {
      uint8_t *p = px + 3 * ((size_t)y * w + x);
      p[0] = (uint8_t)(seed * 40 + 4 * x);
      p[1] = (uint8_t)(4 * y);
      p[2] = (uint8_t)(128 + seed);
    }
  tjhandle tj = tjInitCompress();
  unsigned char *jpg = NULL;
  unsigned long n = 0;
  tjCompress2(tj, px, w, 0, h, TJPF_RGB, &jpg, &n, TJSAMP_420, 90, 0);
  FILE *f = fopen(path, "wb");
  fwrite(jpg, 1, n, f);
  fclose(f);
  tjFree(jpg);
  tjDestroy(tj);
  free(px);
}

static char *read_all(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  fseek(f, 0, SEEK_END);
  *n = (size_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  char *b = malloc(*n ? *n : 1);
  if (fread(b, 1, *n, f) != *n) *n = 0;
  fclose(f);
  return b;
}

/* ---- tests ---- */

static void test_folder_index(void) {
  char *d = fixture_tmpdir("dataset");
  fixture_mkdirs(d, "b/c");
  fixture_mkdirs(d, "a");
  write_rgb_png(fixture_path(d, "a/x.png"), 5, 4, 1);
  write_jpeg(fixture_path(d, "b/c/y.JPG"), 16, 8, 2);
  write_jpeg(fixture_path(d, "b/a.jpeg"), 8, 8, 3);
  fixture_write_bytes(fixture_path(d, "notes.txt"), "hi", 2);
  fixture_write_bytes(fixture_path(d, "b/README"), "x", 1);
  dsc_dataset *ds = NULL;
  CHECK_OK(dsc_dataset_open(&(dsc_dataset_config){.path = d, .format = DSC_DATASET_FOLDER}, &ds));
  if (!ds) goto out;
  CHECK(dsc_dataset_size(ds) == 3, "%zu images", dsc_dataset_size(ds));
  CHECK(dsc_dataset_skipped_count(ds) == 2, "%zu skipped", dsc_dataset_skipped_count(ds));
  CHECK(dsc_dataset_num_classes(ds) == 0 && !dsc_dataset_has_label_maps(ds), "no labels");
  const char *want[] = {"a/x.png", "b/a.jpeg", "b/c/y.JPG"};
  for (int i = 0; i < 3; i++)
    CHECK(strcmp(dsc_dataset_name(ds, (size_t)i), fixture_path(d, want[i])) == 0, "%d: %s", i, dsc_dataset_name(ds, (size_t)i));
  dsc_image img;
  int label = 7;
  CHECK_OK(dsc_dataset_load(ds, 0, &img, &label, NULL));
  CHECK(img.w == 5 && img.h == 4 && img.rgb[0] == 37 && label == -1, "%dx%d %d label %d", img.w, img.h,
        img.rgb ? img.rgb[0] : -1, label);
  dsc_image_free(&img);
  CHECK_OK(dsc_dataset_load(ds, 2, &img, NULL, NULL));
  CHECK(img.w == 16 && img.h == 8, "jpeg %dx%d", img.w, img.h);
  dsc_image_free(&img);
  CHECK_ERR(dsc_dataset_load(ds, 3, &img, NULL, NULL), "out of range");
  int pw, ph, jpeg;
  CHECK_OK(dsc_dataset_probe(ds, 2, &pw, &ph, &jpeg));
  CHECK(pw == 16 && ph == 8 && jpeg == 1, "probe jpeg %dx%d %d", pw, ph, jpeg);
  CHECK_OK(dsc_dataset_probe(ds, 0, &pw, &ph, &jpeg));
  CHECK(pw == 5 && ph == 4 && jpeg == 0, "probe png %dx%d %d", pw, ph, jpeg);
  CHECK_OK(dsc_dataset_load_scaled(ds, 2, 2, &img, NULL, NULL));
  CHECK(img.w == 8 && img.h == 4, "jpeg at 1/2: %dx%d", img.w, img.h);
  dsc_image_free(&img);
out:
  dsc_dataset_free(ds);
  fixture_rm_rf(d);
  free(d);
}

static void test_folder_symlink_loop_and_empty(void) {
  char *d = fixture_tmpdir("dataset");
  fixture_mkdirs(d, "sub/deeper");
  write_rgb_png(fixture_path(d, "sub/deeper/p.png"), 3, 3, 1);
  CHECK(symlink("..", fixture_path(d, "sub/deeper/up")) == 0, "symlink");
  CHECK(symlink(d, fixture_path(d, "sub/root")) == 0, "symlink");
  dsc_dataset *ds = NULL;
  CHECK_OK(dsc_dataset_open(&(dsc_dataset_config){.path = d, .format = DSC_DATASET_FOLDER}, &ds));
  if (ds) {
    CHECK(dsc_dataset_size(ds) == 1, "%zu images", dsc_dataset_size(ds));
    CHECK(dsc_dataset_problem_count(ds) == 2, "%zu problems", dsc_dataset_problem_count(ds));
    const char *path, *reason;
    dsc_dataset_problem(ds, 0, &path, &reason);
    CHECK(path && strstr(reason, "symlink loop"), "%s: %s", path, reason);
  }
  dsc_dataset_free(ds);
  ds = NULL;
  /* empty directory and a directory holding only non-images */
  fixture_mkdirs(d, "empty");
  CHECK_ERR(dsc_dataset_open(&(dsc_dataset_config){.path = fixture_path(d, "empty"), .format = DSC_DATASET_FOLDER}, &ds),
            "/empty: empty dataset");
  CHECK(ds == NULL, "no dataset");
  fixture_write_bytes(fixture_path(d, "empty/a.txt"), "a", 1);
  CHECK_ERR(dsc_dataset_open(&(dsc_dataset_config){.path = fixture_path(d, "empty"), .format = DSC_DATASET_FOLDER}, &ds),
            "1 other files skipped");
  CHECK_ERR(dsc_dataset_open(&(dsc_dataset_config){.path = fixture_path(d, "missing"), .format = DSC_DATASET_FOLDER}, &ds),
            "/missing: cannot open dataset directory");
  CHECK_ERR(dsc_dataset_open(&(dsc_dataset_config){.path = fixture_path(d, "empty/a.txt"), .format = DSC_DATASET_FOLDER}, &ds),
            "not a directory");
  fixture_rm_rf(d);
  free(d);
}

static void test_imagefolder(void) {
  char *d = fixture_tmpdir("dataset");
  fixture_mkdirs(d, "dog/sub");
  fixture_mkdirs(d, "cat");
  fixture_mkdirs(d, "zebra");
  write_rgb_png(fixture_path(d, "dog/1.png"), 2, 2, 1);
  write_rgb_png(fixture_path(d, "dog/sub/2.png"), 2, 2, 2);
  write_rgb_png(fixture_path(d, "cat/3.png"), 2, 2, 3);
  write_rgb_png(fixture_path(d, "stray.png"), 2, 2, 4);
  dsc_dataset *ds = NULL;
  CHECK_OK(dsc_dataset_open(&(dsc_dataset_config){.path = d, .format = DSC_DATASET_IMAGEFOLDER}, &ds));
  if (ds) {
    CHECK(dsc_dataset_size(ds) == 3, "%zu", dsc_dataset_size(ds));
    CHECK(dsc_dataset_num_classes(ds) == 3, "%d classes", dsc_dataset_num_classes(ds));
    CHECK(strcmp(dsc_dataset_class_name(ds, 0), "cat") == 0 && strcmp(dsc_dataset_class_name(ds, 1), "dog") == 0 &&
              strcmp(dsc_dataset_class_name(ds, 2), "zebra") == 0, "class names");
    CHECK(dsc_dataset_skipped_count(ds) == 1, "stray file skipped");
    int want[] = {0, 1, 1};
    for (size_t i = 0; i < 3; i++) {
      dsc_image img;
      int label;
      CHECK_OK(dsc_dataset_load(ds, i, &img, &label, NULL));
      CHECK(label == want[i], "image %zu label %d", i, label);
      dsc_image_free(&img);
    }
  }
  dsc_dataset_free(ds);
  fixture_rm_rf(d);
  free(d);
}

static void write_idx(const char *dir, const char *pre, int gz, int count, int rows, int cols, int bad_labels) {
  char p[1024];
  size_t ni = 16 + (size_t)count * rows * cols, nl = 8 + (size_t)count;
  uint8_t *img = malloc(ni), *lab = malloc(nl);
  fixture_put32(img, 0x803);
  fixture_put32(img + 4, (uint32_t)count);
  fixture_put32(img + 8, (uint32_t)rows);
  fixture_put32(img + 12, (uint32_t)cols);
  for (size_t i = 16; i < ni; i++) img[i] = (uint8_t)(i * 7);
  fixture_put32(lab, 0x801);
  fixture_put32(lab + 4, (uint32_t)(count + bad_labels));
  for (int i = 0; i < count; i++) lab[8 + i] = (uint8_t)(i % 10);
  const char *kinds[] = {"images-idx3", "labels-idx1"};
  for (int k = 0; k < 2; k++) {
    snprintf(p, sizeof p, "%s/%s-%s-ubyte%s", dir, pre, kinds[k], gz ? ".gz" : "");
    if (gz) {
      gzFile g = gzopen(p, "wb");
      gzwrite(g, k ? lab : img, (unsigned)(k ? nl : ni));
      gzclose(g);
    } else {
      fixture_write_bytes(p, k ? lab : img, k ? nl : ni);
    }
  }
  free(img);
  free(lab);
}

static void test_idx(void) {
  char *d = fixture_tmpdir("dataset");
  write_idx(d, "train", 1, 12, 4, 5, 0);
  write_idx(d, "t10k", 0, 3, 4, 5, 0);
  dsc_dataset *ds = NULL;
  CHECK_OK(dsc_dataset_open(&(dsc_dataset_config){.path = d, .format = DSC_DATASET_IDX}, &ds));
  if (ds) {
    CHECK(dsc_dataset_size(ds) == 12 && dsc_dataset_num_classes(ds) == 10, "%zu images, %d classes",
          dsc_dataset_size(ds), dsc_dataset_num_classes(ds));
    dsc_image img;
    int label;
    CHECK_OK(dsc_dataset_load(ds, 11, &img, &label, NULL));
    size_t off = 16 + 11 * 20 + 7; /* pixel (row 1, col 2) */
    CHECK(img.w == 5 && img.h == 4 && label == 1, "%dx%d label %d", img.w, img.h, label);
    if (img.rgb)
      CHECK(img.rgb[3 * 7] == (uint8_t)(off * 7) && img.rgb[3 * 7 + 1] == img.rgb[3 * 7] &&
                img.rgb[3 * 7 + 2] == img.rgb[3 * 7], "grey to RGB");
    dsc_image_free(&img);
    CHECK(strstr(dsc_dataset_name(ds, 11), "train-images-idx3-ubyte.gz#11") != NULL, "%s", dsc_dataset_name(ds, 11));
  }
  dsc_dataset_free(ds);
  ds = NULL;
  CHECK_OK(dsc_dataset_open(&(dsc_dataset_config){.path = d, .format = DSC_DATASET_IDX, .split = "test"}, &ds));
  if (ds) CHECK(dsc_dataset_size(ds) == 3, "raw t10k: %zu", dsc_dataset_size(ds));
  dsc_dataset_free(ds);
  ds = NULL;
  write_idx(d, "t10k", 0, 3, 4, 5, 1);
  CHECK_ERR(dsc_dataset_open(&(dsc_dataset_config){.path = d, .format = DSC_DATASET_IDX, .split = "t10k"}, &ds),
            "4 labels for 3 images");
  char p[1024];
  snprintf(p, sizeof p, "%s/t10k-images-idx3-ubyte", d);
  fixture_write_bytes(p, "garbage", 7);
  CHECK_ERR(dsc_dataset_open(&(dsc_dataset_config){.path = d, .format = DSC_DATASET_IDX, .split = "t10k"}, &ds),
            "not an IDX image file");
  CHECK_ERR(dsc_dataset_open(&(dsc_dataset_config){.path = d, .format = DSC_DATASET_IDX, .split = "x"}, &ds),
            "idx split");
  fixture_rm_rf(d);
  free(d);
  /* The Debian dataset-fashion-mnist package, when installed. */
  const char *fm = "/usr/share/datasets/fashion-mnist";
  if (access("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz", R_OK) == 0) {
    CHECK_OK(dsc_dataset_open(&(dsc_dataset_config){.path = fm, .format = DSC_DATASET_IDX, .split = "t10k"}, &ds));
    if (ds) {
      CHECK(dsc_dataset_size(ds) == 10000 && dsc_dataset_num_classes(ds) == 10, "fashion-mnist t10k: %zu",
            dsc_dataset_size(ds));
      dsc_image img;
      CHECK_OK(dsc_dataset_load(ds, 9999, &img, NULL, NULL));
      CHECK(img.w == 28 && img.h == 28, "%dx%d", img.w, img.h);
      dsc_image_free(&img);
    }
    dsc_dataset_free(ds);
  } else {
    printf("  (fashion-mnist not installed in %s: skipped that part)\n", fm);
  }
}

static void test_seg(void) {
  char *d = fixture_tmpdir("dataset");
  fixture_mkdirs(d, "JPEGImages");
  fixture_mkdirs(d, "SegmentationClass");
  fixture_mkdirs(d, "ImageSets/Segmentation");
  write_jpeg(fixture_path(d, "JPEGImages/a.jpg"), 6, 4, 1);
  write_jpeg(fixture_path(d, "JPEGImages/b.jpg"), 6, 4, 2);
  write_jpeg(fixture_path(d, "JPEGImages/c.jpg"), 6, 4, 3);
  uint8_t idx[24], pal[256 * 3];
  for (int i = 0; i < 24; i++) idx[i] = i == 5 ? 255 : (uint8_t)(i % 21);
  for (int i = 0; i < 256 * 3; i++) pal[i] = (uint8_t)(200 - i / 3); /* colours unlike indices */
  fixture_write_png(fixture_path(d, "SegmentationClass/a.png"), 6, 4, 3, idx, pal, 256, 0, 0);
  fixture_write_png(fixture_path(d, "SegmentationClass/b.png"), 6, 4, 0, idx, NULL, 0, 0, 0);
  fixture_write_png(fixture_path(d, "SegmentationClass/c.png"), 5, 4, 0, idx, NULL, 0, 0, 0);
  fixture_write_bytes(fixture_path(d, "ImageSets/Segmentation/train.txt"), "a\n b \n\nc\n", 9);
  fixture_write_bytes(fixture_path(d, "ImageSets/Segmentation/val.txt"), "b\n", 2);
  dsc_dataset *ds = NULL;
  CHECK_OK(dsc_dataset_open(&(dsc_dataset_config){.path = d, .format = DSC_DATASET_SEG}, &ds));
  if (ds) {
    CHECK(dsc_dataset_size(ds) == 3 && dsc_dataset_has_label_maps(ds), "%zu", dsc_dataset_size(ds));
    for (size_t i = 0; i < 2; i++) {
      dsc_image img;
      uint8_t *map = NULL;
      CHECK_OK(dsc_dataset_load(ds, i, &img, NULL, &map));
      CHECK(map && memcmp(map, idx, 24) == 0, "image %zu: label map holds the raw indices", i);
      dsc_image_free(&img);
      free(map);
    }
    dsc_image img;
    uint8_t *map = (uint8_t *)1;
    CHECK_ERR(dsc_dataset_load(ds, 2, &img, NULL, &map), "c.png: label map is 5x4 but its image is 6x4");
    CHECK(map == NULL && img.rgb == NULL, "nothing left allocated");
  }
  dsc_dataset_free(ds);
  ds = NULL;
  CHECK_OK(dsc_dataset_open(&(dsc_dataset_config){.path = d, .format = DSC_DATASET_SEG, .split = "val"}, &ds));
  if (ds) CHECK(dsc_dataset_size(ds) == 1 && strstr(dsc_dataset_name(ds, 0), "JPEGImages/b.jpg"), "val split");
  dsc_dataset_free(ds);
  /* an RGB label map is refused; a missing split list is an error naming it */
  write_rgb_png(fixture_path(d, "SegmentationClass/a.png"), 6, 4, 1);
  CHECK_OK(dsc_dataset_open(&(dsc_dataset_config){.path = d, .format = DSC_DATASET_SEG}, &ds));
  if (ds) {
    dsc_image img;
    uint8_t *map;
    CHECK_ERR(dsc_dataset_load(ds, 0, &img, NULL, &map), "palette or grey PNG of class indices");
  }
  dsc_dataset_free(ds);
  CHECK_ERR(dsc_dataset_open(&(dsc_dataset_config){.path = d, .format = DSC_DATASET_SEG, .split = "trainval"}, &ds),
            "ImageSets/Segmentation/trainval.txt: cannot open");
  fixture_rm_rf(d);
  free(d);
}

static void test_bad_files(void) {
  char *d = fixture_tmpdir("dataset");
  write_jpeg(fixture_path(d, "good.jpg"), 32, 24, 1);
  size_t n;
  char *jpg = read_all(fixture_path(d, "good.jpg"), &n);
  fixture_write_bytes(fixture_path(d, "truncated.jpg"), jpg, n / 2);
  free(jpg);
  write_rgb_png(fixture_path(d, "good.png"), 8, 8, 1);
  char *png = read_all(fixture_path(d, "good.png"), &n);
  for (size_t i = 45; i < n - 12; i++) png[i] ^= 0x5a; /* inside IDAT */
  fixture_write_bytes(fixture_path(d, "corrupt.png"), png, n);
  free(png);
  fixture_write_bytes(fixture_path(d, "zero.jpg"), "", 0);
  fixture_write_bytes(fixture_path(d, "text.jpg"), "hello, I am not a JPEG\n", 23);
  write_rgb_png(fixture_path(d, "one.png"), 1, 1, 9);
  uint8_t px[12] = {0};
  fixture_write_png(fixture_path(d, "huge.png"), 2, 2, 2, px, NULL, 0, 100000, 100000);
  CHECK(symlink(fixture_path(d, "nowhere.jpg"), fixture_path(d, "dangling.jpg")) == 0, "symlink");
  CHECK(symlink(fixture_path(d, "self.jpg"), fixture_path(d, "self.jpg")) == 0, "symlink");
  fixture_mkdirs(d, "dir.jpg");
  dsc_dataset *ds = NULL;
  CHECK_OK(dsc_dataset_open(&(dsc_dataset_config){.path = d, .format = DSC_DATASET_FOLDER, .max_pixels = 1 << 20}, &ds));
  if (!ds) goto out;
  /* sorted: corrupt dangling good.jpg good.png huge one self text truncated zero (dir.jpg walked) */
  CHECK(dsc_dataset_size(ds) == 10, "%zu", dsc_dataset_size(ds));
  const struct {
    const char *name, *reason; /* reason NULL: usable */
  } want[] = {
      {"corrupt.png", "corrupt.png"},      {"dangling.jpg", "cannot open"},
      {"good.jpg", NULL},                  {"good.png", NULL},
      {"huge.png", "above the limit of 1048576"}, {"one.png", NULL},
      {"self.jpg", "cannot open"},         {"text.jpg", "not a JPEG or PNG"},
      {"truncated.jpg", "truncated.jpg"},  {"zero.jpg", "empty file"},
  };
  for (size_t i = 0; i < 10 && i < dsc_dataset_size(ds); i++) {
    const char *name = dsc_dataset_name(ds, i);
    CHECK(strstr(name, want[i].name) != NULL, "%zu: %s, expected %s", i, name, want[i].name);
    dsc_image img;
    if (want[i].reason) {
      CHECK_ERR(dsc_dataset_load(ds, i, &img, NULL, NULL), want[i].reason);
      CHECK(img.rgb == NULL, "%s: nothing allocated", name);
    } else {
      CHECK_OK(dsc_dataset_load(ds, i, &img, NULL, NULL));
      dsc_image_free(&img);
    }
  }
out:
  dsc_dataset_free(ds);
  fixture_rm_rf(d);
  free(d);
}

static void test_format_names(void) {
  dsc_dataset_format f;
  CHECK_OK(dsc_dataset_format_parse("seg", &f));
  CHECK(f == DSC_DATASET_SEG && strcmp(dsc_dataset_format_name(f), "seg") == 0, "seg");
  CHECK_ERR(dsc_dataset_format_parse("coco", &f), "unknown data.format \"coco\"");
  dsc_dataset *ds;
  CHECK_ERR(dsc_dataset_open(&(dsc_dataset_config){.path = "", .format = DSC_DATASET_FOLDER}, &ds), "data.path");
}

static const dsc_test tests[] = {
    {"folder_index", test_folder_index},
    {"folder_symlink_loop_and_empty", test_folder_symlink_loop_and_empty},
    {"imagefolder", test_imagefolder},
    {"idx", test_idx},
    {"seg", test_seg},
    {"bad_files", test_bad_files},
    {"format_names", test_format_names},
};
TEST_MAIN(tests)
