/* commands.h: the dsc subcommands. Each takes the arguments after its name and returns
 * the process exit status (0 only on success), printing errors itself. */
#ifndef DSC_CLI_COMMANDS_H
#define DSC_CLI_COMMANDS_H

int cmd_info(int argc, char **argv);
int cmd_selfcheck(int argc, char **argv);
int cmd_embed(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_data(int argc, char **argv);
int cmd_pretrain(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_finetune(int argc, char **argv);

/* Prints "dsc: <message>" for an error, frees it, and returns 1; returns 0 for NULL. */
#include "dsc/status.h"
int cli_report(dsc_status *st);

#define DSC_VERSION "0.1.0"

#endif
