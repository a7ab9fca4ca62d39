/* args.c: option parsing for the dsc subcommands (src/cli/args.h). */
#include "cli/args.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static cli_option *find(const cli_args *a, const char *name, size_t len) {
  for (int i = 0; i < a->n_opts; i++)
    if (strlen(a->opts[i].name) == len && strncmp(a->opts[i].name, name, len) == 0)
      return &a->opts[i];
  return NULL;
}

dsc_status *cli_parse(cli_args *a, int argc, char **argv) {
  for (int i = 0; i < a->n_opts; i++) a->opts[i].value = a->opts[i].def;
  for (int i = 0; i < argc; i++) {
    const char *arg = argv[i];
    if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
      a->help = 1;
      continue;
    }
    if (strncmp(arg, "--", 2) != 0) {
      if (a->n_positional == (int)(sizeof a->positional / sizeof a->positional[0]))
        return dsc_errorf("dsc %s: too many arguments (at \"%s\")", a->command, arg);
      a->positional[a->n_positional++] = arg;
      continue;
    }
    const char *name = arg + 2, *eq = strchr(name, '=');
    size_t len = eq ? (size_t)(eq - name) : strlen(name);
    cli_option *o = find(a, name, len);
    if (!o)
      return dsc_errorf("dsc %s: unknown option --%.*s (see dsc %s --help)", a->command, (int)len,
                        name, a->command);
    if (!o->takes_value) {
      if (eq) return dsc_errorf("dsc %s: option --%s takes no value", a->command, o->name);
      o->value = "1";
    } else if (eq) {
      o->value = eq + 1;
    } else {
      if (i + 1 >= argc) return dsc_errorf("dsc %s: option --%s needs a value", a->command, o->name);
      o->value = argv[++i];
    }
  }
  return NULL;
}

const char *cli_get(const cli_args *a, const char *name) {
  cli_option *o = find(a, name, strlen(name));
  return o ? o->value : NULL;
}

dsc_status *cli_get_int(const cli_args *a, const char *name, long lo, long hi, long *out) {
  const char *v = cli_get(a, name);
  if (!v) return dsc_errorf("dsc %s: option --%s is required", a->command, name);
  char *end;
  errno = 0;
  long x = strtol(v, &end, 10);
  if (errno || end == v || *end || x < lo || x > hi)
    return dsc_errorf("dsc %s: --%s=%s: expected an integer in [%ld, %ld]", a->command, name, v,
                      lo, hi);
  *out = x;
  return NULL;
}

dsc_status *cli_get_double(const cli_args *a, const char *name, double *out) {
  const char *v = cli_get(a, name);
  if (!v) return dsc_errorf("dsc %s: option --%s is required", a->command, name);
  char *end;
  errno = 0;
  double x = strtod(v, &end);
  if (errno || end == v || *end) return dsc_errorf("dsc %s: --%s=%s: expected a number", a->command, name, v);
  *out = x;
  return NULL;
}

void cli_print_help(const cli_args *a, const char *usage, const char *about, FILE *out) {
  fprintf(out, "usage: %s\n\n%s\n\noptions:\n", usage, about);
  for (int i = 0; i < a->n_opts; i++) {
    const cli_option *o = &a->opts[i];
    char left[64];
    snprintf(left, sizeof left, "--%s%s", o->name, o->takes_value ? " V" : "");
    fprintf(out, "  %-22s %s", left, o->help);
    if (o->def) fprintf(out, " (default %s)", o->def);
    fprintf(out, "\n");
  }
  fprintf(out, "  %-22s %s\n", "--help", "this text");
}
