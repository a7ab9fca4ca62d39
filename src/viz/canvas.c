/* canvas.c: the RGB raster canvas of `dsc viz` — fill, pixels, rectangles, thick lines, nearest
 * scaled blits of images and class maps, colour maps, PNG output (include/dsc/viz.h).
 *
 * Clipping: every primitive computes the part of its shape that lies on the canvas in 64-bit
 * integers before touching memory, so arguments of any size are safe. Lines: for a line whose
 * longer axis spans n steps, step i (0..n) sits at major coordinate a0 + i*sign and minor
 * coordinate b0 + sign * floor((2 i |db| + n) / (2 n)) (the exact line rounded half up; the
 * Bresenham pixels); only the steps whose stamp can touch the canvas are visited. Endpoints
 * beyond +-2^20 are first moved along the line onto that box, so products stay in range.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dsc/image_write.h"
#include "dsc/viz.h"

#define CANVAS_MAX_SIDE 32768
#define LINE_LIMIT 1048576.0 /* 2^20 */
#define LINE_MAX_THICKNESS 256

dsc_status *dsc_canvas_init(dsc_canvas *c, int w, int h, dsc_rgb bg) {
  memset(c, 0, sizeof *c);
  if (w < 1 || h < 1 || w > CANVAS_MAX_SIDE || h > CANVAS_MAX_SIDE)
    return dsc_errorf("canvas of %dx%d pixels: each side must be in [1, %d]", w, h, CANVAS_MAX_SIDE);
  c->rgb = malloc((size_t)w * h * 3);
  if (!c->rgb) return dsc_errorf("out of memory for a %dx%d canvas", w, h);
  c->w = w, c->h = h;
  dsc_canvas_fill(c, bg);
  return NULL;
}

void dsc_canvas_free(dsc_canvas *c) {
  free(c->rgb);
  memset(c, 0, sizeof *c);
}

void dsc_canvas_fill(dsc_canvas *c, dsc_rgb col) {
  dsc_canvas_rect_fill(c, 0, 0, c->w, c->h, col);
}

void dsc_canvas_pixel(dsc_canvas *c, int x, int y, dsc_rgb col) {
  if (x < 0 || y < 0 || x >= c->w || y >= c->h) return;
  uint8_t *p = c->rgb + ((size_t)y * c->w + x) * 3;
  p[0] = col.r, p[1] = col.g, p[2] = col.b;
}

/* Clips [x, x+w) to [0, limit) in 64 bits; returns 0 when nothing is left. */
static int canvas_clip(int64_t x, int64_t w, int limit, int *lo, int *hi) {
  int64_t a = x < 0 ? 0 : x, b = x + w > limit ? limit : x + w;
  if (w <= 0 || a >= b) return 0;
  *lo = (int)a, *hi = (int)b;
  return 1;
}

void dsc_canvas_rect_fill(dsc_canvas *c, int x, int y, int w, int h, dsc_rgb col) {
  int x0, x1, y0, y1;
  if (!c->rgb || !canvas_clip(x, w, c->w, &x0, &x1) || !canvas_clip(y, h, c->h, &y0, &y1)) return;
  for (int yy = y0; yy < y1; yy++) {
    uint8_t *p = c->rgb + ((size_t)yy * c->w + x0) * 3;
    for (int xx = x0; xx < x1; xx++, p += 3) p[0] = col.r, p[1] = col.g, p[2] = col.b;
  }
}

void dsc_canvas_rect(dsc_canvas *c, int x, int y, int w, int h, int thickness, dsc_rgb col) {
  if (w <= 0 || h <= 0) return;
  int64_t t = thickness < 1 ? 1 : thickness;
  if (2 * t >= w || 2 * t >= h) {
    dsc_canvas_rect_fill(c, x, y, w, h, col);
    return;
  }
  dsc_canvas_rect_fill(c, x, y, w, (int)t, col);
  dsc_canvas_rect_fill(c, x, (int)((int64_t)y + h - t), w, (int)t, col);
  dsc_canvas_rect_fill(c, x, (int)(y + t), (int)t, (int)(h - 2 * t), col);
  dsc_canvas_rect_fill(c, (int)((int64_t)x + w - t), (int)(y + t), (int)t, (int)(h - 2 * t), col);
}

