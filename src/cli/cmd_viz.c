/* cmd_viz.c: `dsc viz curves` (loss curves of runs from their metrics.jsonl), `dsc viz maps`
 * (for a few validation images of a seg-layout dataset: the image, its mask, and for each
 * weights file a PCA-to-RGB map and a k-means cluster map of the dense C5 features, plus the
 * dense-probe prediction with --probe) and `dsc viz gradcam` (Grad-CAM heat maps of C5 for a
 * pixel's dense similarity or a linear probe's class, include/dsc/gradcam.h, over images, one
 * column per weights file), written as PNG files (docs/viz.md).
 *
 * Features come from include/dsc/features.h (the eval forward of `dsc eval`, same transform
 * and sizes), the probe from include/dsc/eval.h, the drawing from include/dsc/viz.h. The
 * output bytes depend only on the inputs and the thread count.
 */
#include <dirent.h>
#include <errno.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/args.h"
#include "cli/cmd_viz.h"
#include "cli/commands.h"
#include "dsc/config.h"
#include "dsc/eval.h"
#include "dsc/features.h"
#include "dsc/gradcam.h"
#include "dsc/image.h"
#include "dsc/image_write.h"
#include "dsc/probe_file.h"
#include "dsc/ssl_loss.h"
#include "dsc/viz.h"

#define VIZ_MAX_KEYS 16
#define VIZ_MAX_WEIGHTS 16
#define VIZ_GAP 4
#define VIZ_HEADER 28
#define VIZ_KMEANS_ITERS 20

static const dsc_rgb VIZ_WHITE = {255, 255, 255}, VIZ_INK = {20, 20, 20};

static int is_dir(const char *path) {
  struct stat sb;
  return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* The last path component of `path` (trailing slashes ignored) into buf. */
static void path_base(const char *path, char *buf, size_t cap) {
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s", path);
  size_t n = strlen(tmp);
  while (n > 1 && tmp[n - 1] == '/') tmp[--n] = 0;
  snprintf(buf, cap, "%s", basename(tmp));
}

/* ------------------------------------------------------------------- curves ---------------- */

/* Legend text of a run: its folder's name, plus " (method)" from its config.ini when that
 * names a method the folder name does not already contain. */
static void run_label(const char *dir, char *buf, size_t cap) {
  char name[1024], path[4200];
  path_base(dir, name, sizeof name);
  snprintf(path, sizeof path, "%s/config.ini", dir);
  dsc_config cfg;
  dsc_config_defaults(&cfg);
  struct stat sb;
  dsc_status *st = stat(path, &sb) == 0 ? dsc_config_load_file(&cfg, path) : dsc_errorf("no config.ini");
  const char *method = st ? NULL : dsc_method_name(cfg.method);
  dsc_status_free(st);
  if (method && !strstr(name, method))
    snprintf(buf, cap, "%s (%s)", name, method);
  else
    snprintf(buf, cap, "%s", name);
}

/* Splits a comma-separated list into at most `max` non-empty items (pointers into `copy`). */
static dsc_status *split_list(const char *opt, char *copy, const char **items, int max, int *n) {
  *n = 0;
  for (char *save = NULL, *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
    if (*n == max) return dsc_errorf("--%s: at most %d items", opt, max);
    items[(*n)++] = t;
  }
  if (*n == 0) return dsc_errorf("--%s: empty list", opt);
  return NULL;
}

static dsc_status *viz_curves(const cli_args *a, long smooth) {
  char keys_copy[1024];
  snprintf(keys_copy, sizeof keys_copy, "%s", cli_get(a, "key"));
  const char *keys[VIZ_MAX_KEYS];
  int n_keys, n_runs = a->n_positional - 1;
  DSC_TRY(split_list("key", keys_copy, keys, VIZ_MAX_KEYS, &n_keys));
  dsc_viz_run runs[8] = {{0}};
  dsc_canvas c = {0};
  dsc_status *st = NULL;
  int loaded = 0;
  for (int r = 0; !st && r < n_runs; r++) {
    const char *arg = a->positional[r + 1];
    char path[4200], label[1200];
    if (is_dir(arg)) {
      snprintf(path, sizeof path, "%s/metrics.jsonl", arg);
      run_label(arg, label, sizeof label);
    } else if (access(arg, F_OK) != 0) {
      st = dsc_errorf("%s: no such run folder or metrics file", arg);
      break;
    } else { /* a metrics file named directly: its folder is the run */
      char dir[4096];
      snprintf(path, sizeof path, "%s", arg);
      snprintf(dir, sizeof dir, "%s", arg);
      run_label(dirname(dir), label, sizeof label);
    }
    st = dsc_viz_run_read(path, label, keys, n_keys, &runs[r]);
    if (!st) loaded++;
    for (int k = 0; !st && k < n_keys; k++) dsc_viz_smooth(runs[r].series[k].value, runs[r].series[k].n, (int)smooth);
  }
  int w, h;
  dsc_viz_curves_size(n_keys, n_runs, &w, &h);
  if (!st) st = dsc_canvas_init(&c, w, h, VIZ_WHITE);
  if (!st) st = dsc_viz_curves_draw(&c, runs, n_runs, keys, n_keys);
  if (!st) st = dsc_canvas_save_png(&c, cli_get(a, "out"));
  if (!st) fprintf(stderr, "dsc viz curves: %d run(s), %d panel(s) -> %s (%dx%d)\n", n_runs, n_keys, cli_get(a, "out"), w, h);
  dsc_canvas_free(&c);
  for (int r = 0; r < loaded; r++) dsc_viz_run_free(&runs[r]);
  return st;
}

/* --------------------------------------------------------------------- maps ---------------- */

typedef struct maps_opts {
  const char *data, *split, *out;
  const char *weights[VIZ_MAX_WEIGHTS];
  int n_weights;
  long images, size, cell, clusters, threads, seed, depth, small_stem, max_train;
  int probe, allow_partial;
} maps_opts;

/* Column header of a weights file: "random init", else its base name without ".safetensors",
 * prefixed by its folder's name when it is a run folder's checkpoint*.safetensors. */
static void weights_label(const char *weights, char *buf, size_t cap) {
  if (!strcmp(weights, "random")) {
    snprintf(buf, cap, "random init");
    return;
  }
  char base[1024], dir[4096];
  path_base(weights, base, sizeof base);
  size_t n = strlen(base);
  if (n > 12 && !strcmp(base + n - 12, ".safetensors")) base[n - 12] = 0;
  if (!strncmp(base, "checkpoint", 10)) {
    char parent[1024];
    snprintf(dir, sizeof dir, "%s", weights);
    path_base(dirname(dir), parent, sizeof parent);
    snprintf(buf, cap, "%s/%s", parent, base);
  } else {
    snprintf(buf, cap, "%s", base);
  }
}

/* Header text clipped to `width` pixels at scale 1 (a trailing ".." marks a cut). */
static void header_text(dsc_canvas *c, int x, int y, int width, const char *text) {
  char buf[256];
  size_t max_chars = (size_t)(width + 1) / 6, len = strlen(text);
  if (max_chars < 3) max_chars = 3;
  if (max_chars > sizeof buf - 1) max_chars = sizeof buf - 1;
  if (len > max_chars) {
    memcpy(buf, text, max_chars - 2);
    memcpy(buf + max_chars - 2, "..", 3);
  } else {
    memcpy(buf, text, len + 1);
  }
  dsc_canvas_text(c, x, y, buf, 1, VIZ_INK);
}

/* The displayed crop of val image i: the eval transform's output, de-normalized to RGB8. */
static dsc_status *shown_image(const dsc_dataset *ds, size_t i, int size, uint8_t *rgb) {
  dsc_image img = {0};
  float *x = malloc((size_t)size * size * 3 * sizeof *x);
  if (!x) return dsc_errorf("out of memory");
  dsc_status *st = dsc_dataset_load(ds, i, &img, NULL, NULL);
  if (!st) st = dsc_image_eval_transform(&img, size, size, x);
  for (size_t p = 0; !st && p < (size_t)size * size * 3; p++) {
    double v = ((double)x[p] * dsc_image_std[p % 3] + dsc_image_mean[p % 3]) * 255;
    rgb[p] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : lround(v));
  }
  dsc_image_free(&img);
  free(x);
  return st;
}

