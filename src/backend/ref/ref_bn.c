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

static dsc_status *bn_shape_check(const char *op, const dsc_bn_shape *s, int training) {
  if (!s) return dsc_errorf("%s: shape is NULL", op);
  if (s->n < 1 || s->h < 1 || s->w < 1 || s->c < 1)
    return dsc_errorf("%s: sizes must be >= 1 (n=%d h=%d w=%d c=%d)", op, s->n, s->h, s->w, s->c);
  if (!(s->eps >= 0.0f) || isinf(s->eps))
    return dsc_errorf("%s: eps %g must be finite and >= 0", op, (double)s->eps);
  if (!training) return NULL;
  if (s->groups < 1) return dsc_errorf("%s: groups %d must be >= 1", op, s->groups);
  if (s->n % s->groups != 0)
    return dsc_errorf("%s: groups %d does not divide the batch n=%d", op, s->groups, s->n);
  double m = (double)(s->n / s->groups) * s->h * s->w; /* double: cannot overflow */
  if (m < 2)
    return dsc_errorf(
        "%s: each of the %d groups holds %.0f value(s) per channel; training "
        "batch norm needs more than 1 (n=%d h=%d w=%d)",
        op, s->groups, m, s->n, s->h, s->w);
  return NULL;
}

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
  DSC_TRY(bn_shape_check("bn_forward_train", s, 1));
  if (!y || !save_mean || !save_var || !x || !gamma || !beta)
    return dsc_errorf("bn_forward_train: y, save_mean, save_var, x, gamma, beta must not be NULL");
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
  DSC_TRY(bn_shape_check("bn_forward_eval", s, 0));
  if (!y || !x || !gamma || !beta || !running_mean || !running_var)
    return dsc_errorf("bn_forward_eval: y, x, gamma, beta, running stats must not be NULL");
  const int C = s->c;
  const size_t pixels = (size_t)s->n * s->h * s->w;
  for (int c = 0; c < C; c++) {
    if (!(running_var[c] + s->eps > 0.0f))
      return dsc_errorf("bn_forward_eval: running_var[%d] + eps = %g is not positive", c,
                        (double)running_var[c] + (double)s->eps);
  }
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
  DSC_TRY(bn_shape_check("bn_backward", s, 1));
  if (!dy || !x || !gamma || !save_mean || !save_var)
    return dsc_errorf("bn_backward: dy, x, gamma, save_mean, save_var must not be NULL");
  if (s->relu && !y) return dsc_errorf("bn_backward: relu is set but y is NULL");
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

dsc_status *ref_bn_update_running(dsc_backend *be, const dsc_bn_shape *s, float *running_mean,
                                  float *running_var, const float *save_mean, const float *save_var,
                                  float momentum) {
  DSC_TRY(bn_shape_check("bn_update_running", s, 1));
  if (!running_mean || !running_var || !save_mean || !save_var)
    return dsc_errorf("bn_update_running: running and saved statistics must not be NULL");
  if (!(momentum >= 0.0f && momentum <= 1.0f))
    return dsc_errorf("bn_update_running: momentum %g is outside [0,1]", (double)momentum);
  const int C = s->c, G = s->groups;
  const double m = (double)((size_t)(s->n / G) * s->h * s->w);
  const double mom = (double)momentum;
  for (int c = 0; c < C; c++) {
    double mean_avg = 0.0, var_avg = 0.0;
    for (int g = 0; g < G; g++) {
      mean_avg += (double)save_mean[(size_t)g * C + c];
      var_avg += (double)save_var[(size_t)g * C + c] * m / (m - 1.0);
    }
    mean_avg /= G;
    var_avg /= G;
    running_mean[c] = (float)((1.0 - mom) * (double)running_mean[c] + mom * mean_avg);
    running_var[c] = (float)((1.0 - mom) * (double)running_var[c] + mom * var_avg);
  }
  return NULL;
}
