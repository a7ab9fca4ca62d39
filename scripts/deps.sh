#!/usr/bin/env bash
# Installs every Debian package that building and testing dsc needs.
# Idempotent: packages already present are left alone. Runs apt-get when root;
# otherwise prints the exact command to run and exits non-zero.
set -euo pipefail

packages=(
  build-essential pkg-config            # compiler, make
  libdnnl-dev                           # oneDNN: CPU convolution and GEMM (dnnl_sgemm)
  libjansson-dev                        # JSON (safetensors headers, metrics)
  libzip-dev                            # zip container of PyTorch .pth files (export, import)
  openmpi-bin libopenmpi-dev            # multi-process training (mpirun, the dist/ layer)
  libturbojpeg0-dev libpng-dev zlib1g-dev  # image decoding
  clang libclang-rt-dev                 # libFuzzer harness, sanitizer runtimes
  python3-torch python3-torchvision python3-numpy python3-pil  # fixtures and interop tests only
  dataset-fashion-mnist                 # real images for interop tests and benchmarks
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: all ${#packages[@]} packages present"
  exit 0
fi

cmd="apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "deps: missing packages: ${missing[*]}" >&2
  echo "deps: run as root:  apt-get update && $cmd" >&2
  exit 1
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
$cmd
