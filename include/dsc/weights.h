/* weights.h: moving a table's tensors between host blobs and safetensors files.
 *
 * Loading matches names exactly (after prefixes), checks every shape, and reports missing,
 * unexpected and mis-shaped tensors by name (a load report on stderr, one line per tensor, and
 * a summary in the error); anything but an exact match is an error unless partial loading is
 * allowed (then the report is printed and the rest keeps its initialization). torchvision extras that a backbone has no use for (`fc.*`,
 * `*.num_batches_tracked`) are never "unexpected".
 */
#ifndef DSC_WEIGHTS_H
#define DSC_WEIGHTS_H

#include <stdint.h>

#include "dsc/params.h"
#include "dsc/resnet.h"
#include "dsc/safetensors.h"

/* Loads the table entries whose names start with `table_prefix` from `f`, where the file
 * names them `file_prefix` + (the rest of the name). F32/F64/F16/BF16 are converted. */
dsc_status *dsc_weights_load(const dsc_safetensors *f, const dsc_table *table,
                             const char *table_prefix, const char *file_prefix,
                             float *host_params, float *host_buffers, int allow_partial);

/* Calls fn for each entry under `table_prefix` (parameters only when params_only), named
 * `file_prefix` + (the rest of the name), with its data in the host blobs; after each BN's
 * running_var, when num_batches_tracked is given, also "<bn>.num_batches_tracked" (I64 scalar
 * at *num_batches_tracked). Stops at fn's first error. The one walk behind dsc_weights_add and
 * the checkpoints of src/ssl/. */
typedef dsc_status *(*dsc_weights_fn)(void *ctx, const char *name, dsc_dtype dtype, int ndim,
                                      const int64_t *shape, void *data);
dsc_status *dsc_weights_for_each(const dsc_table *table, const char *table_prefix,
                                 const char *file_prefix, int params_only, float *host_params,
                                 float *host_buffers, int64_t *num_batches_tracked,
                                 dsc_weights_fn fn, void *ctx);

/* A dsc_weights_fn that adds each tensor to the dsc_st_writer passed as ctx. */
dsc_status *dsc_weights_writer_add_fn(void *ctx, const char *name, dsc_dtype dtype, int ndim,
                                      const int64_t *shape, void *data);

/* Adds the entries under `table_prefix` to writer `w` named `file_prefix` + rest, reading
 * host blobs (which must outlive the save). For each BN (an entry ending in
 * ".running_var") also adds "<bn>.num_batches_tracked" as an I64 scalar pointing at
 * `*num_batches_tracked`. */
dsc_status *dsc_weights_add(dsc_st_writer *w, const dsc_table *table, const char *table_prefix,
                            const char *file_prefix, const float *host_params,
                            const float *host_buffers, const int64_t *num_batches_tracked);

/* Opens any weights file dsc reads, told apart by its first bytes, not its name: safetensors
 * (dsc checkpoints and exports, torchvision/timm weights saved as safetensors) or a PyTorch
 * .pth/.pt checkpoint (include/dsc/pth.h), read into an in-memory safetensors file. */
dsc_status *dsc_weights_open(const char *path, dsc_safetensors **out);

/* Finds a ResNet backbone in `f` under one of the prefixes that dsc checkpoints, exports,
 * torchvision/timm weights and common training scripts use ("", "backbone.", "module.",
 * "module.encoder_q.", "encoder_q.0.", ...; weights.c lists them) and infers its
 * configuration: depth from the blocks present, stem from conv1's kernel. */
dsc_status *dsc_weights_detect_resnet(const dsc_safetensors *f, dsc_resnet_config *cfg,
                                      const char **file_prefix);
/* The same under one given prefix (e.g. "momentum.backbone."); an error when none is there. */
dsc_status *dsc_weights_detect_resnet_at(const dsc_safetensors *f, const char *prefix,
                                         dsc_resnet_config *cfg);

#endif
