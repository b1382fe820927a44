#!/usr/bin/env python3
"""The standard preset against the basic one and ONNX Runtime's quantizer (issue 14 §2): top-1 on the
Fashion-MNIST fixtures at W8A8 per tensor and per channel, W4A8 and W4A4 per channel. Columns: FP32,
quantd's basic preset (BN folding, min-max ranges), quantd's standard preset (its steps checked on a
held-out part of the calibration data, config.check_steps with check_metric kl: the test labels
never choose a step), the standard preset with the check off (every step applied, as before), and
ONNX Runtime's quantize_static (QDQ, MinMax and Percentile calibration, symmetric weights,
asymmetric activations, per channel where quantd is) on the same calibration images, run with ONNX
Runtime's default session options. quantd runs with config.target generic, so that W8 means 8-bit
weights in every column (ort-x86, the default, would use 7-bit weights against the u8·s8 overflow of
CPUs without VNNI). Prints a Markdown table and, per standard run, the steps kept.

    python bench/bench_presets.py [--models resnet_bn,mobilenet_bn,vgg,mlp,resnet,mobilenet]
        [--adaround-iterations 1000] [--val 10000]

Needs numpy, onnx and onnxruntime (onnxruntime.quantization imports onnx), e.g. in a venv:
python3 -m venv v && v/bin/pip install numpy onnx onnxruntime. Calibration: 1024 training images
(quantd's standard preset calibrates on the first 80% of them and scores its steps on the rest);
evaluation: the first --val test images.
"""
import argparse
import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnxruntime as ort
from onnxruntime import quantization as oq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_ablation import FM, SRC, idx, norm  # noqa: E402

SETTINGS = [("W8A8 pt", 8, 8, False), ("W8A8 pc", 8, 8, True), ("W4A8 pc", 4, 8, True), ("W4A4 pc", 4, 4, True)]


