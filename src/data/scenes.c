/* scenes.c: the multi-object scene generator (include/dsc/scenes.h, docs/scenes.md).
 *
 * Conventions: a scene is drawn in float RGB (0..255 scale) on a size x size canvas: the
 * background, then each item composited over what is there (later items occlude earlier ones),
 * then per-pixel noise, then rounding to uint8. Every random number comes from sc_rng, a stream
 * of Philox words keyed by (seed, DSC_RNG_SCENES, split, index, stream << 20 | k), so a scene
 * depends on nothing but its key: threads, order and the other scenes never change a byte.
 * Items are resized with dsc_image_resize_u8 (Pillow's antialiased bilinear).
 */
#include "dsc/scenes.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "dsc/dataset.h"
#include "dsc/image.h"
#include "dsc/image_write.h"
#include "dsc/rng.h"

static const char *const sc_class_names[DSC_SCENES_NUM_CLASSES] = {
    "background", "t-shirt/top", "trouser", "pullover", "dress", "coat",
    "sandal",     "shirt",       "sneaker", "bag",      "ankle boot"};
static const char *const sc_label_dirs[DSC_SCENES_NUM_CLASSES - 1] = {
    "00_t-shirt_top", "01_trouser", "02_pullover", "03_dress",   "04_coat",
    "05_sandal",      "06_shirt",   "07_sneaker",  "08_bag",     "09_ankle_boot"};
static const char *const sc_split_names[2] = {"train", "val"};

enum { SC_STREAM_LAYOUT = 0, SC_STREAM_BACKGROUND = 1, SC_STREAM_ITEM0 = 2, SC_STREAM_NOISE = 10 };

const char *dsc_scenes_class_name(int c) {
  return c >= 0 && c < DSC_SCENES_NUM_CLASSES ? sc_class_names[c] : NULL;
}

const char *dsc_scenes_label_dir(int k) {
  return k >= 0 && k < DSC_SCENES_NUM_CLASSES - 1 ? sc_label_dirs[k] : NULL;
}

void dsc_scenes_id(dsc_scenes_split split, uint32_t index, char *buf, int cap) {
  snprintf(buf, (size_t)cap, "%s_%06u", sc_split_names[split == DSC_SCENES_VAL], index);
}

/* ---- item pool ---- */

dsc_status *dsc_scenes_items_load(const char *dir, dsc_scenes_split split, dsc_scenes_items *out) {
  *out = (dsc_scenes_items){0};
  dsc_dataset_config dc = {.path = dir, .format = DSC_DATASET_IDX,
                           .split = split == DSC_SCENES_VAL ? "t10k" : "train"};
  dsc_dataset *ds = NULL;
  DSC_TRY(dsc_status_wrap(dsc_dataset_open(&dc, &ds), "scene items (Fashion-MNIST)"));
  size_t n = dsc_dataset_size(ds);
  int w = 0, h = 0;
  dsc_status *st = dsc_dataset_probe(ds, 0, &w, &h, NULL);
  if (!st && n > (size_t)DSC_SCENES_MAX_COUNT * 10)
    st = dsc_errorf("%s: %zu items, more than the scene generator takes", dir, n);
  if (!st) {
    out->pixels = malloc(n * (size_t)w * (size_t)h);
    out->labels = malloc(n);
    if (!out->pixels || !out->labels) st = dsc_errorf("%s: out of memory for %zu items", dir, n);
  }
  for (size_t i = 0; i < n && !st; i++) {
    dsc_image img;
    int label;
    st = dsc_dataset_load(ds, i, &img, &label, NULL);
    if (st) break;
    if (img.w != w || img.h != h) st = dsc_errorf("%s: item %zu is %dx%d, not %dx%d", dir, i, img.w, img.h, w, h);
    else if (label < 0 || label > 9) st = dsc_errorf("%s: item %zu has class %d (0..9 expected)", dir, i, label);
    else {
      uint8_t *dst = out->pixels + i * (size_t)w * (size_t)h;
      for (int p = 0; p < w * h; p++) dst[p] = img.rgb[3 * p];
      out->labels[i] = (uint8_t)label;
    }
    dsc_image_free(&img);
  }
  dsc_dataset_free(ds);
  if (st) {
    dsc_scenes_items_free(out);
    return st;
  }
  out->n = (int)n;
  out->w = w;
  out->h = h;
  return NULL;
}

