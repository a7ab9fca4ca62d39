/* main.c: the `dsc` command-line tool: dispatches to one subcommand (src/cli/cmd_*.c). */
#include <malloc.h>
#include <stdio.h>
#include <string.h>

#include "cli/cmd_eval.h"
#include "cli/cmd_viz.h"
#include "cli/commands.h"

int cli_report(dsc_status *st) {
  if (!st) return 0;
  fprintf(stderr, "dsc: error: %s\n", st->msg);
  dsc_status_free(st);
  return 1;
}

static const struct {
  const char *name;
  int (*run)(int argc, char **argv);
  const char *about;
} commands[] = {
    {"pretrain", cmd_pretrain, "self-supervised pretraining (MoCo-v2, DenseCL, DSC) on a folder of images"},
    {"selfcheck", cmd_selfcheck, "build a ResNet, run one training step, report it"},
    {"info", cmd_info, "list the tensors and metadata of a safetensors file"},
    {"embed", cmd_embed, "C2..C5 and pooled features of images for given weights"},
    {"bench", cmd_bench, "throughput of the training step or data pipeline (dsc bench step|data)"},
    {"data", cmd_data, "check a dataset (dsc data check) or build the scene benchmark (dsc data scenes)"},
    {"export", cmd_export, "the backbone for torchvision (safetensors, .pth), mmdet/mmseg (.pth), detectron2 (.pkl)"},
    {"finetune", cmd_finetune, "FCN semantic-segmentation fine-tuning of a backbone, mIoU (dsc finetune seg)"},
    {"eval", cmd_eval, "frozen-backbone evaluation: k-NN, linear probe, dense probe, clustering"},
    {"viz", cmd_viz, "pictures: loss curves, PCA and cluster maps of dense features (PNG)"},
};

static void usage(FILE *out) {
  fprintf(out,
          "dsc %s: Dense Semantic Contrast pretraining of ResNet backbones\n\n"
          "usage: dsc COMMAND [options]   (dsc COMMAND --help for its options)\n\ncommands:\n",
          DSC_VERSION);
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].about);
}

int main(int argc, char **argv) {
  /* Large work buffers (loss chunks, k-means scores, snapshots) are allocated and freed every
   * step; glibc would map each one afresh and the kernel zero its pages every time (measured
   * 14% of a DenseCL step in page faults, docs/performance.md). Keep them on the heap instead. */
  mallopt(M_MMAP_THRESHOLD, 256 << 20);
  mallopt(M_TRIM_THRESHOLD, 512 << 20);
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
    usage(stdout);
    return 0;
  }
  if (strcmp(argv[1], "--version") == 0) {
    printf("dsc %s\n", DSC_VERSION);
    return 0;
  }
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    if (strcmp(argv[1], commands[i].name) == 0) return commands[i].run(argc - 2, argv + 2);
  fprintf(stderr, "dsc: error: unknown command \"%s\" (see dsc --help)\n", argv[1]);
  return 2;
}
