/* cmd_scenes.h: `dsc data scenes`, the scene generator's command (src/cli/cmd_scenes.c). */
#ifndef DSC_CLI_CMD_SCENES_H
#define DSC_CLI_CMD_SCENES_H

/* Takes the arguments after "scenes" (`dsc data scenes --out DIR ...`) and returns the exit
 * status: 0 written, 1 failed while loading or writing, 2 usage error. Prints its own errors. */
int cmd_data_scenes(int argc, char **argv);

#endif
