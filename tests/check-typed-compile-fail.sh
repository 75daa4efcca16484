#!/usr/bin/env bash
# check-typed-compile-fail.sh CC INCLUDE_DIR
# The typed macros of include/mproc/typed.h must turn a mismatch between an
# array and an element function into a compile-time error.  Each case below
# is a program that must NOT compile, and must fail with the macro's own
# message (so that it fails for the right reason); the control case, the
# same program without the mistake, must compile.
set -u
cc=$1 inc=$2
tmp=$(mktemp -d) ; trap 'rm -rf "$tmp"' EXIT
fail=0
prelude='#include <mproc.h>
static long square(long x) { return x * x; }
MPROC_ELEMENT_FN(square_elem, square, long, long)
static int widen(int x) { return x; }
static long str_len(const char *s, size_t len) { (void)s; return (long)len; }
MPROC_STRING_FN(len_fn, str_len, long)
static int int_len(const char *s, size_t len) { (void)s; return (int)len; }
void f(mproc_pool *pool, struct mproc_task_error *err, mproc_imap *it);
void f(mproc_pool *pool, struct mproc_task_error *err, mproc_imap *it) {
  long in[8] = {0}, out[8];
  int ints[8] = {0};
  long *p = in;
  long short_out[4];
  int int_out[8];
  const struct mproc_packed strs = {"ab", (const size_t[]){1, 2}, 2};
  (void)widen, (void)int_len, (void)p, (void)ints, (void)short_out, (void)int_out, (void)it;'
# case NAME EXPECTED_MESSAGE CODE
case_() {
  local name=$1 want=$2 code=$3
  printf '%s\n%s\n}\n' "$prelude" "$code" > "$tmp/$name.c"
  if out=$("$cc" -std=c17 -Wall -Wextra -I "$inc" -c "$tmp/$name.c" -o "$tmp/$name.o" 2>&1); then
    if [ "$want" = compiles ]; then echo "ok   $name: compiles"; return; fi
    echo "FAIL $name: compiled, but must not"; fail=1
  elif [ "$want" = compiles ]; then
    echo "FAIL $name: the control case does not compile:"; echo "$out"; fail=1
  elif grep -qF -- "$want" <<<"$out"; then
    echo "ok   $name: rejected ($want)"
  else
    echo "FAIL $name: rejected, but not with \"$want\":"; echo "$out"; fail=1
  fi
}
case_ control compiles \
  'MPROC_MAP_ARRAY(pool, square_elem, in, out, NULL, err, -1);
   MPROC_MAP(pool, square_elem, p, 8, out, NULL, err, -1);
   long v; MPROC_IMAP_NEXT(it, square_elem, &v, NULL, err, -1);
   MPROC_MAP_STRINGS(pool, len_fn, &strs, out, NULL, err, -1);'
case_ int-array-into-long-function "are not the input type of square_elem" \
  'MPROC_MAP_ARRAY(pool, square_elem, ints, out, NULL, err, -1);'
case_ int-output-array "are not the output type of square_elem" \
  'MPROC_MAP(pool, square_elem, in, 8, int_out, NULL, err, -1);'
case_ output-array-too-short "has fewer elements than in" \
  'MPROC_MAP_ARRAY(pool, square_elem, in, short_out, NULL, err, -1);'
case_ pointer-as-array "is a pointer" \
  'MPROC_MAP_ARRAY(pool, square_elem, p, out, NULL, err, -1);'
case_ wrong-element-function "is not long widen(long)" \
  '}
   MPROC_ELEMENT_FN(widen_elem, widen, long, long)
   void g(void) {'
case_ imap-next-wrong-type "does not point at the output type of square_elem" \
  'int v; MPROC_IMAP_NEXT(it, square_elem, &v, NULL, err, -1);'
case_ strings-into-int-array "are not the output type of len_fn" \
  'MPROC_MAP_STRINGS(pool, len_fn, &strs, int_out, NULL, err, -1);'
case_ wrong-string-function "is not long int_len(const char *, size_t)" \
  '}
   MPROC_STRING_FN(int_len_fn, int_len, long)
   void g(void) {'
[ $fail = 0 ] && echo "typed compile checks OK"
exit $fail
