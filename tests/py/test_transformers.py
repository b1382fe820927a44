"""Transformers (issue 15, the paper's BERT row), on the fixtures of tests/fixtures/make_vit.py:

  - the ViT (LayerNormalization at opset 17, attention as MatMul/Softmax, GELU as torch's Erf
    pattern) runs as PyTorch does, and W8A8 PTQ keeps its Fashion-MNIST accuracy within 1 point of
    FP32 on a subset (the full table is bench/bench_transformers.py's);
  - the BERT-style encoder's token embedding (a Gather of an initializer) is quantized as a weight,
    and its W8A8 output stays close to FP32 (SQNR, argmax agreement);
  - ONNX Runtime runs each model.qdq.onnx and agrees with quantd running the same file (argmax and
    max |diff|, graph optimisations off: the same Q/DQ arithmetic; all on: ORT's integer kernels);
  - 16-bit activations (config.activations.high_precision auto, config.overrides) export as
    int16/uint16 Q/DQ at opset 21 that ONNX Runtime runs;
  - an override naming a tensor the model does not have fails the job with the name.
"""
import json
import os

import numpy as np
import onnxruntime as ort
import pytest

XF = ("tests", "fixtures", "xfmr")
BASE = {"target": "generic", "adaround": {"enabled": False}}


@pytest.fixture(scope="module")
def xf(fixtures_dir):
    return os.path.join(fixtures_dir, "xfmr")


def ort_run(path, x, optimize):
    so = ort.SessionOptions()
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def ptq(run_quant, model, tmp, calib, cfg, val=None, labels=None):
    cfgp = tmp / "cfg.json"
    cfgp.write_text(json.dumps(cfg))
    args = ["ptq", model, "--calib", calib, "--config", cfgp, "-o", tmp / "out"]
    if val:
        args += ["--val", val, "--labels", labels]
    run_quant.ok(*args)
    return json.loads((tmp / "out" / "report.json").read_text()), str(tmp / "out" / "model.qdq.onnx")


def ours(run_quant, model, x_path, tmp):
    out = tmp / "ours.npy"
    run_quant.ok("run", model, "--input", x_path, "--output", out)
    return np.load(out)


def agreement(qdq, x, mine, label):
    """ORT against quantd on the same export: returns {opt: (argmax agreement, max |diff|)}."""
    res = {}
    for opt in (False, True):
        y = ort_run(qdq, x, opt)
        res[opt] = ((y.argmax(1) == mine.argmax(1)).mean(), float(np.abs(y - mine).max()))
    print(f"\n{label}: ORT vs quantd, optimisations off: agree {100 * res[False][0]:.2f}%, max |diff| "
          f"{res[False][1]:.3g}; all on: agree {100 * res[True][0]:.2f}%, max |diff| {res[True][1]:.3g}")
    return res


def test_vit_runs_as_pytorch(run_quant, xf, tmp_path):
    y = ours(run_quant, os.path.join(xf, "vit.onnx"), os.path.join(xf, "vit.sample.npy"), tmp_path)
    ref = np.load(os.path.join(xf, "vit.expected.npy"))
    assert np.abs(y - ref).max() <= 1e-4 * np.abs(ref).max()


def test_vit_w8a8_within_one_point_and_ort_agrees(run_quant, xf, fashion_test, tmp_path):
    _, _, x, y = fashion_test
    np.save(tmp_path / "calib.npy", x[-512:])   # calibration apart from the scored images
    np.save(tmp_path / "x.npy", x[:1000])
    np.save(tmp_path / "y.npy", y[:1000])
    cfg = dict(BASE, activations={"high_precision": "auto"})
    rep, qdq = ptq(run_quant, os.path.join(xf, "vit.onnx"), tmp_path, tmp_path / "calib.npy", cfg,
                   tmp_path / "x.npy", tmp_path / "y.npy")
    r = rep["result"]
    print(f"\nViT on 1000 test images: FP32 {100 * r['fp32_accuracy']:.1f}%, W8A8 {100 * r['quant_accuracy']:.1f}%")
    assert r["fp32_accuracy"] > 0.8
    assert r["quant_accuracy"] >= r["fp32_accuracy"] - 0.01
    kinds = {q["name"]: q for q in rep["quantizers"]}
    # the rules: LayerNorm output, Softmax (unsigned), both attention MatMuls, residual adds, GELU's end
    b0 = "/blocks/blocks.0/"
    for name in ("ln1/LayerNormalization_output_0", "attn/MatMul_output_0", "attn/Softmax_output_0",
                 "attn/MatMul_1_output_0", "Add_output_0", "Add_1_output_0", "mlp/mlp.1/Mul_1_output_0"):
        assert b0 + name in kinds, name
    assert not kinds[b0 + "attn/Softmax_output_0"]["signed"]
    assert b0 + "mlp/mlp.1/Erf_output_0" not in kinds   # inside GELU
    assert "high_precision" in rep and all(a["sqnr_db"] is not None for a in rep["high_precision"]["activations"])
    mine = ours(run_quant, qdq, tmp_path / "x.npy", tmp_path)
    agree = agreement(qdq, x[:1000], mine, "ViT W8A8")
    assert agree[False][0] >= 0.995 and agree[False][1] <= 0.25
    assert agree[True][0] >= 0.99


