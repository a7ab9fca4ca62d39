/* test_loader.c: the loader (include/dsc/loader.h) on small fixture folders made in mkdtemp:
 * every image exactly once per epoch (with and without drop_last, and over the ranks of a
 * shard), bitwise-identical batches with 1, 2 and 4 workers, different orders in different
 * epochs, bad files replaced (and an error under strict), eval mode, label maps for seg, and
 * shutdown in the middle of an epoch (make asan checks that nothing leaks).
 *
 * Fixture images are RGB PNGs from a small writer (zlib compress2) below and JPEGs from
 * TurboJPEG's encoder; outputs are 8x8 (64x64 for the reduced-decode test) so the whole file
 * runs in about a second.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <turbojpeg.h>
#include <unistd.h>
#include <zlib.h>

#include "dsc/loader.h"
#include "fixture_files.h"
#include "test.h"

static void write_image(const char *path, int w, int h, int seed) {
  uint8_t *px = malloc((size_t)w * h * 3);
  for (int i = 0; i < w * h * 3; i++) px[i] = (uint8_t)(seed * 29 + i * (seed + 3));
  fixture_write_png(path, w, h, 2, px, NULL, 0, 0, 0);
  free(px);
}

static void write_text(const char *path, const char *s) {
  FILE *f = fopen(path, "wb");
  fputs(s, f);
  fclose(f);
}

/* A folder of n images img%02d.png of varied sizes; bad (when non-NULL) lists indices written
 * as bad files instead (text named .png). */
static char *make_folder(int n, const int *bad, int n_bad) {
  char *d = fixture_tmpdir("loader");
  for (int i = 0; i < n; i++) {
    char p[1024];
    snprintf(p, sizeof p, "%s/img%02d.png", d, i);
    int is_bad = 0;
    for (int k = 0; k < n_bad; k++) is_bad |= bad[k] == i;
    if (is_bad) write_text(p, "not an image");
    else write_image(p, 10 + i % 5, 9 + i % 3, i);
  }
  return d;
}

static dsc_loader_config base_config(int batch, int workers) {
  dsc_loader_config c = {.batch = batch, .workers = workers, .prefetch = 2, .shuffle = 1, .seed = 1234};
  dsc_aug_config_default(&c.aug, 8);
  return c;
}

static void count_warning(void *ctx, const char *msg) {
  (void)msg;
  (*(int *)ctx)++;
}

/* Runs one epoch and tallies how often each dataset index appears; returns images seen. */
static int run_epoch(dsc_loader *l, uint32_t epoch, int *seen, int n, int *n_batches, int *sizes) {
  int total = 0;
  *n_batches = 0;
  CHECK_OK(dsc_loader_start_epoch(l, epoch));
  for (;;) {
    const dsc_batch *b = NULL;
    dsc_status *st = dsc_loader_next(l, &b);
    if (st) {
      CHECK_OK(st);
      break;
    }
    if (!b) break;
    CHECK(b->step == (size_t)*n_batches && b->epoch == epoch, "step %zu epoch %u", b->step, b->epoch);
    if (sizes) sizes[*n_batches] = b->n;
    (*n_batches)++;
    for (int i = 0; i < b->n; i++) {
      CHECK(b->indices[i] < (uint32_t)n, "index %u", b->indices[i]);
      if (b->indices[i] < (uint32_t)n) seen[b->indices[i]]++;
    }
    total += b->n;
  }
  return total;
}

static dsc_dataset *open_folder(const char *d) {
  dsc_dataset *ds = NULL;
  CHECK_OK(dsc_dataset_open(&(dsc_dataset_config){.path = d, .format = DSC_DATASET_FOLDER}, &ds));
  return ds;
}

