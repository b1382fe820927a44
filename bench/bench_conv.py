#!/usr/bin/env python3
"""One convolution at a time: CPU seconds per pass and GFLOP per CPU-second of quant's own Conv path
(im2col or 1x1 + OpenBLAS sgemm, depthwise loops), quant's oneDNN path (engine/ops/conv_dnnl.c) and
ONNX Runtime, on every distinct Conv shape of the given models, one thread.

    /work/venv-tools/bin/python bench/bench_conv.py [--quant build/quant] [--batches 1 32]
        [--min-seconds 0.3] MODEL.onnx...     (e.g. resnet50.onnx mobilenet_v2.onnx from fetch_models.py)

Needs onnx (shape inference, model building) and onnxruntime. Each distinct Conv (input C×H×W,
weight shape, strides, pads, dilations, group) becomes a one-node model with a bias, in a temporary
directory. quant's CPU time per pass is the difference of two `quant bench` processes (k and 3k
timed passes, getrusage of the children), as in bench_cputime.py, once with QUANT_CONV_DNNL=0 (our
own path) and once with it unset (oneDNN where conv_dnnl.c takes the shape); ORT's is
time.process_time() around its timed passes in this process (intra_op_num_threads=1, so no other
threads run). GFLOP counts 2·M·OH·OW·(C/group)·kh·kw per image. Rows are grouped by layer type and
the last lines give each engine's GFLOP per CPU-second over all rows of a type, weighted by how
often the shape occurs in the models.
"""
import argparse
import collections
import os
import tempfile
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from bench_cputime import per_pass   # CPU seconds per pass: the difference of a long and a short run


def conv_shapes(path):
    """{key: count} over the model's Conv nodes; key = (C, H, W, M, kh, kw, strides, pads, dils, group)"""
    m = onnx.shape_inference.infer_shapes(onnx.load(path))
    g = m.graph
    shapes = {}
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        d = [x.dim_value for x in vi.type.tensor_type.shape.dim]
        shapes[vi.name] = d
    inits = {t.name: list(t.dims) for t in g.initializer}
    out = collections.Counter()
    for n in g.node:
        if n.op_type != "Conv":
            continue
        a = {x.name: helper.get_attribute_value(x) for x in n.attribute}
        xs, ws = shapes[n.input[0]], inits[n.input[1]]
        k = (ws[2], ws[3])
        key = (xs[1], xs[2], xs[3], ws[0], k[0], k[1], tuple(a.get("strides", [1, 1])),
               tuple(a.get("pads", [0, 0, 0, 0])), tuple(a.get("dilations", [1, 1])), a.get("group", 1))
        out[key] += 1
    return out


def kind(key):
    C, H, W, M, kh, kw, st, pads, dil, group = key
    if group > 1 and group == C:
        return f"depthwise {kh}x{kw} s{st[0]}"
    if kh == kw == 1:
        return f"1x1 s{st[0]}"
    return f"{kh}x{kw} s{st[0]}" + (f" g{group}" if group > 1 else "")


def out_hw(key):
    C, H, W, M, kh, kw, st, pads, dil, group = key
    oh = (H + pads[0] + pads[2] - ((kh - 1) * dil[0] + 1)) // st[0] + 1
    ow = (W + pads[1] + pads[3] - ((kw - 1) * dil[1] + 1)) // st[1] + 1
    return oh, ow


def gflop(key, batch):
    C, H, W, M, kh, kw, st, pads, dil, group = key
    oh, ow = out_hw(key)
    return 2.0 * batch * M * oh * ow * (C // group) * kh * kw / 1e9


def one_conv(key, path):
    C, H, W, M, kh, kw, st, pads, dil, group = key
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array((rng.standard_normal((M, C // group, kh, kw)) * 0.1).astype(np.float32), "w")
    b = numpy_helper.from_array((rng.standard_normal(M) * 0.1).astype(np.float32), "b")
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], strides=list(st), pads=list(pads),
                            dilations=list(dil), group=group)
    oh, ow = out_hw(key)
    graph = helper.make_graph([node], "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", C, H, W])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", M, oh, ow])], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def quant_pass(quant, model, batch, iters, dnnl):
    env = dict(os.environ)
    if dnnl:
        env.pop("QUANT_CONV_DNNL", None)
    else:
        env["QUANT_CONV_DNNL"] = "0"
    cmd = lambda k: [quant, "bench", model, "--batch", str(batch), "--threads", "1", "--iters", str(k),
                     "--warmup", "1", "--json"]
    return per_pass(cmd, iters, 3 * iters, env)


def ort_pass(model, batch, key, min_seconds):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    s = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((batch,) + tuple(key[:3]), dtype=np.float32)
    s.run(None, {"x": x})
    n, t = 0, 0.0
    while t < min_seconds:
        t0 = time.process_time()
        s.run(None, {"x": x})
        t += time.process_time() - t0
        n += 1
    return t / n, n


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--quant", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                    "quant"))
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    ap.add_argument("--min-seconds", type=float, default=0.3)
    a = ap.parse_args()
    counts = collections.Counter()
    for m in a.models:
        counts.update(conv_shapes(m))
    keys = sorted(counts, key=lambda k: (kind(k), k))
    tot = collections.defaultdict(lambda: [0.0, 0.0, 0.0, 0.0])   # (kind, batch): gflop, own s, dnnl s, ort s
    print(f"{'layer':18s} {'C×H×W → M':22s} {'n':>2s} {'batch':>5s} {'GFLOP':>7s} {'own GF/s':>8s} "
          f"{'oneDNN':>7s} {'ORT':>7s}  (GFLOP per CPU-second, one thread)")
    with tempfile.TemporaryDirectory() as tmp:
        for i, key in enumerate(keys):
            path = os.path.join(tmp, f"conv{i}.onnx")
            one_conv(key, path)
            for b in a.batches:
                gf = gflop(key, b)
                ort_s, n = ort_pass(path, b, key, a.min_seconds)
                iters = max(2, n)
                own = quant_pass(a.quant, path, b, iters, False)
                dn = quant_pass(a.quant, path, b, iters, True)
                t = tot[(kind(key), b)]
                for j, v in enumerate((gf, own, dn, ort_s)):
                    t[j] += counts[key] * v
                desc = f"{key[0]}×{key[1]}×{key[2]} → {key[3]}"
                print(f"{kind(key):18s} {desc:22s} {counts[key]:2d} {b:5d} {gf:7.3f} {gf / own:8.1f} {gf / dn:7.1f} "
                      f"{gf / ort_s:7.1f}", flush=True)
    print("# totals by layer type, weighted by occurrences: GFLOP per CPU-second")
    for (k, b), (gf, own, dn, o) in sorted(tot.items()):
        print(f"{k:18s} batch {b:3d}: own {gf / own:6.1f}  oneDNN {gf / dn:6.1f}  ORT {gf / o:6.1f}  "
              f"(CPU s per pass: own {own:.4f}, oneDNN {dn:.4f}, ORT {o:.4f})")


if __name__ == "__main__":
    main()
