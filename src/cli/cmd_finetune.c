/* cmd_finetune.c: `dsc finetune seg` — FCN semantic-segmentation fine-tuning of a backbone (the
 * paper's VOC/Cityscapes transfer protocol, METHOD.md §7; docs/finetune.md), with mmsegmentation's
 * FCN-R50-D8 schedules as defaults scaled to the batch:
 *
 *   VOC (format seg):       batch 16, 20000 iterations, lr 0.01, crop 512x512, img_scale 2048x512
 *   Cityscapes:             batch 8,  40000 iterations, lr 0.01, crop 1024x512, img_scale 2048x1024
 *
 * With another batch B the schedule keeps the images seen and the lr per image: iterations =
 * reference iterations x reference batch / B, lr and min_lr x B / reference batch. SGD (momentum
 * 0.9, weight decay 5e-4 on every parameter, no Nesterov), poly decay (power 0.9) to min_lr 1e-4.
 *
 * The run folder (--out): options.json (every resolved option), metrics.jsonl (training lines and
 * evaluation lines), checkpoint.safetensors (model, SGD momentum, metadata: every option as
 * "finetune.<option>", step, total_steps), eval.json (the last evaluation: mIoU, per-class IoU,
 * pixel accuracy). --resume continues exactly from the checkpoint: the batches (seg_data.h), the
 * dropout masks (fcn.h) and the learning rate are functions of the step. SIGINT / SIGTERM: the
 * current step finishes, a checkpoint is written, exit status 130; --stop-at N does the same after
 * step N deterministically (exit 0), to split a run into jobs and for tests. The signal flag is the one piece
 * of process-global state, as a signal handler needs. */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/run_folder.h"
#include "cli/synthetic.h"
#include "dsc/eval.h"
#include "dsc/fcn.h"
#include "dsc/seg_data.h"
#include "dsc/weights.h"

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig) {
  (void)sig;
  stop_requested = 1;
}

static const char *const voc_names[21] = {
    "background", "aeroplane", "bicycle", "bird",  "boat",        "bottle", "bus",
    "car",        "cat",       "chair",   "cow",   "diningtable", "dog",    "horse",
    "motorbike",  "person",    "pottedplant", "sheep", "sofa",    "train",  "tvmonitor"};
static const char *const cityscapes_names[19] = {
    "road",  "sidewalk", "building",   "wall",   "fence", "pole",   "traffic light",
    "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
    "truck", "bus",      "train",      "motorcycle", "bicycle"};

/* Every option after resolution. */
typedef struct ft_opts {
  const char *data, *out, *weights, *train_split, *val_split, *device, *precision;
  dsc_dataset_format format;
  int depth, small_stem, dilated, classes, channels, batch, threads, workers;
  double dropout, lr, min_lr, power, momentum, wd;
  int64_t iters, eval_every, ckpt_every, log_every, max_val, stop_at;
  dsc_seg_aug_config aug;
  int slide, eval_crop_w, eval_crop_h, eval_stride_w, eval_stride_h, test_w, test_h;
  uint64_t seed;
  int strict, allow_partial, quiet, resume;
} ft_opts;

/* Options recorded in the checkpoint (resume takes them from there unless given again). */
static const char *const recorded[] = {
    "data", "format", "train-split", "val-split", "weights", "arch", "stem", "dilated", "classes",
    "channels", "dropout", "batch", "iters", "lr", "min-lr", "power", "momentum", "wd", "crop",
    "scale", "ratio", "cat-max-ratio", "flip", "photometric", "eval-mode", "eval-crop",
    "eval-stride", "test-scale", "eval-every", "ckpt-every", "log-every", "max-val", "seed",
    "strict", "allow-partial"};
#define N_RECORDED (sizeof recorded / sizeof recorded[0])

static cli_option *find_opt(cli_args *a, const char *name) {
  for (int i = 0; i < a->n_opts; i++)
    if (!strcmp(a->opts[i].name, name)) return &a->opts[i];
  return NULL;
}

static int given(cli_args *a, const char *name) {
  cli_option *o = find_opt(a, name);
  return o && o->value && o->value != o->def;
}

/* "W" or "WxH" (width x height) in [lo, hi]. */
static dsc_status *parse_wh(const cli_args *a, const char *name, int lo, int hi, int *w, int *h) {
  const char *v = cli_get(a, name);
  char *end;
  long x = strtol(v, &end, 10), y = x;
  if (end != v && (*end == 'x' || *end == 'X')) {
    const char *s = end + 1;
    y = strtol(s, &end, 10);
    if (end == s) end = (char *)s - 1;
  }
  if (end == v || *end || x < lo || x > hi || y < lo || y > hi)
    return dsc_errorf("dsc finetune seg: --%s=%s: expected a size S or WxH with sides in [%d, %d]", name, v, lo, hi);
  *w = (int)x, *h = (int)y;
  return NULL;
}

static dsc_status *get_prob(const cli_args *a, const char *name, double lo, double hi, int hi_open, double *out) {
  DSC_TRY(cli_get_double(a, name, out));
  if (!(*out >= lo && (hi_open ? *out < hi : *out <= hi)))
    return dsc_errorf("dsc finetune seg: --%s=%s: expected a value in [%g, %g%s", name, cli_get(a, name), lo, hi,
                      hi_open ? ")" : "]");
  return NULL;
}

/* The format's reference schedule (the header comment). */
typedef struct preset {
  int batch, classes;
  int64_t iters;
  dsc_seg_aug_config aug;
} preset;