/* k-means (spherical, dsc_kmeans_init + dsc_kmeans_run) on the L2-normalized C5 pixels, then
 * colours by dsc_cluster_match_colors against the masks; idx (rows) gets palette indices. */
static dsc_status *cluster_map(dsc_backend *be, const dsc_features *f, int k, uint64_t seed, uint8_t *idx) {
  int64_t rows = f->n * (int64_t)f->h * f->w;
  int64_t px = (int64_t)f->size * f->size;
  float *v = malloc((size_t)rows * f->c * sizeof *v), *cent = malloc((size_t)k * f->c * sizeof *cent);
  int32_t *lab = malloc((size_t)rows * sizeof *lab), *up = malloc((size_t)(f->n * px) * sizeof *up);
  dsc_status *st = v && cent && lab && up ? NULL : dsc_errorf("out of memory for k-means");
  if (!st) {
    dsc_l2norm_rows(rows, f->c, v, NULL, f->dense);
    st = dsc_kmeans_init(rows, f->c, k, v, seed, 0, cent);
  }
  if (!st) st = dsc_kmeans_run(be, rows, f->c, k, VIZ_KMEANS_ITERS, v, cent, lab, NULL);
  if (!st) {
    /* each mask pixel's cluster by the nearest rule of the drawing, to match colours */
    for (int64_t i = 0; i < f->n; i++)
      for (int y = 0; y < f->size; y++)
        for (int x = 0; x < f->size; x++)
          up[i * px + (int64_t)y * f->size + x] =
              lab[(i * f->h + (int64_t)y * f->h / f->size) * f->w + (int64_t)x * f->w / f->size];
    uint8_t colour[256];
    dsc_cluster_match_colors(up, f->maps, f->n * px, k, colour);
    for (int64_t r = 0; r < rows; r++) idx[r] = colour[lab[r]];
  }
  free(v), free(cent), free(lab), free(up);
  return st;
}

/* The dense probe of eval.h trained on the train split's features, predicting the shown
 * images: pred (n, size, size). */
static dsc_status *probe_map(dsc_feature_backbone *m, const maps_opts *o, const dsc_features *val,
                             int size, int resize, int32_t *pred, double *miou) {
  dsc_dataset *ds = NULL;
  dsc_features tf = {0};
  dsc_dataset_config dc = {.path = o->data, .format = DSC_DATASET_SEG, .split = "train"};
  dsc_feature_config fc = {.size = size, .resize = resize, .batch = 32, .max_images = o->max_train,
                           .strict = 0, .verbose = 0, .what = "seg train (probe)"};
  fprintf(stderr, "dsc viz maps: training the dense probe on the train split of %s...\n", o->data);
  dsc_status *st = dsc_dataset_open(&dc, &ds);
  if (!st) st = dsc_features_extract(m, ds, &fc, DSC_FEATURES_DENSE, &tf);
  int classes = (tf.max_label > val->max_label ? tf.max_label : val->max_label) + 1;
  if (!st && (!tf.maps || classes < 2))
    st = dsc_errorf("--probe: the train split of %s has no labelled classes", o->data);
  if (!st) {
    dsc_probe_config pc = dsc_dense_probe_defaults();
    dsc_dense_set tr = {.n = tf.n, .h5 = tf.h, .w5 = tf.w, .c = tf.c, .features = tf.dense,
                        .H = tf.size, .W = tf.size, .labels = tf.maps};
    dsc_dense_set te = {.n = val->n, .h5 = val->h, .w5 = val->w, .c = val->c, .features = val->dense,
                        .H = val->size, .W = val->size, .labels = val->maps};
    dsc_dense_probe_result res = {0};
    st = dsc_dense_probe(m->be, &pc, classes, &tr, &te, pred, NULL, &res);
    if (!st) *miou = res.test.miou;
    dsc_dense_probe_result_free(&res);
  }
  dsc_features_free(&tf);
  dsc_dataset_free(ds);
  return st;
}

