/* config.c: the pretraining configuration (include/dsc/config.h, docs/config.md).
 *
 * Conventions: one static table, `config_keys`, describes every key: its `section.key`
 * name, value type, the struct field (offsetof), the default as text, the allowed range or
 * choices and a one-line meaning. Defaults, parsing, overrides, finalize's range checks, the
 * INI writer, the metadata pairs and the key listing are each one loop over that table.
 * Hand-written per-key code is limited to the method enum, the string choices and the
 * lambda_ins dependency (any explicit value sets lambda_ins_set; finalize resolves it) plus
 * finalize's combination checks.
 *
 * Values as text: integers are plain decimal (optional sign), floats anything strtod reads
 * in full that is finite, strings are taken verbatim (no double quotes or control
 * characters inside; the INI reader strips one pair of surrounding quotes). Floats are
 * written with %.9g (exact for float); the one double (optim.lr) with %.9g when that reads
 * back exactly, else %.17g.
 */
#include "dsc/config.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- the table ---- */

typedef enum key_type {
  KEY_METHOD, /* dsc_method, parsed by dsc_method_parse */
  KEY_FLOAT,
  KEY_DOUBLE,
  KEY_INT,
  KEY_INT64,
  KEY_UINT64,
  KEY_STRING, /* char[cap]; `choices` limits the values when not NULL */
} key_type;

enum {
  KEY_LO_OPEN = 1,   /* the lower bound is excluded */
  KEY_HI_OPEN = 2,   /* the upper bound is excluded */
  KEY_EMPTY_OK = 4,  /* a string that may be empty ("" = none) */
};

typedef struct config_key {
  const char *name;     /* "section.key" */
  key_type type;
  size_t offset;        /* of the field in dsc_config */
  size_t cap;           /* sizeof the field (the string buffer's capacity) */
  const char *def;      /* the default, as text */
  double lo, hi;        /* numeric range (INFINITY = unbounded above) */
  int flags;
  const char *choices;  /* strings: "a|b|c", or NULL for any */
  const char *meaning;
} config_key;

#define FIELD(f) offsetof(dsc_config, f), sizeof(((dsc_config *)0)->f)
#define INF INFINITY

