/* fcn_eval.c: mmsegmentation's test protocol for the FCN model (include/dsc/fcn.h, "evaluation"):
 * whole-image or sliding-window inference, logits resized back to the label map, argmax, confusion,
 * mIoU / per-class IoU / pixel accuracy (dsc_seg_scores). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsc/fcn.h"
#include "dsc/seg_data.h"

/* Whole-image inference: one forward of the image at its size. */
static dsc_status *infer_whole(dsc_fcn *m, const float *x_host, int h, int w, float *out) {
  dsc_backend *be = m->be;
  float *x = NULL;
  const size_t bytes = (size_t)h * w * 3 * sizeof(float);
  DSC_TRY(be->alloc(be, bytes, (void **)&x));
  dsc_status *st = be->upload(be, x, x_host, bytes);
  if (!st) st = dsc_fcn_predict(m, x, 1, h, w, out);
  be->free(be, x);
  return st;
}

dsc_status *dsc_fcn_infer(dsc_fcn *m, const float *x_host, int h, int w, const dsc_fcn_eval_config *cfg,
                          float *out) {
  if (!cfg->slide) return infer_whole(m, x_host, h, w, out);
  const int K = m->cfg.classes, cw = cfg->crop_w, ch = cfg->crop_h, sw = cfg->stride_w, sh = cfg->stride_h;
  if (cw < 1 || ch < 1 || sw < 1 || sh < 1)
    return dsc_errorf("sliding-window inference: window %dx%d and stride %dx%d must be positive", cw, ch, sw, sh);
  /* mmseg's slide_inference grid: h_grids = max(h - crop + stride - 1, 0) // stride + 1. */
  const int gh = (h - ch + sh - 1 > 0 ? (h - ch + sh - 1) / sh : 0) + 1;
  const int gw = (w - cw + sw - 1 > 0 ? (w - cw + sw - 1) / sw : 0) + 1;
  const int wh = ch < h ? ch : h, ww = cw < w ? cw : w;
  float *count = calloc((size_t)h * w, sizeof(float));
  float *crop = malloc((size_t)wh * ww * 3 * sizeof(float));
  float *logits = malloc((size_t)wh * ww * K * sizeof(float));
  dsc_status *st = !count || !crop || !logits ? dsc_errorf("out of memory for sliding-window inference") : NULL;
  if (!st) memset(out, 0, (size_t)h * w * K * sizeof(float));
  for (int gy = 0; !st && gy < gh; gy++) {
    for (int gx = 0; !st && gx < gw; gx++) {
      int y2 = gy * sh + ch < h ? gy * sh + ch : h, x2 = gx * sw + cw < w ? gx * sw + cw : w;
      int y1 = y2 - ch > 0 ? y2 - ch : 0, x1 = x2 - cw > 0 ? x2 - cw : 0;
      for (int yy = 0; yy < wh; yy++)
        memcpy(crop + (size_t)yy * ww * 3, x_host + ((size_t)(y1 + yy) * w + x1) * 3, (size_t)ww * 3 * sizeof(float));
      st = infer_whole(m, crop, wh, ww, logits);
      for (int yy = 0; !st && yy < wh; yy++)
        for (int xx = 0; xx < ww; xx++) {
          size_t o = (size_t)(y1 + yy) * w + (x1 + xx);
          count[o] += 1;
          const float *src = logits + ((size_t)yy * ww + xx) * K;
          for (int k = 0; k < K; k++) out[o * K + k] += src[k];
        }
    }
  }
  for (size_t i = 0; !st && i < (size_t)h * w; i++)
    for (int k = 0; k < K; k++) out[i * K + k] /= count[i];
  free(count);
  free(crop);
  free(logits);
  return st;
}

/* Checks an image's labels against the model's classes. */
static dsc_status *check_item_labels(const dsc_fcn *m, const dsc_dataset *val, size_t i, const dsc_seg_eval_item *it) {
  const int K = m->cfg.classes;
  const size_t npx = (size_t)it->label_w * it->label_h;
  for (size_t p = 0; p < npx; p++)
    if (it->label[p] != 255 && it->label[p] >= K)
      return dsc_errorf("%s: label %d at pixel (%zu, %zu), but the model has %d classes (labels 0..%d, 255 = ignore)",
                        dsc_dataset_name(val, i), it->label[p], p % (size_t)it->label_w, p / (size_t)it->label_w, K,
                        K - 1);
  return NULL;
}

