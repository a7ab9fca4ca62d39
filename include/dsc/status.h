/* status.h: errors as values.
 *
 * Every library function that can fail returns a `dsc_status *`: NULL means success,
 * anything else is a heap-allocated error whose message names the file, tensor or option
 * at fault. The caller either returns it upward (DSC_TRY), adds context (dsc_status_wrap),
 * or reports it and frees it. Only the CLI decides to exit.
 */
#ifndef DSC_STATUS_H
#define DSC_STATUS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dsc_status {
  char msg[1024];
} dsc_status;

/* A new error with a printf-style message. Never returns NULL (falls back to a static
 * out-of-memory error that dsc_status_free recognises). */
dsc_status *dsc_errorf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Prefixes `inner`'s message with context ("loading x.safetensors: <inner>") and returns it.
 * Passing NULL returns NULL, so it can wrap any call's result. */
dsc_status *dsc_status_wrap(dsc_status *inner, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

void dsc_status_free(dsc_status *st);

/* Returns the callee's error to our caller unchanged. */
#define DSC_TRY(expr)                 \
  do {                                \
    dsc_status *dsc_try_st_ = (expr); \
    if (dsc_try_st_) return dsc_try_st_; \
  } while (0)

/* Internal invariant violated: an error naming the source line (used by backends for
 * failures of the libraries they wrap, e.g. oneDNN status codes). */
#define DSC_ERR_AT(...) dsc_status_wrap(dsc_errorf(__VA_ARGS__), "%s:%d", __FILE__, __LINE__)

#ifdef __cplusplus
}
#endif

#endif
