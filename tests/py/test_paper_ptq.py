"""The standard PTQ pipeline of the white paper (§3.5, Fig. 8) on the Fashion-MNIST fixtures — a smoke
version of bench/bench_ablation.py (which runs AdaRound's default 10k iterations per layer and every
on/off combination; results in docs/results.md):

  - W4A8 per-channel with the paper's standard pipeline (BN fold, CLE + absorption, MSE ranges, AdaRound
    with a few hundred iterations — asked for: the standard preset rounds by GPTQ — CE for the logits) stays within 1.5 points of FP32 on the ResNet-style
    and MobileNetV2-style models;
  - AdaRound beats round-to-nearest (the same pipeline without it and without bias correction) at
    4-bit weights;
  - report.json carries the algorithms' reports, and ONNX Runtime agrees with the exported model.
"""
import json
import os

import numpy as np
import pytest

from test_ptq import fashion_calib, fashion_head, ort_logits  # noqa: F401  (fixtures)

ITER = "300"


@pytest.mark.parametrize("model", ["resnet_bn", "mobilenet_bn"])
def test_standard_pipeline_w4a8(run_quant, fixtures_dir, fashion_test, fashion_head, fashion_calib,  # noqa: F811
                                tmp_path, model):
    xpath, ypath, x, y = fashion_head
    path = os.path.join(fixtures_dir, f"{model}.onnx")
    # every step applied (no step check): this tests the steps themselves
    std = json.loads(run_quant.ok("ptq", path, "--calib", fashion_calib, "--val", xpath, "--labels", ypath, "--wbits",
                                  "4", "--rounding", "adaround", "--adaround-iterations", ITER, "--no-check-steps",
                                  "-o", tmp_path / "std", "--json").stdout)
    rtn = json.loads(run_quant.ok("ptq", path, "--calib", fashion_calib, "--val", xpath, "--labels", ypath, "--wbits",
                                  "4", "--no-adaround", "--bias-correction", "none", "-o", tmp_path / "rtn",
                                  "--json").stdout)
    print(f"{model} W4A8 pc on 3000 images: FP32 {std['fp32_accuracy']:.4f}, standard {std['quant_accuracy']:.4f}, "
          f"round-to-nearest {rtn['quant_accuracy']:.4f}")
    assert std["fp32_accuracy"] - std["quant_accuracy"] <= 0.015
    assert std["quant_accuracy"] > rtn["quant_accuracy"]
    rep = json.loads((tmp_path / "std" / "report.json").read_text())
    assert rep["config"]["cle"] and rep["config"]["adaround"]["enabled"]
    assert rep["cle"]["pairs"] and rep["adaround"]["layers"]
    for layer in rep["adaround"]["layers"]:
        assert layer["mse_adaround"] <= layer["mse_nearest"] * 1.0001, layer
    theirs = ort_logits(str(tmp_path / "std" / "model.qdq.onnx"), x)
    assert abs(float((theirs.argmax(1) == y).mean()) - std["quant_accuracy"]) <= 0.0005
