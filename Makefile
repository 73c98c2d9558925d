# SPDX-License-Identifier: MIT
# braid — top-level Makefile: thin wrappers around CMake and ctest that first
# make sure the Debian packages they need are there (tools/install-deps.sh).
#
#   make            build (build/, RelWithDebInfo)
#   make test       build + ctest
#   make demo       build + `braid compare`
#   make bench      build + bench/run.py
#   make install    configure build/ for PREFIX (default /usr/local), build, install
#                   (PREFIX=/usr on Debian: libraries in /usr/lib/<multiarch>;
#                   DESTDIR=/tmp/stage stages the tree)
#   make asan       build-asan/: ASan+UBSan build + ctest (BRAID_TEST_SCALE=10)
#   make tsan       build-tsan/: TSan build + ctest (BRAID_TEST_SCALE=10)
#   make clang      build-clang/: everything with clang -Wall -Wextra -Werror + ctest
#   make ucontext   build-ucontext/: the portable ucontext switch + ctest
#   make aarch64    build-aarch64/: cross build, ctest under qemu-aarch64
#   make fuzz       build-fuzz/: every tests/fuzz_*.c under libFuzzer, FUZZ_SECONDS each
#   make loaded     build/'s ctest again while CPU hogs keep every core busy
#   make mpich      build-mpich/: braid-mpi built against MPICH + its tests (ctest -R mpi)
#   make clean      remove every build directory
#
# Variables: JOBS (2), PREFIX (/usr/local), DESTDIR, BUILD_TYPE (RelWithDebInfo),
# CMAKE_ARGS (extra -D options for every configure), CTEST_ARGS (e.g. -R loop),
# SAN_SCALE (10: BRAID_TEST_SCALE for the sanitizer and emulated runs),
# BENCH_ARGS (passed to bench/run.py, e.g. --quick), FUZZ_SECONDS (40),
# FUZZ_TARGETS (default: every tests/fuzz_<name>.c), HOGS (CPU count).

JOBS       ?= 2
PREFIX     ?= /usr/local
DESTDIR    ?=
BUILD_TYPE ?= RelWithDebInfo
CMAKE_ARGS ?=
CTEST_ARGS ?=
SAN_SCALE  ?= 10
PYTHON     ?= /usr/bin/python3
BENCH_ARGS ?=
DEPS       := tools/install-deps.sh

CTEST = ctest --output-on-failure -j$(JOBS) $(CTEST_ARGS) --test-dir

