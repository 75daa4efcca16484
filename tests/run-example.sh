#!/usr/bin/env bash
# run-example.sh BINARY EXPECT_FILE
# Runs an example and checks its output against EXPECT_FILE:
#   - each non-comment line of EXPECT_FILE is an extended regular expression;
#     lines starting with "=" must match output lines in order (each one after
#     the previous match); lines starting with "~" must match some line
#     anywhere; "#" lines are comments; "exit N" sets the expected status
#     (default 0); "count N REGEX" requires exactly N matching lines.
#   - afterwards no process started by the example may still be alive.
set -u
bin=$1 expect=$2
out=$(mktemp) ; trap 'rm -f "$out"' EXIT
want_status=0
# setsid gives the example its own session so leftovers can be found by sid.
setsid --wait "$bin" >"$out" 2>&1 &
runner=$!
wait "$runner"; status=$?
fail=0
echo "---- output of $(basename "$bin") ----"; cat "$out"; echo "----"
line_no=0
while IFS= read -r line || [ -n "$line" ]; do
  case "$line" in
    ''|'#'*) continue ;;
    'exit '*) want_status=${line#exit } ;;
    'count '*)
      rest=${line#count }; n=${rest%% *}; re=${rest#* }
      got=$(grep -cE -- "$re" "$out")
      if [ "$got" != "$n" ]; then echo "FAIL: expected $n lines matching /$re/, got $got"; fail=1; fi ;;
    '~'*)
      re=${line#\~}
      grep -qE -- "$re" "$out" || { echo "FAIL: no line matches /$re/"; fail=1; } ;;
    '='*)
      re=${line#=}
      found=$(tail -n +$((line_no + 1)) "$out" | grep -nE -m1 -- "$re" | cut -d: -f1)
      if [ -z "$found" ]; then echo "FAIL: no line after line $line_no matches /$re/"; fail=1
      else line_no=$((line_no + found)); fi ;;
    *) echo "FAIL: bad expect line: $line"; fail=1 ;;
  esac
done < "$expect"
if [ "$status" != "$want_status" ]; then echo "FAIL: exit status $status, expected $want_status"; fail=1; fi
# Nothing the example started may outlive it (children are killed with their
# parent; give the kernel a bounded moment to deliver that).
for _ in $(seq 50); do
  left=$(pgrep -s "$runner" 2>/dev/null | grep -vx "$runner" || true)
  [ -z "$left" ] && break
  sleep 0.1
done
if [ -n "${left:-}" ]; then echo "FAIL: processes left behind: $left"; fail=1; fi
[ $fail = 0 ] && echo "example OK"
exit $fail
