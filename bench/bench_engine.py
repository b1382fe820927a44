#!/usr/bin/env python3
"""Engine speed and memory against ONNX Runtime, on the reference models in tests/fixtures.

    .venv/bin/python bench/bench_engine.py [--quant ./quant] [--models resnet mobilenet vgg mlp]
                                           [--batches 1 64] [--iters 200] [--threads 2] [--repeat 3]

For each model and batch size both engines run the same number of timed iterations on the same
random input after a warm-up, each in its own process so that peak memory is that run's alone:
  ours: `quant bench MODEL --batch N --threads T --iters K --json` (throughput, latency, peak RSS)
  ORT:  this script re-run as a worker (onnxruntime from PyPI, intra_op_num_threads=T,
        inter_op 1, sequential execution) that reports getrusage(RUSAGE_SELF).ru_maxrss.
The ORT worker's peak RSS includes the Python interpreter, numpy and onnxruntime themselves; the
table also shows ORT's peak above its baseline after those imports, which is the fairer number to
hold against our small C binary. Throughput is batch * iterations / (sum of the timed runs) for both;
latency is the median per batch. With --repeat R the runs of the two engines alternate and the best
throughput of R is kept (memory and latency from that same run): on a shared machine, load from
other processes only ever slows a run down. OpenBLAS environment variables (OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE, …) are passed
through untouched — Debian's OpenBLAS may need them — and printed with the results.
"""
import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRCDIR = os.path.dirname(HERE)
ENV_NOTE = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
            "GOTO_NUM_THREADS")


