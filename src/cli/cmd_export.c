/* cmd_export.c: `dsc export --ckpt CKPT --format torchvision|pth|detectron2 --out FILE` -- a
 * pretrained backbone for torchvision, mmdetection/mmsegmentation or detectron2
 * (include/dsc/export.h; docs/export.md walks through fine-tuning with each). */
#include <stdio.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "dsc/export.h"

static const char *format_names[] = {"torchvision", "pth", "detectron2"};

int cmd_export(int argc, char **argv) {
  cli_option opts[] = {
      {"ckpt", 1, NULL, "a dsc checkpoint (or any weights dsc reads: an export, torchvision/timm "
                        ".safetensors or .pth)", NULL},
      {"format", 1, NULL, "torchvision (safetensors), pth (torch.save zip: torchvision, mmdet, "
                          "mmseg) or detectron2 (.pkl)", NULL},
      {"out", 1, NULL, "file to write (atomically)", NULL},
      {"encoder", 1, "online", "online (the backbone trained by SGD, what the paper transfers) "
                               "or momentum (the EMA encoder)", NULL},
      {"quiet", 0, NULL, "no summary line", NULL},
  };
  cli_args a = {.command = "export", .opts = opts, .n_opts = sizeof opts / sizeof opts[0]};
  if (cli_report(cli_parse(&a, argc, argv))) return 2;
  if (a.help) {
    cli_print_help(&a, "dsc export --ckpt CKPT --format torchvision|pth|detectron2 --out FILE",
                   "Writes the pretrained ResNet backbone for other frameworks: torchvision keys\n"
                   "(safetensors or .pth) or detectron2 names (.pkl), with the run's provenance.\n"
                   "See docs/export.md for loading it in torchvision, detectron2 and mmsegmentation.",
                   stdout);
    return 0;
  }
  static const char *required[] = {"ckpt", "format", "out"};
  for (int i = 0; i < 3; i++)
    if (!cli_get(&a, required[i])) {
      fprintf(stderr, "dsc: error: dsc export needs --%s (see dsc export --help)\n", required[i]);
      return 2;
    }
  if (a.n_positional) {
    fprintf(stderr, "dsc: error: dsc export: unexpected argument \"%s\"\n", a.positional[0]);
    return 2;
  }
  dsc_export_config c = {.source = cli_get(&a, "ckpt"), .out = cli_get(&a, "out"),
                         .producer = "dsc " DSC_VERSION};
  if (dsc_export_format_from_name(cli_get(&a, "format"), &c.format) != 0) {
    fprintf(stderr, "dsc: error: dsc export: --format %s: expected torchvision, pth or detectron2\n",
            cli_get(&a, "format"));
    return 2;
  }
  const char *encoder = cli_get(&a, "encoder");
  if (strcmp(encoder, "online") && strcmp(encoder, "momentum")) {
    fprintf(stderr, "dsc: error: dsc export: --encoder %s: expected online or momentum\n", encoder);
    return 2;
  }
  c.momentum = !strcmp(encoder, "momentum");
  dsc_export_summary s;
  if (cli_report(dsc_export(&c, &s))) return 1;
  if (!cli_get(&a, "quiet")) {
    char step[48] = "";
    if (s.step >= 0) snprintf(step, sizeof step, ", step %lld", s.step);
    printf("dsc export: %s -> %s (%s): resnet%d, %s stem, %s encoder%s, %d tensors, %.1f MB\n",
           c.source, c.out, format_names[c.format], s.cfg.depth, s.cfg.small_stem ? "small" : "standard",
           encoder, step, s.tensors, (double)s.bytes / 1e6);
  }
  return 0;
}
