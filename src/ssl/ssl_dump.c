/* ssl_dump.c: the step dump of spec/INTERFACES.md — one step run with every capture on and
 * written with the state before and after it, for cross-checking against another
 * implementation (tools/reference/check_step.py). */
#include <stdlib.h>
#include <string.h>

#include "dsc/dist.h"
#include "dsc/safetensors.h"
#include "ssl/ssl_internal.h"

/* NHWC (n, s, s, 3) -> NCHW [n, 3, s, s]. */
static float *to_nchw(const float *x, int n, int s) {
  size_t hw = (size_t)s * s;
  float *y = malloc((size_t)n * 3 * hw * sizeof *y);
  if (!y) return NULL;
  for (int i = 0; i < n; i++)
    for (size_t k = 0; k < hw; k++)
      for (int c = 0; c < 3; c++) y[((size_t)i * 3 + c) * hw + k] = x[((size_t)i * hw + k) * 3 + c];
  return y;
}

/* The views of every rank, in rank order (host memory): the global batch of the dump. */
static dsc_status *gather_views(dsc_ssl_model *m, const float *x, size_t floats, float **out) {
  *out = malloc(floats * (size_t)m->world * sizeof **out);
  if (!*out) return dsc_errorf("out of memory for the step dump");
  return dsc_dist_allgather_host(m->dist, x, *out, floats * sizeof **out);
}