void dsc_scenes_items_free(dsc_scenes_items *items) {
  if (!items) return;
  free(items->pixels);
  free(items->labels);
  *items = (dsc_scenes_items){0};
}

/* ---- configuration ---- */

void dsc_scenes_config_default(dsc_scenes_config *cfg) {
  *cfg = (dsc_scenes_config){.size = 64, .max_items = 4, .seed = 0, .scale_min = 0.35f,
                             .scale_max = 0.8f, .threshold = 0.15f, .opaque = 0};
}

dsc_status *dsc_scenes_config_check(const dsc_scenes_config *cfg) {
  if (cfg->size < DSC_SCENES_MIN_SIZE || cfg->size > DSC_SCENES_MAX_SIZE)
    return dsc_errorf("scene size %d out of range [%d, %d]", cfg->size, DSC_SCENES_MIN_SIZE, DSC_SCENES_MAX_SIZE);
  if (cfg->max_items < 1 || cfg->max_items > DSC_SCENES_MAX_ITEMS)
    return dsc_errorf("max items per scene %d out of range [1, %d]", cfg->max_items, DSC_SCENES_MAX_ITEMS);
  if (!(cfg->scale_min >= 0.05f && cfg->scale_min <= cfg->scale_max && cfg->scale_max <= 2.0f))
    return dsc_errorf("item scale range [%g, %g] invalid (0.05 <= min <= max <= 2)", (double)cfg->scale_min,
                      (double)cfg->scale_max);
  if (!(cfg->threshold > 0.0f && cfg->threshold < 1.0f))
    return dsc_errorf("mask threshold %g out of range (0, 1)", (double)cfg->threshold);
  return NULL;
}

/* ---- random streams ---- */

typedef struct sc_rng {
  uint64_t seed;
  uint32_t split, index, stream, k;
  uint32_t buf[4];
  int left;
} sc_rng;

static sc_rng sc_rng_make(const dsc_scenes_config *cfg, dsc_scenes_split split, uint32_t index, uint32_t stream) {
  return (sc_rng){.seed = cfg->seed, .split = (uint32_t)split, .index = index, .stream = stream};
}

static uint32_t sc_next(sc_rng *r) {
  if (r->left == 0) {
    uint32_t ctr[4] = {DSC_RNG_SCENES, r->split, r->index, r->stream << 20 | (r->k++ & 0xFFFFFu)};
    dsc_philox4x32(r->seed, ctr, r->buf);
    r->left = 4;
  }
  return r->buf[4 - r->left--];
}

static float sc_unif(sc_rng *r, float lo, float hi) { return lo + (hi - lo) * dsc_rng_u01(sc_next(r)); }

/* Uniform integer in [lo, hi] (hi >= lo). */
static int sc_int(sc_rng *r, int lo, int hi) {
  return lo + (int)(((uint64_t)sc_next(r) * (uint64_t)(uint32_t)(hi - lo + 1)) >> 32);
}

/* HSV (h in [0,1), s, v in [0,1]) to RGB on the 0..255 scale. */
static void sc_hsv(float h, float s, float v, float rgb[3]) {
  float h6 = h * 6.0f;
  int sector = (int)h6;
  float f = h6 - (float)sector;
  float p = v * (1 - s), q = v * (1 - s * f), t = v * (1 - s * (1 - f));
  float r, g, b;
  switch (sector % 6) {
  case 0: r = v, g = t, b = p; break;
  case 1: r = q, g = v, b = p; break;
  case 2: r = p, g = v, b = t; break;
  case 3: r = p, g = q, b = v; break;
  case 4: r = t, g = p, b = v; break;
  default: r = v, g = p, b = q; break;
  }
  rgb[0] = 255.0f * r;
  rgb[1] = 255.0f * g;
  rgb[2] = 255.0f * b;
}

static void sc_random_colour(sc_rng *r, float s_lo, float v_lo, float rgb[3]) {
  float h = sc_unif(r, 0, 1), s = sc_unif(r, s_lo, 1), v = sc_unif(r, v_lo, 1);
  sc_hsv(h, s, v, rgb);
}

