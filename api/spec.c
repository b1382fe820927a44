/* Job spec validation at submit. The shape of the spec — fields, types, bounds, allowed values,
 * which job type needs what — is the engine's table (engine/spec_rows.c), so the daemon accepts
 * exactly what the pipelines understand; this file turns its verdict into replies and adds what
 * only the daemon can check: that the data sets a job names fit its model and its type.
 *
 *   400 invalid_field       the spec's own problem, the field named by its path
 *   422 unknown_reference   a model or data set that does not exist
 *   422 data_mismatch       a data set the job needs is missing, or does not fit the model's inputs
 *   422 unknown_name        config.exclude or config.overrides names something the model does not have
 *   422 conflicting_fields  two fields that are each valid contradict each other (config.rounding and
 *                           config.adaround.enabled); field is the first, the message names both
 *   422 data_mismatch       also: config.input_shapes contradicts the model, or the data contradicts it
 *   422 unsupported_model   an already-quantized model for ptq, qat or analyze without config.requantize
 *
 * `notify` (the webhook URL, jobs/webhook.h) is the daemon's field, not the engine's: it is taken
 * out of the spec before the engine's check and put back into the normalised spec. */
#include "api/api.h"

#include <quant/quant.h>

#include "quant/requantize.h"
#include "shapes.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

/* The names the config gives (exclude, overrides) against the model's graph, which is loaded for
 * it only when the config names something. */
static int check_names(qd_req *r, const qs_job_spec *s, int *ok)
{
    *ok = 0;
    if ((!s->config.overrides && !s->config.nexclude) || !*s->model || s->type == QS_JOB_EVAL ||
        s->type == QS_JOB_SLEEP) {
        *ok = 1;
        return QD_H_OK;
    }
    char path[4096], field[256];
    qd_store_file_path(r->srv->st, QD_MODEL, s->model, "onnx", path, sizeof path);
    qs_graph *g = NULL;
    qs_err e = { 0 };
    if (qs_onnx_load(path, &g, &e) < 0) {
        *ok = 1;   /* the job reports it (the upload parsed once) */
        return QD_H_OK;
    }
    int rc = qs_qconfig_check_names(&s->config, g, &e);
    qs_graph_free(g);
    if (rc < 0) {
        qs_spec_err_field(&e, path, sizeof path);
        snprintf(field, sizeof field, "%.*s", (int)qd_utf8_prefix(path, sizeof field - 1), path);
        return qd_reply_error(r, rc == QS_ENOMEM ? QD_E_INTERNAL : QD_E_UNKNOWN_NAME, *field ? field : NULL, "%s",
                              e.msg);
    }
    *ok = 1;
    return QD_H_OK;
}

int qd_spec_check(qd_req *r, json_t *spec, int debug_jobs, qs_job_spec *s, int *ok)
{
    *ok = 0;
    if (!json_is_object(spec))
        return qd_reply_error(r, QD_E_INVALID_JSON, NULL, "the job spec must be a JSON object");
    qs_err e = { 0 };
    if (qs_job_spec_parse(spec, debug_jobs ? QS_SPEC_DEBUG_JOBS : 0, s, &e) < 0) {
        char path[1024], field[256];
        qs_spec_err_field(&e, path, sizeof path);
        /* cut (a key may be long) between UTF-8 characters, never inside one */
        snprintf(field, sizeof field, "%.*s", (int)qd_utf8_prefix(path, sizeof field - 1), path);
        return qd_reply_error(r, e.code == QS_ENOMEM ? QD_E_INTERNAL
                                 : e.code == QS_EUNSUPPORTED ? QD_E_CONFLICTING_FIELDS : QD_E_INVALID_FIELD,
                              *field ? field : NULL,
                              "%s", e.msg);
    }
    *ok = 1;
    return QD_H_OK;
}

