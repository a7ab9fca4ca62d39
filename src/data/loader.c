/* loader.c: worker threads and a bounded ring of batch slots (include/dsc/loader.h).
 *
 * Work is handed out one image at a time: item j of this rank's epoch list belongs to local
 * batch batch_of[j] and is written straight into slot (batch % n_slots) at its position, so
 * the result never depends on which worker did it. A worker may take item j only while its
 * batch is fewer than n_slots batches ahead of the consumer (the ring is bounded). The consumer
 * waits until slot_done reaches the batch's size. One mutex guards all shared state; the
 * per-image work runs unlocked.
 */
#include "dsc/loader.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/bad_files.h"
#include "data/epoch_order.h"

typedef struct ld_slot {
  dsc_batch batch;
  int done; /* images written */
} ld_slot;

struct dsc_loader {
  const dsc_dataset *ds;
  dsc_loader_config cfg;
  size_t n_images;
  int has_labels, has_maps;
  int size;
  /* epoch plan */
  uint32_t *perm;      /* n_images global order */
  uint32_t *items;     /* this rank's dataset indices in order */
  size_t n_items;
  size_t *batch_start; /* per local batch: first item */
  int *batch_n;        /* per local batch: size */
  size_t *batch_of;    /* per item: its local batch */
  size_t n_batches;
  uint32_t epoch;
  int epoch_started;
  /* ring */
  ld_slot *slots;
  int n_slots;
  /* shared state, under mu */
  pthread_mutex_t mu;
  pthread_cond_t work_cv, done_cv;
  size_t next_item, consumed;
  int returned;        /* batch `consumed` is out with the caller */
  int in_flight;
  int stop;
  dsc_status *error;
  dsc_bad_files bad;   /* bad files met, remembered across epochs */
  pthread_t *threads;
  int n_threads;
};

/* One decoded image and the parameters of its views (crops in the decoded image's pixels). */
typedef struct ld_item {
  dsc_image img;
  int label;
  uint8_t *map;
  dsc_aug_params p[2];
} ld_item;

/* Maps [lo, lo + len) of a full-size axis of n pixels onto the reduced axis of m pixels. */
static void ld_map_span(int lo, int len, int n, int m, int *out_lo, int *out_len) {
  int a = (int)((int64_t)lo * m / n), b = (int)(((int64_t)(lo + len) * m + n - 1) / n);
  if (b > m) b = m;
  if (b <= a) b = a + 1;
  *out_lo = a;
  *out_len = b - a;
}

/* Decodes dataset image i and draws its views. Training views of a JPEG whose crops both
 * shrink by 2x or more come from a reduced DCT-domain decode (see loader.h). */
static dsc_status *ld_decode(dsc_loader *l, size_t i, ld_item *it) {
  const dsc_aug_config *a = &l->cfg.aug;
  int want_map = l->has_maps && !l->cfg.eval;
  it->map = NULL;
  if (!l->cfg.eval && !want_map && !l->cfg.full_decode) {
    int w, h, jpeg, d = 8;
    DSC_TRY(dsc_dataset_probe(l->ds, i, &w, &h, &jpeg));
    for (uint32_t v = 0; v < 2; v++) {
      dsc_aug_draw(a, w, h, l->cfg.seed, l->epoch, (uint32_t)i, v, &it->p[v]);
      int dv = dsc_image_dct_denominator(it->p[v].crop_w, it->p[v].crop_h, a->size);
      if (dv < d) d = dv;
    }
    if (jpeg && d > 1) {
      DSC_TRY(dsc_dataset_load_scaled(l->ds, i, d, &it->img, &it->label, NULL));
      if (it->img.w == (w + d - 1) / d && it->img.h == (h + d - 1) / d) {
        for (int v = 0; v < 2; v++) {
          dsc_aug_params *p = &it->p[v];
          ld_map_span(p->crop_left, p->crop_w, w, it->img.w, &p->crop_left, &p->crop_w);
          ld_map_span(p->crop_top, p->crop_h, h, it->img.h, &p->crop_top, &p->crop_h);
        }
        return NULL;
      }
      dsc_image_free(&it->img); /* the header disagreed with the data: decode in full */
    }
  }
  DSC_TRY(dsc_dataset_load(l->ds, i, &it->img, &it->label, want_map ? &it->map : NULL));
  if (!l->cfg.eval)
    for (uint32_t v = 0; v < 2; v++)
      dsc_aug_draw(a, it->img.w, it->img.h, l->cfg.seed, l->epoch, (uint32_t)i, v, &it->p[v]);
  return NULL;
}

