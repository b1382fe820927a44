/* Job spec validation: a declarative description of the JSON shape in DESIGN.md ("Job spec"),
 * walked recursively. The first problem found is replied as 400 invalid_field naming the field by
 * its path ("config.weights.bits"); unknown fields are refused too, so a typo does not silently
 * fall back to a default. The "config" object is checked by the engine's own parser
 * (qs_config_check), so the daemon accepts exactly what the pipelines understand. */
#include "api/api.h"

#include <math.h>
#include <quant/config.h>
#include <stdio.h>
#include <string.h>

typedef enum { F_STRING, F_INT, F_NUMBER, F_BOOL, F_OBJECT, F_FREE_OBJECT, F_STRINGS, F_MODEL, F_DATASET, F_QCONFIG } ftype;

/* job types, as bits, for `required` */
enum { T_EVAL = 1, T_PTQ = 2, T_ANALYZE = 4, T_QAT = 8, T_SLEEP = 16 };

typedef struct field {
    const char *name;
    ftype type;
    const struct field *sub;        /* F_OBJECT: its fields, ended by { .name = NULL } */
    double min, max;                /* F_INT / F_NUMBER bounds (inclusive) */
    const char *const *choices;     /* F_STRING: allowed values, NULL-terminated (NULL: any) */
    unsigned required;              /* job types that need it */
    unsigned only;                  /* job types it applies to (0: all) */
} field;

static const char *const TYPES[] = { "eval", "ptq", "analyze", "qat", "sleep", NULL };
/* the debug job (debug_jobs = true): see scheduler.c */
static const field SLEEP_CONFIG[] = {
    { .name = "seconds", .type = F_NUMBER, .min = 0, .max = 86400 },
    { .name = "fail", .type = F_BOOL },
    { .name = "artifact_bytes", .type = F_INT, .min = 0, .max = 1e9 },
    { .name = NULL },
};
static const field LABELLED_TRAIN[] = {
    { .name = "data", .type = F_DATASET, .required = T_QAT },
    { .name = "labels", .type = F_DATASET, .required = T_QAT },
    { .name = NULL },
};
static const field LABELLED_VAL[] = {
    { .name = "data", .type = F_DATASET, .required = T_EVAL },
    { .name = "labels", .type = F_DATASET, .required = T_EVAL },
    { .name = NULL },
};
/* eval runs the model as it is: only how it batches (engine/pipeline.c) */
static const field EVAL_CONFIG[] = {
    { .name = "batch_size", .type = F_INT, .min = 1, .max = 65536 },
    { .name = NULL },
};
enum { T_ENGINE = T_EVAL | T_PTQ | T_ANALYZE | T_QAT };
static const field SPEC[] = {
    { .name = "type", .type = F_STRING, .choices = TYPES, .required = ~0u },
    { .name = "name", .type = F_STRING },
    { .name = "model", .type = F_MODEL, .required = T_ENGINE },
    { .name = "calibration", .type = F_DATASET },
    { .name = "train", .type = F_OBJECT, .sub = LABELLED_TRAIN, .required = T_QAT, .only = T_ENGINE },
    { .name = "validation", .type = F_OBJECT, .sub = LABELLED_VAL, .required = T_EVAL, .only = T_ENGINE },
    { .name = "config", .type = F_QCONFIG, .only = T_PTQ | T_ANALYZE | T_QAT },
    { .name = "config", .type = F_OBJECT, .sub = EVAL_CONFIG, .only = T_EVAL },
    { .name = "config", .type = F_OBJECT, .sub = SLEEP_CONFIG, .only = T_SLEEP },
    { .name = NULL },
};

typedef struct ctx {
    qd_req *r;
    unsigned type;
    qd_ref *refs;
    int nrefs;
    char paths[8][96];   /* storage for the refs' field names */
} ctx;

static const char *type_name(ftype t)
{
    switch (t) {
    case F_STRING: return "a string";
    case F_INT: return "an integer";
    case F_NUMBER: return "a number";
    case F_BOOL: return "true or false";
    case F_OBJECT: case F_FREE_OBJECT: case F_QCONFIG: return "an object";
    case F_STRINGS: return "an array of strings";
    case F_MODEL: return "a model id (mdl_…)";
    case F_DATASET: return "a data set id (ds_…)";
    }
    return "?";
}

/* prefix + name into path, cut (when too long) between UTF-8 characters, never inside one */
static void join_path(char *path, size_t n, const char *prefix, const char *name)
{
    size_t pl = qd_utf8_prefix(prefix, n - 1);
    size_t nl = qd_utf8_prefix(name, n - 1 - pl);
    snprintf(path, n, "%.*s%.*s", (int)pl, prefix, (int)nl, name);
}

