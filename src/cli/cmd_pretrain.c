/* cmd_pretrain.c: `dsc pretrain [--config FILE] [--resume] [key=value ...]` — self-supervised
 * pretraining (spec/METHOD.md) on a dataset, writing a run folder (spec/INTERFACES.md):
 * config.ini, metrics.jsonl, checkpoint.safetensors (+ numbered copies every run.ckpt_every
 * steps), progress on stderr, exact resume, the step dump.
 *
 * Schedule: S = optim.steps, or optim.epochs x floor(images / data.batch) (METHOD.md §5);
 * step s belongs to epoch s / floor(images / B), batch s % floor(images / B) of that epoch's
 * permutation, so a resumed run restarts its loader exactly where the checkpoint stopped.
 * SIGINT / SIGTERM: the current step finishes, a checkpoint is written, exit status 130.
 * The signal flag is the one piece of process-global state, as a signal handler needs.
 */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/commands.h"
#include "cli/run_folder.h"
#include "cli/synthetic.h"
#include "dsc/config.h"
#include "dsc/dist.h"
#include "dsc/loader.h"
#include "dsc/optim.h"
#include "dsc/ssl.h"

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig) {
  (void)sig;
  stop_requested = 1;
}

static void usage(FILE *out) {
  fprintf(out,
          "usage: dsc pretrain [--config FILE] [--resume] [--allow-partial] [key=value ...]\n\n"
          "Self-supervised pretraining of a ResNet backbone (MoCo-v2, DenseCL, DSC) on a folder of\n"
          "images. Writes a run folder (run.out): config.ini, metrics.jsonl, checkpoint.safetensors.\n"
          "Configuration keys (file sections [method] [model] [data] [aug] [optim] [run], or key=value\n"
          "on the command line; docs/config.md). --resume is run.resume=1, --allow-partial is\n"
          "model.allow_partial=1 (model.init need not match the backbone exactly; docs/export.md):\n\n");
  dsc_config_print_keys(out);
}

typedef struct run_state {
  dsc_config cfg;
  dsc_dataset *ds;
  dsc_loader *loader;
  dsc_backend *be;
  dsc_ssl_model model;
  int model_ready;
  FILE *metrics;
  size_t images;
  int64_t per_epoch, total;
  char ckpt[DSC_CONFIG_PATH_MAX + 64];
  dsc_dist *dist;  /* the communicator (one process: rank 0 of 1) */
  int rank, world; /* rank 0 alone writes files and progress */
} run_state;

static void warn_to_stderr(void *ctx, const char *msg) {
  (void)ctx;
  fprintf(stderr, "\ndsc: warning: %s\n", msg);
}

static dsc_status *save(run_state *r, int64_t step, double lr, int numbered) {
  if (r->rank != 0) return NULL; /* every rank holds the same state; rank 0 writes it */
  dsc_ssl_meta meta = {step, step / r->per_epoch, r->total, (int64_t)r->images, lr, r->world};
  char also[DSC_CONFIG_PATH_MAX + 64];
  snprintf(also, sizeof also, "%s/checkpoint-%08lld.safetensors", r->cfg.out, (long long)step);
  return dsc_ssl_save(&r->model, &meta, r->ckpt, numbered ? also : NULL);
}

/* Warns about configuration keys that differ between the checkpoint and this command. */
static void compare_configs(const dsc_config *now, const dsc_config *then, const char *path) {
  int n1 = 0, n2 = 0;
  char **k1, **v1, **k2, **v2;
  if (dsc_config_to_pairs(now, &n1, &k1, &v1)) return;
  if (dsc_config_to_pairs(then, &n2, &k2, &v2)) {
    dsc_config_pairs_free(n1, k1, v1);
    return;
  }
  for (int i = 0; i < n1 && i < n2; i++) {
    if (strncmp(k1[i], "run.", 4) == 0 || strcmp(k1[i], "data.workers") == 0) continue;
    if (strcmp(k1[i], k2[i]) == 0 && strcmp(v1[i], v2[i]) != 0)
      fprintf(stderr, "dsc: warning: resuming %s with %s=%s (the checkpoint was trained with %s)\n",
              path, k1[i], v1[i], v2[i]);
  }
  dsc_config_pairs_free(n1, k1, v1);
  dsc_config_pairs_free(n2, k2, v2);
}

