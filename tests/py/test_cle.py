"""Cross-layer equalization on the channel-imbalanced VGG (issue 14 §1): tests/fixtures/vgg_imbalanced.onnx
is vgg.onnx with every Conv → Relu (→ MaxPool) → Conv pair's channels rescaled over three decades
(tests/fixtures/make_imbalanced.py), so its FP32 function is vgg.onnx's. With weights and activations
quantized per tensor at 8 bits and min-max ranges (the basic preset), the small channels drown in the
large ones' quantization noise; CLE (§3.2) must bring the model back next to FP32. A smoke version of
bench/bench_cle.py (all presets and bit widths, the full test set; results in docs/results.md).
"""
import json
import os

import numpy as np
import pytest

from test_ptq import fashion_calib  # noqa: F401  (fixture)


@pytest.fixture(scope="module")
def head500(fashion_test, tmp_path_factory):
    _, _, x, y = fashion_test
    d = tmp_path_factory.mktemp("head500")
    np.save(d / "x.npy", x[:500])
    np.save(d / "y.npy", y[:500])
    return str(d / "x.npy"), str(d / "y.npy")


def test_cle_rescues_the_imbalanced_vgg_at_w8a8_per_tensor(run_quant, fixtures_dir, head500, fashion_calib,  # noqa: F811
                                                           tmp_path):
    xpath, ypath = head500
    path = os.path.join(fixtures_dir, "vgg_imbalanced.onnx")
    res = {}
    for name, flag in (("off", "--no-cle"), ("on", "--cle")):
        out = tmp_path / name
        r = run_quant.ok("ptq", path, "--calib", fashion_calib, "--calib-samples", "256", "--val", xpath, "--labels",
                         ypath, "--preset", "basic", "--per-tensor", "--target", "generic", flag, "-o", out, "--json")
        res[name] = json.loads(r.stdout)
    fp32 = res["on"]["fp32_accuracy"]
    off, on = res["off"]["quant_accuracy"], res["on"]["quant_accuracy"]
    print(f"vgg_imbalanced W8A8 per tensor, basic preset, 500 test images: FP32 {fp32:.3f}, "
          f"without CLE {off:.3f}, with CLE {on:.3f}")
    assert fp32 > 0.85
    assert off < fp32 - 0.3   # near chance (10 classes) without CLE
    assert on >= fp32 - 0.015
    rep = json.loads((tmp_path / "on" / "report.json").read_text())["cle"]
    # the three Conv pairs (one through the MaxPool between the blocks) and the Gemm head's pair
    assert [(p["layer1"], p["layer2"], p["through"]) for p in rep["pairs"]] == [
        ("/0/Conv", "/2/Conv", ""), ("/2/Conv", "/5/Conv", "MaxPool"), ("/5/Conv", "/7/Conv", ""),
        ("/11/Gemm", "/13/Gemm", "")]
    assert rep["converged"]
