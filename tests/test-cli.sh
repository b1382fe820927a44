#!/bin/sh
# The quant command line (TAP): usage errors and exit codes, `quant info`, `quant run` on .npy and
# .npz, `quant eval`, `quant bench`, the progress bar. The models and expected outputs are the
# tiny exact ones of tests/fixtures/make_cli_models.py, so .npy outputs must match byte for byte.
b=${QD_BUILDDIR:-.}
s=${QD_SRCDIR:-.}
Q="$b/quant"
F="$s/tests/fixtures/cli"
T=$(mktemp -d "${TMPDIR:-/tmp}/test-cli.XXXXXX")
trap 'rm -rf "$T"' EXIT
export QUANT_PROGRESS=0
n=0

ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() { n=$((n + 1)); echo "not ok $n - $1"; shift; for l in "$@"; do echo "# $l"; done; }

# expect STATUS NEEDLE DESCRIPTION -- ARGS...: runs quant, checks the exit status and that
# stdout+stderr contain NEEDLE
expect() {
  want=$1 needle=$2 what=$3
  shift 4
  "$Q" "$@" >"$T/out" 2>"$T/err"
  got=$?
  if [ "$got" -ne "$want" ]; then
    not_ok "$what" "exit $got, expected $want" "$(cat "$T/err")"
  elif ! cat "$T/out" "$T/err" | grep -qF -- "$needle"; then
    not_ok "$what" "output lacks: $needle" "$(cat "$T/out" "$T/err")"
  else
    ok "$what"
  fi
}

have_python3() { [ -x /usr/bin/python3 ]; }
have_numpy() { /usr/bin/python3 -c 'import numpy' 2>/dev/null; }   # Debian's python3-numpy (quickstart)

# --- top level and usage errors (exit 2) -----------------------------------------------------------
expect 0 "quant " "--version" -- --version
expect 0 "commands:" "--help lists the commands" -- --help
expect 2 "usage: quant" "no arguments is a usage error" --
expect 2 "unknown command 'frob'" "unknown command" -- frob
expect 2 "unknown option '--frob'" "unknown top-level option" -- --frob
expect 0 "--batch N" "help run" -- help run
expect 0 "fractions in [0, 1]" "help eval documents accuracy as a fraction" -- help eval
expect 0 "--iters K" "bench --help" -- bench --help
"$Q" ptq --help >"$T/out" 2>&1
if grep -q "^  fast      " "$T/out" && grep -q "^  standard  " "$T/out" && grep -q "^  best      " "$T/out" \
   && [ "$(sed -n '/^Presets/,$p' "$T/out" | grep -o "[0-9] s[ ,.;)]" | wc -l)" -ge 3 ]; then
  ok "ptq --help: the presets in order of cost, with their measured times"
else
  not_ok "ptq --help: the presets in order of cost, with their measured times" "$(cat "$T/out")"
fi
expect 2 "unknown command 'nope'" "help for an unknown command" -- help nope
expect 2 "missing MODEL" "info without a model" -- info
expect 2 "missing --input" "run without --input" -- run "$F/two_io.onnx" --output "$T/y.npz"
expect 2 "missing --output" "run without --output" -- run "$F/two_io.onnx" --input "$F/two_x.npz"
expect 2 "--output must name a .npy or .npz" "run with a .txt output" -- \
  run "$F/two_io.onnx" --input "$F/two_x.npz" --output "$T/y.txt"
expect 2 "--batch must be an integer from 1" "batch 0" -- \
  run "$F/two_io.onnx" --input "$F/two_x.npz" --output "$T/y.npz" --batch 0
expect 2 "not 'many'" "batch not a number" -- \
  run "$F/two_io.onnx" --input "$F/two_x.npz" --output "$T/y.npz" --batch=many
expect 2 "option --batch needs a value" "batch without a value" -- \
  run "$F/two_io.onnx" --input "$F/two_x.npz" --output "$T/y.npz" --batch
expect 2 "unknown option '--frob'" "unknown run option" -- run "$F/two_io.onnx" --frob 1
expect 2 "unexpected argument 'extra'" "two models" -- info "$F/two_io.onnx" extra
expect 2 "missing --labels" "eval without labels" -- eval "$F/cls.onnx" --input "$F/cls_x.npy"
expect 2 "--iters must be" "bench --iters 0" -- bench "$F/cls.onnx" --iters 0

