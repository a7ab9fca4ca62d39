/* resnet.h: torchvision's ResNet-18/34/50 backbones (v1.5: stride on the 3x3 conv of the
 * bottleneck), forward and backward over the backend op table, activations NHWC.
 *
 * The network registers its tensors, with torchvision's state_dict names behind a prefix,
 * into a caller's dsc_table (so a whole training model shares one blob per role), and is
 * then bound to blob base pointers. Two instances bound to different blobs with the same
 * table (online and momentum encoders) share the layout. Each instance owns its activation
 * memory, planned for the last (n, h, w) it saw. No fc layer: the backbone ends at C5.
 *
 * `stem=small` (METHOD.md §1): conv1 is 3x3 stride 1 padding 1 without bias and there is no
 * max-pool, for small images (output stride 8 instead of 32).
 *
 * Dilated variants (segmentation backbones, e.g. mmsegmentation's FCN-R50-D8) are built by
 * dsc_resnet_init_layout: `strides[l]` and `dilations[l]` of a dsc_resnet_layout set layer l+1's
 * stride (its first block's 3x3 conv and its downsample 1x1 conv) and the dilation of its 3x3
 * convs (padding = dilation, so a stride-1 conv keeps the map size). With d = dilations[l] > 1
 * the first block of the layer uses d/2 and the others d (mmseg's contract_dilation=True; for
 * strides 1,2,1,1 and dilations 1,1,2,4 this is exactly torchvision's
 * resnet50(replace_stride_with_dilation=[False, True, True])). 0 means the standard value
 * (strides 1,2,2,2, dilation 1). Dilation > 1 needs bottleneck blocks (resnet50): like
 * torchvision, basic blocks refuse it. The tensors (names, shapes) do not depend on the layout,
 * so a plain ResNet's weights load into a dilated one unchanged.
 *
 * The layout is a separate struct, not part of dsc_resnet_config, because existing callers
 * declare a config without an initializer and fill only depth and stem (the CLI's
 * synthetic_parse_model) or initialize it positionally (-Wmissing-field-initializers):
 * new config fields would be garbage or warnings there.
 */
#ifndef DSC_RESNET_H
#define DSC_RESNET_H

#include <stdint.h>

#include "backend/backend.h"
#include "dsc/params.h"

typedef struct dsc_resnet_config {
  int depth;      /* 18, 34 or 50 */
  int small_stem; /* 0 = standard 7x7/2 conv + 3x3/2 max-pool, 1 = small */
} dsc_resnet_config;

/* Per-layer strides and dilations (see the top of this file); all 0 = the standard ResNet. */
typedef struct dsc_resnet_layout {
  int strides[4];   /* layer1..layer4: 1 or 2; 0 = standard (1, 2, 2, 2) */
  int dilations[4]; /* layer1..layer4: 1..16; 0 = standard (1); first block at d/2 */
} dsc_resnet_layout;

/* Fills `l` with strides 1,2,1,1 and dilations 1,1,2,4: output stride 8 with the standard stem
 * (mmseg's "D8" backbones, torchvision's replace_stride_with_dilation=[False, True, True]). */
void dsc_resnet_layout_dilated8(dsc_resnet_layout *l);

/* Side of C(level+2) (level 0..3 = C2..C5) for an input side `size` (layout NULL = standard),
 * or < 1 if the input is too small: the same arithmetic as the network's activation plan. */
int dsc_resnet_feature_side(const dsc_resnet_config *cfg, const dsc_resnet_layout *layout,
                            int level, int size);

typedef struct dsc_resnet_unit dsc_resnet_unit;   /* one conv + BN (+ residual) (+ ReLU) */
typedef struct dsc_resnet_block dsc_resnet_block; /* one residual block */

/* C2..C5 of the last forward: NHWC pointers into the network's activation memory, valid
 * until the next forward. */
typedef struct dsc_resnet_features {
  const float *c[4];
  int h[4], w[4], channels[4];
  int n;
} dsc_resnet_features;

