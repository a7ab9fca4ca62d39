/* cmd_viz.c: `dsc viz curves` (loss curves of runs from their metrics.jsonl) and `dsc viz maps`
 * (for a few validation images of a seg-layout dataset: the image, its mask, and for each
 * weights file a PCA-to-RGB map and a k-means cluster map of the dense C5 features, plus the
 * dense-probe prediction with --probe), written as PNG files (docs/viz.md).
 *
 * Features come from include/dsc/features.h (the eval forward of `dsc eval`, same transform
 * and sizes), the probe from include/dsc/eval.h, the drawing from include/dsc/viz.h. The
 * output bytes depend only on the inputs and the thread count.
 */
#include <errno.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/args.h"
#include "cli/cmd_viz.h"
#include "cli/commands.h"
#include "dsc/config.h"
#include "dsc/eval.h"
#include "dsc/features.h"
#include "dsc/image.h"
#include "dsc/image_write.h"
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
    "       dsc viz maps --data DIR --weights W [--weights W2 ...] --out FILE.png [options]";

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

int cmd_viz(int argc, char **argv) {
  if (argc < 1 || !strcmp(argv[0], "--help") || !strcmp(argv[0], "-h")) {
    printf("usage: %s\n\n"
           "Pictures as PNG files (docs/viz.md):\n"
           "  curves  loss curves of runs from their metrics.jsonl\n"
           "  maps    image, mask, PCA-to-RGB and k-means maps of C5 features per weights file\n"
           "See dsc viz curves --help, dsc viz maps --help.\n",
           VIZ_USAGE);
    return argc < 1 ? 2 : 0;
  }
  if (!strcmp(argv[0], "curves")) return cmd_viz_curves(argc, argv);
  if (!strcmp(argv[0], "maps")) return cmd_viz_maps(argc - 1, argv + 1);
  char msg[256];
  snprintf(msg, sizeof msg, "unknown subcommand \"%s\" (curves, maps)", argv[0]);
  return viz_usage_error(msg);
}
