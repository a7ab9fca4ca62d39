/* test_export_formats.c: the .pth writer (include/dsc/pth.h) and the detectron2 writer and
 * name mapping (include/dsc/detectron2.h), checked by PyTorch and numpy themselves.
 *
 * Each round trip builds an in-memory safetensors file (every dtype the format supports, a
 * 0-dim I64 tensor, a zero-size tensor, a 5-dim tensor, metadata), saves the same content as
 * EXPECTED.safetensors, writes the export into a mkdtemp folder and runs
 * `/usr/bin/python3 tools/reference/check_export_formats.py pth|d2 FILE EXPECTED ...`, which
 * loads the file with torch.load (weights_only and full) or pickle.load and compares every
 * tensor bitwise (see the script). The name mapping is compared with the conversion of MoCo's
 * script, run by the same checker over every key of torchvision's resnet18 and resnet50.
 * The pickle emitter's encodings are compared with bytes CPython's pickle.dumps gives for the
 * same values (hardcoded below).
 * python3 with torch and torchvision is required: without it these tests fail, they are not
 * skipped. Tests run from the repository root (as `make test` does).
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dsc/detectron2.h"
#include "dsc/pth.h"
#include "dsc/safetensors.h"
#include "io/pickle_write.h"
#include "test.h"

#define CHECKER "/usr/bin/python3 tools/reference/check_export_formats.py"

/* Runs a shell command; a failed check (with the exit status) unless it exits 0. */
static void run_checker(const char *cmd) {
  if (access("/usr/bin/python3", X_OK) != 0) {
    CHECK(0, "/usr/bin/python3 is missing: these tests need python3 with torch, torchvision "
             "and numpy (Debian python3-torch, python3-torchvision)");
    return;
  }
  fflush(stdout);
  int rc = system(cmd);
  int code = rc == -1 ? -1 : WIFEXITED(rc) ? WEXITSTATUS(rc) : 128 + WTERMSIG(rc);
  CHECK(code == 0, "`%s` exited %d (a Python import error means python3-torch / "
                   "python3-torchvision is missing; they are required)", cmd, code);
}

/* Deterministic bytes (fixed-seed LCG). */
static void fill_bytes(unsigned char *p, size_t n, uint64_t seed) {
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 7;
  for (size_t i = 0; i < n; i++) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    p[i] = (unsigned char)(s >> 56);
  }
}

/* The tensors of the round trips. Storage is one static pool carved by add_tensor. */
typedef struct fixture {
  dsc_st_writer *w;
  unsigned char pool[8192];
  size_t used;
  int count;
} fixture;

static void add_tensor(fixture *fx, const char *name, dsc_dtype t, int ndim,
                       const int64_t *shape) {
  size_t numel = 1;
  for (int d = 0; d < ndim; d++) numel *= (size_t)shape[d];
  size_t n = numel * dsc_dtype_size(t);
  CHECK(fx->used + n <= sizeof fx->pool, "fixture pool too small");
  unsigned char *p = fx->pool + fx->used;
  fill_bytes(p, n, (uint64_t)++fx->count);
  if (t == DSC_BOOL)
    for (size_t i = 0; i < n; i++) p[i] &= 1;
  fx->used += n;
  CHECK_OK(dsc_st_writer_add(fx->w, name, t, ndim, shape, n ? p : NULL));
}

/* Every dtype of `dtypes` (count n) with a few shapes, plus metadata. */
static fixture *fixture_make(const dsc_dtype *dtypes, int n, int torchvision_names) {
  fixture *fx = calloc(1, sizeof *fx);
  CHECK_OK(dsc_st_writer_new(&fx->w));
  static const int64_t shapes[][5] = {{3, 4}, {7}, {2, 1, 3}, {5, 2}};
  static const int ndims[] = {2, 1, 3, 2};
  for (int i = 0; i < n; i++) {
    char name[64];
    if (torchvision_names) snprintf(name, sizeof name, "res2.%d.conv1.%s", i,
                                    dsc_dtype_name(dtypes[i]));
    else snprintf(name, sizeof name, "t_%s", dsc_dtype_name(dtypes[i]));
    add_tensor(fx, name, dtypes[i], ndims[i % 4], shapes[i % 4]);
  }
  const int64_t empty[2] = {0, 3}, empty2[3] = {4, 0, 2}, five[5] = {2, 1, 3, 1, 2};
  const int64_t big[2] = {300, 5}; /* dims >= 256: BININT2 */
  add_tensor(fx, "stem.conv1.norm.num_batches", DSC_I64, 0, NULL);
  add_tensor(fx, "empty", DSC_F32, 2, empty);
  add_tensor(fx, "empty_middle", DSC_F16, 3, empty2);
  add_tensor(fx, "five_dims", DSC_F32, 5, five);
  add_tensor(fx, "big_dim", DSC_U8, 2, big);
  add_tensor(fx, "caf\xc3\xa9 \xe2\x82\xac", DSC_F64, 1, five);
  CHECK_OK(dsc_st_writer_meta(fx->w, "step", "1200"));
  CHECK_OK(dsc_st_writer_meta(fx->w, "method", "dsc"));
  CHECK_OK(dsc_st_writer_meta(fx->w, "unicode", "na\xc3\xafve \xe2\x9c\x93"));
  char longv[700];
  memset(longv, 'x', sizeof longv - 1);
  longv[sizeof longv - 1] = '\0';
  CHECK_OK(dsc_st_writer_meta(fx->w, "long", longv));
  CHECK_OK(dsc_st_writer_meta(fx->w, "empty", ""));
  return fx;
}

