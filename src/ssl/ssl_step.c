/* ssl_step.c: one training step of every method (METHOD.md §3-5), in the order of §5:
 * (0) prototypes row-normalized in place, (1) EMA of the momentum encoder, (2) key forward with
 * shuffle-BN and the key embeddings, (3) query forward, correspondence, losses, backward,
 * (4) SGD, (5) enqueue. Dense maps are NHWC rows: pixel i of image n is row n*P + i.
 *
 * Written once for every backend: the networks go through the op table, everything else through
 * the backend's ssl ops (src/backend/ssl_ops.h), and all work memory is backend memory, planned
 * once per (batch, image size) and kept in m->work. The host computes only the shuffle-BN
 * permutation; it waits on the backend once, at the end, for the step's scalars (losses and
 * finiteness flags), which is where a bad step is reported.
 *
 * Several ranks (m->world > 1, include/dsc/dist.h): each rank holds n images, its slice of the
 * global batch of N = n * world in rank order, and is one BN group (METHOD.md §5). The step then
 * computes exactly what one process with the global batch and `world` BN groups computes:
 *  - shuffle-BN: the key images of all ranks are gathered, the global permutation (the same
 *    draw on every rank) is applied, each rank forwards its slice of the shuffled batch, the C5
 *    maps are gathered and each rank takes back its own images, un-shuffled;
 *  - per-item terms (L_ins, L_pix, L_nei, L_tri) are means over the rank's items with weight
 *    lambda / world; the batch-wide terms (k-means of L_km, Sinkhorn of L_pm and L_ce, §4.5-4.7)
 *    run on the gathered embeddings of the whole batch, identically on every rank, and each rank
 *    keeps the gradient of its own rows (the prototypes' gradient is kept on rank 0 only); the
 *    all-reduce SUM of the gradient blob is then the gradient of the global loss;
 *  - the queues receive the keys of all ranks in rank order; the BN running statistics, updated
 *    from each rank's group, are averaged over ranks (the update is linear, so this is the
 *    update from the all-reduced mean of the group statistics); the reported loss terms are
 *    averaged over ranks. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dsc/dist.h"
#include "dsc/optim.h"
#include "dsc/rng.h"
#include "dsc/ssl_loss.h"
#include "backend/ssl_ops.h"
#include "ssl/ssl_internal.h"

typedef struct ssl_work {
  int n, size, p, c, d, world;                     /* n: this rank's images; N = n * world */
  int32_t *perm_host, *inv_host;                   /* (N) x2, host */
  int32_t *perm, *inv;                             /* (N) x2 */
  double *scal;                                    /* SCAL_COUNT step scalars */
  float *xb_shuf;                                  /* (n, size, size, 3) */
  float *hb, *ub, *hid_db, *vb;                    /* (n*p, c) x3, (n*p, d) */
  float *pool_b, *hid_gb, *zb, *wb;                /* (n, c) x2, (n, d) x2 */
  float *ua, *hid_da, *va, *va_norm;               /* (n*p, c) x2, (n*p, d), (n*p) */
  float *pool_a, *hid_ga, *za, *za_norm;           /* (n, c) x2, (n, d), (n) */
  float *dza, *dva, *dpool, *dh, *dh2, *dhidden;   /* (n,d) (n*p,d) (n,c) (n*p,c) x3 */
  float *pos, *pos_nei, *nei;                      /* (n*p, d), (n*p, 1+k, d), (n*p, k, d) */
  int32_t *match, *nei_idx, *ya, *yb, *history, *ce_target; /* ya..ce_target: (N*p) */
  /* several ranks only: the global batch's key images, shuffled C5, keys, embeddings */
  float *xb_all, *c5_all, *zb_all, *wb_all, *va_all, *vb_all, *dva_all;
  int32_t *match_all;
} ssl_work;

