"""Real models in CI (issue 15): a torchvision model at reduced size (MobileNetV3-Small at width
0.25, 64×64; our own export, committed with PyTorch's outputs by tests/fixtures/make_real.py), run
against PyTorch and ONNX Runtime and quantized. The full-size models are in bench/bench_models.py
(docs/results.md, "Real models").
"""
import os

import numpy as np
import onnxruntime as ort

import realdata


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
    assert sqnr_db(q, qo) > 30, "ONNX Runtime's run of the export differs from quantd's"
    run_quant.ok("ptq", model, "--calib", str(tmp_path / "calib.npy"), "--preset", "basic", "--wbits", "16",
                 "--abits", "16", "-o", str(tmp_path / "ptq16"))
    q16 = quant_run(run_quant, tmp_path, tmp_path / "ptq16" / "model.qdq.onnx", x, "w16a16")
    assert sqnr_db(y, q16) > 40
