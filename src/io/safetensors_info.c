/* safetensors_info.c: `dsc info FILE` for safetensors files (dsc_st_print_info).
 *
 * Prints one row per tensor in file (offset) order: name, dtype, shape, bytes; then a
 * total line; then the metadata as "key = value" lines. Control characters in names, keys
 * and values are shown as backslash escapes so every row stays one line; metadata values
 * longer than INFO_VALUE_MAX bytes are cut at a UTF-8 character boundary and end in "...".
 */
#include "dsc/safetensors.h"
#include "dsc/weights.h"

#include <stdlib.h>
#include <string.h>

#define INFO_VALUE_MAX 80  /* bytes of a metadata value shown */
#define INFO_NAME_WIDTH 48 /* name column width; longer names push the row right */

/* s with control characters escaped, cut to at most max_bytes (plus "...") at a UTF-8
 * boundary; malloc'd, NULL when out of memory. */
static char *info_escape(const char *s, size_t max_bytes) {
  size_t n = strlen(s);
  char *out = malloc(4 * n + 4);
  if (!out) return NULL;
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '\n') o += (size_t)sprintf(out + o, "\\n");
    else if (c == '\t') o += (size_t)sprintf(out + o, "\\t");
    else if (c == '\r') o += (size_t)sprintf(out + o, "\\r");
    else if (c < 0x20 || c == 0x7f) o += (size_t)sprintf(out + o, "\\x%02x", c);
    else out[o++] = (char)c;
  }
  out[o] = '\0';
  if (o > max_bytes) {
    size_t cut = max_bytes;
    while (cut > 0 && ((unsigned char)out[cut] & 0xc0) == 0x80) cut--; /* continuation byte */
    strcpy(out + cut, "...");
  }
  return out;
}

/* "[2, 3, 4]" ("[]" for a scalar). */
static void info_shape(char *buf, size_t cap, const dsc_st_tensor *t) {
  size_t o = (size_t)snprintf(buf, cap, "[");
  for (int d = 0; d < t->ndim && o < cap; d++)
    o += (size_t)snprintf(buf + o, cap - o, d ? ", %lld" : "%lld", (long long)t->shape[d]);
  if (o < cap) snprintf(buf + o, cap - o, "]");
}

/* "1.5 MiB" style, for the total line. */
static void info_human_bytes(char *buf, size_t cap, double bytes) {
  const char *unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) {
    bytes /= 1024;
    u++;
  }
  snprintf(buf, cap, u ? "%.1f %s" : "%.0f %s", bytes, unit[u]);
}

dsc_status *dsc_st_print_info(const char *path, FILE *out) {
  dsc_safetensors *f;
  DSC_TRY(dsc_weights_open(path, &f));
  int n = dsc_st_count(f);
  char **names = calloc(n ? (size_t)n : 1, sizeof *names);
  if (!names) {
    dsc_st_close(f);
    return dsc_errorf("%s: out of memory", path);
  }
  int name_w = 4, shape_w = 5;
  dsc_status *st = NULL;
  for (int i = 0; i < n; i++) {
    const dsc_st_tensor *t = dsc_st_get(f, i);
    names[i] = info_escape(t->name, (size_t)-1);
    if (!names[i]) {
      st = dsc_errorf("%s: out of memory", path);
      goto done;
    }
    int len = (int)strlen(names[i]);
    if (len > name_w) name_w = len < INFO_NAME_WIDTH ? len : INFO_NAME_WIDTH;
    char shape[DSC_MAX_DIMS * 24 + 4];
    info_shape(shape, sizeof shape, t);
    if ((int)strlen(shape) > shape_w) shape_w = (int)strlen(shape);
  }

  fprintf(out, "%s: %d tensors\n", path, n);
  fprintf(out, "%-*s  %-5s  %-*s  %14s\n", name_w, "name", "dtype", shape_w, "shape", "bytes");
  unsigned long long total_numel = 0, total_bytes = 0;
  for (int i = 0; i < n; i++) {
    const dsc_st_tensor *t = dsc_st_get(f, i);
    char shape[DSC_MAX_DIMS * 24 + 4];
    info_shape(shape, sizeof shape, t);
    fprintf(out, "%-*s  %-5s  %-*s  %14zu\n", name_w, names[i], dsc_dtype_name(t->dtype),
            shape_w, shape, dsc_st_nbytes(t));
    total_numel += dsc_st_numel(t);
    total_bytes += dsc_st_nbytes(t);
  }
  char human[32];
  info_human_bytes(human, sizeof human, (double)total_bytes);
  fprintf(out, "total: %d tensors, %llu elements, %llu bytes (%s)\n", n, total_numel,
          total_bytes, human);

  int m = dsc_st_meta_count(f);
  fprintf(out, "metadata: %d %s\n", m, m == 1 ? "entry" : "entries");
  for (int i = 0; i < m; i++) {
    const char *key = dsc_st_meta_key(f, i);
    char *k = info_escape(key, (size_t)-1);
    char *v = info_escape(dsc_st_meta(f, key), INFO_VALUE_MAX);
    if (k && v) fprintf(out, "  %s = %s\n", k, v);
    free(k);
    free(v);
    if (!k || !v) {
      st = dsc_errorf("%s: out of memory", path);
      goto done;
    }
  }
  if (fflush(out) != 0 || ferror(out)) st = dsc_errorf("%s: writing the listing failed", path);
done:
  for (int i = 0; i < n; i++) free(names[i]);
  free(names);
  dsc_st_close(f);
  return st;
}
