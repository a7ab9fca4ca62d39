/* fast_exp.h: exp for float arguments <= 0 that the compiler vectorizes (branch-free, no
 * libm call), for the softmax weights over the queue (src/ssl/loss_contrast.c): ~10% of a
 * DenseCL step went to libm's scalar exp (docs/performance.md).
 *
 * exp(x) = 2^n * exp(r), n = round(x / ln 2), r = x - n ln 2 (ln 2 split in two parts, so r is
 * exact to float rounding), exp(r) on |r| <= ln2 / 2 by its degree-6 Taylor polynomial
 * (truncation error < 2.3e-8 relative, below float's 6e-8 rounding). Arguments below -87.3
 * (where 2^n would be subnormal) give 0; the callers subtract the row maximum first, so every
 * argument is <= 0 and the largest term is exactly 1. Measured against libm's exp in double:
 * max relative error 2.5e-7 (about 2 float ulps: the rounding of r and of the Horner steps) over
 * [-87, 0] (tests/test_ssl_contrast.c). */
#ifndef DSC_SSL_FAST_EXP_H
#define DSC_SSL_FAST_EXP_H

#include <stdint.h>
#include <string.h>

static inline float dsc_fast_exp_nonpos(float x) {
  const float log2e = 1.44269504088896341f;
  const float ln2_hi = 0.693145751953125f;       /* ln 2 to 16 bits: n * ln2_hi is exact */
  const float ln2_lo = 1.428606765330187045e-06f; /* ln 2 - ln2_hi */
  float xc = x > -87.0f ? x : -87.0f; /* a select (no libm fmaxf call), so the loop vectorizes */
  /* Round to nearest by the 1.5 * 2^23 trick (exact for |v| < 2^22; here |v| <= 126): a libm
   * roundf call would keep the loop from vectorizing. */
  const float shifter = 12582912.0f;
  float n = (xc * log2e + shifter) - shifter;
  float r = (xc - n * ln2_hi) - n * ln2_lo;
  float p = 1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 + r * (1.0f / 720))))));
  int32_t bits = ((int32_t)n + 127) * (1 << 23);
  float scale;
  memcpy(&scale, &bits, sizeof scale);
  return p * scale * (float)(x >= -87.0f);
}

#endif
