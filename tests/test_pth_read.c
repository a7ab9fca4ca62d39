/* test_pth_read.c: the PyTorch checkpoint reader (include/dsc/pth.h, reading half) and its
 * pickle machine (src/io/pickle_read.h).
 *
 * Two kinds of input:
 *  - hand-made pickle byte streams, valid and malformed (truncated, stack underflow, bad memo
 *    index, unknown opcode, deep nesting, huge lengths, hostile tensor arguments): each
 *    malformed one must give an error naming the problem, never a crash;
 *  - real files written by PyTorch: at start the test runs
 *    `/usr/bin/python3 tools/reference/make_pth_fixtures.py DIR` into a mkdtemp folder (see
 *    that script for the files) and compares every tensor the reader returns, bit for bit and by
 *    name, with the expected .safetensors written next to each checkpoint. Every prefix of a
 *    small checkpoint (both formats) must be rejected.
 * python3 with torch and torchvision is required: without it the file tests fail, they are not
 * skipped. Tests run from the repository root (as `make test` does).
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dsc/pth.h"
#include "dsc/safetensors.h"
#include "io/pickle_read.h"
#include "test.h"

/* ---- fixtures written by PyTorch ---- */

static char fixture_dir[64];
static int fixture_state; /* 0: not made yet, 1: made, -1: failed */

/* The folder of PyTorch-written fixtures, made on first use; NULL (and a failed check) when
 * python3/torch are missing. */
static const char *fixtures(void) {
  if (fixture_state == 0) {
    fixture_state = -1;
    test_temp_template(fixture_dir, sizeof fixture_dir, "pth");
    if (!mkdtemp(fixture_dir)) {
      CHECK(0, "mkdtemp: %s", strerror(errno));
      return NULL;
    }
    if (access("/usr/bin/python3", X_OK) != 0) {
      CHECK(0, "/usr/bin/python3 is missing: this test needs python3 with torch and torchvision "
               "(scripts/deps.sh installs them)");
      return NULL;
    }
    char cmd[256];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 tools/reference/make_pth_fixtures.py %s",
             fixture_dir);
    fflush(stdout);
    int rc = system(cmd);
    int code = rc == -1 ? -1 : WIFEXITED(rc) ? WEXITSTATUS(rc) : 128 + WTERMSIG(rc);
    CHECK(code == 0, "`%s` exited %d (an import error means python3-torch / torchvision are "
                     "missing: they are required, see scripts/deps.sh)", cmd, code);
    if (code == 0) fixture_state = 1;
  }
  if (fixture_state != 1) {
    CHECK(0, "no PyTorch fixtures (see the first failure)");
    return NULL;
  }
  return fixture_dir;
}

static void fixtures_remove(void) {
  if (fixture_state == 0) return;
  DIR *dp = opendir(fixture_dir);
  if (!dp) return;
  struct dirent *e;
  while ((e = readdir(dp))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    char p[512];
    snprintf(p, sizeof p, "%s/%s", fixture_dir, e->d_name);
    remove(p);
  }
  closedir(dp);
  rmdir(fixture_dir);
}

static const char *fx(const char *name) {
  static char buf[512];
  snprintf(buf, sizeof buf, "%s/%s", fixture_dir, name);
  return buf;
}

static unsigned char *file_slurp(const char *path, size_t *size) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *b = malloc(n > 0 ? (size_t)n : 1);
  *size = b ? fread(b, 1, (size_t)n, f) : 0;
  fclose(f);
  return b;
}

/* Is `name` in the comma-separated list? */
static int in_list(const char *list, const char *name) {
  size_t n = strlen(name);
  for (const char *p = list; p && *p;) {
    const char *c = strchr(p, ',');
    size_t len = c ? (size_t)(c - p) : strlen(p);
    if (len == n && memcmp(p, name, n) == 0) return 1;
    p = c ? c + 1 : NULL;
  }
  return 0;
}

/* Every tensor of `got` equals the one of the same name in the expected file, in dtype,
 * shape and bytes (BF16 ones: after conversion to float32), and the names are the same sets,
 * in the order of `order` (when given: the state dict order, a list of names). */
