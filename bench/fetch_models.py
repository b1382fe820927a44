#!/usr/bin/env python3
"""Third-party models for the real-model benchmark (issue 15) in a cache outside the repository.

Nothing this script writes is committed. The cache is $QD_MODEL_CACHE, else ~/.cache/quantd/models:

  paddleocr/   the three PaddleOCR models shipped in PyPI's rapidocr-onnxruntime 1.4.4 wheel
               (tests/fetch_paddleocr.sh, which `./quickstart test` also runs), with text-crop inputs
  torchvision/ NAME.onnx, exported here at 224×224 (opset 17, dynamic batch), NAME.input.npy (the
               images) and NAME.torch.npy (PyTorch's outputs for them)

Pretrained weights cannot be downloaded on this machine (only Debian's and PyPI's registries are
reachable), so the torchvision models have their random initialisation (seeded) — but their
BatchNorm statistics are re-estimated on natural-looking images (a cumulative average over 8 batches
of 16, train mode), so every BN normalises real activations instead of being the identity that an
untrained BN (mean 0, var 1) would be, and activation ranges look like those of a trained network's.
The images are synthetic and deterministic: 1/f ("pink") noise, which has the power spectrum of
natural images, in correlated colour channels, with a few sharp-edged shapes on top
(tests/py/realdata.py; the same generator makes the text crops).

Needs PyTorch, torchvision and onnx (the tools venv):
  /work/venv-tools/bin/python bench/fetch_models.py [--models resnet18,…] [--images 64]
"""
import argparse
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "py"))
import realdata  # noqa: E402

TORCHVISION = ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0",
               "regnet_y_400mf", "convnext_tiny", "vit_b_16"]


def cache_dir():
    return os.environ.get("QD_MODEL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "quantd", "models")


def realistic_bn(model, x, batch=16):
    """Re-estimate every BatchNorm's running statistics on x (cumulative average, train mode)."""
    import torch
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return model.eval(), 0
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        for i in range(0, len(x), batch):
            model(torch.from_numpy(x[i:i + batch]))
    return model.eval(), len(bns)


def export_torchvision(name, out, n_images):
    import torch
    import torchvision
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None)
    if name.startswith("vit_"):
        # torchvision zero-initialises ViT's classification head (fine-tuning starts there): all
        # logits would be 0; a random head (the std of its other Linear layers) makes them informative
        torch.nn.init.normal_(model.heads.head.weight, std=0.02)
    calib = realdata.natural_images(128, 224, seed=1)
    model, nbn = realistic_bn(model, calib)
    x = realdata.natural_images(n_images, 224, seed=2)
    path = os.path.join(out, name + ".onnx")
    torch.onnx.export(model, torch.from_numpy(x[:1]), path, opset_version=17, dynamo=False,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})
    with torch.no_grad():
        ref = np.concatenate([model(torch.from_numpy(x[i:i + 16])).numpy()
                              for i in range(0, len(x), 16)])
    np.save(os.path.join(out, name + ".input.npy"), x)
    np.save(os.path.join(out, name + ".torch.npy"), ref.astype(np.float32))
    return nbn


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=",".join(TORCHVISION))
    ap.add_argument("--images", type=int, default=64, help="images per torchvision model")
    ap.add_argument("--no-paddleocr", action="store_true")
    args = ap.parse_args()
    root = cache_dir()
    if not args.no_paddleocr:
        subprocess.run(["sh", os.path.join(HERE, "..", "tests", "fetch_paddleocr.sh"),
                        os.path.join(root, "paddleocr")], check=True)
    out = os.path.join(root, "torchvision")
    os.makedirs(os.path.realpath(out), exist_ok=True)   # the cache may be a symlink not made yet
    for name in [m for m in args.models.split(",") if m]:
        if os.path.exists(os.path.join(out, name + ".torch.npy")):
            print(f"{name}: cached in {out}")
            continue
        t = time.time()
        nbn = export_torchvision(name, out, args.images)
        print(f"{name}: exported to {out} ({nbn} BatchNorm layers re-estimated, {time.time() - t:.0f} s)")


if __name__ == "__main__":
    main()
