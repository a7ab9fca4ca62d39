/* params.h: one table of named tensors describing contiguous blobs (DESIGN.md practice 1).
 *
 * A model registers each of its tensors once, with PyTorch's name and shape, as either a
 * trainable PARAMETER or a BUFFER (BN running statistics). Offsets are in floats into the
 * blob of that role: all parameters live in one buffer, their gradients in a second of the
 * same size, SGD momentum in a third; buffers in a fourth. EMA, zero-grad, SGD, checkpoint
 * I/O and export are then one loop each over a blob or over the table.
 */
#ifndef DSC_PARAMS_H
#define DSC_PARAMS_H

#include <stddef.h>
#include <stdint.h>

#include "dsc/status.h"

typedef enum dsc_tensor_role {
  DSC_ROLE_PARAM,  /* trainable: has a gradient and optimizer state */
  DSC_ROLE_BUFFER, /* running statistics: saved, not trained */
} dsc_tensor_role;

/* What a tensor is, for initialization and export. */
typedef enum dsc_tensor_kind {
  DSC_KIND_CONV_WEIGHT,  /* [O,I,kh,kw] */
  DSC_KIND_BN_WEIGHT,    /* gamma [C] */
  DSC_KIND_BN_BIAS,      /* beta [C] */
  DSC_KIND_BN_MEAN,      /* running_mean [C] */
  DSC_KIND_BN_VAR,       /* running_var [C] */
  DSC_KIND_LINEAR_WEIGHT,/* [O,I] */
  DSC_KIND_BIAS,         /* bias of a conv or linear layer [O] */
  DSC_KIND_OTHER,
} dsc_tensor_kind;

typedef struct dsc_tensor_entry {
  char name[96];
  dsc_tensor_role role;
  dsc_tensor_kind kind;
  int ndim;
  int64_t shape[4];
  size_t offset; /* in floats, into the blob of its role */
  size_t numel;
} dsc_tensor_entry;

typedef struct dsc_table {
  dsc_tensor_entry *entries;
  int count, cap;
  size_t param_numel;  /* floats in the parameter blob (= gradient, momentum blobs) */
  size_t buffer_numel; /* floats in the buffer blob */
} dsc_table;

/* Appends a tensor; returns its offset in *offset (may be NULL). Names must be unique. */
dsc_status *dsc_table_add(dsc_table *t, const char *name, dsc_tensor_role role,
                          dsc_tensor_kind kind, int ndim, const int64_t *shape, size_t *offset);
/* NULL if absent. */
const dsc_tensor_entry *dsc_table_find(const dsc_table *t, const char *name);
void dsc_table_free(dsc_table *t);

#endif
