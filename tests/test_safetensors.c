/* test_safetensors.c: the safetensors reader, writer and info listing.
 *
 * Rejection tests build bad files in memory (make_file: an 8-byte length, a raw JSON header,
 * zero-filled data) and check that the error names the label, says what is wrong and is one
 * line. Round-trip tests write into a mkdtemp folder under /tmp that each test removes.
 * test_python_seed reads tests/fuzz/corpus/python_mixed.safetensors, written by an
 * independent Python writer (docs/fuzzing.md); like the other tests that read fixtures it
 * expects to run from the repository root.
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dsc/safetensors.h"
#include "test.h"

#define LABEL "bad.safetensors"

/* ---- helpers ---- */

/* An 8-byte little-endian `header_len`, the header text, then data_len zero bytes. */
static unsigned char *make_file_len(uint64_t header_len, const char *header, size_t data_len,
                                    size_t *size) {
  size_t h = strlen(header);
  *size = 8 + h + data_len;
  unsigned char *b = calloc(1, *size);
  for (int i = 0; i < 8; i++) b[i] = (unsigned char)(header_len >> (8 * i));
  memcpy(b + 8, header, h);
  return b;
}

static unsigned char *make_file(const char *header, size_t data_len, size_t *size) {
  return make_file_len(strlen(header), header, data_len, size);
}

/* Expects opening bytes to fail with a one-line message naming LABEL and holding needle. */
static void expect_reject_bytes(const void *bytes, size_t size, const char *needle, int line) {
  dsc_safetensors *f = (dsc_safetensors *)1;
  dsc_status *st = dsc_st_open_memory(bytes, size, LABEL, &f);
  if (!st) {
    printf("  line %d: accepted, expected an error with \"%s\"\n", line, needle);
    test_current_failed = 1;
    dsc_st_close(f);
    return;
  }
  CHECK(f == NULL, "line %d: out not cleared on error", line);
  CHECK(strncmp(st->msg, LABEL ": ", strlen(LABEL) + 2) == 0, "line %d: \"%s\" lacks the label",
        line, st->msg);
  CHECK(strstr(st->msg, needle) != NULL, "line %d: \"%s\" lacks \"%s\"", line, st->msg, needle);
  CHECK(strchr(st->msg, '\n') == NULL, "line %d: \"%s\" is not one line", line, st->msg);
  dsc_status_free(st);
}

static void expect_reject_header(const char *header, size_t data_len, const char *needle,
                                 int line) {
  size_t size;
  unsigned char *b = make_file(header, data_len, &size);
  expect_reject_bytes(b, size, needle, line);
  free(b);
}

#define REJECT(header, data_len, needle) expect_reject_header(header, data_len, needle, __LINE__)

/* Opens bytes built from header + data_len zeros; NULL (and a failed check) on error. */
static dsc_safetensors *accept_header(const char *header, size_t data_len) {
  size_t size;
  unsigned char *b = make_file(header, data_len, &size);
  dsc_safetensors *f = NULL;
  CHECK_OK(dsc_st_open_memory(b, size, "good.safetensors", &f));
  free(b);
  return f;
}

static void file_write(const char *path, const char *text) {
  FILE *fp = fopen(path, "wb");
  if (!fp) return;
  fputs(text, fp);
  fclose(fp);
}

/* ---- rejections ---- */

static void test_reject_too_short(void) {
  const unsigned char b[8] = {0};
  expect_reject_bytes(b, 0, "too short", __LINE__);
  expect_reject_bytes(b, 1, "too short", __LINE__);
  expect_reject_bytes(b, 7, "too short", __LINE__);
  expect_reject_bytes(NULL, 0, "has 0 bytes", __LINE__);
}

static void test_reject_header_beyond_file(void) {
  size_t size;
  unsigned char *b = make_file_len(100, "{}", 10, &size);
  expect_reject_bytes(b, size, "header length 100 goes past the end of the file (20 bytes)",
                      __LINE__);
  free(b);
  b = make_file_len(3, "{}", 0, &size);
  expect_reject_bytes(b, size, "past the end", __LINE__);
  free(b);
}

static void test_reject_huge_header(void) {
  /* Tiny files claiming huge headers: rejected from the length alone, nothing allocated. */
  size_t size;
  unsigned char *b = make_file_len(DSC_ST_MAX_HEADER + 1ull, "{}", 16, &size);
  expect_reject_bytes(b, size, "header length 100000001 exceeds the limit of 100000000 bytes",
                      __LINE__);
  free(b);
  b = make_file_len(UINT64_MAX, "{}", 0, &size);
  expect_reject_bytes(b, size, "exceeds the limit", __LINE__);
  free(b);
  b = make_file_len(1ull << 63, "{}", 0, &size);
  expect_reject_bytes(b, size, "exceeds the limit", __LINE__);
  free(b);
}

static void test_reject_not_json(void) {
  REJECT("{\"a\": {\"dtype\": \"F32\", ", 0, "header is not valid JSON");
  REJECT("", 0, "header is not valid JSON");
  REJECT("{} x", 0, "header is not valid JSON");
  REJECT("{\"a\xff\": 1}", 0, "header is not valid JSON"); /* not UTF-8 */
  REJECT("{\"a\\u0000b\": 1}", 0, "header is not valid JSON");
  REJECT("{\"a\": {\"dtype\": \"F32\", \"shape\": [99999999999999999999]}}", 0,
         "not valid JSON");
}