/* The step's scalar results, one double each in backend memory, read once at the end. */
enum { SCAL_INS, SCAL_PIX, SCAL_SEM, SCAL_KM_PRESENT, SCAL_BAD_GRAD, SCAL_BAD_PARAM, SCAL_COUNT };

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

/* The backend-memory buffers of the work struct, for allocation and release in one loop. */
#define WORK_BUFFERS(w)                                                                        \
  {(void **)&(w)->perm, (void **)&(w)->inv, (void **)&(w)->scal, (void **)&(w)->xb_shuf,       \
   (void **)&(w)->hb, (void **)&(w)->ub, (void **)&(w)->hid_db, (void **)&(w)->vb,             \
   (void **)&(w)->pool_b, (void **)&(w)->hid_gb, (void **)&(w)->zb, (void **)&(w)->wb,         \
   (void **)&(w)->ua, (void **)&(w)->hid_da, (void **)&(w)->va, (void **)&(w)->va_norm,        \
   (void **)&(w)->pool_a, (void **)&(w)->hid_ga, (void **)&(w)->za, (void **)&(w)->za_norm,    \
   (void **)&(w)->dza, (void **)&(w)->dva, (void **)&(w)->dpool, (void **)&(w)->dh,            \
   (void **)&(w)->dh2, (void **)&(w)->dhidden, (void **)&(w)->pos, (void **)&(w)->pos_nei,     \
   (void **)&(w)->nei, (void **)&(w)->match, (void **)&(w)->nei_idx, (void **)&(w)->ya,        \
   (void **)&(w)->yb, (void **)&(w)->history, (void **)&(w)->ce_target, (void **)&(w)->xb_all, \
   (void **)&(w)->c5_all, (void **)&(w)->zb_all, (void **)&(w)->wb_all, (void **)&(w)->va_all,  \
   (void **)&(w)->vb_all, (void **)&(w)->dva_all, (void **)&(w)->match_all}

void ssl_step_work_free(dsc_ssl_model *m) {
  ssl_work *w = m->work;
  if (!w) return;
  void **bufs[] = WORK_BUFFERS(w);
  for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
    if (*bufs[i]) m->be->free(m->be, *bufs[i]);
  free(w->perm_host);
  free(w->inv_host);
  free(w);
  m->work = NULL;
}

static dsc_status *work_plan(dsc_ssl_model *m, int n, int size) {
  ssl_work *w = m->work;
  if (w && w->n == n && w->size == size && w->world == m->world) return NULL;
  ssl_step_work_free(m);
  w = calloc(1, sizeof *w);
  if (!w) return dsc_errorf("out of memory");
  m->work = w;
  int side = c5_side(m, size);
  size_t p = (size_t)side * side, c = (size_t)m->online.out_channels, d = (size_t)m->cfg.dim;
  size_t np = (size_t)n * p, k = (size_t)m->cfg.k_nei;
  const size_t W = (size_t)m->world, ng = (size_t)n * W, npg = np * W;
  w->n = n, w->size = size, w->p = (int)p, w->c = (int)c, w->d = (int)d, w->world = m->world;
  m->n = n, m->size = size, m->p = (int)p, m->h5 = side, m->w5 = side;
  dsc_backend *be = m->be;
  dsc_status *st = NULL;
  w->perm_host = calloc(ng, sizeof *w->perm_host);
  w->inv_host = calloc(ng, sizeof *w->inv_host);
  if (!w->perm_host || !w->inv_host) st = dsc_errorf("out of memory");
  /* Every buffer holds at least one element, so a pointer is never NULL where an op expects one. */
#define ALLOC(ptr, count) \
  if (!st) st = be->alloc(be, ((size_t)(count) + 1) * sizeof *(ptr), (void **)&(ptr))
  ALLOC(w->perm, ng);
  ALLOC(w->inv, ng);
  ALLOC(w->scal, SCAL_COUNT);
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
    ALLOC(w->ya, npg);
    ALLOC(w->yb, npg);
    ALLOC(w->history, npg * (size_t)m->cfg.km_iters);
  }
  if (me == DSC_METHOD_DSC_CE) ALLOC(w->ce_target, npg);
  if (W > 1) {
    ALLOC(w->xb_all, ng * size * size * 3);
    ALLOC(w->c5_all, npg * c);
    ALLOC(w->zb_all, ng * d);
    if (m->has_dense) ALLOC(w->wb_all, ng * d);
    if (me == DSC_METHOD_DSC_KM || me == DSC_METHOD_DSC_PM || me == DSC_METHOD_DSC_CE) {
      ALLOC(w->va_all, npg * d);
      ALLOC(w->vb_all, npg * d);
      ALLOC(w->dva_all, npg * d);
      ALLOC(w->match_all, npg);
    }
  }