static const config_key config_keys[] = {
    {"method.name", KEY_METHOD, FIELD(method), "dsc-pm", 0, 0, 0,
     "moco-v2|densecl|dsc-nei|dsc-tri|dsc-ce|dsc-km|dsc-pm",
     "the method (METHOD.md §4); alias on the command line: method=NAME"},
    {"method.tau_ins", KEY_FLOAT, FIELD(tau_ins), "0.2", 0, INF, KEY_LO_OPEN, NULL,
     "temperature of the instance loss (§4.1)"},
    {"method.tau_pix", KEY_FLOAT, FIELD(tau_pix), "0.2", 0, INF, KEY_LO_OPEN, NULL,
     "temperature of the pixel loss (§4.2)"},
    {"method.tau_sem", KEY_FLOAT, FIELD(tau_sem), "0.2", 0, INF, KEY_LO_OPEN, NULL,
     "temperature of the semantic losses dsc-nei and dsc-km (§4.3, §4.5)"},
    {"method.tau_pm", KEY_FLOAT, FIELD(tau_pm), "0.1", 0, INF, KEY_LO_OPEN, NULL,
     "temperature of the prototype softmax, dsc-pm and dsc-ce (§4.6)"},
    {"method.lambda_ins", KEY_FLOAT, FIELD(lambda_ins), "0.5", 0, INF, 0, NULL,
     "weight of the instance loss (1 for moco-v2, 0.5 otherwise; an explicit value wins)"},
    {"method.lambda_pix", KEY_FLOAT, FIELD(lambda_pix), "0.5", 0, INF, 0, NULL,
     "weight of the pixel loss"},
    {"method.lambda_sem", KEY_FLOAT, FIELD(lambda_sem), "0.5", 0, INF, 0, NULL,
     "weight of the semantic loss"},
    {"method.queue", KEY_INT64, FIELD(queue), "65536", 1, INF, 0, NULL,
     "queue length L, a multiple of data.batch (§3)"},
    {"method.momentum", KEY_FLOAT, FIELD(momentum), "0.999", 0, 1, KEY_HI_OPEN, NULL,
     "EMA momentum m of the momentum encoder (§5)"},
    {"method.k_nei", KEY_INT, FIELD(k_nei), "1", 1, INF, 0, NULL,
     "neighbors per query pixel, dsc-nei and dsc-tri (§4.3)"},
    {"method.margin", KEY_FLOAT, FIELD(margin), "0.3", 0, INF, 0, NULL,
     "triplet margin, dsc-tri (§4.4)"},
    {"method.clusters", KEY_INT, FIELD(clusters), "100", 1, INF, 0, NULL,
     "k-means clusters K, dsc-km (§4.5)"},
    {"method.km_iters", KEY_INT, FIELD(km_iters), "10", 1, INF, 0, NULL,
     "k-means iterations per step, dsc-km (§4.5)"},
    {"method.prototypes", KEY_INT, FIELD(prototypes), "150", 1, INF, 0, NULL,
     "prototypes K, dsc-pm and dsc-ce (§4.6)"},
    {"method.sinkhorn_eps", KEY_FLOAT, FIELD(sinkhorn_eps), "0.05", 0, INF, KEY_LO_OPEN, NULL,
     "Sinkhorn epsilon (§4.6)"},
    {"method.sinkhorn_iters", KEY_INT, FIELD(sinkhorn_iters), "3", 1, INF, 0, NULL,
     "Sinkhorn iterations (§4.6)"},
    {"method.freeze_prototypes_steps", KEY_INT64, FIELD(freeze_prototypes_steps), "0", 0, INF, 0,
     NULL, "prototypes are frozen at steps s < this (§4.6)"},
    {"method.bn_groups", KEY_INT, FIELD(bn_groups), "8", 1, INF, 0, NULL,
     "BatchNorm groups G in one process; must divide data.batch (§5)"},

    {"model.arch", KEY_STRING, FIELD(arch), "resnet50", 0, 0, 0, "resnet18|resnet34|resnet50",
     "backbone"},
    {"model.stem", KEY_STRING, FIELD(stem), "standard", 0, 0, 0, "standard|small",
     "stem: standard (7x7/2 conv + max-pool) or small (3x3/1 conv, no max-pool)"},
    {"model.dim", KEY_INT, FIELD(dim), "128", 1, INF, 0, NULL,
     "embedding dimension D of the necks"},
    {"model.init", KEY_STRING, FIELD(init), "", 0, 0, KEY_EMPTY_OK, NULL,
     "initial backbone weights: a dsc checkpoint or export, torchvision/timm ResNet weights as "
     ".safetensors or PyTorch .pth (empty = random initialization)"},
    {"model.allow_partial", KEY_INT, FIELD(allow_partial), "0", 0, 1, 0, NULL,
     "1 = model.init may miss, add or mis-shape tensors (listed in the load report; the rest "
     "keeps its random initialization); 0 = anything but an exact backbone match is an error"},

    {"data.path", KEY_STRING, FIELD(data_path), "", 0, 0, KEY_EMPTY_OK, NULL,
     "dataset location (required by pretrain)"},
    {"data.format", KEY_STRING, FIELD(data_format), "folder", 0, 0, 0,
     "folder|imagefolder|idx|seg|cityscapes", "dataset layout"},
    {"data.split", KEY_STRING, FIELD(data_split), "train", 0, 0, 0, NULL,
     "split of an idx (train, t10k), seg (train, val, trainaug) or cityscapes (train, val, test) dataset"},
    {"data.size", KEY_INT, FIELD(size), "224", 1, 4096, 0, NULL, "view size in pixels"},
    {"data.batch", KEY_INT, FIELD(batch), "256", 1, INF, 0, NULL,
     "global batch N over all processes"},
    {"data.workers", KEY_INT, FIELD(workers), "0", 0, INF, 0, NULL,
     "loader threads (0 = as many as run.threads)"},
    {"data.strict", KEY_INT, FIELD(strict), "0", 0, 1, 0, NULL,
     "1 = an undecodable image is an error instead of a skipped warning"},
    {"data.max_pixels", KEY_INT64, FIELD(max_pixels), "0", 0, INF, 0, NULL,
     "decode cap in pixels per image (0 = the library default)"},

    {"aug.scale_min", KEY_FLOAT, FIELD(scale_min), "0.2", 0, 1, KEY_LO_OPEN, NULL,
     "smallest crop area fraction of RandomResizedCrop (§6)"},
    {"aug.scale_max", KEY_FLOAT, FIELD(scale_max), "1", 0, 1, KEY_LO_OPEN, NULL,
     "largest crop area fraction of RandomResizedCrop (§6)"},
    {"aug.jitter_p", KEY_FLOAT, FIELD(jitter_p), "0.8", 0, 1, 0, NULL,
     "probability of color jitter (§6)"},
    {"aug.gray_p", KEY_FLOAT, FIELD(gray_p), "0.2", 0, 1, 0, NULL,
     "probability of grayscale (§6)"},
    {"aug.blur_p", KEY_FLOAT, FIELD(blur_p), "0.5", 0, 1, 0, NULL,
     "probability of Gaussian blur (§6)"},
    {"aug.flip_p", KEY_FLOAT, FIELD(flip_p), "0.5", 0, 1, 0, NULL,
     "probability of a horizontal flip (§6)"},

    {"optim.lr", KEY_DOUBLE, FIELD(lr), "0.3", 0, INF, 0, NULL,
     "base learning rate at batch 256, scaled by data.batch/256 (§5)"},
    {"optim.momentum", KEY_FLOAT, FIELD(optim_momentum), "0.9", 0, 1, KEY_HI_OPEN, NULL,
     "SGD momentum (§5)"},
    {"optim.nesterov", KEY_INT, FIELD(nesterov), "1", 0, 1, 0, NULL, "1 = Nesterov momentum"},
    {"optim.weight_decay", KEY_FLOAT, FIELD(weight_decay), "0.0001", 0, INF, 0, NULL,
     "weight decay"},
    {"optim.epochs", KEY_INT64, FIELD(epochs), "800", 0, INF, 0, NULL,
     "epochs (used when optim.steps = 0)"},
    {"optim.steps", KEY_INT64, FIELD(steps), "0", 0, INF, 0, NULL,
     "total steps (> 0 overrides optim.epochs)"},
    {"optim.warmup_steps", KEY_INT64, FIELD(warmup_steps), "0", 0, INF, 0, NULL,
     "linear warm-up steps (§5)"},

    {"run.out", KEY_STRING, FIELD(out), "runs/dsc", 0, 0, 0, NULL, "run folder"},
    {"run.seed", KEY_UINT64, FIELD(seed), "0", 0, INF, 0, NULL, "seed of every random draw"},
    {"run.threads", KEY_INT, FIELD(threads), "0", 0, INF, 0, NULL, "CPU threads (0 = all cores)"},
    {"run.device", KEY_STRING, FIELD(device), "cpu", 0, 0, 0, "cpu|cuda", "device"},
    {"run.precision", KEY_STRING, FIELD(precision), "auto", 0, 0, 0, "auto|fp32|bf16",
     "precision of convolution and matrix-product inputs (§5); auto: bf16 on cuda, fp32 on cpu"},
    {"run.log_every", KEY_INT64, FIELD(log_every), "10", 1, INF, 0, NULL,
     "a metrics line every this many steps"},
    {"run.ckpt_every", KEY_INT64, FIELD(ckpt_every), "0", 0, INF, 0, NULL,
     "also a numbered checkpoint every this many steps (0 = only the latest)"},
    {"run.resume", KEY_INT, FIELD(resume), "0", 0, 1, 0, NULL,
     "1 = continue from the latest checkpoint in run.out"},
    {"run.dump_step", KEY_STRING, FIELD(dump_step), "", 0, 0, KEY_EMPTY_OK, NULL,
     "write the step dump into this folder and stop (empty = no dump; fp32 only)"},
    {"run.dump_at", KEY_INT64, FIELD(dump_at), "-1", -1, INF, 0, NULL,
     "step to dump (-1 = the first step the run takes)"},
    {"run.dist_timeout", KEY_DOUBLE, FIELD(dist_timeout), "600", 1, INF, 0, NULL,
     "several processes: seconds a collective may wait for the other ranks before the job is "
     "ended (a rank died or hung; docs/distributed.md)"},
};

