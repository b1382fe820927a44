#!/bin/sh
# Fetches the three PaddleOCR models that PyPI's rapidocr-onnxruntime 1.4.4 wheel ships (third-party
# files: they go into a cache outside the repository and are never committed).
#   tests/fetch_paddleocr.sh [DIR]     DIR defaults to ${QD_MODEL_CACHE:-${XDG_CACHE_HOME:-~/.cache}/quantd/models}/paddleocr
# Uses `pip download` (the pip of $PYTHON, else python3) and Python's zipfile; idempotent.
set -eu
dir=${1:-${QD_MODEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/quantd/models}/paddleocr}
py=${PYTHON:-python3}
models="ch_ppocr_mobile_v2.0_cls_infer.onnx ch_PP-OCRv4_det_infer.onnx ch_PP-OCRv4_rec_infer.onnx"
missing=
for m in $models; do [ -s "$dir/$m" ] || missing=1; done
[ -z "$missing" ] && exit 0
# a cache that is a symlink to a folder not made yet (a shared disk) is made where it points
mkdir -p "$(readlink -m "$dir")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$py" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    -d "$tmp" rapidocr-onnxruntime==1.4.4
"$py" - "$tmp"/rapidocr_onnxruntime-1.4.4-*.whl "$dir" $models <<'EOF'
import os, sys, zipfile
whl, out, names = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(whl) as z:
    for n in names:
        data = z.read("rapidocr_onnxruntime/models/" + n)
        with open(os.path.join(out, n + ".tmp"), "wb") as f:
            f.write(data)
        os.replace(os.path.join(out, n + ".tmp"), os.path.join(out, n))
        print(f"fetched {n} ({len(data)} bytes) into {out}")
EOF