/* The working size: --size, else the first val image's side when square, else 224. */
static int maps_size(const dsc_dataset *ds, long size) {
  if (size > 0) return (int)size;
  int w, h;
  dsc_status *st = dsc_dataset_probe(ds, 0, &w, &h, NULL);
  int out = !st && w == h && w >= 16 && w <= 2048 ? w : 224;
  dsc_status_free(st);
  return out;
}

static dsc_status *viz_maps(const maps_opts *o) {
  char list[4200];
  snprintf(list, sizeof list, "%s/ImageSets/Segmentation", o->data);
  if (!is_dir(list))
    return dsc_errorf("--data %s is not in the seg layout: no %s (expected JPEGImages/, SegmentationClass/, "
                      "ImageSets/Segmentation/{train,val}.txt)", o->data, list);
  dsc_dataset *ds = NULL;
  dsc_dataset_config dc = {.path = o->data, .format = DSC_DATASET_SEG, .split = o->split};
  DSC_TRY(dsc_dataset_open(&dc, &ds));
  int size = maps_size(ds, o->size), resize = size;
  int n = (int)((size_t)o->images < dsc_dataset_size(ds) ? (size_t)o->images : dsc_dataset_size(ds));
  int mag = (int)(o->cell / size) > 1 ? (int)(o->cell / size) : 1, tile = size * mag;
  int per_weights = 2 + o->probe, cols = 2 + o->n_weights * per_weights;
  int64_t px = (int64_t)size * size;
  uint8_t pal[256][3];
  dsc_voc_palette(pal);
  dsc_canvas c = {0};
  uint8_t *rgb = malloc((size_t)(n * px * 3));
  dsc_status *st = rgb ? NULL : dsc_errorf("out of memory");
  if (!st) st = dsc_canvas_init(&c, VIZ_GAP + cols * (tile + VIZ_GAP), VIZ_HEADER + n * (tile + VIZ_GAP), VIZ_WHITE);
  for (int i = 0; !st && i < n; i++) st = shown_image(ds, (size_t)i, size, rgb + i * px * 3);
  if (!st) {
    char split[80];
    snprintf(split, sizeof split, "%s split", o->split);
    header_text(&c, VIZ_GAP, 6, tile, split);
    header_text(&c, VIZ_GAP, 16, tile, "image");
    header_text(&c, VIZ_GAP + tile + VIZ_GAP, 16, tile, "mask");
    for (int i = 0; i < n; i++)
      dsc_canvas_blit(&c, VIZ_GAP, VIZ_HEADER + i * (tile + VIZ_GAP), tile, tile, rgb + i * px * 3, size, size);
  }
  for (int wi = 0; !st && wi < o->n_weights; wi++) {
    dsc_feature_backbone m = {0};
    dsc_features f = {0};
    /* the architecture is read from a file; --arch/--stem only shape random weights */
    int random = !strcmp(o->weights[wi], "random");
    dsc_feature_backbone_config bc = {.weights = o->weights[wi], .depth = random ? (int)o->depth : 0,
                                      .small_stem = random ? (int)o->small_stem : -1,
                                      .seed = (uint64_t)o->seed, .threads = (int)o->threads,
                                      .allow_partial = o->allow_partial};
    dsc_feature_config fc = {.size = size, .resize = resize, .batch = n, .max_images = n, .strict = 1,
                             .what = "shown images"};
    st = dsc_status_wrap(dsc_feature_backbone_open(&bc, &m), "--weights %s", o->weights[wi]);
    if (!st) st = dsc_features_extract(&m, ds, &fc, DSC_FEATURES_DENSE, &f);
    if (!st && (!f.maps || f.n != n)) st = dsc_errorf("--data %s: the label maps of the shown images are missing", o->data);
    int64_t rows = st ? 0 : f.n * (int64_t)f.h * f.w;
    int x0 = VIZ_GAP + (2 + wi * per_weights) * (tile + VIZ_GAP);
    char label[2100], what[64];
    weights_label(o->weights[wi], label, sizeof label);
    /* mask column (once) */
    for (int i = 0; !st && wi == 0 && i < n; i++)
      dsc_canvas_blit_index(&c, VIZ_GAP + tile + VIZ_GAP, VIZ_HEADER + i * (tile + VIZ_GAP), tile, tile,
                            f.maps + i * px, size, size, (const uint8_t(*)[3])pal);
    /* PCA to RGB over the shown images' C5 pixels */
    double *mean = NULL, *comp = NULL;
    uint8_t *map = NULL;
    if (!st) {
      mean = malloc((size_t)f.c * sizeof *mean), comp = malloc((size_t)3 * f.c * sizeof *comp);
      map = malloc((size_t)rows * 3);
      if (!mean || !comp || !map) st = dsc_errorf("out of memory");
    }
    if (!st) st = dsc_pca(f.dense, rows, f.c, 3, mean, comp, NULL);
    if (!st) st = dsc_pca_rgb(f.dense, rows, f.c, mean, comp, map);
    if (!st) {
      header_text(&c, x0, 6, tile, label);
      header_text(&c, x0, 16, tile, "PCA of C5");
      for (int i = 0; i < n; i++)
        dsc_canvas_blit(&c, x0, VIZ_HEADER + i * (tile + VIZ_GAP), tile, tile,
                        map + (size_t)i * f.h * f.w * 3, f.w, f.h);
    }
    /* k-means clusters: K = --clusters, else the classes present in the shown masks */
    int k = (int)o->clusters;
    if (!st && k == 0) {
      int seen[256] = {0};
      for (int64_t p = 0; p < f.n * px; p++) seen[f.maps[p]] = 1;
      for (int v = 0; v < 255; v++) k += seen[v];
    }
    if (k < 1) k = 1;
    if (k > rows) k = (int)rows;
    if (!st) st = cluster_map(m.be, &f, k, (uint64_t)o->seed, map);
    if (!st) {
      int x1 = x0 + tile + VIZ_GAP;
      header_text(&c, x1, 6, tile, label);
      snprintf(what, sizeof what, "k-means K=%d", k);
      header_text(&c, x1, 16, tile, what);
      for (int i = 0; i < n; i++)
        dsc_canvas_blit_index(&c, x1, VIZ_HEADER + i * (tile + VIZ_GAP), tile, tile, map + (size_t)i * f.h * f.w,
                              f.w, f.h, (const uint8_t(*)[3])pal);
    }
    /* the dense probe's predictions */
    if (!st && o->probe) {
      int32_t *pred = malloc((size_t)(f.n * px) * sizeof *pred);
      double miou = NAN;
      st = pred ? probe_map(&m, o, &f, size, resize, pred, &miou) : dsc_errorf("out of memory");
      if (!st) {
        int x2 = x0 + 2 * (tile + VIZ_GAP);
        header_text(&c, x2, 6, tile, label);
        snprintf(what, sizeof what, "dense probe mIoU %.2f", miou);
        header_text(&c, x2, 16, tile, what);
        for (int i = 0; i < n; i++)
          dsc_canvas_draw_classes(&c, x2, VIZ_HEADER + i * (tile + VIZ_GAP), tile, tile, pred + i * px, size, size,
                                  (const uint8_t(*)[3])pal);
      }
      free(pred);
    }
    free(mean), free(comp), free(map);
    dsc_features_free(&f);
    dsc_feature_backbone_free(&m);
  }
  if (!st) st = dsc_canvas_save_png(&c, o->out);
  if (!st)
    fprintf(stderr, "dsc viz maps: %d image(s) x %d weights at %dx%d -> %s (%dx%d)\n", n, o->n_weights, size, size,
            o->out, c.w, c.h);
  free(rgb);
  dsc_canvas_free(&c);
  dsc_dataset_free(ds);
  return st;
}