static void test_reject_not_object(void) {
  REJECT("[1, 2]", 0, "header is a list, expected a JSON object");
  REJECT("3", 0, "header is an integer, expected a JSON object");
  REJECT("\"s\"", 0, "header is a string");
  REJECT("null", 0, "header is null");
}

static void test_reject_entry_not_object(void) {
  REJECT("{\"a\": 5}", 0, "tensor \"a\": entry is an integer, expected an object");
  REJECT("{\"a\": [\"F32\", [1], [0, 4]]}", 4, "tensor \"a\": entry is a list");
  /* A name with a newline is escaped, so the message stays on one line. */
  REJECT("{\"x\\ny\": null}", 0, "tensor \"x\\ny\": entry is null");
}

static void test_reject_missing_fields(void) {
  REJECT("{\"a\": {\"shape\": [1], \"data_offsets\": [0, 4]}}", 4,
         "tensor \"a\": missing field \"dtype\"");
  REJECT("{\"a\": {\"dtype\": \"F32\", \"data_offsets\": [0, 4]}}", 4,
         "tensor \"a\": missing field \"shape\"");
  REJECT("{\"a\": {\"dtype\": \"F32\", \"shape\": [1]}}", 4,
         "tensor \"a\": missing field \"data_offsets\"");
  REJECT("{\"a\": {}}", 0, "missing field");
  REJECT("{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4], \"x\": 1}}", 4,
         "tensor \"a\": unknown field \"x\"");
}

static void test_reject_unknown_dtype(void) {
  REJECT("{\"a\": {\"dtype\": \"F33\", \"shape\": [1], \"data_offsets\": [0, 4]}}", 4,
         "tensor \"a\": unknown dtype \"F33\"");
  REJECT("{\"a\": {\"dtype\": \"f32\", \"shape\": [1], \"data_offsets\": [0, 4]}}", 4,
         "unknown dtype \"f32\"");
  REJECT("{\"a\": {\"dtype\": 4, \"shape\": [1], \"data_offsets\": [0, 4]}}", 4,
         "dtype is an integer, expected a string");
}

static void test_reject_bad_shape(void) {
  REJECT("{\"a\": {\"dtype\": \"U8\", \"shape\": 3, \"data_offsets\": [0, 3]}}", 3,
         "shape is an integer, expected a list of non-negative integers");
  REJECT("{\"a\": {\"dtype\": \"U8\", \"shape\": [-1], \"data_offsets\": [0, 0]}}", 0,
         "shape[0] is negative");
  REJECT("{\"a\": {\"dtype\": \"U8\", \"shape\": [2, 1.5], \"data_offsets\": [0, 3]}}", 3,
         "shape[1] is a real number");
  REJECT("{\"a\": {\"dtype\": \"U8\", \"shape\": [\"2\"], \"data_offsets\": [0, 2]}}", 2,
         "shape[0] is a string");
  REJECT("{\"a\": {\"dtype\": \"U8\", \"shape\": [1,1,1,1,1,1,1,1,1], \"data_offsets\": [0, 1]}}",
         1, "shape has 9 dims, more than the 8 supported");
  dsc_safetensors *f =
      accept_header("{\"a\": {\"dtype\": \"U8\", \"shape\": [1,1,1,1,1,1,1,2], "
                    "\"data_offsets\": [0, 2]}}",
                    2);
  if (f) {
    CHECK(dsc_st_get(f, 0)->ndim == 8, "ndim %d", dsc_st_get(f, 0)->ndim);
    dsc_st_close(f);
  }
}

static void test_reject_bad_offsets(void) {
  const char *needle = "data_offsets must be a list of two non-negative integers";
  REJECT("{\"a\": {\"dtype\": \"U8\", \"shape\": [4], \"data_offsets\": [0]}}", 4, needle);
  REJECT("{\"a\": {\"dtype\": \"U8\", \"shape\": [4], \"data_offsets\": [0, 4, 8]}}", 4, needle);
  REJECT("{\"a\": {\"dtype\": \"U8\", \"shape\": [4], \"data_offsets\": [-1, 3]}}", 4, needle);
  REJECT("{\"a\": {\"dtype\": \"U8\", \"shape\": [4], \"data_offsets\": [\"0\", 4]}}", 4, needle);
  REJECT("{\"a\": {\"dtype\": \"U8\", \"shape\": [4], \"data_offsets\": [0.0, 4]}}", 4, needle);
  REJECT("{\"a\": {\"dtype\": \"U8\", \"shape\": [4], \"data_offsets\": \"0-4\"}}", 4, needle);
  REJECT("{\"a\": {\"dtype\": \"U8\", \"shape\": [4], \"data_offsets\": [8, 4]}}", 8,
         "data_offsets [8, 4] end before they begin");
}

static void test_reject_size_mismatch(void) {
  REJECT("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 4]}}", 4,
         "tensor \"a\": shape [2] of F32 needs 8 bytes but data_offsets [0, 4] hold 4");
  REJECT("{\"a\": {\"dtype\": \"F64\", \"shape\": [2, 3], \"data_offsets\": [0, 24]}}", 24,
         "needs 48 bytes");
  /* numel overflows uint64 */
  REJECT("{\"a\": {\"dtype\": \"U8\", \"shape\": [4294967296, 4294967296], "
         "\"data_offsets\": [0, 0]}}",
         0, "shape [4294967296, 4294967296] has too many elements");
  /* numel fits but numel * 8 bytes does not */
  REJECT("{\"a\": {\"dtype\": \"F64\", \"shape\": [4611686018427387904], "
         "\"data_offsets\": [0, 0]}}",
         0, "too many elements");
  /* numel * size wraps to exactly the byte count: 2^62 * 4 = 2^64 = 0 (mod 2^64) */
  REJECT("{\"a\": {\"dtype\": \"F32\", \"shape\": [4611686018427387904], "
         "\"data_offsets\": [0, 0]}}",
         0, "too many elements");
  /* A zero dim makes any other dims harmless. */
  dsc_safetensors *f =
      accept_header("{\"a\": {\"dtype\": \"F32\", \"shape\": [4294967296, 0, 4294967296], "
                    "\"data_offsets\": [0, 0]}}",
                    0);
  if (f) {
    CHECK(dsc_st_numel(dsc_st_get(f, 0)) == 0, "numel %zu", dsc_st_numel(dsc_st_get(f, 0)));
    dsc_st_close(f);
  }
}

