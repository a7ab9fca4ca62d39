/* test_viz.c: the canvas primitives, font, colour maps, PCA maps, cluster colours and loss
 * curves of src/viz (include/dsc/viz.h). Clipping tests draw far outside small canvases: run
 * under AddressSanitizer (make asan) they prove nothing is written out of bounds. */
#include <limits.h>
#include <stdint.h>
#include <unistd.h>

#include "dsc/image.h"
#include "dsc/viz.h"
#include "test.h"

static const dsc_rgb BLACK = {0, 0, 0}, WHITE = {255, 255, 255};

static int is_set(const dsc_canvas *c, int x, int y) {
  const uint8_t *p = c->rgb + ((size_t)y * c->w + x) * 3;
  return p[0] || p[1] || p[2];
}

static int count_set(const dsc_canvas *c) {
  int n = 0;
  for (int y = 0; y < c->h; y++)
    for (int x = 0; x < c->w; x++) n += is_set(c, x, y);
  return n;
}

static void test_line_pixels(void) {
  dsc_canvas c;
  CHECK_OK(dsc_canvas_init(&c, 8, 6, BLACK));
  dsc_canvas_line(&c, 0, 2, 5, 2, 1, WHITE);
  CHECK(count_set(&c) == 6, "horizontal line: %d pixels", count_set(&c));
  for (int x = 0; x <= 5; x++) CHECK(is_set(&c, x, 2), "pixel (%d, 2) missing", x);
  dsc_canvas_fill(&c, BLACK);
  /* (0,0)-(4,2): y = x/2 rounded half up */
  dsc_canvas_line(&c, 0, 0, 4, 2, 1, WHITE);
  static const int want[5][2] = {{0, 0}, {1, 1}, {2, 1}, {3, 2}, {4, 2}};
  CHECK(count_set(&c) == 5, "diagonal: %d pixels", count_set(&c));
  for (int i = 0; i < 5; i++) CHECK(is_set(&c, want[i][0], want[i][1]), "pixel (%d, %d)", want[i][0], want[i][1]);
  dsc_canvas_fill(&c, BLACK);
  dsc_canvas_line(&c, 3, 1, 3, 1, 1, WHITE); /* a point */
  CHECK(count_set(&c) == 1 && is_set(&c, 3, 1), "point line");
  dsc_canvas_fill(&c, BLACK);
  dsc_canvas_line(&c, 1, 3, 6, 3, 3, WHITE); /* thickness 3: rows 2..4, columns 0..7 */
  CHECK(count_set(&c) == 3 * 8, "thick line: %d pixels", count_set(&c));
  CHECK(is_set(&c, 0, 2) && is_set(&c, 7, 4) && !is_set(&c, 3, 1) && !is_set(&c, 3, 5), "thick line extent");
  dsc_canvas_fill(&c, BLACK);
  dsc_canvas_line(&c, 2, 5, 2, 0, 2, WHITE); /* thickness 2: columns 2..3 (top-left at x - 0) */
  CHECK(count_set(&c) == 12 && is_set(&c, 3, 0) && !is_set(&c, 1, 0), "vertical thick line: %d", count_set(&c));
  dsc_canvas_free(&c);
}

static void test_rects(void) {
  dsc_canvas c;
  CHECK_OK(dsc_canvas_init(&c, 10, 8, BLACK));
  dsc_canvas_rect(&c, 1, 1, 6, 5, 1, WHITE);
  CHECK(count_set(&c) == 2 * 6 + 2 * 3, "outline: %d pixels", count_set(&c));
  CHECK(!is_set(&c, 3, 3) && is_set(&c, 6, 5) && !is_set(&c, 7, 5), "outline interior / corner");
  dsc_canvas_rect_fill(&c, 8, 6, 100, 100, WHITE);
  CHECK(is_set(&c, 9, 7) && is_set(&c, 8, 6), "clipped fill");
  dsc_canvas_free(&c);
  CHECK_ERR(dsc_canvas_init(&c, 0, 5, BLACK), "canvas");
  CHECK(c.rgb == NULL, "failed init leaves the canvas empty");
}

