/* args.h: command-line options of one dsc subcommand.
 *
 * Each command declares its options in a table (name, whether it takes a value, default,
 * help). `--name value`, `--name=value` and bare flags are accepted; anything else starting
 * with "--" is an error naming the option; positional arguments are collected in order.
 */
#ifndef DSC_CLI_ARGS_H
#define DSC_CLI_ARGS_H

#include <stdio.h>

#include "dsc/status.h"

typedef struct cli_option {
  const char *name;   /* without the leading "--" */
  int takes_value;    /* 0: a flag */
  const char *def;    /* default value (flags: NULL) */
  const char *help;
  /* filled by cli_parse */
  const char *value;  /* the given value, or def; flags: "1" when given */
} cli_option;

typedef struct cli_args {
  const char *command; /* e.g. "embed" */
  cli_option *opts;
  int n_opts;
  const char *positional[8];
  int n_positional;
  int help;            /* --help or -h was given */
} cli_args;

/* Parses argv[0..argc) (argv[0] is the first argument after the command name). */
dsc_status *cli_parse(cli_args *a, int argc, char **argv);
const char *cli_get(const cli_args *a, const char *name);
/* Integer/float options with range checks; errors name the option and the value. */
dsc_status *cli_get_int(const cli_args *a, const char *name, long lo, long hi, long *out);
dsc_status *cli_get_double(const cli_args *a, const char *name, double *out);
void cli_print_help(const cli_args *a, const char *usage, const char *about, FILE *out);

#endif
