"""Abuse of the HTTP API on loopback (issue 18): replies that must always come, connections that
must not pile up, cross-site writes, over-limit bodies. Raw sockets where http.client would hide
what is sent; every loop is bounded and every socket has a timeout.
"""
import http.client
import json
import re
import os
import resource
import socket
import time

import pytest

from service_fixtures import FIXTURES  # noqa: F401  (the quantd fixtures come from conftest)
from service_fixtures import make_quantd, quantd  # noqa: F401


def raw(port, data, timeout=5, src="127.0.0.1"):
    """Sends bytes, reads until the server closes or `timeout`; returns (status, headers, body)."""
    s = socket.socket()
    s.settimeout(timeout)
    s.bind((src, 0))
    s.connect(("127.0.0.1", port))
    s.sendall(data)
    reply = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            reply += chunk
            head, sep, body = reply.partition(b"\r\n\r\n")
            if sep:
                lines = head.decode("latin-1").split("\r\n")
                h = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
                if "content-length" in h and len(body) >= int(h["content-length"]):
                    return int(lines[0].split()[1]), h, body
    finally:
        s.close()
    raise AssertionError(f"no complete reply within {timeout}s: {reply[:200]!r}")


def error_of(body):
    e = json.loads(body)["error"]
    assert isinstance(e["code"], str) and isinstance(e["message"], str)
    return e


# --- defect 4: every request gets an answer, whatever bytes it quotes -----------------------------

