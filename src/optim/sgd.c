/* sgd.c: SGD step over a blob and the warm-up + cosine schedule (include/dsc/optim.h). */
#include "dsc/optim.h"

#include <math.h>

dsc_status *dsc_sgd_step(dsc_backend *be, const dsc_sgd_config *cfg, float lr, size_t n,
                         float *params, const float *grads, float *momentum_buf) {
  return be->sgd_step(be, n, params, grads, momentum_buf, lr, cfg->momentum, cfg->weight_decay,
                      cfg->nesterov);
}

dsc_status *dsc_lr_schedule_check(const dsc_lr_schedule *s) {
  if (!(s->base_lr > 0) || !isfinite(s->base_lr))
    return dsc_errorf("optim.lr=%g: must be a positive finite number", s->base_lr);
  if (s->batch <= 0) return dsc_errorf("data.batch=%d: must be positive", s->batch);
  if (s->warmup_steps < 0)
    return dsc_errorf("optim.warmup_steps=%ld: must not be negative", s->warmup_steps);
  if (s->total_steps <= s->warmup_steps)
    return dsc_errorf("%ld total steps with optim.warmup_steps=%ld: the run must be longer than "
                      "its warm-up",
                      s->total_steps, s->warmup_steps);
  return NULL;
}

double dsc_lr_at(const dsc_lr_schedule *s, long step) {
  double scale = s->base_lr * (double)s->batch / 256.0;
  if (step < s->warmup_steps) return scale * (double)(step + 1) / (double)s->warmup_steps;
  double t = (double)(step - s->warmup_steps) / (double)(s->total_steps - s->warmup_steps);
  return scale * 0.5 * (1.0 + cos(M_PI * t));
}