/* ---------------------------------------------------------------------- main --------------- */

static const char *VIZ_USAGE =
    "dsc viz curves RUN_DIR... --out FILE.png [--key loss,loss_ins,loss_pix,loss_sem] [--smooth N]\n"
    "       dsc viz maps --data DIR --weights W [--weights W2 ...] --out FILE.png [options]\n"
    "       dsc viz gradcam --weights A[,B...] --input IMAGE_OR_DIR --out FILE.png [--target pixel|probe] [options]";

static int viz_usage_error(const char *msg) {
  fprintf(stderr, "dsc: error: dsc viz: %s\nusage: %s\n", msg, VIZ_USAGE);
  return 2;
}

static int cmd_viz_curves(int argc, char **argv) {
  cli_option opts[] = {
      {"out", 1, NULL, "output .png", NULL},
      {"key", 1, "loss,loss_ins,loss_pix,loss_sem", "metrics to plot, one panel each (comma-separated)", NULL},
      {"smooth", 1, "1", "trailing moving average over N logged points (1: none)", NULL},
  };
  cli_args a = {.command = "viz curves", .opts = opts, .n_opts = sizeof opts / sizeof opts[0]};
  if (cli_report(cli_parse(&a, argc, argv))) return 2;
  if (a.help) {
    cli_print_help(&a, "dsc viz curves RUN_DIR... --out FILE.png [--key K1,K2,...] [--smooth N]",
                   "Loss curves of up to 7 runs (RUN_DIR/metrics.jsonl, or a metrics file itself): one panel\n"
                   "per key, one colour per run, a legend with each run's folder (and method).", stdout);
    return 0;
  }
  if (a.n_positional < 2) return viz_usage_error("curves needs at least one run folder");
  if (!cli_get(&a, "out")) return viz_usage_error("curves needs --out FILE.png");
  long smooth;
  if (cli_report(cli_get_int(&a, "smooth", 1, 1000000, &smooth))) return 2;
  return cli_report(viz_curves(&a, smooth));
}

