#!/usr/bin/env bash
# Load benchmark of the quantd service (issue 7's evidence), with wrk (Debian package wrk):
#   1. GET /v1/health and GET /v1/jobs/{id}: requests/s and latency percentiles while PTQ jobs run
#      (resnet fixture, 10,000 calibration samples each, one after the other on one worker);
#   2. 100 concurrent SSE clients following one PTQ job from queued to succeeded: all complete,
#      identical logs, delivery delay of live events.
#
#   bench/bench_service.sh [BUILDDIR]      (default: $QD_BUILDDIR, else the source tree)
#   DURATION=10 CONNECTIONS=50 THREADS=2 SSE_CLIENTS=100 bench/bench_service.sh
#
# Prints a Markdown table (paste into docs/benchmarks.md) and the raw wrk outputs.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$(pwd)
B=${1:-${QD_BUILDDIR:-$SRC}}
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-50}
THREADS=${THREADS:-2}
SSE_CLIENTS=${SSE_CLIENTS:-100}
PY=${PYTHON:-python3}
command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk" >&2; exit 1; }
[ -x "$B/quantd" ] || { echo "no $B/quantd: build first" >&2; exit 1; }

STATE=$(mktemp -d /tmp/quantd-bench.XXXXXX)
PORT=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
URL=http://127.0.0.1:$PORT
"$B/quantd" --listen 127.0.0.1:$PORT --state-dir "$STATE/state" --workers 1 --log-level warning \
    --set max_queue=1000 2>"$STATE/quantd.log" &
QPID=$!
cleanup() { kill "$QPID" 2>/dev/null || true; wait "$QPID" 2>/dev/null || true; rm -rf "$STATE"; }
trap cleanup EXIT
for _ in $(seq 100); do curl -sf "$URL/v1/health" >/dev/null && break; sleep 0.05; done

jget() { $PY -c "import json,sys; print(json.load(sys.stdin)$1)"; }
# 10,000 calibration samples shaped like the fixtures' inputs
$PY -c "import numpy as np; np.save('$STATE/calib.npy', np.random.default_rng(0).standard_normal((10000,1,28,28)).astype(np.float32))"
MODEL=$(curl -sf --data-binary @tests/fixtures/resnet.onnx "$URL/v1/models?name=resnet" | jget "['id']")
CALIB=$(curl -sf --data-binary @"$STATE/calib.npy" "$URL/v1/datasets?name=calib" | jget "['id']")
SPEC="{\"type\":\"ptq\",\"model\":\"$MODEL\",\"calibration\":\"$CALIB\",\"config\":{\"calibration\":{\"samples\":10000}}}"
submit() { curl -sf "$URL/v1/jobs" -H 'Content-Type: application/json' -d "$SPEC" | jget "['id']"; }

# enough jobs queued that one is always running during the measurements
FIRST=$(submit)
for _ in $(seq 2 40); do submit >/dev/null; done
for _ in $(seq 200); do
    [ "$(curl -sf "$URL/v1/jobs/$FIRST" | jget "['state']")" != queued ] && break; sleep 0.05
done

# Server-side latency: the delta of quantd's own histogram (quantd_http_request_duration_seconds)
# over a run → the bucket bound below which 99% of that route's requests completed. It leaves out
# the time requests wait in wrk and in the kernel, which on a loaded 2-core machine dominates p99.
hist() { curl -sf "$URL/metrics" | grep "^quantd_http_request_duration_seconds_bucket{method=\"GET\",route=\"$1\"" || true; }
server_p99() {   # before-file after-file → "≤ X ms"
    $PY - "$1" "$2" <<'PYEOF'
import sys
def load(p):
    d = {}
    for line in open(p):
        k, v = line.rsplit(" ", 1)
        d[k.split('le="')[1].split('"')[0]] = float(v)
    return d
a, b = load(sys.argv[1]), load(sys.argv[2])
delta = {k: b[k] - a.get(k, 0) for k in b}
total = delta["+Inf"]
for k in sorted((k for k in delta if k != "+Inf"), key=float):
    if delta[k] >= 0.99 * total:
        print(f"<= {float(k) * 1000:g}ms"); break
else:
    print("> 1000ms")
PYEOF
}

run_wrk() {   # path route → "req/s p50 p99 server-p99" (ms)
    local out
    hist "$2" >"$STATE/h0"
    out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "$URL$1")
    hist "$2" >"$STATE/h1"
    echo "$out" >"$STATE/wrk$(echo "$1" | tr / _).txt"
    echo "$out" >&2
    local rps p50 p99
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p50=$(echo "$out" | awk '$1=="50%" {print $2}')
    p99=$(echo "$out" | awk '$1=="99%" {print $2}')
    echo "$rps $p50 $p99 $(server_p99 "$STATE/h0" "$STATE/h1")"
}
read -r H_RPS H_P50 H_P99 H_SP99 <<<"$(run_wrk /v1/health /v1/health)"
read -r J_RPS J_P50 J_P99 J_SP99 <<<"$(run_wrk "/v1/jobs/$FIRST" "/v1/jobs/{id}")"
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
RUNNING_DURING=$(curl -sf "$URL/v1/health" | jget "['jobs']['running']")
DONE=$(curl -sf "$URL/v1/jobs?state=succeeded&limit=1000" | jget "['jobs'].__len__()")

# 100 followers on a job that has not started yet: they see it queued, running, succeeded
for id in $(curl -sf "$URL/v1/jobs?state=queued&limit=1000" | $PY -c "import json,sys; print(' '.join(j['id'] for j in json.load(sys.stdin)['jobs']))"); do
    curl -sf -X DELETE "$URL/v1/jobs/$id" >/dev/null
done
TARGET=$(submit)
SSE=$($PY bench/sse_clients.py "127.0.0.1:$PORT" "$TARGET" "$SSE_CLIENTS")
echo "$SSE" >&2
JOBSTATE=$(curl -sf "$URL/v1/jobs/$TARGET" | jget "['state']")

cat <<MD

| measurement ($(nproc) cores, load average $LOAD, one PTQ job running throughout) | result |
|---|---|
| GET /v1/health, wrk -t$THREADS -c$CONNECTIONS ${DURATION}s | $H_RPS req/s, p50 $H_P50, p99 $H_P99 (server-side p99 $H_SP99) |
| GET /v1/jobs/{id}, wrk -t$THREADS -c$CONNECTIONS ${DURATION}s | $J_RPS req/s, p50 $J_P50, p99 $J_P99 (server-side p99 $J_SP99) |
| PTQ jobs finished during the two runs (resnet, 10k calibration samples) | $DONE (running at the end: $RUNNING_DURING) |
| $SSE_CLIENTS SSE clients on one PTQ job (queued → $JOBSTATE) | $SSE |
MD
