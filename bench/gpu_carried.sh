#!/usr/bin/env bash
# bench/gpu_carried.sh: bench/gpu.sh with binaries built on another machine (bin/dsc and
# build/tests/gpu/test_cuda, built where the CUDA toolkit, oneDNN and the image libraries are
# installed) and carried to a GPU machine that lacks the build dependencies:
#   .devcarry/libs.tar.xz  the non-CUDA shared libraries bin/dsc needs (oneDNN, jansson, libzip,
#                          TurboJPEG, libpng, OpenCL loader, libgomp), unpacked to /tmp; build the
#                          carried binaries with `make MPI=0` so that they need no libmpi/libnccl;
#   .devcarry/data/        a small idx dataset for the GPU pretraining test (DSC_GPU_DATA).
# cuDNN and cuBLAS are the GPU machine's own: the CUDA toolkit's, else those of a Python
# environment's nvidia/* packages (found by name). Arguments and environment as bench/gpu.sh.
set -u
cd "$(dirname "$0")/.."
libs=/tmp/dsc-carried-libs
mkdir -p "$libs" && tar -C "$libs" -xJf .devcarry/libs.tar.xz || exit 1
path=$libs
for name in libcudnn.so.9 libcublas.so.13 libcublasLt.so.13; do
  f=$(ldconfig -p 2>/dev/null | awk -v n="$name" '$1 == n {print $NF; exit}')
  [ -z "$f" ] && f=$(find /usr /opt -name "$name" 2>/dev/null | head -n 1)
  [ -n "$f" ] && path="$path:$(dirname "$f")"
done
export LD_LIBRARY_PATH=$path${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
if ldd bin/dsc | grep "not found"; then echo "bin/dsc: libraries missing"; exit 1; fi
export DSC_PREBUILT=1 DSC_GPU_DATA=${DSC_GPU_DATA:-$PWD/.devcarry/data}
exec bench/gpu.sh "$@"
