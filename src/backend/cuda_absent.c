/* cuda_absent.c: the CUDA backend's entry points in a build made without nvcc (the Makefile
 * compiles this file instead of src/backend/cuda/ when no CUDA toolkit is found): asking for the
 * backend is an error that says how to get it. */
#include "backend/backend.h"

dsc_status *dsc_backend_cuda_new(int device, int bf16, dsc_backend **out) {
  if (out) *out = NULL;
  return dsc_errorf("this dsc was built without the CUDA backend (no nvcc was found at build "
                    "time): install the CUDA toolkit with cuDNN and cuBLAS and rebuild (make "
                    "CUDA_HOME=... CUDNN_HOME=...)");
}

int dsc_backend_cuda_compiled(void) { return 0; }