static void test_epoch_coverage(void) {
  char *d = make_folder(10, NULL, 0);
  dsc_dataset *ds = open_folder(d);
  for (int drop = 0; ds && drop < 2; drop++) {
    dsc_loader_config c = base_config(3, 2);
    c.drop_last = drop;
    dsc_loader *l = NULL;
    CHECK_OK(dsc_loader_open(ds, &c, &l));
    if (!l) continue;
    CHECK(dsc_loader_batches_per_epoch(l) == (size_t)(drop ? 3 : 4), "batches per epoch");
    for (uint32_t e = 0; e < 2; e++) {
      int seen[10] = {0}, nb, sizes[8];
      int total = run_epoch(l, e, seen, 10, &nb, sizes);
      CHECK(nb == (drop ? 3 : 4) && total == (drop ? 9 : 10), "drop %d: %d batches, %d images", drop, nb, total);
      CHECK(sizes[0] == 3 && sizes[1] == 3 && sizes[2] == 3 && (drop || sizes[3] == 1), "batch sizes");
      int once = 1, missing = 0;
      for (int i = 0; i < 10; i++) {
        once &= seen[i] <= 1;
        missing += seen[i] == 0;
      }
      CHECK(once && missing == (drop ? 1 : 0), "drop %d epoch %u: each image at most once, %d missing", drop, e, missing);
    }
    dsc_loader_free(l);
  }
  dsc_dataset_free(ds);
  fixture_rm_rf(d);
  free(d);
}

static void test_shards(void) {
  char *d = make_folder(11, NULL, 0);
  dsc_dataset *ds = open_folder(d);
  const int worlds[] = {2, 4};
  for (int wi = 0; ds && wi < 2; wi++) {
    int world = worlds[wi];
    int seen[11] = {0}, total = 0, nb0 = -1;
    uint32_t first[4][2];
    for (int r = 0; r < world; r++) {
      dsc_loader_config c = base_config(4, 1 + r % 2);
      c.rank = r;
      c.world = world;
      dsc_loader *l = NULL;
      CHECK_OK(dsc_loader_open(ds, &c, &l));
      if (!l) continue;
      int nb;
      total += run_epoch(l, 3, seen, 11, &nb, NULL);
      if (nb0 < 0) nb0 = nb;
      CHECK(nb == nb0, "every rank runs the same number of batches");
      /* rank r's slice of global batch 0 is positions [r*4/world, (r+1)*4/world) */
      CHECK_OK(dsc_loader_start_epoch(l, 3));
      const dsc_batch *b;
      CHECK_OK(dsc_loader_next(l, &b));
      if (b) {
        CHECK(b->n == 4 / world, "local batch %d", b->n);
        first[r][0] = b->indices[0];
        first[r][1] = b->n > 1 ? b->indices[1] : 0;
      }
      dsc_loader_free(l);
    }
    CHECK(total == 11, "world %d: %d images", world, total);
    for (int i = 0; i < 11; i++) CHECK(seen[i] == 1, "world %d: image %d seen %d times", world, i, seen[i]);
    /* the same global batch with world 1 is the concatenation of the ranks' slices */
    dsc_loader_config c = base_config(4, 1);
    dsc_loader *l = NULL;
    CHECK_OK(dsc_loader_open(ds, &c, &l));
    if (l) {
      const dsc_batch *b;
      CHECK_OK(dsc_loader_start_epoch(l, 3));
      CHECK_OK(dsc_loader_next(l, &b));
      for (int p = 0; b && p < 4; p++) {
        int r = p / (4 / world), q = p % (4 / world);
        CHECK(b->indices[p] == first[r][q], "world %d: position %d", world, p);
      }
      dsc_loader_free(l);
    }
  }
  dsc_loader *l = NULL;
  dsc_loader_config c = base_config(6, 1);
  c.world = 4;
  CHECK_ERR(dsc_loader_open(ds, &c, &l), "not a multiple of the 4 processes");
  c.world = 2;
  c.rank = 2;
  CHECK_ERR(dsc_loader_open(ds, &c, &l), "rank 2 outside");
  dsc_dataset_free(ds);
  fixture_rm_rf(d);
  free(d);
}

/* Copies every batch of `epochs` epochs into one buffer (views, indices). */
static float *collect(const dsc_dataset *ds, int workers, int epochs, size_t *n_out, uint32_t *idx) {
  dsc_loader_config c = base_config(4, workers);
  c.prefetch = 3;
  dsc_loader *l = NULL;
  CHECK_OK(dsc_loader_open(ds, &c, &l));
  if (!l) return NULL;
  size_t img = 8 * 8 * 3, cap = 64 * 2 * img, n = 0, ni = 0;
  float *out = malloc(cap * sizeof *out);
  for (int e = 0; e < epochs; e++) {
    CHECK_OK(dsc_loader_start_epoch(l, (uint32_t)e));
    const dsc_batch *b;
    while (!dsc_loader_next(l, &b) && b) {
      memcpy(out + n, b->a, (size_t)b->n * img * sizeof *out);
      n += (size_t)b->n * img;
      memcpy(out + n, b->b, (size_t)b->n * img * sizeof *out);
      n += (size_t)b->n * img;
      memcpy(idx + ni, b->indices, (size_t)b->n * sizeof *idx);
      ni += (size_t)b->n;
    }
  }
  dsc_loader_free(l);
  *n_out = n;
  return out;
}

