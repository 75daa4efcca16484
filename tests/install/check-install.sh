#!/usr/bin/env bash
# check-install.sh CMAKE BUILD_DIR CC
# Installs the build into a temporary prefix and builds a consumer twice:
# with pkg-config and with find_package(mproc CONFIG).
set -eu
cmake=$1 build=$2 cc=$3
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
"$cmake" --install "$build" --prefix "$tmp/prefix" >/dev/null
libdir=$(ls -d "$tmp"/prefix/lib*/ | head -n1)
test -f "$tmp/prefix/include/mproc.h"
ls "$libdir"/libmproc.so.0 "$libdir"/libmproc.a >/dev/null
# pkg-config, shared
PKG_CONFIG_PATH="$libdir/pkgconfig" "$cc" -o "$tmp/consumer-pc" "$here/consumer.c" \
  $(PKG_CONFIG_PATH="$libdir/pkgconfig" pkg-config --cflags --libs mproc)
# No LD_LIBRARY_PATH: the run path from mproc.pc finds the library.
env -u LD_LIBRARY_PATH "$tmp/consumer-pc" | grep -q '^mproc 0\.'
# pkg-config, static
PKG_CONFIG_PATH="$libdir/pkgconfig" "$cc" -o "$tmp/consumer-static" "$here/consumer.c" \
  $(PKG_CONFIG_PATH="$libdir/pkgconfig" pkg-config --cflags mproc) "$libdir/libmproc.a" \
  $(PKG_CONFIG_PATH="$libdir/pkgconfig" pkg-config --libs-only-other --static mproc) -lrt
"$tmp/consumer-static" | grep -q '^mproc 0\.'
# find_package
"$cmake" -S "$here" -B "$tmp/cm" -DCMAKE_PREFIX_PATH="$tmp/prefix" -DCMAKE_C_COMPILER="$cc" >/dev/null
"$cmake" --build "$tmp/cm" >/dev/null
# CMake records the imported library's directory in the build run path.
env -u LD_LIBRARY_PATH "$tmp/cm/consumer" | grep -q '^mproc 0\.'
# The manual: a page per function and the overview, found by man.
mandir="$tmp/prefix/share/man"
test -s "$mandir/man3/mproc_pool_submit.3" && test -s "$mandir/man7/mproc.7"
if command -v man >/dev/null && man -M "$mandir" -P cat 3 mproc_pool_submit >"$tmp/man.txt" 2>&1 &&
   ! grep -q 'minimized' "$tmp/man.txt"; then
  grep -q 'int mproc_pool_submit(' "$tmp/man.txt"
fi
# The mproc command and its manual page.
env -u LD_LIBRARY_PATH "$tmp/prefix/bin/mproc" --version | grep -q '^mproc 0\.'
test -s "$mandir/man1/mproc.1"
# Only mproc_* symbols are exported.
bad=$(nm -D --defined-only "$libdir/libmproc.so.0" | awk '{print $3}' | grep -v '^mproc_' || true)
if [ -n "$bad" ]; then echo "non-mproc exported symbols: $bad"; exit 1; fi
# The MPI backend, when the build has it: pkg-config mproc-mpi and
# find_package(mproc COMPONENTS mpi); run without mpiexec (no worker ranks).
if [ -f "$libdir/pkgconfig/mproc-mpi.pc" ]; then
  test -f "$tmp/prefix/include/mproc/mpi.h"
  PKG_CONFIG_PATH="$libdir/pkgconfig" "$cc" -o "$tmp/consumer-mpi" "$here/consumer-mpi.c" \
    $(PKG_CONFIG_PATH="$libdir/pkgconfig" pkg-config --cflags --libs mproc-mpi)
  env -u LD_LIBRARY_PATH "$tmp/consumer-mpi" | grep -q '^mproc-mpi 0 worker ranks$'
  # A program that calls nothing of libmproc_mpi keeps it linked (its
  # loading registers the "mpi" transport): MPROC_TRANSPORT=mpi works.
  PKG_CONFIG_PATH="$libdir/pkgconfig" "$cc" -o "$tmp/consumer-transport" \
    "$here/consumer-transport.c" $(PKG_CONFIG_PATH="$libdir/pkgconfig" pkg-config --cflags --libs mproc-mpi)
  env -u LD_LIBRARY_PATH MPROC_TRANSPORT=mpi "$tmp/consumer-transport" | grep -q '^pool ok: 2 4 6$'
  PKG_CONFIG_PATH="$libdir/pkgconfig" pkg-config --modversion mproc-mpi >/dev/null
  if grep -q '(built against )' "$libdir/pkgconfig/mproc-mpi.pc"; then
    echo "mproc-mpi.pc names no MPI library"; exit 1
  fi
  "$cmake" -S "$here/mpi" -B "$tmp/cm-mpi" -DCMAKE_PREFIX_PATH="$tmp/prefix" -DCMAKE_C_COMPILER="$cc" >/dev/null
  "$cmake" --build "$tmp/cm-mpi" >/dev/null
  env -u LD_LIBRARY_PATH "$tmp/cm-mpi/consumer-mpi" | grep -q '^mproc-mpi 0 worker ranks$'
  bad=$(nm -D --defined-only "$libdir/libmproc_mpi.so.0" | awk '{print $3}' | grep -v '^mproc_' || true)
  if [ -n "$bad" ]; then echo "non-mproc exported symbols in libmproc_mpi: $bad"; exit 1; fi
  echo "install OK (with the MPI backend)"
else
  test ! -f "$tmp/prefix/include/mproc/mpi.h" || { echo "mpi.h installed without its library"; exit 1; }
  echo "install OK"
fi
