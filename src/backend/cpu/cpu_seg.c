/* cpu_seg.c: the CPU backend's segmentation-head ops (backend.h's "segmentation head";
 * conventions in cpu_ops.h): bilinear resize forward and backward, per-channel scale
 * (Dropout2d), softmax cross-entropy. OpenMP loops with static schedules, vectorized over
 * channels; the reference is ref_seg.c.
 *
 * Taps: each call first tabulates, per axis, the source taps of every output index (float
 * arithmetic as PyTorch and ref_seg.c: s = max((o + 0.5) * (in / out) - 0.5, 0), i0 = min(floor s,
 * in - 1), i1 = min(i0 + 1, in - 1), weights 1 - l, l with l = s - i0) in the work buffer.
 * Forward: one task per output row (image, Y); y = wy0 * (wx0 * x00 + wx1 * x01) +
 * wy1 * (wx0 * x10 + wx1 * x11) in float. Equal sizes copy.
 * Backward is a gather, not a scatter: one task per dx row (image, source row iy) sums, in
 * output order (Y, then X ascending), weight_y * weight_x * dy over the outputs whose taps
 * touch it. i0 is non-decreasing in the output index, so the outputs touching source index i
 * are the contiguous range with i0 in [i - 1, i] (tabulated as [lo, hi)). Threads own disjoint
 * dx rows: no atomics, and the result does not depend on the thread count.
 * Softmax cross-entropy: rows in fixed chunks of CE_CHUNK; per row max, float sum of expf,
 * loss = m + log(sum) - x[label] in double; each chunk's losses summed in double in row order,
 * the chunks' sums then added in chunk order, so the loss does not depend on the thread count
 * either. A label that is neither ignore nor < classes is reported (first such row). */
#include <math.h>
#include <omp.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "backend/cpu/cpu_ops.h"

#define SEG_PARALLEL_MIN ((size_t)1 << 15) /* fewer elements run on the calling thread */
#define CE_CHUNK 1024                      /* rows per partial loss sum */

/* One axis's taps: for output o, sources i0[o], i1[o] with weights 1 - l[o], l[o]; for source
 * i, the outputs touching it are [lo[i], hi[i]). */
typedef struct seg_axis {
  int *i0, *i1, *lo, *hi;
  float *l;
} seg_axis;

/* Smallest o in [0, out] with i0[o] >= t (out when none); i0 is non-decreasing. */
static int first_ge(const int *i0, int out, int t) {
  int a = 0, b = out;
  while (a < b) {
    const int mid = a + (b - a) / 2;
    if (i0[mid] >= t)
      b = mid;
    else
      a = mid + 1;
  }
  return a;
}

/* Fills ax (arrays at p, 3*out + 2*in words) for `in` -> `out`; returns the words used. */
static size_t seg_axis_fill(seg_axis *ax, int32_t *p, int in, int out) {
  ax->i0 = p;
  ax->i1 = p + out;
  ax->l = (float *)(void *)(p + 2 * (size_t)out);
  ax->lo = p + 3 * (size_t)out;
  ax->hi = p + 3 * (size_t)out + in;
  const float scale = (float)in / (float)out;
  for (int o = 0; o < out; o++) {
    float s = ((float)o + 0.5f) * scale - 0.5f;
    if (s < 0.0f) s = 0.0f;
    int a = (int)s;
    if (a > in - 1) a = in - 1;
    ax->i0[o] = a;
    ax->i1[o] = a < in - 1 ? a + 1 : a;
    ax->l[o] = s - (float)a;
  }
  for (int i = 0; i < in; i++) {
    ax->lo[i] = first_ge(ax->i0, out, i - 1);
    ax->hi[i] = first_ge(ax->i0, out, i + 1);
  }
  return 3 * (size_t)out + 2 * (size_t)in;
}

/* The weight of output o on source i (both taps may name i at the last source). */
static inline float seg_weight(const seg_axis *ax, int o, int i) {
  float v = 0.0f;
  if (ax->i0[o] == i) v += 1.0f - ax->l[o];
  if (ax->i1[o] == i) v += ax->l[o];
  return v;
}

