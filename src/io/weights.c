/* weights.c: named tensors between host blobs and safetensors files (include/dsc/weights.h). */
#include "dsc/weights.h"

#include "dsc/pth.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int starts_with(const char *s, const char *prefix) {
  return strncmp(s, prefix, strlen(prefix)) == 0;
}

static int ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), m = strlen(suffix);
  return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* One category of the load report: every name, for the report on stderr, and the first few
 * in a bounded summary for the error message. */
typedef struct name_list {
  char **names;
  int count, cap;
} name_list;

static void list_add(name_list *l, const char *name) {
  if (l->count == l->cap) {
    int cap = l->cap ? 2 * l->cap : 16;
    char **grown = realloc(l->names, (size_t)cap * sizeof *grown);
    if (!grown) return; /* the report is best effort; the counts below stay right */
    l->names = grown;
    l->cap = cap;
  }
  l->names[l->count] = strdup(name);
  if (l->names[l->count]) l->count++;
}

static void list_free(name_list *l) {
  for (int i = 0; i < l->count; i++) free(l->names[i]);
  free(l->names);
}

/* "a, b, c, ... (N in all)" of the first few names. */
static void list_summary(const name_list *l, char *buf, size_t cap) {
  buf[0] = 0;
  for (int i = 0; i < l->count && i < 3; i++)
    snprintf(buf + strlen(buf), cap - strlen(buf), "%s%s", i ? ", " : "", l->names[i]);
  if (l->count > 3) snprintf(buf + strlen(buf), cap - strlen(buf), ", ...");
}

/* The full report on stderr, one name per line (at most 200 per category). */
static void report_print(const char *path, const char *verdict, const name_list lists[3]) {
  static const char *what[3] = {"missing", "unexpected", "mis-shaped"};
  fprintf(stderr, "load report for %s (%s): %d missing, %d unexpected, %d mis-shaped\n", path, verdict,
          lists[0].count, lists[1].count, lists[2].count);
  for (int k = 0; k < 3; k++) {
    for (int i = 0; i < lists[k].count && i < 200; i++)
      fprintf(stderr, "  %-10s %s\n", what[k], lists[k].names[i]);
    if (lists[k].count > 200) fprintf(stderr, "  %-10s ... and %d more\n", what[k], lists[k].count - 200);
  }
}

dsc_status *dsc_weights_load(const dsc_safetensors *f, const dsc_table *table,
                             const char *table_prefix, const char *file_prefix,
                             float *host_params, float *host_buffers, int allow_partial) {
  name_list lists[3] = {{0}}; /* missing, unexpected, mis-shaped */
  char name[256];
  int n_loaded = 0;
  size_t tp = strlen(table_prefix);
  dsc_status *st = NULL;
  for (int i = 0; !st && i < table->count; i++) {
    const dsc_tensor_entry *e = &table->entries[i];
    if (!starts_with(e->name, table_prefix)) continue;
    snprintf(name, sizeof name, "%s%s", file_prefix, e->name + tp);
    const dsc_st_tensor *t = dsc_st_find(f, name);
    if (!t) {
      list_add(&lists[0], name);
      continue;
    }
    int same = t->ndim == e->ndim;
    for (int d = 0; same && d < e->ndim; d++) same = t->shape[d] == e->shape[d];
    if (!same) {
      char desc[400] = "";
      snprintf(desc, sizeof desc, "%s (file [", name);
      for (int d = 0; d < t->ndim; d++)
        snprintf(desc + strlen(desc), sizeof desc - strlen(desc), "%s%lld", d ? "," : "",
                 (long long)t->shape[d]);
      snprintf(desc + strlen(desc), sizeof desc - strlen(desc), "], model [");
      for (int d = 0; d < e->ndim; d++)
        snprintf(desc + strlen(desc), sizeof desc - strlen(desc), "%s%lld", d ? "," : "",
                 (long long)e->shape[d]);
      snprintf(desc + strlen(desc), sizeof desc - strlen(desc), "])");
      list_add(&lists[2], desc);
      continue;
    }
    float *dst = (e->role == DSC_ROLE_PARAM ? host_params : host_buffers) + e->offset;
    st = dsc_st_read_f32(f, name, dst, e->numel);
    n_loaded++;
  }
  size_t fp = strlen(file_prefix);
  for (int i = 0; !st && i < dsc_st_count(f); i++) {
    const char *fname = dsc_st_get(f, i)->name;
    if (!starts_with(fname, file_prefix)) continue;
    if (starts_with(fname + fp, "fc.") || ends_with(fname, ".num_batches_tracked")) continue;
    snprintf(name, sizeof name, "%s%s", table_prefix, fname + fp);
    if (!dsc_table_find(table, name)) list_add(&lists[1], fname);
  }
  int mismatch = lists[0].count || lists[1].count || lists[2].count;
  if (!st && n_loaded == 0) {
    st = dsc_errorf("%s: none of the model's %d tensors found (names like %s%s)", dsc_st_path(f),
                    table->count, file_prefix, table->count ? table->entries[0].name + tp : "?");
  } else if (!st && mismatch && !allow_partial) {
    char m[300], u[300], s[400];
    list_summary(&lists[0], m, sizeof m);
    list_summary(&lists[1], u, sizeof u);
    list_summary(&lists[2], s, sizeof s);
    report_print(dsc_st_path(f), "refused", lists);
    st = dsc_errorf("%s: does not match the model: %d missing [%s], %d unexpected [%s], %d "
                    "mis-shaped [%s] (the load report above lists them all; --allow-partial "
                    "loads what matches)",
                    dsc_st_path(f), lists[0].count, m, lists[1].count, u, lists[2].count, s);
  } else if (!st && mismatch) {
    report_print(dsc_st_path(f), "partial load allowed: the rest keeps its initialization", lists);
  }
  for (int k = 0; k < 3; k++) list_free(&lists[k]);
  return st;
}

