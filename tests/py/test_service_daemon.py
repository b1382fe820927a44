"""Integration tests of quantd as a process, and of the clients that follow it: kill -9, SIGTERM
and restarts (the queue, the uploads and checkpoints survive; QAT resumes from its last epoch), a
second daemon on the same state, a port already in use; the config file and flags, sd_notify and
the journald log prefix; and the CLI's --server mode (cli/remote.c, through its test driver
tests/qd-remote), across a server restart too. A real daemon on a random port with a temp state dir
(service_fixtures.py); jobs are mostly the debug type "sleep" (see test_service.py).
"""
import json
import os
import re
import signal
import socket
import subprocess
import time

import pytest

from service_fixtures import (CLS, CLS_X, CLS_Y, MLP, UNSUPPORTED, Quantd, files_in, quantd_binary,  # noqa: F401
                              sha256_file, sleep_spec, make_quantd, quantd, quantd_bin)


# --- crashes and restarts -------------------------------------------------------------------------

def test_kill9_during_a_job_then_restart_requeues_and_completes(make_quantd, tmp_path):
    d = make_quantd("--set", "debug_jobs=true", state=tmp_path / "st")
    m = d.upload_ok("models", MLP)
    ds = d.upload_ok("datasets", CLS_X)
    job = d.submit({"type": "sleep", "model": m["id"], "calibration": ds["id"], "config": {"seconds": 2}})
    d.wait_progress(job["id"], min_done=8)
    d.kill9()
    d2 = make_quantd("--set", "debug_jobs=true", state=tmp_path / "st")
    j = d2.wait(job["id"], "succeeded", timeout=30)
    assert j["attempts"] == 2
    assert j["result"]["resumed_from"] >= 8      # the checkpoint of the first attempt was used
    st, _, events, _ = d2.events(job["id"])
    states = [(e[2]["state"], e[2].get("reason", "")) for e in events if e[1] == "state"]
    assert [s for s, _ in states] == ["queued", "running", "queued", "running", "succeeded"]
    assert "requeued" in states[2][1]
    assert [e[0] for e in events] == list(range(1, len(events) + 1))
    # the uploads survived, byte for byte
    assert d2.json("GET", f"/v1/models/{m['id']}") == (200, m)
    assert d2.json("GET", f"/v1/datasets/{ds['id']}") == (200, ds)
    assert sha256_file(os.path.join(d2.state_dir, "models", m["id"] + ".onnx")) == m["sha256"]
    assert sha256_file(os.path.join(d2.state_dir, "datasets", ds["id"] + ".npy")) == ds["sha256"]
    assert files_in(os.path.join(d2.state_dir, "tmp")) == []


def test_kill9_mid_upload_leaves_nothing(make_quantd, tmp_path):
    d = make_quantd(state=tmp_path / "st")
    s = socket.create_connection(("127.0.0.1", d.port))
    s.sendall(b"POST /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n" + b"x" * 50000)
    time.sleep(0.3)
    assert len(files_in(os.path.join(d.state_dir, "tmp"))) == 1   # being received
    d.kill9()
    s.close()
    d2 = make_quantd(state=tmp_path / "st")
    assert files_in(os.path.join(d2.state_dir, "tmp")) == []
    assert d2.json("GET", "/v1/models")[1]["models"] == []


def test_sigterm_requeues_the_running_job(make_quantd, tmp_path):
    d = make_quantd("--set", "debug_jobs=true", "--workers", "1", state=tmp_path / "st")   # one runs, one waits
    job = d.submit(sleep_spec(3))
    queued = d.submit(sleep_spec(0.1))
    d.wait_progress(job["id"])
    t0 = time.time()
    assert d.stop(signal.SIGTERM) == 0
    assert time.time() - t0 < 5
    # the log tells the story: the signal, the running job requeued, a clean stop; the queued job never ran
    log = d.logtext()
    assert "SIGTERM: stopping" in log, log
    assert f"job {job['id']} (sleep) stopped for shutdown; requeued" in log, log
    assert f"job {queued['id']} (sleep) started" not in log, log
    assert log.rstrip().endswith("stopped"), log
    d2 = make_quantd("--set", "debug_jobs=true", state=tmp_path / "st")
    j = d2.wait(job["id"], "succeeded", timeout=30)
    assert j["attempts"] == 2 and j["result"]["resumed_from"] > 0
    d2.wait(queued["id"], "succeeded", timeout=30)