/* ld_decode as a dsc_bad_files_try_fn: ctx is an ld_try. */
typedef struct ld_try {
  dsc_loader *l;
  ld_item *it;
} ld_try;

static dsc_status *ld_try_decode(void *ctx, size_t i) {
  ld_try *t = ctx;
  return ld_decode(t->l, i, t->it);
}

/* Writes item j of the epoch into its slot. */
static dsc_status *ld_make_item(dsc_loader *l, size_t j) {
  size_t k = l->batch_of[j];
  dsc_batch *b = &l->slots[k % (size_t)l->n_slots].batch;
  size_t pos = j - l->batch_start[k];
  size_t px = (size_t)l->size * (size_t)l->size;
  ld_item it;
  size_t used = 0;
  /* dataset image items[j] or, if it is bad, the next usable one */
  DSC_TRY(dsc_bad_files_load_usable(&l->bad, l->items[j], ld_try_decode, &(ld_try){l, &it}, &used));
  dsc_status *st = NULL;
  if (l->cfg.eval) {
    st = dsc_image_eval_transform(&it.img, l->cfg.eval_resize, l->size, b->a + pos * px * 3);
  } else {
    for (int v = 0; v < 2 && !st; v++) {
      uint8_t *map_out = it.map ? (v == 0 ? b->label_map_a : b->label_map_b) + pos * px : NULL;
      st = dsc_aug_apply(&l->cfg.aug, &it.p[v], &it.img, (v == 0 ? b->a : b->b) + pos * px * 3,
                         it.map, map_out);
    }
  }
  if (!st) {
    b->indices[pos] = (uint32_t)used;
    if (b->labels) b->labels[pos] = it.label;
  }
  dsc_image_free(&it.img);
  free(it.map);
  return st;
}

static int ld_item_ready(const dsc_loader *l) {
  return l->epoch_started && !l->error && l->next_item < l->n_items &&
         l->batch_of[l->next_item] < l->consumed + (size_t)l->n_slots;
}

static void *ld_worker(void *arg) {
  dsc_loader *l = arg;
  pthread_mutex_lock(&l->mu);
  while (!l->stop) {
    if (!ld_item_ready(l)) {
      pthread_cond_wait(&l->work_cv, &l->mu);
      continue;
    }
    size_t j = l->next_item++;
    l->in_flight++;
    pthread_mutex_unlock(&l->mu);
    dsc_status *st = ld_make_item(l, j);
    pthread_mutex_lock(&l->mu);
    l->in_flight--;
    if (st) {
      if (!l->error) l->error = st;
      else dsc_status_free(st);
    } else {
      l->slots[l->batch_of[j] % (size_t)l->n_slots].done++;
    }
    pthread_cond_broadcast(&l->done_cv);
  }
  pthread_mutex_unlock(&l->mu);
  return NULL;
}

static void ld_free_batch(dsc_batch *b) {
  free(b->a);
  free(b->b);
  free(b->labels);
  free(b->label_map_a);
  free(b->label_map_b);
  free(b->indices);
}

void dsc_loader_free(dsc_loader *l) {
  if (!l) return;
  if (l->threads) {
    pthread_mutex_lock(&l->mu);
    l->stop = 1;
    pthread_cond_broadcast(&l->work_cv);
    pthread_mutex_unlock(&l->mu);
    for (int t = 0; t < l->n_threads; t++) pthread_join(l->threads[t], NULL);
    free(l->threads);
  }
  pthread_mutex_destroy(&l->mu);
  pthread_cond_destroy(&l->work_cv);
  pthread_cond_destroy(&l->done_cv);
  for (int s = 0; l->slots && s < l->n_slots; s++) ld_free_batch(&l->slots[s].batch);
  free(l->slots);
  dsc_bad_files_free(&l->bad);
  dsc_status_free(l->error);
  free(l->perm);
  free(l->items);
  free(l->batch_start);
  free(l->batch_n);
  free(l->batch_of);
  free(l);
}

