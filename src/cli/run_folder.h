/* run_folder.h: what the training commands (dsc pretrain, dsc finetune seg) share about their run
 * folders and progress reports: creating the folder, trimming metrics.jsonl on resume, and the
 * progress line on stderr (a bar on a terminal, plain periodic lines otherwise). */
#ifndef DSC_CLI_RUN_FOLDER_H
#define DSC_CLI_RUN_FOLDER_H

#include <stdint.h>
#include <stdio.h>

#include "dsc/status.h"

/* mkdir -p `path`; errors name `key` (the option or configuration key that gave the path). */
dsc_status *cli_make_dirs(const char *path, const char *key);
int cli_file_exists(const char *path);
/* Keeps the lines of metrics.jsonl whose "step" is below `step` (a resumed run rewrites the steps
 * after its checkpoint); lines without an integer step are dropped. A missing file is fine. */
dsc_status *cli_metrics_truncate(const char *path, int64_t step);
/* "1h02m" / "3m07s", "?" for a negative or absurd duration. */
void cli_format_duration(double seconds, char *buf, size_t cap);
/* The ETA of a run at `done` of `total` steps after `elapsed` seconds for the `done_here` steps
 * this process took. */
double cli_eta(double elapsed, int64_t done_here, int64_t done, int64_t total);
/* Calls `handler` on SIGINT and SIGTERM (a training command's "finish the step, checkpoint, stop"). */
void cli_on_stop_signals(void (*handler)(int));
/* "\r[#####.....] step 12/100  3.4 img/s  ETA 1m02s  loss 0.1234  " on a terminal (no newline). */
void cli_progress_bar(FILE *out, int64_t done, int64_t total, double img_per_s, double eta_s, double loss);

#endif