/* Both axes' tables in the work buffer. */
static dsc_status *seg_tables(cpu_impl *impl, int h, int w, int oh, int ow, seg_axis *ry,
                              seg_axis *rx) {
  const size_t words = 3 * ((size_t)oh + ow) + 2 * ((size_t)h + w);
  void *buf = NULL;
  DSC_TRY(cpu_work_get(impl, words * sizeof(int32_t), &buf));
  int32_t *p = buf;
  p += seg_axis_fill(ry, p, h, oh);
  seg_axis_fill(rx, p, w, ow);
  return NULL;
}

/* dst = src over `rows` rows of `len` floats, rows split over the team. */
static void seg_copy(cpu_impl *impl, float *dst, const float *src, long long rows, size_t len) {
  const int T = (size_t)rows * len >= SEG_PARALLEL_MIN ? impl->threads : 1;
#pragma omp parallel for schedule(static) num_threads(T) if (T > 1)
  for (long long r = 0; r < rows; r++) memcpy(dst + (size_t)r * len, src + (size_t)r * len, len * 4);
}

dsc_status *cpu_resize_bilinear_forward(dsc_backend *be, int n, int h, int w, int c, int oh,
                                        int ow, float *y, const float *x) {
  DSC_TRY(backend_check_resize_bilinear("resize_bilinear_forward", n, h, w, c, oh, ow, y, x));
  cpu_impl *impl = cpu_impl_of(be);
  cpu_threads_enter(impl);
  if (oh == h && ow == w) {
    seg_copy(impl, y, x, (long long)n * h, (size_t)w * c);
    return NULL;
  }
  seg_axis ry, rx;
  DSC_TRY(seg_tables(impl, h, w, oh, ow, &ry, &rx));
  const long long rows = (long long)n * oh;
  const int T = (size_t)rows * ow * c >= SEG_PARALLEL_MIN ? impl->threads : 1;
#pragma omp parallel for schedule(static) num_threads(T) if (T > 1)
  for (long long r = 0; r < rows; r++) {
    const int i = (int)(r / oh), Y = (int)(r % oh);
    const float wy1 = ry.l[Y], wy0 = 1.0f - wy1;
    const float *r0 = x + ((size_t)i * h + ry.i0[Y]) * w * c;
    const float *r1 = x + ((size_t)i * h + ry.i1[Y]) * w * c;
    for (int X = 0; X < ow; X++) {
      const float wx1 = rx.l[X], wx0 = 1.0f - wx1;
      const float *restrict a = r0 + (size_t)rx.i0[X] * c, *restrict b = r0 + (size_t)rx.i1[X] * c;
      const float *restrict p = r1 + (size_t)rx.i0[X] * c, *restrict q = r1 + (size_t)rx.i1[X] * c;
      float *restrict o = y + ((size_t)r * ow + X) * c;
      #pragma omp simd
      for (int ch = 0; ch < c; ch++)
        o[ch] = wy0 * (wx0 * a[ch] + wx1 * b[ch]) + wy1 * (wx0 * p[ch] + wx1 * q[ch]);
    }
  }
  return NULL;
}

dsc_status *cpu_resize_bilinear_backward(dsc_backend *be, int n, int h, int w, int c, int oh,
                                         int ow, float *dx, const float *dy) {
  DSC_TRY(backend_check_resize_bilinear("resize_bilinear_backward", n, h, w, c, oh, ow, dx, dy));
  cpu_impl *impl = cpu_impl_of(be);
  cpu_threads_enter(impl);
  if (oh == h && ow == w) {
    seg_copy(impl, dx, dy, (long long)n * h, (size_t)w * c);
    return NULL;
  }
  seg_axis ry, rx;
  DSC_TRY(seg_tables(impl, h, w, oh, ow, &ry, &rx));
  const long long rows = (long long)n * h;
  const size_t work = (size_t)n * oh * ow * c + (size_t)n * h * w * c;
  const int T = work >= SEG_PARALLEL_MIN ? impl->threads : 1;
#pragma omp parallel for schedule(static) num_threads(T) if (T > 1)
  for (long long r = 0; r < rows; r++) {
    const int i = (int)(r / h), iy = (int)(r % h);
    float *restrict d = dx + (size_t)r * w * c;
    memset(d, 0, (size_t)w * c * sizeof *d);
    for (int Y = ry.lo[iy]; Y < ry.hi[iy]; Y++) {
      const float wy = seg_weight(&ry, Y, iy);
      const float *g = dy + ((size_t)i * oh + Y) * ow * c;
      for (int j = 0; j < w; j++) {
        float *restrict dj = d + (size_t)j * c;
        for (int X = rx.lo[j]; X < rx.hi[j]; X++) {
          const float wgt = wy * seg_weight(&rx, X, j);
          const float *restrict gx = g + (size_t)X * c;
          #pragma omp simd
          for (int ch = 0; ch < c; ch++) dj[ch] += wgt * gx[ch];
        }
      }
    }
  }
  return NULL;
}

