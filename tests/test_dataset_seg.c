/* test_dataset_seg.c: the label-map datasets beyond plain VOC (include/dsc/dataset.h): VOC with
 * and without SegmentationClassAug/ and the "trainaug" split, and the cityscapes layout (two
 * cities, label ids mapped to the 19 train ids, a missing label file named in the error).
 *
 * Fixtures are written by the test into a folder under /tmp (PNGs with include/dsc/image_write.h)
 * and removed at the end.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dsc/dataset.h"
#include "dsc/image_write.h"
#include "fixture_files.h"
#include "test.h"

/* An RGB PNG of w x h whose pixels depend on seed. */
static void write_rgb(const char *path, int w, int h, int seed) {
  uint8_t *px = malloc((size_t)w * h * 3);
  for (int i = 0; i < w * h * 3; i++) px[i] = (uint8_t)(seed * 31 + 7 * i);
  CHECK_OK(dsc_png_write_rgb(path, w, h, px));
  free(px);
}

/* A label PNG of w x h filled with `v` (grey, or VOC palette when pal). */
static void write_label(const char *path, int w, int h, uint8_t v, int pal) {
  uint8_t *m = malloc((size_t)w * h);
  memset(m, v, (size_t)w * h);
  uint8_t palette[256][3];
  dsc_voc_palette(palette);
  CHECK_OK(dsc_png_write_index(path, w, h, m, pal ? (const uint8_t(*)[3])palette : NULL));
  free(m);
}

static uint8_t first_label(const dsc_dataset *ds, size_t i) {
  dsc_image img;
  uint8_t *map = NULL;
  uint8_t v = 77;
  CHECK_OK(dsc_dataset_load(ds, i, &img, NULL, &map));
  if (map) v = map[0];
  dsc_image_free(&img);
  free(map);
  return v;
}

static void test_voc_aug(void) {
  char *d = fixture_tmpdir("dataset_seg");
  fixture_mkdirs(d, "JPEGImages");
  fixture_mkdirs(d, "SegmentationClass");
  fixture_mkdirs(d, "ImageSets/Segmentation");
  const char *ids[] = {"a", "b", "c", "d", "e"};
  char rel[256];
  for (int i = 0; i < 5; i++) {
    snprintf(rel, sizeof rel, "JPEGImages/%s.png", ids[i]);
    write_rgb(fixture_path(d, rel), 4, 3, i);
    snprintf(rel, sizeof rel, "SegmentationClass/%s.png", ids[i]);
    write_label(fixture_path(d, rel), 4, 3, (uint8_t)(1 + i), 1);
  }
  fixture_write_bytes(fixture_path(d, "ImageSets/Segmentation/train.txt"), "a\nb\n", 4);
  fixture_write_bytes(fixture_path(d, "ImageSets/Segmentation/val.txt"), "c\n", 2);
  dsc_dataset *ds = NULL;
  /* no SegmentationClassAug/: SegmentationClass labels */
  CHECK_OK(dsc_dataset_open(&(dsc_dataset_config){.path = d, .format = DSC_DATASET_SEG}, &ds));
  if (ds) {
    CHECK(dsc_dataset_size(ds) == 2 && dsc_dataset_map_classes(ds) == 0 && dsc_dataset_num_classes(ds) == 0,
          "%zu images", dsc_dataset_size(ds));
    CHECK(first_label(ds, 0) == 1 && first_label(ds, 1) == 2, "SegmentationClass labels");
  }
  dsc_dataset_free(ds);
  ds = NULL;
  /* trainaug without any list to build it from: the error names trainaug.txt and aug.txt */
  CHECK_ERR(dsc_dataset_open(&(dsc_dataset_config){.path = d, .format = DSC_DATASET_SEG, .split = "trainaug"}, &ds),
            "aug.txt");
  /* SegmentationClassAug/ holds labels for some ids (grey PNGs, as VOC-aug ships them) */
  fixture_mkdirs(d, "SegmentationClassAug");
  write_label(fixture_path(d, "SegmentationClassAug/b.png"), 4, 3, 12, 0);
  write_label(fixture_path(d, "SegmentationClassAug/d.png"), 4, 3, 14, 0);
  write_label(fixture_path(d, "SegmentationClassAug/e.png"), 4, 3, 15, 0);
  CHECK_OK(dsc_dataset_open(&(dsc_dataset_config){.path = d, .format = DSC_DATASET_SEG}, &ds));
  if (ds) {
    CHECK(strstr(dsc_dataset_name(ds, 1), "JPEGImages/b.png") != NULL, "%s", dsc_dataset_name(ds, 1));
    CHECK(first_label(ds, 0) == 1 && first_label(ds, 1) == 12, "a from SegmentationClass, b from ...Aug");
  }
  dsc_dataset_free(ds);
  ds = NULL;
  /* trainaug built from train + aug - val: a b (train), then d e from aug (b repeated, c in val) */
  fixture_write_bytes(fixture_path(d, "ImageSets/Segmentation/aug.txt"), "d\nb\nc\n e\nd\n", 12);
  CHECK_OK(dsc_dataset_open(&(dsc_dataset_config){.path = d, .format = DSC_DATASET_SEG, .split = "trainaug"}, &ds));
  if (ds) {
    const char *want[] = {"a", "b", "d", "e"};
    CHECK(dsc_dataset_size(ds) == 4, "%zu trainaug images", dsc_dataset_size(ds));
    for (size_t i = 0; i < 4 && i < dsc_dataset_size(ds); i++) {
      snprintf(rel, sizeof rel, "JPEGImages/%s.png", want[i]);
      CHECK(strstr(dsc_dataset_name(ds, i), rel) != NULL, "%zu: %s, want %s", i, dsc_dataset_name(ds, i), rel);
    }
    if (dsc_dataset_size(ds) == 4) CHECK(first_label(ds, 2) == 14 && first_label(ds, 3) == 15, "aug labels");
  }
  dsc_dataset_free(ds);
  ds = NULL;
  /* trainaug.txt, when present, is read as is */
  fixture_write_bytes(fixture_path(d, "ImageSets/Segmentation/trainaug.txt"), "e\nc\n", 4);
  CHECK_OK(dsc_dataset_open(&(dsc_dataset_config){.path = d, .format = DSC_DATASET_SEG, .split = "trainaug"}, &ds));
  if (ds)
    CHECK(dsc_dataset_size(ds) == 2 && strstr(dsc_dataset_name(ds, 0), "e.png") && first_label(ds, 1) == 3,
          "trainaug.txt: %zu", dsc_dataset_size(ds));
  dsc_dataset_free(ds);
  fixture_rm_rf(d);
  free(d);
}

