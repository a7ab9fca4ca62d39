/* dataset.c: the dataset index (include/dsc/dataset.h): folder, imagefolder, idx, seg and
 * cityscapes sources.
 *
 * Conventions: the index is built once by dsc_dataset_open and never changes afterwards, so
 * dsc_dataset_load is thread-safe. Paths are stored as malloc'ed strings; idx pixels and labels
 * are held in memory. Directory walks use stat (symlinks followed) and remember every visited
 * directory by (st_dev, st_ino): a directory met again is recorded as a problem, not walked.
 * Label PNGs (seg, cityscapes) are read here with libpng directly, because the index plane is wanted, not
 * the RGB colours that dsc_image_decode_file produces.
 */
#include "dsc/dataset.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

typedef struct ds_problem {
  char *path;
  char *reason;
} ds_problem;

typedef struct ds_dirid {
  dev_t dev;
  ino_t ino;
} ds_dirid;

struct dsc_dataset {
  dsc_dataset_format format;
  char *root;
  int64_t max_pixels;
  size_t n;
  char **paths;        /* n image paths (idx: display names) */
  char **label_paths;  /* seg: n label PNG paths */
  int32_t *labels;     /* imagefolder, idx: n class indices */
  int n_classes;
  char **class_names;  /* imagefolder */
  size_t skipped;
  ds_problem *problems;
  size_t n_problems, cap_problems;
  /* idx */
  uint8_t *idx_pixels; /* n * idx_h * idx_w grey */
  int idx_w, idx_h;
  /* walk state (only during open) */
  ds_dirid *visited;
  size_t n_visited, cap_visited;
  size_t cap_paths;
};

static char *ds_strdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d) memcpy(d, s, n);
  return d;
}

static char *ds_join(const char *a, const char *b) {
  size_t na = strlen(a), nb = strlen(b);
  int slash = na > 0 && a[na - 1] != '/';
  char *s = malloc(na + (size_t)slash + nb + 1);
  if (!s) return NULL;
  memcpy(s, a, na);
  if (slash) s[na] = '/';
  memcpy(s + na + slash, b, nb + 1);
  return s;
}

dsc_status *dsc_dataset_format_parse(const char *name, dsc_dataset_format *out) {
  static const char *names[] = {"folder", "imagefolder", "idx", "seg", "cityscapes"};
  for (int i = 0; i < 5; i++)
    if (name && strcmp(name, names[i]) == 0) {
      *out = (dsc_dataset_format)i;
      return NULL;
    }
  return dsc_errorf("unknown data.format \"%s\" (folder, imagefolder, idx, seg or cityscapes)", name ? name : "");
}

const char *dsc_dataset_format_name(dsc_dataset_format f) {
  switch (f) {
  case DSC_DATASET_FOLDER: return "folder";
  case DSC_DATASET_IMAGEFOLDER: return "imagefolder";
  case DSC_DATASET_IDX: return "idx";
  case DSC_DATASET_SEG: return "seg";
  case DSC_DATASET_CITYSCAPES: return "cityscapes";
  }
  return "?";
}

static dsc_status *ds_add_problem(dsc_dataset *ds, const char *path, const char *reason) {
  if (ds->n_problems == ds->cap_problems) {
    size_t cap = ds->cap_problems ? 2 * ds->cap_problems : 8;
    ds_problem *p = realloc(ds->problems, cap * sizeof *p);
    if (!p) return dsc_errorf("out of memory indexing %s", ds->root);
    ds->problems = p;
    ds->cap_problems = cap;
  }
  ds_problem *p = &ds->problems[ds->n_problems];
  p->path = ds_strdup(path);
  p->reason = ds_strdup(reason);
  if (!p->path || !p->reason) {
    free(p->path);
    free(p->reason);
    return dsc_errorf("out of memory indexing %s", ds->root);
  }
  ds->n_problems++;
  return NULL;
}

/* Appends a path (taking ownership) and its label. */
static dsc_status *ds_add_path(dsc_dataset *ds, char *path, int32_t label) {
  if (ds->n == ds->cap_paths) {
    size_t cap = ds->cap_paths ? 2 * ds->cap_paths : 64;
    char **p = realloc(ds->paths, cap * sizeof *p);
    if (p) ds->paths = p;
    int32_t *l = p ? realloc(ds->labels, cap * sizeof *l) : NULL;
    if (l) ds->labels = l;
    if (!p || !l) {
      free(path);
      return dsc_errorf("out of memory indexing %s", ds->root);
    }
    ds->cap_paths = cap;
  }
  ds->paths[ds->n] = path;
  ds->labels[ds->n] = label;
  ds->n++;
  return NULL;
}

static int ds_is_image_name(const char *name) {
  const char *dot = strrchr(name, '.');
  if (!dot) return 0;
  char ext[5] = {0};
  size_t n = strlen(dot + 1);
  if (n < 3 || n > 4) return 0;
  for (size_t i = 0; i < n; i++) ext[i] = (char)tolower((unsigned char)dot[1 + i]);
  return strcmp(ext, "jpg") == 0 || strcmp(ext, "jpeg") == 0 || strcmp(ext, "png") == 0;
}

