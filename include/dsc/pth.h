/* pth.h: PyTorch checkpoints (.pth / .pt) without Python.
 *
 * Reading accepts what torch.save writes: the zip format of PyTorch >= 1.6 (a folder
 * "<name>/" holding data.pkl, data/<key> storages, version, ...) and the legacy format of
 * earlier versions (consecutive pickles followed by the raw storages). The pickle stream is
 * interpreted by a small, bounded virtual machine that knows only the globals a state dict
 * needs (collections.OrderedDict, torch._utils._rebuild_tensor_v2 / _rebuild_parameter, the
 * torch.*Storage classes) -- nothing is ever executed. The state dict is the top-level
 * object, or its "state_dict" or "model" entry when the top level is a dict holding one
 * (mmcv/mmdet/mmseg, detectron2-style and training-script checkpoints); nested dicts that are
 * not tensors are skipped. Every tensor is materialized contiguous (any stride, storage
 * offset and shared storage handled, bounds checked) and handed back as an in-memory
 * safetensors file (dsc_st_writer_open), names as in the state dict, dtypes as stored
 * (F32/F64/F16/BF16/I64/I32/I16/I8/U8/BOOL). Every error names the file and the problem
 * (truncated zip, missing record, unsupported pickle opcode at byte N, storage too small for
 * tensor "x", ...); no input crashes or hangs the reader.
 *
 * Writing produces the zip format as torch.save in PyTorch 1.13 does (stored, uncompressed
 * records whose data start at multiples of 64 bytes; pickle protocol 2), holding
 *   {"state_dict": OrderedDict(name -> tensor, in file order), "meta": {key: value}}
 * where the tensors and the string metadata come from an (in-memory) safetensors file. The
 * result loads with torch.load(..., weights_only=True) in PyTorch >= 1.13 and torch.load in
 * >= 1.6; the container is written with libzip, the pickle stream by hand. Saved atomically.
 */
#ifndef DSC_PTH_H
#define DSC_PTH_H

#include <stddef.h>

#include "dsc/safetensors.h"

/* True when the first bytes look like a zip archive or a pickle (the two .pth formats). */
int dsc_pth_sniff(const void *head, size_t n);

dsc_status *dsc_pth_read(const char *path, dsc_safetensors **out);
/* Same from bytes in memory (copied); `label` stands in for the path in messages. */
dsc_status *dsc_pth_read_memory(const void *bytes, size_t size, const char *label,
                                dsc_safetensors **out);

/* Writes every tensor of `src` (in its order) and its metadata, as described above. */
dsc_status *dsc_pth_write(const char *path, const dsc_safetensors *src);

#endif
