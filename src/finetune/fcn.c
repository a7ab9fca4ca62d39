/* fcn.c: the FCN segmentation model (include/dsc/fcn.h): a ResNet backbone and mmseg's FCN head
 * over the backend op table, forward, backward, SGD, and its tensors in checkpoints. */
#include "dsc/fcn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dsc/rng.h"
#include "dsc/weights.h"

#define BN_EPS 1e-5f
#define BN_MOMENTUM 0.1f

static dsc_status *check_config(const dsc_fcn_config *c) {
  if (c->channels < 1 || c->channels > 65536)
    return dsc_errorf("FCN head channels %d: expected 1..65536", c->channels);
  if (c->classes < 1 || c->classes > 254)
    return dsc_errorf("FCN classes %d: expected 1..254 (255 is the ignore label)", c->classes);
  if (!(c->dropout >= 0.0f && c->dropout < 1.0f))
    return dsc_errorf("FCN dropout %g: expected a probability in [0, 1)", (double)c->dropout);
  return NULL;
}

static dsc_status *add_head_tensors(dsc_fcn *m) {
  dsc_table *t = &m->table;
  const int64_t C5 = m->in_channels, ch = m->cfg.channels, K = m->cfg.classes;
  char name[96];
  for (int i = 0; i < 2; i++) {
    int64_t conv_shape[4] = {ch, i == 0 ? C5 : ch, 3, 3}, vec[1] = {ch};
    snprintf(name, sizeof name, "decode_head.convs.%d.conv.weight", i);
    DSC_TRY(dsc_table_add(t, name, DSC_ROLE_PARAM, DSC_KIND_CONV_WEIGHT, 4, conv_shape, &m->w_off[i]));
    snprintf(name, sizeof name, "decode_head.convs.%d.bn.weight", i);
    DSC_TRY(dsc_table_add(t, name, DSC_ROLE_PARAM, DSC_KIND_BN_WEIGHT, 1, vec, &m->gamma_off[i]));
    snprintf(name, sizeof name, "decode_head.convs.%d.bn.bias", i);
    DSC_TRY(dsc_table_add(t, name, DSC_ROLE_PARAM, DSC_KIND_BN_BIAS, 1, vec, &m->beta_off[i]));
    snprintf(name, sizeof name, "decode_head.convs.%d.bn.running_mean", i);
    DSC_TRY(dsc_table_add(t, name, DSC_ROLE_BUFFER, DSC_KIND_BN_MEAN, 1, vec, &m->mean_off[i]));
    snprintf(name, sizeof name, "decode_head.convs.%d.bn.running_var", i);
    DSC_TRY(dsc_table_add(t, name, DSC_ROLE_BUFFER, DSC_KIND_BN_VAR, 1, vec, &m->var_off[i]));
  }
  int64_t seg_shape[4] = {K, ch, 1, 1}, kvec[1] = {K};
  DSC_TRY(dsc_table_add(t, "decode_head.conv_seg.weight", DSC_ROLE_PARAM, DSC_KIND_CONV_WEIGHT, 4,
                        seg_shape, &m->seg_w_off));
  return dsc_table_add(t, "decode_head.conv_seg.bias", DSC_ROLE_PARAM, DSC_KIND_BIAS, 1, kvec, &m->seg_b_off);
}

/* mmseg's head initialization (fcn.h). */
static void init_head(dsc_fcn *m, uint64_t seed) {
  const int C5 = m->in_channels, ch = m->cfg.channels, K = m->cfg.classes;
  char name[96];
  for (int i = 0; i < 2; i++) {
    snprintf(name, sizeof name, "decode_head.convs.%d.conv.weight", i);
    uint32_t key = dsc_fnv1a32(name);
    size_t numel = (size_t)ch * (i == 0 ? C5 : ch) * 9;
    double std = sqrt(2.0 / ((double)ch * 9)); /* kaiming normal, fan_out, ReLU gain */
#pragma omp parallel for schedule(static)
    for (size_t e = 0; e < numel; e++)
      m->host_params[m->w_off[i] + e] = (float)(std * dsc_rng_normal(seed, DSC_RNG_INIT, key, (uint32_t)e, 0));
    for (int c = 0; c < ch; c++) {
      m->host_params[m->gamma_off[i] + c] = 1.0f;
      m->host_params[m->beta_off[i] + c] = 0.0f;
      m->host_buffers[m->mean_off[i] + c] = 0.0f;
      m->host_buffers[m->var_off[i] + c] = 1.0f;
    }
  }
  uint32_t key = dsc_fnv1a32("decode_head.conv_seg.weight");
  for (size_t e = 0; e < (size_t)K * ch; e++)
    m->host_params[m->seg_w_off + e] = (float)(0.01 * dsc_rng_normal(seed, DSC_RNG_INIT, key, (uint32_t)e, 0));
  for (int k = 0; k < K; k++) m->host_params[m->seg_b_off + k] = 0.0f;
}