static void compare_with_expected(const dsc_safetensors *got, const char *expected_path,
                                  const char *const *order, int order_n) {
  dsc_safetensors *want = NULL;
  CHECK_OK(dsc_st_open(expected_path, &want));
  if (!want) return;
  const char *bf16 = dsc_st_meta(want, "bf16");
  CHECK(dsc_st_count(got) == dsc_st_count(want), "%s: %d tensors read, %d expected",
        expected_path, dsc_st_count(got), dsc_st_count(want));
  for (int i = 0; i < dsc_st_count(want); i++) {
    const dsc_st_tensor *w = dsc_st_get(want, i);
    const dsc_st_tensor *g = dsc_st_find(got, w->name);
    CHECK(g != NULL, "tensor %s missing", w->name);
    if (!g) continue;
    int is_bf16 = in_list(bf16, w->name);
    CHECK(g->dtype == (is_bf16 ? DSC_BF16 : w->dtype), "%s: dtype %s, expected %s", w->name,
          dsc_dtype_name(g->dtype), is_bf16 ? "BF16" : dsc_dtype_name(w->dtype));
    CHECK(g->ndim == w->ndim, "%s: ndim %d, expected %d", w->name, g->ndim, w->ndim);
    int same_shape = g->ndim == w->ndim;
    for (int d = 0; same_shape && d < g->ndim; d++) same_shape = g->shape[d] == w->shape[d];
    CHECK(same_shape, "%s: shape differs", w->name);
    if (!same_shape || g->dtype != (is_bf16 ? DSC_BF16 : w->dtype)) continue;
    const unsigned char *gb = dsc_st_data(got, g), *wb = dsc_st_data(want, w);
    if (is_bf16) {
      size_t n = dsc_st_numel(g);
      int same = 1;
      for (size_t k = 0; k < n; k++) {
        uint16_t h;
        uint32_t want_bits;
        memcpy(&h, gb + 2 * k, 2);
        memcpy(&want_bits, wb + 4 * k, 4);
        same &= ((uint32_t)h << 16) == want_bits;
      }
      CHECK(same, "%s: BF16 values differ", w->name);
    } else {
      CHECK(dsc_st_nbytes(g) == dsc_st_nbytes(w) &&
                memcmp(gb, wb, dsc_st_nbytes(w)) == 0,
            "%s: bytes differ", w->name);
    }
  }
  for (int i = 0; i < order_n && i < dsc_st_count(got); i++)
    CHECK(strcmp(dsc_st_get(got, i)->name, order[i]) == 0, "tensor %d is %s, expected %s", i,
          dsc_st_get(got, i)->name, order[i]);
  dsc_st_close(want);
}

static void check_file(const char *pth, const char *expected, const char *const *order,
                       int order_n) {
  const char *dir = fixtures();
  if (!dir) return;
  char pth_path[512];
  snprintf(pth_path, sizeof pth_path, "%s", fx(pth));
  dsc_safetensors *got = NULL;
  CHECK_OK(dsc_pth_read(pth_path, &got));
  if (!got) return;
  CHECK(strcmp(dsc_st_path(got), pth_path) == 0, "label %s", dsc_st_path(got));
  compare_with_expected(got, fx(expected), order, order_n);
  dsc_st_close(got);
}

static const char *const misc_order[] = {
    "transposed", "slice", "row_slice", "shared_a", "shared_b", "permuted4d", "f64",
    "f16",        "bf16",  "i64",       "i32",      "i16",      "i8",         "u8",
    "bool",       "scalar", "scalar_i64", "empty",  "empty_strided", "param", "expanded"};
#define MISC_N ((int)(sizeof misc_order / sizeof misc_order[0]))

static void test_resnet18_zip(void) { check_file("resnet18_zip.pth", "resnet18.safetensors", NULL, 0); }
static void test_resnet18_legacy(void) {
  check_file("resnet18_legacy.pth", "resnet18.safetensors", NULL, 0);
}
static void test_misc_zip(void) { check_file("misc_zip.pth", "misc.safetensors", misc_order, MISC_N); }
static void test_misc_legacy(void) {
  check_file("misc_legacy.pth", "misc.safetensors", misc_order, MISC_N);
}
static void test_misc_archive_folder(void) {
  check_file("misc_archive.pth", "misc.safetensors", misc_order, MISC_N);
}
static void test_wrapped_state_dict(void) {
  check_file("wrap_state_dict.pth", "misc.safetensors", misc_order, MISC_N);
}
static void test_wrapped_model_legacy(void) {
  check_file("wrap_model_legacy.pth", "misc.safetensors", misc_order, MISC_N);
}

static void test_resnet18_state_dict_order(void) {
  if (!fixtures()) return;
  dsc_safetensors *got = NULL;
  CHECK_OK(dsc_pth_read(fx("resnet18_zip.pth"), &got));
  if (!got) return;
  CHECK(dsc_st_count(got) == 122, "resnet18 has 122 state dict entries, got %d",
        dsc_st_count(got));
  CHECK(strcmp(dsc_st_get(got, 0)->name, "conv1.weight") == 0, "first %s", dsc_st_get(got, 0)->name);
  CHECK(strcmp(dsc_st_get(got, dsc_st_count(got) - 1)->name, "fc.bias") == 0, "last %s",
        dsc_st_get(got, dsc_st_count(got) - 1)->name);
  const dsc_st_tensor *t = dsc_st_find(got, "bn1.num_batches_tracked");
  CHECK(t && t->dtype == DSC_I64 && t->ndim == 0, "num_batches_tracked: 0-dim I64");
  dsc_st_close(got);
}

