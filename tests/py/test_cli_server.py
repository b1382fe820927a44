"""`quant … --server URL`: the same commands, flags and outputs as a local run, with the work done by a
real quantd (issue 7). A PTQ run against the server writes the same four artifacts as the local run —
the same quantized model byte for byte, since the same engine runs the same job — and prints the
same --json keys; eval agrees with the local eval; --token is honoured; a refused spec is a usage
error that names the field.
"""
import json
import os

import numpy as np
import pytest

from service_fixtures import make_quantd  # noqa: F401  (fixture)


@pytest.fixture
def data(tmp_path, fixtures_dir):
    x = np.load(os.path.join(fixtures_dir, "mlp.sample.npy"))
    y = np.load(os.path.join(fixtures_dir, "mlp.expected.npy")).argmax(1).astype(np.int64)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    return str(tmp_path / "x.npy"), str(tmp_path / "y.npy")


def test_ptq_remote_equals_local(run_quant, make_quantd, fixtures_dir, data, tmp_path):  # noqa: F811
    d = make_quantd("--workers", "1")
    x, y = data
    model = os.path.join(fixtures_dir, "mlp.onnx")
    args = ["ptq", model, "--calib", x, "--val", x, "--labels", y, "--no-adaround", "--wbits", "4", "--json"]
    local = json.loads(run_quant.ok(*args, "-o", tmp_path / "local").stdout)
    remote = json.loads(run_quant.ok(*args, "-o", tmp_path / "remote", "--server", f"http://127.0.0.1:{d.port}").stdout)
    assert set(local) == set(remote) == {"fp32_accuracy", "quant_accuracy", "seconds", "outdir"}
    assert remote["outdir"] == str(tmp_path / "remote")
    assert local["quant_accuracy"] == remote["quant_accuracy"]
    for f in ["model.qdq.onnx", "encodings.json", "model.prepared.onnx"]:
        assert (tmp_path / "local" / f).read_bytes() == (tmp_path / "remote" / f).read_bytes(), f
    assert (tmp_path / "remote" / "report.json").is_file()


def test_eval_remote_and_token(run_quant, make_quantd, fixtures_dir, data, tmp_path):  # noqa: F811
    tok = tmp_path / "tokens"
    tok.write_text("s3cret\n")
    d = make_quantd("--token-file", str(tok))
    x, y = data
    model = os.path.join(fixtures_dir, "mlp.onnx")
    local = json.loads(run_quant.ok("eval", model, "--input", x, "--labels", y, "--json").stdout)
    url = f"http://127.0.0.1:{d.port}"
    r = run_quant("eval", model, "--input", x, "--labels", y, "--json", "--server", url)
    assert r.returncode == 1 and "401" in r.stderr and "unauthorized" in r.stderr, r.stderr
    remote = json.loads(run_quant.ok("eval", model, "--input", x, "--labels", y, "--json", "--server", url,
                                     "--token", "s3cret").stdout)
    assert remote["accuracy"] == local["accuracy"] and remote["samples"] == local["samples"]
    r = run_quant("ptq", model, "--calib", x, "--wbits", "40", "-o", tmp_path / "o", "--server", url, "--token",
                  "s3cret")
    assert r.returncode == 2, r.stderr


def test_server_flags_only_where_they_apply(run_quant, fixtures_dir):
    r = run_quant("info", os.path.join(fixtures_dir, "mlp.onnx"), "--server", "http://127.0.0.1:1")
    assert r.returncode == 2 and "--server" in r.stderr
    r = run_quant("ptq", os.path.join(fixtures_dir, "mlp.onnx"), "--token", "x", "--calib", "x.npy", "-o", "o")
    assert r.returncode == 2 and "--server" in r.stderr