static void fixture_free(fixture *fx) {
  dsc_st_writer_free(fx->w);
  free(fx);
}

static void test_pth_roundtrip(void) {
  static const dsc_dtype dt[] = {DSC_F32, DSC_F64, DSC_F16, DSC_BF16, DSC_I64,
                                 DSC_I32, DSC_I16, DSC_I8,  DSC_U8,   DSC_BOOL};
  fixture *fx = fixture_make(dt, (int)(sizeof dt / sizeof dt[0]), 0);
  test_tmpdir d = test_tmpdir_make("export");
  char pth[128], pth2[128], expected[128], cmd[512];
  snprintf(pth, sizeof pth, "%s/model.pth", d.path);
  snprintf(pth2, sizeof pth2, "%s/again.pth", d.path);
  snprintf(expected, sizeof expected, "%s/expected.safetensors", d.path);
  CHECK_OK(dsc_st_writer_save(fx->w, expected));
  dsc_safetensors *src = NULL;
  CHECK_OK(dsc_st_writer_open(fx->w, "fixture", &src));
  if (src) {
    /* an existing file is replaced */
    FILE *fp = fopen(pth, "wb");
    if (fp) {
      fputs("old", fp);
      fclose(fp);
    }
    CHECK_OK(dsc_pth_write(pth, src));
    CHECK_OK(dsc_pth_write(pth2, src));
    size_t n1 = 0, n2 = 0;
    unsigned char *b1 = test_file_read(pth, &n1), *b2 = test_file_read(pth2, &n2);
    CHECK(b1 && b2 && n1 == n2 && n1 > 0 && memcmp(b1, b2, n1) == 0,
          "two writes of the same tensors differ (%zu vs %zu bytes)", n1, n2);
    free(b1);
    free(b2);
    snprintf(cmd, sizeof cmd, CHECKER " pth %s %s", pth, expected);
    run_checker(cmd);
    dsc_st_close(src);
  }
  CHECK(test_dir_count(d.path, NULL) == 3, "%d entries in %s (a temporary file left?)", test_dir_count(d.path, NULL),
        d.path);
  test_tmpdir_remove(&d);
  fixture_free(fx);
}

static void test_d2_roundtrip(void) {
  static const dsc_dtype dt[] = {DSC_F32, DSC_F64, DSC_F16, DSC_I64, DSC_I32, DSC_I16,
                                 DSC_I8,  DSC_U8,  DSC_BOOL, DSC_U16, DSC_U32, DSC_U64};
  fixture *fx = fixture_make(dt, (int)(sizeof dt / sizeof dt[0]), 1);
  test_tmpdir d = test_tmpdir_make("export");
  char pkl[128], expected[128], cmd[512];
  snprintf(pkl, sizeof pkl, "%s/model.pkl", d.path);
  snprintf(expected, sizeof expected, "%s/expected.safetensors", d.path);
  CHECK_OK(dsc_st_writer_save(fx->w, expected));
  dsc_safetensors *src = NULL;
  CHECK_OK(dsc_st_writer_open(fx->w, "fixture", &src));
  if (src) {
    CHECK_OK(dsc_detectron2_write(pkl, src, "dsc (Dense Semantic Contrast)"));
    snprintf(cmd, sizeof cmd, CHECKER " d2 %s %s 'dsc (Dense Semantic Contrast)'", pkl, expected);
    run_checker(cmd);
    dsc_st_close(src);
  }
  CHECK(test_dir_count(d.path, NULL) == 2, "%d entries in %s", test_dir_count(d.path, NULL), d.path);
  test_tmpdir_remove(&d);
  fixture_free(fx);
}

