/* cpu_conv.c: the CPU backend's 2-D convolution on oneDNN (C API, v2.6), with a primitive
 * cache (conventions in cpu_ops.h and backend.h).
 *
 * x, dx (n,h,w,ci) and y, dy (n,oh,ow,co) are used in place as dnnl_nhwc; the weights and
 * their gradient stay in the caller's OIHW (dnnl_oihw). Every primitive is created with
 * format_tag_any for its weights, so oneDNN picks its fastest blocked layout, and the
 * caller's OIHW weights are reordered into it on every call (weights change between calls;
 * the reorder is skipped when oneDNN happens to choose OIHW itself). Algorithm: direct
 * (never Winograd), strict fp32 math (no bf16/tf32 down-conversion).
 *
 * Cache: one entry per distinct (shape, bias present) pair, found by linear search (a
 * ResNet has a few dozen). An entry holds the forward, backward-data and backward-weights
 * primitives (the backward ones made on first use), the weight reorders, and memory
 * objects whose data handles are pointed at the caller's buffers on each call, so after the
 * first training step a step creates nothing. Buffers are not per entry but shared by all,
 * since one op runs at a time: the user scratchpad of every primitive
 * (dnnl_scratchpad_mode_user) and the reordered weights / raw weight gradient each live in
 * one backend-owned buffer sized for the largest layer (for ResNet-50 that is 9 MB instead
 * of ~150 MB of per-shape copies, and the buffer stays warm in cache).
 *
 * Backward-weights primitives write (=); the contract is dw += and db +=. The weight
 * gradient goes to the shared buffer in oneDNN's layout, then one reorder with a sum
 * post-op (dst = src + 1*dst) converts it to OIHW and accumulates into dw in the same pass;
 * the bias gradient (c_out floats) is added by a plain loop. A call that wants db without
 * dw sums dy itself.
 *
 * Two shape rules override oneDNN's own ranking, both measured (docs/performance.md, "CPU
 * ops") and both functions of the shape alone, so a given shape always runs the same code
 * and results stay reproducible: kxk forward convolutions with at most 4x4 output pixels
 * pass over brgconv for the jit kernel, and kxk weight gradients with at most 2x2 output
 * pixels are computed as per-tap GEMMs (conv_dw_by_taps) instead of by oneDNN's kernel,
 * which there spends most of its time on the zero padding. */
#include <dnnl_debug.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu_ops.h"

/* A primitive and its scratchpad memory object (NULL when it needs no scratchpad). */
typedef struct cpu_prim {
  dnnl_primitive_t prim;
  dnnl_memory_t scratch;
} cpu_prim;

struct cpu_conv_entry {
  dsc_conv_shape s;
  int bias; /* forward: b != NULL; backward: db != NULL */
  dnnl_primitive_desc_t fwd_pd; /* kept as the hint for the backward primitives */
  /* memory objects bound to the caller's buffers at each call */
  dnnl_memory_t x_mem, y_mem, w_mem, b_mem, dx_mem, dw_mem;
  /* forward */
  cpu_prim fwd, fwd_reorder;   /* fwd_reorder.prim NULL: the primitive reads OIHW */
  dnnl_memory_t fwd_w_mem;     /* reordered weights (in impl->weights), or NULL */
  /* backward data */
  int have_bwd_data;
  cpu_prim bwd_data, bwd_reorder;
  dnnl_memory_t bwd_w_mem;
  /* backward weights */
  int have_bwd_weights;
  cpu_prim bwd_weights, dw_reorder; /* dw_reorder: diff weights -> OIHW with sum */
  dnnl_memory_t dw_tmp_mem;    /* raw weight gradient (in impl->weights) */
  dnnl_memory_t db_tmp_mem;    /* raw bias gradient (oneDNN-owned) */
};