#define NKEYS ((int)(sizeof config_keys / sizeof config_keys[0]))

static const char *const method_names[] = {"moco-v2", "densecl", "dsc-nei", "dsc-tri",
                                           "dsc-ce",  "dsc-km",  "dsc-pm"};
#define NMETHODS ((int)(sizeof method_names / sizeof method_names[0]))

const char *dsc_method_name(dsc_method m) {
  if ((int)m < 0 || (int)m >= NMETHODS) return "unknown";
  return method_names[m];
}

dsc_status *dsc_method_parse(const char *name, dsc_method *out) {
  for (int i = 0; i < NMETHODS; i++)
    if (strcmp(name, method_names[i]) == 0) {
      *out = (dsc_method)i;
      return NULL;
    }
  return dsc_errorf("unknown method \"%s\" (one of: moco-v2, densecl, dsc-nei, dsc-tri, dsc-ce, "
                    "dsc-km, dsc-pm)",
                    name);
}

/* ---- small helpers ---- */

static void *key_ptr(dsc_config *c, const config_key *k) { return (char *)c + k->offset; }
static const void *key_cptr(const dsc_config *c, const config_key *k) {
  return (const char *)c + k->offset;
}

static const config_key *key_find(const char *name) {
  for (int i = 0; i < NKEYS; i++)
    if (strcmp(config_keys[i].name, name) == 0) return &config_keys[i];
  return NULL;
}

