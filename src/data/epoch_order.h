/* epoch_order.h: the per-epoch image order shared by the pretraining loader (loader.c) and the
 * FCN fine-tuning feeder (seg_data.c); private to src/data/.
 */
#ifndef DSC_DATA_EPOCH_ORDER_H
#define DSC_DATA_EPOCH_ORDER_H

#include <stddef.h>
#include <stdint.h>

/* Epoch `epoch`'s permutation of 0 .. n-1 into out[n]: Fisher-Yates from the identity, for
 * i = n-1 .. 1, j = floor(u * (i + 1)) with u = dsc_rng_uniform(seed, DSC_RNG_SHUFFLE, epoch, i, 0)
 * (the rule documented in include/dsc/loader.h and include/dsc/seg_data.h). */
void dsc_epoch_permutation(uint64_t seed, uint32_t epoch, size_t n, uint32_t *out);

#endif
