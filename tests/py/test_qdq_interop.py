"""QDQ export interop: ONNX Runtime running our model.qdq.onnx against our own simulation.

tests/qdq-export-demo (a check program) builds a QuantSim of a model, sets min-max ranges from a
calibration batch, exports the QDQ model and writes the simulation's outputs. Here ONNX Runtime runs
the export on the same inputs:
  - with graph optimizations disabled, ORT executes each QuantizeLinear/DequantizeLinear as written
    and the float ops in between. Q/DQ are the simulation's arithmetic exactly, so a model without
    accumulation (builtin:eltwise) must match bit for bit; in real models the only difference is
    the float summation order inside Conv/Gemm/MatMul (MLAS vs OpenBLAS), which moves a value
    across a rounding boundary of the next quantizer now and then: nearly every output element is
    still identical and the predictions agree;
  - with all optimizations, ORT fuses DQ → Conv/MatMul → Q into integer kernels (int32
    accumulation, a float requantization multiplier): predictions must still agree.
Our executor running the exported file must give the simulation's outputs exactly.
The measured agreement is printed (pytest -s) and asserted: predictions agree on >= 99.9%.
"""
import json
import os
import subprocess

import numpy as np
import onnxruntime as ort   # in the venv (quickstart): missing, these tests fail, not skip
import pytest


SRCDIR = os.environ.get("QD_SRCDIR") or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(SRCDIR, "tests", "fixtures")
EVAL_ROWS = 2000
MIN_AGREE = 0.999

# every form at W8 per channel; the BN-folded forms also per tensor and at W4
CONFIGS = {"w8pc": [], "w8pt": ["--per-tensor"], "w4pc": ["--wbits", "4"], "w4pt": ["--wbits", "4", "--per-tensor"]}
CASES = [(f, "w8pc") for f in ["resnet", "resnet_bn", "mobilenet", "mobilenet_bn", "vgg", "mlp"]] + \
        [(f, c) for f in ["resnet", "mobilenet", "vgg", "mlp"] for c in ["w8pt", "w4pc", "w4pt"]]


@pytest.fixture(scope="session")
def demo(builddir):
    path = os.path.join(builddir, "tests", "qdq-export-demo")
    if not os.access(path, os.X_OK):
        pytest.fail(f"no {path}: build it first (make tests/qdq-export-demo, or make check)")
    return path


def export(demo, model, calib, outdir, *extra, eval_path=None):
    cmd = [demo, model, calib, str(outdir)] + list(extra)
    if eval_path:
        cmd += ["--eval", eval_path]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {r.returncode}:\n{r.stderr.strip()}")
    return {k: np.load(os.path.join(outdir, k + ".npy")) for k in ("sim", "qdq", "fp32")
            if os.path.exists(os.path.join(outdir, k + ".npy"))}


def ort_run(path, x, optimize):
    """optimize: False (none), True (all), or an ort.GraphOptimizationLevel"""
    so = ort.SessionOptions()
    if isinstance(optimize, bool):
        optimize = ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.graph_optimization_level = optimize
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    inp = s.get_inputs()[0]
    if isinstance(inp.shape[0], int) and inp.shape[0] == 1:   # a fixed batch of 1 (mnist-8)
        return np.concatenate([s.run(None, {inp.name: x[i:i + 1]})[0] for i in range(len(x))])
    return s.run(None, {inp.name: x})[0]


def compare(out, sim):
    same = float(np.mean(out == sim))
    agree = float(np.mean(out.argmax(1) == sim.argmax(1)))
    return same, agree


@pytest.fixture(scope="session")
def fashion_eval(fashion_test, tmp_path_factory):
    _, _, x, y = fashion_test
    d = tmp_path_factory.mktemp("interop")
    np.save(d / "eval.npy", x[:EVAL_ROWS])
    return str(d / "eval.npy"), x[:EVAL_ROWS], y[:EVAL_ROWS]


