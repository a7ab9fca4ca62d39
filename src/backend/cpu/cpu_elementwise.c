/* cpu_elementwise.c: the CPU backend's ReLU and in-place add, memory-bound OpenMP loops
 * (conventions in cpu_ops.h and backend.h). The three ops share one driver, ew_run: each
 * thread owns one contiguous range of elements; arrays shorter than CPU_EW_PARALLEL_MIN
 * run on the calling thread, where waking a team would cost more than the work. Element
 * results match the reference backend exactly (ReLU keeps NaN and maps -0 to 0; the
 * gradient is zero where y <= 0). */
#include <omp.h>
#include <stddef.h>

#include "backend/cpu/cpu_ops.h"

#define CPU_EW_PARALLEL_MIN ((size_t)1 << 15)

typedef enum ew_op { EW_RELU, EW_RELU_BACKWARD, EW_ADD } ew_op;

/* One thread's range [lo, hi) of op: EW_RELU out = relu(a); EW_RELU_BACKWARD out = a where
 * b > 0 (a = dy, b = y; out may alias a); EW_ADD out += a. Each case is its own loop. */
static void ew_range(ew_op op, float *out, const float *a, const float *b, size_t lo,
                     size_t hi) {
  switch (op) {
    case EW_RELU:
      for (size_t i = lo; i < hi; i++) {
        const float v = a[i];
        out[i] = (v > 0.0f || v != v) ? v : 0.0f;
      }
      break;
    case EW_RELU_BACKWARD:
      for (size_t i = lo; i < hi; i++) out[i] = b[i] <= 0.0f ? 0.0f : a[i];
      break;
    case EW_ADD: {
      float *restrict yy = out;
      const float *restrict xx = a;
      for (size_t i = lo; i < hi; i++) yy[i] += xx[i];
      break;
    }
  }
}

static void ew_run(dsc_backend *be, ew_op op, float *out, const float *a, const float *b,
                   size_t n) {
  cpu_impl *impl = cpu_impl_of(be);
  cpu_threads_enter(impl);
  const int T = n >= CPU_EW_PARALLEL_MIN ? impl->threads : 1;
#pragma omp parallel num_threads(T) if (T > 1)
  {
    size_t lo, hi;
    cpu_split(n, T, omp_get_thread_num(), &lo, &hi);
    ew_range(op, out, a, b, lo, hi);
  }
}

dsc_status *cpu_relu_forward(dsc_backend *be, float *y, const float *x, size_t n) {
  if (n == 0) return NULL;
  if (!y || !x) return dsc_errorf("relu_forward: NULL pointer for %zu floats", n);
  ew_run(be, EW_RELU, y, x, NULL, n);
  return NULL;
}

/* dx may alias dy: each element reads its own dy before writing. */
dsc_status *cpu_relu_backward(dsc_backend *be, float *dx, const float *dy, const float *y,
                              size_t n) {
  if (n == 0) return NULL;
  if (!dx || !dy || !y) return dsc_errorf("relu_backward: NULL pointer for %zu floats", n);
  ew_run(be, EW_RELU_BACKWARD, dx, dy, y, n);
  return NULL;
}

dsc_status *cpu_add_inplace(dsc_backend *be, float *y, const float *x, size_t n) {
  if (n == 0) return NULL;
  if (!y || !x) return dsc_errorf("add_inplace: NULL pointer for %zu floats", n);
  ew_run(be, EW_ADD, y, x, NULL, n);
  return NULL;
}
