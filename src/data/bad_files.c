/* bad_files.c: bad image files replaced by the next usable one, warned about once and
 * remembered (bad_files.h). */
#include "data/bad_files.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void bf_default_warn(void *ctx, const char *msg) {
  (void)ctx;
  fprintf(stderr, "dsc: warning: %s\n", msg);
}

int dsc_bad_files_init(dsc_bad_files *b, const dsc_dataset *ds, pthread_mutex_t *mu, int strict,
                       const char *strict_what, void (*warn)(void *ctx, const char *msg), void *warn_ctx) {
  memset(b, 0, sizeof *b);
  b->ds = ds;
  b->mu = mu;
  b->strict = strict;
  b->strict_what = strict_what;
  b->warn = warn;
  b->warn_ctx = warn_ctx;
  b->state = calloc(dsc_dataset_size(ds), 1);
  return b->state ? 0 : -1;
}

void dsc_bad_files_free(dsc_bad_files *b) {
  for (size_t i = 0; i < b->n; i++) {
    free(b->list[i].path);
    free(b->list[i].reason);
  }
  free(b->list);
  free(b->state);
  memset(b, 0, sizeof *b);
}

/* Records bad image i (under mu), warns once. Returns an error under strict mode or when out
 * of memory; takes `why`. */
static dsc_status *bf_mark_bad(dsc_bad_files *b, size_t i, dsc_status *why) {
  if (b->strict) return dsc_status_wrap(why, "%s", b->strict_what);
  if (b->state[i] == 2) {
    dsc_status_free(why);
    return NULL;
  }
  b->state[i] = 2;
  if (b->n == b->cap) {
    size_t cap = b->cap ? 2 * b->cap : 16;
    dsc_bad_file *list = realloc(b->list, cap * sizeof *list);
    if (!list) {
      dsc_status_free(why);
      return dsc_errorf("out of memory recording bad files");
    }
    b->list = list;
    b->cap = cap;
  }
  dsc_bad_file *e = &b->list[b->n];
  e->path = strdup(dsc_dataset_name(b->ds, i));
  e->reason = strdup(why->msg);
  if (!e->path || !e->reason) {
    free(e->path);
    free(e->reason);
    dsc_status_free(why);
    return dsc_errorf("out of memory recording bad files");
  }
  b->n++;
  char msg[1200];
  snprintf(msg, sizeof msg, "skipping bad image (replaced by the next usable one): %s", why->msg);
  dsc_status_free(why);
  (b->warn ? b->warn : bf_default_warn)(b->warn_ctx, msg);
  return NULL;
}

dsc_status *dsc_bad_files_load_usable(dsc_bad_files *b, size_t want, dsc_bad_files_try_fn try_fn, void *ctx,
                                      size_t *used) {
  const size_t n = dsc_dataset_size(b->ds);
  for (size_t t = 0; t < n; t++) {
    size_t i = (want + t) % n;
    pthread_mutex_lock(b->mu);
    int known_bad = b->state[i] == 2;
    pthread_mutex_unlock(b->mu);
    if (known_bad) continue;
    dsc_status *st = try_fn(ctx, i);
    pthread_mutex_lock(b->mu);
    if (!st) {
      b->state[i] = 1;
      pthread_mutex_unlock(b->mu);
      *used = i;
      return NULL;
    }
    st = bf_mark_bad(b, i, st);
    pthread_mutex_unlock(b->mu);
    if (st) return st;
  }
  return dsc_errorf("no usable image in the dataset (all %zu files are bad; first: %s)", n,
                    dsc_dataset_name(b->ds, 0));
}

size_t dsc_bad_files_count(dsc_bad_files *b) {
  pthread_mutex_lock(b->mu);
  size_t n = b->n;
  pthread_mutex_unlock(b->mu);
  return n;
}

void dsc_bad_files_get(dsc_bad_files *b, size_t i, const char **path, const char **reason) {
  pthread_mutex_lock(b->mu);
  *path = i < b->n ? b->list[i].path : NULL;
  *reason = i < b->n ? b->list[i].reason : NULL;
  pthread_mutex_unlock(b->mu);
}
