"""Integration tests of the REST API's housekeeping, as a pipeline author meets it with curl: the
artifact list, upload deduplication, one way of writing shapes, deleting jobs and uploads, retention
(job_retention_days, max_state_bytes), pages and filters of the lists. A real daemon per test
(service_fixtures.py); jobs are mostly the debug type "sleep" (see test_service.py).
"""
import hashlib
import os
import sqlite3
import time

import numpy as np
import pytest

from service_fixtures import (CLS, CLS_X, MLP, files_in, sha256_file, sleep_spec,  # noqa: F401
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
