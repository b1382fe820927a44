"""The web dashboard in a real browser: headless Chromium (Debian's chromium + chromium-driver)
driven by Selenium, against a real quantd on a free port with a temp state dir
(service_fixtures.py). Chromium runs with its background networking off (no component updates,
no sync, no first-run, no metrics), and Selenium Manager is kept offline: the driver and browser
are Debian's.

What the dashboard must do, checked through the page as a user would: upload the fixture model
and a calibration set (the upload progress comes from XMLHttpRequest upload events), see a bad
file refused with the API's own message, submit a PTQ job from the form, watch it go from queued
to succeeded without a reload (event stream), see the charts drawn with the report's numbers,
download an artifact and check its sha256, follow and cancel a running job from the jobs list,
and give a token once when the server wants one. Screenshots of every page at 1280 and 390 px
wide go to <builddir>/test-output/screenshots (printed at the end of the run).
"""
import hashlib
import json
import os
import shutil
import time

import numpy as np
import pytest

from service_fixtures import (BUILDDIR, FIXTURES, SRCDIR, Quantd, make_quantd,  # noqa: F401
                              quantd_binary, sha256_file)

MLP = os.path.join(FIXTURES, "mlp.onnx")
MLP_X = os.path.join(FIXTURES, "mlp.sample.npy")          # 64 Fashion-MNIST images
MLP_LOGITS = os.path.join(FIXTURES, "mlp.expected.npy")   # the model's FP32 logits on them
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SHOTS = os.path.join(BUILDDIR, "test-output", "screenshots")
WIDTHS = (1280, 390)

# Chromium with nothing running in the background that would reach the network.
CHROME_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run", "--no-default-browser-check", "--disable-default-apps", "--disable-extensions",
    "--disable-domain-reliability", "--disable-client-side-phishing-detection", "--disable-breakpad",
    "--metrics-recording-only", "--no-pings", "--safebrowsing-disable-auto-update",
    "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication",
    "--no-proxy-server", "--password-store=basic", "--force-prefers-reduced-motion",
    "--window-size=1280,900",
]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver   # in the venv (./quickstart test installs it): missing, the tests fail
    from selenium.webdriver.chrome.service import Service
    for path, pkg in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            pytest.skip(f"{path} absent (Debian package {pkg})")
    os.environ["SE_OFFLINE"] = "true"   # Selenium Manager must not look for drivers online
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for f in CHROME_FLAGS:
        opts.add_argument(f)
    opts.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    drv.set_script_timeout(30)
    yield drv
    drv.quit()
    print(f"\nscreenshots: {SHOTS}")


@pytest.fixture
def labels_npy(tmp_path):
    """Labels for the 64 sample images: the FP32 model's own predictions (so FP32 accuracy is 1)."""
    path = tmp_path / "labels.npy"
    np.save(path, np.load(MLP_LOGITS).argmax(1).astype(np.int64))
    return str(path)


