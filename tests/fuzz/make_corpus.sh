#!/bin/sh
# Makes the fuzzers' seed corpora in tests/fuzz/corpus/NAME/ (committed; run again after changing
# this script): the small models and data files of tests/fixtures, plus small ONNX models written
# here byte by byte for the shape-planning paths (ConstantOfShape, Expand, Tile, Range, Reshape,
# Concat, Slice, Gather) and job specs for the spec harness. Needs python3 (no packages).
set -eu
cd "$(dirname "$0")"
src=../fixtures
rm -rf corpus
mkdir -p corpus/onnx corpus/npy corpus/spec

for f in "$src"/cli/*.onnx "$src"/ptq/reshape_only.onnx; do cp "$f" corpus/onnx/; done
for f in "$src"/data/*.npy "$src"/data/*.npz "$src"/cli/*.npy "$src"/cli/*.npz; do
    cp "$f" corpus/npy/
done

python3 - <<'PY'
import json, struct

def varint(n):
    n &= (1 << 64) - 1
    out = b""
    while True:
        b = n & 0x7f
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])

def key(field, wire): return varint(field << 3 | wire)
def vi(field, n): return key(field, 0) + varint(n)
def ld(field, b):
    if isinstance(b, str): b = b.encode()
    return key(field, 2) + varint(len(b)) + b
def f32(field, x): return key(field, 5) + struct.pack("<f", x)

FLOAT, INT64 = 1, 7
def tensor(name, dtype, dims, ints=None, floats=None):
    b = b"".join(vi(1, d) for d in dims) + vi(2, dtype) + ld(8, name)
    if ints is not None: b += ld(7, b"".join(varint(v) for v in ints))
    if floats is not None: b += ld(4, b"".join(struct.pack("<f", v) for v in floats))
    return b

def value_info(name, dtype, dims):
    shape = b"".join(ld(1, ld(2, d) if isinstance(d, str) else vi(1, d)) for d in dims)
    return ld(1, name) + ld(2, ld(1, vi(1, dtype) + ld(2, shape)))

def node(op, name, ins, outs, attrs=b""):
    return b"".join(ld(1, i) for i in ins) + b"".join(ld(2, o) for o in outs) + ld(3, name) + ld(4, op) + attrs

def attr_int(name, v): return ld(5, ld(1, name) + vi(3, v) + vi(20, 2))
def attr_ints(name, vs): return ld(5, ld(1, name) + b"".join(vi(8, v) for v in vs) + vi(20, 7))

def model(nodes, inits=(), inputs=(), outputs=(), opset=13):
    g = b"".join(ld(1, n) for n in nodes) + ld(2, "g") + b"".join(ld(5, t) for t in inits)
    g += b"".join(ld(11, v) for v in inputs) + b"".join(ld(12, v) for v in outputs)
    return vi(1, 8) + ld(8, vi(2, opset)) + ld(7, g)

def save(name, b):
    with open("corpus/onnx/" + name, "wb") as f: f.write(b)

x = value_info("x", FLOAT, ["N", 4])
save("empty_graph.onnx", vi(1, 8) + ld(8, vi(2, 13)) + ld(7, ld(2, "gg")))
save("constant_of_shape.onnx", model([node("ConstantOfShape", "c", ["s"], ["y"])],
     [tensor("s", INT64, [2], ints=[2, 3])], [], [value_info("y", FLOAT, [2, 3])]))
save("expand.onnx", model([node("Expand", "e", ["x", "s"], ["y"])], [tensor("s", INT64, [3], ints=[2, 1, 4])],
     [x], [value_info("y", FLOAT, [2, "N", 4])]))
save("tile.onnx", model([node("Tile", "t", ["x", "r"], ["y"])], [tensor("r", INT64, [2], ints=[1, 3])],
     [x], [value_info("y", FLOAT, ["N", 12])]))
save("range.onnx", model([node("Range", "r", ["a", "b", "d"], ["y"])],
     [tensor("a", FLOAT, [], floats=[0]), tensor("b", FLOAT, [], floats=[10]), tensor("d", FLOAT, [], floats=[2])],
     [], [value_info("y", FLOAT, [5])]))
save("shape_reshape.onnx", model(
     [node("Shape", "sh", ["x"], ["s"]), node("Gather", "ga", ["s", "i"], ["n"], attr_int("axis", 0)),
      node("Concat", "cat", ["n", "k"], ["t"], attr_int("axis", 0)), node("Reshape", "re", ["x", "t"], ["y"])],
     [tensor("i", INT64, [1], ints=[0]), tensor("k", INT64, [2], ints=[2, 2])],
     [x], [value_info("y", FLOAT, ["N", 2, 2])]))
save("slice_transpose.onnx", model(
     [node("Slice", "sl", ["x", "st", "en", "ax"], ["s"]), node("Transpose", "tr", ["s"], ["y"], attr_ints("perm", [1, 0]))],
     [tensor("st", INT64, [1], ints=[1]), tensor("en", INT64, [1], ints=[3]), tensor("ax", INT64, [1], ints=[1])],
     [x], [value_info("y", FLOAT, [2, "N"])]))
save("gemm.onnx", model([node("Gemm", "fc", ["x", "w", "b"], ["y"], attr_int("transB", 1))],
     [tensor("w", FLOAT, [3, 4], floats=[0.5] * 12), tensor("b", FLOAT, [3], floats=[1, 2, 3])],
     [x], [value_info("y", FLOAT, ["N", 3])]))

val = {"data": "d2", "labels": "l2"}
specs = [
    {"type": "ptq", "name": "p", "model": "m1", "calibration": "d1", "config": {"preset": "standard"}},
    {"type": "ptq", "model": "m1", "calibration": "d1", "validation": val,
     "config": {"preset": "basic", "weights": {"bits": 4, "per_channel": True, "range": "mse"},
                "activations": {"bits": 8, "range": "percentile", "percentile": 99.9},
                "adaround": {"enabled": True, "iterations": 100}, "exclude": ["conv1"]}},
    {"type": "eval", "model": "m1", "validation": val, "config": {"batch_size": 16}},
    {"type": "analyze", "model": "m1", "calibration": "d1", "validation": val, "config": {"target_drop": 0.01}},
    {"type": "qat", "model": "m1", "calibration": "d1", "train": {"data": "d3", "labels": "l3"}, "validation": val,
     "config": {"qat": {"epochs": 2, "optimizer": "adam", "lr": 0.001, "schedule": "cosine"}}},
    {"type": "sleep", "config": {"seconds": 1.5, "fail": False, "artifact_bytes": 10}},
    {"preset": "standard", "weights": {"bits": 8}, "calibration": {"samples": 256, "batch_size": 32}},
]
for i, s in enumerate(specs):
    with open("corpus/spec/spec%d.json" % i, "w") as f: json.dump(s, f)
PY
echo "corpus: $(ls corpus/onnx | wc -l) onnx, $(ls corpus/npy | wc -l) npy, $(ls corpus/spec | wc -l) spec"
