/* Job-spec config parsing. Each object is checked against a list of the keys it may hold, so a
 * misspelt key is an error that names it; each value is checked for type and bounds. */
#include "qconfig.h"

#include <stdlib.h>
#include <string.h>

void qs_qconfig_default(qs_qconfig *c, const char *preset)
{
    memset(c, 0, sizeof *c);
    snprintf(c->preset, sizeof c->preset, "%s", preset ? preset : "standard");
    int basic = !strcmp(c->preset, "basic");
    c->weights.bits = 8;
    c->weights.symmetric = 1;
    c->weights.per_channel = 1;
    c->weights.range = basic ? QS_RANGE_MINMAX : QS_RANGE_MSE;
    c->act.bits = 8;
    c->act.symmetric = 0;
    c->act.range = basic ? QS_RANGE_MINMAX : QS_RANGE_MSE;
    c->act.last_layer = basic ? QS_RANGE_MINMAX : QS_RANGE_CE;
    c->act.percentile = 99.99;
    c->bn_fold = 1;
    /* the paper's Fig. 8: CLE with absorption, then AdaRound (bias correction when it is off) */
    c->cle = !basic;
    c->relu6_to_relu = 1;
    c->bias_absorption = !basic;
    c->bias_correction = basic ? QS_BC_NONE : QS_BC_EMPIRICAL;
    c->adaround.enabled = !basic;
    c->adaround.iterations = 10000;
    c->adaround.reg = 0.01;
    c->adaround.batch_size = 32;
    c->adaround.samples = 1024;
    c->calibration.samples = 1024;
    c->calibration.batch_size = 32;
    c->qat.epochs = 3;
    c->qat.batch_size = 64;
    snprintf(c->qat.optimizer, sizeof c->qat.optimizer, "adam");
    snprintf(c->qat.schedule, sizeof c->qat.schedule, "cosine");
    c->qat.lr = 1e-5;
    c->qat.momentum = 0.9;
    c->qat.learn_ranges = 1;
    c->qat.bn_reestimate = 1;
    c->target_drop = -1;
    c->analysis.val_samples = 1000;
}

void qs_qconfig_free(qs_qconfig *c)
{
    for (int i = 0; i < c->nexclude; i++)
        free(c->exclude[i]);
    free(c->exclude);
    json_decref(c->overrides);
    c->exclude = NULL;
    c->nexclude = 0;
    c->overrides = NULL;
}

static int only_keys(json_t *obj, const char *path, const char *const *keys, qs_err *e)
{
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v) {
        int ok = 0;
        for (int i = 0; keys[i]; i++)
            ok |= !strcmp(k, keys[i]);
        if (!ok) {
            char list[512] = "";
            for (int i = 0; keys[i]; i++)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "", keys[i]);
            return qs_error(e, QS_EINVAL, "%s.%s: unknown field (expected one of: %s)", path, k, list);
        }
    }
    return 0;
}

static int get_obj(json_t *parent, const char *key, const char *path, json_t **out, qs_err *e)
{
    *out = json_object_get(parent, key);
    if (*out && !json_is_object(*out))
        return qs_error(e, QS_EINVAL, "%s.%s: must be an object", path, key);
    return 0;
}

static int get_bool(json_t *o, const char *key, const char *path, int *out, qs_err *e)
{
    json_t *v = json_object_get(o, key);
    if (!v)
        return 0;
    if (!json_is_boolean(v))
        return qs_error(e, QS_EINVAL, "%s.%s: must be true or false", path, key);
    *out = json_is_true(v);
    return 0;
}

static int get_int(json_t *o, const char *key, const char *path, int lo, int hi, int *out, qs_err *e)
{
    json_t *v = json_object_get(o, key);
    if (!v)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return qs_error(e, QS_EINVAL, "%s.%s: must be an integer from %d to %d", path, key, lo, hi);
    *out = (int)json_integer_value(v);
    return 0;
}

static int get_num(json_t *o, const char *key, const char *path, double lo, double hi, double *out, qs_err *e)
{
    json_t *v = json_object_get(o, key);
    if (!v)
        return 0;
    if (!json_is_number(v) || json_number_value(v) < lo || json_number_value(v) > hi)
        return qs_error(e, QS_EINVAL, "%s.%s: must be a number from %g to %g", path, key, lo, hi);
    *out = json_number_value(v);
    return 0;
}

static int get_str(json_t *o, const char *key, const char *path, const char *const *allowed, char *out, size_t n,
                   qs_err *e)
{
    json_t *v = json_object_get(o, key);
    if (!v)
        return 0;
    char list[256] = "";
    for (int i = 0; allowed[i]; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "", allowed[i]);
    if (!json_is_string(v))
        return qs_error(e, QS_EINVAL, "%s.%s: must be one of %s", path, key, list);
    for (int i = 0; allowed[i]; i++)
        if (!strcmp(json_string_value(v), allowed[i])) {
            snprintf(out, n, "%s", allowed[i]);
            return 0;
        }
    return qs_error(e, QS_EINVAL, "%s.%s: '%s' is not one of %s", path, key, json_string_value(v), list);
}

