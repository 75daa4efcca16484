#!/usr/bin/env bash
# launch-example.sh MPIEXEC BIN
# Runs an example built against libmproc_mpi under `mpiexec -n 3` with
# MPROC_TRANSPORT=mpi: the library joins the job before main, the worker
# ranks serve, rank 0 runs the example's main with its pools over the two
# worker ranks.  tests/run-example.sh checks the output as for a local run.
set -u
mpiexec=$1 bin=$2
# As root Open MPI refuses to start without these; they change nothing else.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 MPROC_TRANSPORT=mpi
# See run-case.sh: no leak detection under mpiexec.
export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0
# Open MPI needs --oversubscribe for more ranks than cores and -x to pass a
# variable on; MPICH's Hydra passes the whole environment and has neither.
args=()
"$mpiexec" --version 2>/dev/null | grep -qi 'open mpi\|openrte' &&
  args=(--oversubscribe -x MPROC_TRANSPORT -x ASAN_OPTIONS)
exec "$mpiexec" "${args[@]}" -n 3 "$bin"