static int cmd_viz_maps(int argc, char **argv) {
  maps_opts o = {0};
  /* --weights may repeat: collect every value, pass the rest to the option parser */
  char **rest = malloc((size_t)(argc + 1) * sizeof *rest);
  if (!rest) return cli_report(dsc_errorf("out of memory"));
  int n_rest = 0;
  for (int i = 0; i < argc; i++) {
    const char *v = NULL;
    if (!strcmp(argv[i], "--weights") && i + 1 < argc) v = argv[++i];
    else if (!strncmp(argv[i], "--weights=", 10)) v = argv[i] + 10;
    else rest[n_rest++] = argv[i];
    if (v && o.n_weights == VIZ_MAX_WEIGHTS) {
      free(rest);
      return viz_usage_error("at most 16 --weights");
    }
    if (v) o.weights[o.n_weights++] = v;
  }
  cli_option opts[] = {
      {"data", 1, NULL, "dataset root in the seg layout", NULL},
      {"split", 1, "val", "split whose first images are shown", NULL},
      {"images", 1, "4", "images shown (rows)", NULL},
      {"size", 1, "0", "working size; 0: the first image's side when square, else 224", NULL},
      {"cell", 1, "128", "tiles are size x m pixels, m = max(1, cell / size)", NULL},
      {"clusters", 1, "0", "k-means K; 0: the classes present in the shown masks", NULL},
      {"probe", 0, NULL, "add the dense linear probe's prediction (trained on the train split)", NULL},
      {"max-train", 1, "0", "--probe: use the first N train images (0: all)", NULL},
      {"arch", 1, "resnet18", "for --weights random: resnet18|resnet34|resnet50", NULL},
      {"stem", 1, "standard", "for --weights random: standard|small", NULL},
      {"seed", 1, "0", "random initialization and k-means seed", NULL},
      {"threads", 1, "0", "CPU threads (0: all cores)", NULL},
      {"out", 1, NULL, "output .png", NULL},
      {"weights", 1, NULL, "a checkpoint, an exported backbone, torchvision weights (.safetensors, .pth) or random (repeat for several columns)", NULL},
      {"allow-partial", 0, NULL, "load the tensors that match; list the others (default: exact match only)", NULL},
  };
  cli_args a = {.command = "viz maps", .opts = opts, .n_opts = sizeof opts / sizeof opts[0]};
  dsc_status *pst = cli_parse(&a, n_rest, rest);
  free(rest);
  if (cli_report(pst)) return 2;
  if (a.help) {
    cli_print_help(&a, "dsc viz maps --data DIR --weights W [--weights W2 ...] --out FILE.png [options]",
                   "For the first --images images of a seg split: the image, its mask, and per weights file\n"
                   "a PCA-to-RGB map and a k-means cluster map of the C5 features (and the dense probe's\n"
                   "prediction with --probe). Rows are images; headers name the columns.", stdout);
    return 0;
  }
  if (a.n_positional > 1) return viz_usage_error("maps takes no positional arguments");
  if (!cli_get(&a, "data")) return viz_usage_error("maps needs --data DIR");
  if (!cli_get(&a, "out")) return viz_usage_error("maps needs --out FILE.png");
  if (o.n_weights == 0) return viz_usage_error("maps needs --weights W (one or more)");
  o.data = cli_get(&a, "data"), o.split = cli_get(&a, "split"), o.out = cli_get(&a, "out");
  o.probe = cli_get(&a, "probe") != NULL;
  o.allow_partial = cli_get(&a, "allow-partial") != NULL;
  const char *arch = cli_get(&a, "arch"), *stem = cli_get(&a, "stem");
  o.depth = !strcmp(arch, "resnet18") ? 18 : !strcmp(arch, "resnet34") ? 34 : !strcmp(arch, "resnet50") ? 50 : 0;
  o.small_stem = !strcmp(stem, "small") ? 1 : !strcmp(stem, "standard") ? 0 : -2;
  if (!o.depth) return viz_usage_error("--arch must be resnet18, resnet34 or resnet50");
  if (o.small_stem == -2) return viz_usage_error("--stem must be standard or small");
  if (cli_report(cli_get_int(&a, "images", 1, 64, &o.images)) || cli_report(cli_get_int(&a, "size", 0, 4096, &o.size)) ||
      cli_report(cli_get_int(&a, "cell", 1, 4096, &o.cell)) ||
      cli_report(cli_get_int(&a, "clusters", 0, 254, &o.clusters)) ||
      cli_report(cli_get_int(&a, "max-train", 0, 1L << 40, &o.max_train)) ||
      cli_report(cli_get_int(&a, "seed", 0, 1L << 62, &o.seed)) ||
      cli_report(cli_get_int(&a, "threads", 0, 4096, &o.threads)))
    return 2;
  if (o.size && o.size < 16) return viz_usage_error("--size must be 0 or at least 16");
  return cli_report(viz_maps(&o));
}

/* ------------------------------------------------------------------- gradcam --------------- */

#define GRADCAM_MAX_IMAGES 64

typedef struct gradcam_opts {
  const char *weights[VIZ_MAX_WEIGHTS], *probes[VIZ_MAX_WEIGHTS], *names[VIZ_MAX_WEIGHTS];
  int n_weights, n_probes, n_names;
  const char *input, *out, *class_spec;
  long max_images, size, cell, threads;
  int allow_partial, probe_target, has_pixel, px, py;
} gradcam_opts;

