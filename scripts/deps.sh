#!/usr/bin/env bash
# scripts/deps.sh PACKAGE...
# Makes sure the named Debian packages are installed.  As root, installs the
# missing ones with apt-get; otherwise prints the exact command and fails.
set -eu
missing=()
for p in "$@"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
  echo "mproc needs: ${missing[*]} (no apt-get here: install them by hand)" >&2
  exit 1
fi
if [ "$(id -u)" != 0 ]; then
  echo "mproc needs Debian packages that are missing. Run:" >&2
  echo "  sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "installing: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2 || true
apt-get install -y -qq "${missing[@]}" >&2