static void test_reject_overlap(void) {
  REJECT("{\"a\": {\"dtype\": \"U8\", \"shape\": [4], \"data_offsets\": [0, 4]},"
         " \"b\": {\"dtype\": \"U8\", \"shape\": [4], \"data_offsets\": [2, 6]}}",
         6, "tensor \"b\" (bytes [2, 6)) overlaps tensor \"a\" (bytes [0, 4))");
  /* the same range twice */
  REJECT("{\"a\": {\"dtype\": \"U8\", \"shape\": [4], \"data_offsets\": [0, 4]},"
         " \"b\": {\"dtype\": \"U8\", \"shape\": [4], \"data_offsets\": [0, 4]}}",
         4, "overlaps");
  /* a zero-size tensor inside another one */
  REJECT("{\"a\": {\"dtype\": \"U8\", \"shape\": [4], \"data_offsets\": [0, 4]},"
         " \"b\": {\"dtype\": \"U8\", \"shape\": [0], \"data_offsets\": [2, 2]}}",
         4, "overlaps");
}

static void test_reject_hole(void) {
  REJECT("{\"a\": {\"dtype\": \"U8\", \"shape\": [4], \"data_offsets\": [0, 4]},"
         " \"b\": {\"dtype\": \"U8\", \"shape\": [4], \"data_offsets\": [8, 12]}}",
         12, "bytes [4, 8) of the data buffer belong to no tensor (a hole before tensor \"b\")");
  REJECT("{\"a\": {\"dtype\": \"U8\", \"shape\": [4], \"data_offsets\": [4, 8]}}", 8,
         "bytes [0, 4) of the data buffer belong to no tensor");
}

static void test_reject_past_end(void) {
  REJECT("{\"a\": {\"dtype\": \"U8\", \"shape\": [8], \"data_offsets\": [0, 8]}}", 4,
         "tensor \"a\" ends at byte 8, past the end of the 4-byte data buffer");
  REJECT("{\"a\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [0, 1]}}", 0,
         "past the end");
  /* offsets near 2^63 must not wrap anything */
  REJECT("{\"a\": {\"dtype\": \"U8\", \"shape\": [1], "
         "\"data_offsets\": [9223372036854775806, 9223372036854775807]}}",
         0, "belong to no tensor");
}

static void test_reject_trailing_bytes(void) {
  REJECT("{\"a\": {\"dtype\": \"U8\", \"shape\": [4], \"data_offsets\": [0, 4]}}", 8,
         "4 trailing bytes after the last tensor's data");
  REJECT("{}", 1, "1 trailing bytes");
}

static void test_reject_metadata(void) {
  REJECT("{\"__metadata__\": 5}", 0, "__metadata__ is an integer, expected an object of strings");
  REJECT("{\"__metadata__\": null}", 0, "__metadata__ is null");
  REJECT("{\"__metadata__\": [\"a\"]}", 0, "__metadata__ is a list");
  REJECT("{\"__metadata__\": {\"k\": 1}}", 0,
         "__metadata__ value of \"k\" is an integer, expected a string");
  REJECT("{\"__metadata__\": {\"ok\": \"v\", \"k\": {\"x\": \"y\"}}}", 0,
         "value of \"k\" is an object");
  REJECT("{\"__metadata__\": {\"k\": \"a\", \"k\": \"b\"}}", 0, "duplicate");
}

static void test_reject_duplicate_names(void) {
  REJECT("{\"a\": {\"dtype\": \"U8\", \"shape\": [4], \"data_offsets\": [0, 4]},"
         " \"a\": {\"dtype\": \"U8\", \"shape\": [4], \"data_offsets\": [4, 8]}}",
         8, "duplicate object key");
}

static void test_reject_directory_and_missing(void) {
  test_tmpdir d = test_tmpdir_make("st");
  dsc_safetensors *f = (dsc_safetensors *)1;
  dsc_status *st = dsc_st_open(d.path, &f);
  CHECK(st && strstr(st->msg, d.path) && strstr(st->msg, "is a directory"), "got \"%s\"",
        st ? st->msg : "success");
  CHECK(f == NULL, "out not cleared");
  dsc_status_free(st);

  char missing[128];
  snprintf(missing, sizeof missing, "%s/none.safetensors", d.path);
  st = dsc_st_open(missing, &f);
  CHECK(st && strncmp(st->msg, missing, strlen(missing)) == 0 &&
            strstr(st->msg, "No such file or directory") && !strchr(st->msg, '\n'),
        "got \"%s\"", st ? st->msg : "success");
  dsc_status_free(st);

  /* a truncated file on disk names its path */
  char shortf[128];
  snprintf(shortf, sizeof shortf, "%s/short.safetensors", d.path);
  file_write(shortf, "abc");
  st = dsc_st_open(shortf, &f);
  CHECK(st && strncmp(st->msg, shortf, strlen(shortf)) == 0 && strstr(st->msg, "too short"),
        "got \"%s\"", st ? st->msg : "success");
  dsc_status_free(st);
  test_tmpdir_remove(&d);
}

