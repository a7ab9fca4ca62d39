/* detectron2.h: the .pkl weight files that detectron2's DetectionCheckpointer reads.
 *
 * The file is a pickle (protocol 4, written by hand, no Python) of
 *   {"model": {name: numpy.ndarray}, "__author__": author, "matching_heuristics": True,
 *    "dsc": {key: value}}
 * with the arrays in the order of `src` and the string metadata of `src` under "dsc".
 * Arrays are C-contiguous little-endian numpy arrays of the tensor's dtype and shape, built
 * the way numpy pickles them (numpy.core.multiarray._reconstruct + BUILD), so that
 * pickle.load(f, encoding="latin1") gives them back exactly. Saved atomically.
 *
 * Names: dsc_detectron2_name maps a torchvision ResNet key to detectron2's ResNet backbone
 * name (as MoCo's and DenseCL's convert-pretrain-to-detectron2 scripts do): conv1/bn1 ->
 * stem.conv1[.norm], layerN -> res(N+1), bnK -> convK.norm, downsample.0 -> shortcut,
 * downsample.1 -> shortcut.norm. detectron2 matches these to backbone.bottom_up.* by its
 * name-matching heuristics.
 */
#ifndef DSC_DETECTRON2_H
#define DSC_DETECTRON2_H

#include <stddef.h>

#include "dsc/safetensors.h"

/* Writes `out` (capacity cap). Errors name keys that have no detectron2 counterpart (fc.*,
 * num_batches_tracked -- detectron2's frozen BN has none -- and anything not a ResNet key). */
dsc_status *dsc_detectron2_name(const char *torchvision_key, char *out, size_t cap);

/* Writes every tensor of `src` under its name, as described above. */
dsc_status *dsc_detectron2_write(const char *path, const dsc_safetensors *src, const char *author);

#endif
