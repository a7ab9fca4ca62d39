/* cmd_info.c: `dsc info FILE` — the tensors and metadata of a safetensors file (or of the state
 * dict of a PyTorch .pth, read as dsc_weights_open does). */
#include "cli/args.h"
#include "cli/commands.h"
#include "dsc/safetensors.h"

int cmd_info(int argc, char **argv) {
  cli_args a = {.command = "info"};
  if (cli_report(cli_parse(&a, argc, argv))) return 2;
  if (a.help) {
    cli_print_help(&a, "dsc info FILE (.safetensors, or a PyTorch .pth: its state dict)",
                   "Lists every tensor (name, dtype, shape, size) and the metadata of a file.", stdout);
    return 0;
  }
  if (a.n_positional != 1) {
    fprintf(stderr, "dsc: error: dsc info takes exactly one file (see dsc info --help)\n");
    return 2;
  }
  return cli_report(dsc_st_print_info(a.positional[0], stdout));
}
