/* bad_files.h: the bad-file bookkeeping shared by the pretraining loader (loader.c) and the FCN
 * fine-tuning feeder (seg_data.c); private to src/data/.
 *
 * A bad image file is replaced by the next usable one in dataset order (wrapping around); the
 * file is reported once through `warn` (NULL: "dsc: warning: <msg>" on stderr), counted and
 * remembered, so later epochs skip it without decoding it again. With `strict` the first bad
 * file is an error instead and nothing is recorded. The owner's mutex `mu` guards the record;
 * every function below takes it itself.
 */
#ifndef DSC_DATA_BAD_FILES_H
#define DSC_DATA_BAD_FILES_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "dsc/dataset.h"
#include "dsc/status.h"

typedef struct dsc_bad_file {
  char *path;
  char *reason;
} dsc_bad_file;

typedef struct dsc_bad_files {
  const dsc_dataset *ds;
  pthread_mutex_t *mu;     /* the owner's lock, guarding the fields below */
  int strict;
  const char *strict_what; /* the strict-mode error's prefix (a string literal) */
  void (*warn)(void *ctx, const char *msg);
  void *warn_ctx;
  uint8_t *state;          /* per dataset image: 0 unknown, 1 usable, 2 bad */
  dsc_bad_file *list;
  size_t n, cap;
} dsc_bad_files;

/* Sets up the record of dataset `ds` (all images unknown). Returns 0, or -1 when out of memory.
 * dsc_bad_files_free is safe afterwards either way, and on a zeroed struct. */
int dsc_bad_files_init(dsc_bad_files *b, const dsc_dataset *ds, pthread_mutex_t *mu, int strict,
                       const char *strict_what, void (*warn)(void *ctx, const char *msg), void *warn_ctx);
void dsc_bad_files_free(dsc_bad_files *b);

/* Prepares dataset image i (called unlocked; an error means the file is bad); ctx is the
 * caller's. */
typedef dsc_status *(*dsc_bad_files_try_fn)(void *ctx, size_t i);

/* Prepares image `want` by try_fn or, if it is bad, the next usable one; *used gets its index.
 * Bad files met are recorded and warned about; under strict the first is the error. */
dsc_status *dsc_bad_files_load_usable(dsc_bad_files *b, size_t want, dsc_bad_files_try_fn try_fn, void *ctx,
                                      size_t *used);

/* How many bad files were recorded, and the i-th one (NULLs when i is out of range). */
size_t dsc_bad_files_count(dsc_bad_files *b);
void dsc_bad_files_get(dsc_bad_files *b, size_t i, const char **path, const char **reason);

#endif
