/* cmd_bench.c: `dsc bench step` — throughput of the training step (forward, backward, SGD)
 * on a synthetic batch: warm-up steps, then timed steps; reports the median. The same step
 * is timed in PyTorch by bench/torch_step.py (see docs/performance.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/synthetic.h"

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
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
  };
  cli_args a = {.command = "bench", .opts = opts, .n_opts = sizeof opts / sizeof opts[0]};
  if (cli_report(cli_parse(&a, argc, argv))) return 2;
  if (a.help || a.n_positional == 0) {
    cli_print_help(&a, "dsc bench step [options]",
                   "Times the training step of a ResNet (forward, backward, SGD) on a synthetic batch.",
                   a.help ? stdout : stderr);
    return a.help ? 0 : 2;
  }
  if (a.n_positional != 1 || strcmp(a.positional[0], "step") != 0) {
    fprintf(stderr, "dsc: error: unknown benchmark \"%s\" (available: step)\n", a.positional[0]);
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
