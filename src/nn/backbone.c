/* backbone.c: a ResNet with its own blobs (include/dsc/backbone.h). */
#include "dsc/backbone.h"

#include <stdlib.h>
#include <string.h>

#include "dsc/optim.h"
#include "dsc/weights.h"

dsc_status *dsc_backbone_create(dsc_backbone *m, dsc_backend *be, const dsc_resnet_config *cfg,
                                int trainable, uint64_t seed) {
  memset(m, 0, sizeof *m);
  m->be = be;
  DSC_TRY(dsc_resnet_init(&m->net, be, cfg, &m->table, ""));
  size_t pbytes = m->table.param_numel * sizeof(float);
  size_t bbytes = m->table.buffer_numel * sizeof(float);
  DSC_TRY(be->alloc(be, pbytes, (void **)&m->params));
  DSC_TRY(be->alloc(be, bbytes, (void **)&m->buffers));
  if (trainable) {
    DSC_TRY(be->alloc(be, pbytes, (void **)&m->grads));
    DSC_TRY(be->alloc(be, pbytes, (void **)&m->momentum));
  }
  m->host_params = calloc(m->table.param_numel ? m->table.param_numel : 1, sizeof(float));
  m->host_buffers = calloc(m->table.buffer_numel ? m->table.buffer_numel : 1, sizeof(float));
  if (!m->host_params || !m->host_buffers) return dsc_errorf("out of memory for model weights");
  dsc_resnet_init_weights(&m->net, &m->table, seed, m->host_params, m->host_buffers);
  dsc_resnet_bind(&m->net, m->params, m->grads, m->buffers);
  return dsc_backbone_upload(m);
}

dsc_status *dsc_backbone_upload(dsc_backbone *m) {
  DSC_TRY(m->be->upload(m->be, m->params, m->host_params, m->table.param_numel * sizeof(float)));
  return m->be->upload(m->be, m->buffers, m->host_buffers, m->table.buffer_numel * sizeof(float));
}

dsc_status *dsc_backbone_download(dsc_backbone *m) {
  DSC_TRY(m->be->download(m->be, m->host_params, m->params, m->table.param_numel * sizeof(float)));
  return m->be->download(m->be, m->host_buffers, m->buffers,
                         m->table.buffer_numel * sizeof(float));
}

dsc_status *dsc_backbone_load(dsc_backbone *m, const char *path, int allow_partial) {
  dsc_safetensors *f = NULL;
  DSC_TRY(dsc_weights_open(path, &f));
  dsc_resnet_config cfg;
  const char *prefix = "";
  dsc_status *st = dsc_weights_detect_resnet(f, &cfg, &prefix);
  if (!st)
    st = dsc_weights_load(f, &m->table, "", prefix, m->host_params, m->host_buffers, allow_partial);
  dsc_st_close(f);
  DSC_TRY(st);
  return dsc_backbone_upload(m);
}

dsc_status *dsc_backbone_save(dsc_backbone *m, const char *path, int n_meta,
                              const char *const *keys, const char *const *values) {
  DSC_TRY(dsc_backbone_download(m));
  dsc_st_writer *w = NULL;
  DSC_TRY(dsc_st_writer_new(&w));
  int64_t tracked = m->net.num_batches_tracked;
  dsc_status *st = dsc_weights_add(w, &m->table, "", "", m->host_params, m->host_buffers, &tracked);
  for (int i = 0; !st && i < n_meta; i++) st = dsc_st_writer_meta(w, keys[i], values[i]);
  if (!st) st = dsc_st_writer_save(w, path);
  dsc_st_writer_free(w);
  return st;
}

void dsc_backbone_free(dsc_backbone *m) {
  if (m->be) {
    m->be->free(m->be, m->params);
    m->be->free(m->be, m->grads);
    m->be->free(m->be, m->momentum);
    m->be->free(m->be, m->buffers);
  }
  dsc_resnet_free(&m->net);
  dsc_table_free(&m->table);
  free(m->host_params);
  free(m->host_buffers);
  memset(m, 0, sizeof *m);
}

dsc_status *dsc_backbone_synthetic_step(dsc_backbone *m, const float *x, int n, int h, int w,
                                        float *work, float lr, double *loss) {
  dsc_backend *be = m->be;
  if (!m->grads) return dsc_errorf("synthetic step on a backbone created without gradients");
  DSC_TRY(be->zero(be, m->grads, m->table.param_numel));
  dsc_resnet_features f;
  DSC_TRY(dsc_resnet_forward(&m->net, x, n, h, w, 1, 1, &f));
  int c = f.channels[3], hw = f.h[3] * f.w[3];
  size_t nc = (size_t)n * c;
  float *weights = work, *pooled = work + nc, *dot = pooled + nc, *dc5 = dot + 16;
  DSC_TRY(be->gap_forward(be, n, hw, c, pooled, f.c[3]));
  /* loss = <pooled, weights>: a 1x1 product of a row and a column. */
  DSC_TRY(be->gemm(be, 0, 1, 1, 1, (int)nc, 1.0f, pooled, (int)nc, weights, (int)nc, 0.0f, dot, 1));
  float host_dot;
  DSC_TRY(be->download(be, &host_dot, dot, sizeof host_dot));
  *loss = host_dot;
  DSC_TRY(be->gap_backward(be, n, hw, c, dc5, weights)); /* d loss / d pooled = weights */
  DSC_TRY(dsc_resnet_backward(&m->net, dc5));
  dsc_sgd_config sgd = {0.9f, 1e-4f, 1};
  return dsc_sgd_step(be, &sgd, lr, m->table.param_numel, m->params, m->grads, m->momentum);
}
