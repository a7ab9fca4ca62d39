/* ssl_step.c: one training step of every method (METHOD.md §3-5), in the order of §5:
 * (0) prototypes row-normalized in place, (1) EMA of the momentum encoder, (2) key forward with
 * shuffle-BN and the key embeddings, (3) query forward, correspondence, losses, backward,
 * (4) SGD, (5) enqueue. Dense maps are NHWC rows: pixel i of image n is row n*P + i.
 *
 * Work memory (host) is planned once per (batch, image size) and kept in m->work. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dsc/optim.h"
#include "dsc/rng.h"
#include "dsc/ssl_loss.h"
#include "ssl/ssl_internal.h"

typedef struct ssl_work {
  int n, size, p, c, d;
  int32_t *perm;
  float *xb_shuf;                                  /* (n, size, size, 3) */
  float *hb, *ub, *hid_db, *vb;                    /* (n*p, c) x3, (n*p, d) */
  float *pool_b, *hid_gb, *zb, *wb;                /* (n, c) x2, (n, d) x2 */
  float *ua, *hid_da, *va, *va_norm;               /* (n*p, c) x2, (n*p, d), (n*p) */
  float *pool_a, *hid_ga, *za, *za_norm;           /* (n, c) x2, (n, d), (n) */
  float *dza, *dva, *dpool, *dh, *dh2, *dhidden;   /* (n,d) (n*p,d) (n,c) (n*p,c) x3 */
  float *pos, *pos_nei, *nei;                      /* (n*p, d), (n*p, 1+k, d), (n*p, k, d) */
  int32_t *match, *nei_idx, *ya, *yb, *history, *ce_target;
} ssl_work;

/* Side of C5 for an input of `size` pixels (torchvision's strides; METHOD.md §1). */
static int c5_side(const dsc_ssl_model *m, int size) {
  int s = size;
  if (!m->online.cfg.small_stem) {
    s = dsc_conv_out_size(s, 7, 2, 3, 1);
    s = dsc_conv_out_size(s, 3, 2, 1, 1);
  }
  for (int l = 0; l < 3; l++) s = dsc_conv_out_size(s, 3, 2, 1, 1);
  return s;
}

void ssl_step_work_free(dsc_ssl_model *m) {
  ssl_work *w = m->work;
  if (!w) return;
  void *ptrs[] = {w->perm, w->xb_shuf, w->hb, w->ub, w->hid_db, w->vb, w->pool_b, w->hid_gb,
                  w->zb, w->wb, w->ua, w->hid_da, w->va, w->va_norm, w->pool_a, w->hid_ga,
                  w->za, w->za_norm, w->dza, w->dva, w->dpool, w->dh, w->dh2, w->dhidden,
                  w->pos, w->pos_nei, w->nei, w->match, w->nei_idx, w->ya, w->yb, w->history, w->ce_target};
  for (size_t i = 0; i < sizeof ptrs / sizeof ptrs[0]; i++) free(ptrs[i]);
  free(w);
  m->work = NULL;
}

static dsc_status *work_plan(dsc_ssl_model *m, int n, int size) {
  ssl_work *w = m->work;
  if (w && w->n == n && w->size == size) return NULL;
  ssl_step_work_free(m);
  w = calloc(1, sizeof *w);
  if (!w) return dsc_errorf("out of memory");
  m->work = w;
  int side = c5_side(m, size);
  size_t p = (size_t)side * side, c = (size_t)m->online.out_channels, d = (size_t)m->cfg.dim;
  size_t np = (size_t)n * p, k = (size_t)m->cfg.k_nei;
  w->n = n, w->size = size, w->p = (int)p, w->c = (int)c, w->d = (int)d;
  m->n = n, m->size = size, m->p = (int)p, m->h5 = side, m->w5 = side;
  int ok = 1;
#define ALLOC(ptr, count) ok &= ((ptr) = calloc((size_t)(count) + 1, sizeof *(ptr))) != NULL
  ALLOC(w->perm, (size_t)n);
  ALLOC(w->xb_shuf, (size_t)n * size * size * 3);
  ALLOC(w->hb, np * c);
  ALLOC(w->ub, np * c);
  ALLOC(w->pool_b, n * c);
  ALLOC(w->hid_gb, n * c);
  ALLOC(w->zb, n * d);
  ALLOC(w->ua, np * c);
  ALLOC(w->pool_a, n * c);
  ALLOC(w->hid_ga, n * c);
  ALLOC(w->za, n * d);
  ALLOC(w->za_norm, (size_t)n);
  ALLOC(w->dza, n * d);
  ALLOC(w->dpool, n * c);
  ALLOC(w->dh, np * c);
  ALLOC(w->dhidden, np * c);
  ALLOC(w->match, np);
  if (m->has_dense) {
    ALLOC(w->hid_db, np * c);
    ALLOC(w->vb, np * d);
    ALLOC(w->wb, n * d);
    ALLOC(w->hid_da, np * c);
    ALLOC(w->va, np * d);
    ALLOC(w->va_norm, np);
    ALLOC(w->dva, np * d);
    ALLOC(w->dh2, np * c);
    ALLOC(w->pos, np * d);
  }
  dsc_method me = m->cfg.method;
  if (me == DSC_METHOD_DSC_NEI || me == DSC_METHOD_DSC_TRI) ALLOC(w->nei_idx, np * k);
  if (me == DSC_METHOD_DSC_NEI) ALLOC(w->pos_nei, np * (1 + k) * d);
  if (me == DSC_METHOD_DSC_TRI) ALLOC(w->nei, np * k * d);
  if (me == DSC_METHOD_DSC_KM) {
    ALLOC(w->ya, np);
    ALLOC(w->yb, np);
    ALLOC(w->history, np * (size_t)m->cfg.km_iters);
  }
  if (me == DSC_METHOD_DSC_CE) ALLOC(w->ce_target, np);
#undef ALLOC
  if (!ok) {
    ssl_step_work_free(m);
    return dsc_errorf("out of memory for the step's work memory (data.batch=%d, data.size=%d)", n, size);
  }
  return NULL;
}

