/* scenes.h: the multi-object scene generator behind `dsc data scenes` (issue #5, docs/scenes.md).
 *
 * A scene is an RGB canvas (size x size) with a textured background and 1..max_items clothing
 * items from Fashion-MNIST, each scaled, stretched, maybe mirrored, tinted or textured and shaded
 * by its own grey values, placed at random (possibly partly outside the canvas), later items
 * occluding earlier ones; and its per-pixel class mask: 0 background, 1..10 = Fashion-MNIST
 * class + 1. A pixel belongs to an item where the item's resized grey value exceeds
 * threshold * 255; the item's opacity is 1 from 1.5x that value up and falls linearly to 0 at
 * half of it (an anti-aliased edge: a thin halo just outside the mask is partly tinted). With
 * `opaque` set (a test hook) the opacity is exactly 1 inside the mask and 0 outside.
 *
 * Determinism: a scene is a pure function of (config, item pool, split, index). Every random
 * draw is dsc_philox4x32(seed, {DSC_RNG_SCENES, split, index, draw}) where draw = stream << 20 |
 * k: stream 0 the layout (item count), 1 the background, 2 + i item i, 10 the per-pixel noise
 * (k = pixel index). So scenes can be made in any order by any number of threads, and the
 * background of a scene does not depend on its items (dsc_scenes_render_background).
 *
 * Written layout (dsc_scenes_write), the `seg` format of dataset.h:
 *   OUT/JPEGImages/<id>.png            the scene (an RGB PNG under VOC's folder name)
 *   OUT/SegmentationClass/<id>.png     its mask, a palette PNG (VOC colours) of class indices
 *   OUT/ImageSets/Segmentation/{train,val}.txt   the ids, in index order
 *   OUT/classes.txt                    the 11 class names, one a line, index = mask value
 *   OUT/labels/{train,val}/<cc>_<name>/<id>.png  with `labels`: the `imagefolder` layout, one
 *       class per scene (that of the item with the most mask pixels, ties to the later item;
 *       cc = Fashion-MNIST class 00..09, all ten folders always made so class indices are
 *       stable); a hard link to the scene image (a copy where links fail); scenes without any
 *       item pixel are left out.
 * Ids are "train_%06u" / "val_%06u". Train scenes draw items from the train pool, val scenes
 * from the t10k pool.
 */
#ifndef DSC_SCENES_H
#define DSC_SCENES_H

#include <stdint.h>

#include "dsc/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DSC_SCENES_NUM_CLASSES 11 /* background + the 10 Fashion-MNIST classes */
#define DSC_SCENES_MAX_ITEMS 8
#define DSC_SCENES_MIN_SIZE 16
#define DSC_SCENES_MAX_SIZE 1024
#define DSC_SCENES_MAX_COUNT 1000000 /* scenes per split */

/* Class names, index = mask value: "background", "t-shirt/top", ..., "ankle boot". */
const char *dsc_scenes_class_name(int c);
/* The folder name of Fashion-MNIST class k (0..9) in labels/: "00_t-shirt_top" .. "09_ankle_boot". */
const char *dsc_scenes_label_dir(int k);

typedef enum dsc_scenes_split { DSC_SCENES_TRAIN = 0, DSC_SCENES_VAL = 1 } dsc_scenes_split;

/* A pool of grey items with their classes (0..9). */
typedef struct dsc_scenes_items {
  int n, w, h;
  uint8_t *pixels; /* n * h * w */
  uint8_t *labels; /* n */
} dsc_scenes_items;

/* Loads Fashion-MNIST's train (DSC_SCENES_TRAIN) or t10k (DSC_SCENES_VAL) images from `dir`
 * through the idx dataset reader. */
dsc_status *dsc_scenes_items_load(const char *dir, dsc_scenes_split split, dsc_scenes_items *out);
void dsc_scenes_items_free(dsc_scenes_items *items);

typedef struct dsc_scenes_config {
  int size;          /* canvas side in pixels, DSC_SCENES_MIN_SIZE..DSC_SCENES_MAX_SIZE */
  int max_items;     /* items per scene uniform in 1..max_items (<= DSC_SCENES_MAX_ITEMS) */
  uint64_t seed;
  float scale_min, scale_max; /* item side / canvas side, 0.05 <= min <= max <= 2 */
  float threshold;   /* mask threshold on the resized grey value / 255, in (0, 1) */
  int opaque;        /* test hook: opacity exactly 1 inside the mask, 0 outside */
} dsc_scenes_config;

/* size 64, max_items 4, seed 0, scale 0.35..0.8, threshold 0.15, opaque 0. */
void dsc_scenes_config_default(dsc_scenes_config *cfg);
/* Checks every field; the error names it. */
dsc_status *dsc_scenes_config_check(const dsc_scenes_config *cfg);

typedef struct dsc_scene_item {
  int source;        /* index in the item pool */
  int cls;           /* Fashion-MNIST class 0..9 (mask value cls + 1) */
  int x, y, w, h;    /* placement of the resized item on the canvas (may reach outside) */
  int pixels;        /* its mask pixels left visible after occlusion */
} dsc_scene_item;

typedef struct dsc_scene_info {
  int n_items;
  dsc_scene_item items[DSC_SCENES_MAX_ITEMS];
  int label;         /* class 0..9 of the item with the most mask pixels (ties: the later
                        item), -1 when no item pixel is visible */
} dsc_scene_info;

/* Generates scene `index` of `split`: rgb (size*size*3) and mask (size*size); info may be NULL.
 * `items` is the pool of that split. Thread-safe. */
dsc_status *dsc_scenes_generate(const dsc_scenes_config *cfg, const dsc_scenes_items *items,
                                dsc_scenes_split split, uint32_t index, uint8_t *rgb, uint8_t *mask,
                                dsc_scene_info *info);
/* The same scene's background alone (with its per-pixel noise), as under the items. */
dsc_status *dsc_scenes_render_background(const dsc_scenes_config *cfg, dsc_scenes_split split,
                                         uint32_t index, uint8_t *rgb);

/* The id of a scene, "train_000042" / "val_000007", into buf (at least 32 bytes). */
void dsc_scenes_id(dsc_scenes_split split, uint32_t index, char *buf, int cap);

typedef struct dsc_scenes_write_config {
  const char *out;   /* created if missing (with its parents) */
  int n_train, n_val; /* 0..DSC_SCENES_MAX_COUNT each, not both 0 */
  int labels;        /* also write labels/ */
  int force;         /* write into a non-empty `out` (else an error); stale scene files of an
                        earlier run (train_/val_ ids) there are removed first */
  int threads;       /* OpenMP threads; <= 0: OpenMP's default. Never changes a byte. */
  dsc_scenes_config scene;
} dsc_scenes_write_config;

typedef struct dsc_scenes_write_stats {
  int labelled[2];   /* scenes with a label entry, per split */
  long class_pixels[DSC_SCENES_NUM_CLASSES]; /* mask pixels per class, both splits */
} dsc_scenes_write_stats;

/* Writes the layout above. `train` / `val` may be NULL when their count is 0. stats may be NULL.
 * Errors name the file or option at fault. */
dsc_status *dsc_scenes_write(const dsc_scenes_write_config *cfg, const dsc_scenes_items *train,
                             const dsc_scenes_items *val, dsc_scenes_write_stats *stats);

#ifdef __cplusplus
}
#endif

#endif
