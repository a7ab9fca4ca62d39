/* test_scenes.c: the PNG writer (include/dsc/image_write.h), the seg reader's image extensions, and
 * the scene generator (include/dsc/scenes.h): determinism, mask values, mask/image consistency,
 * the written seg and imagefolder layouts read back through dsc_dataset_open.
 *
 * Most tests use a small synthetic item pool (graded ellipses, so the mask threshold matters),
 * so they run without the Fashion-MNIST package; one test loads the real t10k items when
 * /usr/share/datasets/fashion-mnist is installed (and says so when it is not).
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dsc/dataset.h"
#include "dsc/image.h"
#include "dsc/image_write.h"
#include "dsc/scenes.h"
#include "fixture_files.h"
#include "test.h"

#define FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"

static const char *path_in(const char *root, const char *rel) {
  static char buf[4][1024];
  static int k;
  k = (k + 1) % 4;
  snprintf(buf[k], sizeof buf[k], "%s/%s", root, rel);
  return buf[k];
}

static void mkdir_in(const char *root, const char *rel) { mkdir(path_in(root, rel), 0755); }

static int count_entries(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n;
}

/* Whole-file byte comparison: 1 equal, 0 different or unreadable. */
static int same_file(const char *a, const char *b) {
  FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
  int same = fa && fb;
  while (same) {
    int ca = fgetc(fa), cb = fgetc(fb);
    if (ca != cb) same = 0;
    if (ca == EOF) break;
  }
  if (fa) fclose(fa);
  if (fb) fclose(fb);
  return same;
}

/* 20 graded ellipses of 28x28, class i % 10: grey falls from 255 at the centre to 0 at the rim. */
static void make_pool(dsc_scenes_items *p) {
  p->n = 20;
  p->w = p->h = 28;
  p->pixels = malloc(20 * 28 * 28);
  p->labels = malloc(20);
  for (int i = 0; i < 20; i++) {
    p->labels[i] = (uint8_t)(i % 10);
    double rx = 6 + i % 7, ry = 13 - i % 5;
    for (int y = 0; y < 28; y++)
      for (int x = 0; x < 28; x++) {
        double dx = (x - 13.5) / rx, dy = (y - 13.5) / ry, r = dx * dx + dy * dy;
        double v = r >= 1 ? 0 : 255 * (1 - r) * 1.5;
        p->pixels[(size_t)i * 784 + y * 28 + x] = (uint8_t)(v > 255 ? 255 : v);
      }
  }
}

/* ---- PNG writer ---- */

static void test_voc_palette(void) {
  uint8_t pal[256][3];
  dsc_voc_palette(pal);
  static const struct { int k, r, g, b; } want[] = {
      {0, 0, 0, 0},       {1, 128, 0, 0},    {2, 0, 128, 0},    {3, 128, 128, 0},
      {4, 0, 0, 128},     {7, 128, 128, 128}, {8, 64, 0, 0},    {15, 192, 128, 128},
      {20, 0, 64, 128},   {255, 224, 224, 192}};
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
    const uint8_t *c = pal[want[i].k];
    CHECK(c[0] == want[i].r && c[1] == want[i].g && c[2] == want[i].b, "colour %d is (%d,%d,%d)", want[i].k,
          c[0], c[1], c[2]);
  }
}