def test_eltwise_bit_exact(demo, tmp_path):
    """x → Relu → Add(·, x) → MaxPool: no accumulation, so ORT must reproduce the simulation exactly."""
    x = np.random.RandomState(0).randn(32, 3, 8, 8).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    res = export(demo, "builtin:eltwise", str(tmp_path / "x.npy"), tmp_path)
    assert np.array_equal(res["qdq"], res["sim"])
    assert not np.array_equal(res["sim"], res["fp32"])
    for optimize in (False, True):
        out = ort_run(str(tmp_path / "model.qdq.onnx"), x, optimize)
        assert np.array_equal(out, res["sim"]), f"optimize={optimize}: max |diff| {np.abs(out - res['sim']).max()}"
    enc = json.load(open(tmp_path / "encodings.json"))
    assert enc["version"] == "1.0.0"
    assert {e["name"] for e in enc["activation_encodings"]} == {"x", "r", "s"}


@pytest.mark.parametrize("form,config", CASES, ids=[f"{f}-{c}" for f, c in CASES])
def test_fixture_models(demo, fashion_eval, tmp_path, form, config):
    eval_path, x, y = fashion_eval
    name = form.split("_")[0]
    res = export(demo, os.path.join(FIXTURES, form + ".onnx"), os.path.join(FIXTURES, name + ".sample.npy"),
                 tmp_path, *CONFIGS[config], eval_path=eval_path)
    sim = res["sim"]
    assert np.array_equal(res["qdq"], sim), "our executor on the exported file differs from the simulation"
    same0, agree0 = compare(ort_run(str(tmp_path / "model.qdq.onnx"), x, False), sim)
    same1, agree1 = compare(ort_run(str(tmp_path / "model.qdq.onnx"), x, True), sim)
    acc_fp, acc_sim = float(np.mean(res["fp32"].argmax(1) == y)), float(np.mean(sim.argmax(1) == y))
    print(f"\n{form:13s} {config}: fp32 {acc_fp:.4f} sim {acc_sim:.4f} | ORT no-opt: identical elements "
          f"{same0:.4f}, predictions agree {agree0:.4f} | ORT all-opt: identical {same1:.4f}, agree {agree1:.4f}")
    assert same0 >= 0.99
    assert agree0 >= MIN_AGREE
    assert agree1 >= MIN_AGREE


def test_mnist8_realworld(demo, mnist_test, realworld_dir, tmp_path):
    """The ONNX zoo's mnist-8 (opset 8 raised to 13, fixed batch 1, weight behind a Reshape)."""
    x_path, _, x, y = mnist_test
    np.save(tmp_path / "calib.npy", x[:256])
    res = export(demo, os.path.join(realworld_dir, "mnist-8.onnx"), str(tmp_path / "calib.npy"), tmp_path,
                 eval_path=x_path)
    sim = res["sim"]
    assert np.array_equal(res["qdq"], sim)
    for optimize in (False, True):
        out = ort_run(str(tmp_path / "model.qdq.onnx"), x, optimize)
        same, agree = compare(out, sim)
        acc = float(np.mean(out.argmax(1) == y))
        print(f"\nmnist-8 optimize={optimize}: ORT accuracy {acc:.4f} (sim {np.mean(sim.argmax(1) == y):.4f}, "
              f"fp32 {np.mean(res['fp32'].argmax(1) == y):.4f}), identical {same:.5f}, agree {agree:.5f}")
        assert agree >= MIN_AGREE
        assert abs(acc - 0.989) <= 0.002


def test_4_bit_grid_before_maxpool(demo, tmp_path):
    """x → Relu → Add(·, x) → MaxPool with 4-bit activations. ONNX Runtime's extended optimizations move
    Q/DQ pairs through MaxPool (QDQPropagationTransformer) and then drop DQ → MaxPool → Q, which hands
    MaxPool a uint4 tensor: ONNX defines no such MaxPool and ORT refuses the whole graph. The export
    keeps MaxPool on floats, so every optimization level runs, and (no accumulation here) matches the
    simulation bit for bit."""
    x = np.random.RandomState(0).randn(32, 3, 8, 8).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    res = export(demo, "builtin:eltwise", str(tmp_path / "x.npy"), tmp_path, "--abits", "4")
    assert np.array_equal(res["qdq"], res["sim"])
    for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                  ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
        out = ort_run(str(tmp_path / "model.qdq.onnx"), x, level)
        assert np.array_equal(out, res["sim"]), f"{level}: max |diff| {np.abs(out - res['sim']).max()}"


