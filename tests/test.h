/* test.h: the tiny test framework every tests/test_*.c uses.
 *
 * A test file defines static void functions, lists them in a `dsc_test` array and calls
 * test_main(). Each test prints "ok NAME" or "FAIL NAME" (with every failed check's
 * file:line and reason before it); the binary ends with "#summary P passed, F failed" for
 * scripts/run_tests.sh and exits non-zero if any test failed. `./test_x NAME` runs one test.
 */
#ifndef DSC_TEST_H
#define DSC_TEST_H

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dsc/safetensors.h"
#include "dsc/status.h"

typedef struct dsc_test {
  const char *name;
  void (*fn)(void);
} dsc_test;

static int test_current_failed;

#define CHECK(cond, ...)                                            \
  do {                                                              \
    if (!(cond)) {                                                  \
      printf("  %s:%d: check failed: %s: ", __FILE__, __LINE__, #cond); \
      printf(__VA_ARGS__);                                          \
      printf("\n");                                                 \
      test_current_failed = 1;                                      \
    }                                                               \
  } while (0)

/* Asserts that a dsc_status-returning call succeeded; prints the error otherwise. */
#define CHECK_OK(expr)                                                         \
  do {                                                                         \
    dsc_status *check_ok_st_ = (expr);                                         \
    if (check_ok_st_) {                                                        \
      printf("  %s:%d: %s failed: %s\n", __FILE__, __LINE__, #expr, check_ok_st_->msg); \
      dsc_status_free(check_ok_st_);                                           \
      test_current_failed = 1;                                                 \
    }                                                                          \
  } while (0)

/* Asserts that a call failed and that its message contains `needle`. */
#define CHECK_ERR(expr, needle)                                                \
  do {                                                                         \
    dsc_status *check_err_st_ = (expr);                                        \
    if (!check_err_st_) {                                                      \
      printf("  %s:%d: %s succeeded, expected an error\n", __FILE__, __LINE__, #expr); \
      test_current_failed = 1;                                                 \
    } else {                                                                   \
      if (!strstr(check_err_st_->msg, (needle))) {                             \
        printf("  %s:%d: error \"%s\" lacks \"%s\"\n", __FILE__, __LINE__,     \
               check_err_st_->msg, (needle));                                  \
        test_current_failed = 1;                                               \
      }                                                                        \
      dsc_status_free(check_err_st_);                                          \
    }                                                                          \
  } while (0)

/* Relative L2 error ||a-b|| / max(||b||, tiny), in double. */
static inline double test_rel_l2(const float *a, const float *b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; i++) {
    double d = (double)a[i] - (double)b[i];
    num += d * d;
    den += (double)b[i] * (double)b[i];
  }
  if (den < 1e-300) return sqrt(num);
  return sqrt(num / den);
}

/* Checks rel_l2(got, want) <= tol and prints the error either way on failure. Returns the
 * error so callers can report it. */
#define CHECK_CLOSE(what, got, want, n, tol)                                   \
  do {                                                                         \
    double check_close_e_ = test_rel_l2((got), (want), (n));                   \
    CHECK(check_close_e_ <= (tol), "%s: relative L2 error %.3g > %.3g", (what), \
          check_close_e_, (double)(tol));                                      \
  } while (0)

/* n floats uniform in [lo, hi) from a fixed-seed 64-bit LCG (caller frees): the same inputs on
 * every run and machine, for tests that compare backends op by op (test_cpu_ops, gpu/test_cuda). */
static inline float *test_rand_buf(size_t n, uint64_t seed, float lo, float hi) {
  float *p = (float *)malloc((n ? n : 1) * sizeof *p);
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i < n; i++) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    p[i] = lo + (hi - lo) * (float)((double)(s >> 33) / (double)(1ull << 31));
  }
  return p;
}

