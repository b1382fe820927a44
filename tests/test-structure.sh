#!/bin/sh
# Structure rules (TAP): no .c/.h/.js/.py source file over 1,000 lines unless its first 30 lines
# say why ("Over 1000 lines because …"); and layers only include downward (common/ → engine/ →
# jobs/ → api/ → daemon/; cli/ → engine/), checked on the #include lines of each layer's files. PENDING lists files over the limit whose split is still
# to do (issue 19); it should be empty, and a file on it that is back under the limit fails too,
# so the list cannot go stale.
src=${QD_SRCDIR:-$(dirname "$0")/..}
PENDING=""
cd "$src" || { echo "1..0 # SKIP no source tree"; exit 0; }
files=$(find engine api jobs daemon cli common web tests examples \
        \( -name '*.c' -o -name '*.h' -o -name '*.js' -o -name '*.py' \) ! -name '*.pb-c.*' 2>/dev/null | sort)
n=0; out=""
for f in $files; do
  lines=$(wc -l <"$f")
  pending=0
  for p in $PENDING; do [ "$p" = "$f" ] && pending=1; done
  if [ "$lines" -gt 1000 ]; then
    head -n 30 "$f" | grep -q "Over 1000 lines because" && continue
    n=$((n + 1))
    if [ $pending = 1 ]; then
      out="$out
ok $n - $f: $lines lines # SKIP split pending (issue 19)"
    else
      out="$out
not ok $n - $f: $lines lines, and its first 30 lines do not say \"Over 1000 lines because\""
    fi
  elif [ $pending = 1 ]; then
    n=$((n + 1))
    out="$out
not ok $n - $f: $lines lines, so take it off PENDING in tests/test-structure.sh"
  fi
done
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
