"""Reference models: the engine (through the `quant` CLI) against PyTorch and ONNX Runtime.

The fixtures (tests/fixtures/, made by make_fixtures.py with PyTorch) give, for each small model of
the paper's families, PyTorch's logits on 64 test images and its top-1 accuracy and per-image
predictions on the 10k Fashion-MNIST test set. Here we check:
  - `quant run` reproduces the logits: max|ours - torch| <= 1e-4 * max|torch| + 1e-5 (the max-abs
    sense, over the whole [64,10] output), for both the BN-folded export and the one keeping BN;
  - ONNX Runtime agrees with the same bound (checks the fixture files, and ours against ORT);
  - `quant run` on the whole test set picks PyTorch's class on every image (float ties excepted);
  - `quant eval` gives exactly PyTorch's number of correct predictions. One sample of difference is
    tolerated only when every image on which we and PyTorch disagree is a genuine float tie (our two
    best logits within 1e-4 of the largest |logit|), which is checked by running the whole test set;
  - the ONNX zoo's mnist-8 (opset 8, fixed batch 1) gives its published 98.9% and ORT's outputs.
"""
import json
import os

import numpy as np
import pytest

RTOL, ATOL = 1e-4, 1e-5
TIE_REL = 1e-4

SRCDIR = os.environ.get("QD_SRCDIR") or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(SRCDIR, "tests", "fixtures")
with open(os.path.join(FIXTURES, "expected.json")) as _f:
    EXPECTED = json.load(_f)["models"]
NAMES = sorted(EXPECTED)
# Every committed ONNX form: NAME.onnx (BN folded by the exporter) and NAME_bn.onnx (BN kept).
FORMS = [(n, f) for n in NAMES for f in ([n, n + "_bn"] if EXPECTED[n]["batchnorm"] else [n])]
FORM_IDS = [f for _, f in FORMS]


def close(ours, ref):
    """(ok, message) for the max-abs bound max|ours - ref| <= RTOL * max|ref| + ATOL."""
    if ours.shape != ref.shape:
        return False, f"shape {ours.shape} != {ref.shape}"
    err, scale = float(np.abs(ours - ref).max()), float(np.abs(ref).max())
    return err <= RTOL * scale + ATOL, f"max|diff| {err:.3g} vs bound {RTOL * scale + ATOL:.3g} (max|ref| {scale:.3g})"


def sample(name):
    return os.path.join(FIXTURES, f"{name}.sample.npy")


def expected(name):
    return np.load(os.path.join(FIXTURES, f"{name}.expected.npy"))


def model_path(form):
    return os.path.join(FIXTURES, f"{form}.onnx")


def quant_run(run_quant, model, x_path, out_path, *extra):
    run_quant.ok("run", model, "--input", x_path, "--output", out_path, *extra)
    return np.load(out_path)


def ort_run(model, x):
    import onnxruntime as ort   # in the venv (quickstart): missing, the test fails
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    s = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    inp = s.get_inputs()[0]
    if isinstance(inp.shape[0], int) and inp.shape[0] == 1 and len(x) > 1:
        return np.concatenate([s.run(None, {inp.name: x[i:i + 1]})[0] for i in range(len(x))])
    return s.run(None, {inp.name: x})[0]


def eval_json(run_quant, model, x_path, y_path, *extra):
    r = run_quant.ok("eval", model, "--input", x_path, "--labels", y_path, "--json", *extra)
    try:
        res = json.loads(r.stdout)
    except ValueError:
        pytest.fail(f"quant eval --json printed no JSON object on stdout:\n{r.stdout[:2000]}")
    for k in ("accuracy", "top5", "samples", "seconds"):
        assert k in res, f"quant eval --json: no '{k}' in {res}"
    return res


# --- the fixtures themselves --------------------------------------------------------------------