/* Returns 1 if (dev, ino) was already visited, else records it and returns 0 (-1: no memory).
 * The visited set is an open-addressing hash table (linear probing, at most half full), so
 * trees with very many directories index in linear time. */
static size_t ds_dirid_hash(dev_t dev, ino_t ino) {
  uint64_t x = (uint64_t)ino * 0x9E3779B97F4A7C15ull ^ (uint64_t)dev * 0xC2B2AE3D27D4EB4Full;
  return (size_t)(x ^ (x >> 29));
}

static int ds_visit(dsc_dataset *ds, const struct stat *st) {
  if (2 * (ds->n_visited + 1) > ds->cap_visited) {
    size_t cap = ds->cap_visited ? 2 * ds->cap_visited : 64;
    ds_dirid *v = calloc(cap, sizeof *v); /* ino 0 marks an empty bucket */
    if (!v) return -1;
    for (size_t i = 0; i < ds->cap_visited; i++) {
      ds_dirid e = ds->visited[i];
      if (!e.ino) continue;
      size_t h = ds_dirid_hash(e.dev, e.ino) & (cap - 1);
      while (v[h].ino) h = (h + 1) & (cap - 1);
      v[h] = e;
    }
    free(ds->visited);
    ds->visited = v;
    ds->cap_visited = cap;
  }
  /* inode 0 never names a directory on Linux file systems; map it to 1 rather than lose it */
  ino_t ino = st->st_ino ? st->st_ino : 1;
  size_t h = ds_dirid_hash(st->st_dev, ino) & (ds->cap_visited - 1);
  while (ds->visited[h].ino) {
    if (ds->visited[h].dev == st->st_dev && ds->visited[h].ino == ino) return 1;
    h = (h + 1) & (ds->cap_visited - 1);
  }
  ds->visited[h] = (ds_dirid){st->st_dev, ino};
  ds->n_visited++;
  return 0;
}

static int ds_cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Lists the entry names of `dir` sorted (without "." and ".."); a failure to open is a problem. */
static dsc_status *ds_list_dir(dsc_dataset *ds, const char *dir, char ***names, size_t *count) {
  *names = NULL;
  *count = 0;
  DIR *d = opendir(dir);
  if (!d) {
    char reason[256];
    snprintf(reason, sizeof reason, "cannot open directory: %s", strerror(errno));
    return ds_add_problem(ds, dir, reason);
  }
  size_t cap = 0;
  char **v = NULL;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    if (*count == cap) {
      cap = cap ? 2 * cap : 32;
      char **nv = realloc(v, cap * sizeof *nv);
      if (!nv) goto oom;
      v = nv;
    }
    if (!(v[*count] = ds_strdup(e->d_name))) goto oom;
    (*count)++;
  }
  closedir(d);
  if (*count) qsort(v, *count, sizeof *v, ds_cmp_str);
  *names = v;
  return NULL;
oom:
  closedir(d);
  for (size_t i = 0; i < *count; i++) free(v[i]);
  free(v);
  *count = 0;
  return dsc_errorf("out of memory listing %s", dir);
}

static void ds_free_names(char **names, size_t n) {
  for (size_t i = 0; i < n; i++) free(names[i]);
  free(names);
}

/* Walks `dir` recursively adding image files with `label`. `dir` itself is already visited. */
static dsc_status *ds_walk(dsc_dataset *ds, const char *dir, int32_t label, int depth) {
  if (depth > 256) return ds_add_problem(ds, dir, "directory nesting deeper than 256 levels");
  char **names;
  size_t count;
  DSC_TRY(ds_list_dir(ds, dir, &names, &count));
  dsc_status *st = NULL;
  for (size_t i = 0; i < count && !st; i++) {
    char *path = ds_join(dir, names[i]);
    if (!path) {
      st = dsc_errorf("out of memory indexing %s", dir);
      break;
    }
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
      int v = ds_visit(ds, &sb);
      if (v < 0) st = dsc_errorf("out of memory indexing %s", dir);
      else if (v) st = ds_add_problem(ds, path, "directory already visited (symlink loop or second link), not walked again");
      else st = ds_walk(ds, path, label, depth + 1);
      free(path);
    } else if (ds_is_image_name(names[i])) {
      st = ds_add_path(ds, path, label);
    } else {
      ds->skipped++;
      free(path);
    }
  }
  ds_free_names(names, count);
  return st;
}

static dsc_status *ds_visit_root(dsc_dataset *ds, const char *dir) {
  struct stat sb;
  if (stat(dir, &sb) != 0) return dsc_errorf("%s: cannot open dataset directory: %s", dir, strerror(errno));
  if (!S_ISDIR(sb.st_mode)) return dsc_errorf("%s: not a directory", dir);
  if (ds_visit(ds, &sb) < 0) return dsc_errorf("out of memory indexing %s", dir);
  return NULL;
}

static dsc_status *ds_index_folder(dsc_dataset *ds) {
  DSC_TRY(ds_visit_root(ds, ds->root));
  DSC_TRY(ds_walk(ds, ds->root, -1, 0));
  if (ds->n > 1) qsort(ds->paths, ds->n, sizeof *ds->paths, ds_cmp_str);
  return NULL;
}

