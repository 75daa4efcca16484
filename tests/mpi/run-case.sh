#!/usr/bin/env bash
# run-case.sh MPIEXEC BIN CASE [OTHER_BIN]
# Runs one case of mpi-cases (see mpi-cases.c) and checks its outcome:
#   fallback, errors, backoff, units, pool-local
#                     without mpiexec: a plain ./app with no MPI runtime
#   killrank, pool-killrank, inrank-segv
#                     under mpiexec -n 3: a task SIGKILLs its rank (or, run
#                     in the rank, crashes it); the job
#                     must end non-zero within a bounded time
#   badtag            the same, the job ended by a rank that got a message
#                     of an unknown tag, which its message names
#   sigint            under mpiexec -n 3: SIGINT to mpiexec while a task runs
#                     must end the job promptly
#   mismatch          rank 0 runs BIN, ranks 1-2 OTHER_BIN (another build-id):
#                     init fails on rank 0 with a clear message
#   any other         under mpiexec -n 3: rank 0 prints "PASS CASE"
set -u
mpiexec=$1 bin=$2 case=$3 other=${4:-}
scale=${MPROC_TEST_TIMEOUT_SCALE:-1}
limit() { awk -v s="$scale" -v t="$1" 'BEGIN { printf "%d", t * (s > 1 ? s : 1) }'; }
# As root Open MPI refuses to start without these; they change nothing else.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Open MPI keeps allocations past MPI_Finalize and unloads its plugins there,
# so LeakSanitizer cannot even name the module of those leftovers and no
# suppression matches them: under mpiexec leak detection is off (address and
# UB checks stay on); the cases run without MPI (fallback, errors, backoff) keep it.
under_mpi_asan=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0
out=$(mktemp) err=$(mktemp)
trap 'rm -f "$out" "$err"' EXIT
# Open MPI refuses more ranks than cores without --oversubscribe; MPICH's
# Hydra has no such option and needs none.
over=()
"$mpiexec" --version 2>/dev/null | grep -qi 'open mpi\|openrte' && over=(--oversubscribe)
mpirun=(env ASAN_OPTIONS="$under_mpi_asan" "$mpiexec" "${over[@]}" -n 3)
fail() { echo "FAIL $case: $*"; echo "--- stdout"; cat "$out"; echo "--- stderr"; cat "$err"; exit 1; }

case $case in
fallback | errors | backoff | units | pool-local)
  env -u OMPI_COMM_WORLD_RANK -u PMIX_RANK -u PMI_RANK timeout "$(limit 60)" "$bin" "$case" >"$out" 2>"$err"
  rc=$?
  [ $rc = 0 ] || fail "exit status $rc"
  grep -q "^PASS $case\$" "$out" || fail "no PASS line"
  ;;
killrank | pool-killrank | inrank-segv | badtag)
  t0=$(date +%s)
  # (137 may be mpiexec passing on its rank's SIGKILL: the time tells a
  # hang apart.)
  timeout -s KILL "$(limit 120)" "${mpirun[@]}" "$bin" "$case" >"$out" 2>"$err"
  rc=$? took=$(($(date +%s) - t0))
  [ $rc != 0 ] || fail "the job exited 0"
  [ "$took" -le "$(limit 30)" ] || fail "the job took ${took}s to end"
  grep -q UNEXPECTED "$out" && fail "rank 0 went on"
  # MPICH's Hydra may drop what the aborting rank wrote last: the message
  # is checked where mpiexec forwards it before it ends (Open MPI).
  if [ "$case" = badtag ] && [ ${#over[@]} -gt 0 ]; then
    grep -q "unknown tag 999" "$err" || fail "no message naming the tag"
  fi
  echo "job ended with status $rc after ${took}s"
  ;;
sigint)
  t0=$(date +%s)
  "${mpirun[@]}" "$bin" "$case" >"$out" 2>"$err" &
  pid=$!
  # Wait for the task to be running (bounded), then interrupt mpiexec.
  for _ in $(seq 1 "$(limit 600)"); do grep -q RUNNING "$out" && break; sleep 0.1; done
  grep -q RUNNING "$out" || { kill -KILL $pid; fail "the case never started"; }
  t1=$(date +%s)
  kill -INT $pid
  for _ in $(seq 1 "$(limit 300)"); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
  if kill -0 $pid 2>/dev/null; then kill -KILL $pid; fail "mpiexec still running 30 s after SIGINT"; fi
  wait $pid
  rc=$? took=$(($(date +%s) - t1))
  # Open MPI's mpiexec then exits non-zero; MPICH's Hydra sometimes 0: what
  # counts is that every rank ended, rank 0 included, without going on.
  grep -q UNEXPECTED "$out" && fail "rank 0 went on"
  # No rank, and no local worker of a rank (they die with their rank), may
  # outlive mpiexec for long.
  for _ in $(seq 1 "$(limit 100)"); do pgrep -f -- "^$bin $case\$" >/dev/null || break; sleep 0.1; done
  pgrep -f -- "^$bin $case\$" >/dev/null && fail "processes of the job outlived mpiexec"
  echo "job ended with status $rc ${took}s after SIGINT"
  ;;
mismatch)
  timeout -s KILL "$(limit 120)" env ASAN_OPTIONS="$under_mpi_asan" "$mpiexec" "${over[@]}" -n 1 "$bin" "$case" : -n 2 "$other" "$case" >"$out" 2>"$err"
  grep -q "runs a different program than rank 0" "$err" || fail "no mismatch message"
  grep -q "^PASS $case\$" "$out" || fail "no PASS line"
  ;;
*)
  timeout -s KILL "$(limit 300)" "${mpirun[@]}" "$bin" "$case" >"$out" 2>"$err"
  rc=$?
  [ $rc = 0 ] || fail "exit status $rc"
  grep -q "^PASS $case\$" "$out" || fail "no PASS line"
  ;;
esac
cat "$out"
echo "ok $case"