class Page:
    """The dashboard in the browser, with waits that fail with what the page showed."""

    def __init__(self, drv, base):
        self.d, self.base = drv, base
        self.d.get_log("browser")   # drop what earlier tests left

    def open(self, route):
        self.d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False})
        self.d.get(f"{self.base}/#{route}")
        self.wait_js("return document.querySelector('main h1') !== null", what=f"page {route} rendered")

    def go(self, route):
        """In-app navigation (a hash change: no reload)."""
        self.d.execute_script("location.hash = arguments[0]", route)
        self.wait_js("return location.hash === arguments[0] && document.querySelector('main h1') !== null",
                     "#" + route, what=f"page {route} rendered")

    def js(self, script, *args):
        return self.d.execute_script(script, *args)

    def wait_js(self, script, *args, timeout=20, what="condition"):
        from selenium.common.exceptions import JavascriptException
        deadline = time.time() + timeout
        last_error = None
        while time.time() < deadline:
            try:   # the page may be between two views (an element not there yet): poll on
                v = self.js(script, *args)
            except JavascriptException as e:
                v, last_error = None, e.msg
            if v:
                return v
            time.sleep(0.05)
        main = self.js("return document.querySelector('main') && document.querySelector('main').innerText")
        raise AssertionError(f"timed out waiting for {what} (last script error: {last_error}); "
                             f"the page shows:\n{(main or '')[:3000]}")

    def q(self, css):
        from selenium.webdriver.common.by import By
        return self.d.find_element(By.CSS_SELECTOR, css)

    def qs(self, css):
        from selenium.webdriver.common.by import By
        return self.d.find_elements(By.CSS_SELECTOR, css)

    def text(self, css):
        return self.js("const e = document.querySelector(arguments[0]); return e ? e.innerText : null", css)

    def select(self, css, value):
        from selenium.webdriver.support.select import Select
        Select(self.q(css)).select_by_value(value)

    def accept_confirm(self, timeout=5):
        from selenium.webdriver.support import expected_conditions as EC
        from selenium.webdriver.support.ui import WebDriverWait
        WebDriverWait(self.d, timeout).until(EC.alert_is_present())
        self.d.switch_to.alert.accept()

    def errors(self):
        """Uncaught script errors from the console (failed API calls are expected and not counted)."""
        return [e["message"] for e in self.d.get_log("browser")
                if e["level"] == "SEVERE" and "Failed to load resource" not in e["message"]]

    def shoot(self, name):
        """Full-page screenshots at each width, as a phone or a desktop would lay the page out."""
        os.makedirs(SHOTS, exist_ok=True)
        for w in WIDTHS:
            metrics = {"width": w, "height": 900, "deviceScaleFactor": 1, "mobile": w < 600}
            self.d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
            time.sleep(0.4)   # layout, and charts resizing to the new width
            height = self.js("return Math.ceil(document.documentElement.getBoundingClientRect().height)")
            metrics["height"] = max(600, min(int(height), 8000))
            self.d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
            time.sleep(0.4)
            # nothing may stick out sideways: a 390 px page must not scroll horizontally
            overflow = self.js("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
            assert overflow <= 1, f"{name} at {w} px is {overflow} px wider than the screen"
            path = os.path.join(SHOTS, f"{name}-{w}.png")
            assert self.d.save_screenshot(path), path
        self.d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False})

    def charts(self, root):
        """Every canvas under root with its Chart.js instance's data (null when none drew)."""
        return self.js("""
            return [...document.querySelectorAll(arguments[0] + ' canvas')].map((c) => {
              const ch = window.Chart && Chart.getChart(c);
              return ch ? { type: ch.config.type, labels: ch.data.labels,
                            data: ch.data.datasets.map((d) => d.data), width: c.clientWidth,
                            height: c.clientHeight } : null;
            });""", root)


def upload_through_page(page, path, name=None):
    """Chooses the file and submits the upload form; returns the status texts the page showed."""
    page.js("""
        window.__status = [];
        const s = document.getElementById('upload-status');
        new MutationObserver(() => window.__status.push(s.textContent))
          .observe(s, { childList: true, characterData: true, subtree: true });""")
    page.q("#upload-file").send_keys(path)
    if name:
        page.q("#upload-name").clear()
        page.q("#upload-name").send_keys(name)
    page.q("#upload-submit").click()
    page.wait_js("""return document.querySelector('#upload-status').textContent.startsWith('Uploaded')
                    || document.querySelector('#upload-errors').textContent !== ''""", what="the upload to end")
    return page.js("return window.__status")


