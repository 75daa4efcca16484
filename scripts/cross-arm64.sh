#!/usr/bin/env bash
# scripts/cross-arm64.sh [BUILD_DIR]
# Cross-builds the library (shared and static, no tests, examples or
# benchmarks) for arm64 with clang --target=aarch64-linux-gnu, linking with
# lld against the sysroot of Debian's arm64 cross packages.  Nothing runs on
# arm64: this catches what does not compile or link there (x86-only builtins,
# storage sizes measured on x86-64's glibc types).  CI runs it; so can anyone.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-arm64}
bash scripts/deps.sh clang lld cmake make libc6-dev-arm64-cross linux-libc-dev-arm64-cross \
  libgcc-12-dev-arm64-cross file
# CMake's compiler probe must not try to run what it built.  The host's MPI
# (an x86-64 mpicc) is no use for arm64: the MPI backend is left out.
cmake -S . -B "$build" \
  -DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR=aarch64 \
  -DCMAKE_C_COMPILER=clang -DCMAKE_C_COMPILER_TARGET=aarch64-linux-gnu \
  -DCMAKE_EXE_LINKER_FLAGS=-fuse-ld=lld -DCMAKE_SHARED_LINKER_FLAGS=-fuse-ld=lld \
  -DCMAKE_FIND_ROOT_PATH=/usr/aarch64-linux-gnu \
  -DCMAKE_FIND_ROOT_PATH_MODE_PROGRAM=NEVER -DCMAKE_FIND_ROOT_PATH_MODE_LIBRARY=ONLY \
  -DCMAKE_FIND_ROOT_PATH_MODE_INCLUDE=ONLY \
  -DMPROC_WERROR=ON -DMPROC_BUILD_TESTS=OFF -DMPROC_BUILD_EXAMPLES=OFF -DMPROC_BUILD_BENCH=OFF -DMPROC_BUILD_TOOL=OFF \
  -DMPROC_WITH_MPI=OFF
cmake --build "$build" -j "$(nproc 2>/dev/null || echo 2)" --target mproc mproc_static
file -L "$build"/libmproc.so | grep -q 'ARM aarch64' || { echo "cross-arm64: not an arm64 library" >&2; exit 1; }
echo "cross-arm64: libmproc builds for aarch64"
