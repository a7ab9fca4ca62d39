/* cmd_bench.c: `dsc bench step` — throughput of the training step (forward, backward, SGD)
 * on a synthetic batch: warm-up steps, then timed steps; reports the median. The same step
 * is timed in PyTorch by bench/torch_step.py (see docs/performance.md).
 * `dsc bench data` — two-view batches per second from the loader over a folder of images
 * (bench/make_jpegs.py makes one; bench/torch_data.py times torchvision on the same files). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/synthetic.h"
#include "dsc/loader.h"

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
  };
  cli_args a = {.command = "bench", .opts = opts, .n_opts = sizeof opts / sizeof opts[0]};
  if (cli_report(cli_parse(&a, argc, argv))) return 2;
  if (a.help || a.n_positional == 0) {
    cli_print_help(&a, "dsc bench step|data [options]",
                   "step: times the training step of a ResNet (forward, backward, SGD) on a synthetic batch.\n"
                   "data: times the loader's two-view augmented batches from --path.",
                   a.help ? stdout : stderr);
    return a.help ? 0 : 2;
  }
  if (a.n_positional == 1 && strcmp(a.positional[0], "data") == 0) return bench_data(&a);
  if (a.n_positional != 1 || strcmp(a.positional[0], "step") != 0) {
    fprintf(stderr, "dsc: error: unknown benchmark \"%s\" (available: step, data)\n", a.positional[0]);
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
  qsort(times, (size_t)steps, sizeof *times, cmp_double);
  double median = times[steps / 2], rss = synthetic_peak_rss_mb();
  char what[128];
  snprintf(what, sizeof what, "step %s%s %ldx%ld b%ld", cli_get(&a, "arch"),
           cfg.small_stem ? "-small" : "", size, size, batch);
  if (cli_get(&a, "json"))
    printf("{\"what\": \"%s\", \"impl\": \"dsc\", \"threads\": %ld, \"img_per_s\": %.3f, "
           "\"step_s\": %.5f, \"min_step_s\": %.5f, \"peak_rss_mb\": %.1f}\n",
           what, threads, batch / median, median, times[0], rss);
  else
    printf("%-32s %10.2f img/s  median step %.4f s (min %.4f, %ld steps)  peak RSS %.0f MiB\n",
           what, batch / median, median, times[0], steps, rss);
  free(times);
  synthetic_free(&r);
  return 0;
}