static void test_determinism_across_workers(void) {
  char *d = make_folder(13, NULL, 0);
  dsc_dataset *ds = open_folder(d);
  if (ds) {
    size_t n1 = 0, n = 0;
    uint32_t idx1[64], idx[64];
    float *ref = collect(ds, 1, 2, &n1, idx1);
    CHECK(n1 == 2 * 13 * 2 * 8 * 8 * 3, "%zu floats", n1);
    for (int w = 2; ref && w <= 4; w += 2) {
      float *got = collect(ds, w, 2, &n, idx);
      CHECK(got && n == n1 && memcmp(got, ref, n * sizeof *got) == 0, "%d workers: batches differ from 1 worker", w);
      CHECK(memcmp(idx, idx1, 26 * sizeof *idx) == 0, "%d workers: indices differ", w);
      free(got);
    }
    /* different epochs give different orders; view a and b differ */
    CHECK(memcmp(idx1, idx1 + 13, 13 * sizeof *idx1) != 0, "epochs 0 and 1 in the same order");
    if (ref) CHECK(memcmp(ref, ref + 4 * 8 * 8 * 3, 4 * 8 * 8 * 3 * sizeof *ref) != 0, "views a and b identical");
    free(ref);
  }
  dsc_dataset_free(ds);
  fixture_rm_rf(d);
  free(d);
}

/* A resumed run starts an epoch at batch k: it must see exactly the batches k, k+1, ... of the
 * full epoch, bit for bit. */
static void test_start_epoch_at(void) {
  char *d = make_folder(13, NULL, 0);
  dsc_dataset *ds = open_folder(d);
  if (ds) {
    dsc_loader_config c = base_config(3, 2);
    size_t per = 3 * 8 * 8 * 3;
    float *full = malloc(4 * per * sizeof *full);
    uint32_t idx[12];
    dsc_loader *l = NULL;
    CHECK_OK(dsc_loader_open(ds, &c, &l));
    int nb = 0;
    if (l) {
      CHECK_OK(dsc_loader_start_epoch(l, 1));
      const dsc_batch *b = NULL;
      while (nb < 5 && !dsc_loader_next(l, &b) && b) {
        if (nb < 4) {
          memcpy(full + nb * per, b->b, per * sizeof *full);
          memcpy(idx + 3 * nb, b->indices, 3 * sizeof *idx);
        }
        nb++;
      }
      CHECK(nb == 5, "%d batches in an epoch of 13 images by 3", nb);
      for (size_t k = 1; k <= 3; k++) {
        CHECK_OK(dsc_loader_start_epoch_at(l, 1, k));
        CHECK_OK(dsc_loader_next(l, &b));
        CHECK(b && b->step == k && b->n == 3 && memcmp(b->b, full + k * per, per * sizeof *full) == 0 &&
                  memcmp(b->indices, idx + 3 * k, 3 * sizeof *idx) == 0,
              "batch %zu differs when the epoch starts there", k);
      }
      CHECK_OK(dsc_loader_start_epoch_at(l, 1, 99));
      CHECK_OK(dsc_loader_next(l, &b));
      CHECK(b == NULL, "an epoch started past its end still gave a batch");
    }
    dsc_loader_free(l);
    free(full);
  }
  dsc_dataset_free(ds);
  fixture_rm_rf(d);
  free(d);
}