typedef struct dsc_resnet {
  dsc_backend *be;
  dsc_resnet_config cfg;
  dsc_resnet_layout layout; /* effective values (no 0 entries) */
  int out_channels; /* channels of C5: 512 (18/34) or 2048 (50) */

  int n_units, n_blocks;
  dsc_resnet_unit *units;   /* in torchvision's registration order */
  dsc_resnet_block *blocks;
  int layer_end[4];         /* index one past the last block of layer1..layer4 */

  /* Blob base pointers (backend memory) set by dsc_resnet_bind. grads may be NULL for a
   * network that is never differentiated (momentum encoder, evaluation). */
  float *params, *grads, *buffers;
  int64_t num_batches_tracked; /* training forwards so far (every BN's counter) */

  /* Activation plan for (n, h, w, groups); rebuilt when they change. */
  int plan_n, plan_h, plan_w;
  void *arena;                 /* one backend allocation for every saved activation */
  int arena_borrowed;          /* arena belongs to another network (dsc_resnet_borrow_activations) */
  float *scratch[4];           /* backward work buffers (allocated on first backward) */
  float *pool_y;               /* stem max-pool output (standard stem) */
  int32_t *pool_argmax;
  size_t pool_numel;
  dsc_pool_shape pool;
  size_t max_act;              /* floats in the largest activation */
  int last_train;              /* the last forward ran in training mode */
  int last_groups;
  const float *last_input;
} dsc_resnet;

/* Registers the network's tensors into `table` as `prefix` + torchvision name. The network
 * keeps `be` (not owned). */
dsc_status *dsc_resnet_init(dsc_resnet *net, dsc_backend *be, const dsc_resnet_config *cfg,
                            dsc_table *table, const char *prefix);
/* The same with per-layer strides and dilations (NULL = standard, = dsc_resnet_init). Fails on
 * a stride other than 0..2, a dilation other than 0..16, or a dilation > 1 in resnet18/34. */
dsc_status *dsc_resnet_init_layout(dsc_resnet *net, dsc_backend *be, const dsc_resnet_config *cfg,
                                   const dsc_resnet_layout *layout, dsc_table *table,
                                   const char *prefix);
void dsc_resnet_bind(dsc_resnet *net, float *params, float *grads, float *buffers);
void dsc_resnet_free(dsc_resnet *net);

/* torchvision's initialization of the network's own tensors in host blobs laid out by
 * `table`: conv kaiming-normal (fan_out, ReLU gain), BN gamma 1 beta 0, running mean 0,
 * var 1. Draws come from the counter-based RNG keyed by (seed, tensor name, element). */
void dsc_resnet_init_weights(const dsc_resnet *net, const dsc_table *table, uint64_t seed,
                             float *host_params, float *host_buffers);

/* Forward of x (n,h,w,3) NHWC. train: BN uses batch statistics of `bn_groups` groups of
 * consecutive images, updates running statistics (momentum 0.1) and saves what backward
 * needs; otherwise BN uses running statistics. */
dsc_status *dsc_resnet_forward(dsc_resnet *net, const float *x, int n, int h, int w, int train,
                               int bn_groups, dsc_resnet_features *out);

/* Makes `net` run its next forwards of (n, h, w, bn_groups) in `owner`'s activation memory
 * (planning the owner for that shape), so a network whose activations are not needed after its
 * forward — the momentum encoder, whose C5 is copied out at once — costs no memory of its own.
 * Both must have the same architecture. The owner's saved activations are overwritten by such a
 * forward; `net` must not be differentiated; the owner must not be re-planned for another shape
 * while `net` uses the memory (call this again before each forward; it is free when nothing
 * changed). */
dsc_status *dsc_resnet_borrow_activations(dsc_resnet *net, dsc_resnet *owner, int n, int h, int w,
                                          int bn_groups);

/* Backward of the last training forward from the gradient of C5 (n,h5,w5,C) NHWC.
 * Accumulates (+=) into the gradient blob; `dc5` is not modified. */
dsc_status *dsc_resnet_backward(dsc_resnet *net, const float *dc5);

/* Parses "resnet18|34|50" into a depth. Returns 0 if unknown. */
int dsc_resnet_depth_from_name(const char *arch);

#endif
