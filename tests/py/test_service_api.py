"""Integration tests of the REST API an MLOps pipeline expects, as a pipeline author meets it with
curl: the artifact list, upload deduplication, one way of writing shapes, deleting jobs and uploads,
retention (job_retention_days, max_state_bytes), pages and filters of the lists, and webhooks (signed,
retried, recorded; checked against a local receiver). A real daemon per test
(service_fixtures.py); jobs are mostly the debug type "sleep" (see test_service.py).
"""
import hashlib
import hmac
import http.server
import json
import os
import re
import sqlite3
import threading
import time

import numpy as np
import pytest

from service_fixtures import (CLS, CLS_X, MLP, SRCDIR, files_in, sha256_file, sleep_spec,  # noqa: F401
                              make_quantd, quantd, quantd_bin)


# --- artifact list -------------------------------------------------------------------------------

def test_artifact_list_names_sizes_hashes_types_and_urls(quantd):
    job = quantd.submit(sleep_spec(0.1, artifact_bytes=4321))
    st, body = quantd.json("GET", f"/v1/jobs/{job['id']}/artifacts")
    assert st == 200 and body["job"] == job["id"] and body["artifacts"] == []   # not finished yet
    quantd.wait(job["id"], "succeeded")
    st, body = quantd.json("GET", f"/v1/jobs/{job['id']}/artifacts")
    assert st == 200 and body["state"] == "succeeded"
    arts = {a["name"]: a for a in body["artifacts"]}
    assert set(arts) == {"data.bin", "report.json"}
    assert arts["data.bin"]["content_type"] == "application/octet-stream"
    assert arts["report.json"]["content_type"] == "application/json"
    folder = os.path.join(quantd.state_dir, "jobs", job["id"])
    for name, a in arts.items():
        path = os.path.join(folder, name)
        assert a["size"] == os.path.getsize(path) and a["sha256"] == sha256_file(path)
        assert a["url"] == f"/v1/jobs/{job['id']}/artifacts/{name}"
        r = quantd.request("GET", a["url"])
        assert r.status == 200 and hashlib.sha256(r.body).hexdigest() == a["sha256"]
    assert arts["data.bin"]["size"] == 4321
    r = quantd.request("GET", "/v1/jobs/job_nope/artifacts")
    assert r.status == 404 and r.error()["code"] == "not_found"


# --- deduplication ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, path, other", [("models", MLP, CLS), ("datasets", CLS_X, None)])
def test_same_bytes_twice_return_the_first_upload_with_200(quantd, tmp_path, kind, path, other):
    first = quantd.upload(kind, path, name="first")
    assert first.status == 201
    again = quantd.upload(kind, path, name="second")
    assert again.status == 200, again.body
    assert again.json() == first.json() and again.headers["location"] == first.headers["location"]
    assert len(files_in(os.path.join(quantd.state_dir, kind))) == 1
    assert len(quantd.json("GET", f"/v1/{kind}")[1][kind]) == 1
    # other bytes are another upload
    if other is None:
        other = tmp_path / "other.npy"
        np.save(other, np.ones((3, 6), np.float32))
    assert quantd.upload(kind, other).status == 201
    # once deleted, the same bytes are stored anew
    assert quantd.request("DELETE", f"/v1/{kind}/{first.json()['id']}").status == 204
    third = quantd.upload(kind, path)
    assert third.status == 201 and third.json()["id"] != first.json()["id"]


# --- shapes ------------------------------------------------------------------------------------------

def test_shapes_are_ints_and_symbolic_dims_their_names(quantd, tmp_path):
    """One convention everywhere: a known dim is an integer, a symbolic one (ONNX dim_param) its
    name as a string, an unknown one null (the OpenAPI Shape schema says so)."""
    m = quantd.upload_ok("models", CLS)
    assert m["inputs"] == [{"name": "x", "shape": ["batch", 6], "dtype": "float32"}]
    assert m["outputs"][0]["shape"] == ["batch", 6]
    m2 = quantd.upload_ok("models", MLP)
    assert m2["inputs"][0]["shape"] == ["N", 1, 28, 28]
    np.save(tmp_path / "x.npy", np.zeros((5, 6), np.float32))
    d = quantd.upload_ok("datasets", tmp_path / "x.npy")
    assert d["arrays"][0]["shape"] == [5, 6]
    st, doc = quantd.json("GET", "/v1/openapi.json")
    shape = doc["components"]["schemas"]["Shape"]
    assert shape["nullable"] is True and "symbolic" in shape["description"]
    schemas = doc["components"]["schemas"]
    assert schemas["Tensor"]["properties"]["shape"] == {"$ref": "#/components/schemas/Shape"}
    assert schemas["Model"]["properties"]["inputs"]["items"] == {"$ref": "#/components/schemas/Tensor"}
    assert schemas["Dataset"]["properties"]["arrays"]["items"] == {"$ref": "#/components/schemas/Tensor"}


