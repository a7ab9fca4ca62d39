/* seg_data.c: the inputs of FCN fine-tuning (include/dsc/seg_data.h): the training-batch feeder
 * (worker threads, two batch slots: the step the caller asked for and the one after it) and the
 * evaluation images.
 *
 * Feeder work is handed out one image at a time: image k of the batch in slot s is written
 * straight into slot s at position k, so the result never depends on which worker did it.
 * Workers take images of the slot the caller waits for first, then of the prefetch slot. A slot
 * is reassigned only after it is cancelled (no new images handed out) and its in-flight images
 * are finished, so no worker ever writes into a batch the caller holds or a reassigned slot.
 * One mutex guards all shared state; the per-image work runs unlocked.
 */
#include "dsc/seg_data.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/bad_files.h"
#include "data/epoch_order.h"
#include "data/seg_resize.h"

#define SEG_SLOTS 2
#define SEG_MAX_THREADS 256
#define SEG_MAX_SIDE (1 << 30)

typedef struct sd_slot {
  dsc_seg_batch batch;
  uint32_t *want;    /* B dataset indices asked for (before bad-file replacement) */
  uint32_t epoch;
  int assigned;      /* a step is set (batch.step) */
  int cancelled;     /* no more images handed out; the result is discarded */
  int next;          /* images handed out */
  int done;          /* images finished */
  int in_flight;     /* images being prepared now */
  dsc_status *error; /* first error of this batch */
} sd_slot;

struct dsc_seg_feeder {
  const dsc_dataset *ds;
  dsc_seg_feeder_config cfg;
  size_t n_images;
  int64_t per_epoch;
  /* the caller's permutation cache (touched only by the caller's thread) */
  uint32_t *perm;
  uint32_t perm_epoch;
  int perm_valid;
  /* shared state, under mu */
  sd_slot slots[SEG_SLOTS];
  int cur;           /* the slot the caller waits for or holds; the other one prefetches */
  pthread_mutex_t mu;
  pthread_cond_t work_cv, done_cv;
  int stop;
  dsc_bad_files bad; /* bad files met, remembered across steps */
  pthread_t *threads;
  int n_threads;
};

/* Loads dataset image i and its label map (a dsc_bad_files_try_fn: ctx is an sd_try); a file
 * without a label map is bad. */
typedef struct sd_try {
  const dsc_dataset *ds;
  dsc_image *img;
  uint8_t **map;
} sd_try;

static dsc_status *sd_try_load(void *ctx, size_t i) {
  sd_try *t = ctx;
  *t->map = NULL;
  dsc_status *st = dsc_dataset_load(t->ds, i, t->img, NULL, t->map);
  if (!st && !*t->map) {
    dsc_image_free(t->img);
    st = dsc_errorf("%s: no label map", dsc_dataset_name(t->ds, i));
  }
  return st;
}

/* Prepares image k of slot s (unlocked; the slot's step, want and epoch are fixed meanwhile). */
static dsc_status *sd_make_image(dsc_seg_feeder *f, sd_slot *s, int k) {
  const dsc_seg_aug_config *a = &f->cfg.aug;
  const size_t px = (size_t)a->crop_w * (size_t)a->crop_h;
  dsc_image img = {0, 0, NULL};
  uint8_t *map = NULL;
  size_t used = 0;
  /* dataset image want[k] or, if it is bad, the next usable one; in strict mode the first bad
   * file is the error */
  DSC_TRY(dsc_bad_files_load_usable(&f->bad, s->want[k], sd_try_load, &(sd_try){f->ds, &img, &map}, &used));
  dsc_status *st = dsc_seg_augment(a, &img, map, f->cfg.seed, s->epoch, (uint32_t)used,
                                   s->batch.images + (size_t)k * px * 3, s->batch.labels + (size_t)k * px);
  if (st) st = dsc_status_wrap(st, "%s", dsc_dataset_name(f->ds, used));
  else s->batch.indices[k] = (uint32_t)used;
  dsc_image_free(&img);
  free(map);
  return st;
}

static int sd_slot_has_work(const dsc_seg_feeder *f, const sd_slot *s) {
  return s->assigned && !s->cancelled && !s->error && s->next < f->cfg.batch;
}