static dsc_status *run(run_state *r, int *interrupted) {
  dsc_config *cfg = &r->cfg;
  const int lead = r->rank == 0; /* writes the run folder and reports progress */
  if (!cfg->data_path[0])
    return dsc_errorf("data.path is not set: give the image folder, e.g. dsc pretrain data.path=DIR");
  if (cfg->batch % r->world != 0)
    return dsc_errorf("data.batch=%d (the global batch) is not divisible by the %d processes", cfg->batch,
                      r->world);
  snprintf(r->ckpt, sizeof r->ckpt, "%s/checkpoint.safetensors", cfg->out);
  if (lead) DSC_TRY(cli_make_dirs(cfg->out, "run.out"));
  /* Only rank 0 needs the run folder: the others receive its state (dsc_ssl_model_set_dist). */
  int have_ckpt = lead ? cli_file_exists(r->ckpt) : cfg->resume;
  if (have_ckpt && !cfg->resume)
    return dsc_errorf("run.out=%s already holds a checkpoint: continue it with --resume (run.resume=1) "
                      "or choose another run.out", cfg->out);
  if (cfg->resume && !have_ckpt)
    return dsc_errorf("run.resume=1 but %s does not exist (nothing to resume)", r->ckpt);

  dsc_dataset_format fmt;
  DSC_TRY(dsc_status_wrap(dsc_dataset_format_parse(cfg->data_format, &fmt), "data.format"));
  dsc_dataset_config dc = {cfg->data_path, fmt, cfg->data_split, cfg->max_pixels};
  DSC_TRY(dsc_status_wrap(dsc_dataset_open(&dc, &r->ds), "data.path"));
  r->images = dsc_dataset_size(r->ds);
  r->per_epoch = (int64_t)(r->images / (size_t)cfg->batch);
  if (r->per_epoch == 0)
    return dsc_errorf("data.batch=%d is larger than the %zu images of data.path=%s: no full batch "
                      "(lower data.batch)", cfg->batch, r->images, cfg->data_path);
  r->total = cfg->steps > 0 ? cfg->steps : cfg->epochs * r->per_epoch;
  if ((size_t)cfg->queue > r->images)
    fprintf(stderr, "dsc: warning: method.queue=%lld is longer than the %zu images of the dataset: "
            "the queue will hold stale duplicates of the same images\n", (long long)cfg->queue, r->images);
  dsc_lr_schedule sched = {cfg->lr, cfg->batch, r->total, cfg->warmup_steps};
  DSC_TRY(dsc_lr_schedule_check(&sched));

  /* Several processes on a machine: each takes the GPU of its local rank. */
  DSC_TRY(dsc_backend_open_gpu(cfg->device, cfg->precision, cfg->threads,
                               r->world > 1 ? dsc_dist_local_rank(r->dist) : -1, &r->be));
  DSC_TRY(dsc_ssl_model_create(&r->model, r->be, cfg));
  r->model_ready = 1;
  const int local_batch = cfg->batch / r->world;

  int64_t start = 0;
  double lr = 0;
  if (cfg->resume && lead) {
    dsc_ssl_meta meta;
    dsc_config then;
    dsc_config_defaults(&then);
    DSC_TRY(dsc_ssl_meta_read(r->ckpt, &meta, &then));
    if (meta.world_size != r->world)
      return dsc_errorf("%s was written by a run of %d process%s; this run has %d: resume with the same "
                        "number of processes (mpirun -np %d), or start a new run from its backbone with "
                        "model.init=%s", r->ckpt, meta.world_size, meta.world_size == 1 ? "" : "es",
                        r->world, meta.world_size, r->ckpt);
    compare_configs(cfg, &then, r->ckpt);
    DSC_TRY(dsc_ssl_load(&r->model, r->ckpt));
    start = meta.step;
    lr = meta.lr_step;
    r->model.step = start;
    fprintf(stderr, "dsc: resuming %s at step %lld of %lld\n", r->ckpt, (long long)start, (long long)r->total);
  }
  if (r->world > 1) {
    /* Every rank continues from rank 0's state (its initialization or its checkpoint). */
    DSC_TRY(dsc_ssl_model_set_dist(&r->model, r->dist));
    start = r->model.step;
    if (lead) fprintf(stderr, "dsc: %s; global batch %d = %d x %d images, one BN group per process\n",
                      dsc_dist_describe(r->dist), cfg->batch, r->world, local_batch);
  }
  DSC_TRY(dsc_ssl_check_input(&r->model, local_batch, cfg->size));
  int dumping = cfg->dump_step[0] != 0;
  int64_t dump_at = cfg->dump_at >= 0 ? cfg->dump_at : start;
  if (dumping && (dump_at < start || dump_at >= r->total))
    return dsc_errorf("run.dump_at=%lld is outside the steps this run takes [%lld, %lld)",
                      (long long)dump_at, (long long)start, (long long)r->total);
  if (start >= r->total) {
    if (lead) fprintf(stderr, "dsc: %s is already at step %lld of %lld: nothing to do\n", r->ckpt,
            (long long)start, (long long)r->total);
    return NULL;
  }

  char path[DSC_CONFIG_PATH_MAX + 64];
  if (lead) {
    snprintf(path, sizeof path, "%s/config.ini", cfg->out);
    DSC_TRY(dsc_config_write_ini(cfg, path));
    snprintf(path, sizeof path, "%s/metrics.jsonl", cfg->out);
    DSC_TRY(cli_metrics_truncate(path, start));
    r->metrics = fopen(path, "a");
    if (!r->metrics) return dsc_errorf("cannot open %s: %s", path, strerror(errno));
  }

  dsc_loader_config lc = {.batch = cfg->batch, .workers = cfg->workers > 0 ? cfg->workers : (cfg->threads > 0 ? cfg->threads : (int)sysconf(_SC_NPROCESSORS_ONLN)),
                          .prefetch = 2, .drop_last = 1, .shuffle = 1, .seed = cfg->seed,
                          .rank = r->rank, .world = r->world,
                          .strict = cfg->strict, .warn = warn_to_stderr};
  dsc_aug_config_default(&lc.aug, cfg->size);
  lc.aug.scale_min = cfg->scale_min, lc.aug.scale_max = cfg->scale_max;
  lc.aug.jitter_p = cfg->jitter_p, lc.aug.gray_p = cfg->gray_p;
  lc.aug.blur_p = cfg->blur_p, lc.aug.flip_p = cfg->flip_p;
  DSC_TRY(dsc_loader_open(r->ds, &lc, &r->loader));

  int tty = lead && isatty(2);
  double t_start = synthetic_now_s(), data_time = 0;
  int64_t imgs_since = 0, last_saved = start;
  double t_window = t_start, loss_first = 0, loss_last = 0;
  int64_t epoch = -1;
  for (int64_t s = start; s < r->total; s++) {
    int64_t e = s / r->per_epoch;
    if (e != epoch) {
      DSC_TRY(dsc_loader_start_epoch_at(r->loader, (uint32_t)e, (size_t)(s % r->per_epoch)));
      epoch = e;
    }
    double t0 = synthetic_now_s();
    const dsc_batch *b = NULL;
    DSC_TRY(dsc_loader_next(r->loader, &b));
    if (!b) return dsc_errorf("the loader ended epoch %lld early at step %lld", (long long)e, (long long)s);
    double dt_data = synthetic_now_s() - t0;
    data_time += dt_data;
    lr = dsc_lr_at(&sched, s);
    dsc_ssl_step_info info;
    if (dumping && s == dump_at) {
      if (lead) DSC_TRY(cli_make_dirs(cfg->dump_step, "run.dump_step"));
      snprintf(path, sizeof path, "%s/step.safetensors", cfg->dump_step);
      dsc_ssl_meta meta = {s, e, r->total, (int64_t)r->images, lr, r->world};
      DSC_TRY(dsc_ssl_dump_step(&r->model, b->a, b->b, b->n, b->size, lr, &meta, path, &info));
      if (lead) fprintf(stderr, "dsc: wrote the dump of step %lld to %s (loss %.6g); stopping\n", (long long)s,
              path, info.loss_total);
      return NULL;
    }
    const float *va = NULL, *vb = NULL;
    dsc_status *st = dsc_ssl_stage_batch(&r->model, b->a, b->b, b->n, b->size, &va, &vb);
    if (!st) st = dsc_ssl_step(&r->model, va, vb, b->n, b->size, lr, &info, NULL);
    if (!st && r->world > 1) {
      /* A signal may reach the ranks at different steps: they stop together. */
      int64_t stop = stop_requested;
      st = dsc_dist_allreduce_host(r->dist, &stop, 1, DSC_I64, DSC_REDUCE_MAX);
      stop_requested = (int)stop;
    }
    if (st)
      return dsc_status_wrap(st, "training stopped; the last good checkpoint is %s (step %lld)",
                             last_saved > 0 || cfg->resume ? r->ckpt : "(none yet)", (long long)last_saved);
    if (s == start) loss_first = info.loss_total;
    loss_last = info.loss_total;
    imgs_since += (int64_t)b->n * r->world;
    double now = synthetic_now_s();
    int last = s + 1 == r->total;
    if (lead && ((s + 1) % cfg->log_every == 0 || last || s == start)) {
      double ips = imgs_since / fmax(now - t_window, 1e-9);
      fprintf(r->metrics,
              "{\"step\": %lld, \"epoch\": %lld, \"lr\": %.9g, \"loss\": %.9g, \"loss_ins\": %.9g, "
              "\"loss_pix\": %.9g, \"loss_sem\": %.9g, \"img_per_s\": %.3f, \"data_time\": %.6f, "
              "\"time\": %.3f}\n",
              (long long)s, (long long)e, lr, info.loss_total, info.loss_ins, info.loss_pix,
              info.loss_sem, ips, data_time, now - t_start);
      fflush(r->metrics);
      double eta = cli_eta(now - t_start, s + 1 - start, s + 1, r->total);
      char eta_s[32];
      cli_format_duration(eta, eta_s, sizeof eta_s);
      if (tty) {
        cli_progress_bar(stderr, s + 1, r->total, ips, eta, info.loss_total);
      } else {
        fprintf(stderr, "step %lld/%lld epoch %lld lr %.4g loss %.4f (ins %.4f pix %.4f sem %.4f) "
                "%.1f img/s ETA %s\n", (long long)(s + 1), (long long)r->total, (long long)e, lr,
                info.loss_total, info.loss_ins, info.loss_pix, info.loss_sem, ips, eta_s);
      }
      t_window = now;
      imgs_since = 0;
      data_time = 0;
    }
    int numbered = cfg->ckpt_every > 0 && (s + 1) % cfg->ckpt_every == 0;
    int epoch_end = (s + 1) % r->per_epoch == 0;
    if (numbered || epoch_end || last || stop_requested) {
      DSC_TRY(save(r, s + 1, lr, numbered));
      last_saved = s + 1;
    }
    if (stop_requested && !last) {
      if (tty) fputc('\n', stderr);
      if (lead) fprintf(stderr, "dsc: interrupted: saved %s at step %lld; continue with --resume\n", r->ckpt,
              (long long)(s + 1));
      *interrupted = 1;
      return NULL;
    }
  }
  if (tty) fputc('\n', stderr);
  if (!lead) return NULL;
  size_t bad = dsc_loader_bad_count(r->loader);
  fprintf(stderr, "dsc: done: %lld steps in %.1f s, loss %.4f at step %lld -> %.4f at step %lld\n",
          (long long)r->total, synthetic_now_s() - t_start, loss_first, (long long)start, loss_last,
          (long long)(r->total - 1));
  fprintf(stderr, "  checkpoint  %s (dsc info shows it; the backbone is backbone.*)\n"
          "  metrics     %s/metrics.jsonl\n  config      %s/config.ini\n", r->ckpt, cfg->out, cfg->out);
  if (bad) fprintf(stderr, "  %zu unusable image file%s skipped:\n", bad, bad == 1 ? "" : "s");
  for (size_t i = 0; i < bad; i++) {
    const char *p, *why;
    dsc_loader_bad_file(r->loader, i, &p, &why);
    fprintf(stderr, "  skipped %s: %s\n", p, why);
  }
  return NULL;
}

