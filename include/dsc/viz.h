/* viz.h: the pictures of `dsc viz` — a small RGB raster canvas with drawing primitives and a
 * built-in bitmap font, colour maps, the PCA-to-RGB and cluster maps of dense features, and
 * loss-curve plots from a run's metrics.jsonl (docs/viz.md).
 *
 * Conventions:
 *  - A canvas is w x h pixels, row-major interleaved RGB8 (h*w*3 bytes), origin top-left, x to
 *    the right, y down. Every primitive clips to the canvas: any coordinates, even far outside
 *    or negative, are allowed and never write out of bounds.
 *  - Everything is integer or double arithmetic in a fixed order: the same inputs give the same
 *    bytes on every machine.
 *  - Text uses a 5x7 glyph table for printable ASCII (32..126) in a 6x8 cell (one column and
 *    one row of spacing), scaled by an integer factor; other bytes draw as '?'.
 */
#ifndef DSC_VIZ_H
#define DSC_VIZ_H

#include <stddef.h>
#include <stdint.h>

#include "dsc/status.h"

typedef struct dsc_rgb {
  uint8_t r, g, b;
} dsc_rgb;

typedef struct dsc_canvas {
  int w, h;
  uint8_t *rgb; /* h*w*3 */
} dsc_canvas;

/* ---- canvas and primitives ---- */

/* Allocates a w x h canvas filled with `bg`. w, h in [1, 32768]. */
dsc_status *dsc_canvas_init(dsc_canvas *c, int w, int h, dsc_rgb bg);
/* Frees the pixels and zeroes the struct; an empty canvas is fine. */
void dsc_canvas_free(dsc_canvas *c);
void dsc_canvas_fill(dsc_canvas *c, dsc_rgb col);
/* One pixel; outside the canvas nothing happens. */
void dsc_canvas_pixel(dsc_canvas *c, int x, int y, dsc_rgb col);
/* Filled rectangle [x, x+w) x [y, y+h), clipped. */
void dsc_canvas_rect_fill(dsc_canvas *c, int x, int y, int w, int h, dsc_rgb col);
/* Rectangle outline of `thickness` pixels drawn inside [x, x+w) x [y, y+h). */
void dsc_canvas_rect(dsc_canvas *c, int x, int y, int w, int h, int thickness, dsc_rgb col);
/* Line from (x0, y0) to (x1, y1), both ends included: the Bresenham pixels, each stamped as a
 * thickness x thickness square whose top-left is at (x - (t-1)/2, y - (t-1)/2). Thickness
 * below 1 is 1. */
void dsc_canvas_line(dsc_canvas *c, int x0, int y0, int x1, int y1, int thickness, dsc_rgb col);

/* Text at (x, y) (top-left of the first cell), `scale` pixels per font pixel (clamped to
 * [1, 1024]); '\n' starts a new line. Returns the width in pixels of the longest line drawn. */
int dsc_canvas_text(dsc_canvas *c, int x, int y, const char *text, int scale, dsc_rgb col);
/* The size dsc_canvas_text would cover: width (longest line, without the trailing spacing
 * column) and height (lines * 8 * scale, without the last spacing row). */
int dsc_text_width(const char *text, int scale);
int dsc_text_height(const char *text, int scale);
/* The 7 rows of glyph `ch` (bit 4 = leftmost column); '?' for bytes outside 32..126. */
const uint8_t *dsc_font_glyph(unsigned char ch);

/* Copies an RGB8 image (src_h, src_w, 3) into the rectangle (x, y, dst_w, dst_h) with nearest
 * scaling: destination pixel (i, j) of the rectangle takes source pixel
 * (floor(i * src_w / dst_w), floor(j * src_h / dst_h)). Clipped. */
void dsc_canvas_blit(dsc_canvas *c, int x, int y, int dst_w, int dst_h, const uint8_t *src,
                     int src_w, int src_h);
/* The same for a map of class indices (src_h, src_w) coloured by `palette` (256 entries):
 * index v takes palette[v]. For masks and cluster maps. */
void dsc_canvas_blit_index(dsc_canvas *c, int x, int y, int dst_w, int dst_h, const uint8_t *src,
                           int src_w, int src_h, const uint8_t (*palette)[3]);
/* The prediction hook: a map of int32 class indices (src_h, src_w), e.g. a dense probe's
 * argmax, drawn as dsc_canvas_blit_index with `palette`; an index outside [0, 255) (negative,
 * or >= 255) draws as palette[255], the "ignore" colour. */
void dsc_canvas_draw_classes(dsc_canvas *c, int x, int y, int dst_w, int dst_h,
                             const int32_t *classes, int src_w, int src_h,
                             const uint8_t (*palette)[3]);