# Sanitizer runtime options: fail on the first report, keep stacks readable.
# Tests that fork (crash tests, the process pool) inherit them. handle_segv=0:
# a SIGSEGV kills the process by the signal, as in a normal build, instead of
# becoming a sanitizer report and exit status 1 / 66: crash tests (process-pool
# workers that crash on purpose, stack overflow reports) depend on it. To get a
# sanitizer stack trace for a real crash, rerun with ASAN_OPTIONS=handle_segv=1
# (or TSAN_OPTIONS=...) set in the environment: these are only defaults.
ASAN_ENV = ASAN_OPTIONS=$${ASAN_OPTIONS:-detect_leaks=1:handle_segv=0} \
           UBSAN_OPTIONS=$${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
TSAN_ENV = TSAN_OPTIONS="$${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1:handle_segv=0$(if $(wildcard tests/tsan.supp),:suppressions=$(CURDIR)/tests/tsan.supp)}"

.PHONY: all build test demo bench install asan tsan clang ucontext aarch64 fuzz loaded mpich clean \
        deps-build deps-test deps-bench

all: build

deps-build:
	@echo "== deps: build packages"
	@$(DEPS) build
deps-test:
	@echo "== deps: test packages"
	@$(DEPS) test
deps-bench:
	@echo "== deps: bench packages"
	@$(DEPS) bench

# $(call configure,DIR,EXTRA CMAKE ARGS) and $(call compile,DIR)
define configure
	@echo "== configure $(1) ($(BUILD_TYPE)$(if $(strip $(2)), $(strip $(2))))"
	cmake -S . -B $(1) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(2) $(CMAKE_ARGS)
endef
define compile
	@echo "== build $(1) (-j$(JOBS))"
	cmake --build $(1) -j$(JOBS)
endef

build: deps-build
	$(call configure,build,)
	$(call compile,build)

# The build itself comes first: `make test` must not race a stale tree.
test: deps-test
	$(call configure,build,)
	$(call compile,build)
	@echo "== test build/ (ctest -j$(JOBS))"
	$(CTEST) build

demo: build
	@echo "== demo: build/tools/braid/braid compare"
	build/tools/braid/braid compare

# Configured here, after deps-bench, never in parallel with it: peers that
# step installs (libuv, TBB) are found by this configure, even in a tree
# configured before they were there (CMake searches again for what it did
# not find).
bench: deps-bench
	$(call configure,build,)
	$(call compile,build)
	@echo "== bench: $(PYTHON) bench/run.py $(BENCH_ARGS)"
	$(PYTHON) bench/run.py $(BENCH_ARGS)

# The prefix is given at configure time, so that GNUInstallDirs picks the
# platform's directories for it (lib/x86_64-linux-gnu for /usr on Debian).
install: deps-build
	$(call configure,build,-DCMAKE_INSTALL_PREFIX=$(PREFIX))
	$(call compile,build)
	@echo "== install build/ into $(DESTDIR)$(PREFIX)"
	DESTDIR=$(DESTDIR) cmake --install build

# Sanitizer builds skip the benchmarks (not tests, and slow to build there).
asan: deps-test
	$(call configure,build-asan,-DBRAID_SANITIZE=address -DBRAID_BUILD_BENCH=OFF)
	$(call compile,build-asan)
	@echo "== test build-asan/ (ASan+UBSan, BRAID_TEST_SCALE=$(SAN_SCALE))"
	BRAID_TEST_SCALE=$(SAN_SCALE) $(ASAN_ENV) $(CTEST) build-asan

tsan: deps-test
	$(call configure,build-tsan,-DBRAID_SANITIZE=thread -DBRAID_BUILD_BENCH=OFF)
	$(call compile,build-tsan)
	@echo "== test build-tsan/ (TSan, BRAID_TEST_SCALE=$(SAN_SCALE))"
	BRAID_TEST_SCALE=$(SAN_SCALE) $(TSAN_ENV) $(CTEST) build-tsan

# clang for C, C++ and assembly; -Wall -Wextra -Werror come from CMakeLists.txt.
CLANG_CMAKE = -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_ASM_COMPILER=clang
clang: deps-test
	$(call configure,build-clang,$(CLANG_CMAKE))
	$(call compile,build-clang)
	@echo "== test build-clang/ (clang)"
	$(CTEST) build-clang

ucontext: deps-test
	$(call configure,build-ucontext,-DBRAID_SWITCH=ucontext -DBRAID_BUILD_BENCH=OFF)
	$(call compile,build-ucontext)
	@echo "== test build-ucontext/ (BRAID_SWITCH=ucontext)"
	$(CTEST) build-ucontext

# Cross build: the library and its tests for aarch64; ctest runs every test
# through qemu-aarch64 (CMAKE_CROSSCOMPILING_EMULATOR in the toolchain file).
AARCH64_CMAKE = -DCMAKE_TOOLCHAIN_FILE=$(CURDIR)/cmake/aarch64-linux-gnu.cmake \
                -DBRAID_BUILD_EXAMPLES=OFF -DBRAID_BUILD_BENCH=OFF -DBRAID_BUILD_TOOLS=OFF
aarch64: deps-test
	$(call configure,build-aarch64,$(AARCH64_CMAKE))
	$(call compile,build-aarch64)
	@echo "== test build-aarch64/ (qemu-aarch64, BRAID_TEST_SCALE=$(SAN_SCALE))"
	BRAID_TEST_SCALE=$(SAN_SCALE) $(CTEST) build-aarch64

# Fuzzing with libFuzzer (clang, ASan + UBSan): every tests/fuzz_<name>.c is
# a target (LLVMFuzzerTestOneInput), built as build-fuzz/fuzz_<name> with
# -Iinclude -Isrc -Iexamples plus the flags on its `// fuzz-cflags:` lines
# (e.g. more sources to compile in), and run for FUZZ_SECONDS with its corpus
# in build-fuzz/corpus-<name>/ (seeded from tests/fuzz_<name>.corpus/ when
# that exists). Every target runs; any crash, leak or sanitizer report fails
# the stage and leaves the reproducer in build-fuzz/. Adding a file adds a
# target; FUZZ_TARGETS="http_parse" runs a subset. 40 s each keeps the stage
# near two minutes (http_parse, procpool_decode, cli).
FUZZ_SECONDS ?= 40
FUZZ_TARGETS ?= $(patsubst tests/fuzz_%.c,%,$(sort $(wildcard tests/fuzz_*.c)))
FUZZ_CC      ?= clang
FUZZ_FLAGS    = -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
                -D_GNU_SOURCE -Iinclude -Isrc -Iexamples
fuzz: deps-test
	@mkdir -p build-fuzz
	@failed=""; for t in $(FUZZ_TARGETS); do \
	  src=tests/fuzz_$$t.c; \
	  extra=$$(sed -n 's|^[[:space:]]*//[[:space:]]*fuzz-cflags:||p' $$src | tr '\n' ' '); \
	  echo "== fuzz: build-fuzz/fuzz_$$t (libFuzzer + ASan + UBSan, $(FUZZ_SECONDS) s)"; \
	  echo "$(FUZZ_CC) $(FUZZ_FLAGS) $$extra $$src -o build-fuzz/fuzz_$$t"; \
	  $(FUZZ_CC) $(FUZZ_FLAGS) $$extra $$src -o build-fuzz/fuzz_$$t || { failed="$$failed $$t"; continue; }; \
	  mkdir -p build-fuzz/corpus-$$t; \
	  seed=""; [ -d tests/fuzz_$$t.corpus ] && seed=$(CURDIR)/tests/fuzz_$$t.corpus; \
	  ( cd build-fuzz && ./fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -max_len=4096 \
	      -print_final_stats=1 corpus-$$t $$seed > fuzz_$$t.log 2>&1 ); rc=$$?; \
	  tail -n 15 build-fuzz/fuzz_$$t.log; \
	  [ $$rc -eq 0 ] || failed="$$failed $$t"; \
	done; \
	if [ -n "$$failed" ]; then echo "== fuzz: FAILED:$$failed"; exit 1; fi; \
	echo "== fuzz: $(words $(FUZZ_TARGETS)) target(s) ok: $(FUZZ_TARGETS)"

# The plain test suite again, on a busy machine: HOGS busy-loop processes
# (default: one per CPU) at nice 0 run while ctest does, and stop with it
# (.ci/with-cpu-hogs). Timeouts stay as they are: a test that only passes on
# an idle machine fails here.
HOGS ?=
loaded: deps-test
	$(call configure,build,)
	$(call compile,build)
	@echo "== test build/ under load (ctest -j$(JOBS), CPU hogs: $(or $(HOGS),one per CPU))"
	.ci/with-cpu-hogs $(HOGS) -- $(CTEST) build

# braid-mpi against MPICH instead of Open MPI (the default MPI): the whole
# tree, then the tests whose names say mpi (the MPI tests under
# mpiexec.mpich, the example across ranks, braid-mpi's exports and headers).
MPICH_CMAKE = -DMPI_C_COMPILER=mpicc.mpich -DBRAID_WITH_MPI=ON -DBRAID_BUILD_BENCH=OFF
mpich: deps-test
	$(call configure,build-mpich,$(MPICH_CMAKE))
	$(call compile,build-mpich)
	@echo "== test build-mpich/ (braid-mpi on MPICH: ctest -R mpi)"
	$(CTEST) build-mpich -R mpi

clean:
	@echo "== clean: removing build directories"
	rm -rf build build-asan build-tsan build-clang build-ucontext build-aarch64 build-fuzz build-mpich