/* Moves (x0, y0) along the line towards (x1, y1) until it lies within +-LINE_LIMIT. */
static void line_pull_in(double *x0, double *y0, double x1, double y1) {
  double t = 0;
  /* the largest fraction of the way that each coordinate needs to come inside */
  if (*x0 > LINE_LIMIT) t = fmax(t, (*x0 - LINE_LIMIT) / (*x0 - x1));
  if (*x0 < -LINE_LIMIT) t = fmax(t, (-LINE_LIMIT - *x0) / (x1 - *x0));
  if (*y0 > LINE_LIMIT) t = fmax(t, (*y0 - LINE_LIMIT) / (*y0 - y1));
  if (*y0 < -LINE_LIMIT) t = fmax(t, (-LINE_LIMIT - *y0) / (y1 - *y0));
  if (t > 1) t = 1;
  *x0 = round(*x0 + t * (x1 - *x0));
  *y0 = round(*y0 + t * (y1 - *y0));
  /* a line entirely outside the box stays outside the canvas: clamp keeps products bounded */
  *x0 = fmin(fmax(*x0, -2 * LINE_LIMIT), 2 * LINE_LIMIT);
  *y0 = fmin(fmax(*y0, -2 * LINE_LIMIT), 2 * LINE_LIMIT);
}

void dsc_canvas_line(dsc_canvas *c, int x0, int y0, int x1, int y1, int thickness, dsc_rgb col) {
  if (!c->rgb) return;
  int t = thickness < 1 ? 1 : thickness > LINE_MAX_THICKNESS ? LINE_MAX_THICKNESS : thickness;
  int off = (t - 1) / 2;
  double fx0 = x0, fy0 = y0, fx1 = x1, fy1 = y1;
  if (fabs(fx0) > LINE_LIMIT || fabs(fy0) > LINE_LIMIT) line_pull_in(&fx0, &fy0, x1, y1);
  if (fabs(fx1) > LINE_LIMIT || fabs(fy1) > LINE_LIMIT) line_pull_in(&fx1, &fy1, x0, y0);
  int64_t ax = (int64_t)fx0, ay = (int64_t)fy0, bx = (int64_t)fx1, by = (int64_t)fy1;
  int64_t dx = bx - ax, dy = by - ay;
  int x_major = llabs(dx) >= llabs(dy);
  int64_t a0 = x_major ? ax : ay, b0 = x_major ? ay : ax;
  int64_t da = x_major ? dx : dy, db = x_major ? dy : dx;
  int64_t n = llabs(da), sa = da < 0 ? -1 : 1, sb = db < 0 ? -1 : 1, adb = llabs(db);
  int64_t limit_a = x_major ? c->w : c->h;
  /* steps whose stamp [pos - off, pos - off + t) can meet [0, limit_a) along the major axis */
  int64_t i_lo = 0, i_hi = n;
  if (sa > 0) {
    int64_t first = off - t + 1 - a0, last = limit_a - 1 + off - a0; /* pos in [first, last] + a0 */
    if (first > i_lo) i_lo = first;
    if (last < i_hi) i_hi = last;
  } else {
    int64_t first = a0 - (limit_a - 1 + off), last = a0 - (off - t + 1);
    if (first > i_lo) i_lo = first;
    if (last < i_hi) i_hi = last;
  }
  for (int64_t i = i_lo; i <= i_hi; i++) {
    int64_t a = a0 + i * sa;
    int64_t b = n ? b0 + sb * ((2 * i * adb + n) / (2 * n)) : b0;
    int64_t px = x_major ? a : b, py = x_major ? b : a;
    if (px + t - off <= 0 || py + t - off <= 0 || px - off >= c->w || py - off >= c->h) continue;
    dsc_canvas_rect_fill(c, (int)(px - off), (int)(py - off), t, t, col);
  }
}

