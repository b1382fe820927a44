"""GPTQ weight rounding (engine/quant/gptq.h, config.rounding "gptq") end to end through `quant ptq`:
the weights of the exported QDQ model against an independent numpy implementation of the same
algorithm (GPTQ's Algorithm 1 in float64, written here from the paper: Cholesky factor of the
inverse Hessian, columns by descending diag H, no lazy blocks), the layer's output error on the
calibration data against round-to-nearest's, and the errors for contradicting settings.

The model is one MatMul whose input and output quantizers are skipped (config.overrides), so the
QDQ model computes x·W̃ exactly: running it on the identity matrix gives W̃."""
import json
import os

import numpy as np
import onnxruntime as ort
import pytest

from conftest import FASHION, normalise, read_idx
from onnx_build import Graph

K, N, SAMPLES = 40, 12, 512


def model(path, w):
    g = Graph("gptq")
    g.input("x", np.float32, ["N", K])
    g.init("W", w)
    g.node("MatMul", ["x", "W"], ["y"], name="mm")
    g.output("y", np.float32, ["N", N])
    return g.save(path)


def data(rng):
    """correlated inputs: a few factors plus noise, one input always 0"""
    a = rng.normal(size=(4, K))
    x = rng.normal(size=(SAMPLES, 4)) @ a + 0.3 * rng.normal(size=(SAMPLES, K))
    x[:, 5] = 0
    return x.astype(np.float32)


def quantize(w, s, qmin, qmax):
    return np.clip(np.round(w / s), qmin, qmax) * s   # symmetric: zero point 0; ties do not occur here


def gptq_reference(w, x, s, qmin, qmax, damp=0.01):
    """W [K, N] (MatMul's layout: a column of W is an output channel); returns W̃."""
    W = w.T.astype(np.float64).copy()            # [N, K]: rows are output channels
    H = x.T.astype(np.float64) @ x / len(x)
    dead = np.diag(H) == 0
    H[dead, dead] = 1
    H += damp * np.mean(np.diag(H)) * np.eye(len(H))
    perm = np.argsort(-np.diag(H), kind="stable")
    W, H = W[:, perm], H[np.ix_(perm, perm)]
    U = np.linalg.cholesky(np.linalg.inv(H)).T   # upper, H⁻¹ = UᵀU
    S = np.broadcast_to(s[:, None], W.shape)
    Q = np.zeros_like(W)
    for i in range(len(H)):
        q = np.clip(np.round(W[:, i] / S[:, i]), qmin, qmax) * S[:, i]
        err = (W[:, i] - q) / U[i, i]
        W[:, i:] -= np.outer(err, U[i, i:])
        Q[:, i] = q
    out = np.empty_like(Q)
    out[:, perm] = Q
    return out.T


def run(run_quant, tmp_path, rounding, bits=4):
    rng = np.random.default_rng(7)
    w = (0.3 * rng.normal(size=(K, N))).astype(np.float32)
    x = data(rng)
    np.save(tmp_path / "x.npy", x)
    cfg = {"preset": "basic", "rounding": rounding, "check_steps": False, "target": "generic",
           "weights": {"bits": bits, "per_channel": True},
           "overrides": {"tensors": {"x": {"skip": True}, "y": {"skip": True}}}}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    out = tmp_path / rounding
    run_quant.ok("ptq", model(tmp_path / "m.onnx", w), "--calib", tmp_path / "x.npy", "--config",
                 tmp_path / "cfg.json", "-o", out)
    rep = json.loads((out / "report.json").read_text())
    sess = ort.InferenceSession(str(out / "model.qdq.onnx"), providers=["CPUExecutionProvider"])
    wq = sess.run(None, {"x": np.eye(K, dtype=np.float32)})[0]   # x·W̃ with x = I
    q = next(q for q in rep["quantizers"] if q["kind"] == "weight")
    return w, x, wq, np.array(q["scale"], np.float64), rep