static void test_png_roundtrip(void) {
  char *d = fixture_tmpdir("scenes");
  mkdir_in(d, "JPEGImages");
  mkdir_in(d, "SegmentationClass");
  mkdir_in(d, "ImageSets");
  mkdir_in(d, "ImageSets/Segmentation");
  enum { W = 7, H = 5 };
  uint8_t rgb[W * H * 3], idx[W * H];
  for (int i = 0; i < W * H * 3; i++) rgb[i] = (uint8_t)(i * 37 + 11);
  for (int i = 0; i < W * H; i++) idx[i] = i == 3 ? 255 : (uint8_t)(i % 11);
  uint8_t pal[256][3];
  dsc_voc_palette(pal);
  CHECK_OK(dsc_png_write_rgb(path_in(d, "JPEGImages/a.png"), W, H, rgb));
  CHECK_OK(dsc_png_write_rgb(path_in(d, "JPEGImages/b.png"), W, H, rgb));
  CHECK_OK(dsc_png_write_index(path_in(d, "SegmentationClass/a.png"), W, H, idx, (const uint8_t(*)[3])pal));
  CHECK_OK(dsc_png_write_index(path_in(d, "SegmentationClass/b.png"), W, H, idx, NULL));
  CHECK(count_entries(path_in(d, "JPEGImages")) == 2, "no temporary file left behind");
  dsc_image img;
  CHECK_OK(dsc_image_decode_file(path_in(d, "JPEGImages/a.png"), &img));
  CHECK(img.w == W && img.h == H && img.rgb && memcmp(img.rgb, rgb, sizeof rgb) == 0, "RGB round trip");
  dsc_image_free(&img);
  /* the palette PNG decodes to the VOC colours of its indices */
  CHECK_OK(dsc_image_decode_file(path_in(d, "SegmentationClass/a.png"), &img));
  int colours_ok = img.rgb != NULL;
  for (int i = 0; colours_ok && i < W * H; i++) colours_ok = memcmp(img.rgb + 3 * i, pal[idx[i]], 3) == 0;
  CHECK(colours_ok, "palette PNG shows VOC colours");
  dsc_image_free(&img);
  /* the seg reader takes the raw indices of both (palette and grey) */
  fixture_write_bytes(path_in(d, "ImageSets/Segmentation/train.txt"), "a\nb\n", 4);
  dsc_dataset *ds = NULL;
  CHECK_OK(dsc_dataset_open(&(dsc_dataset_config){.path = d, .format = DSC_DATASET_SEG}, &ds));
  for (size_t i = 0; ds && i < 2; i++) {
    uint8_t *map = NULL;
    CHECK_OK(dsc_dataset_load(ds, i, &img, NULL, &map));
    CHECK(map && memcmp(map, idx, sizeof idx) == 0, "label map %zu equals the written indices", i);
    CHECK(img.rgb && memcmp(img.rgb, rgb, sizeof rgb) == 0, "image %zu", i);
    dsc_image_free(&img);
    free(map);
  }
  dsc_dataset_free(ds);
  /* rewriting replaces the file atomically; errors name the file */
  rgb[0] ^= 0xFF;
  CHECK_OK(dsc_png_write_rgb(path_in(d, "JPEGImages/a.png"), W, H, rgb));
  CHECK_OK(dsc_image_decode_file(path_in(d, "JPEGImages/a.png"), &img));
  CHECK(img.rgb && img.rgb[0] == rgb[0], "rewritten");
  dsc_image_free(&img);
  CHECK_ERR(dsc_png_write_rgb(path_in(d, "missing/x.png"), W, H, rgb), "missing/x.png: cannot create");
  CHECK_ERR(dsc_png_write_rgb(path_in(d, "JPEGImages/z.png"), 0, H, rgb), "z.png: cannot write a 0x5 PNG");
  CHECK_ERR(dsc_png_write_index(path_in(d, "JPEGImages/z.png"), W, H, NULL, NULL), "z.png: no pixels");
  CHECK(count_entries(path_in(d, "JPEGImages")) == 2, "failed writes leave nothing");
  fixture_rm_rf(d);
  free(d);
}