/* Allocates the blobs of the table and initializes the head (and the backbone when there is one). */
static dsc_status *finish_create(dsc_fcn *m, uint64_t seed) {
  dsc_backend *be = m->be;
  DSC_TRY(add_head_tensors(m));
  size_t pbytes = m->table.param_numel * sizeof(float), bbytes = m->table.buffer_numel * sizeof(float);
  DSC_TRY(be->alloc(be, pbytes, (void **)&m->params));
  DSC_TRY(be->alloc(be, pbytes, (void **)&m->grads));
  DSC_TRY(be->alloc(be, pbytes, (void **)&m->momentum));
  DSC_TRY(be->alloc(be, bbytes, (void **)&m->buffers));
  m->host_params = calloc(m->table.param_numel, sizeof(float));
  m->host_buffers = calloc(m->table.buffer_numel, sizeof(float));
  if (!m->host_params || !m->host_buffers) return dsc_errorf("out of memory for the FCN model's weights");
  if (m->has_backbone) {
    dsc_resnet_init_weights(&m->net, &m->table, seed, m->host_params, m->host_buffers);
    dsc_resnet_bind(&m->net, m->params, m->grads, m->buffers);
  }
  init_head(m, seed);
  return dsc_fcn_upload(m, NULL);
}

dsc_status *dsc_fcn_create(dsc_fcn *m, dsc_backend *be, const dsc_fcn_config *cfg, uint64_t seed) {
  memset(m, 0, sizeof *m);
  DSC_TRY(check_config(cfg));
  m->be = be;
  m->cfg = *cfg;
  DSC_TRY(dsc_resnet_init_layout(&m->net, be, &cfg->backbone, &cfg->layout, &m->table, "backbone."));
  m->has_backbone = 1;
  m->in_channels = m->net.out_channels;
  return finish_create(m, seed);
}

dsc_status *dsc_fcn_create_head(dsc_fcn *m, dsc_backend *be, const dsc_fcn_config *cfg, int in_channels,
                                uint64_t seed) {
  memset(m, 0, sizeof *m);
  DSC_TRY(check_config(cfg));
  if (in_channels < 1 || in_channels > 65536) return dsc_errorf("FCN head input channels %d: expected 1..65536", in_channels);
  m->be = be;
  m->cfg = *cfg;
  m->in_channels = in_channels;
  return finish_create(m, seed);
}

void dsc_fcn_free(dsc_fcn *m) {
  if (m->be) {
    m->be->free(m->be, m->params);
    m->be->free(m->be, m->grads);
    m->be->free(m->be, m->momentum);
    m->be->free(m->be, m->buffers);
    m->be->free(m->be, m->arena);
  }
  if (m->has_backbone) dsc_resnet_free(&m->net);
  dsc_table_free(&m->table);
  free(m->host_params);
  free(m->host_buffers);
  memset(m, 0, sizeof *m);
}

dsc_status *dsc_fcn_upload(dsc_fcn *m, const float *host_momentum) {
  dsc_backend *be = m->be;
  size_t pbytes = m->table.param_numel * sizeof(float);
  DSC_TRY(be->upload(be, m->params, m->host_params, pbytes));
  DSC_TRY(be->upload(be, m->buffers, m->host_buffers, m->table.buffer_numel * sizeof(float)));
  return host_momentum ? be->upload(be, m->momentum, host_momentum, pbytes) : NULL;
}

