/* ssl_checkpoint.c: checkpoint files of a pretraining run (METHOD.md §8): every tensor of the
 * model (ssl_model.c's walk) plus metadata — every resolved configuration key under its name,
 * step, epoch, lr_step, total_steps, data.images, world_size and the RNG state. The RNG is
 * counter-based (include/dsc/rng.h): its whole state is the seed and the step, written as
 * `rng` = "philox4x32-10 seed=S step=K". Files are written atomically (safetensors writer). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsc/safetensors.h"
#include "ssl/ssl_internal.h"

dsc_status *dsc_ssl_meta_add(const dsc_ssl_model *m, const dsc_ssl_meta *meta, dsc_st_writer *w) {
  int n = 0;
  char **keys = NULL, **values = NULL;
  DSC_TRY(dsc_config_to_pairs(&m->cfg, &n, &keys, &values));
  dsc_status *st = NULL;
  for (int i = 0; !st && i < n; i++) st = dsc_st_writer_meta(w, keys[i], values[i]);
  dsc_config_pairs_free(n, keys, values);
  char v[128];
#define META(key, ...) \
  if (!st) { snprintf(v, sizeof v, __VA_ARGS__); st = dsc_st_writer_meta(w, key, v); }
  META("step", "%" PRId64, meta->step);
  META("epoch", "%" PRId64, meta->epoch);
  META("lr_step", "%.9g", meta->lr_step);
  META("total_steps", "%" PRId64, meta->total_steps);
  META("data.images", "%" PRId64, meta->images);
  META("world_size", "%d", meta->world_size);
  META("rng", "philox4x32-10 seed=%" PRIu64 " step=%" PRId64, m->cfg.seed, meta->step);
#undef META
  return st;
}

dsc_status *dsc_ssl_save(const dsc_ssl_model *m, const dsc_ssl_meta *meta, const char *path,
                         const char *also) {
  dsc_ssl_snapshot s;
  DSC_TRY(dsc_ssl_snapshot_take(m, &s));
  dsc_st_writer *w = NULL;
  dsc_status *st = dsc_st_writer_new(&w);
  if (!st) st = dsc_ssl_meta_add(m, meta, w);
  if (!st) st = dsc_ssl_snapshot_add(m, &s, w, "");
  if (!st) st = dsc_st_writer_save(w, path);
  if (!st && also) st = dsc_st_writer_save(w, also);
  dsc_st_writer_free(w);
  dsc_ssl_snapshot_free(&s);
  return st;
}

static dsc_status *meta_i64(const dsc_safetensors *f, const char *key, int64_t *out) {
  const char *v = dsc_st_meta(f, key);
  char *end = NULL;
  if (!v) return dsc_errorf("%s: no metadata \"%s\" (not a dsc pretraining checkpoint?)", dsc_st_path(f), key);
  long long x = strtoll(v, &end, 10);
  if (end == v || *end) return dsc_errorf("%s: metadata %s=\"%s\" is not an integer", dsc_st_path(f), key, v);
  *out = x;
  return NULL;
}

dsc_status *dsc_ssl_meta_read(const char *path, dsc_ssl_meta *meta, dsc_config *cfg) {
  dsc_safetensors *f = NULL;
  DSC_TRY(dsc_st_open(path, &f));
  memset(meta, 0, sizeof *meta);
  int64_t ws = 1;
  dsc_status *st = meta_i64(f, "step", &meta->step);
  if (!st) st = meta_i64(f, "epoch", &meta->epoch);
  if (!st) st = meta_i64(f, "total_steps", &meta->total_steps);
  if (!st) st = meta_i64(f, "data.images", &meta->images);
  if (!st) st = meta_i64(f, "world_size", &ws);
  meta->world_size = (int)ws;
  const char *lr = dsc_st_meta(f, "lr_step");
  meta->lr_step = lr ? strtod(lr, NULL) : 0;
  if (!st && cfg) {
    int n = dsc_st_meta_count(f);
    const char **keys = calloc((size_t)n + 1, sizeof *keys), **values = calloc((size_t)n + 1, sizeof *values);
    if (!keys || !values) st = dsc_errorf("out of memory");
    for (int i = 0; !st && i < n; i++) {
      keys[i] = dsc_st_meta_key(f, i);
      values[i] = dsc_st_meta(f, keys[i]);
    }
    if (!st) st = dsc_status_wrap(dsc_config_from_pairs(cfg, n, keys, values), "%s", path);
    free(keys);
    free(values);
  }
  dsc_st_close(f);
  return st;
}
