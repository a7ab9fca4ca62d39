/* bench_ops.c: micro-benchmark of the CPU backend's ops on the layers of one ResNet
 * training step (forward + backward), reported as milliseconds per op type, plus the
 * hand-written batch norm against oneDNN's batch normalization on the same shapes, and the
 * FCN segmentation head's ops (resize, channel scale, softmax cross-entropy) once each.
 * Not part of `make test`; built by hand (see docs/performance.md, "CPU ops"):
 *
 *   make build/libdsc.a
 *   cc -O3 -march=native -std=c11 -D_GNU_SOURCE -fopenmp -Iinclude -Isrc bench/bench_ops.c \
 *      build/libdsc.a -ldnnl -lm -o build/bench_ops
 *   build/bench_ops [--arch resnet50|resnet18] [--size 224] [--batch 8] [--threads 2] [--reps 5]
 *
 * Every op of every layer runs `reps` times after one warm-up call (which creates the
 * oneDNN primitives); the minimum is kept, because on a shared machine the minimum is the
 * time the op needs and everything above it is other processes. Totals multiply each
 * layer by how often it occurs in the network. Inputs are random; timings do not depend on
 * values. */
#include <dnnl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/backend.h"

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void die_if(dsc_status *st, const char *what) {
  if (!st) return;
  fprintf(stderr, "bench_ops: %s: %s\n", what, st->msg);
  exit(1);
}

/* ---- the layers of a ResNet, with multiplicities ---- */

typedef struct layer {
  dsc_conv_shape conv;
  int count;    /* how many times this (conv, bn) pair occurs */
  int residual; /* its BN adds a residual (last conv of a block) */
  int relu;     /* its BN ends with ReLU (all but the downsample) */
} layer;

static int add_layer(layer *ls, int n_ls, dsc_conv_shape c, int count, int residual, int relu) {
  for (int i = 0; i < n_ls; i++)
    if (!memcmp(&ls[i].conv, &c, sizeof c) && ls[i].residual == residual && ls[i].relu == relu) {
      ls[i].count += count;
      return n_ls;
    }
  ls[n_ls] = (layer){c, count, residual, relu};
  return n_ls + 1;
}

/* torchvision ResNet-18/50 (v1.5), standard stem, input n x size x size. */
static int resnet_layers(int depth, int n, int size, layer *ls) {
  int k = 0, hw = size / 2;
  k = add_layer(ls, k, (dsc_conv_shape){n, size, size, 3, 64, 7, 7, 2, 3, 1}, 1, 0, 1);
  hw = (hw + 2 - 3) / 2 + 1; /* max-pool 3x3/2 pad 1 */
  const int blocks18[4] = {2, 2, 2, 2}, blocks50[4] = {3, 4, 6, 3};
  int in_c = 64;
  for (int stage = 0; stage < 4; stage++) {
    const int width = 64 << stage, stride = stage ? 2 : 1;
    const int nb = depth == 50 ? blocks50[stage] : blocks18[stage];
    for (int b = 0; b < nb; b++) {
      const int s = b == 0 ? stride : 1, ohw = (hw - 1) / s + 1;
      if (depth == 50) {
        const int out_c = 4 * width;
        k = add_layer(ls, k, (dsc_conv_shape){n, hw, hw, in_c, width, 1, 1, 1, 0, 1}, 1, 0, 1);
        k = add_layer(ls, k, (dsc_conv_shape){n, hw, hw, width, width, 3, 3, s, 1, 1}, 1, 0, 1);
        k = add_layer(ls, k, (dsc_conv_shape){n, ohw, ohw, width, out_c, 1, 1, 1, 0, 1}, 1, 1, 1);
        if (b == 0)
          k = add_layer(ls, k, (dsc_conv_shape){n, hw, hw, in_c, out_c, 1, 1, s, 0, 1}, 1, 0, 0);
        in_c = out_c;
      } else {
        k = add_layer(ls, k, (dsc_conv_shape){n, hw, hw, in_c, width, 3, 3, s, 1, 1}, 1, 0, 1);
        k = add_layer(ls, k, (dsc_conv_shape){n, ohw, ohw, width, width, 3, 3, 1, 1, 1}, 1, 1, 1);
        if (b == 0 && (s != 1 || in_c != width))
          k = add_layer(ls, k, (dsc_conv_shape){n, hw, hw, in_c, width, 1, 1, s, 0, 1}, 1, 0, 0);
        in_c = width;
      }
      hw = ohw;
    }
  }
  return k;
}

