#!/bin/sh
# Smoke test: both programs run and report the package version (TAP).
b=${QD_BUILDDIR:-.}
v=$(sed -n 's/^#define PACKAGE_VERSION "\(.*\)"/\1/p' "$b/config.h" 2>/dev/null)
echo "1..2"
n=0
for p in quant quantd; do
  n=$((n + 1))
  out=$("$b/$p" --version 2>&1)
  if [ -z "$v" ]; then   # an empty version would match any output
    echo "not ok $n - no PACKAGE_VERSION in $b/config.h"
  elif [ "$out" = "$p $v" ]; then
    echo "ok $n - $p --version prints $v"
  else
    echo "not ok $n - $p --version printed: $out"
  fi
done