static dsc_status *ds_index_imagefolder(dsc_dataset *ds) {
  DSC_TRY(ds_visit_root(ds, ds->root));
  char **names;
  size_t count;
  DSC_TRY(ds_list_dir(ds, ds->root, &names, &count));
  dsc_status *st = NULL;
  ds->class_names = calloc(count ? count : 1, sizeof *ds->class_names);
  if (!ds->class_names) st = dsc_errorf("out of memory indexing %s", ds->root);
  for (size_t i = 0; i < count && !st; i++) {
    char *path = ds_join(ds->root, names[i]);
    if (!path) {
      st = dsc_errorf("out of memory indexing %s", ds->root);
      break;
    }
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
      int v = ds_visit(ds, &sb);
      if (v < 0) st = dsc_errorf("out of memory indexing %s", ds->root);
      else if (v) st = ds_add_problem(ds, path, "directory already visited (symlink loop or second link), not walked again");
      else {
        size_t first = ds->n;
        int c = ds->n_classes++;
        ds->class_names[c] = names[i];
        names[i] = NULL;
        st = ds_walk(ds, path, c, 1);
        if (!st && ds->n - first > 1)
          qsort(ds->paths + first, ds->n - first, sizeof *ds->paths, ds_cmp_str);
      }
    } else {
      ds->skipped++;
    }
    free(path);
  }
  ds_free_names(names, count);
  return st;
}

/* ---- seg ---- */

/* The image of seg id `id`: JPEGImages/<id>.jpg, .jpeg or .png, the first whose directory entry
 * exists (lstat: a dangling link counts, and fails later at decode naming itself), in that
 * order; the .jpg path when none exists, so the decode error names the file VOC expects. */
static char *ds_seg_image_path(const char *root, const char *id) {
  static const char *const exts[] = {"jpg", "jpeg", "png"};
  char rel[1200];
  for (int e = 0; e < 3; e++) {
    snprintf(rel, sizeof rel, "JPEGImages/%s.%s", id, exts[e]);
    char *p = ds_join(root, rel);
    struct stat sb;
    if (!p || lstat(p, &sb) == 0) return p;
    free(p);
  }
  snprintf(rel, sizeof rel, "JPEGImages/%s.jpg", id);
  return ds_join(root, rel);
}

/* Reads a split list (one id per line, blank lines skipped, surrounding spaces trimmed) and
 * appends its ids to *ids (malloc'ed strings). A missing file is an error naming it when
 * `required`, else *found = 0 and nothing is read. */
static dsc_status *ds_read_id_list(const char *list, int required, int *found, char ***ids,
                                   size_t *n, size_t *cap) {
  *found = 0;
  FILE *f = fopen(list, "r");
  if (!f) {
    if (!required && errno == ENOENT) return NULL;
    return dsc_errorf("%s: cannot open the seg split list: %s", list, strerror(errno));
  }
  *found = 1;
  dsc_status *st = NULL;
  char line[1024];
  while (!st && fgets(line, sizeof line, f)) {
    char *s = line;
    while (isspace((unsigned char)*s)) s++;
    size_t len = strlen(s);
    while (len && isspace((unsigned char)s[len - 1])) s[--len] = 0;
    if (!len) continue;
    if (strchr(s, '/')) {
      st = dsc_errorf("%s: id \"%s\" contains '/'", list, s);
      break;
    }
    if (*n == *cap) {
      size_t nc = *cap ? 2 * *cap : 64;
      char **v = realloc(*ids, nc * sizeof *v);
      if (!v) {
        st = dsc_errorf("out of memory reading %s", list);
        break;
      }
      *ids = v;
      *cap = nc;
    }
    if (!((*ids)[*n] = ds_strdup(s))) st = dsc_errorf("out of memory reading %s", list);
    else (*n)++;
  }
  fclose(f);
  return st;
}

static dsc_status *ds_seg_list_path(const char *root, const char *name, char **out) {
  char rel[512];
  snprintf(rel, sizeof rel, "ImageSets/Segmentation/%s.txt", name);
  *out = ds_join(root, rel);
  return *out ? NULL : dsc_errorf("out of memory indexing %s", root);
}

typedef struct ds_idpos {
  char *id;
  size_t pos;
  int drop;
} ds_idpos;

static int ds_cmp_idpos(const void *a, const void *b) {
  const ds_idpos *x = a, *y = b;
  int c = strcmp(x->id, y->id);
  return c ? c : (x->pos > y->pos) - (x->pos < y->pos);
}

/* The ids of `split`: <split>.txt; for "trainaug" without trainaug.txt, train.txt then the ids of
 * aug.txt not already listed, minus those of val.txt (mmseg's voc_aug conversion). */
