/* export.h: a backbone from any weights file dsc reads, written for other frameworks
 * (`dsc export`; docs/export.md).
 *
 * The source is a dsc checkpoint (its online encoder `backbone.*`, or with `momentum` the
 * momentum encoder `momentum.backbone.*`), an earlier export, or torchvision/timm ResNet
 * weights (.safetensors or PyTorch .pth; weights.h lists the prefixes recognized). The
 * backbone must be complete: every tensor of the detected ResNet present with its shape
 * (anything else is an error naming the tensors). Formats:
 *   torchvision  safetensors, torchvision's keys with no prefix (conv1.weight,
 *                layer1.0.bn1.running_mean, ..., *.num_batches_tracked as I64 scalars), the
 *                provenance in __metadata__; no fc.* (load with strict=False);
 *   pth          the same tensors in a torch.save zip file, {"state_dict": ..., "meta": ...}
 *                (pth.h): torchvision, mmdetection, mmsegmentation;
 *   detectron2   a .pkl of numpy arrays under detectron2's ResNet names (detectron2.h),
 *                without num_batches_tracked (detectron2's frozen BN has none).
 * Provenance (string metadata): dsc_version, source, encoder, arch, stem, and, when the source
 * is a dsc checkpoint, method, epochs (completed), step, total_steps, dataset (data.path),
 * dataset_format, dataset_images, seed; an earlier export's provenance is carried over. Every
 * file is written atomically.
 */
#ifndef DSC_EXPORT_H
#define DSC_EXPORT_H

#include <stddef.h>

#include "dsc/resnet.h"
#include "dsc/status.h"

typedef enum dsc_export_format {
  DSC_EXPORT_TORCHVISION,
  DSC_EXPORT_PTH,
  DSC_EXPORT_DETECTRON2,
} dsc_export_format;

/* "torchvision", "pth", "detectron2" -> format; -1 when unknown. */
int dsc_export_format_from_name(const char *name, dsc_export_format *out);

typedef struct dsc_export_config {
  const char *source;   /* weights file to read */
  const char *out;      /* file to write (must not be the source) */
  dsc_export_format format;
  int momentum;         /* 1: the momentum encoder of a dsc checkpoint */
  const char *producer; /* e.g. "dsc 0.1.0", written as dsc_version */
} dsc_export_config;

typedef struct dsc_export_summary {
  dsc_resnet_config cfg; /* detected architecture */
  int tensors;           /* tensors written */
  size_t bytes;          /* size of the written file */
  const char *prefix;    /* where the backbone sat in the source ("" ...), static storage */
  long long step;        /* the checkpoint's step, -1 when the source has none */
} dsc_export_summary;

dsc_status *dsc_export(const dsc_export_config *c, dsc_export_summary *summary);

#endif
