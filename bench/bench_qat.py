#!/usr/bin/python3
"""QAT benchmarks (issue 6), outside the test suite. Two parts:

  accuracy  W4A4 and W8A8 QAT of the ResNet- and MobileNetV2-style fixtures (tests/fixtures/*_bn.onnx,
            BN folded statically by the pipeline) on the 60k Fashion-MNIST training split, against
            FP32 and against the standard PTQ pipeline (`quant ptq`, calibrated on 1024 training
            images), scored on the 10k test split. Needs only numpy and the built `quant`.
  speed     training-step throughput (samples/s) of `quant qat` against PyTorch on the CPU (Debian's
            python3-torch at /usr/bin/python3): the same architecture (tests/fixtures/make_fixtures.py's
            definitions, BN folded as ours is), the same batch, thread count and quantizers — torch.ao's
            LSQ fake quantization (_LearnableFakeQuantize: learnable scale and offset with gradient
            scaling), per-channel symmetric weights and per-tensor asymmetric activations, Adam.
            Random weights: throughput does not depend on them. Runs alternate between the two
            and the best of --repeats counts (the machine is shared). PyTorch runs with
            OMP_WAIT_POLICY=PASSIVE: on a loaded machine its spinning OpenMP workers otherwise lose
            their time slices and it runs several times slower than it can.

  speed224  the same speed comparison on torchvision models at 224x224 (default resnet18 and
            mobilenet_v2, batch 32): quant trains the ONNX export that bench/fetch_models.py put in the
            model cache (its 64 images, labels = the argmax of PyTorch's outputs), PyTorch the same
            torchvision architecture (BN folded by fuse_fx, the same LSQ quantizers, W4A4). Needs torch
            and torchvision (--torch-python, e.g. /work/venv-tools/bin/python), not Fashion-MNIST.
            Reports the median of --repeats runs.

  /usr/bin/python3 bench/bench_qat.py [--quant ./quant] [--part accuracy|speed|speed224|all] [--epochs 3]
                                      [--lr 1e-4] [--threads 2] [--batch 64] [--json out.json]
  bench/bench_qat.py --part speed224 --batch 32 --steps 4 --repeats 3 --torch-python /work/venv-tools/bin/python

Results go to docs/results.md (QAT) and docs/benchmarks.md (QAT throughput) by hand.
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

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(HERE)
FIX = os.path.join(SRC, "tests", "fixtures")
FASHION = "/usr/share/datasets/fashion-mnist"
MEAN, STD = 0.2860, 0.3530


def read_idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def normalise(images):
    x = images.astype(np.float32)
    x = (x / np.float32(255.0) - np.float32(MEAN)) / np.float32(STD)
    return x.reshape(-1, 1, 28, 28)


def prepare_data(tmp):
    paths = {}
    for split, name in (("train", "train"), ("t10k", "test")):
        x = normalise(read_idx(os.path.join(FASHION, f"{split}-images-idx3-ubyte.gz")))
        y = read_idx(os.path.join(FASHION, f"{split}-labels-idx1-ubyte.gz")).astype(np.int64)
        paths[name + "_x"], paths[name + "_y"] = os.path.join(tmp, f"{name}_x.npy"), os.path.join(tmp, f"{name}_y.npy")
        np.save(paths[name + "_x"], x)
        np.save(paths[name + "_y"], y)
        if name == "train":
            paths["calib"] = os.path.join(tmp, "calib.npy")
            np.save(paths["calib"], x[:1024])
    return paths


def quant(args, *cmd):
    t0 = time.time()
    r = subprocess.run([args.quant, *map(str, cmd)], capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"quant {' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stderr}")
    return json.loads(r.stdout), time.time() - t0


# --- accuracy ------------------------------------------------------------------------------------

def accuracy_part(args, data, tmp):
    rows = []
    configs = [c for c in [("W4A4", 4, 4, args.epochs, args.lr), ("W8A8", 8, 8, args.epochs8, args.lr8)]
               if c[0] in args.configs.split(",")]
    for model in args.models.split(","):
        path = os.path.join(FIX, f"{model}_bn.onnx")
        for name, wb, ab, epochs, lr in configs:
            out = os.path.join(tmp, f"{model}_{name}")
            ptq, tp = quant(args, "ptq", path, "--calib", data["calib"], "--val", data["test_x"], "--labels",
                            data["test_y"], "--wbits", wb, "--abits", ab, "--threads", args.threads, "-o",
                            out + "_ptq", "--json")
            qat, tq = quant(args, "qat", path, "--train", data["train_x"], "--labels", data["train_y"], "--val",
                            data["test_x"], "--val-labels", data["test_y"], "--wbits", wb, "--abits", ab,
                            "--epochs", epochs, "--lr", lr, "--batch", args.batch, "--threads", args.threads,
                            "-o", out + "_qat", "--json")
            prep = json.load(open(os.path.join(out + "_ptq", "report.json")))["config"]
            # the standard pipeline runs AdaRound when enabled, bias correction otherwise
            ptq_method = "+".join(["cle"] * bool(prep.get("cle")) + (
                ["adaround"] if prep["adaround"]["enabled"] else
                [f"{prep['bias_correction']} bias correction"] * (prep["bias_correction"] != "none")))
            rep = json.load(open(os.path.join(out + "_qat", "report.json")))
            curve = [(c["epoch"], round(c["loss"], 4), c["accuracy"]) for c in rep["qat"]["curve"]]
            row = {"model": model, "config": name, "epochs": epochs, "lr": lr, "fp32": ptq["fp32_accuracy"],
                   "ptq": ptq["quant_accuracy"], "ptq_method": ptq_method, "qat_init": qat["ptq_accuracy"], "qat": qat["qat_accuracy"],
                   "ptq_seconds": round(tp, 1), "qat_seconds": round(tq, 1), "curve": curve}
            rows.append(row)
            print(f"{model:9s} {name}  FP32 {row['fp32']:.4f}  PTQ ({ptq_method}) {row['ptq']:.4f}  QAT init {row['qat_init']:.4f}"
                  f"  QAT({epochs} ep) {row['qat']:.4f}  (ptq {tp:.0f}s, qat {tq:.0f}s)  curve {curve}", flush=True)
    return rows


# --- speed -----------------------------------------------------------------------------------------

# quant qat runs WARM_STEPS more steps than asked and the figure is its report's "steady_steps": the
# steps after the first two, without the run's validation and checkpoints, as PyTorch's side below
# times its steps after warm-up ones
WARM_STEPS = 2


def steady(out, batch):
    st = json.load(open(os.path.join(out, "report.json")))["qat"]["training"]["steady_steps"]
    return {"wall": st["steps"] * batch / st["wall_seconds"], "cpu": st["steps"] * batch / st["cpu_seconds"]}


def ours_speed(args, data, model, tmp, steps):
    out = os.path.join(tmp, f"speed_{model}")
    quant(args, "qat", os.path.join(FIX, f"{model}_bn.onnx"), "--train", data["train_x"], "--labels",
          data["train_y"], "--calib", data["calib"], "--wbits", 4, "--abits", 4, "--steps", steps + WARM_STEPS,
          "--epochs", 10000, "--batch", args.batch, "--lr", 1e-4, "--threads", args.threads, "-o", out, "--json")
    return steady(out, args.batch)


TORCH_CODE = r'''
import sys, time, json
import numpy as np
P = json.loads(sys.argv[1])
FIX, THREADS, MODEL, BATCH, XPATH, YPATH, STEPS = (P[k] for k in ("fix", "threads", "model", "batch", "x", "y",
                                                                   "steps"))
import torch, torch.nn as nn, torch.nn.functional as F
sys.path.insert(0, FIX)
import make_fixtures as mf
from torch.ao.quantization import (QConfig, QConfigMapping, MovingAverageMinMaxObserver, PerChannelMinMaxObserver,
                                   MovingAveragePerChannelMinMaxObserver, FusedMovingAvgObsFakeQuantize)
from torch.ao.quantization._learnable_fake_quantize import _LearnableFakeQuantize
from torch.ao.quantization.quantize_fx import prepare_qat_fx, fuse_fx
torch.set_num_threads(THREADS)
torch.manual_seed(0)
model = {"resnet": mf.ResNet, "mobilenet": mf.MobileNet}[MODEL]()
model.eval()
model = fuse_fx(model)            # BN folded into the convolutions, as the QAT pipeline does statically
FQ = P.get("fq", "lsq")
model.train()
ex = (torch.zeros(BATCH, 1, 28, 28),)
if FQ == "lsq":
    act = _LearnableFakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=15,
                                           dtype=torch.quint8, qscheme=torch.per_tensor_affine, use_grad_scaling=True)
    wt = _LearnableFakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=-8, quant_max=7,
                                          dtype=torch.qint8, qscheme=torch.per_tensor_symmetric, use_grad_scaling=True)
    model = prepare_qat_fx(model, QConfigMapping().set_global(QConfig(activation=act, weight=wt)), ex)
    # per-channel learnable weight quantizers (with_args cannot know each layer's channel count)
    for m in model.modules():
        if hasattr(m, "weight_fake_quant") and m.weight.dim() > 1:
            m.weight_fake_quant = _LearnableFakeQuantize(observer=PerChannelMinMaxObserver, quant_min=-8, quant_max=7,
                                                         channel_len=m.weight.shape[0], dtype=torch.qint8,
                                                         qscheme=torch.per_channel_symmetric, ch_axis=0,
                                                         use_grad_scaling=True)
elif FQ == "fused":
    # torch.ao's default QAT quantizers (fused observer + fake quant, ranges from moving min/max)
    act = FusedMovingAvgObsFakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=15,
                                                  dtype=torch.quint8)
    wt = FusedMovingAvgObsFakeQuantize.with_args(observer=MovingAveragePerChannelMinMaxObserver, quant_min=-8,
                                                 quant_max=7, dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    model = prepare_qat_fx(model, QConfigMapping().set_global(QConfig(activation=act, weight=wt)), ex)
x = torch.from_numpy(np.load(XPATH, mmap_mode="r")[:BATCH * 40].copy())
y = torch.from_numpy(np.load(YPATH)[:BATCH * 40].copy())
with torch.no_grad():                               # range initialisation (observers), then learning
    model(x[:BATCH])
for m in model.modules():
    if isinstance(m, _LearnableFakeQuantize):
        m.enable_param_learning()
opt = torch.optim.Adam(model.parameters(), lr=1e-4)
def step(i):
    j = (i % 40) * BATCH
    opt.zero_grad()
    loss = F.cross_entropy(model(x[j:j + BATCH]), y[j:j + BATCH])
    loss.backward()
    opt.step()
for i in range(5):
    step(i)
t0, c0 = time.perf_counter(), time.process_time()
for i in range(STEPS):
    step(i)
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
print(json.dumps({"wall": STEPS * BATCH / wall, "cpu": STEPS * BATCH / cpu}))
'''


TORCH224_CODE = r'''
import sys, time, json
import numpy as np
P = json.loads(sys.argv[1])
import torch, torch.nn.functional as F, torchvision
from torch.ao.quantization import QConfig, QConfigMapping, MovingAverageMinMaxObserver, PerChannelMinMaxObserver
from torch.ao.quantization._learnable_fake_quantize import _LearnableFakeQuantize
from torch.ao.quantization.quantize_fx import prepare_qat_fx, fuse_fx
torch.set_num_threads(P["threads"])
torch.manual_seed(0)
BATCH, STEPS = P["batch"], P["steps"]
from torch.nn.utils.fusion import fuse_conv_bn_eval
model = getattr(torchvision.models, P["model"])(weights=None)
model.eval()
# BN folded into the convolutions, as the QAT pipeline does statically (by hand: fuse_fx's modules
# trip prepare_qat_fx in recent torch)
model = torch.fx.symbolic_trace(model)
mods = dict(model.named_modules())
for node in list(model.graph.nodes):
    prev = node.args[0] if node.args else None
    if (node.op == "call_module" and isinstance(mods[node.target], torch.nn.BatchNorm2d) and
            getattr(prev, "op", None) == "call_module" and isinstance(mods[prev.target], torch.nn.Conv2d) and
            len(prev.users) == 1):
        parent, _, name = prev.target.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, name,
                fuse_conv_bn_eval(mods[prev.target], mods[node.target]))
        node.replace_all_uses_with(prev)
        model.graph.erase_node(node)
model.recompile()
model.train()
ex = (torch.zeros(BATCH, 3, 224, 224),)
act = _LearnableFakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=15,
                                       dtype=torch.quint8, qscheme=torch.per_tensor_affine, use_grad_scaling=True)
wt = _LearnableFakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=-8, quant_max=7,
                                      dtype=torch.qint8, qscheme=torch.per_tensor_symmetric, use_grad_scaling=True)
model = prepare_qat_fx(model, QConfigMapping().set_global(QConfig(activation=act, weight=wt)), ex)
for m in model.modules():
    if hasattr(m, "weight_fake_quant") and m.weight.dim() > 1:
        m.weight_fake_quant = _LearnableFakeQuantize(observer=PerChannelMinMaxObserver, quant_min=-8, quant_max=7,
                                                     channel_len=m.weight.shape[0], dtype=torch.qint8,
                                                     qscheme=torch.per_channel_symmetric, ch_axis=0,
                                                     use_grad_scaling=True)
x = torch.from_numpy(np.load(P["x"]))
y = torch.from_numpy(np.load(P["y"]))
n = x.shape[0] // BATCH
with torch.no_grad():
    model(x[:BATCH])
for m in model.modules():
    if isinstance(m, _LearnableFakeQuantize):
        m.enable_param_learning()
opt = torch.optim.Adam(model.parameters(), lr=1e-4)
def step(i):
    j = (i % n) * BATCH
    opt.zero_grad()
    loss = F.cross_entropy(model(x[j:j + BATCH]), y[j:j + BATCH])
    loss.backward()
    opt.step()
for i in range(2):
    step(i)
t0, c0 = time.perf_counter(), time.process_time()
for i in range(STEPS):
    step(i)
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
print(json.dumps({"wall": STEPS * BATCH / wall, "cpu": STEPS * BATCH / cpu}))
'''


def speed224_part(args, tmp):
    """samples/s of W4A4 QAT steps at 224x224: quant qat on the cached ONNX export vs PyTorch on the
    torchvision model; the median of the runs, by wall clock and per CPU-second"""
    cache = os.environ.get("QD_MODEL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "quantd", "models")
    rows = []
    for model in args.models.split(","):
        base = os.path.join(cache, "torchvision", model)
        labels = os.path.join(tmp, f"{model}_labels.npy")
        np.save(labels, np.load(base + ".torch.npy").argmax(1).astype(np.int64))
        runs = {"quant": [], "lsq": []}
        for _ in range(args.repeats):
            out = os.path.join(tmp, f"speed224_{model}")
            quant(args, "qat", base + ".onnx", "--train", base + ".input.npy", "--labels", labels, "--wbits", 4,
                  "--abits", 4, "--steps", args.steps + WARM_STEPS, "--epochs", 10000, "--batch", args.batch,
                  "--lr", 1e-4, "--threads", args.threads, "-o", out, "--json")
            runs["quant"].append(steady(out, args.batch))
            params = {"threads": args.threads, "model": model, "batch": args.batch, "x": base + ".input.npy",
                      "y": labels, "steps": args.steps}
            r = subprocess.run([args.torch_python, "-c", TORCH224_CODE, json.dumps(params)], capture_output=True,
                               text=True, env=dict(os.environ, OMP_NUM_THREADS=str(args.threads),
                                                   OMP_WAIT_POLICY="PASSIVE"))
            if r.returncode:
                sys.exit(f"PyTorch benchmark failed:\n{r.stderr[-3000:]}")
            runs["lsq"].append(json.loads(r.stdout.strip().splitlines()[-1]))
        med = {k: {m: sorted(r[m] for r in v)[(len(v) - 1) // 2] for m in ("wall", "cpu")} for k, v in runs.items()}
        row = {"model": model, "batch": args.batch, "threads": args.threads, "steps": args.steps, "median": med,
               "ratio_wall": med["quant"]["wall"] / med["lsq"]["wall"],
               "ratio_cpu": med["quant"]["cpu"] / med["lsq"]["cpu"], "runs": runs}
        rows.append(row)
        print(f"{model:18s} 224x224 batch {args.batch}, {args.threads} threads, samples/s wall | per CPU-s "
              f"(median of {args.repeats}): quant qat {med['quant']['wall']:.2f} | {med['quant']['cpu']:.2f};  "
              f"PyTorch LSQ {med['lsq']['wall']:.2f} | {med['lsq']['cpu']:.2f};  ratio {row['ratio_wall']:.2f}x wall, "
              f"{row['ratio_cpu']:.2f}x CPU  (runs: {runs})", flush=True)
    return rows


def torch_speed(args, data, model, steps, fq):
    params = {"fix": FIX, "threads": args.threads, "model": model, "batch": args.batch, "x": data["train_x"],
              "y": data["train_y"], "steps": steps, "fq": fq}
    r = subprocess.run([args.torch_python, "-c", TORCH_CODE, json.dumps(params)], capture_output=True, text=True,
                       env=dict(os.environ, OMP_NUM_THREADS=str(args.threads), OMP_WAIT_POLICY="PASSIVE"))
    if r.returncode:
        sys.exit(f"PyTorch benchmark failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def speed_part(args, data, tmp):
    """samples/s by wall clock (best of the runs) and per CPU-second (all threads; robust to the load of
    a shared machine), for quant qat and for PyTorch with LSQ ("lsq") and with its default fused
    observer fake quantization ("fused"); the ratio is ours / PyTorch-LSQ."""
    rows = []
    for model in args.models.split(","):
        runs = {"quant": [], "lsq": [], "fused": []}
        for _ in range(args.repeats):
            runs["quant"].append(ours_speed(args, data, model, tmp, args.steps))
            for fq in ("lsq", "fused"):
                runs[fq].append(torch_speed(args, data, model, args.steps, fq))
        best = {k: {m: max(r[m] for r in v) for m in ("wall", "cpu")} for k, v in runs.items()}
        row = {"model": model, "batch": args.batch, "threads": args.threads, "steps": args.steps, "best": best,
               "ratio_wall": best["quant"]["wall"] / best["lsq"]["wall"],
               "ratio_cpu": best["quant"]["cpu"] / best["lsq"]["cpu"],
               "ratio_fused_cpu": best["quant"]["cpu"] / best["fused"]["cpu"], "runs": runs}
        rows.append(row)
        print(f"{model:9s} batch {args.batch}, {args.threads} threads, samples/s wall | per CPU-s:  quant qat "
              f"{best['quant']['wall']:.0f} | {best['quant']['cpu']:.0f};  PyTorch LSQ {best['lsq']['wall']:.0f} | "
              f"{best['lsq']['cpu']:.0f};  PyTorch fused {best['fused']['wall']:.0f} | {best['fused']['cpu']:.0f};  "
              f"ratio vs LSQ {row['ratio_wall']:.2f}x wall, {row['ratio_cpu']:.2f}x CPU; vs fused "
              f"{row['ratio_fused_cpu']:.2f}x CPU", flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quant", default=os.path.join(SRC, "quant"))
    ap.add_argument("--part", choices=["accuracy", "speed", "speed224", "all"], default="all")
    ap.add_argument("--torch-python", default="/usr/bin/python3", help="a Python with torch (and torchvision)")
    ap.add_argument("--epochs", type=int, default=3, help="W4A4 QAT epochs")
    ap.add_argument("--epochs8", type=int, default=1, help="W8A8 QAT epochs")
    ap.add_argument("--lr", type=float, default=1e-4, help="W4A4 learning rate (Adam, cosine)")
    ap.add_argument("--lr8", type=float, default=1e-4, help="W8A8 learning rate")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=150, help="training steps per speed run")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--models", help="default resnet,mobilenet (speed224: resnet18,mobilenet_v2)")
    ap.add_argument("--configs", default="W4A4,W8A8")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    if not args.models:
        args.models = "resnet18,mobilenet_v2" if args.part == "speed224" else "resnet,mobilenet"
    if args.part == "speed224":
        with tempfile.TemporaryDirectory(prefix="bench-qat-") as tmp:
            res = {"args": vars(args), "speed224": speed224_part(args, tmp)}
        if args.json:
            with open(args.json, "w") as f:
                json.dump(res, f, indent=2)
        return
    if not os.path.exists(os.path.join(FASHION, "train-images-idx3-ubyte.gz")):
        sys.exit("Fashion-MNIST absent (Debian package dataset-fashion-mnist)")
    res = {"args": vars(args)}
    with tempfile.TemporaryDirectory(prefix="bench-qat-") as tmp:
        data = prepare_data(tmp)
        if args.part in ("speed", "all"):
            res["speed"] = speed_part(args, data, tmp)
        if args.part in ("accuracy", "all"):
            res["accuracy"] = accuracy_part(args, data, tmp)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
