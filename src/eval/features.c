/* features.c: frozen-backbone features for the evaluation protocols (include/dsc/features.h).
 *
 * Extraction, per batch: the batch's images are decoded and transformed in parallel (OpenMP,
 * one slot per image, so the order is the dataset's whatever the thread count), failures are
 * compacted away (or returned under `strict`), the kept images go through one eval forward,
 * and C5 is copied out: straight into the dense cache, and/or pooled per image in double.
 */
#include "dsc/features.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dsc/image.h"
#include "dsc/weights.h"

const char *dsc_weights_source_name(dsc_weights_source s) {
  switch (s) {
    case DSC_WEIGHTS_RANDOM: return "random";
    case DSC_WEIGHTS_CHECKPOINT: return "checkpoint";
    case DSC_WEIGHTS_EXPORTED: return "exported";
  }
  return "unknown";
}

/* ---------------------------------------------------------------- the backbone ------------- */

static dsc_status *copy_metadata(const dsc_safetensors *f, dsc_feature_backbone *m) {
  int n = dsc_st_meta_count(f);
  if (n == 0) return NULL;
  m->meta_keys = calloc((size_t)n, sizeof *m->meta_keys);
  m->meta_values = calloc((size_t)n, sizeof *m->meta_values);
  if (!m->meta_keys || !m->meta_values) return dsc_errorf("out of memory copying metadata");
  for (int i = 0; i < n; i++) {
    const char *k = dsc_st_meta_key(f, i), *v = dsc_st_meta(f, k);
    m->meta_keys[i] = strdup(k);
    m->meta_values[i] = strdup(v ? v : "");
    m->n_meta = i + 1;
    if (!m->meta_keys[i] || !m->meta_values[i]) return dsc_errorf("out of memory copying metadata");
  }
  return NULL;
}

static dsc_status *backbone_open(const dsc_feature_backbone_config *cfg, dsc_feature_backbone *m) {
  if (!cfg->weights || !*cfg->weights)
    return dsc_errorf("no weights given (a .safetensors or .pth file, or \"random\")");
  if (cfg->depth != 0 && cfg->depth != 18 && cfg->depth != 34 && cfg->depth != 50)
    return dsc_errorf("unsupported ResNet depth %d (18, 34 or 50)", cfg->depth);
  if (cfg->small_stem < -1 || cfg->small_stem > 1) return dsc_errorf("invalid stem choice %d", cfg->small_stem);
  if (cfg->threads < 0) return dsc_errorf("invalid thread count %d", cfg->threads);
  m->threads = cfg->threads > 0 ? cfg->threads : omp_get_num_procs();
  if (m->threads < 1) m->threads = 1;

  dsc_safetensors *f = NULL;
  const char *prefix = "";
  if (strcmp(cfg->weights, "random") == 0) {
    if (cfg->depth == 0)
      return dsc_errorf("random weights need an architecture (resnet18, resnet34 or resnet50)");
    m->cfg.depth = cfg->depth;
    m->cfg.small_stem = cfg->small_stem == 1;
    m->source = DSC_WEIGHTS_RANDOM;
  } else {
    DSC_TRY(dsc_weights_open(cfg->weights, &f));
    dsc_status *st = dsc_weights_detect_resnet(f, &m->cfg, &prefix);
    if (!st && cfg->depth && cfg->depth != m->cfg.depth)
      st = dsc_errorf("%s holds a resnet%d backbone, not the resnet%d asked for", cfg->weights,
                      m->cfg.depth, cfg->depth);
    if (!st && cfg->small_stem >= 0 && cfg->small_stem != m->cfg.small_stem)
      st = dsc_errorf("%s holds a ResNet with the %s stem, not the %s stem asked for", cfg->weights,
                      m->cfg.small_stem ? "small" : "standard", cfg->small_stem ? "small" : "standard");
    m->source = !strcmp(prefix, "backbone.") ? DSC_WEIGHTS_CHECKPOINT : DSC_WEIGHTS_EXPORTED;
    if (!st) st = copy_metadata(f, m);
    if (st) {
      dsc_st_close(f);
      return st;
    }
  }
  dsc_status *st = dsc_backend_cpu_new(m->threads, &m->be);
  if (!st) st = dsc_backbone_create(&m->net, m->be, &m->cfg, 0, cfg->seed);
  if (!st && f) {
    st = dsc_weights_load(f, &m->net.table, "", prefix, m->net.host_params, m->net.host_buffers,
                          cfg->allow_partial);
    if (!st) st = dsc_backbone_upload(&m->net);
  }
  dsc_st_close(f);
  return st;
}

