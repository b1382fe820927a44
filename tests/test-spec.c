/* The job spec's table (engine/spec_rows.c): preset defaults, overrides, errors that name the field, a
 * lossless round trip through qs_qconfig_to_json (what report.json records can be fed back as a
 * config), and table-driven checks over every field: its default is in the presets and the
 * schema, and a value out of bounds or of the wrong type is refused naming the field. */
#include "tests/harness.h"
#include "engine/spec_json.h"

#include <string.h>

static int parse(const char *text, qs_qconfig *c, qs_err *e)
{
    json_error_t je;
    json_t *j = json_loads(text, 0, &je);
    ASSERT(j);
    int rc = qs_qconfig_parse(j, c, e);
    json_decref(j);
    return rc;
}

TEST(standard_preset_is_the_papers_pipeline)
{
    qs_qconfig c;
    qs_err e = {0};
    ASSERT_EQ(qs_qconfig_parse(NULL, &c, &e), 0);
    ASSERT_STR_EQ(c.preset, "standard");
    ASSERT_EQ(c.weights.bits, 8);
    ASSERT(c.weights.symmetric && c.weights.per_channel && !c.act.symmetric);
    ASSERT_EQ(c.weights.range, QS_RANGE_MSE);
    ASSERT_EQ(c.act.range, QS_RANGE_MSE);
    ASSERT_EQ(c.act.last_layer, QS_RANGE_CE);
    ASSERT(c.bn_fold && c.cle && c.bias_absorption);
    qs_qconfig_free(&c);
    ASSERT_EQ(parse("{\"preset\": \"basic\"}", &c, &e), 0);
    ASSERT_EQ(c.weights.range, QS_RANGE_MINMAX);
    ASSERT(!c.cle && !c.adaround.enabled);
    qs_qconfig_free(&c);
}

/* fast, standard and best in order of cost; basic is fast under its former name, and keeps it */
TEST(presets_fast_standard_best)
{
    ASSERT_STR_EQ(qs_spec_preset_name(0), "fast");
    ASSERT_STR_EQ(qs_spec_preset_name(1), "standard");
    ASSERT_STR_EQ(qs_spec_preset_name(2), "best");
    ASSERT(qs_spec_preset_name(3) == NULL);
    for (int i = 0; i < 3; i++)
        ASSERT(strstr(qs_spec_preset_about(qs_spec_preset_name(i)), " s") != NULL);   /* a measured time */
    ASSERT(qs_spec_preset_about("basic") != NULL && qs_spec_preset_about("quick") == NULL);
    qs_qconfig f, b, s, x;
    qs_err e = {0};
    ASSERT_EQ(parse("{\"preset\": \"fast\"}", &f, &e), 0);
    ASSERT_EQ(parse("{\"preset\": \"basic\"}", &b, &e), 0);
    ASSERT_EQ(parse("{}", &s, &e), 0);
    ASSERT_EQ(parse("{\"preset\": \"best\"}", &x, &e), 0);
    ASSERT_STR_EQ(f.preset, "fast");
    ASSERT_STR_EQ(b.preset, "basic");
    ASSERT_STR_EQ(x.preset, "best");
    /* fast: fold + min-max ranges, nearest rounding, nothing that needs passes over the data */
    ASSERT(f.bn_fold && !f.cle && !f.bias_absorption && f.bias_correction == QS_BC_NONE && !f.adaround.enabled &&
           !f.check_steps);
    ASSERT(f.weights.range == QS_RANGE_MINMAX && f.act.range == QS_RANGE_MINMAX && f.act.last_layer == QS_RANGE_MINMAX);
    ASSERT(f.rounding == QS_ROUND_NEAREST && s.rounding == QS_ROUND_GPTQ && x.rounding == QS_ROUND_ADAROUND);
    char *ft = qs_qconfig_to_text(&f), *bt = qs_qconfig_to_text(&b);
    ASSERT(strstr(ft, "\"preset\":\"fast\"") && strstr(bt, "\"preset\":\"basic\""));
    char *q = strstr(bt, "\"preset\":\"basic\"") + 10;   /* the same settings under the other name */
    memmove(q + 4, q + 5, strlen(q + 5) + 1);
    memcpy(q, "fast", 4);
    ASSERT_STR_EQ(ft, bt);
    free(ft);
    free(bt);
    /* standard and best: the paper's pipeline, checked; standard rounds by GPTQ (minutes), best by
     * AdaRound at its full iterations */
    ASSERT(s.cle && !s.adaround.enabled && s.check_steps && x.cle && x.adaround.enabled && x.check_steps);
    ASSERT_EQ(s.weights.range, QS_RANGE_MSE);
    ASSERT_EQ(x.act.last_layer, QS_RANGE_CE);
    ASSERT_EQ(x.adaround.iterations, 10000);
    ASSERT(s.adaround.iterations < x.adaround.iterations);
    qs_qconfig_free(&f);
    qs_qconfig_free(&b);
    qs_qconfig_free(&s);
    qs_qconfig_free(&x);
    ASSERT(parse("{\"preset\": \"quick\"}", &f, &e) < 0);
    ASSERT(strstr(e.msg, "config.preset") && strstr(e.msg, "fast, standard, best"));
}

