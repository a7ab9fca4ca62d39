/* export.c: `dsc export` -- a complete backbone from any weights file, written as torchvision
 * safetensors, a PyTorch .pth or a detectron2 .pkl (include/dsc/export.h).
 *
 * One path for every format: the source's backbone is loaded, exactly, into host blobs laid
 * out by a ResNet table of the detected architecture (the same table and loader as training
 * and evaluation), the tensors to write are collected in a safetensors writer under their
 * target names (torchvision's, or detectron2's), and the format's writer takes them from
 * there (the .pth and .pkl writers read an in-memory safetensors file).
 */
#include "dsc/export.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "dsc/detectron2.h"
#include "dsc/pth.h"
#include "dsc/safetensors.h"
#include "dsc/weights.h"

int dsc_export_format_from_name(const char *name, dsc_export_format *out) {
  static const char *names[] = {"torchvision", "pth", "detectron2"};
  for (int i = 0; i < 3; i++)
    if (name && !strcmp(name, names[i])) {
      *out = (dsc_export_format)i;
      return 0;
    }
  return -1;
}

/* Adds each tensor to the writer under detectron2's name; ctx is the writer. */
static dsc_status *add_detectron2_fn(void *ctx, const char *name, dsc_dtype dtype, int ndim,
                                     const int64_t *shape, void *data) {
  char d2[160];
  DSC_TRY(dsc_detectron2_name(name, d2, sizeof d2));
  return dsc_st_writer_add(ctx, d2, dtype, ndim, shape, data);
}

/* The provenance metadata (export.h). */
static dsc_status *add_provenance(dsc_st_writer *w, const dsc_safetensors *f,
                                  const dsc_export_config *c, const dsc_resnet_config *cfg) {
  char arch[16];
  snprintf(arch, sizeof arch, "resnet%d", cfg->depth);
  DSC_TRY(dsc_st_writer_meta(w, "format", "dsc-export"));
  DSC_TRY(dsc_st_writer_meta(w, "dsc_version", c->producer ? c->producer : "dsc"));
  DSC_TRY(dsc_st_writer_meta(w, "source", c->source));
  DSC_TRY(dsc_st_writer_meta(w, "encoder", c->momentum ? "momentum" : "online"));
  DSC_TRY(dsc_st_writer_meta(w, "arch", arch));
  DSC_TRY(dsc_st_writer_meta(w, "stem", cfg->small_stem ? "small" : "standard"));
  /* dsc checkpoint key -> provenance key */
  static const char *const from_ckpt[][2] = {
      {"method.name", "method"},     {"epoch", "epochs"},          {"step", "step"},
      {"total_steps", "total_steps"}, {"data.path", "dataset"},    {"data.format", "dataset_format"},
      {"data.images", "dataset_images"}, {"run.seed", "seed"},
  };
  /* an earlier export's provenance, carried over */
  static const char *const carried[] = {"method", "epochs", "step", "total_steps", "dataset",
                                        "dataset_format", "dataset_images", "seed"};
  int is_ckpt = dsc_st_meta(f, "method.name") != NULL;
  for (int i = 0; i < 8; i++) {
    const char *key = is_ckpt ? from_ckpt[i][1] : carried[i];
    const char *value = dsc_st_meta(f, is_ckpt ? from_ckpt[i][0] : carried[i]);
    if (value) DSC_TRY(dsc_st_writer_meta(w, key, value));
  }
  return NULL;
}

/* The I64 scalar `prefix`bn1.num_batches_tracked when the source has one, else 0. */
static int64_t source_batches_tracked(const dsc_safetensors *f, const char *prefix) {
  char name[160];
  snprintf(name, sizeof name, "%sbn1.num_batches_tracked", prefix);
  const dsc_st_tensor *t = dsc_st_find(f, name);
  int64_t v = 0;
  if (t && t->dtype == DSC_I64 && dsc_st_numel(t) == 1) memcpy(&v, dsc_st_data(f, t), sizeof v);
  return v;
}