dsc_status *dsc_ssl_check_input(const dsc_ssl_model *m, int n, int size) {
  const dsc_config *c = &m->cfg;
  int g = c->bn_groups;
  if (m->queue_len % n != 0)
    return dsc_errorf("method.queue=%lld is not a multiple of the batch of %d images", (long long)m->queue_len, n);
  if (n % g != 0)
    return dsc_errorf("data.batch=%d is not divisible by method.bn_groups=%d", n, g);
  int side = c5_side(m, size);
  if (side < 1) return dsc_errorf("data.size=%d is too small for %s", size, c->arch);
  int64_t p = (int64_t)side * side;
  /* The smallest BN map is C5's (METHOD.md §5: every group holds more than one value). */
  if ((int64_t)(n / g) * p <= 1)
    return dsc_errorf("each BN group holds a single value per channel at C5 (data.batch=%d / "
                      "method.bn_groups=%d images of %lldx%lld pixels): raise data.batch or "
                      "data.size, or lower method.bn_groups", n, g, (long long)side, (long long)side);
  if ((c->method == DSC_METHOD_DSC_NEI || c->method == DSC_METHOD_DSC_TRI) && c->k_nei >= p)
    return dsc_errorf("method.k_nei=%d must be below the %lld pixels of C5 at data.size=%d",
                      c->k_nei, (long long)p, size);
  if (c->method == DSC_METHOD_DSC_KM && (int64_t)n * p < c->clusters)
    return dsc_errorf("method.clusters=%d is more than the %lld pixels of a batch (data.batch=%d x "
                      "%lldx%lld at C5)", c->clusters, (long long)n * p, n, (long long)side,
                      (long long)side);
  return NULL;
}

/* mean over the p rows of each image of x (n*p, d), then normalized -> y (n, d). */
static void pooled_norm(int n, int p, int d, const float *x, float *y) {
  for (int i = 0; i < n; i++) {
    for (int k = 0; k < d; k++) {
      double s = 0;
      for (int j = 0; j < p; j++) s += x[((size_t)i * p + j) * d + k];
      y[(size_t)i * d + k] = (float)(s / p);
    }
  }
  dsc_l2norm_rows(n, d, y, NULL, y);
}

/* The first parameter tensor with a non-finite value in blob g (gradients or parameters),
 * by name; NULL if all finite. */
static const char *nonfinite_param(const dsc_ssl_model *m, const float *g) {
  /* Fast path, vectorized: x * 0 is 0 for every finite x and NaN for inf or NaN, so the sum is
   * 0 exactly when the whole blob is finite. Only then is the tensor looked up. */
  float probe = 0.0f;
  size_t n = m->table.param_numel;
#pragma omp simd reduction(+ : probe)
  for (size_t k = 0; k < n; k++) probe += g[k] * 0.0f;
  if (probe == 0.0f) return NULL;
  for (int i = 0; i < m->table.count; i++) {
    const dsc_tensor_entry *e = &m->table.entries[i];
    if (e->role != DSC_ROLE_PARAM) continue;
    for (size_t k = 0; k < e->numel; k++)
      if (!isfinite(g[e->offset + k])) return e->name;
  }
  return NULL;
}