/* The logits of one image at its input size resized to its label map's size, argmax, confusion. */
static dsc_status *score_one(const dsc_fcn *m, const dsc_dataset *val, size_t i, const dsc_seg_eval_item *it,
                             const float *logits, dsc_confusion *cm) {
  const int K = m->cfg.classes;
  const size_t npx = (size_t)it->label_w * it->label_h;
  float *full = malloc(npx * K * sizeof(float));
  int32_t *pred = malloc(npx * sizeof(int32_t));
  dsc_status *st = !full || !pred ? dsc_errorf("out of memory evaluating %s", dsc_dataset_name(val, i)) : NULL;
  /* mmseg resizes the logits back to the original image (bilinear, align_corners=False). */
  if (!st) st = dsc_upsample_bilinear(1, it->h, it->w, K, logits, it->label_h, it->label_w, full);
  for (size_t p = 0; !st && p < npx; p++) {
    const float *l = full + p * K;
    int best = 0;
    for (int k = 1; k < K; k++)
      if (l[k] > l[best]) best = k;
    pred[p] = best;
  }
  if (!st) st = dsc_confusion_add(cm, (int64_t)npx, it->label, pred);
  free(full);
  free(pred);
  return st;
}

#define EVAL_GROUP 8 /* images of one size per whole-image forward */

/* Whole-image inference of a group of images of one size in one batch (evaluation-mode outputs do not
 * depend on the batch, up to the rounding of the convolutions' summation order). */
static dsc_status *infer_group(dsc_fcn *m, const dsc_seg_eval_item *items, int n, float *logits) {
  dsc_backend *be = m->be;
  const int h = items[0].h, w = items[0].w;
  const size_t one = (size_t)h * w * 3;
  float *host = malloc(one * n * sizeof(float)), *x = NULL;
  dsc_status *st = host ? NULL : dsc_errorf("out of memory for an evaluation batch");
  for (int k = 0; !st && k < n; k++) memcpy(host + one * k, items[k].image, one * sizeof(float));
  if (!st) st = be->alloc(be, one * n * sizeof(float), (void **)&x);
  if (!st) st = be->upload(be, x, host, one * n * sizeof(float));
  if (!st) st = dsc_fcn_predict(m, x, n, h, w, logits);
  if (x) be->free(be, x);
  free(host);
  return st;
}

dsc_status *dsc_fcn_evaluate(dsc_fcn *m, const dsc_dataset *val, const dsc_fcn_eval_config *cfg,
                             dsc_seg_scores *out) {
  memset(out, 0, sizeof *out);
  size_t n = dsc_dataset_size(val);
  if (cfg->max_images > 0 && (size_t)cfg->max_images < n) n = (size_t)cfg->max_images;
  const int K = m->cfg.classes;
  dsc_confusion cm = {0};
  DSC_TRY(dsc_confusion_init(&cm, K));
  dsc_status *st = NULL;
  size_t used = 0, next = 0, index[EVAL_GROUP], carry_index = 0;
  dsc_seg_eval_item items[EVAL_GROUP], carry = {0};
  int have_carry = 0;
  float *logits = NULL;
  size_t logits_cap = 0;
  while (!st) {
    /* A group: consecutive images of one size (one image at a time when sliding). */
    int group = 0;
    if (have_carry) items[group] = carry, index[group++] = carry_index, have_carry = 0;
    while (!st && next < n && group < EVAL_GROUP && !(cfg->slide && group == 1)) {
      dsc_seg_eval_item it = {0};
      size_t i = next++;
      st = dsc_seg_eval_load(val, i, cfg->scale_w, cfg->scale_h, &it);
      if (st && !cfg->strict) {
        fprintf(stderr, "dsc: warning: evaluation skips %s\n", st->msg);
        dsc_status_free(st);
        st = NULL;
        continue;
      }
      if (!st) st = check_item_labels(m, val, i, &it);
      if (st) {
        dsc_seg_eval_item_free(&it);
        break;
      }
      if (group > 0 && (it.w != items[0].w || it.h != items[0].h ||
                        (int64_t)(group + 1) * it.w * it.h > cfg->max_pixels)) {
        carry = it, carry_index = i, have_carry = 1;
        break;
      }
      items[group] = it, index[group++] = i;
    }
    if (group == 0) break;
    size_t one = (size_t)items[0].w * items[0].h * K;
    if (!st && one * group > logits_cap) {
      free(logits);
      logits_cap = one * group;
      logits = malloc(logits_cap * sizeof(float));
      if (!logits) st = dsc_errorf("out of memory for evaluation logits"), logits_cap = 0;
    }
    if (!st) st = cfg->slide ? dsc_fcn_infer(m, items[0].image, items[0].h, items[0].w, cfg, logits)
                             : infer_group(m, items, group, logits);
    for (int k = 0; k < group; k++) {
      if (!st) st = score_one(m, val, index[k], &items[k], logits + one * k, &cm);
      dsc_seg_eval_item_free(&items[k]);
    }
    used += (size_t)group;
    if (cfg->progress) fprintf(stderr, "\r  evaluating %zu/%zu images  ", next, n);
  }
  if (have_carry) dsc_seg_eval_item_free(&carry);
  free(logits);
  if (cfg->progress) fputc('\n', stderr);
  if (!st && used == 0) st = dsc_errorf("no image of the evaluation set could be read");
  if (!st) st = dsc_seg_scores_compute(&cm, out);
  dsc_confusion_free(&cm);
  return st;
}