def test_dashboard_end_to_end(browser, make_quantd, tmp_path, labels_npy):
    d = make_quantd("--set", "debug_jobs=true", "--workers", "1")
    page = Page(browser, f"http://127.0.0.1:{d.port}")

    # --- models: a bad file is refused with the API's message, the fixture model is accepted ---
    page.open("/models")
    assert page.text("main h1") == "Models"
    bad = tmp_path / "not-a-model.onnx"
    bad.write_bytes(b"this is not an ONNX protobuf at all\n" * 20)
    upload_through_page(page, str(bad))
    api_err = d.upload("models", str(bad)).error()   # the same bytes straight to the API
    shown = page.text("#upload-errors [role=alert]")
    assert shown and api_err["message"] in shown, (shown, api_err)
    assert not d.json("GET", "/v1/models")[1]["models"], "a refused upload must leave no model"

    statuses = upload_through_page(page, MLP, "mlp")
    assert page.text("#upload-errors") == "", page.text("#upload-errors")
    # the 100 % line comes from the XMLHttpRequest upload progress callback, not from the reply
    assert any(s.startswith("Uploading mlp.onnx: 100 %") for s in statuses), statuses
    assert page.js("return document.getElementById('upload-progress').value") == 1
    models = d.json("GET", "/v1/models")[1]["models"]
    assert [m["name"] for m in models] == ["mlp"] and models[0]["sha256"] == sha256_file(MLP)
    mid = models[0]["id"]
    page.wait_js("return document.querySelector(`tr[data-id='${arguments[0]}']`) !== null", mid, what="the model's row")
    # the new upload's details are open; the button folds and unfolds them
    toggle = page.q(f"tr[data-id='{mid}'] button[aria-expanded]")
    assert toggle.get_attribute("aria-expanded") == "true"
    toggle.click()
    page.wait_js("return document.getElementById(arguments[0]).hidden", f"details-{mid}", what="details folded")
    assert toggle.get_attribute("aria-expanded") == "false"
    toggle.click()
    page.wait_js("return !document.getElementById(arguments[0]).hidden", f"details-{mid}", what="model details")
    details = page.text(f"#details-{mid}")
    assert "[N, 1, 28, 28]" in details and "Gemm × 3" in details and "logits" in details, details
    assert toggle.get_attribute("aria-expanded") == "true"
    page.shoot("models")

    # --- data sets: calibration inputs and labels ---
    page.go("/datasets")
    calib = tmp_path / "calib.npy"
    shutil.copy(MLP_X, calib)
    upload_through_page(page, str(calib))
    upload_through_page(page, labels_npy, "labels")
    # a large file: the bar moves while the bytes go out (XMLHttpRequest upload events)
    big = tmp_path / "big.npy"
    np.save(big, np.zeros((12_000_000,), np.float32))   # 48 MB
    page.js("""
        window.__progress = [];
        const b = document.getElementById('upload-progress');
        new MutationObserver(() => window.__progress.push(b.value)).observe(b, { attributes: true });""")
    # throttled to 16 MB/s (Chromium's network emulation), so that progress events come between the
    # first and the last byte even on an idle machine, where loopback would finish in one event
    page.d.execute_cdp_cmd("Network.enable", {})
    page.d.execute_cdp_cmd("Network.emulateNetworkConditions", {"offline": False, "latency": 0,
                                                                "downloadThroughput": -1,
                                                                "uploadThroughput": 16 * 1024 * 1024})
    upload_through_page(page, str(big))
    page.d.execute_cdp_cmd("Network.emulateNetworkConditions", {"offline": False, "latency": 0,
                                                                "downloadThroughput": -1, "uploadThroughput": -1})
    values = page.js("return window.__progress")
    print(f"upload progress values seen: {len(values)}")
    assert any(0 < v < 1 for v in values) and values[-1] == 1, values
    # and it goes away with its Delete button
    bid = {s["name"]: s["id"] for s in d.json("GET", "/v1/datasets")[1]["datasets"]}["big.npy"]
    page.q(f"tr[data-id='{bid}'] button.danger").click()
    page.accept_confirm()
    page.wait_js("return document.querySelector(`tr[data-id='${arguments[0]}']`) === null", bid, what="row removed")
    assert d.request("GET", f"/v1/datasets/{bid}").status == 404
    sets = {s["name"]: s for s in d.json("GET", "/v1/datasets")[1]["datasets"]}
    assert set(sets) == {"calib.npy", "labels"}, sets
    assert sets["calib.npy"]["arrays"][0]["shape"] == [64, 1, 28, 28]
    page.shoot("datasets")

    # --- a job occupies the one worker, so the PTQ job is seen queued first ---
    blocker = d.submit({"type": "sleep", "name": "warm-up", "config": {"seconds": 8}})

    # --- new job: PTQ from the form, standard preset, 64 calibration samples, no AdaRound ---
    page.go("/new")
    assert page.js("return document.getElementById('type-ptq').checked")
    # the server's defaults (GET /v1/presets): the standard preset rounds by GPTQ, AdaRound off
    page.wait_js("return document.getElementById('cfg-rounding').value === 'gptq'", what="the presets")
    assert page.js("return document.getElementById('cfg-adaround-enabled').checked") is False
    assert page.js("return document.getElementById('cfg-calibration-samples').value") == "1024"   # preset
    # the presets offered in order of cost, the chosen one's cost written under it
    assert page.js("return [...document.getElementById('cfg-preset').options].map((o) => o.value).join()") == \
        "fast,standard,best"
    assert "GPTQ rounding" in page.js("return document.getElementById('cfg-preset-hint').textContent")
    # ticked, then unticked (as a user's clicks do: input and change events): the rounding choice follows
    # (config.rounding and adaround.enabled must agree); the form sends what differs from the preset
    click_ada = "const c = document.getElementById('cfg-adaround-enabled'); c.scrollIntoView({block: 'center'}); c.click()"
    page.js(click_ada)
    assert page.js("return document.getElementById('cfg-rounding').value") == "adaround"
    page.js(click_ada)
    assert page.js("return document.getElementById('cfg-rounding').value") == "nearest"
    assert page.js("return document.getElementById('job-model').value") == mid   # the only model
    page.select("#job-calibration", sets["calib.npy"]["id"])
    page.select("#job-val-data", sets["calib.npy"]["id"])
    page.select("#job-val-labels", sets["labels"]["id"])
    samples = page.q("#cfg-calibration-samples")
    samples.clear()
    samples.send_keys("64")
    spec_preview = json.loads(page.js("return document.getElementById('spec-preview').textContent"))
    assert spec_preview == {
        "type": "ptq", "model": mid, "calibration": sets["calib.npy"]["id"],
        "validation": {"data": sets["calib.npy"]["id"], "labels": sets["labels"]["id"]},
        "config": {"preset": "standard", "rounding": "nearest", "calibration": {"samples": 64}}}, spec_preview
    page.shoot("new-job")
    page.js("window.__marker = 'no reload since submit'")
    page.q("#submit-job").click()
    jid = page.wait_js("const m = location.hash.match(/^#\\/jobs\\/(job_[0-9a-f]+)$/); return m && m[1]",
                       what="the job page after submit")
    page.wait_js("return document.getElementById('job-state') !== null", what="the job page")
    # record every state the badge shows, to see the page follow the job on its own
    page.js("""
        const badge = document.getElementById('job-state');
        window.__states = [badge.textContent];
        new MutationObserver(() => window.__states.push(badge.textContent))
          .observe(badge, { childList: true, subtree: true, characterData: true });""")
    first = page.text("#job-state")
    assert first == "queued", f"the worker was busy, the job should wait: {first}"
    page.wait_js("return document.getElementById('job-state').textContent === 'succeeded'",
                 timeout=120, what="the PTQ job to succeed")
    assert page.js("return window.__marker") == "no reload since submit"
    # (running and succeeded may land in one burst for so small a model: the log has them all)
    states = page.js("return window.__states")
    assert states[0] == "queued" and states[-1] == "succeeded", states
    assert d.job(blocker["id"])["state"] == "succeeded"

    # --- the job page: stages, log, accuracy, charts from report.json, artifacts, spec ---
    job = d.job(jid)
    assert job["state"] == "succeeded"
    report = json.loads(d.request("GET", f"/v1/jobs/{jid}/artifacts/report.json").body)
    page.wait_js("return document.querySelector('#layers canvas') && document.querySelector('#cle canvas')",
                 what="the charts")
    stages = page.text("#job-stages")
    assert "calibration" in stages and "evaluation quantized" in stages, stages
    log = page.text("#job-log")
    assert "state: running" in log and "state: succeeded" in log and "quantizers" in log, log
    acc = page.text("#accuracy")
    assert f"{100 * job['result']['fp32_accuracy']:.2f} %" in acc
    assert f"{100 * job['result']['quant_accuracy']:.2f} %" in acc
    assert json.loads(page.text("#job-spec")) == job["spec"]

    charts = page.charts("#job-results")
    assert charts and all(c is not None for c in charts), charts
    for c in charts:
        assert c["width"] > 100 and c["height"] > 100, c
        assert c["data"] and all(len(ds) > 0 for ds in c["data"]), c
    sqnr = page.charts("#layers")[0]
    assert sqnr["labels"] == [L["layer"] for L in report["layers"]]
    assert sqnr["data"][0] == pytest.approx([L["sqnr_db"] for L in report["layers"]])
    cle = page.charts("#cle")[0]
    L0 = report["cle"]["layers"][0]
    assert len(cle["labels"]) == L0["channels"]
    for k, when in enumerate(("before", "after")):   # floating bars: [min, max] per channel
        np.testing.assert_allclose(np.array(cle["data"][k]), np.stack([L0[when]["min"], L0[when]["max"]], 1),
                                   rtol=1e-6)
    # another layer from the selector redraws the chart with its channels
    if len(report["cle"]["layers"]) > 1:
        page.select("#cle-layer", "1")
        L1 = report["cle"]["layers"][1]
        page.wait_js("return Chart.getChart(document.querySelector('#cle canvas')).data.labels.length === arguments[0]",
                     len(L1["after"]["min"]), what="the CLE chart of layer 1")

    # the artifact list (GET /v1/jobs/{id}/artifacts): sizes to the byte in each title, types, the total
    page.wait_js("return document.querySelector('#job-artifacts tbody td[data-label=Type]') !== null",
                 what="the artifact list with its types")
    rows = {r.find_element("css selector", "th").text: r for r in page.qs("#job-artifacts tbody tr")}
    assert set(rows) == {a["name"] for a in job["artifacts"]}
    listed = d.json("GET", f"/v1/jobs/{jid}/artifacts")[1]["artifacts"]
    for a in listed:
        size = rows[a["name"]].find_element("css selector", "td[data-label=Size]")
        assert size.get_attribute("title") == f"{a['size']} bytes"
        kind = rows[a["name"]].find_element("css selector", "td[data-label=Type]").text
        assert kind == a["content_type"].split(";")[0]
    assert rows["report.json"].find_element("css selector", "td[data-label=Type]").text == "application/json"
    total = page.q("#artifacts-total").get_attribute("title")
    assert total == f"{sum(a['size'] for a in listed)} bytes"
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    browser.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    rows["model.qdq.onnx"].find_element("css selector", "a.download").click()
    got = downloads / "model.qdq.onnx"
    deadline = time.time() + 20
    while time.time() < deadline and not (got.exists() and not list(downloads.glob("*.crdownload"))):
        time.sleep(0.1)
    art = {a["name"]: a for a in job["artifacts"]}["model.qdq.onnx"]
    assert got.exists(), list(downloads.iterdir())
    assert hashlib.sha256(got.read_bytes()).hexdigest() == art["sha256"]
    assert page.js("return window.__marker") == "no reload since submit"
    page.shoot("job-ptq")

    # --- jobs list: both jobs, filter by state ---
    page.go("/jobs")
    page.wait_js("return document.querySelectorAll('table.jobs tbody tr').length === 2", what="two jobs listed")
    listed = page.text("table.jobs tbody")
    assert "warm-up" in listed and "ptq" in listed and "mlp" in listed, listed
    page.select("#state-filter", "failed")
    page.wait_js("const e = document.querySelector('.empty'); return location.hash === '#/jobs?state=failed' && e && !e.hidden",
                 what="the failed filter")
    assert page.text(".empty").startswith("No failed jobs")
    page.select("#state-filter", "succeeded")
    page.wait_js("return document.querySelectorAll('table.jobs tbody tr').length === 2", what="two succeeded jobs")

    # --- a running job moves on the list by itself and is cancelled from it ---
    page.go("/jobs")
    long_job = d.submit({"type": "sleep", "name": "long one", "config": {"seconds": 30}})
    lid = long_job["id"]
    page.js("window.__marker = 'list'")
    page.wait_js("""const b = document.querySelector(`tr[data-job='${arguments[0]}'] progress`);
                    return b && b.value > 0""", lid, timeout=20, what="the long job's progress")
    v1 = page.js(f"return document.querySelector(\"tr[data-job='{lid}'] progress\").value")
    page.wait_js(f"return document.querySelector(\"tr[data-job='{lid}'] progress\").value > {v1}",
                 what="the progress bar to move")
    assert page.text(f"tr[data-job='{lid}'] .badge") == "running"
    page.shoot("jobs")
    # its page: the stage with its count and an ETA, moving without a reload
    page.q(f"tr[data-job='{lid}'] a").click()
    page.wait_js("return /^about .* left$/.test(document.getElementById('job-eta').textContent)",
                 what="an ETA on the running job's page")
    assert page.text("#job-stages").startswith("sleep"), page.text("#job-stages")
    assert page.text("#job-progress-text") == "Stage: sleep."
    bar = page.js("return document.getElementById('job-progress').value")
    page.wait_js(f"return document.getElementById('job-progress').value > {bar}", what="the job's bar to move")
    page.shoot("job-running")
    page.go("/jobs")
    page.wait_js(f"return document.querySelector(\"tr[data-job='{lid}'] button.danger\") !== null", what="cancel button")
    page.q(f"tr[data-job='{lid}'] button.danger").click()
    page.accept_confirm()
    page.wait_js(f"return document.querySelector(\"tr[data-job='{lid}'] .badge\").textContent === 'cancelled'",
                 timeout=20, what="the long job to show cancelled")
    assert d.job(lid)["state"] == "cancelled"
    assert page.js("return window.__marker") == "list"
    # finished, its row offers Delete instead: the job goes with its events (DELETE → 204)
    page.wait_js(f"return document.querySelector(\"tr[data-job='{lid}'] button.danger\").textContent === 'Delete'",
                 what="the cancelled job's Delete button")
    page.q(f"tr[data-job='{lid}'] button.danger").click()
    page.accept_confirm()
    page.wait_js(f"return document.querySelector(\"tr[data-job='{lid}']\") === null", what="the deleted row gone")
    assert d.request("GET", f"/v1/jobs/{lid}").status == 404
    # and from a finished job's own page: back to the list, the job and its artifacts gone
    page.go(f"/jobs/{blocker['id']}")
    page.wait_js("const b = document.getElementById('delete-job'); return b && !b.hidden", what="the Delete job button")
    assert page.js("return document.getElementById('cancel-job').hidden") is True
    page.q("#delete-job").click()
    page.accept_confirm()
    page.wait_js("return location.hash === '#/jobs'", what="back on the list")
    assert d.request("GET", f"/v1/jobs/{blocker['id']}").status == 404
    assert not os.path.exists(os.path.join(d.state_dir, "jobs", blocker["id"]))
    assert page.js("return window.__marker") == "list"
    assert page.errors() == []


