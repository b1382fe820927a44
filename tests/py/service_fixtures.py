"""Fixtures and a small client for the service tests (test_service.py, test_service_daemon.py): a
real quantd on a free port with a temp state dir, talked to with http.client only (no third-party
HTTP library); and the fixture files and job specs those tests share.

    def test_x(quantd):                       # a fresh daemon (debug jobs on), stopped afterwards
        st, body = quantd.json("GET", "/v1/health")

    d = Quantd(binary, state_dir, "--workers", "2").start()   # for tests that restart / kill it
"""
import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import time

import pytest

SRCDIR = os.environ.get("QD_SRCDIR") or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILDDIR = os.environ.get("QD_BUILDDIR") or SRCDIR
FIXTURES = os.path.join(SRCDIR, "tests", "fixtures")

# committed fixtures the service tests upload
MLP = os.path.join(FIXTURES, "mlp.onnx")
CLS = os.path.join(FIXTURES, "cli", "cls.onnx")
CLS_X = os.path.join(FIXTURES, "cli", "cls_x.npy")
CLS_Y = os.path.join(FIXTURES, "cli", "cls_labels.npy")
UNSUPPORTED = os.path.join(FIXTURES, "cli", "unsupported.onnx")
DATA = os.path.join(FIXTURES, "data")


def files_in(d):
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def sleep_spec(seconds=0.5, **config):
    """A job of the debug type "sleep" (needs debug_jobs=true), as test_service.py describes."""
    return {"type": "sleep", "config": dict(seconds=seconds, **config)}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


class Response:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body) if self.body else None

    def error(self):
        """The error object of an error reply, checked for the common shape."""
        j = self.json()
        assert set(j) == {"error"}, j
        e = j["error"]
        assert isinstance(e["code"], str) and isinstance(e["message"], str) and e["message"], e
        return e


class Quantd:
    """One quantd process on 127.0.0.1:<free port> with its own state dir."""

    def __init__(self, binary, state_dir, *args, token=None, port=None, env=None):
        self.binary, self.state_dir, self.args = binary, str(state_dir), list(args)
        self.env = env
        self.port = port or free_port()
        self.token = token
        self.proc = None
        self.log_path = os.path.join(self.state_dir + ".log")

    # --- life cycle ---
    def start(self, timeout=10):
        self.log = open(self.log_path, "ab")
        cmd = [self.binary, "--listen", f"127.0.0.1:{self.port}", "--state-dir", self.state_dir,
               "--log-level", "debug"] + self.args
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"quantd exited with {self.proc.returncode}:\n{self.logtext()}")
            try:
                if self.request("GET", "/v1/health", timeout=1).status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"quantd did not answer /v1/health within {timeout}s:\n{self.logtext()}")

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"quantd did not stop within {timeout}s after {sig}:\n{self.logtext()}")
        if getattr(self, "log", None):
            self.log.close()
        return self.proc.returncode if self.proc else None

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.log.close()

    def logtext(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")[-4000:]
        except OSError:
            return ""

    # --- HTTP ---
    def conn(self, timeout=30):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, timeout=30, auth=True):
        h = dict(headers or {})
        if auth and self.token and "Authorization" not in h:
            h["Authorization"] = f"Bearer {self.token}"
        c = self.conn(timeout)
        try:
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
        finally:
            c.close()

    def json(self, method, path, obj=None, **kw):
        body = None if obj is None else json.dumps(obj).encode()
        hdr = {"Content-Type": "application/json"} if body is not None else {}
        r = self.request(method, path, body, hdr, **kw)
        return r.status, r.json()

    def upload(self, kind, path, name=None):
        """POST a file's bytes to /v1/models or /v1/datasets; returns the Response."""
        with open(path, "rb") as f:
            data = f.read()
        q = f"?name={name}" if name else ""
        return self.request("POST", f"/v1/{kind}{q}", data, {"Content-Type": "application/octet-stream"})

    def upload_ok(self, kind, path, name=None):
        r = self.upload(kind, path, name)
        assert r.status == 201, (r.status, r.body)
        return r.json()

    def submit(self, spec):
        st, body = self.json("POST", "/v1/jobs", spec)
        assert st == 202, (st, body)
        return body

    def job(self, jid):
        st, body = self.json("GET", f"/v1/jobs/{jid}")
        assert st == 200, (st, body)
        return body

    def wait(self, jid, states, timeout=60):
        """Polls until the job is in one of states; returns the job."""
        states = {states} if isinstance(states, str) else set(states)
        deadline = time.time() + timeout
        while time.time() < deadline:
            j = self.job(jid)
            if j["state"] in states:
                return j
            time.sleep(0.02)
        raise AssertionError(f"job {jid} not in {states} after {timeout}s: {j}\n{self.logtext()}")

    def wait_progress(self, jid, min_done=2, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            j = self.job(jid)
            if j["state"] == "running" and j["progress"] and j["progress"]["done"] >= min_done:
                return j
            time.sleep(0.02)
        raise AssertionError(f"job {jid} made no progress: {j}")

    def events(self, jid, last_id=None, limit=None, timeout=60):
        """Reads the job's SSE stream: [(id, type, data)], until it ends (or `limit` events).
        Also returns the response status and headers."""
        c = self.conn(timeout)
        h = {"Accept": "text/event-stream"}
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        if last_id is not None:
            h["Last-Event-ID"] = str(last_id)
        c.request("GET", f"/v1/jobs/{jid}/events", headers=h)
        r = c.getresponse()
        out = []
        if r.status != 200:
            body = r.read()
            c.close()
            return r.status, dict(r.getheaders()), out, body
        ev = {}
        while limit is None or len(out) < limit:
            line = r.readline()
            if not line:
                break
            line = line.decode().rstrip("\n")
            if line == "":
                if "data" in ev:
                    out.append((int(ev["id"]), ev["event"], json.loads(ev["data"])))
                ev = {}
                continue
            if line.startswith(":"):
                continue
            k, _, v = line.partition(": ")
            ev[k] = v
        c.close()
        return r.status, dict(r.getheaders()), out, b""


def quantd_binary():
    path = os.path.join(BUILDDIR, "quantd")
    if not os.access(path, os.X_OK):
        pytest.fail(f"no executable quantd at {path}: build first (make) or set QD_BUILDDIR")
    return path


@pytest.fixture
def quantd_bin():
    return quantd_binary()


@pytest.fixture
def make_quantd(tmp_path):
    """Factory: make_quantd(*args, token=None, state=None) → a started Quantd; all stopped at teardown."""
    started = []

    def make(*args, token=None, state=None, start=True):
        d = Quantd(quantd_binary(), state or (tmp_path / f"state{len(started)}"), *args, token=token)
        started.append(d)
        return d.start() if start else d

    yield make
    for d in started:
        try:
            d.stop()
        except Exception:
            pass


@pytest.fixture
def quantd(make_quantd):
    """A fresh daemon with the debug job type, one worker."""
    return make_quantd("--set", "debug_jobs=true", "--workers", "1")
