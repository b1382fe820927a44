"""`quant ptq` end to end (issue 4's evidence): the accuracy the pipeline reports for its simulation is
what our executor and ONNX Runtime give on the exported model.qdq.onnx, on the full Fashion-MNIST test
set, at W8A8 and W4A8, per tensor and per channel; accuracy targets against FP32; the real-world
mnist-8; and bad input that must fail cleanly without leaving anything half-written.

Where ONNX Runtime's answer differs from ours it is because ORT (optimizations on) fuses
DequantizeLinear → Conv/Gemm → QuantizeLinear into integer kernels whose requantization rounds in
fixed point, and because its float Conv sums in another order (MLAS vs OpenBLAS): now and then a
value lands across a rounding boundary of the next quantizer. Predictions must still agree on
>= 99.9% of the samples and top-1 within 0.05 points.
"""
import json
import os
import subprocess

import numpy as np
import onnxruntime as ort   # in the venv (quickstart): missing, these tests fail, not skip
import pytest

from conftest import FASHION, normalise, read_idx


# The PTQ core's evidence: the standard pipeline with bias correction in place of AdaRound (which
# runs 10k iterations per layer; test_paper_ptq.py checks it with fewer).
CONFIGS = {
    "w8a8_pc": ["--per-channel", "--no-adaround"],
    "w8a8_pt": ["--per-tensor", "--no-adaround"],
    "w4a8_pc": ["--wbits", "4", "--per-channel", "--no-adaround"],
    "w4a8_pt": ["--wbits", "4", "--per-tensor", "--no-adaround"],
}
MODELS = ["resnet", "mobilenet", "vgg", "mlp"]


@pytest.fixture(scope="session")
def fashion_calib(tmp_path_factory):
    """1024 images of the training split: calibration never sees the test set."""
    imgs = os.path.join(FASHION, "train-images-idx3-ubyte.gz")
    if not os.path.exists(imgs):
        pytest.skip("Fashion-MNIST absent (Debian package dataset-fashion-mnist)")
    d = tmp_path_factory.mktemp("calib")
    np.save(d / "calib.npy", normalise(read_idx(imgs)[:1024]))
    return str(d / "calib.npy")


def ort_logits(path, x, optimize=True):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    inp = s.get_inputs()[0]
    step = inp.shape[0] if isinstance(inp.shape[0], int) else 1000   # mnist-8 fixes its batch to 1
    return np.concatenate([s.run(None, {inp.name: x[i:i + step]})[0] for i in range(0, len(x), step)])


@pytest.fixture(scope="session")
def fashion_head(fashion_test, tmp_path_factory):
    """The first 3000 test images: enough for the agreement checks of the configs without targets."""
    _, _, x, y = fashion_test
    d = tmp_path_factory.mktemp("head")
    np.save(d / "x.npy", x[:3000])
    np.save(d / "y.npy", y[:3000])
    return str(d / "x.npy"), str(d / "y.npy"), x[:3000], y[:3000]


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("model", MODELS)
def test_simulation_export_and_onnxruntime_agree(run_quant, fixtures_dir, fashion_test, fashion_head, fashion_calib,
                                                 tmp_path, model, config):
    # the full test set where there is an accuracy target, its first 3000 images elsewhere
    xpath, ypath, x, y = fashion_test if config in ("w8a8_pc", "w8a8_pt") else fashion_head
    out = tmp_path / "out"
    r = run_quant.ok("ptq", os.path.join(fixtures_dir, f"{model}.onnx"), "--calib", fashion_calib, "--val", xpath,
                     "--labels", ypath, *CONFIGS[config], "-o", out, "--json")
    res = json.loads(r.stdout)
    assert set(res) == {"fp32_accuracy", "quant_accuracy", "seconds", "outdir"}
    for f in ["model.qdq.onnx", "encodings.json", "model.prepared.onnx", "report.json"]:
        assert (out / f).is_file(), f
    qdq = str(out / "model.qdq.onnx")

    # our executor on the exported file gives exactly the simulation's accuracy
    ours = np.load(_run_outputs(run_quant, qdq, xpath, tmp_path))
    assert float((ours.argmax(1) == y).mean()) == pytest.approx(res["quant_accuracy"], abs=1e-9)   # printed to 10 digits

    # ONNX Runtime on the same file: as written (no fusion) and fully optimized
    for optimize in (False, True):
        theirs = ort_logits(qdq, x, optimize)
        agree = float((theirs.argmax(1) == ours.argmax(1)).mean())
        acc = float((theirs.argmax(1) == y).mean())
        print(f"{model} {config} ort(optimize={optimize}): agree {agree:.4%}, accuracy {acc:.4f} vs ours "
              f"{res['quant_accuracy']:.4f}")
        assert agree >= 0.999
        assert abs(acc - res["quant_accuracy"]) <= 0.0005

    fp32, q = res["fp32_accuracy"], res["quant_accuracy"]
    if config == "w8a8_pc":
        assert fp32 - q <= 0.003, f"W8A8 per-channel {model}: {q:.4f} vs FP32 {fp32:.4f}"
    if config == "w8a8_pt" and model != "mobilenet":
        # per-tensor depthwise weights are the known failure case CLE fixes (issue 5); others within 1 point
        assert fp32 - q <= 0.01, f"W8A8 per-tensor {model}: {q:.4f} vs FP32 {fp32:.4f}"


