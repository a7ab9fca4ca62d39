/* cpu_elementwise.c: the CPU backend's ReLU and in-place add, memory-bound OpenMP loops
 * (conventions in cpu_ops.h and backend.h). Each thread owns one contiguous range of
 * elements; arrays shorter than CPU_EW_PARALLEL_MIN run on the calling thread, where
 * waking a team would cost more than the work. Element results match the reference
 * backend exactly (ReLU keeps NaN and maps -0 to 0; the gradient is zero where y <= 0). */
#include <omp.h>
#include <stddef.h>

#include "backend/cpu/cpu_ops.h"

#define CPU_EW_PARALLEL_MIN ((size_t)1 << 15)

static int ew_threads(cpu_impl *impl, size_t n) {
  cpu_threads_enter(impl);
  return n >= CPU_EW_PARALLEL_MIN ? impl->threads : 1;
}

dsc_status *cpu_relu_forward(dsc_backend *be, float *y, const float *x, size_t n) {
  if (n == 0) return NULL;
  if (!y || !x) return dsc_errorf("relu_forward: NULL pointer for %zu floats", n);
  const int T = ew_threads(cpu_impl_of(be), n);
#pragma omp parallel num_threads(T) if (T > 1)
  {
    size_t lo, hi;
    cpu_split(n, T, omp_get_thread_num(), &lo, &hi);
    for (size_t i = lo; i < hi; i++) {
      const float v = x[i];
      y[i] = (v > 0.0f || v != v) ? v : 0.0f;
    }
  }
  return NULL;
}

/* dx may alias dy: each element reads its own dy before writing. */
dsc_status *cpu_relu_backward(dsc_backend *be, float *dx, const float *dy, const float *y,
                              size_t n) {
  if (n == 0) return NULL;
  if (!dx || !dy || !y) return dsc_errorf("relu_backward: NULL pointer for %zu floats", n);
  const int T = ew_threads(cpu_impl_of(be), n);
#pragma omp parallel num_threads(T) if (T > 1)
  {
    size_t lo, hi;
    cpu_split(n, T, omp_get_thread_num(), &lo, &hi);
    for (size_t i = lo; i < hi; i++) dx[i] = y[i] <= 0.0f ? 0.0f : dy[i];
  }
  return NULL;
}

dsc_status *cpu_add_inplace(dsc_backend *be, float *y, const float *x, size_t n) {
  if (n == 0) return NULL;
  if (!y || !x) return dsc_errorf("add_inplace: NULL pointer for %zu floats", n);
  const int T = ew_threads(cpu_impl_of(be), n);
#pragma omp parallel num_threads(T) if (T > 1)
  {
    size_t lo, hi;
    cpu_split(n, T, omp_get_thread_num(), &lo, &hi);
    float *restrict yy = y;
    const float *restrict xx = x;
    for (size_t i = lo; i < hi; i++) yy[i] += xx[i];
  }
  return NULL;
}