#define CONV_DNNL(call)                                                                 \
  do {                                                                                  \
    dnnl_status_t conv_dnnl_st_ = (call);                                               \
    if (conv_dnnl_st_ != dnnl_success)                                                  \
      return DSC_ERR_AT("oneDNN %s: %s", #call, dnnl_status2str(conv_dnnl_st_));        \
  } while (0)

static void prim_free(cpu_prim *p) {
  if (p->prim) dnnl_primitive_destroy(p->prim);
  if (p->scratch) dnnl_memory_destroy(p->scratch);
  p->prim = NULL;
  p->scratch = NULL;
}

static void mem_free(dnnl_memory_t *m) {
  if (*m) dnnl_memory_destroy(*m);
  *m = NULL;
}

static void entry_bwd_data_free(cpu_conv_entry *e) {
  prim_free(&e->bwd_data);
  prim_free(&e->bwd_reorder);
  mem_free(&e->bwd_w_mem);
  e->have_bwd_data = 0;
}

static void entry_bwd_weights_free(cpu_conv_entry *e) {
  prim_free(&e->bwd_weights);
  prim_free(&e->dw_reorder);
  mem_free(&e->dw_tmp_mem);
  mem_free(&e->db_tmp_mem);
  e->have_bwd_weights = 0;
}

static void entry_free(cpu_conv_entry *e) {
  if (!e) return;
  entry_bwd_data_free(e);
  entry_bwd_weights_free(e);
  prim_free(&e->fwd);
  prim_free(&e->fwd_reorder);
  mem_free(&e->fwd_w_mem);
  mem_free(&e->x_mem);
  mem_free(&e->y_mem);
  mem_free(&e->w_mem);
  mem_free(&e->b_mem);
  mem_free(&e->dx_mem);
  mem_free(&e->dw_mem);
  if (e->fwd_pd) dnnl_primitive_desc_destroy(e->fwd_pd);
  free(e);
}

void cpu_conv_cache_free(cpu_impl *impl) {
  for (int i = 0; i < impl->n_convs; i++) entry_free(impl->convs[i]);
  free(impl->convs);
  impl->convs = NULL;
  impl->n_convs = impl->cap_convs = 0;
}

/* Attributes of every primitive here: user scratchpad, strict fp32; with `sum`, a sum
 * post-op (accumulate into the destination). */
static dsc_status *attr_make(int sum, dnnl_primitive_attr_t *out) {
  dnnl_primitive_attr_t attr = NULL;
  CONV_DNNL(dnnl_primitive_attr_create(&attr));
  dnnl_status_t st = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
  if (st == dnnl_success) st = dnnl_primitive_attr_set_fpmath_mode(attr, dnnl_fpmath_mode_strict);
  if (st == dnnl_success && sum) {
    dnnl_post_ops_t po = NULL;
    st = dnnl_post_ops_create(&po);
    if (st == dnnl_success) st = dnnl_post_ops_append_sum(po, 1.0f);
    if (st == dnnl_success) st = dnnl_primitive_attr_set_post_ops(attr, po);
    if (po) dnnl_post_ops_destroy(po);
  }
  if (st != dnnl_success) {
    dnnl_primitive_attr_destroy(attr);
    return DSC_ERR_AT("oneDNN primitive attributes: %s", dnnl_status2str(st));
  }
  *out = attr;
  return NULL;
}

/* Makes the primitive of `pd` and its scratchpad memory (sized into the backend's shared
 * scratchpad). Takes ownership of nothing: the caller destroys pd. */
static dsc_status *prim_make(cpu_impl *impl, const_dnnl_primitive_desc_t pd, cpu_prim *p) {
  const dnnl_memory_desc_t *smd = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
  size_t bytes = smd ? dnnl_memory_desc_get_size(smd) : 0;
  if (bytes > 0) {
    DSC_TRY(cpu_buffer_reserve(&impl->scratch, bytes, "oneDNN scratchpad"));
    CONV_DNNL(dnnl_memory_create(&p->scratch, smd, impl->engine, DNNL_MEMORY_NONE));
  }
  CONV_DNNL(dnnl_primitive_create(&p->prim, pd));
  return NULL;
}

/* A reorder primitive src_md -> dst_md (with a sum post-op when `sum`). */
static dsc_status *reorder_make(cpu_impl *impl, const dnnl_memory_desc_t *src_md,
                                const dnnl_memory_desc_t *dst_md, int sum, cpu_prim *p) {
  dnnl_primitive_attr_t attr = NULL;
  DSC_TRY(attr_make(sum, &attr));
  dnnl_primitive_desc_t pd = NULL;
  dnnl_status_t st = dnnl_reorder_primitive_desc_create(&pd, src_md, impl->engine, dst_md,
                                                        impl->engine, attr);
  dnnl_primitive_attr_destroy(attr);
  if (st != dnnl_success) return DSC_ERR_AT("oneDNN reorder: %s", dnnl_status2str(st));
  dsc_status *err = prim_make(impl, pd, p);
  dnnl_primitive_desc_destroy(pd);
  return err;
}

/* Runs a primitive with `args` plus its scratchpad. */
static dsc_status *prim_run(cpu_impl *impl, cpu_prim *p, int nargs, dnnl_exec_arg_t *args) {
  dnnl_exec_arg_t all[8];
  memcpy(all, args, (size_t)nargs * sizeof *args);
  if (p->scratch) {
    CONV_DNNL(dnnl_memory_set_data_handle(p->scratch, impl->scratch.p));
    all[nargs].arg = DNNL_ARG_SCRATCHPAD;
    all[nargs].memory = p->scratch;
    nargs++;
  }
  CONV_DNNL(dnnl_primitive_execute(p->prim, impl->stream, nargs, all));
  return NULL;
}

static dsc_status *bind(dnnl_memory_t m, const void *p) {
  CONV_DNNL(dnnl_memory_set_data_handle(m, (void *)p));
  return NULL;
}

/* The memory descriptors of the caller's tensors for shape s. */
typedef struct conv_mds {
  dnnl_memory_desc_t x, y, w, b, any_w;
  dnnl_dims_t strides, dilates, pad_l, pad_r;
} conv_mds;

static dsc_status *conv_mds_init(const dsc_conv_shape *s, conv_mds *m) {
  dnnl_dims_t xd = {s->n, s->c_in, s->h, s->w};
  dnnl_dims_t yd = {s->n, s->c_out, dsc_conv_oh(s), dsc_conv_ow(s)};
  dnnl_dims_t wd = {s->c_out, s->c_in, s->kh, s->kw};
  dnnl_dims_t bd = {s->c_out};
  CONV_DNNL(dnnl_memory_desc_init_by_tag(&m->x, 4, xd, dnnl_f32, dnnl_nhwc));
  CONV_DNNL(dnnl_memory_desc_init_by_tag(&m->y, 4, yd, dnnl_f32, dnnl_nhwc));
  CONV_DNNL(dnnl_memory_desc_init_by_tag(&m->w, 4, wd, dnnl_f32, dnnl_oihw));
  CONV_DNNL(dnnl_memory_desc_init_by_tag(&m->any_w, 4, wd, dnnl_f32, dnnl_format_tag_any));
  CONV_DNNL(dnnl_memory_desc_init_by_tag(&m->b, 1, bd, dnnl_f32, dnnl_x));
  /* oneDNN counts dilation from 0 and checks the output size with the same floor
   * division as PyTorch, so symmetric padding works for every size. */
  m->strides[0] = m->strides[1] = s->stride;
  m->dilates[0] = m->dilates[1] = s->dilation - 1;
  m->pad_l[0] = m->pad_l[1] = s->pad;
  m->pad_r[0] = m->pad_r[1] = s->pad;
  return NULL;
}

/* A memory object for a tensor in oneDNN's layout `md`, whose data lives in the backend's
 * shared weights buffer (bound at each use). */
static dsc_status *weights_mem_make(cpu_impl *impl, const dnnl_memory_desc_t *md,
                                    dnnl_memory_t *mem) {
  DSC_TRY(cpu_buffer_reserve(&impl->weights, dnnl_memory_desc_get_size(md), "conv weights buffer"));
  CONV_DNNL(dnnl_memory_create(mem, md, impl->engine, DNNL_MEMORY_NONE));
  return NULL;
}

/* If the primitive's weight layout differs from OIHW: a memory object in its layout and a
 * reorder from OIHW into it. */
static dsc_status *weights_layout_make(cpu_impl *impl, const dnnl_memory_desc_t *prim_md,
                                       const dnnl_memory_desc_t *user_md, cpu_prim *reorder,
                                       dnnl_memory_t *mem) {
  if (dnnl_memory_desc_equal(prim_md, user_md)) return NULL;
  DSC_TRY(weights_mem_make(impl, prim_md, mem));
  return reorder_make(impl, user_md, prim_md, 0, reorder);
}

/* Small outputs: oneDNN 2.6 ranks its brgemm convolution first for every fp32 kxk
 * forward, but when the output is at most 4x4 pixels (layer4 of a ResNet on 64x64 images)
 * most of each window lies in the padding and brgconv runs 1.3-3x slower than the plain
 * jit:avx512_core kernel (docs/performance.md, "CPU ops"). The choice depends on the shape
 * only, so results stay reproducible run to run. Returns the implementation-name prefix to
 * pass over, or NULL to take oneDNN's first choice. */
static const char *conv_fwd_avoid(const dsc_conv_shape *s) {
  if (s->kh * s->kw > 1 && dsc_conv_oh(s) * dsc_conv_ow(s) <= 16) return "brgconv:";
  return NULL;
}

/* dnnl_primitive_desc_create, but passing over implementations whose name starts with
 * `avoid` (when another exists). */
static dnnl_status_t pd_create(cpu_impl *impl, const void *op_desc,
                               const_dnnl_primitive_attr_t attr,
                               const_dnnl_primitive_desc_t hint, const char *avoid,
                               dnnl_primitive_desc_t *out) {
  dnnl_primitive_desc_iterator_t it = NULL;
  if (avoid &&
      dnnl_primitive_desc_iterator_create(&it, op_desc, attr, impl->engine, hint) == dnnl_success) {
    do {
      dnnl_primitive_desc_t pd = dnnl_primitive_desc_iterator_fetch(it);
      const char *name = NULL;
      if (pd && dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &name) == dnnl_success &&
          name && strncmp(name, avoid, strlen(avoid)) != 0) {
        dnnl_primitive_desc_iterator_destroy(it);
        *out = pd;
        return dnnl_success;
      }
      if (pd) dnnl_primitive_desc_destroy(pd);
    } while (dnnl_primitive_desc_iterator_next(it) == dnnl_success);
    dnnl_primitive_desc_iterator_destroy(it);
  }
  return dnnl_primitive_desc_create(out, op_desc, attr, impl->engine, hint);
}

