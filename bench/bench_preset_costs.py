#!/usr/bin/env python3
"""What each preset costs (issue 16): `quant ptq --preset fast|standard|best` on the Fashion-MNIST
fixtures and on torchvision CNNs at 224×224, with ONNX Runtime's quantize_static (QDQ, MinMax, per
channel) on the same calibration data as the peer measured in the same run — the machine may be
shared, so the ratio to the peer says more than the seconds.

Per model and preset: wall time of `quant ptq` (no --val, so the time is the preset's alone), its peak
RSS (/usr/bin/time), the time relative to ORT's quantize_static, and the quality of the QDQ model
as quantd runs it: top-1 on the 10k test images for the fixtures; for the 224 models (random weights,
no labels) argmax agreement with FP32 and the output's SQNR against FP32 on the 64 evaluation images
of bench/fetch_models.py. A run past --timeout is reported as not done.

  /work/venv-tools/bin/python bench/bench_preset_costs.py --quant build/quant
      [--models resnet_bn,mobilenet_bn,resnet18] [--presets fast,standard,best] [--timeout 1800]
      [--calib-images 256] [--threads 2] [--column 'label={"preset": "standard", …}']

--column adds a column with any config (e.g. a preset with a setting changed). Needs numpy, onnx and
onnxruntime.
"""
import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort
from onnxruntime import quantization as oq

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_ablation import FM, SRC, idx, norm  # noqa: E402
from bench_models import TORCHVISION, agree, cache_dir, last_line, quant_run, sqnr, timed  # noqa: E402
from bench_presets import Reader  # noqa: E402

sys.path.insert(0, os.path.join(SRC, "tests", "py"))
import realdata  # noqa: E402


def load(name, n_calib):
    """(model path, kind, calibration inputs, evaluation inputs, labels or None)."""
    if name in TORCHVISION:
        d = os.path.join(cache_dir(), "torchvision")
        return os.path.join(d, name + ".onnx"), "agree", realdata.natural_images(n_calib, 224, seed=3), \
            np.load(os.path.join(d, name + ".input.npy")), None
    return os.path.join(SRC, "tests", "fixtures", name + ".onnx"), "top1", \
        norm(idx(f"{FM}/train-images-idx3-ubyte.gz")[:1024]), norm(idx(f"{FM}/t10k-images-idx3-ubyte.gz")), \
        idx(f"{FM}/t10k-labels-idx1-ubyte.gz").astype(np.int64)


def ort_peer(model, calib, work):
    s = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    out = os.path.join(work, "ort.qdq.onnx")
    t = time.time()
    oq.quantize_static(model, out, Reader(s.get_inputs()[0].name, calib, 32), quant_format=oq.QuantFormat.QDQ,
                       per_channel=True, calibrate_method=oq.CalibrationMethod.MinMax)
    return time.time() - t


def run_ptq(args, model, cal, cfg, work, label):
    out = os.path.join(work, "ptq-" + label)
    cfgpath = os.path.join(work, "cfg.json")
    with open(cfgpath, "w") as f:
        json.dump(cfg, f)
    rc, log, wall, rss = timed([args.quant, "ptq", model, "--calib", cal, "--config", cfgpath, "--threads",
                                str(args.threads), "-o", out], timeout=args.timeout)
    res = {"seconds": wall, "rss_mib": rss}
    if rc is None:
        res["error"] = f"not done in {args.timeout:.0f} s"
    elif rc:
        res["error"] = last_line(log)
    else:
        res["qdq"] = os.path.join(out, "model.qdq.onnx")
        stages = [ln for ln in log.splitlines() if ": ended" in ln]
        res["stages"] = stages
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quant", default=os.path.join(SRC, "build", "quant"))
    ap.add_argument("--models", default="resnet_bn,mobilenet_bn,resnet18")
    ap.add_argument("--presets", default="fast,standard,best")
    ap.add_argument("--column", action="append", default=[], help="LABEL=CONFIG_JSON: another column")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--calib-images", type=int, default=256, help="for the 224×224 models")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    logging.getLogger().setLevel(logging.ERROR)
    cols = [(p, {"preset": p}) for p in args.presets.split(",") if p]
    for c in args.column:
        label, cfg = c.split("=", 1)
        cols.append((label, json.loads(cfg)))
    print("| model | preset | seconds | × ORT quantize_static | peak RSS MiB | quality |")
    print("|---|---|---:|---:|---:|---|")
    for name in args.models.split(","):
        model, kind, calib, x, y = load(name, args.calib_images)
        work = tempfile.mkdtemp(prefix="qd-preset-costs-")
        try:
            cal = os.path.join(work, "calib.npy")
            np.save(cal, calib)
            ref, _, _ = quant_run(args.quant, model, x, args.threads, work, "fp32")
            peer = ort_peer(model, calib, work)
            fp = f"FP32 top-1 {100 * float((ref.argmax(1) == y).mean()):.2f}%" if kind == "top1" else ""
            print(f"| {name} | ORT quantize_static (MinMax) | {peer:.1f} | 1 | | {fp} |", flush=True)
            for label, cfg in cols:
                load_avg = os.getloadavg()[0]
                res = run_ptq(args, model, cal, cfg, work, label)
                if "error" in res:
                    q = res["error"]
                else:
                    yq, _, _ = quant_run(args.quant, res["qdq"], x, args.threads, work, label)
                    if kind == "top1":
                        q = f"top-1 {100 * float((yq.argmax(1) == y).mean()):.2f}%"
                    else:
                        q = f"agreement {100 * agree(ref, yq):.1f}%, SQNR {sqnr(ref, yq):.1f} dB"
                rss = f"{res['rss_mib']:.0f}" if res.get("rss_mib") else ""
                print(f"| {name} | {label} | {res['seconds']:.1f} | {res['seconds'] / peer:.1f} | {rss} | {q} "
                      f"(load {load_avg:.1f}) |", flush=True)
                for s in res.get("stages", []):
                    print(f"#   {s}", file=sys.stderr)
        finally:
            subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