/* Writes the canvas as an 8-bit RGB PNG (dsc_png_write_rgb). */
dsc_status *dsc_canvas_save_png(const dsc_canvas *c, const char *path);

/* ---- colour maps ---- */

/* Ten distinct line colours (matplotlib's "tab10"), cycled: k mod 10. */
dsc_rgb dsc_colormap_category(int k);
/* A perceptually ordered map of t in [0, 1] (matplotlib's "viridis", linear between 9
 * anchors); t outside is clamped, NaN gives t = 0. */
dsc_rgb dsc_colormap_viridis(double t);

/* ---- dense features: PCA to RGB ---- */

/* The top `k` principal components of x (rows, d), k <= min(d, 8): mean (d) and components
 * (k, d), unit vectors in decreasing order of variance (*variances, k, may be NULL), from the
 * centred data in double by block power iteration with Gram-Schmidt (a deterministic start, at
 * most 500 iterations, until the subspace moves less than 1e-10). Each component's sign is
 * chosen so that its entry of largest magnitude is positive. rows >= 1. */
dsc_status *dsc_pca(const float *x, int64_t rows, int d, int k, double *mean,
                    double *components, double *variances);

/* Projects x (rows, d) on 3 components (PCA of the same or other rows) and maps each
 * projection to [0, 255] by its own 1st..99th percentile over these rows (linear, clamped;
 * a component whose percentiles coincide maps to 128): rgb (rows, 3). Percentile q is the
 * sorted value at rank round-down(q * (rows - 1)) interpolated linearly to the next rank. */
dsc_status *dsc_pca_rgb(const float *x, int64_t rows, int d, const double *mean,
                        const double *components, uint8_t *rgb);

/* Colours for cluster labels (rows, values in [0, k)) that best match a reference class map:
 * greedy one-to-one matching by overlap, largest overlapping (cluster, class) pair first
 * (ties: smaller cluster, then smaller class; reference pixels of 255 ignored); a matched
 * cluster takes its class index, the others the unused indices in [0, 255) in increasing
 * order (254 once those run out). out_index (k). So clusters wear the mask's colours where
 * they agree with it. */
void dsc_cluster_match_colors(const int32_t *labels, const uint8_t *reference, int64_t rows,
                              int k, uint8_t *out_index);

/* ---- loss curves ---- */

/* One run's metrics: for each of `n_keys` keys, the (step, value) points of the lines that
 * have it as a number (possibly none). */
typedef struct dsc_viz_series {
  int64_t n;
  double *step, *value;
} dsc_viz_series;

typedef struct dsc_viz_run {
  char *label;            /* legend text */
  int n_keys;
  dsc_viz_series *series; /* n_keys */
} dsc_viz_run;

/* Reads a metrics.jsonl: one JSON object per line (blank lines skipped), "step" required as a
 * number, keys[i] taken where present as a number. Errors name the file and line: a line that
 * is not a JSON object or lacks "step"; a file without any line ("no metrics"). `label` is
 * copied. */
dsc_status *dsc_viz_run_read(const char *path, const char *label, const char *const *keys,
                             int n_keys, dsc_viz_run *out);
void dsc_viz_run_free(dsc_viz_run *r);

/* Trailing moving average over `window` points (point i: mean of points max(0, i-window+1)..i),
 * in place; window <= 1 leaves it unchanged. */
void dsc_viz_smooth(double *value, int64_t n, int window);

/* Panel and legend geometry of dsc_viz_curves_draw (pixels). */
#define DSC_VIZ_PANEL_W 480
#define DSC_VIZ_PANEL_H 300
#define DSC_VIZ_LEGEND_ROW 14

/* The size of the curves picture for n_keys panels and n_runs runs: panels in
 * min(n_keys, 2) columns and ceil(n_keys / 2) rows, and under them a legend of one row per
 * run plus 8 pixels: w = cols * DSC_VIZ_PANEL_W, h = rows * DSC_VIZ_PANEL_H + 8 +
 * n_runs * DSC_VIZ_LEGEND_ROW. */
void dsc_viz_curves_size(int n_keys, int n_runs, int *w, int *h);

/* Draws one panel per key (title = the key, x axis = step, y axis = value, "nice" ticks with
 * labels), one colour per run (dsc_colormap_category), a run with a single point in a panel as
 * a small square; a panel no run has points for says "no data". The canvas must have the size
 * of dsc_viz_curves_size. */
dsc_status *dsc_viz_curves_draw(dsc_canvas *c, const dsc_viz_run *runs, int n_runs,
                                const char *const *keys, int n_keys);

#endif
