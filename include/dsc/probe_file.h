/* probe_file.h: the linear probe of `dsc eval linear` as a file — the classifier in RAW pooled-feature
 * space, written by `dsc eval --save-probe FILE` and read by `dsc viz gradcam --target probe`
 * (docs/eval.md, docs/viz.md).
 *
 * The probe of include/dsc/eval.h trains W, b on standardized features ((x - mu) / sd with the train
 * set's per-channel mean and std, sd floored at 1e-6) and predicts with the folded form
 * W' = W / sd, b' = b - W' mu (src/eval/probes.c), so that logits = W' x + b' on the raw global-average-
 * pooled C5 x. The file holds exactly those float32 W', b':
 *   tensors   weight [K, C] F32, bias [K] F32
 *   metadata  format = "dsc linear probe", features = "global average pool of C5 (raw, not
 *             standardized)", classes = K, class_names = a JSON list of the K class names in index
 *             order (the imagefolder's class folders), plus what the caller adds (weights, size, ...).
 * Reading accepts any float dtype (converted) and class_names as a JSON list or a comma-joined string,
 * or none (then classes are chosen by index only).
 */
#ifndef DSC_PROBE_FILE_H
#define DSC_PROBE_FILE_H

#include <stdint.h>

#include "dsc/eval.h"
#include "dsc/status.h"

/* dsc_linear_probe (eval.h), also handing out the raw-space classifier that its predictions used:
 * raw_weight (classes, d) and raw_bias (classes), float32, either may be NULL. */
dsc_status *dsc_linear_probe_fit(dsc_backend *be, const dsc_probe_config *cfg, int64_t n_train,
                                 int64_t n_test, int d, int classes, const float *train,
                                 const int32_t *train_labels, const float *test,
                                 const int32_t *test_labels, int32_t *test_pred,
                                 dsc_linear_probe_result *out, float *raw_weight,
                                 float *raw_bias);

typedef struct dsc_probe_file {
  int classes, c;
  float *weight;      /* (classes, c) */
  float *bias;        /* (classes) */
  char **class_names; /* (classes) strings, or NULL when the file names none */
} dsc_probe_file;

/* Writes p (class_names required) with the metadata above and (keys[i], values[i]) pairs. */
dsc_status *dsc_probe_file_save(const char *path, const dsc_probe_file *p, int n_meta,
                                const char *const *keys, const char *const *values);
/* Reads a probe file; errors name the file and what is wrong (missing tensor, shapes, a
 * class_names entry count other than K). */
dsc_status *dsc_probe_file_load(const char *path, dsc_probe_file *out);
/* The class index of `spec`: a class name of the file, else a decimal index in [0, classes).
 * Errors list the classes. */
dsc_status *dsc_probe_file_class(const dsc_probe_file *p, const char *spec, int *index);
/* Raw-space logits of one pooled feature row x (c): logits[k] = weight[k] . x + bias[k], double. */
void dsc_probe_file_logits(const dsc_probe_file *p, const float *x, double *logits);
void dsc_probe_file_free(dsc_probe_file *p);

#endif
