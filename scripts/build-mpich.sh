#!/usr/bin/env bash
# scripts/build-mpich.sh [BUILD_DIR]
# Builds the library with its MPI backend against MPICH (Debian mpich,
# libmpich-dev) in a tree of its own (default build-mpich) and runs the
# backend's cases under MPICH's mpiexec (Hydra).  Open MPI stays the default
# MPI of the machine and of `make test`: Debian's alternatives make only one
# of the two the plain `mpicc`/`mpiexec`, so MPICH is named explicitly here
# through its suffixed commands.
set -eu
cd "$(dirname "$0")/.."
build=${1:-build-mpich}
bash scripts/deps.sh cmake make gcc pkg-config check mpich libmpich-dev
cmake -S . -B "$build" -DMPI_C_COMPILER=/usr/bin/mpicc.mpich \
  -DMPIEXEC_EXECUTABLE=/usr/bin/mpiexec.mpich \
  -DMPROC_BUILD_EXAMPLES=OFF -DMPROC_BUILD_BENCH=OFF >/dev/null
grep -q 'MPI_C_LIB_NAMES:STRING=mpich' "$build/CMakeCache.txt" ||
  { echo "build-mpich: CMake did not pick MPICH" >&2; exit 1; }
cmake --build "$build" -j "$(nproc 2>/dev/null || echo 2)" --target mpi-cases mpi-cases-other mpi-pool mpi-plugin mproc_mpi
cd "$build" && ctest -L mpi --output-on-failure