static preset preset_of(dsc_dataset_format f) {
  if (f == DSC_DATASET_CITYSCAPES) return (preset){8, DSC_CITYSCAPES_CLASSES, 40000, dsc_seg_aug_config_cityscapes()};
  return (preset){16, 21, 20000, dsc_seg_aug_config_voc()};
}

static int dir_has(const char *dir, const char *rel) {
  char p[4096];
  snprintf(p, sizeof p, "%s/%s", dir, rel);
  return cli_file_exists(p);
}

/* Sets an "auto" option to a computed value (the string lives in `pool`). */
static void set_value(cli_args *a, const char *name, const char *value, char pool[][64], int *used) {
  cli_option *o = find_opt(a, name);
  snprintf(pool[*used], 64, "%s", value);
  o->value = pool[(*used)++];
}

/* Non-empty lines of DIR/name (0 when it cannot be read). */
static int count_lines(const char *dir, const char *name) {
  char p[4200], line[256];
  snprintf(p, sizeof p, "%s/%s", dir, name);
  FILE *f = fopen(p, "r");
  int n = 0;
  while (f && fgets(line, sizeof line, f))
    if (line[0] != '\n' && line[0] != '\r') n++;
  if (f) fclose(f);
  return n;
}

static int is_auto(const cli_args *a, const char *name) { return strcmp(cli_get(a, name), "auto") == 0; }

