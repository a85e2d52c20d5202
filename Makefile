# layermap -- build, test, demo.
#   make            library + CLI in build/
#   make test       unit, reference and corrupt-file tests (no Python needed)
#   make asan       the same tests under AddressSanitizer + UndefinedBehaviorSanitizer
#   make test-cores the numeric tests under every OpenBLAS core this CPU can run
#   make check      deps + test + test-cores + asan + test-report + test-llamacpp + pytest (what CI runs)
#   make fuzz       libFuzzer harnesses of every reader in build/fuzz/ (clang; tests/fuzz/fuzz.sh runs them)
#   make test-report  `layermap report` rendered by headless Chromium (skips without chromium)
#   make test-peft  `layermap lora`'s JSON applied by PEFT to stories260K (the venv of scripts/ref_venv.sh)
#   make test-llamacpp  `attribute --imatrix` against llama.cpp's llama-imatrix and llama-quantize
#                   (tools from scripts/build_llamacpp.sh; skips loudly without them)
#   make shared     liblayermap.so (-fPIC objects in build/pic) for the Python package
#   make pytest     the Python package's tests (tests/python/run.sh: venv in build/venv,
#                   pip install . + numpy/pandas/pytest/mypy from PyPI)
#   make pytest-asan  the Python tests over the ASan+UBSan library and CLI
#   make MPI=1      the same with data parallelism over MPI ranks (mpicc, into build-mpi/:
#                   mpirun -np N build-mpi/layermap attribute|ppl ...; docs/CLUSTER.md)
#   make test-mpi   attribute and ppl under mpirun -np 1/2/3 against one process
#                   (tests/cli/test_mpi.sh; skips loudly without Open MPI)
#   make demo       fetch SmolLM2-135M, attribute data/calib.txt (heatmap demo-attribute.png),
#                   and diff base vs fine-tuned stories260K (demo-diff.png)
# MPI=1: cli/mpi.c gets MPI (-DLM_MPI) and everything is built by mpicc in its
# own folder; the library has no MPI either way (lm_attr_dist), and the default
# build neither includes mpi.h nor links libmpi.
ifeq ($(MPI),1)
CC      := mpicc
BUILD   ?= build-mpi
CFLAGS  += -DLM_MPI
endif
CC      ?= cc
BUILD   ?= build
PKGS    := cairo libcjson libpcre2-8 libutf8proc openblas
# OpenBLAS built for OpenMP shares layermap's OpenMP threads; the pthread
# build's own threads fight them for the cores (measured: 0.55x on 2 cores).
# Use it when installed, with an rpath so it wins over the system default
# libopenblas.so.0 (an alternative: installing libopenblas0-pthread makes it
# the pthread build). The rpath needs only the runtime library
# (libopenblas0-openmp; every build has the soname libopenblas.so.0), the
# headers come from its -dev package when present. It is a RUNPATH
# (--enable-new-dtags), not the older DT_RPATH: LD_LIBRARY_PATH overrides it,
# which is the user asking for another build, and layermap then warns
# (src/compute/blas_info.c). libopenblas.so.0 is a direct dependency of every
# binary and of liblayermap.so, so the RUNPATH's not reaching indirect
# dependencies does not matter. `readelf -d build/layermap | grep RUNPATH`.
OMPBLAS := /usr/lib/x86_64-linux-gnu/openblas-openmp
PKGCONF := pkg-config
ifneq ($(wildcard $(OMPBLAS)/pkgconfig/openblas.pc),)
PKGCONF := PKG_CONFIG_PATH=$(OMPBLAS)/pkgconfig$(if $(PKG_CONFIG_PATH),:$(PKG_CONFIG_PATH)) pkg-config
endif
BLASRPATH :=
ifneq ($(wildcard $(OMPBLAS)/libopenblas.so.0),)
BLASRPATH := -Wl,--enable-new-dtags -Wl,-rpath,$(OMPBLAS)
endif
LDLIBS  += $(BLASRPATH)
# oneDNN (Debian libdnnl-dev) runs the bf16 products (--compute bf16) on AMX or
# AVX512_BF16; without it the build still works and --compute bf16 says so.
DNNLH   := $(wildcard /usr/include/oneapi/dnnl/dnnl.h)
ifneq ($(DNNLH),)
DNNLDEFS := -DLM_HAVE_DNNL=1
LDLIBS  += -ldnnl
else
DNNLDEFS := -DLM_HAVE_DNNL=0
endif
OPT     ?= -O2
CFLAGS  ?=
CFLAGS  += -std=c11 -D_GNU_SOURCE $(OPT) -g -Wall -Wextra -fopenmp -Iinclude -Isrc
CFLAGS  += $(shell $(PKGCONF) --cflags $(PKGS) 2>/dev/null)
LDLIBS  += $(shell $(PKGCONF) --libs $(PKGS) 2>/dev/null) -fopenmp -lpthread -lm
MODELS  ?= ../shared/models
CACHE   ?= $(or $(LAYERMAP_CACHE),$(HOME)/.cache/layermap)
export LM_MODELS := $(abspath $(MODELS))

