/* ssl_model.c: building the training model of include/dsc/ssl.h, its initialization, and its
 * checkpoint tensors (METHOD.md §2, §5, §8): snapshot, add to a safetensors writer, load. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsc/dist.h"
#include "dsc/rng.h"
#include "dsc/safetensors.h"
#include "dsc/weights.h"
#include "ssl/ssl_internal.h"

static dsc_status *add_linear(dsc_table *t, const char *prefix, int conv, int in, int out,
                              size_t *w_off, size_t *b_off) {
  char name[96];
  int64_t wshape[4] = {out, in, 1, 1}, bshape[1] = {out};
  snprintf(name, sizeof name, "%s.weight", prefix);
  DSC_TRY(dsc_table_add(t, name, DSC_ROLE_PARAM, conv ? DSC_KIND_CONV_WEIGHT : DSC_KIND_LINEAR_WEIGHT,
                        conv ? 4 : 2, wshape, w_off));
  snprintf(name, sizeof name, "%s.bias", prefix);
  return dsc_table_add(t, name, DSC_ROLE_PARAM, DSC_KIND_BIAS, 1, bshape, b_off);
}

static dsc_status *add_neck(dsc_table *t, const char *name, int conv, int c, int d,
                            dsc_ssl_neck *nk) {
  char prefix[64];
  nk->c = c;
  nk->d = d;
  snprintf(prefix, sizeof prefix, "%s.0", name);
  DSC_TRY(add_linear(t, prefix, conv, c, c, &nk->w1, &nk->b1));
  snprintf(prefix, sizeof prefix, "%s.2", name);
  return add_linear(t, prefix, conv, c, d, &nk->w2, &nk->b2);
}

/* PyTorch's default Linear/Conv2d initialization: weight and bias U(-1/sqrt(fan_in),
 * 1/sqrt(fan_in)) (kaiming_uniform with a = sqrt(5) gives the same bound for the weight). */
static void init_uniform(const dsc_tensor_entry *e, uint64_t seed, int64_t fan_in, float *dst) {
  double bound = 1.0 / sqrt((double)fan_in);
  uint32_t key = dsc_fnv1a32(e->name);
  for (size_t i = 0; i < e->numel; i++)
    dst[i] = (float)((2.0 * dsc_rng_uniform(seed, DSC_RNG_INIT, key, (uint32_t)i, 0) - 1.0) * bound);
}

/* Columns of a [d][L] queue: norm(randn) (METHOD.md §3). */
static void init_queue(float *q, int d, int64_t L, uint64_t seed, uint32_t which) {
#pragma omp parallel for schedule(static)
  for (int64_t l = 0; l < L; l++) {
    double ss = 0;
    for (int r = 0; r < d; r++) {
      double v = dsc_rng_normal(seed, DSC_RNG_QUEUE_INIT, which, (uint32_t)l, (uint32_t)r);
      q[(size_t)r * L + l] = (float)v;
      ss += (double)q[(size_t)r * L + l] * q[(size_t)r * L + l];
    }
    double nrm = sqrt(ss);
    float inv = (float)(1.0 / (nrm > 1e-12 ? nrm : 1e-12));
    for (int r = 0; r < d; r++) q[(size_t)r * L + l] *= inv;
  }
}

