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

#include "dsc/rng.h"

#define SEG_SLOTS 2
#define SEG_MAX_THREADS 256
#define SEG_MAX_SIDE (1 << 30)

typedef struct sd_bad {
  char *path;
  char *reason;
} sd_bad;

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
  uint8_t *state;    /* per dataset image: 0 unknown, 1 usable, 2 bad */
  sd_bad *bad;
  size_t n_bad, cap_bad;
  pthread_t *threads;
  int n_threads;
};

static void sd_default_warn(void *ctx, const char *msg) {
  (void)ctx;
  fprintf(stderr, "dsc: warning: %s\n", msg);
}

/* Records bad image i (under mu), warns once. Returns an error under strict mode or when out
 * of memory; takes `why`. */
static dsc_status *sd_mark_bad(dsc_seg_feeder *f, size_t i, dsc_status *why) {
  if (f->cfg.strict) return dsc_status_wrap(why, "bad image file (strict)");
  if (f->state[i] == 2) {
    dsc_status_free(why);
    return NULL;
  }
  f->state[i] = 2;
  if (f->n_bad == f->cap_bad) {
    size_t cap = f->cap_bad ? 2 * f->cap_bad : 16;
    sd_bad *b = realloc(f->bad, cap * sizeof *b);
    if (!b) {
      dsc_status_free(why);
      return dsc_errorf("out of memory recording bad files");
    }
    f->bad = b;
    f->cap_bad = cap;
  }
  sd_bad *b = &f->bad[f->n_bad];
  b->path = strdup(dsc_dataset_name(f->ds, i));
  b->reason = strdup(why->msg);
  if (!b->path || !b->reason) {
    free(b->path);
    free(b->reason);
    dsc_status_free(why);
    return dsc_errorf("out of memory recording bad files");
  }
  f->n_bad++;
  char msg[1200];
  snprintf(msg, sizeof msg, "skipping bad image (replaced by the next usable one): %s", why->msg);
  dsc_status_free(why);
  (f->cfg.warn ? f->cfg.warn : sd_default_warn)(f->cfg.warn_ctx, msg);
  return NULL;
}

/* Loads dataset image `want` and its label map or, if it is bad, the next usable one; *used
 * gets its index. In strict mode the first bad file is the error. */
static dsc_status *sd_load_usable(dsc_seg_feeder *f, size_t want, dsc_image *img, uint8_t **map,
                                  size_t *used) {
  for (size_t t = 0; t < f->n_images; t++) {
    size_t i = (want + t) % f->n_images;
    pthread_mutex_lock(&f->mu);
    int known_bad = f->state[i] == 2;
    pthread_mutex_unlock(&f->mu);
    if (known_bad) continue;
    *map = NULL;
    dsc_status *st = dsc_dataset_load(f->ds, i, img, NULL, map);
    if (!st && !*map) {
      dsc_image_free(img);
      st = dsc_errorf("%s: no label map", dsc_dataset_name(f->ds, i));
    }
    pthread_mutex_lock(&f->mu);
    if (!st) {
      f->state[i] = 1;
      pthread_mutex_unlock(&f->mu);
      *used = i;
      return NULL;
    }
    st = sd_mark_bad(f, i, st);
    pthread_mutex_unlock(&f->mu);
    if (st) return st;
  }
  return dsc_errorf("no usable image in the dataset (all %zu files are bad; first: %s)", f->n_images,
                    dsc_dataset_name(f->ds, 0));
}

