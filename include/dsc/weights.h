/* weights.h: moving a table's tensors between host blobs and safetensors files.
 *
 * Loading matches names exactly (after prefixes), checks every shape, and reports missing,
 * unexpected and mis-shaped tensors by name; anything but an exact match is an error unless
 * partial loading is allowed. torchvision extras that a backbone has no use for (`fc.*`,
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

/* Adds the entries under `table_prefix` to writer `w` named `file_prefix` + rest, reading
 * host blobs (which must outlive the save). For each BN (an entry ending in
 * ".running_var") also adds "<bn>.num_batches_tracked" as an I64 scalar pointing at
 * `*num_batches_tracked`. */
dsc_status *dsc_weights_add(dsc_st_writer *w, const dsc_table *table, const char *table_prefix,
                            const char *file_prefix, const float *host_params,
                            const float *host_buffers, const int64_t *num_batches_tracked);

/* Finds a ResNet backbone in `f` under "" or "backbone." and infers its configuration:
 * depth from the blocks present, stem from conv1's kernel. */
dsc_status *dsc_weights_detect_resnet(const dsc_safetensors *f, dsc_resnet_config *cfg,
                                      const char **file_prefix);

#endif