dsc_status *dsc_ssl_model_create(dsc_ssl_model *m, dsc_backend *be, const dsc_config *cfg) {
  memset(m, 0, sizeof *m);
  m->be = be;
  m->cfg = *cfg;
  m->world = 1;
  dsc_method me = cfg->method;
  m->has_dense = me != DSC_METHOD_MOCO_V2;
  m->has_protos = me == DSC_METHOD_DSC_PM || me == DSC_METHOD_DSC_CE;
  m->has_km = me == DSC_METHOD_DSC_KM;
  dsc_resnet_config rc = {dsc_resnet_depth_from_name(cfg->arch), strcmp(cfg->stem, "small") == 0};
  if (!rc.depth) return dsc_errorf("model.arch \"%s\": expected resnet18, resnet34 or resnet50", cfg->arch);
  DSC_TRY(dsc_resnet_init(&m->online, be, &rc, &m->table, "backbone."));
  /* The momentum encoder's backbone has the same layout: registered first in a table of its own. */
  dsc_table key_table = {0};
  dsc_status *st = dsc_resnet_init(&m->key, be, &rc, &key_table, "backbone.");
  dsc_table_free(&key_table);
  DSC_TRY(st);
  int c = m->online.out_channels, d = cfg->dim;
  DSC_TRY(add_neck(&m->table, "neck.mlp", 0, c, d, &m->neck_g));
  if (m->has_dense) DSC_TRY(add_neck(&m->table, "neck.mlp2", 1, c, d, &m->neck_d));
  m->encoder_numel = m->table.param_numel;
  if (m->has_protos) {
    int64_t shape[2] = {cfg->prototypes, d};
    DSC_TRY(dsc_table_add(&m->table, "prototypes.weight", DSC_ROLE_PARAM, DSC_KIND_LINEAR_WEIGHT, 2,
                          shape, &m->protos_off));
  }
  size_t pn = m->table.param_numel, bn = m->table.buffer_numel;
  DSC_TRY(be->alloc(be, pn * sizeof(float), (void **)&m->params));
  DSC_TRY(be->alloc(be, pn * sizeof(float), (void **)&m->grads));
  DSC_TRY(be->alloc(be, pn * sizeof(float), (void **)&m->momentum));
  DSC_TRY(be->alloc(be, (bn ? bn : 1) * sizeof(float), (void **)&m->buffers));
  DSC_TRY(be->alloc(be, m->encoder_numel * sizeof(float), (void **)&m->key_params));
  DSC_TRY(be->alloc(be, (bn ? bn : 1) * sizeof(float), (void **)&m->key_buffers));
  dsc_resnet_bind(&m->online, m->params, m->grads, m->buffers);
  dsc_resnet_bind(&m->key, m->key_params, NULL, m->key_buffers);

  m->queue_len = cfg->queue;
  size_t qn = (size_t)d * (size_t)m->queue_len;
  DSC_TRY(be->alloc(be, qn * sizeof(float), (void **)&m->queue_g));
  if (m->has_dense) DSC_TRY(be->alloc(be, qn * sizeof(float), (void **)&m->queue_d));
  if (m->has_km) DSC_TRY(be->alloc(be, (size_t)cfg->clusters * d * sizeof(float), (void **)&m->centroids));
  float *hp = calloc(pn, sizeof(float)), *hb = calloc(bn ? bn : 1, sizeof(float));
  float *hq = malloc(qn * sizeof(float));
  if (!hp || !hb || !hq) {
    free(hp);
    free(hb);
    free(hq);
    return dsc_errorf("out of memory for the model and its queues (method.queue=%lld, model.dim=%d)",
                      (long long)m->queue_len, d);
  }
  init_queue(hq, d, m->queue_len, cfg->seed, 0);
  st = be->upload(be, m->queue_g, hq, qn * sizeof(float));
  if (!st && m->has_dense) {
    init_queue(hq, d, m->queue_len, cfg->seed, 1);
    st = be->upload(be, m->queue_d, hq, qn * sizeof(float));
  }
  free(hq);
  if (st) {
    free(hp);
    free(hb);
    return st;
  }

  dsc_resnet_init_weights(&m->online, &m->table, cfg->seed, hp, hb);
  for (int i = 0; i < m->table.count; i++) {
    const dsc_tensor_entry *e = &m->table.entries[i];
    if (strncmp(e->name, "neck.", 5) == 0)
      init_uniform(e, cfg->seed, e->kind == DSC_KIND_BIAS ? c : e->shape[1], hp + e->offset);
    else if (strcmp(e->name, "prototypes.weight") == 0)
      init_uniform(e, cfg->seed, d, hp + e->offset);
  }
  st = NULL;
  if (cfg->init[0]) {
    dsc_safetensors *f = NULL;
    st = dsc_weights_open(cfg->init, &f);
    dsc_resnet_config fc;
    const char *fprefix = "";
    if (!st) st = dsc_weights_detect_resnet(f, &fc, &fprefix);
    if (!st && (fc.depth != rc.depth || fc.small_stem != rc.small_stem))
      st = dsc_errorf("%s holds a resnet%d (stem %s), but model.arch=%s model.stem=%s", cfg->init,
                      fc.depth, fc.small_stem ? "small" : "standard", cfg->arch, cfg->stem);
    if (!st) st = dsc_weights_load(f, &m->table, "backbone.", fprefix, hp, hb, cfg->allow_partial);
    if (!st)
      fprintf(stderr, "model.init: backbone loaded from %s (resnet%d, %s stem, names under \"%s\")\n",
              cfg->init, fc.depth, fc.small_stem ? "small" : "standard", fprefix);
    dsc_st_close(f);
    st = dsc_status_wrap(st, "model.init");
  }
  if (!st) st = be->upload(be, m->params, hp, pn * sizeof(float));
  if (!st) st = be->upload(be, m->buffers, hb, bn * sizeof(float));
  /* Both encoders start identical (METHOD.md §5). */
  if (!st) st = be->upload(be, m->key_params, hp, m->encoder_numel * sizeof(float));
  if (!st) st = be->upload(be, m->key_buffers, hb, bn * sizeof(float));
  free(hp);
  free(hb);
  return st;
}