static float sc_frac(float x) { return x - floorf(x); }

/* ---- background ---- */

enum { SC_BG_GRADIENT, SC_BG_STRIPES, SC_BG_CHECKERS, SC_BG_NOISE, SC_BG_KINDS };
#define SC_NOISE_GRID_MAX 8

/* Draws the background into canvas (size*size*3 floats) and returns the noise amplitude. */
static float sc_background(const dsc_scenes_config *cfg, dsc_scenes_split split, uint32_t index, float *canvas) {
  sc_rng r = sc_rng_make(cfg, split, index, SC_STREAM_BACKGROUND);
  const int S = cfg->size;
  const float c = 0.5f * (float)(S - 1);
  int kind = sc_int(&r, 0, SC_BG_KINDS - 1);
  float c1[3], c2[3];
  sc_random_colour(&r, 0.0f, 0.15f, c1);
  sc_random_colour(&r, 0.0f, 0.15f, c2);
  float angle = sc_unif(&r, 0, 6.2831853f), ca = cosf(angle), sa = sinf(angle);
  float period = sc_unif(&r, 3.0f, fmaxf(4.0f, (float)S / 4)), phase = sc_unif(&r, 0, 1);
  float duty = sc_unif(&r, 0.3f, 0.7f);
  int grid = sc_int(&r, 2, SC_NOISE_GRID_MAX);
  float values[(SC_NOISE_GRID_MAX + 1) * (SC_NOISE_GRID_MAX + 1)];
  for (int i = 0; i < (grid + 1) * (grid + 1); i++) values[i] = sc_unif(&r, 0, 1);
  /* lighting: a linear brightness ramp across the canvas, on every kind */
  float light = sc_unif(&r, 0, 0.5f), la = sc_unif(&r, 0, 6.2831853f), lc = cosf(la), ls = sinf(la);
  float noise_amp = sc_unif(&r, 0, 12.0f);
  for (int y = 0; y < S; y++)
    for (int x = 0; x < S; x++) {
      float dx = (float)x - c, dy = (float)y - c, u = dx * ca + dy * sa, t;
      switch (kind) {
      case SC_BG_GRADIENT: t = fminf(1.0f, fmaxf(0.0f, u / (1.2f * (float)S) + 0.5f)); break;
      case SC_BG_STRIPES: t = sc_frac(u / period + phase) < duty ? 0.0f : 1.0f; break;
      case SC_BG_CHECKERS: {
        float v = -dx * sa + dy * ca;
        long a = (long)floorf(u / period + phase), b = (long)floorf(v / period + phase);
        t = (float)((a + b) & 1);
        break;
      }
      default: { /* value noise: bilinear between random values on a grid x grid lattice */
        float gx = (float)x * (float)grid / (float)S, gy = (float)y * (float)grid / (float)S;
        int ix = (int)gx, iy = (int)gy;
        float fx = gx - (float)ix, fy = gy - (float)iy;
        fx = fx * fx * (3 - 2 * fx);
        fy = fy * fy * (3 - 2 * fy);
        const float *row0 = values + iy * (grid + 1), *row1 = row0 + (grid + 1);
        float top = row0[ix] + (row0[ix + 1] - row0[ix]) * fx;
        float bottom = row1[ix] + (row1[ix + 1] - row1[ix]) * fx;
        t = top + (bottom - top) * fy;
        break;
      }
      }
      float shade = 1.0f + light * (dx * lc + dy * ls) / (float)S;
      float *px = canvas + 3 * ((size_t)y * S + x);
      for (int ch = 0; ch < 3; ch++) px[ch] = (c1[ch] + (c2[ch] - c1[ch]) * t) * shade;
    }
  return noise_amp;
}