TEST(fields_override_the_preset)
{
    qs_qconfig c;
    qs_err e = {0};
    ASSERT_EQ(parse("{\"weights\": {\"bits\": 4, \"per_channel\": false}, \"activations\": {\"range\": \"percentile\","
                    " \"percentile\": 99.9}, \"exclude\": [\"conv1\", \"fc\"], \"qat\": {\"lr\": 0.001}}", &c, &e), 0);
    ASSERT_EQ(c.weights.bits, 4);
    ASSERT(!c.weights.per_channel);
    ASSERT_EQ(c.act.range, QS_RANGE_PERCENTILE);
    ASSERT_EQ(c.act.last_layer, QS_RANGE_PERCENTILE);   /* an explicit range covers the logits too */
    ASSERT_CLOSE(c.act.percentile, 99.9, 1e-12, 0);
    ASSERT_EQ(c.nexclude, 2);
    ASSERT_STR_EQ(c.exclude[1], "fc");
    ASSERT_CLOSE(c.qat.lr, 1e-3, 1e-12, 0);
    qs_qconfig_free(&c);
}

TEST(errors_name_the_field)
{
    qs_qconfig c;
    qs_err e = {0};
    ASSERT_EQ(parse("{\"weights\": {\"bitz\": 4}}", &c, &e), QS_EINVAL);
    ASSERT_STR_CONTAINS(e.msg, "config.weights.bitz");
    ASSERT_EQ(parse("{\"weights\": {\"bits\": 1}}", &c, &e), QS_EINVAL);
    ASSERT_STR_CONTAINS(e.msg, "config.weights.bits");
    ASSERT_STR_CONTAINS(e.msg, "2 to 16");
    ASSERT_EQ(parse("{\"activations\": {\"range\": \"magic\"}}", &c, &e), QS_EINVAL);
    ASSERT_STR_CONTAINS(e.msg, "'magic'");
    ASSERT_EQ(parse("{\"cle\": 1}", &c, &e), QS_EINVAL);
    ASSERT_STR_CONTAINS(e.msg, "config.cle");
    ASSERT_EQ(parse("{\"exclude\": [3]}", &c, &e), QS_EINVAL);
    ASSERT_STR_CONTAINS(e.msg, "config.exclude[0]");
    ASSERT_EQ(parse("[]", &c, &e), QS_EINVAL);
}

TEST(round_trip_through_json)
{
    qs_qconfig a, b;
    qs_err e = {0};
    ASSERT_EQ(parse("{\"weights\": {\"bits\": 6}, \"bias_correction\": \"analytical\", \"exclude\": [\"x\"],"
                    " \"overrides\": {\"tensors\": {\"fc\": {\"bits\": 16}}}, \"target_drop\": 0.5}", &a, &e), 0);
    json_t *j = qs_qconfig_to_json(&a);
    ASSERT(j);
    if (qs_qconfig_parse(j, &b, &e) < 0)
        QT_FAIL_("%s", e.msg);
    json_t *k = qs_qconfig_to_json(&b);
    ASSERT(json_equal(j, k));
    ASSERT_EQ(b.weights.bits, 6);
    ASSERT_EQ(b.bias_correction, QS_BC_ANALYTICAL);
    ASSERT_CLOSE(b.target_drop, 0.5, 0, 0);
    json_decref(j);
    json_decref(k);
    qs_qconfig_free(&a);
    qs_qconfig_free(&b);
}