/* ---- acceptance ---- */

static void test_accept_empty_and_order(void) {
  dsc_safetensors *f = accept_header("{}", 0);
  if (f) {
    CHECK(dsc_st_count(f) == 0 && dsc_st_meta_count(f) == 0, "count %d", dsc_st_count(f));
    CHECK(dsc_st_get(f, 0) == NULL && dsc_st_find(f, "a") == NULL, "lookups in an empty file");
    CHECK(dsc_st_meta(f, "k") == NULL, "meta in an empty file");
    dsc_st_close(f);
  }
  /* JSON order differs from offset order; zero-size tensors share offsets with others and
   * keep their JSON order among equal ranges. */
  f = accept_header("{\"c\": {\"dtype\": \"U8\", \"shape\": [2], \"data_offsets\": [4, 6]},"
                    " \"z\": {\"dtype\": \"F32\", \"shape\": [0], \"data_offsets\": [4, 4]},"
                    " \"b\": {\"dtype\": \"U8\", \"shape\": [0, 5], \"data_offsets\": [4, 4]},"
                    " \"a\": {\"dtype\": \"F32\", \"shape\": [], \"data_offsets\": [0, 4]}}",
                    6);
  if (f) {
    const char *want[] = {"a", "z", "b", "c"};
    CHECK(dsc_st_count(f) == 4, "count %d", dsc_st_count(f));
    for (int i = 0; i < 4 && i < dsc_st_count(f); i++)
      CHECK(strcmp(dsc_st_get(f, i)->name, want[i]) == 0, "tensor %d is %s, want %s", i,
            dsc_st_get(f, i)->name, want[i]);
    const dsc_st_tensor *a = dsc_st_find(f, "a");
    CHECK(a && a->ndim == 0 && dsc_st_numel(a) == 1, "scalar a");
    CHECK(dsc_st_get(f, -1) == NULL && dsc_st_get(f, 4) == NULL, "out-of-range get");
    dsc_st_close(f);
  }
}

/* ---- writer and round trips ---- */