static void test_compressed_rejected(void) {
  if (!fixtures()) return;
  dsc_safetensors *got = NULL;
  CHECK_ERR(dsc_pth_read(fx("compressed.pth"), &got), "compressed");
  CHECK(got == NULL, "no file on error");
}

static void test_memory_matches_file(void) {
  if (!fixtures()) return;
  size_t n = 0;
  unsigned char *b = file_slurp(fx("misc_legacy.pth"), &n);
  CHECK(b != NULL, "read misc_legacy.pth");
  if (!b) return;
  dsc_safetensors *got = NULL;
  CHECK_OK(dsc_pth_read_memory(b, n, "mem.pth", &got));
  free(b);
  if (!got) return;
  CHECK(strcmp(dsc_st_path(got), "mem.pth") == 0, "label %s", dsc_st_path(got));
  compare_with_expected(got, fx("misc.safetensors"), misc_order, MISC_N);
  dsc_st_close(got);
}

/* Every proper prefix of a small checkpoint is an error naming the label; so is every file
 * with one byte flipped in the pickle part, unless it still reads (never a crash). */
static void truncations(const char *name) {
  if (!fixtures()) return;
  size_t n = 0;
  unsigned char *b = file_slurp(fx(name), &n);
  CHECK(b != NULL && n > 100, "read %s", name);
  if (!b) return;
  dsc_safetensors *got = NULL;
  CHECK_OK(dsc_pth_read_memory(b, n, "t.pth", &got));
  dsc_st_close(got);
  int bad = 0;
  for (size_t len = 0; len < n; len++) {
    unsigned char *copy = malloc(len ? len : 1); /* exact size: ASan sees any over-read */
    memcpy(copy, b, len);
    got = NULL;
    dsc_status *st = dsc_pth_read_memory(copy, len, "t.pth", &got);
    if (!st || got || strncmp(st->msg, "t.pth: ", 7) != 0 || strchr(st->msg, '\n')) {
      if (bad++ < 5)
        printf("  prefix %zu of %s: %s\n", len, name, st ? st->msg : "accepted");
    }
    dsc_status_free(st);
    dsc_st_close(got);
    free(copy);
  }
  CHECK(bad == 0, "%d prefixes of %s not rejected properly", bad, name);
  /* Byte flips: anything may happen but a crash; errors are one line with the label. */
  for (size_t i = 0; i < n; i++) {
    unsigned char *copy = malloc(n);
    memcpy(copy, b, n);
    copy[i] ^= (unsigned char)(0x5a + i);
    got = NULL;
    dsc_status *st = dsc_pth_read_memory(copy, n, "t.pth", &got);
    if (st) CHECK(!got && strncmp(st->msg, "t.pth: ", 7) == 0 && !strchr(st->msg, '\n'),
                  "flip %zu: %s", i, st->msg);
    dsc_status_free(st);
    dsc_st_close(got);
    free(copy);
  }
  free(b);
}

static void test_truncated_zip(void) { truncations("small3_zip.pth"); }
static void test_truncated_legacy(void) { truncations("small3_legacy.pth"); }

/* ---- hand-made pickles ---- */

/* A pickle byte string written with C escapes, e.g. P("\x80\x02N.") */
#define P(s) (const unsigned char *)(s), sizeof(s) - 1

static dsc_status *load(const unsigned char *buf, size_t len, dsc_pickle_reader **r,
                        dsc_pickle_value **v) {
  *v = NULL;
  CHECK_OK(dsc_pickle_reader_new(r));
  size_t pos = 0;
  dsc_status *st = dsc_pickle_reader_load(*r, buf, len, &pos, v);
  if (!st) CHECK(pos == len, "stopped at %zu of %zu", pos, len);
  return st;
}

static void expect_error(const unsigned char *buf, size_t len, const char *needle) {
  dsc_pickle_reader *r = NULL;
  dsc_pickle_value *v = NULL;
  CHECK_ERR(load(buf, len, &r, &v), needle);
  dsc_pickle_reader_free(r);
  /* and every prefix is an error too */
  for (size_t n = 0; n < len; n++) {
    unsigned char *copy = malloc(n ? n : 1);
    memcpy(copy, buf, n);
    dsc_status *st = load(copy, n, &r, &v);
    CHECK(st != NULL, "prefix %zu accepted", n);
    dsc_status_free(st);
    dsc_pickle_reader_free(r);
    free(copy);
  }
}