/* Builds this rank's item list and batch table for the current epoch (threads idle). */
static void ld_plan_epoch(dsc_loader *l) {
  size_t n = l->n_images;
  if (l->cfg.shuffle) {
    dsc_epoch_permutation(l->cfg.seed, l->epoch, n, l->perm);
  } else {
    for (size_t i = 0; i < n; i++) l->perm[i] = (uint32_t)i;
  }
  size_t G = (size_t)l->cfg.batch, W = (size_t)l->cfg.world, r = (size_t)l->cfg.rank;
  size_t n_global = l->cfg.drop_last ? n / G : (n + G - 1) / G;
  l->n_items = 0;
  l->n_batches = n_global;
  for (size_t g = 0; g < n_global; g++) {
    size_t S = (g + 1) * G <= n ? G : n - g * G;
    size_t lo = r * S / W, hi = (r + 1) * S / W;
    l->batch_start[g] = l->n_items;
    l->batch_n[g] = (int)(hi - lo);
    for (size_t q = lo; q < hi; q++) {
      l->batch_of[l->n_items] = g;
      l->items[l->n_items++] = l->perm[g * G + q];
    }
  }
}

dsc_status *dsc_loader_open(const dsc_dataset *ds, const dsc_loader_config *cfg, dsc_loader **out) {
  *out = NULL;
  if (!ds || !cfg) return dsc_errorf("dsc_loader_open: NULL argument");
  dsc_loader_config c = *cfg;
  if (c.world <= 0) c.world = 1;
  if (c.prefetch <= 0) c.prefetch = 2;
  if (c.batch < 1) return dsc_errorf("data.batch must be >= 1 (got %d)", c.batch);
  if (c.rank < 0 || c.rank >= c.world)
    return dsc_errorf("rank %d outside [0, %d)", c.rank, c.world);
  if (c.batch % c.world)
    return dsc_errorf("data.batch %d is not a multiple of the %d processes", c.batch, c.world);
  if (c.workers < 1 || c.workers > 256) return dsc_errorf("data.workers must be in [1, 256] (got %d)", c.workers);
  if (c.aug.size < 1 || c.aug.size > 4096) return dsc_errorf("data.size must be in [1, 4096] (got %d)", c.aug.size);
  if (c.eval && c.eval_resize <= 0) c.eval_resize = c.aug.size * 8 / 7;
  size_t n = dsc_dataset_size(ds);
  if (n == 0) return dsc_errorf("empty dataset");
  dsc_loader *l = calloc(1, sizeof *l);
  if (!l) return dsc_errorf("out of memory");
  l->ds = ds;
  l->cfg = c;
  l->n_images = n;
  l->size = c.aug.size;
  l->has_labels = dsc_dataset_num_classes(ds) > 0;
  l->has_maps = dsc_dataset_has_label_maps(ds) && !c.eval;
  l->n_slots = c.prefetch;
  pthread_mutex_init(&l->mu, NULL);
  pthread_cond_init(&l->work_cv, NULL);
  pthread_cond_init(&l->done_cv, NULL);
  size_t n_global = (n + (size_t)c.batch - 1) / (size_t)c.batch;
  l->perm = malloc(n * sizeof *l->perm);
  l->items = malloc(n * sizeof *l->items);
  l->batch_of = malloc(n * sizeof *l->batch_of);
  l->batch_start = malloc(n_global * sizeof *l->batch_start);
  l->batch_n = malloc(n_global * sizeof *l->batch_n);
  int bad_ok = dsc_bad_files_init(&l->bad, ds, &l->mu, c.strict, "bad image file (data.strict=1)", c.warn,
                                  c.warn_ctx) == 0;
  l->slots = calloc((size_t)l->n_slots, sizeof *l->slots);
  int ok = l->perm && l->items && l->batch_of && l->batch_start && l->batch_n && bad_ok && l->slots;
  size_t local = (size_t)(c.batch / c.world), px = (size_t)l->size * (size_t)l->size;
  for (int s = 0; ok && s < l->n_slots; s++) {
    dsc_batch *b = &l->slots[s].batch;
    b->size = l->size;
    b->a = malloc(local * px * 3 * sizeof(float));
    if (!c.eval) b->b = malloc(local * px * 3 * sizeof(float));
    b->indices = malloc(local * sizeof *b->indices);
    if (l->has_labels) b->labels = malloc(local * sizeof *b->labels);
    if (l->has_maps) {
      b->label_map_a = malloc(local * px);
      b->label_map_b = malloc(local * px);
    }
    ok = b->a && (c.eval || b->b) && b->indices && (!l->has_labels || b->labels) &&
         (!l->has_maps || (b->label_map_a && b->label_map_b));
  }
  if (!ok) {
    dsc_loader_free(l);
    return dsc_errorf("out of memory for the loader (%d slots of %zu images of %dx%d)", c.prefetch,
                      local, l->size, l->size);
  }
  l->threads = calloc((size_t)c.workers, sizeof *l->threads);
  if (!l->threads) {
    dsc_loader_free(l);
    return dsc_errorf("out of memory");
  }
  for (int t = 0; t < c.workers; t++) {
    if (pthread_create(&l->threads[t], NULL, ld_worker, l) != 0) {
      dsc_loader_free(l);
      return dsc_errorf("cannot start loader thread %d of %d", t + 1, c.workers);
    }
    l->n_threads++;
  }
  *out = l;
  return NULL;
}

