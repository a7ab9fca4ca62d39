/* curves.c: loss curves of pretraining runs (`dsc viz curves`): reading a run's metrics.jsonl
 * and drawing one panel per metric key with every run's line, ticks and a legend
 * (include/dsc/viz.h).
 *
 * Panel layout (pixels, DSC_VIZ_PANEL_W x DSC_VIZ_PANEL_H): the key as a title at scale 2 in
 * the top margin, the plot area inset by 64 (left, for the y tick labels), 14 (right), 28 (top)
 * and 34 (bottom, x tick labels and "step"). Axis ranges cover every run's points, padded by 4%
 * of the span (a zero span becomes +-1 around a step, +-max(10% of |v|, 1e-3) around a value).
 * Ticks are at multiples of 1, 2 or 5 x 10^e, about five per axis. A series whose values are all
 * exactly 0 is not drawn: metrics.jsonl writes 0 for a loss term the run's method does not have
 * (loss_pix of moco-v2, loss_sem of densecl), and a flat line there would read as a measured zero.
 */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsc/viz.h"

#define MARGIN_L 64
#define MARGIN_R 14
#define MARGIN_T 28
#define MARGIN_B 34

static const dsc_rgb COL_BG = {255, 255, 255}, COL_GRID = {232, 232, 232}, COL_AXIS = {60, 60, 60},
                     COL_TEXT = {20, 20, 20};

/* Appends a point to a series (capacity doubles as needed). */
static dsc_status *series_push(dsc_viz_series *s, int64_t *cap, double step, double value) {
  if (s->n == *cap) {
    int64_t nc = *cap ? 2 * *cap : 64;
    double *a = realloc(s->step, (size_t)nc * sizeof *a);
    if (!a) return dsc_errorf("out of memory reading metrics");
    s->step = a;
    double *b = realloc(s->value, (size_t)nc * sizeof *b);
    if (!b) return dsc_errorf("out of memory reading metrics");
    s->value = b;
    *cap = nc;
  }
  s->step[s->n] = step, s->value[s->n] = value;
  s->n++;
  return NULL;
}

dsc_status *dsc_viz_run_read(const char *path, const char *label, const char *const *keys,
                             int n_keys, dsc_viz_run *out) {
  memset(out, 0, sizeof *out);
  FILE *f = fopen(path, "r");
  if (!f) return dsc_errorf("cannot open %s: %s", path, strerror(errno));
  out->label = strdup(label);
  out->series = calloc((size_t)(n_keys > 0 ? n_keys : 1), sizeof *out->series);
  int64_t *caps = calloc((size_t)(n_keys > 0 ? n_keys : 1), sizeof *caps);
  out->n_keys = n_keys;
  dsc_status *st = !out->label || !out->series || !caps ? dsc_errorf("out of memory reading %s", path) : NULL;
  char *line = NULL;
  size_t line_cap = 0;
  long line_no = 0, objects = 0;
  while (!st && getline(&line, &line_cap, f) >= 0) {
    line_no++;
    if (strspn(line, " \t\r\n") == strlen(line)) continue;
    json_error_t err;
    json_t *obj = json_loads(line, JSON_DECODE_ANY, &err);
    json_t *step = obj ? json_object_get(obj, "step") : NULL;
    if (!obj || !json_is_object(obj))
      st = dsc_errorf("%s:%ld: not a JSON object (%s)", path, line_no, obj ? "another JSON value" : err.text);
    else if (!json_is_number(step))
      st = dsc_errorf("%s:%ld: no numeric \"step\"", path, line_no);
    for (int k = 0; !st && k < n_keys; k++) {
      json_t *v = json_object_get(obj, keys[k]);
      if (json_is_number(v)) st = series_push(&out->series[k], &caps[k], json_number_value(step), json_number_value(v));
    }
    objects++;
    json_decref(obj);
  }
  if (!st && ferror(f)) st = dsc_errorf("error reading %s: %s", path, strerror(errno));
  if (!st && objects == 0) st = dsc_errorf("%s: no metrics (the file is empty)", path);
  free(line);
  free(caps);
  fclose(f);
  if (st) dsc_viz_run_free(out);
  return st;
}

void dsc_viz_run_free(dsc_viz_run *r) {
  for (int k = 0; r->series && k < r->n_keys; k++) free(r->series[k].step), free(r->series[k].value);
  free(r->series);
  free(r->label);
  memset(r, 0, sizeof *r);
}