dsc_status *dsc_fcn_download(dsc_fcn *m, float *host_momentum) {
  dsc_backend *be = m->be;
  size_t pbytes = m->table.param_numel * sizeof(float);
  DSC_TRY(be->download(be, m->host_params, m->params, pbytes));
  DSC_TRY(be->download(be, m->host_buffers, m->buffers, m->table.buffer_numel * sizeof(float)));
  return host_momentum ? be->download(be, host_momentum, m->momentum, pbytes) : NULL;
}

dsc_status *dsc_fcn_load_backbone(dsc_fcn *m, const char *path, int allow_partial) {
  if (!m->has_backbone) return dsc_errorf("%s: this FCN model is a head without a backbone", path);
  dsc_safetensors *f = NULL;
  DSC_TRY(dsc_weights_open(path, &f));
  dsc_resnet_config found;
  const char *prefix = "";
  dsc_status *st = dsc_weights_detect_resnet(f, &found, &prefix);
  if (!st && (found.depth != m->cfg.backbone.depth || found.small_stem != m->cfg.backbone.small_stem))
    st = dsc_errorf("%s holds a resnet%d with the %s stem; the model is a resnet%d with the %s stem", path,
                    found.depth, found.small_stem ? "small" : "standard", m->cfg.backbone.depth,
                    m->cfg.backbone.small_stem ? "small" : "standard");
  if (!st) st = dsc_weights_load(f, &m->table, "backbone.", prefix, m->host_params, m->host_buffers, allow_partial);
  dsc_st_close(f);
  DSC_TRY(st);
  return dsc_fcn_upload(m, NULL);
}

double dsc_poly_lr(double lr, double min_lr, double power, int64_t step, int64_t total) {
  double progress = total > 0 ? (double)step / (double)total : 1.0;
  if (progress > 1) progress = 1;
  return (lr - min_lr) * pow(1.0 - progress, power) + min_lr;
}

/* ---- activations ---- */

static dsc_status *plan(dsc_fcn *m, int n, int h5, int w5, int oh, int ow) {
  if (m->arena && m->plan_n == n && m->plan_h5 == h5 && m->plan_w5 == w5 && m->plan_oh == oh &&
      m->plan_ow == ow)
    return NULL;
  dsc_backend *be = m->be;
  be->free(be, m->arena);
  m->arena = NULL;
  const size_t n5 = (size_t)n * h5 * w5, ch = (size_t)m->cfg.channels, K = (size_t)m->cfg.classes;
  const size_t nout = (size_t)n * oh * ow, C5 = (size_t)m->in_channels;
  /* Sizes in floats, each rounded up to 16 (64 bytes). */
  size_t sizes[20], total = 0;
  int k = 0;
  sizes[k++] = n5 * ch; /* z0 */
  sizes[k++] = n5 * ch; /* a0 */
  sizes[k++] = n5 * ch; /* z1 */
  sizes[k++] = n5 * ch; /* a1 */
  sizes[k++] = n5 * ch; /* drop */
  sizes[k++] = n5 * K;  /* logits */
  sizes[k++] = nout * K; /* up */
  sizes[k++] = nout * K; /* dup */
  sizes[k++] = n5 * K;  /* dlogits */
  sizes[k++] = n5 * ch; /* dd */
  sizes[k++] = n5 * ch; /* da */
  sizes[k++] = n5 * ch; /* dz */
  sizes[k++] = n5 * C5; /* dc5 */
  sizes[k++] = ch;      /* save_mean[0] */
  sizes[k++] = ch;      /* save_var[0] */
  sizes[k++] = ch;      /* save_mean[1] */
  sizes[k++] = ch;      /* save_var[1] */
  sizes[k++] = (size_t)n * ch; /* scale */
  sizes[k++] = 1;       /* loss_sum */
  sizes[k++] = (nout + 3) / 4; /* labels (bytes) */
  for (int i = 0; i < k; i++) total += (sizes[i] + 15) / 16 * 16;
  DSC_TRY(dsc_status_wrap(be->alloc(be, total * sizeof(float), &m->arena),
                          "FCN activations for %d images of %dx%d (C5 %dx%d)", n, oh, ow, h5, w5));
  float *p = m->arena;
  float **slots[19] = {&m->z[0], &m->a[0], &m->z[1], &m->a[1], &m->drop, &m->logits, &m->up, &m->dup,
                       &m->dlogits, &m->dd, &m->da, &m->dz, &m->dc5, &m->save_mean[0], &m->save_var[0],
                       &m->save_mean[1], &m->save_var[1], &m->scale, &m->loss_sum};
  for (int i = 0; i < 19; i++) {
    *slots[i] = p;
    p += (sizes[i] + 15) / 16 * 16;
  }
  m->labels = (uint8_t *)p;
  m->plan_n = n, m->plan_h5 = h5, m->plan_w5 = w5, m->plan_oh = oh, m->plan_ow = ow;
  return NULL;
}