static void test_clipping(void) {
  dsc_canvas c;
  CHECK_OK(dsc_canvas_init(&c, 5, 4, BLACK));
  const int far[] = {INT_MIN, -1000000000, -3000, -3, -1, 0, 2, 4, 5, 3000, 1000000000, INT_MAX};
  int nf = (int)(sizeof far / sizeof far[0]);
  for (int a = 0; a < nf; a++)
    for (int b = 0; b < nf; b++) {
      dsc_canvas_line(&c, far[a], far[b], far[b], far[a], 1, WHITE);
      dsc_canvas_line(&c, far[a], 1, far[b], 2, 7, WHITE);
      dsc_canvas_rect_fill(&c, far[a], far[b], far[b], far[a], WHITE);
      dsc_canvas_rect(&c, far[a], far[b], INT_MAX, INT_MAX, 3, WHITE);
      dsc_canvas_pixel(&c, far[a], far[b], WHITE);
      dsc_canvas_text(&c, far[a], far[b], "Wg@", 3, WHITE);
    }
  uint8_t src[2 * 2 * 3] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
  dsc_canvas_blit(&c, -7, -9, 13, 40, src, 2, 2);
  dsc_canvas_blit(&c, 3, 2, INT_MAX, INT_MAX, src, 2, 2);
  dsc_canvas_blit(&c, INT_MIN, INT_MIN, INT_MAX, INT_MAX, src, 2, 2);
  dsc_canvas_free(&c);
  /* a line crossing far outside still draws its exact on-canvas part */
  CHECK_OK(dsc_canvas_init(&c, 10, 10, BLACK));
  dsc_canvas_line(&c, -100, -100, 100, 100, 1, WHITE);
  CHECK(count_set(&c) == 10, "diagonal through the canvas: %d", count_set(&c));
  for (int i = 0; i < 10; i++) CHECK(is_set(&c, i, i), "diagonal pixel %d", i);
  dsc_canvas_fill(&c, BLACK);
  dsc_canvas_line(&c, INT_MIN, 5, INT_MAX, 5, 1, WHITE);
  CHECK(count_set(&c) == 10, "huge horizontal line: %d", count_set(&c));
  dsc_canvas_free(&c);
}

static void test_text(void) {
  for (int ch = 33; ch <= 126; ch++) {
    const uint8_t *g = dsc_font_glyph((unsigned char)ch);
    int any = 0;
    for (int r = 0; r < 7; r++) {
      any |= g[r];
      CHECK(g[r] < 32, "glyph %c row %d has bits past 5", ch, r);
    }
    CHECK(any, "glyph '%c' is empty", ch);
  }
  for (int a = '0'; a <= '9'; a++)
    for (int b = a + 1; b <= '9'; b++)
      CHECK(memcmp(dsc_font_glyph((unsigned char)a), dsc_font_glyph((unsigned char)b), 7), "digits %c and %c look alike", a, b);
  CHECK(dsc_font_glyph(200) == dsc_font_glyph('?'), "non-ASCII draws as '?'");
  CHECK(dsc_text_width("Ag9.", 1) == 23 && dsc_text_width("Ag9.", 2) == 46, "width %d", dsc_text_width("Ag9.", 1));
  CHECK(dsc_text_width("ab\nxyz", 1) == 17 && dsc_text_height("ab\nxyz", 1) == 15, "two-line size");
  CHECK(dsc_text_width("", 1) == 0, "empty width");
  dsc_canvas c;
  CHECK_OK(dsc_canvas_init(&c, 40, 12, BLACK));
  int w = dsc_canvas_text(&c, 1, 1, "Ag9.", 1, WHITE);
  CHECK(w == 23, "returned width %d", w);
  int n = count_set(&c), inside = 0;
  for (int y = 1; y < 8; y++)
    for (int x = 1; x < 24; x++) inside += is_set(&c, x, y);
  CHECK(n > 20 && inside == n, "text pixels %d, inside its box %d", n, inside);
  dsc_canvas_fill(&c, BLACK);
  dsc_canvas_text(&c, 0, 0, "1", 2, WHITE);
  /* '1' row 0 is 0x04: column 2 -> pixels x 4..5, y 0..1 at scale 2 */
  CHECK(is_set(&c, 4, 0) && is_set(&c, 5, 1) && !is_set(&c, 3, 0) && !is_set(&c, 6, 0), "scaled glyph");
  dsc_canvas_free(&c);
}