# --- deleting jobs and uploads ----------------------------------------------------------------------

def test_delete_cancels_live_jobs_then_removes_finished_ones(quantd):
    blocker = quantd.submit(sleep_spec(30))
    quantd.wait_progress(blocker["id"], min_done=1)
    queued = quantd.submit(sleep_spec(0.1))
    # queued → cancelled (200), then removed (204), then gone (404)
    st, body = quantd.json("DELETE", f"/v1/jobs/{queued['id']}")
    assert st == 200 and body["state"] == "cancelled"
    assert quantd.request("DELETE", f"/v1/jobs/{queued['id']}").status == 204
    assert quantd.request("GET", f"/v1/jobs/{queued['id']}").status == 404
    assert quantd.request("GET", f"/v1/jobs/{queued['id']}/events").status == 404
    assert quantd.request("DELETE", f"/v1/jobs/{queued['id']}").status == 404
    # running → asked to stop (202); DELETE again while it stops is still 202 or already 204
    st, body = quantd.json("DELETE", f"/v1/jobs/{blocker['id']}")
    assert st == 202 and body["cancel_requested"] is True
    quantd.wait(blocker["id"], "cancelled")
    assert quantd.request("DELETE", f"/v1/jobs/{blocker['id']}").status == 204


def test_delete_finished_job_removes_record_events_and_artifacts(quantd):
    done = quantd.submit(sleep_spec(0.1, artifact_bytes=5000))
    failed = quantd.submit(sleep_spec(0.1, fail=True))
    quantd.wait(done["id"], "succeeded")
    quantd.wait(failed["id"], "failed")
    folder = os.path.join(quantd.state_dir, "jobs", done["id"])
    assert files_in(folder)
    url = quantd.job(done["id"])["artifacts"][0]["url"]
    for j in (done, failed):
        assert quantd.request("DELETE", f"/v1/jobs/{j['id']}").status == 204
        assert quantd.request("GET", f"/v1/jobs/{j['id']}").status == 404
    assert not os.path.exists(folder)
    assert quantd.request("GET", url).status == 404
    assert quantd.request("GET", f"/v1/jobs/{done['id']}/artifacts").status == 404
    assert quantd.json("GET", "/v1/jobs")[1]["jobs"] == []
    db = sqlite3.connect(os.path.join(quantd.state_dir, "quantd.db"))
    try:
        for table, col in (("events", "job"), ("job_refs", "job"), ("jobs", "id")):
            assert db.execute(f"SELECT COUNT(*) FROM {table} WHERE {col} IN (?, ?)",
                              (done["id"], failed["id"])).fetchone()[0] == 0
    finally:
        db.close()


def test_upload_in_use_is_409_naming_the_jobs(quantd):
    m = quantd.upload_ok("models", MLP)
    ds = quantd.upload_ok("datasets", CLS_X)
    spec = {"type": "sleep", "model": m["id"], "calibration": ds["id"], "config": {"seconds": 30}}
    a, b = quantd.submit(spec), quantd.submit(spec)
    for kind, rec in (("models", m), ("datasets", ds)):
        r = quantd.request("DELETE", f"/v1/{kind}/{rec['id']}")
        assert r.status == 409
        e = r.error()
        assert e["code"] == "in_use" and a["id"] in e["message"] and b["id"] in e["message"]
    for j in (a, b):
        quantd.request("DELETE", f"/v1/jobs/{j['id']}")
        quantd.wait(j["id"], "cancelled")
    # finished jobs do not hold their uploads: the records keep the ids, the files go
    assert quantd.request("DELETE", f"/v1/models/{m['id']}").status == 204
    assert quantd.request("DELETE", f"/v1/datasets/{ds['id']}").status == 204
    assert quantd.job(a["id"])["spec"]["model"] == m["id"]


