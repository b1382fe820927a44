#!/usr/bin/env python3
"""Cross-layer equalization on the channel-imbalanced VGG (issue 14 §1): tests/fixtures/vgg_imbalanced.onnx
is vgg.onnx with every Conv → Relu (→ MaxPool) → Conv pair rescaled so that channel ranges spread over
three decades (tests/fixtures/make_imbalanced.py); its FP32 function is vgg.onnx's. Prints a Markdown
table per model: top-1 % with the basic and standard presets, CLE off and on, at W8A8 per tensor,
W8A8 per channel and W4A8 per channel.

    .venv/bin/python bench/bench_cle.py [--models vgg_imbalanced,vgg] [--quant build/quant]
        [--adaround-iterations N] [--val 10000]

Calibration: 1024 images of the training split; validation: the first --val test images (as in
bench_ablation.py). --quant picks another build (e.g. one before the fix) to compare.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

from bench_ablation import FM, idx, norm

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ROWS = [  # (label, config)
    ("basic (min-max ranges)", {"preset": "basic"}),
    ("basic + CLE", {"preset": "basic", "cle": True}),
    ("standard without CLE", {"preset": "standard", "cle": False}),
    ("standard (CLE on)", {"preset": "standard"}),
]
COLS = [("W8A8 per-tensor", 8, False), ("W8A8 per-channel", 8, True), ("W4A8 per-channel", 4, True)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quant", default=os.path.join(os.environ.get("QD_BUILDDIR", SRC), "quant"))
    ap.add_argument("--models", default="vgg_imbalanced,vgg")
    ap.add_argument("--adaround-iterations", type=int, default=0, help="0: the standard preset's default")
    ap.add_argument("--val", type=int, default=10000)
    ap.add_argument("--target", default="generic", help="config.target: generic (full 8-bit weights, the default "
                    "here) or ort-x86 (7-bit weights at W8A8: reduce_range)")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="qd-cle-")
    np.save(f"{tmp}/calib.npy", norm(idx(f"{FM}/train-images-idx3-ubyte.gz")[:1024]))
    np.save(f"{tmp}/x.npy", norm(idx(f"{FM}/t10k-images-idx3-ubyte.gz")[:args.val]))
    np.save(f"{tmp}/y.npy", idx(f"{FM}/t10k-labels-idx1-ubyte.gz")[:args.val].astype(np.int64))
    iters = f"{args.adaround_iterations}" if args.adaround_iterations else "the default"
    print(f"Calibration: 1024 training images; validation: {args.val} test images; AdaRound (standard preset) "
          f"{iters} iterations per layer; target {args.target}. Top-1 accuracy (%), the drop from FP32 in brackets.\n")
    for model in args.models.split(","):
        path = os.path.join(SRC, "tests", "fixtures", f"{model}.onnx")
        fp32 = None
        table = []
        for label, base in ROWS:
            row = [label]
            for _, wbits, pc in COLS:
                cfg = json.loads(json.dumps(base))
                cfg["weights"] = {"bits": wbits, "per_channel": pc}
                cfg["target"] = args.target
                if args.adaround_iterations and cfg["preset"] == "standard":
                    cfg["adaround"] = {"iterations": args.adaround_iterations}
                with open(f"{tmp}/cfg.json", "w") as f:
                    json.dump(cfg, f)
                r = subprocess.run([args.quant, "ptq", path, "--calib", f"{tmp}/calib.npy", "--val", f"{tmp}/x.npy",
                                    "--labels", f"{tmp}/y.npy", "--config", f"{tmp}/cfg.json", "-o",
                                    f"{tmp}/out", "--json"], capture_output=True, text=True)
                if r.returncode:
                    row.append("error")
                    print(f"# {model} {label} W{wbits}: {r.stderr.strip()}", file=sys.stderr)
                    continue
                res = json.loads(r.stdout)
                fp32 = res["fp32_accuracy"]
                q = res["quant_accuracy"]
                row.append(f"{100 * q:.2f} ({100 * (q - fp32):+.2f})")
                print(f"# {model} {label} W{wbits} pc={pc}: {q:.4f} ({res['seconds']:.1f} s)", file=sys.stderr)
            table.append(row)
        print(f"### {model} (FP32 {100 * fp32:.2f}%)\n")
        print("| pipeline | " + " | ".join(c[0] for c in COLS) + " |")
        print("|---|" + "---:|" * len(COLS))
        for row in table:
            print("| " + " | ".join(row) + " |")
        print()


if __name__ == "__main__":
    main()
