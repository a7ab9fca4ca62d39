/* cmd_scenes.c: `dsc data scenes --out DIR [options]` — writes the multi-object scene dataset of
 * include/dsc/scenes.h (docs/scenes.md) from Debian's Fashion-MNIST files.
 *
 * Every option is checked before anything is read or written; errors name the option. The
 * output is identical for a given seed whatever --threads. Prints one summary line on stdout.
 * Exit status: 0 written, 1 failure while loading or writing, 2 usage error.
 */
#include "cli/cmd_scenes.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "dsc/scenes.h"

static double scenes_now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int cmd_data_scenes(int argc, char **argv) {
  cli_option opts[] = {
      {"out", 1, NULL, "output directory (created; must be empty unless --force)", NULL},
      {"train", 1, "2000", "number of train scenes (items from Fashion-MNIST train)", NULL},
      {"val", 1, "500", "number of val scenes (items from Fashion-MNIST t10k)", NULL},
      {"size", 1, "64", "canvas side in pixels (16..1024)", NULL},
      {"seed", 1, "0", "random seed: the same seed writes the same bytes", NULL},
      {"max-items", 1, "4", "items per scene are 1..max-items (at most 8)", NULL},
      {"labels", 0, NULL, "also write labels/{train,val}/<class>/ (imagefolder: the largest item's class)", NULL},
      {"force", 0, NULL, "write into a non-empty directory, replacing an earlier run's scenes", NULL},
      {"fashion-mnist", 1, "/usr/share/datasets/fashion-mnist", "folder of the Fashion-MNIST idx files", NULL},
      {"threads", 1, "0", "worker threads (0: all cores); never changes the output", NULL},
  };
  cli_args a = {.command = "data scenes", .opts = opts, .n_opts = sizeof opts / sizeof opts[0]};
  if (cli_report(cli_parse(&a, argc, argv))) return 2;
  if (a.help) {
    cli_print_help(&a, "dsc data scenes --out DIR [options]",
                   "Writes multi-object scenes of Fashion-MNIST items on textured backgrounds with\n"
                   "per-pixel class masks, in the seg layout (JPEGImages/, SegmentationClass/,\n"
                   "ImageSets/Segmentation/{train,val}.txt, classes.txt). See docs/scenes.md.",
                   stdout);
    return 0;
  }
  if (a.n_positional > 0) {
    fprintf(stderr, "dsc: error: dsc data scenes takes no positional argument (got \"%s\"); see --help\n",
            a.positional[0]);
    return 2;
  }
  if (!cli_get(&a, "out") || !cli_get(&a, "out")[0]) {
    fprintf(stderr, "dsc: error: dsc data scenes: --out DIR is required\n");
    return 2;
  }
  dsc_scenes_write_config cfg = {.out = cli_get(&a, "out"), .labels = cli_get(&a, "labels") != NULL,
                                 .force = cli_get(&a, "force") != NULL};
  dsc_scenes_config_default(&cfg.scene);
  long n_train, n_val, size, seed, max_items, threads;
  if (cli_report(cli_get_int(&a, "train", 0, DSC_SCENES_MAX_COUNT, &n_train)) ||
      cli_report(cli_get_int(&a, "val", 0, DSC_SCENES_MAX_COUNT, &n_val)) ||
      cli_report(cli_get_int(&a, "size", DSC_SCENES_MIN_SIZE, DSC_SCENES_MAX_SIZE, &size)) ||
      cli_report(cli_get_int(&a, "seed", 0, LONG_MAX, &seed)) ||
      cli_report(cli_get_int(&a, "max-items", 1, DSC_SCENES_MAX_ITEMS, &max_items)) ||
      cli_report(cli_get_int(&a, "threads", 0, 1024, &threads)))
    return 2;
  if (n_train + n_val == 0) {
    fprintf(stderr, "dsc: error: dsc data scenes: --train and --val are both 0: nothing to write\n");
    return 2;
  }
  const char *fm = cli_get(&a, "fashion-mnist");
  if (!fm || !fm[0]) {
    fprintf(stderr, "dsc: error: dsc data scenes: --fashion-mnist is empty\n");
    return 2;
  }
  cfg.n_train = (int)n_train;
  cfg.n_val = (int)n_val;
  cfg.threads = (int)threads;
  cfg.scene.size = (int)size;
  cfg.scene.seed = (uint64_t)seed;
  cfg.scene.max_items = (int)max_items;

  double t0 = scenes_now_s();
  dsc_scenes_items train = {0}, val = {0};
  if ((n_train > 0 && cli_report(dsc_scenes_items_load(fm, DSC_SCENES_TRAIN, &train))) ||
      (n_val > 0 && cli_report(dsc_scenes_items_load(fm, DSC_SCENES_VAL, &val)))) {
    dsc_scenes_items_free(&train);
    dsc_scenes_items_free(&val);
    return 1;
  }
  dsc_scenes_write_stats stats;
  int rc = cli_report(dsc_scenes_write(&cfg, &train, &val, &stats));
  dsc_scenes_items_free(&train);
  dsc_scenes_items_free(&val);
  if (rc) return 1;
  long total = 0;
  for (int c = 0; c < DSC_SCENES_NUM_CLASSES; c++) total += stats.class_pixels[c];
  char labels[96] = "";
  if (cfg.labels)
    snprintf(labels, sizeof labels, ", labels/ for %d train + %d val", stats.labelled[0], stats.labelled[1]);
  printf("wrote %d train + %d val scenes (%dx%d, 1-%d items, seed %ld, %.1f%% item pixels%s) to %s in %.1f s\n",
         cfg.n_train, cfg.n_val, cfg.scene.size, cfg.scene.size, cfg.scene.max_items, seed,
         total ? 100.0 * (double)(total - stats.class_pixels[0]) / (double)total : 0.0, labels, cfg.out,
         scenes_now_s() - t0);
  return 0;
}
