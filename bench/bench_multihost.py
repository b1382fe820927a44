#!/usr/bin/env python3
"""Throughput of short jobs with 1, 2 and 3 quantd hosts on one PostgreSQL queue (issue 20), and one
host on SQLite as the peer measured in the same run. Prints a Markdown table (jobs per second,
and the ratio to one PostgreSQL host).

    /work/cicheck/.venv/bin/python bench/bench_multihost.py [--jobs 60] [--workload ptq|sleep]

Each host runs one job at a time (workers=1) with one engine thread (engine_threads=1), so a host
is one core's worth of work; the hosts are processes on this machine sharing a PostgreSQL started
for the run (tests/py/pg_cluster.py) and one artifact dir. Jobs are submitted round-robin through
every host as fast as the API takes them; the clock runs from the first submit to the last job's
end. Workloads: `ptq` is the engine's PTQ (preset basic) of the tiny cli classifier
(tests/fixtures/cli), CPU-bound; `sleep` is the debug type sleeping 0.2 s, so its throughput is
that of the queue itself (claims, leases, polls), not of the CPU.
"""
import argparse
import os
import sys
import tempfile
import time

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(SRC, "tests", "py"))
os.environ.setdefault("QD_SRCDIR", SRC)
os.environ.setdefault("QD_BUILDDIR", os.path.join(SRC, "build"))

from pg_cluster import PgCluster  # noqa: E402
from service_fixtures import CLS, CLS_X, CLS_Y, Quantd, quantd_binary  # noqa: E402


def run(n_hosts, url, root, args, tag):
    hosts = []
    common = ["--workers", "1", "--set", "engine_threads=1", "--set", "debug_jobs=true",
              "--set", f"max_queue={args.jobs + 10}", "--log-level", "warning"]
    for i in range(n_hosts):
        extra = ["--set", f"store={url}", "--set", f"artifact_dir={root}/shared",
                 "--set", f"host_id=h{i}", "--set", "poll_interval_ms=200"] if url else []
        hosts.append(Quantd(quantd_binary(), f"{root}/{tag}-h{i}", *(common + extra)).start())
    try:
        h0 = hosts[0]
        m = h0.upload_ok("models", CLS)
        x = h0.upload_ok("datasets", CLS_X)
        y = h0.upload_ok("datasets", CLS_Y)
        if args.workload == "ptq":
            spec = {"type": "ptq", "model": m["id"], "calibration": x["id"],
                    "validation": {"data": x["id"], "labels": y["id"]}, "config": {"preset": "basic"}}
        else:
            spec = {"type": "sleep", "config": {"seconds": 0.2, "artifact_bytes": 100}}
        t0 = time.time()
        ids = [hosts[k % n_hosts].submit(spec)["id"] for k in range(args.jobs)]
        left = set(ids)
        while left:
            st, page = h0.json("GET", f"/v1/jobs?limit={args.jobs + 10}")
            for j in page["jobs"]:
                if j["id"] in left and j["state"] in ("succeeded", "failed", "cancelled"):
                    assert j["state"] == "succeeded", j
                    left.discard(j["id"])
            time.sleep(0.02)
        return args.jobs / (time.time() - t0)
    finally:
        for h in hosts:
            h.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=60)
    ap.add_argument("--workload", choices=("ptq", "sleep"), default="ptq")
    ap.add_argument("--repeat", type=int, default=3, help="rounds; each configuration's median is reported")
    args = ap.parse_args()
    print(f"# {args.jobs} {args.workload} jobs; {os.cpu_count()} CPUs; load {os.getloadavg()[0]:.1f}", file=sys.stderr)
    names = ["1 host, SQLite", "1 host, PostgreSQL", "2 hosts, PostgreSQL", "3 hosts, PostgreSQL"]
    runs = {n: [] for n in names}
    with PgCluster() as pg, tempfile.TemporaryDirectory(prefix="qdbench-") as root:
        for k in range(args.repeat):   # rounds interleave the configurations: load drifts hit all
            runs[names[0]].append(run(1, None, root, args, f"lite{k}"))
            for n in (1, 2, 3):
                url = pg.create_db(f"b{n}r{k}")
                runs[names[n]].append(run(n, url, root, args, f"pg{n}r{k}"))
    med = {n: sorted(v)[len(v) // 2] for n, v in runs.items()}
    base = med[names[1]]
    print(f"| {args.workload} jobs ({args.jobs}) | jobs/s (median of {args.repeat}) | vs 1 host PostgreSQL | runs |")
    print("|---|---:|---:|---|")
    for n in names:
        print(f"| {n} | {med[n]:.2f} | {med[n] / base:.2f}× | {', '.join(f'{r:.1f}' for r in runs[n])} |")


if __name__ == "__main__":
    main()