static void test_pickle_values(void) {
  /* {'a': [1, -2, 300, 70000, 2**40, -1 (LONG1), 1.5, True, None, b'xy'], 'b': ('s', 'tu')} */
  static const unsigned char buf[] =
      "\x80\x02}q\x00(X\x01\x00\x00\x00" "aq\x01]q\x02(K\x01J\xfe\xff\xff\xffM\x2c\x01"
      "J\x70\x11\x01\x00\x8a\x06\x00\x00\x00\x00\x00\x01\x8a\x01\xff"
      "G\x3f\xf8\x00\x00\x00\x00\x00\x00\x88NC\x02xyeX\x01\x00\x00\x00" "b\x8c\x01s\x8c\x02tu\x86u.";
  dsc_pickle_reader *r = NULL;
  dsc_pickle_value *v = NULL;
  CHECK_OK(load(buf, sizeof buf - 1, &r, &v));
  CHECK(v && v->kind == DSC_PV_DICT && v->u.seq.count == 4, "a dict of 2 entries");
  dsc_pickle_value *a = dsc_pickle_dict_get(v, "a"), *b = dsc_pickle_dict_get(v, "b");
  CHECK(a && a->kind == DSC_PV_LIST && a->u.seq.count == 10, "list of 10");
  if (a && a->kind == DSC_PV_LIST && a->u.seq.count == 10) {
    dsc_pickle_value **it = a->u.seq.items;
    CHECK(it[0]->kind == DSC_PV_INT && it[0]->u.i == 1, "1");
    CHECK(it[1]->kind == DSC_PV_INT && it[1]->u.i == -2, "-2");
    CHECK(it[2]->kind == DSC_PV_INT && it[2]->u.i == 300, "300");
    CHECK(it[3]->kind == DSC_PV_INT && it[3]->u.i == 70000, "70000");
    CHECK(it[4]->kind == DSC_PV_INT && it[4]->u.i == (int64_t)1 << 40, "2**40");
    CHECK(it[5]->kind == DSC_PV_INT && it[5]->u.i == -1, "-1");
    CHECK(it[6]->kind == DSC_PV_FLOAT && it[6]->u.f == 1.5, "1.5");
    CHECK(it[7]->kind == DSC_PV_BOOL && it[7]->u.i == 1, "True");
    CHECK(it[8]->kind == DSC_PV_NONE, "None");
    CHECK(it[9]->kind == DSC_PV_BYTES && it[9]->u.str.n == 2 && !memcmp(it[9]->u.str.s, "xy", 2),
          "b'xy'");
  }
  CHECK(b && b->kind == DSC_PV_TUPLE && b->u.seq.count == 2 && dsc_pickle_str_is(b->u.seq.items[1], "tu"),
        "('s', 'tu')");
  CHECK(dsc_pickle_dict_get(v, "c") == NULL, "no c");
  dsc_pickle_reader_free(r);
}

/* Empty collections built from a mark on an empty stack, APPENDS / SETITEMS of nothing. */
static void test_pickle_empty_marks(void) {
  dsc_pickle_reader *r = NULL;
  dsc_pickle_value *v = NULL;
  CHECK_OK(load(P("\x80\x02(t."), &r, &v));
  CHECK(v && v->kind == DSC_PV_TUPLE && v->u.seq.count == 0, "()");
  dsc_pickle_reader_free(r);
  CHECK_OK(load(P("\x80\x02(l(e."), &r, &v));
  CHECK(v && v->kind == DSC_PV_LIST && v->u.seq.count == 0, "[]");
  dsc_pickle_reader_free(r);
  CHECK_OK(load(P("\x80\x02(d(u(1(0."), &r, &v));
  CHECK(v && v->kind == DSC_PV_DICT && v->u.seq.count == 0, "{}");
  dsc_pickle_reader_free(r);
}

