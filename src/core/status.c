/* status.c: heap-allocated error values (see include/dsc/status.h). */
#include "dsc/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static dsc_status out_of_memory = {"out of memory while reporting an error"};

dsc_status *dsc_errorf(const char *fmt, ...) {
  dsc_status *st = malloc(sizeof *st);
  if (!st) return &out_of_memory;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(st->msg, sizeof st->msg, fmt, ap);
  va_end(ap);
  return st;
}

dsc_status *dsc_status_wrap(dsc_status *inner, const char *fmt, ...) {
  if (!inner || inner == &out_of_memory) return inner;
  char prefix[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(prefix, sizeof prefix, fmt, ap);
  va_end(ap);
  /* prefix + ": " + old message, truncated to the buffer. */
  char joined[sizeof inner->msg];
  size_t p = strlen(prefix), m = strlen(inner->msg);
  if (p > sizeof joined - 3) p = sizeof joined - 3;
  memcpy(joined, prefix, p);
  memcpy(joined + p, ": ", 2);
  if (m > sizeof joined - 1 - p - 2) m = sizeof joined - 1 - p - 2;
  memcpy(joined + p + 2, inner->msg, m);
  joined[p + 2 + m] = 0;
  memcpy(inner->msg, joined, sizeof joined);
  return inner;
}

void dsc_status_free(dsc_status *st) {
  if (st && st != &out_of_memory) free(st);
}
