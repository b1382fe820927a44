#!/usr/bin/env python3
"""CPU milliseconds per forward pass of several quant builds and ONNX Runtime, one thread, in one run:
the before/after of an engine change on a shared machine, with the peer measured alongside.

    .venv/bin/python bench/bench_builds.py --quant OLD/quant NEW/quant [--batch 1] [--short 5 --long 105]
                                           [--repeat 3] MODEL.onnx...

Each engine's time per pass is bench_cputime.py's: the difference of two processes' CPU time (short
and long timed passes after one warm-up) over long − short, so start-up, import and plan costs drop
out. Rows go model by model and repeat by repeat, the engines one after the other, so that all see
the same load; the last lines give each engine's median per model and ORT / quant (> 1: quant needs
less CPU). Set QUANT_CONV_DNNL=0 in the environment to time the builds' own convolution paths.
"""
import argparse
import os
import statistics
import sys

from bench_cputime import per_pass

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--quant", nargs="+", required=True)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--short", type=int, default=5)
    ap.add_argument("--long", type=int, default=105)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    names = [f"quant{i}" for i in range(len(a.quant))] + ["ORT"]
    for i, q in enumerate(a.quant):
        print(f"# quant{i} = {q}")
    print(f"{'model':20s} {'run':>3s} " + " ".join(f"{n:>9s}" for n in names) + "   (CPU ms per pass)")
    med = {}
    for m in a.models:
        name = os.path.basename(m).rsplit(".", 1)[0]
        runs = [[] for _ in names]
        for r in range(a.repeat):
            for i, q in enumerate(a.quant):
                runs[i].append(1e3 * per_pass(lambda k: [q, "bench", m, "--batch", str(a.batch), "--threads", "1",
                                                         "--iters", str(k), "--warmup", "1", "--json"],
                                              a.short, a.long))
            runs[-1].append(1e3 * per_pass(lambda k: [sys.executable, os.path.join(HERE, "bench_engine.py"),
                                                      "--ort-worker", m, str(a.batch), str(k), "1", "--warmup", "1"],
                                           a.short, a.long))
            print(f"{name:20s} {r + 1:3d} " + " ".join(f"{t[-1]:9.3f}" for t in runs), flush=True)
        med[name] = [statistics.median(t) for t in runs]
    print(f"# medians, batch {a.batch}; ORT / quant per build")
    for name, t in med.items():
        print(f"{name:20s} med " + " ".join(f"{v:9.3f}" for v in t) + "   ORT/quant " +
              " ".join(f"{t[-1] / v:5.2f}" for v in t[:-1]))


if __name__ == "__main__":
    main()