static int has_image_extension(const char *name) {
  const char *dot = strrchr(name, '.');
  return dot && (!strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg") || !strcasecmp(dot, ".png"));
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* --input: a file as is, or a directory's .jpg/.jpeg/.png files (not recursive) sorted by name; the
 * first `max` of them. paths[] are allocated. */
static dsc_status *gradcam_inputs(const char *input, int max, char ***paths, int *n) {
  struct stat sb;
  *paths = NULL, *n = 0;
  if (stat(input, &sb) != 0) return dsc_errorf("--input %s: no such file or directory", input);
  int cap = 16, count = 0;
  char **items = malloc((size_t)cap * sizeof *items);
  if (!items) return dsc_errorf("out of memory");
  dsc_status *st = NULL;
  if (!S_ISDIR(sb.st_mode)) {
    if (!(items[count++] = strdup(input))) st = dsc_errorf("out of memory");
  } else {
    DIR *d = opendir(input);
    if (!d) st = dsc_errorf("--input %s: cannot open the directory", input);
    for (struct dirent *e; !st && d && (e = readdir(d));) {
      if (e->d_name[0] == '.' || !has_image_extension(e->d_name)) continue;
      if (count == cap) {
        char **more = realloc(items, (size_t)(cap *= 2) * sizeof *items);
        if (!more) {
          st = dsc_errorf("out of memory");
          break;
        }
        items = more;
      }
      char path[4200];
      snprintf(path, sizeof path, "%s/%s", input, e->d_name);
      if (!(items[count++] = strdup(path))) st = dsc_errorf("out of memory");
    }
    if (d) closedir(d);
    if (!st && count == 0) st = dsc_errorf("--input %s: no .jpg, .jpeg or .png files", input);
    if (!st) qsort(items, (size_t)count, sizeof *items, cmp_str);
  }
  if (st) {
    for (int i = 0; i < count; i++) free(items[i]);
    free(items);
    return st;
  }
  for (int i = max; i < count; i++) free(items[i]);
  *paths = items, *n = count < max ? count : max;
  return NULL;
}

/* The working size: --size, else the first image's side when square (16..2048), else 224. */
static int gradcam_size(const char *first, long size) {
  if (size > 0) return (int)size;
  int w = 0, h = 0;
  dsc_status *st = dsc_image_probe_file(first, &w, &h, NULL);
  int out = !st && w == h && w >= 16 && w <= 2048 ? w : 224;
  dsc_status_free(st);
  return out;
}

/* One column: Grad-CAM of every image for one weights file, drawn at x0. */
static dsc_status *gradcam_column(const gradcam_opts *o, int wi, const dsc_probe_file *probe, int class_index,
                                  const float *x, const uint8_t *rgb, int n, int size, int tile, int x0,
                                  dsc_canvas *c, char *const *paths) {
  dsc_feature_backbone m = {0};
  dsc_feature_backbone_config bc = {.weights = o->weights[wi], .depth = 0, .small_stem = -1,
                                    .threads = (int)o->threads, .allow_partial = o->allow_partial};
  DSC_TRY(dsc_status_wrap(dsc_feature_backbone_open(&bc, &m), "--weights %s", o->weights[wi]));
  const int64_t px = (int64_t)size * size;
  float *dev_x = NULL, *a = NULL, *up = malloc((size_t)px * sizeof *up);
  double *cam = NULL;
  uint8_t *over = malloc((size_t)px * 3);
  dsc_status *st = up && over ? NULL : dsc_errorf("out of memory");
  if (!st && probe && probe->c != m.net.net.out_channels)
    st = dsc_errorf("--probe %s has C = %d input channels, but --weights %s (resnet%d) has %d C5 channels",
                    o->probes[o->n_probes == 1 ? 0 : wi], probe->c, o->weights[wi], m.cfg.depth,
                    m.net.net.out_channels);
  if (!st) st = m.be->alloc(m.be, (size_t)px * 3 * sizeof(float), (void **)&dev_x);
  for (int i = 0; !st && i < n; i++) {
    dsc_resnet_features f;
    st = m.be->upload(m.be, dev_x, x + (size_t)i * px * 3, (size_t)px * 3 * sizeof(float));
    if (!st) st = dsc_resnet_forward(&m.net.net, dev_x, 1, size, size, 0, 1, &f);
    if (st) break;
    const int h5 = f.h[3], w5 = f.w[3], ch = f.channels[3];
    const size_t numel = (size_t)h5 * w5 * ch;
    if (!a) {
      a = malloc(numel * sizeof *a), cam = malloc((size_t)h5 * w5 * sizeof *cam);
      if (!a || !cam) st = dsc_errorf("out of memory");
    }
    if (!st) st = m.be->download(m.be, a, f.c[3], numel * sizeof *a);
    dsc_gradcam_target t = {.kind = probe ? DSC_GRADCAM_PROBE : DSC_GRADCAM_PIXEL, .x = o->px, .y = o->py,
                            .in_w = size, .in_h = size};
    if (probe) t.weight = probe->weight, t.bias = probe->bias, t.classes = probe->classes, t.class_index = class_index;
    dsc_gradcam_result r;
    if (!st) st = dsc_gradcam(a, h5, w5, ch, &t, cam, NULL, &r);
    if (!st) st = dsc_gradcam_upsample(cam, h5, w5, size, size, up);
    if (st) break;
    dsc_gradcam_overlay(rgb + (size_t)i * px * 3, up, px, over);
    const int y0 = VIZ_HEADER + i * (tile + VIZ_GAP);
    dsc_canvas_blit(c, x0, y0, tile, tile, over, size, size);
    if (!probe) dsc_gradcam_mark(c, x0 + o->px * (tile / size) + tile / size / 2, y0 + o->py * (tile / size) + tile / size / 2,
                                 tile / 20 > 3 ? tile / 20 : 3);
    if (probe)
      fprintf(stderr, "dsc viz gradcam: %s, %s: y = %.6g (C5 %dx%d, cam max %.4g)\n", o->weights[wi], paths[i],
              r.score, h5, w5, r.max);
    else
      fprintf(stderr, "dsc viz gradcam: %s, %s: y = %.6g (C5 %dx%d, cell %d,%d, cam max %.4g)\n", o->weights[wi],
              paths[i], r.score, h5, w5, r.cell_x, r.cell_y, r.max);
  }
  if (dev_x) m.be->free(m.be, dev_x);
  free(a), free(cam), free(up), free(over);
  dsc_feature_backbone_free(&m);
  return st;
}

static dsc_status *viz_gradcam(const gradcam_opts *o) {
  char **paths = NULL;
  int n = 0;
  DSC_TRY(gradcam_inputs(o->input, (int)o->max_images, &paths, &n));
  const int size = gradcam_size(paths[0], o->size), mag = (int)(o->cell / size) > 1 ? (int)(o->cell / size) : 1;
  const int tile = size * mag, cols = 1 + o->n_weights;
  const int64_t px = (int64_t)size * size;
  gradcam_opts g = *o;
  if (!g.has_pixel) g.px = size / 2, g.py = size / 2;
  dsc_probe_file probes[VIZ_MAX_WEIGHTS];
  int classes[VIZ_MAX_WEIGHTS] = {0}, loaded = 0;
  memset(probes, 0, sizeof probes);
  dsc_canvas c = {0};
  float *x = malloc((size_t)(n * px * 3) * sizeof *x);
  uint8_t *rgb = malloc((size_t)(n * px * 3));
  dsc_status *st = x && rgb ? NULL : dsc_errorf("out of memory");
  if (!st && !g.probe_target && (g.px < 0 || g.py < 0 || g.px >= size || g.py >= size))
    st = dsc_errorf("--pixel %d,%d is outside the %dx%d input image (x in 0..%d, y in 0..%d)", g.px, g.py, size,
                    size, size - 1, size - 1);
  for (int k = 0; !st && g.probe_target && k < g.n_probes; k++) {
    st = dsc_status_wrap(dsc_probe_file_load(g.probes[k], &probes[k]), "--probe %s", g.probes[k]);
    if (!st) loaded++;
    if (!st) st = dsc_status_wrap(dsc_probe_file_class(&probes[k], g.class_spec, &classes[k]), "--probe %s", g.probes[k]);
  }
  /* the images: the network's input (eval transform, resize = size as `dsc viz maps`) and its display */
  for (int i = 0; !st && i < n; i++) {
    dsc_image img = {0};
    float *xi = x + (size_t)i * px * 3;
    st = dsc_image_decode_file(paths[i], &img);
    if (!st) st = dsc_image_eval_transform(&img, size, size, xi);
    for (int64_t p = 0; !st && p < px * 3; p++) {
      double v = ((double)xi[p] * dsc_image_std[p % 3] + dsc_image_mean[p % 3]) * 255;
      rgb[(size_t)i * px * 3 + p] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : lround(v));
    }
    dsc_image_free(&img);
    if (st) st = dsc_status_wrap(st, "--input %s", paths[i]);
  }
  if (!st) st = dsc_canvas_init(&c, VIZ_GAP + cols * (tile + VIZ_GAP), VIZ_HEADER + n * (tile + VIZ_GAP), VIZ_WHITE);
  char what[300];
  snprintf(what, sizeof what, "Grad-CAM: pixel %d,%d", g.px, g.py);
  if (!st) {
    header_text(&c, VIZ_GAP, 6, tile, "image");
    header_text(&c, VIZ_GAP, 16, tile, g.probe_target ? "(probe target)" : what + 10);
    for (int i = 0; i < n; i++) {
      const int y0 = VIZ_HEADER + i * (tile + VIZ_GAP);
      dsc_canvas_blit(&c, VIZ_GAP, y0, tile, tile, rgb + (size_t)i * px * 3, size, size);
      if (!g.probe_target)
        dsc_gradcam_mark(&c, VIZ_GAP + g.px * mag + mag / 2, y0 + g.py * mag + mag / 2, tile / 20 > 3 ? tile / 20 : 3);
    }
  }
  for (int wi = 0; !st && wi < g.n_weights; wi++) {
    const int x0 = VIZ_GAP + (1 + wi) * (tile + VIZ_GAP), k = g.n_probes == 1 ? 0 : wi;
    char label[2100];
    if (g.n_names) snprintf(label, sizeof label, "%s", g.names[wi]);
    else weights_label(g.weights[wi], label, sizeof label);
    header_text(&c, x0, 6, tile, label);
    if (g.probe_target && probes[k].class_names)
      snprintf(what, sizeof what, "Grad-CAM: %s", probes[k].class_names[classes[k]]);
    else if (g.probe_target)
      snprintf(what, sizeof what, "Grad-CAM: class %d", classes[k]);
    header_text(&c, x0, 16, tile, what);
    st = gradcam_column(&g, wi, g.probe_target ? &probes[k] : NULL, classes[k], x, rgb, n, size, tile, x0, &c, paths);
  }
  if (!st) st = dsc_canvas_save_png(&c, g.out);
  if (!st)
    fprintf(stderr, "dsc viz gradcam: %d image(s) x %d weights at %dx%d -> %s (%dx%d)\n", n, g.n_weights, size,
            size, g.out, c.w, c.h);
  for (int k = 0; k < loaded; k++) dsc_probe_file_free(&probes[k]);
  for (int i = 0; i < n; i++) free(paths[i]);
  free(paths), free(x), free(rgb);
  dsc_canvas_free(&c);
  return st;
}

/* Adds the comma-separated items of `value` to list (at most VIZ_MAX_WEIGHTS); `value` is modified. */
static dsc_status *add_items(const char *opt, char *value, const char **list, int *n) {
  for (char *save = NULL, *t = strtok_r(value, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
    if (*n == VIZ_MAX_WEIGHTS) return dsc_errorf("--%s: at most %d items", opt, VIZ_MAX_WEIGHTS);
    list[(*n)++] = t;
  }
  return NULL;
}

static int cmd_viz_gradcam(int argc, char **argv) {
  gradcam_opts o = {0};
  /* --weights and --probe may repeat and hold comma lists: collect them, pass the rest on */
  char **rest = malloc((size_t)(argc + 1) * sizeof *rest), **copies = calloc((size_t)argc + 1, sizeof *copies);
  if (!rest || !copies) {
    free(rest), free(copies);
    return cli_report(dsc_errorf("out of memory"));
  }
  int n_rest = 0, n_copies = 0, rc = -1;
  dsc_status *st = NULL;
  for (int i = 0; !st && i < argc; i++) {
    const char *opt = NULL, *v = NULL;
    for (int k = 0; k < 2 && !opt; k++) {
      const char *name = k ? "--probe" : "--weights";
      size_t len = strlen(name);
      if (!strcmp(argv[i], name) && i + 1 < argc) opt = name, v = argv[++i];
      else if (!strncmp(argv[i], name, len) && argv[i][len] == '=') opt = name, v = argv[i] + len + 1;
    }
    if (!opt) {
      rest[n_rest++] = argv[i];
      continue;
    }
    if (!(copies[n_copies] = strdup(v))) st = dsc_errorf("out of memory");
    else if (!strcmp(opt, "--weights")) st = add_items("weights", copies[n_copies++], o.weights, &o.n_weights);
    else st = add_items("probe", copies[n_copies++], o.probes, &o.n_probes);
  }
  cli_option opts[] = {
      {"weights", 1, NULL, "a checkpoint, an exported backbone, torchvision weights (.safetensors, .pth); "
                           "comma-separated or repeated for several columns", NULL},
      {"names", 1, NULL, "column titles, comma-separated, one per weights file (default: the file names)", NULL},
      {"input", 1, NULL, "an image, or a directory of .jpg/.jpeg/.png images (sorted by name)", NULL},
      {"max-images", 1, "4", "rows: the first N images", NULL},
      {"out", 1, NULL, "output .png", NULL},
      {"target", 1, "pixel", "pixel (similarity of the C5 embedding to --pixel's cell) or probe (a class of --probe)", NULL},
      {"pixel", 1, NULL, "X,Y in the input image (default: the centre)", NULL},
      {"probe", 1, NULL, "linear probe(s) of dsc eval --save-probe: one, or one per weights file", NULL},
      {"class", 1, NULL, "--target probe: a class name of the probe or its index", NULL},
      {"size", 1, "0", "working size; 0: the first image's side when square, else 224", NULL},
      {"cell", 1, "128", "tiles are size x m pixels, m = max(1, cell / size)", NULL},
      {"threads", 1, "0", "CPU threads (0: all cores)", NULL},
      {"allow-partial", 0, NULL, "load the tensors that match; list the others (default: exact match only)", NULL},
  };
  cli_args a = {.command = "viz gradcam", .opts = opts, .n_opts = sizeof opts / sizeof opts[0]};
  if (!st) st = cli_parse(&a, n_rest, rest);
  if (st) {
    cli_report(st);
    rc = 2;
  }
  if (rc < 0 && a.help) {
    cli_print_help(&a, "dsc viz gradcam --weights A[,B...] --input IMAGE_OR_DIR --out FILE.png [--target pixel|probe] [options]",
                   "Grad-CAM heat maps of C5 (docs/viz.md, \"Grad-CAM\"): one row per image, the image then one\n"
                   "column per weights file, the map in jet colours blended 50/50 over the image. Target\n"
                   "pixel: y = mean over C5 cells of cos(A_p, A_p0), p0 the cell of --pixel (marked with a\n"
                   "cross); target probe: y = the --class logit of a linear probe on pooled C5.", stdout);
    rc = 0;
  }
  const char *target = rc < 0 ? cli_get(&a, "target") : NULL;
  char names_copy[4096];
  if (rc < 0) {
    const char *msg = NULL;
    o.input = cli_get(&a, "input"), o.out = cli_get(&a, "out"), o.class_spec = cli_get(&a, "class");
    o.allow_partial = cli_get(&a, "allow-partial") != NULL;
    o.probe_target = !strcmp(target, "probe");
    if (a.n_positional > 1) msg = "gradcam takes no positional arguments";
    else if (o.n_weights == 0) msg = "gradcam needs --weights W[,W2...]";
    else if (!o.input) msg = "gradcam needs --input IMAGE_OR_DIR";
    else if (!o.out) msg = "gradcam needs --out FILE.png";
    else if (strcmp(target, "probe") && strcmp(target, "pixel")) msg = "--target must be pixel or probe";
    else if (o.probe_target && o.n_probes == 0) msg = "--target probe needs --probe FILE";
    else if (o.probe_target && !o.class_spec) msg = "--target probe needs --class NAME_OR_INDEX";
    else if (o.probe_target && cli_get(&a, "pixel")) msg = "--pixel applies to --target pixel only";
    else if (!o.probe_target && (o.n_probes || o.class_spec)) msg = "--probe and --class apply to --target probe only";
    else if (o.n_probes > 1 && o.n_probes != o.n_weights) msg = "--probe: give one probe, or one per weights file";
    if (msg) rc = viz_usage_error(msg);
  }
  if (rc < 0 && cli_get(&a, "pixel")) {
    char tail;
    if (sscanf(cli_get(&a, "pixel"), "%d,%d%c", &o.px, &o.py, &tail) != 2) {
      char msg[300];
      snprintf(msg, sizeof msg, "--pixel=%s: expected X,Y (integers)", cli_get(&a, "pixel"));
      rc = viz_usage_error(msg);
    }
    o.has_pixel = 1;
  }
  if (rc < 0 && cli_get(&a, "names")) {
    snprintf(names_copy, sizeof names_copy, "%s", cli_get(&a, "names"));
    dsc_status *nst = add_items("names", names_copy, o.names, &o.n_names);
    if (!nst && o.n_names != o.n_weights)
      nst = dsc_errorf("--names gives %d name(s) for %d weights file(s)", o.n_names, o.n_weights);
    if (nst) {
      cli_report(nst);
      rc = 2;
    }
  }
  if (rc < 0 && (cli_report(cli_get_int(&a, "max-images", 1, GRADCAM_MAX_IMAGES, &o.max_images)) ||
                 cli_report(cli_get_int(&a, "size", 0, 4096, &o.size)) ||
                 cli_report(cli_get_int(&a, "cell", 1, 4096, &o.cell)) ||
                 cli_report(cli_get_int(&a, "threads", 0, 4096, &o.threads))))
    rc = 2;
  if (rc < 0 && o.size && o.size < 16) rc = viz_usage_error("--size must be 0 or at least 16");
  if (rc < 0) rc = cli_report(viz_gradcam(&o));
  for (int i = 0; i < n_copies; i++) free(copies[i]);
  free(copies), free(rest);
  return rc;
}

int cmd_viz(int argc, char **argv) {
  if (argc < 1 || !strcmp(argv[0], "--help") || !strcmp(argv[0], "-h")) {
    printf("usage: %s\n\n"
           "Pictures as PNG files (docs/viz.md):\n"
           "  curves  loss curves of runs from their metrics.jsonl\n"
           "  maps    image, mask, PCA-to-RGB and k-means maps of C5 features per weights file\n"
           "  gradcam Grad-CAM heat maps of C5 (a pixel's dense similarity or a probe class) per weights file\n"
           "See dsc viz curves --help, dsc viz maps --help, dsc viz gradcam --help.\n",
           VIZ_USAGE);
    return argc < 1 ? 2 : 0;
  }
  if (!strcmp(argv[0], "curves")) return cmd_viz_curves(argc, argv);
  if (!strcmp(argv[0], "maps")) return cmd_viz_maps(argc - 1, argv + 1);
  if (!strcmp(argv[0], "gradcam")) return cmd_viz_gradcam(argc - 1, argv + 1);
  char msg[256];
  snprintf(msg, sizeof msg, "unknown subcommand \"%s\" (curves, maps, gradcam)", argv[0]);
  return viz_usage_error(msg);
}
