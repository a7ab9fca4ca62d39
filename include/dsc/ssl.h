/* ssl.h: the self-supervised training model and one training step (spec/METHOD.md §2-5).
 *
 * One dsc_ssl_model holds, on one backend:
 *  - one tensor table for everything trainable, in this order: the online backbone
 *    (`backbone.` + torchvision names), the global neck (`neck.mlp.*`), the dense neck
 *    (`neck.mlp2.*`, not for moco-v2), the prototypes (`prototypes.weight`, dsc-pm and dsc-ce).
 *    The parameter blob, its gradient blob and its SGD-momentum blob follow that table; the
 *    buffer blob holds the backbone's BN running statistics.
 *  - the momentum encoder: a parameter blob that mirrors the first `encoder_numel` floats of
 *    the online one (backbone and necks; `momentum.` + the online name) and its own buffers.
 *    EMA is then one loop over that prefix (METHOD.md §5).
 *  - the queues `queue.global` and `queue.dense` ([D][L], column l = one key image), their
 *    shared pointer, and the k-means centroids (`km.centroids`, zero until the first step).
 *
 * A step (dsc_ssl_step) takes the two views of a batch (NHWC, normalized) and runs METHOD.md §5's
 * order: prototype row normalization, EMA, key forward with shuffle-BN, query forward, losses,
 * backward, SGD, enqueue. Every tensor of the model lives in backend memory; losses and dense
 * bookkeeping go through the backend's ssl ops (src/backend/ssl_ops.h: the host implementations of
 * src/ssl/ssl_loss.h on cpu/ref, CUDA kernels on cuda).
 *
 * Randomness (include/dsc/rng.h), all keyed by run.seed:
 *  - backbone init: as dsc_resnet_init_weights; neck and prototype init: PyTorch's Linear/Conv2d
 *    default U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias, element e of tensor T drawn
 *    as dsc_rng_uniform(seed, DSC_RNG_INIT, fnv1a32(T), e, 0);
 *  - queue column l, row r: dsc_rng_normal(seed, DSC_RNG_QUEUE_INIT, q, l, r) (q = 0 global,
 *    1 dense), each column then L2-normalized;
 *  - shuffle-BN permutation of step s: Fisher-Yates, for i = N-1..1,
 *    j = floor(dsc_rng_uniform(seed, DSC_RNG_SHUFFLE_BN, s, i, 0) * (i+1)), swap;
 *  - k-means initialization at step s: dsc_kmeans_init(..., seed, s).
 */
#ifndef DSC_SSL_H
#define DSC_SSL_H

#include <stdint.h>

#include "dsc/config.h"
#include "dsc/params.h"
#include "dsc/resnet.h"

/* Offsets (floats, into the parameter blob) of one two-layer neck. */
typedef struct dsc_ssl_neck {
  size_t w1, b1, w2, b2;
  int c, d; /* in/hidden channels C, output D */
} dsc_ssl_neck;

/* What one step computed (host), for logging and the step dump. */
typedef struct dsc_ssl_step_info {
  double loss_ins, loss_pix, loss_sem, loss_total; /* unweighted terms, weighted total */
  double lr;
  int km_present;       /* dsc-km: clusters present in both views */
} dsc_ssl_step_info;

/* Optional captures of a step for the step dump (spec/INTERFACES.md): every non-NULL pointer
 * is filled (host memory of the documented size). */
typedef struct dsc_ssl_capture {
  int64_t *perm_key;   /* [N] */
  int64_t *match;      /* [N,P] */
  int64_t *nei_idx;    /* [N,P,k_nei] */
  int64_t *km_history; /* [T_km,N,P] */
  int64_t *ce_target;  /* [N,P] */
  float *km_init;      /* [K,D] */
} dsc_ssl_capture;

typedef struct dsc_ssl_model {
  dsc_backend *be; /* not owned */
  dsc_config cfg;  /* resolved */
  int has_dense, has_protos, has_km;
  int n, size;     /* batch and image size the work memory is planned for */
  int p, h5, w5;   /* pixels of C5 per image */

  dsc_table table;
  size_t encoder_numel; /* backbone + necks: the EMA range */
  size_t protos_off;    /* offset of prototypes.weight (has_protos) */
  dsc_ssl_neck neck_g, neck_d;
  dsc_resnet online, key;
  float *params, *grads, *momentum, *buffers; /* online (backend memory) */
  float *key_params, *key_buffers;            /* momentum encoder */

  float *queue_g, *queue_d; /* [D][L] (backend memory, like everything of the model) */
  int64_t queue_len, queue_ptr;
  float *centroids;         /* [K][D] (has_km) */
  int km_initialized;       /* centroids hold a k-means state (zero until the first step) */
  int64_t step;             /* steps completed */

  void *work;               /* per-step work memory (src/ssl/ssl_step.c) */
  float *staged;            /* dsc_ssl_stage_batch's two views (device backends) */
  size_t staged_floats;
  struct dsc_dist *dist;    /* NULL: one process; else data-parallel over dsc_dist_world ranks */
  int rank, world;          /* 0 and 1 for one process */
} dsc_ssl_model;

