"""Shared pytest fixtures for the Python test tier: where the build and the data are, and how to run
the `quant` command line.

The tier needs numpy (and onnxruntime for the interop checks) from a venv; no PyTorch. Paths:
  QD_BUILDDIR  build tree holding the `quant` binary (default: the source tree, i.e. in-tree build)
  QD_SRCDIR    source tree (default: two levels above this file)
Data sets come from Debian's dataset-fashion-mnist and from <srcdir>/../shared/realworld; tests that
need one skip when it is absent.
"""
import gzip
import os
import subprocess

import numpy as np
import pytest

SRCDIR = os.environ.get("QD_SRCDIR") or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FASHION = "/usr/share/datasets/fashion-mnist"
# Must match tests/fixtures/make_fixtures.py's normalise() exactly.
MEAN, STD = 0.2860, 0.3530


def read_idx(path):
    """IDX file (gzip) → uint8 numpy array: images [N,28,28] or labels [N]."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def normalise(images):
    """uint8 [N,28,28] → float32 [N,1,28,28], each step in float32, as the fixture script does."""
    x = images.astype(np.float32)
    x = (x / np.float32(255.0) - np.float32(MEAN)) / np.float32(STD)
    return x.reshape(-1, 1, 28, 28)


@pytest.fixture(scope="session")
def srcdir():
    return SRCDIR


@pytest.fixture(scope="session")
def builddir():
    return os.environ.get("QD_BUILDDIR") or SRCDIR


@pytest.fixture(scope="session")
def fixtures_dir():
    return os.path.join(SRCDIR, "tests", "fixtures")


@pytest.fixture(scope="session")
def quant(builddir):
    """Path of the built `quant` binary; a missing binary is a failure (build first), not a skip."""
    path = os.path.join(builddir, "quant")
    if not os.access(path, os.X_OK):
        pytest.fail(f"no executable quant at {path}: build first (make) or set QD_BUILDDIR")
    return path


class QuantRunner:
    """Runs `quant <args>`; .ok() insists on exit 0 and puts stderr in the failure message."""

    def __init__(self, path):
        self.path = path

    def __call__(self, *args, timeout=900):
        cmd = [self.path] + [str(a) for a in args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)

    def ok(self, *args, timeout=900):
        r = self(*args, timeout=timeout)
        if r.returncode != 0:
            pytest.fail(f"`quant {' '.join(map(str, args))}` exited {r.returncode}:\n{r.stderr.strip()}")
        return r


@pytest.fixture(scope="session")
def run_quant(quant):
    return QuantRunner(quant)


@pytest.fixture(scope="session")
def fashion_test(tmp_path_factory):
    """The 10k Fashion-MNIST test set as .npy files: (images path, labels path, x, y)."""
    imgs = os.path.join(FASHION, "t10k-images-idx3-ubyte.gz")
    labs = os.path.join(FASHION, "t10k-labels-idx1-ubyte.gz")
    if not (os.path.exists(imgs) and os.path.exists(labs)):
        pytest.skip("Fashion-MNIST absent (Debian package dataset-fashion-mnist)")
    d = tmp_path_factory.mktemp("fashion")
    x = normalise(read_idx(imgs))
    y = read_idx(labs).astype(np.int64)
    np.save(d / "x.npy", x)
    np.save(d / "y.npy", y)
    return str(d / "x.npy"), str(d / "y.npy"), x, y


@pytest.fixture(scope="session")
def realworld_dir():
    d = os.path.join(os.path.dirname(SRCDIR), "shared", "realworld")
    if not os.path.isdir(d):
        pytest.skip(f"{d} absent")
    return d


@pytest.fixture(scope="session")
def mnist_test(realworld_dir, tmp_path_factory):
    """The 10k MNIST test set, raw 0–255 pixels as float32 [N,1,28,28] (as mnist-8.onnx expects)."""
    imgs = os.path.join(realworld_dir, "t10k-images-idx3-ubyte.gz")
    labs = os.path.join(realworld_dir, "t10k-labels-idx1-ubyte.gz")
    if not (os.path.exists(imgs) and os.path.exists(labs)):
        pytest.skip("MNIST test set absent from ../shared/realworld")
    d = tmp_path_factory.mktemp("mnist")
    x = read_idx(imgs).astype(np.float32).reshape(-1, 1, 28, 28)
    y = read_idx(labs).astype(np.int64)
    np.save(d / "x.npy", x)
    np.save(d / "y.npy", y)
    return str(d / "x.npy"), str(d / "y.npy"), x, y