/* More than 1000 tensors and metadata entries: several SETITEMS batches. */
static void test_many_tensors(void) {
  dsc_st_writer *w = NULL;
  CHECK_OK(dsc_st_writer_new(&w));
  static int32_t vals[1234];
  for (int i = 0; i < 1234; i++) {
    char name[32];
    vals[i] = i * 7919 - 4000000;
    snprintf(name, sizeof name, "t%04d", i);
    CHECK_OK(dsc_st_writer_add(w, name, DSC_I32, 0, NULL, &vals[i]));
    if (i < 1100) {
      char v[32];
      snprintf(v, sizeof v, "%d", i);
      CHECK_OK(dsc_st_writer_meta(w, name, v));
    }
  }
  test_tmpdir d = test_tmpdir_make("export");
  char pth[128], pkl[128], expected[128], cmd[512];
  snprintf(pth, sizeof pth, "%s/many.pth", d.path);
  snprintf(pkl, sizeof pkl, "%s/many.pkl", d.path);
  snprintf(expected, sizeof expected, "%s/expected.safetensors", d.path);
  CHECK_OK(dsc_st_writer_save(w, expected));
  dsc_safetensors *src = NULL;
  CHECK_OK(dsc_st_writer_open(w, "many", &src));
  if (src) {
    CHECK_OK(dsc_pth_write(pth, src));
    CHECK_OK(dsc_detectron2_write(pkl, src, "a"));
    snprintf(cmd, sizeof cmd, CHECKER " pth %s %s > /dev/null", pth, expected);
    run_checker(cmd);
    snprintf(cmd, sizeof cmd, CHECKER " d2 %s %s a > /dev/null", pkl, expected);
    run_checker(cmd);
    dsc_st_close(src);
  }
  test_tmpdir_remove(&d);
  dsc_st_writer_free(w);
}

/* Tensors with no counterpart in the target format: errors naming file and tensor, no file. */
static void test_dtype_errors(void) {
  dsc_st_writer *w = NULL;
  CHECK_OK(dsc_st_writer_new(&w));
  uint16_t u = 1, bf = 0x3f80;
  CHECK_OK(dsc_st_writer_add(w, "ok", DSC_BF16, 0, NULL, &bf));
  CHECK_OK(dsc_st_writer_add(w, "counter", DSC_U16, 0, NULL, &u));
  dsc_safetensors *src = NULL;
  CHECK_OK(dsc_st_writer_open(w, "bad", &src));
  test_tmpdir d = test_tmpdir_make("export");
  char pth[128], pkl[128];
  snprintf(pth, sizeof pth, "%s/x.pth", d.path);
  snprintf(pkl, sizeof pkl, "%s/x.pkl", d.path);
  if (src) {
    CHECK_ERR(dsc_pth_write(pth, src), "\"counter\" has dtype U16");
    CHECK_ERR(dsc_pth_write(pth, src), pth);
    CHECK_ERR(dsc_detectron2_write(pkl, src, "a"), "\"ok\" has dtype BF16");
    CHECK_ERR(dsc_detectron2_write(pkl, src, "a"), pkl);
    dsc_st_close(src);
  }
  CHECK(test_dir_count(d.path, NULL) == 0, "%d entries left in %s", test_dir_count(d.path, NULL), d.path);
  test_tmpdir_remove(&d);
  dsc_st_writer_free(w);
}

/* A path in a folder that does not exist: the error names it and nothing is created. */
static void test_unwritable(void) {
  dsc_st_writer *w = NULL;
  CHECK_OK(dsc_st_writer_new(&w));
  float v[4] = {1, 2, 3, 4};
  int64_t shape[1] = {4};
  CHECK_OK(dsc_st_writer_add(w, "conv1.weight", DSC_F32, 1, shape, v));
  dsc_safetensors *src = NULL;
  CHECK_OK(dsc_st_writer_open(w, "x", &src));
  test_tmpdir d = test_tmpdir_make("export");
  char pth[160], pkl[160];
  snprintf(pth, sizeof pth, "%s/missing/model.pth", d.path);
  snprintf(pkl, sizeof pkl, "%s/missing/model.pkl", d.path);
  if (src) {
    CHECK_ERR(dsc_pth_write(pth, src), pth);
    CHECK_ERR(dsc_detectron2_write(pkl, src, "a"), pkl);
    /* a folder in place of the file */
    CHECK_ERR(dsc_pth_write(d.path, src), d.path);
    dsc_st_close(src);
  }
  CHECK(test_dir_count(d.path, NULL) == 0, "%d entries left in %s", test_dir_count(d.path, NULL), d.path);
  test_tmpdir_remove(&d);
  dsc_st_writer_free(w);
}

