/* epoch_order.c: the per-epoch Fisher-Yates permutation of the dataset (epoch_order.h). */
#include "data/epoch_order.h"

#include "dsc/rng.h"

void dsc_epoch_permutation(uint64_t seed, uint32_t epoch, size_t n, uint32_t *out) {
  for (size_t i = 0; i < n; i++) out[i] = (uint32_t)i;
  for (size_t i = n > 0 ? n - 1 : 0; i > 0; i--) {
    double u = dsc_rng_uniform(seed, DSC_RNG_SHUFFLE, epoch, (uint32_t)i, 0);
    size_t j = (size_t)(u * (double)(i + 1));
    if (j > i) j = i;
    uint32_t t = out[i];
    out[i] = out[j];
    out[j] = t;
  }
}
