/* rng.h: the counter-based random number generator (Philox4x32-10).
 *
 * Every random draw in dsc is a pure function of (seed, purpose, counter words): the same
 * key gives the same numbers whatever the thread count, process count or call order
 * (DESIGN.md practice 7). There is no generator state to save in checkpoints beyond the
 * seed and the step/epoch indices that form the counters.
 */
#ifndef DSC_RNG_H
#define DSC_RNG_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Purposes keep independent streams apart. Append new ones at the end (values are part of
 * the reproducibility contract). */
typedef enum dsc_rng_purpose {
  DSC_RNG_INIT = 1,        /* parameter initialization: (tensor name hash, element) */
  DSC_RNG_QUEUE_INIT = 2,  /* queue columns */
  DSC_RNG_SHUFFLE = 3,     /* per-epoch permutation of the dataset */
  DSC_RNG_AUGMENT = 4,     /* (epoch, image, view) augmentation draws */
  DSC_RNG_SHUFFLE_BN = 5,  /* key-batch permutation of each step */
  DSC_RNG_KMEANS = 6,      /* k-means initialization */
  DSC_RNG_BENCH = 7,       /* synthetic benchmark inputs */
  DSC_RNG_SCENES = 8,      /* scene generator: (split, scene index, draw) */
  DSC_RNG_SEG_AUGMENT = 9, /* segmentation training augmentation: (epoch, image, draw) */
  DSC_RNG_DROPOUT = 10,    /* fine-tuning dropout masks: (step, image, channel) */
} dsc_rng_purpose;

/* Philox4x32-10 on a 128-bit counter with a 64-bit key; writes 4 uniformly distributed words. */
void dsc_philox4x32(uint64_t key, const uint32_t counter[4], uint32_t out[4]);

/* Uniform float in [0,1) with 24 random bits from one word. */
static inline float dsc_rng_u01(uint32_t word) { return (float)(word >> 8) * (1.0f / 16777216.0f); }

/* One standard-normal draw (Box-Muller, double precision internally) for counter
 * (purpose, a, b, c) under `seed`. */
double dsc_rng_normal(uint64_t seed, uint32_t purpose, uint32_t a, uint32_t b, uint32_t c);

/* One uniform double in [0,1) (53 bits) for counter (purpose, a, b, c). */
double dsc_rng_uniform(uint64_t seed, uint32_t purpose, uint32_t a, uint32_t b, uint32_t c);

/* FNV-1a 32-bit hash of a string: turns tensor names into counter words. */
uint32_t dsc_fnv1a32(const char *s);

#ifdef __cplusplus
}
#endif

#endif
