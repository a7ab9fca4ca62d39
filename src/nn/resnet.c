/* resnet.c: torchvision ResNet-18/34/50 over the backend op table (include/dsc/resnet.h).
 *
 * The network is a list of units (conv without bias + BatchNorm, with the block's residual
 * add and the ReLU fused into the BN op) wired into residual blocks. Forward keeps, per
 * unit, the conv output z (BN input) and the BN output y; backward walks blocks in reverse
 * with four work buffers the size of the largest activation:
 *   P  gradient of the current block's output, overwritten in place by the gradient of
 *      its input (so the chain needs no copies),
 *   S1 gradient of a conv output (BN backward result),
 *   S2 gradient reaching the residual branch,
 *   S3 gradient of an inner activation (conv backward result).
 *
 * Strides and dilations per layer come from the layout (0 = standard, see resnet.h); every
 * unit records its own stride, padding and dilation, and the activation plan derives every
 * map size from them, so dilated variants need nothing else.
 */
#include "dsc/resnet.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsc/rng.h"

struct dsc_resnet_unit {
  char name[80];            /* e.g. "layer1.0.conv1" (its BN is the matching "bn1") */
  int c_in, c_out, k, stride, pad, dilation;
  int relu;                 /* ReLU after BN (+ residual) */
  size_t w_off, gamma_off, beta_off, mean_off, var_off;
  /* plan */
  dsc_conv_shape conv;      /* with n, h, w of the current plan */
  dsc_bn_shape bn;
  float *z, *y;             /* conv output, BN output: (n, oh, ow, c_out) */
  float *save_mean, *save_var; /* [groups * c_out] */
  const float *in;          /* the conv input of the last forward */
  const float *residual;    /* added before the ReLU, or NULL */
};

struct dsc_resnet_block {
  int conv1, conv2, conv3; /* unit indices; conv3 = -1 for basic blocks */
  int down;                /* downsample unit or -1 */
};

enum { STEM_UNIT = 0 };

static const int blocks_per_layer[3][4] = {{2, 2, 2, 2}, {3, 4, 6, 3}, {3, 4, 6, 3}};
static const int standard_strides[4] = {1, 2, 2, 2};
enum { MAX_DILATION = 16 };

/* The layout with every 0 (and a NULL layout) replaced by the standard value. */
static dsc_resnet_layout layout_effective(const dsc_resnet_layout *l) {
  dsc_resnet_layout e;
  for (int i = 0; i < 4; i++) {
    e.strides[i] = l && l->strides[i] ? l->strides[i] : standard_strides[i];
    e.dilations[i] = l && l->dilations[i] ? l->dilations[i] : 1;
  }
  return e;
}

/* Dilation of block `b` of a layer with dilation d: mmseg's contract_dilation (first block d/2). */
static int block_dilation(int d, int b) {
  return (b == 0 && d > 1) ? d / 2 : d;
}

void dsc_resnet_layout_dilated8(dsc_resnet_layout *l) {
  *l = (dsc_resnet_layout){{1, 2, 1, 1}, {1, 1, 2, 4}};
}

int dsc_resnet_feature_side(const dsc_resnet_config *cfg, const dsc_resnet_layout *layout,
                            int level, int size) {
  dsc_resnet_layout e = layout_effective(layout);
  int s = size;
  if (cfg->small_stem) {
    s = dsc_conv_out_size(s, 3, 1, 1, 1);
  } else {
    s = dsc_conv_out_size(s, 7, 2, 3, 1);
    s = dsc_conv_out_size(s, 3, 2, 1, 1);
  }
  for (int l = 0; l <= level && l < 4 && s >= 1; l++) {
    /* The first block's 3x3 conv sets the size (padding = dilation keeps it stride-only). */
    int d = block_dilation(e.dilations[l], 0);
    s = dsc_conv_out_size(s, 3, e.strides[l], d, d);
  }
  return s;
}