dsc_status *dsc_loader_start_epoch(dsc_loader *l, uint32_t epoch) {
  return dsc_loader_start_epoch_at(l, epoch, 0);
}

dsc_status *dsc_loader_start_epoch_at(dsc_loader *l, uint32_t epoch, size_t first_batch) {
  pthread_mutex_lock(&l->mu);
  l->epoch_started = 0; /* no new items */
  while (l->in_flight > 0) pthread_cond_wait(&l->done_cv, &l->mu);
  if (l->error) {
    dsc_status *st = dsc_errorf("%s", l->error->msg);
    pthread_mutex_unlock(&l->mu);
    return st;
  }
  l->epoch = epoch;
  ld_plan_epoch(l);
  for (int s = 0; s < l->n_slots; s++) l->slots[s].done = 0;
  if (first_batch > l->n_batches) first_batch = l->n_batches;
  l->next_item = first_batch < l->n_batches ? l->batch_start[first_batch] : l->n_items;
  l->consumed = first_batch;
  l->returned = 0;
  l->epoch_started = 1;
  pthread_cond_broadcast(&l->work_cv);
  pthread_mutex_unlock(&l->mu);
  return NULL;
}

size_t dsc_loader_batches_per_epoch(const dsc_loader *l) {
  size_t n = l->n_images, G = (size_t)l->cfg.batch;
  return l->cfg.drop_last ? n / G : (n + G - 1) / G;
}

dsc_status *dsc_loader_next(dsc_loader *l, const dsc_batch **out) {
  *out = NULL;
  pthread_mutex_lock(&l->mu);
  if (!l->epoch_started) {
    pthread_mutex_unlock(&l->mu);
    return dsc_errorf("dsc_loader_next: no epoch started (dsc_loader_start_epoch)");
  }
  if (l->returned) {
    l->slots[l->consumed % (size_t)l->n_slots].done = 0;
    l->consumed++;
    l->returned = 0;
    pthread_cond_broadcast(&l->work_cv);
  }
  if (l->consumed >= l->n_batches) {
    pthread_mutex_unlock(&l->mu);
    return NULL;
  }
  size_t k = l->consumed;
  ld_slot *s = &l->slots[k % (size_t)l->n_slots];
  while (!l->error && s->done < l->batch_n[k]) pthread_cond_wait(&l->done_cv, &l->mu);
  if (l->error) {
    dsc_status *st = dsc_errorf("%s", l->error->msg);
    pthread_mutex_unlock(&l->mu);
    return st;
  }
  s->batch.n = l->batch_n[k];
  s->batch.epoch = l->epoch;
  s->batch.step = k;
  l->returned = 1;
  *out = &s->batch;
  pthread_mutex_unlock(&l->mu);
  return NULL;
}

size_t dsc_loader_bad_count(dsc_loader *l) { return dsc_bad_files_count(&l->bad); }

void dsc_loader_bad_file(dsc_loader *l, size_t i, const char **path, const char **reason) {
  dsc_bad_files_get(&l->bad, i, path, reason);
}