/* Prepares image k of slot s (unlocked; the slot's step, want and epoch are fixed meanwhile). */
static dsc_status *sd_make_image(dsc_seg_feeder *f, sd_slot *s, int k) {
  const dsc_seg_aug_config *a = &f->cfg.aug;
  const size_t px = (size_t)a->crop_w * (size_t)a->crop_h;
  dsc_image img = {0, 0, NULL};
  uint8_t *map = NULL;
  size_t used = 0;
  DSC_TRY(sd_load_usable(f, s->want[k], &img, &map, &used));
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
  size_t n = f->n_images;
  for (size_t i = 0; i < n; i++) f->perm[i] = (uint32_t)i;
  for (size_t i = n - 1; i > 0; i--) {
    double u = dsc_rng_uniform(f->cfg.seed, DSC_RNG_SHUFFLE, epoch, (uint32_t)i, 0);
    size_t j = (size_t)(u * (double)(i + 1));
    if (j > i) j = i;
    uint32_t t = f->perm[i];
    f->perm[i] = f->perm[j];
    f->perm[j] = t;
  }
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
  for (size_t i = 0; i < f->n_bad; i++) {
    free(f->bad[i].path);
    free(f->bad[i].reason);
  }
  free(f->bad);
  free(f->state);
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
  f->state = calloc(n, 1);
  int ok = f->perm && f->state;
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

size_t dsc_seg_feeder_bad_count(dsc_seg_feeder *f) {
  pthread_mutex_lock(&f->mu);
  size_t n = f->n_bad;
  pthread_mutex_unlock(&f->mu);
  return n;
}

void dsc_seg_feeder_bad_file(dsc_seg_feeder *f, size_t i, const char **path, const char **reason) {
  pthread_mutex_lock(&f->mu);
  *path = i < f->n_bad ? f->bad[i].path : NULL;
  *reason = i < f->n_bad ? f->bad[i].reason : NULL;
  pthread_mutex_unlock(&f->mu);
}

/* ---- evaluation images ---- */

/* OpenCV INTER_LINEAR taps of destination index d: s0, s1 and 11-bit weights w0 + w1 = 2048
 * (the same arithmetic as seg_augment.c's resampler). */
static void sd_linear(int d, int src, int dst, int *s0, int *s1, int *w1) {
  double scale = (double)src / (double)dst;
  float f = (float)((d + 0.5) * scale - 0.5);
  int s = (int)floorf(f);
  f -= (float)s;
  if (s < 0) f = 0, s = 0;
  if (s >= src - 1) f = 0, s = src - 1;
  *s0 = s;
  *s1 = s + 1 < src ? s + 1 : src - 1;
  *w1 = (int)lrintf(f * 2048.0f);
}

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
  if (!st) {
    o = malloc((size_t)nw * (size_t)nh * 3 * sizeof *o);
    tap = malloc((size_t)nw * 3 * sizeof *tap);
    if (!o || !tap) st = dsc_errorf("%s: out of memory for a %dx%d evaluation image", name, nw, nh);
  }
  if (st) {
    free(o);
    free(tap);
    free(map);
    dsc_image_free(&img);
    return st;
  }
  /* Normalize as dsc_seg_augment step (e): (v - 255 * mean) / (255 * std) */
  float mean[3], std[3];
  for (int c = 0; c < 3; c++) {
    mean[c] = (float)(255.0 * dsc_image_mean[c]);
    std[c] = (float)(255.0 * dsc_image_std[c]);
  }
  for (int x = 0; x < nw; x++) sd_linear(x, w, nw, &tap[3 * x], &tap[3 * x + 1], &tap[3 * x + 2]);
  for (int y = 0; y < nh; y++) {
    int y0, y1, wy1;
    sd_linear(y, h, nh, &y0, &y1, &wy1);
    const int64_t wy0 = 2048 - wy1;
    const uint8_t *r0 = img.rgb + (size_t)y0 * w * 3, *r1 = img.rgb + (size_t)y1 * w * 3;
    float *row = o + (size_t)y * nw * 3;
    for (int x = 0; x < nw; x++) {
      const int x0 = 3 * tap[3 * x], x1 = 3 * tap[3 * x + 1];
      const int64_t wx1 = tap[3 * x + 2], wx0 = 2048 - wx1;
      for (int c = 0; c < 3; c++) {
        int64_t p = r0[x0 + c] * wx0 + r0[x1 + c] * wx1, q = r1[x0 + c] * wx0 + r1[x1 + c] * wx1;
        uint8_t v = (uint8_t)((p * wy0 + q * wy1 + ((int64_t)1 << 21)) >> 22);
        row[3 * x + c] = ((float)v - mean[c]) / std[c];
      }
    }
  }
  free(tap);
  out->w = nw;
  out->h = nh;
  out->image = o;
  out->label_w = w;
  out->label_h = h;
  out->label = map;
  dsc_image_free(&img);
  return NULL;
}