/* Rejects strides/dilations out of range and dilated basic blocks. */
static dsc_status *layout_check(const dsc_resnet_config *cfg, const dsc_resnet_layout *l) {
  for (int i = 0; l && i < 4; i++) {
    if (l->strides[i] < 0 || l->strides[i] > 2)
      return dsc_errorf("ResNet layer%d: stride %d (1 or 2; 0 = standard)", i + 1, l->strides[i]);
    if (l->dilations[i] < 0 || l->dilations[i] > MAX_DILATION)
      return dsc_errorf("ResNet layer%d: dilation %d (1..%d; 0 = standard)", i + 1,
                        l->dilations[i], MAX_DILATION);
    if (cfg->depth != 50 && l->dilations[i] > 1)
      return dsc_errorf("ResNet layer%d: dilation %d needs bottleneck blocks (resnet50); "
                        "resnet%d's basic blocks support dilation 1 only (as in torchvision)",
                        i + 1, l->dilations[i], cfg->depth);
  }
  return NULL;
}

int dsc_resnet_depth_from_name(const char *arch) {
  if (strcmp(arch, "resnet18") == 0) return 18;
  if (strcmp(arch, "resnet34") == 0) return 34;
  if (strcmp(arch, "resnet50") == 0) return 50;
  return 0;
}

/* Registers conv `conv_name`.weight and BN `bn_name`.{weight,bias,running_mean,running_var}. */
static dsc_status *add_unit(dsc_resnet *net, dsc_table *table, const char *prefix,
                            const char *conv_name, const char *bn_name, int c_in, int c_out,
                            int k, int stride, int dilation, int relu) {
  dsc_resnet_unit *u = &net->units[net->n_units++];
  memset(u, 0, sizeof *u);
  snprintf(u->name, sizeof u->name, "%s", conv_name);
  /* k = 1: no padding; k = 3: padding = dilation (same size at stride 1); the 7x7 stem: 3. */
  int pad = dilation * (k - 1) / 2;
  u->c_in = c_in, u->c_out = c_out, u->k = k, u->stride = stride, u->pad = pad;
  u->dilation = dilation, u->relu = relu;
  char name[160];
  int64_t wshape[4] = {c_out, c_in, k, k}, cshape[1] = {c_out};
  snprintf(name, sizeof name, "%s%s.weight", prefix, conv_name);
  DSC_TRY(dsc_table_add(table, name, DSC_ROLE_PARAM, DSC_KIND_CONV_WEIGHT, 4, wshape, &u->w_off));
  snprintf(name, sizeof name, "%s%s.weight", prefix, bn_name);
  DSC_TRY(dsc_table_add(table, name, DSC_ROLE_PARAM, DSC_KIND_BN_WEIGHT, 1, cshape, &u->gamma_off));
  snprintf(name, sizeof name, "%s%s.bias", prefix, bn_name);
  DSC_TRY(dsc_table_add(table, name, DSC_ROLE_PARAM, DSC_KIND_BN_BIAS, 1, cshape, &u->beta_off));
  snprintf(name, sizeof name, "%s%s.running_mean", prefix, bn_name);
  DSC_TRY(dsc_table_add(table, name, DSC_ROLE_BUFFER, DSC_KIND_BN_MEAN, 1, cshape, &u->mean_off));
  snprintf(name, sizeof name, "%s%s.running_var", prefix, bn_name);
  DSC_TRY(dsc_table_add(table, name, DSC_ROLE_BUFFER, DSC_KIND_BN_VAR, 1, cshape, &u->var_off));
  return NULL;
}

dsc_status *dsc_resnet_init(dsc_resnet *net, dsc_backend *be, const dsc_resnet_config *cfg,
                            dsc_table *table, const char *prefix) {
  return dsc_resnet_init_layout(net, be, cfg, NULL, table, prefix);
}