static void test_seg_extensions(void) {
  char *d = fixture_tmpdir("scenes");
  mkdir_in(d, "JPEGImages");
  mkdir_in(d, "ImageSets");
  mkdir_in(d, "ImageSets/Segmentation");
  fixture_write_bytes(path_in(d, "JPEGImages/a.jpg"), "x", 1);
  fixture_write_bytes(path_in(d, "JPEGImages/a.png"), "x", 1);
  fixture_write_bytes(path_in(d, "JPEGImages/b.jpeg"), "x", 1);
  fixture_write_bytes(path_in(d, "JPEGImages/b.png"), "x", 1);
  fixture_write_bytes(path_in(d, "JPEGImages/c.png"), "x", 1);
  fixture_write_bytes(path_in(d, "ImageSets/Segmentation/train.txt"), "a\nb\nc\nd\n", 8);
  dsc_dataset *ds = NULL;
  CHECK_OK(dsc_dataset_open(&(dsc_dataset_config){.path = d, .format = DSC_DATASET_SEG}, &ds));
  static const char *want[] = {"JPEGImages/a.jpg", "JPEGImages/b.jpeg", "JPEGImages/c.png", "JPEGImages/d.jpg"};
  for (size_t i = 0; ds && i < 4; i++) {
    const char *name = dsc_dataset_name(ds, i);
    size_t n = strlen(name), m = strlen(want[i]);
    CHECK(n >= m && strcmp(name + n - m, want[i]) == 0, "id %zu resolves to %s, want %s", i, name, want[i]);
  }
  dsc_dataset_free(ds);
  fixture_rm_rf(d);
  free(d);
}

/* ---- generator ---- */

static void test_config_check(void) {
  dsc_scenes_config c;
  dsc_scenes_config_default(&c);
  CHECK_OK(dsc_scenes_config_check(&c));
  c.size = 8;
  CHECK_ERR(dsc_scenes_config_check(&c), "scene size 8");
  dsc_scenes_config_default(&c);
  c.max_items = 9;
  CHECK_ERR(dsc_scenes_config_check(&c), "max items per scene 9");
  dsc_scenes_config_default(&c);
  c.scale_min = 0.9f;
  CHECK_ERR(dsc_scenes_config_check(&c), "item scale range");
  dsc_scenes_config_default(&c);
  c.threshold = 1.0f;
  CHECK_ERR(dsc_scenes_config_check(&c), "mask threshold");
  CHECK(strcmp(dsc_scenes_class_name(0), "background") == 0 && strcmp(dsc_scenes_class_name(10), "ankle boot") == 0 &&
            dsc_scenes_class_name(11) == NULL,
        "class names");
  CHECK(strcmp(dsc_scenes_label_dir(0), "00_t-shirt_top") == 0 && strcmp(dsc_scenes_label_dir(9), "09_ankle_boot") == 0,
        "label folders");
}

static void test_determinism(void) {
  dsc_scenes_items pool;
  make_pool(&pool);
  dsc_scenes_config c;
  dsc_scenes_config_default(&c);
  c.size = 32;
  size_t n = 32 * 32;
  uint8_t *rgb[3], *mask[3];
  for (int k = 0; k < 3; k++) {
    rgb[k] = malloc(n * 3);
    mask[k] = malloc(n);
  }
  int differ_seed = 0, differ_index = 0, differ_split = 0, bad_mask = 0, item_counts[DSC_SCENES_MAX_ITEMS + 1] = {0};
  for (uint32_t i = 0; i < 16; i++) {
    dsc_scene_info info;
    c.seed = 7;
    CHECK_OK(dsc_scenes_generate(&c, &pool, DSC_SCENES_TRAIN, i, rgb[0], mask[0], &info));
    CHECK_OK(dsc_scenes_generate(&c, &pool, DSC_SCENES_TRAIN, i, rgb[1], mask[1], NULL));
    CHECK(memcmp(rgb[0], rgb[1], n * 3) == 0 && memcmp(mask[0], mask[1], n) == 0, "scene %u repeats", i);
    item_counts[info.n_items]++;
    for (size_t p = 0; p < n; p++) bad_mask += mask[0][p] > 10;
    CHECK_OK(dsc_scenes_generate(&c, &pool, DSC_SCENES_VAL, i, rgb[2], mask[2], NULL));
    differ_split += memcmp(rgb[0], rgb[2], n * 3) != 0;
    CHECK_OK(dsc_scenes_generate(&c, &pool, DSC_SCENES_TRAIN, i + 1, rgb[2], mask[2], NULL));
    differ_index += memcmp(rgb[0], rgb[2], n * 3) != 0;
    c.seed = 8;
    CHECK_OK(dsc_scenes_generate(&c, &pool, DSC_SCENES_TRAIN, i, rgb[2], mask[2], NULL));
    differ_seed += memcmp(rgb[0], rgb[2], n * 3) != 0;
  }
  CHECK(bad_mask == 0, "%d mask values above 10", bad_mask);
  CHECK(differ_seed == 16 && differ_index == 16 && differ_split == 16, "another seed/index/split gives another scene "
        "(%d, %d, %d of 16)", differ_seed, differ_index, differ_split);
  CHECK(item_counts[0] == 0 && item_counts[5] == 0 && item_counts[1] + item_counts[2] + item_counts[3] + item_counts[4] == 16,
        "1..4 items per scene");
  c.max_items = 1;
  dsc_scene_info info;
  CHECK_OK(dsc_scenes_generate(&c, &pool, DSC_SCENES_TRAIN, 3, rgb[0], mask[0], &info));
  CHECK(info.n_items == 1, "max_items 1 gives one item");
  dsc_scenes_items empty = {0};
  CHECK_ERR(dsc_scenes_generate(&c, &empty, DSC_SCENES_TRAIN, 0, rgb[0], mask[0], NULL), "empty item pool");
  for (int k = 0; k < 3; k++) {
    free(rgb[k]);
    free(mask[k]);
  }
  dsc_scenes_items_free(&pool);
}