/* Levenshtein distance of two short strings (longer ones count as far apart). */
static int edit_distance(const char *a, const char *b) {
  enum { MAXLEN = 64 };
  size_t n = strlen(a), m = strlen(b);
  if (n >= MAXLEN || m >= MAXLEN) return MAXLEN;
  int prev[MAXLEN + 1], cur[MAXLEN + 1];
  for (size_t j = 0; j <= m; j++) prev[j] = (int)j;
  for (size_t i = 1; i <= n; i++) {
    cur[0] = (int)i;
    for (size_t j = 1; j <= m; j++) {
      int sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
      int del = prev[j] + 1, ins = cur[j - 1] + 1;
      cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
    }
    memcpy(prev, cur, sizeof(int) * (m + 1));
  }
  return prev[m];
}

/* " (did you mean X?)" for the closest key within edit distance 2, or "". */
static void key_suggest(const char *name, char *buf, size_t cap) {
  int best = 3;
  const char *best_name = NULL;
  for (int i = 0; i < NKEYS; i++) {
    int d = edit_distance(name, config_keys[i].name);
    if (d < best) {
      best = d;
      best_name = config_keys[i].name;
    }
  }
  if (best_name)
    snprintf(buf, cap, " (did you mean %s?)", best_name);
  else
    buf[0] = 0;
}

/* "[lo, hi)" style text of a numeric key's range, or "one of: a, b" for choices. */
static void key_allowed(const config_key *k, char *buf, size_t cap) {
  if (k->type == KEY_METHOD || k->type == KEY_STRING) {
    if (!k->choices) {
      snprintf(buf, cap, "%s, without double quotes or control characters, at most %zu bytes",
               (k->flags & KEY_EMPTY_OK) ? "any text" : "non-empty text", k->cap - 1);
      return;
    }
    size_t n = (size_t)snprintf(buf, cap, "one of: ");
    for (const char *p = k->choices; *p && n + 3 < cap; p++) {
      if (*p == '|') {
        buf[n++] = ',';
        buf[n++] = ' ';
      } else {
        buf[n++] = *p;
      }
    }
    buf[n < cap ? n : cap - 1] = 0;
    return;
  }
  if (k->type == KEY_UINT64) {
    snprintf(buf, cap, "an integer in [0, 18446744073709551615]");
    return;
  }
  double hi = k->hi;
  if (k->type == KEY_INT && isinf(hi)) hi = 2147483647.0;
  const char *what = (k->type == KEY_FLOAT || k->type == KEY_DOUBLE) ? "a number" : "an integer";
  char hib[64];
  if (isinf(hi))
    snprintf(hib, sizeof hib, "inf)");
  else
    snprintf(hib, sizeof hib, "%.17g%c", hi, (k->flags & KEY_HI_OPEN) ? ')' : ']');
  snprintf(buf, cap, "%s in %c%.17g, %s", what, (k->flags & KEY_LO_OPEN) ? '(' : '[', k->lo, hib);
}

static int in_range(const config_key *k, double v) {
  if (k->flags & KEY_LO_OPEN ? !(v > k->lo) : !(v >= k->lo)) return 0;
  if (isinf(k->hi)) return 1;
  return k->flags & KEY_HI_OPEN ? v < k->hi : v <= k->hi;
}

static int choice_ok(const char *choices, const char *v) {
  size_t n = strlen(v);
  for (const char *p = choices; *p;) {
    const char *e = strchr(p, '|');
    size_t len = e ? (size_t)(e - p) : strlen(p);
    if (len == n && strncmp(p, v, n) == 0) return 1;
    if (!e) break;
    p = e + 1;
  }
  return 0;
}

/* Plain decimal: optional sign, then digits only. */
static int is_decimal(const char *s, int allow_minus) {
  if (*s == '+' || (allow_minus && *s == '-')) s++;
  if (!*s) return 0;
  for (; *s; s++)
    if (*s < '0' || *s > '9') return 0;
  return 1;
}

/* The error for a bad value of `k`: "ORIGIN: KEY = "VALUE": REASON (allowed: ...)". */
static dsc_status *value_error(const config_key *k, const char *value, const char *origin,
                               const char *reason) {
  char allowed[256];
  key_allowed(k, allowed, sizeof allowed);
  return dsc_errorf("%s: %s = \"%.200s\": %s (allowed: %s)", origin, k->name, value, reason,
                    allowed);
}