static void test_roundtrip(void) {
  test_tmpdir d = test_tmpdir_make("st");
  char path[128];
  snprintf(path, sizeof path, "%s/rt.safetensors", d.path);

  float w[6] = {1.5f, -2.0f, 0.0f, 3.25f, 1e-30f, -7.0f};
  int64_t counts[3] = {INT64_MIN, 0, INT64_MAX};
  uint8_t bytes[5] = {0, 1, 127, 128, 255};
  uint16_t halves[2] = {0x3c00, 0xc000}; /* 1.0, -2.0 */
  float scalar = 0.125f;
  int64_t w_shape[2] = {2, 3}, c_shape[1] = {3}, b_shape[1] = {5}, h_shape[1] = {2};
  int64_t empty_shape[2] = {0, 4};

  dsc_st_writer *wr = NULL;
  CHECK_OK(dsc_st_writer_new(&wr));
  if (!wr) return;
  CHECK_OK(dsc_st_writer_add(wr, "layer.weight", DSC_F32, 2, w_shape, w));
  CHECK_OK(dsc_st_writer_add(wr, "step", DSC_I64, 1, c_shape, counts));
  CHECK_OK(dsc_st_writer_add(wr, "mask", DSC_U8, 1, b_shape, bytes));
  CHECK_OK(dsc_st_writer_add(wr, "empty", DSC_F32, 2, empty_shape, NULL));
  CHECK_OK(dsc_st_writer_add(wr, "half", DSC_F16, 1, h_shape, halves));
  CHECK_OK(dsc_st_writer_add(wr, "lr", DSC_F32, 0, NULL, &scalar));
  CHECK_OK(dsc_st_writer_meta(wr, "method", "dsc"));
  CHECK_OK(dsc_st_writer_meta(wr, "config", "{\"a\": 1,\n \"b\": \"\\u00e9\"}"));
  CHECK_OK(dsc_st_writer_save(wr, path));
  dsc_st_writer_free(wr);

  size_t size = 0;
  unsigned char *raw = test_file_read(path, &size);
  CHECK(raw && size >= 8, "read back %zu bytes", size);
  if (!raw) return;
  uint64_t h = 0;
  for (int i = 7; i >= 0; i--) h = (h << 8) | raw[i];
  CHECK(h % 8 == 0, "header length %llu is not a multiple of 8", (unsigned long long)h);
  CHECK(raw[8] == '{', "header starts with %c", raw[8]);
  size_t json_end = 8 + (size_t)h;
  while (json_end > 8 && raw[json_end - 1] == ' ') json_end--;
  CHECK(raw[json_end - 1] == '}', "padding is not spaces after the JSON");
  CHECK(memmem(raw + 8, json_end - 8, "\"step\":{\"dtype\":\"I64\",\"shape\":[3],", 34),
        "header is not compact: %.*s", (int)(json_end - 8), (const char *)raw + 8);
  CHECK(memcmp(raw + 8, "{\"__metadata__\":{\"method\":\"dsc\"", 31) == 0,
        "metadata is not first: %.40s", (const char *)raw + 8);

  /* the data buffer is the tensors' bytes back to back, in the order added */
  size_t want_data = sizeof w + sizeof counts + sizeof bytes + sizeof halves + sizeof scalar;
  CHECK(size == 8 + h + want_data, "file size %zu, want %zu", size, (size_t)(8 + h + want_data));
  const unsigned char *data = raw + 8 + h;
  CHECK(memcmp(data, w, sizeof w) == 0, "weight bytes");
  CHECK(memcmp(data + 24, counts, sizeof counts) == 0, "I64 bytes");
  CHECK(memcmp(data + 48, bytes, sizeof bytes) == 0, "U8 bytes");
  CHECK(memcmp(data + 53, halves, sizeof halves) == 0, "F16 bytes");
  CHECK(memcmp(data + 57, &scalar, sizeof scalar) == 0, "scalar bytes");

  dsc_safetensors *f = NULL;
  CHECK_OK(dsc_st_open(path, &f));
  free(raw);
  if (!f) return;
  CHECK(strcmp(dsc_st_path(f), path) == 0, "path %s", dsc_st_path(f));
  const char *order[] = {"layer.weight", "step", "mask", "empty", "half", "lr"};
  CHECK(dsc_st_count(f) == 6, "count %d", dsc_st_count(f));
  for (int i = 0; i < 6 && i < dsc_st_count(f); i++)
    CHECK(strcmp(dsc_st_get(f, i)->name, order[i]) == 0, "tensor %d is %s", i,
          dsc_st_get(f, i)->name);

  const dsc_st_tensor *t = dsc_st_find(f, "layer.weight");
  CHECK(t && t->dtype == DSC_F32 && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3 &&
            t->begin == 0 && t->end == 24,
        "layer.weight header");
  float got[6];
  CHECK_OK(dsc_st_read_f32(f, "layer.weight", got, 6));
  CHECK(memcmp(got, w, sizeof w) == 0, "layer.weight values");

  t = dsc_st_find(f, "step");
  CHECK(t && t->dtype == DSC_I64 && dsc_st_numel(t) == 3 &&
            memcmp(dsc_st_data(f, t), counts, sizeof counts) == 0,
        "I64 round trip");
  t = dsc_st_find(f, "mask");
  CHECK(t && t->dtype == DSC_U8 && dsc_st_nbytes(t) == 5 &&
            memcmp(dsc_st_data(f, t), bytes, sizeof bytes) == 0,
        "U8 round trip");
  t = dsc_st_find(f, "empty");
  CHECK(t && t->ndim == 2 && t->shape[0] == 0 && t->shape[1] == 4 && dsc_st_numel(t) == 0 &&
            t->begin == t->end,
        "zero-size tensor");
  CHECK_OK(dsc_st_read_f32(f, "empty", got, 0));
  float hv[2];
  CHECK_OK(dsc_st_read_f32(f, "half", hv, 2));
  CHECK(hv[0] == 1.0f && hv[1] == -2.0f, "F16 values %g %g", hv[0], hv[1]);
  t = dsc_st_find(f, "lr");
  CHECK(t && t->ndim == 0 && dsc_st_numel(t) == 1 && t->end == want_data, "scalar header");
  float lr = 0;
  CHECK_OK(dsc_st_read_f32(f, "lr", &lr, 1));
  CHECK(lr == scalar, "scalar %g", lr);

  CHECK(dsc_st_meta_count(f) == 2, "meta count %d", dsc_st_meta_count(f));
  CHECK(dsc_st_meta_key(f, 0) && strcmp(dsc_st_meta_key(f, 0), "method") == 0, "meta key 0");
  CHECK(dsc_st_meta(f, "method") && strcmp(dsc_st_meta(f, "method"), "dsc") == 0, "method");
  CHECK(dsc_st_meta(f, "config") &&
            strcmp(dsc_st_meta(f, "config"), "{\"a\": 1,\n \"b\": \"\\u00e9\"}") == 0,
        "config");
  CHECK(dsc_st_meta(f, "absent") == NULL, "absent key");
  dsc_st_close(f);

  int tmps = 0;
  CHECK(test_dir_count(d.path, &tmps) == 1 && tmps == 0, "folder holds more than the file");
  test_tmpdir_remove(&d);
}

/* Header lengths for every JSON length mod 8 are padded to a multiple of 8. */
static void test_header_padding(void) {
  test_tmpdir d = test_tmpdir_make("st");
  char path[128];
  snprintf(path, sizeof path, "%s/pad.safetensors", d.path);
  char name[16] = "";
  uint8_t byte = 7;
  int64_t one = 1;
  for (int len = 1; len <= 8; len++) {
    memset(name, 'n', (size_t)len);
    name[len] = '\0';
    dsc_st_writer *wr = NULL;
    CHECK_OK(dsc_st_writer_new(&wr));
    CHECK_OK(dsc_st_writer_add(wr, name, DSC_U8, 1, &one, &byte));
    CHECK_OK(dsc_st_writer_save(wr, path));
    dsc_st_writer_free(wr);
    size_t size = 0;
    unsigned char *raw = test_file_read(path, &size);
    uint64_t h = 0;
    for (int i = 7; raw && i >= 0; i--) h = (h << 8) | raw[i];
    CHECK(raw && h % 8 == 0 && size == 8 + h + 1 && raw[size - 1] == 7,
          "name length %d: header %llu, size %zu", len, (unsigned long long)h, size);
    free(raw);
  }
  /* An empty writer makes a valid empty file. */
  dsc_st_writer *wr = NULL;
  CHECK_OK(dsc_st_writer_new(&wr));
  CHECK_OK(dsc_st_writer_save(wr, path));
  dsc_st_writer_free(wr);
  dsc_safetensors *f = NULL;
  CHECK_OK(dsc_st_open(path, &f));
  CHECK(f && dsc_st_count(f) == 0, "empty file");
  dsc_st_close(f);
  test_tmpdir_remove(&d);
}