/* Writes the template "/tmp/dsc_test_<what>_" followed by the six placeholder characters that
 * mkdtemp(3) and mkstemp(3) replace, into buf (cap bytes). One place for every test's
 * temporary files and folders. */
static inline void test_temp_template(char *buf, size_t cap, const char *what) {
  int n = snprintf(buf, cap > 7 ? cap - 7 : 0, "/tmp/dsc_test_%s_", what);
  if (n < 0 || (size_t)n + 7 > cap) n = 0;
  memset(buf + n, 'X', 6);
  buf[n + 6] = 0;
}

/* A fresh temporary folder (mkdtemp on test_temp_template(what)) for tests that write files. */
typedef struct test_tmpdir {
  char path[64];
} test_tmpdir;

static inline test_tmpdir test_tmpdir_make(const char *what) {
  test_tmpdir d;
  test_temp_template(d.path, sizeof d.path, what);
  CHECK(mkdtemp(d.path) != NULL, "mkdtemp: %s", strerror(errno));
  return d;
}

/* Entries of dir other than . and .. (-1 when it cannot be read); when tmps is not NULL, the
 * names containing ".tmp." (left-over temporary files of an atomic write) are counted there. */
static inline int test_dir_count(const char *dir, int *tmps) {
  DIR *dp = opendir(dir);
  int n = 0;
  if (tmps) *tmps = 0;
  if (!dp) return -1;
  struct dirent *e;
  while ((e = readdir(dp))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    n++;
    if (tmps && strstr(e->d_name, ".tmp.")) (*tmps)++;
  }
  closedir(dp);
  return n;
}

/* Removes the folder's plain files and empty subfolders, then the folder. */
static inline void test_tmpdir_remove(const test_tmpdir *d) {
  DIR *dp = opendir(d->path);
  if (!dp) return;
  struct dirent *e;
  while ((e = readdir(dp))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    char p[512];
    snprintf(p, sizeof p, "%s/%s", d->path, e->d_name);
    if (remove(p) != 0) rmdir(p);
  }
  closedir(dp);
  rmdir(d->path);
}

/* The whole file (malloc'd, *size bytes), or NULL when it cannot be opened. */
static inline unsigned char *test_file_read(const char *path, size_t *size) {
  FILE *fp = fopen(path, "rb");
  if (!fp) return NULL;
  fseek(fp, 0, SEEK_END);
  long n = ftell(fp);
  fseek(fp, 0, SEEK_SET);
  unsigned char *b = malloc(n > 0 ? (size_t)n : 1);
  *size = fread(b, 1, n > 0 ? (size_t)n : 0, fp);
  fclose(fp);
  return b;
}

/* Tensor `name` of a fixture as numel floats (malloc'd); NULL, with the test failed and the
 * reason printed, when it is absent or of another size. */
static inline float *test_fixture_f32(const dsc_safetensors *f, const char *name, size_t numel) {
  float *buf = malloc(numel * sizeof(float));
  dsc_status *st = dsc_st_read_f32(f, name, buf, numel);
  if (st) {
    printf("  %s\n", st->msg);
    dsc_status_free(st);
    test_current_failed = 1;
    free(buf);
    return NULL;
  }
  return buf;
}

static inline int test_main(const dsc_test *tests, int count, int argc, char **argv) {
  int passed = 0, failed = 0;
  for (int i = 0; i < count; i++) {
    if (argc > 1 && strcmp(argv[1], tests[i].name) != 0) continue;
    test_current_failed = 0;
    fflush(stdout);
    tests[i].fn();
    if (test_current_failed) {
      printf("FAIL %s\n", tests[i].name);
      failed++;
    } else {
      printf("ok %s\n", tests[i].name);
      passed++;
    }
    fflush(stdout);
  }
  printf("#summary %d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}

#define TEST_MAIN(tests) \
  int main(int argc, char **argv) { \
    return test_main(tests, (int)(sizeof(tests) / sizeof(tests[0])), argc, argv); \
  }

#endif
