/* synthetic.c: see synthetic.h. */
#include "cli/synthetic.h"

#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "dsc/rng.h"

dsc_status *synthetic_parse_model(const char *arch, const char *stem, dsc_resnet_config *cfg) {
  cfg->depth = dsc_resnet_depth_from_name(arch);
  if (!cfg->depth) return dsc_errorf("--arch=%s: expected resnet18, resnet34 or resnet50", arch);
  if (strcmp(stem, "standard") == 0) cfg->small_stem = 0;
  else if (strcmp(stem, "small") == 0) cfg->small_stem = 1;
  else return dsc_errorf("--stem=%s: expected standard or small", stem);
  return NULL;
}

dsc_status *synthetic_init(synthetic_run *r, const dsc_resnet_config *cfg, int n, int size,
                           int threads, uint64_t seed) {
  memset(r, 0, sizeof *r);
  r->n = n, r->h = size, r->w = size;
  DSC_TRY(dsc_backend_cpu_new(threads, &r->be));
  DSC_TRY(dsc_backbone_create(&r->model, r->be, cfg, 1, seed));
  /* Find C5's size with a throwaway plan-free computation: run the shape arithmetic once. */
  int h5 = size, w5 = size;
  if (!cfg->small_stem) {
    h5 = dsc_conv_out_size(dsc_conv_out_size(h5, 7, 2, 3, 1), 3, 2, 1, 1);
    w5 = dsc_conv_out_size(dsc_conv_out_size(w5, 7, 2, 3, 1), 3, 2, 1, 1);
  }
  for (int i = 0; i < 3; i++) h5 = dsc_conv_out_size(h5, 3, 2, 1, 1), w5 = dsc_conv_out_size(w5, 3, 2, 1, 1);
  int c = r->model.net.out_channels;
  size_t nx = (size_t)n * size * size * 3, nc = (size_t)n * c;
  size_t nwork = 2 * nc + 16 + (size_t)n * h5 * w5 * c;
  float *host = malloc((nx > nc ? nx : nc) * sizeof(float));
  if (!host) return dsc_errorf("out of memory for a synthetic batch");
  dsc_status *st = r->be->alloc(r->be, nx * sizeof(float), (void **)&r->x);
  if (!st) st = r->be->alloc(r->be, nwork * sizeof(float), (void **)&r->work);
  for (size_t i = 0; !st && i < nx; i++)
    host[i] = (float)dsc_rng_normal(seed, DSC_RNG_BENCH, 0, (uint32_t)i, 0);
  if (!st) st = r->be->upload(r->be, r->x, host, nx * sizeof(float));
  for (size_t i = 0; !st && i < nc; i++)
    host[i] = (float)(dsc_rng_normal(seed, DSC_RNG_BENCH, 1, (uint32_t)i, 0) / n);
  if (!st) st = r->be->upload(r->be, r->work, host, nc * sizeof(float));
  free(host);
  return st;
}

dsc_status *synthetic_step(synthetic_run *r, float lr, double *loss) {
  return dsc_backbone_synthetic_step(&r->model, r->x, r->n, r->h, r->w, r->work, lr, loss);
}

void synthetic_free(synthetic_run *r) {
  if (r->be) {
    r->be->free(r->be, r->x);
    r->be->free(r->be, r->work);
    dsc_backbone_free(&r->model);
    r->be->destroy(r->be);
  }
  memset(r, 0, sizeof *r);
}

double synthetic_peak_rss_mb(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_maxrss / 1024.0;
}

double synthetic_now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}
