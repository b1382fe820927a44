"""The job spec's one owner (engine/spec_rows.c) as the service shows it: the presets route, the OpenAPI
config schema generated from the same table, the normalised spec a job records, and data sets
that do not fit the job refused at submit (422 data_mismatch) rather than failing later."""
import json
import os

import numpy as np

from service_fixtures import FIXTURES, quantd, quantd_bin, quantd_binary, make_quantd  # noqa: F401

CLS = os.path.join(FIXTURES, "cli", "cls.onnx")
CLS_X = os.path.join(FIXTURES, "cli", "cls_x.npy")
CLS_Y = os.path.join(FIXTURES, "cli", "cls_labels.npy")


def leaves(obj, prefix=""):
    for k, v in obj.items():
        if isinstance(v, dict) and k != "overrides":
            yield from leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def test_presets_are_the_engines_defaults(quantd):
    st, body = quantd.json("GET", "/v1/presets")
    assert st == 200
    std, basic = body["presets"]["standard"], body["presets"]["basic"]
    # standard rounds by GPTQ, best by AdaRound, fast/basic to nearest; adaround.enabled says the same
    assert (std["rounding"], body["presets"]["best"]["rounding"], basic["rounding"]) == ("gptq", "adaround", "nearest")
    assert std["adaround"]["enabled"] is False and body["presets"]["best"]["adaround"]["enabled"] is True
    assert basic["adaround"]["enabled"] is False
    assert std["preset"] == "standard" and basic["preset"] == "basic"
    assert std["weights"]["range"] == "mse" and basic["weights"]["range"] == "minmax"
    assert std["analysis"]["val_samples"] == 1000 and std["target_drop"] is None
    assert set(dict(leaves(std))) == set(dict(leaves(basic)))
    # fast, standard, best offered in order of cost, each with what it costs; basic is fast's former name
    assert [p["name"] for p in body["offered"]] == ["fast", "standard", "best"]
    assert all(" s " in p["about"] or " s," in p["about"] or " s." in p["about"] for p in body["offered"]), body["offered"]
    fast, best = body["presets"]["fast"], body["presets"]["best"]
    assert dict(fast, preset="basic") == basic
    assert best["adaround"]["iterations"] == 10000 > std["adaround"]["iterations"] and best["check_steps"] is True


def test_openapi_config_schema_has_every_table_field(quantd):
    st, doc = quantd.json("GET", "/v1/openapi.json")
    assert st == 200
    schema = doc["components"]["schemas"]["JobConfig"]
    assert doc["components"]["schemas"]["JobSpec"]["properties"]["config"] == {"$ref": "#/components/schemas/JobConfig"}
    _, body = quantd.json("GET", "/v1/presets")
    for path, value in leaves(body["presets"]["standard"]):
        node = schema
        for k in path.split("."):
            node = node["properties"][k]
        assert node["description"], path
        if path not in ("exclude", "overrides"):
            assert node["default"] == value, path
    # eval's field and the table's bounds too
    assert schema["properties"]["batch_size"]["minimum"] == 1
    assert schema["properties"]["weights"]["properties"]["bits"]["maximum"] == 16
    assert "presets" in doc["paths"]["/v1/presets"]["get"]["responses"]["200"]["content"]["application/json"][
        "schema"]["properties"]
    # the presets' costs, whole, in config.preset's description
    for p in body["offered"]:
        assert p["about"] in schema["properties"]["preset"]["description"], p["name"]


def test_job_records_the_normalised_spec(make_quantd):
    d = make_quantd("--set", "debug_jobs=true")
    m = d.upload_ok("models", CLS)
    x = d.upload_ok("datasets", CLS_X)
    job = d.submit({"type": "ptq", "model": m["id"], "calibration": x["id"],
                    "config": {"preset": "basic", "adaround": {"enabled": True}}})
    spec = d.job(job["id"])["spec"]
    _, body = d.json("GET", "/v1/presets")
    # adaround.enabled given sets config.rounding too
    want = dict(body["presets"]["basic"], adaround=dict(body["presets"]["basic"]["adaround"], enabled=True),
                rounding="adaround")
    assert spec == {"type": "ptq", "model": m["id"], "calibration": x["id"], "config": want}
    d.request("DELETE", f"/v1/jobs/{job['id']}")