# --- retention ----------------------------------------------------------------------------------------

def state_bytes(d):
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, fs in os.walk(d) for f in fs
               if not os.path.islink(os.path.join(root, f)))


def test_job_retention_days_removes_old_finished_jobs_and_unused_uploads_at_start(make_quantd, tmp_path):
    st = tmp_path / "st"
    d = make_quantd("--set", "debug_jobs=true", state=st)
    m = d.upload_ok("models", MLP)
    unused = d.upload_ok("datasets", CLS_X)
    old = d.submit({"type": "sleep", "model": m["id"], "config": {"seconds": 0.1}})
    new = d.submit(sleep_spec(0.1))
    for j in (old, new):
        d.wait(j["id"], "succeeded")
    d.stop()
    # age the first job and both uploads by three days, as if time had passed
    db = sqlite3.connect(os.path.join(st, "quantd.db"))
    with db:
        db.execute("UPDATE jobs SET created = created - 259200, finished = finished - 259200 WHERE id = ?",
                   (old["id"],))
        db.execute("UPDATE models SET created = created - 259200")
        db.execute("UPDATE datasets SET created = created - 259200")
    db.close()
    d2 = make_quantd("--set", "debug_jobs=true", "--set", "job_retention_days=2", state=st)
    assert d2.request("GET", f"/v1/jobs/{old['id']}").status == 404
    assert not os.path.exists(os.path.join(st, "jobs", old["id"]))
    assert d2.job(new["id"])["state"] == "succeeded"
    # the model only the removed job used, and the data set no job used, went too
    assert d2.request("GET", f"/v1/models/{m['id']}").status == 404
    assert d2.request("GET", f"/v1/datasets/{unused['id']}").status == 404
    assert files_in(os.path.join(st, "models")) == [] and files_in(os.path.join(st, "datasets")) == []


def test_max_state_bytes_removes_the_oldest_finished_jobs(make_quantd, tmp_path):
    st = tmp_path / "st"
    d = make_quantd("--set", "debug_jobs=true", state=st)
    keep = d.upload_ok("models", MLP)
    live = d.submit({"type": "sleep", "model": keep["id"], "config": {"seconds": 60}})
    d.wait(live["id"], "running")
    d.stop()   # requeued: it is queued at the next start, and retention never touches it
    d = make_quantd("--set", "debug_jobs=true", "--set", "workers=2", state=st)
    jobs = [d.submit(sleep_spec(0.05, artifact_bytes=2 << 20)) for _ in range(3)]
    for j in jobs:
        d.wait(j["id"], "succeeded")
    d.stop()
    limit = state_bytes(st) - (3 << 20)   # 3 MiB less than now: two of the 2 MiB jobs must go
    d2 = make_quantd("--set", "debug_jobs=true", "--set", "workers=2", "--set", f"max_state_bytes={limit}",
                     "--set", "retention_interval=1", state=st)
    assert [d2.request("GET", f"/v1/jobs/{j['id']}").status for j in jobs] == [404, 404, 200]
    assert d2.job(live["id"])["state"] in ("queued", "running")
    assert d2.request("GET", f"/v1/models/{keep['id']}").status == 200
    # and periodically: one more 2 MiB job puts the state dir over again; the oldest goes
    extra = d2.submit(sleep_spec(0.05, artifact_bytes=2 << 20))
    d2.wait(extra["id"], "succeeded")
    deadline = time.time() + 10
    while time.time() < deadline and d2.request("GET", f"/v1/jobs/{jobs[2]['id']}").status == 200:
        time.sleep(0.1)
    assert d2.request("GET", f"/v1/jobs/{jobs[2]['id']}").status == 404
    assert d2.job(extra["id"])["state"] == "succeeded"


# --- pages and filters -----------------------------------------------------------------------------