def test_expected_json_is_complete():
    assert set(NAMES) >= {"resnet", "mobilenet", "vgg", "mlp"}
    for n, m in EXPECTED.items():
        assert m["samples"] == 10000 and m["correct"] == round(m["accuracy"] * m["samples"]), n
        assert 0.80 < m["accuracy"] < 1.0, f"{n}: a trained fixture should reach 80% on Fashion-MNIST"


def test_sample_matches_dataset(fashion_test):
    """The samples are the first 64 test images normalised the way the eval tests do it, bit for bit."""
    _, _, x, _ = fashion_test
    for n in NAMES:
        s = np.load(sample(n))
        assert s.dtype == np.float32 and s.shape == (64, 1, 28, 28)
        assert np.array_equal(s, x[:64]), f"{n}.sample.npy differs from normalise(t10k[:64])"


@pytest.mark.parametrize("name,form", FORMS, ids=FORM_IDS)
def test_ort_matches_pytorch(name, form):
    ok, msg = close(ort_run(model_path(form), np.load(sample(name))), expected(name))
    assert ok, f"{form}: ONNX Runtime vs PyTorch: {msg}"


# --- quant run ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name,form", FORMS, ids=FORM_IDS)
def test_run_matches_pytorch(run_quant, tmp_path, name, form):
    ours = quant_run(run_quant, model_path(form), sample(name), tmp_path / "y.npy")
    assert ours.dtype == np.float32
    ok, msg = close(ours, expected(name))
    assert ok, f"{form}: quant run vs PyTorch: {msg}"


@pytest.mark.parametrize("name,form", FORMS, ids=FORM_IDS)
def test_run_matches_ort(run_quant, tmp_path, name, form):
    x = np.load(sample(name))
    ours = quant_run(run_quant, model_path(form), sample(name), tmp_path / "y.npy")
    ok, msg = close(ours, ort_run(model_path(form), x))
    assert ok, f"{form}: quant run vs ONNX Runtime: {msg}"


@pytest.mark.parametrize("name", NAMES)
def test_run_batch_remainder(run_quant, tmp_path, name):
    """A batch size that does not divide the sample count (64 = 9*7 + 1) gives the same logits."""
    ours = quant_run(run_quant, model_path(name), sample(name), tmp_path / "y.npy", "--batch", 7)
    ok, msg = close(ours, expected(name))
    assert ok, f"{name} --batch 7: {msg}"


def test_run_npz_in_and_out(run_quant, tmp_path):
    """.npz input keyed by the model's input name; .npz output keyed by its output name."""
    np.savez(tmp_path / "x.npz", input=np.load(sample("resnet")))
    run_quant.ok("run", model_path("resnet"), "--input", tmp_path / "x.npz", "--output", tmp_path / "y.npz")
    with np.load(tmp_path / "y.npz") as z:
        assert "logits" in z.files, f"output .npz keys {z.files}, expected the output name 'logits'"
        ok, msg = close(z["logits"], expected("resnet"))
    assert ok, msg


def test_run_wrong_shape_is_a_clear_error(run_quant, tmp_path):
    """Bad input: exit non-zero with a message naming the shape problem, not a crash."""
    np.save(tmp_path / "x.npy", np.zeros((4, 1, 27, 28), np.float32))
    r = run_quant("run", model_path("vgg"), "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy")
    assert r.returncode == 1, f"exit {r.returncode} (negative = killed by a signal): {r.stderr}"
    # names the input, the shape it takes and the shape it got
    assert "'input'" in r.stderr and "[N, 1, 28, 28]" in r.stderr and "[4, 1, 27, 28]" in r.stderr, r.stderr
    assert "dim 2 must be 28, got 27" in r.stderr, r.stderr
    assert not (tmp_path / "y.npy").exists()


def test_eval_labels_count_mismatch_is_a_clear_error(run_quant, tmp_path):
    np.save(tmp_path / "y.npy", np.zeros(63, np.int64))
    r = run_quant("eval", model_path("mlp"), "--input", sample("mlp"), "--labels", tmp_path / "y.npy")
    assert r.returncode == 1, f"exit {r.returncode} (negative = killed by a signal): {r.stderr}"
    assert "expected 64 labels" in r.stderr and "[63]" in r.stderr, r.stderr   # the sample has 64 images