static void test_blits_and_colours(void) {
  dsc_canvas c;
  CHECK_OK(dsc_canvas_init(&c, 4, 4, BLACK));
  uint8_t src[2 * 2 * 3] = {10, 0, 0, 20, 0, 0, 30, 0, 0, 40, 0, 0};
  dsc_canvas_blit(&c, 0, 0, 4, 4, src, 2, 2);
  for (int y = 0; y < 4; y++)
    for (int x = 0; x < 4; x++) {
      int want = 10 * (1 + (y / 2) * 2 + x / 2);
      CHECK(c.rgb[(y * 4 + x) * 3] == want, "nearest blit (%d, %d): %d != %d", x, y, c.rgb[(y * 4 + x) * 3], want);
    }
  uint8_t pal[256][3] = {{0}};
  for (int k = 0; k < 256; k++) pal[k][0] = (uint8_t)k, pal[k][1] = 1;
  int32_t cls[4] = {3, -1, 300, 254};
  dsc_canvas_draw_classes(&c, 0, 0, 2, 2, cls, 2, 2, (const uint8_t(*)[3])pal);
  CHECK(c.rgb[0] == 3 && c.rgb[3] == 255 && c.rgb[4 * 3] == 255 && c.rgb[5 * 3] == 254, "class colours %d %d %d %d",
        c.rgb[0], c.rgb[3], c.rgb[12], c.rgb[15]);
  uint8_t idx[1] = {7};
  dsc_canvas_blit_index(&c, 3, 3, 5, 5, idx, 1, 1, (const uint8_t(*)[3])pal);
  CHECK(c.rgb[15 * 3] == 7 && c.rgb[15 * 3 + 1] == 1, "index blit");
  dsc_canvas_free(&c);
  dsc_rgb v0 = dsc_colormap_viridis(0), v1 = dsc_colormap_viridis(1), vn = dsc_colormap_viridis(NAN);
  CHECK(v0.r == 68 && v0.g == 1 && v0.b == 84 && v1.r == 253 && v1.b == 37 && vn.r == 68, "viridis ends");
  dsc_rgb a = dsc_colormap_category(0), b = dsc_colormap_category(10), m = dsc_colormap_category(-1);
  dsc_rgb l = dsc_colormap_category(9);
  CHECK(a.r == b.r && a.g == b.g && m.b == l.b, "category cycles");
}

/* A deterministic value in [-1, 1). */
static double test_noise(int i) {
  uint32_t z = (uint32_t)i * 2654435761u + 12345u;
  z ^= z >> 15, z *= 2246822519u, z ^= z >> 13;
  return (double)(z % 2000000) / 1000000.0 - 1.0;
}