/* y may alias x: each element reads its own x before writing (no restrict here). */
dsc_status *cpu_channel_scale(dsc_backend *be, int n, int hw, int c, float *y, const float *x,
                              const float *scale) {
  DSC_TRY(backend_check_channel_scale(n, hw, c, y, x, scale));
  cpu_impl *impl = cpu_impl_of(be);
  cpu_threads_enter(impl);
  const long long rows = (long long)n * hw;
  const int T = (size_t)rows * c >= SEG_PARALLEL_MIN ? impl->threads : 1;
#pragma omp parallel for schedule(static) num_threads(T) if (T > 1)
  for (long long r = 0; r < rows; r++) {
    const float *s = scale + (size_t)(r / hw) * c;
    const float *xr = x + (size_t)r * c;
    float *yr = y + (size_t)r * c;
    for (int ch = 0; ch < c; ch++) yr[ch] = xr[ch] * s[ch];
  }
  return NULL;
}

dsc_status *cpu_softmax_ce(dsc_backend *be, int64_t pixels, int classes, const float *logits,
                           const uint8_t *labels, int ignore, float grad_scale, float *loss_sum,
                           float *dlogits) {
  DSC_TRY(backend_check_softmax_ce(pixels, classes, logits, labels, ignore, loss_sum));
  cpu_impl *impl = cpu_impl_of(be);
  cpu_threads_enter(impl);
  if (pixels == 0) {
    loss_sum[0] = 0.0f;
    return NULL;
  }
  const int64_t chunks = (pixels + CE_CHUNK - 1) / CE_CHUNK;
  void *buf = NULL;
  DSC_TRY(cpu_work_get(impl, (size_t)chunks * (sizeof(double) + sizeof(int64_t)), &buf));
  double *part = buf;                        /* each chunk's loss sum */
  int64_t *bad = (int64_t *)(part + chunks); /* each chunk's first bad label row, or -1 */
  const int T = (size_t)pixels * classes >= SEG_PARALLEL_MIN ? impl->threads : 1;
#pragma omp parallel for schedule(static) num_threads(T) if (T > 1)
  for (int64_t k = 0; k < chunks; k++) {
    const int64_t r_lo = k * CE_CHUNK, r_hi = r_lo + CE_CHUNK < pixels ? r_lo + CE_CHUNK : pixels;
    double acc = 0.0;
    int64_t first_bad = -1;
    for (int64_t r = r_lo; r < r_hi; r++) {
      const float *row = logits + (size_t)r * classes;
      float *drow = dlogits ? dlogits + (size_t)r * classes : NULL;
      const int label = labels[r];
      if (label == ignore || label >= classes) {
        if (label != ignore && first_bad < 0) first_bad = r;
        if (drow) memset(drow, 0, (size_t)classes * sizeof *drow);
        continue;
      }
      float m = row[0];
      for (int j = 1; j < classes; j++) m = row[j] > m ? row[j] : m;
      float s = 0.0f;
      if (drow) {
        for (int j = 0; j < classes; j++) {
          const float e = expf(row[j] - m);
          drow[j] = e;
          s += e;
        }
        const float inv = 1.0f / s;
        #pragma omp simd
        for (int j = 0; j < classes; j++) drow[j] *= inv; /* p */
        drow[label] -= 1.0f;
        #pragma omp simd
        for (int j = 0; j < classes; j++) drow[j] *= grad_scale;
      } else {
        for (int j = 0; j < classes; j++) s += expf(row[j] - m);
      }
      acc += (double)m + log((double)s) - (double)row[label];
    }
    part[k] = acc;
    bad[k] = first_bad;
  }
  double total = 0.0;
  for (int64_t k = 0; k < chunks; k++) {
    if (bad[k] >= 0)
      return dsc_errorf("softmax_ce: labels[%lld] = %d is neither ignore (%d) nor < classes (%d)",
                        (long long)bad[k], (int)labels[bad[k]], ignore, classes);
    total += part[k];
  }
  loss_sum[0] = (float)total;
  return NULL;
}
