#!/usr/bin/env python3
"""Real models (issue 15): third-party ONNX models through quantd, measured against ONNX Runtime
(and PyTorch for the torchvision exports) in the same run.

Models come from the cache that bench/fetch_models.py fills ($QD_MODEL_CACHE, else ~/.cache/quantd/models):
the PaddleOCR classifier, detector and recogniser from PyPI's rapidocr-onnxruntime 1.4.4 (given to
quantd as shipped: dynamic spatial dims, weights in Constant nodes) and torchvision CNNs and ViT at
224×224 (random weights with BN statistics from natural-looking images; see fetch_models.py).

For each model, one row per table:
  run   `quant info` (parameters, nodes, ops), `quant run` against ONNX Runtime on the same inputs
        (max abs difference, relative to the largest |output|) and against PyTorch's outputs; the
        forward time per sample of quantd and of ONNX Runtime (same thread count, same batch, ORT's
        default session options) and quant run's peak RSS (/usr/bin/time).
  ptq   `quant ptq --preset basic` (W8A8, per-channel weights; wall time, peak RSS), the QDQ model's
        quality on the evaluation inputs as quantd runs it (classifiers: argmax agreement with FP32;
        all: output SQNR against FP32), the QDQ export in ONNX Runtime (argmax agreement and max abs
        difference against quantd's run of it), then `--preset standard` under a time limit
        (--standard-timeout; past it, or for models left out of --standard, the row says so: PTQ
        at scale is issue 16).
Calibration inputs are separate from the evaluation inputs (other seeds of tests/py/realdata.py).

  /work/venv-tools/bin/python bench/bench_models.py --quant build/quant [--models cls,resnet18,…]
      [--threads 2] [--standard-timeout 600] [--standard cls,…] [--pin-shapes]
      [--results docs/results.md]

Needs numpy and onnxruntime. --results replaces the "Real models" section of that file.
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "py"))
import realdata  # noqa: E402

PADDLE = {
    "ppocr-cls": ("ch_ppocr_mobile_v2.0_cls_infer.onnx", "cls"),
    "ppocr-det": ("ch_PP-OCRv4_det_infer.onnx", "det"),
    "ppocr-rec": ("ch_PP-OCRv4_rec_infer.onnx", "rec"),
}
TORCHVISION = ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0",
               "regnet_y_400mf", "convnext_tiny", "vit_b_16"]
SECTION = "## Real models (issue 15)"


def cache_dir():
    return os.environ.get("QD_MODEL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "quantd", "models")


def inputs(name, cache):
    """(model path, kind, eval inputs, calibration inputs, PyTorch outputs or None)."""
    if name in PADDLE:
        fname, kind = PADDLE[name]
        path = os.path.join(cache, "paddleocr", fname)
        if kind == "cls":
            return path, "classifier", realdata.text_crops(256, 48, 192, seed=11), \
                realdata.text_crops(128, 48, 192, seed=12), None
        if kind == "rec":
            return path, "sequence", realdata.text_crops(32, 48, 320, seed=13, flip_half=False), \
                realdata.text_crops(64, 48, 320, seed=14, flip_half=False), None
        return path, "map", realdata.text_page(8, 320, 320, seed=15), \
            realdata.text_page(16, 320, 320, seed=16), None
    d = os.path.join(cache, "torchvision")
    return os.path.join(d, name + ".onnx"), "classifier", np.load(os.path.join(d, name + ".input.npy")), \
        realdata.natural_images(64, 224, seed=3), np.load(os.path.join(d, name + ".torch.npy"))


def timed(cmd, timeout=None):
    """Runs cmd under /usr/bin/time: (returncode, stdout+stderr, wall s, peak RSS MiB)."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        t = time.time()
        # its own process group, so that a timeout ends quant too, not only /usr/bin/time
        p = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", tf.name] + cmd, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
            return None, "timeout", time.time() - t, None
        r = subprocess.CompletedProcess(cmd, p.returncode, out, err)
        wall = time.time() - t
        rss = tf.read().strip().splitlines()
    kb = int(rss[-1]) if rss and rss[-1].isdigit() else 0
    return r.returncode, r.stdout + r.stderr, wall, kb / 1024


def last_line(text):
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:160] if lines else "?"


def info(quant, model):
    r = subprocess.run([quant, "info", model], capture_output=True, text=True)
    out = r.stdout + r.stderr
    params = re.search(r"^parameters\s+(\d+)", out, re.M)
    nodes = re.search(r"^nodes\s+(\d+)", out, re.M)
    ops = re.search(r"^ops\s+(.*)$", out, re.M)
    unsup = re.search(r"^unsupported\s+(.*)$", out, re.M)
    flops = re.search(r"^FLOPs\s+(.*)$", out, re.M)
    return {"params": int(params.group(1)) if params else None,
            "nodes": int(nodes.group(1)) if nodes else None,
            "ops": ops.group(1) if ops else "",
            "unsupported": unsup.group(1) if unsup else "?",
            "flops": flops.group(1) if flops else "?"}