/* Opaque items: the image differs from the scene's own background exactly where the mask says
 * an item is (and nowhere else); the mask's counts and the label follow the items. Normal
 * (anti-aliased) items: the background pixels of the mask keep the background's colours, but
 * for a thin halo. */
static void test_mask_image_consistency(void) {
  dsc_scenes_items pool;
  make_pool(&pool);
  dsc_scenes_config c;
  dsc_scenes_config_default(&c);
  c.size = 48;
  c.seed = 3;
  size_t n = 48 * 48;
  uint8_t *rgb = malloc(n * 3), *bg = malloc(n * 3), *mask = malloc(n);
  long outside_changed = 0, inside = 0, inside_changed = 0, halo = 0, outside = 0;
  double bg_sum_scene = 0, bg_sum_bg = 0;
  for (int opaque = 1; opaque >= 0; opaque--) {
    c.opaque = opaque;
    for (uint32_t i = 0; i < 12; i++) {
      dsc_scene_info info;
      CHECK_OK(dsc_scenes_generate(&c, &pool, DSC_SCENES_VAL, i, rgb, mask, &info));
      CHECK_OK(dsc_scenes_render_background(&c, DSC_SCENES_VAL, i, bg));
      long in_mask = 0, by_item = 0;
      int best = -1, best_px = 0;
      for (int k = 0; k < info.n_items; k++) {
        by_item += info.items[k].pixels;
        if (info.items[k].pixels > 0 && info.items[k].pixels >= best_px) {
          best_px = info.items[k].pixels;
          best = info.items[k].cls;
        }
      }
      for (size_t p = 0; p < n; p++) {
        int changed = memcmp(rgb + 3 * p, bg + 3 * p, 3) != 0;
        in_mask += mask[p] > 0;
        if (opaque) {
          if (mask[p]) inside++, inside_changed += changed;
          else outside_changed += changed;
        } else if (!mask[p]) {
          outside++;
          halo += changed;
          for (int ch = 0; ch < 3; ch++) bg_sum_scene += rgb[3 * p + ch], bg_sum_bg += bg[3 * p + ch];
        }
      }
      CHECK(in_mask == by_item, "scene %u: %ld mask pixels, items count %ld", i, in_mask, by_item);
      CHECK(info.label == best, "scene %u: label %d, largest item's class %d", i, info.label, best);
    }
  }
  CHECK(outside_changed == 0, "opaque: %ld pixels outside the mask differ from the background", outside_changed);
  CHECK(inside > 0 && inside_changed >= inside * 95 / 100, "opaque: only %ld of %ld mask pixels differ from the background",
        inside_changed, inside);
  CHECK(halo <= outside / 10, "anti-aliased: %ld of %ld background pixels touched", halo, outside);
  CHECK(outside > 0 && fabs(bg_sum_scene - bg_sum_bg) / (3.0 * (double)outside) < 2.0,
        "anti-aliased: background pixels' mean moved by %.2f", (bg_sum_scene - bg_sum_bg) / (3.0 * (double)outside));
  free(rgb);
  free(bg);
  free(mask);
  dsc_scenes_items_free(&pool);
}

