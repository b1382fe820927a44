#!/usr/bin/env python3
"""Transformers (issue 15, the paper's BERT row): W8A8 PTQ of the ViT fixture on Fashion-MNIST and of
the BERT-style fixture on its toy task (tests/fixtures/make_vit.py), without and with 16-bit
activations where the pipeline picks them (config.activations.high_precision auto), per config;
and the QDQ export run by ONNX Runtime against quantd's own execution of the same file.

    python bench/bench_transformers.py [--quant build/quant] [--val 10000] [--calib 1024]

Columns: FP32 and quantized top-1 (ViT: the first --val Fashion-MNIST test images; BERT: the 512
sequences of bert.tokens.npy, calibrated on its first 256 and scored on all), output SQNR against
FP32, the activations promoted to 16 bits, and for the export: ONNX Runtime (graph optimisations
off, then all on) against `quant run` of model.qdq.onnx — argmax agreement and max |diff| of the
logits. Calibration: --calib Fashion-MNIST training images. Needs numpy and onnxruntime.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_ablation import FM, SRC, idx, norm  # noqa: E402

XF = os.path.join(SRC, "tests", "fixtures", "xfmr")
BASE = {"target": "generic", "adaround": {"enabled": False}}
CONFIGS = [  # (label, config)
    ("basic (min-max)", {"preset": "basic"}),
    ("standard, AdaRound off", {}),
    ("standard, AdaRound off, 16-bit auto", {"activations": {"high_precision": "auto"}}),
    ("standard, AdaRound off, 16-bit auto < 38 dB", {"activations": {"high_precision": "auto", "high_precision_db": 38}}),
    ("standard, AdaRound off, per-tensor W", {"weights": {"per_channel": False}}),
    ("standard, AdaRound off, per-tensor W, 16-bit auto",
     {"weights": {"per_channel": False}, "activations": {"high_precision": "auto"}}),
]


def merge(a, b):
    out = json.loads(json.dumps(a))
    for k, v in b.items():
        out[k] = merge(out.get(k, {}), v) if isinstance(v, dict) else v
    return out


def ort_run(path, x, level):
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    so.intra_op_num_threads = 2
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return np.concatenate([s.run(None, {name: x[i:i + 500]})[0] for i in range(0, len(x), 500)])


def run(quant, model, tmp, calib, xval, yval, cfg):
    with open(f"{tmp}/cfg.json", "w") as f:
        json.dump(cfg, f)
    t0 = time.time()
    r = subprocess.run([quant, "ptq", model, "--calib", calib, "--val", xval, "--labels", yval, "--config",
                        f"{tmp}/cfg.json", "-o", f"{tmp}/out", "--json"], capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(r.stderr.strip())
    secs = time.time() - t0
    rep = json.load(open(f"{tmp}/out/report.json"))
    qdq = f"{tmp}/out/model.qdq.onnx"
    subprocess.run([quant, "run", qdq, "--input", xval, "--output", f"{tmp}/ours.npy"], check=True,
                   capture_output=True)
    ours = np.load(f"{tmp}/ours.npy")
    x = np.load(xval)
    cmp = {}
    for lvl, key in ((ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "off"), (ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "all")):
        y = ort_run(qdq, x, lvl)
        cmp[key] = ((y.argmax(1) == ours.argmax(1)).mean(), float(np.abs(y - ours).max()))
    hp = rep.get("high_precision", {}).get("promoted", [])
    return rep, ours, cmp, hp, secs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quant", default=os.path.join(SRC, "build", "quant"))
    ap.add_argument("--val", type=int, default=10000)
    ap.add_argument("--calib", type=int, default=1024)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        xtr = norm(idx(f"{FM}/train-images-idx3-ubyte.gz"))
        rng = np.random.default_rng(0)
        np.save(f"{tmp}/calib_vit.npy", xtr[rng.choice(len(xtr), args.calib, replace=False)])
        np.save(f"{tmp}/x_vit.npy", norm(idx(f"{FM}/t10k-images-idx3-ubyte.gz"))[:args.val])
        np.save(f"{tmp}/y_vit.npy", idx(f"{FM}/t10k-labels-idx1-ubyte.gz")[:args.val].astype(np.int64))
        tok = np.load(f"{XF}/bert.tokens.npy")
        np.save(f"{tmp}/calib_bert.npy", tok[:256])
        np.save(f"{tmp}/x_bert.npy", tok)
        np.save(f"{tmp}/y_bert.npy", np.load(f"{XF}/bert.labels.npy"))
        print("| model | config | FP32 top-1 | W8A8 top-1 | output SQNR dB | 16-bit activations | "
              "ORT vs quantd (opt. off): agree, max diff | (opt. all): agree, max diff | time s |")
        print("|---|---|---|---|---|---|---|---|---|")
        for model in ("vit", "bert"):
            fp32 = None
            for label, c in CONFIGS:
                cfg = merge(BASE, c)
                rep, ours, cmp, hp, secs = run(args.quant, f"{XF}/{model}.onnx", tmp, f"{tmp}/calib_{model}.npy",
                                               f"{tmp}/x_{model}.npy", f"{tmp}/y_{model}.npy", cfg)
                res = rep["result"]
                if fp32 is None:
                    subprocess.run([args.quant, "run", f"{XF}/{model}.onnx", "--input", f"{tmp}/x_{model}.npy",
                                    "--output", f"{tmp}/fp32.npy"], check=True, capture_output=True)
                    fp32 = np.load(f"{tmp}/fp32.npy")
                sqnr = 10 * np.log10((fp32 ** 2).sum() / ((ours - fp32) ** 2).sum())
                print(f"| {model} | {label} | {100 * res['fp32_accuracy']:.2f} | {100 * res['quant_accuracy']:.2f} | "
                      f"{sqnr:.1f} | {len(hp)} | {100 * cmp['off'][0]:.2f}%, {cmp['off'][1]:.2g} | "
                      f"{100 * cmp['all'][0]:.2f}%, {cmp['all'][1]:.2g} | {secs:.0f} |", flush=True)
                if hp:
                    print(f"<!-- {model} / {label}: 16-bit: {', '.join(hp)} -->", flush=True)


if __name__ == "__main__":
    main()