def ort_run(model, x, threads, batch=32):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    s = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    s.run(None, {name: x[:1]})                       # warm-up
    t = time.time()
    y = np.concatenate([s.run(None, {name: x[i:i + batch]})[0] for i in range(0, len(x), batch)])
    return y, (time.time() - t) / len(x)


def quant_run(quant, model, x, threads, work, tag):
    xin, yout = os.path.join(work, tag + ".in.npy"), os.path.join(work, tag + ".out.npy")
    np.save(xin, x)
    rc, out, wall, rss = timed([quant, "run", model, "--input", xin, "--output", yout, "--threads",
                                str(threads)])
    if rc:
        raise RuntimeError(last_line(out))
    m = re.search(r"in ([0-9.]+) s", out)
    per = float(m.group(1)) / len(x) if m else wall / len(x)
    return np.load(yout), per, rss


def sqnr(ref, y):
    err = float(np.sum((ref.astype(np.float64) - y) ** 2))
    return float("inf") if err == 0 else 10 * np.log10(float(np.sum(ref.astype(np.float64) ** 2)) / err)


def agree(ref, y):
    return float(np.mean(ref.reshape(-1, ref.shape[-1]).argmax(-1) == y.reshape(-1, y.shape[-1]).argmax(-1)))


def diff(ref, y):
    d = float(np.max(np.abs(ref - y)))
    return d, d / max(float(np.max(np.abs(ref))), 1e-30)


def ptq(quant, model, calib, preset, threads, work, timeout):
    out = os.path.join(work, "ptq-" + preset)
    cal = os.path.join(work, "calib.npy")
    np.save(cal, calib)
    rc, log, wall, rss = timed([quant, "ptq", model, "--calib", cal, "--preset", preset, "--threads",
                                str(threads), "-o", out], timeout=timeout)
    res = {"seconds": wall, "rss_mib": rss}
    if rc is None:
        res["error"] = f"not done in {timeout:.0f} s"
    elif rc:
        res["error"] = last_line(log)
    else:
        with open(os.path.join(out, "report.json")) as f:
            rep = json.load(f)
        res["bn_folded"] = rep.get("bn_folded")
        res["qdq"] = os.path.join(out, "model.qdq.onnx")
        res["warnings"] = rep.get("warnings", [])
    return res


def quality(res, kind, ref, quant, x, threads, work, tag):
    """Adds the QDQ model's quality (quantd's run) and ONNX Runtime's agreement on the export."""
    q, _, _ = quant_run(quant, res["qdq"], x, threads, work, tag)
    res["sqnr_db"] = sqnr(ref, q)
    if kind != "map":
        res["agree"] = agree(ref, q)
    try:
        qo, _ = ort_run(res["qdq"], x, threads)
        res["ort_diff"] = diff(q, qo)[0]
        res["ort_sqnr_db"] = sqnr(ref, qo)
        if kind != "map":
            res["ort_agree"] = agree(q, qo)
    except Exception as e:   # noqa: BLE001 — the row says what ONNX Runtime refused
        res["ort_error"] = str(e).splitlines()[0][:160]


def pinned(model, shape, work):
    """A copy of model whose input dims are those of the data (the batch stays symbolic), for
    builds of quantd that refuse symbolic spatial dims; needs the onnx package."""
    import onnx
    m = onnx.load(model)
    dims = m.graph.input[0].type.tensor_type.shape.dim
    for i, d in enumerate(dims):
        if i == 0:
            d.dim_param = "N"
        else:
            d.ClearField("dim_param")
            d.dim_value = shape[i]
    path = os.path.join(work, "pinned.onnx")
    onnx.save(m, path)
    return path


def measure(args, name):
    cache = cache_dir()
    model, kind, x, calib, torch_ref = inputs(name, cache)
    row = {"model": name, "kind": kind, "samples": len(x)}
    row.update(info(args.quant, model))
    work = tempfile.mkdtemp(prefix="qd-bench-models-")
    try:
        if args.pin_shapes and "only the leading (batch) dim may be symbolic" in row["flops"]:
            row["as_shipped"] = row["flops"]
            model = pinned(model, x.shape, work)
            row["model"] += " (pinned)"
        ref, row["ort_s"] = ort_run(model, x, args.threads)
        try:
            y, row["quant_s"], row["run_rss_mib"] = quant_run(args.quant, model, x, args.threads, work, "fp32")
            row["vs_ort"] = diff(ref, y)
            if torch_ref is not None:
                row["vs_torch"] = diff(torch_ref, y)
        except RuntimeError as e:
            row["run_error"] = str(e)
        std = args.standard_timeout > 0 and (args.standard == "all" or name in args.standard.split(","))
        if not std:
            row["standard"] = {"skipped": "not run (PTQ at scale: issue 16)"}
        for preset in ["basic", "standard"] if std else ["basic"]:
            res = ptq(args.quant, model, calib, preset, args.threads, work,
                      None if preset == "basic" else args.standard_timeout)
            if "qdq" in res:
                try:
                    quality(res, kind, ref, args.quant, x, args.threads, work, preset)
                except RuntimeError as e:
                    res["error"] = str(e)
            row[preset] = res
    finally:
        subprocess.run(["rm", "-rf", work])
    return row