def test_job_list_pages_with_a_cursor_and_filters(quantd):
    ids = [quantd.submit(dict(sleep_spec(0.01), name=f"j{i % 2}"))["id"] for i in range(5)]
    for i in ids:
        quantd.wait(i, "succeeded")
    failed = quantd.submit(sleep_spec(0.01, fail=True))
    quantd.wait(failed["id"], "failed")
    newest_first = [failed["id"]] + ids[::-1]
    seen, after, pages = [], None, 0
    while True:
        st, page = quantd.json("GET", "/v1/jobs?limit=2" + (f"&after={after}" if after else ""))
        assert st == 200 and len(page["jobs"]) <= 2
        seen += [j["id"] for j in page["jobs"]]
        pages += 1
        after = page["next"]
        if after is None:
            break
    assert seen == newest_first and pages == 3
    # a deleted job does not upset a cursor
    st, p1 = quantd.json("GET", "/v1/jobs?limit=2")
    assert quantd.request("DELETE", f"/v1/jobs/{p1['jobs'][1]['id']}").status == 204
    st, p2 = quantd.json("GET", f"/v1/jobs?limit=2&after={p1['next']}")
    assert [j["id"] for j in p2["jobs"]] == newest_first[2:4]
    # filters, alone and together
    assert [j["id"] for j in quantd.json("GET", "/v1/jobs?state=failed")[1]["jobs"]] == [failed["id"]]
    assert {j["id"] for j in quantd.json("GET", "/v1/jobs?name=j0")[1]["jobs"]} == {ids[0], ids[2]}   # ids[4] deleted
    assert [j["id"] for j in quantd.json("GET", "/v1/jobs?name=j1&state=succeeded&type=sleep&limit=1")[1]["jobs"]] \
        == [ids[3]]
    assert quantd.json("GET", "/v1/jobs?type=ptq")[1] == {"jobs": [], "next": None}


@pytest.mark.parametrize("query, field", [
    ("limit=0", "limit"), ("limit=1001", "limit"), ("limit=x", "limit"), ("after=abc", "after"),
    ("after=-3", "after"), ("after=0", "after"), ("state=sleeping", "state"), ("type=train", "type"),
    ("name=%ff", "name"),
])
def test_bad_list_parameters_are_400_naming_them(quantd, query, field):
    for path in ("/v1/jobs", "/v1/models", "/v1/datasets"):
        if field in ("state", "type") and path != "/v1/jobs":
            continue
        r = quantd.request("GET", f"{path}?{query}")
        assert r.status == 400, (path, query, r.body)
        e = r.error()
        assert e["code"] == "bad_request" and e["field"] == field and field in e["message"]


def test_upload_lists_page_and_filter_by_name(quantd, tmp_path):
    made = []
    for i in range(5):
        np.save(tmp_path / f"{i}.npy", np.full((2, 6), i, np.float32))
        made.append(quantd.upload_ok("datasets", tmp_path / f"{i}.npy", name="even" if i % 2 == 0 else "odd")["id"])
    st, p = quantd.json("GET", "/v1/datasets?limit=3")
    assert [d["id"] for d in p["datasets"]] == made[::-1][:3] and p["next"]
    st, p = quantd.json("GET", f"/v1/datasets?limit=3&after={p['next']}")
    assert [d["id"] for d in p["datasets"]] == made[::-1][3:] and p["next"] is None
    st, p = quantd.json("GET", "/v1/datasets?name=odd")
    assert [d["id"] for d in p["datasets"]] == [made[3], made[1]]
    st, p = quantd.json("GET", "/v1/models?name=odd")
    assert p == {"models": [], "next": None}


# --- webhooks ----------------------------------------------------------------------------------------

class Receiver:
    """A local webhook receiver (http.server in a thread) answering POSTs with the scripted statuses
    (the last one repeats); records (time, headers, body) of each request."""

    def __init__(self, statuses):
        self.statuses, self.got = list(statuses), []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.got.append((time.monotonic(), {k.lower(): v for k, v in self.headers.items()}, body))
                status = outer.statuses.pop(0) if len(outer.statuses) > 1 else outer.statuses[0]
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/quantd?x=1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, n, timeout=15):
        deadline = time.time() + timeout
        while len(self.got) < n and time.time() < deadline:
            time.sleep(0.02)
        return self.got

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = []

    def make(statuses):
        made.append(Receiver(statuses))
        return made[-1]

    yield make
    for r in made:
        r.close()