def test_analyze_and_qat_pages_draw_their_charts(browser, make_quantd, tmp_path, labels_npy):
    """Sensitivity (analysis.json) and the QAT loss/accuracy curve (report.json's qat.curve)."""
    d = make_quantd("--workers", "1")
    mid = d.upload_ok("models", MLP, "mlp")["id"]
    x = d.upload_ok("datasets", MLP_X, "x")["id"]
    y = d.upload_ok("datasets", labels_npy, "y")["id"]
    val = {"data": x, "labels": y}
    an = d.submit({"type": "analyze", "model": mid, "calibration": x, "validation": val,
                   "config": {"calibration": {"samples": 64}}})
    qat = d.submit({"type": "qat", "model": mid, "calibration": x, "train": val, "validation": val,
                    "config": {"calibration": {"samples": 64}, "qat": {"epochs": 3, "batch_size": 16}}})
    for j in (an, qat):
        assert d.wait(j["id"], ("succeeded", "failed"), timeout=180)["state"] == "succeeded", d.job(j["id"])
    page = Page(browser, f"http://127.0.0.1:{d.port}")

    page.open(f"/jobs/{an['id']}")
    page.wait_js("return document.querySelectorAll('#layers canvas').length === 2", what="sensitivity charts")
    analysis = json.loads(d.request("GET", f"/v1/jobs/{an['id']}/artifacts/analysis.json").body)
    sq, drop = page.charts("#layers")
    assert sq["labels"] == [L["name"] for L in analysis["layers"]]
    assert sq["data"][0] == pytest.approx([L["sqnr_only_this_db"] for L in analysis["layers"]])
    assert drop["data"][0] == pytest.approx([L["drop_only_this_points"] for L in analysis["layers"]])
    assert page.charts("#cle")[0]["data"][0], "weight ranges from analysis.json"
    assert "Weights only quantized" in page.text("#accuracy")
    page.shoot("job-analyze")

    page.go(f"/jobs/{qat['id']}")
    page.wait_js("return document.querySelector('#qat canvas') !== null", what="the QAT curve")
    report = json.loads(d.request("GET", f"/v1/jobs/{qat['id']}/artifacts/report.json").body)
    curve = report["qat"]["curve"]
    (c,) = page.charts("#qat")
    assert c["type"] == "line" and c["labels"] == [str(p["epoch"]) for p in curve]
    assert c["data"][0] == pytest.approx([p["loss"] for p in curve])
    assert c["data"][1] == pytest.approx([100 * p["accuracy"] for p in curve])
    assert "QAT" in page.text("#accuracy")
    page.shoot("job-qat")
    assert page.errors() == []