# --- quant eval on the whole test set ------------------------------------------------------------

def tie_flips(run_quant, tmp_path, model, x_path, torch_pred):
    """Images where our top-1 differs from PyTorch's, and which of those are genuine float ties."""
    logits = quant_run(run_quant, model, x_path, tmp_path / "all.npy", "--batch", 500)
    ours = logits.argmax(1)
    flips = np.nonzero(ours != torch_pred)[0]
    top2 = np.sort(logits[flips], 1)[:, -2:]
    ties = (top2[:, 1] - top2[:, 0]) <= TIE_REL * np.abs(logits[flips]).max(1)
    return flips, flips[ties]


@pytest.mark.parametrize("name,form", FORMS, ids=FORM_IDS)
def test_eval_matches_pytorch_accuracy(run_quant, fashion_test, tmp_path, name, form):
    x_path, y_path, _, y = fashion_test
    exp = EXPECTED[name]
    res = eval_json(run_quant, model_path(form), x_path, y_path, "--batch", 256)
    assert res["samples"] == exp["samples"] == len(y)
    correct = round(res["accuracy"] * res["samples"])
    assert abs(res["accuracy"] * res["samples"] - correct) < 1e-6, f"accuracy {res['accuracy']} is not k/N"
    assert res["accuracy"] <= res["top5"] <= 1.0
    if correct == exp["correct"]:
        return
    torch_pred = np.load(os.path.join(FIXTURES, f"{name}.test_pred.npy")).astype(np.int64)
    flips, ties = tie_flips(run_quant, tmp_path, model_path(form), x_path, torch_pred)
    detail = (f"{form}: quant eval {correct}/{len(y)} correct, PyTorch {exp['correct']}; top-1 differs "
              f"from PyTorch on images {flips.tolist()[:20]}, of which float ties {ties.tolist()[:20]}")
    assert abs(correct - exp["correct"]) <= 1 and len(flips) == len(ties), detail
    pytest.xfail("tolerated one-sample float tie: " + detail)


@pytest.mark.parametrize("name,form", FORMS, ids=FORM_IDS)
def test_predictions_match_pytorch(run_quant, fashion_test, tmp_path, name, form):
    """Image by image (stronger than the count, where errors could cancel): our top-1 is PyTorch's on
    all 10k test images, except on genuine float ties."""
    x_path = fashion_test[0]
    torch_pred = np.load(os.path.join(FIXTURES, f"{name}.test_pred.npy")).astype(np.int64)
    flips, ties = tie_flips(run_quant, tmp_path, model_path(form), x_path, torch_pred)
    assert len(flips) == len(ties) and len(flips) <= 1, \
        f"{form}: top-1 differs from PyTorch on images {flips.tolist()[:20]}, float ties among them {ties.tolist()}"


# --- a real-world model: the ONNX zoo's mnist-8 --------------------------------------------------

def test_mnist8_accuracy(run_quant, realworld_dir, mnist_test):
    x_path, y_path, _, _ = mnist_test
    res = eval_json(run_quant, os.path.join(realworld_dir, "mnist-8.onnx"), x_path, y_path)
    assert res["samples"] == 10000
    assert abs(res["accuracy"] - 0.989) <= 0.0005 + 1e-9, f"mnist-8 top-1 {res['accuracy']}, expected 0.989"


def test_mnist8_matches_ort(run_quant, realworld_dir, mnist_test, tmp_path):
    _, _, x, _ = mnist_test
    model = os.path.join(realworld_dir, "mnist-8.onnx")
    np.save(tmp_path / "x.npy", x[:8])
    ours = quant_run(run_quant, model, tmp_path / "x.npy", tmp_path / "y.npy")
    ok, msg = close(ours.reshape(8, 10), ort_run(model, x[:8]).reshape(8, 10))
    assert ok, f"mnist-8: quant run vs ONNX Runtime: {msg}"