A_CASES = [(f, b) for f in ["resnet", "mlp", "vgg"] for b in (4, 16)]


@pytest.mark.parametrize("form,abits", A_CASES, ids=[f"{f}-a{b}" for f, b in A_CASES])
def test_4_and_16_bit_activations(demo, fashion_eval, tmp_path, form, abits):
    """uint4 / uint16 Q/DQ at opset 21, run by ORT as written (no optimizations, or basic ones) and with
    all of them. ORT's extended optimizations would fuse a uint4 QDQ Conv/Gemm into QLinearConv/QGemm,
    and move Q/DQ through MaxPool, neither of which has a uint4 kind (ORT refuses such a graph): the
    export keeps those ops on floats (see test_4_bit_grid_before_maxpool)."""
    eval_path, x, _ = fashion_eval
    res = export(demo, os.path.join(FIXTURES, form + ".onnx"), os.path.join(FIXTURES, form + ".sample.npy"),
                 tmp_path, "--abits", str(abits), eval_path=eval_path)
    sim = res["sim"]
    if "qdq" in res:
        assert np.array_equal(res["qdq"], sim)
    for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                  ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
        same, agree = compare(ort_run(str(tmp_path / "model.qdq.onnx"), x, level), sim)
        print(f"\n{form} A{abits} ORT {level}: identical elements {same:.4f}, predictions agree {agree:.4f}"
              f"{'' if 'qdq' in res else ' (our executor cannot run the export yet)'}")
        assert agree >= MIN_AGREE


@pytest.mark.xfail(strict=True, reason="ONNX Runtime's ClipQuantFusion (Clip → QuantizeLinear) throws on a uint4 "
                   "zero point ('Unexpected data type for QuantizeLinear input ... of 21', seen with ORT 1.32): "
                   "a ReLU6 net with 4-bit activations does not load with extended optimizations; remove when ORT "
                   "handles it")
def test_4_bit_activations_after_clip_ort_fusion(demo, fashion_eval, tmp_path):
    eval_path, x, _ = fashion_eval
    res = export(demo, os.path.join(FIXTURES, "mobilenet.onnx"), os.path.join(FIXTURES, "mobilenet.sample.npy"),
                 tmp_path, "--abits", "4", eval_path=eval_path)
    _, agree = compare(ort_run(str(tmp_path / "model.qdq.onnx"), x, True), res["sim"])
    assert agree >= MIN_AGREE


def test_resize_layernorm_model(demo, tmp_path):
    """A torch export through nearest and bilinear Resize and LayerNormalization
    (tests/fixtures/torchops/resize_net.onnx): the nearest Resize passes its input's grid through and
    the export repeats the input's Q/DQ pair after it, as ONNX Runtime's QDQ format expects (which
    lets ORT run it on the integers); the bilinear Resize and the LayerNorm get output
    quantizers of their own. ORT must agree with the simulation."""
    rng = np.random.RandomState(0)
    x = rng.rand(512, 3, 8, 8).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    res = export(demo, os.path.join(FIXTURES, "torchops", "resize_net.onnx"), str(tmp_path / "x.npy"), tmp_path,
                 "--calib-rows", "256", eval_path=str(tmp_path / "x.npy"))
    sim = res["sim"]
    assert np.array_equal(res["qdq"], sim), "our executor on the exported file differs from the simulation"
    enc = json.load(open(tmp_path / "encodings.json"))
    names = {e["name"] for e in enc["activation_encodings"]}
    assert "/Resize_output_0" not in names and "/Resize_1_output_0" in names, sorted(names)
    for optimize in (False, True):
        same, agree = compare(ort_run(str(tmp_path / "model.qdq.onnx"), x, optimize), sim)
        print(f"\nresize_net optimize={optimize}: identical elements {same:.4f}, predictions agree {agree:.4f}")
        if not optimize:
            assert same >= 0.99
        assert agree >= 0.99
