# dsc: one Makefile for the library, the tool, the tests and the sanitizer build.
#   make            libdsc.a and bin/dsc (CPU backend always; optional parts detected)
#   make test       every test; ends with "N passed, N failed"
#   make asan       the tests under AddressSanitizer + UBSan (separate build folder)
#   make fuzz       libFuzzer harness for the safetensors reader (clang)
#   make fuzz-image libFuzzer harness for the JPEG/PNG decoders (clang)
#   make fuzz-pth   libFuzzer harness for the PyTorch .pth reader (zip, legacy, pickle machine)
#   make golden     regenerate tests/golden/ with tools/reference/ (needs python3-torch)
#   make bench      build/bench_ops, the per-op benchmark (docs/performance.md)
#   make test-gpu   the CUDA backend's tests (parity with the CPU backend, every method's step);
#                   on a machine without a GPU they are reported as skipped
# CUDA: built whenever nvcc is found (CUDA_HOME, default /usr/local/cuda); cuDNN and cuBLAS from
# CUDA_HOME or CUDNN_HOME (e.g. a Python environment's site-packages/nvidia/cudnn); CUDA=0 turns
# it off; CUDA_ARCH lists the gencode targets (sm_80 and sm_90).

BUILD   ?= build
BIN_DIR ?= bin
CC      ?= cc
OPT     ?= -O3 -march=native
CFLAGS  ?= $(OPT) -g
CFLAGS  += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter -fopenmp -Iinclude -Isrc -MMD -MP
LDLIBS  += -ldnnl -ljansson -lzip -lturbojpeg -lpng -lz -lm -lpthread
LDFLAGS += -fopenmp

# ---- optional parts: detected, reported, never required ----
CUDA_HOME ?= /usr/local/cuda
CUDNN_HOME ?= $(CUDA_HOME)
CUDA ?= 1
NVCC := $(if $(filter 1,$(CUDA)),$(shell command -v nvcc 2>/dev/null || ls $(CUDA_HOME)/bin/nvcc 2>/dev/null))
CUDA_ARCH ?= -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90
NVCCFLAGS ?= -O3 -g
NVCCFLAGS += -std=c++17 $(CUDA_ARCH) -Iinclude -Isrc -I$(CUDA_HOME)/include -I$(CUDNN_HOME)/include \
  -Xcompiler -Wall,-Wextra,-Wno-unused-parameter -MMD -MP
CUDA_LIBDIRS := $(sort $(wildcard $(CUDA_HOME)/lib64 $(CUDA_HOME)/lib $(CUDNN_HOME)/lib64 $(CUDNN_HOME)/lib))
MPI ?= 1
MPICC := $(if $(filter 1,$(MPI)),$(shell command -v mpicc 2>/dev/null))
# NCCL (multi-GPU collectives of src/dist/dist_nccl.c): with MPI (its bootstrap) and the CUDA backend.
NCCL_FOUND := $(if $(and $(MPICC),$(NVCC)),$(and $(wildcard $(CUDA_HOME)/include/nccl.h),$(wildcard $(addsuffix /libnccl.so,$(CUDA_LIBDIRS)))))
DNNL_VERSION := $(shell awk '/define DNNL_VERSION_(MAJOR|MINOR|PATCH)/{v = v (v ? "." : "") $$3} END {print v}' /usr/include/oneapi/dnnl/dnnl_version.h 2>/dev/null)
$(info dsc build: CPU backend (oneDNN $(DNNL_VERSION)) - always)
$(info dsc build: CUDA: $(if $(NVCC),nvcc found at $(NVCC) - CUDA backend built (cuDNN/cuBLAS from $(CUDA_LIBDIRS)),not found - CPU only))
$(info dsc build: MPI:  $(if $(MPICC),mpicc found at $(MPICC) - multi-process training (dist/ layer with MPI),$(if $(filter 1,$(MPI)),not found,off (MPI=0)) - single process))
$(info dsc build: NCCL: $(if $(NCCL_FOUND),found ($(CUDA_HOME)/include/nccl.h) - multi-GPU collectives,not found$(if $(MPICC),, or MPI off) - no multi-GPU runs))
ifneq ($(MPICC),)
CFLAGS += -DDSC_HAVE_MPI
$(BUILD)/src/dist/%.o: CFLAGS += $(shell $(MPICC) --showme:compile)
LDLIBS += $(shell $(MPICC) --showme:link)
endif
ifneq ($(NCCL_FOUND),)
$(BUILD)/src/dist/%.o: CFLAGS += -DDSC_HAVE_NCCL -I$(CUDA_HOME)/include
LDLIBS += -lnccl
endif

