/* weights.c: named tensors between host blobs and safetensors files (include/dsc/weights.h). */
#include "dsc/weights.h"

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

/* Appends a name to a comma-separated report, keeping it bounded. */
static void report_add(char *buf, size_t cap, int *count, const char *name) {
  (*count)++;
  size_t len = strlen(buf);
  if (*count > 8) {
    if (*count == 9 && len + 5 < cap) strcat(buf, ", ...");
    return;
  }
  snprintf(buf + len, cap - len, "%s%s", len ? ", " : "", name);
}

dsc_status *dsc_weights_load(const dsc_safetensors *f, const dsc_table *table,
                             const char *table_prefix, const char *file_prefix,
                             float *host_params, float *host_buffers, int allow_partial) {
  char missing[600] = "", misshaped[600] = "", unexpected[600] = "", name[256];
  int n_missing = 0, n_misshaped = 0, n_unexpected = 0, n_loaded = 0;
  size_t tp = strlen(table_prefix);
  for (int i = 0; i < table->count; i++) {
    const dsc_tensor_entry *e = &table->entries[i];
    if (!starts_with(e->name, table_prefix)) continue;
    snprintf(name, sizeof name, "%s%s", file_prefix, e->name + tp);
    const dsc_st_tensor *t = dsc_st_find(f, name);
    if (!t) {
      report_add(missing, sizeof missing, &n_missing, name);
      continue;
    }
    int same = t->ndim == e->ndim;
    for (int d = 0; same && d < e->ndim; d++) same = t->shape[d] == e->shape[d];
    if (!same) {
      char desc[300] = "";
      snprintf(desc, sizeof desc, "%s (file [", name);
      for (int d = 0; d < t->ndim; d++)
        snprintf(desc + strlen(desc), sizeof desc - strlen(desc), "%s%lld", d ? "," : "",
                 (long long)t->shape[d]);
      snprintf(desc + strlen(desc), sizeof desc - strlen(desc), "], model [");
      for (int d = 0; d < e->ndim; d++)
        snprintf(desc + strlen(desc), sizeof desc - strlen(desc), "%s%lld", d ? "," : "",
                 (long long)e->shape[d]);
      snprintf(desc + strlen(desc), sizeof desc - strlen(desc), "])");
      report_add(misshaped, sizeof misshaped, &n_misshaped, desc);
      continue;
    }
    float *dst = (e->role == DSC_ROLE_PARAM ? host_params : host_buffers) + e->offset;
    DSC_TRY(dsc_st_read_f32(f, name, dst, e->numel));
    n_loaded++;
  }
  size_t fp = strlen(file_prefix);
  for (int i = 0; i < dsc_st_count(f); i++) {
    const char *fname = dsc_st_get(f, i)->name;
    if (!starts_with(fname, file_prefix)) continue;
    if (starts_with(fname + fp, "fc.") || ends_with(fname, ".num_batches_tracked")) continue;
    snprintf(name, sizeof name, "%s%s", table_prefix, fname + fp);
    if (!dsc_table_find(table, name)) report_add(unexpected, sizeof unexpected, &n_unexpected, fname);
  }
  if (n_loaded == 0)
    return dsc_errorf("%s: none of the model's %d tensors found (names like %s%s)",
                      dsc_st_path(f), table->count, file_prefix,
                      table->count ? table->entries[0].name + tp : "?");
  if ((n_missing || n_misshaped || n_unexpected) && !allow_partial)
    return dsc_errorf("%s: does not match the model: %d missing [%s], %d unexpected [%s], %d "
                      "mis-shaped [%s] (--allow-partial loads what matches)",
                      dsc_st_path(f), n_missing, missing, n_unexpected, unexpected, n_misshaped,
                      misshaped);
  if (n_missing || n_misshaped || n_unexpected)
    fprintf(stderr,
            "warning: %s: partial load: %d missing [%s], %d unexpected [%s], %d mis-shaped [%s]\n",
            dsc_st_path(f), n_missing, missing, n_unexpected, unexpected, n_misshaped, misshaped);
  return NULL;
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

dsc_status *dsc_weights_detect_resnet(const dsc_safetensors *f, dsc_resnet_config *cfg,
                                      const char **file_prefix) {
  static const char *prefixes[] = {"", "backbone."};
  char name[128];
  for (int p = 0; p < 2; p++) {
    snprintf(name, sizeof name, "%sconv1.weight", prefixes[p]);
    const dsc_st_tensor *conv1 = dsc_st_find(f, name);
    if (!conv1) continue;
    if (conv1->ndim != 4)
      return dsc_errorf("%s: %s has %d dimensions, expected 4", dsc_st_path(f), name, conv1->ndim);
    cfg->small_stem = conv1->shape[2] == 3;
    snprintf(name, sizeof name, "%slayer1.0.conv3.weight", prefixes[p]);
    if (dsc_st_find(f, name)) {
      cfg->depth = 50;
    } else {
      snprintf(name, sizeof name, "%slayer3.2.conv1.weight", prefixes[p]);
      cfg->depth = dsc_st_find(f, name) ? 34 : 18;
    }
    *file_prefix = prefixes[p];
    return NULL;
  }
  return dsc_errorf("%s: no ResNet backbone found (no conv1.weight or backbone.conv1.weight)",
                    dsc_st_path(f));
}