/* Parses `value` (already unquoted) into k's field of c. */
static dsc_status *key_store(dsc_config *c, const config_key *k, const char *value,
                             const char *origin) {
  void *p = key_ptr(c, k);
  if (!*value && !(k->flags & KEY_EMPTY_OK)) return value_error(k, value, origin, "empty value");
  switch (k->type) {
    case KEY_METHOD: {
      dsc_method m = DSC_METHOD_DSC_PM;
      dsc_status *st = dsc_method_parse(value, &m);
      if (st) {
        dsc_status_free(st);
        return value_error(k, value, origin, "unknown method");
      }
      *(dsc_method *)p = m;
      break;
    }
    case KEY_FLOAT:
    case KEY_DOUBLE: {
      char *end = NULL;
      errno = 0;
      double v = strtod(value, &end);
      if (end == value || *end || (value[0] == ' ' || value[0] == '\t'))
        return value_error(k, value, origin, "not a number");
      if (!isfinite(v) || (k->type == KEY_FLOAT && !isfinite((float)v)))
        return value_error(k, value, origin, "not a finite number");
      if (k->type == KEY_FLOAT) {
        float f = (float)v;
        if (!in_range(k, f)) return value_error(k, value, origin, "out of range");
        *(float *)p = f;
      } else {
        if (!in_range(k, v)) return value_error(k, value, origin, "out of range");
        *(double *)p = v;
      }
      break;
    }
    case KEY_INT:
    case KEY_INT64: {
      if (!is_decimal(value, 1)) return value_error(k, value, origin, "not an integer");
      errno = 0;
      long long v = strtoll(value, NULL, 10);
      int bad = errno == ERANGE || !in_range(k, (double)v);
      if (k->type == KEY_INT && (v < -2147483647LL - 1 || v > 2147483647LL)) bad = 1;
      if (bad) return value_error(k, value, origin, "out of range");
      if (k->type == KEY_INT)
        *(int *)p = (int)v;
      else
        *(int64_t *)p = (int64_t)v;
      break;
    }
    case KEY_UINT64: {
      if (!is_decimal(value, 0)) return value_error(k, value, origin, "not a non-negative integer");
      errno = 0;
      unsigned long long v = strtoull(value, NULL, 10);
      if (errno == ERANGE) return value_error(k, value, origin, "out of range");
      *(uint64_t *)p = (uint64_t)v;
      break;
    }
    case KEY_STRING: {
      size_t n = strlen(value);
      if (n >= k->cap) return value_error(k, value, origin, "too long");
      for (const char *s = value; *s; s++)
        if (*s == '"' || (unsigned char)*s < 0x20 || *s == 0x7f)
          return value_error(k, value, origin, "contains a double quote or a control character");
      if (k->choices && !choice_ok(k->choices, value))
        return value_error(k, value, origin, "not one of the choices");
      memset(p, 0, k->cap);
      memcpy(p, value, n);
      break;
    }
  }
  /* The lambda_ins dependency: an explicit value wins over the method's default. */
  if (k->offset == offsetof(dsc_config, lambda_ins)) c->lambda_ins_set = 1;
  return NULL;
}

/* lambda_ins as finalize resolves it. */
static float lambda_ins_resolved(const dsc_config *c) {
  if (c->lambda_ins_set) return c->lambda_ins;
  return c->method == DSC_METHOD_MOCO_V2 ? 1.0f : 0.5f;
}

/* The value of k in c as text (strings verbatim, without quotes). */
static void key_format(const dsc_config *c, const config_key *k, char *buf, size_t cap) {
  const void *p = key_cptr(c, k);
  switch (k->type) {
    case KEY_METHOD:
      snprintf(buf, cap, "%s", dsc_method_name(*(const dsc_method *)p));
      break;
    case KEY_FLOAT: {
      float f = *(const float *)p;
      if (k->offset == offsetof(dsc_config, lambda_ins)) f = lambda_ins_resolved(c);
      snprintf(buf, cap, "%.9g", (double)f);
      break;
    }
    case KEY_DOUBLE: {
      double d = *(const double *)p;
      snprintf(buf, cap, "%.9g", d);
      if (strtod(buf, NULL) != d) snprintf(buf, cap, "%.17g", d);
      break;
    }
    case KEY_INT:
      snprintf(buf, cap, "%d", *(const int *)p);
      break;
    case KEY_INT64:
      snprintf(buf, cap, "%lld", (long long)*(const int64_t *)p);
      break;
    case KEY_UINT64:
      snprintf(buf, cap, "%llu", (unsigned long long)*(const uint64_t *)p);
      break;
    case KEY_STRING:
      snprintf(buf, cap, "%.*s", (int)k->cap, (const char *)p);
      break;
  }
}

/* ---- public API ---- */

void dsc_config_defaults(dsc_config *c) {
  memset(c, 0, sizeof *c);
  for (int i = 0; i < NKEYS; i++) {
    /* The table's defaults are valid by construction (test_config checks each one). */
    dsc_status_free(key_store(c, &config_keys[i], config_keys[i].def, "default"));
  }
  c->lambda_ins_set = 0;
}