/* Adds the per-pixel noise and rounds the canvas to rgb. */
static void sc_finish(const dsc_scenes_config *cfg, dsc_scenes_split split, uint32_t index, float noise_amp,
                      const float *canvas, uint8_t *rgb) {
  const size_t n = (size_t)cfg->size * (size_t)cfg->size;
  for (size_t p = 0; p < n; p++) {
    uint32_t ctr[4] = {DSC_RNG_SCENES, (uint32_t)split, index, (uint32_t)SC_STREAM_NOISE << 20 | (uint32_t)p}, w[4];
    dsc_philox4x32(cfg->seed, ctr, w);
    for (int ch = 0; ch < 3; ch++) {
      float v = canvas[3 * p + ch] + noise_amp * (2.0f * dsc_rng_u01(w[ch]) - 1.0f);
      v = floorf(v + 0.5f);
      rgb[3 * p + ch] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
    }
  }
}

/* ---- items ---- */

enum { SC_TEX_PLAIN, SC_TEX_STRIPES, SC_TEX_CHECKERS };

/* Draws item i of the scene over canvas, recording its pixels in mask and owner. */
static dsc_status *sc_item(const dsc_scenes_config *cfg, const dsc_scenes_items *items, dsc_scenes_split split,
                           uint32_t index, int i, float *canvas, uint8_t *mask, uint8_t *owner,
                           dsc_scene_item *out) {
  sc_rng r = sc_rng_make(cfg, split, index, SC_STREAM_ITEM0 + (uint32_t)i);
  const int S = cfg->size;
  int src = sc_int(&r, 0, items->n - 1);
  int cls = items->labels[src];
  if (cls > 9) return dsc_errorf("scene item %d has class %d (0..9 expected)", src, cls);
  float scale = sc_unif(&r, cfg->scale_min, cfg->scale_max);
  float aspect = expf(sc_unif(&r, -0.223f, 0.223f)); /* 0.8 .. 1.25 */
  int w = (int)floorf(scale * (float)S * sqrtf(aspect) + 0.5f), h = (int)floorf(scale * (float)S / sqrtf(aspect) + 0.5f);
  if (w < 2) w = 2;
  if (h < 2) h = 2;
  int flip = (int)(sc_next(&r) & 1);
  int x0 = sc_int(&r, -w / 3, S - w + w / 3), y0 = sc_int(&r, -h / 3, S - h + h / 3);
  float col1[3], col2[3];
  sc_random_colour(&r, 0.25f, 0.45f, col1);
  sc_random_colour(&r, 0.25f, 0.45f, col2);
  int tex = sc_int(&r, 0, 3);
  tex = tex <= 1 ? SC_TEX_PLAIN : tex == 2 ? SC_TEX_STRIPES : SC_TEX_CHECKERS;
  float tangle = sc_unif(&r, 0, 3.1415927f), tc = cosf(tangle), ts = sinf(tangle);
  float tperiod = sc_unif(&r, 2.0f, fmaxf(3.0f, (float)(w < h ? w : h) / 3));
  float shade_lo = sc_unif(&r, 0.2f, 0.6f);
  *out = (dsc_scene_item){.source = src, .cls = cls, .x = x0, .y = y0, .w = w, .h = h};

  /* the item's grey image, mirrored when asked, resized to w x h */
  const int iw = items->w, ih = items->h;
  dsc_image grey = {iw, ih, malloc((size_t)iw * ih * 3)}, sized = {0, 0, NULL};
  if (!grey.rgb) return dsc_errorf("out of memory drawing a scene item");
  const uint8_t *src_px = items->pixels + (size_t)src * iw * ih;
  for (int y = 0; y < ih; y++)
    for (int x = 0; x < iw; x++) {
      uint8_t v = src_px[y * iw + (flip ? iw - 1 - x : x)];
      uint8_t *d = grey.rgb + 3 * ((size_t)y * iw + x);
      d[0] = d[1] = d[2] = v;
    }
  dsc_status *st = dsc_image_resize_u8(&grey, w, h, &sized);
  dsc_image_free(&grey);
  if (st) return st;

  const float T = cfg->threshold * 255.0f;
  for (int v = 0; v < h; v++) {
    int y = y0 + v;
    if (y < 0 || y >= S) continue;
    for (int u = 0; u < w; u++) {
      int x = x0 + u;
      if (x < 0 || x >= S) continue;
      float g = (float)sized.rgb[3 * ((size_t)v * w + u)];
      float alpha = cfg->opaque ? (g > T ? 1.0f : 0.0f) : fminf(1.0f, fmaxf(0.0f, (g - 0.5f * T) / T));
      if (alpha <= 0.0f) continue;
      const float *col = col1;
      if (tex == SC_TEX_STRIPES) {
        col = sc_frac(((float)u * tc + (float)v * ts) / tperiod) < 0.5f ? col1 : col2;
      } else if (tex == SC_TEX_CHECKERS) {
        long a = (long)floorf((float)u / tperiod), b = (long)floorf((float)v / tperiod);
        col = (a + b) & 1 ? col2 : col1;
      }
      float shade = shade_lo + (1.0f - shade_lo) * g / 255.0f;
      float *px = canvas + 3 * ((size_t)y * S + x);
      for (int ch = 0; ch < 3; ch++) px[ch] += (col[ch] * shade - px[ch]) * alpha;
      if (g > T) {
        mask[(size_t)y * S + x] = (uint8_t)(cls + 1);
        owner[(size_t)y * S + x] = (uint8_t)(i + 1);
      }
    }
  }
  dsc_image_free(&sized);
  return NULL;
}