/* Resolves every option into `o`. The "auto" defaults depend on the format and the batch. */
static dsc_status *resolve(cli_args *a, ft_opts *o, char pool[][64], int *used) {
  memset(o, 0, sizeof *o);
  o->data = cli_get(a, "data");
  if (!o->data) return dsc_errorf("dsc finetune seg needs --data DIR (a VOC-layout or Cityscapes-layout dataset)");
  o->out = cli_get(a, "out");
  o->weights = cli_get(a, "weights");
  if (!o->weights)
    return dsc_errorf("dsc finetune seg needs --weights (a dsc checkpoint or export, torchvision ResNet weights "
                      ".safetensors/.pth, or random)");
  char buf[64];
  if (is_auto(a, "format"))
    set_value(a, "format", dir_has(o->data, "leftImg8bit") ? "cityscapes" : "seg", pool, used);
  DSC_TRY(dsc_status_wrap(dsc_dataset_format_parse(cli_get(a, "format"), &o->format), "--format"));
  if (o->format != DSC_DATASET_SEG && o->format != DSC_DATASET_CITYSCAPES)
    return dsc_errorf("dsc finetune seg: --format=%s: expected seg (PASCAL VOC layout) or cityscapes", cli_get(a, "format"));
  preset p = preset_of(o->format);
  if (is_auto(a, "train-split")) {
    const char *s = "train";
    if (o->format == DSC_DATASET_SEG && (dir_has(o->data, "ImageSets/Segmentation/trainaug.txt") ||
                                         dir_has(o->data, "ImageSets/Segmentation/aug.txt")))
      s = "trainaug";
    set_value(a, "train-split", s, pool, used);
  }
  o->train_split = cli_get(a, "train-split");
  o->val_split = cli_get(a, "val-split");

  /* The backbone: from the weights file, or --arch/--stem for random. */
  const char *arch = cli_get(a, "arch"), *stem = cli_get(a, "stem");
  if (is_auto(a, "arch") || is_auto(a, "stem")) {
    dsc_resnet_config found = {50, 0};
    if (strcmp(o->weights, "random") != 0) {
      dsc_safetensors *f = NULL;
      const char *prefix;
      DSC_TRY(dsc_status_wrap(dsc_weights_open(o->weights, &f), "--weights"));
      dsc_status *st = dsc_weights_detect_resnet(f, &found, &prefix);
      dsc_st_close(f);
      DSC_TRY(dsc_status_wrap(st, "--weights"));
    }
    snprintf(buf, sizeof buf, "resnet%d", found.depth);
    if (is_auto(a, "arch")) set_value(a, "arch", buf, pool, used);
    if (is_auto(a, "stem")) set_value(a, "stem", found.small_stem ? "small" : "standard", pool, used);
    arch = cli_get(a, "arch"), stem = cli_get(a, "stem");
  }
  if (!(o->depth = dsc_resnet_depth_from_name(arch)))
    return dsc_errorf("dsc finetune seg: --arch=%s: expected resnet18, resnet34 or resnet50", arch);
  if (!strcmp(stem, "small")) o->small_stem = 1;
  else if (!strcmp(stem, "standard")) o->small_stem = 0;
  else return dsc_errorf("dsc finetune seg: --stem=%s: expected standard or small", stem);
  if (is_auto(a, "dilated")) set_value(a, "dilated", o->depth == 50 ? "1" : "0", pool, used);
  long v;
  DSC_TRY(cli_get_int(a, "dilated", 0, 1, &v));
  o->dilated = (int)v;
  if (o->dilated && o->depth != 50)
    return dsc_errorf("dsc finetune seg: --dilated=1 needs bottleneck blocks (resnet50); resnet%d's basic blocks "
                      "cannot dilate (as torchvision): use --dilated 0", o->depth);

  if (is_auto(a, "classes")) {
    int lines = count_lines(o->data, "classes.txt");
    snprintf(buf, sizeof buf, "%d", lines >= 2 && lines <= 254 ? lines : p.classes);
    set_value(a, "classes", buf, pool, used);
  }
  DSC_TRY(cli_get_int(a, "classes", 2, 254, &v));
  o->classes = (int)v;
  DSC_TRY(cli_get_int(a, "channels", 1, 8192, &v));
  o->channels = (int)v;
  DSC_TRY(get_prob(a, "dropout", 0, 1, 1, &o->dropout));

  if (is_auto(a, "batch")) {
    snprintf(buf, sizeof buf, "%d", p.batch);
    set_value(a, "batch", buf, pool, used);
  }
  DSC_TRY(cli_get_int(a, "batch", 1, 65536, &v));
  o->batch = (int)v;
  const double batch_ratio = (double)o->batch / p.batch;
  if (is_auto(a, "iters")) {
    snprintf(buf, sizeof buf, "%lld", (long long)llround((double)p.iters / batch_ratio));
    set_value(a, "iters", buf, pool, used);
  }
  DSC_TRY(cli_get_int(a, "iters", 1, 1L << 40, &v));
  o->iters = v;
  if (is_auto(a, "lr")) {
    snprintf(buf, sizeof buf, "%.9g", 0.01 * batch_ratio);
    set_value(a, "lr", buf, pool, used);
  }
  if (is_auto(a, "min-lr")) {
    snprintf(buf, sizeof buf, "%.9g", 1e-4 * batch_ratio);
    set_value(a, "min-lr", buf, pool, used);
  }
  DSC_TRY(get_prob(a, "lr", 0, 100, 0, &o->lr));
  DSC_TRY(get_prob(a, "min-lr", 0, o->lr, 0, &o->min_lr));
  DSC_TRY(get_prob(a, "power", 0, 100, 0, &o->power));
  DSC_TRY(get_prob(a, "momentum", 0, 1, 1, &o->momentum));
  DSC_TRY(get_prob(a, "wd", 0, 1, 0, &o->wd));
  if (!(o->lr > 0)) return dsc_errorf("dsc finetune seg: --lr=%s: expected a learning rate > 0", cli_get(a, "lr"));

  o->aug = p.aug;
  if (is_auto(a, "crop")) {
    snprintf(buf, sizeof buf, "%dx%d", p.aug.crop_w, p.aug.crop_h);
    set_value(a, "crop", buf, pool, used);
  }
  DSC_TRY(parse_wh(a, "crop", 16, 16384, &o->aug.crop_w, &o->aug.crop_h));
  if (is_auto(a, "scale")) {
    snprintf(buf, sizeof buf, "%dx%d", p.aug.scale_w, p.aug.scale_h);
    set_value(a, "scale", buf, pool, used);
  }
  DSC_TRY(parse_wh(a, "scale", 1, 1 << 20, &o->aug.scale_w, &o->aug.scale_h));
  {
    const char *r = cli_get(a, "ratio");
    char *end;
    double lo = strtod(r, &end), hi = lo;
    if (end != r && *end == ',') hi = strtod(end + 1, &end);
    if (end == r || *end || !(lo > 0) || !(hi >= lo) || hi > 64)
      return dsc_errorf("dsc finetune seg: --ratio=%s: expected MIN,MAX with 0 < MIN <= MAX <= 64", r);
    o->aug.ratio_min = lo, o->aug.ratio_max = hi;
  }
  DSC_TRY(get_prob(a, "cat-max-ratio", 0, 1, 0, &o->aug.cat_max_ratio));
  DSC_TRY(get_prob(a, "flip", 0, 1, 0, &o->aug.flip_prob));
  DSC_TRY(cli_get_int(a, "photometric", 0, 1, &v));
  o->aug.photometric = (int)v;

  const char *mode = cli_get(a, "eval-mode");
  if (!strcmp(mode, "slide")) o->slide = 1;
  else if (strcmp(mode, "whole") != 0)
    return dsc_errorf("dsc finetune seg: --eval-mode=%s: expected whole or slide", mode);
  if (is_auto(a, "eval-crop")) set_value(a, "eval-crop", cli_get(a, "crop"), pool, used);
  DSC_TRY(parse_wh(a, "eval-crop", 16, 16384, &o->eval_crop_w, &o->eval_crop_h));
  if (is_auto(a, "eval-stride")) {
    snprintf(buf, sizeof buf, "%dx%d", o->eval_crop_w * 2 / 3, o->eval_crop_h * 2 / 3);
    set_value(a, "eval-stride", buf, pool, used);
  }
  DSC_TRY(parse_wh(a, "eval-stride", 1, 16384, &o->eval_stride_w, &o->eval_stride_h));
  if (is_auto(a, "test-scale")) set_value(a, "test-scale", cli_get(a, "scale"), pool, used);
  if (!strcmp(cli_get(a, "test-scale"), "0")) o->test_w = o->test_h = 0;
  else DSC_TRY(parse_wh(a, "test-scale", 1, 1 << 20, &o->test_w, &o->test_h));

  if (is_auto(a, "eval-every")) {
    snprintf(buf, sizeof buf, "%lld", (long long)(o->iters >= 10 ? o->iters / 10 : o->iters));
    set_value(a, "eval-every", buf, pool, used);
  }
  DSC_TRY(cli_get_int(a, "eval-every", 0, 1L << 40, &v));
  o->eval_every = v;
  if (is_auto(a, "ckpt-every")) set_value(a, "ckpt-every", cli_get(a, "eval-every"), pool, used);
  DSC_TRY(cli_get_int(a, "ckpt-every", 0, 1L << 40, &v));
  o->ckpt_every = v;
  DSC_TRY(cli_get_int(a, "log-every", 1, 1L << 40, &v));
  o->log_every = v;
  DSC_TRY(cli_get_int(a, "max-val", 0, 1L << 40, &v));
  o->max_val = v;
  DSC_TRY(cli_get_int(a, "stop-at", 0, 1L << 40, &v));
  o->stop_at = v;
  DSC_TRY(cli_get_int(a, "seed", 0, 0x7fffffffL, &v));
  o->seed = (uint64_t)v;
  DSC_TRY(cli_get_int(a, "threads", 0, 4096, &v));
  o->threads = (int)v;
  DSC_TRY(cli_get_int(a, "workers", 0, 4096, &v));
  o->workers = (int)v;
  o->device = cli_get(a, "device");
  o->precision = cli_get(a, "precision");
  o->strict = cli_get(a, "strict") != NULL;
  o->allow_partial = cli_get(a, "allow-partial") != NULL;
  o->quiet = cli_get(a, "quiet") != NULL;
  o->resume = cli_get(a, "resume") != NULL;
  return NULL;
}