dsc_status *dsc_weights_for_each(const dsc_table *table, const char *table_prefix,
                                 const char *file_prefix, int params_only, float *host_params,
                                 float *host_buffers, int64_t *num_batches_tracked,
                                 dsc_weights_fn fn, void *ctx) {
  char name[256];
  size_t tp = strlen(table_prefix);
  for (int i = 0; i < table->count; i++) {
    const dsc_tensor_entry *e = &table->entries[i];
    if (!starts_with(e->name, table_prefix)) continue;
    if (params_only && e->role != DSC_ROLE_PARAM) continue;
    snprintf(name, sizeof name, "%s%s", file_prefix, e->name + tp);
    float *src = (e->role == DSC_ROLE_PARAM ? host_params : host_buffers) + e->offset;
    DSC_TRY(fn(ctx, name, DSC_F32, e->ndim, e->shape, src));
    if (num_batches_tracked && ends_with(name, ".running_var")) {
      name[strlen(name) - strlen("running_var")] = 0;
      strcat(name, "num_batches_tracked");
      DSC_TRY(fn(ctx, name, DSC_I64, 0, NULL, num_batches_tracked));
    }
  }
  return NULL;
}

dsc_status *dsc_weights_writer_add_fn(void *ctx, const char *name, dsc_dtype dtype, int ndim,
                                      const int64_t *shape, void *data) {
  return dsc_st_writer_add(ctx, name, dtype, ndim, shape, data);
}

dsc_status *dsc_weights_add(dsc_st_writer *w, const dsc_table *table, const char *table_prefix,
                            const char *file_prefix, const float *host_params,
                            const float *host_buffers, const int64_t *num_batches_tracked) {
  /* The writer only reads the blobs until its save. */
  return dsc_weights_for_each(table, table_prefix, file_prefix, 0, (float *)host_params,
                              (float *)host_buffers, (int64_t *)num_batches_tracked,
                              dsc_weights_writer_add_fn, w);
}

dsc_status *dsc_weights_open(const char *path, dsc_safetensors **out) {
  *out = NULL;
  unsigned char head[16] = {0};
  FILE *fp = fopen(path, "rb");
  if (!fp) return dsc_errorf("%s: cannot open: %s", path, strerror(errno));
  size_t n = fread(head, 1, sizeof head, fp);
  fclose(fp);
  if (dsc_pth_sniff(head, n)) return dsc_pth_read(path, out);
  return dsc_st_open(path, out);
}

/* Where a ResNet's torchvision keys sit in the files people have: exports and torchvision or
 * timm weights (no prefix), dsc checkpoints and mmcv-style models ("backbone."), DataParallel
 * saves ("module."), MoCo ("module.encoder_q.") and DenseCL/OpenSelfSup ("encoder_q.0.")
 * training checkpoints. The first prefix under which conv1.weight exists is taken. */
static const char *const resnet_prefixes[] = {
    "", "backbone.", "module.", "module.backbone.", "module.encoder_q.", "encoder_q.",
    "module.encoder_q.0.", "encoder_q.0.", "encoder.", "model.",
};

dsc_status *dsc_weights_detect_resnet_at(const dsc_safetensors *f, const char *prefix,
                                         dsc_resnet_config *cfg) {
  char name[160];
  snprintf(name, sizeof name, "%sconv1.weight", prefix);
  const dsc_st_tensor *conv1 = dsc_st_find(f, name);
  if (!conv1) return dsc_errorf("%s: no ResNet under \"%s\" (no %s)", dsc_st_path(f), prefix, name);
  if (conv1->ndim != 4)
    return dsc_errorf("%s: %s has %d dimensions, expected 4", dsc_st_path(f), name, conv1->ndim);
  cfg->small_stem = conv1->shape[2] == 3;
  snprintf(name, sizeof name, "%slayer1.0.conv3.weight", prefix);
  if (dsc_st_find(f, name)) {
    cfg->depth = 50;
  } else {
    snprintf(name, sizeof name, "%slayer3.2.conv1.weight", prefix);
    cfg->depth = dsc_st_find(f, name) ? 34 : 18;
  }
  return NULL;
}

dsc_status *dsc_weights_detect_resnet(const dsc_safetensors *f, dsc_resnet_config *cfg,
                                      const char **file_prefix) {
  char name[128];
  int n_prefixes = (int)(sizeof resnet_prefixes / sizeof resnet_prefixes[0]);
  for (int p = 0; p < n_prefixes; p++) {
    snprintf(name, sizeof name, "%sconv1.weight", resnet_prefixes[p]);
    if (!dsc_st_find(f, name)) continue;
    *file_prefix = resnet_prefixes[p];
    return dsc_weights_detect_resnet_at(f, resnet_prefixes[p], cfg);
  }
  return dsc_errorf("%s: no ResNet backbone found (no conv1.weight under any known prefix: none, "
                    "backbone., module., module.encoder_q., encoder_q.0., ...; %d tensors, the "
                    "first named %s)",
                    dsc_st_path(f), dsc_st_count(f),
                    dsc_st_count(f) ? dsc_st_get(f, 0)->name : "(none)");
}
