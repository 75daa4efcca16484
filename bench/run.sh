#!/usr/bin/env bash
# bench/run.sh BUILD_DIR
# Runs every C benchmark (BUILD_DIR/bench/bench-*) and every Python counterpart
# (bench/py/bench_*.py) and collects their "BENCH metric impl median unit" lines
# into BUILD_DIR/bench/results.txt, then prints each metric's ratios against
# mproc.  MPROC_BENCH_QUICK=1 runs reduced sizes (a smoke run).
set -u
build=${1:-build}
here=$(cd "$(dirname "$0")" && pwd)
out="$build/bench/results.txt"
mkdir -p "$build/bench"
: > "$out"
cpu=$(sed -n 's/^model name[[:space:]]*: *//p' /proc/cpuinfo | head -1 | tr -s ' ')
mem=$(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)
echo "# mproc benchmarks, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs (${cpu:-unknown CPU}), $mem RAM, $(uname -sr)" | tee -a "$out"
status=0
for b in "$build"/bench/bench-*; do
  [ -x "$b" ] || continue
  "$b" | tee -a "$out" || status=1
done
if command -v python3 >/dev/null; then
  for p in "$here"/py/bench_*.py; do
    [ -f "$p" ] || continue
    (cd "$here/py" && python3 "$p") | tee -a "$out" || status=1
  done
else
  echo "# python3 not found: Python figures skipped" | tee -a "$out"
fi
# MPI: plain MPI in C, mproc's MPI backend and mpi4py.futures (Debian's
# python3 with python3-mpi4py, not a pyenv python), each under mpiexec -n 3.
mpib="$build/bench/mpi/bench-mpi"
if [ -x "$mpib" ] && command -v mpiexec >/dev/null; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  over=()
  mpiexec --version 2>/dev/null | grep -qi 'open mpi\|openrte' && over=(--oversubscribe)
  mpirun=(mpiexec "${over[@]}" -n 3)
  "${mpirun[@]}" "$mpib" raw | tee -a "$out" || status=1
  # The floor under a crash-contained task ("#" notes: plain C through a child).
  "${mpirun[@]}" "$mpib" floor | tee -a "$out" || status=1
  "${mpirun[@]}" "$mpib" mproc | tee -a "$out" || status=1
  # Opt-in in-rank mode (MPROC_MPI_INRANK): tasks run in the worker ranks.
  "${mpirun[@]}" "$mpib" inrank | tee -a "$out" || status=1
  if /usr/bin/python3 -c 'import mpi4py.futures' 2>/dev/null; then
    "${mpirun[@]}" /usr/bin/python3 -m mpi4py.futures "$here/mpi/bench_mpi4py.py" | tee -a "$out" || status=1
  else
    echo "# python3-mpi4py not installed: mpi4py.futures figures skipped" | tee -a "$out"
  fi
else
  echo "# MPI backend not built or mpiexec missing: MPI figures skipped" | tee -a "$out"
fi
echo
echo "== ratios (other / mproc; for rates read >1 as faster than mproc, for times as slower;"
echo "   raw = the hand-written mechanism of bench-raw.c, the metric's limit) =="
awk '$1=="BENCH" { v[$2" "$3]=$4; u[$2]=$5; m[$2]=1 }
     END { for (k in m) { if (!((k" mproc") in v)) continue; base=v[k" mproc"];
           line=sprintf("%-24s mproc %10.4g %-8s", k, base, u[k]);
           split("python raw openmp os parallel", impls, " ");
           for (i=1;i<=5;i++) if ((k" "impls[i]) in v && base>0)
             line=line sprintf("  %s %.4g (x%.3g)", impls[i], v[k" "impls[i]], v[k" "impls[i]]/base);
           print line } }' "$out" | sort
echo "== MPI: each mode against raw MPI (os): mode / os, for times >1 is slower =="
awk '$1=="BENCH" && $2 ~ /^mpi_/ { v[$2" "$3]=$4 }
     END { for (k in v) { split(k, p, " "); if (p[2]!="os") continue;
           line=sprintf("%-16s os %10.4g", p[1], v[k]);
           split("mproc inrank", impls, " ");
           for (i=1;i<=2;i++) if ((p[1]" "impls[i]) in v && v[k]>0)
             line=line sprintf("  %s %.4g (x%.3g)", impls[i], v[p[1]" "impls[i]], v[p[1]" "impls[i]]/v[k]);
           print line } }' "$out" | sort
echo "results: $out"
exit $status