# The BLAS this build links (headers, library, rpath) in a file rewritten only
# when that changes; every library object depends on it, so a build made before
# libopenblas0-openmp was installed (or removed) is rebuilt by the next make
# rather than kept with the wrong OpenBLAS.
BLASSTAMP := $(BUILD)/blas.flags
BLASFLAGS := $(shell $(PKGCONF) --cflags --libs openblas 2>/dev/null) $(BLASRPATH)
$(shell mkdir -p $(BUILD) && echo '$(BLASFLAGS)' | cmp -s - $(BLASSTAMP) || echo '$(BLASFLAGS)' >$(BLASSTAMP))
# blas_info.c names the fix in its warning from what the build linked
BLASDEFS := -DLM_OMPBLAS_DIR='"$(OMPBLAS)"' $(if $(BLASRPATH),-DLM_BLAS_RPATH='"$(OMPBLAS)"')

SRC     := $(wildcard src/*/*.c)
OBJ     := $(SRC:src/%.c=$(BUILD)/src/%.o)
CLI     := $(wildcard cli/*.c)
CLIOBJ  := $(CLI:cli/%.c=$(BUILD)/cli/%.o)
TESTSRC := $(wildcard tests/*/test_*.c)
TESTBIN := $(addprefix $(BUILD)/tests/,$(notdir $(TESTSRC:.c=)))
LIB     := $(BUILD)/liblayermap.a
# tests/fuzz/fuzz_NAME.c: one libFuzzer harness per reader (make fuzz); test_fuzz_replay
# runs each on its corpus tests/fuzz/corpus/NAME/ in every test run (no libFuzzer needed)
FUZZSRC  := $(wildcard tests/fuzz/fuzz_*.c)
FUZZNAME := $(patsubst tests/fuzz/fuzz_%.c,%,$(FUZZSRC))
FUZZREPLAYOBJ := $(FUZZNAME:%=$(BUILD)/tests/fuzz/%.o)
TESTBIN += $(BUILD)/tests/test_fuzz_replay
# write failures of the CLI's outputs (a shell test: file-size limit, full and read-only tmpfs)
TESTBIN += $(BUILD)/tests/test_write_fail
# the OpenBLAS build loaded, and the warning when it is not the OpenMP one (a shell test)
TESTBIN += $(BUILD)/tests/test_blas
# attribute runs that survive interruption: default checkpoints, resume, refusals (a shell test)
TESTBIN += $(BUILD)/tests/test_ckpt
BIN     := $(BUILD)/layermap

.PHONY: test-mpi
.PHONY: all test test-clang test-cores test-report test-peft test-llamacpp asan check demo deps clean fuzz fuzz-bins shared pytest pytest-asan
all: $(BIN)

deps:
	@scripts/deps.sh