/* 0 when fine; otherwise replies and returns -1 (the reply's status is in r). */
static int check_object(ctx *c, const field *fields, json_t *obj, const char *prefix)
{
    char path[256];
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) {   /* unknown keys first: a typo is the likeliest mistake */
        const field *f = fields;
        while (f->name && (strcmp(f->name, key) || (f->only && !(f->only & c->type))))
            f++;
        if (!f->name) {
            join_path(path, sizeof path, prefix, key);
            char known[512] = "";
            size_t k = 0;
            for (const field *g = fields; g->name; g++)
                if (!g->only || (g->only & c->type))
                    k += (size_t)snprintf(known + k, sizeof known - k, "%s%s", k ? ", " : "", g->name);
            qd_reply_error(c->r, QD_E_INVALID_FIELD, path, "unknown field '%s' (known here: %s)", path, known);
            return -1;
        }
    }
    for (const field *f = fields; f->name; f++) {
        if (f->only && !(f->only & c->type))
            continue;
        join_path(path, sizeof path, prefix, f->name);
        v = json_object_get(obj, f->name);
        if (!v || json_is_null(v)) {
            if (f->required & c->type) {
                qd_reply_error(c->r, QD_E_INVALID_FIELD, path, "'%s' is required for this job type (%s)", path,
                               type_name(f->type));
                return -1;
            }
            continue;
        }
        int ok = 1;
        switch (f->type) {
        case F_STRING:
            ok = json_is_string(v);
            if (ok && f->choices) {
                const char *const *ch = f->choices;
                while (*ch && strcmp(*ch, json_string_value(v)))
                    ch++;
                if (!*ch) {
                    char list[256] = "";
                    size_t k = 0;
                    for (ch = f->choices; *ch; ch++)
                        k += (size_t)snprintf(list + k, sizeof list - k, "%s%s", k ? ", " : "", *ch);
                    qd_reply_error(c->r, QD_E_INVALID_FIELD, path, "'%s' is \"%s\"; expected one of: %s", path,
                                   json_string_value(v), list);
                    return -1;
                }
            }
            break;
        case F_INT:
        case F_NUMBER: {
            ok = f->type == F_INT ? json_is_integer(v) : json_is_number(v);
            if (!ok)
                break;
            double x = json_number_value(v);
            if (!(x >= f->min && x <= f->max)) {
                qd_reply_error(c->r, QD_E_INVALID_FIELD, path, "'%s' is %g; expected %s from %g to %g", path, x,
                               type_name(f->type), f->min, f->max);
                return -1;
            }
            break;
        }
        case F_BOOL:
            ok = json_is_boolean(v);
            break;
        case F_OBJECT:
            if (!(ok = json_is_object(v)))
                break;
            join_path(path, sizeof path - 1, prefix, f->name);
            strcat(path, ".");
            if (check_object(c, f->sub, v, path) < 0)
                return -1;
            break;
        case F_FREE_OBJECT:
            ok = json_is_object(v);
            break;
        case F_QCONFIG: {
            /* the engine's own parser: the daemon accepts exactly what the pipelines understand */
            if (!(ok = json_is_object(v)))
                break;
            qs_err e = { 0 };
            char *text = json_dumps(v, JSON_COMPACT);
            int rc = text ? qs_config_check(text, NULL, &e) : qs_error(&e, QS_ENOMEM, "out of memory");
            free(text);
            if (rc < 0) {
                char fieldname[128];
                size_t fl = strcspn(e.msg, ": ");
                snprintf(fieldname, sizeof fieldname, "%.*s", (int)fl, e.msg);
                qd_reply_error(c->r, QD_E_INVALID_FIELD, strncmp(fieldname, "config", 6) ? path : fieldname, "%s",
                               e.msg);
                return -1;
            }
            break;
        }
        case F_STRINGS: {
            if (!(ok = json_is_array(v)))
                break;
            size_t i;
            json_t *s;
            json_array_foreach(v, i, s)
                if (!json_is_string(s)) {
                    qd_reply_error(c->r, QD_E_INVALID_FIELD, path, "'%s[%zu]' must be a string", path, i);
                    return -1;
                }
            break;
        }
        case F_MODEL:
        case F_DATASET:
            ok = json_is_string(v) && json_string_length(v) > 0 && json_string_length(v) < 32;
            if (ok && c->nrefs < 8) {
                snprintf(c->paths[c->nrefs], sizeof c->paths[0], "%s", path);
                c->refs[c->nrefs] = (qd_ref){ .field = c->paths[c->nrefs], .kind = f->type == F_MODEL ? QD_MODEL : QD_DATASET,
                                              .id = json_string_value(v) };
                c->nrefs++;
            }
            break;
        }
        if (!ok) {
            qd_reply_error(c->r, QD_E_INVALID_FIELD, path, "'%s' must be %s", path, type_name(f->type));
            return -1;
        }
    }
    return 0;
}

/* refs' field names must outlive the call: they live in a static per-thread buffer */
static __thread ctx tls_ctx;

int qd_spec_check(qd_req *r, json_t *spec, int debug_jobs, qd_ref *refs, int *nrefs, int *ok)
{
    *ok = 0;
    *nrefs = 0;
    if (!json_is_object(spec))
        return qd_reply_error(r, QD_E_INVALID_JSON, NULL, "the job spec must be a JSON object");
    ctx *c = &tls_ctx;
    memset(c, 0, sizeof *c);
    c->r = r;
    c->refs = refs;
    json_t *type = json_object_get(spec, "type");
    if (!json_is_string(type))
        return qd_reply_error(r, QD_E_INVALID_FIELD, "type", "'type' is required: one of eval, ptq, analyze, qat");
    static const unsigned bits[] = { T_EVAL, T_PTQ, T_ANALYZE, T_QAT, T_SLEEP };
    for (int i = 0; TYPES[i]; i++)
        if (!strcmp(TYPES[i], json_string_value(type)))
            c->type = bits[i];
    if (!c->type || (c->type == T_SLEEP && !debug_jobs))
        return qd_reply_error(r, QD_E_INVALID_FIELD, "type", "'type' is \"%s\"; expected one of: eval, ptq, analyze, qat",
                              json_string_value(type));
    if (check_object(c, SPEC, spec, "") < 0)
        return QD_H_OK;
    *nrefs = c->nrefs;
    *ok = 1;
    return QD_H_OK;
}