static dsc_status *ds_seg_ids(const char *root, const char *split, char ***ids, size_t *n) {
  *ids = NULL;
  *n = 0;
  size_t cap = 0;
  int found;
  char *list = NULL;
  DSC_TRY(ds_seg_list_path(root, split, &list));
  int is_trainaug = strcmp(split, "trainaug") == 0;
  dsc_status *st = ds_read_id_list(list, !is_trainaug, &found, ids, n, &cap);
  if (st || found) {
    free(list);
    return st;
  }
  /* trainaug.txt absent: build it from train.txt, aug.txt and val.txt, all three required */
  char **aug = NULL, **val = NULL;
  size_t n_aug = 0, n_val = 0, cap_aug = 0, cap_val = 0;
  char *p_train = NULL, *p_aug = NULL, *p_val = NULL;
  if ((st = ds_seg_list_path(root, "train", &p_train)) || (st = ds_seg_list_path(root, "aug", &p_aug)) ||
      (st = ds_seg_list_path(root, "val", &p_val)))
    goto done;
  {
    struct stat sb;
    if (stat(p_aug, &sb) != 0) {
      st = dsc_errorf("%s: cannot open the seg split list (nor %s, from which trainaug is built): %s", list,
                      p_aug, strerror(errno));
      goto done;
    }
  }
  if ((st = ds_read_id_list(p_train, 1, &found, ids, n, &cap)) ||
      (st = ds_read_id_list(p_aug, 1, &found, &aug, &n_aug, &cap_aug)) ||
      (st = ds_read_id_list(p_val, 1, &found, &val, &n_val, &cap_val)))
    goto done;
  /* all = train ids then aug ids; keep the first occurrence of each id not in val.txt, in order */
  size_t n_all = *n + n_aug;
  ds_idpos *all = malloc((n_all ? n_all : 1) * sizeof *all);
  char **kept = malloc((n_all ? n_all : 1) * sizeof *kept);
  if (!all || !kept) {
    free(all);
    free(kept);
    st = dsc_errorf("out of memory indexing %s", root);
    goto done;
  }
  for (size_t i = 0; i < *n; i++) all[i] = (ds_idpos){(*ids)[i], i, 0};
  for (size_t i = 0; i < n_aug; i++) all[*n + i] = (ds_idpos){aug[i], *n + i, 0};
  qsort(val, n_val, sizeof *val, ds_cmp_str);
  qsort(all, n_all, sizeof *all, ds_cmp_idpos);
  for (size_t i = 0; i < n_all; i++)
    all[i].drop = (i > 0 && strcmp(all[i].id, all[i - 1].id) == 0) ||
                  bsearch(&all[i].id, val, n_val, sizeof *val, ds_cmp_str) != NULL;
  for (size_t i = 0; i < n_all; i++) kept[all[i].pos] = all[i].drop ? NULL : all[i].id;
  free(all);
  /* the strings now live in kept[]; aug[] and the old *ids only lend them */
  size_t k = 0;
  for (size_t i = 0; i < n_all; i++) {
    if (kept[i]) kept[k++] = kept[i];
    else free(i < *n ? (*ids)[i] : aug[i - *n]);
  }
  free(*ids);
  *ids = kept;
  *n = k;
  free(aug);
  aug = NULL;
  n_aug = 0;
done:
  ds_free_names(aug, n_aug);
  ds_free_names(val, n_val);
  free(p_train);
  free(p_aug);
  free(p_val);
  free(list);
  if (st) {
    ds_free_names(*ids, *n);
    *ids = NULL;
    *n = 0;
  }
  return st;
}

/* Appends an image and its label map paths (taking ownership of both). */
static dsc_status *ds_add_labelled(dsc_dataset *ds, char *img, char *lab, size_t *cap_labels) {
  if (ds->n == *cap_labels) {
    size_t cap = *cap_labels ? 2 * *cap_labels : 64;
    char **lp = realloc(ds->label_paths, cap * sizeof *lp);
    if (!lp) {
      free(img);
      free(lab);
      return dsc_errorf("out of memory indexing %s", ds->root);
    }
    ds->label_paths = lp;
    *cap_labels = cap;
  }
  ds->label_paths[ds->n] = lab;
  dsc_status *st = ds_add_path(ds, img, -1);
  if (st) free(lab);
  return st;
}

static dsc_status *ds_index_seg(dsc_dataset *ds, const char *split) {
  char **ids;
  size_t n_ids;
  DSC_TRY(ds_seg_ids(ds->root, split, &ids, &n_ids));
  dsc_status *st = NULL;
  size_t cap_labels = 0;
  for (size_t i = 0; i < n_ids && !st; i++) {
    char lab_rel[1200];
    snprintf(lab_rel, sizeof lab_rel, "SegmentationClassAug/%s.png", ids[i]);
    char *lab = ds_join(ds->root, lab_rel);
    struct stat sb;
    if (lab && stat(lab, &sb) != 0) {
      free(lab);
      snprintf(lab_rel, sizeof lab_rel, "SegmentationClass/%s.png", ids[i]);
      lab = ds_join(ds->root, lab_rel);
    }
    char *img = ds_seg_image_path(ds->root, ids[i]);
    if (!img || !lab) {
      free(img);
      free(lab);
      st = dsc_errorf("out of memory indexing %s", ds->root);
      break;
    }
    st = ds_add_labelled(ds, img, lab, &cap_labels);
  }
  ds_free_names(ids, n_ids);
  return st;
}