/* config.overrides: its shape is checked at parse, the error naming the field */
TEST(overrides_shape_checked)
{
    qs_qconfig c;
    qs_err e = {0};
    char field[256];
    ASSERT_EQ(parse("{\"overrides\": {\"tensors\": {\"fc\": {\"bitz\": 4}}}}", &c, &e), QS_EINVAL);
    ASSERT_STR_CONTAINS(e.msg, "unknown field 'config.overrides.tensors.fc.bitz'");
    qs_spec_err_field(&e, field, sizeof field);
    ASSERT_STR_EQ(field, "config.overrides.tensors.fc.bitz");
    ASSERT_EQ(parse("{\"overrides\": {\"ops\": {\"MatMul\": {\"weight_bits\": 1}}}}", &c, &e), QS_EINVAL);
    ASSERT_STR_CONTAINS(e.msg, "config.overrides.ops.MatMul.weight_bits: must be an integer between 2 and 16");
    ASSERT_EQ(parse("{\"overrides\": {\"ops\": {\"MatMul\": {\"skip\": true}}, \"tensors\": {\"a\": "
                    "{\"bits\": 16, \"per_channel\": false}}}}", &c, &e), 0);
    qs_qconfig_free(&c);
}

/* the JSON object at a dotted path below root (NULL when absent) */
static json_t *at_path(json_t *root, const char *path)
{
    char buf[128];
    snprintf(buf, sizeof buf, "%s", path);
    json_t *o = root;
    for (char *save = NULL, *k = strtok_r(buf, ".", &save); k && o; k = strtok_r(NULL, ".", &save))
        o = json_object_get(o, k);
    return o;
}

/* a spec of type t with value v (JSON text) at path, other fields valid */
static int parse_with(unsigned t, const char *path, const char *v, qs_err *e)
{
    json_t *spec = json_pack("{s:s, s:s, s:{s:s, s:s}, s:{s:s, s:s}, s:s}", "type", qs_job_type_name((qs_job_type)t),
                             "model", "mdl_x", "train", "data", "ds_a", "labels", "ds_b", "validation", "data", "ds_a",
                             "labels", "ds_b", "calibration", "ds_a");
    if (t == QS_JOB_EVAL || t == QS_JOB_SLEEP)
        json_object_del(spec, "train");
    if (t == QS_JOB_SLEEP)
        json_object_del(spec, "validation");
    json_t *val = json_loads(v, JSON_DECODE_ANY, NULL);
    ASSERT(val);
    char buf[128];
    snprintf(buf, sizeof buf, "%s", path);
    json_t *o = spec;
    char *save = NULL, *k = strtok_r(buf, ".", &save);
    for (char *next; (next = strtok_r(NULL, ".", &save)); k = next) {
        json_t *c = json_object_get(o, k);
        if (!c)
            json_object_set_new(o, k, c = json_object());
        o = c;
    }
    json_object_set_new(o, k, val);
    qs_job_spec s;
    int rc = qs_job_spec_parse(spec, QS_SPEC_DEBUG_JOBS, &s, e);
    if (rc == 0)
        qs_job_spec_free(&s);
    json_decref(spec);
    return rc;
}

static unsigned a_type(unsigned jobs)
{
    for (unsigned t = 1; t <= QS_JOB_SLEEP; t <<= 1)
        if (jobs & t)
            return t;
    return 0;
}