dsc_status *dsc_ssl_model_set_dist(dsc_ssl_model *m, dsc_dist *dist) {
  m->dist = dist;
  m->rank = dist ? dsc_dist_rank(dist) : 0;
  m->world = dist ? dsc_dist_world(dist) : 1;
  if (m->world == 1) return NULL;
  ssl_step_work_free(m); /* planned for one process's sizes */
  DSC_TRY(dsc_dist_bind(dist, m->be));
  /* Every rank starts from rank 0's state: the same seed gives the same initialization, but a
   * model.init file or a checkpoint read on each rank need not be the same bytes everywhere. */
  const size_t pn = m->table.param_numel, bn = m->table.buffer_numel ? m->table.buffer_numel : 1;
  const size_t qn = (size_t)m->cfg.dim * (size_t)m->queue_len;
  struct { void *p; size_t bytes; } state[] = {
      {m->params, pn * sizeof(float)},          {m->momentum, pn * sizeof(float)},
      {m->buffers, bn * sizeof(float)},         {m->key_params, m->encoder_numel * sizeof(float)},
      {m->key_buffers, bn * sizeof(float)},     {m->queue_g, qn * sizeof(float)},
      {m->queue_d, m->has_dense ? qn * sizeof(float) : 0},
      {m->centroids, m->has_km ? (size_t)m->cfg.clusters * m->cfg.dim * sizeof(float) : 0},
  };
  for (size_t i = 0; i < sizeof state / sizeof state[0]; i++)
    if (state[i].bytes) DSC_TRY(dsc_dist_broadcast(dist, state[i].p, state[i].bytes, 0));
  int64_t counters[5] = {m->queue_ptr, m->step, m->km_initialized, m->online.num_batches_tracked,
                         m->key.num_batches_tracked};
  DSC_TRY(dsc_dist_broadcast_host(dist, counters, sizeof counters, 0));
  m->queue_ptr = counters[0], m->step = counters[1], m->km_initialized = (int)counters[2];
  m->online.num_batches_tracked = counters[3], m->key.num_batches_tracked = counters[4];
  return NULL;
}

void dsc_ssl_model_free(dsc_ssl_model *m) {
  if (m->be) {
    dsc_backend *be = m->be;
    be->free(be, m->params);
    be->free(be, m->grads);
    be->free(be, m->momentum);
    be->free(be, m->buffers);
    be->free(be, m->key_params);
    be->free(be, m->key_buffers);
    be->free(be, m->queue_g);
    be->free(be, m->queue_d);
    be->free(be, m->centroids);
    be->free(be, m->staged);
  }
  ssl_step_work_free(m);
  dsc_resnet_free(&m->online);
  dsc_resnet_free(&m->key);
  dsc_table_free(&m->table);
  memset(m, 0, sizeof *m);
}

/* ---- checkpoint tensors ---- */

