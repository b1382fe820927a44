#!/usr/bin/env python3
"""CPU seconds per forward pass, quant vs ONNX Runtime, one thread: a measure that the load of a
shared machine disturbs far less than the wall clock (a process waiting for a core uses none).

    .venv/bin/python bench/bench_cputime.py [--quant build/quant] [--batches 1 32] [--short 1 --long 3]
                                            [--also-env QUANT_CONV_DNNL=0] MODEL.onnx...

Each engine runs the model twice in its own process (bench_engine.py's ORT worker, `quant bench`),
with `short` and `long` timed passes after one warm-up; the difference of the two processes' CPU time
(getrusage of the children: user + system) divided by long − short is the CPU time of one pass, free
of start-up, import, session and plan costs. GFLOP/s per CPU-second uses `quant info`'s FLOPs.
"""
import argparse
import json
import os
import resource
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def cpu_of(cmd, env=None):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode:
        sys.exit(f"`{' '.join(cmd)}` failed: {r.stderr[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def per_pass(make_cmd, short, long, env=None):
    return (cpu_of(make_cmd(long), env) - cpu_of(make_cmd(short), env)) / (long - short)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--quant", default=os.path.join(os.path.dirname(HERE), "quant"))
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    ap.add_argument("--short", type=int, default=1)
    ap.add_argument("--long", type=int, default=3)
    ap.add_argument("--also-env", metavar="NAME=VALUE")
    a = ap.parse_args()
    alt = None
    if a.also_env:
        k, _, v = a.also_env.partition("=")
        alt = dict(os.environ, **{k: v})
    print(f"{'model':20s} {'batch':>5s} {'quant s':>8s} {'ORT s':>8s} {'ratio':>6s} {'quant GF/s':>10s} {'ORT GF/s':>9s}"
          + (f"   with {a.also_env}: {'quant s':>8s} {'ratio':>6s}" if alt else ""))
    for m in a.models:
        info = json.loads(subprocess.run([a.quant, "info", m, "--json"], capture_output=True, text=True).stdout)
        for b in a.batches:
            qcmd = lambda k: [a.quant, "bench", m, "--batch", str(b), "--threads", "1", "--iters", str(k),
                              "--warmup", "1", "--json"]
            q = per_pass(qcmd, a.short, a.long)
            o = per_pass(lambda k: [sys.executable, os.path.join(HERE, "bench_engine.py"), "--ort-worker", m, str(b),
                                    str(k), "1", "--warmup", "1"], a.short, a.long)
            gf = (info.get("flops") or 0) * b / 1e9
            name = os.path.basename(m).rsplit(".", 1)[0]
            extra = ""
            if alt:
                q2 = per_pass(qcmd, a.short, a.long, alt)
                extra = f"   {'':>{len(a.also_env) + 6}s} {q2:8.3f} {o / q2:6.2f}"
            print(f"{name:20s} {b:5d} {q:8.3f} {o:8.3f} {o / q:6.2f} {gf / q:10.1f} {gf / o:9.1f}{extra}", flush=True)
    print("# CPU seconds per pass, one thread; ratio = ORT / quant (>1: quant needs less CPU)")


if __name__ == "__main__":
    main()
