# mproc — thin wrapper over CMake.
#   make deps      install every package the build, tests and examples use,
#                  the optional libpng-dev and libuv1-dev included (the other
#                  targets install only what they run themselves: the compiler
#                  and CMake for demo, those and check, wrk, parallel and
#                  Open MPI for test, python3/wrk/NumPy for bench, gnuplot for
#                  bench-report, clang-format for format)
#   make demo      build the library and the examples only, and run the tour
#   make test      build and run every test (ctest)
#   make bench     build (Release) and run the benchmarks, side by side with Python
#   make bench-report  redraw docs/img/benchmarks.png and the table in BENCHMARKS.md
#                  from $(BUILD)-bench/bench/results.txt (run make bench first)
#   make install PREFIX=/some/where   build the library, the mproc tool and
#                  the manual pages only (no tests), and install them
#   make format    reformat the sources; make format-check fails on a diff
# cmake --build runs make again under this one: without this, every level
# of it announces "Entering directory"/"Leaving directory" (hundreds of lines).
MAKEFLAGS += --no-print-directory

BUILD    ?= build
PREFIX   ?= /usr/local
CMAKE    ?= cmake
JOBS     ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_ARGS ?=
NO_TESTS ?= error

# Without libpng-dev and libuv1-dev the library, the tests and every other
# example still build: the two examples that need them are skipped.  Without
# Open MPI the MPI backend (libmproc_mpi) and its tests are skipped.
MPI_DEPS := openmpi-bin libopenmpi-dev
BUILD_DEPS := cmake make gcc pkg-config check libpng-dev libuv1-dev $(MPI_DEPS)
# What building the library and the examples needs.
BUILD_TOOLS := cmake make gcc pkg-config
# What the tests need: Check, wrk for the prefork server's load test, GNU
# parallel, which the mproc run tests compare against, and Open MPI for the
# MPI backend's cases.
TEST_DEPS := $(BUILD_TOOLS) check wrk parallel $(MPI_DEPS)
FORMAT_DEPS := clang-format
# mpi4py.futures runs beside the MPI backend (Debian's python3, not pyenv's);
# NumPy makes Python's map_shm_tiny row (a python3 without it runs that row
# in Debian's python3).
BENCH_DEPS := python3 wrk parallel $(MPI_DEPS) python3-mpi4py python3-numpy
REPORT_DEPS := python3 gnuplot-nox
FORMAT_FILES = $(shell git ls-files --cached --others --exclude-standard '*.c' '*.h' 2>/dev/null)

.PHONY: all deps build demo test bench bench-report install format format-check clean

all: build

deps:
	@bash scripts/deps.sh $(BUILD_DEPS)

$(BUILD)/CMakeCache.txt:
	$(CMAKE) -S . -B $(BUILD) $(CMAKE_ARGS)

build: $(BUILD)/CMakeCache.txt
	$(CMAKE) --build $(BUILD) -j $(JOBS)

# The tour builds only the library and the examples, quietly: the build's
# output goes to a log that is shown only when the build fails.
demo:
	@bash scripts/deps.sh $(BUILD_TOOLS)
	@mkdir -p $(BUILD)
	@echo "demo: building the library and the examples (log: $(BUILD)/demo-build.log)"
	@{ test -f $(BUILD)/CMakeCache.txt || $(CMAKE) -S . -B $(BUILD) $(CMAKE_ARGS); } >$(BUILD)/demo-build.log 2>&1 && \
	  $(CMAKE) --build $(BUILD) -j $(JOBS) --target examples >>$(BUILD)/demo-build.log 2>&1 || \
	  { tail -n 40 $(BUILD)/demo-build.log; echo "demo: the build FAILED (full log: $(BUILD)/demo-build.log)"; exit 1; }
	@bash examples/demo.sh $(BUILD)

# Configured again after the install, so a tree configured without Check
# gains its suites.
test:
	@bash scripts/deps.sh $(TEST_DEPS)
	$(CMAKE) -S . -B $(BUILD) $(CMAKE_ARGS) >/dev/null
	$(CMAKE) --build $(BUILD) -j $(JOBS)
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --no-tests=$(NO_TESTS) $(CTEST_ARGS)

bench:
	@bash scripts/deps.sh $(BENCH_DEPS)
	$(CMAKE) -S . -B $(BUILD)-bench -DCMAKE_BUILD_TYPE=Release -DMPROC_BUILD_TESTS=OFF $(CMAKE_ARGS)
	$(CMAKE) --build $(BUILD)-bench -j $(JOBS)
	bash bench/run.sh $(BUILD)-bench

bench-report:
	@bash scripts/deps.sh $(REPORT_DEPS)
	@test -s $(BUILD)-bench/bench/results.txt || { echo "no $(BUILD)-bench/bench/results.txt: run make bench first" >&2; exit 1; }
	python3 bench/report.py $(BUILD)-bench/bench/results.txt docs/img/benchmarks.png BENCHMARKS.md

# Builds only what it installs (the libraries, the tool, the manual pages),
# its output in a log shown when the build fails, as for demo.
install:
	@bash scripts/deps.sh $(BUILD_TOOLS)
	@mkdir -p $(BUILD)
	@echo "install: building the library, the mproc tool and the manual pages (log: $(BUILD)/install-build.log)"
	@{ test -f $(BUILD)/CMakeCache.txt || $(CMAKE) -S . -B $(BUILD) $(CMAKE_ARGS); } >$(BUILD)/install-build.log 2>&1 && \
	  $(CMAKE) --build $(BUILD) -j $(JOBS) --target installed >>$(BUILD)/install-build.log 2>&1 || \
	  { tail -n 40 $(BUILD)/install-build.log; echo "install: the build FAILED (full log: $(BUILD)/install-build.log)"; exit 1; }
	@$(CMAKE) --install $(BUILD) --prefix $(PREFIX) >$(BUILD)/install.log 2>&1 || \
	  { cat $(BUILD)/install.log; echo "install: FAILED"; exit 1; }
	@echo "install: $$(grep -cE '^-- (Installing|Up-to-date):' $(BUILD)/install.log) paths under $(PREFIX) (each listed in $(BUILD)/install.log), among them:"
	@grep -E '/(mproc\.h|libmproc\.so|mproc\.pc|mprocConfig\.cmake|bin/mproc|man7/mproc\.7)$$' $(BUILD)/install.log | sed 's/^-- [A-Za-z-]*: /  /'
	@echo "install: build with PKG_CONFIG_PATH=$$(sed -n 's|^-- [A-Za-z-]*: \(.*\)/mproc\.pc$$|\1|p' $(BUILD)/install.log) cc prog.c \$$(pkg-config --cflags --libs mproc)"

format:
	@bash scripts/deps.sh $(FORMAT_DEPS)
	clang-format -i $(FORMAT_FILES)

format-check:
	@bash scripts/deps.sh $(FORMAT_DEPS)
	@clang-format --dry-run --Werror $(FORMAT_FILES) && echo "format OK"

clean:
	rm -rf $(BUILD) $(BUILD)-bench