static void test_pickle_memo_and_duplicates(void) {
  /* protocol 4 with FRAME, MEMOIZE, STACK_GLOBAL; d = {'k': 1}; d['k'] = 2 via SETITEM */
  static const unsigned char buf[] =
      "\x80\x04\x95\x20\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01k\x94K\x01s"
      "h\x00h\x01K\x02s0\x8c\x0b" "collections\x8c\x0bOrderedDict\x93)R.";
  dsc_pickle_reader *r = NULL;
  dsc_pickle_value *v = NULL;
  CHECK_OK(load(buf, sizeof buf - 1, &r, &v));
  CHECK(v && v->kind == DSC_PV_DICT && v->u.seq.count == 0, "OrderedDict() is an empty dict");
  dsc_pickle_reader_free(r);
  /* the popped dict: memo 0 */
  static const unsigned char buf2[] =
      "\x80\x04}\x94\x8c\x01k\x94K\x01sh\x00h\x01K\x02s.";
  CHECK_OK(load(buf2, sizeof buf2 - 1, &r, &v));
  dsc_pickle_value *k = dsc_pickle_dict_get(v, "k");
  CHECK(k && k->kind == DSC_PV_INT && k->u.i == 2, "last SETITEM wins");
  dsc_pickle_reader_free(r);
}

static void test_pickle_opaque_objects(void) {
  /* argparse.Namespace via NEWOBJ + BUILD, an unknown REDUCE, a BUILD on a dict */
  static const unsigned char buf[] =
      "\x80\x02(cargparse\nNamespace\nq\x00)\x81}X\x02\x00\x00\x00lrG\x3f\xb9\x99\x99\x99\x99"
      "\x99\x9asbcos\ngetcwd\n)R}}bl.";
  dsc_pickle_reader *r = NULL;
  dsc_pickle_value *v = NULL;
  CHECK_OK(load(buf, sizeof buf - 1, &r, &v));
  CHECK(v && v->kind == DSC_PV_LIST && v->u.seq.count == 3, "list of 3");
  if (v && v->kind == DSC_PV_LIST && v->u.seq.count == 3) {
    CHECK(v->u.seq.items[0]->kind == DSC_PV_OBJECT, "Namespace is an object");
    CHECK(v->u.seq.items[1]->kind == DSC_PV_OBJECT, "os.getcwd() is an object, not called");
    CHECK(v->u.seq.items[2]->kind == DSC_PV_DICT, "BUILD on a dict ignored");
  }
  dsc_pickle_reader_free(r);
}

/* ('storage', torch.FloatStorage, '0', 'cpu', 6) -> _rebuild_tensor_v2(st, 1, (2, 2), (3, 1)) */
#define TENSOR_PICKLE                                                                     \
  "\x80\x02}X\x01\x00\x00\x00w"                                                           \
  "ctorch._utils\n_rebuild_tensor_v2\n"                                                   \
  "((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x00" "0X\x03\x00\x00\x00" "cpu" \
  "K\x06tQK\x01K\x02K\x02\x86K\x03K\x01\x86\x89" "ccollections\nOrderedDict\n)RtRs."

static void test_pickle_tensor(void) {
  dsc_pickle_reader *r = NULL;
  dsc_pickle_value *v = NULL;
  CHECK_OK(load(P(TENSOR_PICKLE), &r, &v));
  dsc_pickle_value *w = dsc_pickle_dict_get(v, "w");
  CHECK(w && w->kind == DSC_PV_TENSOR, "tensor");
  if (w && w->kind == DSC_PV_TENSOR) {
    const dsc_pickle_tensor *t = w->u.tensor;
    CHECK(!t->error && t->storage && t->storage->dtype == DSC_F32 && t->storage->numel == 6,
          "float storage of 6");
    CHECK(t->offset == 1 && t->ndim == 2 && t->size[0] == 2 && t->stride[0] == 3, "geometry");
  }
  CHECK(dsc_pickle_reader_storage_count(r) == 1, "one storage recorded");
  dsc_pickle_reader_free(r);
}