void dsc_viz_smooth(double *value, int64_t n, int window) {
  if (window <= 1 || n < 2) return;
  double *orig = malloc((size_t)n * sizeof *orig);
  if (!orig) return;
  memcpy(orig, value, (size_t)n * sizeof *orig);
  for (int64_t i = 0; i < n; i++) {
    int64_t lo = i - window + 1 < 0 ? 0 : i - window + 1;
    double s = 0;
    for (int64_t j = lo; j <= i; j++) s += orig[j];
    value[i] = s / (double)(i - lo + 1);
  }
  free(orig);
}

void dsc_viz_curves_size(int n_keys, int n_runs, int *w, int *h) {
  int cols = n_keys < 2 ? 1 : 2, rows = n_keys < 1 ? 1 : (n_keys + 1) / 2;
  *w = cols * DSC_VIZ_PANEL_W;
  *h = rows * DSC_VIZ_PANEL_H + 8 + n_runs * DSC_VIZ_LEGEND_ROW;
}

/* A tick spacing of 1, 2 or 5 x 10^e, at least span / 6. */
static double nice_step(double span) {
  double raw = span / 6, e = pow(10, floor(log10(raw))), f = raw / e;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * e;
}

/* Tick indices i (tick at i * step) within [lo, hi], at most 20 of them; none when the range
 * is not finite. */
static void tick_span(double lo, double hi, double step, double *i0, double *i1) {
  *i0 = ceil(lo / step), *i1 = floor(hi / step);
  if (!isfinite(*i0) || !isfinite(*i1)) *i0 = 1, *i1 = 0;
  if (*i1 > *i0 + 20) *i1 = *i0 + 20;
}

/* A tick label: fixed decimals enough for the spacing, or %.3g for very large/small values. */
static void tick_label(double v, double step, char *buf, size_t cap) {
  if (fabs(v) < step * 1e-9) v = 0;
  int decimals = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
  if (decimals <= 4 && fabs(v) < 1e6)
    snprintf(buf, cap, "%.*f", decimals, v);
  else
    snprintf(buf, cap, "%.3g", v);
}

/* Maps data value v in [lo, hi] to a pixel in [p0, p1] (p1 may be below p0). */
static int to_pixel(double v, double lo, double hi, int p0, int p1) {
  return p0 + (int)lround((v - lo) / (hi - lo) * (p1 - p0));
}

static void axis_range(double lo, double hi, int is_step, double *out_lo, double *out_hi) {
  if (hi > lo) {
    double pad = (hi - lo) * 0.04;
    *out_lo = lo - pad, *out_hi = hi + pad;
  } else {
    double pad = is_step ? 1 : fmax(fabs(lo) * 0.1, 1e-3);
    *out_lo = lo - pad, *out_hi = hi + pad;
  }
}

/* Whether a series is a term the run does not have (every value exactly 0). */
static int series_absent(const dsc_viz_series *s) {
  for (int64_t i = 0; i < s->n; i++)
    if (s->value[i] != 0.0) return 0;
  return 1;
}

