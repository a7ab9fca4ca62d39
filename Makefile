# dsc: one Makefile for the library, the tool, the tests and the sanitizer build.
#   make            libdsc.a and bin/dsc (CPU backend always; optional parts detected)
#   make test       every test; ends with "N passed, N failed"
#   make asan       the tests under AddressSanitizer + UBSan (separate build folder)
#   make fuzz       libFuzzer harness for the safetensors reader (clang)
#   make fuzz-image libFuzzer harness for the JPEG/PNG decoders (clang)
#   make golden     regenerate tests/golden/ with tools/reference/ (needs python3-torch)
#   make bench      build/bench_ops, the per-op benchmark (docs/performance.md)

BUILD   ?= build
BIN_DIR ?= bin
CC      ?= cc
OPT     ?= -O3 -march=native
CFLAGS  ?= $(OPT) -g
CFLAGS  += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter -fopenmp -Iinclude -Isrc -MMD -MP
LDLIBS  += -ldnnl -ljansson -lturbojpeg -lpng -lz -lm -lpthread
LDFLAGS += -fopenmp

# ---- optional parts: detected, reported, never required ----
NVCC := $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
MPICC := $(shell command -v mpicc 2>/dev/null)
DNNL_VERSION := $(shell awk '/define DNNL_VERSION_(MAJOR|MINOR|PATCH)/{v = v (v ? "." : "") $$3} END {print v}' /usr/include/oneapi/dnnl/dnnl_version.h 2>/dev/null)
$(info dsc build: CPU backend (oneDNN $(DNNL_VERSION)) - always)
$(info dsc build: CUDA: $(if $(NVCC),nvcc found at $(NVCC) - no CUDA backend in this version yet,not found - CPU only))
$(info dsc build: MPI:  $(if $(MPICC),mpicc found at $(MPICC) - no dist/ layer in this version yet,not found - single process))

LIB_SRC  := $(shell find src -name '*.c' ! -path 'src/cli/*' | sort)
CLI_SRC  := $(shell find src/cli -name '*.c' | sort)
TEST_SRC := $(sort $(wildcard tests/test_*.c))
TEST_SH  := $(sort $(wildcard tests/cli/test_*.sh))

LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/%.o)
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)

.PHONY: all test asan fuzz fuzz-image golden bench clean
all: $(BUILD)/libdsc.a $(BIN_DIR)/dsc

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

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

asan:
	$(MAKE) BUILD=build-asan BIN_DIR=build-asan/bin OPT="-O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined" \
	  LDFLAGS="-fopenmp -fsanitize=address,undefined" DSC_ASAN=1 test

fuzz:
	@mkdir -p $(BUILD)/fuzz
	clang -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude -Isrc \
	  -o $(BUILD)/fuzz/fuzz_safetensors tests/fuzz/fuzz_safetensors.c src/io/safetensors.c src/core/status.c src/core/dtype.c -ljansson

fuzz-image:
	@mkdir -p $(BUILD)/fuzz
	clang -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude -Isrc \
	  -o $(BUILD)/fuzz/fuzz_image tests/fuzz/fuzz_image.c src/data/image_decode.c src/data/image_jpeg.c \
	  src/data/image_png.c src/data/image_resize.c src/core/status.c src/core/dtype.c -lturbojpeg -lpng -lz -lm

bench: $(BUILD)/bench_ops

$(BUILD)/bench_ops: bench/bench_ops.c $(BUILD)/libdsc.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libdsc.a $(LDLIBS)

golden:
	/usr/bin/python3 tools/reference/make_golden.py tests/golden
	/usr/bin/python3 tools/reference/make_loss_golden_contrast.py tests/golden/loss_contrast.safetensors
	/usr/bin/python3 tools/reference/make_loss_golden_cluster.py tests/golden/loss_cluster.safetensors

clean:
	rm -rf build build-asan bin

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d)
