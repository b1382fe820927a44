#!/usr/bin/env python3
"""Calibration cost and memory of `quant ptq` (issue 4): calibration throughput (samples/s) with 1k and
20k calibration samples beside FP32 inference throughput of the same model at the same batch, and
peak memory, which must not grow with the number of samples.

Peak memory is sampled from /proc/PID/status while quant runs: VmHWM (peak resident, which also
counts the pages of the memory-mapped calibration file the kernel keeps resident — reclaimable page
cache, not allocations) and the peak of RssAnon (anonymous memory: what quant itself allocated).

    .venv/bin/python bench/bench_calibration.py [--build DIR] [--models resnet,mobilenet] [--repeat R]

With --repeat R (default 3) every measurement is taken R times and the median is reported (on a
machine shared with other work single runs vary by tens of percent); peak memory is the largest.

Needs numpy and Debian's dataset-fashion-mnist (training split as calibration data).
"""
import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FASHION = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"


def images(n):
    with gzip.open(FASHION, "rb") as f:
        raw = f.read()
    x = np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 1, 28, 28)[:n].astype(np.float32)
    return ((x / np.float32(255) - np.float32(0.2860)) / np.float32(0.3530)).astype(np.float32)


def run_sampled(cmd):
    """Runs cmd, sampling VmHWM and RssAnon every 20 ms; returns (stdout, peak_rss_mb, peak_anon_mb)."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    hwm = anon = 0
    while p.poll() is None:
        try:
            with open(f"/proc/{p.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        hwm = max(hwm, int(line.split()[1]))
                    elif line.startswith("RssAnon:"):
                        anon = max(anon, int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.02)
    out, err = p.communicate()
    if p.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{err}")
    return out, hwm / 1024, anon / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.environ.get("QD_BUILDDIR", SRC))
    ap.add_argument("--models", default="resnet,mobilenet")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    quant = os.path.join(args.build, "quant")
    tmp = tempfile.mkdtemp(prefix="qd-calib-")
    calib = os.path.join(tmp, "calib.npy")
    np.save(calib, images(20000))
    print(f"threads: OpenBLAS default (2 cores); OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '-')}")
    print(f"{'model':10} {'samples':>7} {'calib s':>8} {'calib/s':>9} {'infer/s':>9} {'ratio':>6} "
          f"{'peak RSS':>9} {'peak anon':>9}")
    for m in args.models.split(","):
        model = os.path.join(SRC, "tests", "fixtures", f"{m}.onnx")
        def infer_rate():
            bench = json.loads(subprocess.run([quant, "bench", model, "--batch", str(args.batch), "--iters", "50",
                                               "--json"], capture_output=True, text=True, check=True).stdout)
            return bench["samples_per_s"]
        for n in (1000, 20000):
            out_dir = os.path.join(tmp, f"{m}-{n}")
            # the basic preset: calibration is the only data pass besides the short SQNR pass
            cmd = [quant, "ptq", model, "--calib", calib, "--calib-samples", str(n), "--batch", str(args.batch),
                   "--preset", "basic", "--arange", "mse", "-o", out_dir, "--json"]
            times, rates, rss, anon = [], [], 0, 0
            for _ in range(max(1, args.repeat)):   # interleaved, so both see the same machine load
                rates.append(infer_rate())
                _, r, a = run_sampled(cmd)
                rss, anon = max(rss, r), max(anon, a)
                rep = json.load(open(os.path.join(out_dir, "report.json")))
                times.append(rep["timings"]["calibration"])
            secs, infer = statistics.median(times), statistics.median(rates)
            print(f"{m:10} {n:7d} {secs:8.2f} {n / secs:9.0f} {infer:9.0f} {infer / (n / secs):6.2f} "
                  f"{rss:8.0f}M {anon:8.0f}M")
    print("ratio = calibration time per sample / inference time per sample (target <= ~1.5)")


if __name__ == "__main__":
    main()