@pytest.mark.parametrize("key", ["x" + "é" * 300, "€" * 200, "xx" + "😀" * 150])
def test_long_non_ascii_key_gets_an_error_naming_it(quantd, key):
    # "config." + key is over 255 bytes: the field path must be cut, and between characters
    body = json.dumps({"type": "sleep", "config": {key: 1}}, ensure_ascii=False).encode()
    st, _, reply = raw(quantd.port, b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                       b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
    e = error_of(reply)
    assert (st, e["code"]) == (400, "invalid_field"), e
    full = "config." + key
    assert full.startswith(e["field"]) and len(e["field"].encode()) > 250, e["field"]
    assert len(e["field"].encode()) <= 255
    assert "\ufffd" not in e["field"] and e["message"].startswith("unknown field '" + full[:20]), e


def test_invalid_utf8_in_the_url_gets_a_404(quantd):
    for path in (b"/v1/jobs/%FF%FE", b"/v1/jobs/\xff\xfe", b"/nothing/\xc3"):
        st, _, reply = raw(quantd.port, b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        e = error_of(reply)
        assert (st, e["code"]) == (404, "not_found"), (path, e)
        assert "\ufffd" in e["message"], e   # the bad bytes are shown as U+FFFD


def test_non_utf8_npy_header_gets_an_answer(quantd):
    # a .npy whose header dict holds bytes that are not UTF-8 (in the dtype the reader quotes)
    header = b"{'descr': '<f\xff\xfe', 'fortran_order': False, 'shape': (2,), }"
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    npy = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + b"\0" * 8
    r = quantd.request("POST", "/v1/datasets", npy, {"Content-Type": "application/octet-stream"}, timeout=5)
    assert r.status in (400, 415, 422), (r.status, r.body)
    assert error_of(r.body)["code"] in ("bad_dataset", "unsupported_dataset", "unsupported_media_type")


def test_non_utf8_upload_name_is_refused_and_listing_still_works(quantd):
    with open(os.path.join(FIXTURES, "mlp.onnx"), "rb") as f:
        data = f.read()
    r = quantd.request("POST", "/v1/models?name=%FFabc", data, {"Content-Type": "application/octet-stream"},
                       timeout=5)
    assert r.status == 400 and error_of(r.body)["field"] == "name", (r.status, r.body)
    st, body = quantd.json("GET", "/v1/models", timeout=5)
    assert (st, body["models"]) == (200, [])


# --- defect 5: one client cannot take every connection ---------------------------------------------

def test_health_answers_while_one_client_hogs_connections(make_quantd):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 4096)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    d = make_quantd()   # defaults: max_connections 1024, max_connections_per_ip 64
    hogs = []
    try:
        for _ in range(1100):   # more than max_connections, all idle, from 127.0.0.1
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", d.port))
            hogs.append(s)
        time.sleep(0.5)
        t0 = time.time()
        st, _, body = raw(d.port, b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.2\r\nConnection: close\r\n\r\n",
                          timeout=3, src="127.0.0.2")
        assert st == 200 and json.loads(body)["status"] == "ok"
        assert time.time() - t0 < 1
        # the server holds at most max_connections_per_ip of them; it closed the rest
        open_ = 0
        for s in hogs:
            try:
                open_ += s.recv(1) != b""
            except BlockingIOError:
                open_ += 1
            except OSError:
                pass
        assert open_ <= 64, open_
    finally:
        for s in hogs:
            s.close()


def test_dripping_headers_are_cut_off_at_header_timeout(make_quantd):
    d = make_quantd("--set", "header_timeout=2")
    s = socket.create_connection(("127.0.0.1", d.port), timeout=6)
    t0 = time.time()
    reply = b""
    try:
        for b in b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100:   # ~25 s if let be
            s.send(bytes([b]))
            time.sleep(0.25)
            if time.time() - t0 > 6:
                break
    except OSError:   # closed by the server
        pass
    try:
        reply = s.recv(4096)
    except OSError:
        pass
    dt = time.time() - t0
    s.close()
    assert 1.9 < dt < 4, dt
    assert reply == b"" or reply.startswith(b"HTTP/1.1 408"), reply
    assert d.request("GET", "/v1/health", timeout=2).status == 200


def test_unfinished_headers_get_a_408_error_body(make_quantd):
    d = make_quantd("--set", "header_timeout=1")
    s = socket.create_connection(("127.0.0.1", d.port), timeout=5)
    s.sendall(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")   # no blank line: never finished
    reply = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        reply += chunk
    s.close()
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), reply
    assert f"Content-Length: {len(body)}".encode() in head, reply
    err = json.loads(body)["error"]
    assert err["code"] == "timeout" and "header_timeout" in err["hint"], err


def test_an_idle_kept_alive_connection_is_closed_without_a_408(make_quantd):
    """After a reply, waiting for a next request is idleness, not lateness: the connection closes
    at header_timeout with no 408, which a client could take for its next request's answer."""
    d = make_quantd("--set", "header_timeout=1")
    s = socket.create_connection(("127.0.0.1", d.port), timeout=5)
    s.sendall(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    reply = b""
    while b"\r\n\r\n" not in reply:
        reply += s.recv(4096)
    head, _, body = reply.partition(b"\r\n\r\n")
    n = int(re.search(rb"Content-Length: (\d+)", head).group(1))
    while len(body) < n:
        body += s.recv(4096)
    assert head.startswith(b"HTTP/1.1 200"), head
    t0 = time.time()
    rest = s.recv(4096)   # nothing until the server closes
    s.close()
    assert rest == b"", rest
    assert 0.9 < time.time() - t0 < 3


def test_dripping_body_is_cut_off(make_quantd):
    d = make_quantd("--set", "body_timeout=2", "--set", "body_min_rate=1K")
    s = socket.create_connection(("127.0.0.1", d.port), timeout=6)
    s.sendall(b"POST /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
              b"Content-Length: 1000\r\n\r\n")
    t0 = time.time()
    try:
        for _ in range(40):   # one byte every 0.25 s: 10 s if let be
            s.send(b"x")
            time.sleep(0.25)
    except OSError:
        pass
    dt = time.time() - t0
    s.close()
    assert dt < 4, dt   # 2 s + 8 bytes / 1 KiB/s, then the tick
    time.sleep(0.3)
    assert os.listdir(os.path.join(d.state_dir, "tmp")) == []


# --- defect 6: no writes from other sites, no other host names ----------------------------------

SPEC = {"type": "sleep", "config": {"seconds": 0}}


def post_job(d, headers):
    c = http.client.HTTPConnection("127.0.0.1", d.port, timeout=5)
    c.request("POST", "/v1/jobs", json.dumps(SPEC), headers)
    r = c.getresponse()
    return r.status, r.read()


def test_cross_site_writes_are_refused(quantd):
    evil = "http://evil.example"
    st, body = post_job(quantd, {"Origin": evil, "Content-Type": "text/plain"})
    assert st == 403 and evil in error_of(body)["message"], body
    st, body = post_job(quantd, {"Origin": evil, "Content-Type": "application/json"})
    assert st == 403, body
    st, body = post_job(quantd, {"Origin": "null", "Content-Type": "application/json"})
    assert st == 403, body
    # no Origin (an old browser), but a type a form can send: refused too
    for ct in ("text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
               "multipart/form-data; boundary=x"):
        st, body = post_job(quantd, {"Content-Type": ct})
        assert st == 415 and error_of(body)["code"] == "unsupported_media_type", (ct, body)
    r = quantd.request("POST", "/v1/datasets", b"\x93NUMPY", {"Origin": evil, "Content-Type": "text/plain"})
    assert r.status == 403
    r = quantd.request("DELETE", "/v1/jobs/job_0123456789abcdef", headers={"Origin": evil})
    assert r.status == 403
    assert quantd.json("GET", "/v1/jobs")[1]["jobs"] == []
    assert quantd.json("GET", "/v1/datasets")[1]["datasets"] == []
    # the server's own pages, and clients without Origin, still work
    for h in ({"Origin": f"http://127.0.0.1:{quantd.port}", "Content-Type": "application/json"},
              {"Origin": f"http://localhost:{quantd.port}", "Host": f"localhost:{quantd.port}",
               "Content-Type": "application/json"},
              {"Content-Type": "application/json"}, {}):
        st, body = post_job(quantd, h)
        assert st == 202, (h, body)


def test_foreign_host_names_are_refused(quantd):
    for host in (b"evil.example", b"evil.example:%d" % quantd.port, b"127.0.0.1.evil.example",
                 b"localhost.evil.example:1"):
        st, _, body = raw(quantd.port, b"GET /v1/jobs HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n")
        assert st == 403 and error_of(body)["code"] == "forbidden", (host, body)
    for host in (b"127.0.0.1:%d" % quantd.port, b"localhost:%d" % quantd.port, b"LOCALHOST", b"[::1]:%d" % quantd.port,
                 b"10.1.2.3"):
        st, _, body = raw(quantd.port, b"GET /v1/jobs HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n")
        assert st == 200, (host, body)


def test_allowed_hosts_and_origins_are_configurable(make_quantd):
    d = make_quantd("--set", "debug_jobs=true", "--set", "allowed_hosts=quantd.internal, q2.internal",
                    "--set", "allowed_origins=https://dash.example")
    st, _, _ = raw(d.port, b"GET /v1/health HTTP/1.1\r\nHost: q2.internal:443\r\nConnection: close\r\n\r\n")
    assert st == 200
    st, body = post_job(d, {"Origin": "https://dash.example", "Content-Type": "application/json",
                            "Host": "quantd.internal"})
    assert st == 202, body
    st, body = post_job(d, {"Origin": "https://dash2.example", "Content-Type": "application/json"})
    assert st == 403, body


# --- defect 7: a chunked body over the limit is not read to its end ----------------------------

def test_chunked_upload_over_the_limit_is_refused_as_it_crosses(make_quantd):
    d = make_quantd("--set", "max_model_size=1M")
    s = socket.create_connection(("127.0.0.1", d.port), timeout=5)
    s.sendall(b"POST /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
              b"Content-Type: application/octet-stream\r\n\r\n")
    chunk = b"10000\r\n" + b"a" * 0x10000 + b"\r\n"
    try:
        for _ in range(128):   # 8 MB, and never the last chunk: only a refusal ends this
            s.sendall(chunk)
    except OSError:   # the server stopped reading and closed
        pass
    reply = b""
    try:
        while True:
            got = s.recv(4096)
            if not got:
                break
            reply += got
    except OSError:
        pass
    s.close()
    assert reply.startswith(b"HTTP/1.1 413"), reply[:100]
    e = error_of(reply.partition(b"\r\n\r\n")[2])
    assert e["code"] == "too_large" and "1048576" in e["message"], e
    time.sleep(0.3)
    assert os.listdir(os.path.join(d.state_dir, "tmp")) == []
    assert d.json("GET", "/v1/models")[1]["models"] == []