/* ---- the run ---- */

typedef struct ft_run {
  cli_args *args;
  ft_opts o;
  dsc_dataset *train, *val;
  dsc_backend *be;
  dsc_fcn model;
  int model_ready;
  dsc_seg_feeder *feeder;
  float *x_dev;     /* one training batch on the backend */
  float *host_momentum;
  FILE *metrics;
  char ckpt[4096];
  int64_t per_epoch;
  const char *const *names;
  char **file_names; /* DIR/classes.txt's lines when it names every class */
} ft_run;

/* DIR/classes.txt (written by dsc data scenes; one name a line, index = label) when it has at least
 * `classes` lines; NULL otherwise. */
static char **read_class_names(const char *dir, int classes) {
  char path[4200];
  snprintf(path, sizeof path, "%s/classes.txt", dir);
  FILE *f = fopen(path, "r");
  if (!f) return NULL;
  char **names = calloc((size_t)classes, sizeof *names), line[256];
  int n = 0;
  while (names && n < classes && fgets(line, sizeof line, f)) {
    line[strcspn(line, "\r\n")] = 0;
    names[n++] = strdup(line);
  }
  fclose(f);
  if (names && n < classes) {
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    names = NULL;
  }
  return names;
}

static void warn_to_stderr(void *ctx, const char *msg) {
  (void)ctx;
  fprintf(stderr, "\ndsc: warning: %s\n", msg);
}

static const char *class_name(const ft_run *r, int k, char *buf, size_t cap) {
  if (r->names) return r->names[k];
  snprintf(buf, cap, "class%d", k);
  return buf;
}

static dsc_status *save(ft_run *r, int64_t step, double lr) {
  DSC_TRY(dsc_fcn_download(&r->model, r->host_momentum));
  dsc_st_writer *w = NULL;
  DSC_TRY(dsc_st_writer_new(&w));
  char v[64], key[96];
  dsc_status *st = NULL;
  for (size_t i = 0; !st && i < N_RECORDED; i++) {
    const char *val = cli_get(r->args, recorded[i]);
    snprintf(key, sizeof key, "finetune.%s", recorded[i]);
    st = dsc_st_writer_meta(w, key, val ? val : (find_opt(r->args, recorded[i])->takes_value ? "" : "0"));
  }
#define META(k, ...) \
  if (!st) { snprintf(v, sizeof v, __VA_ARGS__); st = dsc_st_writer_meta(w, k, v); }
  META("kind", "finetune-seg");
  META("dsc_version", "%s", DSC_VERSION);
  META("step", "%" PRId64, step);
  META("total_steps", "%" PRId64, r->o.iters);
  META("lr_step", "%.9g", lr);
  META("rng", "philox4x32-10 seed=%" PRIu64 " step=%" PRId64, r->o.seed, step);
#undef META
  if (!st) st = dsc_fcn_add_tensors(&r->model, w, r->host_momentum);
  if (!st) st = dsc_st_writer_save(w, r->ckpt);
  dsc_st_writer_free(w);
  return st;
}

/* Evaluates on the val split (dsc_fcn_evaluate) and prints the scores when `print`. */
static dsc_status *evaluate(ft_run *r, int64_t step, dsc_seg_scores *scores, int print) {
  const ft_opts *o = &r->o;
  dsc_fcn_eval_config ec = {o->slide, o->eval_crop_w, o->eval_crop_h, o->eval_stride_w, o->eval_stride_h,
                            o->test_w, o->test_h, o->max_val, o->strict, !o->quiet && isatty(2),
                            (int64_t)o->batch * o->aug.crop_w * o->aug.crop_h};
  double t0 = synthetic_now_s();
  DSC_TRY(dsc_status_wrap(dsc_fcn_evaluate(&r->model, r->val, &ec, scores), "evaluation at step %lld", (long long)step));
  if (print) {
    char buf[32];
    printf("step %lld: mIoU %.2f  pixel accuracy %.2f  (%s split %s, %s inference, %.1f s)\n", (long long)(step + 1),
           100 * scores->miou, 100 * scores->pixel_acc, o->data, o->val_split, o->slide ? "slide" : "whole",
           synthetic_now_s() - t0);
    for (int k = 0; k < scores->classes; k++)
      printf("  %-16s %6.2f\n", class_name(r, k, buf, sizeof buf), 100 * scores->iou[k]);
  }
  return NULL;
}

static json_t *json_num(double v) { return isfinite(v) ? json_real(v) : json_null(); }