$(BUILD)/src/%.o: src/%.c include/layermap.h $(wildcard src/*/*.h) $(BLASSTAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/cli/%.o: cli/%.c include/layermap.h $(wildcard cli/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Icli -c $< -o $@

$(LIB): $(OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BIN): $(CLIOBJ) $(LIB)
	$(CC) $(CFLAGS) -o $@ $(CLIOBJ) $(LIB) $(LDLIBS)

# The shared library for the Python package (pip install . runs `make shared`):
# the same sources compiled position-independent in their own folder, linked
# with the same libraries and OpenBLAS rpath as the CLI.
PIC     := $(BUILD)/pic
PICOBJ  := $(SRC:src/%.c=$(PIC)/src/%.o)
SOLIB   := $(PIC)/liblayermap.so

$(PIC)/src/%.o: src/%.c include/layermap.h $(wildcard src/*/*.h) $(BLASSTAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fPIC -c $< -o $@

$(BUILD)/src/compute/blas_info.o $(PIC)/src/compute/blas_info.o: CFLAGS += $(BLASDEFS)
$(BUILD)/src/compute/backend_bf16.o $(PIC)/src/compute/backend_bf16.o: CFLAGS += $(DNNLDEFS)
# bench/gemm_peak.c: this machine's product rates (bench/bench_attr.sh builds it)
$(BUILD)/bench/gemm_peak: bench/gemm_peak.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(DNNLDEFS) -o $@ $< $(LIB) $(LDLIBS)

$(SOLIB): $(PICOBJ)
	$(CC) $(CFLAGS) -shared -Wl,-soname,liblayermap.so -o $@ $(PICOBJ) $(LDLIBS)

shared: $(SOLIB)

pytest: $(BIN)
	LM_BIN=$(abspath $(BIN)) tests/python/run.sh

# The same Python tests over the ASan+UBSan library and CLI (not part of check:
# slower; ASan's quarantine off so that the RSS leak bound still means something).
ASANOPT := -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
pytest-asan:
	$(MAKE) BUILD=build-asan OPT="$(ASANOPT)" build-asan/pic/liblayermap.so build-asan/layermap
	LM_BIN=$(abspath build-asan/layermap) LAYERMAP_LIBRARY=$(abspath build-asan/pic/liblayermap.so) \
	    LM_PRELOAD="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libubsan.so)" \
	    ASAN_OPTIONS=detect_leaks=0:quarantine_size_mb=0 tests/python/run.sh

# tests/LAYER/test_X.c -> $(BUILD)/tests/test_X (one flat folder that tests/run.sh runs)
vpath test_%.c $(sort $(dir $(TESTSRC)))
$(BUILD)/tests/%: %.c tests/test.h tests/fault.h tests/ref_file.h $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests -o $@ $< $(LIB) $(LDLIBS)

# the harnesses for the replay: entry points renamed NAME_init / NAME_one (tests/fuzz/replay.c)
$(BUILD)/tests/fuzz/%.o: tests/fuzz/fuzz_%.c tests/fuzz/fuzz.h include/layermap.h $(wildcard src/*/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests -DLLVMFuzzerInitialize=$*_init -DLLVMFuzzerTestOneInput=$*_one -c $< -o $@

$(BUILD)/tests/test_fuzz_replay: tests/fuzz/replay.c tests/test.h $(FUZZREPLAYOBJ) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests -o $@ $< $(FUZZREPLAYOBJ) $(LIB) $(LDLIBS)

$(BUILD)/tests/test_write_fail: tests/cli/test_write_fail.sh
	@mkdir -p $(dir $@)
	cp $< $@ && chmod +x $@

$(BUILD)/tests/test_blas: tests/cli/test_blas.sh
	@mkdir -p $(dir $@)
	cp $< $@ && chmod +x $@

$(BUILD)/tests/test_ckpt: tests/cli/test_ckpt.sh
	@mkdir -p $(dir $@)
	cp $< $@ && chmod +x $@

# the peer test's judge: two imatrix GGUFs compared cell by cell (not a test_* of make test)
$(BUILD)/tests/imatrix_cmp: tests/output/imatrix_cmp.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests -o $@ $< $(LIB) $(LDLIBS)

# libFuzzer: the library and the harnesses built again by clang with the fuzzer's
# coverage instrumentation and ASan + UBSan, in build/fuzz/ (binaries build/fuzz/fuzz_NAME)
FUZZ_OPT := -O1 -Wno-pass-failed -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined
fuzz:
	@scripts/deps.sh fuzz
	$(MAKE) CC=clang BUILD=build/fuzz OPT="$(FUZZ_OPT)" fuzz-bins

fuzz-bins: $(FUZZNAME:%=$(BUILD)/fuzz_%)

$(BUILD)/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz.h $(LIB)
	$(CC) $(CFLAGS) -Itests -fsanitize=fuzzer -o $@ $< $(LIB) $(LDLIBS)

test: $(BIN) $(TESTBIN)
	@scripts/check_layers.sh
	@LM_BIN=$(BIN) tests/run.sh $(BUILD)

# the numeric tests under every OpenBLAS core this CPU can run (tests/cores.sh)
test-cores: $(BIN) $(TESTBIN)
	@tests/cores.sh $(BUILD)

# report.html rendered in headless Chromium: not blank, every figure, no console error
test-report: $(BIN)
	@LM_BIN=$(BIN) tests/output/report_test.sh

# lora.json loaded by peft.LoraConfig and applied with get_peft_model (PyPI venv,
# created once: about 6 GB and 15 min for torch; the test itself about 80 s)
test-peft: $(BIN)
	@LM_BIN=$(BIN) tests/method/peft_test.sh

# the imatrix export judged by llama.cpp (tests/output/imatrix_peer.sh); skips
# loudly when scripts/build_llamacpp.sh has not built the tools, fails then
# under LM_REQUIRE_LLAMACPP=1 (.ci/run builds them first)
test-llamacpp: $(BIN) $(BUILD)/tests/imatrix_cmp
	@LM_BIN=$(BIN) LM_IMATRIX_CMP=$(BUILD)/tests/imatrix_cmp tests/output/imatrix_peer.sh

# the same tests built by clang (Debian clang and libomp, as make fuzz installs them)
test-clang:
	@scripts/deps.sh fuzz
	$(MAKE) CC=clang BUILD=build-clang test

# attribute (several methods in one pass, ablate-mean, ig) and ppl under mpirun
# -np 1/2/3 equal to one process within 1e-9, failures that end every rank, the
# default build free of MPI, and 2 ranks in 2 network namespaces over TCP
# (tests/cli/test_mpi.sh). Skips loudly without mpicc/mpirun (scripts/deps.sh mpi
# installs Open MPI), fails then under LM_REQUIRE_MPI=1 (.ci/run).
test-mpi: $(BIN)
	@if command -v mpicc >/dev/null 2>&1; then $(MAKE) --no-print-directory MPI=1 BUILD=build-mpi build-mpi/layermap; fi
	@LM_BIN=$(BIN) LM_MPI_BIN=build-mpi/layermap tests/cli/test_mpi.sh

asan:
	$(MAKE) BUILD=build-asan OPT="-O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined" test

check: deps
	scripts/fetch_models.sh
	LM_REQUIRE_REAL=1 $(MAKE) test
	LM_REQUIRE_REAL=1 LM_CORES_SKIP=$$($(BIN) --version | sed -n 's/.*, core \([A-Za-z0-9]*\).*/\1/p') $(MAKE) test-cores
	LM_REQUIRE_REAL=1 $(MAKE) asan
	LM_REQUIRE_REAL=1 $(MAKE) test-clang
	$(MAKE) test-report
	LM_REQUIRE_REAL=1 $(MAKE) test-llamacpp
	$(MAKE) pytest

demo: deps $(BIN)
	scripts/fetch_models.sh
	$(BIN) attribute $(CACHE)/SmolLM2-135M-Instruct.Q4_1.gguf --data data/calib.txt --seq-len 256 \
	    --max-tokens 2048 -m grad-weight -o demo-attribute.png --csv demo-attribute.csv
	$(BIN) diff $(MODELS)/stories260K-hf $(MODELS)/stories260K-ft-hf -o demo-diff.png --csv demo-diff.csv

clean:
	rm -rf build build-asan build-clang build-mpi
