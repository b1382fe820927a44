"""Several quantd hosts on one PostgreSQL queue (issue 20): the PostgreSQL store on one host, then
three hosts sharing a database and an artifact dir — every job runs exactly once, a host killed
with -9 mid-job loses its lease and another host finishes the job (resuming from the checkpoint in
the shared dir), a host frozen past its lease records nothing, and a cancellation through one host
reaches the host running the job.

The tests start their own PostgreSQL (tests/py/pg_cluster.py: initdb in a temp dir, a Unix socket,
no TCP). Without Debian's postgresql they skip — but fail under CI=true, where quickstart
installs it. Jobs are the debug type "sleep" (50 ms steps, a checkpoint per step) and the
engine's eval on the tiny cli fixtures; leases are 2 s and hosts poll every 100 ms.
"""
import datetime
import json
import os
import signal
import time

import pytest

from pg_cluster import PgCluster, available
from service_fixtures import CLS, CLS_X, CLS_Y, Quantd, quantd_binary, sleep_spec
from test_service_api import receiver  # noqa: F401 (a fixture: a local webhook receiver)

LEASE_S = 2


@pytest.fixture(scope="module")
def pg():
    if not available():
        msg = "PostgreSQL server binaries not found (Debian package postgresql)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg + "; quickstart installs them in CI")
        pytest.skip(msg)
    with PgCluster() as c:
        yield c


_dbs = [0]


@pytest.fixture
def hosts(pg, tmp_path):
    """hosts(n) → n started quantd on a fresh database and one shared artifact dir."""
    started = []
    _dbs[0] += 1
    name = f"t{_dbs[0]}"
    url = pg.create_db(name)
    shared = tmp_path / "shared"

    def make(n, workers=1, start=True):
        out = []
        for i in range(n):
            h = Quantd(quantd_binary(), tmp_path / f"host{len(started)}", "--workers", str(workers),
                       "--set", f"store={url}", "--set", f"artifact_dir={shared}",
                       "--set", f"host_id=h{len(started)}", "--set", f"lease_seconds={LEASE_S}",
                       "--set", "poll_interval_ms=100", "--set", "debug_jobs=true")
            started.append(h)
            out.append(h.start() if start else h)
        return out

    make.db = name
    make.shared = shared
    yield make
    for h in started:
        try:
            if h.proc and h.proc.poll() is None:
                h.proc.send_signal(signal.SIGCONT)
            h.stop()
        except Exception:
            pass


def state_events(h, jid):
    _, _, events, _ = h.events(jid)
    return events, [e[2] for e in events if e[1] == "state"]


def wait_all(h, ids, timeout=120):
    deadline = time.time() + timeout
    left = set(ids)
    while left and time.time() < deadline:
        st, page = h.json("GET", "/v1/jobs?limit=200")
        assert st == 200
        for j in page["jobs"]:
            if j["id"] in left and j["state"] in ("succeeded", "failed", "cancelled"):
                left.discard(j["id"])
        time.sleep(0.1)
    assert not left, f"{len(left)} jobs unfinished"


def fulllog(h):
    with open(h.log_path, "rb") as f:
        return f.read().decode(errors="replace")


def no_store_errors(*hs):
    for h in hs:
        log = fulllog(h)
        assert "postgresql:" not in log and "store:" not in log.replace("store: schema migrated", ""), log