static void to_i64(int64_t *dst, const int32_t *src, size_t n) {
  for (size_t i = 0; i < n; i++) dst[i] = src[i];
}

dsc_status *dsc_ssl_step(dsc_ssl_model *m, const float *a, const float *b, int n, int size,
                         double lr, dsc_ssl_step_info *info, dsc_ssl_capture *cap) {
  const dsc_config *cfg = &m->cfg;
  dsc_backend *be = m->be;
  if (strcmp(cfg->precision, "fp32") != 0)
    return dsc_errorf("run.precision=%s: the %s backend trains in fp32 only", cfg->precision, be->name);
  DSC_TRY(dsc_ssl_check_input(m, n, size));
  DSC_TRY(work_plan(m, n, size));
  ssl_work *w = m->work;
  const int p = w->p, c = w->c, d = w->d, g = cfg->bn_groups;
  const int64_t np = (int64_t)n * p, L = m->queue_len;
  const int64_t step = m->step;
  memset(info, 0, sizeof *info);
  info->lr = lr;

  /* (0) prototypes <- their row-normalized value (METHOD.md §4.6). */
  float *protos = m->has_protos ? m->params + m->protos_off : NULL;
  if (protos) dsc_l2norm_rows(cfg->prototypes, d, protos, NULL, protos);

  /* (1) EMA over the backbone and necks (parameters only). */
  DSC_TRY(be->ema(be, m->encoder_numel, m->key_params, m->params, cfg->momentum));

  /* (2) key forward with shuffle-BN: row i of the shuffled batch is image perm[i]. */
  for (int i = 0; i < n; i++) w->perm[i] = i;
  for (int i = n - 1; i > 0; i--) {
    double u = dsc_rng_uniform(cfg->seed, DSC_RNG_SHUFFLE_BN, (uint32_t)step, (uint32_t)i, 0);
    int j = (int)(u * (i + 1));
    int32_t t = w->perm[i];
    w->perm[i] = w->perm[j];
    w->perm[j] = t;
  }
  size_t img = (size_t)size * size * 3, c5img = (size_t)p * c;
  for (int i = 0; i < n; i++) memcpy(w->xb_shuf + i * img, b + (size_t)w->perm[i] * img, img * sizeof(float));
  /* The key's activations are not needed once C5 is copied out: it runs in the online
   * network's activation memory, which the query forward then overwrites. */
  DSC_TRY(dsc_resnet_borrow_activations(&m->key, &m->online, n, size, size, g));
  dsc_resnet_features fb;
  DSC_TRY(dsc_resnet_forward(&m->key, w->xb_shuf, n, size, size, 1, g, &fb));
  for (int i = 0; i < n; i++)
    memcpy(w->hb + (size_t)w->perm[i] * c5img, fb.c[3] + i * c5img, c5img * sizeof(float));
  DSC_TRY(be->gap_forward(be, n, p, c, w->pool_b, w->hb));
  DSC_TRY(ssl_neck_forward(be, &m->neck_g, m->key_params, n, w->pool_b, w->hid_gb, w->zb));
  dsc_l2norm_rows(n, d, w->zb, NULL, w->zb);
  if (m->has_dense) {
    DSC_TRY(ssl_neck_forward(be, &m->neck_d, m->key_params, (int)np, w->hb, w->hid_db, w->vb));
    pooled_norm(n, p, d, w->vb, w->wb);
    dsc_l2norm_rows(np, d, w->vb, NULL, w->vb);
    dsc_l2norm_rows(np, c, w->ub, NULL, w->hb);
  }

  /* (3) query forward. */
  DSC_TRY(be->zero(be, m->grads, m->table.param_numel));
  dsc_resnet_features fa;
  DSC_TRY(dsc_resnet_forward(&m->online, a, n, size, size, 1, g, &fa));
  const float *ha = fa.c[3];
  DSC_TRY(be->gap_forward(be, n, p, c, w->pool_a, ha));
  DSC_TRY(ssl_neck_forward(be, &m->neck_g, m->params, n, w->pool_a, w->hid_ga, w->za));
  dsc_l2norm_rows(n, d, w->za, w->za_norm, w->za);
  memset(w->dza, 0, (size_t)n * d * sizeof(float));

  /* L_ins (METHOD.md §4.1) */
  DSC_TRY(dsc_loss_infonce(be, n, d, 1, L, w->za, w->zb, m->queue_g, cfg->tau_ins, cfg->lambda_ins,
                           &info->loss_ins, w->dza));
  dsc_method me = cfg->method;
  if (m->has_dense) {
    DSC_TRY(ssl_neck_forward(be, &m->neck_d, m->params, (int)np, ha, w->hid_da, w->va));
    dsc_l2norm_rows(np, d, w->va, w->va_norm, w->va);
    dsc_l2norm_rows(np, c, w->ua, NULL, ha);
    memset(w->dva, 0, (size_t)np * d * sizeof(float));
    DSC_TRY(dsc_ssl_match(be, n, p, c, w->ua, w->ub, w->match));
    /* L_pix (§4.2): the matched key pixel is the positive. */
    for (int64_t r = 0; r < np; r++)
      memcpy(w->pos + r * d, w->vb + ((r / p) * p + w->match[r]) * d, (size_t)d * sizeof(float));
    int k = cfg->k_nei;
    if (me == DSC_METHOD_DSC_NEI || me == DSC_METHOD_DSC_TRI)
      DSC_TRY(dsc_ssl_neighbors(be, n, p, c, k, w->ua, w->nei_idx));
    if (me == DSC_METHOD_DSC_NEI) {
      /* L_nei (§4.3): positives = the matched key pixel and the detached neighbors. */
      for (int64_t r = 0; r < np; r++) {
        float *row = w->pos_nei + r * (1 + k) * d;
        memcpy(row, w->pos + r * d, (size_t)d * sizeof(float));
        for (int t = 0; t < k; t++)
          memcpy(row + (1 + t) * d, w->va + ((r / p) * p + w->nei_idx[r * k + t]) * d,
                 (size_t)d * sizeof(float));
      }
    }
    if (me == DSC_METHOD_DSC_NEI && cfg->tau_sem == cfg->tau_pix) {
      /* L_pix and L_nei share the queries, the queue and (by default) the temperature: one pass
       * over the queue logits serves both. */
      dsc_infonce_head heads[2] = {{1, w->pos, cfg->lambda_pix, &info->loss_pix},
                                   {1 + k, w->pos_nei, cfg->lambda_sem, &info->loss_sem}};
      DSC_TRY(dsc_loss_infonce_heads(be, np, d, L, w->va, m->queue_d, cfg->tau_pix, 2, heads, w->dva));
    } else {
      DSC_TRY(dsc_loss_infonce(be, np, d, 1, L, w->va, w->pos, m->queue_d, cfg->tau_pix,
                               cfg->lambda_pix, &info->loss_pix, w->dva));
      if (me == DSC_METHOD_DSC_NEI)
        DSC_TRY(dsc_loss_infonce(be, np, d, 1 + k, L, w->va, w->pos_nei, m->queue_d, cfg->tau_sem,
                                 cfg->lambda_sem, &info->loss_sem, w->dva));
    }
    if (me == DSC_METHOD_DSC_TRI) {
      for (int64_t r = 0; r < np; r++)
        for (int t = 0; t < k; t++)
          memcpy(w->nei + (r * k + t) * d, w->va + ((r / p) * p + w->nei_idx[r * k + t]) * d,
                 (size_t)d * sizeof(float));
      dsc_loss_triplet(np, d, k, w->va, w->pos, w->nei, cfg->margin, cfg->lambda_sem,
                       &info->loss_sem, w->dva);
    } else if (me == DSC_METHOD_DSC_KM) {
      /* L_km (§4.5): k-means on the key pixels, labels carried to the query by c(n,i). */
      size_t kd = (size_t)cfg->clusters * d;
      int initialized = 0;
      for (size_t i = 0; i < kd && !initialized; i++) initialized = m->centroids[i] != 0.0f;
      if (!initialized)
        DSC_TRY(dsc_kmeans_init(np, d, cfg->clusters, w->vb, cfg->seed, (uint64_t)step, m->centroids));
      if (cap && cap->km_init) memcpy(cap->km_init, m->centroids, kd * sizeof(float));
      DSC_TRY(dsc_kmeans_run(be, np, d, cfg->clusters, cfg->km_iters, w->vb, m->centroids, w->yb,
                             w->history));
      for (int64_t r = 0; r < np; r++) w->ya[r] = w->yb[(r / p) * p + w->match[r]];
      DSC_TRY(dsc_loss_kmeans(np, d, cfg->clusters, w->va, w->ya, w->vb, w->yb, cfg->tau_sem,
                              cfg->lambda_sem, &info->loss_sem, w->dva, &info->km_present));
    } else if (me == DSC_METHOD_DSC_PM || me == DSC_METHOD_DSC_CE) {
      DSC_TRY(dsc_loss_proto(be, me == DSC_METHOD_DSC_PM ? DSC_PROTO_SWAP : DSC_PROTO_CE, n, p, d,
                             cfg->prototypes, w->va, w->vb, w->match, protos, cfg->tau_pm,
                             cfg->sinkhorn_eps, cfg->sinkhorn_iters, cfg->lambda_sem,
                             &info->loss_sem, w->dva, m->grads + m->protos_off, w->ce_target));
    }
  }
  info->loss_total = cfg->lambda_ins * info->loss_ins + (m->has_dense ? cfg->lambda_pix * info->loss_pix : 0) +
                     (me >= DSC_METHOD_DSC_NEI ? cfg->lambda_sem * info->loss_sem : 0);
  const char *bad = !isfinite(info->loss_ins) ? "loss.ins (instance)"
                    : !isfinite(info->loss_pix) ? "loss.pix (pixel)"
                    : !isfinite(info->loss_sem) ? "loss.sem (semantic)" : NULL;
  if (bad)
    return dsc_errorf("step %lld: %s is not finite (lr %.6g); stopping before the update",
                      (long long)step, bad, lr);

  /* Backward: embeddings -> normalizations -> necks -> C5 -> backbone. */
  dsc_l2norm_rows_backward(n, d, w->dza, w->dza, w->za, w->za_norm);
  DSC_TRY(ssl_neck_backward(be, &m->neck_g, m->params, m->grads, n, w->pool_a, w->hid_ga, w->dza,
                            w->dhidden, w->dpool));
  DSC_TRY(be->gap_backward(be, n, p, c, w->dh, w->dpool));
  if (m->has_dense) {
    dsc_l2norm_rows_backward(np, d, w->dva, w->dva, w->va, w->va_norm);
    DSC_TRY(ssl_neck_backward(be, &m->neck_d, m->params, m->grads, (int)np, ha, w->hid_da, w->dva,
                              w->dhidden, w->dh2));
    DSC_TRY(be->add_inplace(be, w->dh, w->dh2, (size_t)np * c));
  }
  DSC_TRY(dsc_resnet_backward(&m->online, w->dh));
  int frozen = m->has_protos && step < cfg->freeze_prototypes_steps;
  if (frozen) DSC_TRY(be->zero(be, m->grads + m->protos_off, (size_t)cfg->prototypes * d));
  const char *bad_grad = nonfinite_param(m, m->grads);
  if (bad_grad)
    return dsc_errorf("step %lld: the gradient of %s is not finite (loss %.6g, lr %.6g); stopping "
                      "before the update", (long long)step, bad_grad, info->loss_total, lr);

  /* (4) SGD: every parameter, the prototypes only when not frozen (they sit last). */
  dsc_sgd_config sgd = {cfg->optim_momentum, cfg->weight_decay, cfg->nesterov};
  size_t n_upd = frozen ? m->encoder_numel : m->table.param_numel;
  DSC_TRY(dsc_sgd_step(be, &sgd, (float)lr, n_upd, m->params, m->grads, m->momentum));
  /* A finite gradient times a huge rate can still overflow: such a state is never saved. */
  const char *bad_param = nonfinite_param(m, m->params);
  if (bad_param)
    return dsc_errorf("step %lld: %s is not finite after the SGD update (lr %.6g is too large?)",
                      (long long)step, bad_param, lr);

  /* (5) enqueue the key images at the pointer (METHOD.md §3). */
  for (int i = 0; i < n; i++)
    for (int k = 0; k < d; k++) {
      m->queue_g[(size_t)k * L + m->queue_ptr + i] = w->zb[(size_t)i * d + k];
      if (m->has_dense) m->queue_d[(size_t)k * L + m->queue_ptr + i] = w->wb[(size_t)i * d + k];
    }
  m->queue_ptr = (m->queue_ptr + n) % L;
  m->step++;

  if (cap) {
    if (cap->perm_key) to_i64(cap->perm_key, w->perm, (size_t)n);
    if (cap->match && m->has_dense) to_i64(cap->match, w->match, (size_t)np);
    if (cap->nei_idx && w->nei_idx) to_i64(cap->nei_idx, w->nei_idx, (size_t)np * cfg->k_nei);
    if (cap->km_history && w->history) to_i64(cap->km_history, w->history, (size_t)np * cfg->km_iters);
    if (cap->ce_target && w->ce_target) to_i64(cap->ce_target, w->ce_target, (size_t)np);
  }
  return NULL;
}