dsc_status *dsc_ssl_snapshot_take(const dsc_ssl_model *m, dsc_ssl_snapshot *s) {
  memset(s, 0, sizeof *s);
  dsc_backend *be = m->be;
  size_t pn = m->table.param_numel, bn = m->table.buffer_numel ? m->table.buffer_numel : 1;
  size_t qn = (size_t)m->cfg.dim * (size_t)m->queue_len;
  s->params = malloc(pn * sizeof(float));
  s->momentum = malloc(pn * sizeof(float));
  s->buffers = malloc(bn * sizeof(float));
  s->key_params = malloc(m->encoder_numel * sizeof(float));
  s->key_buffers = malloc(bn * sizeof(float));
  s->queue_g = malloc(qn * sizeof(float));
  if (m->has_dense) s->queue_d = malloc(qn * sizeof(float));
  if (m->has_km) s->centroids = malloc((size_t)m->cfg.clusters * m->cfg.dim * sizeof(float));
  if (!s->params || !s->momentum || !s->buffers || !s->key_params || !s->key_buffers ||
      !s->queue_g || (m->has_dense && !s->queue_d) || (m->has_km && !s->centroids)) {
    dsc_ssl_snapshot_free(s);
    return dsc_errorf("out of memory for a checkpoint snapshot");
  }
  dsc_status *st = be->download(be, s->params, m->params, pn * sizeof(float));
  if (!st) st = be->download(be, s->momentum, m->momentum, pn * sizeof(float));
  if (!st) st = be->download(be, s->buffers, m->buffers, bn * sizeof(float));
  if (!st) st = be->download(be, s->key_params, m->key_params, m->encoder_numel * sizeof(float));
  if (!st) st = be->download(be, s->key_buffers, m->key_buffers, bn * sizeof(float));
  if (!st) st = be->download(be, s->queue_g, m->queue_g, qn * sizeof(float));
  if (!st && m->has_dense) st = be->download(be, s->queue_d, m->queue_d, qn * sizeof(float));
  if (!st && m->has_km)
    st = be->download(be, s->centroids, m->centroids,
                      (size_t)m->cfg.clusters * m->cfg.dim * sizeof(float));
  if (st) {
    dsc_ssl_snapshot_free(s);
    return st;
  }
  s->queue_ptr = m->queue_ptr;
  s->tracked = m->online.num_batches_tracked;
  s->key_tracked = m->key.num_batches_tracked;
  return NULL;
}

void dsc_ssl_snapshot_free(dsc_ssl_snapshot *s) {
  free(s->params);
  free(s->buffers);
  free(s->momentum);
  free(s->key_params);
  free(s->key_buffers);
  free(s->queue_g);
  free(s->queue_d);
  free(s->centroids);
  memset(s, 0, sizeof *s);
}

dsc_status *ssl_for_each_tensor(const dsc_ssl_model *m, dsc_ssl_snapshot *s, const char *prefix,
                                ssl_tensor_fn fn, void *ctx) {
  char name[256], fp[160];
  DSC_TRY(dsc_weights_for_each(&m->table, "", prefix, 0, s->params, s->buffers, &s->tracked, fn, ctx));
  snprintf(fp, sizeof fp, "%smomentum.backbone.", prefix);
  DSC_TRY(dsc_weights_for_each(&m->table, "backbone.", fp, 0, s->key_params, s->key_buffers,
                               &s->key_tracked, fn, ctx));
  snprintf(fp, sizeof fp, "%smomentum.neck.", prefix);
  DSC_TRY(dsc_weights_for_each(&m->table, "neck.", fp, 0, s->key_params, s->key_buffers, NULL, fn,
                               ctx));
  int64_t qshape[2] = {m->cfg.dim, m->queue_len};
  snprintf(name, sizeof name, "%squeue.global", prefix);
  DSC_TRY(fn(ctx, name, DSC_F32, 2, qshape, s->queue_g));
  if (m->has_dense) {
    snprintf(name, sizeof name, "%squeue.dense", prefix);
    DSC_TRY(fn(ctx, name, DSC_F32, 2, qshape, s->queue_d));
  }
  snprintf(name, sizeof name, "%squeue.ptr", prefix);
  DSC_TRY(fn(ctx, name, DSC_I64, 0, NULL, &s->queue_ptr));
  if (m->has_km) {
    int64_t kshape[2] = {m->cfg.clusters, m->cfg.dim};
    snprintf(name, sizeof name, "%skm.centroids", prefix);
    DSC_TRY(fn(ctx, name, DSC_F32, 2, kshape, s->centroids));
  }
  snprintf(fp, sizeof fp, "%soptim.momentum.", prefix);
  return dsc_weights_for_each(&m->table, "", fp, 1, s->momentum, NULL, NULL, fn, ctx);
}

