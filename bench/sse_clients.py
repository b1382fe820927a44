#!/usr/bin/env python3
"""N concurrent Server-Sent-Events clients on one job (bench/bench_service.sh uses it).

    sse_clients.py HOST:PORT JOB_ID [N]

Each client follows GET /v1/jobs/{id}/events from the start to the end of the stream. Prints one
JSON object: clients, how many got the whole log and identical logs, events per client, and the
delivery delay (client receipt time minus the event's server timestamp) p50/p99/max in ms —
live events only (those replayed at connect time are excluded by a 50 ms-after-connect cut).
Standard library only."""
import http.client
import json
import sys
import threading
import time
from datetime import datetime, timezone


def parse_ts(s):
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


def follow(host, port, job, out, i, barrier):
    c = http.client.HTTPConnection(host, port, timeout=600)
    barrier.wait()
    t_connect = time.time()
    c.request("GET", f"/v1/jobs/{job}/events")
    r = c.getresponse()
    events, delays, ev = [], [], {}
    while True:
        line = r.readline()
        if not line:
            break
        now = time.time()
        line = line.decode().rstrip("\n")
        if not line:
            if "data" in ev:
                d = json.loads(ev["data"])
                events.append((int(ev["id"]), ev["event"]))
                ts = parse_ts(d["ts"])
                if ts > t_connect + 0.05:
                    delays.append(now - ts)
            ev = {}
            continue
        if line.startswith(":"):
            continue
        k, _, v = line.partition(": ")
        ev[k] = v
    c.close()
    out[i] = (r.status, events, delays)


def main():
    hostport, job = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 100
    host, port = hostport.rsplit(":", 1)
    out = [None] * n
    barrier = threading.Barrier(n)
    threads = [threading.Thread(target=follow, args=(host, int(port), job, out, i, barrier)) for i in range(n)]
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    delays = sorted(d for o in out if o for d in o[2])
    logs = [o[1] for o in out if o and o[0] == 200]
    complete = [l for l in logs if l and l[-1][1] == "state" and [e[0] for e in l] == list(range(1, len(l) + 1))]

    def pct(p):
        return round(1000 * delays[min(len(delays) - 1, int(p * len(delays)))], 2) if delays else None
    print(json.dumps({
        "clients": n, "complete": len(complete), "identical": len(logs) == n and all(l == logs[0] for l in logs),
        "events_per_client": len(logs[0]) if logs else 0, "live_deliveries": len(delays),
        "delay_ms_p50": pct(0.5), "delay_ms_p99": pct(0.99), "delay_ms_max": round(1000 * delays[-1], 2) if delays else None,
        "seconds": round(time.time() - t0, 2)}))


if __name__ == "__main__":
    main()
