#!/usr/bin/env python3
"""PTQ at ImageNet scale (issue 16): `quant ptq` on torchvision models at 224×224 with N calibration
images, against ONNX Runtime's quantize_static on the same model and data, measured in the same run.

Models and evaluation inputs come from bench/fetch_models.py's cache ($QD_MODEL_CACHE, else
~/.cache/quantd/models: torchvision/NAME.onnx and NAME.input.npy, 64 images). Calibration images are
made here with the same generator (tests/py/realdata.py natural_images, seed 3), cached as
calib-N.npy beside the models; they are not the evaluation images.

Per model and pipeline, one row: wall time and peak RSS (/usr/bin/time -v) of the whole job, the
time of each stage (report.json "timings"), bias correction's passes, AdaRound's iterations per
layer, ms per iteration and GFLOP/s with their share of this machine's sgemm peak (numpy's matmul
of 2048×2048 float32 on the same thread count, measured in this run), and the quality of the QDQ
export run by ONNX Runtime on the evaluation images: output SQNR against FP32 (dB) and argmax
agreement. The peer is ONNX Runtime's quantize_static (QDQ, per-channel int8 weights, uint8
activations, min-max calibration on the same images), timed the same way in a subprocess.

  /work/venv-tools/bin/python bench/bench_ptq_scale.py --quant build/quant [--models resnet18,mobilenet_v2]
      [--calib 512] [--threads 2] [--pipeline standard:--no-adaround] [--timeout 1800] [--no-peer]

--pipeline NAME:FLAGS (repeatable) names a quant ptq variant and its extra flags (space-separated);
the default is "standard:" (the standard preset as it ships). Needs numpy and onnxruntime.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "py"))


def cache_dir():
    return os.environ.get("QD_MODEL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "quantd", "models")


def calib_images(n, directory):
    path = os.path.join(directory, f"calib-{n}.npy")
    if not os.path.exists(path):
        import realdata
        np.save(path, realdata.natural_images(n, 224, seed=3).astype(np.float32))
    return path


def cpu_seconds(stderr):
    """user + sys seconds from /usr/bin/time -v (None if absent): they survive a shared machine's load."""
    u = re.search(r"User time \(seconds\): ([\d.]+)", stderr)
    s = re.search(r"System time \(seconds\): ([\d.]+)", stderr)
    return float(u.group(1)) + float(s.group(1)) if u and s else None


def timed(cmd, timeout, env=None):
    """Runs cmd under /usr/bin/time -v: (returncode, wall s, peak RSS MB, stdout, stderr)."""
    t0 = time.time()
    try:
        r = subprocess.run(["/usr/bin/time", "-v"] + cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return None, time.time() - t0, None, "", "timeout"
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr)
    return r.returncode, time.time() - t0, int(m.group(1)) / 1024 if m else None, r.stdout, r.stderr


def quality(model_fp32, model_q, x, threads):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    outs = []
    for path in (model_fp32, model_q):
        s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        name = s.get_inputs()[0].name
        outs.append(np.concatenate([s.run(None, {name: x[i:i + 16]})[0] for i in range(0, len(x), 16)]))
    ref, q = outs
    sqnr = 10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / max(np.sum((ref - q).astype(np.float64) ** 2), 1e-30))
    agree = float(np.mean(ref.argmax(1) == q.argmax(1)))
    return sqnr, agree


def sgemm_peak(threads):
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    code = ("import numpy as np, time\n"
            "a = np.random.rand(2048, 2048).astype(np.float32); b = a.copy(); a @ b\n"
            "best = 1e9\n"
            "for _ in range(5):\n"
            "    t = time.perf_counter(); a @ b; best = min(best, time.perf_counter() - t)\n"
            "print(2 * 2048 ** 3 / best / 1e9)\n")
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env).stdout)


