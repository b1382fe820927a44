#!/usr/bin/env python3
"""Issue 14 §3: the QDQ export in ONNX Runtime's default (optimised) mode against quantd's simulation,
on torchvision-style CNNs at 224×224 and a 2-layer transformer encoder.

For each model: export it from PyTorch (random weights, seeded; CNNs get their BatchNorm statistics
re-estimated on the data so activations have a normal scale), run `quant ptq` with the target
ort-x86 twice — reduce_range on (the default) and off (full 8-bit weights) — and measure on the
held-out rows (the calibration rows after those calibrated on, as report.json does):
  sim        quantd's simulation (`quant run` of model.qdq.onnx, which is the simulation bit for bit)
  ORT none   ONNX Runtime with ORT_DISABLE_ALL (Q/DQ as written, float ops)
  ORT all    ONNX Runtime with ORT_ENABLE_ALL (integer kernels)
  emulated   report.json's target.sqnr_target_db (quantd's emulation of ORT's x86 u8·s8 kernels)
each as output SQNR against FP32 (ONNX Runtime running the FP32 model), and prints a markdown table
for docs/results.md. Whether ORT saturates depends on the CPU: with AVX-512 VNNI / AVX-VNNI it
accumulates in int32 and ORT all equals the simulation whatever the weights; without VNNI, full
8-bit weights lose what the emulated column says.

Needs PyTorch and torchvision (Debian: python3-torch python3-torchvision) and onnxruntime with
numpy < 2 in the same interpreter, e.g.
  python3 -m venv --system-site-packages /tmp/venv && /tmp/venv/bin/pip install onnxruntime 'numpy<2'
  /tmp/venv/bin/python bench/bench_ort_target.py --quant build/quant [--models resnet18,…] [--rows 96]
Images: the Fashion-MNIST test set (Debian dataset-fashion-mnist) upscaled to 224×224, 3 channels.
"""
import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

FASHION = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"
CNNS = ["resnet18", "mobilenet_v3_small", "efficientnet_b0"]


def images(n, size=224):
    import torch
    with gzip.open(FASHION, "rb") as f:
        raw = f.read()
    x = np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 1, 28, 28)[:n].astype(np.float32) / 255
    x = torch.nn.functional.interpolate(torch.from_numpy(x), size=(size, size), mode="bilinear",
                                        align_corners=False)
    x = (x - 0.45) / 0.25   # roughly ImageNet-normalised grey
    return x.repeat(1, 3, 1, 1).numpy()


def cnn(name, x):
    import torch
    import torchvision
    torch.manual_seed(0)
    m = getattr(torchvision.models, name)(weights=None)
    # BN statistics from the data (a cumulative average), so activations keep a normal scale
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.reset_running_stats()
            mod.momentum = None
    m.train()
    with torch.no_grad():
        for i in range(0, len(x), 16):
            m(torch.from_numpy(x[i:i + 16]))
    return m.eval()