static void test_pca_known(void) {
  /* x = 5 + a_r u + b_r w + noise: var(a) >> var(b) >> noise, u and w orthonormal */
  enum { ROWS = 300, D = 6 };
  const double u[D] = {0.6, -0.8, 0, 0, 0, 0}, w[D] = {0, 0, 0, 1, 0, 0};
  float x[ROWS * D];
  double sa = 0, sb = 0, ma = 0, mb = 0;
  double av[ROWS], bv[ROWS];
  for (int r = 0; r < ROWS; r++) {
    av[r] = 10 * test_noise(3 * r), bv[r] = 3 * test_noise(3 * r + 1);
    ma += av[r] / ROWS, mb += bv[r] / ROWS;
  }
  /* centre a and b and make them exactly uncorrelated, so u and w are the exact axes */
  double ab = 0, aa = 0;
  for (int r = 0; r < ROWS; r++) av[r] -= ma, bv[r] -= mb, ab += av[r] * bv[r], aa += av[r] * av[r];
  for (int r = 0; r < ROWS; r++) bv[r] -= ab / aa * av[r];
  ma = mb = 0;
  for (int r = 0; r < ROWS; r++) {
    sa += (av[r] - ma) * (av[r] - ma) / ROWS, sb += (bv[r] - mb) * (bv[r] - mb) / ROWS;
    for (int j = 0; j < D; j++) x[r * D + j] = (float)(5 + av[r] * u[j] + bv[r] * w[j] + 1e-3 * test_noise(1000 + r * D + j));
  }
  double mean[D], comp[3 * D], var[3];
  CHECK_OK(dsc_pca(x, ROWS, D, 3, mean, comp, var));
  double d1 = 0, d2 = 0, n1 = 0, n3 = 0;
  for (int j = 0; j < D; j++) d1 += comp[j] * u[j], d2 += comp[D + j] * w[j], n1 += comp[j] * comp[j], n3 += comp[2 * D + j] * comp[2 * D + j];
  CHECK(fabs(fabs(d1) - 1) < 1e-6, "first component . u = %.9f", d1);
  CHECK(fabs(fabs(d2) - 1) < 1e-6, "second component . w = %.9f", d2);
  CHECK(fabs(n1 - 1) < 1e-9 && fabs(n3 - 1) < 1e-9, "unit components");
  CHECK(comp[1] > 0 && comp[0] < 0, "sign: the largest entry (|-0.8|) is positive: got %g %g", comp[0], comp[1]);
  CHECK(fabs(var[0] - sa) < 1e-3 * sa && fabs(var[1] - sb) < 1e-3 * sb && var[2] < 1e-5, "variances %g %g %g (want %g %g ~0)",
        var[0], var[1], var[2], sa, sb);
  CHECK(fabs(mean[0] - (5 + 0.6 * ma)) < 1e-4, "mean");
  /* the RGB map: red follows the first component, spread over 0..255 */
  uint8_t rgb[ROWS * 3];
  CHECK_OK(dsc_pca_rgb(x, ROWS, D, mean, comp, rgb));
  int lo = 255, hi = 0, order_ok = 1;
  for (int r = 0; r < ROWS; r++) {
    lo = rgb[r * 3] < lo ? rgb[r * 3] : lo, hi = rgb[r * 3] > hi ? rgb[r * 3] : hi;
    for (int q = 0; q < ROWS; q += 37) { /* projection order is kept (sign: comp . u = d1) */
      double pr = av[r] * (d1 > 0 ? 1 : -1), pq = av[q] * (d1 > 0 ? 1 : -1);
      if (pr > pq + 0.5 && rgb[r * 3] < rgb[q * 3]) order_ok = 0;
    }
  }
  CHECK(lo == 0 && hi == 255 && order_ok, "red range %d..%d, ordered %d", lo, hi, order_ok);
  /* one row: the components are still an orthonormal basis, the variances 0, colours grey */
  CHECK_OK(dsc_pca(x, 1, D, 3, mean, comp, var));
  CHECK(var[0] == 0 && var[2] == 0, "one row: variances");
  CHECK_OK(dsc_pca_rgb(x, 1, D, mean, comp, rgb));
  CHECK(rgb[0] == 128 && rgb[1] == 128 && rgb[2] == 128, "one row: grey");
  CHECK_ERR(dsc_pca(x, ROWS, D, 9, mean, comp, var), "k");
}

static void test_cluster_colors(void) {
  /* cluster 0 mostly class 3, cluster 1 mostly class 3 too (fewer), cluster 2 class 0 */
  int32_t labels[10] = {0, 0, 0, 1, 1, 2, 2, 2, 0, 1};
  uint8_t ref[10] = {3, 3, 3, 3, 5, 0, 0, 255, 255, 255};
  uint8_t out[3];
  dsc_cluster_match_colors(labels, ref, 10, 3, out);
  CHECK(out[0] == 3 && out[2] == 0 && out[1] == 5, "matched colours %d %d %d", out[0], out[1], out[2]);
  uint8_t ref2[10] = {3, 3, 3, 3, 3, 0, 0, 255, 255, 255};
  dsc_cluster_match_colors(labels, ref2, 10, 3, out);
  CHECK(out[0] == 3 && out[2] == 0 && out[1] == 1, "unmatched cluster takes the first free index: %d %d %d", out[0], out[1], out[2]);
}

static void write_text(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  if (f) fputs(text, f), fclose(f);
}