def ort_worker(args):
    """Child process: ORT's quantize_static of args.model on args.calib_path (first args.calib rows)."""
    import onnxruntime as ort
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process
    x = np.load(args.calib_path, mmap_mode="r")[:args.calib]
    name = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"]).get_inputs()[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.i = 0

        def get_next(self):
            if self.i >= len(x):
                return None
            self.i += 16
            return {name: np.ascontiguousarray(x[self.i - 16:self.i])}

    pre = args.out + ".pre.onnx"
    quant_pre_process(args.model, pre, skip_symbolic_shape=True)
    quantize_static(pre, args.out, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    os.unlink(pre)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quant", default=os.path.join(HERE, "..", "build", "quant"))
    ap.add_argument("--models", default="resnet18,mobilenet_v2")
    ap.add_argument("--calib", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pipeline", action="append", default=None)
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--json", help="also write the rows here")
    ap.add_argument("--ort-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--calib-path", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.ort_worker:
        return ort_worker(args)
    tv = os.path.join(cache_dir(), "torchvision")
    calib = calib_images(args.calib, tv)
    peak = sgemm_peak(args.threads)
    pipelines = [p.split(":", 1) for p in (args.pipeline or ["standard:"])]
    rows = []
    tmp = tempfile.mkdtemp(prefix="qd-ptq-scale-")
    print(f"# sgemm peak (numpy 2048^3, {args.threads} threads): {peak:.1f} GFLOP/s", file=sys.stderr)
    for model in args.models.split(","):
        onnx_path = os.path.join(tv, f"{model}.onnx")
        x = np.load(os.path.join(tv, f"{model}.input.npy")).astype(np.float32)
        size_mb = os.path.getsize(onnx_path) / 2 ** 20
        for name, flags in pipelines:
            out = os.path.join(tmp, f"{model}-{name}")
            cmd = [args.quant, "ptq", onnx_path, "--calib", calib, "--calib-samples", str(args.calib), "--threads",
                   str(args.threads), "-o", out] + flags.split()
            rc, wall, rss, _, err = timed(cmd, args.timeout)
            row = {"model": model, "pipeline": name, "flags": flags, "size_mb": size_mb, "wall_s": wall,
                   "cpu_s": cpu_seconds(err), "rss_mb": rss, "rss_bound_mb": 4 * size_mb + 1024, "ok": rc == 0}
            if rc != 0:
                row["error"] = err.strip().splitlines()[-1] if err.strip() else "failed"
            else:
                rep = json.load(open(os.path.join(out, "report.json")))
                row["timings"] = rep.get("timings", {})
                bc = rep.get("bias_correction")
                if bc:
                    row["bias_correction"] = {"passes": bc.get("passes"), "seconds": bc.get("seconds")}
                ada = rep.get("adaround")
                if ada:
                    row["adaround"] = [{"name": l["name"], "op": l["op"], "iterations": l["iterations"],
                                        "ms_per_iteration": l["ms_per_iteration"], "gflops": l.get("gflops"),
                                        "share_of_peak": (l.get("gflops") or 0) / peak}
                                       for l in ada["layers"]]
                row["step_check"] = rep.get("step_check")
                row["sqnr_db"], row["agreement"] = quality(onnx_path, os.path.join(out, "model.qdq.onnx"), x,
                                                           args.threads)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
        if not args.no_peer:
            qpath = os.path.join(tmp, f"{model}-ort.onnx")
            env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
            rc, wall, rss, _, err = timed([sys.executable, os.path.abspath(__file__), "--ort-worker", "--model",
                                           onnx_path, "--calib-path", calib, "--calib", str(args.calib),
                                           "--out", qpath], args.timeout, env)
            row = {"model": model, "pipeline": "ORT quantize_static", "size_mb": size_mb, "wall_s": wall,
                   "cpu_s": cpu_seconds(err), "rss_mb": rss, "ok": rc == 0}
            if rc == 0:
                row["sqnr_db"], row["agreement"] = quality(onnx_path, qpath, x, args.threads)
            else:
                row["error"] = err.strip().splitlines()[-1] if err.strip() else "failed"
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
    if args.json:
        json.dump({"sgemm_peak_gflops": peak, "calib": args.calib, "threads": args.threads, "rows": rows},
                  open(args.json, "w"), indent=1)
    print(f"{args.calib} calibration images at 224×224, {args.threads} threads; sgemm peak {peak:.0f} GFLOP/s.\n")
    print("| model | pipeline | wall s | CPU s | peak RSS MB (bound) | stages (s) | SQNR dB | argmax agreement |")
    print("|---|---|---:|---:|---:|---|---:|---:|")
    for r in rows:
        st = ", ".join(f"{k} {v:.0f}" for k, v in r.get("timings", {}).items() if k != "total" and v >= 1)
        bound = f" ({r['rss_bound_mb']:.0f})" if "rss_bound_mb" in r else ""
        rss = f"{r['rss_mb']:.0f}{bound}" if r.get("rss_mb") else "–"
        q = (f"{r['sqnr_db']:.1f} | {100 * r['agreement']:.1f}%" if r.get("ok") else f"{r.get('error', 'failed')} | –")
        cpu = f"{r['cpu_s']:.0f}" if r.get("cpu_s") is not None else "–"
        print(f"| {r['model']} | {r['pipeline']} | {r['wall_s']:.0f} | {cpu} | {rss} | {st} | {q} |")


if __name__ == "__main__":
    main()