#undef ALLOC
  if (st) {
    ssl_step_work_free(m);
    return dsc_status_wrap(st, "the step's work memory (data.batch=%d, data.size=%d)", n, size);
  }
  return NULL;
}

dsc_status *dsc_ssl_stage_batch(dsc_ssl_model *m, const float *a, const float *b, int n, int size,
                                const float **a_out, const float **b_out) {
  dsc_backend *be = m->be;
  if (!be->ssl) { /* host memory: the views are already where the step reads them */
    *a_out = a, *b_out = b;
    return NULL;
  }
  size_t nx = (size_t)n * size * size * 3;
  if (m->staged_floats < 2 * nx) {
    be->free(be, m->staged);
    m->staged = NULL, m->staged_floats = 0;
    DSC_TRY(be->alloc(be, 2 * nx * sizeof(float), (void **)&m->staged));
    m->staged_floats = 2 * nx;
  }
  DSC_TRY(be->upload(be, m->staged, a, nx * sizeof(float)));
  DSC_TRY(be->upload(be, m->staged + nx, b, nx * sizeof(float)));
  *a_out = m->staged, *b_out = m->staged + nx;
  return NULL;
}

dsc_status *dsc_ssl_check_input(const dsc_ssl_model *m, int n, int size) {
  const dsc_config *c = &m->cfg;
  /* With several ranks each is one BN group (METHOD.md §5) and the batch is the global one. */
  int g = m->world > 1 ? 1 : c->bn_groups, ng = n * m->world;
  if (m->queue_len % ng != 0)
    return dsc_errorf("method.queue=%lld is not a multiple of the batch of %d images", (long long)m->queue_len, ng);
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
  if (c->method == DSC_METHOD_DSC_KM && (int64_t)ng * p < c->clusters)
    return dsc_errorf("method.clusters=%d is more than the %lld pixels of a batch (data.batch=%d x "
                      "%lldx%lld at C5)", c->clusters, (long long)ng * p, ng, (long long)side,
                      (long long)side);
  return NULL;
}

/* The first parameter tensor with a non-finite value in blob g (gradients or parameters, backend
 * memory), by name; only called once a step has found one, so the host copy is rare. */
static dsc_status *nonfinite_name(const dsc_ssl_model *m, const float *g, const char **name) {
  size_t n = m->table.param_numel;
  float *h = malloc(n * sizeof *h);
  if (!h) return dsc_errorf("out of memory");
  dsc_status *st = m->be->download(m->be, h, g, n * sizeof *h);
  *name = "(a parameter)";
  for (int i = 0; !st && i < m->table.count; i++) {
    const dsc_tensor_entry *e = &m->table.entries[i];
    if (e->role != DSC_ROLE_PARAM) continue;
    int bad = 0;
    for (size_t k = 0; k < e->numel && !bad; k++) bad = !isfinite(h[e->offset + k]);
    if (bad) {
      *name = e->name;
      break;
    }
  }
  free(h);
  return st;
}

