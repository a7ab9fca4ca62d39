/* run_folder.c: run folders and progress reports of the training commands (run_folder.h). */
#include "cli/run_folder.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

dsc_status *cli_make_dirs(const char *path, const char *key) {
  char buf[PATH_MAX];
  if (!path[0]) return dsc_errorf("%s is empty: give a folder", key);
  if (strlen(path) >= sizeof buf) return dsc_errorf("%s: path too long", key);
  snprintf(buf, sizeof buf, "%s", path);
  for (char *p = buf + 1;; p++) {
    if (*p == '/' || *p == 0) {
      char c = *p;
      *p = 0;
      if (mkdir(buf, 0777) != 0 && errno != EEXIST)
        return dsc_errorf("%s=%s: cannot create %s: %s", key, path, buf, strerror(errno));
      *p = c;
      if (!c) break;
    }
  }
  struct stat sb;
  if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode)) return dsc_errorf("%s=%s is not a directory", key, path);
  return NULL;
}

int cli_file_exists(const char *path) {
  struct stat sb;
  return stat(path, &sb) == 0;
}

dsc_status *cli_metrics_truncate(const char *path, int64_t step) {
  FILE *f = fopen(path, "r");
  if (!f) return NULL;
  char tmp[PATH_MAX + 16];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *o = fopen(tmp, "w");
  if (!o) {
    fclose(f);
    return dsc_errorf("cannot write %s: %s", tmp, strerror(errno));
  }
  char *line = NULL;
  size_t cap = 0;
  while (getline(&line, &cap, f) > 0) {
    json_t *j = json_loads(line, 0, NULL);
    json_t *s = j ? json_object_get(j, "step") : NULL;
    if (s && json_is_integer(s) && json_integer_value(s) < step) fputs(line, o);
    json_decref(j);
  }
  free(line);
  fclose(f);
  if (fclose(o) != 0 || rename(tmp, path) != 0) return dsc_errorf("cannot rewrite %s: %s", path, strerror(errno));
  return NULL;
}

void cli_format_duration(double s, char *buf, size_t cap) {
  if (!(s >= 0) || s > 1e8) {
    snprintf(buf, cap, "?");
    return;
  }
  long t = (long)(s + 0.5);
  if (t >= 3600) snprintf(buf, cap, "%ldh%02ldm", t / 3600, (t / 60) % 60);
  else snprintf(buf, cap, "%ldm%02lds", t / 60, t % 60);
}

double cli_eta(double elapsed, int64_t done_here, int64_t done, int64_t total) {
  if (done_here <= 0) return -1;
  return elapsed / (double)done_here * (double)(total - done);
}

void cli_progress_bar(FILE *out, int64_t done, int64_t total, double img_per_s, double eta_s, double loss) {
  const int width = 24;
  int filled = total > 0 ? (int)((double)done / (double)total * width) : width;
  char bar[32], eta[32];
  for (int i = 0; i < width; i++) bar[i] = i < filled ? '#' : '.';
  bar[width] = 0;
  cli_format_duration(eta_s, eta, sizeof eta);
  fprintf(out, "\r[%s] step %lld/%lld  %.1f img/s  ETA %s  loss %.4f  ", bar, (long long)done, (long long)total,
          img_per_s, eta, loss);
}

void cli_on_stop_signals(void (*handler)(int)) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = handler;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
}