dsc_status *dsc_scenes_render_background(const dsc_scenes_config *cfg, dsc_scenes_split split,
                                         uint32_t index, uint8_t *rgb) {
  DSC_TRY(dsc_scenes_config_check(cfg));
  size_t n = (size_t)cfg->size * (size_t)cfg->size;
  float *canvas = malloc(n * 3 * sizeof *canvas);
  if (!canvas) return dsc_errorf("out of memory for a %dx%d scene", cfg->size, cfg->size);
  float amp = sc_background(cfg, split, index, canvas);
  sc_finish(cfg, split, index, amp, canvas, rgb);
  free(canvas);
  return NULL;
}

dsc_status *dsc_scenes_generate(const dsc_scenes_config *cfg, const dsc_scenes_items *items,
                                dsc_scenes_split split, uint32_t index, uint8_t *rgb, uint8_t *mask,
                                dsc_scene_info *info) {
  DSC_TRY(dsc_scenes_config_check(cfg));
  if (!items || items->n < 1 || items->w < 1 || items->h < 1 || !items->pixels || !items->labels)
    return dsc_errorf("scene generator: empty item pool");
  size_t n = (size_t)cfg->size * (size_t)cfg->size;
  float *canvas = malloc(n * 3 * sizeof *canvas);
  uint8_t *owner = calloc(n, 1);
  dsc_status *st = NULL;
  if (!canvas || !owner) st = dsc_errorf("out of memory for a %dx%d scene", cfg->size, cfg->size);
  dsc_scene_info local;
  dsc_scene_info *inf = info ? info : &local;
  memset(inf, 0, sizeof *inf);
  inf->label = -1;
  if (!st) {
    memset(mask, 0, n);
    sc_rng layout = sc_rng_make(cfg, split, index, SC_STREAM_LAYOUT);
    inf->n_items = sc_int(&layout, 1, cfg->max_items);
    float amp = sc_background(cfg, split, index, canvas);
    for (int i = 0; i < inf->n_items && !st; i++)
      st = sc_item(cfg, items, split, index, i, canvas, mask, owner, &inf->items[i]);
    if (!st) sc_finish(cfg, split, index, amp, canvas, rgb);
  }
  if (!st) {
    for (size_t p = 0; p < n; p++)
      if (owner[p]) inf->items[owner[p] - 1].pixels++;
    int best = 0;
    for (int i = 0; i < inf->n_items; i++)
      if (inf->items[i].pixels > 0 && inf->items[i].pixels >= best) {
        best = inf->items[i].pixels;
        inf->label = inf->items[i].cls;
      }
  }
  free(canvas);
  free(owner);
  return st;
}

/* ---- writing the dataset ---- */

static char *sc_path(const char *a, const char *b, const char *c) {
  size_t n = strlen(a) + strlen(b) + (c ? strlen(c) : 0) + 3;
  char *p = malloc(n);
  if (p) snprintf(p, n, c ? "%s/%s/%s" : "%s/%s", a, b, c);
  return p;
}