def fmt(v, spec="{:.3g}"):
    return "—" if v is None else spec.format(v)


def run_table(rows):
    out = ["| model | params | nodes | ops | quant run vs ORT: max abs (rel) | vs PyTorch | ms/sample quantd / ORT "
           "| RSS MiB |", "|---|---:|---:|---|---|---|---|---:|"]
    for r in rows:
        ops = ", ".join(r["ops"].split(", ")[:6]) + (", …" if r["ops"].count(",") >= 6 else "")
        if "run_error" in r:
            vs, vt, ms, rss = "fails: " + r["run_error"], "—", f"— / {r['ort_s'] * 1e3:.1f}", "—"
        else:
            vs = f"{r['vs_ort'][0]:.2e} ({r['vs_ort'][1]:.1e})"
            vt = f"{r['vs_torch'][0]:.2e} ({r['vs_torch'][1]:.1e})" if "vs_torch" in r else "—"
            ms = f"{r['quant_s'] * 1e3:.1f} / {r['ort_s'] * 1e3:.1f}"
            rss = f"{r['run_rss_mib']:.0f}"
        p = f"{r['params'] / 1e6:.2f} M" if r["params"] is not None else "?"
        out.append(f"| {r['model']} | {p} | {r['nodes']} | {ops} | {vs} | {vt} | {ms} | {rss} |")
    return "\n".join(out)


def ptq_cell(res):
    if res is None:
        return "—", "—", "—"
    if "skipped" in res:
        return res["skipped"], "—", "—"
    t = f"{res['seconds']:.0f} s, {fmt(res.get('rss_mib'), '{:.0f}')} MiB"
    if "error" in res:
        return f"{t}: fails: {res['error']}", "—", "—"
    qual = f"SQNR {res['sqnr_db']:.1f} dB"
    if "agree" in res:
        qual = f"argmax {100 * res['agree']:.1f}%, " + qual
    if "ort_error" in res:
        o = "ORT refuses: " + res["ort_error"]
    else:
        o = f"max abs {res['ort_diff']:.2e}, SQNR vs FP32 {res['ort_sqnr_db']:.1f} dB"
        if "ort_agree" in res:
            o = f"argmax {100 * res['ort_agree']:.1f}%, " + o
    bn = res.get("bn_folded")
    return t + (f", {bn} BN folded" if bn is not None else ""), qual, o


def ptq_table(rows):
    out = ["| model | eval samples | ptq basic (time, peak RSS) | W8A8 quality vs FP32 (quantd) "
           "| QDQ in ORT vs quantd | ptq standard (time) | standard quality |",
           "|---|---:|---|---|---|---|---|"]
    for r in rows:
        bt, bq, bo = ptq_cell(r.get("basic"))
        st, sq, _ = ptq_cell(r.get("standard"))
        out.append(f"| {r['model']} | {r['samples']} | {bt} | {bq} | {bo} | {st} | {sq} |")
    return "\n".join(out)


def write_results(path, text):
    with open(path) as f:
        doc = f.read()
    start = doc.find(SECTION)
    if start < 0:
        doc = doc.rstrip("\n") + "\n\n" + text + "\n"
    else:
        end = doc.find("\n## ", start + len(SECTION))
        doc = doc[:start] + text + ("\n" + doc[end:] if end >= 0 else "\n")
    with open(path, "w") as f:
        f.write(doc)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quant", default=os.path.join(HERE, "..", "build", "quant"))
    ap.add_argument("--models", default=",".join(list(PADDLE) + TORCHVISION))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--standard-timeout", type=float, default=600,
                    help="seconds for ptq --preset standard (0: skip it)")
    ap.add_argument("--standard", default="all", help="models that also get the standard preset (all)")
    ap.add_argument("--json", help="also write the rows as JSON to this file")
    ap.add_argument("--from-json", help="print (and --results) the tables of a --json file instead of measuring")
    ap.add_argument("--pin-shapes", action="store_true",
                    help="where quantd refuses a model's symbolic spatial dims, measure a copy with the "
                         "data's dims (needs onnx); the row is marked '(pinned)'")
    ap.add_argument("--results", help="replace the 'Real models' section of this Markdown file")
    ap.add_argument("--preamble", help="a Markdown file whose text goes between the heading and the tables")
    args = ap.parse_args()
    rows = []
    if args.from_json:
        with open(args.from_json) as f:
            rows = json.load(f)
    for name in [m for m in args.models.split(",") if m and not args.from_json]:
        t = time.time()
        rows.append(measure(args, name))
        print(f"{name}: measured in {time.time() - t:.0f} s", file=sys.stderr, flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=1)
    text = "\n\n".join([run_table(rows), ptq_table(rows)])
    print(text)
    if args.results:
        pre = open(args.preamble).read().strip() + "\n\n" if args.preamble else ""
        write_results(args.results, f"{SECTION}\n\n{pre}{text}")


if __name__ == "__main__":
    main()