dsc_status *dsc_config_set(dsc_config *c, const char *key, const char *value, const char *origin) {
  if (!origin) origin = "command line";
  if (strcmp(key, "method") == 0) key = "method.name";
  const config_key *k = key_find(key);
  if (!k) {
    char hint[128];
    key_suggest(key, hint, sizeof hint);
    return dsc_errorf("%s: unknown key \"%.200s\"%s", origin, key, hint);
  }
  /* Optional surrounding double quotes, as in a file. */
  size_t n = strlen(value);
  if (n >= 2 && value[0] == '"' && value[n - 1] == '"') {
    char *copy = strndup(value + 1, n - 2);
    if (!copy) return dsc_errorf("%s: out of memory", origin);
    dsc_status *st = key_store(c, k, copy, origin);
    free(copy);
    return st;
  }
  return key_store(c, k, value, origin);
}

dsc_status *dsc_config_set_arg(dsc_config *c, const char *arg) {
  const char *eq = strchr(arg, '=');
  if (!eq || eq == arg)
    return dsc_errorf("command line: \"%.200s\" is not key=value (e.g. method.clusters=100)", arg);
  char *key = strndup(arg, (size_t)(eq - arg));
  if (!key) return dsc_errorf("command line: out of memory");
  dsc_status *st = dsc_config_set(c, key, eq + 1, "command line");
  free(key);
  return st;
}

/* ---- the INI reader ---- */

static char *trim(char *s) {
  while (*s == ' ' || *s == '\t') s++;
  size_t n = strlen(s);
  while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
    s[--n] = 0;
  return s;
}

/* Cuts a trailing comment: '#' or ';' at the start or after whitespace. */
static void cut_comment(char *s) {
  for (char *p = s; *p; p++)
    if ((*p == '#' || *p == ';') && (p == s || p[-1] == ' ' || p[-1] == '\t')) {
      *p = 0;
      return;
    }
}

/* "[a], [b], [c]": every section when key is NULL, else the sections holding `key`,
 * in table order. */
static void sections_list(const char *key, char *buf, size_t cap) {
  size_t n = 0;
  int count = 0;
  buf[0] = 0;
  for (int i = 0; i < NKEYS; i++) {
    const char *name = config_keys[i].name, *dot = strchr(name, '.');
    int len = (int)(dot - name);
    if (key && strcmp(dot + 1, key) != 0) continue;
    if (i > 0 && !key) {
      const char *prev = config_keys[i - 1].name;
      if (strncmp(prev, name, (size_t)len + 1) == 0) continue;
    }
    if (n + (size_t)len + 8 >= cap) break;
    n += (size_t)snprintf(buf + n, cap - n, "%s[%.*s]", count ? ", " : "", len, name);
    count++;
  }
}

static int section_known(const char *sec) {
  size_t n = strlen(sec);
  for (int i = 0; i < NKEYS; i++)
    if (strncmp(config_keys[i].name, sec, n) == 0 && config_keys[i].name[n] == '.') return 1;
  return 0;
}

/* Handles one line (modified in place); `section` is the current section ("" before any). */
static dsc_status *ini_line(dsc_config *c, char *line, const char *path, int lineno,
                            char *section, size_t section_cap, int *seen) {
  char *s = trim(line);
  if (!*s || *s == '#' || *s == ';') return NULL;
  if (*s == '[') {
    char *close = strchr(s, ']');
    if (!close) return dsc_errorf("%s:%d: section header without ']'", path, lineno);
    *close = 0;
    char *rest = close + 1;
    cut_comment(rest);
    if (*trim(rest)) return dsc_errorf("%s:%d: text after the section header", path, lineno);
    char *name = trim(s + 1);
    if (!section_known(name)) {
      char known[256];
      sections_list(NULL, known, sizeof known);
      return dsc_errorf("%s:%d: unknown section [%.100s] (sections: %s)", path, lineno, name,
                        known);
    }
    snprintf(section, section_cap, "%s", name);
    return NULL;
  }
  char *eq = strchr(s, '=');
  if (!eq) return dsc_errorf("%s:%d: expected key = value, [section] or a comment", path, lineno);
  *eq = 0;
  char *key = trim(s);
  char *value = eq + 1;
  while (*value == ' ' || *value == '\t') value++;
  if (*value == '"') {
    char *end = strchr(value + 1, '"');
    if (!end) return dsc_errorf("%s:%d: %s: unterminated double quote", path, lineno, key);
    *end = 0;
    char *rest = end + 1;
    cut_comment(rest);
    if (*trim(rest))
      return dsc_errorf("%s:%d: %s: text after the closing double quote", path, lineno, key);
    value = value + 1;
  } else {
    cut_comment(value);
    value = trim(value);
  }
  if (!*key) return dsc_errorf("%s:%d: empty key", path, lineno);
  if (!section[0]) {
    /* Point to the section that holds such a key, when one does. */
    const char *qdot = strchr(key, '.');
    if (qdot && key_find(key))
      return dsc_errorf("%s:%d: key \"%.100s\" outside any section (in a file write it as "
                        "[%.*s] then %s = ...)",
                        path, lineno, key, (int)(qdot - key), key, qdot + 1);
    char holders[256];
    sections_list(key, holders, sizeof holders);
    if (holders[0])
      return dsc_errorf("%s:%d: key \"%.100s\" outside any section (write it under %s)", path,
                        lineno, key, holders);
    return dsc_errorf("%s:%d: key \"%.100s\" outside any section (keys go under [section] "
                      "headers as name = value)",
                      path, lineno, key);
  }
  char full[256];
  snprintf(full, sizeof full, "%s.%s", section, key);
  const config_key *k = key_find(full);
  if (!k) {
    char hint[128];
    key_suggest(full, hint, sizeof hint);
    return dsc_errorf("%s:%d: unknown key %.200s%s", path, lineno, full, hint);
  }
  int idx = (int)(k - config_keys);
  if (seen[idx])
    return dsc_errorf("%s:%d: %s given twice (first at line %d)", path, lineno, full, seen[idx]);
  seen[idx] = lineno;
  char origin[DSC_CONFIG_PATH_MAX + 32];
  snprintf(origin, sizeof origin, "%s:%d", path, lineno);
  return key_store(c, k, value, origin);
}

