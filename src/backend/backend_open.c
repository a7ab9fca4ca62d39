/* backend_open.c: the backend a run asks for (run.device, run.precision, run.threads), with the
 * error a user needs when it cannot be had (the CPU backend refuses bf16; a build without CUDA,
 * or a machine without a GPU, refuses cuda). */
#include <string.h>

#include "backend/backend.h"

dsc_status *dsc_backend_open(const char *device, const char *precision, int threads,
                             dsc_backend **out) {
  return dsc_backend_open_gpu(device, precision, threads, -1, out);
}

dsc_status *dsc_backend_open_gpu(const char *device, const char *precision, int threads, int gpu,
                                 dsc_backend **out) {
  *out = NULL;
  int bf16 = strcmp(precision, "bf16") == 0;
  if (!bf16 && strcmp(precision, "fp32") != 0)
    return dsc_errorf("run.precision=%s: expected fp32 or bf16", precision);
  if (strcmp(device, "cpu") == 0) {
    if (bf16)
      return dsc_errorf("run.precision=bf16: the cpu backend trains in fp32 only (use "
                        "run.precision=fp32, or run.device=cuda)");
    return dsc_backend_cpu_new(threads, out);
  }
  if (strcmp(device, "cuda") == 0)
    return dsc_status_wrap(dsc_backend_cuda_new(gpu, bf16, out), "run.device=cuda");
  return dsc_errorf("run.device=%s: expected cpu or cuda", device);
}
