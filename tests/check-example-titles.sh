#!/usr/bin/env bash
# check-example-titles.sh SOURCE_DIR — every examples/sNN-*.c opens with its
# one-line title, "/* SNN: what it shows */", NN the number of its file name:
# make demo prints that line as the scenario's heading, so a title that runs
# on to a second line, or names another scenario, shows up cut or wrong there.
# And the guide links every example (its side-by-side section), so a new
# example is not one a reader of the guide never finds.
set -u
src=${1:?usage: check-example-titles.sh SOURCE_DIR}
fail=0 n=0
for f in "$src"/examples/s[0-9][0-9]-*.c; do
  n=$((n + 1))
  name=$(basename "$f" .c)
  num=${name:1:2}
  first=$(head -n1 "$f")
  if ! printf '%s\n' "$first" | grep -qE "^/\\* S$num: [^ ].* \\*/\$"; then
    echo "FAIL: $name.c: the first line is not a one-line title \"/* S$num: ... */\": $first"
    fail=1
  fi
  grep -q "(\.\./examples/$name\.c)" "$src/docs/guide.md" ||
    { echo "FAIL: docs/guide.md does not link examples/$name.c"; fail=1; }
done
[ "$n" -gt 0 ] || { echo "FAIL: no examples/sNN-*.c under $src"; exit 1; }
[ $fail = 0 ] && echo "check-example-titles: $n titles OK, each linked from the guide"
exit $fail