/* The primitive descriptor of the convolution `cd` (forward, backward data or backward
 * weights, named by `what` in the error) with attr_make's attributes; hint and avoid as
 * pd_create. */
static dsc_status *conv_pd_make(cpu_impl *impl, const dnnl_convolution_desc_t *cd,
                                const_dnnl_primitive_desc_t hint, const char *avoid,
                                const char *what, dnnl_primitive_desc_t *out) {
  dnnl_primitive_attr_t attr = NULL;
  DSC_TRY(attr_make(0, &attr));
  dnnl_status_t st = pd_create(impl, cd, attr, hint, avoid, out);
  dnnl_primitive_attr_destroy(attr);
  if (st != dnnl_success) return DSC_ERR_AT("oneDNN convolution %s: %s", what, dnnl_status2str(st));
  return NULL;
}

static dsc_status *entry_fwd_init(cpu_impl *impl, cpu_conv_entry *e) {
  const dsc_conv_shape *s = &e->s;
  conv_mds m;
  DSC_TRY(conv_mds_init(s, &m));
  CONV_DNNL(dnnl_memory_create(&e->x_mem, &m.x, impl->engine, DNNL_MEMORY_NONE));
  CONV_DNNL(dnnl_memory_create(&e->y_mem, &m.y, impl->engine, DNNL_MEMORY_NONE));
  CONV_DNNL(dnnl_memory_create(&e->dx_mem, &m.x, impl->engine, DNNL_MEMORY_NONE));
  CONV_DNNL(dnnl_memory_create(&e->w_mem, &m.w, impl->engine, DNNL_MEMORY_NONE));
  CONV_DNNL(dnnl_memory_create(&e->dw_mem, &m.w, impl->engine, DNNL_MEMORY_NONE));
  CONV_DNNL(dnnl_memory_create(&e->b_mem, &m.b, impl->engine, DNNL_MEMORY_NONE));

  dnnl_convolution_desc_t cd;
  CONV_DNNL(dnnl_dilated_convolution_forward_desc_init(
      &cd, dnnl_forward_training, dnnl_convolution_direct, &m.x, &m.any_w,
      e->bias ? &m.b : NULL, &m.y, m.strides, m.dilates, m.pad_l, m.pad_r));
  DSC_TRY(conv_pd_make(impl, &cd, NULL, conv_fwd_avoid(s), "forward", &e->fwd_pd));
  DSC_TRY(prim_make(impl, e->fwd_pd, &e->fwd));
  const dnnl_memory_desc_t *wmd = dnnl_primitive_desc_query_md(e->fwd_pd, dnnl_query_weights_md, 0);
  return weights_layout_make(impl, wmd, &m.w, &e->fwd_reorder, &e->fwd_w_mem);
}