def test_token_is_asked_once_and_kept_for_the_session(browser, make_quantd, tmp_path, labels_npy):
    tok = tmp_path / "tokens"
    tok.write_text("# dashboard test\nsesame-1234\n")
    d = make_quantd("--token-file", str(tok), token="sesame-1234")
    page = Page(browser, f"http://127.0.0.1:{d.port}")
    page.d.get(f"http://127.0.0.1:{d.port}/")
    page.js("sessionStorage.clear()")
    page.open("/jobs")
    page.wait_js("return document.getElementById('token-dialog').open", what="the token dialog")
    assert "needs a bearer token" in page.text("#token-reason")
    page.shoot("token-dialog")
    page.q("#token-input").send_keys("sesame-1234\n")
    page.wait_js("return !document.getElementById('token-dialog').open", what="the dialog to close")
    page.wait_js("return document.querySelector('.empty') && !document.querySelector('.empty').hidden",
                 what="the (empty) job list")
    assert page.js("return sessionStorage.getItem('quantd.token')") == "sesame-1234"
    # every other page and an upload work without asking again
    page.js("window.__asked = 0; document.getElementById('token-dialog').addEventListener('toggle', () => window.__asked++)")
    for route in ("/models", "/datasets", "/new", "/jobs"):
        page.go(route)
        time.sleep(0.3)
        assert not page.js("return document.getElementById('token-dialog').open"), route
    page.go("/datasets")
    upload_through_page(page, labels_npy, "labels")
    assert page.text("#upload-status").startswith("Uploaded labels"), page.text("#upload-errors")
    assert [s["name"] for s in d.json("GET", "/v1/datasets")[1]["datasets"]] == ["labels"]
    assert page.js("return document.getElementById('token-dialog').open") is False
    assert page.errors() == []