/* Source index of destination offset i for nearest scaling from `src` to `dst` samples. */
static inline int blit_src(int64_t i, int src, int dst) {
  return (int)(i * src / dst);
}

/* Calls the blit over the clipped rectangle: (row pointer, source x, source y). */
#define BLIT_LOOP(BODY)                                                               \
  int bx0, bx1, by0, by1;                                                             \
  if (!c->rgb || src_w < 1 || src_h < 1 || !canvas_clip(x, dst_w, c->w, &bx0, &bx1) || \
      !canvas_clip(y, dst_h, c->h, &by0, &by1))                                       \
    return;                                                                           \
  for (int yy = by0; yy < by1; yy++) {                                                \
    int sy = blit_src((int64_t)yy - y, src_h, dst_h);                                 \
    uint8_t *p = c->rgb + ((size_t)yy * c->w + bx0) * 3;                              \
    for (int xx = bx0; xx < bx1; xx++, p += 3) {                                      \
      int sx = blit_src((int64_t)xx - x, src_w, dst_w);                               \
      size_t s = (size_t)sy * src_w + sx;                                             \
      BODY                                                                            \
    }                                                                                 \
  }

void dsc_canvas_blit(dsc_canvas *c, int x, int y, int dst_w, int dst_h, const uint8_t *src,
                     int src_w, int src_h) {
  BLIT_LOOP(memcpy(p, src + s * 3, 3);)
}

void dsc_canvas_blit_index(dsc_canvas *c, int x, int y, int dst_w, int dst_h, const uint8_t *src,
                           int src_w, int src_h, const uint8_t (*palette)[3]) {
  BLIT_LOOP(memcpy(p, palette[src[s]], 3);)
}

void dsc_canvas_draw_classes(dsc_canvas *c, int x, int y, int dst_w, int dst_h,
                             const int32_t *classes, int src_w, int src_h,
                             const uint8_t (*palette)[3]) {
  BLIT_LOOP(int32_t v = classes[s]; memcpy(p, palette[v >= 0 && v < 255 ? v : 255], 3);)
}

dsc_status *dsc_canvas_save_png(const dsc_canvas *c, const char *path) {
  if (!c->rgb) return dsc_errorf("%s: empty canvas", path);
  return dsc_png_write_rgb(path, c->w, c->h, c->rgb);
}

dsc_rgb dsc_colormap_category(int k) {
  static const dsc_rgb tab10[10] = {
      {31, 119, 180}, {255, 127, 14}, {44, 160, 44},  {214, 39, 40},  {148, 103, 189},
      {140, 86, 75},  {227, 119, 194}, {127, 127, 127}, {188, 189, 34}, {23, 190, 207},
  };
  int i = k % 10;
  return tab10[i < 0 ? i + 10 : i];
}

dsc_rgb dsc_colormap_viridis(double t) {
  static const uint8_t anchors[9][3] = {
      {68, 1, 84},    {71, 44, 122},  {59, 82, 139},  {44, 113, 142}, {33, 145, 140},
      {39, 173, 129}, {92, 200, 99},  {170, 220, 50}, {253, 231, 37},
  };
  if (!(t > 0)) t = 0; /* also NaN */
  if (t > 1) t = 1;
  double pos = t * 8;
  int i = (int)pos;
  if (i > 7) i = 7;
  double f = pos - i;
  dsc_rgb out;
  uint8_t v[3];
  for (int ch = 0; ch < 3; ch++)
    v[ch] = (uint8_t)lround(anchors[i][ch] + f * (anchors[i + 1][ch] - anchors[i][ch]));
  out.r = v[0], out.g = v[1], out.b = v[2];
  return out;
}