static dsc_conv_shape head_conv(const dsc_fcn *m, int i, int n, int h5, int w5) {
  int cin = i == 0 ? m->in_channels : m->cfg.channels;
  return (dsc_conv_shape){n, h5, w5, cin, m->cfg.channels, 3, 3, 1, 1, 1};
}

static dsc_conv_shape seg_conv(const dsc_fcn *m, int n, int h5, int w5) {
  return (dsc_conv_shape){n, h5, w5, m->cfg.channels, m->cfg.classes, 1, 1, 1, 0, 1};
}

/* Checks labels (255 or < classes), counts the labeled pixels. */
static dsc_status *check_labels(const dsc_fcn *m, const uint8_t *labels, size_t count, int64_t *labeled) {
  int64_t c = 0;
  for (size_t i = 0; i < count; i++) {
    if (labels[i] == 255) continue;
    if (labels[i] >= m->cfg.classes)
      return dsc_errorf("label %d at pixel %zu of the batch: the model has %d classes (0..%d, 255 = ignore)",
                        labels[i], i, m->cfg.classes, m->cfg.classes - 1);
    c++;
  }
  *labeled = c;
  return NULL;
}

dsc_status *dsc_fcn_head_train(dsc_fcn *m, const float *c5, int n, int h5, int w5, const uint8_t *labels,
                               int oh, int ow, int64_t step, uint64_t seed, const float *scale_host,
                               float *dc5, dsc_fcn_step_info *info) {
  dsc_backend *be = m->be;
  const int ch = m->cfg.channels, K = m->cfg.classes;
  const size_t nout = (size_t)n * oh * ow;
  int64_t labeled = 0;
  DSC_TRY(check_labels(m, labels, nout, &labeled));
  DSC_TRY(plan(m, n, h5, w5, oh, ow));
  DSC_TRY(be->upload(be, m->labels, labels, nout));
  float *P = m->params, *G = m->grads, *B = m->buffers;
  const float *in = c5;
  for (int i = 0; i < 2; i++) {
    dsc_conv_shape cs = head_conv(m, i, n, h5, w5);
    dsc_bn_shape bs = {n, h5, w5, ch, 1, BN_EPS, 1};
    DSC_TRY(be->conv2d_forward(be, &cs, m->z[i], in, P + m->w_off[i], NULL));
    DSC_TRY(be->bn_forward_train(be, &bs, m->a[i], m->save_mean[i], m->save_var[i], m->z[i],
                                 P + m->gamma_off[i], P + m->beta_off[i], NULL));
    DSC_TRY(be->bn_update_running(be, &bs, B + m->mean_off[i], B + m->var_off[i], m->save_mean[i],
                                  m->save_var[i], BN_MOMENTUM));
    in = m->a[i];
  }
  m->head_batches_tracked++;
  const float *dropped = m->a[1];
  const int use_dropout = m->cfg.dropout > 0 || scale_host;
  if (use_dropout) {
    float *scale = malloc((size_t)n * ch * sizeof(float));
    if (!scale) return dsc_errorf("out of memory");
    const float keep_scale = 1.0f / (1.0f - m->cfg.dropout);
    for (int i = 0; i < n; i++)
      for (int c = 0; c < ch; c++)
        scale[(size_t)i * ch + c] =
            scale_host ? scale_host[(size_t)i * ch + c]
                       : (dsc_rng_uniform(seed, DSC_RNG_DROPOUT, (uint32_t)step, (uint32_t)i, (uint32_t)c) >=
                                  m->cfg.dropout
                              ? keep_scale
                              : 0.0f);
    dsc_status *st = be->upload(be, m->scale, scale, (size_t)n * ch * sizeof(float));
    free(scale);
    DSC_TRY(st);
    DSC_TRY(be->channel_scale(be, n, h5 * w5, ch, m->drop, m->a[1], m->scale));
    dropped = m->drop;
  }
  dsc_conv_shape ss = seg_conv(m, n, h5, w5);
  DSC_TRY(be->conv2d_forward(be, &ss, m->logits, dropped, P + m->seg_w_off, P + m->seg_b_off));
  DSC_TRY(be->resize_bilinear_forward(be, n, h5, w5, K, oh, ow, m->up, m->logits));
  float grad_scale = labeled > 0 ? 1.0f / (float)labeled : 0.0f;
  DSC_TRY(be->softmax_ce(be, (int64_t)nout, K, m->up, m->labels, 255, grad_scale, m->loss_sum, m->dup));
  float loss_sum = 0;
  DSC_TRY(be->download(be, &loss_sum, m->loss_sum, sizeof loss_sum));
  info->labeled = labeled;
  info->loss = labeled > 0 ? (double)loss_sum / (double)labeled : 0.0;

  /* Backward, in reverse. */
  DSC_TRY(be->resize_bilinear_backward(be, n, h5, w5, K, oh, ow, m->dlogits, m->dup));
  DSC_TRY(be->conv2d_backward(be, &ss, m->dd, G + m->seg_w_off, G + m->seg_b_off, m->dlogits, dropped,
                              P + m->seg_w_off));
  if (use_dropout) DSC_TRY(be->channel_scale(be, n, h5 * w5, ch, m->dd, m->dd, m->scale));
  const float *dy = m->dd;
  for (int i = 1; i >= 0; i--) {
    dsc_conv_shape cs = head_conv(m, i, n, h5, w5);
    dsc_bn_shape bs = {n, h5, w5, ch, 1, BN_EPS, 1};
    DSC_TRY(be->bn_backward(be, &bs, m->dz, G + m->gamma_off[i], G + m->beta_off[i], NULL, dy, m->z[i],
                            m->a[i], P + m->gamma_off[i], m->save_mean[i], m->save_var[i]));
    float *dx = i == 1 ? m->da : dc5;
    DSC_TRY(be->conv2d_backward(be, &cs, dx, G + m->w_off[i], NULL, m->dz, i == 1 ? m->a[0] : c5,
                                P + m->w_off[i]));
    dy = m->da;
  }
  return NULL;
}