static dsc_status *write_eval(ft_run *r, int64_t step, const dsc_seg_scores *s) {
  if (r->metrics) {
    fprintf(r->metrics, "{\"step\": %lld, \"eval\": true, \"miou\": %.9g, \"pixel_acc\": %.9g}\n", (long long)step,
            s->miou, s->pixel_acc);
    fflush(r->metrics);
  }
  json_t *root = json_object(), *iou = json_object();
  char buf[32];
  for (int k = 0; k < s->classes; k++) json_object_set_new(iou, class_name(r, k, buf, sizeof buf), json_num(s->iou[k]));
  json_object_set_new(root, "step", json_integer(step + 1));
  json_object_set_new(root, "miou", json_num(s->miou));
  json_object_set_new(root, "pixel_acc", json_num(s->pixel_acc));
  json_object_set_new(root, "iou", iou);
  json_object_set_new(root, "classes", json_integer(s->classes));
  json_object_set_new(root, "valid_classes", json_integer(s->valid_classes));
  json_object_set_new(root, "labeled_pixels", json_integer(s->labeled));
  json_object_set_new(root, "split", json_string(r->o.val_split));
  json_object_set_new(root, "mode", json_string(r->o.slide ? "slide" : "whole"));
  char path[4200], tmp[4300];
  snprintf(path, sizeof path, "%s/eval.json", r->o.out);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  int bad = json_dump_file(root, tmp, JSON_INDENT(2)) != 0;
  json_decref(root);
  if (bad || rename(tmp, path) != 0) return dsc_errorf("cannot write %s: %s", path, strerror(errno));
  return NULL;
}

static dsc_status *write_options(ft_run *r) {
  json_t *root = json_object();
  for (int i = 0; i < r->args->n_opts; i++) {
    const cli_option *o = &r->args->opts[i];
    if (o->takes_value) json_object_set_new(root, o->name, o->value ? json_string(o->value) : json_null());
    else json_object_set_new(root, o->name, json_boolean(o->value != NULL));
  }
  char path[4200];
  snprintf(path, sizeof path, "%s/options.json", r->o.out);
  int bad = json_dump_file(root, path, JSON_INDENT(2)) != 0;
  json_decref(root);
  return bad ? dsc_errorf("cannot write %s", path) : NULL;
}

/* Every label of the batch is < --classes or 255; the error names the image file and the pixel. */
static dsc_status *check_batch_labels(const ft_run *r, const dsc_seg_batch *b) {
  const size_t npx = (size_t)b->h * b->w;
  for (int k = 0; k < b->n; k++)
    for (size_t p = 0; p < npx; p++) {
      uint8_t v = b->labels[k * npx + p];
      if (v != 255 && v >= r->o.classes)
        return dsc_errorf("%s: label %d (in the augmented crop at x %zu, y %zu), but --classes=%d (labels 0..%d, "
                          "255 = ignore)", dsc_dataset_name(r->train, b->indices[k]), v, p % (size_t)b->w,
                          p / (size_t)b->w, r->o.classes, r->o.classes - 1);
    }
  return NULL;
}

