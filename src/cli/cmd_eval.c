/* cmd_eval.c: `dsc eval PROTOCOLS` — frozen-backbone evaluation (METHOD.md §7, docs/eval.md).
 *
 * Protocols: knn and linear on pooled C5 of an imagefolder dataset (splits train and val),
 * seg (the dense linear probe) and cluster (k-means segmentation) on dense C5 of a seg-layout
 * dataset. Several protocols in one invocation share the features: each (dataset, split) is
 * extracted once (include/dsc/features.h), kept in memory, and handed to the protocols of
 * include/dsc/eval.h. Results go to stdout as a table and to a JSON file (--out) holding every
 * number, the weights and their provenance, the data and the times; --save-probe also writes the
 * trained linear probe in raw feature space (include/dsc/probe_file.h) for `dsc viz gradcam`.
 */
#include "cli/cmd_eval.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "dsc/eval.h"
#include "dsc/features.h"
#include "dsc/probe_file.h"

enum { P_KNN = 1, P_LINEAR = 2, P_SEG = 4, P_CLUSTER = 8, P_ALL = 15 };
static const char *const protocol_names[4] = {"knn", "linear", "seg", "cluster"};

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int is_dir(const char *path) {
  struct stat sb;
  return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* A JSON number, or null for NaN/inf (JSON has no NaN). */
static json_t *json_num(double v) { return isfinite(v) ? json_real(v) : json_null(); }

/* Parses the positional protocol list: names, comma-separated or as separate arguments. */
static dsc_status *parse_protocols(const cli_args *a, int *out) {
  *out = 0;
  if (a->n_positional == 0)
    return dsc_errorf("dsc eval: which protocol? knn, linear, seg, cluster or all (see dsc eval --help)");
  for (int i = 0; i < a->n_positional; i++) {
    const char *p = a->positional[i];
    while (*p) {
      size_t len = strcspn(p, ",");
      int bit = 0;
      if (len == 3 && strncmp(p, "all", 3) == 0) bit = P_ALL;
      for (int k = 0; k < 4; k++)
        if (strlen(protocol_names[k]) == len && strncmp(p, protocol_names[k], len) == 0) bit = 1 << k;
      if (!bit)
        return dsc_errorf("dsc eval: unknown protocol \"%.*s\" (knn, linear, seg, cluster or all)",
                          (int)len, p);
      *out |= bit;
      p += len;
      if (*p == ',') p++;
    }
  }
  return NULL;
}

/* The numbers of the command line, checked. */
typedef struct eval_opts {
  int protocols;
  const char *weights, *out, *save_probe;
  int depth, small_stem;
  long seed, threads, size, resize, batch, classes, max_train, max_val;
  int strict, quiet, allow_partial;
  int knn_k;
  double knn_tau;
  dsc_probe_config linear, dense;
  dsc_cluster_config cluster;
} eval_opts;

/* One split of one dataset, its index and its features. */
typedef struct eval_split eval_split;
struct eval_split {
  const char *role;   /* "labels train", "seg val", ... */
  char path[4096];
  dsc_dataset *ds;
  dsc_features f;
  int size, resize;
  int what;           /* DSC_FEATURES_* to extract; 0: unused */
  /* imagefolder splits whose files are all images of a seg split (the same files: `dsc data
   * scenes` hard-links labels/ to the scenes): pooled rows taken from that split's extraction. */
  eval_split *share_from;
  int64_t *share_rows;   /* row in share_from of each image */
  int32_t *share_labels; /* class of each image (from its class folder) */
  int64_t share_n;
  int shared;            /* the pooled features were taken from share_from */
};

typedef struct eval_state {
  eval_opts o;
  dsc_feature_backbone m;
  eval_split cls_train, cls_val, seg_train, seg_val;
  int cls_classes, seg_classes;
  json_t *root, *results, *features;
} eval_state;

static dsc_status *open_split(eval_split *s, dsc_dataset_format format, const char *split) {
  dsc_dataset_config c = {.path = s->path, .format = format, .split = split};
  return dsc_status_wrap(dsc_dataset_open(&c, &s->ds), "%s", s->role);
}

/* Opens the datasets the protocols need (indexing only) and checks their layout. */
static dsc_status *open_data(eval_state *S, const cli_args *a) {
  const char *data = cli_get(a, "data"), *train = cli_get(a, "train"), *val = cli_get(a, "val");
  const int p = S->o.protocols;
  if ((train == NULL) != (val == NULL)) return dsc_errorf("dsc eval: --train and --val go together");
  if (p & (P_KNN | P_LINEAR)) {
    S->cls_train.role = "labels train", S->cls_val.role = "labels val";
    if (train) {
      snprintf(S->cls_train.path, sizeof S->cls_train.path, "%s", train);
      snprintf(S->cls_val.path, sizeof S->cls_val.path, "%s", val);
    } else if (!data) {
      return dsc_errorf("dsc eval: knn/linear need --data DIR (DIR/train and DIR/val, one folder per class) "
                        "or --train DIR --val DIR");
    } else {
      char t[4096], lt[4096];
      snprintf(t, sizeof t, "%s/train", data);
      snprintf(lt, sizeof lt, "%s/labels/train", data);
      const char *base = is_dir(t) ? "" : is_dir(lt) ? "/labels" : NULL;
      if (!base)
        return dsc_errorf("dsc eval: --data %s: knn/linear need imagefolder splits %s/train and %s/val "
                          "(one folder per class), or %s/labels/{train,val} as `dsc data scenes` writes "
                          "them; or give --train DIR --val DIR",
                          data, data, data, data);
      snprintf(S->cls_train.path, sizeof S->cls_train.path, "%s%s/train", data, base);
      snprintf(S->cls_val.path, sizeof S->cls_val.path, "%s%s/val", data, base);
    }
    for (int i = 0; i < 2; i++) {
      eval_split *s = i ? &S->cls_val : &S->cls_train;
      if (!is_dir(s->path)) return dsc_errorf("dsc eval: %s: %s is not a directory", s->role, s->path);
      DSC_TRY(open_split(s, DSC_DATASET_IMAGEFOLDER, NULL));
      s->what = DSC_FEATURES_POOLED;
    }
    const int nt = dsc_dataset_num_classes(S->cls_train.ds), nv = dsc_dataset_num_classes(S->cls_val.ds);
    if (nt < 2) return dsc_errorf("dsc eval: %s: %d class folder(s); k-NN and the linear probe need at least 2",
                                  S->cls_train.path, nt);
    if (nt != nv)
      return dsc_errorf("dsc eval: class count mismatch: %s has %d class folders, %s has %d",
                        S->cls_train.path, nt, S->cls_val.path, nv);
    for (int c = 0; c < nt; c++)
      if (strcmp(dsc_dataset_class_name(S->cls_train.ds, c), dsc_dataset_class_name(S->cls_val.ds, c)))
        return dsc_errorf("dsc eval: class mismatch: class %d is \"%s\" in %s but \"%s\" in %s", c,
                          dsc_dataset_class_name(S->cls_train.ds, c), S->cls_train.path,
                          dsc_dataset_class_name(S->cls_val.ds, c), S->cls_val.path);
    if (S->o.classes && S->o.classes != nt)
      return dsc_errorf("dsc eval: class count mismatch: --classes=%ld but %s has %d class folders",
                        S->o.classes, S->cls_train.path, nt);
    S->cls_classes = nt;
  }
  if (p & (P_SEG | P_CLUSTER)) {
    if (!data) return dsc_errorf("dsc eval: seg/cluster need --data DIR in the seg layout "
                                 "(JPEGImages/, SegmentationClass/, ImageSets/Segmentation/{train,val}.txt)");
    S->seg_train.role = "seg train", S->seg_val.role = "seg val";
    snprintf(S->seg_train.path, sizeof S->seg_train.path, "%s", data);
    snprintf(S->seg_val.path, sizeof S->seg_val.path, "%s", data);
    char list[4096];
    snprintf(list, sizeof list, "%s/ImageSets/Segmentation", data);
    if (!is_dir(list))
      return dsc_errorf("dsc eval: --data %s is not in the seg layout: no %s (expected JPEGImages/, "
                        "SegmentationClass/, ImageSets/Segmentation/{train,val}.txt)", data, list);
    if (p & P_SEG) {
      DSC_TRY(open_split(&S->seg_train, DSC_DATASET_SEG, "train"));
      S->seg_train.what = DSC_FEATURES_DENSE;
    }
    DSC_TRY(open_split(&S->seg_val, DSC_DATASET_SEG, "val"));
    S->seg_val.what = DSC_FEATURES_DENSE;
  }
  return NULL;
}

/* The working size of a dataset: --size, else its first train image's side when square,
 * else 224; resize: --resize, else size * 8 / 7 for classification and size for seg. */
static dsc_status *choose_sizes(eval_state *S, eval_split *train, eval_split *val, int seg) {
  int size = (int)S->o.size;
  if (size == 0) {
    size = 224;
    for (size_t i = 0; i < dsc_dataset_size(train->ds) && i < 16; i++) {
      int w, h;
      dsc_status *st = dsc_dataset_probe(train->ds, i, &w, &h, NULL);
      if (st) {
        dsc_status_free(st);
        continue;
      }
      if (w == h && w >= 16 && w <= 2048) size = w;
      break;
    }
  }
  int resize = S->o.resize ? (int)S->o.resize : seg ? size : size * 8 / 7;
  train->size = val->size = size;
  train->resize = val->resize = resize;
  return NULL;
}

/* ---- sharing one extraction between an imagefolder split and a seg split ---- */

typedef struct file_key {
  uint64_t dev, ino;
  int64_t index;
} file_key;

static int cmp_key(const void *a, const void *b) {
  const file_key *x = a, *y = b;
  if (x->dev != y->dev) return x->dev < y->dev ? -1 : 1;
  if (x->ino != y->ino) return x->ino < y->ino ? -1 : 1;
  return 0;
}

static size_t split_count(const eval_split *s, long max_images) {
  size_t n = dsc_dataset_size(s->ds);
  return max_images > 0 && (size_t)max_images < n ? (size_t)max_images : n;
}

/* Plans to take `cls`'s pooled features from `seg`'s extraction when every image of `cls` is
 * (by device and inode) an image of `seg`, both at the same size, and every such image is
 * already size x size (so the two eval transforms agree whatever their resize); labels come
 * from each image's class folder (the first path component under the split's root). Anything
 * else leaves `cls` to its own extraction. Only memory errors are errors. */
static dsc_status *plan_share(eval_split *cls, eval_split *seg, long max_cls, long max_seg) {
  if (!cls->ds || !seg->ds || !seg->what || cls->size != seg->size) return NULL;
  const size_t nc = split_count(cls, max_cls), ns = split_count(seg, max_seg);
  file_key *keys = malloc(ns * sizeof *keys);
  int64_t *rows = malloc(nc * sizeof *rows);
  int32_t *labels = malloc(nc * sizeof *labels);
  if (!keys || !rows || !labels) {
    free(keys), free(rows), free(labels);
    return dsc_errorf("out of memory matching %s with %s", cls->path, seg->path);
  }
  int ok = 1;
  struct stat sb;
  for (size_t j = 0; ok && j < ns; j++) {
    ok = stat(dsc_dataset_name(seg->ds, j), &sb) == 0;
    keys[j] = (file_key){(uint64_t)sb.st_dev, (uint64_t)sb.st_ino, (int64_t)j};
  }
  if (ok) qsort(keys, ns, sizeof *keys, cmp_key);
  const size_t root_len = strlen(cls->path);
  const int classes = dsc_dataset_num_classes(cls->ds);
  for (size_t i = 0; ok && i < nc; i++) {
    const char *path = dsc_dataset_name(cls->ds, i);
    int w = 0, h = 0;
    dsc_status *st = dsc_dataset_probe(cls->ds, i, &w, &h, NULL);
    ok = !st && w == cls->size && h == cls->size && stat(path, &sb) == 0;
    dsc_status_free(st);
    if (!ok) break;
    file_key k = {(uint64_t)sb.st_dev, (uint64_t)sb.st_ino, 0};
    const file_key *hit = bsearch(&k, keys, ns, sizeof *keys, cmp_key);
    ok = hit != NULL && strncmp(path, cls->path, root_len) == 0 && path[root_len] == '/';
    if (!ok) break;
    rows[i] = hit->index;
    const char *name = path + root_len + 1, *end = strchr(name, '/');
    labels[i] = -1;
    for (int c = 0; end && c < classes; c++) {
      const char *cn = dsc_dataset_class_name(cls->ds, c);
      if (strlen(cn) == (size_t)(end - name) && strncmp(cn, name, (size_t)(end - name)) == 0) labels[i] = c;
    }
    ok = labels[i] >= 0;
  }
  free(keys);
  if (!ok) {
    free(rows), free(labels);
    return NULL;
  }
  cls->share_from = seg, cls->share_rows = rows, cls->share_labels = labels, cls->share_n = (int64_t)nc;
  seg->what |= DSC_FEATURES_POOLED;
  return NULL;
}

/* Fills `cls`'s pooled features from its seg split's rows. Returns 0 (nothing done) when that
 * split skipped an image (its rows then no longer follow the dataset's indices). */
static int take_shared(eval_split *cls) {
  const eval_split *seg = cls->share_from;
  if (!seg || seg->f.skipped || !seg->f.pooled) return 0;
  const double t0 = now_seconds();
  const int c = seg->f.c;
  dsc_features *f = &cls->f;
  memset(f, 0, sizeof *f);
  f->pooled = malloc((size_t)cls->share_n * (size_t)c * sizeof(float));
  f->labels = malloc((size_t)cls->share_n * sizeof *f->labels);
  if (!f->pooled || !f->labels) {
    dsc_features_free(f);
    return 0;
  }
  for (int64_t i = 0; i < cls->share_n; i++)
    memcpy(f->pooled + (size_t)i * c, seg->f.pooled + (size_t)cls->share_rows[i] * c, (size_t)c * sizeof(float));
  memcpy(f->labels, cls->share_labels, (size_t)cls->share_n * sizeof *f->labels);
  f->n = cls->share_n;
  f->c = c, f->h = seg->f.h, f->w = seg->f.w;
  f->n_classes = dsc_dataset_num_classes(cls->ds);
  f->size = seg->f.size;
  f->max_label = -1;
  f->seconds = now_seconds() - t0;
  return 1;
}

static dsc_status *extract_split(eval_state *S, eval_split *s, long max_images) {
  if (!s->what) return NULL;
  const int shared = s->shared = take_shared(s);
  dsc_feature_config fc = {.size = s->size, .resize = s->resize, .batch = (int)S->o.batch,
                           .max_images = max_images, .strict = S->o.strict, .verbose = !S->o.quiet,
                           .what = s->role};
  if (!shared && !S->o.quiet)
    fprintf(stderr, "dsc eval: %s: %zu images of %s at %dx%d...\n", s->role,
            max_images > 0 && (size_t)max_images < dsc_dataset_size(s->ds) ? (size_t)max_images
                                                                           : dsc_dataset_size(s->ds),
            s->path, s->size, s->size);
  if (!shared) DSC_TRY(dsc_features_extract(&S->m, s->ds, &fc, s->what, &s->f));
  json_t *j = json_object();
  json_object_set_new(j, "split", json_string(s->role));
  json_object_set_new(j, "path", json_string(s->path));
  json_object_set_new(j, "kind", json_string(s->what & DSC_FEATURES_DENSE ? "dense" : "pooled"));
  if (shared) json_object_set_new(j, "shared_with", json_string(s->share_from->role));
  json_object_set_new(j, "images", json_integer(s->f.n));
  json_object_set_new(j, "skipped", json_integer(s->f.skipped));
  json_object_set_new(j, "size", json_integer(s->size));
  json_object_set_new(j, "resize", json_integer(s->resize));
  json_object_set_new(j, "c5", json_pack("[iii]", s->f.h, s->f.w, s->f.c));
  json_object_set_new(j, "seconds", json_real(s->f.seconds));
  json_array_append_new(S->features, j);
  return NULL;
}

/* The class count of the seg protocols: --classes, else max label + 1 over the train split's
 * maps (or the val split's when train is not read); every label must be below it. */
static dsc_status *seg_classes(eval_state *S) {
  const eval_split *from = S->seg_train.what ? &S->seg_train : &S->seg_val;
  if (S->o.classes) {
    S->seg_classes = (int)S->o.classes;
  } else {
    if (from->f.max_label < 1)
      return dsc_errorf("dsc eval: %s (%s): the label maps hold %s; cannot tell the class count "
                        "(give --classes)", from->role, from->path,
                        from->f.max_label < 0 ? "no labelled pixel" : "only class 0");
    S->seg_classes = from->f.max_label + 1;
  }
  const eval_split *sp[2] = {&S->seg_train, &S->seg_val};
  for (int i = 0; i < 2; i++) {
    if (!sp[i]->what || sp[i]->f.max_label < S->seg_classes) continue;
    return dsc_errorf("dsc eval: class count mismatch: %s (%s) has label %d but there are %d classes "
                      "(%s)", sp[i]->role, sp[i]->path, sp[i]->f.max_label, S->seg_classes,
                      S->o.classes ? "--classes" : "max label + 1 over the train split");
  }
  return NULL;
}

static json_t *iou_array(const dsc_seg_scores *s) {
  json_t *a = json_array();
  for (int c = 0; c < s->classes; c++) json_array_append_new(a, json_num(s->iou[c]));
  return a;
}

static dsc_dense_set dense_set(const eval_split *s) {
  dsc_dense_set d = {.n = s->f.n, .h5 = s->f.h, .w5 = s->f.w, .c = s->f.c, .features = s->f.dense,
                     .H = s->f.size, .W = s->f.size, .labels = s->f.maps};
  return d;
}

/* Per-class IoU table (seg and/or cluster side by side). */
static void print_iou(const dsc_seg_scores *seg, const dsc_seg_scores *cluster, int classes) {
  printf("\nper-class IoU\n  %-6s %9s %9s\n", "class", seg ? "seg" : "", cluster ? "cluster" : "");
  for (int c = 0; c < classes; c++) {
    printf("  %-6d", c);
    if (seg) printf(" %9.4f", seg->iou[c]);
    else printf(" %9s", "");
    if (cluster) printf(" %9.4f", cluster->iou[c]);
    printf("\n");
  }
}

/* --save-probe: the linear probe's classifier in raw pooled-feature space (include/dsc/probe_file.h),
 * with the class names in index order and what it was trained on. */
static dsc_status *save_probe(const eval_state *S, dsc_probe_file *probe, const dsc_linear_probe_result *r) {
  char **names = calloc((size_t)probe->classes, sizeof *names);
  if (!names) return dsc_errorf("dsc eval: out of memory for --save-probe");
  for (int k = 0; k < probe->classes; k++) names[k] = (char *)dsc_dataset_class_name(S->cls_train.ds, k);
  probe->class_names = names;
  char size[32], resize[32], arch[32], top1[64];
  snprintf(size, sizeof size, "%d", S->cls_train.size);
  snprintf(resize, sizeof resize, "%d", S->cls_train.resize);
  snprintf(arch, sizeof arch, "resnet%d%s", S->m.cfg.depth, S->m.cfg.small_stem ? " (small stem)" : "");
  snprintf(top1, sizeof top1, "%.9g", r->test_top1);
  const char *keys[] = {"weights", "arch", "train", "val", "size", "resize", "val_top1"};
  const char *values[] = {S->o.weights, arch, S->cls_train.path, S->cls_val.path, size, resize, top1};
  dsc_status *st = dsc_probe_file_save(S->o.save_probe, probe, 7, keys, values);
  probe->class_names = NULL;
  free(names);
  if (!st && !S->o.quiet) fprintf(stderr, "dsc eval: linear probe (raw feature space) -> %s\n", S->o.save_probe);
  return st ? dsc_status_wrap(st, "dsc eval: --save-probe %s", S->o.save_probe) : NULL;
}

static dsc_status *run_protocols(eval_state *S) {
  const int p = S->o.protocols;
  dsc_backend *be = S->m.be;
  printf("%-8s %-10s %10s %10s\n", "protocol", "metric", "value", "seconds");
  if (p & P_KNN) {
    const eval_split *tr = &S->cls_train, *va = &S->cls_val;
    if (S->o.knn_k > tr->f.n)
      return dsc_errorf("dsc eval: --knn-k=%d is more than the %lld train images", S->o.knn_k,
                        (long long)tr->f.n);
    double t0 = now_seconds(), top1;
    DSC_TRY(dsc_knn_classify(be, tr->f.n, va->f.n, tr->f.c, tr->f.pooled, tr->f.labels, va->f.pooled,
                             va->f.labels, S->cls_classes, S->o.knn_k, S->o.knn_tau, NULL, &top1));
    double dt = now_seconds() - t0;
    printf("%-8s %-10s %10.4f %10.2f\n", "knn", "top1", top1, dt);
    json_object_set_new(S->results, "knn",
                        json_pack("{s:o,s:i,s:f,s:i,s:I,s:I,s:f}", "top1", json_num(top1), "k", S->o.knn_k,
                                  "tau", S->o.knn_tau, "classes", S->cls_classes, "train_images",
                                  (json_int_t)tr->f.n, "val_images", (json_int_t)va->f.n, "seconds", dt));
  }
  if (p & P_LINEAR) {
    const eval_split *tr = &S->cls_train, *va = &S->cls_val;
    double t0 = now_seconds();
    dsc_linear_probe_result r;
    dsc_probe_file probe = {.classes = S->cls_classes, .c = tr->f.c};
    if (S->o.save_probe) {
      probe.weight = malloc((size_t)probe.classes * probe.c * sizeof *probe.weight);
      probe.bias = malloc((size_t)probe.classes * sizeof *probe.bias);
      if (!probe.weight || !probe.bias) {
        free(probe.weight), free(probe.bias);
        return dsc_errorf("dsc eval: out of memory for --save-probe");
      }
    }
    dsc_status *lst = dsc_linear_probe_fit(be, &S->o.linear, tr->f.n, va->f.n, tr->f.c, S->cls_classes,
                                           tr->f.pooled, tr->f.labels, va->f.pooled, va->f.labels, NULL, &r,
                                           probe.weight, probe.bias);
    if (!lst && S->o.save_probe) lst = save_probe(S, &probe, &r);
    free(probe.weight), free(probe.bias);
    DSC_TRY(lst);
    double dt = now_seconds() - t0;
    printf("%-8s %-10s %10.4f %10.2f\n", "linear", "top1", r.test_top1, dt);
    printf("%-8s %-10s %10.4f\n", "", "train_top1", r.train_top1);
    const dsc_probe_config *c = &S->o.linear;
    json_object_set_new(S->results, "linear",
                        json_pack("{s:o,s:o,s:o,s:i,s:i,s:i,s:f,s:f,s:I,s:f}", "top1", json_num(r.test_top1),
                                  "train_top1", json_num(r.train_top1), "train_loss", json_num(r.train_loss),
                                  "classes", S->cls_classes, "epochs", c->epochs, "batch", c->batch, "lr",
                                  c->lr, "weight_decay", c->weight_decay, "seed", (json_int_t)c->seed,
                                  "seconds", dt));
  }
  dsc_dense_probe_result seg = {0};
  dsc_seg_scores cl = {0};
  dsc_status *st = NULL;
  if (p & P_SEG) {
    dsc_dense_set tr = dense_set(&S->seg_train), va = dense_set(&S->seg_val);
    double t0 = now_seconds();
    st = dsc_dense_probe(be, &S->o.dense, S->seg_classes, &tr, &va, NULL, NULL, &seg);
    double dt = now_seconds() - t0;
    if (!st) {
      printf("%-8s %-10s %10.4f %10.2f\n", "seg", "mIoU", seg.test.miou, dt);
      printf("%-8s %-10s %10.4f\n", "", "pixel_acc", seg.test.pixel_acc);
      const dsc_probe_config *c = &S->o.dense;
      json_object_set_new(
          S->results, "seg",
          json_pack("{s:o,s:o,s:o,s:i,s:o,s:i,s:i,s:i,s:f,s:f,s:I,s:f}", "miou", json_num(seg.test.miou),
                    "pixel_acc", json_num(seg.test.pixel_acc), "iou", iou_array(&seg.test), "valid_classes",
                    seg.test.valid_classes, "train_loss", json_num(seg.train_loss), "classes",
                    S->seg_classes, "epochs", c->epochs, "batch", c->batch, "lr", c->lr, "weight_decay",
                    c->weight_decay, "seed", (json_int_t)c->seed, "seconds", dt));
    }
  }
  if (!st && (p & P_CLUSTER)) {
    dsc_dense_set va = dense_set(&S->seg_val);
    int *map = malloc((size_t)S->seg_classes * sizeof *map);
    double t0 = now_seconds();
    st = map ? dsc_cluster_seg(be, &S->o.cluster, S->seg_classes, &va, NULL, map, &cl)
             : dsc_errorf("out of memory");
    double dt = now_seconds() - t0;
    if (!st) {
      printf("%-8s %-10s %10.4f %10.2f\n", "cluster", "mIoU", cl.miou, dt);
      printf("%-8s %-10s %10.4f\n", "", "pixel_acc", cl.pixel_acc);
      json_t *m = json_array();
      for (int k = 0; k < S->seg_classes; k++) json_array_append_new(m, json_integer(map[k]));
      json_object_set_new(S->results, "cluster",
                          json_pack("{s:o,s:o,s:o,s:i,s:o,s:i,s:i,s:I,s:f}", "miou", json_num(cl.miou),
                                    "pixel_acc", json_num(cl.pixel_acc), "iou", iou_array(&cl),
                                    "valid_classes", cl.valid_classes, "cluster_to_class", m, "clusters",
                                    S->seg_classes, "iters", S->o.cluster.iters, "seed",
                                    (json_int_t)S->o.cluster.seed, "seconds", dt));
    }
    free(map);
  }
  if (!st && (p & (P_SEG | P_CLUSTER)))
    print_iou(p & P_SEG ? &seg.test : NULL, p & P_CLUSTER ? &cl : NULL, S->seg_classes);
  dsc_dense_probe_result_free(&seg);
  dsc_seg_scores_free(&cl);
  return st;
}

/* The weights' description: path, kind, architecture, and the checkpoint's metadata. */
static json_t *weights_json(const eval_state *S) {
  const dsc_feature_backbone *m = &S->m;
  char arch[16];
  snprintf(arch, sizeof arch, "resnet%d", m->cfg.depth);
  json_t *w = json_pack("{s:s,s:s,s:s,s:s}", "path", S->o.weights, "source", dsc_weights_source_name(m->source),
                        "arch", arch, "stem", m->cfg.small_stem ? "small" : "standard");
  if (m->source == DSC_WEIGHTS_RANDOM) json_object_set_new(w, "seed", json_integer((json_int_t)S->o.seed));
  const char *method = dsc_feature_backbone_meta(m, "method.name");
  json_object_set_new(w, "method", method ? json_string(method) : m->source == DSC_WEIGHTS_RANDOM
                                                                     ? json_string("random")
                                                                     : json_null());
  json_t *meta = json_object();
  for (int i = 0; i < m->n_meta; i++) json_object_set_new(meta, m->meta_keys[i], json_string(m->meta_values[i]));
  json_object_set_new(w, "metadata", meta);
  return w;
}

/* Writes the JSON next to its final name, then renames it into place. */
static dsc_status *write_json(json_t *root, const char *path) {
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.tmp%ld", path, (long)getpid());
  if (json_dump_file(root, tmp, JSON_INDENT(2) | JSON_REAL_PRECISION(9)) != 0) {
    unlink(tmp);
    return dsc_errorf("--out %s: cannot write %s", path, tmp);
  }
  if (rename(tmp, path) != 0) {
    dsc_status *st = dsc_errorf("--out %s: cannot rename %s into place: %s", path, tmp, strerror(errno));
    unlink(tmp);
    return st;
  }
  return NULL;
}

static dsc_status *run_eval(eval_state *S, const cli_args *a) {
  const double t0 = now_seconds();
  eval_opts *o = &S->o;
  DSC_TRY(open_data(S, a));
  if (S->cls_train.ds) DSC_TRY(choose_sizes(S, &S->cls_train, &S->cls_val, 0));
  if (S->seg_val.ds) DSC_TRY(choose_sizes(S, S->seg_train.ds ? &S->seg_train : &S->seg_val, &S->seg_val, 1));
  dsc_feature_backbone_config bc = {.weights = o->weights, .depth = o->depth, .small_stem = o->small_stem,
                                    .seed = (uint64_t)o->seed, .threads = (int)o->threads,
                                    .allow_partial = o->allow_partial};
  DSC_TRY(dsc_status_wrap(dsc_feature_backbone_open(&bc, &S->m), "dsc eval: --weights %s", o->weights));
  if (!o->quiet)
    fprintf(stderr, "dsc eval: weights %s (%s, resnet%d, %s stem), %d thread(s)\n", o->weights,
            dsc_weights_source_name(S->m.source), S->m.cfg.depth, S->m.cfg.small_stem ? "small" : "standard",
            S->m.threads);
  S->root = json_object();
  S->results = json_object();
  S->features = json_array();
  json_object_set_new(S->root, "dsc_version", json_string(DSC_VERSION));
  json_object_set_new(S->root, "weights", weights_json(S));
  json_object_set(S->root, "features", S->features);
  json_object_set(S->root, "results", S->results);
  DSC_TRY(plan_share(&S->cls_train, &S->seg_train, o->max_train, o->max_train));
  DSC_TRY(plan_share(&S->cls_val, &S->seg_val, o->max_val, o->max_val));
  DSC_TRY(extract_split(S, &S->seg_train, o->max_train));
  DSC_TRY(extract_split(S, &S->seg_val, o->max_val));
  DSC_TRY(extract_split(S, &S->cls_train, o->max_train));
  DSC_TRY(extract_split(S, &S->cls_val, o->max_val));
  if (S->seg_val.ds) DSC_TRY(seg_classes(S));

  json_t *data = json_object();
  if (S->cls_train.ds) {
    json_t *names = json_array();
    for (int c = 0; c < S->cls_classes; c++)
      json_array_append_new(names, json_string(dsc_dataset_class_name(S->cls_train.ds, c)));
    json_object_set_new(data, "labels",
                        json_pack("{s:s,s:s,s:i,s:o,s:I,s:I}", "train", S->cls_train.path, "val", S->cls_val.path,
                                  "classes", S->cls_classes, "class_names", names, "train_images",
                                  (json_int_t)S->cls_train.f.n, "val_images", (json_int_t)S->cls_val.f.n));
  }
  if (S->seg_val.ds)
    json_object_set_new(data, "seg",
                        json_pack("{s:s,s:i,s:s,s:I,s:I}", "path", S->seg_val.path, "classes", S->seg_classes,
                                  "classes_from", o->classes ? "--classes" : S->seg_train.what ? "train" : "val",
                                  "train_images", (json_int_t)S->seg_train.f.n, "val_images",
                                  (json_int_t)S->seg_val.f.n));
  json_object_set_new(S->root, "data", data);

  printf("dsc eval: %s (%s, resnet%d %s stem%s%s)\n", o->weights, dsc_weights_source_name(S->m.source),
         S->m.cfg.depth, S->m.cfg.small_stem ? "small" : "standard",
         dsc_feature_backbone_meta(&S->m, "method.name") ? ", method " : "",
         dsc_feature_backbone_meta(&S->m, "method.name") ? dsc_feature_backbone_meta(&S->m, "method.name") : "");
  printf("%-14s %-8s %8s %6s %14s %10s\n", "features", "kind", "images", "size", "C5 (h,w,c)", "seconds");
  eval_split *splits[4] = {&S->cls_train, &S->cls_val, &S->seg_train, &S->seg_val};
  for (int i = 0; i < 4; i++) {
    eval_split *s = splits[i];
    if (!s->what) continue;
    char c5[32];
    snprintf(c5, sizeof c5, "%dx%dx%d", s->f.h, s->f.w, s->f.c);
    printf("%-14s %-8s %8lld %6d %14s %10.2f%s%s\n", s->role, s->what & DSC_FEATURES_DENSE ? "dense" : "pooled",
           (long long)s->f.n, s->size, c5, s->f.seconds, s->shared ? "  pooled from " : "",
           s->shared ? s->share_from->role : "");
  }
  printf("\n");
  DSC_TRY(run_protocols(S));
  const double total = now_seconds() - t0;
  json_object_set_new(S->root, "threads", json_integer(S->m.threads));
  json_object_set_new(S->root, "seconds", json_real(total));
  printf("\ntotal %.2f s; results in %s\n", total, o->out);
  return write_json(S->root, o->out);
}

static void eval_state_free(eval_state *S) {
  eval_split *splits[4] = {&S->cls_train, &S->cls_val, &S->seg_train, &S->seg_val};
  for (int i = 0; i < 4; i++) {
    dsc_features_free(&splits[i]->f);
    dsc_dataset_free(splits[i]->ds);
    free(splits[i]->share_rows);
    free(splits[i]->share_labels);
  }
  dsc_feature_backbone_free(&S->m);
  json_decref(S->root);
  json_decref(S->results);
  json_decref(S->features);
}

/* Reads the options into S->o, checking every range. */
static dsc_status *read_options(const cli_args *a, eval_opts *o) {
  DSC_TRY(parse_protocols(a, &o->protocols));
  o->weights = cli_get(a, "weights");
  if (!o->weights) return dsc_errorf("dsc eval needs --weights (a dsc checkpoint or export, a .pth, or random)");
  o->out = cli_get(a, "out");
  o->save_probe = cli_get(a, "save-probe");
  if (o->save_probe && !(o->protocols & P_LINEAR))
    return dsc_errorf("dsc eval: --save-probe %s saves the linear probe: add the linear protocol", o->save_probe);
  const char *arch = cli_get(a, "arch"), *stem = cli_get(a, "stem");
  o->depth = 0;
  if (arch && !(o->depth = dsc_resnet_depth_from_name(arch)))
    return dsc_errorf("dsc eval: --arch=%s: expected resnet18, resnet34 or resnet50", arch);
  o->small_stem = -1;
  if (stem) {
    if (strcmp(stem, "small") == 0) o->small_stem = 1;
    else if (strcmp(stem, "standard") == 0) o->small_stem = 0;
    else return dsc_errorf("dsc eval: --stem=%s: expected standard or small", stem);
  }
  if (strcmp(o->weights, "random") != 0 && cli_get(a, "seed"))
    return dsc_errorf("dsc eval: --seed initializes random weights; it has no meaning with --weights %s "
                      "(the probes' seed is --probe-seed)", o->weights);
  if (!cli_get(a, "seed")) o->seed = 0;
  else DSC_TRY(cli_get_int(a, "seed", 0, 0x7fffffffL, &o->seed));
  long v;
  DSC_TRY(cli_get_int(a, "threads", 0, 4096, &o->threads));
  DSC_TRY(cli_get_int(a, "size", 0, 2048, &o->size));
  if (o->size && o->size < 16) return dsc_errorf("dsc eval: --size=%ld: expected 0 (auto) or 16..2048", o->size);
  DSC_TRY(cli_get_int(a, "resize", 0, 65536, &o->resize));
  DSC_TRY(cli_get_int(a, "batch", 1, 4096, &o->batch));
  DSC_TRY(cli_get_int(a, "classes", 0, 254, &o->classes));
  if (o->classes == 1) return dsc_errorf("dsc eval: --classes=1: expected 0 (from the data) or 2..254");
  DSC_TRY(cli_get_int(a, "max-train", 0, 1L << 40, &o->max_train));
  DSC_TRY(cli_get_int(a, "max-val", 0, 1L << 40, &o->max_val));
  o->strict = cli_get(a, "strict") != NULL;
  o->allow_partial = cli_get(a, "allow-partial") != NULL;
  o->quiet = cli_get(a, "quiet") != NULL;
  DSC_TRY(cli_get_int(a, "knn-k", 1, 100000, &v));
  o->knn_k = (int)v;
  DSC_TRY(cli_get_double(a, "knn-tau", &o->knn_tau));
  if (!(o->knn_tau > 0 && o->knn_tau <= 100))
    return dsc_errorf("dsc eval: --knn-tau=%s: expected a temperature in (0, 100]", cli_get(a, "knn-tau"));
  long seed;
  DSC_TRY(cli_get_int(a, "probe-seed", 0, 0x7fffffffL, &seed));
  struct {
    const char *epochs, *batch, *lr;
    dsc_probe_config *c;
  } probes[2] = {{"linear-epochs", "linear-batch", "linear-lr", &o->linear}, {"seg-epochs", "seg-batch", "seg-lr", &o->dense}};
  double wd;
  DSC_TRY(cli_get_double(a, "wd", &wd));
  if (!(wd >= 0 && wd <= 1)) return dsc_errorf("dsc eval: --wd=%s: expected a weight decay in [0, 1]", cli_get(a, "wd"));
  for (int i = 0; i < 2; i++) {
    dsc_probe_config *c = probes[i].c;
    DSC_TRY(cli_get_int(a, probes[i].epochs, 1, 100000, &v));
    c->epochs = (int)v;
    DSC_TRY(cli_get_int(a, probes[i].batch, 1, 1 << 20, &v));
    c->batch = (int)v;
    DSC_TRY(cli_get_double(a, probes[i].lr, &c->lr));
    if (!(c->lr > 0 && c->lr <= 100))
      return dsc_errorf("dsc eval: --%s=%s: expected a learning rate in (0, 100]", probes[i].lr,
                        cli_get(a, probes[i].lr));
    c->weight_decay = wd;
    c->seed = (uint64_t)seed;
  }
  DSC_TRY(cli_get_int(a, "cluster-iters", 1, 100000, &v));
  o->cluster.iters = (int)v;
  o->cluster.seed = (uint64_t)seed;
  return NULL;
}

int cmd_eval(int argc, char **argv) {
  /* Probe defaults come from the library, so the help text cannot drift from them. */
  const dsc_probe_config lin = dsc_linear_probe_defaults(), den = dsc_dense_probe_defaults();
  const dsc_cluster_config clu = dsc_cluster_defaults();
  char d_k[16], d_tau[32], d_le[16], d_lb[16], d_llr[32], d_se[16], d_sb[16], d_slr[32], d_wd[32], d_ci[16];
  snprintf(d_k, sizeof d_k, "%d", DSC_KNN_K);
  snprintf(d_tau, sizeof d_tau, "%g", DSC_KNN_TAU);
  snprintf(d_le, sizeof d_le, "%d", lin.epochs);
  snprintf(d_lb, sizeof d_lb, "%d", lin.batch);
  snprintf(d_llr, sizeof d_llr, "%g", lin.lr);
  snprintf(d_se, sizeof d_se, "%d", den.epochs);
  snprintf(d_sb, sizeof d_sb, "%d", den.batch);
  snprintf(d_slr, sizeof d_slr, "%g", den.lr);
  snprintf(d_wd, sizeof d_wd, "%g", lin.weight_decay);
  snprintf(d_ci, sizeof d_ci, "%d", clu.iters);
  cli_option opts[] = {
      {"weights", 1, NULL, "a dsc checkpoint or export, torchvision/timm ResNet weights (.safetensors or .pth), or random", NULL},
      {"allow-partial", 0, NULL, "load the tensors that match; list the others (default: exact match only)", NULL},
      {"arch", 1, NULL, "resnet18|resnet34|resnet50: required with random, checked against a file", NULL},
      {"stem", 1, NULL, "standard|small: for random (default standard), checked against a file", NULL},
      {"seed", 1, NULL, "seed of the random initialization (default 0)", NULL},
      {"data", 1, NULL, "dataset root: seg layout for seg/cluster; DIR/train, DIR/val (or DIR/labels/...) "
                        "imagefolders for knn/linear", NULL},
      {"train", 1, NULL, "imagefolder train split for knn/linear (with --val; overrides --data)", NULL},
      {"val", 1, NULL, "imagefolder val split for knn/linear", NULL},
      {"out", 1, "eval.json", "JSON results file", NULL},
      {"save-probe", 1, NULL, "linear: write the probe (raw pooled-C5 space, class names) to this .safetensors "
                              "(for dsc viz gradcam --target probe)", NULL},
      {"size", 1, "0", "working size; 0: the first train image's side when square, else 224", NULL},
      {"resize", 1, "0", "shorter side before the center crop; 0: size*8/7 (knn/linear), size (seg/cluster)", NULL},
      {"classes", 1, "0", "class count; 0: from the data (seg: max label + 1 over train)", NULL},
      {"max-train", 1, "0", "use the first N train images (0: all)", NULL},
      {"max-val", 1, "0", "use the first N val images (0: all)", NULL},
      {"batch", 1, "64", "images per forward", NULL},
      {"threads", 1, "0", "CPU threads (0: all cores)", NULL},
      {"knn-k", 1, d_k, "k-NN neighbours", NULL},
      {"knn-tau", 1, d_tau, "k-NN vote temperature", NULL},
      {"linear-epochs", 1, d_le, "linear probe epochs", NULL},
      {"linear-batch", 1, d_lb, "linear probe batch (images)", NULL},
      {"linear-lr", 1, d_llr, "linear probe learning rate (Adam, cosine)", NULL},
      {"seg-epochs", 1, d_se, "dense probe epochs", NULL},
      {"seg-batch", 1, d_sb, "dense probe batch (label maps)", NULL},
      {"seg-lr", 1, d_slr, "dense probe learning rate (Adam, cosine)", NULL},
      {"wd", 1, d_wd, "probes' weight decay", NULL},
      {"cluster-iters", 1, d_ci, "k-means iterations at most (cluster)", NULL},
      {"probe-seed", 1, "0", "seed of the probes' batch order and of k-means++", NULL},
      {"strict", 0, NULL, "an image that cannot be read is an error (default: skipped, counted)", NULL},
      {"quiet", 0, NULL, "no progress on stderr", NULL},
  };
  cli_args a = {.command = "eval", .opts = opts, .n_opts = sizeof opts / sizeof opts[0]};
  if (cli_report(cli_parse(&a, argc, argv))) return 2;
  if (a.help) {
    cli_print_help(&a, "dsc eval knn|linear|seg|cluster|all[,...] --weights W --data DIR [options]",
                   "Frozen-backbone evaluation (METHOD.md section 7): k-NN and linear probe on pooled C5\n"
                   "(imagefolder splits), dense linear probe and k-means segmentation on C5 (seg layout).\n"
                   "Features are computed once per split and shared by the protocols. A table goes to\n"
                   "stdout, every number to --out (JSON). See docs/eval.md.",
                   stdout);
    return 0;
  }
  eval_state S = {0};
  dsc_status *st = read_options(&a, &S.o);
  if (st) {
    cli_report(st);
    return 2;
  }
  st = run_eval(&S, &a);
  eval_state_free(&S);
  return cli_report(st);
}
