# mproc — thin wrapper over CMake.
#   make demo      build and run the demo programs
#   make test      build and run every test (ctest)
#   make bench     build (Release) and run the benchmarks, side by side with Python
#   make bench-report  redraw docs/img/benchmarks.png and the table in BENCHMARKS.md
#                  from $(BUILD)-bench/bench/results.txt (run make bench first)
#   make install PREFIX=/some/where
#   make format    reformat the sources; make format-check fails on a diff
BUILD    ?= build
PREFIX   ?= /usr/local
CMAKE    ?= cmake
JOBS     ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_ARGS ?=
NO_TESTS ?= error

BUILD_DEPS := cmake make gcc pkg-config check libpng-dev libuv1-dev
# Tools the tests drive (the prefork server's load test uses wrk; the
# mproc run tests compare with GNU parallel).
TEST_DEPS := wrk parallel
BENCH_DEPS := python3 wrk parallel
REPORT_DEPS := python3 gnuplot-nox
FORMAT_FILES = $(shell git ls-files --cached --others --exclude-standard '*.c' '*.h' 2>/dev/null)

.PHONY: all deps build demo test bench bench-report install format format-check clean

all: build

deps:
	@bash scripts/deps.sh $(BUILD_DEPS)

$(BUILD)/CMakeCache.txt: | deps
	$(CMAKE) -S . -B $(BUILD) $(CMAKE_ARGS)

build: deps $(BUILD)/CMakeCache.txt
	$(CMAKE) --build $(BUILD) -j $(JOBS)

demo: build
	@bash examples/demo.sh $(BUILD)

test: build
	@bash scripts/deps.sh $(TEST_DEPS)
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --no-tests=$(NO_TESTS) $(CTEST_ARGS)

bench: deps
	@bash scripts/deps.sh $(BENCH_DEPS)
	$(CMAKE) -S . -B $(BUILD)-bench -DCMAKE_BUILD_TYPE=Release -DMPROC_BUILD_TESTS=OFF $(CMAKE_ARGS)
	$(CMAKE) --build $(BUILD)-bench -j $(JOBS)
	bash bench/run.sh $(BUILD)-bench

bench-report:
	@bash scripts/deps.sh $(REPORT_DEPS)
	@test -s $(BUILD)-bench/bench/results.txt || { echo "no $(BUILD)-bench/bench/results.txt: run make bench first" >&2; exit 1; }
	python3 bench/report.py $(BUILD)-bench/bench/results.txt docs/img/benchmarks.png BENCHMARKS.md

install: build
	$(CMAKE) --install $(BUILD) --prefix $(PREFIX)

format:
	clang-format -i $(FORMAT_FILES)

format-check:
	@clang-format --dry-run --Werror $(FORMAT_FILES) && echo "format OK"

clean:
	rm -rf $(BUILD) $(BUILD)-bench
