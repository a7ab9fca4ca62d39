/* cmd_viz.h: `dsc viz curves|maps|gradcam` — loss curves of runs, dense-feature maps (PCA to RGB,
 * k-means clusters, dense-probe predictions) and Grad-CAM maps of checkpoints, as PNG files
 * (docs/viz.md). Takes
 * the arguments after "viz" and returns the process exit status (0 only on success). */
#ifndef DSC_CLI_CMD_VIZ_H
#define DSC_CLI_CMD_VIZ_H

int cmd_viz(int argc, char **argv);

#endif