static dsc_status *entry_bwd_data_init(cpu_impl *impl, cpu_conv_entry *e) {
  conv_mds m;
  DSC_TRY(conv_mds_init(&e->s, &m));
  dnnl_convolution_desc_t cd;
  CONV_DNNL(dnnl_dilated_convolution_backward_data_desc_init(
      &cd, dnnl_convolution_direct, &m.x, &m.any_w, &m.y, m.strides, m.dilates, m.pad_l,
      m.pad_r));
  dnnl_primitive_desc_t pd = NULL;
  DSC_TRY(conv_pd_make(impl, &cd, e->fwd_pd, NULL, "backward data", &pd));
  dsc_status *err = prim_make(impl, pd, &e->bwd_data);
  if (!err) {
    const dnnl_memory_desc_t *wmd = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    err = weights_layout_make(impl, wmd, &m.w, &e->bwd_reorder, &e->bwd_w_mem);
  }
  dnnl_primitive_desc_destroy(pd);
  return err;
}

static dsc_status *entry_bwd_weights_init(cpu_impl *impl, cpu_conv_entry *e) {
  conv_mds m;
  DSC_TRY(conv_mds_init(&e->s, &m));
  dnnl_convolution_desc_t cd;
  CONV_DNNL(dnnl_dilated_convolution_backward_weights_desc_init(
      &cd, dnnl_convolution_direct, &m.x, &m.any_w, e->bias ? &m.b : NULL, &m.y, m.strides,
      m.dilates, m.pad_l, m.pad_r));
  dnnl_primitive_desc_t pd = NULL;
  DSC_TRY(conv_pd_make(impl, &cd, e->fwd_pd, NULL, "backward weights", &pd));
  dsc_status *err = prim_make(impl, pd, &e->bwd_weights);
  if (!err) {
    const dnnl_memory_desc_t *dwmd =
        dnnl_primitive_desc_query_md(pd, dnnl_query_diff_weights_md, 0);
    err = weights_mem_make(impl, dwmd, &e->dw_tmp_mem);
    if (!err && e->bias) {
      dnnl_status_t ms = dnnl_memory_create(&e->db_tmp_mem, &m.b, impl->engine, DNNL_MEMORY_ALLOCATE);
      if (ms != dnnl_success) err = DSC_ERR_AT("oneDNN bias gradient buffer: %s", dnnl_status2str(ms));
    }
    if (!err) err = reorder_make(impl, dwmd, &m.w, 1, &e->dw_reorder);
  }
  dnnl_primitive_desc_destroy(pd);
  return err;
}

