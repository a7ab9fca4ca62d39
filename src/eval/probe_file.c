/* probe_file.c: the linear probe's raw-space classifier as a safetensors file (include/dsc/probe_file.h):
 * written by `dsc eval --save-probe`, read by `dsc viz gradcam --target probe`. */
#include "dsc/probe_file.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsc/safetensors.h"

void dsc_probe_file_free(dsc_probe_file *p) {
  if (!p) return;
  for (int k = 0; p->class_names && k < p->classes; k++) free(p->class_names[k]);
  free(p->class_names);
  free(p->weight);
  free(p->bias);
  memset(p, 0, sizeof *p);
}

dsc_status *dsc_probe_file_save(const char *path, const dsc_probe_file *p, int n_meta,
                                const char *const *keys, const char *const *values) {
  if (!p || p->classes < 1 || p->c < 1 || !p->weight || !p->bias || !p->class_names)
    return dsc_errorf("%s: no probe to save (classes, weight, bias and class names are required)", path);
  json_t *names = json_array();
  for (int k = 0; k < p->classes; k++) json_array_append_new(names, json_string(p->class_names[k]));
  char *names_text = json_dumps(names, JSON_COMPACT);
  json_decref(names);
  char classes[32];
  snprintf(classes, sizeof classes, "%d", p->classes);
  dsc_st_writer *w = NULL;
  int64_t wshape[2] = {p->classes, p->c}, bshape[1] = {p->classes};
  dsc_status *st = names_text ? dsc_st_writer_new(&w) : dsc_errorf("%s: out of memory", path);
  if (!st) st = dsc_st_writer_add(w, "weight", DSC_F32, 2, wshape, p->weight);
  if (!st) st = dsc_st_writer_add(w, "bias", DSC_F32, 1, bshape, p->bias);
  if (!st) st = dsc_st_writer_meta(w, "format", "dsc linear probe");
  if (!st) st = dsc_st_writer_meta(w, "features", "global average pool of C5 (raw, not standardized)");
  if (!st) st = dsc_st_writer_meta(w, "classes", classes);
  if (!st) st = dsc_st_writer_meta(w, "class_names", names_text);
  for (int i = 0; !st && i < n_meta; i++) st = dsc_st_writer_meta(w, keys[i], values[i]);
  if (!st) st = dsc_st_writer_save(w, path);
  dsc_st_writer_free(w);
  free(names_text);
  return st ? dsc_status_wrap(st, "writing the probe %s", path) : NULL;
}

/* class_names: a JSON list of strings, or a comma-joined string. */
static dsc_status *parse_names(const char *path, const char *text, int classes, char ***out) {
  char **names = calloc((size_t)classes, sizeof *names);
  if (!names) return dsc_errorf("%s: out of memory", path);
  int n = 0;
  dsc_status *st = NULL;
  json_t *j = text[0] == '[' ? json_loads(text, 0, NULL) : NULL;
  if (text[0] == '[') {
    if (!json_is_array(j)) st = dsc_errorf("%s: metadata class_names is not a JSON list", path);
    for (size_t i = 0; !st && i < json_array_size(j); i++) {
      const char *s = json_string_value(json_array_get(j, i));
      if (!s) st = dsc_errorf("%s: metadata class_names[%zu] is not a string", path, i);
      else if (n == classes) n++;
      else if (!(names[n++] = strdup(s))) st = dsc_errorf("%s: out of memory", path);
    }
  } else {
    for (const char *p = text; !st;) {
      size_t len = strcspn(p, ",");
      if (n == classes) n++;
      else if (!(names[n++] = strndup(p, len))) st = dsc_errorf("%s: out of memory", path);
      if (!p[len] || n > classes) break;
      p += len + 1;
    }
  }
  json_decref(j);
  if (!st && n != classes)
    st = dsc_errorf("%s: metadata class_names names %s%d class(es), but weight has %d rows", path,
                    n > classes ? "more than " : "", n > classes ? classes : n, classes);
  if (st) {
    for (int k = 0; k < classes; k++) free(names[k]);
    free(names);
    return st;
  }
  *out = names;
  return NULL;
}

static dsc_status *load(const char *path, dsc_probe_file *out) {
  dsc_safetensors *f = NULL;
  DSC_TRY(dsc_st_open(path, &f));
  const dsc_st_tensor *w = dsc_st_find(f, "weight"), *b = dsc_st_find(f, "bias");
  dsc_status *st = NULL;
  if (!w || !b)
    st = dsc_errorf("%s: not a linear probe: it needs tensors weight [K, C] and bias [K] (has %s%s)", path,
                    w ? "weight" : "no weight", b ? ", bias" : ", no bias");
  else if (w->ndim != 2 || w->shape[0] < 1 || w->shape[1] < 1 || w->shape[0] > 100000 || w->shape[1] > 1000000)
    st = dsc_errorf("%s: weight must be [K, C] with K, C >= 1", path);
  else if (b->ndim != 1 || b->shape[0] != w->shape[0])
    st = dsc_errorf("%s: bias must be [K] = [%lld] like weight's rows", path, (long long)w->shape[0]);
  if (!st) {
    out->classes = (int)w->shape[0], out->c = (int)w->shape[1];
    out->weight = malloc((size_t)out->classes * out->c * sizeof *out->weight);
    out->bias = malloc((size_t)out->classes * sizeof *out->bias);
    if (!out->weight || !out->bias) st = dsc_errorf("%s: out of memory", path);
  }
  if (!st) st = dsc_st_read_f32(f, "weight", out->weight, (size_t)out->classes * out->c);
  if (!st) st = dsc_st_read_f32(f, "bias", out->bias, (size_t)out->classes);
  const char *names = st ? NULL : dsc_st_meta(f, "class_names");
  if (names) st = parse_names(path, names, out->classes, &out->class_names);
  dsc_st_close(f);
  return st;
}

dsc_status *dsc_probe_file_load(const char *path, dsc_probe_file *out) {
  memset(out, 0, sizeof *out);
  dsc_status *st = load(path, out);
  if (st) dsc_probe_file_free(out);
  return st;
}

dsc_status *dsc_probe_file_class(const dsc_probe_file *p, const char *spec, int *index) {
  for (int k = 0; p->class_names && k < p->classes; k++)
    if (!strcmp(p->class_names[k], spec)) {
      *index = k;
      return NULL;
    }
  char *end = NULL;
  long v = strtol(spec, &end, 10);
  if (*spec >= '0' && *spec <= '9' && end && !*end && v >= 0 && v < p->classes) {
    *index = (int)v;
    return NULL;
  }
  char list[512] = "";
  size_t used = 0;
  for (int k = 0; p->class_names && k < p->classes && used + 8 < sizeof list; k++)
    used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", k ? ", " : "", p->class_names[k]);
  if (used >= sizeof list) memcpy(list + sizeof list - 5, "...", 4);
  return dsc_errorf("--class %s: not a class of the probe (%d classes: index 0..%d%s%s%s)", spec, p->classes,
                    p->classes - 1, p->class_names ? " or one of " : "", list, "");
}

void dsc_probe_file_logits(const dsc_probe_file *p, const float *x, double *logits) {
  for (int k = 0; k < p->classes; k++) {
    double s = p->bias[k];
    for (int j = 0; j < p->c; j++) s += (double)p->weight[(size_t)k * p->c + j] * x[j];
    logits[k] = s;
  }
}
