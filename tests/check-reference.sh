#!/usr/bin/env bash
# check-reference.sh SOURCE_DIR
# Fails when a public function (every MPROC_EXTERN declaration in include/)
# has no reference entry in docs/reference/*.md.  An entry is a markdown
# heading (a line starting with "##", "###" or "####") naming the function in
# full, e.g.
#   ### `int mproc_pool_close(mproc_pool *pool)`
# A heading may name several functions; abbreviations such as "_free" do not
# count.
set -u
src=${1:-.}
names=$(grep -rhoz 'MPROC_EXTERN[^;(]*(' "$src/include" | tr '\0' '\n' |
        grep -oE 'mproc_[A-Za-z0-9_]+ *\($' | tr -d ' (' | sort -u)
[ -n "$names" ] || { echo "FAIL: no MPROC_EXTERN declarations found under $src/include"; exit 1; }
headings=$(grep -hE '^#{2,4} ' "$src"/docs/reference/*.md 2>/dev/null)
missing=0 total=0
for n in $names; do
  total=$((total + 1))
  if ! grep -qE "(^|[^A-Za-z0-9_])$n([^A-Za-z0-9_]|\$)" <<<"$headings"; then
    echo "no reference entry for $n (want a heading naming it in docs/reference/*.md)"
    missing=$((missing + 1))
  fi
done
echo "$((total - missing)) of $total public functions have a reference entry"
[ $missing = 0 ]