static dsc_status *run(ft_run *r, int *interrupted) {
  ft_opts *o = &r->o;
  dsc_dataset_config tc = {o->data, o->format, o->train_split, 0};
  DSC_TRY(dsc_status_wrap(dsc_dataset_open(&tc, &r->train), "--data %s (split %s)", o->data, o->train_split));
  if (o->eval_every >= 0 && strcmp(o->val_split, "none") != 0) {
    dsc_dataset_config vc = {o->data, o->format, o->val_split, 0};
    DSC_TRY(dsc_status_wrap(dsc_dataset_open(&vc, &r->val), "--data %s (split %s; --val-split none skips evaluation)",
                            o->data, o->val_split));
  }
  size_t images = dsc_dataset_size(r->train);
  if ((size_t)o->batch > images)
    return dsc_errorf("--batch=%d is larger than the %zu images of %s (split %s)", o->batch, images, o->data,
                      o->train_split);
  r->file_names = read_class_names(o->data, o->classes);
  r->names = r->file_names ? (const char *const *)r->file_names
             : o->format == DSC_DATASET_CITYSCAPES && o->classes == 19 ? cityscapes_names
             : o->format == DSC_DATASET_SEG && o->classes == 21   ? voc_names
                                                                   : NULL;

  DSC_TRY(dsc_backend_open(o->device, o->precision, o->threads, &r->be));
  dsc_fcn_config fc = {{o->depth, o->small_stem}, {{0}, {0}}, o->channels, o->classes, (float)o->dropout};
  if (o->dilated) dsc_resnet_layout_dilated8(&fc.layout);
  DSC_TRY(dsc_fcn_create(&r->model, r->be, &fc, o->seed));
  r->model_ready = 1;
  r->host_momentum = calloc(r->model.table.param_numel, sizeof(float));
  if (!r->host_momentum) return dsc_errorf("out of memory");

  int64_t start = 0;
  if (o->resume) {
    dsc_safetensors *f = NULL;
    DSC_TRY(dsc_st_open(r->ckpt, &f));
    const char *s = dsc_st_meta(f, "step");
    dsc_status *st = s ? NULL : dsc_errorf("%s: no metadata \"step\"", r->ckpt);
    if (!st) start = strtoll(s, NULL, 10);
    if (!st) st = dsc_fcn_read_tensors(&r->model, f, r->host_momentum);
    dsc_st_close(f);
    DSC_TRY(dsc_status_wrap(st, "--resume"));
    fprintf(stderr, "dsc: resuming %s at step %lld of %lld\n", r->ckpt, (long long)start, (long long)o->iters);
  } else if (strcmp(o->weights, "random") != 0) {
    DSC_TRY(dsc_status_wrap(dsc_fcn_load_backbone(&r->model, o->weights, o->allow_partial), "--weights"));
  }

  char path[4200];
  snprintf(path, sizeof path, "%s/metrics.jsonl", o->out);
  DSC_TRY(cli_metrics_truncate(path, start));
  r->metrics = fopen(path, "a");
  if (!r->metrics) return dsc_errorf("cannot open %s: %s", path, strerror(errno));
  DSC_TRY(write_options(r));
  if (start >= o->iters) {
    fprintf(stderr, "dsc: %s is already at step %lld of %lld: nothing to train\n", r->ckpt, (long long)start,
            (long long)o->iters);
  }

  int workers = o->workers > 0 ? o->workers : o->threads > 0 ? o->threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
  dsc_seg_feeder_config sc = {o->batch, workers, o->seed, o->strict, o->aug, warn_to_stderr, NULL};
  DSC_TRY(dsc_seg_feeder_open(r->train, &sc, &r->feeder));
  r->per_epoch = dsc_seg_feeder_batches_per_epoch(r->feeder);
  const size_t xbytes = (size_t)o->batch * o->aug.crop_h * o->aug.crop_w * 3 * sizeof(float);
  DSC_TRY(r->be->alloc(r->be, xbytes, (void **)&r->x_dev));
  if (!o->quiet)
    fprintf(stderr, "dsc: fine-tuning %s (resnet%d%s, %s) on %s split %s: %zu images, %d classes, batch %d, "
            "%lld iterations, lr %.4g poly -> %.3g, crop %dx%d\n", o->weights, o->depth, o->dilated ? "-D8" : "",
            r->be->name, o->data, o->train_split, images, o->classes, o->batch, (long long)o->iters, o->lr,
            o->min_lr, o->aug.crop_w, o->aug.crop_h);

  const dsc_sgd_config sgd = {(float)o->momentum, (float)o->wd, 0};
  int tty = !o->quiet && isatty(2);
  double t_start = synthetic_now_s(), t_window = t_start, data_time = 0, lr = 0;
  double loss_first = NAN, loss_last = NAN;
  int64_t imgs_since = 0, last_saved = start;
  for (int64_t s = start; s < o->iters; s++) {
    double t0 = synthetic_now_s();
    const dsc_seg_batch *b = NULL;
    DSC_TRY(dsc_seg_feeder_get(r->feeder, s, &b));
    data_time += synthetic_now_s() - t0;
    lr = dsc_poly_lr(o->lr, o->min_lr, o->power, s, o->iters);
    dsc_fcn_step_info info;
    dsc_status *st = check_batch_labels(r, b);
    if (!st) st = r->be->upload(r->be, r->x_dev, b->images, (size_t)b->n * b->h * b->w * 3 * sizeof(float));
    if (!st) st = dsc_fcn_train_step(&r->model, r->x_dev, b->labels, b->n, b->h, b->w, s, o->seed, &sgd, lr, &info);
    if (st && (last_saved > 0 || o->resume))
      return dsc_status_wrap(st, "step %lld; the last good checkpoint is %s (step %lld)", (long long)s, r->ckpt,
                             (long long)last_saved);
    if (st) return dsc_status_wrap(st, "step %lld (no checkpoint written yet)", (long long)s);
    if (s == start) loss_first = info.loss;
    loss_last = info.loss;
    imgs_since += b->n;
    double now = synthetic_now_s();
    int last = s + 1 == o->iters;
    if ((s + 1) % o->log_every == 0 || last || s == start) {
      double ips = imgs_since / fmax(now - t_window, 1e-9);
      fprintf(r->metrics,
              "{\"step\": %lld, \"epoch\": %lld, \"lr\": %.9g, \"loss\": %.9g, \"labeled\": %lld, \"img_per_s\": %.3f, "
              "\"data_time\": %.6f, \"time\": %.3f}\n",
              (long long)s, (long long)(s / r->per_epoch), lr, info.loss, (long long)info.labeled, ips, data_time,
              now - t_start);
      fflush(r->metrics);
      double eta = cli_eta(now - t_start, s + 1 - start, s + 1, o->iters);
      if (tty) {
        cli_progress_bar(stderr, s + 1, o->iters, ips, eta, info.loss);
      } else if (!o->quiet) {
        char eta_s[32];
        cli_format_duration(eta, eta_s, sizeof eta_s);
        fprintf(stderr, "step %lld/%lld lr %.4g loss %.4f %.1f img/s ETA %s\n", (long long)(s + 1),
                (long long)o->iters, lr, info.loss, ips, eta_s);
      }
      t_window = now;
      imgs_since = 0;
      data_time = 0;
    }
    int do_eval = r->val && ((o->eval_every > 0 && (s + 1) % o->eval_every == 0) || last);
    int stop_here = o->stop_at > 0 && s + 1 == o->stop_at && !last;
    int do_save = (o->ckpt_every > 0 && (s + 1) % o->ckpt_every == 0) || last || stop_requested || stop_here;
    if (do_save) {
      DSC_TRY(save(r, s + 1, lr));
      last_saved = s + 1;
    }
    if (do_eval) {
      if (tty) fputc('\n', stderr);
      dsc_seg_scores sc_ = {0};
      DSC_TRY(evaluate(r, s, &sc_, last));
      if (!last && !o->quiet)
        fprintf(stderr, "dsc: step %lld: mIoU %.2f pixel accuracy %.2f on %s\n", (long long)(s + 1), 100 * sc_.miou,
                100 * sc_.pixel_acc, o->val_split);
      dsc_status *st2 = write_eval(r, s, &sc_);
      dsc_seg_scores_free(&sc_);
      DSC_TRY(st2);
    }
    if (stop_requested && !last) {
      if (tty) fputc('\n', stderr);
      fprintf(stderr, "dsc: interrupted: saved %s at step %lld; continue with --resume\n", r->ckpt, (long long)(s + 1));
      *interrupted = 1;
      return NULL;
    }
    if (stop_here) {
      if (tty) fputc('\n', stderr);
      fprintf(stderr, "dsc: stopped at step %lld (--stop-at): saved %s; continue with --resume\n", (long long)(s + 1),
              r->ckpt);
      return NULL;
    }
  }
  if (tty) fputc('\n', stderr);
  if (!o->quiet && start < o->iters) {
    fprintf(stderr, "dsc: done: %lld steps in %.1f s, loss %.4f at step %lld -> %.4f at step %lld\n",
            (long long)(o->iters - start), synthetic_now_s() - t_start, loss_first, (long long)start, loss_last,
            (long long)(o->iters - 1));
    fprintf(stderr, "  checkpoint  %s (backbone.* and decode_head.*; dsc export takes the backbone)\n"
            "  metrics     %s/metrics.jsonl\n%s%s%s", r->ckpt, o->out, r->val ? "  eval        " : "",
            r->val ? o->out : "", r->val ? "/eval.json\n" : "");
  }
  size_t bad = dsc_seg_feeder_bad_count(r->feeder);
  for (size_t i = 0; i < bad; i++) {
    const char *p, *why;
    dsc_seg_feeder_bad_file(r->feeder, i, &p, &why);
    fprintf(stderr, "  skipped %s: %s\n", p, why);
  }
  return NULL;
}

