#!/usr/bin/env bash
# tests/cli/behaviour.sh MPROC_BINARY
# What a comparison with GNU parallel cannot show: Ctrl-C, --timeout on a
# job that forks grandchildren, a job writing 50 MB, ten million input lines
# in flat memory, and the help, version and progress output.  Waits are on
# real events (a file a job writes, a process that exits), each bounded.
set -u
M=${1:?usage: behaviour.sh MPROC_BINARY}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
cd "$T"
export LC_ALL=C
scale=${MPROC_TEST_TIMEOUT_SCALE:-1}
fails=0
ok() { echo "ok   $1"; }
fail() { echo "FAIL $1"; fails=$((fails + 1)); }

# until SECONDS CMD...: runs CMD every 10 ms until it succeeds, at most
# SECONDS (scaled); fails if it never does.
until_true() {
  local limit=$(( $1 * scale * 100 )) i=0
  shift
  while ! "$@"; do
    i=$((i + 1)); [ $i -ge $limit ] && return 1
    sleep 0.01
  done
}
# Processes whose command line contains $1 (zombies have none, so they
# do not count: they are already dead).
alive() { pgrep -f -- "$1" >/dev/null; }
none_alive() { ! alive "$1"; }
lines_in() { [ -f "$1" ] && [ "$(wc -l < "$1")" -ge "$2" ]; }

# A marker unique to this run, so that processes of other tests never count.
mark=$((4000 + $$ % 50000))

# ---- Ctrl-C: SIGINT to the runner stops everything, exit 130 ---------------------
"$M" run -j3 "echo started >> $T/started; sleep $mark.1 & sleep $mark.1; wait" ::: a b c d e f &
pid=$!
if until_true 30 lines_in started 3; then
  kill -INT $pid
  wait $pid; rc=$?
  [ $rc = 130 ] && ok "Ctrl-C exits 130" || fail "Ctrl-C exit status $rc, want 130"
  until_true 10 none_alive "sleep $mark.1" && ok "Ctrl-C leaves no process" ||
    fail "Ctrl-C left: $(pgrep -af "sleep $mark.1")"
  [ "$(wc -l < started)" = 3 ] && ok "Ctrl-C starts no more jobs" || fail "jobs started after Ctrl-C: $(wc -l < started)"
else
  fail "Ctrl-C: jobs never started"; kill -KILL $pid
fi

# A job that ignores SIGTERM is killed too, after the grace period.
rm -f started
"$M" run "echo started >> $T/started; trap '' TERM; sleep $mark.2 & sleep $mark.2; wait" ::: a &
pid=$!
if until_true 30 lines_in started 1; then
  kill -INT $pid; wait $pid; rc=$?
  [ $rc = 130 ] && until_true 10 none_alive "sleep $mark.2" && ok "Ctrl-C kills a job ignoring SIGTERM" ||
    fail "Ctrl-C on a job ignoring SIGTERM: exit $rc, left: $(pgrep -af "sleep $mark.2")"
else
  fail "job ignoring TERM never started"; kill -KILL $pid
fi

# ---- --timeout kills the job's whole tree, grandchildren included --------------------
start=$(date +%s)
"$M" run --joblog tlog --timeout 1 "sleep $mark.3 & (sleep $mark.3 &); sleep $mark.3; wait" ::: x 2>/dev/null
rc=$?
took=$(( $(date +%s) - start ))
[ $rc = 1 ] && ok "--timeout: exit status 1" || fail "--timeout: exit status $rc"
[ $took -lt $((20 * scale)) ] && ok "--timeout: returned in ${took}s" || fail "--timeout took ${took}s"
until_true 10 none_alive "sleep $mark.3" && ok "--timeout: no grandchild left" ||
  fail "--timeout left: $(pgrep -af "sleep $mark.3")"
awk -F'\t' 'NR==2 && $7==-1 && $8==15 {f=1} END {exit !f}' tlog && ok "--timeout: joblog Exitval -1 Signal 15" ||
  fail "--timeout joblog: $(cat tlog)"

# ---- --timeout on a job that stopped itself (SIGSTOP): it still ends -----------------
start=$(date +%s)
"$M" run --timeout 1 "sleep $mark.4 & kill -STOP \$\$; wait" ::: x 2>/dev/null
rc=$?
took=$(( $(date +%s) - start ))
[ $rc = 1 ] && [ $took -lt $((20 * scale)) ] && ok "--timeout: a stopped job ends (${took}s)" ||
  fail "--timeout on a stopped job: exit status $rc after ${took}s"
until_true 10 none_alive "sleep $mark.4" && ok "--timeout: nothing of a stopped job left" ||
  fail "--timeout on a stopped job left: $(pgrep -af "sleep $mark.4")"