static void test_curves(void) {
  char dir[64];
  test_temp_template(dir, sizeof dir, "viz");
  CHECK(mkdtemp(dir) != NULL, "mkdtemp");
  char path[128], png[128];
  snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
  write_text(path,
             "{\"step\": 0, \"loss\": 9.0, \"loss_ins\": 8.5, \"lr\": 0.1}\n"
             "\n"
             "{\"step\": 10, \"loss\": 7.0, \"loss_ins\": 6.5}\n"
             "{\"step\": 20, \"loss\": 5.0, \"loss_ins\": \"n/a\"}\n");
  const char *keys[3] = {"loss", "loss_ins", "loss_pix"};
  dsc_viz_run runs[2];
  CHECK_OK(dsc_viz_run_read(path, "run-a", keys, 3, &runs[0]));
  CHECK(runs[0].series[0].n == 3 && runs[0].series[1].n == 2 && runs[0].series[2].n == 0, "series sizes %lld %lld %lld",
        (long long)runs[0].series[0].n, (long long)runs[0].series[1].n, (long long)runs[0].series[2].n);
  CHECK(runs[0].series[0].step[2] == 20 && runs[0].series[0].value[1] == 7, "points");
  dsc_viz_smooth(runs[0].series[0].value, runs[0].series[0].n, 2);
  CHECK(runs[0].series[0].value[0] == 9 && runs[0].series[0].value[1] == 8 && runs[0].series[0].value[2] == 6, "smoothing");
  write_text(path, "{\"step\": 3, \"loss\": 2.5}\n");
  CHECK_OK(dsc_viz_run_read(path, "single", keys, 3, &runs[1]));
  int w, h;
  dsc_viz_curves_size(3, 2, &w, &h);
  CHECK(w == 2 * DSC_VIZ_PANEL_W && h == 2 * DSC_VIZ_PANEL_H + 8 + 2 * DSC_VIZ_LEGEND_ROW, "size %dx%d", w, h);
  dsc_canvas c, c2;
  CHECK_OK(dsc_canvas_init(&c, w, h, BLACK));
  CHECK_OK(dsc_canvas_init(&c2, w, h, WHITE));
  CHECK_OK(dsc_viz_curves_draw(&c, runs, 2, keys, 3));
  CHECK_OK(dsc_viz_curves_draw(&c2, runs, 2, keys, 3));
  CHECK(memcmp(c.rgb, c2.rgb, (size_t)w * h * 3) == 0, "drawing is deterministic");
  /* the first run's colour appears in the first panel (its line) */
  dsc_rgb col = dsc_colormap_category(0);
  int found = 0;
  for (int y = 0; y < DSC_VIZ_PANEL_H && !found; y++)
    for (int x = 0; x < DSC_VIZ_PANEL_W; x++) {
      const uint8_t *p = c.rgb + ((size_t)y * w + x) * 3;
      if (p[0] == col.r && p[1] == col.g && p[2] == col.b) found = 1;
    }
  CHECK(found, "run colour in panel 1");
  snprintf(png, sizeof png, "%s/curves.png", dir);
  CHECK_OK(dsc_canvas_save_png(&c, png));
  dsc_image img = {0};
  CHECK_OK(dsc_image_decode_file(png, &img));
  CHECK(img.w == w && img.h == h && img.rgb && memcmp(img.rgb, c.rgb, (size_t)w * h * 3) == 0, "PNG round trip %dx%d", img.w, img.h);
  dsc_image_free(&img);
  dsc_canvas_free(&c);
  CHECK_OK(dsc_canvas_init(&c, 10, 10, BLACK));
  CHECK_ERR(dsc_viz_curves_draw(&c, runs, 2, keys, 3), "needs");
  dsc_canvas_free(&c);
  dsc_canvas_free(&c2);
  dsc_viz_run_free(&runs[0]);
  dsc_viz_run_free(&runs[1]);
  /* errors name the file and line */
  write_text(path, "");
  CHECK_ERR(dsc_viz_run_read(path, "x", keys, 3, &runs[0]), "no metrics");
  write_text(path, "{\"step\": 1, \"loss\": 1}\n{\"loss\": 2}\n");
  CHECK_ERR(dsc_viz_run_read(path, "x", keys, 3, &runs[0]), "metrics.jsonl:2: no numeric \"step\"");
  write_text(path, "{\"step\": 1, \"loss\": nan}\n");
  CHECK_ERR(dsc_viz_run_read(path, "x", keys, 3, &runs[0]), "metrics.jsonl:1: not a JSON object");
  CHECK(runs[0].series == NULL && runs[0].label == NULL, "failed read leaves nothing allocated");
  CHECK_ERR(dsc_viz_run_read("/nonexistent/metrics.jsonl", "x", keys, 3, &runs[0]), "cannot open /nonexistent");
  unlink(path);
  unlink(png);
  rmdir(dir);
}

static const dsc_test tests[] = {
    {"line_pixels", test_line_pixels},
    {"rects", test_rects},
    {"clipping", test_clipping},
    {"text", test_text},
    {"blits_and_colours", test_blits_and_colours},
    {"pca_known", test_pca_known},
    {"cluster_colors", test_cluster_colors},
    {"curves", test_curves},
};
TEST_MAIN(tests)