LIB_SRC  := $(shell find src -name '*.c' ! -path 'src/cli/*' | sort)
comma    := ,
CUDA_SRC := $(if $(NVCC),$(sort $(wildcard src/backend/cuda/*.cu)))
ifneq ($(NVCC),)
LIB_SRC  := $(filter-out src/backend/cuda_absent.c,$(LIB_SRC))
LDLIBS   += $(addprefix -L,$(CUDA_LIBDIRS)) $(addprefix -Wl$(comma)-rpath$(comma),$(CUDA_LIBDIRS)) \
            -lcudnn -lcublas -lcudart_static -ldl -lrt -lstdc++
endif
CLI_SRC  := $(shell find src/cli -name '*.c' | sort)
TEST_SRC := $(sort $(wildcard tests/test_*.c))
TEST_SH  := $(sort $(wildcard tests/cli/test_*.sh))

LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o) $(CUDA_SRC:%.cu=$(BUILD)/%.o)
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/%.o)
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)

.PHONY: all test test-gpu asan fuzz fuzz-image fuzz-pth golden bench clean
all: $(BUILD)/libdsc.a $(BIN_DIR)/dsc

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/%.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -c $< -o $@

$(BUILD)/libdsc.a: $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BIN_DIR)/dsc: $(CLI_OBJ) $(BUILD)/libdsc.a
	@mkdir -p $(BIN_DIR)
	$(CC) $(LDFLAGS) -o $@ $(CLI_OBJ) $(BUILD)/libdsc.a $(LDLIBS)

$(BUILD)/tests/%: tests/%.c $(BUILD)/libdsc.a tests/test.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -Itests -o $@ $< $(BUILD)/libdsc.a $(LDLIBS)

test: all $(TEST_BIN)
	@DSC_BIN=$(abspath $(BIN_DIR)/dsc) scripts/run_tests.sh $(TEST_BIN) $(TEST_SH)

# The CUDA backend's tests: a GPU machine runs them, any other reports them skipped.
GPU_TEST_BIN := $(BUILD)/tests/gpu/test_cuda
$(GPU_TEST_BIN): tests/gpu/test_cuda.c $(BUILD)/libdsc.a tests/test.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -Itests -o $@ $< $(BUILD)/libdsc.a $(LDLIBS)

test-gpu: all $(GPU_TEST_BIN)
	@DSC_BIN=$(abspath $(BIN_DIR)/dsc) scripts/run_tests.sh $(GPU_TEST_BIN) tests/gpu/test_pretrain_gpu.sh

asan:
	$(MAKE) BUILD=build-asan BIN_DIR=build-asan/bin OPT="-O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined" \
	  LDFLAGS="-fopenmp -fsanitize=address,undefined" DSC_ASAN=1 test

fuzz:
	@mkdir -p $(BUILD)/fuzz
	clang -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude -Isrc \
	  -o $(BUILD)/fuzz/fuzz_safetensors tests/fuzz/fuzz_safetensors.c src/io/safetensors.c src/io/atomic_file.c src/core/status.c src/core/dtype.c -ljansson

fuzz-image:
	@mkdir -p $(BUILD)/fuzz
	clang -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude -Isrc \
	  -o $(BUILD)/fuzz/fuzz_image tests/fuzz/fuzz_image.c src/data/image_decode.c src/data/image_jpeg.c \
	  src/data/image_png.c src/data/image_resize.c src/core/status.c src/core/dtype.c -lturbojpeg -lpng -lz -lm

fuzz-pth:
	@mkdir -p $(BUILD)/fuzz
	clang -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude -Isrc \
	  -o $(BUILD)/fuzz/fuzz_pth tests/fuzz/fuzz_pth.c src/io/pth_read.c src/io/pickle_read.c \
	  src/io/safetensors.c src/io/atomic_file.c src/core/status.c src/core/dtype.c -ljansson -lzip
bench: $(BUILD)/bench_ops

$(BUILD)/bench_ops: bench/bench_ops.c $(BUILD)/libdsc.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libdsc.a $(LDLIBS)

golden:
	/usr/bin/python3 tools/reference/make_golden.py tests/golden
	/usr/bin/python3 tools/reference/make_loss_golden_contrast.py tests/golden/loss_contrast.safetensors
	/usr/bin/python3 tools/reference/make_loss_golden_cluster.py tests/golden/loss_cluster.safetensors
	/usr/bin/python3 tools/reference/make_detectron2_names.py tests/golden/detectron2_r50_names.txt
	/usr/bin/python3 tools/reference/make_dilated_golden.py tests/golden/resnet50_d8.safetensors
	/usr/bin/python3 tools/reference/make_seg_ops_golden.py tests/golden/seg_ops.safetensors
	/usr/bin/python3 tools/reference/make_fcn_golden.py tests/golden/fcn_head.safetensors
	/usr/bin/python3 tools/reference/make_gradcam_golden.py tests/golden/gradcam.safetensors

clean:
	rm -rf build build-asan bin

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d)