dsc_status *dsc_feature_backbone_open(const dsc_feature_backbone_config *cfg,
                                      dsc_feature_backbone *out) {
  memset(out, 0, sizeof *out);
  if (!cfg) return dsc_errorf("dsc_feature_backbone_open: no configuration");
  dsc_status *st = backbone_open(cfg, out);
  if (st) dsc_feature_backbone_free(out);
  return st;
}

const char *dsc_feature_backbone_meta(const dsc_feature_backbone *m, const char *key) {
  for (int i = 0; i < m->n_meta; i++)
    if (strcmp(m->meta_keys[i], key) == 0) return m->meta_values[i];
  return NULL;
}

void dsc_feature_backbone_free(dsc_feature_backbone *m) {
  if (!m) return;
  if (m->be) {
    dsc_backbone_free(&m->net);
    m->be->destroy(m->be);
  }
  for (int i = 0; i < m->n_meta; i++) {
    free(m->meta_keys[i]);
    free(m->meta_values[i]);
  }
  free(m->meta_keys);
  free(m->meta_values);
  memset(m, 0, sizeof *m);
}

/* ---------------------------------------------------------------- label maps --------------- */

/* torchvision's center_crop offset along an axis of length n for a crop of `size` (as
 * dsc_image_eval_transform): negative inside the leading padding when the crop is larger,
 * else int(round((n - size) / 2.0)) with round half to even. */
static int crop_offset(int n, int size) {
  if (size > n) return -((size - n) / 2);
  const int d = n - size, half = d / 2;
  if (d % 2 == 0) return half;
  return half % 2 == 0 ? half : half + 1;
}

dsc_status *dsc_label_map_eval_transform(const uint8_t *map, int w, int h, int resize, int size,
                                         uint8_t *out) {
  if (!map || !out || w <= 0 || h <= 0 || size <= 0 || resize <= 0)
    return dsc_errorf("dsc_label_map_eval_transform: invalid arguments (%dx%d map, resize %d, size %d)",
                      w, h, resize, size);
  if (w == size && h == size) {
    memcpy(out, map, (size_t)size * size);
    return NULL;
  }
  int rw, rh;
  DSC_TRY(dsc_image_eval_size(w, h, resize, &rw, &rh));
  const int left = crop_offset(rw, size), top = crop_offset(rh, size);
  const float sx = (float)w / (float)rw, sy = (float)h / (float)rh;
  for (int y = 0; y < size; y++) {
    const int ry = top + y;
    uint8_t *o = out + (size_t)y * size;
    if (ry < 0 || ry >= rh) {
      memset(o, 255, (size_t)size);
      continue;
    }
    int src_y = (int)((float)ry * sy);
    if (src_y > h - 1) src_y = h - 1;
    const uint8_t *row = map + (size_t)src_y * w;
    for (int x = 0; x < size; x++) {
      const int rx = left + x;
      if (rx < 0 || rx >= rw) {
        o[x] = 255;
        continue;
      }
      int src_x = (int)((float)rx * sx);
      if (src_x > w - 1) src_x = w - 1;
      o[x] = row[src_x];
    }
  }
  return NULL;
}

/* ---------------------------------------------------------------- extraction --------------- */

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void dsc_features_free(dsc_features *f) {
  if (!f) return;
  free(f->pooled);
  free(f->dense);
  free(f->labels);
  free(f->maps);
  memset(f, 0, sizeof *f);
}

/* The work buffers of one extraction. */
typedef struct extract_work {
  float *host_x;        /* batch * px * 3 */
  float *x;             /* backend copy of the kept images */
  float *c5;            /* batch * hwc host floats when the dense cache is not kept */
  int32_t *labels;      /* batch */
  uint8_t *maps;        /* batch * px */
  dsc_status **errors;  /* batch */
  double *acc;          /* c */
} extract_work;