static void test_cityscapes(void) {
  char *d = fixture_tmpdir("dataset_seg");
  const char *cities[] = {"bonn", "aachen"};
  const char *names[2][2] = {{"bonn_000001_000019", "bonn_000000_000019"},
                             {"aachen_000000_000019", "aachen_000001_000019"}};
  char rel[512];
  /* every label id 0..33 plus 255 across the maps, so mapped and unmapped values both occur */
  uint8_t ids[35];
  for (int i = 0; i < 34; i++) ids[i] = (uint8_t)i;
  ids[34] = 255;
  for (int c = 0; c < 2; c++) {
    snprintf(rel, sizeof rel, "leftImg8bit/train/%s", cities[c]);
    fixture_mkdirs(d, rel);
    snprintf(rel, sizeof rel, "gtFine/train/%s", cities[c]);
    fixture_mkdirs(d, rel);
    for (int k = 0; k < 2; k++) {
      snprintf(rel, sizeof rel, "leftImg8bit/train/%s/%s_leftImg8bit.png", cities[c], names[c][k]);
      write_rgb(fixture_path(d, rel), 7, 5, 2 * c + k);
      snprintf(rel, sizeof rel, "gtFine/train/%s/%s_gtFine_labelIds.png", cities[c], names[c][k]);
      uint8_t m[35];
      for (int i = 0; i < 35; i++) m[i] = ids[(i + 9 * (2 * c + k)) % 35];
      CHECK_OK(dsc_png_write_index(fixture_path(d, rel), 7, 5, m, NULL));
      /* the other gtFine files of a real download are ignored */
      snprintf(rel, sizeof rel, "gtFine/train/%s/%s_gtFine_color.png", cities[c], names[c][k]);
      write_rgb(fixture_path(d, rel), 7, 5, 0);
    }
  }
  fixture_write_bytes(fixture_path(d, "leftImg8bit/train/bonn/notes.txt"), "x", 1);
  dsc_dataset_format f;
  CHECK_OK(dsc_dataset_format_parse("cityscapes", &f));
  CHECK(f == DSC_DATASET_CITYSCAPES && strcmp(dsc_dataset_format_name(f), "cityscapes") == 0, "name");
  dsc_dataset *ds = NULL;
  CHECK_OK(dsc_dataset_open(&(dsc_dataset_config){.path = d, .format = DSC_DATASET_CITYSCAPES}, &ds));
  if (ds) {
    CHECK(dsc_dataset_size(ds) == 4 && dsc_dataset_has_label_maps(ds) && dsc_dataset_map_classes(ds) == 19 &&
              dsc_dataset_num_classes(ds) == 0 && dsc_dataset_skipped_count(ds) == 1,
          "%zu images, %zu skipped", dsc_dataset_size(ds), dsc_dataset_skipped_count(ds));
    const char *want[] = {"aachen/aachen_000000_000019", "aachen/aachen_000001_000019",
                          "bonn/bonn_000000_000019", "bonn/bonn_000001_000019"};
    const int seed_of[] = {2, 3, 1, 0}; /* 2c + k of each sorted image */
    for (size_t i = 0; i < 4 && i < dsc_dataset_size(ds); i++) {
      CHECK(strstr(dsc_dataset_name(ds, i), want[i]) != NULL, "%zu: %s", i, dsc_dataset_name(ds, i));
      dsc_image img;
      uint8_t *map = NULL;
      CHECK_OK(dsc_dataset_load(ds, i, &img, NULL, &map));
      if (!map) continue;
      CHECK(img.w == 7 && img.h == 5, "size");
      int bad = 0, seen_ignore = 0, seen_train = 0;
      for (int p = 0; p < 35; p++) {
        int id = ids[(p + 9 * seed_of[i]) % 35];
        int want_t = dsc_cityscapes_train_id(id);
        if (map[p] != want_t) bad++;
        seen_ignore += map[p] == 255;
        seen_train += map[p] < 19;
      }
      CHECK(!bad && seen_ignore == 35 - 19 && seen_train == 19, "image %zu: %d wrong train ids", i, bad);
      dsc_image_free(&img);
      free(map);
    }
  }
  dsc_dataset_free(ds);
  ds = NULL;
  /* the official table, spot-checked */
  CHECK(dsc_cityscapes_train_id(7) == 0 && dsc_cityscapes_train_id(8) == 1 && dsc_cityscapes_train_id(11) == 2 &&
            dsc_cityscapes_train_id(19) == 6 && dsc_cityscapes_train_id(23) == 10 &&
            dsc_cityscapes_train_id(26) == 13 && dsc_cityscapes_train_id(31) == 16 &&
            dsc_cityscapes_train_id(33) == 18,
        "mapped ids");
  CHECK(dsc_cityscapes_train_id(0) == 255 && dsc_cityscapes_train_id(6) == 255 && dsc_cityscapes_train_id(9) == 255 &&
            dsc_cityscapes_train_id(29) == 255 && dsc_cityscapes_train_id(30) == 255 &&
            dsc_cityscapes_train_id(-1) == 255 && dsc_cityscapes_train_id(255) == 255 &&
            dsc_cityscapes_train_id(34) == 255,
        "unmapped ids");
  /* a missing split directory, then a missing label file: errors naming them */
  CHECK_ERR(dsc_dataset_open(&(dsc_dataset_config){.path = d, .format = DSC_DATASET_CITYSCAPES, .split = "val"}, &ds),
            "leftImg8bit/val");
  snprintf(rel, sizeof rel, "gtFine/train/bonn/%s_gtFine_labelIds.png", names[0][1]);
  CHECK(unlink(fixture_path(d, rel)) == 0, "unlink");
  CHECK_ERR(dsc_dataset_open(&(dsc_dataset_config){.path = d, .format = DSC_DATASET_CITYSCAPES}, &ds),
            "gtFine/train/bonn/bonn_000000_000019_gtFine_labelIds.png");
  CHECK(ds == NULL, "nothing opened");
  fixture_rm_rf(d);
  free(d);
}

static void test_format_messages(void) {
  dsc_dataset_format f;
  CHECK_ERR(dsc_dataset_format_parse("coco", &f), "folder, imagefolder, idx, seg or cityscapes");
  for (int i = 0; i <= (int)DSC_DATASET_CITYSCAPES; i++) {
    CHECK_OK(dsc_dataset_format_parse(dsc_dataset_format_name((dsc_dataset_format)i), &f));
    CHECK((int)f == i, "format %d round trip", i);
  }
}

static const dsc_test tests[] = {
    {"voc_aug", test_voc_aug},
    {"cityscapes", test_cityscapes},
    {"format_messages", test_format_messages},
};

TEST_MAIN(tests)
