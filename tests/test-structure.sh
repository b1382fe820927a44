#!/bin/sh
# Structure rules (TAP): no .c/.h/.js/.py source file over 1,000 lines unless its first 30 lines
# say why ("Over 1000 lines because …"); and layers only include downward (common/ → engine/ →
# jobs/ → api/ → daemon/; cli/ → engine/), checked on the #include lines of each layer's files.
src=${QD_SRCDIR:-$(dirname "$0")/..}
cd "$src" || { echo "1..0 # SKIP no source tree"; exit 0; }
files=$(find engine api jobs daemon cli common web tests examples \
        \( -name '*.c' -o -name '*.h' -o -name '*.js' -o -name '*.py' \) ! -name '*.pb-c.*' 2>/dev/null | sort)
n=1; long=""
for f in $files; do
  lines=$(wc -l <"$f")
  if [ "$lines" -gt 1000 ] && ! head -n 30 "$f" | grep -q "Over 1000 lines because"; then
    long="$long
#   $f: $lines lines"
  fi
done
if [ -z "$long" ]; then
  out="
ok 1 - no source file over 1000 lines without a reason in its header"
else
  out="
not ok 1 - files over 1000 lines whose first 30 lines do not say \"Over 1000 lines because\":$long"
fi
# include rules: a layer, then the layers its files must not include ("jobs/x.h" or <jobs/x.h>)
while read -r layer banned; do
  n=$((n + 1))
  bad=$(find "$layer" \( -name '*.c' -o -name '*.h' \) 2>/dev/null | sort | while read -r f; do
          for b in $banned; do
            grep -Hn "^[[:space:]]*#[[:space:]]*include[[:space:]]*[\"<]$b/" "$f"
          done
        done)
  if [ -z "$bad" ]; then
    out="$out
ok $n - no $layer/ file includes $(echo $banned | sed 's/ /\/, /g')/"
  else
    out="$out
not ok $n - $layer/ files include layers above or beside them:
$(printf '%s\n' "$bad" | sed 's/^/#   /')"
  fi
done <<RULES
common engine jobs api daemon cli
engine jobs api daemon cli
jobs api daemon cli
api daemon cli
cli jobs api daemon
RULES
n=$((n + 1))
echo "1..$n"
[ -n "$out" ] && printf '%s\n' "$out" | sed 1d
count=$(printf '%s\n' $files | grep -c .)
if [ "$count" -gt 100 ]; then
  echo "ok $n - scanned $count source files"
else   # a wrong source dir would pass everything above
  echo "not ok $n - scanned only $count source files under $src"
fi