def warmup(iters):
    return max(3, iters // 10)


def ort_worker(model, batch, iters, threads):
    """Runs in its own process: prints one JSON line with ORT's throughput, latency and peak RSS."""
    import numpy as np
    import onnxruntime as ort
    base_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    s = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    inp = s.get_inputs()[0]
    shape = [batch] + [d if isinstance(d, int) else 1 for d in inp.shape[1:]]
    x = np.random.default_rng(0).random(shape, dtype=np.float32)   # [0, 1), as quant bench fills
    feed = {inp.name: x}
    for _ in range(warmup(iters)):
        s.run(None, feed)
    lat = []
    for _ in range(iters):
        t = time.perf_counter()
        s.run(None, feed)
        lat.append(time.perf_counter() - t)
    # Throughput from the summed per-run times, as quant bench computes it.
    total = sum(lat)
    lat.sort()
    print(json.dumps({"samples_per_s": batch * iters / total, "latency_ms": 1e3 * lat[len(lat) // 2],
                      "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                      "baseline_rss_kb": base_kb}))


def spawn(cmd):
    """Runs cmd as a grandchild through sh. Linux carries the peak-RSS high-water mark of a process
    across fork+exec, so a direct child would report this Python process's peak RSS if larger than its
    own; sh is small, and its child's high-water mark starts from sh's. (The trailing `exit` keeps
    sh from exec'ing the command in its own place.)"""
    return subprocess.run(["sh", "-c", '"$@"; exit $?', "sh"] + cmd, capture_output=True, text=True)


def run_ort(model, batch, iters, threads):
    r = spawn([sys.executable, os.path.abspath(__file__), "--ort-worker", model, str(batch),
                        str(iters), str(threads)])
    if r.returncode != 0:
        raise RuntimeError(f"ORT worker failed on {model}: {r.stderr.strip()}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def rss_kb(res):
    """quant bench's peak RSS in KiB, whatever unit its key names."""
    for key, scale in (("peak_rss_kb", 1.0), ("peak_rss_mb", 1024.0), ("peak_rss_bytes", 1 / 1024.0),
                       ("peak_rss", 1 / 1024.0)):
        if key in res:
            return float(res[key]) * scale
    return float("nan")


def run_quant(quant, model, batch, iters, threads):
    cmd = [quant, "bench", model, "--batch", str(batch), "--threads", str(threads), "--iters", str(iters),
           "--warmup", str(warmup(iters)), "--json"]
    r = spawn(cmd)
    if r.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` exited {r.returncode}: {r.stderr.strip()}")
    res = json.loads(r.stdout)
    lat = next((res[k] for k in ("latency_ms", "latency_ms_p50", "latency_median_ms") if k in res), None)
    if isinstance(lat, dict):
        lat = lat.get("p50", lat.get("median", lat.get("mean")))
    return {"samples_per_s": float(res["samples_per_s"]), "latency_ms": float(lat) if lat is not None else float("nan"),
            "peak_rss_kb": rss_kb(res), "raw": res}


def best(runs):
    return max(runs, key=lambda r: r["samples_per_s"])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quant", default=os.path.join(SRCDIR, "quant"))
    ap.add_argument("--fixtures", default=os.path.join(SRCDIR, "tests", "fixtures"))
    ap.add_argument("--models", nargs="+", default=["resnet", "mobilenet", "vgg", "mlp"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 64])
    ap.add_argument("--iters", type=int, default=200, help="timed iterations per run (both engines)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="runs per engine; the fastest is kept")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--ort-worker", nargs=4, metavar=("MODEL", "BATCH", "ITERS", "THREADS"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.ort_worker:
        m, b, k, t = a.ort_worker
        ort_worker(m, int(b), int(k), int(t))
        return 0

    import onnxruntime
    print(f"# {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs; onnxruntime {onnxruntime.__version__}; "
          f"threads {a.threads}, {a.iters} iterations, best of {a.repeat}")
    print("# environment: " + ", ".join(f"{k}={os.environ.get(k, '(unset)')}" for k in ENV_NOTE))
    rows = []
    hdr = (f"{'model':10s} {'batch':>5s} {'quant/s':>9s} {'ORT/s':>9s} {'ratio':>6s} {'quant ms':>9s} "
           f"{'ORT ms':>8s} {'p50 ratio':>9s} {'quant MB':>9s} {'ORT MB':>7s} {'ORT+ MB':>8s} {'mem':>5s} {'mem+':>5s}")
    print(hdr)
    for name in a.models:
        model = os.path.join(a.fixtures, f"{name}.onnx")
        for batch in a.batches:
            iters = a.iters
            qs, os_ = [], []
            for _ in range(a.repeat):   # interleaved, so both engines see the same machine load
                qs.append(run_quant(a.quant, model, batch, iters, a.threads))
                os_.append(run_ort(model, batch, iters, a.threads))
            q, o = best(qs), best(os_)
            qmb, omb = q["peak_rss_kb"] / 1024, o["peak_rss_kb"] / 1024
            oplus = (o["peak_rss_kb"] - o["baseline_rss_kb"]) / 1024
            row = {"model": name, "batch": batch, "iters": iters,
                   "quant_samples_per_s": q["samples_per_s"], "ort_samples_per_s": o["samples_per_s"],
                   "ratio": q["samples_per_s"] / o["samples_per_s"],
                   "quant_latency_ms": q["latency_ms"], "ort_latency_ms": o["latency_ms"],
                   "p50_ratio": o["latency_ms"] / q["latency_ms"],
                   "quant_peak_mb": qmb, "ort_peak_mb": omb, "ort_peak_above_baseline_mb": oplus,
                   "mem_ratio": qmb / omb, "mem_ratio_above_baseline": qmb / oplus if oplus > 0 else float("nan")}
            rows.append(row)
            print(f"{name:10s} {batch:5d} {row['quant_samples_per_s']:9.0f} {row['ort_samples_per_s']:9.0f} "
                  f"{row['ratio']:6.2f} {row['quant_latency_ms']:9.3f} {row['ort_latency_ms']:8.3f} {row['p50_ratio']:9.2f} "
                  f"{qmb:9.1f} {omb:7.1f} {oplus:8.1f} {row['mem_ratio']:5.2f} "
                  f"{row['mem_ratio_above_baseline']:5.2f}", flush=True)
    print("# ratio = quant/ORT throughput (>1: quant faster); ms = median latency per batch; p50 ratio = "
          "ORT ms / quant ms (>1: quant faster; robust to preemption on a shared machine)\n"
          "# mem = quant peak RSS / ORT peak RSS; ORT+ and mem+ count ORT's RSS above its Python+import baseline")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"env": {k: os.environ.get(k) for k in ENV_NOTE}, "threads": a.threads,
                       "iters": a.iters, "repeat": a.repeat, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