static void test_bad_files_replaced(void) {
  int bad[] = {0, 3, 4, 9};
  char *d = make_folder(10, bad, 4);
  dsc_dataset *ds = open_folder(d);
  for (int workers = 1; ds && workers <= 2; workers++) {
    dsc_loader_config c = base_config(4, workers);
    int count = 0;
    c.warn = count_warning;
    c.warn_ctx = &count;
    dsc_loader *l = NULL;
    CHECK_OK(dsc_loader_open(ds, &c, &l));
    if (!l) continue;
    for (uint32_t e = 0; e < 2; e++) {
      int seen[10] = {0}, nb, sizes[4];
      int total = run_epoch(l, e, seen, 10, &nb, sizes);
      CHECK(total == 10 && sizes[0] == 4 && sizes[2] == 2, "batches never short: %d", total);
      for (int k = 0; k < 4; k++) CHECK(seen[bad[k]] == 0, "bad image %d used", bad[k]);
      /* replacements are the next usable index: 0->1, 3->5, 4->5, 9->1 */
      CHECK(seen[1] == 3 && seen[5] == 3 && seen[2] == 1, "replacements: %d %d %d", seen[1], seen[5], seen[2]);
    }
    CHECK(dsc_loader_bad_count(l) == 4 && count == 4, "%zu bad, %d warnings", dsc_loader_bad_count(l), count);
    int named[10] = {0};
    for (size_t i = 0; i < dsc_loader_bad_count(l); i++) {
      const char *path, *reason;
      dsc_loader_bad_file(l, i, &path, &reason);
      int k = -1;
      if (path && strlen(path) >= 6) k = atoi(path + strlen(path) - 6);
      if (k >= 0 && k < 10) named[k] = 1;
      CHECK(reason && strstr(reason, "not a JPEG or PNG"), "%s: %s", path, reason);
    }
    CHECK(named[0] && named[3] && named[4] && named[9], "bad files named");
    dsc_loader_free(l);
  }
  /* strict: an error naming the file */
  if (ds) {
    dsc_loader_config c = base_config(10, 2);
    c.strict = 1;
    c.shuffle = 0;
    dsc_loader *l = NULL;
    CHECK_OK(dsc_loader_open(ds, &c, &l));
    if (l) {
      CHECK_OK(dsc_loader_start_epoch(l, 0));
      const dsc_batch *b;
      CHECK_ERR(dsc_loader_next(l, &b), "data.strict=1");
      CHECK_ERR(dsc_loader_next(l, &b), ".png: not a JPEG or PNG");
      dsc_loader_free(l);
    }
  }
  dsc_dataset_free(ds);
  fixture_rm_rf(d);
  free(d);
  /* nothing usable */
  int all[] = {0, 1, 2};
  d = make_folder(3, all, 3);
  ds = open_folder(d);
  if (ds) {
    dsc_loader_config c = base_config(2, 2);
    int warnings = 0;
    c.warn = count_warning;
    c.warn_ctx = &warnings;
    dsc_loader *l = NULL;
    CHECK_OK(dsc_loader_open(ds, &c, &l));
    if (l) {
      CHECK_OK(dsc_loader_start_epoch(l, 0));
      const dsc_batch *b;
      CHECK_ERR(dsc_loader_next(l, &b), "no usable image");
      CHECK(warnings == 3 && dsc_loader_bad_count(l) == 3, "%d warnings", warnings);
      dsc_loader_free(l);
    }
  }
  dsc_dataset_free(ds);
  fixture_rm_rf(d);
  free(d);
}

static void test_shutdown_mid_epoch(void) {
  char *d = make_folder(12, NULL, 0);
  dsc_dataset *ds = open_folder(d);
  for (int w = 1; ds && w <= 4; w *= 2) {
    dsc_loader *l = NULL;
    dsc_loader_config c = base_config(2, w);
    CHECK_OK(dsc_loader_open(ds, &c, &l));
    dsc_loader_free(l); /* never started */
    l = NULL;
    CHECK_OK(dsc_loader_open(ds, &c, &l));
    if (!l) continue;
    const dsc_batch *b;
    CHECK_ERR(dsc_loader_next(l, &b), "no epoch started");
    CHECK_OK(dsc_loader_start_epoch(l, 0));
    CHECK_OK(dsc_loader_next(l, &b));
    CHECK(b && b->n == 2, "first batch");
    /* restart mid-epoch: the new epoch is complete */
    int seen[12] = {0}, nb;
    CHECK(run_epoch(l, 1, seen, 12, &nb, NULL) == 12 && nb == 6, "restarted epoch");
    CHECK_OK(dsc_loader_start_epoch(l, 2));
    CHECK_OK(dsc_loader_next(l, &b));
    dsc_loader_free(l); /* workers busy filling the ring */
  }
  dsc_dataset_free(ds);
  fixture_rm_rf(d);
  free(d);
}