int qd_spec_take_notify(qd_req *r, json_t *spec, char *url, size_t n, int *ok)
{
    *ok = 0;
    url[0] = 0;
    json_t *v = json_is_object(spec) ? json_object_get(spec, "notify") : NULL;
    if (!v || json_is_null(v)) {
        if (v)
            json_object_del(spec, "notify");
        *ok = 1;
        return QD_H_OK;
    }
    const char *u = json_string_value(v);
    if (!u)
        return qd_reply_error(r, QD_E_INVALID_FIELD, "notify", "notify must be a URL (a string), e.g. "
                              "\"https://ci.example.com/hooks/quantd\"");
    size_t len = strlen(u);
    if (len >= n || len > 2048)
        return qd_reply_error(r, QD_E_INVALID_FIELD, "notify", "notify is longer than 2048 bytes");
    size_t scheme = !strncasecmp(u, "http://", 7) ? 7 : !strncasecmp(u, "https://", 8) ? 8 : 0;
    if (!scheme)
        return qd_reply_error(r, QD_E_INVALID_FIELD, "notify", "notify must be an http:// or https:// URL");
    size_t host = strcspn(u + scheme, "/?#");
    if (host == 0 || u[scheme] == ':' || u[scheme] == '@')
        return qd_reply_error(r, QD_E_INVALID_FIELD, "notify", "notify has no host name");
    for (const unsigned char *p = (const unsigned char *)u; *p; p++)
        if (*p <= 0x20 || *p >= 0x7f)   /* a URL is ASCII without spaces; IRIs must be percent-encoded */
            return qd_reply_error(r, QD_E_INVALID_FIELD, "notify",
                                  "notify holds a space, a control or a non-ASCII character (percent-encode it)");
    memcpy(url, u, len + 1);
    json_object_del(spec, "notify");   /* the engine's table does not know it: the daemon's alone */
    *ok = 1;
    return QD_H_OK;
}

int qd_spec_refs(const qs_job_spec *s, qd_ref refs[6])
{
    const struct { const char *field, *id; qd_kind kind; } all[] = {
        { "model", s->model, QD_MODEL },
        { "calibration", s->calibration, QD_DATASET },
        { "train.data", s->train.data, QD_DATASET },
        { "train.labels", s->train.labels, QD_DATASET },
        { "validation.data", s->validation.data, QD_DATASET },
        { "validation.labels", s->validation.labels, QD_DATASET },
    };
    int n = 0;
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (*all[i].id)
            refs[n++] = (qd_ref){ .field = all[i].field, .kind = all[i].kind, .id = all[i].id };
    return n;
}

/* A record's tensors ({name, shape: [int | "dim" | null]}) as the engine's table wants them;
 * NULL-free. Returns the count, or -1 when a rank is unknown (nothing to check against). */
static int tensors(json_t *list, qs_spec_tensor *out, int max)
{
    size_t i;
    json_t *t;
    int n = 0;
    json_array_foreach(list, i, t) {
        json_t *shape = json_object_get(t, "shape");
        if (n == max || !json_is_array(shape) || json_array_size(shape) > 8)
            return -1;
        out[n].name = json_string_value(json_object_get(t, "name"));
        out[n].ndim = (int)json_array_size(shape);
        for (int d = 0; d < out[n].ndim; d++) {
            json_t *x = json_array_get(shape, d);
            out[n].shape[d] = json_is_integer(x) ? json_integer_value(x) : -1;
        }
        n++;
    }
    return n;
}

static void shape_of(const qs_spec_tensor *t, char *buf, size_t n)
{
    size_t k = (size_t)snprintf(buf, n, "[N");
    for (int d = 1; d < t->ndim && k < n; d++)
        k += t->shape[d] < 0 ? (size_t)snprintf(buf + k, n - k, ", ?")
                             : (size_t)snprintf(buf + k, n - k, ", %lld", (long long)t->shape[d]);
    if (k < n)
        snprintf(buf + k, n - k, "]");
}