static dsc_status *export_run(const dsc_export_config *c, dsc_export_summary *s,
                              dsc_safetensors *f, dsc_table *table, dsc_resnet *net,
                              float **hp, float **hb, dsc_st_writer **w) {
  if (c->momentum) {
    s->prefix = "momentum.backbone.";
    DSC_TRY(dsc_status_wrap(dsc_weights_detect_resnet_at(f, s->prefix, &s->cfg),
                            "--encoder momentum needs a dsc checkpoint"));
  } else {
    DSC_TRY(dsc_weights_detect_resnet(f, &s->cfg, &s->prefix));
  }
  DSC_TRY(dsc_resnet_init(net, NULL, &s->cfg, table, ""));
  *hp = calloc(table->param_numel ? table->param_numel : 1, sizeof(float));
  *hb = calloc(table->buffer_numel ? table->buffer_numel : 1, sizeof(float));
  if (!*hp || !*hb) return dsc_errorf("out of memory for the backbone");
  DSC_TRY(dsc_weights_load(f, table, "", s->prefix, *hp, *hb, 0));
  const char *step = dsc_st_meta(f, "step");
  s->step = step ? atoll(step) : -1;

  DSC_TRY(dsc_st_writer_new(w));
  int64_t tracked = source_batches_tracked(f, s->prefix);
  if (c->format == DSC_EXPORT_DETECTRON2)
    DSC_TRY(dsc_weights_for_each(table, "", "", 0, *hp, *hb, NULL, add_detectron2_fn, *w));
  else
    DSC_TRY(dsc_weights_add(*w, table, "", "", *hp, *hb, &tracked));
  DSC_TRY(add_provenance(*w, f, c, &s->cfg));

  if (c->format == DSC_EXPORT_TORCHVISION) {
    DSC_TRY(dsc_st_writer_save(*w, c->out));
  } else {
    dsc_safetensors *mem = NULL;
    DSC_TRY(dsc_st_writer_open(*w, c->out, &mem));
    s->tensors = dsc_st_count(mem);
    dsc_status *st = c->format == DSC_EXPORT_PTH ? dsc_pth_write(c->out, mem)
                                                 : dsc_detectron2_write(c->out, mem, "dsc");
    dsc_st_close(mem);
    DSC_TRY(st);
  }
  if (c->format == DSC_EXPORT_TORCHVISION) {
    dsc_safetensors *back = NULL;
    DSC_TRY(dsc_st_open(c->out, &back)); /* what was written is a valid file */
    s->tensors = dsc_st_count(back);
    dsc_st_close(back);
  }
  struct stat sb;
  if (stat(c->out, &sb) == 0) s->bytes = (size_t)sb.st_size;
  return NULL;
}

dsc_status *dsc_export(const dsc_export_config *c, dsc_export_summary *summary) {
  dsc_export_summary s;
  memset(&s, 0, sizeof s);
  s.step = -1;
  if (!c->source || !c->out) return dsc_errorf("dsc_export: a source and an output file are needed");
  struct stat a, b;
  if (!strcmp(c->source, c->out) ||
      (stat(c->source, &a) == 0 && stat(c->out, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino))
    return dsc_errorf("--out %s is the source itself: choose another file", c->out);
  dsc_safetensors *f = NULL;
  DSC_TRY(dsc_weights_open(c->source, &f));
  dsc_table table = {0};
  dsc_resnet net;
  memset(&net, 0, sizeof net);
  float *hp = NULL, *hb = NULL;
  dsc_st_writer *w = NULL;
  dsc_status *st = export_run(c, &s, f, &table, &net, &hp, &hb, &w);
  dsc_st_writer_free(w);
  free(hp);
  free(hb);
  dsc_resnet_free(&net);
  dsc_table_free(&table);
  dsc_st_close(f);
  if (!st && summary) *summary = s;
  return st;
}
