/* cpu_optim.c: the CPU backend's SGD step and EMA (the momentum encoder), one OpenMP loop
 * each over a whole blob (conventions in cpu_ops.h and backend.h; formulas METHOD.md §5).
 * Each element is computed in double and rounded where PyTorch stores (buf, p, shadow),
 * like the reference backend, so the two agree bit for bit; the loops stay memory-bound. */
#include <omp.h>
#include <stddef.h>

#include "backend/cpu/cpu_ops.h"

#define CPU_OPT_PARALLEL_MIN ((size_t)1 << 15)

/* torch.optim.SGD with dampening 0:
 *   g' = g + wd*p;  buf = mom*buf + g';  p -= lr*(nesterov ? g' + mom*buf : buf).
 * The buffer starts at zero, so the first step gives buf = g' as PyTorch's clone does.
 * buf may be NULL only when momentum is 0. */
dsc_status *cpu_sgd_step(dsc_backend *be, size_t n, float *p, const float *g, float *buf,
                         float lr, float momentum, float weight_decay, int nesterov) {
  DSC_TRY(backend_check_sgd(n, p, g, buf, lr, momentum, weight_decay, nesterov));
  if (n == 0) return NULL;
  cpu_impl *impl = cpu_impl_of(be);
  cpu_threads_enter(impl);
  const int T = n >= CPU_OPT_PARALLEL_MIN ? impl->threads : 1;
  const double dlr = lr, mom = momentum, wd = weight_decay;
#pragma omp parallel num_threads(T) if (T > 1)
  {
    size_t lo, hi;
    cpu_split(n, T, omp_get_thread_num(), &lo, &hi);
    float *restrict pp = p, *restrict bb = buf;
    const float *restrict gg = g;
    if (!bb) {
      for (size_t i = lo; i < hi; i++) {
        const double gp = (double)gg[i] + wd * (double)pp[i];
        pp[i] = (float)((double)pp[i] - dlr * gp);
      }
    } else if (nesterov) {
      for (size_t i = lo; i < hi; i++) {
        const double gp = (double)gg[i] + wd * (double)pp[i];
        const float b = (float)(mom * (double)bb[i] + gp);
        bb[i] = b;
        pp[i] = (float)((double)pp[i] - dlr * (gp + mom * (double)b));
      }
    } else {
      for (size_t i = lo; i < hi; i++) {
        const double gp = (double)gg[i] + wd * (double)pp[i];
        const float b = (float)(mom * (double)bb[i] + gp);
        bb[i] = b;
        pp[i] = (float)((double)pp[i] - dlr * (double)b);
      }
    }
  }
  return NULL;
}

/* shadow = m*shadow + (1-m)*p */
dsc_status *cpu_ema(dsc_backend *be, size_t n, float *shadow, const float *p, float m) {
  DSC_TRY(backend_check_ema(n, shadow, p, m));
  if (n == 0) return NULL;
  cpu_impl *impl = cpu_impl_of(be);
  cpu_threads_enter(impl);
  const int T = n >= CPU_OPT_PARALLEL_MIN ? impl->threads : 1;
  const double dm = m, om = 1.0 - dm;
#pragma omp parallel num_threads(T) if (T > 1)
  {
    size_t lo, hi;
    cpu_split(n, T, omp_get_thread_num(), &lo, &hi);
    float *restrict sh = shadow;
    const float *restrict pp = p;
    for (size_t i = lo; i < hi; i++) sh[i] = (float)(dm * (double)sh[i] + om * (double)pp[i]);
  }
  return NULL;
}