def test_data_that_does_not_fit_the_model_is_422_at_submit(quantd, tmp_path):
    np.save(tmp_path / "wrong.npy", np.zeros((4, 7), np.float32))
    m = quantd.upload_ok("models", CLS)
    x = quantd.upload_ok("datasets", CLS_X)
    y = quantd.upload_ok("datasets", CLS_Y)
    bad = quantd.upload_ok("datasets", tmp_path / "wrong.npy")
    want = "[N, " + ", ".join(str(d) for d in m["inputs"][0]["shape"][1:]) + "]"
    for spec, field in (
            ({"type": "ptq", "model": m["id"], "calibration": bad["id"]}, "calibration"),
            ({"type": "eval", "model": m["id"], "validation": {"data": bad["id"], "labels": y["id"]}},
             "validation.data"),
            ({"type": "qat", "model": m["id"], "train": {"data": bad["id"], "labels": y["id"]}}, "train.data")):
        r = quantd.request("POST", "/v1/jobs", json.dumps(spec).encode(), {"Content-Type": "application/json"})
        assert r.status == 422, r.body
        e = r.error()
        assert e["code"] == "data_mismatch" and e["field"] == field, e
        assert bad["id"] in e["message"] and "[4, 7]" in e["message"] and want in e["message"], e
    # the same job with data that fits is accepted
    ok = {"type": "ptq", "model": m["id"], "calibration": x["id"], "config": {"adaround": {"enabled": False}}}
    r = quantd.request("POST", "/v1/jobs", json.dumps(ok).encode())
    assert r.status == 202, r.body
    quantd.request("DELETE", f"/v1/jobs/{r.json()['id']}")


def test_missing_data_is_422_at_submit(quantd):
    m = quantd.upload_ok("models", CLS)
    x = quantd.upload_ok("datasets", CLS_X)
    y = quantd.upload_ok("datasets", CLS_Y)
    for spec, field in (
            ({"type": "ptq", "model": m["id"]}, "calibration"),
            ({"type": "analyze", "model": m["id"], "calibration": x["id"]}, "validation.data"),
            ({"type": "ptq", "model": m["id"], "calibration": x["id"], "config": {"target_drop": 1}},
             "validation.data")):
        r = quantd.request("POST", "/v1/jobs", json.dumps(spec).encode(), {"Content-Type": "application/json"})
        assert r.status == 422, r.body
        e = r.error()
        assert e["code"] == "data_mismatch" and e["field"] == field and "missing" in e["message"], e
        assert quantd.request("POST", "/v1/jobs", json.dumps(dict(spec, validation={
            "data": x["id"], "labels": y["id"]}, calibration=x["id"])).encode()).status == 202


def test_overrides_and_exclude_names_checked_at_submit(quantd):
    m = quantd.upload_ok("models", CLS)
    x = quantd.upload_ok("datasets", CLS_X)
    base = {"type": "ptq", "model": m["id"], "calibration": x["id"]}
    for config, code, status, field, text in (
            ({"overrides": {"tensors": {"no_such": {"bits": 16}}}}, "unknown_name", 422,
             "config.overrides.tensors.no_such", "the model has no tensor named 'no_such'"),
            ({"overrides": {"ops": {"LSTM": {"skip": True}}}}, "unknown_name", 422,
             "config.overrides.ops.LSTM", "the model has no LSTM node"),
            ({"exclude": ["nowhere"]}, "unknown_name", 422, "config.exclude[0]", "no node named 'nowhere'"),
            ({"rounding": "gptq", "adaround": {"enabled": True}}, "conflicting_fields", 422, "config.rounding",
             "contradicts config.adaround.enabled = true"),
            ({"overrides": {"tensors": {"x": {"bitz": 4}}}}, "invalid_field", 400,
             "config.overrides.tensors.x.bitz", "unknown field")):
        r = quantd.request("POST", "/v1/jobs", json.dumps(dict(base, config=config)).encode(),
                           {"Content-Type": "application/json"})
        assert r.status == status, r.body
        e = r.error()
        assert e["code"] == code and e["field"] == field and text in e["message"], e
    # the schema documents the shape
    _, doc = quantd.json("GET", "/v1/openapi.json")
    ov = doc["components"]["schemas"]["JobConfig"]["properties"]["overrides"]
    assert "tensors" in ov["description"] and "per_channel" in ov["description"]