/* mkdir -p */
static dsc_status *sc_mkdirs(const char *dir) {
  char buf[4096];
  size_t n = strlen(dir);
  if (n >= sizeof buf) return dsc_errorf("%s: path too long", dir);
  memcpy(buf, dir, n + 1);
  for (size_t i = 1; i <= n; i++) {
    if (buf[i] != '/' && buf[i] != 0) continue;
    char saved = buf[i];
    buf[i] = 0;
    if (mkdir(buf, 0777) != 0 && errno != EEXIST) return dsc_errorf("%s: cannot create directory: %s", buf, strerror(errno));
    struct stat sb;
    if (stat(buf, &sb) != 0 || !S_ISDIR(sb.st_mode)) return dsc_errorf("%s: exists and is not a directory", buf);
    buf[i] = saved;
  }
  return NULL;
}

/* 1 for a file name this generator writes: (train|val)_<digits>.png */
static int sc_is_scene_file(const char *name) {
  const char *s = strncmp(name, "train_", 6) == 0 ? name + 6 : strncmp(name, "val_", 4) == 0 ? name + 4 : NULL;
  if (!s || *s < '0' || *s > '9') return 0;
  while (*s >= '0' && *s <= '9') s++;
  return strcmp(s, ".png") == 0;
}

/* Removes the scene files of an earlier run from dir (a missing dir is fine). */
static dsc_status *sc_clean_dir(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return errno == ENOENT ? NULL : dsc_errorf("%s: cannot open directory: %s", dir, strerror(errno));
  dsc_status *st = NULL;
  struct dirent *e;
  while (!st && (e = readdir(d))) {
    if (!sc_is_scene_file(e->d_name)) continue;
    char *p = sc_path(dir, e->d_name, NULL);
    if (!p) st = dsc_errorf("out of memory");
    else if (unlink(p) != 0 && errno != ENOENT) st = dsc_errorf("%s: cannot remove: %s", p, strerror(errno));
    free(p);
  }
  closedir(d);
  return st;
}

/* Cleans every class folder under labels/<split>. */
static dsc_status *sc_clean_labels(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return errno == ENOENT ? NULL : dsc_errorf("%s: cannot open directory: %s", dir, strerror(errno));
  dsc_status *st = NULL;
  struct dirent *e;
  while (!st && (e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    char *p = sc_path(dir, e->d_name, NULL);
    struct stat sb;
    if (!p) st = dsc_errorf("out of memory");
    else if (stat(p, &sb) == 0 && S_ISDIR(sb.st_mode)) st = sc_clean_dir(p);
    free(p);
  }
  closedir(d);
  return st;
}

static int sc_dir_is_empty(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return 1;
  struct dirent *e;
  int empty = 1;
  while (empty && (e = readdir(d)))
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) empty = 0;
  closedir(d);
  return empty;
}

/* Writes a small text file atomically (temporary file renamed into place). */
static dsc_status *sc_write_text(const char *path, const char *text, size_t n) {
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.tmp.%ld.%ld", path, (long)getpid(), (long)syscall(SYS_gettid));
  FILE *f = fopen(tmp, "wb");
  if (!f) return dsc_errorf("%s: cannot create %s: %s", path, tmp, strerror(errno));
  int bad = fwrite(text, 1, n, f) != n;
  bad |= fclose(f) != 0;
  if (bad) {
    dsc_status *st = dsc_errorf("%s: cannot write: %s", path, strerror(errno));
    unlink(tmp);
    return st;
  }
  if (rename(tmp, path) != 0) {
    dsc_status *st = dsc_errorf("%s: cannot rename %s onto it: %s", path, tmp, strerror(errno));
    unlink(tmp);
    return st;
  }
  return NULL;
}