int cmd_pretrain(int argc, char **argv) {
  run_state r;
  memset(&r, 0, sizeof r);
  dsc_config_defaults(&r.cfg);
  const char *config_file = NULL;
  int resume = 0, allow_partial = 0;
  for (int i = 0; i < argc; i++) {
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      usage(stdout);
      return 0;
    }
    if (!strcmp(argv[i], "--config")) {
      if (i + 1 >= argc) {
        fprintf(stderr, "dsc: error: --config needs a file\n");
        return 2;
      }
      config_file = argv[++i];
    } else if (!strncmp(argv[i], "--config=", 9)) {
      config_file = argv[i] + 9;
    } else if (!strcmp(argv[i], "--resume")) {
      resume = 1;
    } else if (!strcmp(argv[i], "--allow-partial")) {
      allow_partial = 1;
    } else if (!strncmp(argv[i], "--", 2) || !strchr(argv[i], '=')) {
      fprintf(stderr, "dsc: error: dsc pretrain: unknown argument \"%s\" (options: --config FILE, "
              "--resume, --allow-partial, key=value; see dsc pretrain --help)\n", argv[i]);
      return 2;
    }
  }
  if (config_file && cli_report(dsc_config_load_file(&r.cfg, config_file))) return 2;
  for (int i = 0; i < argc; i++) {
    if (!strcmp(argv[i], "--config")) {
      i++;
      continue;
    }
    if (argv[i][0] == '-') continue;
    if (cli_report(dsc_config_set_arg(&r.cfg, argv[i]))) return 2;
  }
  if (resume) r.cfg.resume = 1;
  if (allow_partial) r.cfg.allow_partial = 1;
  if (cli_report(dsc_config_finalize(&r.cfg))) return 2;

  if (cli_report(dsc_dist_open(r.cfg.dist_timeout, &r.dist))) return 1;
  r.rank = dsc_dist_rank(r.dist), r.world = dsc_dist_world(r.dist);
  cli_on_stop_signals(on_signal);
  int interrupted = 0;
  dsc_status *st = run(&r, &interrupted);
  if (r.metrics) fclose(r.metrics);
  dsc_loader_free(r.loader);
  if (r.model_ready) dsc_ssl_model_free(&r.model);
  if (r.be) r.be->destroy(r.be);
  dsc_dataset_free(r.ds);
  if (st) {
    if (r.world > 1) {
      /* This rank cannot go on: say which, and end the others rather than leave them waiting. */
      cli_report(dsc_status_wrap(st, "rank %d of %d", r.rank, r.world));
      dsc_dist_abort(r.dist, 1);
      return 1;
    }
    dsc_dist_close(r.dist);
    return cli_report(st);
  }
  dsc_dist_close(r.dist);
  return interrupted ? 130 : 0;
}
