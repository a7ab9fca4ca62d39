/* cmd_data.c: `dsc data check DIR` (and the dispatch of `dsc data scenes`, cmd_scenes.c) — indexes a dataset as training would and decodes every
 * image (and, for seg, its label map), listing each problem file with its reason.
 *
 * Output: one line per problem on stdout, "PATH: REASON" (problems met while indexing, such as
 * symlink loops, first, then files in index order), then a summary line
 * "checked N files: U usable, P problems, S other files skipped". Exit status: 0 when every
 * indexed file is usable and indexing met no problem, 1 when problems were found (or the
 * dataset is empty or cannot be opened), 2 on usage errors. A 1x1 image is usable.
 * Files are decoded in parallel (OpenMP); the report is in index order whatever the threads.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/cmd_scenes.h"
#include "cli/commands.h"
#include "dsc/dataset.h"

int cmd_data(int argc, char **argv) {
  /* `dsc data scenes ...` has options of its own (src/cli/cmd_scenes.c). */
  if (argc >= 1 && strcmp(argv[0], "scenes") == 0) return cmd_data_scenes(argc - 1, argv + 1);
  cli_option opts[] = {
      {"format", 1, "folder", "folder, imagefolder, idx, seg or cityscapes", NULL},
      {"split", 1, "train", "seg: train, val or trainaug; cityscapes: train, val or test; idx: train or t10k", NULL},
      {"max-pixels", 1, "0", "largest image accepted, in pixels (0: the decoders' limit, 2^28)", NULL},
  };
  cli_args a = {.command = "data", .opts = opts, .n_opts = sizeof opts / sizeof opts[0]};
  if (cli_report(cli_parse(&a, argc, argv))) return 2;
  if (a.help || a.n_positional == 0) {
    cli_print_help(&a, "dsc data check DIR [options]   (and: dsc data scenes --help)",
                   "Decodes every image of a dataset and lists each problem file with its reason.\n"
                   "Exit status: 0 all usable, 1 problems found, 2 usage error.",
                   a.help ? stdout : stderr);
    return a.help ? 0 : 2;
  }
  if (strcmp(a.positional[0], "check") != 0) {
    fprintf(stderr, "dsc: error: unknown data subcommand \"%s\" (available: check, scenes)\n", a.positional[0]);
    return 2;
  }
  if (a.n_positional != 2) {
    fprintf(stderr, "dsc: error: dsc data check takes one directory (got %d arguments)\n", a.n_positional - 1);
    return 2;
  }
  dsc_dataset_config cfg = {.path = a.positional[1], .split = cli_get(&a, "split")};
  long max_pixels;
  if (cli_report(dsc_dataset_format_parse(cli_get(&a, "format"), &cfg.format)) ||
      cli_report(cli_get_int(&a, "max-pixels", 0, DSC_IMAGE_MAX_PIXELS, &max_pixels)))
    return 2;
  cfg.max_pixels = max_pixels;
  dsc_dataset *ds = NULL;
  if (cli_report(dsc_dataset_open(&cfg, &ds))) return 1;
  size_t n = dsc_dataset_size(ds), n_index = dsc_dataset_problem_count(ds);
  for (size_t i = 0; i < n_index; i++) {
    const char *path, *reason;
    dsc_dataset_problem(ds, i, &path, &reason);
    printf("%s: %s\n", path, reason);
  }
  dsc_status **errs = calloc(n, sizeof *errs);
  if (!errs) {
    dsc_dataset_free(ds);
    return cli_report(dsc_errorf("out of memory"));
  }
  int maps = dsc_dataset_has_label_maps(ds);
#pragma omp parallel for schedule(dynamic, 4)
  for (size_t i = 0; i < n; i++) {
    dsc_image img;
    uint8_t *map = NULL;
    errs[i] = dsc_dataset_load(ds, i, &img, NULL, maps ? &map : NULL);
    dsc_image_free(&img);
    free(map);
  }
  size_t bad = 0;
  for (size_t i = 0; i < n; i++)
    if (errs[i]) {
      printf("%s\n", errs[i]->msg);
      dsc_status_free(errs[i]);
      bad++;
    }
  free(errs);
  printf("checked %zu files: %zu usable, %zu problems, %zu other files skipped\n", n, n - bad,
         bad + n_index, dsc_dataset_skipped_count(ds));
  dsc_dataset_free(ds);
  return bad + n_index ? 1 : 0;
}
