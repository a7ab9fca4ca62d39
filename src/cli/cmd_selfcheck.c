/* cmd_selfcheck.c: `dsc selfcheck` — builds a ResNet (ResNet-50 at 224x224 by default), runs
 * training steps on a synthetic batch with the CPU backend and reports what happened: the
 * model size, time per phase, the loss before and after, and whether everything stayed
 * finite. The quick check that an installation works, until pretraining is the main job. */
#include <math.h>
#include <stdio.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/synthetic.h"

int cmd_selfcheck(int argc, char **argv) {
  cli_option opts[] = {
      {"arch", 1, "resnet50", "resnet18, resnet34 or resnet50", NULL},
      {"stem", 1, "standard", "standard (7x7/2 + max-pool) or small (3x3/1, no pool)", NULL},
      {"size", 1, "224", "input height and width", NULL},
      {"batch", 1, "2", "images per step", NULL},
      {"steps", 1, "2", "training steps", NULL},
      {"lr", 1, "0.001", "learning rate", NULL},
      {"threads", 1, "0", "CPU threads (0: all cores)", NULL},
      {"seed", 1, "0", "seed of the initialization and the synthetic batch", NULL},
      {"save", 1, NULL, "write the trained backbone (torchvision keys) to this .safetensors", NULL},
  };
  cli_args a = {.command = "selfcheck", .opts = opts, .n_opts = sizeof opts / sizeof opts[0]};
  if (cli_report(cli_parse(&a, argc, argv))) return 2;
  if (a.help) {
    cli_print_help(&a, "dsc selfcheck [options]",
                   "Builds a ResNet, runs training steps (forward, backward, SGD) on a synthetic batch\n"
                   "and reports the time of each phase and the loss. Exits non-zero if anything fails.",
                   stdout);
    return 0;
  }
  if (a.n_positional) {
    fprintf(stderr, "dsc: error: dsc selfcheck takes no arguments (got \"%s\")\n", a.positional[0]);
    return 2;
  }
  long size, batch, steps, threads, seed;
  double lr;
  dsc_resnet_config cfg;
  if (cli_report(cli_get_int(&a, "size", 16, 4096, &size)) ||
      cli_report(cli_get_int(&a, "batch", 1, 4096, &batch)) ||
      cli_report(cli_get_int(&a, "steps", 1, 1000000, &steps)) ||
      cli_report(cli_get_int(&a, "threads", 0, 4096, &threads)) ||
      cli_report(cli_get_int(&a, "seed", 0, 0x7fffffffL, &seed)) ||
      cli_report(cli_get_double(&a, "lr", &lr)) ||
      cli_report(synthetic_parse_model(cli_get(&a, "arch"), cli_get(&a, "stem"), &cfg)))
    return 2;

  printf("dsc selfcheck: %s (%s stem), batch %ld of %ldx%ld, %ld step(s)\n", cli_get(&a, "arch"),
         cfg.small_stem ? "small" : "standard", batch, size, size, steps);
  synthetic_run r;
  double t0 = synthetic_now_s();
  dsc_status *st = synthetic_init(&r, &cfg, (int)batch, (int)size, (int)threads, (uint64_t)seed);
  if (st) {
    synthetic_free(&r);
    return cli_report(st);
  }
  size_t n_params = 0;
  for (int i = 0; i < r.model.table.count; i++)
    if (r.model.table.entries[i].role == DSC_ROLE_PARAM) n_params += r.model.table.entries[i].numel;
  printf("  model: %d tensors, %.2fM parameters, built and initialized in %.2f s\n",
         r.model.table.count, n_params / 1e6, synthetic_now_s() - t0);
  int ok = 1;
  double first = NAN, last = NAN;
  for (long s = 0; s < steps && ok; s++) {
    double loss, t = synthetic_now_s();
    st = synthetic_step(&r, (float)lr, &loss);
    if (st) {
      ok = 0;
      cli_report(st);
      break;
    }
    printf("  step %ld: loss %.6f, %.3f s (%.1f img/s)\n", s, loss, synthetic_now_s() - t,
           batch / (synthetic_now_s() - t));
    if (!isfinite(loss)) {
      fprintf(stderr, "dsc: error: non-finite loss at step %ld\n", s);
      ok = 0;
    }
    if (s == 0) first = loss;
    last = loss;
  }
  if (ok) {
    st = dsc_backbone_download(&r.model);
    for (size_t i = 0; !st && ok && i < r.model.table.param_numel; i++)
      if (!isfinite(r.model.host_params[i])) {
        fprintf(stderr, "dsc: error: a parameter became non-finite\n");
        ok = 0;
      }
    if (st) ok = !cli_report(st);
  }
  if (ok && steps > 1 && !(last < first)) {
    fprintf(stderr, "dsc: error: the loss did not fall (%.6f -> %.6f)\n", first, last);
    ok = 0;
  }
  const char *save = cli_get(&a, "save");
  if (ok && save) {
    const char *keys[] = {"format", "producer"}, *values[] = {"torchvision", "dsc selfcheck " DSC_VERSION};
    st = dsc_backbone_save(&r.model, save, 2, keys, values);
    if (st) ok = !cli_report(st);
    else printf("  wrote %s\n", save);
  }
  printf("  peak memory %.0f MiB\n", synthetic_peak_rss_mb());
  printf("selfcheck %s\n", ok ? "passed" : "FAILED");
  synthetic_free(&r);
  return ok ? 0 : 1;
}
