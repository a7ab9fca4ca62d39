/* cmd_bench.c: `dsc bench step` — throughput of the training step (forward, backward, SGD)
 * on a synthetic batch: warm-up steps, then timed steps; reports the median. The same step
 * is timed in PyTorch by bench/torch_step.py (see docs/performance.md).
 * `dsc bench data` — two-view batches per second from the loader over a folder of images
 * (bench/make_jpegs.py makes one; bench/torch_data.py times torchvision on the same files).
 * `dsc bench step method=X [key=value ...]` — the full pretraining step of a method (EMA, key
 * forward with shuffle-BN, query forward, losses, backward, SGD, enqueue) on synthetic views,
 * configuration keys as `dsc pretrain` (defaults: METHOD.md's, bn_groups 8, queue 65536);
 * bench/torch_step.py --method X times the same step in PyTorch.
 * `dsc bench finetune` — the FCN fine-tuning step of `dsc finetune seg` on a synthetic batch;
 * bench/torch_finetune_step.py times it in PyTorch (bench/finetune_vs_torch.sh runs both). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/synthetic.h"
#include "dsc/config.h"
#include "dsc/fcn.h"
#include "dsc/loader.h"
#include "dsc/rng.h"
#include "dsc/ssl.h"

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* `dsc bench data`: for each thread count, `warmup` untimed batches then `batches` timed ones
 * (epochs restart as needed); options left at the step benchmark's defaults take data's. */
static int bench_data(cli_args *a) {
  const char *path = cli_get(a, "path");
  if (!path) {
    fprintf(stderr, "dsc: error: dsc bench data needs --path DIR (a folder of images, e.g. from bench/make_jpegs.py)\n");
    return 2;
  }
  long size, batch, warmup, batches;
  if (cli_report(cli_get_int(a, "size", 16, 4096, &size)) ||
      cli_report(cli_get_int(a, "batch", 1, 4096, &batch)) ||
      cli_report(cli_get_int(a, "warmup", 0, 1000, &warmup)) ||
      cli_report(cli_get_int(a, "batches", 1, 100000, &batches)))
    return 2;
  const char *threads_opt = "1,2";
  for (int i = 0; i < a->n_opts; i++) {
    if (strcmp(a->opts[i].name, "batch") == 0 && a->opts[i].value == a->opts[i].def) batch = 64;
    if (strcmp(a->opts[i].name, "threads") == 0)
      threads_opt = a->opts[i].value == a->opts[i].def ? "1,2" : a->opts[i].value;
  }
  dsc_dataset *ds = NULL;
  if (cli_report(dsc_dataset_open(&(dsc_dataset_config){.path = path, .format = DSC_DATASET_FOLDER}, &ds)))
    return 1;
  int rc = 0;
  for (const char *t = threads_opt; *t && !rc;) {
    char *end;
    long threads = strtol(t, &end, 10);
    if (end == t || threads < 1 || threads > 256 || (*end && *end != ',')) {
      fprintf(stderr, "dsc: error: --threads \"%s\": a comma-separated list of counts in [1, 256]\n", threads_opt);
      rc = 2;
      break;
    }
    t = *end ? end + 1 : end;
    dsc_loader_config c = {.batch = (int)batch, .workers = (int)threads, .prefetch = 2, .shuffle = 1, .seed = 1};
    dsc_aug_config_default(&c.aug, (int)size);
    dsc_loader *l = NULL;
    dsc_status *st = dsc_loader_open(ds, &c, &l);
    uint32_t epoch = 0;
    double t0 = 0;
    if (!st) st = dsc_loader_start_epoch(l, epoch);
    for (long k = 0; !st && k < warmup + batches; k++) {
      if (k == warmup) t0 = synthetic_now_s();
      const dsc_batch *b = NULL;
      st = dsc_loader_next(l, &b);
      if (!st && !b) {
        st = dsc_loader_start_epoch(l, ++epoch);
        k--;
      }
    }
    double dt = synthetic_now_s() - t0;
    dsc_loader_free(l);
    if (st) {
      rc = cli_report(st);
      break;
    }
    double bps = (double)batches / dt, ips = bps * (double)batch;
    char what[128];
    snprintf(what, sizeof what, "data two-view %ldx%ld b%ld", size, size, batch);
    if (cli_get(a, "json"))
      printf("{\"what\": \"%s\", \"impl\": \"dsc\", \"threads\": %ld, \"batches_per_s\": %.4f, "
             "\"img_per_s\": %.2f, \"img_per_s_per_core\": %.2f, \"images\": %zu}\n",
             what, threads, bps, ips, ips / (double)threads, dsc_dataset_size(ds));
    else
      printf("%-32s %2ld threads %8.3f batches/s %8.1f img/s %8.1f img/s/core (%ld batches)\n", what,
             threads, bps, ips, ips / (double)threads, batches);
  }
  dsc_dataset_free(ds);
  return rc;
}