dsc_status *dsc_resnet_init_layout(dsc_resnet *net, dsc_backend *be, const dsc_resnet_config *cfg,
                                   const dsc_resnet_layout *layout, dsc_table *table,
                                   const char *prefix) {
  memset(net, 0, sizeof *net);
  int row = cfg->depth == 18 ? 0 : cfg->depth == 34 ? 1 : cfg->depth == 50 ? 2 : -1;
  if (row < 0) return dsc_errorf("model.arch: unsupported ResNet depth %d (18, 34 or 50)", cfg->depth);
  DSC_TRY(layout_check(cfg, layout));
  net->be = be;
  net->cfg = *cfg;
  net->layout = layout_effective(layout);
  int bottleneck = cfg->depth == 50, expansion = bottleneck ? 4 : 1;
  net->units = calloc(64, sizeof *net->units);
  net->blocks = calloc(20, sizeof *net->blocks);
  if (!net->units || !net->blocks) return dsc_errorf("out of memory building a ResNet");

  if (cfg->small_stem)
    DSC_TRY(add_unit(net, table, prefix, "conv1", "bn1", 3, 64, 3, 1, 1, 1));
  else
    DSC_TRY(add_unit(net, table, prefix, "conv1", "bn1", 3, 64, 7, 2, 1, 1));

  int in_ch = 64;
  for (int layer = 0; layer < 4; layer++) {
    int planes = 64 << layer;
    int layer_stride = net->layout.strides[layer], layer_dil = net->layout.dilations[layer];
    for (int b = 0; b < blocks_per_layer[row][layer]; b++) {
      int stride = b == 0 ? layer_stride : 1, dil = block_dilation(layer_dil, b);
      dsc_resnet_block *blk = &net->blocks[net->n_blocks++];
      char conv[64], bn[64];
#define UNIT_NAMES(i)                                                    \
  snprintf(conv, sizeof conv, "layer%d.%d.conv%d", layer + 1, b, (i)); \
  snprintf(bn, sizeof bn, "layer%d.%d.bn%d", layer + 1, b, (i))
      if (bottleneck) {
        UNIT_NAMES(1);
        blk->conv1 = net->n_units;
        DSC_TRY(add_unit(net, table, prefix, conv, bn, in_ch, planes, 1, 1, 1, 1));
        UNIT_NAMES(2);
        blk->conv2 = net->n_units;
        DSC_TRY(add_unit(net, table, prefix, conv, bn, planes, planes, 3, stride, dil, 1));
        UNIT_NAMES(3);
        blk->conv3 = net->n_units;
        DSC_TRY(add_unit(net, table, prefix, conv, bn, planes, planes * 4, 1, 1, 1, 1));
      } else {
        UNIT_NAMES(1);
        blk->conv1 = net->n_units;
        DSC_TRY(add_unit(net, table, prefix, conv, bn, in_ch, planes, 3, stride, dil, 1));
        UNIT_NAMES(2);
        blk->conv2 = net->n_units;
        DSC_TRY(add_unit(net, table, prefix, conv, bn, planes, planes, 3, 1, dil, 1));
        blk->conv3 = -1;
      }
#undef UNIT_NAMES
      blk->down = -1;
      if (stride != 1 || in_ch != planes * expansion) {
        snprintf(conv, sizeof conv, "layer%d.%d.downsample.0", layer + 1, b);
        snprintf(bn, sizeof bn, "layer%d.%d.downsample.1", layer + 1, b);
        blk->down = net->n_units;
        DSC_TRY(add_unit(net, table, prefix, conv, bn, in_ch, planes * expansion, 1, stride, 1, 0));
      }
      in_ch = planes * expansion;
    }
    net->layer_end[layer] = net->n_blocks;
  }
  net->out_channels = in_ch;
  return NULL;
}

void dsc_resnet_bind(dsc_resnet *net, float *params, float *grads, float *buffers) {
  net->params = params;
  net->grads = grads;
  net->buffers = buffers;
}

static void release_plan(dsc_resnet *net) {
  if (net->arena && !net->arena_borrowed) net->be->free(net->be, net->arena);
  net->arena_borrowed = 0;
  for (int i = 0; i < 4; i++)
    if (net->scratch[i]) net->be->free(net->be, net->scratch[i]);
  net->arena = NULL;
  memset(net->scratch, 0, sizeof net->scratch);
  net->plan_n = net->plan_h = net->plan_w = 0;
}