/* Hard-links src at dst, copying the bytes where the file system refuses links. */
static dsc_status *sc_link_or_copy(const char *src, const char *dst) {
  if (link(src, dst) == 0) return NULL;
  if (errno == EEXIST) {
    unlink(dst);
    if (link(src, dst) == 0) return NULL;
  }
  FILE *in = fopen(src, "rb");
  if (!in) return dsc_errorf("%s: cannot read: %s", src, strerror(errno));
  size_t cap = 1 << 16, n = 0;
  char *buf = malloc(cap);
  dsc_status *st = NULL;
  while (buf && !st) {
    if (n == cap) {
      char *nb = realloc(buf, cap * 2);
      if (!nb) break;
      buf = nb;
      cap *= 2;
    }
    size_t got = fread(buf + n, 1, cap - n, in);
    if (got == 0) {
      if (ferror(in)) st = dsc_errorf("%s: read error", src);
      break;
    }
    n += got;
  }
  fclose(in);
  if (!buf && !st) st = dsc_errorf("%s: out of memory", src);
  if (!st) st = sc_write_text(dst, buf, n);
  free(buf);
  return st;
}

/* Generates and writes scene `index` of `split`; *label gets its class or -1. */
static dsc_status *sc_write_one(const dsc_scenes_write_config *cfg, const dsc_scenes_items *items,
                                dsc_scenes_split split, uint32_t index, uint8_t *rgb, uint8_t *mask,
                                const uint8_t (*palette)[3], int *label, long *class_pixels) {
  dsc_scene_info info;
  DSC_TRY(dsc_scenes_generate(&cfg->scene, items, split, index, rgb, mask, &info));
  *label = info.label;
  size_t n = (size_t)cfg->scene.size * (size_t)cfg->scene.size;
  for (size_t p = 0; p < n; p++) class_pixels[mask[p]]++;
  char id[32], name[48];
  dsc_scenes_id(split, index, id, sizeof id);
  snprintf(name, sizeof name, "%s.png", id);
  char *img = sc_path(cfg->out, "JPEGImages", name), *seg = sc_path(cfg->out, "SegmentationClass", name);
  char *lab = NULL;
  dsc_status *st = NULL;
  if (!img || !seg) st = dsc_errorf("out of memory");
  if (!st) st = dsc_png_write_rgb(img, cfg->scene.size, cfg->scene.size, rgb);
  if (!st) st = dsc_png_write_index(seg, cfg->scene.size, cfg->scene.size, mask, palette);
  if (!st && cfg->labels && info.label >= 0) {
    char rel[64];
    snprintf(rel, sizeof rel, "labels/%s/%s", sc_split_names[split], sc_label_dirs[info.label]);
    lab = sc_path(cfg->out, rel, name);
    st = lab ? sc_link_or_copy(img, lab) : dsc_errorf("out of memory");
  }
  free(img);
  free(seg);
  free(lab);
  return st;
}

static dsc_status *sc_write_split(const dsc_scenes_write_config *cfg, const dsc_scenes_items *items,
                                  dsc_scenes_split split, int count, dsc_scenes_write_stats *stats) {
  if (count > 0 && (!items || items->n < 1))
    return dsc_errorf("%s scenes asked for but no %s items given", sc_split_names[split], sc_split_names[split]);
  dsc_status **errs = calloc(count > 0 ? (size_t)count : 1, sizeof *errs);
  int *labels = calloc(count > 0 ? (size_t)count : 1, sizeof *labels);
  char *list = malloc((size_t)count * 16 + 1);
  if (!errs || !labels || !list) {
    free(errs);
    free(labels);
    free(list);
    return dsc_errorf("out of memory for %d scenes", count);
  }
  uint8_t palette[256][3];
  dsc_voc_palette(palette);
  int threads = cfg->threads > 0 ? cfg->threads : omp_get_max_threads();
  size_t n_px = (size_t)cfg->scene.size * (size_t)cfg->scene.size;
#pragma omp parallel num_threads(threads)
  {
    uint8_t *rgb = malloc(n_px * 3), *mask = malloc(n_px);
    long pixels[DSC_SCENES_NUM_CLASSES] = {0};
#pragma omp for schedule(dynamic, 8)
    for (int i = 0; i < count; i++) {
      if (!rgb || !mask) errs[i] = dsc_errorf("out of memory for a %dx%d scene", cfg->scene.size, cfg->scene.size);
      else errs[i] = sc_write_one(cfg, items, split, (uint32_t)i, rgb, mask, (const uint8_t(*)[3])palette,
                                  &labels[i], pixels);
    }
#pragma omp critical(dsc_scenes_stats)
    for (int c = 0; c < DSC_SCENES_NUM_CLASSES; c++) stats->class_pixels[c] += pixels[c];
    free(rgb);
    free(mask);
  }
  dsc_status *st = NULL;
  size_t len = 0;
  for (int i = 0; i < count; i++) {
    if (errs[i] && !st) st = errs[i];
    else if (errs[i]) dsc_status_free(errs[i]);
    if (labels[i] >= 0) stats->labelled[split]++;
    char id[32];
    dsc_scenes_id(split, (uint32_t)i, id, sizeof id);
    len += (size_t)sprintf(list + len, "%s\n", id);
  }
  if (!st) {
    char rel[64];
    snprintf(rel, sizeof rel, "ImageSets/Segmentation/%s.txt", sc_split_names[split]);
    char *path = sc_path(cfg->out, rel, NULL);
    st = path ? sc_write_text(path, list, len) : dsc_errorf("out of memory");
    free(path);
  }
  free(errs);
  free(labels);
  free(list);
  return st;
}