TEST(every_config_field_has_a_default_in_the_presets_and_the_schema)
{
    json_t *presets = qs_spec_presets_json(), *schema = qs_spec_config_schema();
    ASSERT(presets && schema);
    int nconfig = 0;
    for (int i = 0; i < qs_spec_nfields(); i++) {
        const char *p = qs_spec_field_path(i);
        if (strncmp(p, "config.", 7))
            continue;
        nconfig++;
        /* in the schema: properties of properties … */
        json_t *o = schema;
        char buf[128];
        snprintf(buf, sizeof buf, "%s", p + 7);
        for (char *save = NULL, *k = strtok_r(buf, ".", &save); k && o; k = strtok_r(NULL, ".", &save))
            o = json_object_get(json_object_get(o, "properties"), k);
        if (!o)
            QT_FAIL_("%s is not in the config schema", p);
        ASSERT_STR_EQ(json_string_value(json_object_get(o, "type")), qs_spec_field_schema_type(i));
        ASSERT(json_string_length(json_object_get(o, "description")) > 0);
        /* the quantization config's fields: in every preset */
        if (qs_spec_field_jobs(i) & QS_JOB_QUANT)
            for (const char *const *n = (const char *const[]){"fast", "standard", "best", "basic", NULL}; *n; n++)
                if (!at_path(json_object_get(presets, *n), p + 7))
                    QT_FAIL_("%s is not in preset %s", p, *n);
    }
    ASSERT(nconfig > 40);
    /* the weights' rounding: GPTQ in standard, AdaRound in best, nearest in fast */
    ASSERT_STR_EQ(json_string_value(at_path(presets, "standard.rounding")), "gptq");
    ASSERT_STR_EQ(json_string_value(at_path(presets, "best.rounding")), "adaround");
    ASSERT_STR_EQ(json_string_value(at_path(presets, "fast.rounding")), "nearest");
    ASSERT(json_is_false(at_path(presets, "standard.adaround.enabled")));
    ASSERT(json_is_true(at_path(presets, "best.adaround.enabled")));
    ASSERT(json_is_false(at_path(presets, "fast.adaround.enabled")));
    ASSERT(json_is_false(at_path(presets, "basic.adaround.enabled")));
    json_decref(presets);
    json_decref(schema);
}

TEST(every_field_refuses_a_wrong_value_naming_the_field)
{
    json_t *schema = qs_spec_config_schema();
    for (int i = 0; i < qs_spec_nfields(); i++) {
        const char *p = qs_spec_field_path(i), *type = qs_spec_field_schema_type(i);
        unsigned t = a_type(qs_spec_field_jobs(i));
        if (!strcmp(p, "type"))
            continue;
        qs_err e = {0};
        /* a value of another type */
        const char *wrong = !strcmp(type, "string") ? "17" : !strcmp(type, "array") ? "{}" : "\"x\"";
        if (parse_with(t, p, wrong, &e) != QS_EINVAL)
            QT_FAIL_("%s accepted %s", p, wrong);
        char field[128];
        qs_spec_err_field(&e, field, sizeof field);
        if (strcmp(field, p))
            QT_FAIL_("%s: the error names '%s': %s", p, field, e.msg);
        /* bounds: one past each end */
        json_t *o = strncmp(p, "config.", 7) ? NULL : schema;
        if (o) {
            char buf[128];
            snprintf(buf, sizeof buf, "%s", p + 7);
            for (char *save = NULL, *k = strtok_r(buf, ".", &save); k && o; k = strtok_r(NULL, ".", &save))
                o = json_object_get(json_object_get(o, "properties"), k);
        }
        json_t *mn = json_object_get(o, "minimum"), *mx = json_object_get(o, "maximum");
        if (mn && mx) {
            int integer = !strcmp(type, "integer");
            char v[64];
            snprintf(v, sizeof v, integer ? "%.0f" : "%.17g", json_number_value(mn) - (integer ? 1 : 0.5));
            if (parse_with(t, p, v, &e) != QS_EINVAL || !strstr(e.msg, p) || !strstr(e.msg, "from"))
                QT_FAIL_("%s accepted %s below its minimum (%s)", p, v, e.msg);
            snprintf(v, sizeof v, integer ? "%.0f" : "%.17g", json_number_value(mx) + (integer ? 1 : 0.5));
            if (parse_with(t, p, v, &e) != QS_EINVAL || !strstr(e.msg, p))
                QT_FAIL_("%s accepted %s above its maximum (%s)", p, v, e.msg);
            /* and the bounds themselves are fine */
            snprintf(v, sizeof v, "%.17g", json_number_value(mx));
            if (parse_with(t, p, v, &e) != 0)
                QT_FAIL_("%s refused its maximum %s: %s", p, v, e.msg);
        }
        json_t *en = json_object_get(o, "enum");
        if (en) {
            if (parse_with(t, p, "\"no-such-value\"", &e) != QS_EINVAL || !strstr(e.msg, "expected one of"))
                QT_FAIL_("%s accepted an unknown value (%s)", p, e.msg);
            size_t k;
            json_t *x;
            json_array_foreach(en, k, x) {
                char v[64];
                snprintf(v, sizeof v, "\"%s\"", json_string_value(x));
                if (parse_with(t, p, v, &e) != 0)
                    QT_FAIL_("%s refused %s: %s", p, v, e.msg);
            }
        }
    }
    json_decref(schema);
}

