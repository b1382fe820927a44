#!/bin/sh
# libquant as outside code sees it (TAP): `make install DESTDIR=$tmp` puts the library, the
# public headers and quant.pc in place; examples/model-info.c builds against that install with
# only `pkg-config --cflags --libs quant` and runs on every fixture model; and the shared library
# exports qs_* symbols alone (protobuf-c's onnx__* stay hidden).
b=${QD_BUILDDIR:-.}
# a sanitizer build's library needs its runtime loaded first: the example is built the same way
san=${QD_SAN_CFLAGS:-}
s=${QD_SRCDIR:-.}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/quant-install.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
models=$(ls "$s"/tests/fixtures/*.onnx)
echo "1..$((4 + $(echo "$models" | wc -l)))"

if make -s -C "$b" install DESTDIR="$tmp/dest" >"$tmp/install.log" 2>&1; then
  echo "ok 1 - make install DESTDIR"
else
  echo "not ok 1 - make install DESTDIR"; sed 's/^/# /' "$tmp/install.log"
fi

pcdir=$(find "$tmp/dest" -name quant.pc -exec dirname {} \; | head -1)
libdir=$(dirname "$pcdir")   # quant.pc is in $libdir/pkgconfig
so=$(find "$libdir" -name 'libquant.so.*' -type f | head -1)
# the sysroot prefixes the .pc's -I and -L with the DESTDIR, as if installed there
export PKG_CONFIG_PATH="$pcdir" PKG_CONFIG_SYSROOT_DIR="$tmp/dest"
flags=$(pkg-config --cflags --libs quant 2>"$tmp/pc.log")
inc=$(echo "$flags" | tr ' ' '\n' | sed -n 's/^-I//p' | head -1)   # quant.pc's own Cflags come first
if [ -n "$pcdir" ] && [ -f "$inc/quant/quant.h" ] && echo "$flags" | grep -q -- "-L$tmp/dest.* -lquant"; then
  echo "ok 2 - quant.pc: $flags"
else
  echo "not ok 2 - quant.pc (in '$pcdir'): $(cat "$tmp/pc.log")"
fi

# shellcheck disable=SC2086  # flags are words
if ${CC:-cc} -std=c11 -Wall -Wextra -Werror $san -o "$tmp/model-info" "$s/examples/model-info.c" $flags \
     -Wl,-rpath,"$libdir" >"$tmp/cc.log" 2>&1; then
  echo "ok 3 - examples/model-info.c builds against the installed library alone"
else
  echo "not ok 3 - examples/model-info.c does not build"; sed 's/^/# /' "$tmp/cc.log"
fi

n=3
for m in $models; do
  n=$((n + 1))
  if out=$("$tmp/model-info" "$m" 2>&1) && echo "$out" | grep -q '^nodes [1-9]' &&
     echo "$out" | grep -q '^parameters [1-9]' && echo "$out" | grep -q '^output '; then
    echo "ok $n - model-info $(basename "$m"): $(echo "$out" | grep -E '^(nodes|parameters)' | tr '\n' ' ')"
  else
    echo "not ok $n - model-info $(basename "$m")"; echo "$out" | sed 's/^/# /'
  fi
done

n=$((n + 1))
exports=$(nm -D --defined-only "$so" 2>/dev/null | awk '{print $3}')
others=$(echo "$exports" | grep -v '^qs_' | grep -v '^$')
if [ -n "$so" ] && echo "$exports" | grep -q '^qs_onnx_load$' && [ -z "$others" ]; then
  echo "ok $n - $(basename "$so") exports only qs_* ($(echo "$exports" | wc -l) symbols)"
else
  echo "not ok $n - $(basename "$so") exports more than qs_*: $(echo "$others" | head -5 | tr '\n' ' ')"
fi