static const char *conv_describe(const dsc_conv_shape *s, int bias, char *buf, size_t len) {
  snprintf(buf, len, "n=%d %dx%dx%d -> %d, kernel %dx%d stride %d pad %d dilation %d%s", s->n,
           s->h, s->w, s->c_in, s->c_out, s->kh, s->kw, s->stride, s->pad, s->dilation,
           bias ? ", bias" : "");
  return buf;
}

static int shape_equal(const dsc_conv_shape *a, const dsc_conv_shape *b) {
  return a->n == b->n && a->h == b->h && a->w == b->w && a->c_in == b->c_in &&
         a->c_out == b->c_out && a->kh == b->kh && a->kw == b->kw && a->stride == b->stride &&
         a->pad == b->pad && a->dilation == b->dilation;
}

/* Builds one backward part of entry e (backward data or backward weights) on first use:
 * `init` makes it, `release` frees what a failed `init` left, *have records success. */
static dsc_status *entry_part_ensure(cpu_impl *impl, cpu_conv_entry *e, int *have,
                                     dsc_status *(*init)(cpu_impl *, cpu_conv_entry *),
                                     void (*release)(cpu_conv_entry *)) {
  if (*have) return NULL;
  dsc_status *err = init(impl, e);
  if (err) {
    char d[160];
    release(e);
    return dsc_status_wrap(err, "conv2d backward (%s)", conv_describe(&e->s, e->bias, d, sizeof d));
  }
  *have = 1;
  return NULL;
}