def test_postgres_store_on_one_host(hosts, pg, tmp_path):
    """The API on a PostgreSQL store: uploads, an engine job with its artifacts, pages and filters,
    deletion, migrations once, and the records still there after a restart."""
    (h,) = hosts(1)
    assert "schema migrated to version 2" in h.logtext()
    assert pg.psql(hosts.db, "SELECT version FROM schema_version ORDER BY version") == [["1"], ["2"]]
    m = h.upload_ok("models", CLS)
    x = h.upload_ok("datasets", CLS_X)
    y = h.upload_ok("datasets", CLS_Y)
    again = h.upload("models", CLS)
    assert again.status == 200 and again.json()["id"] == m["id"]   # dedup by sha256
    job = h.submit({"type": "eval", "name": "pg-eval", "model": m["id"],
                    "validation": {"data": x["id"], "labels": y["id"]}})
    j = h.wait(job["id"], ("succeeded", "failed"), timeout=60)
    assert j["state"] == "succeeded", j["error"]
    assert j["result"]["accuracy"] == pytest.approx(0.75)   # tests/fixtures/make_cli_models.py
    events, states = state_events(h, job["id"])
    assert [s["state"] for s in states] == ["queued", "running", "succeeded"]
    assert [e[0] for e in events] == list(range(1, len(events) + 1))   # the per-job sequence
    assert states[1]["host"] == "h0"
    report = next(a for a in j["artifacts"] if a["name"] == "report.json")
    assert json.loads(h.request("GET", report["url"]).body)["accuracy"] == pytest.approx(0.75)
    st, arts = h.json("GET", f"/v1/jobs/{job['id']}/artifacts")
    assert st == 200 and {a["name"] for a in arts["artifacts"]} >= {"report.json"}

    for k in range(3):
        h.submit(sleep_spec(0.05, artifact_bytes=10))
    wait_all(h, [r["id"] for r in h.json("GET", "/v1/jobs")[1]["jobs"]])
    st, page = h.json("GET", "/v1/jobs?limit=2")
    assert st == 200 and len(page["jobs"]) == 2 and page["next"]
    st, rest = h.json("GET", f"/v1/jobs?limit=10&after={page['next']}")
    assert [j["id"] for j in rest["jobs"]][-1] == job["id"] and len(rest["jobs"]) == 2
    st, named = h.json("GET", "/v1/jobs?name=pg-eval")
    assert [j["id"] for j in named["jobs"]] == [job["id"]]
    st, typed = h.json("GET", "/v1/jobs?type=sleep&state=succeeded")
    assert len(typed["jobs"]) == 3
    st, ups = h.json("GET", "/v1/datasets?limit=1")
    assert st == 200 and ups["datasets"][0]["id"] == y["id"] and ups["next"]

    victim = typed["jobs"][0]["id"]
    assert h.request("DELETE", f"/v1/jobs/{victim}").status == 204
    assert h.request("GET", f"/v1/jobs/{victim}").status == 404
    assert not os.path.exists(hosts.shared / "jobs" / victim)

    h.stop()
    h.start()
    assert "schema migrated" not in fulllog(h).split("listening on")[-1]
    assert h.job(job["id"])["state"] == "succeeded"
    no_store_errors(h)


def test_fifty_jobs_on_three_hosts_run_exactly_once(hosts):
    """50 short jobs submitted round-robin through 3 hosts: each runs once (one claim, one running
    and one final state event, attempts 1), the hosts share the work, and any host serves any
    job's artifacts (the shared artifact dir)."""
    hs = hosts(3)
    m = hs[0].upload_ok("models", CLS)
    x = hs[1].upload_ok("datasets", CLS_X)
    y = hs[2].upload_ok("datasets", CLS_Y)
    ids = []
    for i in range(50):
        h = hs[i % 3]
        if i % 5 == 0:
            spec = {"type": "eval", "model": m["id"], "validation": {"data": x["id"], "labels": y["id"]}}
        else:
            spec = sleep_spec(0.05 * (1 + i % 3), artifact_bytes=1000 + i)
        ids.append(h.submit(spec)["id"])
    wait_all(hs[0], ids)
    ran_on = {}
    for i, jid in enumerate(ids):
        h = hs[(i + 1) % 3]
        j = h.job(jid)
        assert j["state"] == "succeeded" and j["attempts"] == 1, j
        events, states = state_events(h, jid)
        assert [s["state"] for s in states] == ["queued", "running", "succeeded"], states
        assert [e[0] for e in events] == list(range(1, len(events) + 1))
        ran_on[jid] = states[1]["host"]
        art = j["artifacts"][0]
        body = hs[i % 3].request("GET", art["url"]).body
        assert len(body) == art["size"]
    started = sum(fulllog(h).count(") started") for h in hs)
    assert started == 50
    by_host = {n: list(ran_on.values()).count(n) for n in ("h0", "h1", "h2")}
    assert all(v > 0 for v in by_host.values()), by_host
    no_store_errors(*hs)