def test_gptq_matches_numpy_reference_and_beats_nearest(run_quant, tmp_path):
    w, x, wq, s, rep = run(run_quant, tmp_path, "gptq")
    qmin, qmax = -8, 7
    assert len(s) == N and "gptq" in rep and rep["timings"]["gptq"] > 0
    layer = rep["gptq"]["layers"][0]
    assert layer["name"] == "mm" and layer["samples"] == SAMPLES and layer["inputs"] == K
    ref = gptq_reference(w, x, s, qmin, qmax)
    # on the grid, and the same integers as the reference (float32 against float64: a weight on a
    # rounding boundary could go the other way; none does here)
    ints = wq / s[None, :]
    assert np.allclose(ints, np.round(ints), atol=1e-4)
    same = np.mean(np.round(ints) == np.round(ref / s[None, :]))
    near = quantize(w.astype(np.float64), s[None, :], qmin, qmax)
    err = lambda wt: float(np.sum((x.astype(np.float64) @ (w - wt)) ** 2) / len(x))
    e_g, e_n, e_r = err(wq), err(near), err(ref)
    print(f"GPTQ vs the numpy reference: {100 * same:.1f}% equal; output error nearest {e_n:.4g}, "
          f"GPTQ {e_g:.4g}, reference {e_r:.4g}; {100 * np.mean(np.abs(wq - near) > 1e-9):.1f}% differ from nearest")
    assert same >= 0.99
    assert e_g <= e_n and e_g < 0.7 * e_n
    assert abs(e_g - e_r) <= 0.02 * e_r
    # the report's own figures are these errors
    assert abs(layer["err_nearest"] - e_n) <= 1e-3 * e_n and abs(layer["err_gptq"] - e_g) <= 1e-3 * e_g


def test_nearest_is_nearest(run_quant, tmp_path):
    w, _, wq, s, rep = run(run_quant, tmp_path, "nearest")
    assert "gptq" not in rep and "adaround" not in rep
    assert np.allclose(wq, quantize(w.astype(np.float64), s[None, :], -8, 7), atol=1e-6)


def test_contradicting_rounding_refused(run_quant, tmp_path):
    rng = np.random.default_rng(1)
    np.save(tmp_path / "x.npy", data(rng))
    m = model(tmp_path / "m.onnx", rng.normal(size=(K, N)).astype(np.float32))
    r = run_quant("ptq", m, "--calib", tmp_path / "x.npy", "--rounding", "gptq", "--adaround", "-o", tmp_path / "o")
    assert r.returncode != 0
    assert "config.rounding" in r.stderr and "config.adaround.enabled" in r.stderr, r.stderr
    r = run_quant("ptq", m, "--calib", tmp_path / "x.npy", "--rounding", "obq", "-o", tmp_path / "o")
    assert r.returncode != 0 and "nearest, adaround, gptq" in r.stderr, r.stderr
    assert not os.path.exists(tmp_path / "o" / "model.qdq.onnx")


def test_checked_standard_pipeline_tries_gptq(run_quant, fixtures_dir, tmp_path):
    """With check_steps (the standard preset), GPTQ is the rounding step tried, and its report stays."""
    imgs = os.path.join(FASHION, "train-images-idx3-ubyte.gz")
    if not os.path.exists(imgs):
        pytest.skip("Fashion-MNIST absent (Debian package dataset-fashion-mnist)")
    fashion_calib = tmp_path / "calib.npy"
    np.save(fashion_calib, normalise(read_idx(imgs)[:128]))
    out = tmp_path / "o"
    run_quant.ok("ptq", os.path.join(fixtures_dir, "resnet_bn.onnx"), "--calib", fashion_calib, "--calib-samples", "128",
                 "--wbits", "4", "--rounding", "gptq", "-o", out)
    rep = json.loads((out / "report.json").read_text())
    assert rep["config"]["rounding"] == "gptq" and rep["config"]["adaround"]["enabled"] is False
    steps = {s["step"]: s for s in rep["step_check"]["steps"]}
    assert "gptq" in steps and "adaround" not in steps, steps
    assert "kept" in rep["gptq"] and len(rep["gptq"]["layers"]) == 9
    for layer in rep["gptq"]["layers"]:
        assert layer["err_gptq"] <= layer["err_nearest"], layer


