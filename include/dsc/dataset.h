/* dataset.h: image sources for pretraining and evaluation (spec/INTERFACES.md "Datasets").
 *
 * A dataset is an index built once when it is opened (the files found, their labels), then
 * read-only: dsc_dataset_load may be called from any number of threads at once.
 *
 * Formats:
 *   folder       every .jpg, .jpeg or .png file (extension, case-insensitive) under `path`, recursively,
 *                sorted by path (byte order) for determinism; other files are skipped and counted;
 *                no labels. Directories are identified by (device, inode): one reached a second
 *                time (a symlink loop or a second link to it) is not walked again and is recorded
 *                as a problem, so loops never hang. An unreadable directory is a problem too.
 *   imagefolder  one subdirectory per class, classes sorted by name, label = class index; the
 *                images of a class are found as in `folder`. Files directly under `path` are
 *                skipped and counted.
 *   idx          MNIST / Fashion-MNIST: `path` holds <split>-images-idx3-ubyte and
 *                <split>-labels-idx1-ubyte, each raw or gzip-compressed (".gz"); split "train"
 *                or "t10k" ("val" and "test" mean "t10k"). Grey images become RGB (v, v, v).
 *                The whole file is read into memory at open.
 *   seg          PASCAL VOC layout: ImageSets/Segmentation/<split>.txt lists ids (list order kept);
 *                the image is JPEGImages/<id>.jpg, <id>.jpeg or <id>.png (the first that exists,
 *                in that order; .jpg when none does), its label map
 *                SegmentationClassAug/<id>.png when that file exists (the augmented VOC labels of
 *                SBD, as mmseg's voc12aug layout), else SegmentationClass/<id>.png; a palette or
 *                8-bit grey PNG whose samples are class indices (read raw, never through the
 *                palette's colours); 255 = ignore. Label maps must be the image's size.
 *                Split "trainaug" (VOC-aug's 10582 training images) reads trainaug.txt when it
 *                exists; otherwise it is built as mmseg's voc_aug conversion does: the ids of
 *                train.txt then those of aug.txt, each id once (first occurrence), minus every
 *                id of val.txt (all three lists then required).
 *   cityscapes   Cityscapes layout: every leftImg8bit/<split>/<city>/<name>_leftImg8bit.png
 *                (one directory level per city; other files skipped and counted), sorted by path;
 *                its label map gtFine/<split>/<city>/<name>_gtFine_labelIds.png (8-bit grey, the
 *                34 Cityscapes label ids), which must exist (opening fails naming the missing
 *                file). Maps are returned as the 19 TRAIN ids (dsc_cityscapes_train_id: road 0,
 *                sidewalk 1, ... bicycle 18), every other id 255 = ignore, so every user of
 *                dsc_dataset_load gets train ids. Split "train" (default), "val" or "test".
 * Every entry whose extension says image is indexed even if it may prove unreadable (a
 * dangling symlink, text named .jpg): decoding is where bad files are found (the loader skips
 * them, `dsc data check` lists them). An empty dataset is an error naming the path.
 */
#ifndef DSC_DATASET_H
#define DSC_DATASET_H

#include <stddef.h>
#include <stdint.h>

#include "dsc/image.h"
#include "dsc/status.h"

typedef enum dsc_dataset_format {
  DSC_DATASET_FOLDER = 0,
  DSC_DATASET_IMAGEFOLDER = 1,
  DSC_DATASET_IDX = 2,
  DSC_DATASET_SEG = 3,
  DSC_DATASET_CITYSCAPES = 4,
} dsc_dataset_format;

/* Classes of the Cityscapes train ids (0..18; 255 = ignore). */
#define DSC_CITYSCAPES_CLASSES 19

typedef struct dsc_dataset_config {
  const char *path;
  dsc_dataset_format format;
  const char *split;   /* idx: "train" (default) or "t10k"; seg: "train" (default), "val",
                        * "trainaug" or any <split>.txt; cityscapes: "train" (default), "val", "test" */
  int64_t max_pixels;  /* data.max_pixels: decode cap (w*h); <= 0: DSC_IMAGE_MAX_PIXELS */
} dsc_dataset_config;

typedef struct dsc_dataset dsc_dataset;

/* Parses "folder", "imagefolder", "idx", "seg" or "cityscapes". */
dsc_status *dsc_dataset_format_parse(const char *name, dsc_dataset_format *out);
const char *dsc_dataset_format_name(dsc_dataset_format f);

/* Builds the index. The config's strings are copied. */
dsc_status *dsc_dataset_open(const dsc_dataset_config *cfg, dsc_dataset **out);
void dsc_dataset_free(dsc_dataset *ds);

size_t dsc_dataset_size(const dsc_dataset *ds);
/* Image `i`'s path (idx: "<images file>#<i>"). */
const char *dsc_dataset_name(const dsc_dataset *ds, size_t i);
/* Number of classes of the PER-IMAGE labels: imagefolder and idx (10), else 0 (no per-image
 * labels; callers read > 0 as "has per-image labels", so label-map datasets answer 0 here). */
int dsc_dataset_num_classes(const dsc_dataset *ds);
/* Number of classes of the label maps when the format fixes it: cityscapes 19 (train ids); 0 for
 * seg ("from the data": the largest label below 255, or the caller's choice) and every other
 * format. */
int dsc_dataset_map_classes(const dsc_dataset *ds);
/* Cityscapes label id -> train id (0..18), 255 for every id without one (official table). */
uint8_t dsc_cityscapes_train_id(int label_id);
/* imagefolder: class c's directory name; NULL otherwise or out of range. */
const char *dsc_dataset_class_name(const dsc_dataset *ds, int c);
/* 1 for seg and cityscapes (per-pixel label maps), else 0. */
int dsc_dataset_has_label_maps(const dsc_dataset *ds);
/* Files skipped while indexing because their extension is not an image's. */
size_t dsc_dataset_skipped_count(const dsc_dataset *ds);
/* Problems met while indexing (symlink loops, unreadable directories): path and reason. */
size_t dsc_dataset_problem_count(const dsc_dataset *ds);
void dsc_dataset_problem(const dsc_dataset *ds, size_t i, const char **path, const char **reason);

/* Image i's size as decoded (after EXIF orientation) from its header alone; *is_jpeg (may be
 * NULL) says whether DCT-domain scaling applies. idx: the stored size, not a JPEG. A file it
 * accepts may still fail to decode. Thread-safe. */
dsc_status *dsc_dataset_probe(const dsc_dataset *ds, size_t i, int *w, int *h, int *is_jpeg);

/* Decodes image i (capped at max_pixels) into *img; *label gets its class (-1 when the source
 * has none) when label is non-NULL; for seg and cityscapes (train ids), *label_map gets a malloc'ed img->w*img->h map
 * (the caller frees it) when label_map is non-NULL, else NULL. Errors name the file. On error
 * nothing is left allocated. Thread-safe. */
dsc_status *dsc_dataset_load(const dsc_dataset *ds, size_t i, dsc_image *img, int *label,
                             uint8_t **label_map);
/* The same, a JPEG decoded at 1/denom (1, 2, 4 or 8) by dsc_image_decode_file_scaled; PNG and
 * idx images come at full size whatever denom. label_map requires denom 1 (maps are full size). */
dsc_status *dsc_dataset_load_scaled(const dsc_dataset *ds, size_t i, int denom, dsc_image *img,
                                    int *label, uint8_t **label_map);

#endif