static void test_eval_mode_and_labels(void) {
  char *d = fixture_tmpdir("loader");
  char p[1024];
  for (int c = 0; c < 2; c++) {
    snprintf(p, sizeof p, "%s/class%d", d, c);
    mkdir(p, 0755);
    for (int i = 0; i < 3; i++) {
      snprintf(p, sizeof p, "%s/class%d/%d.png", d, c, i);
      write_image(p, 12, 10, c * 3 + i);
    }
  }
  dsc_dataset *ds = NULL;
  CHECK_OK(dsc_dataset_open(&(dsc_dataset_config){.path = d, .format = DSC_DATASET_IMAGEFOLDER}, &ds));
  if (ds) {
    dsc_loader_config c = base_config(4, 2);
    c.eval = 1;
    c.shuffle = 0;
    dsc_loader *l = NULL;
    CHECK_OK(dsc_loader_open(ds, &c, &l));
    if (l) {
      CHECK_OK(dsc_loader_start_epoch(l, 0));
      const dsc_batch *b;
      CHECK_OK(dsc_loader_next(l, &b));
      if (b) {
        CHECK(b->b == NULL && b->labels && b->n == 4, "one view, labels");
        for (int i = 0; i < 4; i++) CHECK(b->indices[i] == (uint32_t)i && b->labels[i] == i / 3, "%d", i);
        /* the same as the evaluation transform of that image (resize 8*8/7 = 9, crop 8) */
        dsc_image img;
        float want[8 * 8 * 3];
        CHECK_OK(dsc_dataset_load(ds, 1, &img, NULL, NULL));
        CHECK_OK(dsc_image_eval_transform(&img, 9, 8, want));
        CHECK(memcmp(want, b->a + 8 * 8 * 3, sizeof want) == 0, "eval transform");
        dsc_image_free(&img);
      }
      dsc_loader_free(l);
    }
  }
  dsc_dataset_free(ds);
  fixture_rm_rf(d);
  free(d);
}

static void test_seg_label_maps(void) {
  char *d = fixture_tmpdir("loader");
  char p[1024];
  const char *dirs[] = {"JPEGImages", "SegmentationClass", "ImageSets", "ImageSets/Segmentation"};
  for (int i = 0; i < 4; i++) {
    snprintf(p, sizeof p, "%s/%s", d, dirs[i]);
    mkdir(p, 0755);
  }
  uint8_t map[12 * 10];
  for (int i = 0; i < 120; i++) map[i] = (uint8_t)(i % 7 == 0 ? 255 : i % 21);
  for (int i = 0; i < 3; i++) {
    /* a PNG named .jpg: decoding goes by content */
    snprintf(p, sizeof p, "%s/JPEGImages/im%d.jpg", d, i);
    write_image(p, 12, 10, i);
    snprintf(p, sizeof p, "%s/SegmentationClass/im%d.png", d, i);
    fixture_write_png(p, 12, 10, 0, map, NULL, 0, 0, 0);
  }
  snprintf(p, sizeof p, "%s/ImageSets/Segmentation/train.txt", d);
  write_text(p, "im0\nim1\nim2\n");
  dsc_dataset *ds = NULL;
  CHECK_OK(dsc_dataset_open(&(dsc_dataset_config){.path = d, .format = DSC_DATASET_SEG}, &ds));
  if (ds) {
    dsc_loader_config c = base_config(3, 2);
    dsc_loader *l = NULL;
    CHECK_OK(dsc_loader_open(ds, &c, &l));
    if (l) {
      CHECK_OK(dsc_loader_start_epoch(l, 0));
      const dsc_batch *b;
      CHECK_OK(dsc_loader_next(l, &b));
      CHECK(b && b->label_map_a && b->label_map_b && !b->labels, "label maps");
      int valid = 1;
      for (int i = 0; b && i < 3 * 64; i++) {
        int v = b->label_map_a[i], u = b->label_map_b[i];
        valid &= (v == 255 || v < 21) && (u == 255 || u < 21);
      }
      CHECK(valid, "label map values come from the source map");
      dsc_loader_free(l);
    }
  }
  dsc_dataset_free(ds);
  fixture_rm_rf(d);
  free(d);
}

/* Large JPEGs: crops shrunk 2x or more come from a reduced DCT-domain decode; the result is
 * close to the full decode (smooth content) but not identical (proof the path ran). */