/* ---- cityscapes ---- */

/* Cityscapes' label id -> train id (cityscapesScripts' labels.py); everything else is 255. */
static const uint8_t ds_cityscapes_train_ids[][2] = {
    {7, 0},   {8, 1},   {11, 2},  {12, 3},  {13, 4},  {17, 5},  {19, 6},  {20, 7},  {21, 8},  {22, 9},
    {23, 10}, {24, 11}, {25, 12}, {26, 13}, {27, 14}, {28, 15}, {31, 16}, {32, 17}, {33, 18},
};

typedef struct ds_pair {
  char *img, *lab;
} ds_pair;

static int ds_cmp_pair(const void *a, const void *b) {
  return strcmp(((const ds_pair *)a)->img, ((const ds_pair *)b)->img);
}

static const char ds_cs_img_suffix[] = "_leftImg8bit.png";
static const char ds_cs_lab_suffix[] = "_gtFine_labelIds.png";

static dsc_status *ds_index_cityscapes(dsc_dataset *ds, const char *split) {
  if (strchr(split, '/')) return dsc_errorf("cityscapes split \"%s\" contains '/'", split);
  char rel[600];
  snprintf(rel, sizeof rel, "leftImg8bit/%s", split);
  char *dir = ds_join(ds->root, rel);
  if (!dir) return dsc_errorf("out of memory indexing %s", ds->root);
  struct stat sb;
  if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
    dsc_status *st = dsc_errorf("%s: cannot open the cityscapes split directory: %s", dir,
                                stat(dir, &sb) != 0 ? strerror(errno) : "not a directory");
    free(dir);
    return st;
  }
  char **cities;
  size_t n_cities;
  dsc_status *st = ds_list_dir(ds, dir, &cities, &n_cities);
  size_t cap_labels = 0;
  for (size_t c = 0; c < n_cities && !st; c++) {
    char *cdir = ds_join(dir, cities[c]);
    if (!cdir) {
      st = dsc_errorf("out of memory indexing %s", ds->root);
      break;
    }
    if (stat(cdir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
      ds->skipped++;
      free(cdir);
      continue;
    }
    char **files;
    size_t n_files;
    st = ds_list_dir(ds, cdir, &files, &n_files);
    const size_t ns = sizeof ds_cs_img_suffix - 1;
    for (size_t i = 0; i < n_files && !st; i++) {
      size_t len = strlen(files[i]);
      if (len <= ns || strcmp(files[i] + len - ns, ds_cs_img_suffix) != 0) {
        ds->skipped++;
        continue;
      }
      char lab_rel[1200];
      snprintf(lab_rel, sizeof lab_rel, "gtFine/%s/%s/%.*s%s", split, cities[c], (int)(len - ns), files[i],
               ds_cs_lab_suffix);
      char *img = ds_join(cdir, files[i]), *lab = ds_join(ds->root, lab_rel);
      if (!img || !lab) {
        free(img);
        free(lab);
        st = dsc_errorf("out of memory indexing %s", ds->root);
        break;
      }
      if (stat(lab, &sb) != 0) {
        st = dsc_errorf("%s: missing label map of %s: %s", lab, img, strerror(errno));
        free(img);
        free(lab);
        break;
      }
      st = ds_add_labelled(ds, img, lab, &cap_labels);
    }
    ds_free_names(files, n_files);
    free(cdir);
  }
  ds_free_names(cities, n_cities);
  free(dir);
  /* cities and files come in name order, which is path order except where a city name is a
   * prefix of another ("a" and "a-b"): sort (image, label) pairs by image path to be sure */
  if (!st && ds->n > 1) {
    ds_pair *pairs = malloc(ds->n * sizeof *pairs);
    if (!pairs) return dsc_errorf("out of memory indexing %s", ds->root);
    for (size_t i = 0; i < ds->n; i++) pairs[i] = (ds_pair){ds->paths[i], ds->label_paths[i]};
    qsort(pairs, ds->n, sizeof *pairs, ds_cmp_pair);
    for (size_t i = 0; i < ds->n; i++) ds->paths[i] = pairs[i].img, ds->label_paths[i] = pairs[i].lab;
    free(pairs);
  }
  return st;
}

typedef struct ds_png_read {
  FILE *f;
  png_structp png;
  png_infop info;
  uint8_t *map;
  png_bytep *rows;
  char msg[200];
} ds_png_read;

static void ds_png_error(png_structp png, png_const_charp msg) {
  ds_png_read *r = png_get_error_ptr(png);
  snprintf(r->msg, sizeof r->msg, "%s", msg);
  longjmp(png_jmpbuf(png), 1);
}

static void ds_png_warning(png_structp png, png_const_charp msg) {
  (void)png;
  (void)msg;
}

