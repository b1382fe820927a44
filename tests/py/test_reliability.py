"""Reliability and abuse (issue 18): what fuzzing and abuse found in uploads, the job system, the
daemon and the command line — zip bombs, a full disk, signals, a port in use, and the server's
paths leaking into job errors. Each test reproduces its defect; see the comment above it."""
import os
import signal
import socket
import sqlite3
import subprocess
import time

import numpy as np
import pytest

from service_fixtures import FIXTURES, Quantd, quantd_binary, make_quantd, quantd  # noqa: F401

RESNET = os.path.join(FIXTURES, "resnet.onnx")


# --- quant: SIGTERM and SIGHUP clean up like Ctrl-C ------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=lambda s: s.name)
def test_quant_ptq_signal_removes_its_temp_output(quant, tmp_path, sig):
    # calibration data large enough that the run is still going when the signal comes
    np.save(tmp_path / "calib.npy", np.random.default_rng(0).standard_normal((4096, 1, 28, 28), np.float32))
    out = tmp_path / "o"
    p = subprocess.Popen([quant, "ptq", RESNET, "--calib", str(tmp_path / "calib.npy"), "-o", str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    tmp = tmp_path / f"o.tmp-{p.pid}"
    deadline = time.time() + 20
    while time.time() < deadline and not tmp.exists() and p.poll() is None:
        time.sleep(0.01)
    assert tmp.exists(), "quant ptq never created its temp output"
    time.sleep(0.2)
    p.send_signal(sig)
    _, err = p.communicate(timeout=20)
    assert p.returncode == 130, (p.returncode, err)
    assert f"interrupted ({sig.name})" in err
    assert not tmp.exists() and not out.exists()
    assert sorted(f.name for f in tmp_path.iterdir()) == ["calib.npy"]