static void test_fashion_mnist(void) {
  struct stat sb;
  if (stat(FASHION_MNIST_DIR "/t10k-images-idx3-ubyte.gz", &sb) != 0) {
    printf("  (fashion-mnist not installed in %s: skipped)\n", FASHION_MNIST_DIR);
    return;
  }
  dsc_scenes_items pool;
  CHECK_OK(dsc_scenes_items_load(FASHION_MNIST_DIR, DSC_SCENES_VAL, &pool));
  CHECK(pool.n == 10000 && pool.w == 28 && pool.h == 28, "t10k: %d items of %dx%d", pool.n, pool.w, pool.h);
  int counts[10] = {0};
  for (int i = 0; i < pool.n; i++) counts[pool.labels[i] % 10]++;
  CHECK(counts[0] == 1000 && counts[9] == 1000, "1000 items per class");
  dsc_scenes_config c;
  dsc_scenes_config_default(&c);
  size_t n = (size_t)c.size * c.size;
  uint8_t *rgb = malloc(n * 3), *rgb2 = malloc(n * 3), *mask = malloc(n), *mask2 = malloc(n);
  long item_px = 0;
  int bad = 0;
  for (uint32_t i = 0; i < 8 && pool.n; i++) {
    CHECK_OK(dsc_scenes_generate(&c, &pool, DSC_SCENES_VAL, i, rgb, mask, NULL));
    CHECK_OK(dsc_scenes_generate(&c, &pool, DSC_SCENES_VAL, i, rgb2, mask2, NULL));
    CHECK(memcmp(rgb, rgb2, n * 3) == 0 && memcmp(mask, mask2, n) == 0, "scene %u repeats", i);
    for (size_t p = 0; p < n; p++) {
      bad += mask[p] > 10;
      item_px += mask[p] > 0;
    }
  }
  CHECK(bad == 0 && item_px > (long)(8 * n / 20), "mask values in 0..10 (%d bad), item pixels %ld of %zu", bad, item_px,
        8 * n);
  free(rgb);
  free(rgb2);
  free(mask);
  free(mask2);
  dsc_scenes_items_free(&pool);
  dsc_scenes_items missing;
  CHECK_ERR(dsc_scenes_items_load("/nonexistent-dsc-dir", DSC_SCENES_TRAIN, &missing), "nonexistent-dsc-dir");
}

/* The written folder: seg for both splits (counts, images and label maps equal to the generated
 * ones), labels/ as imagefolder (each scene under its largest item's class), the same bytes
 * for 1 and 2 threads, and the non-empty / --force rules. */
