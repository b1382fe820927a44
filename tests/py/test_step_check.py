"""The standard pipeline's step check (config.check_steps, engine/quant/ptq_check.c; issue 14 §2):
a step that lowers the held-out score is reverted and the result is then the pipeline without it; a
step that raises it is kept. The held-out score is checked against ONNX Runtime running the exported
QDQ model on the held-out calibration samples (the last 20%), so the figures in report.json are
not just the engine agreeing with itself. On the MLP fixture: each case runs in well under a second.
"""
import json
import os

import numpy as np
import onnxruntime as ort
import pytest

from conftest import FASHION, normalise, read_idx

NCALIB = 256
HELD = int(np.floor(NCALIB * 0.2 + 0.5))   # config.check_holdout's default, rounded as the engine does

# Only the step under test differs from the basic pipeline, so the report has one decision.
BASE = {"cle": False, "bias_absorption": False, "adaround": {"enabled": False}, "bias_correction": "none",
        "weights": {"range": "minmax"}, "activations": {"range": "minmax"}}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    imgs = os.path.join(FASHION, "train-images-idx3-ubyte.gz")
    if not os.path.exists(imgs):
        pytest.skip("Fashion-MNIST absent (Debian package dataset-fashion-mnist)")
    d = tmp_path_factory.mktemp("stepcheck")
    x = normalise(read_idx(imgs)[:NCALIB])
    np.save(d / "calib.npy", x)
    t = normalise(read_idx(os.path.join(FASHION, "t10k-images-idx3-ubyte.gz"))[:500])
    y = read_idx(os.path.join(FASHION, "t10k-labels-idx1-ubyte.gz"))[:500].astype(np.int64)
    np.save(d / "x.npy", t)
    np.save(d / "y.npy", y)
    return d, x


def ptq(run_quant, model, d, name, cfg, val=False, samples=NCALIB):
    with open(d / f"{name}.json", "w") as f:
        json.dump(cfg, f)
    out = d / name
    extra = ["--val", d / "x.npy", "--labels", d / "y.npy"] if val else []
    r = run_quant.ok("ptq", model, "--calib", d / "calib.npy", "--calib-samples", samples, "--config",
                     d / f"{name}.json", "-o", out, *extra)
    with open(out / "report.json") as f:
        return json.load(f), out, r.stderr