dsc_status *dsc_fcn_head_eval(dsc_fcn *m, const float *c5, int n, int h5, int w5, const float **logits) {
  dsc_backend *be = m->be;
  const int ch = m->cfg.channels;
  /* Keep a plan of this C5 size whatever its output size (dsc_fcn_predict plans one). */
  if (!(m->arena && m->plan_n == n && m->plan_h5 == h5 && m->plan_w5 == w5)) DSC_TRY(plan(m, n, h5, w5, h5, w5));
  float *P = m->params, *B = m->buffers;
  const float *in = c5;
  for (int i = 0; i < 2; i++) {
    dsc_conv_shape cs = head_conv(m, i, n, h5, w5);
    dsc_bn_shape bs = {n, h5, w5, ch, 1, BN_EPS, 1};
    DSC_TRY(be->conv2d_forward(be, &cs, m->z[i], in, P + m->w_off[i], NULL));
    DSC_TRY(be->bn_forward_eval(be, &bs, m->a[i], m->z[i], P + m->gamma_off[i], P + m->beta_off[i],
                                B + m->mean_off[i], B + m->var_off[i], NULL));
    in = m->a[i];
  }
  dsc_conv_shape ss = seg_conv(m, n, h5, w5);
  DSC_TRY(be->conv2d_forward(be, &ss, m->logits, in, P + m->seg_w_off, P + m->seg_b_off));
  *logits = m->logits;
  return NULL;
}

