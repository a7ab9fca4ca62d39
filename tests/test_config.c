/* test_config.c: the pretraining configuration (src/core/config.c, docs/config.md).
 *
 * Defaults as config.h states them, the INI reader (sections, comments, quotes) and every
 * error it reports (file:line and key, the closest key suggested), command-line overrides
 * and the `method` alias, finalize's dependent default and checks, exact round trips
 * through the INI text, the written file and the metadata pairs, and docs/config.md's key
 * list against dsc_config_print_keys. Temporary files come from test_temp_template.
 *
 * `test_config --print-keys` prints the key list for docs/config.md. The document is read
 * from docs/config.md (run from the repository root) or $DSC_TEST_CONFIG_DOC.
 */
#include <stdint.h>
#include <unistd.h>

#include "dsc/config.h"
#include "test.h"

/* Writes `text` to a new temporary file; its path goes to `path` (cap 64). */
static void temp_write(char *path, const char *text) {
  test_temp_template(path, 64, "config");
  int fd = mkstemp(path);
  CHECK(fd >= 0, "mkstemp %s", path);
  if (fd < 0) return;
  size_t n = strlen(text);
  CHECK(write(fd, text, n) == (ssize_t)n, "write %s", path);
  close(fd);
}

/* Loads `text` as a file over c; returns the status (the file is removed). */
static dsc_status *load_text(dsc_config *c, const char *text) {
  char path[64];
  temp_write(path, text);
  dsc_status *st = dsc_config_load_file(c, path);
  unlink(path);
  return st;
}

