/* ref_bn.c: the reference backend's batch normalization (see ref_ops.h for the conventions).
 *
 * x, y, residual: (n,h,w,c) NHWC. Training mode splits the batch into `groups` groups of
 * n/groups consecutive images (METHOD.md §5); group g is images [g*n/G, (g+1)*n/G) and is
 * normalized with its own statistics over m = (n/G)*h*w values per channel:
 *   mean_g = sum(x)/m, var_g = sum((x-mean_g)^2)/m (biased, two passes, in double),
 *   y = act(gamma*(x-mean_g)/sqrt(var_g+eps) + beta [+ residual]), act = ReLU if s->relu.
 * save_mean/save_var are [groups][c]. The forward normalizes with its double statistics;
 * the backward reads the saved float ones (they differ by float rounding only).
 * Backward, per group and channel, with xhat = (x-mean)*invstd and dz = dy zeroed where
 * y <= 0 when s->relu (PyTorch's threshold_backward):
 *   dbeta += sum dz, dgamma += sum dz*xhat, dresidual = dz,
 *   dx = gamma*invstd/m * (m*dz - sum dz - xhat*sum(dz*xhat))   (exact training gradient). */
#include <math.h>
#include <stddef.h>

#include "backend/ref/ref_ops.h"

/* Applies the optional residual add and ReLU to one pre-activation value. */
static float bn_finish(double z, const float *residual, size_t i, int relu) {
  if (residual) z += (double)residual[i];
  float out = (float)z;
  if (relu && !(out > 0.0f) && !isnan(out)) out = 0.0f;
  return out;
}

dsc_status *ref_bn_forward_train(dsc_backend *be, const dsc_bn_shape *s, float *y, float *save_mean,
                                 float *save_var, const float *x, const float *gamma,
                                 const float *beta, const float *residual) {
  DSC_TRY(backend_check_bn_forward_train(s, y, save_mean, save_var, x, gamma, beta));
  const int C = s->c, G = s->groups;
  const size_t per_group = (size_t)(s->n / G) * s->h * s->w; /* pixels per group = m */
  for (int g = 0; g < G; g++) {
    const size_t p0 = (size_t)g * per_group;
    for (int c = 0; c < C; c++) {
      double sum = 0.0;
      for (size_t p = p0; p < p0 + per_group; p++) sum += (double)x[p * C + c];
      double mean = sum / (double)per_group;
      double sq = 0.0;
      for (size_t p = p0; p < p0 + per_group; p++) {
        double d = (double)x[p * C + c] - mean;
        sq += d * d;
      }
      double var = sq / (double)per_group;
      save_mean[(size_t)g * C + c] = (float)mean;
      save_var[(size_t)g * C + c] = (float)var;
      double scale = (double)gamma[c] / sqrt(var + (double)s->eps);
      for (size_t p = p0; p < p0 + per_group; p++) {
        size_t i = p * C + c;
        y[i] = bn_finish(((double)x[i] - mean) * scale + (double)beta[c], residual, i, s->relu);
      }
    }
  }
  return NULL;
}

dsc_status *ref_bn_forward_eval(dsc_backend *be, const dsc_bn_shape *s, float *y, const float *x,
                                const float *gamma, const float *beta, const float *running_mean,
                                const float *running_var, const float *residual) {
  DSC_TRY(backend_check_bn_forward_eval(s, y, x, gamma, beta, running_mean, running_var));
  const int C = s->c;
  const size_t pixels = (size_t)s->n * s->h * s->w;
  for (size_t p = 0; p < pixels; p++)
    for (int c = 0; c < C; c++) {
      size_t i = p * C + c;
      double scale = (double)gamma[c] / sqrt((double)running_var[c] + (double)s->eps);
      double z = ((double)x[i] - (double)running_mean[c]) * scale + (double)beta[c];
      y[i] = bn_finish(z, residual, i, s->relu);
    }
  return NULL;
}

dsc_status *ref_bn_backward(dsc_backend *be, const dsc_bn_shape *s, float *dx, float *dgamma,
                            float *dbeta, float *dresidual, const float *dy, const float *x,
                            const float *y, const float *gamma, const float *save_mean,
                            const float *save_var) {
  DSC_TRY(backend_check_bn_backward(s, dy, x, y, gamma, save_mean, save_var));
  const int C = s->c, G = s->groups;
  const size_t per_group = (size_t)(s->n / G) * s->h * s->w;
  const double m = (double)per_group;
  for (int g = 0; g < G; g++) {
    const size_t p0 = (size_t)g * per_group;
    for (int c = 0; c < C; c++) {
      const double mean = (double)save_mean[(size_t)g * C + c];
      const double invstd = 1.0 / sqrt((double)save_var[(size_t)g * C + c] + (double)s->eps);
      double sum_dz = 0.0, sum_dz_xhat = 0.0;
      for (size_t p = p0; p < p0 + per_group; p++) {
        size_t i = p * C + c;
        double dz = (s->relu && y[i] <= 0.0f) ? 0.0 : (double)dy[i];
        sum_dz += dz;
        sum_dz_xhat += dz * ((double)x[i] - mean) * invstd;
        if (dresidual) dresidual[i] = (float)dz;
      }
      if (dbeta) dbeta[c] = (float)((double)dbeta[c] + sum_dz);
      if (dgamma) dgamma[c] = (float)((double)dgamma[c] + sum_dz_xhat);
      if (!dx) continue;
      const double k = (double)gamma[c] * invstd / m;
      for (size_t p = p0; p < p0 + per_group; p++) {
        size_t i = p * C + c;
        double dz = (s->relu && y[i] <= 0.0f) ? 0.0 : (double)dy[i];
        double xhat = ((double)x[i] - mean) * invstd;
        dx[i] = (float)(k * (m * dz - sum_dz - xhat * sum_dz_xhat));
      }
    }
  }
  return NULL;
}