/* --resume: the options not given on this command line come from the checkpoint's metadata. */
static dsc_status *resume_options(cli_args *a, const char *ckpt, char ***owned, int *n_owned) {
  dsc_safetensors *f = NULL;
  DSC_TRY(dsc_status_wrap(dsc_st_open(ckpt, &f), "--resume"));
  const char *kind = dsc_st_meta(f, "kind");
  dsc_status *st = kind && !strcmp(kind, "finetune-seg")
                       ? NULL
                       : dsc_errorf("--resume: %s is not a dsc finetune seg checkpoint", ckpt);
  *owned = calloc(N_RECORDED, sizeof **owned);
  if (!st && !*owned) st = dsc_errorf("out of memory");
  char key[96];
  for (size_t i = 0; !st && i < N_RECORDED; i++) {
    snprintf(key, sizeof key, "finetune.%s", recorded[i]);
    const char *v = dsc_st_meta(f, key);
    cli_option *o = find_opt(a, recorded[i]);
    if (!v) {
      st = dsc_errorf("--resume: %s has no metadata %s", ckpt, key);
      break;
    }
    if (given(a, recorded[i])) {
      const char *now = o->takes_value ? o->value : "1";
      if (strcmp(now, v) != 0)
        fprintf(stderr, "dsc: warning: resuming %s with --%s=%s (the checkpoint was trained with %s)\n", ckpt,
                recorded[i], now, v);
      continue;
    }
    if (!o->takes_value) {
      o->value = !strcmp(v, "1") ? "1" : NULL;
      continue;
    }
    (*owned)[(*n_owned)++] = strdup(v);
    o->value = (*owned)[*n_owned - 1];
  }
  dsc_st_close(f);
  return st;
}