# --- failures (exit 1) name the problem --------------------------------------------------------------
expect 1 "$T/missing.onnx" "info on a missing file names it" -- info "$T/missing.onnx"
expect 1 "$T/missing.npz" "run on missing data names it" -- \
  run "$F/two_io.onnx" --input "$T/missing.npz" --output "$T/y.npz"
expect 1 "the model has 2 outputs (y0, y1); write them to an .npz" ".npy output for two outputs" -- \
  run "$F/two_io.onnx" --input "$F/two_x.npz" --output "$T/y.npy"
expect 1 "holds one array but the model has 2 inputs (x, z)" ".npy input for two inputs" -- \
  run "$F/two_io.onnx" --input "$F/two_x.npy" --output "$T/y.npz"
expect 1 "data for input 'x' has shape [5, 2, 3, 3]; expected [N, 6]" \
  "wrong sample shape" -- \
  run "$F/cls.onnx" --input "$F/two_x.npy" --output "$T/y.npy"
expect 1 "FancyOp" "run with an unsupported op names it" -- \
  run "$F/unsupported.onnx" --input "$F/cls_x.npy" --output "$T/y.npy"

# --- info -----------------------------------------------------------------------------------------------
expect 0 "[N, 2, 3, 3]" "info shows symbolic dims" -- info "$F/two_io.onnx"
for needle in "z                float32  [N, 3, 3, 3]" "ops          Add 1, Conv 1, Relu 1" "parameters   57" \
              "FLOPs        972 per sample" "unsupported  none" "opset        13"; do
  if grep -qF -- "$needle" "$T/out"; then ok "info: $needle"; else not_ok "info: $needle" "$(cat "$T/out")"; fi
done
expect 0 '"flops": 972' "info --json: FLOPs = 2 x 486 MACs of the 3x3 conv" -- info "$F/two_io.onnx" --json
if grep -qF '"shape": [' "$T/out" && [ "$(head -c1 "$T/out")" = "{" ] && [ "$(tail -c2 "$T/out" | head -c1)" = "}" ]; then
  ok "info --json prints one object"
else
  not_ok "info --json prints one object" "$(cat "$T/out")"
fi
if have_python3; then   # json only: no numpy needed
  if /usr/bin/python3 -c "
import json, sys
j = json.load(open('$T/out'))
sys.exit(0 if j['inputs'][0]['shape'] == ['N', 2, 3, 3] and j['ops'] == {'Conv': 1, 'Relu': 1, 'Add': 1}
         and j['parameters'] == 57 and j['unsupported'] == [] else 1)"; then
    ok "info --json parses, with symbolic dims as strings"
  else
    not_ok "info --json parses" "$(cat "$T/out")"
  fi
else
  echo "ok $((n = n + 1)) - info --json parses # SKIP no python3"
fi
expect 0 "FancyOp" "info lists unsupported ops" -- info "$F/unsupported.onnx"
expect 0 '"flops": null' "info --json: no FLOPs when ops are unsupported" -- info "$F/unsupported.onnx" --json

# --- run ------------------------------------------------------------------------------------------------
for batch in 1 3 32; do
  expect 0 "20 samples" "run .npy → .npy, batch $batch" -- \
    run "$F/cls.onnx" --input "$F/cls_x.npy" --output "$T/logits$batch.npy" --batch $batch
  if cmp -s "$T/logits$batch.npy" "$F/cls_logits.npy"; then ok "batch $batch: logits exact"; \
  else not_ok "batch $batch: logits exact"; fi
done
expect 0 "3 samples" "fixed-batch-1 model, float64 input, --threads 1" -- \
  run "$F/fixed1.onnx" --input "$F/fixed1_x.npy" --output "$T/f.npy" --batch 8 --threads 1
if cmp -s "$T/f.npy" "$F/fixed1_y.npy"; then ok "fixed-batch-1 outputs exact"; else not_ok "fixed-batch-1 outputs exact"; fi
expect 0 "5 samples" "run .npz → .npz (two inputs, two outputs)" -- \
  run "$F/two_io.onnx" --input "$F/two_x.npz" --output "$T/y.npz" --batch 2
if grep -aqF "y0.npy" "$T/y.npz" && grep -aqF "y1.npy" "$T/y.npz"; then ok ".npz keyed by output names"; \
else not_ok ".npz keyed by output names"; fi
if have_numpy; then
  if /usr/bin/python3 -c "
