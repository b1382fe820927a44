#!/usr/bin/env python3
"""Weight rounding compared (issue 16): round-to-nearest (+ empirical bias correction, as the
standard pipeline does without rounding optimisation), AdaRound and GPTQ (config.rounding), side by
side in one run, W8A8 and W4A8 with per-channel weights.

  Fashion-MNIST fixtures (tests/fixtures): top-1 on the 10k test images, calibration 1024 training
  images; the ptq wall time and the rounding step's own time (report.json timings).
  torchvision models at 224 (bench/fetch_models.py's cache): calibration --tv-calib natural-looking
  images (tests/py/realdata.py), evaluation on the cached NAME.input.npy (64 images): output SQNR of
  the QDQ export as quantd runs it against the FP32 model's outputs, and top-1 agreement with FP32.

The standard preset with check_steps off, so that every method is applied as such (with
check_steps a step that lowers the held-out score is reverted, which would hide the differences).

  /work/venv-tools/bin/python bench/bench_rounding.py --quant build/quant [--models resnet_bn,…]
      [--tv-models resnet18,mobilenet_v2] [--methods nearest,adaround,gptq] [--bits 8,4]
      [--adaround-iterations 2000] [--tv-timeout 1800] [--threads 2]
"""
import argparse
import gzip
import json
import os
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(SRC, "tests", "py"))
sys.path.insert(0, HERE)
import realdata  # noqa: E402
from bench_models import cache_dir, last_line, quant_run, sqnr, agree, timed  # noqa: E402

FM = "/usr/share/datasets/fashion-mnist"


def idx(path):
    raw = gzip.open(path).read()
    nd = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(nd)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * nd).reshape(dims)


def norm(x):
    x = x.astype(np.float32)
    return ((x / np.float32(255) - np.float32(0.2860)) / np.float32(0.3530)).reshape(-1, 1, 28, 28)


def ptq(args, model, calib, method, bits, work, extra=(), timeout=None):
    cfg = {"preset": "standard", "check_steps": False, "rounding": method,
           "weights": {"bits": bits, "per_channel": True}, "adaround": {"iterations": args.adaround_iterations}}
    tag = f"{os.path.basename(model)}-{method}-w{bits}"
    cpath = os.path.join(work, tag + ".json")
    with open(cpath, "w") as f:
        json.dump(cfg, f)
    out = os.path.join(work, tag)
    rc, log, wall, rss = timed([args.quant, "ptq", model, "--calib", calib, "--config", cpath, "--threads",
                                str(args.threads), "-o", out, "--json"] + list(extra), timeout=timeout)
    res = {"seconds": wall, "rss_mib": rss}
    if rc is None:
        res["error"] = f"not done in {timeout:.0f} s"
        return res
    if rc:
        res["error"] = last_line(log)
        return res
    with open(os.path.join(out, "report.json")) as f:
        rep = json.load(f)
    t = rep.get("timings", {})
    res["step_s"] = t.get({"nearest": "bias_correction", "adaround": "adaround", "gptq": "gptq"}[method], 0.0)
    try:   # --json: the result on stdout (which timed() puts before stderr)
        out_json = json.JSONDecoder().raw_decode(log[log.index("{"):])[0]
    except ValueError:
        out_json = {}
    res["acc"] = out_json.get("quant_accuracy")
    res["fp32"] = out_json.get("fp32_accuracy")
    res["qdq"] = os.path.join(out, "model.qdq.onnx")
    return res


def cell(r, quality):
    if "error" in r:
        return r["error"]
    return f"{quality(r)} · {r['seconds']:.0f} s (rounding {r['step_s']:.1f} s)"


def fixtures(args, work):
    cal = os.path.join(work, "fm_calib.npy")
    x = os.path.join(work, "fm_x.npy")
    y = os.path.join(work, "fm_y.npy")
    np.save(cal, norm(idx(f"{FM}/train-images-idx3-ubyte.gz")[:1024]))
    np.save(x, norm(idx(f"{FM}/t10k-images-idx3-ubyte.gz")[:args.val]))
    np.save(y, idx(f"{FM}/t10k-labels-idx1-ubyte.gz")[:args.val].astype(np.int64))
    bits = [int(b) for b in args.bits.split(",")]
    methods = args.methods.split(",")
    print(f"\n### Fashion-MNIST fixtures: top-1 % on {args.val} test images, ptq wall time (rounding step)\n")
    print("| model | " + " | ".join(f"W{b}A8 {m}" for b in bits for m in methods) + " |")
    print("|---|" + "---|" * (len(bits) * len(methods)))
    for name in args.models.split(","):
        model = os.path.join(SRC, "tests", "fixtures", name + ".onnx")
        cells, fp32 = [], None
        for b in bits:
            for m in methods:
                r = ptq(args, model, cal, m, b, work, ["--val", x, "--labels", y])
                fp32 = r.get("fp32", fp32)
                cells.append(cell(r, lambda r: f"{100 * r['acc']:.2f}"))
                print(f"# {name} W{b} {m}: {cells[-1]}", file=sys.stderr, flush=True)
        print(f"| {name} (FP32 {100 * fp32:.2f}) | " + " | ".join(cells) + " |", flush=True)


def torchvision(args, work):
    d = os.path.join(cache_dir(), "torchvision")
    cal = os.path.join(work, "tv_calib.npy")
    np.save(cal, realdata.natural_images(args.tv_calib, 224, seed=3))
    bits = [int(b) for b in args.bits.split(",")]
    methods = args.methods.split(",")
    print(f"\n### torchvision at 224: output SQNR (dB) vs FP32 and top-1 agreement on 64 images, "
          f"{args.tv_calib} calibration images, ptq wall time (rounding step)\n")
    print("| model | " + " | ".join(f"W{b}A8 {m}" for b in bits for m in methods) + " |")
    print("|---|" + "---|" * (len(bits) * len(methods)))
    for name in args.tv_models.split(","):
        model = os.path.join(d, name + ".onnx")
        xin = np.load(os.path.join(d, name + ".input.npy"))
        ref, _, _ = quant_run(args.quant, model, xin, args.threads, work, name + "-fp32")
        cells = []
        for b in bits:
            for m in methods:
                r = ptq(args, model, cal, m, b, work, timeout=args.tv_timeout)
                if "qdq" in r:
                    q, _, _ = quant_run(args.quant, r["qdq"], xin, args.threads, work, f"{name}-{m}-{b}")
                    r["sqnr"], r["agree"] = sqnr(ref, q), agree(ref, q)
                cells.append(cell(r, lambda r: f"{r['sqnr']:.1f} dB, {100 * r['agree']:.0f}%"))
                print(f"# {name} W{b} {m}: {cells[-1]}", file=sys.stderr, flush=True)
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quant", default=os.path.join(os.environ.get("QD_BUILDDIR", SRC), "quant"))
    ap.add_argument("--models", default="resnet_bn,mobilenet_bn,vgg")
    ap.add_argument("--tv-models", default="resnet18,mobilenet_v2")
    ap.add_argument("--methods", default="nearest,adaround,gptq")
    ap.add_argument("--bits", default="8,4")
    ap.add_argument("--adaround-iterations", type=int, default=2000)
    ap.add_argument("--val", type=int, default=10000)
    ap.add_argument("--tv-calib", type=int, default=512)
    ap.add_argument("--tv-timeout", type=float, default=1800)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="qd-rounding-")
    if args.models:
        fixtures(args, work)
    if args.tv_models:
        torchvision(args, work)


if __name__ == "__main__":
    main()