# ---- no fork allowed at all: a clear error, not a hang --------------------------
# As an unprivileged user with a process allowance of 0 (root ignores it).
nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
if command -v setpriv >/dev/null && command -v prlimit >/dev/null && [ "$(id -u)" = 0 ] &&
  nobody test -x "$M"; then
  # LeakSanitizer needs a thread of its own at exit, which the allowance forbids.
  err=$(echo 1 | ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" \
    nobody prlimit --nproc=0 "$M" run echo 2>&1 >/dev/null)
  rc=$?
  [ $rc = 255 ] && [ "${err#*starting a job}" != "$err" ] &&
    ok "no fork allowed: exit 255, \"$err\"" || fail "no fork allowed: exit $rc, '$err'"
else
  echo "skip no fork allowed: needs root, setpriv, prlimit and a binary user 65534 may run"
fi

# ---- 50 MB from one job, grouped: no interleaving, nothing lost ----------------------
"$M" run -j2 'head -c 50000000 /dev/zero | tr "\0" {}' ::: a b > big.out
size=$(stat -c %s big.out)
[ "$size" = 100000000 ] && ok "50 MB per job: all bytes" || fail "50 MB per job: $size bytes"
runs=$(tr -s ab < big.out | head -c 10)
[ "$runs" = ab ] || [ "$runs" = ba ] && ok "50 MB per job: not interleaved" || fail "50 MB interleaved: ${runs:0:20}"
rm -f big.out

# ---- ten million input lines, flat memory ---------------------------------------------
# Max RSS of the runner over 100 000 and over 10 000 000 lines (10 000 lines
# per job): streaming keeps them equal within a small margin.
# Under AddressSanitizer freed memory sits in a quarantine (up to 256 MB)
# that would pass for growth: measure with the quarantine off.
maxrss() {
  ASAN_OPTIONS="${ASAN_OPTIONS:-}:quarantine_size_mb=0:thread_local_quarantine_size_kb=0" python3 -c 'import resource,subprocess,sys
subprocess.run(sys.argv[1:], stdin=sys.stdin, stdout=subprocess.DEVNULL, check=False)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)' "$@"
}
seq 100000 > small.txt
small=$(maxrss "$M" run -n 10000 true < small.txt)
big=$(seq 10000000 | maxrss "$M" run -n 10000 true)
echo "     max RSS: $small KiB over 1e5 lines, $big KiB over 1e7 lines"
[ -n "$big" ] && [ "$big" -lt $((small + 2048)) ] && ok "10 M lines in flat memory" ||
  fail "memory grows with input: $small KiB -> $big KiB"
# -k's window is bounded too.
bigk=$(seq 2000000 | maxrss "$M" run -k -n 1000 true)
[ -n "$bigk" ] && [ "$bigk" -lt $((small + 4096)) ] && ok "-k: bounded reorder window" ||
  fail "-k memory: $small KiB -> $bigk KiB"

# ---- a system limit while jobs run: wait for a slot, do not give up -----------
# With 24 descriptors, 20 slots cannot all get their pidfd and outputs.
out=$( (ulimit -n 24; "$M" run -j 20 'sleep 0.0{}; echo {}' ::: $(seq 9) $(seq 9)) | sort -n | tr '\n' ' ')
[ "$out" = "1 1 2 2 3 3 4 4 5 5 6 6 7 7 8 8 9 9 " ] && ok "out of descriptors: jobs wait for a slot" ||
  fail "out of descriptors: '$out'"

# ---- help, version, progress -----------------------------------------------------------
"$M" run --help > help.txt; rc=$?
lines=$(wc -l < help.txt); width=$(awk '{ if (length > w) w = length } END { print w }' help.txt)
[ $rc = 0 ] && [ "$lines" -le 30 ] && [ "$width" -le 100 ] && ok "--help fits a screen ($lines lines)" ||
  fail "--help: exit $rc, $lines lines, $width columns"
"$M" --version | grep -Eq '^mproc [0-9]+\.[0-9]+\.[0-9]+$' && ok "--version" || fail "--version: $("$M" --version)"
"$M" run --version | grep -Eq '^mproc run [0-9]+\.[0-9]+\.[0-9]+$' && ok "run --version" || fail "run --version"
"$M" nosuch >/dev/null 2>&1; [ $? = 255 ] && ok "unknown subcommand: 255" || fail "unknown subcommand"
# Not a terminal: --bar, --eta and --progress add nothing.
"$M" run --bar --eta --progress true ::: a b 2> prog.err
[ ! -s prog.err ] && ok "--bar: nothing when stderr is not a terminal" || fail "--bar wrote: $(cat prog.err)"
# A terminal (script(1) gives one): the library's bar, ending at 100%.
if command -v script >/dev/null; then
  TERM=xterm script -qec "$M run --bar true ::: a b c d" /dev/null > tty.out
  grep -q '100% 4/4' tty.out && ok "--bar on a terminal" || fail "--bar on a terminal: $(cat -v tty.out | head -3)"
else
  fail "script(1) missing (util-linux): cannot test the bar on a terminal"
fi

# The manual page formats without a warning.
page=$(cd "$(dirname "$0")/../../tools" && pwd)/mproc.1
if command -v groff >/dev/null; then
  w=$(groff -man -ww -z "$page" 2>&1)
  [ -z "$w" ] && ok "mproc.1 formats cleanly" || fail "mproc.1: $w"
else
  grep -q '^\.TH MPROC 1' "$page" && ok "mproc.1 present (no groff to format it)" || fail "mproc.1 missing"
fi

[ $fails = 0 ] && echo "all behaviour checks passed"
[ $fails = 0 ]