import numpy as np, sys
z = np.load('$T/y.npz')
sys.exit(0 if sorted(z.files) == ['y0', 'y1'] and (z['y0'] == np.load('$F/two_y0.npy')).all()
         and (z['y1'] == np.load('$F/two_y1.npy')).all() else 1)"; then
    ok ".npz outputs equal numpy's"
  else
    not_ok ".npz outputs equal numpy's"
  fi
else
  echo "ok $((n = n + 1)) - .npz outputs equal numpy's # SKIP no numpy"
fi
expect 1 "has no array 'x' for the model input 'x' (it has: y0, y1" ".npz without the input's name" -- \
  run "$F/two_io.onnx" --input "$T/y.npz" --output "$T/y2.npz"

# --- eval -----------------------------------------------------------------------------------------------
expect 0 '"accuracy": 0.75' "eval --json: top-1 is 15 of 20" -- \
  eval "$F/cls.onnx" --input "$F/cls_x.npy" --labels "$F/cls_labels.npy" --batch 7 --json
if grep -qF '"top5": 0.9' "$T/out" && grep -qF '"samples": 20' "$T/out" && grep -qF '"samples_per_s"' "$T/out" \
   && [ "$(grep -c '{' "$T/out")" -eq 1 ] && [ ! -s "$T/err" ]; then
  ok "eval --json: top-5 18 of 20, one object, nothing on stderr"
else
  not_ok "eval --json: top-5 18 of 20, one object" "$(cat "$T/out" "$T/err")"
fi
expect 0 "accuracy   75.00%" "eval with uint8 labels" -- eval "$F/cls.onnx" --input "$F/cls_x.npy" --labels "$F/cls_labels_u8.npy"
expect 1 "labels must be integer class indices" "eval with float labels" -- \
  eval "$F/cls.onnx" --input "$F/cls_x.npy" --labels "$F/cls_logits.npy"
expect 1 "expected 3 labels of shape [3]" "eval with more labels than samples" -- \
  eval "$F/fixed1.onnx" --input "$F/fixed1_x.npy" --labels "$F/cls_labels.npy"

# --- bench ----------------------------------------------------------------------------------------------
expect 0 '"latency_ms"' "bench --json" -- bench "$F/two_io.onnx" --batch 4 --iters 5 --warmup 1 --json
if grep -qF '"batch": 4' "$T/out" && grep -qF '"p90"' "$T/out" && grep -qF '"peak_rss_mb"' "$T/out"; then
  ok "bench --json: batch, p90, peak RSS"
else
  not_ok "bench --json: batch, p90, peak RSS" "$(cat "$T/out")"
fi
expect 0 "samples/s" "bench on a fixed-batch model" -- bench "$F/fixed1.onnx" --batch 8 --iters 3 --threads 1

# --- progress: a bar on a terminal, a line per stage elsewhere, nothing on stderr with --json ----------
# (stderr here is not a terminal; QUANT_PROGRESS, exported as 0 above, overrides the check)
"$Q" run "$F/cls.onnx" --input "$F/cls_x.npy" --output "$T/p.npy" --batch 4 2>"$T/err"
if grep -q "%" "$T/err"; then not_ok "no progress bar off a terminal" "$(cat "$T/err")"; else ok "no progress bar off a terminal"; fi
QUANT_PROGRESS=1 "$Q" run "$F/cls.onnx" --input "$F/cls_x.npy" --output "$T/p.npy" --batch 4 2>"$T/err"
if grep -qa "100%  20/20" "$T/err"; then ok "progress bar when forced"; else not_ok "progress bar when forced" "$(cat "$T/err")"; fi
cr=$(printf '\r')
env -u QUANT_PROGRESS "$Q" ptq "$F/cls.onnx" --calib "$F/cls_x.npy" --batch 4 -o "$T/pq" >"$T/out" 2>"$T/err"
if grep -qx "quant ptq: calibration: started, total 16" "$T/err" && grep -q "^quant ptq: calibration: ended after [0-9.]*s$" "$T/err" \
   && grep -q "^quant ptq: per-layer sqnr: ended after " "$T/err" && ! grep -q "$cr" "$T/err"; then
  ok "ptq off a terminal: a line as each stage starts and ends, no bar"
else
  not_ok "ptq off a terminal: a line as each stage starts and ends, no bar" "$(cat -A "$T/err")"