def test_bert_w8a8_embedding_quantized(run_quant, xf, tmp_path):
    tok = np.load(os.path.join(xf, "bert.tokens.npy"))
    np.save(tmp_path / "calib.npy", tok[:256])
    np.save(tmp_path / "x.npy", tok)
    np.save(tmp_path / "y.npy", np.load(os.path.join(xf, "bert.labels.npy")))
    rep, qdq = ptq(run_quant, os.path.join(xf, "bert.onnx"), tmp_path, tmp_path / "calib.npy", BASE,
                   tmp_path / "x.npy", tmp_path / "y.npy")
    emb = [q for q in rep["quantizers"] if q["name"] == "tok.weight"]
    assert emb and emb[0]["kind"] == "weight" and emb[0]["bits"] == 8
    fp32 = ours(run_quant, os.path.join(xf, "bert.onnx"), tmp_path / "x.npy", tmp_path)
    ref = np.load(os.path.join(xf, "bert.expected.npy"))
    assert np.abs(fp32[:len(ref)] - ref).max() <= 1e-4 * np.abs(ref).max()
    mine = ours(run_quant, qdq, tmp_path / "x.npy", tmp_path)
    sqnr = 10 * np.log10((fp32 ** 2).sum() / ((mine - fp32) ** 2).sum())
    print(f"\nBERT W8A8: output SQNR {sqnr:.1f} dB, argmax agreement with FP32 "
          f"{100 * (mine.argmax(1) == fp32.argmax(1)).mean():.2f}%")
    assert sqnr >= 25
    assert (mine.argmax(1) == fp32.argmax(1)).mean() >= 0.99
    agree = agreement(qdq, tok, mine, "BERT W8A8")
    assert agree[False][0] == 1.0 and agree[False][1] <= 0.05
    assert agree[True][0] >= 0.99


def test_16_bit_activations_export_runs_in_ort(run_quant, xf, tmp_path):
    tok = np.load(os.path.join(xf, "bert.tokens.npy"))
    np.save(tmp_path / "calib.npy", tok[:256])
    np.save(tmp_path / "x.npy", tok[256:])
    cfg = dict(BASE, activations={"high_precision": "auto", "high_precision_db": 38},
               overrides={"ops": {"Add": {"bits": 16}}, "tensors": {"/blocks/blocks.1/attn/MatMul_output_0":
                                                                    {"bits": 16}}})
    rep, qdq = ptq(run_quant, os.path.join(xf, "bert.onnx"), tmp_path, tmp_path / "calib.npy", cfg)
    q = {x["name"]: x for x in rep["quantizers"]}
    hp = rep["high_precision"]
    # auto promotes exactly the activations it measured below the threshold, at 8 bits
    assert hp["promoted"] == [a["name"] for a in hp["activations"] if a["sqnr_db"] < 38]
    assert hp["promoted"], "the attention scores of this model are below 38 dB at 8 bits"
    for name in hp["promoted"]:
        assert q[name]["bits"] == 16
    assert q["/blocks/blocks.0/Add_output_0"]["bits"] == 16            # the op entry (residual add)
    assert q["/blocks/blocks.1/attn/MatMul_output_0"]["bits"] == 16    # the tensor entry
    assert q["/blocks/blocks.0/ln1/LayerNormalization_output_0"]["bits"] == 8
    x = np.load(tmp_path / "x.npy")
    mine = ours(run_quant, qdq, tmp_path / "x.npy", tmp_path)
    agree = agreement(qdq, x, mine, "BERT W8A8 + 16-bit")
    assert agree[False][0] == 1.0 and agree[False][1] <= 0.05
    assert agree[True][0] >= 0.99


def test_override_of_unknown_tensor_fails_naming_it(run_quant, xf, tmp_path):
    np.save(tmp_path / "calib.npy", np.load(os.path.join(xf, "bert.tokens.npy"))[:64])
    (tmp_path / "cfg.json").write_text(json.dumps({"overrides": {"tensors": {"no_such": {"bits": 16}}}}))
    r = run_quant("ptq", os.path.join(xf, "bert.onnx"), "--calib", tmp_path / "calib.npy", "--config",
                  tmp_path / "cfg.json", "-o", tmp_path / "out")
    assert r.returncode != 0
    assert "config.overrides.tensors.no_such: the model has no tensor named 'no_such'" in r.stderr