static void expect_name(const char *key, const char *want) {
  char out[128];
  dsc_status *st = dsc_detectron2_name(key, out, sizeof out);
  CHECK(st == NULL, "%s: %s", key, st ? st->msg : "");
  if (st) dsc_status_free(st);
  else CHECK(strcmp(out, want) == 0, "%s -> %s, want %s", key, out, want);
}

static void test_names_cases(void) {
  expect_name("conv1.weight", "stem.conv1.weight");
  expect_name("bn1.running_mean", "stem.conv1.norm.running_mean");
  expect_name("layer1.0.downsample.0.weight", "res2.0.shortcut.weight");
  expect_name("layer1.0.downsample.1.bias", "res2.0.shortcut.norm.bias");
  expect_name("layer4.2.bn3.running_var", "res5.2.conv3.norm.running_var");
  expect_name("layer3.5.conv2.weight", "res4.5.conv2.weight");
  expect_name("layer3.22.bn1.weight", "res4.22.conv1.norm.weight");
  char out[128];
  CHECK_ERR(dsc_detectron2_name("fc.weight", out, sizeof out), "\"fc.weight\"");
  CHECK_ERR(dsc_detectron2_name("fc.bias", out, sizeof out), "fc.*");
  CHECK_ERR(dsc_detectron2_name("bn1.num_batches_tracked", out, sizeof out),
            "num_batches_tracked");
  CHECK_ERR(dsc_detectron2_name("layer2.0.downsample.1.num_batches_tracked", out, sizeof out),
            "\"layer2.0.downsample.1.num_batches_tracked\"");
  static const char *bad[] = {"foo", "", "conv1.bias", "bn1.foo", "layer5.0.conv1.weight",
                              "layer0.0.conv1.weight", "layer1.01.conv1.weight",
                              "layer1.x.conv1.weight", "layer1.0.conv4.weight",
                              "layer1.0.bn1.weight.x", "layer1.0.downsample.2.weight",
                              "layer1..conv1.weight", "layer1.0.conv1.bias",
                              "module.encoder_q.conv1.weight", "stem.conv1.weight"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    CHECK_ERR(dsc_detectron2_name(bad[i], out, sizeof out), "not a torchvision ResNet key");
  CHECK_ERR(dsc_detectron2_name("layer4.2.bn3.running_var", out, 10), "does not fit");
}

/* Every key of torchvision's resnet18 and resnet50, against MoCo's conversion in Python. */
static void test_names_torchvision(void) {
  test_tmpdir d = test_tmpdir_make("export");
  char tsv[128], cmd[256];
  snprintf(tsv, sizeof tsv, "%s/names.tsv", d.path);
  snprintf(cmd, sizeof cmd, CHECKER " names %s", tsv);
  run_checker(cmd);
  FILE *fp = fopen(tsv, "r");
  CHECK(fp != NULL, "%s: %s", tsv, strerror(errno));
  int keys = 0, rejected = 0;
  char line[512];
  while (fp && fgets(line, sizeof line, fp)) {
    line[strcspn(line, "\n")] = '\0';
    char *tab = strchr(line, '\t');
    if (!tab) continue;
    *tab = '\0';
    const char *want = tab + 1;
    keys++;
    if (strcmp(want, "!") == 0) {
      char out[128];
      dsc_status *st = dsc_detectron2_name(line, out, sizeof out);
      CHECK(st != NULL, "%s mapped to %s, want an error", line, out);
      dsc_status_free(st);
      rejected++;
    } else {
      expect_name(line, want);
    }
  }
  if (fp) fclose(fp);
  /* resnet18: 122 keys (fc weight and bias, 20 BN counters); resnet50: 320 (2 fc, 53) */
  CHECK(keys == 122 + 320, "%d keys", keys);
  CHECK(rejected == 2 + 20 + 2 + 53, "%d rejected", rejected);
  test_tmpdir_remove(&d);
}

/* Hex of a finished stream without PROTO (2 bytes) and STOP (1 byte). */
static void expect_stream(dsc_pkw *w, const char *want_hex, const char *what) {
  unsigned char *b = NULL;
  size_t n = 0;
  CHECK_OK(dsc_pkw_finish(w, &b, &n));
  char hex[1024] = "";
  for (size_t i = 2; b && i + 1 < n && 2 * i < sizeof hex - 2; i++)
    sprintf(hex + 2 * (i - 2), "%02x", b[i]);
  CHECK(strcmp(hex, want_hex) == 0, "%s: %s, want %s (as pickle.dumps)", what, hex, want_hex);
  free(b);
}

/* The emitter against CPython 3.11's pickle.dumps(value, protocol=2 or 4). */
static void test_pickle_encodings(void) {
  static const struct {
    int64_t v;
    const char *hex;
  } ints[] = {
      {0, "4b00"},
      {255, "4bff"},
      {256, "4d0001"},
      {65535, "4dffff"},
      {65536, "4a00000100"},
      {-1, "4affffffff"},
      {-128, "4a80ffffff"},
      {INT32_MAX, "4affffff7f"},
      {(int64_t)INT32_MAX + 1, "8a050000008000"},
      {INT32_MIN, "4a00000080"},
      {(int64_t)INT32_MIN - 1, "8a05ffffff7fff"},
      {(int64_t)1 << 39, "8a06000000008000"},
      {(int64_t)1 << 40, "8a06000000000001"},
      {INT64_MIN, "8a080000000000000080"},
      {INT64_MAX, "8a08ffffffffffffff7f"},
  };
  for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
    dsc_pkw w;
    dsc_pkw_init(&w, 2);
    dsc_pkw_int(&w, ints[i].v);
    char what[64];
    snprintf(what, sizeof what, "int %lld", (long long)ints[i].v);
    expect_stream(&w, ints[i].hex, what);
  }
  int64_t four[4] = {1, 2, 3, 4};
  dsc_pkw w;
  dsc_pkw_init(&w, 2);
  dsc_pkw_int_tuple(&w, four, 4);
  expect_stream(&w, "284b014b024b034b0474", "(1, 2, 3, 4)");
  /* string and bytes headers by length, protocol 4 */
  char big[300];
  memset(big, 'a', sizeof big);
  dsc_pkw_init(&w, 4);
  dsc_pkw_str(&w, big, 3);
  dsc_pkw_bytes(&w, big, 2);
  expect_stream(&w, "8c03616161" "43026161", "short str and bytes");
  dsc_pkw_init(&w, 4);
  dsc_pkw_str(&w, big, 0);
  dsc_pkw_bytes(&w, NULL, 0);
  expect_stream(&w, "8c00" "4300", "empty str and bytes");
  unsigned char *b = NULL;
  size_t n = 0;
  dsc_pkw_init(&w, 4);
  dsc_pkw_str(&w, big, 300);
  dsc_pkw_bytes(&w, big, 300);
  CHECK_OK(dsc_pkw_finish(&w, &b, &n));
  CHECK(n == 2 + 5 + 300 + 5 + 300 + 1 && b && b[2] == 'X' && b[3] == 0x2c && b[4] == 1 &&
            b[307] == 'B' && b[308] == 0x2c && b[309] == 1,
        "300-byte str / bytes: BINUNICODE / BINBYTES with 4-byte lengths");
  free(b);
  /* memo: second use of a global or memoized string is a BINGET */
  dsc_pkw_init(&w, 2);
  dsc_pkw_global(&w, "collections", "OrderedDict");
  dsc_pkw_global(&w, "collections", "OrderedDict");
  dsc_pkw_memo_str(&w, "cpu");
  dsc_pkw_memo_str(&w, "cpu");
  expect_stream(&w, "63636f6c6c656374696f6e730a4f726465726564446963740a7100" "6800"
                    "5803000000637075" "7101" "6801", "memo protocol 2");
  /* bytes do not exist in protocol 2: a sticky error */
  dsc_pkw_init(&w, 2);
  dsc_pkw_bytes(&w, "x", 1);
  dsc_pkw_int(&w, 1);
  CHECK_ERR(dsc_pkw_finish(&w, &b, &n), "protocol 3");
}

static const dsc_test tests[] = {
    {"pickle_encodings", test_pickle_encodings},
    {"pth_roundtrip", test_pth_roundtrip},
    {"d2_roundtrip", test_d2_roundtrip},
    {"many_tensors", test_many_tensors},
    {"dtype_errors", test_dtype_errors},
    {"unwritable", test_unwritable},
    {"names_cases", test_names_cases},
    {"names_torchvision", test_names_torchvision},
};

TEST_MAIN(tests)