/* ---- oneDNN batch normalization, for comparison ---- */

typedef struct onednn_bn {
  dnnl_primitive_t fwd, bwd;
  dnnl_memory_t data, dst, diff_dst, diff_src, scale, shift, dscale, dshift, mean, var, ws;
} onednn_bn;

#define DNNL_OK(call)                                                        \
  do {                                                                       \
    dnnl_status_t st_ = (call);                                              \
    if (st_ != dnnl_success) {                                               \
      fprintf(stderr, "bench_ops: %s failed (%d)\n", #call, (int)st_);       \
      exit(1);                                                               \
    }                                                                        \
  } while (0)

static void onednn_bn_make(dnnl_engine_t eng, int n, int h, int w, int c, int relu,
                           onednn_bn *b) {
  dnnl_memory_desc_t md, cmd;
  dnnl_dims_t d = {n, c, h, w}, cd = {c};
  DNNL_OK(dnnl_memory_desc_init_by_tag(&md, 4, d, dnnl_f32, dnnl_nhwc));
  DNNL_OK(dnnl_memory_desc_init_by_tag(&cmd, 1, cd, dnnl_f32, dnnl_x));
  unsigned flags = dnnl_use_scale | dnnl_use_shift | (relu ? dnnl_fuse_norm_relu : 0);
  dnnl_batch_normalization_desc_t fd, bd;
  DNNL_OK(dnnl_batch_normalization_forward_desc_init(&fd, dnnl_forward_training, &md, 1e-5f, flags));
  dnnl_primitive_desc_t fpd, bpd;
  DNNL_OK(dnnl_primitive_desc_create(&fpd, &fd, NULL, eng, NULL));
  DNNL_OK(dnnl_batch_normalization_backward_desc_init(&bd, dnnl_backward, &md, &md, 1e-5f, flags));
  DNNL_OK(dnnl_primitive_desc_create(&bpd, &bd, NULL, eng, fpd));
  DNNL_OK(dnnl_primitive_create(&b->fwd, fpd));
  DNNL_OK(dnnl_primitive_create(&b->bwd, bpd));
  dnnl_memory_t *ms[] = {&b->data, &b->dst, &b->diff_dst, &b->diff_src};
  for (int i = 0; i < 4; i++) DNNL_OK(dnnl_memory_create(ms[i], &md, eng, DNNL_MEMORY_ALLOCATE));
  dnnl_memory_t *cs[] = {&b->scale, &b->shift, &b->dscale, &b->dshift, &b->mean, &b->var};
  for (int i = 0; i < 6; i++) DNNL_OK(dnnl_memory_create(cs[i], &cmd, eng, DNNL_MEMORY_ALLOCATE));
  b->ws = NULL;
  if (relu) {
    const dnnl_memory_desc_t *wmd = dnnl_primitive_desc_query_md(fpd, dnnl_query_workspace_md, 0);
    DNNL_OK(dnnl_memory_create(&b->ws, wmd, eng, DNNL_MEMORY_ALLOCATE));
  }
  void *h_scale, *h_var;
  DNNL_OK(dnnl_memory_get_data_handle(b->scale, &h_scale));
  DNNL_OK(dnnl_memory_get_data_handle(b->var, &h_var));
  for (int i = 0; i < c; i++) ((float *)h_scale)[i] = 1.0f, ((float *)h_var)[i] = 1.0f;
  void *hd;
  DNNL_OK(dnnl_memory_get_data_handle(b->data, &hd));
  for (size_t i = 0; i < (size_t)n * h * w * c; i++) ((float *)hd)[i] = (float)(i % 7) - 3.0f;
  DNNL_OK(dnnl_memory_get_data_handle(b->diff_dst, &hd));
  for (size_t i = 0; i < (size_t)n * h * w * c; i++) ((float *)hd)[i] = (float)(i % 5) - 2.0f;
  dnnl_primitive_desc_destroy(fpd);
  dnnl_primitive_desc_destroy(bpd);
}

static void onednn_bn_free(onednn_bn *b) {
  dnnl_primitive_destroy(b->fwd);
  dnnl_primitive_destroy(b->bwd);
  dnnl_memory_t ms[] = {b->data, b->dst, b->diff_dst, b->diff_src, b->scale, b->shift,
                        b->dscale, b->dshift, b->mean, b->var, b->ws};
  for (int i = 0; i < 11; i++)
    if (ms[i]) dnnl_memory_destroy(ms[i]);
}

static void onednn_bn_forward(dnnl_stream_t s, onednn_bn *b) {
  dnnl_exec_arg_t a[] = {{DNNL_ARG_SRC, b->data},     {DNNL_ARG_DST, b->dst},
                         {DNNL_ARG_SCALE, b->scale},  {DNNL_ARG_SHIFT, b->shift},
                         {DNNL_ARG_MEAN, b->mean},    {DNNL_ARG_VARIANCE, b->var},
                         {DNNL_ARG_WORKSPACE, b->ws}};
  DNNL_OK(dnnl_primitive_execute(b->fwd, s, b->ws ? 7 : 6, a));
  DNNL_OK(dnnl_stream_wait(s));
}

static void onednn_bn_backward(dnnl_stream_t s, onednn_bn *b) {
  dnnl_exec_arg_t a[] = {{DNNL_ARG_SRC, b->data},          {DNNL_ARG_DIFF_DST, b->diff_dst},
                         {DNNL_ARG_SCALE, b->scale},       {DNNL_ARG_SHIFT, b->shift},
                         {DNNL_ARG_MEAN, b->mean},         {DNNL_ARG_VARIANCE, b->var},
                         {DNNL_ARG_DIFF_SRC, b->diff_src}, {DNNL_ARG_DIFF_SCALE, b->dscale},
                         {DNNL_ARG_DIFF_SHIFT, b->dshift}, {DNNL_ARG_WORKSPACE, b->ws}};
  DNNL_OK(dnnl_primitive_execute(b->bwd, s, b->ws ? 10 : 9, a));
  DNNL_OK(dnnl_stream_wait(s));
}

/* ---- timing ---- */

enum { T_CONV_FWD, T_CONV_BWD_DATA, T_CONV_BWD_W, T_BN_FWD, T_BN_BWD, T_DNNL_BN_FWD,
       T_DNNL_BN_BWD, T_ADD, T_RELU_BWD, T_COUNT };
static const char *t_names[T_COUNT] = {
    "conv forward",        "conv backward data", "conv backward weights (+= dw)",
    "bn forward (fused)",  "bn backward (fused)", "oneDNN bn forward (+relu)",
    "oneDNN bn backward (+relu)", "residual add (oneDNN path)", "relu backward (oneDNN path)"};

#define TIME_MIN(dst, reps, stmt)                   \
  do {                                              \
    stmt;                                           \
    double best_ = 1e30;                            \
    for (int r_ = 0; r_ < (reps); r_++) {           \
      double t0_ = now_s();                         \
      stmt;                                         \
      double t1_ = now_s() - t0_;                   \
      if (t1_ < best_) best_ = t1_;                 \
    }                                               \
    (dst) = best_;                                  \
  } while (0)

static float *falloc(dsc_backend *be, size_t n) {
  void *p = NULL;
  die_if(be->alloc(be, n * sizeof(float), &p), "alloc");
  float *f = p;
  for (size_t i = 0; i < n; i++) f[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1.0f;
  return f;
}

int main(int argc, char **argv) {
  const char *arch = "resnet50";
  int size = 224, batch = 8, threads = 2, reps = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--arch")) arch = argv[i + 1];
    else if (!strcmp(argv[i], "--size")) size = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--batch")) batch = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--reps")) reps = atoi(argv[i + 1]);
    else {
      fprintf(stderr, "bench_ops: unknown option %s\n", argv[i]);
      return 2;
    }
  }
  const int depth = !strcmp(arch, "resnet18") ? 18 : 50;
  dsc_backend *be = NULL;
  die_if(dsc_backend_cpu_new(threads, &be), "cpu backend");
  dnnl_engine_t eng;
  dnnl_stream_t strm;
  DNNL_OK(dnnl_engine_create(&eng, dnnl_cpu, 0));
  DNNL_OK(dnnl_stream_create(&strm, eng, dnnl_stream_default_flags));

  layer ls[64];
  const int n_ls = resnet_layers(depth, batch, size, ls);
  double total[T_COUNT] = {0};
  size_t n_params = 0;
  printf("%s %dx%d batch %d, %d threads, min of %d reps, ms per call (x count)\n", arch, size,
         size, batch, threads, reps);
  printf("%-44s %5s %8s %8s %8s %8s %8s %8s %8s\n", "layer", "count", "c.fwd", "c.bwd_d",
         "c.bwd_w", "bn.fwd", "bn.bwd", "dnnl.f", "dnnl.b");
  for (int i = 0; i < n_ls; i++) {
    const dsc_conv_shape *s = &ls[i].conv;
    const int oh = dsc_conv_oh(s), ow = dsc_conv_ow(s);
    const size_t nx = (size_t)s->n * s->h * s->w * s->c_in, ny = (size_t)s->n * oh * ow * s->c_out;
    const size_t nw = (size_t)s->c_out * s->c_in * s->kh * s->kw;
    float *x = falloc(be, nx), *w = falloc(be, nw), *y = falloc(be, ny), *dy = falloc(be, ny);
    float *dx = falloc(be, nx), *dw = falloc(be, nw);
    double t[T_COUNT] = {0};
    TIME_MIN(t[T_CONV_FWD], reps, die_if(be->conv2d_forward(be, s, y, x, w, NULL), "conv fwd"));
    if (s->c_in != 3) /* a network never needs the gradient of its input image */
      TIME_MIN(t[T_CONV_BWD_DATA], reps,
               die_if(be->conv2d_backward(be, s, dx, NULL, NULL, dy, x, w), "conv bwd data"));
    TIME_MIN(t[T_CONV_BWD_W], reps,
             die_if(be->conv2d_backward(be, s, NULL, dw, NULL, dy, x, w), "conv bwd w"));
    /* BN on the conv output, one group, fused as in the network */
    dsc_bn_shape bs = {s->n, oh, ow, s->c_out, 1, 1e-5f, ls[i].relu};
    float *g = falloc(be, s->c_out), *bt = falloc(be, s->c_out), *mean = falloc(be, s->c_out);
    float *var = falloc(be, s->c_out), *res = ls[i].residual ? falloc(be, ny) : NULL;
    float *bn_y = falloc(be, ny), *dg = falloc(be, s->c_out), *db = falloc(be, s->c_out);
    float *dres = ls[i].residual ? falloc(be, ny) : NULL, *bn_dx = falloc(be, ny);
    TIME_MIN(t[T_BN_FWD], reps,
             die_if(be->bn_forward_train(be, &bs, bn_y, mean, var, y, g, bt, res), "bn fwd"));
    TIME_MIN(t[T_BN_BWD], reps,
             die_if(be->bn_backward(be, &bs, bn_dx, dg, db, dres, dy, y, bn_y, g, mean, var), "bn bwd"));
    /* oneDNN: BN (+ fused ReLU); a residual needs a separate add before the ReLU, so the
     * residual layers run BN without ReLU, then add, then ReLU (and its backward). */
    onednn_bn ob;
    onednn_bn_make(eng, s->n, oh, ow, s->c_out, ls[i].relu && !ls[i].residual, &ob);
    TIME_MIN(t[T_DNNL_BN_FWD], reps, onednn_bn_forward(strm, &ob));
    TIME_MIN(t[T_DNNL_BN_BWD], reps, onednn_bn_backward(strm, &ob));
    if (ls[i].residual) {
      TIME_MIN(t[T_ADD], reps, die_if(be->add_inplace(be, bn_y, res, ny), "add"));
      double relu_f = 0;
      TIME_MIN(relu_f, reps, die_if(be->relu_forward(be, bn_y, bn_y, ny), "relu"));
      t[T_ADD] += relu_f;
      TIME_MIN(t[T_RELU_BWD], reps, die_if(be->relu_backward(be, bn_dx, dy, bn_y, ny), "relu bwd"));
    }
    onednn_bn_free(&ob);
    char name[64];
    snprintf(name, sizeof name, "%dx%dx%d->%d k%d s%d%s", s->h, s->w, s->c_in, s->c_out, s->kh,
             s->stride, ls[i].residual ? " +res" : "");
    printf("%-44s %5d %8.2f %8.2f %8.2f %8.2f %8.2f %8.2f %8.2f\n", name, ls[i].count,
           1e3 * t[T_CONV_FWD], 1e3 * t[T_CONV_BWD_DATA], 1e3 * t[T_CONV_BWD_W],
           1e3 * t[T_BN_FWD], 1e3 * t[T_BN_BWD], 1e3 * (t[T_DNNL_BN_FWD] + t[T_ADD]),
           1e3 * (t[T_DNNL_BN_BWD] + t[T_RELU_BWD]));
    for (int k = 0; k < T_COUNT; k++) total[k] += ls[i].count * t[k];
    n_params += (size_t)ls[i].count * (nw + 2 * (size_t)s->c_out);
    float *bufs[] = {x, w, y, dy, dx, dw, g, bt, mean, var, res, bn_y, dg, db, dres, bn_dx};
    for (int k = 0; k < 16; k++)
      if (bufs[k]) be->free(be, bufs[k]);
  }
  /* the rest of a step: stem max-pool, global average pool, SGD and EMA over all
   * parameters (the fc layer is not part of the backbone) */
  double t_pool = 0, t_pool_b = 0, t_gap = 0, t_sgd = 0, t_ema = 0, t_zero = 0;
  {
    const int ph = size / 2;
    dsc_pool_shape ps = {batch, ph, ph, 64, 3, 2, 1};
    const int po = dsc_conv_out_size(ph, 3, 2, 1, 1);
    const size_t npx = (size_t)batch * ph * ph * 64, npy = (size_t)batch * po * po * 64;
    float *px = falloc(be, npx), *py = falloc(be, npy), *pdx = falloc(be, npx);
    int32_t *am = NULL;
    die_if(be->alloc(be, npy * sizeof *am, (void **)&am), "alloc");
    TIME_MIN(t_pool, reps, die_if(be->maxpool_forward(be, &ps, py, am, px), "maxpool"));
    TIME_MIN(t_pool_b, reps, die_if(be->maxpool_backward(be, &ps, pdx, py, am), "maxpool bwd"));
    const int c5 = depth == 50 ? 2048 : 512, hw5 = (size + 31) / 32;
    float *g5 = falloc(be, (size_t)batch * hw5 * hw5 * c5), *gy = falloc(be, (size_t)batch * c5);
    double tg = 0;
    TIME_MIN(t_gap, reps, die_if(be->gap_forward(be, batch, hw5 * hw5, c5, gy, g5), "gap"));
    TIME_MIN(tg, reps, die_if(be->gap_backward(be, batch, hw5 * hw5, c5, g5, gy), "gap bwd"));
    t_gap += tg;
    float *p = falloc(be, n_params), *g = falloc(be, n_params), *m = falloc(be, n_params);
    float *sh = falloc(be, n_params);
    TIME_MIN(t_sgd, reps, die_if(be->sgd_step(be, n_params, p, g, m, 0.03f, 0.9f, 1e-4f, 1), "sgd"));
    TIME_MIN(t_ema, reps, die_if(be->ema(be, n_params, sh, p, 0.999f), "ema"));
    TIME_MIN(t_zero, reps, die_if(be->zero(be, g, n_params), "zero"));
    float *bufs[] = {px, py, pdx, g5, gy, p, g, m, sh};
    for (int k = 0; k < 9; k++) be->free(be, bufs[k]);
    be->free(be, am);
  }
  /* the FCN segmentation head's own ops (not part of the pretraining step; METHOD.md §7):
   * 21-class logits at stride 8 resized to the input, Dropout2d on 512 channels at stride 8,
   * softmax cross-entropy over every pixel (every 10th ignored) */
  double t_rs = 0, t_rs_b = 0, t_cs = 0, t_ce = 0;
  {
    const int s8 = (size + 7) / 8, ncls = 21, cd = 512;
    const size_t nlo = (size_t)batch * s8 * s8 * ncls, nhi = (size_t)batch * size * size * ncls;
    const size_t ncd = (size_t)batch * s8 * s8 * cd, npix = (size_t)batch * size * size;
    float *lo = falloc(be, nlo), *hi = falloc(be, nhi), *dhi = falloc(be, nhi);
    float *dlo = falloc(be, nlo), *fx = falloc(be, ncd), *fy = falloc(be, ncd);
    float *sc = falloc(be, (size_t)batch * cd), *loss = falloc(be, 1);
    uint8_t *lab = NULL;
    die_if(be->alloc(be, npix, (void **)&lab), "alloc");
    for (size_t k = 0; k < npix; k++) lab[k] = k % 10 == 9 ? 255 : (uint8_t)(k % ncls);
    TIME_MIN(t_rs, reps, die_if(be->resize_bilinear_forward(be, batch, s8, s8, ncls, size, size,
                                                            hi, lo), "resize"));
    TIME_MIN(t_rs_b, reps, die_if(be->resize_bilinear_backward(be, batch, s8, s8, ncls, size,
                                                               size, dlo, dhi), "resize bwd"));
    TIME_MIN(t_cs, reps, die_if(be->channel_scale(be, batch, s8 * s8, cd, fy, fx, sc), "chscale"));
    TIME_MIN(t_ce, reps, die_if(be->softmax_ce(be, (int64_t)npix, ncls, hi, lab, 255,
                                               1.0f / (float)npix, loss, dhi), "softmax_ce"));
    float *bufs[] = {lo, hi, dhi, dlo, fx, fy, sc, loss};
    for (int k = 0; k < 8; k++) be->free(be, bufs[k]);
    be->free(be, lab);
  }
  printf("\ntotals per training step (ms):\n");
  for (int k = 0; k < T_COUNT; k++) printf("  %-34s %9.1f\n", t_names[k], 1e3 * total[k]);
  printf("  %-34s %9.1f\n", "conv total",
         1e3 * (total[T_CONV_FWD] + total[T_CONV_BWD_DATA] + total[T_CONV_BWD_W]));
  printf("  %-34s %9.1f\n", "bn total (ours, fused)", 1e3 * (total[T_BN_FWD] + total[T_BN_BWD]));
  printf("  %-34s %9.1f\n", "bn total (oneDNN + add/relu)",
         1e3 * (total[T_DNNL_BN_FWD] + total[T_DNNL_BN_BWD] + total[T_ADD] + total[T_RELU_BWD]));
  printf("  %-34s %9.1f\n", "max-pool forward + backward", 1e3 * (t_pool + t_pool_b));
  printf("  %-34s %9.1f\n", "global avg pool fwd + bwd", 1e3 * t_gap);
  printf("  %-34s %9.1f   (%zu parameters)\n", "sgd step (nesterov, wd)", 1e3 * t_sgd, n_params);
  printf("  %-34s %9.1f\n", "ema (momentum encoder)", 1e3 * t_ema);
  printf("  %-34s %9.1f\n", "zero gradients", 1e3 * t_zero);
  printf("\nFCN head ops, once per step (ms; not in the totals above):\n");
  printf("  %-34s %9.2f\n", "resize_bilinear forward (x8, 21 ch)", 1e3 * t_rs);
  printf("  %-34s %9.2f\n", "resize_bilinear backward", 1e3 * t_rs_b);
  printf("  %-34s %9.2f\n", "channel_scale (512 ch)", 1e3 * t_cs);
  printf("  %-34s %9.2f\n", "softmax_ce (21 classes, dlogits)", 1e3 * t_ce);
  dnnl_stream_destroy(strm);
  dnnl_engine_destroy(eng);
  be->destroy(be);
  return 0;
}