dsc_status *dsc_ssl_snapshot_add(const dsc_ssl_model *m, const dsc_ssl_snapshot *s,
                                 dsc_st_writer *w, const char *prefix) {
  return ssl_for_each_tensor(m, (dsc_ssl_snapshot *)s, prefix, dsc_weights_writer_add_fn, w);
}

typedef struct load_ctx {
  const dsc_safetensors *f;
  int found;
} load_ctx;

static dsc_status *load_fn(void *ctx, const char *name, dsc_dtype dtype, int ndim,
                           const int64_t *shape, void *data) {
  load_ctx *c = ctx;
  const dsc_st_tensor *t = dsc_st_find(c->f, name);
  if (!t) return dsc_errorf("%s: no tensor %s (is it a checkpoint of this configuration?)",
                            dsc_st_path(c->f), name);
  int same = t->ndim == ndim && t->dtype == dtype;
  for (int d = 0; same && d < ndim; d++) same = t->shape[d] == shape[d];
  if (!same)
    return dsc_errorf("%s: %s has dtype %s and %d dimensions of another shape than this "
                      "configuration's (dtype %s, %d dimensions)",
                      dsc_st_path(c->f), name, dsc_dtype_name(t->dtype), t->ndim,
                      dsc_dtype_name(dtype), ndim);
  memcpy(data, dsc_st_data(c->f, t), dsc_st_nbytes(t));
  c->found++;
  return NULL;
}

dsc_status *dsc_ssl_load(dsc_ssl_model *m, const char *path) {
  dsc_safetensors *f = NULL;
  DSC_TRY(dsc_st_open(path, &f));
  dsc_ssl_snapshot s;
  dsc_status *st = dsc_ssl_snapshot_take(m, &s);
  load_ctx c = {f, 0};
  if (!st) st = ssl_for_each_tensor(m, &s, "", load_fn, &c);
  if (!st && c.found != dsc_st_count(f))
    st = dsc_errorf("%s: holds %d tensors, a checkpoint of this configuration %d (another method "
                    "or model?)", path, dsc_st_count(f), c.found);
  dsc_backend *be = m->be;
  size_t pn = m->table.param_numel, bn = m->table.buffer_numel ? m->table.buffer_numel : 1;
  size_t qn = (size_t)m->cfg.dim * (size_t)m->queue_len;
  if (!st && (s.queue_ptr < 0 || s.queue_ptr >= m->queue_len))
    st = dsc_errorf("%s: queue.ptr %lld outside [0, %lld)", path, (long long)s.queue_ptr,
                    (long long)m->queue_len);
  if (!st) st = be->upload(be, m->params, s.params, pn * sizeof(float));
  if (!st) st = be->upload(be, m->momentum, s.momentum, pn * sizeof(float));
  if (!st) st = be->upload(be, m->buffers, s.buffers, bn * sizeof(float));
  if (!st) st = be->upload(be, m->key_params, s.key_params, m->encoder_numel * sizeof(float));
  if (!st) st = be->upload(be, m->key_buffers, s.key_buffers, bn * sizeof(float));
  if (!st) st = be->upload(be, m->queue_g, s.queue_g, qn * sizeof(float));
  if (!st && m->has_dense) st = be->upload(be, m->queue_d, s.queue_d, qn * sizeof(float));
  if (!st && m->has_km) {
    size_t kd = (size_t)m->cfg.clusters * m->cfg.dim;
    st = be->upload(be, m->centroids, s.centroids, kd * sizeof(float));
    /* All-zero centroids: the checkpoint was saved before the first k-means step. */
    m->km_initialized = 0;
    for (size_t i = 0; i < kd && !m->km_initialized; i++) m->km_initialized = s.centroids[i] != 0.0f;
  }
  if (!st) {
    m->queue_ptr = s.queue_ptr;
    m->online.num_batches_tracked = s.tracked;
    m->key.num_batches_tracked = s.key_tracked;
  }
  dsc_ssl_snapshot_free(&s);
  dsc_st_close(f);
  return st;
}