/* Sorts the timed steps and prints the median's throughput, the minimum and the peak RSS: a
 * table line, or with --json one object (plus "method" when given). */
/* gpu_mb < 0: a host backend (no device memory to report). */
static void report_steps(const cli_args *a, const char *what, const char *method, long threads,
                         long batch, double *times, long steps, double gpu_mb) {
  qsort(times, (size_t)steps, sizeof *times, cmp_double);
  double median = times[steps / 2], rss = synthetic_peak_rss_mb();
  if (cli_get(a, "json")) {
    printf("{\"what\": \"%s\", \"impl\": \"dsc\", ", what);
    if (method) printf("\"method\": \"%s\", ", method);
    if (gpu_mb >= 0) printf("\"gpu_used_mb\": %.1f, ", gpu_mb);
    printf("\"threads\": %ld, \"img_per_s\": %.3f, \"step_s\": %.5f, \"min_step_s\": %.5f, "
           "\"peak_rss_mb\": %.1f}\n", threads, batch / median, median, times[0], rss);
  } else {
    printf("%-36s %10.2f img/s  median step %.4f s (min %.4f, %ld steps)  peak RSS %.0f MiB",
           what, batch / median, median, times[0], steps, rss);
    if (gpu_mb >= 0) printf("  GPU memory used %.0f MiB", gpu_mb);
    printf("\n");
  }
}

/* The backend's device memory in use in MiB, or -1 on a host backend (or when it cannot be read). */
static double device_memory_mb(dsc_backend *be) {
  size_t used = 0;
  double mb = -1;
  if (be->device_memory_used) {
    dsc_status *st = be->device_memory_used(be, &used);
    if (!st) mb = used / 1048576.0;
    dsc_status_free(st);
  }
  return mb;
}

/* `dsc bench step method=X ...`: the pretraining step of a method on two synthetic views. */
static int bench_method(cli_args *a, int size, int batch, int threads, long warmup, long steps) {
  dsc_config cfg;
  dsc_config_defaults(&cfg);
  dsc_status *st = NULL;
  char kv[256];
  snprintf(kv, sizeof kv, "model.arch=%s", cli_get(a, "arch"));
  st = dsc_config_set_arg(&cfg, kv);
  snprintf(kv, sizeof kv, "model.stem=%s", cli_get(a, "stem"));
  if (!st) st = dsc_config_set_arg(&cfg, kv);
  cfg.size = size, cfg.batch = batch, cfg.threads = threads;
  for (int i = 1; !st && i < a->n_positional; i++) st = dsc_config_set_arg(&cfg, a->positional[i]);
  if (!st) st = dsc_config_finalize(&cfg);
  if (st) {
    cli_report(st);
    return 2;
  }
  dsc_backend *be = NULL;
  dsc_ssl_model m;
  memset(&m, 0, sizeof m);
  size_t nx = (size_t)batch * size * size * 3;
  float *x = malloc(2 * nx * sizeof *x);
  double *times = calloc((size_t)steps, sizeof *times);
  if (!x || !times) st = dsc_errorf("out of memory for the synthetic views");
  for (size_t i = 0; !st && i < 2 * nx; i++) x[i] = (float)dsc_rng_normal(0, DSC_RNG_BENCH, 2, (uint32_t)i, 0);
  if (!st) st = dsc_backend_open(cfg.device, cfg.precision, threads, &be);
  if (!st) st = dsc_ssl_model_create(&m, be, &cfg);
  /* The views are staged once: the bench times the step, not the host-to-device copy. */
  const float *va = NULL, *vb = NULL;
  if (!st) st = dsc_ssl_stage_batch(&m, x, x + nx, batch, size, &va, &vb);
  dsc_ssl_step_info info;
  for (long s = 0; !st && s < warmup + steps; s++) {
    double t = synthetic_now_s();
    st = dsc_ssl_step(&m, va, vb, batch, size, 0.01, &info, NULL);
    if (s >= warmup) times[s - warmup] = synthetic_now_s() - t;
  }
  int rc = 0;
  if (st) {
    rc = cli_report(st);
  } else {
    char what[160];
    snprintf(what, sizeof what, "%s %s%s %dx%d b%d%s%s", dsc_method_name(cfg.method), cfg.arch,
             strcmp(cfg.stem, "small") == 0 ? "-small" : "", size, size, batch,
             strcmp(cfg.device, "cpu") == 0 ? "" : " ", strcmp(cfg.device, "cpu") == 0 ? "" : cfg.precision);
    double gpu_mb = device_memory_mb(be);
    report_steps(a, what, dsc_method_name(cfg.method), threads, batch, times, steps, gpu_mb);
  }
  if (m.be) dsc_ssl_model_free(&m);
  if (be) be->destroy(be);
  free(x);
  free(times);
  return rc;
}