/* The cache entry for (s, bias), made with its forward primitive on first use. */
static dsc_status *entry_get(cpu_impl *impl, const dsc_conv_shape *s, int bias,
                             cpu_conv_entry **out) {
  for (int i = 0; i < impl->n_convs; i++) {
    cpu_conv_entry *e = impl->convs[i];
    if (e->bias == bias && shape_equal(&e->s, s)) {
      *out = e;
      return NULL;
    }
  }
  if (impl->n_convs == impl->cap_convs) {
    int cap = impl->cap_convs ? 2 * impl->cap_convs : 32;
    cpu_conv_entry **grown = realloc(impl->convs, (size_t)cap * sizeof *grown);
    if (!grown) return dsc_errorf("conv2d: out of memory growing the primitive cache");
    impl->convs = grown;
    impl->cap_convs = cap;
  }
  cpu_conv_entry *e = calloc(1, sizeof *e);
  if (!e) return dsc_errorf("conv2d: out of memory for a primitive cache entry");
  e->s = *s;
  e->bias = bias;
  dsc_status *err = entry_fwd_init(impl, e);
  if (err) {
    char d[160];
    entry_free(e);
    return dsc_status_wrap(err, "conv2d (%s)", conv_describe(s, bias, d, sizeof d));
  }
  impl->convs[impl->n_convs++] = e;
  *out = e;
  return NULL;
}

/* db += sum of dy over (n, oh, ow), for the rare call that wants db without dw: per-thread
 * partial sums in double over contiguous pixel ranges, combined in thread order. */
static dsc_status *conv_bias_grad(cpu_impl *impl, const dsc_conv_shape *s, float *db,
                                  const float *dy) {
  const int T = impl->threads, C = s->c_out;
  const size_t pixels = (size_t)s->n * dsc_conv_oh(s) * dsc_conv_ow(s);
  double *part = NULL;
  DSC_TRY(cpu_work_get(impl, (size_t)T * C * sizeof *part, (void **)&part));
#pragma omp parallel num_threads(T)
  {
    const int t = omp_get_thread_num();
    double *acc = part + (size_t)t * C;
    size_t lo, hi;
    cpu_split(pixels, T, t, &lo, &hi);
    for (int c = 0; c < C; c++) acc[c] = 0.0;
    for (size_t p = lo; p < hi; p++)
      for (int c = 0; c < C; c++) acc[c] += (double)dy[p * C + c];
  }
  for (int c = 0; c < C; c++) {
    double sum = 0.0;
    for (int t = 0; t < T; t++) sum += part[(size_t)t * C + c];
    db[c] = (float)((double)db[c] + sum);
  }
  return NULL;
}