void dsc_resnet_free(dsc_resnet *net) {
  if (net->be) release_plan(net);
  free(net->units);
  free(net->blocks);
  memset(net, 0, sizeof *net);
}

void dsc_resnet_init_weights(const dsc_resnet *net, const dsc_table *table, uint64_t seed,
                             float *host_params, float *host_buffers) {
  for (int i = 0; i < net->n_units; i++) {
    const dsc_resnet_unit *u = &net->units[i];
    /* kaiming_normal_(mode="fan_out", nonlinearity="relu"): std = sqrt(2 / (c_out*k*k)) */
    size_t numel = (size_t)u->c_out * u->c_in * u->k * u->k;
    double std = sqrt(2.0 / ((double)u->c_out * u->k * u->k));
    /* The conv's own name keys its stream, so the draw does not depend on the prefix. */
    uint32_t key = dsc_fnv1a32(u->name);
    /* Parallel and still deterministic: each element's draw depends only on its counter. */
#pragma omp parallel for schedule(static)
    for (size_t e = 0; e < numel; e++)
      host_params[u->w_off + e] =
          (float)(std * dsc_rng_normal(seed, DSC_RNG_INIT, key, (uint32_t)e, 0));
    for (int c = 0; c < u->c_out; c++) {
      host_params[u->gamma_off + c] = 1.0f;
      host_params[u->beta_off + c] = 0.0f;
      host_buffers[u->mean_off + c] = 0.0f;
      host_buffers[u->var_off + c] = 1.0f;
    }
  }
  (void)table;
}

