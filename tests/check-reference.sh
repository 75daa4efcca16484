#!/usr/bin/env bash
# check-reference.sh SOURCE_DIR
# Fails when a public function (every MPROC_EXTERN declaration in include/)
# has no reference entry in docs/reference/*.md, or a code of MPROC_ERRNO_MAP
# (include/mproc/common.h) has no heading in docs/reference/errors.md.  An entry is a markdown
# heading (a line starting with "##", "###" or "####") naming the function in
# full, e.g.
#   ### `int mproc_pool_close(mproc_pool *pool)`
# A heading may name several functions; abbreviations such as "_free" do not
# count.
#
# check-reference.sh --self-test   checks the checker on a made-up tree: a
# missing entry and an abbreviated one must fail, a full one must pass.
set -u
if [ "${1:-}" = --self-test ]; then
  t=$(mktemp -d) ; trap 'rm -rf "$t"' EXIT
  mkdir -p "$t/include/mproc" "$t/docs/reference"
  printf 'MPROC_EXTERN int mproc_demo_open(int a,\n                                 int b);\nMPROC_EXTERN void *\nmproc_demo_buf(void);\nMPROC_EXTERN void mproc_demo_free(void *p);\n' \
    > "$t/include/mproc/demo.h"
  printf '# demo\n### `int mproc_demo_open(int a, int b)`\n### `void *mproc_demo_buf(void)` / `_free`\nmproc_demo_free in text only\n' \
    > "$t/docs/reference/demo.md"
  printf '#define MPROC_ERRNO_MAP(X) \\\n  X(EDEMO, -1, "demo")\n' > "$t/include/mproc/common.h"
  printf '# errors\n### `MPROC_EDEMO` (-1)\n' > "$t/docs/reference/errors.md"
  out=$(bash "$0" "$t") && { echo "FAIL: an abbreviated entry passed"; exit 1; }
  grep -q 'no reference entry for mproc_demo_free' <<<"$out" || { echo "FAIL: $out"; exit 1; }
  grep -q 'mproc_demo_open\|mproc_demo_buf' <<<"$out" && { echo "FAIL: $out"; exit 1; }
  echo '#### `void mproc_demo_free(void *p)`' >> "$t/docs/reference/demo.md"
  bash "$0" "$t" >/dev/null || { echo "FAIL: a complete reference failed"; exit 1; }
  echo '# errors' > "$t/docs/reference/errors.md"
  bash "$0" "$t" | grep -q 'no entry for MPROC_EDEMO' || { echo "FAIL: a missing code passed"; exit 1; }
  echo "self-test OK"
  exit 0
fi
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
[ -n "$(sed -nE 's/^ *X\(([A-Z0-9_]+),.*/\1/p' "$src/include/mproc/common.h" 2>/dev/null)" ] ||
  { echo "FAIL: no MPROC_ERRNO_MAP entries found in $src/include/mproc/common.h"; exit 1; }
# Every code of MPROC_ERRNO_MAP has its own heading in errors.md.
codes=$(sed -nE 's/^ *X\(([A-Z0-9_]+),.*/\1/p' "$src/include/mproc/common.h" 2>/dev/null)
for c in $codes; do
  grep -qE "^#{2,4} .*MPROC_$c([^A-Z0-9_]|\$)" "$src/docs/reference/errors.md" 2>/dev/null || {
    echo "no entry for MPROC_$c in docs/reference/errors.md"
    missing=$((missing + 1))
  }
done
[ $missing = 0 ]
