/* params.c: the named-tensor table over role blobs (include/dsc/params.h). */
#include "dsc/params.h"

#include <stdlib.h>
#include <string.h>

dsc_status *dsc_table_add(dsc_table *t, const char *name, dsc_tensor_role role,
                          dsc_tensor_kind kind, int ndim, const int64_t *shape, size_t *offset) {
  if (strlen(name) >= sizeof t->entries[0].name)
    return dsc_errorf("tensor name too long: %s", name);
  if (ndim < 0 || ndim > 4) return dsc_errorf("tensor %s: %d dimensions (at most 4)", name, ndim);
  if (dsc_table_find(t, name)) return dsc_errorf("tensor %s registered twice", name);
  if (t->count == t->cap) {
    int cap = t->cap ? 2 * t->cap : 64;
    dsc_tensor_entry *e = realloc(t->entries, (size_t)cap * sizeof *e);
    if (!e) return dsc_errorf("out of memory registering tensor %s", name);
    t->entries = e;
    t->cap = cap;
  }
  dsc_tensor_entry *e = &t->entries[t->count++];
  memset(e, 0, sizeof *e);
  strcpy(e->name, name);
  e->role = role;
  e->kind = kind;
  e->ndim = ndim;
  e->numel = 1;
  for (int i = 0; i < ndim; i++) {
    e->shape[i] = shape[i];
    e->numel *= (size_t)shape[i];
  }
  /* Keep every tensor 16-float (64-byte) aligned inside its blob for vector loads. */
  size_t *total = role == DSC_ROLE_PARAM ? &t->param_numel : &t->buffer_numel;
  e->offset = *total;
  *total += (e->numel + 15) & ~(size_t)15;
  if (offset) *offset = e->offset;
  return NULL;
}

const dsc_tensor_entry *dsc_table_find(const dsc_table *t, const char *name) {
  for (int i = 0; i < t->count; i++)
    if (strcmp(t->entries[i].name, name) == 0) return &t->entries[i];
  return NULL;
}

void dsc_table_free(dsc_table *t) {
  free(t->entries);
  memset(t, 0, sizeof *t);
}
