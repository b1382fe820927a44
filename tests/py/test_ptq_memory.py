"""Peak memory of a PTQ job (issue 16): calibration data streams from the mapped file, and the pages
of the rows a stage is done with leave the resident set, so a job's peak RSS does not grow with the
calibration set. A tiny model (a strided 3×3 conv, ReLU, global pooling, a 4×10 Gemm: well under a
megabyte of activations per batch) with a 236 MB calibration file: before the rows were released,
the finiteness check alone left the whole file resident, and every later pass read it all again.

The bound, 100 MB, is half the file: the process itself (the binary, its libraries, OpenBLAS's
buffers) is some 20–40 MB and a batch of 32 rows 6 MB, so a job that kept the file resident fails
it whatever the rest costs. The peak is the child's own ru_maxrss (os.wait4), which counts the
mapped file's resident pages as well as the heap.
"""
import json
import os
import re
import subprocess
import threading
import time

import numpy as np
import pytest

from onnx_build import Graph

ROWS, SIDE = 1200, 128            # 1200 × 3×128×128 float32 = 236 MB
BOUND_MB = 100


def tiny_model(path):
    rng = np.random.default_rng(0)
    g = Graph("tiny")
    g.input("x", np.float32, ["N", 3, SIDE, SIDE])
    g.init("W", rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32))
    g.init("B", rng.normal(0, 0.1, (4,)).astype(np.float32))
    g.init("G", rng.normal(0, 0.5, (4, 10)).astype(np.float32))
    g.init("C", np.zeros(10, np.float32))
    g.node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1], strides=[4, 4])
    g.node("Relu", ["c"], ["r"])
    g.node("GlobalAveragePool", ["r"], ["p"])
    g.node("Flatten", ["p"], ["f"])
    g.node("Gemm", ["f", "G", "C"], ["y"])
    g.output("y", np.float32, ["N", 10])
    g.save(path, opset=13)


@pytest.fixture(scope="module")
def big_calib(tmp_path_factory):
    d = tmp_path_factory.mktemp("memory")
    model = str(d / "tiny.onnx")
    tiny_model(model)
    calib = d / "calib.npy"
    x = np.lib.format.open_memmap(calib, mode="w+", dtype=np.float32, shape=(ROWS, 3, SIDE, SIDE))
    rng = np.random.default_rng(1)
    for i in range(0, ROWS, 120):   # in slices: the test's own RSS stays small too
        x[i:i + 120] = rng.standard_normal((120, 3, SIDE, SIDE), dtype=np.float32)
    x.flush()
    del x
    return model, str(calib)


def peak_rss_mb(cmd):
    """Runs cmd; (exit status, stderr, the child's peak RSS in MB). The peak is the child's VmHWM read
    every 10 ms once it runs quant: getrusage's ru_maxrss would not do, as Linux carries the forking
    process's high-water mark (this test's, with the file it wrote) across the exec into it."""
    p = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = []
    reader = threading.Thread(target=lambda: err.append(p.stderr.read().decode(errors="replace")))
    reader.start()
    peak, exe = 0, os.path.realpath(str(cmd[0]))
    while p.poll() is None:
        try:   # until the exec, the child is this process (vfork): its figures are this process's
            if os.path.realpath(f"/proc/{p.pid}/exe") != exe:
                continue
            with open(f"/proc/{p.pid}/status") as f:
                m = re.search(r"VmHWM:\s+(\d+) kB", f.read())
            if m:
                peak = max(peak, int(m.group(1)))
        except OSError:
            pass
        finally:
            time.sleep(0.01)
    reader.join()
    return p.returncode, err[0], peak / 1024


# the standard pipeline checks each step on a held-out part (a score pass per step), and each rounding
# captures its own way; AdaRound keeps up to config.adaround.samples of a layer's inputs by design
# (64 here: 12 MB), so that is set low to show the rest streams
PIPELINES = {
    "fast": ["--preset", "fast"],
    "standard-nearest": ["--preset", "standard", "--rounding", "nearest"],
    "standard-gptq": ["--preset", "standard", "--rounding", "gptq"],
    "standard-adaround": ["--preset", "standard", "--rounding", "adaround", "--adaround-iterations", "20"],
}


@pytest.mark.parametrize("pipeline", sorted(PIPELINES))
def test_peak_rss_independent_of_calibration_size(quant, big_calib, tmp_path, pipeline):
    model, calib = big_calib
    assert os.path.getsize(calib) > 2 * BOUND_MB * 2 ** 20
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"adaround": {"samples": 64}}))
    rc, err, mb = peak_rss_mb([quant, "ptq", model, "--calib", calib, "--calib-samples", ROWS, "--config", cfg,
                               *PIPELINES[pipeline], "--threads", 2, "-o", tmp_path / "out"])
    assert rc == 0, err
    print(f"{pipeline}: peak RSS {mb:.0f} MB")
    assert 10 < mb < BOUND_MB, f"peak RSS {mb:.0f} MB with a {os.path.getsize(calib) / 2 ** 20:.0f} MB calibration file"