static void panel_draw(dsc_canvas *c, int px, int py, const dsc_viz_run *runs, int n_runs, int key,
                       const char *name) {
  int x0 = px + MARGIN_L, x1 = px + DSC_VIZ_PANEL_W - MARGIN_R;
  int y0 = py + MARGIN_T, y1 = py + DSC_VIZ_PANEL_H - MARGIN_B;
  dsc_canvas_text(c, px + (DSC_VIZ_PANEL_W - dsc_text_width(name, 2)) / 2, py + 6, name, 2, COL_TEXT);
  double sx_lo = INFINITY, sx_hi = -INFINITY, vy_lo = INFINITY, vy_hi = -INFINITY;
  for (int r = 0; r < n_runs; r++) {
    const dsc_viz_series *s = &runs[r].series[key];
    if (series_absent(s)) continue;
    for (int64_t i = 0; i < s->n; i++) {
      sx_lo = fmin(sx_lo, s->step[i]), sx_hi = fmax(sx_hi, s->step[i]);
      vy_lo = fmin(vy_lo, s->value[i]), vy_hi = fmax(vy_hi, s->value[i]);
    }
  }
  dsc_canvas_rect(c, x0, y0, x1 - x0 + 1, y1 - y0 + 1, 1, COL_AXIS);
  if (!(sx_lo <= sx_hi)) {
    const char *msg = "no data";
    dsc_canvas_text(c, (x0 + x1 - dsc_text_width(msg, 2)) / 2, (y0 + y1) / 2 - 7, msg, 2, COL_AXIS);
    return;
  }
  double xa, xb, ya, yb;
  axis_range(sx_lo, sx_hi, 1, &xa, &xb);
  axis_range(vy_lo, vy_hi, 0, &ya, &yb);
  char buf[64];
  /* plot area inside the frame: [x0+1, x1-1] x [y0+1, y1-1] */
  int ix0 = x0 + 1, ix1 = x1 - 1, iy0 = y1 - 1, iy1 = y0 + 1;
  double xs = nice_step(xb - xa), ys = nice_step(yb - ya);
  double i0, i1;
  for (tick_span(xa, xb, xs, &i0, &i1); i0 <= i1; i0++) {
    double t = i0 * xs;
    int p = to_pixel(t, xa, xb, ix0, ix1);
    dsc_canvas_line(c, p, iy1, p, iy0, 1, COL_GRID);
    dsc_canvas_line(c, p, y1, p, y1 + 4, 1, COL_AXIS);
    tick_label(t, xs, buf, sizeof buf);
    dsc_canvas_text(c, p - dsc_text_width(buf, 1) / 2, y1 + 7, buf, 1, COL_TEXT);
  }
  for (tick_span(ya, yb, ys, &i0, &i1); i0 <= i1; i0++) {
    double t = i0 * ys;
    int p = to_pixel(t, ya, yb, iy0, iy1);
    dsc_canvas_line(c, ix0, p, ix1, p, 1, COL_GRID);
    dsc_canvas_line(c, x0 - 4, p, x0, p, 1, COL_AXIS);
    tick_label(t, ys, buf, sizeof buf);
    dsc_canvas_text(c, x0 - 7 - dsc_text_width(buf, 1), p - 3, buf, 1, COL_TEXT);
  }
  const char *xl = "step";
  dsc_canvas_text(c, (x0 + x1 - dsc_text_width(xl, 1)) / 2, y1 + 20, xl, 1, COL_AXIS);
  for (int r = 0; r < n_runs; r++) {
    const dsc_viz_series *s = &runs[r].series[key];
    if (series_absent(s)) continue;
    dsc_rgb col = dsc_colormap_category(r);
    int lx = 0, ly = 0;
    for (int64_t i = 0; i < s->n; i++) {
      int qx = to_pixel(s->step[i], xa, xb, ix0, ix1), qy = to_pixel(s->value[i], ya, yb, iy0, iy1);
      if (s->n == 1) dsc_canvas_rect_fill(c, qx - 2, qy - 2, 5, 5, col);
      if (i > 0) dsc_canvas_line(c, lx, ly, qx, qy, 2, col);
      lx = qx, ly = qy;
    }
  }
  dsc_canvas_rect(c, x0, y0, x1 - x0 + 1, y1 - y0 + 1, 1, COL_AXIS); /* frame over the lines */
}

dsc_status *dsc_viz_curves_draw(dsc_canvas *c, const dsc_viz_run *runs, int n_runs,
                                const char *const *keys, int n_keys) {
  int w, h;
  dsc_viz_curves_size(n_keys, n_runs, &w, &h);
  if (c->w != w || c->h != h)
    return dsc_errorf("curves canvas is %dx%d, needs %dx%d", c->w, c->h, w, h);
  for (int r = 0; r < n_runs; r++)
    if (runs[r].n_keys != n_keys)
      return dsc_errorf("run \"%s\" has %d keys, the plot %d", runs[r].label, runs[r].n_keys, n_keys);
  dsc_canvas_fill(c, COL_BG);
  for (int k = 0; k < n_keys; k++)
    panel_draw(c, (k % 2) * DSC_VIZ_PANEL_W, (k / 2) * DSC_VIZ_PANEL_H, runs, n_runs, k, keys[k]);
  int ly = h - n_runs * DSC_VIZ_LEGEND_ROW - 4;
  for (int r = 0; r < n_runs; r++) {
    int y = ly + r * DSC_VIZ_LEGEND_ROW;
    dsc_canvas_line(c, MARGIN_L, y + 5, MARGIN_L + 24, y + 5, 3, dsc_colormap_category(r));
    dsc_canvas_text(c, MARGIN_L + 32, y + 2, runs[r].label, 1, COL_TEXT);
  }
  return NULL;
}