/* a, b: host views (with several ranks: this rank's; rank 0 writes the global batch). */
dsc_status *dsc_ssl_dump_step(dsc_ssl_model *m, const float *a, const float *b, int n, int size,
                              double lr, const dsc_ssl_meta *meta, const char *path,
                              dsc_ssl_step_info *info) {
  const dsc_config *cfg = &m->cfg;
  if (strcmp(cfg->precision, "fp32") != 0)
    return dsc_errorf("run.dump_step: a step dump is defined for run.precision=fp32 only");
  const int n_local = n;
  float *ga = NULL, *gb = NULL;
  if (m->world > 1) {
    size_t floats = (size_t)n * size * size * 3;
    dsc_status *gst = gather_views(m, a, floats, &ga);
    if (!gst) gst = gather_views(m, b, floats, &gb);
    if (gst) {
      free(ga);
      free(gb);
      return dsc_status_wrap(gst, "run.dump_step");
    }
    n = n * m->world; /* from here on n is the global batch, as in the dump */
  }
  const float *a_all = ga ? ga : a, *b_all = gb ? gb : b;
  dsc_ssl_snapshot before, after;
  DSC_TRY(dsc_ssl_snapshot_take(m, &before));
  memset(&after, 0, sizeof after);
  dsc_ssl_capture cap = {0};
  dsc_status *st = NULL;
  float *ia = to_nchw(a_all, n, size), *ib = to_nchw(b_all, n, size);
  float *grads = NULL;
  int64_t *buf = NULL;
  dsc_st_writer *w = NULL;
  if (!ia || !ib) st = dsc_errorf("out of memory for the step dump");
  /* Generous capture sizes: P <= size*size. */
  size_t np_max = (size_t)n * size * size, d = (size_t)cfg->dim;
  size_t n_perm = (size_t)n, n_match = np_max, n_nei = np_max * cfg->k_nei,
         n_hist = np_max * cfg->km_iters, n_ce = np_max;
  if (!st) {
    buf = calloc(n_perm + n_match + n_nei + n_hist + n_ce + 1, sizeof *buf);
    if (!buf) st = dsc_errorf("out of memory for the step dump");
  }
  float *km_init = NULL;
  if (!st && m->has_km && !(km_init = calloc((size_t)cfg->clusters * d, sizeof *km_init)))
    st = dsc_errorf("out of memory for the step dump");
  if (!st) {
    cap.perm_key = buf;
    cap.match = buf + n_perm;
    cap.nei_idx = cap.match + n_match;
    cap.km_history = cap.nei_idx + n_nei;
    cap.ce_target = cap.km_history + n_hist;
    cap.km_init = km_init;
    const float *da = NULL, *db = NULL;
    st = dsc_ssl_stage_batch(m, a, b, n_local, size, &da, &db);
    if (!st) st = dsc_ssl_step(m, da, db, n_local, size, lr, info, &cap);
  }
  size_t pn = m->table.param_numel;
  if (!st && !(grads = malloc(pn * sizeof *grads))) st = dsc_errorf("out of memory for the step dump");
  if (!st) st = m->be->download(m->be, grads, m->grads, pn * sizeof *grads);
  if (!st) st = dsc_ssl_snapshot_take(m, &after);
  const int writer = m->rank == 0; /* every rank runs the step; rank 0 writes */
  float losses[4] = {(float)info->loss_ins, (float)info->loss_pix, (float)info->loss_sem,
                     (float)info->loss_total};
  if (!writer) goto done;
  if (!st) st = dsc_st_writer_new(&w);
  if (!st) st = dsc_ssl_meta_add(m, meta, w);
  int64_t ishape[4] = {n, 3, size, size};
  if (!st) st = dsc_st_writer_add(w, "input.a", DSC_F32, 4, ishape, ia);
  if (!st) st = dsc_st_writer_add(w, "input.b", DSC_F32, 4, ishape, ib);
  if (!st) st = dsc_ssl_snapshot_add(m, &before, w, "");
  int64_t s_perm[1] = {n}, s_np[2] = {n, m->p}, s_nei[3] = {n, m->p, cfg->k_nei},
          s_hist[3] = {cfg->km_iters, n, m->p}, s_km[2] = {cfg->clusters, cfg->dim};
  dsc_method me = cfg->method;
  if (!st && m->has_km) st = dsc_st_writer_add(w, "km.init", DSC_F32, 2, s_km, km_init);
  if (!st && m->has_dense) st = dsc_st_writer_add(w, "match.c", DSC_I64, 2, s_np, cap.match);
  if (!st && (me == DSC_METHOD_DSC_NEI || me == DSC_METHOD_DSC_TRI))
    st = dsc_st_writer_add(w, "nei.idx", DSC_I64, 3, s_nei, cap.nei_idx);
  if (!st && m->has_km) st = dsc_st_writer_add(w, "km.history", DSC_I64, 3, s_hist, cap.km_history);
  if (!st && me == DSC_METHOD_DSC_CE) st = dsc_st_writer_add(w, "ce.target", DSC_I64, 2, s_np, cap.ce_target);
  if (!st) st = dsc_st_writer_add(w, "perm.key", DSC_I64, 1, s_perm, cap.perm_key);
  if (!st) st = dsc_st_writer_add(w, "loss.ins", DSC_F32, 0, NULL, &losses[0]);
  if (!st) st = dsc_st_writer_add(w, "loss.pix", DSC_F32, 0, NULL, &losses[1]);
  if (!st) st = dsc_st_writer_add(w, "loss.sem", DSC_F32, 0, NULL, &losses[2]);
  if (!st) st = dsc_st_writer_add(w, "loss.total", DSC_F32, 0, NULL, &losses[3]);
  char name[160];
  for (int i = 0; !st && i < m->table.count; i++) {
    const dsc_tensor_entry *e = &m->table.entries[i];
    if (e->role != DSC_ROLE_PARAM) continue;
    snprintf(name, sizeof name, "grad.%s", e->name);
    st = dsc_st_writer_add(w, name, DSC_F32, e->ndim, e->shape, grads + e->offset);
  }
  if (!st) st = dsc_ssl_snapshot_add(m, &after, w, "after.");
  if (!st) st = dsc_st_writer_save(w, path);
done:
  dsc_st_writer_free(w);
  dsc_ssl_snapshot_free(&before);
  dsc_ssl_snapshot_free(&after);
  free(ia);
  free(ib);
  free(grads);
  free(buf);
  free(km_init);
  free(ga);
  free(gb);
  return dsc_status_wrap(st, "run.dump_step");
}