static void test_pickle_malformed(void) {
  expect_error(P("\x80\x02"), "without STOP");
  expect_error(P("\x80\x02."), "stack underflow");
  expect_error(P("\x80\x02N\x86."), "stack underflow");
  expect_error(P("\x80\x02NN(\x86."), "stack underflow"); /* below a mark */
  expect_error(P("\x80\x02Ns."), "stack underflow");
  expect_error(P("\x80\x02h\x05."), "memo index 5 not set");
  expect_error(P("\x80\x02Nq\x00j\x01\x00\x00\x00."), "memo index 1 not set");
  expect_error(P("\x80\x02Nr\xff\xff\xff\x7f."), "memo index 2147483647 too large");
  expect_error(P("\x80\x02I1\n."), "unsupported pickle opcode 0x49 at byte 2");
  expect_error(P("\x80\x02N\x92."), "unsupported pickle opcode 0x92 at byte 3");
  expect_error(P("\x80\x09N."), "unsupported pickle protocol 9");
  expect_error(P("\x80\x02X\xff\xff\xff\xff."), "truncated");
  expect_error(P("\x80\x02\x8d\xff\xff\xff\xff\xff\xff\xff\xff."), "truncated");
  expect_error(P("\x80\x02\x8e\x00\x00\x00\x00\x00\x00\x00\x80."), "truncated");
  expect_error(P("\x80\x02\x8b\xff\xff\xff\x7f."), "integer of 2147483647 bytes");
  expect_error(P("\x80\x02\x8b\xff\xff\xff\xff."), "negative LONG4");
  expect_error(P("\x80\x02T\xff\xff\xff\xff."), "negative BINSTRING");
  expect_error(P("\x80\x02" "cos\nsystem"), "without newline");
  expect_error(P("\x80\x02NK\x01\x93."), "STACK_GLOBAL");
  expect_error(P("\x80\x02NNNs."), "adding items to a None");
  expect_error(P("\x80\x02K\x01]a."), "adding items to a int");
  expect_error(P("\x80\x02}(K\x01u."), "odd number");
  expect_error(P("\x80\x02(K\x01" "d."), "odd number");
  expect_error(P("\x80\x02K\x01}b."), "BUILD on a int");
  expect_error(P("\x80\x02t."), "no MARK");
  expect_error(P("\x80\x02" "1."), "no MARK");
  /* deep nesting: 5000 MARKs */
  size_t n = 2 + 5000 + 1;
  unsigned char *deep = malloc(n);
  deep[0] = 0x80;
  deep[1] = 2;
  memset(deep + 2, '(', 5000);
  deep[n - 1] = '.';
  dsc_pickle_reader *r = NULL;
  dsc_pickle_value *v = NULL;
  CHECK_ERR(load(deep, n, &r, &v), "nesting deeper than 1000 MARKs");
  dsc_pickle_reader_free(r);
  /* deep containers without marks never recurse: 100000 nested lists, fine */
  n = 2 + 2 * 100000 + 1;
  unsigned char *lists = malloc(n);
  lists[0] = 0x80;
  lists[1] = 2;
  for (size_t i = 0; i < 100000; i++) lists[2 + i] = ']';
  for (size_t i = 0; i < 99999; i++) lists[2 + 100000 + i] = 'a';
  lists[n - 2] = 'N'; /* one more push to keep the count even: [[...]], None */
  lists[n - 1] = '.';
  CHECK_OK(load(lists, n, &r, &v));
  CHECK(v && v->kind == DSC_PV_NONE, "top is None");
  dsc_pickle_reader_free(r);
  free(lists);
  /* a stack far too large for memory limits: 5 million DUPs */
  n = 3 + 5000000 + 1;
  unsigned char *dups = malloc(n);
  dups[0] = 0x80;
  dups[1] = 2;
  dups[2] = 'N';
  memset(dups + 3, '2', 5000000);
  dups[n - 1] = '.';
  CHECK_ERR(load(dups, n, &r, &v), "stack holds more than");
  dsc_pickle_reader_free(r);
  free(dups);
  free(deep);
}

/* ---- hand-made checkpoints ---- */

/* A legacy checkpoint: magic, 1001, sys_info {}, the main pickle `main`, then (nfloats >= 0)
 * the key list ['0'] and the storage '0' with `count` floats 0, 1, 2, ... (nfloats of them),
 * or (nfloats < 0) an empty key list. */
static unsigned char *legacy_file(const void *main, size_t main_len, uint64_t count,
                                  long nfloats, size_t *size) {
  static const unsigned char head[] =
      "\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.\x80\x02M\xe9\x03.\x80\x02}.";
  static const unsigned char keys[] = "\x80\x02]X\x01\x00\x00\x00" "0a.";
  static const unsigned char no_keys[] = "\x80\x02].";
  size_t nf = nfloats < 0 ? 0 : (size_t)nfloats;
  size_t n = (sizeof head - 1) + main_len + (nfloats < 0 ? sizeof no_keys - 1 : sizeof keys - 1 + 8) + 4 * nf;
  unsigned char *b = malloc(n), *p = b;
  memcpy(p, head, sizeof head - 1);
  p += sizeof head - 1;
  memcpy(p, main, main_len);
  p += main_len;
  if (nfloats < 0) {
    memcpy(p, no_keys, sizeof no_keys - 1);
    p += sizeof no_keys - 1;
  } else {
    memcpy(p, keys, sizeof keys - 1);
    p += sizeof keys - 1;
    for (int i = 0; i < 8; i++) *p++ = (unsigned char)(count >> (8 * i));
  }
  for (size_t i = 0; i < nf; i++, p += 4) {
    float f = (float)i;
    memcpy(p, &f, 4);
  }
  *size = n;
  return b;
}