# --- the static routes themselves (no browser) -----------------------------------------------------

def test_dashboard_files_are_served_with_their_types(make_quantd):
    d = make_quantd()
    r = d.request("GET", "/")
    assert r.status == 200 and r.headers["content-type"].startswith("text/html")
    with open(os.path.join(SRCDIR, "web", "index.html"), "rb") as f:
        assert r.body == f.read()
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "unsafe-inline" not in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    for path in ("/app.js", "/api.js", "/pages/job.js"):
        r = d.request("GET", path)
        assert r.status == 200 and r.headers["content-type"].startswith("text/javascript"), path
    assert d.request("GET", "/style.css").headers["content-type"].startswith("text/css")
    r = d.request("GET", "/vendor/chart.js")
    if not os.path.exists("/usr/share/javascript/chart.js/chart.min.js"):
        pytest.skip("Debian package libjs-chart.js absent")
    assert r.status == 200 and r.body.startswith(b"/*!\n * Chart.js v")
    # revalidation: the same validator gives 304 with no body
    etag = d.request("GET", "/app.js").headers["etag"]
    r = d.request("GET", "/app.js", headers={"If-None-Match": etag})
    assert r.status == 304 and r.body == b""
    # HEAD answers like GET without a body
    r = d.request("HEAD", "/")
    assert r.status == 200 and r.body == b""