/* Decodes and transforms images [first, first + count) into slots 0..count-1. */
static void decode_batch(const dsc_dataset *ds, const dsc_feature_config *cfg, int threads,
                         int want_maps, size_t first, int count, extract_work *w) {
  const size_t px = (size_t)cfg->size * cfg->size;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (threads > 1 && count > 1)
  for (int i = 0; i < count; i++) {
    dsc_image img = {0};
    uint8_t *map = NULL;
    int label = -1;
    dsc_status *st = dsc_dataset_load(ds, first + (size_t)i, &img, &label, want_maps ? &map : NULL);
    if (!st) st = dsc_image_eval_transform(&img, cfg->resize, cfg->size, w->host_x + (size_t)i * px * 3);
    if (!st && want_maps && map)
      st = dsc_label_map_eval_transform(map, img.w, img.h, cfg->resize, cfg->size, w->maps + (size_t)i * px);
    else if (!st && want_maps)
      memset(w->maps + (size_t)i * px, 255, px);
    w->labels[i] = label;
    w->errors[i] = st;
    free(map);
    dsc_image_free(&img);
  }
}

static dsc_status *extract(dsc_feature_backbone *m, const dsc_dataset *ds,
                           const dsc_feature_config *cfg, int what, dsc_features *out,
                           extract_work *w) {
  dsc_backend *be = m->be;
  const char *name = cfg->what ? cfg->what : dsc_dataset_name(ds, 0);
  size_t total = dsc_dataset_size(ds);
  if (cfg->max_images > 0 && (size_t)cfg->max_images < total) total = (size_t)cfg->max_images;
  if (total == 0) return dsc_errorf("%s: no images", name);
  const int size = cfg->size, batch = cfg->batch;
  const size_t px = (size_t)size * size;
  const int want_labels = dsc_dataset_num_classes(ds) > 0;
  const int want_maps = (what & DSC_FEATURES_DENSE) && dsc_dataset_has_label_maps(ds);

  /* The C5 geometry, from a forward of one zero image. */
  w->host_x = calloc((size_t)batch * px * 3, sizeof(float));
  w->labels = calloc((size_t)batch, sizeof *w->labels);
  w->errors = calloc((size_t)batch, sizeof *w->errors);
  if (want_maps) w->maps = malloc((size_t)batch * px);
  if (!w->host_x || !w->labels || !w->errors || (want_maps && !w->maps))
    return dsc_errorf("%s: out of memory for a batch of %d images of %dx%d", name, batch, size, size);
  DSC_TRY(be->alloc(be, (size_t)batch * px * 3 * sizeof(float), (void **)&w->x));
  dsc_resnet_features f;
  DSC_TRY(dsc_resnet_forward(&m->net.net, w->x, 1, size, size, 0, 1, &f));
  out->c = f.channels[3], out->h = f.h[3], out->w = f.w[3];
  out->size = size;
  out->max_label = -1;
  out->n_classes = dsc_dataset_num_classes(ds);
  const size_t hw = (size_t)out->h * out->w, hwc = hw * (size_t)out->c;

  /* The caches, for every image (the kept ones fill a prefix). */
  if (what & DSC_FEATURES_POOLED) out->pooled = malloc(total * (size_t)out->c * sizeof(float));
  if (what & DSC_FEATURES_DENSE) out->dense = malloc(total * hwc * sizeof(float));
  else w->c5 = malloc((size_t)batch * hwc * sizeof(float));
  if (want_labels) out->labels = malloc(total * sizeof *out->labels);
  if (want_maps) out->maps = malloc(total * px);
  w->acc = malloc((size_t)out->c * sizeof *w->acc);
  if (((what & DSC_FEATURES_POOLED) && !out->pooled) || ((what & DSC_FEATURES_DENSE) && !out->dense) ||
      (!(what & DSC_FEATURES_DENSE) && !w->c5) || (want_labels && !out->labels) ||
      (want_maps && !out->maps) || !w->acc)
    return dsc_errorf("%s: out of memory for the features of %zu images", name, total);

  size_t next_report = total / 10;
  for (size_t first = 0; first < total; first += (size_t)batch) {
    const int count = (int)(total - first < (size_t)batch ? total - first : (size_t)batch);
    decode_batch(ds, cfg, m->threads, want_maps, first, count, w);
    /* Compact: kept images move down to consecutive slots, in order. */
    int kept = 0;
    dsc_status *st = NULL;
    for (int i = 0; i < count; i++) {
      if (w->errors[i]) {
        if (!st && cfg->strict) {
          st = w->errors[i];
        } else {
          if (out->skipped < 10) fprintf(stderr, "dsc: warning: %s: skipped: %s\n", name, w->errors[i]->msg);
          dsc_status_free(w->errors[i]);
        }
        w->errors[i] = NULL;
        out->skipped++;
        continue;
      }
      if (kept != i) {
        memmove(w->host_x + (size_t)kept * px * 3, w->host_x + (size_t)i * px * 3, px * 3 * sizeof(float));
        if (want_maps) memmove(w->maps + (size_t)kept * px, w->maps + (size_t)i * px, px);
        w->labels[kept] = w->labels[i];
      }
      kept++;
    }
    DSC_TRY(st);
    if (kept == 0) continue;
    const size_t at = (size_t)out->n;
    DSC_TRY(be->upload(be, w->x, w->host_x, (size_t)kept * px * 3 * sizeof(float)));
    DSC_TRY(dsc_resnet_forward(&m->net.net, w->x, kept, size, size, 0, 1, &f));
    float *c5 = out->dense ? out->dense + at * hwc : w->c5;
    DSC_TRY(be->download(be, c5, f.c[3], (size_t)kept * hwc * sizeof(float)));
    for (int i = 0; i < kept && out->pooled; i++) {
      const float *img = c5 + (size_t)i * hwc;
      for (int k = 0; k < out->c; k++) w->acc[k] = 0;
      for (size_t p = 0; p < hw; p++)
        for (int k = 0; k < out->c; k++) w->acc[k] += img[p * out->c + k];
      float *dst = out->pooled + (at + (size_t)i) * out->c;
      for (int k = 0; k < out->c; k++) dst[k] = (float)(w->acc[k] / (double)hw);
    }
    if (out->labels) memcpy(out->labels + at, w->labels, (size_t)kept * sizeof *out->labels);
    if (out->maps) {
      memcpy(out->maps + at * px, w->maps, (size_t)kept * px);
      for (size_t p = 0; p < (size_t)kept * px; p++)
        if (w->maps[p] != 255 && w->maps[p] > out->max_label) out->max_label = w->maps[p];
    }
    out->n += kept;
    if (cfg->verbose && first + (size_t)count >= next_report && first + (size_t)count < total) {
      fprintf(stderr, "dsc: %s: %zu/%zu images\n", name, first + (size_t)count, total);
      next_report = first + (size_t)count + total / 10;
    }
  }
  if (out->n == 0) return dsc_errorf("%s: none of its %zu images could be read", name, total);
  if (out->skipped > 10)
    fprintf(stderr, "dsc: warning: %s: %lld images skipped in all (the first 10 named above)\n", name,
            (long long)out->skipped);
  return NULL;
}