/* `dsc bench finetune`: the FCN fine-tuning step (dsc_fcn_train_step: forward, loss, backward,
 * SGD) on a synthetic batch of `size` x `size` crops with random labels (about 1 in 16 ignored);
 * bench/torch_finetune_step.py times the same step in PyTorch. */
static int bench_finetune(cli_args *a, const dsc_resnet_config *rc, int size, int batch, int threads,
                          long warmup, long steps) {
  long classes, dilate;
  const char *dil = cli_get(a, "dilate");
  if (cli_report(cli_get_int(a, "classes", 2, 254, &classes))) return 2;
  if (!dil) dilate = rc->depth == 50;
  else if (cli_report(cli_get_int(a, "dilate", 0, 1, &dilate))) return 2;
  dsc_fcn_config fc = {*rc, {{0}, {0}}, 256, (int)classes, 0.1f};
  if (dilate) dsc_resnet_layout_dilated8(&fc.layout);
  size_t npx = (size_t)batch * size * size;
  float *x = malloc(npx * 3 * sizeof *x);
  uint8_t *labels = malloc(npx);
  double *times = calloc((size_t)steps, sizeof *times);
  dsc_status *st = !x || !labels || !times ? dsc_errorf("out of memory for the synthetic batch") : NULL;
  for (size_t i = 0; !st && i < npx * 3; i++) x[i] = (float)dsc_rng_normal(0, DSC_RNG_BENCH, 3, (uint32_t)i, 0);
  for (size_t i = 0; !st && i < npx; i++) {
    double u = dsc_rng_uniform(0, DSC_RNG_BENCH, 4, (uint32_t)i, 0);
    labels[i] = u < 1.0 / 16 ? 255 : (uint8_t)(u * 16 / 15 * classes) % classes;
  }
  dsc_backend *be = NULL;
  dsc_fcn m;
  memset(&m, 0, sizeof m);
  float *xd = NULL;
  if (!st) st = dsc_backend_open(cli_get(a, "device"), cli_get(a, "precision"), threads, &be);
  if (!st) st = dsc_fcn_create(&m, be, &fc, 0);
  if (!st) st = be->alloc(be, npx * 3 * sizeof *x, (void **)&xd);
  if (!st) st = be->upload(be, xd, x, npx * 3 * sizeof *x);
  const dsc_sgd_config sgd = {0.9f, 5e-4f, 0};
  dsc_fcn_step_info info;
  for (long s = 0; !st && s < warmup + steps; s++) {
    double t = synthetic_now_s();
    st = dsc_fcn_train_step(&m, xd, labels, batch, size, size, s, 0, &sgd, 0.01, &info);
    if (!st && be->synchronize) st = be->synchronize(be);
    if (s >= warmup) times[s - warmup] = synthetic_now_s() - t;
  }
  int rcode = 0;
  if (st) {
    rcode = cli_report(st);
  } else {
    char what[160];
    snprintf(what, sizeof what, "finetune fcn %s%s%s %dx%d b%d", cli_get(a, "arch"), rc->small_stem ? "-small" : "",
             dilate ? "-d8" : "", size, size, batch);
    double gpu_mb = device_memory_mb(be);
    report_steps(a, what, NULL, threads, batch, times, steps, gpu_mb);
  }
  if (xd) be->free(be, xd);
  if (m.be) dsc_fcn_free(&m);
  if (be) be->destroy(be);
  free(x);
  free(labels);
  free(times);
  return rcode;
}