static void *sd_worker(void *arg) {
  dsc_seg_feeder *f = arg;
  pthread_mutex_lock(&f->mu);
  while (!f->stop) {
    sd_slot *s = &f->slots[f->cur];
    if (!sd_slot_has_work(f, s)) s = &f->slots[1 - f->cur];
    if (!sd_slot_has_work(f, s)) {
      pthread_cond_wait(&f->work_cv, &f->mu);
      continue;
    }
    int k = s->next++;
    s->in_flight++;
    pthread_mutex_unlock(&f->mu);
    dsc_status *st = sd_make_image(f, s, k);
    pthread_mutex_lock(&f->mu);
    s->in_flight--;
    if (st) {
      if (!s->error) s->error = st;
      else dsc_status_free(st);
    } else {
      s->done++;
    }
    pthread_cond_broadcast(&f->done_cv);
  }
  pthread_mutex_unlock(&f->mu);
  return NULL;
}

/* Stops handing out slot s's images and waits for those in flight (under mu); the slot is then
 * free to reassign. */
static void sd_cancel(dsc_seg_feeder *f, sd_slot *s) {
  s->cancelled = 1;
  while (s->in_flight > 0) pthread_cond_wait(&f->done_cv, &f->mu);
  dsc_status_free(s->error);
  s->error = NULL;
  s->assigned = 0;
}

/* Epoch e's permutation into f->perm (loader.h's rule), cached for the last epoch asked. */
static void sd_permutation(dsc_seg_feeder *f, uint32_t epoch) {
  if (f->perm_valid && f->perm_epoch == epoch) return;
  dsc_epoch_permutation(f->cfg.seed, epoch, f->n_images, f->perm);
  f->perm_epoch = epoch;
  f->perm_valid = 1;
}

/* Assigns step `step` to the free slot s (under mu). */
static void sd_assign(dsc_seg_feeder *f, sd_slot *s, int64_t step) {
  uint32_t epoch = (uint32_t)(step / f->per_epoch);
  size_t b = (size_t)(step % f->per_epoch), B = (size_t)f->cfg.batch;
  sd_permutation(f, epoch);
  for (size_t k = 0; k < B; k++) s->want[k] = f->perm[b * B + k];
  s->epoch = epoch;
  s->batch.step = step;
  s->assigned = 1;
  s->cancelled = 0;
  s->next = s->done = 0;
  s->error = NULL;
}

void dsc_seg_feeder_free(dsc_seg_feeder *f) {
  if (!f) return;
  if (f->threads) {
    pthread_mutex_lock(&f->mu);
    f->stop = 1;
    pthread_cond_broadcast(&f->work_cv);
    pthread_mutex_unlock(&f->mu);
    for (int t = 0; t < f->n_threads; t++) pthread_join(f->threads[t], NULL);
    free(f->threads);
  }
  pthread_mutex_destroy(&f->mu);
  pthread_cond_destroy(&f->work_cv);
  pthread_cond_destroy(&f->done_cv);
  for (int s = 0; s < SEG_SLOTS; s++) {
    free(f->slots[s].batch.images);
    free(f->slots[s].batch.labels);
    free(f->slots[s].batch.indices);
    free(f->slots[s].want);
    dsc_status_free(f->slots[s].error);
  }
  dsc_bad_files_free(&f->bad);
  free(f->perm);
  free(f);
}

