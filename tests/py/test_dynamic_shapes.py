"""Models with symbolic spatial dims ([N, 3, H, W] and, as PaddleOCR's recogniser, [N, 3, 48, W]): the
data's sample shape (or --input-shape, or the job spec's config.input_shapes) gives the sizes; run
agrees with ONNX Runtime at two widths; PTQ through the CLI and the service records the shapes it
used, and its QDQ export keeps the dims symbolic and runs in ONNX Runtime at two widths, close to the
FP32 model there. Contradictions are errors naming the input, dim, expected and got; a model that
can never run is refused at upload, one with symbolic dims is accepted.
"""
import json

import numpy as np
import pytest

from onnx_build import Graph
from service_fixtures import make_quantd, quantd  # noqa: F401  (fixtures)

ort = pytest.importorskip("onnxruntime")


def conv_net(dims, stride_out=False):
    """Conv3x3-BN-Relu (stride 2) → depthwise Conv-BN-Relu → Conv1x1. Without stride_out: then
    GlobalAveragePool → Flatten → Gemm (a classifier, output [N, 5]); with it the feature map
    [N, 6, H/2, W/2] is the output (a recogniser's)."""
    rng = np.random.default_rng(5)
    g = Graph("dyn")
    g.input("x", np.float32, dims)
    cin, x = 3, "x"
    for i, (cout, group, k, stride) in enumerate([(8, 1, 3, 2), (8, 8, 3, 1), (6, 1, 1, 1)]):
        g.init(f"w{i}", (rng.standard_normal((cout, cin // group, k, k)) * 0.5).astype(np.float32))
        for n, v in {"s": rng.uniform(0.5, 1.5, cout), "o": rng.normal(0, 0.3, cout), "m": rng.normal(0, 0.2, cout),
                     "v": rng.uniform(0.5, 2, cout)}.items():
            g.init(f"bn{i}_{n}", v.astype(np.float32))
        p = k // 2
        g.node("Conv", [x, f"w{i}"], [f"c{i}"], name=f"conv{i}", pads=[p, p, p, p], group=group,
               strides=[stride, stride])
        g.node("BatchNormalization", [f"c{i}", f"bn{i}_s", f"bn{i}_o", f"bn{i}_m", f"bn{i}_v"], [f"n{i}"],
               name=f"bn{i}")
        g.node("Relu", [f"n{i}"], [f"r{i}"], name=f"relu{i}")
        cin, x = cout, f"r{i}"
    if stride_out:
        g.node("Identity", [x], ["y"])
        g.output("y", np.float32, [dims[0], 6, None, None])
    else:
        g.node("GlobalAveragePool", [x], ["p"])
        g.node("Flatten", ["p"], ["f"], axis=1)
        g.init("fc_w", (rng.standard_normal((5, 6)) * 0.5).astype(np.float32))
        g.init("fc_b", np.zeros(5, np.float32))
        g.node("Gemm", ["f", "fc_w", "fc_b"], ["y"], name="fc", transB=1)
        g.output("y", np.float32, [dims[0], 5])
    return g


def ort_run(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def images(n, h, w, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, 3, h, w)).astype(np.float32)


def sqnr_db(ref, got):
    return 10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / max(np.sum((ref - got).astype(np.float64) ** 2), 1e-30))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("dyn")
    return {"hw": conv_net(["N", 3, "H", "W"]).save(str(d / "hw.onnx")),
            "rec": conv_net(["N", 3, 48, "W"], stride_out=True).save(str(d / "rec.onnx"))}


@pytest.mark.parametrize("name, shapes", [("hw", [(32, 40), (24, 64)]), ("rec", [(48, 192), (48, 96)])])
def test_run_matches_ort_at_two_sizes(run_quant, models, tmp_path, name, shapes):
    for h, w in shapes:
        x = images(5, h, w)
        np.save(tmp_path / "x.npy", x)
        run_quant.ok("run", models[name], "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy", "--batch", 2)
        np.testing.assert_allclose(np.load(tmp_path / "y.npy"), ort_run(models[name], x), rtol=1e-4, atol=1e-4)


def test_info_shows_symbolic_dims_and_takes_input_shape(run_quant, models):
    info = json.loads(run_quant.ok("info", models["rec"], "--json").stdout)
    assert info["inputs"][0]["shape"] == ["N", 3, 48, "W"]
    assert info["flops"] is None
    text = run_quant.ok("info", models["rec"]).stdout
    assert "[N, 3, 48, W]" in text and "symbolic size in dim 3 ('W')" in text
    small = json.loads(run_quant.ok("info", models["rec"], "--input-shape", "x=1x3x48x96", "--json").stdout)
    large = json.loads(run_quant.ok("info", models["rec"], "--input-shape", "x=1x3x48x192", "--json").stdout)
    assert small["flops"] > 0 and large["flops"] == pytest.approx(2 * small["flops"])
    bench = json.loads(run_quant.ok("bench", models["hw"], "--input-shape", "x=1x3x16x16", "--iters", 2,
                                    "--json").stdout)
    assert bench["samples_per_s"] > 0


def test_contradictions_are_named(run_quant, models, tmp_path):
    r = run_quant("info", models["rec"], "--input-shape", "x=1x3x40x96")
    assert r.returncode == 1 and "input 'x' dim 2: expected 48" in r.stderr and "got 40" in r.stderr, r.stderr
    np.save(tmp_path / "x.npy", images(4, 40, 96))
    r = run_quant("run", models["rec"], "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy")
    assert r.returncode == 1 and "has shape [4, 3, 40, 96]; expected [N, 3, 48, W]: dim 2 must be 48, got 40" in \
        r.stderr, r.stderr
    np.save(tmp_path / "x.npy", images(4, 48, 96))
    r = run_quant("ptq", models["rec"], "--calib", tmp_path / "x.npy", "--input-shape", "x=1x3x48x128",
                  "-o", tmp_path / "o")
    assert r.returncode == 1 and "dim 3 ('W'): got 96, but it already runs at 128" in r.stderr, r.stderr
    r = run_quant("ptq", models["rec"], "--calib", tmp_path / "x.npy", "--input-shape", "x=1x3x48", "-o", tmp_path / "o")
    assert r.returncode == 1 and "has 4 dims" in r.stderr, r.stderr
    r = run_quant("ptq", models["rec"], "--calib", tmp_path / "x.npy", "--input-shape", "x:1x3", "-o", tmp_path / "o")
    assert r.returncode == 2 and "NAME=D0xD1x" in r.stderr, r.stderr


def check_ptq_outdir(out, model, h, widths, shapes):
    rep = json.load(open(out / "report.json"))
    assert rep["input_shapes"] == shapes
    assert rep["bn_folded"] == 3
    qdq = out / "model.qdq.onnx"
    dims = ort.InferenceSession(str(qdq), providers=["CPUExecutionProvider"]).get_inputs()[0].shape
    assert dims[0] == "N" and dims[3] == "W"
    for w in widths:   # the export runs at other widths than the calibration's
        x = images(6, h, w, seed=w)
        assert sqnr_db(ort_run(model, x), ort_run(qdq, x)) > 15, w


def test_ptq_cli_takes_shapes_from_the_data(run_quant, models, tmp_path):
    np.save(tmp_path / "c.npy", images(40, 48, 192))
    run_quant.ok("ptq", models["rec"], "--calib", tmp_path / "c.npy", "-o", tmp_path / "rec", "--adaround-iterations",
                 20)
    check_ptq_outdir(tmp_path / "rec", models["rec"], 48, [192, 96], {"x": [1, 3, 48, 192]})
    np.save(tmp_path / "c2.npy", images(40, 24, 32))
    run_quant.ok("ptq", models["hw"], "--calib", tmp_path / "c2.npy", "-o", tmp_path / "hw", "--preset", "basic",
                 "--input-shape", "x=1x3x24x32")
    check_ptq_outdir(tmp_path / "hw", models["hw"], 24, [32, 48], {"x": [1, 3, 24, 32]})


def test_ptq_through_the_service(quantd, models, tmp_path):  # noqa: F811
    m = quantd.upload_ok("models", models["rec"])
    assert m["inputs"][0]["shape"] == ["N", 3, 48, "W"]
    np.save(tmp_path / "c.npy", images(24, 48, 64))
    np.save(tmp_path / "v.npy", images(8, 48, 80))
    ds = quantd.upload_ok("datasets", str(tmp_path / "c.npy"))
    other = quantd.upload_ok("datasets", str(tmp_path / "v.npy"))
    base = {"type": "ptq", "model": m["id"], "calibration": ds["id"]}
    # refused at submit: a fixed dim contradicted, an unknown input, a width the data contradicts
    for cfg, field, words in [({"input_shapes": {"x": [1, 3, 40, 64]}}, "config.input_shapes.x", "dim 2: expected 48"),
                              ({"input_shapes": {"y": [1, 3, 48, 64]}}, "config.input_shapes.y", "no input 'y'"),
                              ({"input_shapes": {"x": [1, 3, 48, 96]}}, "calibration", "expects [N, 3, 48, 96]")]:
        st, body = quantd.json("POST", "/v1/jobs", dict(base, config=cfg))
        assert st == 422 and body["error"]["field"] == field and words in body["error"]["message"], body
    st, body = quantd.json("POST", "/v1/jobs", {"type": "ptq", "model": m["id"], "calibration": ds["id"],
                                                "validation": {"data": other["id"], "labels": other["id"]}})
    assert st == 422 and body["error"]["field"] == "validation.data", body
    job = quantd.submit(dict(base, config={"preset": "basic", "input_shapes": {"x": [1, 3, 48, 64]}}))
    j = quantd.wait(job["id"], ["succeeded", "failed"], timeout=120)
    assert j["state"] == "succeeded", j
    for a in ["report.json", "model.qdq.onnx"]:
        r = quantd.request("GET", f"/v1/jobs/{job['id']}/artifacts/{a}")
        assert r.status == 200
        (tmp_path / a).write_bytes(r.body)
    check_ptq_outdir(tmp_path, models["rec"], 48, [64, 160], {"x": [1, 3, 48, 64]})


def test_upload_refuses_a_model_that_can_never_run(quantd, tmp_path):  # noqa: F811
    g = Graph("bad")   # a Conv whose weight wants 4 input channels, on a 3-channel input
    g.input("x", np.float32, ["N", 3, 8, 8])
    g.init("w", np.ones((2, 4, 3, 3), np.float32))
    g.node("Conv", ["x", "w"], ["y"], name="conv")
    g.output("y", np.float32, ["N", 2, 6, 6])
    r = quantd.upload("models", g.save(str(tmp_path / "bad.onnx")))
    assert r.status == 422, r.body
    assert "cannot run" in r.error()["message"] and "conv" in r.error()["message"], r.error()
    g = Graph("dyn")   # the same Conv on [N, C, H, W]: nothing to contradict until shapes are given
    g.input("x", np.float32, ["N", 3, "H", "W"])
    g.init("w", np.ones((2, 3, 3, 3), np.float32))
    g.node("Conv", ["x", "w"], ["y"], name="conv")
    g.output("y", np.float32, ["N", 2, None, None])
    assert quantd.upload("models", g.save(str(tmp_path / "dyn.onnx"))).status == 201