def test_dashboard_refuses_what_is_not_a_file_of_it(make_quantd):
    d = make_quantd()
    for path in ("/nope.js", "/.gitignore", "/pages/.hidden", "/pages/nope.js", "/pages"):
        r = d.request("GET", path)
        assert r.status == 404 and r.error()["code"] == "not_found", path
    for path in ("/pages/../../etc/passwd", "/../etc/passwd"):
        r = d.request("GET", path)
        assert r.status in (400, 404), (path, r.status)
        assert b"root:" not in r.body
    assert d.request("POST", "/app.js", b"").status == 405
    # the API keeps its own answers: unknown /v1 paths are still "no such path"
    r = d.request("GET", "/v1/nothing")
    assert r.status == 404 and "no such path" in r.error()["message"]


def test_dashboard_is_public_but_the_api_is_not(make_quantd, tmp_path):
    tok = tmp_path / "tokens"
    tok.write_text("t0k3n\n")
    d = make_quantd("--token-file", str(tok), token="t0k3n")
    assert d.request("GET", "/", auth=False).status == 200
    assert d.request("GET", "/app.js", auth=False).status == 200
    assert d.request("GET", "/v1/jobs", auth=False).status == 401


def test_web_root_and_chartjs_config_keys(make_quantd, tmp_path):
    root = tmp_path / "site"
    (root / "pages").mkdir(parents=True)
    (root / "index.html").write_text("<!doctype html><title>custom</title>")
    (root / "pages" / "x.js").write_text("export const x = 1;\n")
    chart = tmp_path / "mychart.js"
    chart.write_text("window.Chart = function () {};\n")
    d = make_quantd("--set", f"web_root={root}", "--set", f"chartjs={chart}")
    assert b"custom" in d.request("GET", "/").body
    assert d.request("GET", "/pages/x.js").body == b"export const x = 1;\n"
    assert d.request("GET", "/vendor/chart.js").body == chart.read_bytes()
    # a missing Chart.js or web root says which setting to fix
    d2 = make_quantd("--set", f"web_root={tmp_path / 'none'}", "--set", f"chartjs={tmp_path / 'none.js'}")
    e = d2.request("GET", "/vendor/chart.js").error()
    assert "libjs-chart.js" in e["message"] and "chartjs" in e["message"]
    e = d2.request("GET", "/").error()
    assert "web_root" in e["message"]