dsc_status *dsc_seg_feeder_open(const dsc_dataset *ds, const dsc_seg_feeder_config *cfg,
                                dsc_seg_feeder **out) {
  *out = NULL;
  if (!ds || !cfg) return dsc_errorf("dsc_seg_feeder_open: NULL argument");
  const dsc_seg_aug_config *a = &cfg->aug;
  size_t n = dsc_dataset_size(ds);
  if (!dsc_dataset_has_label_maps(ds))
    return dsc_errorf("segmentation fine-tuning needs a dataset with label maps (format seg or cityscapes); "
                      "this one has none (first image: %s)", n ? dsc_dataset_name(ds, 0) : "none");
  if (n == 0) return dsc_errorf("empty dataset");
  if (cfg->batch < 1 || (size_t)cfg->batch > n)
    return dsc_errorf("batch must be in [1, %zu] (the dataset's size; got %d)", n, cfg->batch);
  if (cfg->threads < 1 || cfg->threads > SEG_MAX_THREADS)
    return dsc_errorf("threads must be in [1, %d] (got %d)", SEG_MAX_THREADS, cfg->threads);
  /* dsc_seg_augment's own checks, up front */
  if (a->scale_w < 1 || a->scale_h < 1 || a->crop_w < 1 || a->crop_h < 1 || !(a->ratio_min > 0) ||
      !(a->ratio_max >= a->ratio_min) || !isfinite(a->ratio_max))
    return dsc_errorf("bad segmentation augmentation config (scale %dx%d, ratio [%g, %g], crop %dx%d)", a->scale_w,
                      a->scale_h, a->ratio_min, a->ratio_max, a->crop_w, a->crop_h);
  if ((int64_t)a->crop_w * a->crop_h > DSC_IMAGE_MAX_PIXELS)
    return dsc_errorf("crop %dx%d is above the pixel limit of %lld", a->crop_w, a->crop_h,
                      (long long)DSC_IMAGE_MAX_PIXELS);
  dsc_seg_feeder *f = calloc(1, sizeof *f);
  if (!f) return dsc_errorf("out of memory");
  f->ds = ds;
  f->cfg = *cfg;
  f->n_images = n;
  f->per_epoch = (int64_t)(n / (size_t)cfg->batch);
  pthread_mutex_init(&f->mu, NULL);
  pthread_cond_init(&f->work_cv, NULL);
  pthread_cond_init(&f->done_cv, NULL);
  f->perm = malloc(n * sizeof *f->perm);
  int ok = f->perm && dsc_bad_files_init(&f->bad, ds, &f->mu, cfg->strict, "bad image file (strict)", cfg->warn,
                                          cfg->warn_ctx) == 0;
  const size_t B = (size_t)cfg->batch, px = (size_t)a->crop_w * (size_t)a->crop_h;
  for (int s = 0; ok && s < SEG_SLOTS; s++) {
    dsc_seg_batch *b = &f->slots[s].batch;
    b->n = cfg->batch;
    b->h = a->crop_h;
    b->w = a->crop_w;
    b->step = -1;
    b->images = malloc(B * px * 3 * sizeof(float));
    b->labels = malloc(B * px);
    b->indices = malloc(B * sizeof *b->indices);
    f->slots[s].want = malloc(B * sizeof *f->slots[s].want);
    ok = b->images && b->labels && b->indices && f->slots[s].want;
  }
  if (!ok) {
    dsc_seg_feeder_free(f);
    return dsc_errorf("out of memory for the feeder (%d slots of %d images of %dx%d)", SEG_SLOTS, cfg->batch,
                      a->crop_w, a->crop_h);
  }
  f->threads = calloc((size_t)cfg->threads, sizeof *f->threads);
  if (!f->threads) {
    dsc_seg_feeder_free(f);
    return dsc_errorf("out of memory");
  }
  for (int t = 0; t < cfg->threads; t++) {
    if (pthread_create(&f->threads[t], NULL, sd_worker, f) != 0) {
      dsc_seg_feeder_free(f);
      return dsc_errorf("cannot start feeder thread %d of %d", t + 1, cfg->threads);
    }
    f->n_threads++;
  }
  *out = f;
  return NULL;
}

int64_t dsc_seg_feeder_batches_per_epoch(const dsc_seg_feeder *f) { return f->per_epoch; }

dsc_status *dsc_seg_feeder_get(dsc_seg_feeder *f, int64_t step, const dsc_seg_batch **out) {
  *out = NULL;
  if (step < 0 || step / f->per_epoch >= (int64_t)UINT32_MAX)
    return dsc_errorf("step %lld: must be >= 0 and its epoch (step / %lld batches) below 2^32 - 1", (long long)step,
                      (long long)f->per_epoch);
  pthread_mutex_lock(&f->mu);
  /* the slot already holding (or preparing) `step`, else the current one after cancelling */
  int c = -1;
  for (int s = 0; s < SEG_SLOTS; s++)
    if (f->slots[s].assigned && !f->slots[s].cancelled && f->slots[s].batch.step == step) c = s;
  if (c < 0) {
    c = f->cur;
    sd_cancel(f, &f->slots[c]);
    sd_assign(f, &f->slots[c], step);
  }
  /* the other slot prefetches step + 1 (kept when it already does) */
  sd_slot *p = &f->slots[1 - c];
  if (!(p->assigned && !p->cancelled && p->batch.step == step + 1)) {
    sd_cancel(f, p);
    sd_assign(f, p, step + 1);
  }
  f->cur = c;
  pthread_cond_broadcast(&f->work_cv);
  sd_slot *s = &f->slots[c];
  while (s->in_flight > 0 || (!s->error && s->done < f->cfg.batch)) pthread_cond_wait(&f->done_cv, &f->mu);
  if (s->error) {
    dsc_status *st = dsc_errorf("step %lld: %s", (long long)step, s->error->msg);
    /* prepared again if asked again */
    sd_cancel(f, s);
    pthread_mutex_unlock(&f->mu);
    return st;
  }
  *out = &s->batch;
  pthread_mutex_unlock(&f->mu);
  return NULL;
}