dsc_status *dsc_config_load_file(dsc_config *c, const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) return dsc_errorf("%s: cannot open configuration: %s", path, strerror(errno));
  int seen[NKEYS];
  memset(seen, 0, sizeof seen);
  char section[64] = "";
  char *line = NULL;
  size_t cap = 0;
  ssize_t len;
  int lineno = 0;
  dsc_status *st = NULL;
  while (!st && (len = getline(&line, &cap, f)) >= 0) {
    lineno++;
    if ((size_t)len != strlen(line))
      st = dsc_errorf("%s:%d: NUL byte in the line", path, lineno);
    else
      st = ini_line(c, line, path, lineno, section, sizeof section, seen);
  }
  if (!st && ferror(f)) st = dsc_errorf("%s: read error: %s", path, strerror(errno));
  free(line);
  fclose(f);
  return st;
}

/* ---- finalize ---- */

dsc_status *dsc_config_finalize(dsc_config *c) {
  /* Every key's own range or choices again (fields may have been set directly). */
  for (int i = 0; i < NKEYS; i++) {
    const config_key *k = &config_keys[i];
    char text[DSC_CONFIG_PATH_MAX + 64];
    if (k->type == KEY_STRING) {
      const char *s = key_cptr(c, k);
      if (!memchr(s, 0, k->cap)) return dsc_errorf("%s: not NUL-terminated", k->name);
    }
    if (k->type == KEY_METHOD && ((int)c->method < 0 || (int)c->method >= NMETHODS))
      return dsc_errorf("method.name: invalid method value %d", (int)c->method);
    key_format(c, k, text, sizeof text);
    dsc_config probe;
    memcpy(&probe, c, sizeof probe);
    DSC_TRY(key_store(&probe, k, text, "configuration"));
  }
  /* The lambda_ins dependency; from here on the value is resolved (and written as such). */
  c->lambda_ins = lambda_ins_resolved(c);
  c->lambda_ins_set = 1;

  if (c->batch % c->bn_groups != 0)
    return dsc_errorf("data.batch = %d is not divisible by method.bn_groups = %d (METHOD.md §5)",
                      c->batch, c->bn_groups);
  if (c->queue % c->batch != 0)
    return dsc_errorf("method.queue = %lld is not a multiple of data.batch = %d (METHOD.md §3)",
                      (long long)c->queue, c->batch);
  if (c->steps == 0 && c->epochs < 1)
    return dsc_errorf("optim.epochs = %lld: must be >= 1 when optim.steps = 0",
                      (long long)c->epochs);
  if (c->scale_min > c->scale_max)
    return dsc_errorf("aug.scale_min = %.9g is larger than aug.scale_max = %.9g",
                      (double)c->scale_min, (double)c->scale_max);
  /* auto resolves by device (issue #6: bf16 is the GPU default; the CPU trains in fp32); a step
   * dump is defined for fp32, so it makes auto fp32. */
  if (strcmp(c->precision, "auto") == 0)
    snprintf(c->precision, sizeof c->precision, "%s",
             strcmp(c->device, "cuda") == 0 && !c->dump_step[0] ? "bf16" : "fp32");
  if (c->dump_step[0] && strcmp(c->precision, "bf16") == 0)
    return dsc_errorf("run.dump_step is refused with run.precision = bf16 (step dumps are "
                      "defined for fp32)");
  return NULL;
}