static int get_range(json_t *o, const char *key, const char *path, int weights, qs_range_method *m, qs_err *e)
{
    static const char *const wr[] = {"minmax", "mse", NULL};
    static const char *const ar[] = {"minmax", "mse", "percentile", "ce", "bn", NULL};
    char buf[32];
    if (!json_object_get(o, key))
        return 0;
    int rc = get_str(o, key, path, weights ? wr : ar, buf, sizeof buf, e);
    if (rc < 0)
        return rc;
    return qs_range_method_parse(buf, m);
}

int qs_qconfig_set_exclude(qs_qconfig *c, const char *csv)
{
    for (int i = 0; i < c->nexclude; i++)
        free(c->exclude[i]);
    free(c->exclude);
    c->exclude = NULL;
    c->nexclude = 0;
    if (!csv || !*csv)
        return 0;
    char *dup = strdup(csv), *save = NULL;
    if (!dup)
        return QS_ENOMEM;
    for (char *t = strtok_r(dup, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        char **x = realloc(c->exclude, (c->nexclude + 1) * sizeof *x);
        if (!x) {
            free(dup);
            return QS_ENOMEM;
        }
        c->exclude = x;
        c->exclude[c->nexclude++] = strdup(t);
    }
    free(dup);
    return 0;
}

int qs_qconfig_parse(json_t *cfg, qs_qconfig *c, qs_err *e)
{
    static const char *const top[] = {"preset", "weights", "activations", "bn_fold", "cle", "relu6_to_relu",
                                      "bias_absorption", "bias_correction", "adaround", "calibration", "exclude",
                                      "overrides", "qat", "target_drop", "analysis", NULL};
    static const char *const wkeys[] = {"bits", "symmetric", "per_channel", "range", "pow2", NULL};
    static const char *const akeys[] = {"bits", "symmetric", "range", "pow2", "percentile", "last_layer", NULL};
    static const char *const adakeys[] = {"enabled", "iterations", "reg", "batch_size", "samples", NULL};
    static const char *const calkeys[] = {"samples", "batch_size", NULL};
    static const char *const qatkeys[] = {"epochs", "batch_size", "optimizer", "lr", "weight_decay", "momentum",
                                          "learn_ranges", "bn_reestimate", "flip", "schedule", "clip_grad",
                                          "steps", NULL};
    static const char *const presets[] = {"standard", "basic", NULL};
    static const char *const bcs[] = {"none", "empirical", "analytical", NULL};
    static const char *const opts[] = {"adam", "sgd", "nesterov", NULL};
    static const char *const scheds[] = {"cosine", "step", "constant", NULL};
    const char *P = "config";
    char buf[32];
    int rc;
    qs_qconfig_default(c, "standard");
    if (!cfg || json_is_null(cfg))
        return 0;
    if (!json_is_object(cfg))
        return qs_error(e, QS_EINVAL, "config: must be an object");
    if ((rc = only_keys(cfg, P, top, e)) < 0)
        return rc;
    char preset[32] = "standard";
    if ((rc = get_str(cfg, "preset", P, presets, preset, sizeof preset, e)) < 0)
        return rc;
    qs_qconfig_default(c, preset);
    json_t *o;
#define TRY(x) do { if ((rc = (x)) < 0) goto fail; } while (0)
    TRY(get_obj(cfg, "weights", P, &o, e));
    if (o) {
        TRY(only_keys(o, "config.weights", wkeys, e));
        TRY(get_int(o, "bits", "config.weights", 2, 16, &c->weights.bits, e));
        TRY(get_bool(o, "symmetric", "config.weights", &c->weights.symmetric, e));
        TRY(get_bool(o, "per_channel", "config.weights", &c->weights.per_channel, e));
        TRY(get_bool(o, "pow2", "config.weights", &c->weights.pow2, e));
        TRY(get_range(o, "range", "config.weights", 1, &c->weights.range, e));
    }
    TRY(get_obj(cfg, "activations", P, &o, e));
    if (o) {
        TRY(only_keys(o, "config.activations", akeys, e));
        TRY(get_int(o, "bits", "config.activations", 2, 16, &c->act.bits, e));
        TRY(get_bool(o, "symmetric", "config.activations", &c->act.symmetric, e));
        TRY(get_bool(o, "pow2", "config.activations", &c->act.pow2, e));
        TRY(get_range(o, "range", "config.activations", 0, &c->act.range, e));
        TRY(get_range(o, "last_layer", "config.activations", 0, &c->act.last_layer, e));
        TRY(get_num(o, "percentile", "config.activations", 50, 100, &c->act.percentile, e));
        /* an explicit range without an explicit last_layer applies to the last layer too */
        if (json_object_get(o, "range") && !json_object_get(o, "last_layer"))
            c->act.last_layer = c->act.range;
    }
    TRY(get_bool(cfg, "bn_fold", P, &c->bn_fold, e));
    TRY(get_bool(cfg, "cle", P, &c->cle, e));
    TRY(get_bool(cfg, "relu6_to_relu", P, &c->relu6_to_relu, e));
    TRY(get_bool(cfg, "bias_absorption", P, &c->bias_absorption, e));
    if (json_object_get(cfg, "bias_correction")) {
        TRY(get_str(cfg, "bias_correction", P, bcs, buf, sizeof buf, e));
        c->bias_correction = !strcmp(buf, "empirical") ? QS_BC_EMPIRICAL : !strcmp(buf, "analytical") ? QS_BC_ANALYTICAL
                                                                                                   : QS_BC_NONE;
    }
    TRY(get_obj(cfg, "adaround", P, &o, e));
    if (o) {
        TRY(only_keys(o, "config.adaround", adakeys, e));
        TRY(get_bool(o, "enabled", "config.adaround", &c->adaround.enabled, e));
        TRY(get_int(o, "iterations", "config.adaround", 1, 1000000, &c->adaround.iterations, e));
        TRY(get_num(o, "reg", "config.adaround", 0, 1e6, &c->adaround.reg, e));
        TRY(get_int(o, "batch_size", "config.adaround", 1, 65536, &c->adaround.batch_size, e));
        TRY(get_int(o, "samples", "config.adaround", 1, 10000000, &c->adaround.samples, e));
    }
    TRY(get_obj(cfg, "calibration", P, &o, e));
    if (o) {
        TRY(only_keys(o, "config.calibration", calkeys, e));
        TRY(get_int(o, "samples", "config.calibration", 1, 100000000, &c->calibration.samples, e));
        TRY(get_int(o, "batch_size", "config.calibration", 1, 65536, &c->calibration.batch_size, e));
    }
    json_t *ex = json_object_get(cfg, "exclude");
    if (ex) {
        if (!json_is_array(ex)) {
            rc = qs_error(e, QS_EINVAL, "config.exclude: must be a list of node names");
            goto fail;
        }
        size_t i;
        json_t *v;
        json_array_foreach(ex, i, v) {
            if (!json_is_string(v)) {
                rc = qs_error(e, QS_EINVAL, "config.exclude[%zu]: must be a node name (string)", i);
                goto fail;
            }
            char **x = realloc(c->exclude, (c->nexclude + 1) * sizeof *x);
            if (!x) {
                rc = qs_error(e, QS_ENOMEM, "out of memory");
                goto fail;
            }
            c->exclude = x;
            c->exclude[c->nexclude++] = strdup(json_string_value(v));
        }
    }
    json_t *ov = json_object_get(cfg, "overrides");
    if (ov && !json_is_null(ov)) {
        if (!json_is_object(ov)) {
            rc = qs_error(e, QS_EINVAL, "config.overrides: must be an object keyed by node name");
            goto fail;
        }
        c->overrides = json_incref(ov);
    }
    TRY(get_obj(cfg, "qat", P, &o, e));
    if (o) {
        TRY(only_keys(o, "config.qat", qatkeys, e));
        TRY(get_int(o, "epochs", "config.qat", 0, 10000, &c->qat.epochs, e));
        TRY(get_int(o, "batch_size", "config.qat", 1, 65536, &c->qat.batch_size, e));
        TRY(get_int(o, "steps", "config.qat", 0, 100000000, &c->qat.steps, e));
        TRY(get_str(o, "optimizer", "config.qat", opts, c->qat.optimizer, sizeof c->qat.optimizer, e));
        TRY(get_str(o, "schedule", "config.qat", scheds, c->qat.schedule, sizeof c->qat.schedule, e));
        TRY(get_num(o, "lr", "config.qat", 0, 10, &c->qat.lr, e));
        TRY(get_num(o, "weight_decay", "config.qat", 0, 1, &c->qat.weight_decay, e));
        TRY(get_num(o, "momentum", "config.qat", 0, 1, &c->qat.momentum, e));
        TRY(get_num(o, "clip_grad", "config.qat", 0, 1e9, &c->qat.clip_grad, e));
        TRY(get_bool(o, "learn_ranges", "config.qat", &c->qat.learn_ranges, e));
        TRY(get_bool(o, "bn_reestimate", "config.qat", &c->qat.bn_reestimate, e));
        TRY(get_bool(o, "flip", "config.qat", &c->qat.flip, e));
    }
    if (!json_is_null(json_object_get(cfg, "target_drop")))   /* null: off, as qs_qconfig_to_json writes it */
        TRY(get_num(cfg, "target_drop", P, 0, 100, &c->target_drop, e));
    TRY(get_obj(cfg, "analysis", P, &o, e));
    if (o) {
        static const char *const anakeys[] = {"val_samples", NULL};
        TRY(only_keys(o, "config.analysis", anakeys, e));
        TRY(get_int(o, "val_samples", "config.analysis", 1, 100000000, &c->analysis.val_samples, e));
    }
#undef TRY
    return 0;
fail:
    qs_qconfig_free(c);
    return rc;
}

json_t *qs_qconfig_to_json(const qs_qconfig *c)
{
    static const char *const bc[] = {"none", "empirical", "analytical"};
    json_t *ex = json_array();
    for (int i = 0; i < c->nexclude; i++)
        json_array_append_new(ex, json_string(c->exclude[i]));
    return json_pack(
        "{s:s, s:{s:i, s:b, s:b, s:b, s:s}, s:{s:i, s:b, s:b, s:s, s:s, s:f}, s:b, s:b, s:b, s:b, s:s,"
        " s:{s:b, s:i, s:f, s:i, s:i}, s:{s:i, s:i}, s:o, s:O, s:{s:i, s:i, s:s, s:f, s:f, s:f, s:b, s:b, s:b, s:s,"
        " s:f, s:i}, s:o, s:{s:i}}",
        "preset", c->preset,
        "weights", "bits", c->weights.bits, "symmetric", c->weights.symmetric, "per_channel", c->weights.per_channel,
        "pow2", c->weights.pow2, "range", qs_range_method_name(c->weights.range),
        "activations", "bits", c->act.bits, "symmetric", c->act.symmetric, "pow2", c->act.pow2,
        "range", qs_range_method_name(c->act.range), "last_layer", qs_range_method_name(c->act.last_layer),
        "percentile", c->act.percentile,
        "bn_fold", c->bn_fold, "cle", c->cle, "relu6_to_relu", c->relu6_to_relu, "bias_absorption",
        c->bias_absorption, "bias_correction", bc[c->bias_correction],
        "adaround", "enabled", c->adaround.enabled, "iterations", c->adaround.iterations, "reg", c->adaround.reg,
        "batch_size", c->adaround.batch_size, "samples", c->adaround.samples,
        "calibration", "samples", c->calibration.samples, "batch_size", c->calibration.batch_size,
        "exclude", ex, "overrides", c->overrides ? c->overrides : json_null(),
        "qat", "epochs", c->qat.epochs, "batch_size", c->qat.batch_size, "optimizer", c->qat.optimizer,
        "lr", c->qat.lr, "weight_decay", c->qat.weight_decay, "momentum", c->qat.momentum,
        "learn_ranges", c->qat.learn_ranges, "bn_reestimate", c->qat.bn_reestimate, "flip", c->qat.flip,
        "schedule", c->qat.schedule, "clip_grad", c->qat.clip_grad, "steps", c->qat.steps,
        "target_drop", c->target_drop >= 0 ? json_real(c->target_drop) : json_null(), "analysis", "val_samples", c->analysis.val_samples);
}

/* --- the text forms: the pipelines get the config as JSON text (qs_pipeline_io.config_json) ---- */

int qs_config_json_load(const char *text, json_t **cfg, qs_err *e)
{
    *cfg = NULL;
    if (!text)
        return 0;
    json_error_t je;
    if (!(*cfg = json_loads(text, JSON_DECODE_ANY, &je)))
        return qs_error(e, QS_EINVAL, "config: not valid JSON (line %d: %s)", je.line, je.text);
    return 0;
}

int qs_qconfig_parse_text(const char *text, qs_qconfig *c, qs_err *e)
{
    json_t *cfg;
    int rc = qs_config_json_load(text, &cfg, e);
    if (rc < 0) {
        qs_qconfig_default(c, "standard");
        qs_qconfig_free(c);
        return rc;
    }
    rc = qs_qconfig_parse(cfg, c, e);
    json_decref(cfg);
    return rc;
}

int qs_config_check(const char *config_json, char **full_json, qs_err *e)
{
    qs_qconfig c;
    if (full_json)
        *full_json = NULL;
    int rc = qs_qconfig_parse_text(config_json, &c, e);
    if (rc < 0)
        return rc;
    if (full_json) {
        json_t *j = qs_qconfig_to_json(&c);
        if (!j || !(*full_json = json_dumps(j, JSON_COMPACT)))
            rc = qs_error(e, QS_ENOMEM, "out of memory");
        json_decref(j);
    }
    qs_qconfig_free(&c);
    return rc;
}
