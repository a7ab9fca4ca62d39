/* config.h: the pretraining configuration (spec/INTERFACES.md "Configuration keys").
 *
 * One struct holds every key's resolved value. Keys are `section.key`; a configuration file
 * is INI-style (docs/config.md):
 *
 *     # comment            ; comment
 *     [method]
 *     name = dsc-km
 *     clusters = 100
 *     [data]
 *     path = /data/images
 *
 * Values are set in this order, later wins: the defaults, the file (`--config FILE`), then
 * `key=value` overrides from the command line (same names; `method=X` is an alias of
 * `method.name=X`). Unknown sections or keys, malformed numbers, out-of-range values and
 * duplicate keys within one file are errors naming the file and line (or the override) and
 * the key. dsc_config_finalize resolves dependent defaults (lambda_ins: 1 for moco-v2 and 0.5
 * otherwise unless set) and checks the combination (METHOD.md §3-5 constraints that need no
 * dataset: bn_groups divides batch, queue multiple of batch, ranges, ...; the limits that need the
 * image size — k_nei below the pixels of C5, clusters at most the pixels of a batch, BN groups of
 * more than one value — are checked by dsc_ssl_check_input).
 *
 * The resolved configuration is written back in the same format (every key, defaults
 * written out) to the run folder, and as (key, value) string pairs into checkpoint metadata
 * (floats with %.9g), from which a run can be reloaded.
 */
#ifndef DSC_CONFIG_H
#define DSC_CONFIG_H

#include <stdint.h>
#include <stdio.h>

#include "dsc/status.h"

#define DSC_CONFIG_PATH_MAX 1024

typedef enum dsc_method {
  DSC_METHOD_MOCO_V2 = 0,
  DSC_METHOD_DENSECL = 1,
  DSC_METHOD_DSC_NEI = 2,
  DSC_METHOD_DSC_TRI = 3,
  DSC_METHOD_DSC_CE = 4,
  DSC_METHOD_DSC_KM = 5,
  DSC_METHOD_DSC_PM = 6,
} dsc_method;

/* "moco-v2", "densecl", "dsc-nei", "dsc-tri", "dsc-ce", "dsc-km", "dsc-pm". */
const char *dsc_method_name(dsc_method m);
dsc_status *dsc_method_parse(const char *name, dsc_method *out);

typedef struct dsc_config {
  /* [method] */
  dsc_method method;        /* method.name (alias method): dsc-pm */
  float tau_ins, tau_pix, tau_sem, tau_pm;   /* 0.2 0.2 0.2 0.1 */
  float lambda_ins, lambda_pix, lambda_sem;  /* (1 for moco-v2 | 0.5) 0.5 0.5 */
  int lambda_ins_set;       /* lambda_ins was given explicitly */
  int64_t queue;            /* 65536 */
  float momentum;           /* EMA momentum 0.999 */
  int k_nei;                /* 1 */
  float margin;             /* 0.3 */
  int clusters, km_iters;   /* 100, 10 */
  int prototypes;           /* 150 */
  float sinkhorn_eps;       /* 0.05 */
  int sinkhorn_iters;       /* 3 */
  int64_t freeze_prototypes_steps; /* 0 */
  int bn_groups;            /* 8 */
  /* [model] */
  char arch[16];            /* resnet18 | resnet34 | resnet50 (resnet50) */
  char stem[16];            /* standard | small (standard) */
  int dim;                  /* 128 */
  char init[DSC_CONFIG_PATH_MAX]; /* initial backbone weights ("" = none) */
  int allow_partial;              /* model.init need not match exactly (0) */
  /* [data] */
  char data_path[DSC_CONFIG_PATH_MAX]; /* data.path ("" until set; required by pretrain) */
  char data_format[16];     /* folder | imagefolder | idx | seg (folder) */
  char data_split[16];      /* idx/seg split (train) */
  int size;                 /* 224 */
  int batch;                /* global batch 256 */
  int workers;              /* loader threads (0 = as many as run.threads) */
  int strict;               /* 0 */
  int64_t max_pixels;       /* decode cap (0 = the library default) */
  /* [aug] (METHOD.md §6 defaults) */
  float scale_min, scale_max;      /* 0.2 1.0 */
  float jitter_p, gray_p, blur_p, flip_p; /* 0.8 0.2 0.5 0.5 */
  /* [optim] */
  double lr;                /* base lr at batch 256: 0.3 */
  float optim_momentum;     /* 0.9 */
  int nesterov;             /* 1 */
  float weight_decay;       /* 1e-4 */
  int64_t epochs;           /* 800 */
  int64_t steps;            /* 0 (> 0 overrides epochs) */
  int64_t warmup_steps;     /* 0 */
  /* [run] */
  char out[DSC_CONFIG_PATH_MAX];       /* run folder (runs/dsc) */
  uint64_t seed;            /* 0 */
  int threads;              /* 0 = all cores */
  char device[8];           /* cpu | cuda (cpu) */
  char precision[8];        /* auto | fp32 | bf16 (auto: resolved by finalize) */
  int64_t log_every;        /* 10 */
  int64_t ckpt_every;       /* 0 = only the latest checkpoint at the end / each epoch */
  int resume;               /* 0 */
  char dump_step[DSC_CONFIG_PATH_MAX]; /* "" = no dump */
  int64_t dump_at;          /* -1 */
  double dist_timeout;      /* 600 s: longest wait of one collective (several processes) */
} dsc_config;

/* Every key at its default. */
void dsc_config_defaults(dsc_config *c);
/* Reads an INI file over c. */
dsc_status *dsc_config_load_file(dsc_config *c, const char *path);
/* One `section.key` = value (a command-line override; `origin` names it in errors, e.g.
 * "command line"). */
dsc_status *dsc_config_set(dsc_config *c, const char *key, const char *value, const char *origin);
/* Parses "key=value" (one argv word). */
dsc_status *dsc_config_set_arg(dsc_config *c, const char *arg);
/* Resolves dependent defaults and checks the combination (errors name the keys). */
dsc_status *dsc_config_finalize(dsc_config *c);

/* The resolved configuration as INI text (every key; heap string, caller frees). */
char *dsc_config_to_ini(const dsc_config *c);
/* Writes dsc_config_to_ini to `path` atomically (tmp + rename). */
dsc_status *dsc_config_write_ini(const dsc_config *c, const char *path);

/* Every key as (name, value) strings, names `section.key`, floats as %.9g: *n pairs in
 * heap arrays (free with dsc_config_pairs_free). For checkpoint metadata. */
dsc_status *dsc_config_to_pairs(const dsc_config *c, int *n, char ***keys, char ***values);
void dsc_config_pairs_free(int n, char **keys, char **values);
/* Sets every configuration key found among (keys[i], values[i]) — other metadata keys are
 * ignored — e.g. to reload a checkpoint's configuration. */
dsc_status *dsc_config_from_pairs(dsc_config *c, int n, const char *const *keys,
                                  const char *const *values);

/* Prints every key with its default and meaning (for --help and docs/config.md). */
void dsc_config_print_keys(FILE *out);

#endif