def test_wave_matches_numpy_reference_on_the_same_inputs(run_quant, tmp_path):
    """Two MatMuls in a chain share one capture pass (a wave, gptq.h): the second layer's H comes
    from the first layer's output with its weights at round-to-nearest, not yet GPTQ's. The numpy
    reference computes both layers' H from those same inputs. The model outputs h = x·W̃1 and
    y = h·W̃2, so on x = I it gives W̃1 and W̃1·W̃2, from which W̃2 is solved by least squares."""
    n1 = 24
    rng = np.random.default_rng(11)
    w1 = (0.3 * rng.normal(size=(K, n1))).astype(np.float32)
    w2 = (0.3 * rng.normal(size=(n1, N))).astype(np.float32)
    x = data(rng)
    np.save(tmp_path / "x.npy", x)
    g = Graph("gptq2")
    g.input("x", np.float32, ["N", K])
    g.init("W1", w1)
    g.init("W2", w2)
    g.node("MatMul", ["x", "W1"], ["h"], name="mm1")
    g.node("MatMul", ["h", "W2"], ["y"], name="mm2")
    g.output("h", np.float32, ["N", n1])
    g.output("y", np.float32, ["N", N])
    m = g.save(tmp_path / "m2.onnx")
    cfg = {"preset": "basic", "rounding": "gptq", "check_steps": False, "target": "generic",
           "weights": {"bits": 4, "per_channel": True},
           "overrides": {"tensors": {t: {"skip": True} for t in ("x", "h", "y")}}}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    out = tmp_path / "o"
    run_quant.ok("ptq", m, "--calib", tmp_path / "x.npy", "--config", tmp_path / "cfg.json", "-o", out)
    rep = json.loads((out / "report.json").read_text())
    assert rep["gptq"]["waves"] == 1 and [l["wave"] for l in rep["gptq"]["layers"]] == [0, 0]
    s1, s2 = [np.array(q["scale"], np.float64) for q in rep["quantizers"] if q["kind"] == "weight"]
    assert len(s1) == n1 and len(s2) == N
    so = ort.SessionOptions()   # unfused: ORT's MatMulNBits would quantize h to int8 for mm2
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(out / "model.qdq.onnx"), so, providers=["CPUExecutionProvider"])
    h, y = sess.run(None, {"x": np.eye(K, dtype=np.float32)})
    wq1 = h.astype(np.float64)
    wq2 = np.linalg.lstsq(wq1, y.astype(np.float64), rcond=None)[0]
    ints1, ints2 = wq1 / s1[None, :], wq2 / s2[None, :]
    assert np.allclose(ints1, np.round(ints1), atol=1e-4) and np.allclose(ints2, np.round(ints2), atol=1e-2)
    ref1 = gptq_reference(w1, x, s1, -8, 7)
    near1 = quantize(w1.astype(np.float64), s1[None, :], -8, 7)
    xd = x.astype(np.float64)
    ref2 = gptq_reference(w2, xd @ near1, s2, -8, 7)      # the wave: mm1 at nearest
    seq2 = gptq_reference(w2, xd @ ref1, s2, -8, 7)       # one pass per layer: mm1 rounded first
    same1 = np.mean(np.round(ints1) == np.round(ref1 / s1[None, :]))
    same2 = np.mean(np.round(ints2) == np.round(ref2 / s2[None, :]))
    seq = np.mean(np.round(ints2) == np.round(seq2 / s2[None, :]))
    print(f"mm1: {100 * same1:.1f}% equal to the reference; mm2: {100 * same2:.1f}% equal to the wave's "
          f"reference, {100 * seq:.1f}% to the layer-by-layer one")
    assert same1 >= 0.99 and same2 >= 0.99
    assert seq < same2   # the two references differ on this model: the test tells them apart