/* Reads a label PNG's sample values (palette indices or 8-bit grey) as a w x h byte map. */
static dsc_status *ds_read_label_png(const char *path, int64_t max_pixels, int want_w, int want_h,
                                     uint8_t **out) {
  *out = NULL;
  ds_png_read *r = calloc(1, sizeof *r);
  if (!r) return dsc_errorf("%s: out of memory", path);
  dsc_status *st = NULL;
  r->f = fopen(path, "rb");
  if (!r->f) {
    st = dsc_errorf("%s: cannot open label map: %s", path, strerror(errno));
    free(r);
    return st;
  }
  r->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, r, ds_png_error, ds_png_warning);
  if (r->png) r->info = png_create_info_struct(r->png);
  if (!r->png || !r->info) {
    st = dsc_errorf("%s: out of memory", path);
    goto done;
  }
  if (setjmp(png_jmpbuf(r->png))) {
    st = dsc_errorf("%s: corrupt label PNG: %s", path, r->msg);
    goto done;
  }
  png_init_io(r->png, r->f);
  png_read_info(r->png, r->info);
  png_uint_32 w = png_get_image_width(r->png, r->info), h = png_get_image_height(r->png, r->info);
  int ct = png_get_color_type(r->png, r->info), depth = png_get_bit_depth(r->png, r->info);
  if (ct != PNG_COLOR_TYPE_PALETTE && ct != PNG_COLOR_TYPE_GRAY) {
    st = dsc_errorf("%s: label map must be a palette or grey PNG of class indices (colour type %d)", path, ct);
    goto done;
  }
  if (depth > 8) {
    st = dsc_errorf("%s: label map has %d-bit samples (8 bits or fewer expected)", path, depth);
    goto done;
  }
  if ((int64_t)w * (int64_t)h > max_pixels) {
    st = dsc_errorf("%s: label map is %ux%u, above the pixel limit of %lld", path, (unsigned)w,
                    (unsigned)h, (long long)max_pixels);
    goto done;
  }
  if ((int)w != want_w || (int)h != want_h) {
    st = dsc_errorf("%s: label map is %ux%u but its image is %dx%d", path, (unsigned)w, (unsigned)h,
                    want_w, want_h);
    goto done;
  }
  if (depth < 8) png_set_packing(r->png); /* one byte per sample, values unscaled */
  png_set_interlace_handling(r->png);
  png_read_update_info(r->png, r->info);
  r->map = malloc((size_t)w * h);
  r->rows = malloc(h * sizeof *r->rows);
  if (!r->map || !r->rows) {
    st = dsc_errorf("%s: out of memory for a %ux%u label map", path, (unsigned)w, (unsigned)h);
    goto done;
  }
  for (png_uint_32 y = 0; y < h; y++) r->rows[y] = r->map + (size_t)y * w;
  png_read_image(r->png, r->rows);
  *out = r->map;
  r->map = NULL;
done:
  if (r->png) png_destroy_read_struct(&r->png, r->info ? &r->info : NULL, NULL);
  fclose(r->f);
  free(r->map);
  free(r->rows);
  free(r);
  return st;
}

/* ---- idx ---- */

/* Reads a whole raw or gzip file (zlib reads raw files through gzread unchanged). */
static dsc_status *ds_read_gz(const char *path, uint8_t **out, size_t *size) {
  *out = NULL;
  *size = 0;
  gzFile g = gzopen(path, "rb");
  if (!g) return dsc_errorf("%s: cannot open: %s", path, strerror(errno));
  size_t cap = 1 << 20, n = 0;
  uint8_t *buf = malloc(cap);
  dsc_status *st = NULL;
  while (buf) {
    if (n == cap) {
      if (cap >= ((size_t)1 << 30)) {
        st = dsc_errorf("%s: larger than 1 GiB uncompressed", path);
        break;
      }
      uint8_t *nb = realloc(buf, 2 * cap);
      if (!nb) break;
      buf = nb;
      cap *= 2;
    }
    int got = gzread(g, buf + n, (unsigned)(cap - n));
    if (got < 0) {
      int e;
      const char *m = gzerror(g, &e);
      st = dsc_errorf("%s: read error: %s", path, e == Z_ERRNO ? strerror(errno) : m);
      break;
    }
    if (got == 0) break;
    n += (size_t)got;
  }
  gzclose(g);
  if (!buf && !st) st = dsc_errorf("%s: out of memory", path);
  if (st) {
    free(buf);
    return st;
  }
  *out = buf;
  *size = n;
  return NULL;
}

static uint32_t ds_be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Finds <dir>/<name>.gz or <dir>/<name>; returns a malloc'ed path. */
static char *ds_find_idx(const char *dir, const char *name) {
  char gz[256];
  snprintf(gz, sizeof gz, "%s.gz", name);
  char *p = ds_join(dir, gz);
  struct stat sb;
  if (p && stat(p, &sb) == 0) return p;
  free(p);
  return ds_join(dir, name);
}