static void test_writer_errors(void) {
  dsc_st_writer *wr = NULL;
  CHECK_OK(dsc_st_writer_new(&wr));
  if (!wr) return;
  float x[4] = {0};
  int64_t s4[1] = {4}, neg[1] = {-1}, s9[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
  CHECK_OK(dsc_st_writer_add(wr, "x", DSC_F32, 1, s4, x));
  CHECK_ERR(dsc_st_writer_add(wr, "x", DSC_F32, 1, s4, x), "duplicate tensor name \"x\"");
  CHECK_ERR(dsc_st_writer_add(wr, "__metadata__", DSC_F32, 1, s4, x), "reserved");
  CHECK_ERR(dsc_st_writer_add(wr, "y", DSC_F32, 1, neg, x), "negative dim -1");
  CHECK_ERR(dsc_st_writer_add(wr, "y", DSC_F32, 9, s9, x), "ndim 9 outside [0, 8]");
  CHECK_ERR(dsc_st_writer_add(wr, "y", DSC_F32, 1, s4, NULL), "data is NULL");
  CHECK_ERR(dsc_st_writer_add(wr, "y", DSC_F32, 1, NULL, x), "shape is NULL");
  CHECK_ERR(dsc_st_writer_add(wr, "y", DSC_DTYPE_COUNT, 1, s4, x), "invalid dtype");
  CHECK_ERR(dsc_st_writer_add(wr, "bad\xff", DSC_F32, 1, s4, x), "not valid UTF-8");
  CHECK_OK(dsc_st_writer_meta(wr, "k", "v"));
  CHECK_ERR(dsc_st_writer_meta(wr, "k", "w"), "duplicate metadata key \"k\"");
  CHECK_ERR(dsc_st_writer_meta(wr, "k2", "\xc3"), "not valid UTF-8");
  dsc_st_writer_free(wr);
}

static void test_atomic_save(void) {
  test_tmpdir d = test_tmpdir_make("st");
  char path[128];
  snprintf(path, sizeof path, "%s/ckpt.safetensors", d.path);
  float v1[2] = {1, 2}, v2[2] = {3, 4};
  int64_t s2[1] = {2};

  dsc_st_writer *wr = NULL;
  CHECK_OK(dsc_st_writer_new(&wr));
  CHECK_OK(dsc_st_writer_add(wr, "v", DSC_F32, 1, s2, v1));
  CHECK_OK(dsc_st_writer_save(wr, path));
  dsc_st_writer_free(wr);

  /* Saving over an existing file replaces it. */
  CHECK_OK(dsc_st_writer_new(&wr));
  CHECK_OK(dsc_st_writer_add(wr, "v", DSC_F32, 1, s2, v2));
  CHECK_OK(dsc_st_writer_save(wr, path));
  float got[2] = {0};
  dsc_safetensors *f = NULL;
  CHECK_OK(dsc_st_open(path, &f));
  if (f) CHECK_OK(dsc_st_read_f32(f, "v", got, 2));
  dsc_st_close(f);
  CHECK(got[0] == 3 && got[1] == 4, "overwrite: %g %g", got[0], got[1]);
  int tmps = 0;
  CHECK(test_dir_count(d.path, &tmps) == 1 && tmps == 0, "temp file left behind");

  /* A failed save (the temp file cannot be created: a folder sits at its name) leaves the
   * old file as it was. */
  char blocker[192];
  snprintf(blocker, sizeof blocker, "%s.tmp.%ld", path, (long)getpid());
  CHECK(mkdir(blocker, 0700) == 0, "mkdir %s", blocker);
  dsc_st_writer *wr3 = NULL;
  CHECK_OK(dsc_st_writer_new(&wr3));
  CHECK_OK(dsc_st_writer_add(wr3, "other", DSC_F32, 1, s2, v1));
  CHECK_ERR(dsc_st_writer_save(wr3, path), "cannot create temporary file");
  dsc_st_writer_free(wr3);
  rmdir(blocker);
  f = NULL;
  CHECK_OK(dsc_st_open(path, &f));
  CHECK(f && dsc_st_count(f) == 1 && dsc_st_find(f, "v"), "old file clobbered");
  if (f) CHECK_OK(dsc_st_read_f32(f, "v", got, 2));
  CHECK(got[0] == 3 && got[1] == 4, "old file changed: %g %g", got[0], got[1]);
  dsc_st_close(f);

  /* The target is a non-empty folder: the rename fails and the temp file is removed. */
  char folder[160], inside[200];
  snprintf(folder, sizeof folder, "%s/isdir.safetensors", d.path);
  snprintf(inside, sizeof inside, "%s/keep", folder);
  CHECK(mkdir(folder, 0700) == 0, "mkdir %s", folder);
  file_write(inside, "x");
  CHECK_ERR(dsc_st_writer_save(wr, folder), "renaming");
  CHECK(test_dir_count(d.path, &tmps) == 2 && tmps == 0, "temp file left after a failed rename");
  remove(inside);

  /* A folder that does not exist: an error naming the path, nothing created. */
  char nowhere[160];
  snprintf(nowhere, sizeof nowhere, "%s/no/such/dir/x.safetensors", d.path);
  dsc_status *st = dsc_st_writer_save(wr, nowhere);
  CHECK(st && strncmp(st->msg, nowhere, strlen(nowhere)) == 0 &&
            strstr(st->msg, "No such file or directory"),
        "got \"%s\"", st ? st->msg : "success");
  dsc_status_free(st);
  CHECK(test_dir_count(d.path, &tmps) == 2 && tmps == 0, "something was created");
  dsc_st_writer_free(wr);
  test_tmpdir_remove(&d);
}

/* ---- float conversion ---- */

static void test_read_f32(void) {
  test_tmpdir d = test_tmpdir_make("st");
  char path[128];
  snprintf(path, sizeof path, "%s/conv.safetensors", d.path);
  /* F16: 1, -0, 65504 (max), 2^-24 (smallest subnormal), 2^-14 (smallest normal), 1023*2^-24
   * (largest subnormal), inf, -inf, nan */
  uint16_t h[9] = {0x3c00, 0x8000, 0x7bff, 0x0001, 0x0400, 0x03ff, 0x7c00, 0xfc00, 0x7e00};
  uint16_t bf[3] = {0x3fc0, 0xc040, 0x7f80}; /* 1.5, -3, inf */
  double f64[3] = {0.1, -1e10, 3.0};
  int64_t i64[2] = {1, 2};
  int64_t s9[1] = {9}, s3[1] = {3}, s2[1] = {2};
  dsc_st_writer *wr = NULL;
  CHECK_OK(dsc_st_writer_new(&wr));
  CHECK_OK(dsc_st_writer_add(wr, "h", DSC_F16, 1, s9, h));
  CHECK_OK(dsc_st_writer_add(wr, "bf", DSC_BF16, 1, s3, bf));
  CHECK_OK(dsc_st_writer_add(wr, "d", DSC_F64, 1, s3, f64));
  CHECK_OK(dsc_st_writer_add(wr, "i", DSC_I64, 1, s2, i64));
  CHECK_OK(dsc_st_writer_save(wr, path));
  dsc_st_writer_free(wr);
  dsc_safetensors *f = NULL;
  CHECK_OK(dsc_st_open(path, &f));
  if (!f) return;

  float got[9];
  CHECK_OK(dsc_st_read_f32(f, "h", got, 9));
  const float want_h[8] = {1.0f, -0.0f, 65504.0f, 0x1p-24f, 0x1p-14f, 1023 * 0x1p-24f,
                           INFINITY, -INFINITY};
  for (int i = 0; i < 8; i++)
    CHECK(got[i] == want_h[i], "F16[%d]: %a, want %a", i, got[i], want_h[i]);
  CHECK(signbit(got[1]), "-0 lost its sign");
  CHECK(isnan(got[8]), "F16 nan: %g", got[8]);
  CHECK_OK(dsc_st_read_f32(f, "bf", got, 3));
  CHECK(got[0] == 1.5f && got[1] == -3.0f && isinf(got[2]), "BF16: %g %g %g", got[0], got[1],
        got[2]);
  CHECK_OK(dsc_st_read_f32(f, "d", got, 3));
  CHECK(got[0] == 0.1f && got[1] == -1e10f && got[2] == 3.0f, "F64: %g %g %g", got[0], got[1],
        got[2]);

  char want[256];
  snprintf(want, sizeof want, "%s: no tensor \"nope\"", path);
  CHECK_ERR(dsc_st_read_f32(f, "nope", got, 1), want);
  snprintf(want, sizeof want, "%s: tensor \"d\" has 3 elements (shape [3]), expected 4", path);
  CHECK_ERR(dsc_st_read_f32(f, "d", got, 4), want);
  snprintf(want, sizeof want, "%s: tensor \"i\" has dtype I64, expected a float type", path);
  CHECK_ERR(dsc_st_read_f32(f, "i", got, 2), want);
  dsc_st_close(f);
  test_tmpdir_remove(&d);
}

/* ---- interoperability ---- */

/* Written by the independent Python writer of docs/fuzzing.md: Python's json.dumps spacing,
 * JSON keys in a different order from the data, header not padded (unaligned data). */
static void test_python_seed(void) {
  const char *path = "tests/fuzz/corpus/python_mixed.safetensors";
  dsc_safetensors *f = NULL;
  CHECK_OK(dsc_st_open(path, &f));
  if (!f) return;
  const char *order[] = {"a.half", "b.weight", "c.bf16", "d.f64", "e.count", "f.bytes",
                         "g.empty"};
  CHECK(dsc_st_count(f) == 7, "count %d", dsc_st_count(f));
  for (int i = 0; i < 7 && i < dsc_st_count(f); i++)
    CHECK(strcmp(dsc_st_get(f, i)->name, order[i]) == 0, "tensor %d is %s", i,
          dsc_st_get(f, i)->name);
  CHECK(dsc_st_meta_count(f) == 2, "meta count %d", dsc_st_meta_count(f));
  CHECK(dsc_st_meta(f, "format") && strcmp(dsc_st_meta(f, "format"), "pt") == 0, "format");
  CHECK(dsc_st_meta(f, "note") && strcmp(dsc_st_meta(f, "note"), "written by python") == 0,
        "note");

  float got[6];
  const float want_w[6] = {-1.0f, -0.5f, 0.0f, 0.5f, 1.0f, 1.5f};
  const dsc_st_tensor *t = dsc_st_find(f, "b.weight");
  CHECK(t && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3, "b.weight shape");
  CHECK_OK(dsc_st_read_f32(f, "b.weight", got, 6));
  CHECK(memcmp(got, want_w, sizeof want_w) == 0, "b.weight values");
  const float want_h[5] = {1.0f, -2.0f, 0.5f, 65504.0f, 0x1p-24f};
  CHECK_OK(dsc_st_read_f32(f, "a.half", got, 5));
  CHECK(memcmp(got, want_h, sizeof want_h) == 0, "a.half values");
  CHECK_OK(dsc_st_read_f32(f, "c.bf16", got, 3));
  CHECK(got[0] == 1.5f && got[1] == -3.0f && got[2] == 256.0f, "c.bf16 values");
  CHECK_OK(dsc_st_read_f32(f, "d.f64", got, 3));
  CHECK(got[0] == 0.1f && got[1] == -1e10f && got[2] == 3.0f, "d.f64 values");
  t = dsc_st_find(f, "e.count");
  int64_t count = 0;
  if (t) memcpy(&count, dsc_st_data(f, t), sizeof count);
  CHECK(t && t->ndim == 0 && t->dtype == DSC_I64 && count == 42, "e.count %lld",
        (long long)count);
  t = dsc_st_find(f, "f.bytes");
  const uint8_t want_u8[5] = {1, 2, 3, 4, 5};
  CHECK(t && t->dtype == DSC_U8 && memcmp(dsc_st_data(f, t), want_u8, 5) == 0, "f.bytes");
  t = dsc_st_find(f, "g.empty");
  CHECK(t && dsc_st_numel(t) == 0 && t->shape[0] == 0 && t->shape[1] == 3, "g.empty");
  dsc_st_close(f);
}

/* ---- info listing ---- */

static void test_print_info(void) {
  test_tmpdir d = test_tmpdir_make("st");
  char path[128];
  snprintf(path, sizeof path, "%s/info.safetensors", d.path);
  float w[6] = {0};
  int64_t shape[2] = {2, 3};
  char long_value[300];
  memset(long_value, 'v', sizeof long_value - 1);
  long_value[sizeof long_value - 1] = '\0';
  dsc_st_writer *wr = NULL;
  CHECK_OK(dsc_st_writer_new(&wr));
  CHECK_OK(dsc_st_writer_add(wr, "conv1.weight", DSC_F32, 2, shape, w));
  CHECK_OK(dsc_st_writer_add(wr, "odd\nname", DSC_F32, 0, NULL, w));
  CHECK_OK(dsc_st_writer_meta(wr, "method", "dsc"));
  CHECK_OK(dsc_st_writer_meta(wr, "config", long_value));
  CHECK_OK(dsc_st_writer_save(wr, path));
  dsc_st_writer_free(wr);

  char *text = NULL;
  size_t len = 0;
  FILE *out = open_memstream(&text, &len);
  CHECK_OK(dsc_st_print_info(path, out));
  fclose(out);
  CHECK(strstr(text, "conv1.weight") && strstr(text, "[2, 3]") && strstr(text, "F32"),
        "row missing:\n%s", text);
  CHECK(strstr(text, "odd\\nname") && strstr(text, "[]"), "escaped scalar row missing:\n%s",
        text);
  CHECK(strstr(text, "total: 2 tensors, 7 elements, 28 bytes"), "total missing:\n%s", text);
  CHECK(strstr(text, "method = dsc"), "metadata missing:\n%s", text);
  CHECK(strstr(text, "config = vvvv") && strstr(text, "v...\n") && !strstr(text, long_value),
        "long value not truncated:\n%s", text);
  int lines = 0;
  for (char *p = text; *p; p++) lines += *p == '\n';
  CHECK(lines == 8, "%d lines:\n%s", lines, text);
  free(text);

  text = NULL;
  out = open_memstream(&text, &len);
  char missing[160];
  snprintf(missing, sizeof missing, "%s/none.safetensors", d.path);
  CHECK_ERR(dsc_st_print_info(missing, out), "none.safetensors: cannot open");
  fclose(out);
  free(text);
  test_tmpdir_remove(&d);
}

static const dsc_test tests[] = {
    {"reject_too_short", test_reject_too_short},
    {"reject_header_beyond_file", test_reject_header_beyond_file},
    {"reject_huge_header", test_reject_huge_header},
    {"reject_not_json", test_reject_not_json},
    {"reject_not_object", test_reject_not_object},
    {"reject_entry_not_object", test_reject_entry_not_object},
    {"reject_missing_fields", test_reject_missing_fields},
    {"reject_unknown_dtype", test_reject_unknown_dtype},
    {"reject_bad_shape", test_reject_bad_shape},
    {"reject_bad_offsets", test_reject_bad_offsets},
    {"reject_size_mismatch", test_reject_size_mismatch},
    {"reject_overlap", test_reject_overlap},
    {"reject_hole", test_reject_hole},
    {"reject_past_end", test_reject_past_end},
    {"reject_trailing_bytes", test_reject_trailing_bytes},
    {"reject_metadata", test_reject_metadata},
    {"reject_duplicate_names", test_reject_duplicate_names},
    {"reject_directory_and_missing", test_reject_directory_and_missing},
    {"accept_empty_and_order", test_accept_empty_and_order},
    {"roundtrip", test_roundtrip},
    {"header_padding", test_header_padding},
    {"writer_errors", test_writer_errors},
    {"atomic_save", test_atomic_save},
    {"read_f32", test_read_f32},
    {"python_seed", test_python_seed},
    {"print_info", test_print_info},
};

TEST_MAIN(tests)