def _run_outputs(run_quant, model, xpath, tmp_path):
    path = tmp_path / "ours.npy"
    run_quant.ok("run", model, "--input", xpath, "--output", path)
    return path


def test_calibration_does_not_depend_on_threads(quant, fixtures_dir, tmp_path):
    """Calibration streams 64 batches or more in four fixed shards side by side, one thread each,
    16 to 63 batches in two, and their observers are merged in order; fewer batches run unsharded,
    each observer's scan of a large batch spread over the threads. In every case the ranges (and so
    the encodings) must not depend on how many threads there are."""
    imgs = os.path.join(FASHION, "train-images-idx3-ubyte.gz")
    if not os.path.exists(imgs):
        pytest.skip("Fashion-MNIST absent (Debian package dataset-fashion-mnist)")
    np.save(tmp_path / "calib.npy", normalise(read_idx(imgs)[:4096]))
    for samples in (256, 1024, 4096):   # at batch 32: 8 batches, 32, 128
        enc = {}
        for threads in (1, 2, 3):
            out = tmp_path / f"s{samples}-t{threads}"
            r = subprocess.run([quant, "ptq", os.path.join(fixtures_dir, "mobilenet.onnx"), "--calib",
                                str(tmp_path / "calib.npy"), "--calib-samples", str(samples), "--batch", "32",
                                "--preset", "basic", "--arange", "mse", "-o", str(out)],
                               capture_output=True, text=True, timeout=600,
                               env=dict(os.environ, QUANTD_THREADS=str(threads)))
            assert r.returncode == 0, r.stderr
            enc[threads] = json.load(open(out / "encodings.json"))
            assert json.load(open(out / "report.json"))["calibration_samples"] == samples
        assert enc[1] == enc[2] == enc[3], samples


def test_report_and_encodings(run_quant, fixtures_dir, fashion_calib, tmp_path):
    out = tmp_path / "o"
    run_quant.ok("ptq", os.path.join(fixtures_dir, "resnet_bn.onnx"), "--calib", fashion_calib,
                 "--calib-samples", "256", "--adaround-iterations", "50", "-o", out)
    rep = json.loads((out / "report.json").read_text())
    assert rep["bn_folded"] == 8
    assert rep["config"]["weights"]["bits"] == 8 and rep["config"]["activations"]["range"] == "mse"
    kinds = {q["kind"] for q in rep["quantizers"]}
    assert {"input", "activation", "weight", "bias"} <= kinds
    assert rep["layers"] and all("sqnr_db" in l for l in rep["layers"])
    # 8-bit activations keep most layers' SQNR well above 20 dB
    sq = [l["sqnr_db"] for l in rep["layers"] if l["sqnr_db"] is not None]
    assert np.median(sq) > 20
    # the standard preset checks its steps on the last 20% of the samples, held out of calibration
    assert rep["step_check"]["held_out_samples"] == 51 and rep["calibration_samples"] == 256 - 51
    enc = json.loads((out / "encodings.json").read_text())
    assert enc["version"] == "1.0.0"
    names = {e["name"] for e in enc["param_encodings"]}
    weights = [q for q in rep["quantizers"] if q["kind"] == "weight"]
    assert {q["name"] for q in weights} <= names
    for e in enc["param_encodings"]:
        q = next((q for q in weights if q["name"] == e["name"]), None)
        if q:
            assert e["scale"] == pytest.approx(q["scale"], rel=1e-6)
            # AIMET's offsets count from its unsigned grid [0, 2^bw - 1]: offset = qmin - zero point,
            # i.e. -zero point on an unsigned grid and -128 for symmetric int8
            qmin = -(2 ** (q["bits"] - 1)) if q["signed"] else 0
            assert e["offset"] == [qmin - z for z in q["zero_point"]]