dsc_status *dsc_scenes_write(const dsc_scenes_write_config *cfg, const dsc_scenes_items *train,
                             const dsc_scenes_items *val, dsc_scenes_write_stats *stats) {
  dsc_scenes_write_stats local;
  if (!stats) stats = &local;
  memset(stats, 0, sizeof *stats);
  if (!cfg->out || !cfg->out[0]) return dsc_errorf("no output directory given");
  if (strlen(cfg->out) > 3000) return dsc_errorf("%s: output path too long", cfg->out);
  DSC_TRY(dsc_scenes_config_check(&cfg->scene));
  if (cfg->n_train < 0 || cfg->n_train > DSC_SCENES_MAX_COUNT || cfg->n_val < 0 || cfg->n_val > DSC_SCENES_MAX_COUNT)
    return dsc_errorf("scene counts %d train, %d val: each must be in [0, %d]", cfg->n_train, cfg->n_val,
                      DSC_SCENES_MAX_COUNT);
  if (cfg->n_train + cfg->n_val == 0) return dsc_errorf("no scenes asked for (train and val counts are both 0)");
  struct stat sb;
  if (stat(cfg->out, &sb) == 0) {
    if (!S_ISDIR(sb.st_mode)) return dsc_errorf("%s: exists and is not a directory", cfg->out);
    if (!cfg->force && !sc_dir_is_empty(cfg->out))
      return dsc_errorf("%s: directory exists and is not empty (force, --force, writes into it, replacing "
                        "the scenes of an earlier run)", cfg->out);
  }
  static const char *const dirs[] = {"JPEGImages", "SegmentationClass", "ImageSets/Segmentation"};
  for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
    char *p = sc_path(cfg->out, dirs[i], NULL);
    dsc_status *st = p ? sc_mkdirs(p) : dsc_errorf("out of memory");
    if (!st && i < 2) st = sc_clean_dir(p);
    free(p);
    DSC_TRY(st);
  }
  for (int s = 0; s < 2; s++) {
    char *p = sc_path(cfg->out, "labels", sc_split_names[s]);
    dsc_status *st = p ? sc_clean_labels(p) : dsc_errorf("out of memory");
    for (int k = 0; !st && cfg->labels && k < DSC_SCENES_NUM_CLASSES - 1; k++) {
      char *q = sc_path(p, sc_label_dirs[k], NULL);
      st = q ? sc_mkdirs(q) : dsc_errorf("out of memory");
      free(q);
    }
    free(p);
    DSC_TRY(st);
  }
  char classes[512];
  size_t len = 0;
  for (int c = 0; c < DSC_SCENES_NUM_CLASSES; c++)
    len += (size_t)snprintf(classes + len, sizeof classes - len, "%s\n", sc_class_names[c]);
  char *p = sc_path(cfg->out, "classes.txt", NULL);
  dsc_status *st = p ? sc_write_text(p, classes, len) : dsc_errorf("out of memory");
  free(p);
  DSC_TRY(st);
  DSC_TRY(sc_write_split(cfg, train, DSC_SCENES_TRAIN, cfg->n_train, stats));
  return sc_write_split(cfg, val, DSC_SCENES_VAL, cfg->n_val, stats);
}