def running_host(hs, jid, timeout=20):
    """The host that runs the job, once its progress shows."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        j = hs[0].job(jid)
        if j["state"] == "running" and j["progress"] and j["progress"]["done"] >= 3:
            _, states = state_events_until(hs[0], jid)
            return hs[int(states[-1]["host"][1:])]   # host_id h<i> is hs[i]
        time.sleep(0.05)
    raise AssertionError(f"job {jid} never ran: {hs[0].job(jid)}")


def state_events_until(h, jid):
    """The state events so far of a live job (the stream read with a short timeout)."""
    c = h.conn(2)
    c.request("GET", f"/v1/jobs/{jid}/events", headers={"Accept": "text/event-stream"})
    r = c.getresponse()
    states, ev = [], {}
    until = time.time() + 1   # a running job's stream never ends: read what is there
    try:
        while time.time() < until:
            line = r.readline().decode().rstrip("\n")
            if line == "":
                if ev.get("event") == "state":
                    states.append(json.loads(ev["data"]))
                ev = {}
                continue
            if not line.startswith(":"):
                k, _, v = line.partition(": ")
                ev[k] = v
    except OSError:   # the timeout: the job is still running
        pass
    c.close()
    return None, states


def test_kill9_host_mid_job_another_finishes_it(hosts):
    """kill -9 of the host running a job: once the lease expires another host requeues it and runs
    it to the end, resuming from the checkpoint the dead host left in the shared artifact dir."""
    hs = hosts(3)
    jid = hs[0].submit(sleep_spec(3.0, artifact_bytes=100))["id"]
    victim = running_host(hs, jid)
    victim.kill9()
    killed_at = time.time()
    alive = [h for h in hs if h is not victim]
    j = alive[0].wait(jid, ("succeeded", "failed", "cancelled"), timeout=30)
    assert j["state"] == "succeeded", (j, alive[0].logtext())
    assert j["attempts"] == 2
    assert j["result"]["resumed_from"] >= 3, j["result"]   # the dead host's checkpoint
    _, states = state_events(alive[1], jid)
    assert [s["state"] for s in states] == ["queued", "running", "queued", "running", "succeeded"], states
    requeued_at = datetime.datetime.fromisoformat(states[2]["ts"].replace("Z", "+00:00")).timestamp()
    assert requeued_at - killed_at < LEASE_S + 3   # the lease, a poll, and slack for a loaded machine
    dead = f"h{hs.index(victim)}"
    assert states[1]["host"] == dead and states[3]["host"] != dead
    assert "lease of host " + dead + " expired" in states[2]["reason"]
    no_store_errors(*alive)


def test_frozen_host_past_its_lease_records_nothing(hosts):
    """A host stopped (SIGSTOP: a network cut, a long pause) past its lease: another host takes the
    job over; when the first wakes up it finds its lease gone, stops, and writes neither the job's
    end nor its files — the job ends once, by the new owner."""
    hs = hosts(2)
    jid = hs[0].submit(sleep_spec(2.0, artifact_bytes=100))["id"]
    owner = running_host(hs, jid)
    other = hs[1] if owner is hs[0] else hs[0]
    owner.proc.send_signal(signal.SIGSTOP)
    j = other.wait(jid, ("running",), timeout=10)
    deadline = time.time() + LEASE_S + 5
    while time.time() < deadline:
        _, states = state_events_until(other, jid)
        if len(states) >= 4:
            break
        time.sleep(0.1)
    assert [s["state"] for s in states][:4] == ["queued", "running", "queued", "running"], states
    owner.proc.send_signal(signal.SIGCONT)
    j = other.wait(jid, ("succeeded", "failed", "cancelled"), timeout=30)
    assert j["state"] == "succeeded"
    time.sleep(0.5)   # the woken host's next poll has happened
    _, states = state_events(other, jid)
    assert [s["state"] for s in states] == ["queued", "running", "queued", "running", "succeeded"], states
    log = fulllog(owner)
    assert "taken over by another host" in log or "its lease was lost" in log, log
    assert owner.job(jid)["state"] == "succeeded"


def test_cancel_through_another_host(hosts):
    """DELETE through a host that does not run the job: the running host reads the request back at
    its next lease renewal and cancels; a queued job is cancelled by any host at once."""
    hs = hosts(3)
    jid = hs[0].submit(sleep_spec(20.0))["id"]
    owner = running_host(hs, jid)
    other = next(h for h in hs if h is not owner)
    r = other.request("DELETE", f"/v1/jobs/{jid}")
    assert r.status == 202, r.body
    t0 = time.time()
    j = other.wait(jid, ("succeeded", "failed", "cancelled"), timeout=10)
    assert j["state"] == "cancelled" and time.time() - t0 < 3
    assert "cancelled through another host" in fulllog(owner)
    assert other.request("DELETE", f"/v1/jobs/{jid}").status == 204   # finished: deleted
    no_store_errors(*hs)


def test_cancel_asked_while_the_running_host_is_dead(hosts, receiver):
    """The host running a job is killed, and the job is cancelled through another host before the
    lease expires: the job ends cancelled when the lease expires (not run again), and its webhook
    is delivered by the host that ended it."""
    hs = hosts(2)
    rx = receiver([200])
    jid = hs[0].submit(dict(sleep_spec(20.0), notify=rx.url))["id"]
    owner = running_host(hs, jid)
    other = hs[1] if owner is hs[0] else hs[0]
    owner.kill9()
    assert other.request("DELETE", f"/v1/jobs/{jid}").status == 202
    j = other.wait(jid, ("succeeded", "failed", "cancelled"), timeout=LEASE_S + 5)
    assert j["state"] == "cancelled" and j["attempts"] == 1, j
    _, states = state_events(other, jid)
    assert [s["state"] for s in states] == ["queued", "running", "cancelled"], states
    assert "cancelled: the lease of host" in states[2]["reason"]
    got = rx.wait(1)
    assert len(got) == 1 and json.loads(got[0][2])["state"] == "cancelled"