static void test_write_layout(void) {
  dsc_scenes_items pool_train, pool_val;
  make_pool(&pool_train);
  make_pool(&pool_val);
  for (int i = 0; i < pool_val.n * 784; i++) pool_val.pixels[i] = (uint8_t)(pool_val.pixels[i] * 3 / 4);
  char *root = fixture_tmpdir("scenes");
  char out1[1100], out2[1100];
  snprintf(out1, sizeof out1, "%s/a/b", root); /* parents are created */
  snprintf(out2, sizeof out2, "%s/c", root);
  dsc_scenes_write_config w = {.out = out1, .n_train = 12, .n_val = 5, .labels = 1, .threads = 2};
  dsc_scenes_config_default(&w.scene);
  w.scene.size = 32;
  w.scene.seed = 11;
  dsc_scenes_write_stats stats;
  CHECK_OK(dsc_scenes_write(&w, &pool_train, &pool_val, &stats));
  size_t n = 32 * 32;
  uint8_t *rgb = malloc(n * 3), *mask = malloc(n);
  const int counts[2] = {12, 5};
  for (int s = 0; s < 2; s++) {
    const dsc_scenes_items *pool = s ? &pool_val : &pool_train;
    dsc_dataset *ds = NULL;
    CHECK_OK(dsc_dataset_open(&(dsc_dataset_config){.path = out1, .format = DSC_DATASET_SEG, .split = s ? "val" : "train"}, &ds));
    if (!ds) continue;
    CHECK(dsc_dataset_size(ds) == (size_t)counts[s], "split %d: %zu scenes", s, dsc_dataset_size(ds));
    int labelled = 0;
    for (size_t i = 0; i < dsc_dataset_size(ds); i++) {
      dsc_scene_info info;
      CHECK_OK(dsc_scenes_generate(&w.scene, pool, (dsc_scenes_split)s, (uint32_t)i, rgb, mask, &info));
      labelled += info.label >= 0;
      char id[32], want[64];
      dsc_scenes_id((dsc_scenes_split)s, (uint32_t)i, id, sizeof id);
      snprintf(want, sizeof want, "JPEGImages/%s.png", id);
      const char *name = dsc_dataset_name(ds, i);
      CHECK(strlen(name) > strlen(want) && strcmp(name + strlen(name) - strlen(want), want) == 0, "%s", name);
      dsc_image img;
      uint8_t *map = NULL;
      CHECK_OK(dsc_dataset_load(ds, i, &img, NULL, &map));
      CHECK(img.w == 32 && img.h == 32 && img.rgb && memcmp(img.rgb, rgb, n * 3) == 0, "%s: image as generated", id);
      CHECK(map && memcmp(map, mask, n) == 0, "%s: label map as generated", id);
      dsc_image_free(&img);
      free(map);
    }
    CHECK(labelled == stats.labelled[s], "split %d: %d labelled, stats say %d", s, labelled, stats.labelled[s]);
    dsc_dataset_free(ds);
    /* labels/<split> as imagefolder */
    char lab[1200];
    snprintf(lab, sizeof lab, "%s/labels/%s", out1, s ? "val" : "train");
    CHECK_OK(dsc_dataset_open(&(dsc_dataset_config){.path = lab, .format = DSC_DATASET_IMAGEFOLDER}, &ds));
    if (!ds) continue;
    CHECK(dsc_dataset_num_classes(ds) == 10 && dsc_dataset_size(ds) == (size_t)labelled, "labels/%d: %d classes, %zu images",
          s, dsc_dataset_num_classes(ds), dsc_dataset_size(ds));
    for (size_t j = 0; j < dsc_dataset_size(ds); j++) {
      const char *name = strrchr(dsc_dataset_name(ds, j), '/') + 1;
      unsigned idx = 0;
      CHECK(sscanf(name, s ? "val_%u.png" : "train_%u.png", &idx) == 1, "%s", name);
      dsc_scene_info info;
      CHECK_OK(dsc_scenes_generate(&w.scene, pool, (dsc_scenes_split)s, idx, rgb, mask, &info));
      dsc_image img;
      int label = -2;
      CHECK_OK(dsc_dataset_load(ds, j, &img, &label, NULL));
      CHECK(label == info.label, "%s: class %d, largest item's %d", name, label, info.label);
      CHECK(img.rgb && memcmp(img.rgb, rgb, n * 3) == 0, "%s: the scene image", name);
      dsc_image_free(&img);
    }
    CHECK(strcmp(dsc_dataset_class_name(ds, 9), "09_ankle_boot") == 0, "class folder names");
    dsc_dataset_free(ds);
  }
  /* one thread: the same bytes */
  w.out = out2;
  w.threads = 1;
  CHECK_OK(dsc_scenes_write(&w, &pool_train, &pool_val, NULL));
  int same = 1;
  for (int s = 0; s < 2; s++)
    for (int i = 0; i < counts[s]; i++) {
      char id[32], rel[96], a[1300], b[1300];
      dsc_scenes_id((dsc_scenes_split)s, (uint32_t)i, id, sizeof id);
      for (int f = 0; f < 2; f++) {
        snprintf(rel, sizeof rel, "%s/%s.png", f ? "SegmentationClass" : "JPEGImages", id);
        snprintf(a, sizeof a, "%s/%s", out1, rel);
        snprintf(b, sizeof b, "%s/%s", out2, rel);
        same &= same_file(a, b);
      }
    }
  char a[1300], b[1300];
  snprintf(a, sizeof a, "%s/ImageSets/Segmentation/train.txt", out1);
  snprintf(b, sizeof b, "%s/ImageSets/Segmentation/train.txt", out2);
  CHECK(same && same_file(a, b), "1 and 2 threads write the same bytes");
  snprintf(a, sizeof a, "%s/classes.txt", out1);
  size_t len = 0;
  FILE *f = fopen(a, "rb");
  char text[256] = {0};
  if (f) {
    len = fread(text, 1, sizeof text - 1, f);
    fclose(f);
  }
  CHECK(len > 0 && strncmp(text, "background\nt-shirt/top\ntrouser\n", 31) == 0 && strstr(text, "\nankle boot\n"),
        "classes.txt: %s", text);
  /* non-empty without force: refused; with force: an earlier run's extra scenes are removed */
  CHECK_ERR(dsc_scenes_write(&w, &pool_train, &pool_val, NULL), "not empty");
  w.force = 1;
  w.n_train = 3;
  w.labels = 0;
  CHECK_OK(dsc_scenes_write(&w, &pool_train, &pool_val, NULL));
  snprintf(a, sizeof a, "%s/JPEGImages", out2);
  CHECK(count_entries(a) == 3 + 5, "force: %d images left (8 expected)", count_entries(a));
  snprintf(a, sizeof a, "%s/labels/train/00_t-shirt_top", out2);
  CHECK(count_entries(a) <= 0, "force without labels: old label entries removed");
  dsc_dataset *ds = NULL;
  CHECK_OK(dsc_dataset_open(&(dsc_dataset_config){.path = out2, .format = DSC_DATASET_SEG}, &ds));
  CHECK(ds && dsc_dataset_size(ds) == 3, "train list rewritten");
  dsc_dataset_free(ds);
  /* bad requests */
  w.n_train = w.n_val = 0;
  CHECK_ERR(dsc_scenes_write(&w, &pool_train, &pool_val, NULL), "no scenes asked for");
  w.n_train = 2;
  w.scene.size = 4;
  CHECK_ERR(dsc_scenes_write(&w, &pool_train, &pool_val, NULL), "scene size 4");
  w.scene.size = 32;
  snprintf(a, sizeof a, "%s/classes.txt", out1);
  w.out = a;
  CHECK_ERR(dsc_scenes_write(&w, &pool_train, &pool_val, NULL), "classes.txt: exists and is not a directory");
  w.out = out2;
  CHECK_ERR(dsc_scenes_write(&w, NULL, &pool_val, NULL), "no train items");
  free(rgb);
  free(mask);
  fixture_rm_rf(root);
  free(root);
  dsc_scenes_items_free(&pool_train);
  dsc_scenes_items_free(&pool_val);
}

static const dsc_test tests[] = {
    {"voc_palette", test_voc_palette},
    {"png_roundtrip", test_png_roundtrip},
    {"seg_extensions", test_seg_extensions},
    {"config_check", test_config_check},
    {"determinism", test_determinism},
    {"mask_image_consistency", test_mask_image_consistency},
    {"fashion_mnist", test_fashion_mnist},
    {"write_layout", test_write_layout},
};

TEST_MAIN(tests)