def test_second_daemon_on_the_same_state_dir_is_refused(make_quantd, tmp_path, quantd_bin):
    d = make_quantd(state=tmp_path / "st")
    r = subprocess.run([quantd_bin, "--state-dir", d.state_dir, "--listen", "127.0.0.1:0"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and "in use by another quantd" in r.stderr


# --- config, systemd, logs ------------------------------------------------------------------------

def test_config_file_and_flags(quantd_bin, tmp_path):
    out = subprocess.run([quantd_bin, "--print-config"], capture_output=True, text=True)
    assert out.returncode == 0
    keys = re.findall(r"^([a-z_]+) =", out.stdout, re.M)
    assert {"listen", "workers", "state_dir", "token_file", "max_queue", "max_model_size", "log_level"} <= set(keys)
    # the printed file is itself a valid config
    (tmp_path / "all.conf").write_text(out.stdout.replace("state_dir = ", f"state_dir = {tmp_path}/s0"))
    port = Quantd(quantd_bin, tmp_path / "s").port
    d = Quantd(quantd_bin, tmp_path / "s1", "--config", str(tmp_path / "all.conf"), port=port)
    d.start()
    d.stop()
    # file values apply, flags override them
    (tmp_path / "q.conf").write_text("# test\n[jobs]\nworkers = 3\nmax_queue=7\n[http]\nlisten = 127.0.0.1:1\n")
    d = Quantd(quantd_bin, tmp_path / "s2", "--config", str(tmp_path / "q.conf"), "--workers", "2")
    d.start()
    assert d.json("GET", "/v1/health")[1]["jobs"]["workers"] == 2
    d.stop()
    # errors name the line or the key, exit 2
    (tmp_path / "bad.conf").write_text("workers = 2\nwokers = 3\n")
    r = subprocess.run([quantd_bin, "--config", str(tmp_path / "bad.conf")], capture_output=True, text=True)
    assert r.returncode == 2 and "bad.conf:2" in r.stderr and "wokers" in r.stderr
    (tmp_path / "bad2.conf").write_text("[limits]\nworkers = 2\n")
    r = subprocess.run([quantd_bin, "--config", str(tmp_path / "bad2.conf")], capture_output=True, text=True)
    assert r.returncode == 2 and "belongs in [jobs]" in r.stderr
    r = subprocess.run([quantd_bin, "--workers", "0"], capture_output=True, text=True)
    assert r.returncode == 2 and "workers" in r.stderr and "range" in r.stderr
    r = subprocess.run([quantd_bin, "--bogus"], capture_output=True, text=True)
    assert r.returncode == 2 and "--bogus" in r.stderr
    r = subprocess.run([quantd_bin, "--set", "max_model_size=12Q"], capture_output=True, text=True)
    assert r.returncode == 2 and "max_model_size" in r.stderr


def test_sd_notify_ready_and_stopping(quantd_bin, tmp_path):
    """Type=notify: READY=1 once listening, STOPPING=1 on SIGTERM (a fake $NOTIFY_SOCKET)."""
    sock_path = str(tmp_path / "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(sock_path)
    s.settimeout(10)
    d = Quantd(quantd_bin, tmp_path / "st", env=dict(os.environ, NOTIFY_SOCKET=sock_path))
    d.start()
    try:
        msg = s.recv(4096).decode()
        assert "READY=1" in msg and f"127.0.0.1:{d.port}" in msg
        d.proc.send_signal(signal.SIGTERM)
        msg = s.recv(4096).decode()
        assert "STOPPING=1" in msg
        assert d.proc.wait(10) == 0
    finally:
        d.stop()
        s.close()


def test_journald_prefix(make_quantd, tmp_path, quantd_bin):
    env = dict(os.environ, JOURNAL_STREAM="8:12345")
    r = subprocess.run([quantd_bin, "--state-dir", str(tmp_path / "j"), "--listen", "256.0.0.1:1"],
                       capture_output=True, text=True, env=env, timeout=10)
    assert r.returncode == 1
    assert re.match(r"^<3>", r.stderr), r.stderr    # error priority, no timestamp
    r = subprocess.run([quantd_bin, "--state-dir", str(tmp_path / "j2"), "--listen", "256.0.0.1:1"],
                       capture_output=True, text=True, timeout=10)
    assert re.match(r"^\d{4}-\d\d-\d\dT[\d:.]+Z error ", r.stderr), r.stderr


# --- the CLI's --server mode (cli/remote.c, through its test driver) ---------------------------------

def remote_bin():
    from service_fixtures import BUILDDIR
    p = os.path.join(BUILDDIR, "tests", "qd-remote")
    if not os.access(p, os.X_OK):
        pytest.fail(f"no {p}: build it (make tests/qd-remote)")
    return p


def run_remote(d, *args, timeout=300, **kw):
    return subprocess.run([remote_bin(), f"http://127.0.0.1:{d.port}"] + [str(a) for a in args],
                          capture_output=True, text=True, timeout=timeout, **kw)


def test_remote_eval_uploads_once_and_downloads(quantd, tmp_path):
    out = tmp_path / "out"
    r = run_remote(quantd, "eval", "--model", CLS, "--val", CLS_X, "--labels", CLS_Y, "-o", out, "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["accuracy"] == 0.75 and result["top5"] == 0.9
    st, jobs = quantd.json("GET", "/v1/jobs")
    j = jobs["jobs"][0]
    assert result.pop("outdir") == str(out) and j["result"] == result   # the local folder, as a local run says
    for a in j["artifacts"]:
        assert sha256_file(out / a["name"]) == a["sha256"]
    assert sorted(os.listdir(out)) == sorted(a["name"] for a in j["artifacts"])
    # again: nothing is uploaded twice (matched by sha256), and OUTDIR is replaced as a whole
    (out / "stale.txt").write_text("old")
    r = run_remote(quantd, "eval", "--model", CLS, "--val", CLS_X, "--labels", CLS_Y, "-o", out)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("already on the server") == 3
    assert len(quantd.json("GET", "/v1/models")[1]["models"]) == 1
    assert len(quantd.json("GET", "/v1/datasets")[1]["datasets"]) == 2
    assert not (out / "stale.txt").exists()
    assert not [p for p in os.listdir(tmp_path) if ".part-" in p or ".old-" in p]


def test_remote_errors_and_exit_codes(make_quantd, tmp_path):
    tf = tmp_path / "tokens"
    tf.write_text("s3cret\n")
    d = make_quantd("--token-file", str(tf), "--set", "debug_jobs=true", token="s3cret")
    r = run_remote(d, "ptq", "--model", CLS, "--calib", CLS_X)
    assert r.returncode == 1 and "401" in r.stderr and "unauthorized" in r.stderr
    r = run_remote(d, "ptq", "--model", CLS, "--calib", CLS_X, "--token", "wrong")
    assert r.returncode == 1 and "401" in r.stderr
    r = run_remote(d, "ptq", "--model", CLS, "--calib", CLS_X, "--token", "s3cret",
                   "--config", '{"weights": {"bits": 99}}')
    assert r.returncode == 2 and "config.weights.bits" in r.stderr
    r = run_remote(d, "ptq", "--model", UNSUPPORTED, "--calib", CLS_X, "--token", "s3cret")
    assert r.returncode == 1 and "FancyOp" in r.stderr
    env = dict(os.environ, QUANTD_TOKEN="s3cret")
    r = run_remote(d, "sleep", "--config", '{"seconds": 0.1, "fail": true}', env=env)
    assert r.returncode == 1 and "failed as asked" in r.stderr
    port = free_port_closed()
    r = subprocess.run([remote_bin(), f"http://127.0.0.1:{port}", "eval", "--model", CLS],
                       capture_output=True, text=True, timeout=60)
    # curl's words: "Failed to connect to 127.0.0.1 port N …: Couldn't connect to server"
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert f"127.0.0.1:{port}" in r.stderr and "connect" in r.stderr.lower(), r.stderr


def free_port_closed():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_remote_ctrl_c_cancels_the_job(quantd):
    p = subprocess.Popen([remote_bin(), f"http://127.0.0.1:{quantd.port}", "sleep", "--config", '{"seconds": 30}'],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 10
    jid = None
    while time.time() < deadline and not jid:
        jobs = quantd.json("GET", "/v1/jobs?state=running")[1]["jobs"]
        jid = jobs[0]["id"] if jobs else None
        time.sleep(0.05)
    assert jid
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=10)
    assert p.returncode == 130 and "cancelled on the server" in err
    quantd.wait(jid, "cancelled", timeout=5)


def test_remote_follows_the_job_across_a_server_restart(make_quantd, tmp_path):
    d = make_quantd("--set", "debug_jobs=true", state=tmp_path / "st")
    port = d.port
    p = subprocess.Popen([remote_bin(), f"http://127.0.0.1:{port}", "sleep", "--config", '{"seconds": 2}',
                          "-o", str(tmp_path / "out"), "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 10
    while time.time() < deadline and not d.json("GET", "/v1/jobs?state=running")[1]["jobs"]:
        time.sleep(0.05)
    d.kill9()
    d2 = Quantd(quantd_binary(), tmp_path / "st", "--set", "debug_jobs=true", port=port)
    d2.start()
    try:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        assert json.loads(out)["steps"] == 40
        assert sorted(os.listdir(tmp_path / "out")) == ["data.bin", "report.json"]
    finally:
        d2.stop()


def test_qat_resumes_from_its_checkpoint_after_kill9(make_quantd, tmp_path, fashion_test):
    """kill -9 during QAT training: the restarted daemon requeues the job, which continues from
    the checkpoint of the last finished epoch (the scheduler hands the interrupted output folder
    to the pipeline as io.resume) and completes."""
    xp, yp, _, _ = fashion_test
    d = make_quantd(state=tmp_path / "st")
    m = d.upload_ok("models", MLP)
    x = d.upload_ok("datasets", xp)
    y = d.upload_ok("datasets", yp)
    job = d.submit({"type": "qat", "model": m["id"], "train": {"data": x["id"], "labels": y["id"]},
                    "calibration": x["id"],
                    "config": {"calibration": {"samples": 256}, "qat": {"epochs": 6, "batch_size": 64}}})
    deadline = time.time() + 300
    while time.time() < deadline:   # two epochs done: a checkpoint at step 312
        p = d.job(job["id"])["progress"] or {}
        if p.get("stage") in ("training epoch 3", "training epoch 4"):
            break
        time.sleep(0.02)
    else:
        pytest.fail("QAT did not reach its third epoch")
    d.kill9()
    d2 = make_quantd(state=tmp_path / "st")
    j = d2.wait(job["id"], "succeeded", timeout=600)
    assert j["attempts"] == 2
    report = json.loads(d2.request("GET", next(a["url"] for a in j["artifacts"] if a["name"] == "report.json")).body)
    steps = report["qat"]["training"]["parameters"]["iterations_per_epoch"]
    assert report["qat"]["training"]["resumed_from_step"] >= 2 * steps
    assert [c["epoch"] for c in report["qat"]["curve"]] == [1, 2, 3, 4, 5, 6]
    st, _, events, _ = d2.events(job["id"])
    assert any(e[1] == "log" and "resuming from step" in e[2]["message"] for e in events)
    assert files_in(os.path.join(d2.state_dir, "tmp")) == []


def test_listen_failure_exits_1_and_keeps_the_queue(make_quantd, tmp_path, quantd_bin):
    d = make_quantd("--set", "debug_jobs=true", state=tmp_path / "st")
    job = d.submit(sleep_spec(1))
    d.wait(job["id"], "running")
    d.stop()
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        r = subprocess.run([quantd_bin, "--state-dir", str(tmp_path / "st"), "--set", "debug_jobs=true",
                            "--listen", f"127.0.0.1:{busy.getsockname()[1]}"],
                           capture_output=True, text=True, timeout=30)
    finally:
        busy.close()
    assert r.returncode == 1 and "Address already in use" in r.stderr
    d2 = make_quantd("--set", "debug_jobs=true", state=tmp_path / "st")
    j = d2.wait(job["id"], "succeeded", timeout=30)
    assert j["result"]["steps"] == 20


def test_sqlite_database_from_before_migrations_is_upgraded(make_quantd, tmp_path):
    """A state dir made before schema_version existed (issue 20): quantd applies the migrations at
    start — the records stay, the queued job runs, and its event ids go on from the ones it had."""
    import sqlite3
    state = tmp_path / "old"
    state.mkdir()
    db = sqlite3.connect(state / "quantd.db")
    db.executescript("""
        CREATE TABLE models (id TEXT PRIMARY KEY, name TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL,
          ext TEXT NOT NULL, created REAL NOT NULL, info TEXT NOT NULL);
        CREATE TABLE datasets (id TEXT PRIMARY KEY, name TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL,
          ext TEXT NOT NULL, created REAL NOT NULL, info TEXT NOT NULL);
        CREATE TABLE jobs (n INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, type TEXT NOT NULL,
          state TEXT NOT NULL, created REAL NOT NULL, started REAL, finished REAL, spec TEXT NOT NULL,
          progress TEXT, result TEXT, error TEXT, artifacts TEXT, attempts INTEGER NOT NULL DEFAULT 0);
        CREATE TABLE job_refs (job TEXT NOT NULL, ref TEXT NOT NULL);
        CREATE TABLE events (job TEXT NOT NULL, seq INTEGER NOT NULL, ts REAL NOT NULL, type TEXT NOT NULL,
          data TEXT NOT NULL, PRIMARY KEY (job, seq)) WITHOUT ROWID;
        INSERT INTO jobs(id, type, state, created, spec) VALUES('job_00000000000000aa', 'sleep', 'queued', 1.0,
          '{"type":"sleep","config":{"seconds":0.1,"fail":false,"artifact_bytes":10}}');
        INSERT INTO events VALUES('job_00000000000000aa', 1, 1.0, 'state', '{"state":"queued"}');
        INSERT INTO events VALUES('job_00000000000000aa', 2, 1.5, 'log', '{"level":"info","message":"old"}');
    """)
    db.commit()
    db.close()
    d = make_quantd("--set", "debug_jobs=true", state=state)
    assert "schema migrated to version 2" in d.logtext()
    j = d.wait("job_00000000000000aa", "succeeded", timeout=30)
    st, _, events, _ = d.events(j["id"])
    assert [e[0] for e in events] == list(range(1, len(events) + 1)) and len(events) > 4
    assert events[1][2]["message"] == "old"
    db = sqlite3.connect(state / "quantd.db")
    assert db.execute("SELECT version FROM schema_version ORDER BY version").fetchall() == [(1,), (2,)]
    db.close()
