/* synthetic.h: the synthetic training setup shared by `dsc selfcheck` and `dsc bench step`:
 * a backbone on the CPU backend, a standard-normal input batch and loss weights drawn from
 * the counter-based RNG (purpose DSC_RNG_BENCH), and the work memory of one step. */
#ifndef DSC_CLI_SYNTHETIC_H
#define DSC_CLI_SYNTHETIC_H

#include "dsc/backbone.h"

typedef struct synthetic_run {
  dsc_backend *be;
  dsc_backbone model;
  float *x, *work; /* backend memory */
  int n, h, w;
} synthetic_run;

dsc_status *synthetic_init(synthetic_run *r, const dsc_resnet_config *cfg, int n, int size,
                           int threads, uint64_t seed);
dsc_status *synthetic_step(synthetic_run *r, float lr, double *loss);
void synthetic_free(synthetic_run *r);

/* Parses --arch/--stem values into a configuration; errors name the option. */
dsc_status *synthetic_parse_model(const char *arch, const char *stem, dsc_resnet_config *cfg);
/* Monotonic clock in seconds. */
double synthetic_now_s(void);
/* Peak resident set size of this process in MiB. */
double synthetic_peak_rss_mb(void);

#endif
