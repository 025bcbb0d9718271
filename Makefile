# cfutures -- the two commands of the README, and a few more.
#
#   make            build (build/)
#   make check      build and run every test: plain, ASan+UBSan, TSan
#   make demo       build and run the demo (the article's three patterns)
#   make bench      build and run the benchmarks (QUICK=1 for a short run)
#   make install PREFIX=/usr/local
#
# Everything is CMake underneath; plain `cmake -B build && cmake --build
# build && ctest --test-dir build` works too.

PREFIX ?= /usr/local
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE ?= cmake
CTEST ?= ctest
CTEST_FLAGS ?= --output-on-failure -j$(JOBS)

.PHONY: all build check check-plain check-asan check-tsan check-faults check-valgrind check-fuzz demo install bench clean docs check-format format

all: build

build:
	@$(CMAKE) -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@$(CMAKE) --build build -j$(JOBS)

check: check-plain check-asan check-tsan check-faults check-valgrind check-fuzz
	@echo "make check: all test suites passed (plain, asan+ubsan, tsan, fault injection, valgrind, fuzz)"

# valgrind memcheck over the plain build's tests: no invalid accesses, no
# definitely or indirectly lost bytes (tests/valgrind.sh).
check-valgrind: build
	@if command -v valgrind >/dev/null; then VALGRIND_JOBS=$(JOBS) bash tests/valgrind.sh build; \
	else echo "skipped: valgrind not installed"; fi

# libFuzzer targets (clang): the wire decoder, the process pool's result
# ring and the public API, bounded
# runs over the committed seeds, plus the saved regressions.
check-fuzz:
	@$(CMAKE) -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DCF_FUZZ=ON -DCF_BUILD_TESTS=OFF -DCF_BUILD_EXAMPLES=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@$(CMAKE) --build build-fuzz -j$(JOBS) --target fuzz-wire fuzz-api fuzz-ring make-seeds
	$(CTEST) --test-dir build-fuzz $(CTEST_FLAGS)

check-plain: build
	@test -f build/tests/test-mpi || echo "skipped: MPI not found (apt-get install openmpi-bin libopenmpi-dev)"
	$(CTEST) --test-dir build $(CTEST_FLAGS)

# ASan + UBSan with gcc.
check-asan:
	@$(CMAKE) -S . -B build-asan -DCF_SANITIZE=address -DCMAKE_BUILD_TYPE=Debug -DCF_BUILD_EXAMPLES=OFF >/dev/null
	@$(CMAKE) --build build-asan -j$(JOBS)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  $(CTEST) --test-dir build-asan $(CTEST_FLAGS)

# TSan with clang (which also proves the tree builds warning-free with clang),
# and with CF_DEBUG (released futures poisoned: a double release aborts).
check-tsan:
	@$(CMAKE) -S . -B build-tsan -DCF_SANITIZE=thread -DCF_DEBUG=ON -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCF_BUILD_EXAMPLES=OFF >/dev/null
	@$(CMAKE) --build build-tsan -j$(JOBS)
	TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$(CURDIR)/tests/tsan.supp" \
	  $(CTEST) --test-dir build-tsan $(CTEST_FLAGS)

# Fault injection (CF_FAULT_INJECTION) under ASan/LeakSanitizer: allocations,
# thread and process starts and socket I/O fail at random; test-faults checks
# that every future still ends exactly once and nothing leaks, seed by seed.
FAULT_SEEDS ?= 1 2 3 4 5 6 7 8
check-faults:
	@$(CMAKE) -S . -B build-faults -DCF_FAULT_INJECTION=ON -DCF_SANITIZE=address -DCMAKE_BUILD_TYPE=Debug -DCF_BUILD_EXAMPLES=OFF >/dev/null
	@$(CMAKE) --build build-faults -j$(JOBS) --target test-faults
	@for s in $(FAULT_SEEDS); do \
	  echo "test-faults: CF_FAULTS=seed=$$s,alloc=0.02,thread=0.2,spawn=0.2,io=0.02"; \
	  CF_FAULTS="seed=$$s,alloc=0.02,thread=0.2,spawn=0.2,io=0.02" \
	  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 timeout 300 \
	  ./build-faults/tests/test-faults >/dev/null 2>build-faults/faults-$$s.log \
	  || { cat build-faults/faults-$$s.log; exit 1; }; \
	done; echo "test-faults: $(words $(FAULT_SEEDS)) fault seeds passed"

demo: build
	./build/examples/demo --executor thread
	./build/examples/demo --executor process
	@if [ -x build/examples/demo-mpi ]; then \
	  OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
	  mpirun --oversubscribe -np 3 ./build/examples/demo-mpi --executor mpi; \
	else echo "skipped: --executor mpi (MPI not found)"; fi

# Benchmarks against the peers (bench/install-peers.sh installs them).
bench:
	@$(CMAKE) -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DCF_BUILD_BENCH=ON -DCF_BUILD_TESTS=OFF -DCF_BUILD_EXAMPLES=OFF >/dev/null
	@$(CMAKE) --build build-bench -j$(JOBS)
	/usr/bin/python3 bench/run.py --bin-dir build-bench/bench $(if $(filter-out 0,$(QUICK)),--quick) $(BENCH_ARGS)

# The reference (Doxygen; Debian package doxygen): build/docs/html/index.html
docs:
	@$(CMAKE) -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@$(CMAKE) --build build --target docs

CLANG_FORMAT ?= clang-format-14
FORMAT_FILES = $(shell find src include tests examples -type f \( -name '*.c' -o -name '*.h' \)) $(wildcard bench/*.c bench/*/*.c)
check-format:
	@CLANG_FORMAT=$(CLANG_FORMAT) bash tests/check-format.sh
format:
	$(CLANG_FORMAT) -i $(FORMAT_FILES)

install: build
	$(CMAKE) --install build --prefix $(PREFIX)

clean:
	rm -rf build build-asan build-tsan build-bench build-faults build-fuzz