TEST(a_field_of_another_job_type_is_unknown)
{
    qs_err e = {0};
    ASSERT_EQ(parse_with(QS_JOB_EVAL, "config.weights.bits", "8", &e), QS_EINVAL);
    ASSERT_STR_CONTAINS(e.msg, "unknown field 'config.weights'");
    ASSERT_EQ(parse_with(QS_JOB_PTQ, "config.batch_size", "8", &e), QS_EINVAL);
    ASSERT_STR_CONTAINS(e.msg, "unknown field 'config.batch_size'");
    ASSERT_EQ(parse_with(QS_JOB_EVAL, "config.batch_size", "8", &e), 0);
}

TEST(the_normalised_spec_parses_to_the_same_spec)
{
    const char *text = "{\"type\": \"ptq\", \"name\": \"n\", \"model\": \"mdl_a\", \"calibration\": \"ds_b\","
                       " \"config\": {\"preset\": \"basic\", \"adaround\": {\"enabled\": true},"
                       " \"analysis\": {\"val_samples\": 7}}}";
    qs_job_spec a, b;
    qs_err e = {0};
    ASSERT_EQ(qs_job_spec_parse_text(text, strlen(text), 0, &a, &e), 0);
    ASSERT_EQ(a.type, QS_JOB_PTQ);
    ASSERT_STR_EQ(a.model, "mdl_a");
    ASSERT_STR_EQ(a.name, "n");
    ASSERT(a.config.adaround.enabled && !a.config.cle);   /* basic, AdaRound turned on */
    ASSERT_EQ(a.config.analysis.val_samples, 7);
    char *n = qs_job_spec_to_text(&a);
    ASSERT(n);
    ASSERT_EQ(qs_job_spec_parse_text(n, strlen(n), 0, &b, &e), 0);
    char *m = qs_job_spec_to_text(&b);
    ASSERT_STR_EQ(n, m);
    free(n);
    free(m);
    qs_job_spec_free(&a);
    qs_job_spec_free(&b);
    /* the debug type only when asked for */
    ASSERT_EQ(qs_job_spec_parse_text("{\"type\": \"sleep\"}", 17, 0, &a, &e), QS_EINVAL);
    ASSERT_STR_CONTAINS(e.msg, "expected one of");
    ASSERT_EQ(qs_job_spec_parse_text("{\"type\": \"sleep\"}", 17, QS_SPEC_DEBUG_JOBS, &a, &e), 0);
    ASSERT_CLOSE(a.config.sleep.seconds, 1, 0, 0);
    qs_job_spec_free(&a);
}