static dsc_status *ds_index_idx(dsc_dataset *ds, const char *split) {
  const char *pre = strcmp(split, "train") == 0 ? "train" : "t10k";
  char name[64];
  snprintf(name, sizeof name, "%s-images-idx3-ubyte", pre);
  char *ipath = ds_find_idx(ds->root, name);
  snprintf(name, sizeof name, "%s-labels-idx1-ubyte", pre);
  char *lpath = ds_find_idx(ds->root, name);
  uint8_t *img = NULL, *lab = NULL;
  size_t ni = 0, nl = 0;
  dsc_status *st = NULL;
  if (!ipath || !lpath) {
    st = dsc_errorf("out of memory indexing %s", ds->root);
    goto done;
  }
  if ((st = ds_read_gz(ipath, &img, &ni)) || (st = ds_read_gz(lpath, &lab, &nl))) goto done;
  if (ni < 16 || ds_be32(img) != 0x803) {
    st = dsc_errorf("%s: not an IDX image file (magic 0x00000803 expected)", ipath);
    goto done;
  }
  if (nl < 8 || ds_be32(lab) != 0x801) {
    st = dsc_errorf("%s: not an IDX label file (magic 0x00000801 expected)", lpath);
    goto done;
  }
  uint32_t count = ds_be32(img + 4), rows = ds_be32(img + 8), cols = ds_be32(img + 12);
  if (rows == 0 || cols == 0 || rows > 65536 || cols > 65536 ||
      (uint64_t)count * rows * cols != ni - 16) {
    st = dsc_errorf("%s: %u images of %ux%u do not match the file's %zu bytes", ipath, count, rows,
                    cols, ni);
    goto done;
  }
  if (ds_be32(lab + 4) != count || nl - 8 != count) {
    st = dsc_errorf("%s: %u labels for %u images in %s", lpath, ds_be32(lab + 4), count, ipath);
    goto done;
  }
  ds->idx_w = (int)cols;
  ds->idx_h = (int)rows;
  ds->idx_pixels = malloc(ni - 16 ? ni - 16 : 1);
  if (!ds->idx_pixels) {
    st = dsc_errorf("%s: out of memory", ipath);
    goto done;
  }
  memcpy(ds->idx_pixels, img + 16, ni - 16);
  for (uint32_t i = 0; i < count && !st; i++) {
    char label[300];
    snprintf(label, sizeof label, "%s#%u", ipath, i);
    char *p = ds_strdup(label);
    if (!p) st = dsc_errorf("out of memory indexing %s", ds->root);
    else st = ds_add_path(ds, p, lab[8 + i]);
    if (!st && lab[8 + i] + 1 > ds->n_classes) ds->n_classes = lab[8 + i] + 1;
  }
done:
  free(img);
  free(lab);
  free(ipath);
  free(lpath);
  return st;
}

/* ---- open / free / queries ---- */

dsc_status *dsc_dataset_open(const dsc_dataset_config *cfg, dsc_dataset **out) {
  *out = NULL;
  if (!cfg || !cfg->path || !cfg->path[0]) return dsc_errorf("data.path is empty");
  dsc_dataset *ds = calloc(1, sizeof *ds);
  if (!ds) return dsc_errorf("out of memory");
  ds->format = cfg->format;
  ds->root = ds_strdup(cfg->path);
  ds->max_pixels = cfg->max_pixels > 0 && cfg->max_pixels < DSC_IMAGE_MAX_PIXELS ? cfg->max_pixels
                                                                                  : DSC_IMAGE_MAX_PIXELS;
  const char *split = cfg->split && cfg->split[0] ? cfg->split : "train";
  dsc_status *st = NULL;
  if (!ds->root) st = dsc_errorf("out of memory");
  else if (cfg->format == DSC_DATASET_FOLDER) st = ds_index_folder(ds);
  else if (cfg->format == DSC_DATASET_IMAGEFOLDER) st = ds_index_imagefolder(ds);
  else if (cfg->format == DSC_DATASET_IDX) {
    if (strcmp(split, "train") && strcmp(split, "t10k") && strcmp(split, "test") && strcmp(split, "val"))
      st = dsc_errorf("idx split \"%s\" unknown (train, t10k, test or val)", split);
    else st = ds_index_idx(ds, split);
  } else if (cfg->format == DSC_DATASET_SEG) st = ds_index_seg(ds, split);
  else if (cfg->format == DSC_DATASET_CITYSCAPES) st = ds_index_cityscapes(ds, split);
  else st = dsc_errorf("unknown dataset format %d", (int)cfg->format);
  free(ds->visited);
  ds->visited = NULL;
  if (!st && ds->n == 0)
    st = dsc_errorf("%s: empty dataset: no images found (format %s, %zu other files skipped)",
                    cfg->path, dsc_dataset_format_name(cfg->format), ds->skipped);
  if (!st && ds->n > UINT32_MAX) st = dsc_errorf("%s: more than 2^32 images", cfg->path);
  if (st) {
    dsc_dataset_free(ds);
    return st;
  }
  if (cfg->format == DSC_DATASET_FOLDER || cfg->format == DSC_DATASET_SEG ||
      cfg->format == DSC_DATASET_CITYSCAPES) {
    free(ds->labels);
    ds->labels = NULL;
  }
  *out = ds;
  return NULL;
}

