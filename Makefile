# Makefile - the short way in. CMake does the building; this file picks the options.
#
#   make                  build into ./build (warnings are errors)
#   make check            install missing packages (as root), build, run every test; then an
#                         ASan/UBSan build in ./build-asan runs the unit tests
#   make bench            build, then the benchmarks against QEMU (bench/run; see bench/README.md)
#   make bench-quick      the same on small images, once: a smoke run (timings meaningless)
#   make demo             install missing packages (as root), build, then show the CLI next to
#                         qemu-img on a small backing chain
#   make stress           the long crash-at-every-write and I/O-error tests (bigger workloads),
#                         and commit.sh/rebase.sh over every layout, base format and size
#   make fuzz             build the libFuzzer targets (clang) in ./build-fuzz and run each for
#                         FUZZ_SECONDS (default 60); see tests/fuzz/Makefile
#   make abi-baseline     build, then rewrite abi/libqcow2.so.0.abi, the ABI that `make check`
#                         (tests/interop/abi.sh) holds the library to; commit it with the reason
#   make package          the Debian packages (debian/) with dpkg-buildpackage, into ./build-deb
#   make package-check    build them, run lintian, install them (as root), try them, remove
#                         them again (tests/packaging/deb.sh; .ci/run runs it)
#   make install PREFIX=/usr/local
#   make clean

BUILD      ?= build
ASAN_BUILD ?= build-asan
TSAN_BUILD ?= build-tsan
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 60
PREFIX     ?= /usr/local
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE      ?= cmake
CTEST      ?= ctest
# ctest runs one test per core (the tests use their own scratch directories and sockets).
CTEST_JOBS ?= $(JOBS)
# Extra arguments for ctest, e.g. CTEST_ARGS="-R interop_map".
CTEST_ARGS ?=
# make check's limit per test, in seconds (make stress allows 14400).
TEST_TIMEOUT ?= 1500

# Debian packages needed to build and test. Add to this list when a test needs a new tool.
DEPS = cmake pkg-config gcc make zlib1g-dev libzstd-dev qemu-utils time \
       nbdkit nbdkit-plugin-dev libnbd-bin fio clang libclang-rt-14-dev abigail-tools \
       bash-completion debhelper dpkg-dev lintian scdoc

CMAKE_FLAGS = -DQCOW2_WERROR=ON

.PHONY: all build deps check check-build check-asan check-tsan demo install clean bench bench-quick \
        stress fuzz abi-baseline package package-check

all: build

build:
	$(CMAKE) -S . -B $(BUILD) $(CMAKE_FLAGS)
	$(CMAKE) --build $(BUILD) -j $(JOBS)

# Install what is missing: apt-get as root, otherwise say exactly what to run.
deps:
	@if ! command -v dpkg >/dev/null 2>&1; then \
	    echo "deps: no dpkg here; make sure these (Debian names) are installed: $(DEPS)"; \
	    exit 0; \
	fi; \
	missing=""; \
	for p in $(DEPS); do \
	    dpkg -s $$p 2>/dev/null | grep -q '^Status: install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	echo "deps: missing packages:$$missing"; \
	if [ "$$(id -u)" = 0 ]; then \
	    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y$$missing; \
	else \
	    echo "deps: not root; run:"; \
	    echo "    sudo apt-get update && sudo apt-get install -y$$missing"; \
	    exit 1; \
	fi

# Both trees run even when the first fails, so one CI run shows everything.
check: deps
	@rc=0; \
	$(MAKE) --no-print-directory check-build || rc=1; \
	$(MAKE) --no-print-directory check-asan || rc=1; \
	$(MAKE) --no-print-directory check-tsan || rc=1; \
	exit $$rc

check-build: build
	cd $(BUILD) && $(CTEST) --output-on-failure --timeout $(TEST_TIMEOUT) -j $(CTEST_JOBS) $(CTEST_ARGS)

check-asan:
	$(CMAKE) -S . -B $(ASAN_BUILD) $(CMAKE_FLAGS) -DQCOW2_SANITIZE=ON
	$(CMAKE) --build $(ASAN_BUILD) -j $(JOBS) --target unit-tests
	cd $(ASAN_BUILD) && IOERROR_STRIDE=12 CRASH_EXHAUSTIVE_MAX=5 CRASH_SHAPES=0 QCOW2_TEST_NO_QEMU_CHECK=1 \
	    $(CTEST) --output-on-failure --timeout $(TEST_TIMEOUT) -j $(CTEST_JOBS) -L unit $(CTEST_ARGS)

# The concurrency stress test again under ThreadSanitizer.
check-tsan:
	$(CMAKE) -S . -B $(TSAN_BUILD) $(CMAKE_FLAGS) -DQCOW2_TSAN=ON
	$(CMAKE) --build $(TSAN_BUILD) -j $(JOBS) --target test_stress
	cd $(TSAN_BUILD) && TSAN_OPTIONS=halt_on_error=1 $(CTEST) --output-on-failure -R '^test_stress$$' $(CTEST_ARGS)

# Crash at every write and I/O errors at every I/O, with the bigger and random workloads.
stress: build
	cd $(BUILD) && CRASH_FULL=1 IOERROR_FULL=1 STRESS_OPS=2000 WRITE_DIFF_SEEDS=16 \
	    WRITE_DIFF_OPS=400 AMEND_FULL=1 SNAPSHOT_FULL=1 SNAPSHOT_RANDOM_STEPS=300 CHAIN_FULL=1 \
	    QCOW2_TEST_FULL=1 $(CTEST) --output-on-failure --timeout 14400 \
	    -R '^(test_(crash|ioerror|stress)|interop_(write_diff|amend|snapshot|commit|rebase|read_matrix|create_matrix|check_repair|map_history|resize))$$' \
	    $(CTEST_ARGS)

fuzz: deps
	$(MAKE) -C tests/fuzz run OUT=$(abspath $(FUZZ_BUILD)) FUZZ_SECONDS=$(FUZZ_SECONDS)

# Record the built library's ABI as the one later builds must stay compatible with. Only for a
# deliberate change: a new SONAME (major version), or a new baseline after additions.
abi-baseline: build
	QCOW2_BUILD_DIR=$(abspath $(BUILD)) bash tests/interop/abi.sh --update

# Extra arguments for bench/run, e.g. BENCH_ARGS="--only W1,W5 --reps 3".
BENCH_ARGS ?=

bench: build
	BUILD=$(abspath $(BUILD)) bash bench/run $(BENCH_ARGS)

bench-quick: build
	BUILD=$(abspath $(BUILD)) bash bench/run --quick $(BENCH_ARGS)

# The README's first command: on a fresh machine it installs what it needs, as check does.
demo: deps
	$(MAKE) --no-print-directory build
	bash tools/demo.sh $(BUILD)

package: deps
	rm -rf build-deb && mkdir -p build-deb/src
	git ls-files -z | xargs -0 cp --parents -t build-deb/src
	cd build-deb/src && dpkg-buildpackage -us -uc -b
	@ls -1 build-deb/*.deb

package-check: deps
	bash tests/packaging/deb.sh

install:
	$(CMAKE) -S . -B $(BUILD) $(CMAKE_FLAGS) -DCMAKE_INSTALL_PREFIX=$(PREFIX)
	$(CMAKE) --build $(BUILD) -j $(JOBS)
	$(CMAKE) --install $(BUILD)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(TSAN_BUILD) $(FUZZ_BUILD) build-deb