/* Lays out every activation of a forward over (n, h, w) in one arena. */
static dsc_status *plan(dsc_resnet *net, int n, int h, int w, int groups) {
  if (net->plan_n == n && net->plan_h == h && net->plan_w == w && net->last_groups == groups)
    return NULL;
  release_plan(net);
  size_t total = 0, max_act = 0;
  int ch, cw;
  /* Shapes follow the wiring: the stem, then each block from the block input. */
  dsc_resnet_unit *stem = &net->units[STEM_UNIT];
  stem->conv = (dsc_conv_shape){n, h, w, 3, 64, stem->k, stem->k, stem->stride, stem->pad,
                                stem->dilation};
  ch = dsc_conv_oh(&stem->conv), cw = dsc_conv_ow(&stem->conv);
  if (ch < 1 || cw < 1) return dsc_errorf("input %dx%d is too small for this ResNet", h, w);
  int bh = ch, bw = cw; /* block input size */
  if (!net->cfg.small_stem) {
    bh = dsc_conv_out_size(ch, 3, 2, 1, 1);
    bw = dsc_conv_out_size(cw, 3, 2, 1, 1);
  }
  for (int b = 0; b < net->n_blocks; b++) {
    dsc_resnet_block *blk = &net->blocks[b];
    int ids[4] = {blk->conv1, blk->conv2, blk->conv3, blk->down};
    int uh = bh, uw = bw;
    for (int j = 0; j < 3; j++) {
      if (ids[j] < 0) continue;
      dsc_resnet_unit *u = &net->units[ids[j]];
      u->conv = (dsc_conv_shape){n,      uh,     uw,       u->c_in,  u->c_out,
                                 u->k,   u->k,   u->stride, u->pad,  u->dilation};
      uh = dsc_conv_oh(&u->conv), uw = dsc_conv_ow(&u->conv);
      if (uh < 1 || uw < 1) return dsc_errorf("input %dx%d is too small for this ResNet", h, w);
    }
    if (blk->down >= 0) {
      dsc_resnet_unit *u = &net->units[blk->down];
      u->conv = (dsc_conv_shape){n, bh, bw, u->c_in, u->c_out, 1, 1, u->stride, 0, u->dilation};
    }
    bh = uh, bw = uw;
  }
  for (int i = 0; i < net->n_units; i++) {
    dsc_resnet_unit *u = &net->units[i];
    int oh = dsc_conv_oh(&u->conv), ow = dsc_conv_ow(&u->conv);
    size_t act = (size_t)n * oh * ow * u->c_out;
    u->bn = (dsc_bn_shape){n, oh, ow, u->c_out, groups, 1e-5f, u->relu};
    total += 2 * act + 2 * (size_t)groups * u->c_out;
    if (act > max_act) max_act = act;
  }
  /* Max-pool output and its argmax. */
  size_t pool_out = 0;
  if (!net->cfg.small_stem) {
    int oh = dsc_conv_oh(&stem->conv), ow = dsc_conv_ow(&stem->conv);
    pool_out = (size_t)n * dsc_conv_out_size(oh, 3, 2, 1, 1) * dsc_conv_out_size(ow, 3, 2, 1, 1) * 64;
    total += 2 * pool_out; /* floats + int32 argmax (same size) */
  }
  /* Each slice rounded to 16 floats to keep 64-byte alignment. */
  total += (size_t)(net->n_units * 4 + 2) * 16;
  void *arena = NULL;
  DSC_TRY(net->be->alloc(net->be, total * sizeof(float), &arena));
  float *p = arena;
#define TAKE(count) (p += (((count) + 15) & ~(size_t)15), p - (((count) + 15) & ~(size_t)15))
  for (int i = 0; i < net->n_units; i++) {
    dsc_resnet_unit *u = &net->units[i];
    size_t act = (size_t)u->bn.n * u->bn.h * u->bn.w * u->bn.c;
    u->z = TAKE(act);
    u->y = TAKE(act);
    u->save_mean = TAKE((size_t)groups * u->c_out);
    u->save_var = TAKE((size_t)groups * u->c_out);
  }
  net->arena = arena;
  net->pool_y = NULL;
  if (pool_out) {
    net->pool_y = TAKE(pool_out);
    net->pool_argmax = (int32_t *)TAKE(pool_out);
  }
#undef TAKE
  net->pool_numel = pool_out;
  net->max_act = max_act;
  net->plan_n = n, net->plan_h = h, net->plan_w = w;
  net->last_groups = groups;
  return NULL;
}

dsc_status *dsc_resnet_borrow_activations(dsc_resnet *net, dsc_resnet *owner, int n, int h, int w,
                                          int bn_groups) {
  if (net->cfg.depth != owner->cfg.depth || net->cfg.small_stem != owner->cfg.small_stem ||
      net->n_units != owner->n_units || memcmp(&net->layout, &owner->layout, sizeof net->layout))
    return dsc_errorf("ResNet activations borrowed across different architectures");
  DSC_TRY(plan(owner, n, h, w, bn_groups));
  if (net->arena_borrowed && net->arena == owner->arena && net->plan_n == n && net->plan_h == h &&
      net->plan_w == w && net->last_groups == bn_groups)
    return NULL;
  release_plan(net);
  for (int i = 0; i < net->n_units; i++) {
    dsc_resnet_unit *u = &net->units[i];
    const dsc_resnet_unit *o = &owner->units[i];
    u->conv = o->conv;
    u->bn = o->bn;
    u->z = o->z;
    u->y = o->y;
    u->save_mean = o->save_mean;
    u->save_var = o->save_var;
  }
  net->pool_y = owner->pool_y;
  net->pool_argmax = owner->pool_argmax;
  net->pool_numel = owner->pool_numel;
  net->max_act = owner->max_act;
  net->arena = owner->arena;
  net->arena_borrowed = 1;
  net->plan_n = n, net->plan_h = h, net->plan_w = w;
  net->last_groups = bn_groups;
  return NULL;
}