def webhook_events(d, jid, n, timeout=15):
    """The job's `webhook` events, once there are n (or at the timeout). They follow the terminal
    state event, where a stream from the start ends, so they are read after it (Last-Event-ID)."""
    deadline = time.time() + timeout
    while True:
        _, _, events, _ = d.events(jid)
        _, _, more, _ = d.events(jid, last_id=events[-1][0], timeout=5)
        hooks = [e[2] for e in more if e[1] == "webhook"]
        if len(hooks) >= n or time.time() > deadline:
            return hooks
        time.sleep(0.05)


def test_webhook_is_signed_retried_with_backoff_and_recorded(make_quantd, receiver):
    rx = receiver([500, 500, 200])
    d = make_quantd("--set", "debug_jobs=true", "--set", "webhook_secret=s3cret", "--set", "webhook_backoff_ms=150",
                    "--set", "webhook_attempts=5")
    job = d.submit(dict(sleep_spec(0.05), notify=rx.url))
    assert job["spec"]["notify"] == rx.url
    d.wait(job["id"], "succeeded")
    got = rx.wait(3)
    assert len(got) == 3
    for t, headers, body in got:
        assert headers["content-type"] == "application/json"
        want = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
        assert headers["x-quantd-signature"] == want
        j = json.loads(body)
        assert j["id"] == job["id"] and j["state"] == "succeeded" and j["artifacts"]
    # exponential backoff: 150 ms, then 300 ms
    assert got[1][0] - got[0][0] >= 0.14 and got[2][0] - got[1][0] >= 0.29
    hooks = webhook_events(d, job["id"], 3)
    assert [(h["attempt"], h.get("status"), h["delivered"]) for h in hooks] == \
        [(1, 500, False), (2, 500, False), (3, 200, True)]
    assert [h.get("retry_in_s") for h in hooks] == [pytest.approx(0.15), pytest.approx(0.3), None]
    assert all(h["url"] == rx.url for h in hooks)
    time.sleep(0.5)
    assert len(rx.got) == 3     # delivered: no more attempts


def test_webhook_gives_up_after_its_attempts_and_reports_errors(make_quantd, receiver):
    rx = receiver([503])
    d = make_quantd("--set", "debug_jobs=true", "--set", "webhook_backoff_ms=50", "--set", "webhook_attempts=2")
    failed = d.submit(dict(sleep_spec(0.05, fail=True), notify=rx.url))
    d.wait(failed["id"], "failed")
    assert len(rx.wait(2)) == 2
    assert "x-quantd-signature" not in rx.got[0][1]      # no webhook_secret: unsigned
    hooks = webhook_events(d, failed["id"], 2)
    assert [(h["attempt"], h["status"], h["delivered"]) for h in hooks] == [(1, 503, False), (2, 503, False)]
    assert "retry_in_s" not in hooks[-1]
    time.sleep(0.3)
    assert len(rx.got) == 2
    # nobody listening: the transport error is recorded
    port = rx.server.server_address[1]
    rx.close()
    gone = d.submit(dict(sleep_spec(0.05), notify=f"http://127.0.0.1:{port}/x"))
    d.wait(gone["id"], "succeeded")
    hooks = webhook_events(d, gone["id"], 2)
    assert len(hooks) == 2 and not any(h["delivered"] for h in hooks)
    assert all("status" not in h and h["error"] for h in hooks)


def test_webhook_on_cancel_and_none_without_notify(make_quantd, receiver):
    rx = receiver([204])
    d = make_quantd("--set", "debug_jobs=true")
    plain = d.submit(sleep_spec(0.05))
    blocker = d.submit(dict(sleep_spec(30), notify=rx.url))
    d.wait(blocker["id"], "running")
    queued_behind = d.submit(dict(sleep_spec(0.05), notify=rx.url))
    assert d.request("DELETE", f"/v1/jobs/{queued_behind['id']}").status == 200
    assert d.request("DELETE", f"/v1/jobs/{blocker['id']}").status == 202
    d.wait(blocker["id"], "cancelled")
    got = rx.wait(2)
    states = sorted((json.loads(b)["id"], json.loads(b)["state"]) for _, _, b in got)
    assert states == sorted([(blocker["id"], "cancelled"), (queued_behind["id"], "cancelled")])
    hooks = webhook_events(d, blocker["id"], 1)
    assert hooks[0]["status"] == 204 and hooks[0]["delivered"] is True
    d.wait(plain["id"], "succeeded")
    hooks = webhook_events(d, plain["id"], 0, timeout=0)
    assert hooks == []


