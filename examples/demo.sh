#!/usr/bin/env bash
# examples/demo.sh BUILD_DIR — runs every example program in turn, each under a
# one-line heading, and fails if any of them does not behave as its test
# expects (tests/examples/<name>.expect).
set -u
build=${1:-build}
here=$(cd "$(dirname "$0")/.." && pwd)
status=0 n=0 failed=""
for exp in "$here"/tests/examples/*.expect; do
  name=$(basename "$exp" .expect)
  bin="$build/examples/$name"
  n=$((n + 1))
  # Examples whose extra library was not found are skipped by the build,
  # which names them in examples/SKIPPED ("<name> <reason>").
  why=$(awk -v n="$name" '$1 == n { $1 = ""; sub(/^ /, ""); print }' "$build/examples/SKIPPED" 2>/dev/null)
  if [ -n "$why" ] && [ ! -x "$bin" ]; then
    echo "=== $name — skipped: $why"; n=$((n - 1)); continue
  fi
  if [ ! -x "$bin" ]; then
    echo "=== $name — not built ($bin missing)"; status=1; failed="$failed $name"; continue
  fi
  # The title is the example's first line: /* SNN: title */
  title=$(head -n1 "$here/examples/$name.c" 2>/dev/null | sed -e 's|^/\* *||' -e 's| *\*/$||')
  echo "=== $name — ${title:-example}"
  if out=$(bash "$here/tests/run-example.sh" "$bin" "$exp" 2>&1); then
    echo "$out" | sed -n '/^---- output/,/^----$/p' | sed '1d;$d'
  else
    echo "$out"; status=1; failed="$failed $name"
  fi
done
# Scenarios of the seed list that have no example in this tree yet.
missing=""
for i in $(seq -w 1 19); do
  ls "$here"/examples/s$i-*.c >/dev/null 2>&1 || missing="$missing S$i"
done
echo
[ -n "$missing" ] && echo "demo: scenarios without an example in this tree:$missing"
if [ $status = 0 ]; then
  echo "demo: all $n examples behaved as expected"
else
  echo "demo: FAILED:$failed (each checked against tests/examples/<name>.expect)"
fi
exit $status