size_t dsc_seg_feeder_bad_count(dsc_seg_feeder *f) { return dsc_bad_files_count(&f->bad); }

void dsc_seg_feeder_bad_file(dsc_seg_feeder *f, size_t i, const char **path, const char **reason) {
  dsc_bad_files_get(&f->bad, i, path, reason);
}

/* ---- evaluation images ---- */

void dsc_seg_eval_item_free(dsc_seg_eval_item *it) {
  if (!it) return;
  free(it->image);
  free(it->label);
  memset(it, 0, sizeof *it);
}

dsc_status *dsc_seg_eval_load(const dsc_dataset *ds, size_t i, int scale_w, int scale_h,
                              dsc_seg_eval_item *out) {
  memset(out, 0, sizeof *out);
  if (!dsc_dataset_has_label_maps(ds)) return dsc_errorf("segmentation evaluation needs a dataset with label maps");
  if (i >= dsc_dataset_size(ds))
    return dsc_errorf("image %zu outside the dataset (%zu images)", i, dsc_dataset_size(ds));
  if (scale_w < 0 || scale_h < 0 || (scale_w == 0) != (scale_h == 0))
    return dsc_errorf("evaluation scale %dx%d: both sides positive, or both 0 (no resize)", scale_w, scale_h);
  dsc_image img = {0, 0, NULL};
  uint8_t *map = NULL;
  DSC_TRY(dsc_dataset_load(ds, i, &img, NULL, &map));
  const char *name = dsc_dataset_name(ds, i);
  dsc_status *st = NULL;
  const int w = img.w, h = img.h;
  int nw = w, nh = h;
  if (!map) st = dsc_errorf("%s: no label map", name);
  if (!st && scale_w > 0) {
    double s_long = scale_w > scale_h ? scale_w : scale_h, s_short = scale_w < scale_h ? scale_w : scale_h;
    double f_long = s_long / (double)(w > h ? w : h), f_short = s_short / (double)(w < h ? w : h);
    double fac = f_long < f_short ? f_long : f_short;
    double dw = floor(w * fac + 0.5), dh = floor(h * fac + 0.5);
    if (dw * dh > (double)DSC_IMAGE_MAX_PIXELS || dw > SEG_MAX_SIDE || dh > SEG_MAX_SIDE)
      st = dsc_errorf("%s: a %dx%d image resized to %.0fx%.0f (scale %dx%d) is above the pixel limit of %lld", name,
                      w, h, dw, dh, scale_w, scale_h, (long long)DSC_IMAGE_MAX_PIXELS);
    nw = dw < 1 ? 1 : (int)dw;
    nh = dh < 1 ? 1 : (int)dh;
  }
  float *o = NULL;
  int *tap = NULL;
  uint8_t *rgb = NULL; /* one resized row */
  if (!st) {
    o = malloc((size_t)nw * (size_t)nh * 3 * sizeof *o);
    tap = malloc((size_t)nw * 3 * sizeof *tap);
    rgb = malloc((size_t)nw * 3);
    if (!o || !tap || !rgb) st = dsc_errorf("%s: out of memory for a %dx%d evaluation image", name, nw, nh);
  }
  if (st) {
    free(o);
    free(tap);
    free(rgb);
    free(map);
    dsc_image_free(&img);
    return st;
  }
  /* the whole image resized by dsc_seg_augment's resampler, normalized as its step (e) */
  dsc_seg_linear_taps(0, nw, w, nw, tap);
  for (int y = 0; y < nh; y++) {
    dsc_seg_linear_row(&img, y, nh, tap, nw, rgb);
    dsc_seg_normalize(rgb, (size_t)nw, o + (size_t)y * nw * 3);
  }
  free(tap);
  free(rgb);
  out->w = nw;
  out->h = nh;
  out->image = o;
  out->label_w = w;
  out->label_h = h;
  out->label = map;
  dsc_image_free(&img);
  return NULL;
}
