/* cmd_eval.h: `dsc eval knn|linear|seg|cluster` — the frozen-backbone evaluation protocols
 * (METHOD.md §7) on a checkpoint, an exported backbone or random initialization. Takes the
 * arguments after "eval" and returns the process exit status (0 only on success). */
#ifndef DSC_CLI_CMD_EVAL_H
#define DSC_CLI_CMD_EVAL_H

int cmd_eval(int argc, char **argv);

#endif
