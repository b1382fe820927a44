"""Weights stored in Constant nodes (Paddle's exporter, PyTorch's without constant folding): the model
must quantize exactly as the same model with initializers — same parameters counted, same BN
folding and CLE, bit-identical QDQ export and encodings — and ONNX Runtime must agree that both
compute the same function before quantization.
"""
import json
import os

import numpy as np
import pytest

from onnx_build import Graph

ort = pytest.importorskip("onnxruntime")


def conv_bn_net(as_constants, dims=("N", 3, 8, 8)):
    """Conv-BN-Relu → depthwise Conv-BN-Relu → Conv-BN-Relu → GlobalAveragePool → Flatten → Gemm."""
    rng = np.random.default_rng(3)
    g = Graph("convbn")
    put = g.const if as_constants else g.init
    g.input("x", np.float32, list(dims))
    cin, x = 3, "x"
    for i, (cout, group) in enumerate([(8, 1), (8, 8), (6, 1)]):
        put(f"w{i}", (rng.standard_normal((cout, cin // group, 3, 3)) * 0.4).astype(np.float32))
        put(f"b{i}", (rng.standard_normal(cout) * 0.1).astype(np.float32))
        for k, v in {"s": rng.uniform(0.5, 1.5, cout), "o": rng.normal(0, 0.3, cout), "m": rng.normal(0, 0.2, cout),
                     "v": rng.uniform(0.5, 2, cout)}.items():
            put(f"bn{i}_{k}", v.astype(np.float32))
        g.node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], name=f"conv{i}", pads=[1, 1, 1, 1], group=group)
        g.node("BatchNormalization", [f"c{i}", f"bn{i}_s", f"bn{i}_o", f"bn{i}_m", f"bn{i}_v"], [f"n{i}"],
               name=f"bn{i}", epsilon=1e-5)
        g.node("Relu", [f"n{i}"], [f"r{i}"], name=f"relu{i}")
        cin, x = cout, f"r{i}"
    g.node("GlobalAveragePool", [x], ["p"])
    g.node("Flatten", ["p"], ["f"], axis=1)
    put("fc_w", (rng.standard_normal((4, 6)) * 0.5).astype(np.float32))
    put("fc_b", np.zeros(4, np.float32))
    g.node("Gemm", ["f", "fc_w", "fc_b"], ["y"], name="fc", transB=1)
    g.output("y", np.float32, [dims[0], 4])
    return g


def ort_run(path, x):
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return s.run(None, {"x": x})[0]


def test_constant_weights_quantize_like_initializers(run_quant, tmp_path):
    x = np.random.default_rng(0).standard_normal((48, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "calib.npy", x)
    outs = {}
    for form in ("init", "const"):
        model = conv_bn_net(form == "const").save(str(tmp_path / f"{form}.onnx"))
        info = json.loads(run_quant.ok("info", model, "--json").stdout)
        outs[form] = {"info": info, "ort": ort_run(model, x[:8])}
        out = tmp_path / f"out_{form}"
        r = run_quant.ok("ptq", model, "--calib", tmp_path / "calib.npy", "-o", out, "--adaround-iterations", 50,
                         "--no-check-steps")
        outs[form]["log"] = r.stderr
        outs[form]["report"] = json.load(open(out / "report.json"))
        outs[form]["enc"] = json.load(open(out / "encodings.json"))
        outs[form]["qdq"] = ort_run(str(out / "model.qdq.onnx"), x[:8])
    a, b = outs["init"], outs["const"]
    assert b["info"]["parameters"] == a["info"]["parameters"] > 0
    np.testing.assert_array_equal(a["ort"], b["ort"])
    assert a["report"]["bn_folded"] == b["report"]["bn_folded"] == 3
    assert a["report"]["cle"]["pairs"] == b["report"]["cle"]["pairs"]
    assert len(a["report"]["cle"]["pairs"]) > 0
    assert a["enc"] == b["enc"]
    np.testing.assert_array_equal(a["qdq"], b["qdq"])


def test_skipped_steps_are_said(run_quant, tmp_path):
    """A model without BatchNormalization: report.json and the log say that BN folding did nothing, and why."""
    g = Graph("nobn")
    rng = np.random.default_rng(1)
    g.input("x", np.float32, ["N", 5])
    g.init("w", rng.standard_normal((3, 5)).astype(np.float32))
    g.node("Gemm", ["x", "w"], ["y"], name="fc", transB=1)
    g.output("y", np.float32, ["N", 3])
    model = g.save(str(tmp_path / "nobn.onnx"))
    np.save(tmp_path / "c.npy", rng.standard_normal((16, 5)).astype(np.float32))
    r = run_quant.ok("ptq", model, "--calib", tmp_path / "c.npy", "-o", tmp_path / "o", "--preset", "basic")
    rep = json.load(open(tmp_path / "o" / "report.json"))
    steps = {s["step"]: s["reason"] for s in rep["skipped_steps"]}
    assert "no BatchNormalization" in steps["bn_fold"]
    assert "bn_fold skipped: the model has no BatchNormalization node" in r.stderr
