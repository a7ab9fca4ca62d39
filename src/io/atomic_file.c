/* atomic_file.c: temp file + fsync + rename (include/dsc/atomic_file.h). */
#include "dsc/atomic_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Best effort: makes the rename durable by syncing the directory holding `path`. Some
 * filesystems refuse fsync on directories; the data itself is already synced. */
static void dir_sync_for(const char *path) {
  char *dir = strdup(path);
  if (!dir) return;
  char *slash = strrchr(dir, '/');
  if (slash == dir) slash[1] = '\0';
  else if (slash) *slash = '\0';
  else strcpy(dir, ".");
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    (void)fsync(fd);
    close(fd);
  }
  free(dir);
}

dsc_status *dsc_file_write_atomic(const char *path, int n, const void *const *parts,
                                  const size_t *lens) {
  size_t tmp_cap = strlen(path) + 32;
  char *tmp = malloc(tmp_cap);
  if (!tmp) return dsc_errorf("%s: out of memory", path);
  snprintf(tmp, tmp_cap, "%s.tmp.%ld", path, (long)getpid());

  dsc_status *st = NULL;
  FILE *fp = fopen(tmp, "wb");
  if (!fp) {
    st = dsc_errorf("%s: cannot create temporary file %s: %s", path, tmp, strerror(errno));
    free(tmp);
    return st;
  }
  bool ok = true;
  for (int i = 0; ok && i < n; i++) ok = lens[i] == 0 || fwrite(parts[i], 1, lens[i], fp) == lens[i];
  if (!ok) st = dsc_errorf("%s: writing %s failed: %s", path, tmp, strerror(errno));
  if (!st && fflush(fp) != 0) st = dsc_errorf("%s: flushing %s failed: %s", path, tmp, strerror(errno));
  if (!st && fsync(fileno(fp)) != 0)
    st = dsc_errorf("%s: fsync of %s failed: %s", path, tmp, strerror(errno));
  if (fclose(fp) != 0 && !st) st = dsc_errorf("%s: closing %s failed: %s", path, tmp, strerror(errno));
  if (!st && rename(tmp, path) != 0)
    st = dsc_errorf("%s: renaming %s over it failed: %s", path, tmp, strerror(errno));
  if (st) remove(tmp);
  else dir_sync_for(path);
  free(tmp);
  return st;
}