def transformer(d=128, heads=4, ff=256, layers=2, classes=10):
    """A 2-layer post-norm transformer encoder over [N, 32, d] inputs, written with plain ops (what
    torch.onnx exports at opset 13 without fused attention kernels), mean-pooled into a linear head."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
            self.ff1, self.ff2 = nn.Linear(d, ff), nn.Linear(ff, d)
            self.n1, self.n2 = nn.LayerNorm(d), nn.LayerNorm(d)

        def forward(self, x):
            n, t, _ = x.shape
            q, k, v = self.qkv(x).reshape(n, t, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
            a = torch.softmax(q @ k.transpose(-1, -2) / (d // heads) ** 0.5, -1) @ v
            x = self.n1(x + self.proj(a.transpose(1, 2).reshape(n, t, d)))
            return self.n2(x + self.ff2(torch.relu(self.ff1(x))))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.Sequential(*[Block() for _ in range(layers)])
            self.head = nn.Linear(d, classes)

        def forward(self, x):
            return self.head(self.blocks(x).mean(1))

    torch.manual_seed(0)
    return Net().eval()


def export(model, x, path):
    import torch
    torch.onnx.export(model, torch.from_numpy(x[:2]), path, opset_version=13, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})


def sqnr(ref, y):
    ref, y = np.asarray(ref, np.float64).ravel(), np.asarray(y, np.float64).ravel()
    return 10 * np.log10(np.sum(ref ** 2) / np.sum((ref - y) ** 2))


def ort_run(path, x, optimize):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    return np.concatenate([s.run(None, {"x": x[i:i + 16]})[0] for i in range(0, len(x), 16)])


def measure(quant, name, model_path, data, ncalib, work, flags):
    out = os.path.join(work, name + ("-w7" if "--reduce-range" in flags.split() else "-w8"))
    t0 = time.time()
    cmd = [quant, "ptq", model_path, "--calib", data, "--calib-samples", str(ncalib), "--batch", "16",
           "-o", out, "--json"] + flags.split()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"{' '.join(cmd)}: {r.stderr}")
    secs = time.time() - t0
    rep = json.load(open(os.path.join(out, "report.json")))
    x = np.load(data)
    held = x[ncalib:]
    np.save(os.path.join(work, "held.npy"), held)
    subprocess.run([quant, "run", os.path.join(out, "model.qdq.onnx"), "--input", os.path.join(work, "held.npy"),
                    "--output", os.path.join(work, "sim.npy")], check=True, capture_output=True)
    fp32 = ort_run(model_path, held, False)
    qdq = os.path.join(out, "model.qdq.onnx")
    t = rep["target"]
    return {"sim": sqnr(fp32, np.load(os.path.join(work, "sim.npy"))), "none": sqnr(fp32, ort_run(qdq, held, False)),
            "all": sqnr(fp32, ort_run(qdq, held, True)), "emulated": t.get("sqnr_target_db"),
            "report_sim": t.get("sqnr_sim_db"), "secs": secs, "warned": any("ort-x86" in w for w in rep["warnings"])}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quant", default="build/quant")
    ap.add_argument("--models", default=",".join(CNNS + ["transformer"]))
    ap.add_argument("--calib", type=int, default=64, help="calibration rows")
    ap.add_argument("--held", type=int, default=32, help="held-out rows measured")
    ap.add_argument("--preset", default="--preset standard --no-adaround",
                    help="quant ptq flags besides the target's (default: the standard pipeline without AdaRound)")
    args = ap.parse_args()
    vnni = any(f in open("/proc/cpuinfo").read() for f in ("avx512_vnni", "avx_vnni"))
    work = tempfile.mkdtemp(prefix="bench_ort_target.")
    n = args.calib + args.held
    rows = []
    for name in args.models.split(","):
        path = os.path.join(work, name + ".onnx")
        if name == "transformer":
            x = np.random.default_rng(0).standard_normal((n, 32, 128)).astype(np.float32)
            export(transformer(), x, path)
        else:
            x = images(n)
            export(cnn(name, x), x, path)
        data = os.path.join(work, name + ".npy")
        np.save(data, x)
        for rr in ("--reduce-range", "--no-reduce-range"):
            m = measure(args.quant, name, path, data, args.calib, work, args.preset + " " + rr)
            rows.append((name, rr, m))
            print(f"{name} {rr}: {m}", file=sys.stderr, flush=True)
    print(f"CPU: {'with' if vnni else 'without'} VNNI; {args.calib} calibration rows, {args.held} held out; "
          f"quant ptq {args.preset}\n")
    print("| model | weights | sim dB | ORT none dB | ORT all dB | ORT all − sim | emulated ort-x86 dB | emulated − sim |")
    print("|---|---|---|---|---|---|---|---|")
    for name, rr, m in rows:
        w = "W7 (reduce_range)" if rr == "--reduce-range" else "W8"
        em = m["emulated"] if m["emulated"] is not None else float("nan")
        print(f"| {name} | {w} | {m['sim']:.2f} | {m['none']:.2f} | {m['all']:.2f} | {m['all'] - m['sim']:+.2f} | "
              f"{em:.2f} | {em - m['sim']:+.2f} |")


if __name__ == "__main__":
    main()
