/* optim.h: SGD over the parameter blob and the learning-rate schedule (METHOD.md §5).
 *
 * SGD is torch.optim.SGD(momentum, dampening=0, weight_decay, nesterov) applied as one loop
 * over the whole parameter blob (the backend's sgd_step). The schedule is
 *   lr(s) = base_lr * B/256 * ((s+1)/W if s < W else 0.5*(1 + cos(pi*(s-W)/(S-W))))
 * for step s (0-based) of S total steps with W warm-up steps and global batch B.
 */
#ifndef DSC_OPTIM_H
#define DSC_OPTIM_H

#include <stddef.h>

#include "backend/backend.h"

typedef struct dsc_sgd_config {
  float momentum;     /* 0.9 */
  float weight_decay; /* 1e-4 */
  int nesterov;       /* 1 */
} dsc_sgd_config;

/* One SGD step on n floats of parameters with their gradients and momentum buffers. */
dsc_status *dsc_sgd_step(dsc_backend *be, const dsc_sgd_config *cfg, float lr, size_t n,
                         float *params, const float *grads, float *momentum_buf);

typedef struct dsc_lr_schedule {
  double base_lr;   /* at batch 256 */
  int batch;        /* global batch B */
  long total_steps; /* S */
  long warmup_steps;/* W */
} dsc_lr_schedule;

/* Checks S > W >= 0, B > 0 and a finite positive base rate; the error names the key. */
dsc_status *dsc_lr_schedule_check(const dsc_lr_schedule *s);
/* The learning rate of step `step` (0-based). */
double dsc_lr_at(const dsc_lr_schedule *s, long step);

#endif