/* Weight gradient as one GEMM per (kernel tap, output pixel) pair, for outputs of at most
 * 2x2 pixels: there oneDNN's backward-weights kernel spends most of its time on the zero
 * padding (13 ms instead of 2 ms for ResNet-18's 3x3 512->512 at 2x2, batch 64). For tap
 * (ky,kx) and output (oy,ox) reading input (iy,ix):
 *   G[co][tap][ci] (+)= sum_n dy[n,oy,ox,co] * x[n,iy,ix,ci]
 * is dnnl_sgemm('T','N') on the strided (n, co) and (n, ci) slices, accumulating over the
 * output pixels in a fixed order (the first one with beta 0; a tap that never sees the
 * image is zero). Then dw[co][ci][tap] += G[co][tap][ci], parallel over co. oneDNN's gemm
 * runs on the same OpenMP threads and splits work the same way for a given thread count. */
static int conv_dw_by_taps_wins(const dsc_conv_shape *s) {
  return s->kh * s->kw > 1 && dsc_conv_oh(s) * dsc_conv_ow(s) <= 4;
}

static dsc_status *conv_dw_by_taps(cpu_impl *impl, const dsc_conv_shape *s, float *dw,
                                   const float *dy, const float *x) {
  const int OH = dsc_conv_oh(s), OW = dsc_conv_ow(s), taps = s->kh * s->kw;
  const int CI = s->c_in, CO = s->c_out;
  DSC_TRY(cpu_buffer_reserve(&impl->weights, (size_t)CO * taps * CI * sizeof(float),
                             "conv weights buffer"));
  float *g = impl->weights.p;
  const dnnl_dim_t lda = (dnnl_dim_t)OH * OW * CO, ldb = (dnnl_dim_t)s->h * s->w * CI;
  const dnnl_dim_t ldc = (dnnl_dim_t)taps * CI;
  for (int ky = 0; ky < s->kh; ky++)
    for (int kx = 0; kx < s->kw; kx++) {
      const int tap = ky * s->kw + kx;
      float *c = g + (size_t)tap * CI;
      int first = 1;
      for (int oy = 0; oy < OH; oy++) {
        const int iy = oy * s->stride - s->pad + ky * s->dilation;
        if (iy < 0 || iy >= s->h) continue;
        for (int ox = 0; ox < OW; ox++) {
          const int ix = ox * s->stride - s->pad + kx * s->dilation;
          if (ix < 0 || ix >= s->w) continue;
          CONV_DNNL(dnnl_sgemm('T', 'N', CO, CI, s->n, 1.0f, dy + ((size_t)oy * OW + ox) * CO,
                               lda, x + ((size_t)iy * s->w + ix) * CI, ldb, first ? 0.0f : 1.0f,
                               c, ldc));
          first = 0;
        }
      }
      if (first)
        for (int co = 0; co < CO; co++) memset(c + (size_t)co * ldc, 0, (size_t)CI * sizeof *c);
    }
#pragma omp parallel for schedule(static) num_threads(impl->threads)
  for (int co = 0; co < CO; co++) {
    const float *gc = g + (size_t)co * taps * CI;
    float *dc = dw + (size_t)co * CI * taps;
    for (int ci = 0; ci < CI; ci++)
      for (int tap = 0; tap < taps; tap++) dc[(size_t)ci * taps + tap] += gc[(size_t)tap * CI + ci];
  }
  return NULL;
}

/* Points `prim_w` at the caller's OIHW weights, reordered into the primitive's layout. */
static dsc_status *weights_prepare(cpu_impl *impl, cpu_conv_entry *e, cpu_prim *reorder,
                                   dnnl_memory_t reordered, const float *w,
                                   dnnl_memory_t *prim_w) {
  DSC_TRY(bind(e->w_mem, w));
  if (!reorder->prim) {
    *prim_w = e->w_mem;
    return NULL;
  }
  DSC_TRY(bind(reordered, impl->weights.p));
  dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, e->w_mem}, {DNNL_ARG_TO, reordered}};
  DSC_TRY(prim_run(impl, reorder, 2, args));
  *prim_w = reordered;
  return NULL;
}