def ort_sqnr(qdq, fp32, x):
    """Output SQNR (dB) of the QDQ model against the FP32 one, both run by ONNX Runtime (fake-quant in
    float: optimizations off, so no integer kernels)."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    outs = []
    for path in (fp32, qdq):
        s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        outs.append(s.run(None, {s.get_inputs()[0].name: x})[0].astype(np.float64))
    f, q = outs
    return 10 * np.log10((f * f).sum() / ((f - q) ** 2).sum())


def test_a_step_that_hurts_is_reverted(run_quant, fixtures_dir, data):
    d, x = data
    model = os.path.join(fixtures_dir, "mlp.onnx")
    # the 50th percentile as the activation range clips half of every activation: a bad step
    bad = dict(BASE, activations={"range": "percentile", "percentile": 50, "last_layer": "minmax"},
               check_metric="sqnr")
    rep, out, log = ptq(run_quant, model, d, "bad", bad)
    sc = rep["step_check"]
    assert sc["metric"] == "sqnr" and sc["held_out_samples"] == HELD
    assert rep["calibration_samples"] == NCALIB - HELD
    assert [(s["step"], s["kept"]) for s in sc["steps"]] == [("activation_range", False)]
    step = sc["steps"][0]
    assert step["score_after"] < step["score_before"] - 10
    assert step["score_before"] == sc["basic_score"] == sc["final_score"]
    assert "step activation_range: reverted" in log
    # report.json's config is the one asked for; the result is the pipeline without the step
    assert rep["config"]["activations"]["range"] == "percentile"
    without, out2, _ = ptq(run_quant, model, d, "without", dict(BASE, check_metric="sqnr"))
    assert without["step_check"]["steps"] == []
    assert without["step_check"]["final_score"] == sc["final_score"]
    assert rep["quantizers"] == without["quantizers"]
    # the score is what ONNX Runtime measures on the exported model over the held-out samples
    held = x[NCALIB - HELD:]
    assert ort_sqnr(out / "model.qdq.onnx", model, held) == pytest.approx(sc["final_score"], abs=0.05)


def test_a_step_that_helps_is_kept(run_quant, fixtures_dir, data):
    d, x = data
    model = os.path.join(fixtures_dir, "mlp.onnx")
    # at 3 bits per tensor, min-max weight ranges waste most of the grid on outliers: MSE helps
    good = dict(BASE, weights={"bits": 3, "per_channel": False, "range": "mse"}, check_metric="sqnr")
    rep, out, log = ptq(run_quant, model, d, "good", good)
    sc = rep["step_check"]
    assert [(s["step"], s["kept"]) for s in sc["steps"]] == [("weight_range", True)]
    assert sc["final_score"] == sc["steps"][0]["score_after"] > sc["basic_score"] + 1
    assert "step weight_range: kept" in log
    held = x[NCALIB - HELD:]
    assert ort_sqnr(out / "model.qdq.onnx", model, held) == pytest.approx(sc["final_score"], abs=0.05)
    # the basic score is the min-max pipeline's: ONNX Runtime on the unchecked min-max export
    mm, out_mm, _ = ptq(run_quant, model, d, "minmax", dict(good, weights={"bits": 3, "per_channel": False,
                                                                             "range": "minmax"}))
    assert ort_sqnr(out_mm / "model.qdq.onnx", model, held) == pytest.approx(sc["basic_score"], abs=0.05)


@pytest.mark.parametrize("acts", [{"range": "mse", "last_layer": "minmax"}, {"range": "minmax", "last_layer": "ce"},
                                  {"range": "mse", "last_layer": "ce"}, {"range": "percentile", "percentile": 50,
                                                                        "last_layer": "ce"}])
def test_range_steps_reuse_the_kept_calibration(run_quant, fixtures_dir, data, acts):
    """An activation_range or last_layer_range candidate changes neither the weights nor the
    activations: its ranges come from the kept state's calibration observers, with no pass of its
    own. The result must be what a calibration of the kept config gives: the plain pipeline with
    the steps the check kept, on the samples it calibrated on."""
    d, _ = data
    model = os.path.join(fixtures_dir, "mlp.onnx")
    rep, _, _ = ptq(run_quant, model, d, "reuse", dict(BASE, activations=acts))
    sc = rep["step_check"]
    want = [s for s, k in (("activation_range", "range"), ("last_layer_range", "last_layer")) if acts[k] != "minmax"]
    assert [s["step"] for s in sc["steps"]] == want
    assert not any(s["calibration_pass"] for s in sc["steps"])
    assert sc["calibration_passes"] == 1   # the basic pipeline's; one more per range step before
    kept = {s["step"] for s in sc["steps"] if s["kept"]}
    final = dict(acts, range=acts["range"] if "activation_range" in kept else "minmax",
                 last_layer=acts["last_layer"] if "last_layer_range" in kept else "minmax")
    plain, _, _ = ptq(run_quant, model, d, "plain", dict(BASE, activations=final, check_steps=False),
                      samples=NCALIB - HELD)
    assert rep["quantizers"] == plain["quantizers"]


def test_standard_preset_counts_its_calibration_passes(run_quant, fixtures_dir, data):
    """The standard preset's steps on the ResNet fixture: CLE, MSE weight ranges and bias correction
    change the weights and calibrate again; the two range steps do not (six passes before, four now)."""
    d, _ = data
    rep, _, _ = ptq(run_quant, os.path.join(fixtures_dir, "resnet_bn.onnx"), d, "std",
                    {"preset": "standard", "rounding": "nearest"})
    sc = rep["step_check"]
    passes = {s["step"]: s["calibration_pass"] for s in sc["steps"]}
    assert passes == {"cle": True, "weight_range": True, "activation_range": False, "last_layer_range": False,
                      "bias_correction": True}
    assert sc["calibration_passes"] == 4


def test_too_few_held_out_samples_warn(run_quant, fixtures_dir, data):
    """64 samples hold out 13 (20%): too few for a score to tell a step that helps from noise, and the
    report says so, with the count that would hold out 32 (floor(158 · 0.2 + 0.5) = 32); 160 do not warn."""
    d, _ = data
    model = os.path.join(fixtures_dir, "mlp.onnx")
    cfg = dict(BASE, weights={"range": "mse"})
    few, _, log = ptq(run_quant, model, d, "few", cfg, samples=64)
    assert few["step_check"]["held_out_samples"] == 13
    warned = [w for w in few["warnings"] if "held out" in w]
    assert len(warned) == 1 and "only 13 of the 64" in warned[0] and "at least 158" in warned[0]
    assert "only 13 of the 64" in log
    enough, _, _ = ptq(run_quant, model, d, "enough", cfg, samples=160)
    assert enough["step_check"]["held_out_samples"] == 32
    assert not [w for w in enough["warnings"] if "held out" in w]


def test_labels_score_by_accuracy_and_the_check_can_be_off(run_quant, fixtures_dir, data):
    d, _ = data
    model = os.path.join(fixtures_dir, "mlp.onnx")
    cfg = dict(BASE, weights={"bits": 3, "per_channel": False, "range": "mse"})
    rep, _, _ = ptq(run_quant, model, d, "acc", cfg, val=True)
    sc = rep["step_check"]
    assert sc["metric"] == "accuracy" and "held_out_samples" not in sc
    assert rep["calibration_samples"] == NCALIB   # nothing held out: the validation data scores
    assert sc["final_score"] == rep["result"]["quant_accuracy"]
    off, _, _ = ptq(run_quant, model, d, "off", dict(cfg, check_steps=False), val=True)
    assert "step_check" not in off
    basic, _, _ = ptq(run_quant, model, d, "basic", {"preset": "basic"}, val=True)
    assert "step_check" not in basic and basic["config"]["check_steps"] is False