void dsc_dataset_free(dsc_dataset *ds) {
  if (!ds) return;
  for (size_t i = 0; i < ds->n; i++) {
    free(ds->paths[i]);
    if (ds->label_paths) free(ds->label_paths[i]);
  }
  free(ds->paths);
  free(ds->label_paths);
  free(ds->labels);
  for (int c = 0; ds->class_names && c < ds->n_classes; c++) free(ds->class_names[c]);
  free(ds->class_names);
  for (size_t i = 0; i < ds->n_problems; i++) {
    free(ds->problems[i].path);
    free(ds->problems[i].reason);
  }
  free(ds->problems);
  free(ds->idx_pixels);
  free(ds->visited);
  free(ds->root);
  free(ds);
}

size_t dsc_dataset_size(const dsc_dataset *ds) { return ds->n; }
const char *dsc_dataset_name(const dsc_dataset *ds, size_t i) { return i < ds->n ? ds->paths[i] : NULL; }
int dsc_dataset_num_classes(const dsc_dataset *ds) { return ds->labels ? ds->n_classes : 0; }
const char *dsc_dataset_class_name(const dsc_dataset *ds, int c) {
  return ds->class_names && c >= 0 && c < ds->n_classes ? ds->class_names[c] : NULL;
}
int dsc_dataset_has_label_maps(const dsc_dataset *ds) {
  return ds->format == DSC_DATASET_SEG || ds->format == DSC_DATASET_CITYSCAPES;
}
int dsc_dataset_map_classes(const dsc_dataset *ds) {
  return ds->format == DSC_DATASET_CITYSCAPES ? DSC_CITYSCAPES_CLASSES : 0;
}
uint8_t dsc_cityscapes_train_id(int label_id) {
  for (size_t k = 0; k < sizeof ds_cityscapes_train_ids / sizeof ds_cityscapes_train_ids[0]; k++)
    if (ds_cityscapes_train_ids[k][0] == label_id) return ds_cityscapes_train_ids[k][1];
  return 255;
}
size_t dsc_dataset_skipped_count(const dsc_dataset *ds) { return ds->skipped; }
size_t dsc_dataset_problem_count(const dsc_dataset *ds) { return ds->n_problems; }
void dsc_dataset_problem(const dsc_dataset *ds, size_t i, const char **path, const char **reason) {
  *path = i < ds->n_problems ? ds->problems[i].path : NULL;
  *reason = i < ds->n_problems ? ds->problems[i].reason : NULL;
}

dsc_status *dsc_dataset_probe(const dsc_dataset *ds, size_t i, int *w, int *h, int *is_jpeg) {
  if (i >= ds->n) return dsc_errorf("%s: image %zu out of range (%zu images)", ds->root, i, ds->n);
  if (ds->format == DSC_DATASET_IDX) {
    *w = ds->idx_w;
    *h = ds->idx_h;
    if (is_jpeg) *is_jpeg = 0;
    return NULL;
  }
  return dsc_image_probe_file(ds->paths[i], w, h, is_jpeg);
}

dsc_status *dsc_dataset_load(const dsc_dataset *ds, size_t i, dsc_image *img, int *label,
                             uint8_t **label_map) {
  return dsc_dataset_load_scaled(ds, i, 1, img, label, label_map);
}

dsc_status *dsc_dataset_load_scaled(const dsc_dataset *ds, size_t i, int denom, dsc_image *img,
                                    int *label, uint8_t **label_map) {
  *img = (dsc_image){0, 0, NULL};
  if (label_map) *label_map = NULL;
  if (label) *label = -1;
  if (i >= ds->n) return dsc_errorf("%s: image %zu out of range (%zu images)", ds->root, i, ds->n);
  if (ds->format == DSC_DATASET_IDX) {
    size_t plane = (size_t)ds->idx_w * (size_t)ds->idx_h;
    img->rgb = malloc(plane * 3);
    if (!img->rgb) return dsc_errorf("%s: out of memory", ds->paths[i]);
    img->w = ds->idx_w;
    img->h = ds->idx_h;
    const uint8_t *src = ds->idx_pixels + i * plane;
    for (size_t p = 0; p < plane; p++) img->rgb[3 * p] = img->rgb[3 * p + 1] = img->rgb[3 * p + 2] = src[p];
  } else {
    if (label_map && ds->label_paths && denom != 1)
      return dsc_errorf("%s: label maps are full size: decode with denom 1 (got %d)", ds->paths[i], denom);
    DSC_TRY(dsc_image_decode_file_scaled(ds->paths[i], ds->max_pixels, denom, img));
  }
  if (label && ds->labels) *label = ds->labels[i];
  if (label_map && ds->label_paths) {
    dsc_status *st = ds_read_label_png(ds->label_paths[i], ds->max_pixels, img->w, img->h, label_map);
    if (st) {
      dsc_image_free(img);
      return st;
    }
    if (ds->format == DSC_DATASET_CITYSCAPES) { /* label ids -> train ids */
      uint8_t lut[256];
      for (int v = 0; v < 256; v++) lut[v] = dsc_cityscapes_train_id(v);
      uint8_t *m = *label_map;
      for (size_t p = 0, np = (size_t)img->w * (size_t)img->h; p < np; p++) m[p] = lut[m[p]];
    }
  }
  return NULL;
}