/* dst (n, host int64) = src (n, backend int32). */
static dsc_status *capture_i64(dsc_backend *be, int64_t *dst, const int32_t *src, size_t n) {
  int32_t *h = malloc((n + 1) * sizeof *h);
  if (!h) return dsc_errorf("out of memory for a step capture");
  dsc_status *st = be->download(be, h, src, n * sizeof *h);
  for (size_t i = 0; !st && i < n; i++) dst[i] = h[i];
  free(h);
  return st;
}

/* capture_i64 of the rows of every rank, in rank order: `n` int32 per rank at src. */
static dsc_status *capture_gathered(dsc_ssl_model *m, int64_t *dst, const int32_t *src, size_t n) {
  if (m->world == 1) return capture_i64(m->be, dst, src, n);
  int32_t *all = NULL;
  DSC_TRY(m->be->alloc(m->be, n * (size_t)m->world * sizeof *all, (void **)&all));
  dsc_status *st = dsc_dist_allgather(m->dist, src, all, n * sizeof *all);
  if (!st) st = capture_i64(m->be, dst, all, n * (size_t)m->world);
  m->be->free(m->be, all);
  return st;
}

dsc_status *dsc_ssl_step(dsc_ssl_model *m, const float *a, const float *b, int n, int size,
                         double lr, dsc_ssl_step_info *info, dsc_ssl_capture *cap) {
  const dsc_config *cfg = &m->cfg;
  dsc_backend *be = m->be;
  const dsc_ssl_ops *ops = dsc_ssl_ops_of(be);
  if (!be->ssl && strcmp(cfg->precision, "fp32") != 0)
    return dsc_errorf("run.precision=%s: the %s backend trains in fp32 only", cfg->precision, be->name);
  DSC_TRY(dsc_ssl_check_input(m, n, size));
  DSC_TRY(work_plan(m, n, size));
  ssl_work *w = m->work;
  const int W = m->world, rank = m->rank, ng = n * W;
  const int p = w->p, c = w->c, d = w->d, g = W > 1 ? 1 : cfg->bn_groups;
  const int64_t np = (int64_t)n * p, npg = np * W, L = m->queue_len;
  /* Per-item terms are means over this rank's items: weighted by 1/W, the all-reduce SUM of the
   * gradients is the gradient of the global mean (exactly lambda when W = 1). */
  const float lam_ins = cfg->lambda_ins / W, lam_pix = cfg->lambda_pix / W, lam_sem_local = cfg->lambda_sem / W;
  const int64_t step = m->step;
  double *scal = w->scal;
  memset(info, 0, sizeof *info);
  info->lr = lr;
  DSC_TRY(be->zero(be, (float *)scal, SCAL_COUNT * sizeof(double) / sizeof(float)));

  /* (0) prototypes <- their row-normalized value (METHOD.md §4.6). */
  float *protos = m->has_protos ? m->params + m->protos_off : NULL;
  if (protos) DSC_TRY(ops->l2norm_rows(be, cfg->prototypes, d, protos, NULL, protos));

  /* (1) EMA over the backbone and necks (parameters only). */
  DSC_TRY(be->ema(be, m->encoder_numel, m->key_params, m->params, cfg->momentum));

  /* (2) key forward with shuffle-BN: row i of the shuffled (global) batch is image perm[i]. */
  int32_t *perm = w->perm_host;
  for (int i = 0; i < ng; i++) perm[i] = i;
  for (int i = ng - 1; i > 0; i--) {
    double u = dsc_rng_uniform(cfg->seed, DSC_RNG_SHUFFLE_BN, (uint32_t)step, (uint32_t)i, 0);
    int j = (int)(u * (i + 1));
    int32_t t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
  for (int i = 0; i < ng; i++) w->inv_host[perm[i]] = i;
  DSC_TRY(be->upload(be, w->perm, perm, (size_t)ng * sizeof *perm));
  DSC_TRY(be->upload(be, w->inv, w->inv_host, (size_t)ng * sizeof *perm));
  const int64_t img = (int64_t)size * size * 3, c5img = (int64_t)p * c;
  const float *xb_global = b;
  if (W > 1) {
    DSC_TRY(dsc_dist_allgather(m->dist, b, w->xb_all, (size_t)(n * img) * sizeof(float)));
    xb_global = w->xb_all;
  }
  /* This rank forwards rows [rank*n, (rank+1)*n) of the shuffled batch. */
  DSC_TRY(ops->gather_rows(be, n, img, w->xb_shuf, 1, 1, xb_global, w->perm + (size_t)rank * n, 0, 0));
  /* The key's activations are not needed once C5 is copied out: it runs in the online
   * network's activation memory, which the query forward then overwrites. */
  DSC_TRY(dsc_resnet_borrow_activations(&m->key, &m->online, n, size, size, g));
  dsc_resnet_features fb;
  DSC_TRY(dsc_resnet_forward(&m->key, w->xb_shuf, n, size, size, 1, g, &fb));
  /* Unshuffle: key image j is row inv[j] of the shuffled batch. */
  const float *c5_shuffled = fb.c[3];
  if (W > 1) {
    DSC_TRY(dsc_dist_allgather(m->dist, fb.c[3], w->c5_all, (size_t)(n * c5img) * sizeof(float)));
    c5_shuffled = w->c5_all;
  }
  DSC_TRY(ops->gather_rows(be, n, c5img, w->hb, 1, 1, c5_shuffled, w->inv + (size_t)rank * n, 0, 0));
  DSC_TRY(be->gap_forward(be, n, p, c, w->pool_b, w->hb));
  DSC_TRY(ssl_neck_forward(be, &m->neck_g, m->key_params, n, w->pool_b, w->hid_gb, w->zb));
  DSC_TRY(ops->l2norm_rows(be, n, d, w->zb, NULL, w->zb));
  if (m->has_dense) {
    DSC_TRY(ssl_neck_forward(be, &m->neck_d, m->key_params, (int)np, w->hb, w->hid_db, w->vb));
    DSC_TRY(ops->pool_norm(be, n, p, d, w->vb, w->wb));
    DSC_TRY(ops->l2norm_rows(be, np, d, w->vb, NULL, w->vb));
    DSC_TRY(ops->l2norm_rows(be, np, c, w->ub, NULL, w->hb));
  }

  /* (3) query forward. */
  DSC_TRY(be->zero(be, m->grads, m->table.param_numel));
  dsc_resnet_features fa;
  DSC_TRY(dsc_resnet_forward(&m->online, a, n, size, size, 1, g, &fa));
  const float *ha = fa.c[3];
  DSC_TRY(be->gap_forward(be, n, p, c, w->pool_a, ha));
  DSC_TRY(ssl_neck_forward(be, &m->neck_g, m->params, n, w->pool_a, w->hid_ga, w->za));
  DSC_TRY(ops->l2norm_rows(be, n, d, w->za, w->za_norm, w->za));
  DSC_TRY(be->zero(be, w->dza, (size_t)n * d));

  /* L_ins (METHOD.md §4.1) */
  DSC_TRY(ops->infonce(be, n, d, 1, L, w->za, w->zb, m->queue_g, cfg->tau_ins, lam_ins,
                       scal + SCAL_INS, w->dza));
  dsc_method me = cfg->method;
  if (m->has_dense) {
    DSC_TRY(ssl_neck_forward(be, &m->neck_d, m->params, (int)np, ha, w->hid_da, w->va));
    DSC_TRY(ops->l2norm_rows(be, np, d, w->va, w->va_norm, w->va));
    DSC_TRY(ops->l2norm_rows(be, np, c, w->ua, NULL, ha));
    DSC_TRY(be->zero(be, w->dva, (size_t)np * d));
    DSC_TRY(ops->match(be, n, p, c, w->ua, w->ub, w->match));
    /* L_pix (§4.2): the matched key pixel is the positive. */
    DSC_TRY(ops->gather_rows(be, np, d, w->pos, 1, 1, w->vb, w->match, p, p));
    int k = cfg->k_nei;
    if (me == DSC_METHOD_DSC_NEI || me == DSC_METHOD_DSC_TRI)
      DSC_TRY(ops->neighbors(be, n, p, c, k, w->ua, w->nei_idx));
    if (me == DSC_METHOD_DSC_NEI) {
      /* L_nei (§4.3): positives = [the matched key pixel, its k detached query neighbors]. */
      DSC_TRY(ops->gather_rows(be, np, d, w->pos_nei, 1, 1 + k, w->vb, w->match, p, p));
      DSC_TRY(ops->gather_rows(be, np * k, d, w->pos_nei + d, k, 1 + k, w->va, w->nei_idx,
                               (int64_t)p * k, p));
    }
    if (me == DSC_METHOD_DSC_NEI && cfg->tau_sem == cfg->tau_pix) {
      /* L_pix and L_nei share the queries, the queue and (by default) the temperature: one pass
       * over the queue logits serves both. */
      dsc_infonce_head heads[2] = {{1, w->pos, lam_pix, scal + SCAL_PIX},
                                   {1 + k, w->pos_nei, lam_sem_local, scal + SCAL_SEM}};
      DSC_TRY(ops->infonce_heads(be, np, d, L, w->va, m->queue_d, cfg->tau_pix, 2, heads, w->dva));
    } else {
      DSC_TRY(ops->infonce(be, np, d, 1, L, w->va, w->pos, m->queue_d, cfg->tau_pix,
                           lam_pix, scal + SCAL_PIX, w->dva));
      if (me == DSC_METHOD_DSC_NEI)
        DSC_TRY(ops->infonce(be, np, d, 1 + k, L, w->va, w->pos_nei, m->queue_d, cfg->tau_sem,
                             lam_sem_local, scal + SCAL_SEM, w->dva));
    }
    if (me == DSC_METHOD_DSC_TRI) {
      DSC_TRY(ops->gather_rows(be, np * k, d, w->nei, 1, 1, w->va, w->nei_idx, (int64_t)p * k, p));
      DSC_TRY(ops->triplet(be, np, d, k, w->va, w->pos, w->nei, cfg->margin, lam_sem_local,
                           scal + SCAL_SEM, w->dva));
    }
    /* The batch-wide terms see the embeddings of the global batch (identical on every rank). */
    const int global_sem = me == DSC_METHOD_DSC_KM || me == DSC_METHOD_DSC_PM || me == DSC_METHOD_DSC_CE;
    const float *va_g = w->va, *vb_g = w->vb;
    const int32_t *match_g = w->match;
    float *dva_g = w->dva;
    if (global_sem && W > 1) {
      DSC_TRY(dsc_dist_allgather(m->dist, w->va, w->va_all, (size_t)np * d * sizeof(float)));
      DSC_TRY(dsc_dist_allgather(m->dist, w->vb, w->vb_all, (size_t)np * d * sizeof(float)));
      DSC_TRY(dsc_dist_allgather(m->dist, w->match, w->match_all, (size_t)np * sizeof(int32_t)));
      DSC_TRY(be->zero(be, w->dva_all, (size_t)npg * d));
      va_g = w->va_all, vb_g = w->vb_all, match_g = w->match_all, dva_g = w->dva_all;
    }
    if (me == DSC_METHOD_DSC_KM) {
      /* L_km (§4.5): k-means on the key pixels, labels carried to the query by c(n,i). */
      size_t kd = (size_t)cfg->clusters * d;
      if (!m->km_initialized)
        DSC_TRY(ops->kmeans_init(be, npg, d, cfg->clusters, vb_g, cfg->seed, (uint64_t)step, m->centroids));
      m->km_initialized = 1;
      if (cap && cap->km_init) DSC_TRY(be->download(be, cap->km_init, m->centroids, kd * sizeof(float)));
      DSC_TRY(ops->kmeans_run(be, npg, d, cfg->clusters, cfg->km_iters, vb_g, m->centroids, w->yb,
                              w->history));
      DSC_TRY(ops->gather_rows(be, npg, 1, w->ya, 1, 1, w->yb, match_g, p, p));
      DSC_TRY(ops->loss_kmeans(be, npg, d, cfg->clusters, va_g, w->ya, vb_g, w->yb, cfg->tau_sem,
                               cfg->lambda_sem, scal + SCAL_SEM, dva_g, scal + SCAL_KM_PRESENT));
    } else if (me == DSC_METHOD_DSC_PM || me == DSC_METHOD_DSC_CE) {
      /* The prototypes' gradient is the same on every rank: rank 0 alone contributes it. */
      DSC_TRY(ops->loss_proto(be, me == DSC_METHOD_DSC_PM ? DSC_PROTO_SWAP : DSC_PROTO_CE, ng, p, d,
                              cfg->prototypes, va_g, vb_g, match_g, protos, cfg->tau_pm,
                              cfg->sinkhorn_eps, cfg->sinkhorn_iters, cfg->lambda_sem,
                              scal + SCAL_SEM, dva_g, rank == 0 ? m->grads + m->protos_off : NULL,
                              w->ce_target));
    }
    /* This rank's rows of the batch-wide gradient. */
    if (global_sem && W > 1)
      DSC_TRY(be->add_inplace(be, w->dva, w->dva_all + (size_t)rank * np * d, (size_t)np * d));
  }

  /* Backward: embeddings -> normalizations -> necks -> C5 -> backbone. */
  DSC_TRY(ops->l2norm_rows_backward(be, n, d, w->dza, w->dza, w->za, w->za_norm));
  DSC_TRY(ssl_neck_backward(be, &m->neck_g, m->params, m->grads, n, w->pool_a, w->hid_ga, w->dza,
                            w->dhidden, w->dpool));
  DSC_TRY(be->gap_backward(be, n, p, c, w->dh, w->dpool));
  if (m->has_dense) {
    DSC_TRY(ops->l2norm_rows_backward(be, np, d, w->dva, w->dva, w->va, w->va_norm));
    DSC_TRY(ssl_neck_backward(be, &m->neck_d, m->params, m->grads, (int)np, ha, w->hid_da, w->dva,
                              w->dhidden, w->dh2));
    DSC_TRY(be->add_inplace(be, w->dh, w->dh2, (size_t)np * c));
  }
  DSC_TRY(dsc_resnet_backward(&m->online, w->dh));
  if (W > 1) DSC_TRY(dsc_dist_allreduce(m->dist, m->grads, m->table.param_numel, DSC_F32, DSC_REDUCE_SUM));
  int frozen = m->has_protos && step < cfg->freeze_prototypes_steps;
  if (frozen) DSC_TRY(be->zero(be, m->grads + m->protos_off, (size_t)cfg->prototypes * d));
  DSC_TRY(ops->nonfinite(be, m->table.param_numel, m->grads, scal + SCAL_BAD_GRAD));

  /* (4) SGD: every parameter, the prototypes only when not frozen (they sit last). */
  dsc_sgd_config sgd = {cfg->optim_momentum, cfg->weight_decay, cfg->nesterov};
  size_t n_upd = frozen ? m->encoder_numel : m->table.param_numel;
  DSC_TRY(dsc_sgd_step(be, &sgd, (float)lr, n_upd, m->params, m->grads, m->momentum));
  /* A finite gradient times a huge rate can still overflow. */
  DSC_TRY(ops->nonfinite(be, m->table.param_numel, m->params, scal + SCAL_BAD_PARAM));

  /* (5) enqueue the key images of the global batch, in rank order, at the pointer (METHOD.md §3). */
  const float *zb_g = w->zb, *wb_g = w->wb;
  if (W > 1) {
    DSC_TRY(dsc_dist_allgather(m->dist, w->zb, w->zb_all, (size_t)n * d * sizeof(float)));
    zb_g = w->zb_all;
    if (m->has_dense) {
      DSC_TRY(dsc_dist_allgather(m->dist, w->wb, w->wb_all, (size_t)n * d * sizeof(float)));
      wb_g = w->wb_all;
    }
  }
  DSC_TRY(ops->enqueue(be, ng, d, L, m->queue_ptr, m->queue_g, zb_g));
  if (m->has_dense) DSC_TRY(ops->enqueue(be, ng, d, L, m->queue_ptr, m->queue_d, wb_g));
  m->queue_ptr = (m->queue_ptr + ng) % L;
  m->step++;
  if (W > 1) {
    /* Running statistics: every rank's group counts (METHOD.md §5); loss terms over all items. */
    size_t bn = m->table.buffer_numel;
    if (bn) {
      DSC_TRY(dsc_dist_allreduce(m->dist, m->buffers, bn, DSC_F32, DSC_REDUCE_MEAN));
      DSC_TRY(dsc_dist_allreduce(m->dist, m->key_buffers, bn, DSC_F32, DSC_REDUCE_MEAN));
    }
    DSC_TRY(dsc_dist_allreduce(m->dist, scal, SCAL_SEM + 1, DSC_F64, DSC_REDUCE_MEAN));
  }

  /* The one wait of the step: its scalars. A bad step leaves a state that is never saved. */
  double sc[SCAL_COUNT];
  DSC_TRY(be->download(be, sc, scal, sizeof sc));
  info->loss_ins = sc[SCAL_INS];
  info->loss_pix = sc[SCAL_PIX];
  info->loss_sem = sc[SCAL_SEM];
  info->km_present = (int)sc[SCAL_KM_PRESENT];
  info->loss_total = cfg->lambda_ins * info->loss_ins + (m->has_dense ? cfg->lambda_pix * info->loss_pix : 0) +
                     (me >= DSC_METHOD_DSC_NEI ? cfg->lambda_sem * info->loss_sem : 0);
  const char *bad = !isfinite(info->loss_ins) ? "loss.ins (instance)"
                    : !isfinite(info->loss_pix) ? "loss.pix (pixel)"
                    : !isfinite(info->loss_sem) ? "loss.sem (semantic)" : NULL;
  if (bad)
    return dsc_errorf("step %lld: %s is not finite (lr %.6g); stopping before anything is saved",
                      (long long)step, bad, lr);
  const char *name = NULL;
  if (sc[SCAL_BAD_GRAD] != 0.0) {
    DSC_TRY(nonfinite_name(m, m->grads, &name));
    return dsc_errorf("step %lld: the gradient of %s is not finite (loss %.6g, lr %.6g); stopping "
                      "before anything is saved", (long long)step, name, info->loss_total, lr);
  }
  if (sc[SCAL_BAD_PARAM] != 0.0) {
    DSC_TRY(nonfinite_name(m, m->params, &name));
    return dsc_errorf("step %lld: %s is not finite after the SGD update (lr %.6g is too large?)",
                      (long long)step, name, lr);
  }

  if (cap) {
    /* The global batch's choices: this rank's rows are gathered from every rank; k-means and
     * the cluster codes already ran on the global batch. */
    for (int i = 0; cap->perm_key && i < ng; i++) cap->perm_key[i] = perm[i];
    if (cap->match && m->has_dense) DSC_TRY(capture_gathered(m, cap->match, w->match, (size_t)np));
    if (cap->nei_idx && w->nei_idx)
      DSC_TRY(capture_gathered(m, cap->nei_idx, w->nei_idx, (size_t)np * cfg->k_nei));
    if (cap->km_history && w->history)
      DSC_TRY(capture_i64(be, cap->km_history, w->history, (size_t)npg * cfg->km_iters));
    if (cap->ce_target && w->ce_target) DSC_TRY(capture_i64(be, cap->ce_target, w->ce_target, (size_t)npg));
  }
  return NULL;
}
