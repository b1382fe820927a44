/* The job spec's config: preset defaults, overrides, errors that name the field, and a lossless
 * round trip through qs_qconfig_to_json (what report.json records can be fed back as a config). */
#include "tests/harness.h"
#include "engine/qconfig.h"

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
                    " \"overrides\": {\"fc\": {\"bits\": 16}}, \"target_drop\": 0.5}", &a, &e), 0);
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

TEST_MAIN(standard_preset_is_the_papers_pipeline, fields_override_the_preset, errors_name_the_field,
          round_trip_through_json)
