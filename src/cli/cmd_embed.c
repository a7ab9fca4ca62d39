/* cmd_embed.c: `dsc embed` — C2..C5 and pooled features of images for given weights.
 *
 * Preprocessing is torchvision's evaluation transform (INTERFACES.md): decode to RGB, resize
 * the shorter side to --resize, center-crop --size (an image already size x size is used as
 * is), scale to [0,1], normalize with ImageNet mean and std. The backbone runs in eval mode
 * (BN with running statistics). Outputs are written in PyTorch's layout: c2..c5 [N,C,H,W],
 * pool [N,C], F32; the metadata lists the images in order.
 */
#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "dsc/backbone.h"
#include "dsc/image.h"
#include "dsc/weights.h"

typedef struct path_list {
  char **items;
  int count, cap;
} path_list;

static dsc_status *list_add(path_list *l, const char *path) {
  if (l->count == l->cap) {
    int cap = l->cap ? 2 * l->cap : 16;
    char **items = realloc(l->items, (size_t)cap * sizeof *items);
    if (!items) return dsc_errorf("out of memory listing images");
    l->items = items, l->cap = cap;
  }
  if (!(l->items[l->count] = strdup(path))) return dsc_errorf("out of memory listing images");
  l->count++;
  return NULL;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static int has_image_extension(const char *name) {
  const char *dot = strrchr(name, '.');
  if (!dot) return 0;
  return !strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg") || !strcasecmp(dot, ".png");
}

/* A file is taken as is; a directory gives its JPEG/PNG files (not recursive), sorted. */
static dsc_status *collect_inputs(const char *input, path_list *out) {
  struct stat sb;
  if (stat(input, &sb) != 0) return dsc_errorf("--input %s: no such file or directory", input);
  if (!S_ISDIR(sb.st_mode)) return list_add(out, input);
  DIR *d = opendir(input);
  if (!d) return dsc_errorf("--input %s: cannot open the directory", input);
  struct dirent *e;
  dsc_status *st = NULL;
  char path[4096];
  while (!st && (e = readdir(d))) {
    if (e->d_name[0] == '.' || !has_image_extension(e->d_name)) continue;
    snprintf(path, sizeof path, "%s/%s", input, e->d_name);
    st = list_add(out, path);
  }
  closedir(d);
  DSC_TRY(st);
  if (out->count == 0) return dsc_errorf("--input %s: no .jpg, .jpeg or .png files", input);
  qsort(out->items, (size_t)out->count, sizeof *out->items, cmp_str);
  return NULL;
}

/* Parses --layer: a comma-separated subset of c2,c3,c4,c5,pool. */
static dsc_status *parse_layers(const char *spec, int want[5]) {
  static const char *names[5] = {"c2", "c3", "c4", "c5", "pool"};
  memset(want, 0, 5 * sizeof *want);
  const char *p = spec;
  while (*p) {
    size_t len = strcspn(p, ",");
    int found = 0;
    for (int i = 0; i < 5; i++)
      if (strlen(names[i]) == len && strncmp(p, names[i], len) == 0) want[i] = found = 1;
    if (!found)
      return dsc_errorf("--layer=%s: unknown layer \"%.*s\" (c2, c3, c4, c5, pool)", spec, (int)len, p);
    p += len;
    if (*p == ',') p++;
  }
  return NULL;
}

static dsc_status *embed(const cli_args *a, long resize, long size, long threads, const int want[5]) {
  path_list inputs = {0};
  dsc_backend *be = NULL;
  dsc_backbone m = {0};
  float *host_x = NULL, *x = NULL, *outs[5] = {0};
  dsc_st_writer *w = NULL;
  json_t *names = NULL;
  char *names_text = NULL;
  dsc_status *st = collect_inputs(cli_get(a, "input"), &inputs);
  /* Configuration from the weights file itself. */
  dsc_resnet_config cfg = {0};
  dsc_safetensors *wf = NULL;
  const char *prefix = "";
  if (!st) st = dsc_weights_open(cli_get(a, "weights"), &wf);
  if (!st) st = dsc_weights_detect_resnet(wf, &cfg, &prefix);
  if (!st) st = dsc_backend_cpu_new((int)threads, &be);
  if (!st) st = dsc_backbone_create(&m, be, &cfg, 0, 0);
  if (!st)
    st = dsc_weights_load(wf, &m.table, "", prefix, m.host_params, m.host_buffers,
                          cli_get(a, "allow-partial") != NULL);
  dsc_st_close(wf);
  if (!st) st = dsc_backbone_upload(&m);
  int n = inputs.count;
  size_t per_image = (size_t)size * size * 3;
  size_t sizes[5] = {0};
  int shapes[5][3] = {{0}};
  if (!st) {
    host_x = malloc(per_image * sizeof(float));
    if (!host_x) st = dsc_errorf("out of memory");
  }
  if (!st) st = be->alloc(be, per_image * sizeof(float), (void **)&x);
  names = json_array();
  /* One image at a time: eval-mode BN makes results independent of batching. */
  for (int i = 0; !st && i < n; i++) {
    dsc_image img = {0};
    st = dsc_image_decode_file(inputs.items[i], &img);
    if (!st) st = dsc_image_eval_transform(&img, (int)resize, (int)size, host_x);
    dsc_image_free(&img);
    if (!st) st = be->upload(be, x, host_x, per_image * sizeof(float));
    dsc_resnet_features f;
    if (!st) st = dsc_resnet_forward(&m.net, x, 1, (int)size, (int)size, 0, 1, &f);
    if (st) break;
    json_array_append_new(names, json_string(inputs.items[i]));
    for (int l = 0; l < 5 && !st; l++) {
      int c = f.channels[l < 4 ? l : 3], hh = l < 4 ? f.h[l] : 1, ww = l < 4 ? f.w[l] : 1;
      if (!outs[l]) {
        sizes[l] = (size_t)c * hh * ww;
        shapes[l][0] = c, shapes[l][1] = hh, shapes[l][2] = ww;
        if (!(outs[l] = malloc((size_t)n * sizes[l] * sizeof(float)))) st = dsc_errorf("out of memory");
      }
      if (st || !want[l]) continue;
      float *dst = outs[l] + (size_t)i * sizes[l];
      size_t hw = (size_t)f.h[l < 4 ? l : 3] * f.w[l < 4 ? l : 3];
      float *nhwc = malloc(hw * c * sizeof(float));
      if (!nhwc) {
        st = dsc_errorf("out of memory");
        break;
      }
      st = be->download(be, nhwc, f.c[l < 4 ? l : 3], hw * c * sizeof(float));
      for (int k = 0; !st && k < c; k++) {
        if (l < 4) {
          for (size_t p = 0; p < hw; p++) dst[(size_t)k * hw + p] = nhwc[p * c + k];
        } else { /* global average pool, in double */
          double s = 0;
          for (size_t p = 0; p < hw; p++) s += nhwc[p * c + k];
          dst[k] = (float)(s / (double)hw);
        }
      }
      free(nhwc);
    }
  }
  if (!st) st = dsc_st_writer_new(&w);
  static const char *lname[5] = {"c2", "c3", "c4", "c5", "pool"};
  for (int l = 0; l < 5 && !st; l++) {
    if (!want[l]) continue;
    int64_t shape4[4] = {n, shapes[l][0], shapes[l][1], shapes[l][2]};
    st = dsc_st_writer_add(w, lname[l], DSC_F32, l < 4 ? 4 : 2, shape4, outs[l]);
  }
  if (!st) {
    names_text = json_dumps(names, JSON_COMPACT);
    st = dsc_st_writer_meta(w, "images", names_text ? names_text : "[]");
  }
  if (!st) st = dsc_st_writer_meta(w, "weights", cli_get(a, "weights"));
  if (!st) st = dsc_st_writer_save(w, cli_get(a, "out"));
  if (!st) fprintf(stderr, "dsc embed: %d image(s) -> %s\n", n, cli_get(a, "out"));
  free(names_text);
  json_decref(names);
  dsc_st_writer_free(w);
  for (int l = 0; l < 5; l++) free(outs[l]);
  free(host_x);
  if (be) {
    be->free(be, x);
    dsc_backbone_free(&m);
    be->destroy(be);
  }
  for (int i = 0; i < inputs.count; i++) free(inputs.items[i]);
  free(inputs.items);
  return st;
}

int cmd_embed(int argc, char **argv) {
  cli_option opts[] = {
      {"weights", 1, NULL, "ResNet weights: a dsc checkpoint or export, torchvision/timm weights (.safetensors or .pth)", NULL},
      {"allow-partial", 0, NULL, "load the tensors that match; list the others (default: exact match only)", NULL},
      {"input", 1, NULL, "an image, or a directory of .jpg/.jpeg/.png images", NULL},
      {"out", 1, NULL, "output .safetensors", NULL},
      {"layer", 1, "c2,c3,c4,c5,pool", "which outputs to write (comma-separated)", NULL},
      {"resize", 1, "256", "shorter side after resizing", NULL},
      {"size", 1, "224", "center crop", NULL},
      {"threads", 1, "0", "CPU threads (0: all cores)", NULL},
  };
  cli_args a = {.command = "embed", .opts = opts, .n_opts = sizeof opts / sizeof opts[0]};
  if (cli_report(cli_parse(&a, argc, argv))) return 2;
  if (a.help) {
    cli_print_help(&a, "dsc embed --weights W --input IMAGE_OR_DIR --out FILE.safetensors [--layer ...]",
                   "Writes C2..C5 ([N,C,H,W]) and pooled ([N,C]) features of images, F32.", stdout);
    return 0;
  }
  static const char *required[] = {"weights", "input", "out"};
  for (int i = 0; i < 3; i++)
    if (!cli_get(&a, required[i])) {
      fprintf(stderr, "dsc: error: dsc embed needs --%s (see dsc embed --help)\n", required[i]);
      return 2;
    }
  if (a.n_positional) {
    fprintf(stderr, "dsc: error: dsc embed: unexpected argument \"%s\"\n", a.positional[0]);
    return 2;
  }
  long resize, size, threads;
  int want[5];
  if (cli_report(cli_get_int(&a, "resize", 1, 65536, &resize)) ||
      cli_report(cli_get_int(&a, "size", 16, 65536, &size)) ||
      cli_report(cli_get_int(&a, "threads", 0, 4096, &threads)) ||
      cli_report(parse_layers(cli_get(&a, "layer"), want)))
    return 2;
  return cli_report(embed(&a, resize, size, threads, want));
}