static dsc_status *unit_forward(dsc_resnet *net, dsc_resnet_unit *u, const float *in,
                                const float *residual, int train) {
  dsc_backend *be = net->be;
  u->in = in;
  u->residual = residual;
  DSC_TRY(be->conv2d_forward(be, &u->conv, u->z, in, net->params + u->w_off, NULL));
  const float *gamma = net->params + u->gamma_off, *beta = net->params + u->beta_off;
  float *rmean = net->buffers + u->mean_off, *rvar = net->buffers + u->var_off;
  if (!train)
    return be->bn_forward_eval(be, &u->bn, u->y, u->z, gamma, beta, rmean, rvar, residual);
  DSC_TRY(be->bn_forward_train(be, &u->bn, u->y, u->save_mean, u->save_var, u->z, gamma, beta,
                               residual));
  return be->bn_update_running(be, &u->bn, rmean, rvar, u->save_mean, u->save_var, 0.1f);
}

dsc_status *dsc_resnet_forward(dsc_resnet *net, const float *x, int n, int h, int w, int train,
                               int bn_groups, dsc_resnet_features *out) {
  if (n < 1 || h < 1 || w < 1) return dsc_errorf("ResNet forward: empty input %dx%dx%d", n, h, w);
  if (train && (bn_groups < 1 || n % bn_groups != 0))
    return dsc_errorf("method.bn_groups=%d does not divide the batch of %d images", bn_groups, n);
  if (!train) bn_groups = 1;
  DSC_TRY(plan(net, n, h, w, bn_groups));
  if (train) {
    /* Every BN layer must see more than one value per channel in each group. */
    for (int i = 0; i < net->n_units; i++) {
      const dsc_bn_shape *s = &net->units[i].bn;
      if ((size_t)(s->n / s->groups) * s->h * s->w <= 1)
        return dsc_errorf("BatchNorm %s sees %d value(s) per channel per group (batch %d, %d "
                          "group(s), %dx%d map): need more than 1",
                          net->units[i].name, (s->n / s->groups) * s->h * s->w, n, s->groups,
                          s->h, s->w);
    }
  }
  dsc_backend *be = net->be;
  dsc_resnet_unit *stem = &net->units[STEM_UNIT];
  DSC_TRY(unit_forward(net, stem, x, NULL, train));
  const float *cur = stem->y;
  if (!net->cfg.small_stem) {
    net->pool = (dsc_pool_shape){n, stem->bn.h, stem->bn.w, 64, 3, 2, 1};
    DSC_TRY(be->maxpool_forward(be, &net->pool, net->pool_y, net->pool_argmax, cur));
    cur = net->pool_y;
  }
  int layer = 0;
  for (int b = 0; b < net->n_blocks; b++) {
    dsc_resnet_block *blk = &net->blocks[b];
    const float *identity = cur;
    if (blk->down >= 0) {
      DSC_TRY(unit_forward(net, &net->units[blk->down], cur, NULL, train));
      identity = net->units[blk->down].y;
    }
    dsc_resnet_unit *u1 = &net->units[blk->conv1], *u2 = &net->units[blk->conv2];
    DSC_TRY(unit_forward(net, u1, cur, NULL, train));
    if (blk->conv3 >= 0) {
      DSC_TRY(unit_forward(net, u2, u1->y, NULL, train));
      dsc_resnet_unit *u3 = &net->units[blk->conv3];
      DSC_TRY(unit_forward(net, u3, u2->y, identity, train));
      cur = u3->y;
    } else {
      DSC_TRY(unit_forward(net, u2, u1->y, identity, train));
      cur = u2->y;
    }
    if (b + 1 == net->layer_end[layer]) {
      const dsc_resnet_unit *last = &net->units[blk->conv3 >= 0 ? blk->conv3 : blk->conv2];
      if (out) {
        out->c[layer] = cur;
        out->h[layer] = last->bn.h;
        out->w[layer] = last->bn.w;
        out->channels[layer] = last->bn.c;
      }
      layer++;
    }
  }
  if (out) out->n = n;
  if (train) net->num_batches_tracked++;
  net->last_train = train;
  net->last_input = x;
  return NULL;
}