def test_keyboard_navigation_and_form_errors(browser, make_quantd):
    """Everything reachable from the keyboard; a refused job shows the API's message at its field."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys
    d = make_quantd()
    mid = d.upload_ok("models", MLP, "mlp")["id"]
    page = Page(browser, f"http://127.0.0.1:{d.port}")
    page.open("/jobs")
    page.js("document.activeElement.blur()")
    focused = []
    for _ in range(6):   # skip link, brand, then the navigation, in reading order
        ActionChains(browser).send_keys(Keys.TAB).perform()
        focused.append(page.js("return document.activeElement.textContent.trim()"))
        if focused[-1] == "New job":
            break
    assert focused[0] == "Skip to content" and focused[-1] == "New job", focused
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    page.wait_js("return location.hash === '#/new' && document.activeElement.tagName === 'H1'",
                 what="the new-job page with focus on its heading")
    assert browser.title == "New job — quantd"
    # every control of the form has a label a screen reader announces
    unlabelled = page.js("""return [...document.querySelectorAll('#new-job input, #new-job select')]
                              .filter((e) => !e.labels || !e.labels.length || !e.labels[0].textContent.trim())
                              .map((e) => e.id || e.name)""")
    assert unlabelled == [], unlabelled
    # the radio buttons switch the form with the arrow keys
    page.q("#type-ptq").click()
    ActionChains(browser).send_keys(Keys.ARROW_DOWN).perform()
    page.wait_js("return document.getElementById('type-qat').checked && "
                 "!document.getElementById('job-train-data').closest('.field').hidden", what="QAT fields")
    ActionChains(browser).send_keys(Keys.ARROW_UP).perform()
    # the model goes away after the page listed it: the server refuses the job and says why
    assert d.request("DELETE", f"/v1/models/{mid}").status == 204
    page.js("document.getElementById('submit-job').focus()")
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    page.wait_js("return document.querySelector('#new-job-errors [role=alert]') !== null", what="the refusal")
    st, body = d.json("POST", "/v1/jobs", {"type": "ptq", "model": mid, "config": {"preset": "standard"}})
    assert st == 422 and body["error"]["field"] == "model"
    assert body["error"]["message"] in page.text("#new-job-errors"), page.text("#new-job-errors")
    assert page.js("return document.activeElement.id") == "job-model"
    assert page.q("#job-model").get_attribute("aria-invalid") == "true"
    assert page.js("return location.hash") == "#/new"
    # the same on a phone: a 390 px wide form with the error
    page.shoot("new-job-error")
    # and a local check names the field before anything is sent
    page.select("#job-model", "")
    page.q("#submit-job").click()
    page.wait_js("return document.activeElement.id === 'job-model'", what="focus on the missing model")
    assert "'model' is required" in page.text("#new-job-errors")
    assert page.errors() == []