static void test_legacy_handmade(void) {
  size_t n;
  unsigned char *b = legacy_file(P(TENSOR_PICKLE), 6, 6, &n);
  dsc_safetensors *got = NULL;
  CHECK_OK(dsc_pth_read_memory(b, n, "h.pth", &got));
  if (got) {
    const dsc_st_tensor *t = dsc_st_find(got, "w");
    float v[4] = {0};
    CHECK(t && t->dtype == DSC_F32 && t->ndim == 2, "w is F32 2-dim");
    CHECK_OK(dsc_st_read_f32(got, "w", v, 4));
    CHECK(v[0] == 1 && v[1] == 2 && v[2] == 4 && v[3] == 5, "w = [[1,2],[4,5]], got %g %g %g %g",
          v[0], v[1], v[2], v[3]);
    dsc_st_close(got);
  }
  free(b);
  /* storage with fewer elements than the tensor needs */
  static const char small_storage[] =
      "\x80\x02}X\x01\x00\x00\x00w"
      "ctorch._utils\n_rebuild_tensor_v2\n"
      "((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x00" "0X\x03\x00\x00\x00" "cpu"
      "K\x05tQK\x01K\x02K\x02\x86K\x03K\x01\x86\x89}tRs.";
  b = legacy_file(small_storage, sizeof small_storage - 1, 5, 5, &n);
  CHECK_ERR(dsc_pth_read_memory(b, n, "h.pth", &got), "h.pth: tensor \"w\": storage too small");
  free(b);
  /* count in the raw data differs from the persistent id */
  b = legacy_file(P(TENSOR_PICKLE), 7, 7, &n);
  CHECK_ERR(dsc_pth_read_memory(b, n, "h.pth", &got), "holds 7 elements");
  free(b);
  /* huge count */
  b = legacy_file(P(TENSOR_PICKLE), UINT64_MAX, 6, &n);
  CHECK_ERR(dsc_pth_read_memory(b, n, "h.pth", &got), "h.pth: storage \"0\"");
  free(b);
  /* strides that overflow */
  static const char overflow[] =
      "\x80\x02}X\x01\x00\x00\x00w"
      "ctorch._utils\n_rebuild_tensor_v2\n"
      "((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x00" "0X\x03\x00\x00\x00" "cpu"
      "K\x06tQK\x00K\x02K\x02\x86\x8a\x08\xff\xff\xff\xff\xff\xff\xff\x3fK\x01\x86\x89}tRs.";
  b = legacy_file(overflow, sizeof overflow - 1, 6, 6, &n);
  CHECK_ERR(dsc_pth_read_memory(b, n, "h.pth", &got), "tensor \"w\"");
  free(b);
  /* 2**28 floats from one element (stride 0): far more than the file could hold */
  static const char expanded[] =
      "\x80\x02}X\x01\x00\x00\x00w"
      "ctorch._utils\n_rebuild_tensor_v2\n"
      "((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x00" "0X\x03\x00\x00\x00" "cpu"
      "K\x06tQK\x00J\x00\x00\x00\x10\x85K\x00\x85\x89}tRs.";
  b = legacy_file(expanded, sizeof expanded - 1, 6, 6, &n);
  CHECK_ERR(dsc_pth_read_memory(b, n, "h.pth", &got), "h.pth: the tensors would take more than");
  free(b);
  /* 9 dimensions */
  static const char nine[] =
      "\x80\x02}X\x01\x00\x00\x00w"
      "ctorch._utils\n_rebuild_tensor_v2\n"
      "((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x00" "0X\x03\x00\x00\x00" "cpu"
      "K\x06tQK\x00(K\x01K\x01K\x01K\x01K\x01K\x01K\x01K\x01K\x01t"
      "(K\x01K\x01K\x01K\x01K\x01K\x01K\x01K\x01K\x01t\x89}tRs.";
  b = legacy_file(nine, sizeof nine - 1, 6, 6, &n);
  CHECK_ERR(dsc_pth_read_memory(b, n, "h.pth", &got), "more than 8 dimensions");
  free(b);
  /* an unsupported storage type only matters for tensors of the state dict */
  static const char complex_t[] =
      "\x80\x02}X\x01\x00\x00\x00w"
      "ctorch._utils\n_rebuild_tensor_v2\n"
      "((X\x07\x00\x00\x00storagectorch\nComplexFloatStorage\nX\x01\x00\x00\x00" "0X\x03\x00\x00\x00" "cpu"
      "K\x03tQK\x00K\x03\x85K\x01\x85\x89}tRs.";
  b = legacy_file(complex_t, sizeof complex_t - 1, 3, 6, &n);
  CHECK_ERR(dsc_pth_read_memory(b, n, "h.pth", &got), "unsupported storage type \"ComplexFloatStorage\"");
  free(b);
  /* not a dict / no tensors */
  static const char list_top[] = "\x80\x02]q\x00.";
  static const char no_tensors[] = "\x80\x02}X\x05\x00\x00\x00" "epochK\x03s.";
  static const char model_object[] =
      "\x80\x02}X\x05\x00\x00\x00modelcmymodule\nNet\n)\x81}bs.";
  b = legacy_file(list_top, sizeof list_top - 1, 6, 6, &n);
  CHECK_ERR(dsc_pth_read_memory(b, n, "h.pth", &got), "listed but never used");
  free(b);
  b = legacy_file(no_tensors, sizeof no_tensors - 1, 6, 6, &n);
  CHECK_ERR(dsc_pth_read_memory(b, n, "h.pth", &got), "h.pth: storage \"0\" is listed but never used");
  free(b);
  b = legacy_file(no_tensors, sizeof no_tensors - 1, 0, -1, &n);
  CHECK_ERR(dsc_pth_read_memory(b, n, "h.pth", &got), "h.pth: no state dict");
  free(b);
  b = legacy_file(model_object, sizeof model_object - 1, 0, -1, &n);
  CHECK_ERR(dsc_pth_read_memory(b, n, "h.pth", &got), "h.pth: its \"model\" entry is a pickled object");
  free(b);
  b = legacy_file(list_top, sizeof list_top - 1, 0, -1, &n);
  CHECK_ERR(dsc_pth_read_memory(b, n, "h.pth", &got), "h.pth: the checkpoint holds a list");
  free(b);
  /* the tensor's storage has no data: its key is missing from the key list */
  b = legacy_file(P(TENSOR_PICKLE), 0, -1, &n);
  CHECK_ERR(dsc_pth_read_memory(b, n, "h.pth", &got), "h.pth: storage \"0\" has no data");
  free(b);
  /* garbage and non-checkpoints */
  CHECK_ERR(dsc_pth_read_memory("hello", 5, "h.pth", &got), "h.pth: not a PyTorch checkpoint");
  CHECK_ERR(dsc_pth_read_memory("\x80\x02N.", 4, "h.pth", &got), "no torch magic number");
  CHECK_ERR(dsc_pth_read_memory("PK\x03\x04garbage", 11, "h.pth", &got), "h.pth: not a readable zip");
  CHECK_ERR(dsc_pth_read("/nonexistent/x.pth", &got), "/nonexistent/x.pth: cannot open");
  CHECK(got == NULL, "no file on errors");
}

