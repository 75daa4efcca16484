#!/usr/bin/env bash
# check-man-pages.sh SOURCE_DIR
# Generates the manual pages (scripts/gen-man.py) into a temporary directory
# and checks that every public function (each MPROC_EXTERN declaration in
# include/) has its section-3 page naming it, that mproc(7) exists, and that
# groff formats every page without a warning.
# check-man-pages.sh --self-test   checks that a function without a reference
# entry makes the generator fail, naming it.
set -u
here=$(cd "$(dirname "$0")" && pwd)
gen="$here/../scripts/gen-man.py"
tmp=$(mktemp -d) ; trap 'rm -rf "$tmp"' EXIT
if [ "${1:-}" = --self-test ]; then
  mkdir -p "$tmp/src/include/mproc" "$tmp/src/docs/reference"
  printf '#define MPROC_VERSION_MAJOR 1\n#define MPROC_VERSION_MINOR 2\n#define MPROC_VERSION_PATCH 3\n' \
    > "$tmp/src/include/mproc/version.h"
  printf 'MPROC_EXTERN int mproc_demo_open(int a,\n  int b);\nMPROC_EXTERN void mproc_demo_free(void *p);\n' \
    > "$tmp/src/include/mproc/demo.h"
  printf '# Demo\n#### `int mproc_demo_open(int a, int b)`\nOpens a demo.  Returns 0.\n' \
    > "$tmp/src/docs/reference/demo.md"
  printf '# demo\nintro\n## Conventions\n- one\n' > "$tmp/src/README.md"
  out=$(python3 "$gen" "$tmp/src" "$tmp/man" 2>&1) && { echo "FAIL: a missing entry passed"; exit 1; }
  grep -q 'mproc_demo_free' <<<"$out" || { echo "FAIL: the missing function is not named: $out"; exit 1; }
  printf '#### `void mproc_demo_free(void *p)`\nFrees it.\n' >> "$tmp/src/docs/reference/demo.md"
  python3 "$gen" "$tmp/src" "$tmp/man" >/dev/null || { echo "FAIL: a complete tree failed"; exit 1; }
  grep -q 'int mproc_demo_open(int a, int b);' "$tmp/man/man3/mproc_demo_open.3" ||
    { echo "FAIL: the synopsis is not the header's declaration"; exit 1; }
  grep -q 'Opens a demo' "$tmp/man/man3/mproc_demo_open.3" || { echo "FAIL: no description"; exit 1; }
  # Two headings stacked on one body: both pages carry that body.
  printf 'MPROC_EXTERN int mproc_demo_a(void);\nMPROC_EXTERN int mproc_demo_b(void);\n' \
    >> "$tmp/src/include/mproc/demo.h"
  printf '#### `int mproc_demo_a(void)`\n#### `int mproc_demo_b(void)`\nShared text.\n' \
    >> "$tmp/src/docs/reference/demo.md"
  python3 "$gen" "$tmp/src" "$tmp/man" >/dev/null || { echo "FAIL: stacked headings failed"; exit 1; }
  for f in mproc_demo_a mproc_demo_b; do
    grep -q 'Shared text' "$tmp/man/man3/$f.3" || { echo "FAIL: $f.3 lacks its stacked body"; exit 1; }
  done
  echo "self-test OK"
  exit 0
fi
src=${1:-.}
python3 "$gen" "$src" "$tmp/man" || exit 1
names=$(grep -rhoz 'MPROC_EXTERN[^;(]*(' "$src/include" | tr '\0' '\n' |
        grep -oE 'mproc_[A-Za-z0-9_]+ *\($' | tr -d ' (' | sort -u)
[ -n "$names" ] || { echo "FAIL: no MPROC_EXTERN declarations under $src/include"; exit 1; }
fail=0 n=0
for f in $names; do
  n=$((n + 1))
  page="$tmp/man/man3/$f.3"
  if [ ! -s "$page" ]; then echo "FAIL: no page for $f"; fail=1; continue; fi
  # The NAME line: "mproc_x \- what it does" (a literal backslash in roff).
  grep -q "^$f \\\\- ." "$page" ||
    { echo "FAIL: $page has no NAME line for $f"; fail=1; }
  # Something to read: not the generator's fallbacks for an entry it found
  # no text for (a heading stacked on the next one's body, say).
  if grep -q -e '^See the reference page\.$' -e "^$f \\\\- see DESCRIPTION$" "$page"; then
    echo "FAIL: $page has no description of $f"; fail=1
  fi
done
[ -s "$tmp/man/man7/mproc.7" ] || { echo "FAIL: no mproc(7)"; fail=1; }
# Function-like macros with a reference heading of their own have pages too.
for m in $(sed -nE 's/^#{3,4} `(MPROC_[A-Z0-9_]+)\(.*\)`$/\1/p' "$src"/docs/reference/*.md); do
  [ -s "$tmp/man/man3/$m.3" ] || { echo "FAIL: no page for the macro $m"; fail=1; }
done
if command -v groff >/dev/null; then
  for p in "$tmp"/man/man3/*.3 "$tmp/man/man7/mproc.7"; do
    w=$(groff -man -Tutf8 -ww -z "$p" 2>&1)
    [ -z "$w" ] || { echo "FAIL: groff warns on $(basename "$p"): $w"; fail=1; }
  done
else
  echo "groff not installed: pages not formatted"
fi
[ $fail = 0 ] && echo "$n functions, $n pages, the macros' pages and mproc(7): OK"
exit $fail