dsc_status *cpu_conv2d_forward(dsc_backend *be, const dsc_conv_shape *s, float *y,
                               const float *x, const float *w, const float *b) {
  DSC_TRY(backend_check_conv2d_forward(s, y, x, w));
  cpu_impl *impl = cpu_impl_of(be);
  cpu_threads_enter(impl);
  cpu_conv_entry *e = NULL;
  DSC_TRY(entry_get(impl, s, b != NULL, &e));
  dnnl_memory_t wm = NULL;
  DSC_TRY(weights_prepare(impl, e, &e->fwd_reorder, e->fwd_w_mem, w, &wm));
  DSC_TRY(bind(e->x_mem, x));
  DSC_TRY(bind(e->y_mem, y));
  dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, e->x_mem},
                             {DNNL_ARG_WEIGHTS, wm},
                             {DNNL_ARG_DST, e->y_mem},
                             {DNNL_ARG_BIAS, e->b_mem}};
  int nargs = 3;
  if (b) {
    DSC_TRY(bind(e->b_mem, b));
    nargs = 4;
  }
  DSC_TRY(prim_run(impl, &e->fwd, nargs, args));
  CONV_DNNL(dnnl_stream_wait(impl->stream));
  return NULL;
}

dsc_status *cpu_conv2d_backward(dsc_backend *be, const dsc_conv_shape *s, float *dx,
                                float *dw, float *db, const float *dy, const float *x,
                                const float *w) {
  DSC_TRY(backend_check_conv2d_backward(s, dx, dw, dy, x, w));
  cpu_impl *impl = cpu_impl_of(be);
  cpu_threads_enter(impl);
  cpu_conv_entry *e = NULL;
  DSC_TRY(entry_get(impl, s, db != NULL && dw != NULL, &e));

  if (dx) {
    DSC_TRY(entry_part_ensure(impl, e, &e->have_bwd_data, entry_bwd_data_init,
                              entry_bwd_data_free));
    dnnl_memory_t wm = NULL;
    DSC_TRY(weights_prepare(impl, e, &e->bwd_reorder, e->bwd_w_mem, w, &wm));
    DSC_TRY(bind(e->y_mem, dy));
    DSC_TRY(bind(e->dx_mem, dx));
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_DIFF_DST, e->y_mem},
                               {DNNL_ARG_WEIGHTS, wm},
                               {DNNL_ARG_DIFF_SRC, e->dx_mem}};
    DSC_TRY(prim_run(impl, &e->bwd_data, 3, args));
  }

  if (dw && conv_dw_by_taps_wins(s)) {
    DSC_TRY(conv_dw_by_taps(impl, s, dw, dy, x));
    if (db) DSC_TRY(conv_bias_grad(impl, s, db, dy));
  } else if (dw) {
    DSC_TRY(entry_part_ensure(impl, e, &e->have_bwd_weights, entry_bwd_weights_init,
                              entry_bwd_weights_free));
    DSC_TRY(bind(e->x_mem, x));
    DSC_TRY(bind(e->y_mem, dy));
    DSC_TRY(bind(e->dw_tmp_mem, impl->weights.p));
    dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, e->x_mem},
                               {DNNL_ARG_DIFF_DST, e->y_mem},
                               {DNNL_ARG_DIFF_WEIGHTS, e->dw_tmp_mem},
                               {DNNL_ARG_DIFF_BIAS, e->db_tmp_mem}};
    DSC_TRY(prim_run(impl, &e->bwd_weights, db ? 4 : 3, args));
    DSC_TRY(bind(e->dw_mem, dw));
    dnnl_exec_arg_t racc[2] = {{DNNL_ARG_FROM, e->dw_tmp_mem}, {DNNL_ARG_TO, e->dw_mem}};
    DSC_TRY(prim_run(impl, &e->dw_reorder, 2, racc));
    if (db) {
      CONV_DNNL(dnnl_stream_wait(impl->stream));
      void *h = NULL;
      CONV_DNNL(dnnl_memory_get_data_handle(e->db_tmp_mem, &h));
      const float *tmp = h;
      for (int o = 0; o < s->c_out; o++) db[o] += tmp[o];
    }
  } else if (db) {
    DSC_TRY(conv_bias_grad(impl, s, db, dy));
  }
  CONV_DNNL(dnnl_stream_wait(impl->stream));
  return NULL;
}