static void test_sniff(void) {
  CHECK(dsc_pth_sniff("PK\x03\x04", 4), "zip");
  CHECK(dsc_pth_sniff("\x80\x02", 2), "pickle 2");
  CHECK(dsc_pth_sniff("\x80\x05", 2), "pickle 5");
  CHECK(!dsc_pth_sniff("\x80\x06", 2), "no protocol 6");
  CHECK(!dsc_pth_sniff("PK", 2), "too short");
  CHECK(!dsc_pth_sniff("\x10\x00\x00\x00\x00\x00\x00\x00{", 9), "safetensors is not a pth");
  CHECK(!dsc_pth_sniff("", 0), "empty");
}

static const dsc_test tests[] = {
    {"sniff", test_sniff},
    {"pickle_values", test_pickle_values},
    {"pickle_empty_marks", test_pickle_empty_marks},
    {"pickle_memo_and_duplicates", test_pickle_memo_and_duplicates},
    {"pickle_opaque_objects", test_pickle_opaque_objects},
    {"pickle_tensor", test_pickle_tensor},
    {"pickle_malformed", test_pickle_malformed},
    {"legacy_handmade", test_legacy_handmade},
    {"resnet18_zip", test_resnet18_zip},
    {"resnet18_legacy", test_resnet18_legacy},
    {"resnet18_state_dict_order", test_resnet18_state_dict_order},
    {"misc_zip", test_misc_zip},
    {"misc_legacy", test_misc_legacy},
    {"misc_archive_folder", test_misc_archive_folder},
    {"wrapped_state_dict", test_wrapped_state_dict},
    {"wrapped_model_legacy", test_wrapped_model_legacy},
    {"compressed_rejected", test_compressed_rejected},
    {"memory_matches_file", test_memory_matches_file},
    {"truncated_zip", test_truncated_zip},
    {"truncated_legacy", test_truncated_legacy},
};

int main(int argc, char **argv) {
  int rc = test_main(tests, (int)(sizeof tests / sizeof tests[0]), argc, argv);
  fixtures_remove();
  return rc;
}