int cmd_finetune(int argc, char **argv) {
  if (argc < 1 || (strcmp(argv[0], "seg") != 0 && strcmp(argv[0], "--help") != 0 && strcmp(argv[0], "-h") != 0)) {
    fprintf(stderr, "dsc: error: usage: dsc finetune seg --data DIR --weights W --out DIR [options] "
            "(dsc finetune seg --help lists them)%s%s\n", argc ? "; unknown task " : "", argc ? argv[0] : "");
    return 2;
  }
  cli_option opts[] = {
      {"data", 1, NULL, "dataset root: PASCAL VOC layout (seg) or Cityscapes layout", NULL},
      {"format", 1, "auto", "seg|cityscapes (auto: cityscapes when DIR/leftImg8bit exists)", NULL},
      {"train-split", 1, "auto", "training split (auto: trainaug when its list or aug.txt exists, else train)", NULL},
      {"val-split", 1, "val", "evaluation split, or none", NULL},
      {"weights", 1, NULL, "backbone: a dsc checkpoint or export, torchvision ResNet weights (.safetensors/.pth), or random", NULL},
      {"allow-partial", 0, NULL, "load the backbone tensors that match; list the others", NULL},
      {"out", 1, "finetune", "run folder", NULL},
      {"resume", 0, NULL, "continue the run in --out from its checkpoint", NULL},
      {"arch", 1, "auto", "resnet18|resnet34|resnet50 (auto: from --weights; resnet50 for random)", NULL},
      {"stem", 1, "auto", "standard|small (auto: from --weights; standard for random)", NULL},
      {"dilated", 1, "auto", "1: layers 3-4 dilated, output stride 8 (mmseg's D8); auto: 1 for resnet50", NULL},
      {"classes", 1, "auto", "classes (auto: the lines of DIR/classes.txt when present, else 21 for seg, 19 for cityscapes)", NULL},
      {"channels", 1, "256", "FCN head width", NULL},
      {"dropout", 1, "0.1", "Dropout2d probability before the classifier", NULL},
      {"batch", 1, "auto", "images per step (auto: 16 seg, 8 cityscapes, mmseg's)", NULL},
      {"iters", 1, "auto", "steps (auto: 20000 x 16 / batch seg, 40000 x 8 / batch cityscapes)", NULL},
      {"lr", 1, "auto", "base learning rate (auto: 0.01 x batch / 16 seg, / 8 cityscapes)", NULL},
      {"min-lr", 1, "auto", "poly schedule floor (auto: 1e-4 scaled like lr)", NULL},
      {"power", 1, "0.9", "poly schedule power", NULL},
      {"momentum", 1, "0.9", "SGD momentum", NULL},
      {"wd", 1, "0.0005", "weight decay (every parameter)", NULL},
      {"crop", 1, "auto", "training crop S or WxH (auto: 512x512 seg, 1024x512 cityscapes)", NULL},
      {"scale", 1, "auto", "Resize img_scale WxH before the ratio (auto: 2048x512 seg, 2048x1024 cityscapes)", NULL},
      {"ratio", 1, "0.5,2", "Resize ratio range MIN,MAX", NULL},
      {"cat-max-ratio", 1, "0.75", "RandomCrop: the largest class's share of a crop at most", NULL},
      {"flip", 1, "0.5", "horizontal flip probability", NULL},
      {"photometric", 1, "1", "1: mmseg's PhotoMetricDistortion, 0: none", NULL},
      {"eval-mode", 1, "whole", "whole|slide inference", NULL},
      {"eval-crop", 1, "auto", "slide window S or WxH (auto: --crop)", NULL},
      {"eval-stride", 1, "auto", "slide stride (auto: 2/3 of the window, mmseg's 341 for 512)", NULL},
      {"test-scale", 1, "auto", "test Resize img_scale WxH, 0 = original size (auto: --scale)", NULL},
      {"eval-every", 1, "auto", "evaluate every N steps and at the end (auto: iters / 10; 0: only at the end)", NULL},
      {"ckpt-every", 1, "auto", "checkpoint every N steps and at the end (auto: --eval-every)", NULL},
      {"log-every", 1, "10", "metrics.jsonl / progress every N steps", NULL},
      {"max-val", 1, "0", "evaluate on the first N val images (0: all)", NULL},
      {"stop-at", 1, "0", "stop after step N with a checkpoint, as an interruption would (exit 0; --resume "
       "continues): to split a run into jobs, and for tests (0: run to --iters)", NULL},
      {"seed", 1, "0", "seed of the head's initialization, the batches and the dropout masks", NULL},
      {"threads", 1, "0", "CPU threads (0: all cores)", NULL},
      {"workers", 1, "0", "data threads (0: --threads)", NULL},
      {"device", 1, "cpu", "cpu|cuda", NULL},
      {"precision", 1, "fp32", "fp32|bf16 (bf16 on cuda only)", NULL},
      {"strict", 0, NULL, "an unreadable image is an error (default: replaced by the next, reported)", NULL},
      {"quiet", 0, NULL, "no progress on stderr", NULL},
  };
  cli_args a = {.command = "finetune seg", .opts = opts, .n_opts = sizeof opts / sizeof opts[0]};
  if (cli_report(cli_parse(&a, argc - 1, argv + 1))) return 2;
  if (a.help || strcmp(argv[0], "seg") != 0) {
    cli_print_help(&a, "dsc finetune seg --data DIR --weights W|random --out DIR [options]",
                   "FCN semantic-segmentation fine-tuning (METHOD.md section 7): the backbone plus an FCN head\n"
                   "(two 3x3 conv-BN-ReLU, Dropout2d, 1x1 classifier), mmsegmentation's FCN-R50-D8 VOC 20k /\n"
                   "Cityscapes 40k schedules scaled to the batch. Writes checkpoint.safetensors, metrics.jsonl,\n"
                   "eval.json (mIoU, per-class IoU, pixel accuracy) to --out. See docs/finetune.md.",
                   stdout);
    return 0;
  }
  if (a.n_positional > 0) {
    fprintf(stderr, "dsc: error: dsc finetune seg: unexpected argument \"%s\"\n", a.positional[0]);
    return 2;
  }
  ft_run r;
  memset(&r, 0, sizeof r);
  r.args = &a;
  char **owned = NULL;
  int n_owned = 0;
  char pool[32][64];
  int used = 0;
  const char *out = cli_get(&a, "out");
  snprintf(r.ckpt, sizeof r.ckpt, "%s/checkpoint.safetensors", out);
  dsc_status *st = NULL;
  if (cli_get(&a, "resume")) {
    if (!cli_file_exists(r.ckpt)) st = dsc_errorf("--resume: %s does not exist (nothing to resume)", r.ckpt);
    if (!st) st = resume_options(&a, r.ckpt, &owned, &n_owned);
  } else if (cli_file_exists(r.ckpt)) {
    st = dsc_errorf("--out %s already holds a checkpoint: continue it with --resume or choose another --out", out);
  }
  if (!st) st = resolve(&a, &r.o, pool, &used);
  if (st) {
    cli_report(st);
    for (int i = 0; i < n_owned; i++) free(owned[i]);
    free(owned);
    return 2;
  }
  st = cli_make_dirs(out, "--out");
  cli_on_stop_signals(on_signal);
  int interrupted = 0;
  if (!st) st = run(&r, &interrupted);
  if (r.metrics) fclose(r.metrics);
  dsc_seg_feeder_free(r.feeder);
  if (r.be && r.x_dev) r.be->free(r.be, r.x_dev);
  if (r.model_ready) dsc_fcn_free(&r.model);
  if (r.be) r.be->destroy(r.be);
  free(r.host_momentum);
  for (int i = 0; r.file_names && i < r.o.classes; i++) free(r.file_names[i]);
  free(r.file_names);
  dsc_dataset_free(r.train);
  dsc_dataset_free(r.val);
  for (int i = 0; i < n_owned; i++) free(owned[i]);
  free(owned);
  if (st) return cli_report(st);
  return interrupted ? 130 : 0;
}