int qd_spec_check_data(qd_req *r, const qs_job_spec *s, int *ok)
{
    *ok = 0;
    qd_ref refs[6];
    int nrefs = qd_spec_refs(s, refs);
    /* a reference that does not exist is named first (the store checks again, atomically, when
     * the job is recorded) */
    for (int i = 0; i < nrefs; i++) {
        json_t *rec = qd_store_get(r->srv->st, refs[i].kind, refs[i].id);
        if (!rec)
            return qd_reply_error(r, QD_E_UNKNOWN_REFERENCE, refs[i].field,
                                  "'%s' is %s, which does not exist (upload it first)", refs[i].field, refs[i].id);
        json_decref(rec);
    }
    json_t *model = *s->model ? qd_store_get(r->srv->st, QD_MODEL, s->model) : NULL;
    qs_spec_tensor in[16];
    int nin = model ? tensors(json_object_get(model, "inputs"), in, 16) : -1;
    /* an already-quantized model: ptq, qat and analyze requantize it only when asked (quant/requantize.h) */
    const char *op;
    json_t *cnt;
    json_object_foreach(model ? json_object_get(model, "ops") : NULL, op, cnt) {
        if ((s->type & QS_JOB_QUANT) && !s->config.requantize && qs_op_is_quantized(op)) {
            int h = qd_reply_error(r, QD_E_UNSUPPORTED_MODEL, "config.requantize", "the model is already quantized "
                                   "(it has %s nodes); a %s job would stack new quantizers on the old ones: set "
                                   "config.requantize to true to requantize it from its dequantized weights, or "
                                   "give the float model", op, qs_job_type_name(s->type));
            json_decref(model);   /* (after the reply: op is the record's key) */
            return h;
        }
    }
    qs_err se = { 0 };
    if (nin >= 0 && qs_spec_apply_input_shapes(&s->config, in, nin, &se) < 0) {
        char field[256];
        qs_spec_err_field(&se, field, sizeof field);
        json_decref(model);
        return qd_reply_error(r, QD_E_DATA_MISMATCH, field, "%s", se.msg);
    }
    char want[256] = "the model's inputs";
    if (nin == 1)
        shape_of(&in[0], want, sizeof want);
    /* the data a job type cannot run without (the engine would fail at its first stage) */
    const char *missing = NULL, *why = NULL;
    if ((s->type == QS_JOB_PTQ || s->type == QS_JOB_ANALYZE) && !*s->calibration)
        missing = "calibration", why = "calibration data (unlabelled inputs)";
    else if (s->type == QS_JOB_ANALYZE && !*s->validation.data)
        missing = "validation.data", why = "validation data and labels";
    else if (s->type == QS_JOB_ANALYZE && !*s->validation.labels)
        missing = "validation.labels", why = "validation data and labels";
    else if (s->type == QS_JOB_PTQ && s->config.target_drop >= 0 && !*s->validation.data)
        missing = "validation.data", why = "validation data and labels for config.target_drop";
    else if (s->type == QS_JOB_PTQ && s->config.check_steps && !strcmp(s->config.check_metric, "accuracy") &&
             !*s->validation.data)
        missing = "validation.data", why = "validation data and labels for config.check_metric accuracy";
    if (missing) {
        json_decref(model);
        return qd_reply_error(r, QD_E_DATA_MISMATCH, missing, "'%s' is missing: a %s job needs %s, a data set of "
                              "shape %s", missing, qs_job_type_name(s->type), why, want);
    }
    /* the inputs' data sets against the model's inputs */
    const struct { const char *field, *id; } data[] = {
        { "calibration", s->calibration }, { "train.data", s->train.data }, { "validation.data", s->validation.data },
    };
    for (size_t i = 0; nin >= 0 && i < sizeof data / sizeof data[0]; i++) {
        if (!*data[i].id || (s->type == QS_JOB_SLEEP))
            continue;
        json_t *ds = qd_store_get(r->srv->st, QD_DATASET, data[i].id);
        qs_spec_tensor arr[16];
        int narr = ds ? tensors(json_object_get(ds, "arrays"), arr, 16) : -1;
        qs_err e = { 0 };
        int rc = narr >= 0 ? qs_spec_check_data(data[i].field, data[i].id, in, nin, arr, narr, &e) : 0;
        /* the first data set's sample shape fixes the symbolic dims for the next ones: a job runs
         * at one shape (engine/shapes.c); arr's names belong to ds */
        for (int k = 0; rc == 0 && narr >= 0 && k < nin; k++)
            for (int a = 0; a < narr; a++)
                if ((in[k].name && arr[a].name && !strcmp(in[k].name, arr[a].name)) || (narr == 1 && nin == 1))
                    for (int d = 1; d < in[k].ndim && d < arr[a].ndim; d++)
                        in[k].shape[d] = arr[a].shape[d];
        json_decref(ds);
        if (rc < 0) {
            json_decref(model);
            return qd_reply_error(r, QD_E_DATA_MISMATCH, data[i].field, "%s", e.msg);
        }
    }
    json_decref(model);
    return check_names(r, s, ok);
}