def quantd(quant, model, tmp, cfg):
    with open(f"{tmp}/cfg.json", "w") as f:
        json.dump(cfg, f)
    r = subprocess.run([quant, "ptq", model, "--calib", f"{tmp}/calib.npy", "--val", f"{tmp}/x.npy", "--labels",
                        f"{tmp}/y.npy", "--config", f"{tmp}/cfg.json", "-o", f"{tmp}/out", "--json"],
                       capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(r.stderr.strip())
    res = json.loads(r.stdout)
    with open(f"{tmp}/out/report.json") as f:
        rep = json.load(f)
    return res, rep


class Reader(oq.CalibrationDataReader):
    def __init__(self, name, x, batch=64):
        self.it = iter([{name: x[i:i + batch]} for i in range(0, len(x), batch)])

    def get_next(self):
        return next(self.it, None)


def ort_accuracy(path, x, y, level=None):
    so = ort.SessionOptions()
    if level is not None:
        so.graph_optimization_level = level
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    pred = np.concatenate([s.run(None, {name: x[i:i + 500]})[0].argmax(1) for i in range(0, len(x), 500)])
    return float((pred == y).mean())


def ort_quantize(model, tmp, calib, wbits, abits, pc, method):
    s = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    out = f"{tmp}/ort.qdq.onnx"
    with contextlib.redirect_stdout(sys.stderr):   # the percentile calibrator prints its progress
        oq.quantize_static(model, out, Reader(s.get_inputs()[0].name, calib), quant_format=oq.QuantFormat.QDQ,
                           per_channel=pc, weight_type=oq.QuantType.QInt8 if wbits == 8 else oq.QuantType.QInt4,
                           activation_type=oq.QuantType.QUInt8 if abits == 8 else oq.QuantType.QUInt4,
                           calibrate_method=method)
    return out


def ort_column(path, tmp, calib, x, y, wb, ab, pc, method):
    """ORT's accuracy, and a mark when its model would not load with the default session options: at
    4-bit activations ORT's extended graph optimizations drop the DequantizeLinear/QuantizeLinear
    pair around MaxPool, whose kernel has no uint4 type; the retry runs with basic optimizations
    (the same arithmetic, MaxPool in float between the pair)."""
    q = ort_quantize(path, tmp, calib, wb, ab, pc, method)
    try:
        return ort_accuracy(q, x, y), ""
    except Exception as ex:   # noqa: BLE001
        if "MaxPool" not in str(ex):
            raise
    return ort_accuracy(q, x, y, ort.GraphOptimizationLevel.ORT_ENABLE_BASIC), "†"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.environ.get("QD_BUILDDIR", SRC))
    ap.add_argument("--models", default="resnet_bn,mobilenet_bn,vgg,mlp,resnet,mobilenet")
    ap.add_argument("--adaround-iterations", type=int, default=1000)
    ap.add_argument("--val", type=int, default=10000)
    ap.add_argument("--no-unchecked", action="store_true", help="skip the standard preset with the check off")
    args = ap.parse_args()
    logging.getLogger().setLevel(logging.ERROR)   # onnxruntime.quantization's advice on every call
    quant = os.path.join(args.build, "quant")
    tmp = tempfile.mkdtemp(prefix="qd-presets-")
    calib = norm(idx(f"{FM}/train-images-idx3-ubyte.gz")[:1024])
    x = norm(idx(f"{FM}/t10k-images-idx3-ubyte.gz")[:args.val])
    y = idx(f"{FM}/t10k-labels-idx1-ubyte.gz")[:args.val].astype(np.int64)
    np.save(f"{tmp}/calib.npy", calib)
    np.save(f"{tmp}/x.npy", x)
    np.save(f"{tmp}/y.npy", y)
    cols = ["FP32", "basic", "standard"] + ([] if args.no_unchecked else ["standard unchecked"]) + \
        ["ORT MinMax", "ORT Percentile", "standard − max(basic, ORT)"]
    rows, notes = [], []
    for model in args.models.split(","):
        path = os.path.join(SRC, "tests", "fixtures", f"{model}.onnx")
        if not os.path.exists(path):
            print(f"# {model}: no fixture, skipped", file=sys.stderr)
            continue
        for label, wb, ab, pc in SETTINGS:
            # target generic: 8-bit weights stay 8-bit (ort-x86 would give them reduce_range's 7 bits,
            # which ORT's quantize_static does not use by default), as the columns compare grids
            grid = {"weights": {"bits": wb, "per_channel": pc}, "activations": {"bits": ab}, "target": "generic"}
            r, mark = {}, {}
            res, _ = quantd(quant, path, tmp, dict(grid, preset="basic"))
            r["FP32"], r["basic"] = res["fp32_accuracy"], res["quant_accuracy"]
            std = dict(grid, preset="standard", check_metric="kl",
                       adaround={"iterations": args.adaround_iterations})
            res, rep = quantd(quant, path, tmp, std)
            r["standard"] = res["quant_accuracy"]
            sc = rep.get("step_check", {})
            kept = [s["step"] + ("" if s["kept"] else " ✗") for s in sc.get("steps", [])]
            notes.append(f"{model} {label}: " + ", ".join(kept))
            if not args.no_unchecked:
                res, _ = quantd(quant, path, tmp, dict(std, check_steps=False))
                r["standard unchecked"] = res["quant_accuracy"]
            for name, method in (("ORT MinMax", oq.CalibrationMethod.MinMax),
                                 ("ORT Percentile", oq.CalibrationMethod.Percentile)):
                try:
                    r[name], mark[name] = ort_column(path, tmp, calib, x, y, wb, ab, pc, method)
                except Exception as ex:   # noqa: BLE001 — a column ORT cannot produce is reported, not fatal
                    print(f"# {model} {label} {name}: {ex}", file=sys.stderr)
                    r[name] = float("nan")
            ref = max(v for k, v in r.items() if k in ("basic", "ORT MinMax", "ORT Percentile") and v == v)
            r["standard − max(basic, ORT)"] = r["standard"] - ref
            rows.append((model, label, r, mark))
            print(f"# {model} {label}: " + ", ".join(f"{k} {100 * v:.2f}" for k, v in r.items()), file=sys.stderr)
    print(f"Calibration: 1024 training images; evaluation: {args.val} test images; AdaRound "
          f"{args.adaround_iterations} iterations per layer. Top-1 accuracy (%).\n")
    print("| model | setting | " + " | ".join(cols) + " |")
    print("|---|---|" + "---:|" * len(cols))
    for model, label, r, mark in rows:
        print(f"| {model} | {label} | " + " | ".join(f"{100 * r[c]:.2f}{mark.get(c, '')}" for c in cols) + " |")
    if any(mark.values() for *_, mark in rows):
        print("\n† ONNX Runtime would not load its own W4A4 model with its default (extended) optimizations, "
              "which hand MaxPool a uint4 tensor it has no kernel for; run with basic optimizations instead.")
    print("\nSteps of the standard preset (✗: reverted by the check):\n")
    for n in notes:
        print(f"- {n}")


if __name__ == "__main__":
    main()