/* ---- writers ---- */

char *dsc_config_to_ini(const dsc_config *c) {
  char *buf = NULL;
  size_t size = 0;
  FILE *f = open_memstream(&buf, &size);
  if (!f) return NULL;
  fprintf(f, "# dsc pretraining configuration: every key, resolved (docs/config.md)\n");
  size_t sec_len = 0;
  const char *sec = "";
  for (int i = 0; i < NKEYS; i++) {
    const config_key *k = &config_keys[i];
    const char *dot = strchr(k->name, '.');
    size_t n = (size_t)(dot - k->name);
    if (n != sec_len || strncmp(sec, k->name, n) != 0) {
      sec = k->name;
      sec_len = n;
      fprintf(f, "\n[%.*s]\n", (int)n, k->name);
    }
    char text[DSC_CONFIG_PATH_MAX + 64];
    key_format(c, k, text, sizeof text);
    fprintf(f, "# %s [default: %s]\n", k->meaning, k->def[0] ? k->def : "\"\"");
    if (k->type == KEY_STRING && !k->choices)
      fprintf(f, "%s = \"%s\"\n", dot + 1, text);
    else
      fprintf(f, "%s = %s\n", dot + 1, text);
  }
  if (fclose(f) != 0) {
    free(buf);
    return NULL;
  }
  return buf;
}

dsc_status *dsc_config_write_ini(const dsc_config *c, const char *path) {
  char *text = dsc_config_to_ini(c);
  if (!text) return dsc_errorf("%s: out of memory formatting the configuration", path);
  size_t n = strlen(text);
  char *tmp = malloc(strlen(path) + 8);
  if (!tmp) {
    free(text);
    return dsc_errorf("%s: out of memory", path);
  }
  sprintf(tmp, "%s.tmp", path);
  dsc_status *st = NULL;
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0666);
  if (fd < 0) {
    st = dsc_errorf("%s: cannot create: %s", tmp, strerror(errno));
  } else {
    size_t done = 0;
    while (!st && done < n) {
      ssize_t w = write(fd, text + done, n - done);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0)
        st = dsc_errorf("%s: write failed: %s", tmp, strerror(errno));
      else
        done += (size_t)w;
    }
    if (!st && fsync(fd) != 0) st = dsc_errorf("%s: fsync failed: %s", tmp, strerror(errno));
    if (close(fd) != 0 && !st) st = dsc_errorf("%s: close failed: %s", tmp, strerror(errno));
    if (!st && rename(tmp, path) != 0)
      st = dsc_errorf("%s: cannot rename %s to it: %s", path, tmp, strerror(errno));
    if (st) unlink(tmp);
  }
  free(tmp);
  free(text);
  return st;
}

/* ---- metadata pairs ---- */

void dsc_config_pairs_free(int n, char **keys, char **values) {
  for (int i = 0; i < n; i++) {
    if (keys) free(keys[i]);
    if (values) free(values[i]);
  }
  free(keys);
  free(values);
}

dsc_status *dsc_config_to_pairs(const dsc_config *c, int *n, char ***keys, char ***values) {
  char **ks = calloc(NKEYS, sizeof *ks), **vs = calloc(NKEYS, sizeof *vs);
  if (!ks || !vs) {
    free(ks);
    free(vs);
    return dsc_errorf("configuration pairs: out of memory");
  }
  for (int i = 0; i < NKEYS; i++) {
    char text[DSC_CONFIG_PATH_MAX + 64];
    key_format(c, &config_keys[i], text, sizeof text);
    ks[i] = strdup(config_keys[i].name);
    vs[i] = strdup(text);
    if (!ks[i] || !vs[i]) {
      dsc_config_pairs_free(i + 1, ks, vs);
      return dsc_errorf("configuration pairs: out of memory");
    }
  }
  *n = NKEYS;
  *keys = ks;
  *values = vs;
  return NULL;
}

dsc_status *dsc_config_from_pairs(dsc_config *c, int n, const char *const *keys,
                                  const char *const *values) {
  for (int i = 0; i < n; i++) {
    const config_key *k = key_find(keys[i]);
    if (!k) continue; /* other metadata (step, epoch, ...) */
    DSC_TRY(key_store(c, k, values[i], "metadata"));
  }
  return NULL;
}

void dsc_config_print_keys(FILE *out) {
  for (int i = 0; i < NKEYS; i++) {
    const config_key *k = &config_keys[i];
    fprintf(out, "%-32s %-10s %s\n", k->name, k->def[0] ? k->def : "\"\"", k->meaning);
  }
}