TEST(rounding_and_adaround_enabled_agree)
{
    qs_qconfig c;
    qs_err e = {0};
    /* defaults: standard rounds by GPTQ, best AdaRounds, basic rounds to nearest */
    ASSERT_EQ(parse("{}", &c, &e), 0);
    ASSERT(c.rounding == QS_ROUND_GPTQ && !c.adaround.enabled);
    qs_qconfig_free(&c);
    ASSERT_EQ(parse("{\"preset\": \"best\"}", &c, &e), 0);
    ASSERT(c.rounding == QS_ROUND_ADAROUND && c.adaround.enabled);
    qs_qconfig_free(&c);
    ASSERT_EQ(parse("{\"preset\": \"basic\"}", &c, &e), 0);
    ASSERT(c.rounding == QS_ROUND_NEAREST && !c.adaround.enabled);
    qs_qconfig_free(&c);
    /* one given sets the other */
    ASSERT_EQ(parse("{\"rounding\": \"gptq\"}", &c, &e), 0);
    ASSERT(c.rounding == QS_ROUND_GPTQ && !c.adaround.enabled);
    qs_qconfig_free(&c);
    ASSERT_EQ(parse("{\"adaround\": {\"enabled\": false}}", &c, &e), 0);
    ASSERT(c.rounding == QS_ROUND_NEAREST);
    qs_qconfig_free(&c);
    ASSERT_EQ(parse("{\"preset\": \"basic\", \"adaround\": {\"enabled\": true}}", &c, &e), 0);
    ASSERT(c.rounding == QS_ROUND_ADAROUND);
    qs_qconfig_free(&c);
    ASSERT_EQ(parse("{\"rounding\": \"adaround\", \"preset\": \"basic\"}", &c, &e), 0);
    ASSERT(c.adaround.enabled);
    qs_qconfig_free(&c);
    /* both, agreeing */
    ASSERT_EQ(parse("{\"rounding\": \"gptq\", \"adaround\": {\"enabled\": false, \"iterations\": 5}}", &c, &e), 0);
    ASSERT(c.rounding == QS_ROUND_GPTQ && !c.adaround.enabled);
    qs_qconfig_free(&c);
    /* both, contradicting: refused naming both */
    const char *bad[] = { "{\"rounding\": \"gptq\", \"adaround\": {\"enabled\": true}}",
                          "{\"rounding\": \"nearest\", \"adaround\": {\"enabled\": true}}",
                          "{\"rounding\": \"adaround\", \"adaround\": {\"enabled\": false}}" };
    for (int i = 0; i < 3; i++) {
        e = (qs_err){0};
        ASSERT_EQ(parse(bad[i], &c, &e), QS_EUNSUPPORTED);
        ASSERT_STR_CONTAINS(e.msg, "config.rounding");
        ASSERT_STR_CONTAINS(e.msg, "config.adaround.enabled");
        char f[64];
        qs_spec_err_field(&e, f, sizeof f);
        ASSERT_STR_EQ(f, "config.rounding");
    }
    ASSERT_EQ(parse("{\"rounding\": \"obq\"}", &c, &e), QS_EINVAL);
    ASSERT_STR_CONTAINS(e.msg, "nearest, adaround, gptq");
    /* the normalised config round-trips */
    ASSERT_EQ(parse("{\"rounding\": \"gptq\"}", &c, &e), 0);
    char *t = qs_qconfig_to_text(&c);
    qs_qconfig d;
    ASSERT_EQ(qs_qconfig_parse_text(t, &d, &e), 0);
    ASSERT(d.rounding == QS_ROUND_GPTQ && !d.adaround.enabled);
    free(t);
    qs_qconfig_free(&c);
    qs_qconfig_free(&d);
}

TEST(data_sets_against_the_model)
{
    qs_spec_tensor in[1] = {{.name = "x", .ndim = 4, .shape = {-1, 1, 28, 28}}};
    qs_spec_tensor ok[1] = {{.name = "arr_0", .ndim = 4, .shape = {64, 1, 28, 28}}};
    qs_spec_tensor bad[1] = {{.name = "arr_0", .ndim = 2, .shape = {64, 784}}};
    qs_spec_tensor empty[1] = {{.name = "arr_0", .ndim = 4, .shape = {0, 1, 28, 28}}};
    qs_err e = {0};
    ASSERT_EQ(qs_spec_check_data("calibration", "ds_1", in, 1, ok, 1, &e), 0);
    ASSERT_EQ(qs_spec_check_data("calibration", "ds_1", in, 1, bad, 1, &e), QS_ESHAPE);
    ASSERT_STR_CONTAINS(e.msg, "calibration: data set ds_1 has shape [64, 784]");
    ASSERT_STR_CONTAINS(e.msg, "[N, 1, 28, 28]");
    ASSERT_EQ(qs_spec_check_data("validation.data", "ds_1", in, 1, empty, 1, &e), QS_EINVAL);
    ASSERT_STR_CONTAINS(e.msg, "empty");
}

TEST_MAIN(standard_preset_is_the_papers_pipeline, presets_fast_standard_best, fields_override_the_preset, errors_name_the_field,
          round_trip_through_json, overrides_shape_checked, every_config_field_has_a_default_in_the_presets_and_the_schema,
          every_field_refuses_a_wrong_value_naming_the_field, a_field_of_another_job_type_is_unknown,
          the_normalised_spec_parses_to_the_same_spec, rounding_and_adaround_enabled_agree, data_sets_against_the_model)