dsc_status *dsc_fcn_train_step(dsc_fcn *m, const float *x, const uint8_t *labels, int n, int h,
                               int w, int64_t step, uint64_t seed, const dsc_sgd_config *sgd,
                               double lr, dsc_fcn_step_info *info) {
  dsc_backend *be = m->be;
  if (!m->has_backbone) return dsc_errorf("dsc_fcn_train_step: the model is a head without a backbone");
  DSC_TRY(be->zero(be, m->grads, m->table.param_numel));
  dsc_resnet_features f;
  DSC_TRY(dsc_resnet_forward(&m->net, x, n, h, w, 1, 1, &f));
  DSC_TRY(plan(m, n, f.h[3], f.w[3], h, w));
  DSC_TRY(dsc_fcn_head_train(m, f.c[3], n, f.h[3], f.w[3], labels, h, w, step, seed, NULL, m->dc5, info));
  DSC_TRY(dsc_resnet_backward(&m->net, m->dc5));
  return dsc_sgd_step(be, sgd, (float)lr, m->table.param_numel, m->params, m->grads, m->momentum);
}

dsc_status *dsc_fcn_predict(dsc_fcn *m, const float *x, int n, int h, int w, float *out) {
  dsc_backend *be = m->be;
  if (!m->has_backbone) return dsc_errorf("dsc_fcn_predict: the model is a head without a backbone");
  dsc_resnet_features f;
  DSC_TRY(dsc_resnet_forward(&m->net, x, n, h, w, 0, 1, &f));
  DSC_TRY(plan(m, n, f.h[3], f.w[3], h, w));
  const float *logits = NULL;
  DSC_TRY(dsc_fcn_head_eval(m, f.c[3], n, f.h[3], f.w[3], &logits));
  const int K = m->cfg.classes;
  DSC_TRY(be->resize_bilinear_forward(be, n, f.h[3], f.w[3], K, h, w, m->up, logits));
  return be->download(be, out, m->up, (size_t)n * h * w * K * sizeof(float));
}

/* ---- tensors in files ---- */

dsc_status *dsc_fcn_add_tensors(dsc_fcn *m, dsc_st_writer *w, const float *host_momentum) {
  if (m->has_backbone)
    DSC_TRY(dsc_weights_add(w, &m->table, "backbone.", "backbone.", m->host_params, m->host_buffers,
                          &m->net.num_batches_tracked));
  DSC_TRY(dsc_weights_add(w, &m->table, "decode_head.", "decode_head.", m->host_params, m->host_buffers,
                          &m->head_batches_tracked));
  if (!host_momentum) return NULL;
  char name[160];
  for (int i = 0; i < m->table.count; i++) {
    const dsc_tensor_entry *e = &m->table.entries[i];
    if (e->role != DSC_ROLE_PARAM) continue;
    snprintf(name, sizeof name, "optim.momentum.%s", e->name);
    DSC_TRY(dsc_st_writer_add(w, name, DSC_F32, e->ndim, e->shape, host_momentum + e->offset));
  }
  return NULL;
}

static dsc_status *read_counter(const dsc_safetensors *f, const char *name, int64_t *out) {
  const dsc_st_tensor *t = dsc_st_find(f, name);
  if (!t || t->dtype != DSC_I64 || dsc_st_numel(t) != 1)
    return dsc_errorf("%s: no I64 scalar %s (not a dsc fine-tuning checkpoint?)", dsc_st_path(f), name);
  memcpy(out, dsc_st_data(f, t), sizeof *out);
  return NULL;
}

dsc_status *dsc_fcn_read_tensors(dsc_fcn *m, const dsc_safetensors *f, float *host_momentum) {
  if (m->has_backbone) {
    DSC_TRY(dsc_weights_load(f, &m->table, "backbone.", "backbone.", m->host_params, m->host_buffers, 0));
    DSC_TRY(read_counter(f, "backbone.bn1.num_batches_tracked", &m->net.num_batches_tracked));
  }
  DSC_TRY(dsc_weights_load(f, &m->table, "decode_head.", "decode_head.", m->host_params, m->host_buffers, 0));
  DSC_TRY(read_counter(f, "decode_head.convs.0.bn.num_batches_tracked", &m->head_batches_tracked));
  if (host_momentum) {
    char name[160];
    for (int i = 0; i < m->table.count; i++) {
      const dsc_tensor_entry *e = &m->table.entries[i];
      if (e->role != DSC_ROLE_PARAM) continue;
      snprintf(name, sizeof name, "optim.momentum.%s", e->name);
      DSC_TRY(dsc_st_read_f32(f, name, host_momentum + e->offset, e->numel));
    }
  }
  return dsc_fcn_upload(m, host_momentum);
}