/* Builds the model for cfg (finalized) with its initialization from cfg->seed; when
 * cfg->init names a file, the online backbone is loaded from it. The momentum encoder starts
 * as a copy of the online one. */
dsc_status *dsc_ssl_model_create(dsc_ssl_model *m, dsc_backend *be, const dsc_config *cfg);
void dsc_ssl_model_free(dsc_ssl_model *m);
/* Makes the model one rank of a data-parallel run (include/dsc/dist.h; the batches given to
 * dsc_ssl_step are then this rank's slice of the global batch, in rank order) and makes every
 * rank's state rank 0's (parameters, momentum encoder, SGD state, BN statistics, queues,
 * centroids: broadcast), so call it after any checkpoint load. With several processes each
 * process is one BN group (METHOD.md §5: method.bn_groups is ignored). */
dsc_status *dsc_ssl_model_set_dist(dsc_ssl_model *m, struct dsc_dist *dist);

/* Checks the constraints that need the input size (METHOD.md §3-5): every BN group holds more
 * than one value per channel, k_nei < pixels, clusters <= pixels of a batch. */
dsc_status *dsc_ssl_check_input(const dsc_ssl_model *m, int n, int size);

/* One training step on views a (query) and b (key), each (n, size, size, 3) NHWC normalized
 * (with several ranks: this rank's n images of the global batch of n * world),
 * in BACKEND memory (dsc_ssl_stage_batch puts host views there), at learning rate lr. On a
 * non-finite loss, gradient or updated parameter the step returns an error naming the step and
 * the term or tensor; the model's state is then unusable and must not be saved (the step is
 * issued whole and checked once at its end, so that a GPU never waits on the host mid-step). */
dsc_status *dsc_ssl_step(dsc_ssl_model *m, const float *a, const float *b, int n, int size,
                         double lr, dsc_ssl_step_info *info, dsc_ssl_capture *cap);

/* The views of a host batch as backend memory for dsc_ssl_step: the host pointers themselves on a
 * host-memory backend, else copies in model-owned backend buffers (valid until the next call). */
dsc_status *dsc_ssl_stage_batch(dsc_ssl_model *m, const float *a, const float *b, int n, int size,
                                const float **a_out, const float **b_out);

/* ---- checkpoints (METHOD.md §8) ---- */

/* A host copy of every checkpoint tensor. */
typedef struct dsc_ssl_snapshot {
  float *params, *buffers, *momentum, *key_params, *key_buffers, *queue_g, *queue_d, *centroids;
  int64_t queue_ptr, tracked, key_tracked;
} dsc_ssl_snapshot;

dsc_status *dsc_ssl_snapshot_take(const dsc_ssl_model *m, dsc_ssl_snapshot *s);
void dsc_ssl_snapshot_free(dsc_ssl_snapshot *s);

typedef struct dsc_st_writer dsc_st_writer;
/* Adds every checkpoint tensor of snapshot `s` to `w`, names prefixed by `prefix` ("" or
 * "after."). The snapshot must outlive the save. */
dsc_status *dsc_ssl_snapshot_add(const dsc_ssl_model *m, const dsc_ssl_snapshot *s,
                                 dsc_st_writer *w, const char *prefix);
/* Loads every checkpoint tensor from `path` into the model (names and shapes must match
 * exactly); returns the file's metadata value of "step" etc. through the caller reopening
 * the file when needed. */
dsc_status *dsc_ssl_load(dsc_ssl_model *m, const char *path);

/* The run's counters written beside the configuration into checkpoint metadata (METHOD.md §8). */
typedef struct dsc_ssl_meta {
  int64_t step;        /* steps completed (a dump: the dumped step) */
  int64_t epoch;       /* epoch of the next (dumped) step */
  int64_t total_steps; /* S */
  int64_t images;      /* data.images */
  double lr_step;      /* learning rate of the last (dumped) step */
  int world_size;
} dsc_ssl_meta;

/* Adds the configuration pairs and the counters of `meta` as metadata to `w`. */
dsc_status *dsc_ssl_meta_add(const dsc_ssl_model *m, const dsc_ssl_meta *meta, dsc_st_writer *w);
/* Writes a checkpoint of the model's current state to `path` atomically, and to `also`
 * (a numbered copy) when not NULL. */
dsc_status *dsc_ssl_save(const dsc_ssl_model *m, const dsc_ssl_meta *meta, const char *path,
                         const char *also);
/* Reads a checkpoint's counters and (when cfg is not NULL) its configuration. */
dsc_status *dsc_ssl_meta_read(const char *path, dsc_ssl_meta *meta, dsc_config *cfg);

/* Runs one step (as dsc_ssl_step) and writes the step dump of spec/INTERFACES.md to `path`:
 * input.a/b [N,3,H,W], every checkpoint tensor before the step, the step's discrete choices,
 * loss.*, grad.* and after.*; metadata as a checkpoint's with `step` the dumped step. */
dsc_status *dsc_ssl_dump_step(dsc_ssl_model *m, const float *a, const float *b, int n, int size,
                              double lr, const dsc_ssl_meta *meta, const char *path,
                              dsc_ssl_step_info *info);

#endif
