"""An already-quantized (QDQ) model fed to ptq, qat or analyze is refused with a clear message — by the
CLI and, at submit (422), by the service — unless requantize is asked for: then its weights are
dequantized, its activation Q/DQ pairs dropped, and it is quantized again. The requantized float
model computes what the QDQ model computes up to its activation rounding (ONNX Runtime runs both).
"""
import json

import numpy as np
import pytest

from service_fixtures import make_quantd, quantd  # noqa: F401  (fixtures)
from test_constant_weights import conv_bn_net

ort = pytest.importorskip("onnxruntime")


def ort_run(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def sqnr_db(ref, got):
    return 10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / max(np.sum((ref - got).astype(np.float64) ** 2), 1e-30))


@pytest.fixture(scope="module")
def qdq(run_quant, tmp_path_factory):
    d = tmp_path_factory.mktemp("rq")
    model = conv_bn_net(False).save(str(d / "float.onnx"))
    x = np.random.default_rng(2).standard_normal((64, 3, 8, 8)).astype(np.float32)
    np.save(d / "calib.npy", x)
    run_quant.ok("ptq", model, "--calib", d / "calib.npy", "-o", d / "first", "--preset", "basic")
    return {"dir": d, "float": model, "qdq": str(d / "first" / "model.qdq.onnx"), "calib": str(d / "calib.npy"), "x": x}


def test_cli_refuses_a_quantized_model(run_quant, qdq, tmp_path):
    np.save(tmp_path / "y.npy", np.zeros(64, np.int64))
    for args in (["ptq", qdq["qdq"], "--calib", qdq["calib"]],
                 ["qat", qdq["qdq"], "--train", qdq["calib"], "--labels", tmp_path / "y.npy", "--epochs", 1],
                 ["analyze", qdq["qdq"], "--calib", qdq["calib"], "--val", qdq["calib"], "--labels", tmp_path / "y.npy"]):
        r = run_quant(*args, "-o", tmp_path / "o")
        assert r.returncode == 1, r.stderr
        assert "the model is already quantized (QuantizeLinear" in r.stderr and "--requantize" in r.stderr, r.stderr
    # eval and run take it as it is
    run_quant.ok("run", qdq["qdq"], "--input", qdq["calib"], "--output", tmp_path / "y.npy")


def test_requantize_dequantizes_then_quantizes_again(run_quant, qdq, tmp_path):
    out = tmp_path / "again"
    r = run_quant.ok("ptq", qdq["qdq"], "--calib", qdq["calib"], "-o", out, "--preset", "basic", "--requantize")
    assert "requantize:" in r.stderr and "activation Q/DQ pairs removed" in r.stderr
    rep = json.load(open(out / "report.json"))
    assert rep["requantized"]["weights"] == 8 and rep["requantized"]["activation_pairs"] > 0   # 4 weights, 4 biases
    x = qdq["x"][:16]
    first, prepared, again = ort_run(qdq["qdq"], x), ort_run(out / "model.prepared.onnx", x), ort_run(
        out / "model.qdq.onnx", x)
    # the requantized float model is the QDQ model without its activation rounding: very close to it
    assert sqnr_db(first, prepared) > 25
    # and quantizing it again lands near the float model it came from
    assert sqnr_db(ort_run(qdq["float"], x), again) > 15
    ops = json.loads(run_quant.ok("info", out / "model.prepared.onnx", "--json").stdout)["ops"]
    assert "QuantizeLinear" not in ops and "DequantizeLinear" not in ops


def test_service_refuses_at_submit_unless_requantize(quantd, qdq):  # noqa: F811
    m = quantd.upload_ok("models", qdq["qdq"])
    ds = quantd.upload_ok("datasets", qdq["calib"])
    spec = {"type": "ptq", "model": m["id"], "calibration": ds["id"], "config": {"preset": "basic"}}
    st, body = quantd.json("POST", "/v1/jobs", spec)
    assert st == 422, body
    assert body["error"]["field"] == "config.requantize" and "already quantized" in body["error"]["message"], body
    spec["config"]["requantize"] = True
    job = quantd.submit(spec)
    j = quantd.wait(job["id"], ["succeeded", "failed"], timeout=120)
    assert j["state"] == "succeeded", j