/* Backward of one unit: from dy (gradient of its output y) writes the gradient of its conv
 * input into dx (NULL: skip), the residual's gradient into dres (if it had one), using dz
 * as work space for the gradient of the conv output. */
static dsc_status *unit_backward(dsc_resnet *net, dsc_resnet_unit *u, float *dx, float *dres,
                                 float *dz, const float *dy) {
  dsc_backend *be = net->be;
  DSC_TRY(be->bn_backward(be, &u->bn, dz, net->grads + u->gamma_off, net->grads + u->beta_off,
                          u->residual ? dres : NULL, dy, u->z, u->y, net->params + u->gamma_off,
                          u->save_mean, u->save_var));
  return be->conv2d_backward(be, &u->conv, dx, net->grads + u->w_off, NULL, dz, u->in,
                             net->params + u->w_off);
}

dsc_status *dsc_resnet_backward(dsc_resnet *net, const float *dc5) {
  if (!net->plan_n || !net->last_train)
    return dsc_errorf("ResNet backward without a training forward before it");
  if (!net->grads) return dsc_errorf("ResNet backward on a network bound without gradients");
  dsc_backend *be = net->be;
  for (int i = 0; i < 4; i++)
    if (!net->scratch[i])
      DSC_TRY(be->alloc(be, net->max_act * sizeof(float), (void **)&net->scratch[i]));
  float *P = net->scratch[0], *S1 = net->scratch[1], *S2 = net->scratch[2], *S3 = net->scratch[3];

  const dsc_resnet_block *lastb = &net->blocks[net->n_blocks - 1];
  const dsc_resnet_unit *last = &net->units[lastb->conv3 >= 0 ? lastb->conv3 : lastb->conv2];
  size_t c5 = (size_t)last->bn.n * last->bn.h * last->bn.w * last->bn.c;
  /* P <- dc5 (a copy through add on a zeroed buffer keeps the op table small). */
  DSC_TRY(be->zero(be, P, c5));
  DSC_TRY(be->add_inplace(be, P, dc5, c5));

  for (int b = net->n_blocks - 1; b >= 0; b--) {
    const dsc_resnet_block *blk = &net->blocks[b];
    dsc_resnet_unit *u1 = &net->units[blk->conv1], *u2 = &net->units[blk->conv2];
    /* S2 <- gradient of the residual branch; P <- gradient of the block input. */
    if (blk->conv3 >= 0) {
      dsc_resnet_unit *u3 = &net->units[blk->conv3];
      DSC_TRY(unit_backward(net, u3, S3, S2, S1, P));
      DSC_TRY(unit_backward(net, u2, P, NULL, S1, S3));
      DSC_TRY(unit_backward(net, u1, S3, NULL, S1, P));
    } else {
      DSC_TRY(unit_backward(net, u2, S3, S2, S1, P));
      DSC_TRY(unit_backward(net, u1, P, NULL, S1, S3));
    }
    size_t in_numel = (size_t)u1->conv.n * u1->conv.h * u1->conv.w * u1->conv.c_in;
    if (blk->conv3 >= 0) { /* bottleneck: u1's dx landed in S3; make it P */
      float *t = P;
      P = S3;
      S3 = t;
    }
    if (blk->down >= 0) {
      dsc_resnet_unit *d = &net->units[blk->down];
      DSC_TRY(unit_backward(net, d, S3, NULL, S1, S2));
      DSC_TRY(be->add_inplace(be, P, S3, in_numel));
    } else {
      DSC_TRY(be->add_inplace(be, P, S2, in_numel));
    }
  }
  dsc_resnet_unit *stem = &net->units[STEM_UNIT];
  const float *dstem = P;
  if (!net->cfg.small_stem) {
    DSC_TRY(be->maxpool_backward(be, &net->pool, S1, P, net->pool_argmax));
    dstem = S1;
  }
  float *dz = dstem == S1 ? S3 : S1;
  return unit_backward(net, stem, NULL, NULL, dz, dstem);
}
