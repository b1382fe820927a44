#!/usr/bin/env python3
"""Ablation of the paper's PTQ algorithms on the Fashion-MNIST fixture models (issue 5), in the style
of the white paper's tables: each step of the standard pipeline switched on in turn, at W8A8 and
W4A8, per tensor and per channel. Prints a Markdown table per model (top-1 %, FP32 in the header).

    .venv/bin/python bench/bench_ablation.py [--models resnet_bn,mobilenet_bn,vgg,mlp]
        [--adaround-iterations 2000] [--val 10000] [--rows bias] > docs/results.md   (or paste the tables)

--rows picks the rows whose label contains one of the given words (e.g. "bias" re-measures only
"+ bias correction (empirical)").

Calibration: 1024 images of the training split; validation: the first --val test images.
"""
import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FM = "/usr/share/datasets/fashion-mnist"


def idx(path):
    raw = gzip.open(path).read()
    nd = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(nd)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * nd).reshape(dims)


def norm(x):
    x = x.astype(np.float32)
    return ((x / np.float32(255) - np.float32(0.2860)) / np.float32(0.3530)).reshape(-1, 1, 28, 28)


ROWS = [  # (label, config)
    ("RTN, min-max ranges (BN folded)", {"preset": "basic"}),
    ("+ MSE ranges (CE for logits)", {"preset": "standard", "cle": False, "bias_absorption": False,
                                      "bias_correction": "none", "adaround": {"enabled": False}}),
    ("+ CLE + absorption", {"preset": "standard", "bias_correction": "none", "adaround": {"enabled": False}}),
    ("+ bias correction (empirical)", {"preset": "standard", "bias_correction": "empirical",
                                       "adaround": {"enabled": False}}),
    ("+ AdaRound (standard pipeline)", {"preset": "standard", "adaround": {"enabled": True}}),
]
COLS = [("W8A8 per-tensor", 8, False), ("W8A8 per-channel", 8, True), ("W4A8 per-tensor", 4, False),
        ("W4A8 per-channel", 4, True)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.environ.get("QD_BUILDDIR", SRC))
    ap.add_argument("--models", default="resnet_bn,mobilenet_bn,vgg,mlp")
    ap.add_argument("--adaround-iterations", type=int, default=2000)
    ap.add_argument("--val", type=int, default=10000)
    ap.add_argument("--rows", default="", help="comma-separated words: only the rows whose label has one")
    args = ap.parse_args()
    words = [w for w in args.rows.split(",") if w]
    rows = [r for r in ROWS if not words or any(w in r[0] for w in words)]
    quant = os.path.join(args.build, "quant")
    tmp = tempfile.mkdtemp(prefix="qd-ablation-")
    np.save(f"{tmp}/calib.npy", norm(idx(f"{FM}/train-images-idx3-ubyte.gz")[:1024]))
    np.save(f"{tmp}/x.npy", norm(idx(f"{FM}/t10k-images-idx3-ubyte.gz")[:args.val]))
    np.save(f"{tmp}/y.npy", idx(f"{FM}/t10k-labels-idx1-ubyte.gz")[:args.val].astype(np.int64))
    print(f"Calibration: 1024 training images; validation: {args.val} test images; "
          f"AdaRound {args.adaround_iterations} iterations per layer. Top-1 accuracy (%).\n")
    for model in args.models.split(","):
        path = os.path.join(SRC, "tests", "fixtures", f"{model}.onnx")
        fp32 = None
        table = []
        for label, base in rows:
            row = [label]
            for _, wbits, pc in COLS:
                cfg = json.loads(json.dumps(base))
                cfg["check_steps"] = False   # each row applies its steps as configured
                cfg["weights"] = {"bits": wbits, "per_channel": pc}
                if "adaround" in cfg:
                    cfg["adaround"]["iterations"] = args.adaround_iterations
                with open(f"{tmp}/cfg.json", "w") as f:
                    json.dump(cfg, f)
                r = subprocess.run([quant, "ptq", path, "--calib", f"{tmp}/calib.npy", "--val", f"{tmp}/x.npy",
                                    "--labels", f"{tmp}/y.npy", "--config", f"{tmp}/cfg.json", "-o",
                                    f"{tmp}/out", "--json"], capture_output=True, text=True)
                if r.returncode:
                    row.append("error")
                    print(f"# {model} {label} W{wbits}: {r.stderr.strip()}", file=sys.stderr)
                    continue
                res = json.loads(r.stdout)
                fp32 = res["fp32_accuracy"]
                row.append(f"{100 * res['quant_accuracy']:.2f}")
                print(f"# {model} {label} W{wbits} pc={pc}: {res['quant_accuracy']:.4f} ({res['seconds']:.1f} s)",
                      file=sys.stderr)
            table.append(row)
        print(f"### {model} (FP32 {100 * fp32:.2f}%)\n")
        print("| pipeline | " + " | ".join(c[0] for c in COLS) + " |")
        print("|---|" + "---:|" * len(COLS))
        for row in table:
            print("| " + " | ".join(row) + " |")
        print()


if __name__ == "__main__":
    main()
