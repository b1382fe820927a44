#!/bin/sh
# Smoke test: both programs run and report the package version (TAP).
b=${QD_BUILDDIR:-.}
v=$(sed -n 's/^#define PACKAGE_VERSION "\(.*\)"/\1/p' "$b/config.h")
echo "1..2"
n=0
for p in quant quantd; do
  n=$((n + 1))
  out=$("$b/$p" --version 2>&1)
  case "$out" in
    *"$v"*) echo "ok $n - $p --version prints $v" ;;
    *) echo "not ok $n - $p --version printed: $out" ;;
  esac
done
