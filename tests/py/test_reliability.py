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


# --- quantd: a port in use stops it before any job is touched --------------------------------------

def job_row(state_dir, jid):
    db = sqlite3.connect(f"file:{os.path.join(state_dir, 'quantd.db')}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT state, attempts FROM jobs WHERE id=?", (jid,)).fetchone()
        nev = db.execute("SELECT COUNT(*) FROM events WHERE job=?", (jid,)).fetchone()[0]
        return row + (nev,)
    finally:
        db.close()


def test_port_in_use_exits_before_requeueing(make_quantd, tmp_path):
    state = tmp_path / "st"
    d = make_quantd("--set", "debug_jobs=true", state=state)
    jid = d.submit({"type": "sleep", "config": {"seconds": 30}})["id"]
    d.wait(jid, "running")
    d.kill9()   # the job stays "running" in the store, attempt 1
    before = job_row(state, jid)
    assert before[:2] == ("running", 1)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run([quantd_binary(), "--listen", f"127.0.0.1:{port}", "--state-dir", str(state),
                            "--set", "debug_jobs=true"], capture_output=True, text=True, timeout=20)
    assert r.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in r.stderr, r.stderr
    assert job_row(state, jid) == before   # not requeued, not started, no event
    d2 = Quantd(quantd_binary(), state, "--set", "debug_jobs=true").start()
    try:
        assert d2.wait(jid, "running")["attempts"] == 2
    finally:
        d2.stop()


# --- job errors name files relative to the state dir ----------------------------------------------

CLS = os.path.join(FIXTURES, "cli", "cls.onnx")
CLS_X = os.path.join(FIXTURES, "cli", "cls_x.npy")


def all_text(quantd, jid):
    _, _, events, _ = quantd.events(jid)
    return repr(quantd.job(jid)) + repr(events)


def test_job_errors_do_not_show_server_paths(quantd, tmp_path):
    state = os.path.realpath(quantd.state_dir)
    np.save(tmp_path / "labels.npy", np.zeros(5, np.int64))   # cls_x.npy has 20 samples
    m = quantd.upload_ok("models", CLS)
    x = quantd.upload_ok("datasets", CLS_X)
    y = quantd.upload_ok("datasets", tmp_path / "labels.npy")
    spec = {"type": "eval", "model": m["id"], "validation": {"data": x["id"], "labels": y["id"]}}
    # the engine names the data set it read
    j = quantd.wait(quantd.submit(spec)["id"], ("succeeded", "failed"))
    assert j["state"] == "failed", j
    assert j["error"]["message"] == f"labels datasets/{y['id']}.npy has 5 entries but the data has 20 samples"
    assert state not in all_text(quantd, j["id"]) and quantd.state_dir not in all_text(quantd, j["id"])
    # a file gone behind the daemon's back
    os.remove(os.path.join(quantd.state_dir, "models", m["id"] + ".onnx"))
    j = quantd.wait(quantd.submit(spec)["id"], ("succeeded", "failed"))
    assert j["state"] == "failed", j
    assert j["error"]["message"] == f"cannot open 'models/{m['id']}.onnx': No such file or directory"
    assert state not in all_text(quantd, j["id"]) and quantd.state_dir not in all_text(quantd, j["id"])