static void test_reduced_jpeg_decode(void) {
  char *d = fixture_tmpdir("loader");
  int w = 1600, h = 1200;
  uint8_t *px = malloc((size_t)w * h * 3);
  tjhandle tj = tjInitCompress();
  for (int k = 0; k < 3; k++) {
    for (int y = 0; y < h; y++)
      for (int x = 0; x < w; x++) {
        uint8_t *p = px + 3 * ((size_t)y * w + x);
        p[0] = (uint8_t)(x * 255 / w);
        p[1] = (uint8_t)(y * 255 / h);
        p[2] = (uint8_t)(64 * k + (x + y) / 40);
      }
    unsigned char *jpg = NULL;
    unsigned long n = 0;
    tjCompress2(tj, px, w, 0, h, TJPF_RGB, &jpg, &n, TJSAMP_420, 90, 0);
    char p[1024];
    snprintf(p, sizeof p, "%s/big%d.jpg", d, k);
    FILE *f = fopen(p, "wb");
    fwrite(jpg, 1, n, f);
    fclose(f);
    tjFree(jpg);
  }
  tjDestroy(tj);
  free(px);
  dsc_dataset *ds = open_folder(d);
  float *out[2] = {NULL, NULL};
  size_t floats = 3 * 64 * 64 * 3;
  for (int full = 0; ds && full < 2; full++) {
    dsc_loader_config c = base_config(3, 2);
    dsc_aug_config_default(&c.aug, 64);
    c.full_decode = full;
    dsc_loader *l = NULL;
    CHECK_OK(dsc_loader_open(ds, &c, &l));
    if (!l) continue;
    CHECK_OK(dsc_loader_start_epoch(l, 0));
    const dsc_batch *b;
    CHECK_OK(dsc_loader_next(l, &b));
    if (b) {
      out[full] = malloc(2 * floats * sizeof(float));
      memcpy(out[full], b->a, floats * sizeof(float));
      memcpy(out[full] + floats, b->b, floats * sizeof(float));
    }
    dsc_loader_free(l);
  }
  if (out[0] && out[1]) {
    double mad = 0;
    for (size_t i = 0; i < 2 * floats; i++) mad += fabs((double)out[0][i] - (double)out[1][i]);
    mad /= (double)(2 * floats);
    /* one reduced pixel of misplacement on a smooth ramp and DCT-domain scaling: a few 1/255
     * steps in normalized units (1/255/0.225 = 0.017 per step) */
    CHECK(mad > 0 && mad < 0.05, "mean |reduced - full| = %g", mad);
  }
  free(out[0]);
  free(out[1]);
  dsc_dataset_free(ds);
  fixture_rm_rf(d);
  free(d);
}

/* 1x1 and one-pixel-wide images are usable: the crop covers what there is and is upsampled. */
static void test_tiny_images(void) {
  char *d = fixture_tmpdir("loader");
  const int sizes[][2] = {{1, 1}, {1, 5}, {3, 1}, {2, 2}};
  for (int i = 0; i < 4; i++) {
    char p[1024];
    snprintf(p, sizeof p, "%s/t%d.png", d, i);
    write_image(p, sizes[i][0], sizes[i][1], i);
  }
  dsc_dataset *ds = open_folder(d);
  if (ds) {
    dsc_loader_config c = base_config(4, 2);
    dsc_loader *l = NULL;
    CHECK_OK(dsc_loader_open(ds, &c, &l));
    if (l) {
      int seen[4] = {0}, nb;
      CHECK(run_epoch(l, 0, seen, 4, &nb, NULL) == 4, "all tiny images used");
      CHECK(seen[0] == 1 && seen[1] == 1 && seen[2] == 1 && seen[3] == 1, "each once");
      CHECK(dsc_loader_bad_count(l) == 0, "%zu bad", dsc_loader_bad_count(l));
      dsc_loader_free(l);
    }
  }
  dsc_dataset_free(ds);
  fixture_rm_rf(d);
  free(d);
}

static const dsc_test tests[] = {
    {"tiny_images", test_tiny_images},
    {"reduced_jpeg_decode", test_reduced_jpeg_decode},
    {"epoch_coverage", test_epoch_coverage},
    {"shards", test_shards},
    {"determinism_across_workers", test_determinism_across_workers},
    {"start_epoch_at", test_start_epoch_at},
    {"bad_files_replaced", test_bad_files_replaced},
    {"shutdown_mid_epoch", test_shutdown_mid_epoch},
    {"eval_mode_and_labels", test_eval_mode_and_labels},
    {"seg_label_maps", test_seg_label_maps},
};
TEST_MAIN(tests)