/* Loads `text` over defaults and expects an error containing each of the needles. */
#define CHECK_LOAD_ERR(text, ...)                                                  \
  do {                                                                             \
    dsc_config c_;                                                                 \
    dsc_config_defaults(&c_);                                                      \
    dsc_status *st_ = load_text(&c_, (text));                                      \
    CHECK(st_ != NULL, "loading %s succeeded, expected an error", #text);          \
    if (st_) {                                                                     \
      const char *needles_[] = {__VA_ARGS__};                                      \
      for (size_t i_ = 0; i_ < sizeof needles_ / sizeof needles_[0]; i_++)         \
        CHECK(strstr(st_->msg, needles_[i_]), "error \"%s\" lacks \"%s\"", st_->msg, \
              needles_[i_]);                                                       \
      dsc_status_free(st_);                                                        \
    }                                                                              \
  } while (0)

static void test_defaults(void) {
  dsc_config c;
  dsc_config_defaults(&c);
  CHECK(c.method == DSC_METHOD_DSC_PM, "method %d", (int)c.method);
  CHECK(c.tau_ins == 0.2f && c.tau_pix == 0.2f && c.tau_sem == 0.2f && c.tau_pm == 0.1f, "taus");
  CHECK(c.lambda_ins == 0.5f && c.lambda_pix == 0.5f && c.lambda_sem == 0.5f, "lambdas");
  CHECK(c.lambda_ins_set == 0, "lambda_ins_set");
  CHECK(c.queue == 65536 && c.momentum == 0.999f, "queue, momentum");
  CHECK(c.k_nei == 1 && c.margin == 0.3f, "k_nei, margin");
  CHECK(c.clusters == 100 && c.km_iters == 10, "k-means");
  CHECK(c.prototypes == 150 && c.sinkhorn_eps == 0.05f && c.sinkhorn_iters == 3, "prototypes");
  CHECK(c.freeze_prototypes_steps == 0 && c.bn_groups == 8, "freeze, bn_groups");
  CHECK(!strcmp(c.arch, "resnet50") && !strcmp(c.stem, "standard"), "arch %s stem %s", c.arch,
        c.stem);
  CHECK(c.dim == 128 && c.init[0] == 0, "dim, init");
  CHECK(c.data_path[0] == 0 && !strcmp(c.data_format, "folder") && !strcmp(c.data_split, "train"),
        "data");
  CHECK(c.size == 224 && c.batch == 256 && c.workers == 0 && c.strict == 0 && c.max_pixels == 0,
        "data numbers");
  CHECK(c.scale_min == 0.2f && c.scale_max == 1.0f, "scale");
  CHECK(c.jitter_p == 0.8f && c.gray_p == 0.2f && c.blur_p == 0.5f && c.flip_p == 0.5f, "probs");
  CHECK(c.lr == 0.3 && c.optim_momentum == 0.9f && c.nesterov == 1 && c.weight_decay == 1e-4f,
        "optim");
  CHECK(c.epochs == 800 && c.steps == 0 && c.warmup_steps == 0, "length");
  CHECK(!strcmp(c.out, "runs/dsc") && c.seed == 0 && c.threads == 0, "run");
  CHECK(!strcmp(c.device, "cpu") && !strcmp(c.precision, "auto"), "device, precision");
  CHECK(c.log_every == 10 && c.ckpt_every == 0 && c.resume == 0, "periods");
  CHECK(c.dump_step[0] == 0 && c.dump_at == -1, "dump");
  CHECK_OK(dsc_config_finalize(&c));
  CHECK(!strcmp(c.precision, "fp32"), "precision auto resolves to fp32 on the cpu");
  dsc_config g;
  dsc_config_defaults(&g);
  snprintf(g.device, sizeof g.device, "cuda");
  CHECK_OK(dsc_config_finalize(&g));
  CHECK(!strcmp(g.precision, "bf16"), "precision auto resolves to bf16 on cuda");
  CHECK(c.lambda_ins == 0.5f, "resolved lambda_ins %g", (double)c.lambda_ins);
}

static void test_method_names(void) {
  for (int m = 0; m <= DSC_METHOD_DSC_PM; m++) {
    dsc_method back;
    CHECK_OK(dsc_method_parse(dsc_method_name((dsc_method)m), &back));
    CHECK((int)back == m, "method %d -> %s -> %d", m, dsc_method_name((dsc_method)m), (int)back);
  }
  dsc_method out;
  CHECK_ERR(dsc_method_parse("dsc", &out), "dsc-pm");
  CHECK(!strcmp(dsc_method_name(DSC_METHOD_MOCO_V2), "moco-v2"), "moco-v2");
  CHECK(!strcmp(dsc_method_name(DSC_METHOD_DSC_CE), "dsc-ce"), "dsc-ce");
}

static void test_lambda_ins(void) {
  dsc_config c;
  dsc_config_defaults(&c);
  CHECK_OK(dsc_config_set_arg(&c, "method=moco-v2"));
  CHECK_OK(dsc_config_finalize(&c));
  CHECK(c.lambda_ins == 1.0f && c.lambda_ins_set == 1, "moco-v2: %g", (double)c.lambda_ins);

  dsc_config_defaults(&c);
  CHECK_OK(dsc_config_set_arg(&c, "method.name=dsc-km"));
  CHECK_OK(dsc_config_finalize(&c));
  CHECK(c.lambda_ins == 0.5f, "dsc-km: %g", (double)c.lambda_ins);

  /* An explicit value wins, whichever comes first. */
  dsc_config_defaults(&c);
  CHECK_OK(dsc_config_set_arg(&c, "method.lambda_ins=0.5"));
  CHECK_OK(dsc_config_set_arg(&c, "method=moco-v2"));
  CHECK(c.lambda_ins_set == 1, "set flag");
  CHECK_OK(dsc_config_finalize(&c));
  CHECK(c.lambda_ins == 0.5f, "explicit 0.5 with moco-v2: %g", (double)c.lambda_ins);

  dsc_config_defaults(&c);
  CHECK_OK(load_text(&c, "[method]\nname = moco-v2\nlambda_ins = 0.25\n"));
  CHECK_OK(dsc_config_finalize(&c));
  CHECK(c.lambda_ins == 0.25f, "file: %g", (double)c.lambda_ins);

  /* The pairs carry the resolved value even before finalize. */
  dsc_config_defaults(&c);
  c.method = DSC_METHOD_MOCO_V2;
  int n = 0;
  char **k = NULL, **v = NULL;
  CHECK_OK(dsc_config_to_pairs(&c, &n, &k, &v));
  int found = 0;
  for (int i = 0; i < n; i++)
    if (!strcmp(k[i], "method.lambda_ins")) {
      found = 1;
      CHECK(!strcmp(v[i], "1"), "pair value %s", v[i]);
    }
  CHECK(found, "method.lambda_ins among the pairs");
  dsc_config_pairs_free(n, k, v);
}

static void test_file(void) {
  dsc_config c;
  dsc_config_defaults(&c);
  CHECK_OK(load_text(&c,
                     "# a whole-line comment\n"
                     "; another one\n"
                     "\n"
                     "   [method]   # trailing comment on a header\n"
                     "name = dsc-km\n"
                     "  clusters=50   \n"
                     "\ttau_sem\t=\t0.5 # trailing comment\n"
                     "km_iters = 4 ; semicolon comment\n"
                     "[ data ]\r\n"
                     "path = \"/data/with space # not a comment\"  # but this is\r\n"
                     "format = \"idx\"\n"
                     "batch = 64\n"
                     "[model]\n"
                     "init = /w/x#y;z.safetensors\n"
                     "[run]\n"
                     "dump_step = \"\"\n"
                     "seed = 18446744073709551615\n"
                     "dump_at = -1\n"
                     "[method]\n"
                     "queue = 640\n"));
  CHECK(c.method == DSC_METHOD_DSC_KM, "method");
  CHECK(c.clusters == 50 && c.km_iters == 4 && c.tau_sem == 0.5f, "method numbers");
  CHECK(!strcmp(c.data_path, "/data/with space # not a comment"), "path \"%s\"", c.data_path);
  CHECK(!strcmp(c.data_format, "idx") && c.batch == 64, "format %s", c.data_format);
  CHECK(!strcmp(c.init, "/w/x#y;z.safetensors"), "init \"%s\"", c.init);
  CHECK(c.dump_step[0] == 0, "dump_step \"%s\"", c.dump_step);
  CHECK(c.seed == UINT64_MAX, "seed");
  CHECK(c.queue == 640, "queue");
  CHECK_OK(dsc_config_finalize(&c));

  /* An empty file changes nothing. */
  dsc_config d, e;
  dsc_config_defaults(&d);
  dsc_config_defaults(&e);
  CHECK_OK(load_text(&d, ""));
  CHECK(memcmp(&d, &e, sizeof d) == 0, "empty file");
  /* Optional paths may be empty, quoted or not. */
  CHECK_OK(load_text(&d, "[model]\ninit =\n[run]\ndump_step = # none\n"));
}

static void test_file_errors(void) {
  CHECK_LOAD_ERR("[method]\nclusters = 10\n[methd]\n", ":3:", "methd",
                 "[method], [model], [data], [aug], [optim], [run]");
  CHECK_LOAD_ERR("momentum = 0.9\n", ":1:", "momentum", "[method], [optim]");
  CHECK_LOAD_ERR("[method]\ntau_ins = 0.1\ntau_ns = 0.1\n", ":3:", "method.tau_ns",
                 "did you mean method.tau_ins?");
  CHECK_LOAD_ERR("[method]\nfoo_bar_baz = 1\n", ":2:", "method.foo_bar_baz");
  CHECK_LOAD_ERR("# c\nname = dsc-km\n", ":2:", "name", "outside any section", "[method]");
  CHECK_LOAD_ERR("method.name = dsc-km\n", ":1:", "method.name", "outside any section");
  CHECK_LOAD_ERR("[method]\nmethod.name = dsc-km\n", ":2:", "method.method.name");
  CHECK_LOAD_ERR("[method]\nclusters = 10\n\n[data]\n[method]\nclusters = 20\n", ":6:",
                 "method.clusters", "twice", "line 2");
  CHECK_LOAD_ERR("[method]\nclusters = ten\n", ":2:", "method.clusters", "ten", "integer");
  CHECK_LOAD_ERR("[method]\nclusters = 10x\n", ":2:", "method.clusters", "10x");
  CHECK_LOAD_ERR("[method]\nclusters = 0x10\n", ":2:", "method.clusters", "0x10");
  CHECK_LOAD_ERR("[method]\nclusters = 1.5\n", ":2:", "method.clusters", "1.5");
  CHECK_LOAD_ERR("[method]\nclusters = 0\n", ":2:", "method.clusters", "out of range", "[1, ");
  CHECK_LOAD_ERR("[method]\nclusters = 99999999999\n", ":2:", "method.clusters", "out of range");
  CHECK_LOAD_ERR("[method]\nqueue = 99999999999999999999\n", ":2:", "method.queue",
                 "out of range");
  CHECK_LOAD_ERR("[method]\nclusters =\n", ":2:", "method.clusters", "empty");
  CHECK_LOAD_ERR("[method]\nclusters = \"\"\n", ":2:", "method.clusters", "empty");
  CHECK_LOAD_ERR("[method]\ntau_ins = 0.2.3\n", ":2:", "method.tau_ins", "0.2.3", "number");
  CHECK_LOAD_ERR("[method]\ntau_ins = 0\n", ":2:", "method.tau_ins", "out of range", "(0, inf)");
  CHECK_LOAD_ERR("[method]\ntau_ins = inf\n", ":2:", "method.tau_ins", "finite");
  CHECK_LOAD_ERR("[method]\ntau_ins = nan\n", ":2:", "method.tau_ins", "finite");
  CHECK_LOAD_ERR("[method]\ntau_ins = 1e39\n", ":2:", "method.tau_ins", "finite");
  CHECK_LOAD_ERR("[method]\nmomentum = 1\n", ":2:", "method.momentum", "[0, 1)");
  CHECK_LOAD_ERR("[aug]\nflip_p = 1.5\n", ":2:", "aug.flip_p", "[0, 1]");
  CHECK_LOAD_ERR("[method]\nname = dsc\n", ":2:", "method.name", "\"dsc\"", "dsc-pm");
  CHECK_LOAD_ERR("[model]\narch = resnet101\n", ":2:", "model.arch", "resnet101",
                 "resnet18, resnet34, resnet50");
  CHECK_LOAD_ERR("[model]\nstem = tiny\n", ":2:", "model.stem", "standard, small");
  CHECK_LOAD_ERR("[data]\nformat = coco\n", ":2:", "data.format", "imagefolder");
  CHECK_LOAD_ERR("[run]\ndevice = tpu\n", ":2:", "run.device", "cpu, cuda");
  CHECK_LOAD_ERR("[run]\nprecision = fp16\n", ":2:", "run.precision", "fp32, bf16");
  CHECK_LOAD_ERR("[run]\nout =\n", ":2:", "run.out", "empty");
  CHECK_LOAD_ERR("[run]\ndump_at = -2\n", ":2:", "run.dump_at", "[-1, ");
  CHECK_LOAD_ERR("[run]\nseed = -1\n", ":2:", "run.seed", "-1");
  CHECK_LOAD_ERR("[data]\nsplit = aVeryLongSplitNameThatDoesNotFit\n", ":2:", "data.split",
                 "too long");
  CHECK_LOAD_ERR("[data]\npath = \"/unterminated\n", ":2:", "path", "double quote");
  CHECK_LOAD_ERR("[data]\npath = \"/a\" junk\n", ":2:", "path", "after the closing");
  CHECK_LOAD_ERR("[data]\npath = /a\"b\n", ":2:", "data.path", "double quote");
  CHECK_LOAD_ERR("[data]\njust words\n", ":2:", "key = value");
  CHECK_LOAD_ERR("[data\n", ":1:", "]");
  CHECK_LOAD_ERR("[data] x\n", ":1:", "after the section header");
  CHECK_LOAD_ERR("[data]\n= 3\n", ":2:", "empty key");

  dsc_config c;
  dsc_config_defaults(&c);
  CHECK_ERR(dsc_config_load_file(&c, "/nonexistent/dsc_config.ini"), "/nonexistent/dsc_config.ini");
}

static void test_overrides(void) {
  dsc_config c;
  dsc_config_defaults(&c);
  CHECK_OK(dsc_config_set_arg(&c, "method=dsc-tri"));
  CHECK(c.method == DSC_METHOD_DSC_TRI, "alias");
  CHECK_OK(dsc_config_set_arg(&c, "method.name=densecl"));
  CHECK(c.method == DSC_METHOD_DENSECL, "full name");
  CHECK_OK(dsc_config_set_arg(&c, "run.out=\"/x y\""));
  CHECK(!strcmp(c.out, "/x y"), "quoted override %s", c.out);
  CHECK_OK(dsc_config_set_arg(&c, "data.path=/a=b"));
  CHECK(!strcmp(c.data_path, "/a=b"), "value with '=': %s", c.data_path);
  CHECK_OK(dsc_config_set(&c, "optim.lr", "0.03", "test"));
  CHECK(c.lr == 0.03, "lr");

  CHECK_ERR(dsc_config_set_arg(&c, "clusters"), "clusters");
  CHECK_ERR(dsc_config_set_arg(&c, "=3"), "=3");
  CHECK_ERR(dsc_config_set_arg(&c, "method.clustrs=3"), "method.clustrs");
  CHECK_ERR(dsc_config_set_arg(&c, "method.clustrs=3"), "did you mean method.clusters?");
  CHECK_ERR(dsc_config_set_arg(&c, "data.bach=3"), "did you mean data.batch?");
  CHECK_ERR(dsc_config_set_arg(&c, "nonsense.key=3"), "nonsense.key");
  CHECK_ERR(dsc_config_set_arg(&c, "method=dsc-xx"), "method.name");
  CHECK_ERR(dsc_config_set_arg(&c, "data.batch=-4"), "data.batch");
  CHECK_ERR(dsc_config_set_arg(&c, "data.batch=-4"), "command line");
  CHECK_ERR(dsc_config_set(&c, "data.batch", "x", "my origin"), "my origin");
  /* A failed set leaves the field as it was. */
  CHECK(c.batch == 256 && c.method == DSC_METHOD_DENSECL, "unchanged after errors");
}

static void test_finalize_checks(void) {
  dsc_config c;
#define FIN_ERR(stmt, needle)        \
  do {                               \
    dsc_config_defaults(&c);         \
    stmt;                            \
    CHECK_ERR(dsc_config_finalize(&c), needle); \
  } while (0)
  FIN_ERR(c.batch = 100, "data.batch");
  FIN_ERR(c.batch = 100, "method.bn_groups");
  FIN_ERR((c.batch = 96, c.queue = 1000), "method.queue");
  FIN_ERR((c.batch = 96, c.queue = 1000), "data.batch");
  FIN_ERR(c.clusters = 0, "method.clusters");
  FIN_ERR(c.prototypes = 0, "method.prototypes");
  FIN_ERR(c.km_iters = 0, "method.km_iters");
  FIN_ERR(c.sinkhorn_iters = 0, "method.sinkhorn_iters");
  FIN_ERR(c.dim = 0, "model.dim");
  FIN_ERR(c.k_nei = 0, "method.k_nei");
  FIN_ERR(c.tau_ins = 0, "method.tau_ins");
  FIN_ERR(c.tau_pix = -1, "method.tau_pix");
  FIN_ERR(c.tau_sem = 0, "method.tau_sem");
  FIN_ERR(c.tau_pm = 0, "method.tau_pm");
  FIN_ERR(c.tau_pm = NAN, "method.tau_pm");
  FIN_ERR(c.momentum = 1.0f, "method.momentum");
  FIN_ERR(c.momentum = -0.1f, "method.momentum");
  FIN_ERR(c.warmup_steps = -1, "optim.warmup_steps");
  FIN_ERR(c.steps = -1, "optim.steps");
  FIN_ERR(c.epochs = 0, "optim.epochs");
  FIN_ERR(strcpy(c.arch, "resnet101"), "model.arch");
  FIN_ERR(strcpy(c.stem, "big"), "model.stem");
  FIN_ERR(strcpy(c.device, "tpu"), "run.device");
  FIN_ERR(strcpy(c.precision, "fp16"), "run.precision");
  FIN_ERR(strcpy(c.data_format, "coco"), "data.format");
  FIN_ERR(memset(c.arch, 'a', sizeof c.arch), "model.arch");
  FIN_ERR(c.method = (dsc_method)42, "method.name");
  FIN_ERR((strcpy(c.dump_step, "/tmp/d"), strcpy(c.precision, "bf16")), "run.dump_step");
  FIN_ERR((strcpy(c.dump_step, "/tmp/d"), strcpy(c.precision, "bf16")), "bf16");
  FIN_ERR(c.dump_at = -2, "run.dump_at");
  FIN_ERR((c.scale_min = 0.9f, c.scale_max = 0.5f), "aug.scale_min");
#undef FIN_ERR
  /* epochs may be 0 when steps are given; a dump in fp32 is fine. */
  dsc_config_defaults(&c);
  c.epochs = 0;
  c.steps = 10;
  strcpy(c.dump_step, "/tmp/d");
  c.dump_at = 3;
  CHECK_OK(dsc_config_finalize(&c));
  /* Finalize is idempotent. */
  dsc_config d = c;
  CHECK_OK(dsc_config_finalize(&d));
  CHECK(memcmp(&c, &d, sizeof c) == 0, "second finalize changed the configuration");
}

/* A configuration with every key away from its default. */
static void config_modified(dsc_config *c) {
  static const char *const args[] = {
      "method=dsc-ce", "method.tau_ins=0.07", "method.tau_pix=0.3", "method.tau_sem=0.15",
      "method.tau_pm=0.05", "method.lambda_ins=0.3", "method.lambda_pix=0.7",
      "method.lambda_sem=1.3", "method.queue=4096", "method.momentum=0.99", "method.k_nei=3",
      "method.margin=0.25", "method.clusters=17", "method.km_iters=7", "method.prototypes=33",
      "method.sinkhorn_eps=0.03", "method.sinkhorn_iters=5",
      "method.freeze_prototypes_steps=1234567890123", "method.bn_groups=4",
      "model.arch=resnet18", "model.stem=small", "model.dim=64",
      "model.init=/w/init weights #1;x.safetensors", "data.path=  /data/ leading space",
      "data.format=seg", "data.split=val", "data.size=32", "data.batch=64", "data.workers=3",
      "data.strict=1", "data.max_pixels=1000000", "aug.scale_min=0.08", "aug.scale_max=0.9",
      "aug.jitter_p=0.7", "aug.gray_p=0.1", "aug.blur_p=0", "aug.flip_p=1",
      "optim.lr=0.12345678901234567", "optim.momentum=0.8", "optim.nesterov=0",
      "optim.weight_decay=5e-5", "optim.epochs=3", "optim.steps=1000",
      "optim.warmup_steps=100", "run.out=/tmp/run out", "run.seed=18446744073709551614",
      "run.threads=2", "run.device=cuda", "run.precision=bf16", "run.log_every=1",
      "run.ckpt_every=50", "run.resume=1", "run.dump_step=", "run.dump_at=7"};
  dsc_config_defaults(c);
  for (size_t i = 0; i < sizeof args / sizeof args[0]; i++) CHECK_OK(dsc_config_set_arg(c, args[i]));
}

/* to_ini -> load over defaults must give back exactly `a`. */
static void check_ini_round_trip(const dsc_config *a, const char *what) {
  char *text = dsc_config_to_ini(a);
  CHECK(text != NULL, "%s: to_ini", what);
  if (!text) return;
  dsc_config b;
  dsc_config_defaults(&b);
  dsc_status *st = load_text(&b, text);
  CHECK(st == NULL, "%s: reading back: %s", what, st ? st->msg : "");
  dsc_status_free(st);
  CHECK(memcmp(a, &b, sizeof b) == 0, "%s: INI round trip differs", what);
  free(text);
}

static void test_ini_round_trip(void) {
  dsc_config a;
  dsc_config_defaults(&a);
  CHECK_OK(dsc_config_finalize(&a));
  check_ini_round_trip(&a, "defaults");

  config_modified(&a);
  CHECK_OK(dsc_config_finalize(&a));
  CHECK(a.lr == 0.12345678901234567, "lr parsed");
  check_ini_round_trip(&a, "modified");

  /* The text: every key under its section, the meaning above it, floats %.9g. */
  char *text = dsc_config_to_ini(&a);
  CHECK(text && strstr(text, "\n[method]\n"), "method section");
  CHECK(text && strstr(text, "\nname = dsc-ce\n"), "method name");
  CHECK(text && strstr(text, "\ntau_ins = 0.0700000003\n"), "tau_ins %%.9g");
  CHECK(text && strstr(text, "\nout = \"/tmp/run out\"\n"), "quoted string");
  CHECK(text && strstr(text, "# run folder [default: runs/dsc]\nout = "), "meaning above the key");
  free(text);

  /* The file, written atomically, reads back identically and leaves no temporary behind. */
  char dir[64];
  test_temp_template(dir, sizeof dir, "config_dir");
  CHECK(mkdtemp(dir) != NULL, "mkdtemp");
  char path[128], tmp[136];
  snprintf(path, sizeof path, "%s/config.ini", dir);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  CHECK_OK(dsc_config_write_ini(&a, path));
  CHECK(access(tmp, F_OK) != 0, "temporary file left behind");
  dsc_config b;
  dsc_config_defaults(&b);
  CHECK_OK(dsc_config_load_file(&b, path));
  CHECK(memcmp(&a, &b, sizeof a) == 0, "written file round trip differs");
  char missing[160];
  snprintf(missing, sizeof missing, "%s/no/such/config.ini", dir);
  CHECK_ERR(dsc_config_write_ini(&a, missing), missing);
  unlink(path);
  rmdir(dir);
}

static void test_pairs(void) {
  dsc_config a;
  config_modified(&a);
  CHECK_OK(dsc_config_finalize(&a));
  int n = 0;
  char **keys = NULL, **values = NULL;
  CHECK_OK(dsc_config_to_pairs(&a, &n, &keys, &values));
  CHECK(n > 50, "pairs %d", n);
  int seen_name = 0, seen_lr = 0;
  for (int i = 0; i < n; i++) {
    if (!strcmp(keys[i], "method.name")) seen_name = !strcmp(values[i], "dsc-ce");
    if (!strcmp(keys[i], "optim.lr")) seen_lr = !strcmp(values[i], "0.12345678901234566");
    if (!strcmp(keys[i], "method.tau_pm")) CHECK(!strcmp(values[i], "0.0500000007"), "%s", values[i]);
    if (!strcmp(keys[i], "run.out")) CHECK(!strcmp(values[i], "/tmp/run out"), "%s", values[i]);
  }
  CHECK(seen_name && seen_lr, "method.name and optim.lr pairs");

  /* Other metadata among the pairs is ignored. */
  const char **k2 = malloc(sizeof *k2 * (size_t)(n + 3));
  const char **v2 = malloc(sizeof *v2 * (size_t)(n + 3));
  k2[0] = "step", v2[0] = "12";
  k2[1] = "epoch", v2[1] = "not a number";
  for (int i = 0; i < n; i++) k2[i + 2] = keys[i], v2[i + 2] = values[i];
  k2[n + 2] = "data.images", v2[n + 2] = "1000";
  dsc_config b;
  dsc_config_defaults(&b);
  CHECK_OK(dsc_config_from_pairs(&b, n + 3, k2, v2));
  CHECK(memcmp(&a, &b, sizeof a) == 0, "pairs round trip differs");
  CHECK(b.lambda_ins_set == 1 && b.lambda_ins == 0.3f, "lambda_ins from pairs");

  /* A bad configuration value among them is an error naming the key. */
  v2[5] = "junk";
  CHECK_ERR(dsc_config_from_pairs(&b, n + 3, k2, v2), k2[5]);
  free(k2);
  free(v2);
  dsc_config_pairs_free(n, keys, values);

  /* The resolved lambda_ins wins over the method's default on reload. */
  dsc_config_defaults(&a);
  CHECK_OK(dsc_config_finalize(&a));
  CHECK_OK(dsc_config_to_pairs(&a, &n, &keys, &values));
  dsc_config_defaults(&b);
  CHECK_OK(dsc_config_from_pairs(&b, n, (const char *const *)keys, (const char *const *)values));
  CHECK_OK(dsc_config_set_arg(&b, "method=moco-v2"));
  CHECK_OK(dsc_config_finalize(&b));
  CHECK(b.lambda_ins == 0.5f, "reloaded lambda_ins %g", (double)b.lambda_ins);
  dsc_config_pairs_free(n, keys, values);
}

static char *print_keys_text(void) {
  char *buf = NULL;
  size_t size = 0;
  FILE *f = open_memstream(&buf, &size);
  if (!f) return NULL;
  dsc_config_print_keys(f);
  fclose(f);
  return buf;
}

static void test_print_keys(void) {
  char *text = print_keys_text();
  CHECK(text != NULL, "print_keys");
  if (!text) return;
  /* One line per pair, in the same order, each "name  default  meaning". */
  dsc_config c;
  dsc_config_defaults(&c);
  int n = 0;
  char **keys = NULL, **values = NULL;
  CHECK_OK(dsc_config_to_pairs(&c, &n, &keys, &values));
  const char *line = text;
  for (int i = 0; i < n && line && *line; i++) {
    size_t len = strlen(keys[i]);
    CHECK(!strncmp(line, keys[i], len) && line[len] == ' ', "line %d is not %s", i, keys[i]);
    line = strchr(line, '\n');
    if (line) line++;
  }
  CHECK(line && *line == 0, "print_keys has more lines than pairs");
  CHECK(strstr(text, "run.out") && strstr(text, "runs/dsc"), "run.out default");
  dsc_config_pairs_free(n, keys, values);

  /* docs/config.md holds the same list verbatim, between the marker and the fence. */
  const char *doc = getenv("DSC_TEST_CONFIG_DOC");
  if (!doc || !*doc) doc = "docs/config.md";
  FILE *f = fopen(doc, "r");
  CHECK(f != NULL, "cannot open %s (run from the repository root)", doc);
  if (f) {
    char *block = NULL, *l = NULL;
    size_t bsize = 0, cap = 0;
    FILE *bf = open_memstream(&block, &bsize);
    int state = 0; /* 0 before the marker, 1 before the fence, 2 inside, 3 after */
    while (getline(&l, &cap, f) >= 0 && state < 3) {
      if (state == 0 && strstr(l, "<!-- dsc_config_print_keys")) state = 1;
      else if (state == 1 && !strncmp(l, "```", 3)) state = 2;
      else if (state == 2 && !strncmp(l, "```", 3)) state = 3;
      else if (state == 2) fputs(l, bf);
    }
    free(l);
    fclose(f);
    fclose(bf);
    CHECK(state == 3, "%s: no complete key block after the dsc_config_print_keys marker", doc);
    CHECK(state != 3 || !strcmp(block, text),
          "%s's key list differs from dsc_config_print_keys: regenerate it with "
          "`build/tests/test_config --print-keys`",
          doc);
    free(block);
  }
  free(text);
}

/* The example file of docs/config.md loads and finalizes. */
static void test_doc_example(void) {
  const char *doc = getenv("DSC_TEST_CONFIG_DOC");
  if (!doc || !*doc) doc = "docs/config.md";
  FILE *f = fopen(doc, "r");
  CHECK(f != NULL, "cannot open %s (run from the repository root)", doc);
  if (!f) return;
  char *example = NULL, *l = NULL;
  size_t esize = 0, cap = 0;
  FILE *ef = open_memstream(&example, &esize);
  int state = 0; /* 0 before the ```ini fence, 1 inside, 2 after */
  while (getline(&l, &cap, f) >= 0 && state < 2) {
    if (state == 0 && !strncmp(l, "```ini", 6)) state = 1;
    else if (state == 1 && !strncmp(l, "```", 3)) state = 2;
    else if (state == 1) fputs(l, ef);
  }
  free(l);
  fclose(f);
  fclose(ef);
  CHECK(state == 2, "%s: no ```ini example", doc);
  dsc_config c;
  dsc_config_defaults(&c);
  CHECK_OK(load_text(&c, example));
  CHECK_OK(dsc_config_finalize(&c));
  CHECK(c.method == DSC_METHOD_DSC_KM && !strcmp(c.data_path, "/data/coco/train2017"), "example");
  free(example);
}

static const dsc_test tests[] = {
    {"defaults", test_defaults},
    {"method_names", test_method_names},
    {"lambda_ins", test_lambda_ins},
    {"file", test_file},
    {"file_errors", test_file_errors},
    {"overrides", test_overrides},
    {"finalize_checks", test_finalize_checks},
    {"ini_round_trip", test_ini_round_trip},
    {"pairs", test_pairs},
    {"print_keys", test_print_keys},
    {"doc_example", test_doc_example},
};

int main(int argc, char **argv) {
  if (argc > 1 && !strcmp(argv[1], "--print-keys")) {
    dsc_config_print_keys(stdout);
    return 0;
  }
  return test_main(tests, (int)(sizeof tests / sizeof tests[0]), argc, argv);
}