dsc_status *dsc_features_extract(dsc_feature_backbone *m, const dsc_dataset *ds,
                                 const dsc_feature_config *cfg, int what, dsc_features *out) {
  memset(out, 0, sizeof *out);
  if (!m || !m->be || !ds || !cfg) return dsc_errorf("dsc_features_extract: missing argument");
  if (!(what & (DSC_FEATURES_POOLED | DSC_FEATURES_DENSE)))
    return dsc_errorf("dsc_features_extract: nothing asked for");
  if (cfg->size < 8 || cfg->size > 4096 || cfg->resize < 1 || cfg->resize > 65536)
    return dsc_errorf("dsc_features_extract: size %d / resize %d out of range", cfg->size, cfg->resize);
  if (cfg->batch < 1 || cfg->batch > 65536)
    return dsc_errorf("dsc_features_extract: batch %d out of range", cfg->batch);
  const double t0 = now_seconds();
  extract_work w = {0};
  dsc_status *st = extract(m, ds, cfg, what, out, &w);
  if (w.x) m->be->free(m->be, w.x);
  for (int i = 0; w.errors && i < cfg->batch; i++) dsc_status_free(w.errors[i]);
  free(w.errors);
  free(w.host_x);
  free(w.c5);
  free(w.labels);
  free(w.maps);
  free(w.acc);
  if (st) {
    dsc_features_free(out);
    return st;
  }
  out->seconds = now_seconds() - t0;
  return NULL;
}