def test_webhook_left_undelivered_by_a_killed_daemon_resumes_at_start(make_quantd, receiver, tmp_path):
    rx = receiver([500, 200])
    st = tmp_path / "st"
    args = ("--set", "debug_jobs=true", "--set", "webhook_backoff_ms=60000", "--set", "webhook_attempts=3")
    d = make_quantd(*args, state=st)
    job = d.submit(dict(sleep_spec(0.05), notify=rx.url))
    d.wait(job["id"], "succeeded")
    assert len(rx.wait(1)) == 1
    assert [h["status"] for h in webhook_events(d, job["id"], 1)] == [500]   # next attempt in a minute
    d.kill9()
    d2 = make_quantd(*args, state=st)
    assert len(rx.wait(2)) == 2
    hooks = webhook_events(d2, job["id"], 2)
    assert [(h["attempt"], h["status"], h["delivered"]) for h in hooks] == [(1, 500, False), (2, 200, True)]
    # delivered: the next start has nothing to resend
    d2.stop()
    make_quantd(*args, state=st)
    time.sleep(0.5)
    assert len(rx.got) == 2


@pytest.mark.parametrize("notify, words", [
    (123, "a URL"), ("ftp://example.com/x", "http:// or https://"), ("example.com/hook", "http:// or https://"),
    ("http://", "no host"), ("https:///path", "no host"), ("http://exa mple.com/", "space"),
    ("http://example.com/" + "a" * 2100, "2048"), ("http://bücher.example/", "non-ASCII"),
])
def test_bad_notify_is_400_naming_the_field(quantd, notify, words):
    st, body = quantd.json("POST", "/v1/jobs", dict(sleep_spec(0.05), notify=notify))
    assert st == 400, body
    assert body["error"]["code"] == "invalid_field" and body["error"]["field"] == "notify"
    assert words in body["error"]["message"]
    assert quantd.json("GET", "/v1/jobs")[1]["jobs"] == []


# --- multipart/form-data uploads ----------------------------------------------------------------------

def form(parts, boundary="qd-b0undary"):
    """A multipart/form-data body from (headers, data) parts; returns (body, content type)."""
    body = b""
    for headers, data in parts:
        body += b"--" + boundary.encode() + b"\r\n" + b"".join(h.encode() + b"\r\n" for h in headers) + b"\r\n"
        body += data + b"\r\n"
    return body + b"--" + boundary.encode() + b"--\r\n", f"multipart/form-data; boundary={boundary}"


def file_part(data, field="file", filename="model.onnx"):
    return ([f'Content-Disposition: form-data; name="{field}"; filename="{filename}"',
             "Content-Type: application/octet-stream"], data)


def test_multipart_model_and_dataset_uploads_equal_raw_ones(make_quantd, tmp_path):
    d = make_quantd("--set", "debug_jobs=true")
    onnx = open(MLP, "rb").read()
    body, ct = form([(['Content-Disposition: form-data; name="note"'], b"ignored"), file_part(onnx),
                     (['Content-Disposition: form-data; name="name"'], "ré-net".encode())])
    r = d.request("POST", "/v1/models", body, {"Content-Type": ct})
    assert r.status == 201, r.body
    m = r.json()
    assert m["name"] == "ré-net" and m["size"] == len(onnx) and m["sha256"] == sha256_file(MLP)
    assert sha256_file(os.path.join(d.state_dir, "models", m["id"] + ".onnx")) == m["sha256"]
    # the same file again, raw: the same record (deduplicated by the file's bytes, not the envelope's)
    again = d.upload("models", MLP)
    assert again.status == 200 and again.json()["id"] == m["id"]
    # a data set whose bytes hold the boundary's near misses ("\r\n--qd-b0undar…") and CRLFs
    tricky = np.frombuffer((b"\r\n--qd-b0undar\r\n-\r\r\n--" * 60)[:960], dtype=np.uint8).reshape(96, 10)
    np.save(tmp_path / "t.npy", tricky)
    raw = open(tmp_path / "t.npy", "rb").read()
    body, ct = form([file_part(raw, filename="t.npy")])
    r = d.request("POST", "/v1/datasets?name=t", body, {"Content-Type": ct})
    assert r.status == 201, r.body
    ds = r.json()
    assert ds["name"] == "t" and ds["size"] == len(raw) and ds["sha256"] == hashlib.sha256(raw).hexdigest()
    assert ds["arrays"][0]["shape"] == [96, 10]


