#!/usr/bin/env python3
"""Engine speed and memory against ONNX Runtime, on the reference models in tests/fixtures.

    .venv/bin/python bench/bench_engine.py [--quant ./quant] [--models resnet mobilenet vgg mlp]
                                           [--batches 1 64] [--iters 200] [--threads 2] [--repeat 3]
                                           [--median] [--profile] [--sgemm] [--torchvision]

--torchvision: the torchvision models at 224x224 that bench/fetch_models.py put in the model cache
(${QD_MODEL_CACHE:-~/.cache/quantd/models}/torchvision, or --fixtures DIR) instead of the fixtures.
--profile: one more run of each engine per row, timing each layer type (`quant bench --profile`;
ORT's own profiler, by its op type, which names its fused kernels: FusedConv is Conv+activation).
--sgemm: this machine's sgemm GFLOP/s, measured by timing a single MatMul [1024,1024]x[1024,1024]
through both engines (quant calls OpenBLAS's sgemm, split over its threads as the convolutions do),
so a Conv layer type's GFLOP/s in the profile can be read as a fraction of it.
--median: the median of the repeated runs instead of the fastest (on a machine shared with other
jobs the fastest is luck as much as speed).

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


def ort_profile(path, passes):
    """ORT's profile file: kernel time per op type per pass, {op: [nodes, ms]} (the warm-up's events
    are in the file too: the last `passes` runs' share is taken by counting each node's events)."""
    with open(path) as f:
        events = json.load(f)
    os.unlink(path)
    per = {}
    for ev in events:
        if ev.get("cat") != "Node" or not ev.get("name", "").endswith("_kernel_time"):
            continue
        op = ev.get("args", {}).get("op_name", "?")
        per.setdefault(op, {}).setdefault(ev["name"], []).append(ev["dur"] / 1e3)
    out = {}
    for op, nodes in per.items():
        ms = sum(sum(d[-passes:]) for d in nodes.values()) / passes
        out[op] = [len(nodes), ms]
    return out


def ort_worker(model, batch, iters, threads, profile=False):
    """Runs in its own process: prints one JSON line with ORT's throughput, latency and peak RSS."""
    import numpy as np
    import onnxruntime as ort
    base_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if profile:
        so.enable_profiling = True
        so.profile_file_prefix = f"/tmp/bench_engine_ort_{os.getpid()}"
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
    res = {"samples_per_s": batch * iters / total, "latency_ms": 1e3 * lat[len(lat) // 2],
           "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "baseline_rss_kb": base_kb}
    if profile:
        res["profile"] = ort_profile(s.end_profiling(), iters)
    print(json.dumps(res))


def spawn(cmd):
    """Runs cmd as a grandchild through sh. Linux carries the peak-RSS high-water mark of a process
    across fork+exec, so a direct child would report this Python process's peak RSS if larger than its
    own; sh is small, and its child's high-water mark starts from sh's. (The trailing `exit` keeps
    sh from exec'ing the command in its own place.)"""
    return subprocess.run(["sh", "-c", '"$@"; exit $?', "sh"] + cmd, capture_output=True, text=True)


def run_ort(model, batch, iters, threads, profile=False):
    r = spawn([sys.executable, os.path.abspath(__file__), "--ort-worker", model, str(batch),
                        str(iters), str(threads)] + (["--ort-profile"] if profile else []))
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


def run_quant(quant, model, batch, iters, threads, profile=False):
    cmd = [quant, "bench", model, "--batch", str(batch), "--threads", str(threads), "--iters", str(iters),
           "--warmup", str(warmup(iters)), "--json"] + (["--profile"] if profile else [])
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


def median(runs):
    """the run with the median throughput (the lower middle one of an even count)"""
    return sorted(runs, key=lambda r: r["samples_per_s"])[(len(runs) - 1) // 2]


TORCHVISION = ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0"]


def model_cache():
    return os.environ.get("QD_MODEL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "quantd", "models")


def sgemm_model(path, n=1024):
    """a single MatMul x[N, n] · W[n, n], written without the onnx package"""
    import numpy as np
    sys.path.insert(0, os.path.join(SRCDIR, "tests", "py"))
    from onnx_build import Graph
    g = Graph("sgemm")
    g.input("x", np.float32, ["N", n])
    g.init("W", np.random.default_rng(0).standard_normal((n, n)).astype(np.float32))
    g.node("MatMul", ["x", "W"], ["y"])
    g.output("y", np.float32, ["N", n])
    g.save(path, opset=13)


def measure_sgemm(a, n=1024):
    """GFLOP/s of one [n,n]x[n,n] product through each engine (median of the repeats)"""
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "sgemm.onnx")
        sgemm_model(path, n)
        iters = 20
        qs = [run_quant(a.quant, path, n, iters, a.threads) for _ in range(a.repeat)]
        os_ = [run_ort(path, n, iters, a.threads) for _ in range(a.repeat)]
    flop = 2.0 * n ** 3
    gf = lambda r: flop / n * r["samples_per_s"] / 1e9   # samples/s · flop per sample
    return {"n": n, "quant_gflops": gf(median(qs)), "ort_gflops": gf(median(os_)),
            "quant_runs": [gf(r) for r in qs], "ort_runs": [gf(r) for r in os_]}


def print_profile(name, batch, q, o, sgemm):
    tot = sum(r["ms"] for r in q)
    print(f"## {name} batch {batch}: time per layer type (one profiled run each)")
    print(f"#   {'quant layer':18s} {'nodes':>5s} {'ms':>9s} {'share':>6s} {'GFLOP/s':>8s} {'of sgemm':>8s}")
    for r in q:
        gfs = r.get("gflops")
        frac = f"{gfs / sgemm:8.2f}" if gfs and sgemm else f"{'':8s}"
        gcol = f"{gfs:8.1f}" if gfs else f"{'':8s}"
        print(f"#   {r['layer']:18s} {r['nodes']:5d} {r['ms']:9.2f} {100 * r['ms'] / tot:5.1f}% {gcol} {frac}")
    otot = sum(v[1] for v in o.values())
    print(f"#   {'ORT op':18s} {'nodes':>5s} {'ms':>9s} {'share':>6s}")
    for op, (nodes, ms) in sorted(o.items(), key=lambda kv: -kv[1][1]):
        print(f"#   {op:18s} {nodes:5d} {ms:9.2f} {100 * ms / otot:5.1f}%")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quant", default=os.path.join(SRCDIR, "quant"))
    ap.add_argument("--fixtures", default=os.path.join(SRCDIR, "tests", "fixtures"))
    ap.add_argument("--models", nargs="+", default=["resnet", "mobilenet", "vgg", "mlp"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 64])
    ap.add_argument("--iters", type=int, default=200, help="timed iterations per run (both engines)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="runs per engine; the fastest is kept")
    ap.add_argument("--median", action="store_true", help="keep the median run, not the fastest")
    ap.add_argument("--torchvision", action="store_true",
                    help="the torchvision models at 224 from the model cache (default models: " +
                         " ".join(TORCHVISION) + ")")
    ap.add_argument("--profile", action="store_true", help="also time each layer type (one more run each)")
    ap.add_argument("--sgemm", action="store_true", help="also measure sgemm GFLOP/s (a 1024^3 MatMul)")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--ort-worker", nargs=4, metavar=("MODEL", "BATCH", "ITERS", "THREADS"), help=argparse.SUPPRESS)
    ap.add_argument("--ort-profile", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.ort_worker:
        m, b, k, t = a.ort_worker
        ort_worker(m, int(b), int(k), int(t), a.ort_profile)
        return 0
    if a.torchvision:
        if a.fixtures == os.path.join(SRCDIR, "tests", "fixtures"):
            a.fixtures = os.path.join(model_cache(), "torchvision")
        if a.models == ["resnet", "mobilenet", "vgg", "mlp"]:
            a.models = TORCHVISION
    pick = median if a.median else best

    import onnxruntime
    print(f"# {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs; onnxruntime {onnxruntime.__version__}; "
          f"threads {a.threads}, {a.iters} iterations, {'median' if a.median else 'best'} of {a.repeat}; "
          f"load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print("# environment: " + ", ".join(f"{k}={os.environ.get(k, '(unset)')}" for k in ENV_NOTE))
    rows = []
    sgemm = None
    if a.sgemm:
        sgemm = measure_sgemm(a)
        print(f"# sgemm [1024x1024]x[1024x1024], {a.threads} threads: quant (OpenBLAS) {sgemm['quant_gflops']:.1f} "
              f"GFLOP/s, ORT (MLAS) {sgemm['ort_gflops']:.1f} GFLOP/s (median of {a.repeat}: quant "
              f"{' '.join(f'{v:.0f}' for v in sgemm['quant_runs'])}, ORT {' '.join(f'{v:.0f}' for v in sgemm['ort_runs'])})")
    hdr = (f"{'model':18s} {'batch':>5s} {'quant/s':>9s} {'ORT/s':>9s} {'ratio':>6s} {'quant ms':>9s} "
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
            q, o = pick(qs), pick(os_)
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
            print(f"{name:18s} {batch:5d} {row['quant_samples_per_s']:9.0f} {row['ort_samples_per_s']:9.0f} "
                  f"{row['ratio']:6.2f} {row['quant_latency_ms']:9.3f} {row['ort_latency_ms']:8.3f} {row['p50_ratio']:9.2f} "
                  f"{qmb:9.1f} {omb:7.1f} {oplus:8.1f} {row['mem_ratio']:5.2f} "
                  f"{row['mem_ratio_above_baseline']:5.2f}", flush=True)
            row["quant_runs"] = [r["samples_per_s"] for r in qs]
            row["ort_runs"] = [r["samples_per_s"] for r in os_]
            if a.profile:
                qp = run_quant(a.quant, model, batch, iters, a.threads, profile=True)["raw"].get("profile", [])
                op = run_ort(model, batch, iters, a.threads, profile=True).get("profile", {})
                row["quant_profile"], row["ort_profile"] = qp, op
                print_profile(name, batch, qp, op, sgemm["quant_gflops"] if sgemm else None)
                print(hdr)
    print("# ratio = quant/ORT throughput (>1: quant faster); ms = median latency per batch; p50 ratio = "
          "ORT ms / quant ms (>1: quant faster; robust to preemption on a shared machine)\n"
          "# mem = quant peak RSS / ORT peak RSS; ORT+ and mem+ count ORT's RSS above its Python+import baseline")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"env": {k: os.environ.get(k) for k in ENV_NOTE}, "threads": a.threads,
                       "iters": a.iters, "repeat": a.repeat, "stat": "median" if a.median else "best",
                       "sgemm": sgemm, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