int cmd_bench(int argc, char **argv) {
  cli_option opts[] = {
      {"arch", 1, "resnet50", "resnet18, resnet34 or resnet50", NULL},
      {"stem", 1, "standard", "standard or small", NULL},
      {"size", 1, "224", "input height and width", NULL},
      {"batch", 1, "8", "images per step", NULL},
      {"threads", 1, "0", "CPU threads (0: all cores)", NULL},
      {"warmup", 1, "2", "untimed steps first", NULL},
      {"steps", 1, "5", "timed steps (the median is reported)", NULL},
      {"json", 0, NULL, "one JSON object per line instead of a table", NULL},
      {"path", 1, NULL, "data: folder of images", NULL},
      {"batches", 1, "30", "data: timed batches (threads: a list, default 1,2; batch default 64)", NULL},
      {"classes", 1, "21", "finetune: classes of the FCN head", NULL},
      {"dilate", 1, NULL, "finetune: 1 = dilated layers 3-4, output stride 8 (default for resnet50), 0 = plain", NULL},
      {"device", 1, "cpu", "finetune: cpu|cuda", NULL},
      {"precision", 1, "fp32", "finetune: fp32|bf16", NULL},
  };
  cli_args a = {.command = "bench", .opts = opts, .n_opts = sizeof opts / sizeof opts[0]};
  if (cli_report(cli_parse(&a, argc, argv))) return 2;
  if (a.help || a.n_positional == 0) {
    cli_print_help(&a, "dsc bench step [method=X key=value ...]|finetune|data [options]",
                   "step: times the training step of a ResNet (forward, backward, SGD) on a synthetic batch;\n"
                   "  with method=X (and any dsc pretrain key=value), the full pretraining step of method X.\n"
                   "finetune: times the FCN fine-tuning step (dsc finetune seg's) on a synthetic batch.\n"
                   "data: times the loader's two-view augmented batches from --path.",
                   a.help ? stdout : stderr);
    return a.help ? 0 : 2;
  }
  if (a.n_positional == 1 && strcmp(a.positional[0], "data") == 0) return bench_data(&a);
  int finetune = a.n_positional == 1 && strcmp(a.positional[0], "finetune") == 0;
  if (!finetune && (strcmp(a.positional[0], "step") != 0 || (a.n_positional > 1 && !strchr(a.positional[1], '=')))) {
    fprintf(stderr, "dsc: error: unknown benchmark \"%s\" (available: step, finetune, data)\n", a.positional[0]);
    return 2;
  }
  long size, batch, threads, warmup, steps;
  dsc_resnet_config cfg;
  if (cli_report(cli_get_int(&a, "size", 16, 4096, &size)) ||
      cli_report(cli_get_int(&a, "batch", 1, 4096, &batch)) ||
      cli_report(cli_get_int(&a, "threads", 0, 4096, &threads)) ||
      cli_report(cli_get_int(&a, "warmup", 0, 1000, &warmup)) ||
      cli_report(cli_get_int(&a, "steps", 1, 1000, &steps)) ||
      cli_report(synthetic_parse_model(cli_get(&a, "arch"), cli_get(&a, "stem"), &cfg)))
    return 2;
  if (finetune) return bench_finetune(&a, &cfg, (int)size, (int)batch, (int)threads, warmup, steps);
  if (a.n_positional > 1) return bench_method(&a, (int)size, (int)batch, (int)threads, warmup, steps);
  synthetic_run r;
  dsc_status *st = synthetic_init(&r, &cfg, (int)batch, (int)size, (int)threads, 0);
  double *times = calloc((size_t)steps, sizeof *times), loss = 0;
  for (long s = 0; !st && s < warmup + steps; s++) {
    double t = synthetic_now_s();
    st = synthetic_step(&r, 0.01f, &loss);
    if (s >= warmup) times[s - warmup] = synthetic_now_s() - t;
  }
  if (st) {
    free(times);
    synthetic_free(&r);
    return cli_report(st);
  }
  char what[128];
  snprintf(what, sizeof what, "step %s%s %ldx%ld b%ld", cli_get(&a, "arch"),
           cfg.small_stem ? "-small" : "", size, size, batch);
  report_steps(&a, what, NULL, threads, batch, times, steps, -1);
  free(times);
  synthetic_free(&r);
  return 0;
}