def test_mnist8_qdq_runs_in_onnxruntime(run_quant, mnist_test, realworld_dir, tmp_path):
    xpath, ypath, x, y = mnist_test
    calib = tmp_path / "calib.npy"
    np.save(calib, x[:512])
    out = tmp_path / "o"
    res = json.loads(run_quant.ok("ptq", os.path.join(realworld_dir, "mnist-8.onnx"), "--calib", calib, "--val",
                                  xpath, "--labels", ypath, "--adaround-iterations", "200", "-o", out,
                                  "--json").stdout)
    theirs = ort_logits(str(out / "model.qdq.onnx"), x)
    acc = float((theirs.argmax(1) == y).mean())
    print(f"mnist-8: FP32 {res['fp32_accuracy']:.4f}, quantized {res['quant_accuracy']:.4f}, ORT {acc:.4f}")
    assert res["fp32_accuracy"] == pytest.approx(0.989, abs=0.0015)
    assert abs(acc - 0.989) <= 0.002


# --- bad input ---------------------------------------------------------------------------------------

@pytest.fixture
def resnet(fixtures_dir):
    return os.path.join(fixtures_dir, "resnet.onnx")


def _fails(run_quant, *args):
    r = run_quant(*args)
    assert r.returncode == 1, (r.returncode, r.stderr)
    return r.stderr


def test_wrong_shape_names_the_expected_one(run_quant, resnet, tmp_path):
    np.save(tmp_path / "bad.npy", np.zeros((8, 3, 28, 28), np.float32))
    err = _fails(run_quant, "ptq", resnet, "--calib", tmp_path / "bad.npy", "-o", tmp_path / "o")
    assert "[N, 1, 28, 28]" in err and "[8, 3, 28, 28]" in err
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob("o.tmp-*"))


def test_empty_data(run_quant, resnet, tmp_path):
    np.save(tmp_path / "empty.npy", np.zeros((0, 1, 28, 28), np.float32))
    err = _fails(run_quant, "ptq", resnet, "--calib", tmp_path / "empty.npy", "-o", tmp_path / "o")
    assert "empty" in err


def test_nan_in_data_is_named(run_quant, resnet, tmp_path):
    x = np.zeros((16, 1, 28, 28), np.float32)
    x[5, 0, 3, 3] = np.nan
    np.save(tmp_path / "nan.npy", x)
    err = _fails(run_quant, "ptq", resnet, "--calib", tmp_path / "nan.npy", "-o", tmp_path / "o")
    assert "NaN" in err and "sample 5" in err


def test_failed_run_keeps_previous_outdir(run_quant, resnet, fashion_calib, tmp_path):
    out = tmp_path / "o"
    run_quant.ok("ptq", resnet, "--calib", fashion_calib, "--calib-samples", "64", "--no-adaround", "-o", out)
    before = (out / "model.qdq.onnx").read_bytes()
    np.save(tmp_path / "bad.npy", np.zeros((4, 2), np.float32))
    _fails(run_quant, "ptq", resnet, "--calib", tmp_path / "bad.npy", "-o", out)
    assert (out / "model.qdq.onnx").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npy", "o"]


def test_bad_config_field_is_named(run_quant, resnet, fashion_calib, tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"weights": {"bitz": 4}}))
    err = _fails(run_quant, "ptq", resnet, "--calib", fashion_calib, "--config", cfg, "-o", tmp_path / "o")
    assert "config.weights.bitz" in err


def test_nothing_to_quantize_still_writes_artifacts(run_quant, srcdir, tmp_path):
    """A model without weights (Reshape → Relu): a warning, and all four artifacts."""
    model = os.path.join(srcdir, "tests", "fixtures", "ptq", "reshape_only.onnx")   # committed: missing fails
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(8, 2, 3)).astype(np.float32))
    r = run_quant("ptq", model, "--calib", tmp_path / "x.npy", "-o", tmp_path / "o")
    assert r.returncode == 0, r.stderr
    assert "warning" in r.stderr
    for f in ["model.qdq.onnx", "encodings.json", "model.prepared.onnx", "report.json"]:
        assert (tmp_path / "o" / f).is_file()