fi
env -u QUANT_PROGRESS "$Q" eval "$F/cls.onnx" --input "$F/cls_x.npy" --labels "$F/cls_labels.npy" --batch 4 >"$T/out" 2>"$T/err"
if grep -qx "quant eval: evaluation: started, total 20" "$T/err" && grep -q "^quant eval: evaluation: ended after" "$T/err"; then
  ok "eval off a terminal: its stage's lines"
else
  not_ok "eval off a terminal: its stage's lines" "$(cat -A "$T/err")"
fi
env -u QUANT_PROGRESS "$Q" eval "$F/cls.onnx" --input "$F/cls_x.npy" --labels "$F/cls_labels.npy" --json >"$T/out" 2>"$T/err"
if [ ! -s "$T/err" ]; then ok "eval --json off a terminal: nothing on stderr"; else not_ok "eval --json: stderr" "$(cat "$T/err")"; fi
QUANT_PROGRESS=lines "$Q" run "$F/cls.onnx" --input "$F/cls_x.npy" --output "$T/p.npy" 2>"$T/err"
if ! grep -q "started\|%" "$T/err"; then ok "run has no stages: no lines"; else not_ok "run has no stages: no lines" "$(cat "$T/err")"; fi
# on a terminal (script(1) gives the command a pty): a bar with the stage, percent and ETA, no lines
if command -v script >/dev/null 2>&1; then
  env -u QUANT_PROGRESS script -qec "'$Q' ptq '$F/cls.onnx' --calib '$F/cls_x.npy' --batch 4 -o '$T/pt'" /dev/null \
    </dev/null >"$T/tty" 2>&1
  if grep -q "${cr}calibration \[#*\.*\]  25%  4/16  [0-9.]*s  eta [0-9.]*s" "$T/tty" && grep -q "100%  16/16" "$T/tty" \
     && ! grep -q "started, total" "$T/tty" && grep -q "written to" "$T/tty"; then
    ok "ptq on a terminal: a bar with stage, percent and ETA"
  else
    not_ok "ptq on a terminal: a bar with stage, percent and ETA" "$(cat -A "$T/tty")"
  fi
else
  n=$((n + 1)); echo "ok $n - ptq on a terminal # SKIP script(1) (util-linux) is not installed"
fi

# --- real-world interop: the ONNX zoo's mnist-8 (fixed batch 1, raw 0-255 pixels, 98.9% documented) ------
# The IDX files become .npy with a hand-made header, so this needs neither python nor numpy.
R="$s/../shared/realworld"
npy_u8() {   # npy_u8 SHAPE SKIP < idx.gz > out.npy: a uint8 .npy from gzip'd IDX data after SKIP bytes
  dict="{'descr': '|u1', 'fortran_order': False, 'shape': ($1), }"
  total=$(( (10 + ${#dict} + 1 + 63) / 64 * 64 )); hlen=$((total - 10))
  printf "\223NUMPY\001\000\\$(printf %o "$hlen")\000%s%*s\n" "$dict" $((hlen - ${#dict} - 1)) ""
  gzip -dc | tail -c +"$(($2 + 1))"
}
if [ -f "$R/mnist-8.onnx" ] && [ -f "$R/t10k-images-idx3-ubyte.gz" ]; then
  npy_u8 "10000, 1, 28, 28" 16 <"$R/t10k-images-idx3-ubyte.gz" >"$T/mx.npy"
  npy_u8 "10000," 8 <"$R/t10k-labels-idx1-ubyte.gz" >"$T/my.npy"
  expect 0 '"samples": 10000' "mnist-8: eval on the MNIST test set" -- \
    eval "$R/mnist-8.onnx" --input "$T/mx.npy" --labels "$T/my.npy" --batch 64 --json
  acc=$(sed -n 's/.*"accuracy": \([0-9.]*\).*/\1/p' "$T/out")
  if awk -v a="$acc" 'BEGIN { exit !(a >= 0.988 && a <= 0.990) }'; then ok "mnist-8 accuracy $acc is the zoo's 98.9%"
  else not_ok "mnist-8 accuracy $acc is the zoo's 98.9%" "$(cat "$T/out" "$T/err")"; fi
else
  echo "ok $((n = n + 1)) - mnist-8 eval # SKIP ../shared/realworld absent"
  echo "ok $((n = n + 1)) - mnist-8 accuracy # SKIP ../shared/realworld absent"
fi

echo "1..$n"