def test_multipart_from_curl(make_quantd, tmp_path):
    import shutil
    import subprocess
    if not shutil.which("curl"):
        pytest.skip("no curl")
    d = make_quantd()
    out = subprocess.run(["curl", "-sS", "-F", f"file=@{CLS}", "-F", "name=cls", f"http://127.0.0.1:{d.port}/v1/models"],
                         capture_output=True, check=True)
    m = json.loads(out.stdout)
    assert m["name"] == "cls" and m["sha256"] == sha256_file(CLS) and m["inputs"][0]["shape"] == ["batch", 6]


def test_multipart_streams_to_disk_with_the_upload_limit(make_quantd):
    d = make_quantd("--set", "max_dataset_size=64K")
    big = np.zeros(40000, np.float32)   # 160 kB: over the limit
    import io
    buf = io.BytesIO()
    np.save(buf, big)
    body, ct = form([file_part(buf.getvalue(), filename="x.npy")])
    r = d.request("POST", "/v1/datasets", body, {"Content-Type": ct})
    assert r.status == 413 and r.error()["code"] == "too_large"
    assert files_in(os.path.join(d.state_dir, "tmp")) == []


@pytest.mark.parametrize("ct, body, words", [
    ("multipart/form-data", b"--x\r\n\r\n--x--", "boundary parameter"),
    ("multipart/form-data; boundary=" + "b" * 71, b"", "1 to 70"),
    ('multipart/form-data; boundary="x', b"", "unclosed quote"),
    ("multipart/form-data; boundary=x", b"no boundary line here", "no multipart boundary line"),
    ("multipart/form-data; boundary=x", b'--x\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\nabc',
     "before its closing boundary"),
    ("multipart/form-data; boundary=x", b'--x\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n--x--', "no file"),
    ("multipart/form-data; boundary=x", b"--x\r\nX-Nothing: 1\r\n\r\nabc\r\n--x--", "no Content-Disposition"),
    ("multipart/form-data; boundary=x", b"--x\r\nContent-Disposition: attachment\r\n\r\nabc\r\n--x--", "not form-data"),
    ("multipart/form-data; boundary=x", b"--x\r\nbroken header\r\n\r\nabc\r\n--x--", "Name: value"),
    ("multipart/form-data; boundary=x", b"--xjunk", "neither"),
    ("multipart/form-data; boundary=x", b'--x\r\nContent-Disposition: form-data; name="f"; filename="a"\r\n\r\n1\r\n'
     b'--x\r\nContent-Disposition: form-data; name="g"; filename="b"\r\n\r\n2\r\n--x--', "more than one file"),
    ("multipart/form-data; boundary=x", b"--x\r\n" + b"H: " + b"v" * 9000 + b"\r\n\r\n\r\n--x--", "headers are longer"),
])
def test_malformed_multipart_is_400_saying_why(quantd, ct, body, words):
    r = quantd.request("POST", "/v1/models", body, {"Content-Type": ct})
    assert r.status == 400, (r.status, r.body)
    e = r.error()
    assert e["code"] == "bad_request" and words in e["message"], e
    assert files_in(os.path.join(quantd.state_dir, "tmp")) == []
    assert files_in(os.path.join(quantd.state_dir, "models")) == []


def test_error_codes_in_the_openapi_are_the_servers():
    """Every code api/errors.c can answer is in the Error schema's enum, and nothing else."""
    with open(os.path.join(SRCDIR, "api", "errors.c")) as f:
        codes = set(re.findall(r'\] = \{ "([a-z_]+)", \d{3},', f.read()))
    with open(os.path.join(SRCDIR, "api", "openapi.json")) as f:
        doc = json.load(f)
    enum = doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"]
    assert len(codes) > 20 and set(enum) == codes
