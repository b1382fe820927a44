/* The code that walks the job spec's table (spec_rows.c); see spec.h and spec_json.h.
 *
 * Every field is one row of qs_spec_rows[], named by its JSON path. An object's fields are the
 * rows one level below its path, so the walk over a JSON object needs no other description:
 * unknown keys, types, bounds, allowed values and required fields all come from the rows.
 * Defaults are text, read by the same code as the JSON values would be. */
#include "spec.h"
#include "spec_impl.h"
#include "spec_json.h"

#include "quant/overrides.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- the table's shape ------------------------------------------------------------------------ */

static const char *leaf(const row *r)
{
    const char *d = strrchr(r->path, '.');
    return d ? d + 1 : r->path;
}

/* Is r a field of the object at path p ("" for the spec itself)? */
static int child_of(const row *r, const char *p)
{
    size_t n = strlen(p);
    if (!n)
        return !strchr(r->path, '.');
    return !strncmp(r->path, p, n) && r->path[n] == '.' && !strchr(r->path + n + 1, '.');
}

static void *at(qs_job_spec *s, const row *r) { return (char *)s + r->offset; }
static const void *cat(const qs_job_spec *s, const row *r) { return (const char *)s + r->offset; }

static void list(char *buf, size_t n, const char *const *items)
{
    size_t k = 0;
    buf[0] = 0;
    for (int i = 0; items[i] && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%s", i ? ", " : "", items[i]);
}

static int enum_value(const row *r, int i) { return r->values ? r->values[i] : i; }

static const char *enum_name(const row *r, int v)
{
    for (int i = 0; r->choices[i]; i++)
        if (enum_value(r, i) == v)
            return r->choices[i];
    return "?";
}

/* what a value of r must be, for messages: "an integer from 2 to 16" */
static void expected(const row *r, char *buf, size_t n)
{
    char l[256];
    switch (r->kind) {
    case K_OBJECT: snprintf(buf, n, "an object"); break;
    case K_BOOL: snprintf(buf, n, "true or false"); break;
    case K_INT: snprintf(buf, n, "an integer from %.0f to %.0f", r->min, r->max); break;
    case K_NUM: snprintf(buf, n, "a number from %g to %g%s", r->min, r->max, r->nullable ? " (or null)" : ""); break;
    case K_ENUM:
    case K_STR: list(l, sizeof l, r->choices); snprintf(buf, n, "one of: %s", l); break;
    case K_TEXT: snprintf(buf, n, "a string"); break;
    case K_MODEL: snprintf(buf, n, "a model id (mdl_…)"); break;
    case K_DATASET: snprintf(buf, n, "a data set id (ds_…)"); break;
    case K_NAMES: snprintf(buf, n, "a list of node names"); break;
    case K_JSON: snprintf(buf, n, "an object {\"tensors\": {…}, \"ops\": {…}}"); break;
    case K_SHAPES: snprintf(buf, n, "an object keyed by input name, each a list of sizes ([1, 3, 48, 192])"); break;
    }
}

/* ---- defaults --------------------------------------------------------------------------------- */

static void free_value(qs_job_spec *s, const row *r)
{
    if (r->kind == K_TEXT || r->kind == K_JSON) {
        free(*(char **)at(s, r));
        *(char **)at(s, r) = NULL;
    } else if (r->kind == K_SHAPES) {
        qs_input_shape *v = *(qs_input_shape **)at(s, r);
        int *cnt = (int *)((char *)s + r->offset2);
        for (int i = 0; i < *cnt; i++)
            free(v[i].name);
        free(v);
        *(qs_input_shape **)at(s, r) = NULL;
        *cnt = 0;
    } else if (r->kind == K_NAMES) {
        char **v = *(char ***)at(s, r);
        int *cnt = (int *)((char *)s + r->offset2);
        for (int i = 0; i < *cnt; i++)
            free(v[i]);
        free(v);
        *(char ***)at(s, r) = NULL;
        *cnt = 0;
    }
}

/* Sets a scalar field from its default's text; the table's texts are known good. */
static void set_text(qs_job_spec *s, const row *r, const char *t)
{
    switch (r->kind) {
    case K_BOOL: *(int *)at(s, r) = !strcmp(t, "true"); break;
    case K_INT: *(int *)at(s, r) = (int)strtol(t, NULL, 10); break;
    case K_NUM: *(double *)at(s, r) = strtod(t, NULL); break;
    case K_ENUM:
        for (int i = 0; r->choices[i]; i++)
            if (!strcmp(r->choices[i], t))
                *(int *)at(s, r) = enum_value(r, i);
        break;
    case K_STR: snprintf(at(s, r), r->size, "%s", t); break;
    default: QS_ASSERT(!"a default for a field without one");
    }
}

static spec_column preset_column(const char *name)
{
    for (int i = 0; name && qs_spec_preset_table[i].name; i++)
        if (!strcmp(qs_spec_preset_table[i].name, name))
            return qs_spec_preset_table[i].column;
    return COL_STANDARD;
}

static const char *column_default(const row *r, spec_column col)
{
    if (col == COL_FAST && r->fast)
        return r->fast;
    if (col == COL_BEST && r->best)
        return r->best;
    return r->dflt;
}

/* The config's fields to the defaults of the preset named (NULL or unknown: standard), the name
 * included ("basic" stays "basic"); the spec's other fields are left alone. */
static void config_defaults(qs_job_spec *s, const char *preset)
{
    char name[sizeof s->config.preset];
    snprintf(name, sizeof name, "%s", preset && qs_spec_preset_about(preset) ? preset : "standard");
    spec_column col = preset_column(name);
    for (int i = 0; i < qs_spec_nrows; i++) {
        const row *r = &qs_spec_rows[i];
        if (strncmp(r->path, "config.", 7))
            continue;
        free_value(s, r);
        if (r->dflt)
            set_text(s, r, column_default(r, col));
    }
    snprintf(s->config.preset, sizeof s->config.preset, "%s", name);
}

void qs_qconfig_default(qs_qconfig *c, const char *preset)
{
    qs_job_spec s;
    memset(&s, 0, sizeof s);
    config_defaults(&s, preset);
    *c = s.config;
}

const char *qs_spec_preset_name(int i)
{
    for (int k = 0, n = 0; qs_spec_preset_table[k].name; k++)
        if (qs_spec_preset_table[k].offered && n++ == i)
            return qs_spec_preset_table[k].name;
    return NULL;
}

const char *qs_spec_preset_about(const char *name)
{
    for (int k = 0; name && qs_spec_preset_table[k].name; k++)
        if (!strcmp(qs_spec_preset_table[k].name, name))
            return qs_spec_preset_table[k].about;
    return NULL;
}

void qs_qconfig_free(qs_qconfig *c)
{
    qs_job_spec s;
    memset(&s, 0, sizeof s);
    s.config = *c;
    for (int i = 0; i < qs_spec_nrows; i++)
        free_value(&s, &qs_spec_rows[i]);
    *c = s.config;
}

void qs_job_spec_free(qs_job_spec *s)
{
    for (int i = 0; i < qs_spec_nrows; i++)
        free_value(s, &qs_spec_rows[i]);
}

int qs_qconfig_check_names(const qs_qconfig *c, const qs_graph *g, qs_err *e)
{
    for (int i = 0; i < c->nexclude; i++) {
        int found = 0;
        for (int k = 0; k < g->nnodes && !found; k++)
            found = g->nodes[k].name && !strcmp(g->nodes[k].name, c->exclude[i]);
        if (!found)
            return qs_error(e, QS_EINVAL, "config.exclude[%d]: the model has no node named '%s'", i, c->exclude[i]);
    }
    qs_qoverrides ov;
    int rc = qs_overrides_parse(c->overrides, &ov, e);
    if (rc == 0)
        rc = qs_overrides_check(&ov, g, e);
    qs_overrides_free(&ov);
    return rc;
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
        if (!x || !(t = strdup(t))) {
            if (x)
                c->exclude = x;
            free(dup);
            return QS_ENOMEM;
        }
        c->exclude = x;
        c->exclude[c->nexclude++] = t;
    }
    free(dup);
    return 0;
}

/* ---- parsing ---------------------------------------------------------------------------------- */

static int accepts(const row *r, unsigned type) { return (r->jobs & type) != 0; }

/* config.rounding and config.adaround.enabled say one thing: the one given sets the other, and
 * both given must agree (QS_EUNSUPPORTED, naming both: each is valid, the pair is not). */
static int rounding_coherent(qs_job_spec *s, json_t *cfg, unsigned type, qs_err *e)
{
    qs_qconfig *c = &s->config;
    json_t *ada = json_object_get(cfg, "adaround");
    int has_r = json_object_get(cfg, "rounding") != NULL, has_a = json_is_boolean(json_object_get(ada, "enabled"));
    static const char *const names[] = { "nearest", "adaround", "gptq" };   /* = qs_rounding */
    if ((type & QS_JOB_QUANT) && has_r && has_a && c->adaround.enabled != (c->rounding == QS_ROUND_ADAROUND))
        return qs_error(e, QS_EUNSUPPORTED, "config.rounding: \"%s\" contradicts config.adaround.enabled = %s "
                        "(true means rounding \"adaround\", false \"nearest\"); give one of them",
                        names[c->rounding], c->adaround.enabled ? "true" : "false");
    if (has_a && !has_r)
        c->rounding = c->adaround.enabled ? QS_ROUND_ADAROUND : QS_ROUND_NEAREST;
    c->adaround.enabled = c->rounding == QS_ROUND_ADAROUND;
    return 0;
}

/* One value into the struct (v neither absent nor a null that means "not given"). */
static int parse_value(qs_job_spec *s, const row *r, json_t *v, unsigned type, qs_err *e);

static int walk(qs_job_spec *s, const char *p, json_t *obj, unsigned type, qs_err *e)
{
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) {   /* unknown keys first: a typo is the likeliest mistake */
        int known = 0;
        for (int i = 0; i < qs_spec_nrows && !known; i++)
            known = child_of(&qs_spec_rows[i], p) && accepts(&qs_spec_rows[i], type) &&
                    !strcmp(leaf(&qs_spec_rows[i]), key);
        if (!known) {
            char names[1024];
            size_t k = 0;
            names[0] = 0;
            for (int i = 0; i < qs_spec_nrows; i++)
                if (child_of(&qs_spec_rows[i], p) && accepts(&qs_spec_rows[i], type) && k < sizeof names)
                    k += (size_t)snprintf(names + k, sizeof names - k, "%s%s", k ? ", " : "", leaf(&qs_spec_rows[i]));
            return qs_error(e, QS_EINVAL, "unknown field '%s%s%s' (expected one of: %s)", p, *p ? "." : "", key,
                            names);
        }
    }
    for (int i = 0; i < qs_spec_nrows; i++) {
        const row *r = &qs_spec_rows[i];
        if (!child_of(r, p) || !accepts(r, type))
            continue;
        v = json_object_get(obj, leaf(r));
        if (!v || (json_is_null(v) && r->nullable)) {
            if (r->required & type) {
                char what[256];
                expected(r, what, sizeof what);
                return qs_error(e, QS_EINVAL, "%s: required for %s jobs (%s)", r->path,
                                qs_job_type_name((qs_job_type)type), what);
            }
            if (v && r->kind == K_NUM)
                *(double *)at(s, r) = -1;   /* null: off (target_drop) */
            continue;
        }
        int rc = parse_value(s, r, v, type, e);
        if (rc < 0)
            return rc;
    }
    /* a field that follows a sibling: an explicit range without last_layer covers the logits too */
    for (int i = 0; i < qs_spec_nrows; i++) {
        const row *r = &qs_spec_rows[i];
        if (!r->follows || !child_of(r, p) || !accepts(r, type) || json_object_get(obj, leaf(r)) ||
            !json_object_get(obj, r->follows))
            continue;
        for (int k = 0; k < qs_spec_nrows; k++)
            if (child_of(&qs_spec_rows[k], p) && !strcmp(leaf(&qs_spec_rows[k]), r->follows))
                *(int *)at(s, r) = *(int *)at(s, &qs_spec_rows[k]);
    }
    return strcmp(p, "config") ? 0 : rounding_coherent(s, obj, type, e);
}

static int parse_value(qs_job_spec *s, const row *r, json_t *v, unsigned type, qs_err *e)
{
    char what[256];
    expected(r, what, sizeof what);
    switch (r->kind) {
    case K_OBJECT:
        if (!json_is_object(v))
            break;
        if (!strcmp(r->path, "config")) {   /* the preset first: the other fields override it */
            json_t *p = json_object_get(v, "preset");
            const row *pr = NULL;
            for (int i = 0; i < qs_spec_nrows; i++)
                if (!strcmp(qs_spec_rows[i].path, "config.preset"))
                    pr = &qs_spec_rows[i];
            int rc;
            if (p && accepts(pr, type) && (rc = parse_value(s, pr, p, type, e)) < 0)
                return rc;
            config_defaults(s, s->config.preset);
        }
        return walk(s, r->path, v, type, e);
    case K_BOOL:
        if (!json_is_boolean(v))
            break;
        *(int *)at(s, r) = json_is_true(v);
        return 0;
    case K_INT:
    case K_NUM: {
        if (r->kind == K_INT ? !json_is_integer(v) : !json_is_number(v))
            break;
        double x = json_number_value(v);
        if (!(x >= r->min && x <= r->max))
            return qs_error(e, QS_EINVAL, "%s: %g is out of range; must be %s", r->path, x, what);
        if (r->kind == K_INT)
            *(int *)at(s, r) = (int)json_integer_value(v);
        else
            *(double *)at(s, r) = x;
        return 0;
    }
    case K_ENUM:
    case K_STR:
        if (!json_is_string(v))
            break;
        for (int i = 0; r->choices[i]; i++)
            if (!strcmp(r->choices[i], json_string_value(v))) {
                if (r->kind == K_ENUM)
                    *(int *)at(s, r) = enum_value(r, i);
                else
                    snprintf(at(s, r), r->size, "%s", r->choices[i]);
                return 0;
            }
        return qs_error(e, QS_EINVAL, "%s: '%s' is not allowed; expected %s", r->path, json_string_value(v), what);
    case K_TEXT: {
        if (!json_is_string(v))
            break;
        char *t = strdup(json_string_value(v));
        if (!t)
            return qs_error(e, QS_ENOMEM, "out of memory");
        free(*(char **)at(s, r));
        *(char **)at(s, r) = t;
        return 0;
    }
    case K_MODEL:
    case K_DATASET:
        if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) >= QS_SPEC_ID_MAX)
            break;
        snprintf(at(s, r), QS_SPEC_ID_MAX, "%s", json_string_value(v));
        return 0;
    case K_NAMES: {
        if (!json_is_array(v))
            break;
        free_value(s, r);
        char ***names = (char ***)at(s, r);
        int *cnt = (int *)((char *)s + r->offset2);
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) {
            if (!json_is_string(x))
                return qs_error(e, QS_EINVAL, "%s[%zu]: must be a node name (string)", r->path, i);
            char **grown = realloc(*names, (*cnt + 1) * sizeof *grown);
            if (!grown)
                return qs_error(e, QS_ENOMEM, "out of memory");
            *names = grown;
            if (!(grown[*cnt] = strdup(json_string_value(x))))
                return qs_error(e, QS_ENOMEM, "out of memory");
            (*cnt)++;
        }
        return 0;
    }
    case K_SHAPES: {
        if (!json_is_object(v))
            break;
        free_value(s, r);
        qs_input_shape **list = (qs_input_shape **)at(s, r);
        int *cnt = (int *)((char *)s + r->offset2);
        const char *key;
        json_t *x;
        if (json_object_size(v) && !(*list = calloc(json_object_size(v), sizeof **list)))
            return qs_error(e, QS_ENOMEM, "out of memory");
        json_object_foreach(v, key, x) {
            size_t nd = json_array_size(x);
            if (!json_is_array(x) || nd < 1 || nd > 8)
                return qs_error(e, QS_EINVAL, "%s.%s: must be a list of 1 to 8 sizes, such as [1, 3, 48, 192]",
                                r->path, key);
            qs_input_shape *sh = &(*list)[*cnt];
            for (size_t d = 0; d < nd; d++) {
                json_t *dv = json_array_get(x, d);
                if (!json_is_integer(dv) || json_integer_value(dv) < 1 || json_integer_value(dv) > (1LL << 31))
                    return qs_error(e, QS_EINVAL, "%s.%s[%zu]: must be a size (an integer from 1 to 2147483648)",
                                    r->path, key, d);
                sh->dims[d] = json_integer_value(dv);
            }
            if (!(sh->name = strdup(key)))
                return qs_error(e, QS_ENOMEM, "out of memory");
            sh->ndim = (int)nd;
            (*cnt)++;
        }
        return 0;
    }
    case K_JSON: {
        if (!json_is_object(v))
            break;
        char *t = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);
        if (!t)
            return qs_error(e, QS_ENOMEM, "out of memory");
        if (!strcmp(r->path, "config.overrides")) {   /* its shape, field by field */
            qs_qoverrides ov;
            int rc = qs_overrides_parse(t, &ov, e);
            qs_overrides_free(&ov);
            if (rc < 0) {
                free(t);
                return rc;
            }
        }
        free(*(char **)at(s, r));
        *(char **)at(s, r) = t;
        return 0;
    }
    }
    return qs_error(e, QS_EINVAL, "%s: must be %s", r->path, what);
}

const char *qs_job_type_name(qs_job_type t)
{
    for (int i = 0; qs_spec_types[i]; i++)
        if ((unsigned)qs_spec_type_bits[i] == (unsigned)t)
            return qs_spec_types[i];
    return "?";
}

int qs_job_spec_parse(json_t *spec, unsigned flags, qs_job_spec *s, qs_err *e)
{
    memset(s, 0, sizeof *s);
    config_defaults(s, NULL);
    if (!json_is_object(spec))
        return qs_error(e, QS_EINVAL, "the job spec must be a JSON object");
    /* the type first: it decides which fields there are */
    const char *types = (flags & QS_SPEC_DEBUG_JOBS) ? "eval, ptq, analyze, qat, sleep" : "eval, ptq, analyze, qat";
    json_t *t = json_object_get(spec, "type");
    if (!json_is_string(t))
        return qs_error(e, QS_EINVAL, "type: required (a string); expected one of: %s", types);
    for (int i = 0; qs_spec_types[i]; i++)
        if (!strcmp(qs_spec_types[i], json_string_value(t)) &&
            (qs_spec_type_bits[i] != QS_JOB_SLEEP || (flags & QS_SPEC_DEBUG_JOBS)))
            s->type = (qs_job_type)qs_spec_type_bits[i];
    if (!s->type)
        return qs_error(e, QS_EINVAL, "type: '%s' is not allowed; expected one of: %s", json_string_value(t), types);
    int rc = walk(s, "", spec, s->type, e);
    if (rc < 0)
        qs_job_spec_free(s);
    return rc;
}

int qs_qconfig_parse(json_t *cfg, qs_qconfig *c, qs_err *e)
{
    qs_job_spec s;
    memset(&s, 0, sizeof s);
    config_defaults(&s, NULL);
    s.type = QS_JOB_PTQ;
    int rc = 0;
    if (cfg && !json_is_null(cfg)) {
        const row *cr = NULL;
        for (int i = 0; i < qs_spec_nrows; i++)
            if (!strcmp(qs_spec_rows[i].path, "config"))
                cr = &qs_spec_rows[i];
        rc = parse_value(&s, cr, cfg, QS_JOB_PTQ, e);
    }
    if (rc < 0)
        qs_job_spec_free(&s);
    *c = s.config;
    return rc;
}

int qs_job_spec_parse_text(const char *text, size_t len, unsigned flags, qs_job_spec *s, qs_err *e)
{
    json_error_t je;
    json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!j) {
        memset(s, 0, sizeof *s);
        return qs_error(e, QS_EINVAL, "the job spec is not valid JSON: %s (line %d, column %d)", je.text, je.line,
                        je.column);
    }
    int rc = qs_job_spec_parse(j, flags, s, e);
    json_decref(j);
    return rc;
}

int qs_qconfig_parse_text(const char *text, qs_qconfig *c, qs_err *e)
{
    json_t *j = NULL;
    if (text) {
        json_error_t je;
        if (!(j = json_loads(text, JSON_REJECT_DUPLICATES, &je))) {
            qs_qconfig_default(c, "standard");
            return qs_error(e, QS_EINVAL, "config: not valid JSON: %s (line %d, column %d)", je.text, je.line,
                            je.column);
        }
    }
    int rc = qs_qconfig_parse(j, c, e);
    json_decref(j);
    return rc;
}

void qs_spec_err_field(const qs_err *e, char *buf, size_t n)
{
    static const char unknown[] = "unknown field '";
    const char *m = e->msg;
    size_t k;
    if (!strncmp(m, unknown, sizeof unknown - 1)) {   /* the one message that quotes its path */
        m += sizeof unknown - 1;
        k = strcspn(m, "'");
    } else {
        k = strcspn(m, ": ");
        if (m[k] != ':')
            k = 0;
    }
    if (k >= n)
        k = n - 1;
    snprintf(buf, n, "%.*s", (int)k, m);
}

/* ---- writing ---------------------------------------------------------------------------------- */

/* The value of r as JSON (new reference); NULL when it is not set (an empty id, no name). */
static json_t *value_json(const qs_job_spec *s, const row *r, unsigned type)
{
    switch (r->kind) {
    case K_OBJECT: {
        json_t *o = json_object();
        for (int i = 0; i < qs_spec_nrows; i++)
            if (child_of(&qs_spec_rows[i], r->path) && accepts(&qs_spec_rows[i], type)) {
                json_t *v = value_json(s, &qs_spec_rows[i], type);
                if (v)
                    json_object_set_new(o, leaf(&qs_spec_rows[i]), v);
            }
        if (!json_object_size(o) && strcmp(r->path, "config")) {   /* an empty train / validation */
            json_decref(o);
            return NULL;
        }
        return o;
    }
    case K_BOOL: return json_boolean(*(const int *)cat(s, r));
    case K_INT: return json_integer(*(const int *)cat(s, r));
    case K_NUM: {
        double x = *(const double *)cat(s, r);
        return r->nullable && x < 0 ? json_null() : json_real(x);
    }
    case K_ENUM: return json_string(enum_name(r, *(const int *)cat(s, r)));
    case K_STR: return json_string(cat(s, r));
    case K_TEXT: {
        const char *t = *(char *const *)cat(s, r);
        return t ? json_string(t) : NULL;
    }
    case K_MODEL:
    case K_DATASET: return *(const char *)cat(s, r) ? json_string(cat(s, r)) : NULL;
    case K_NAMES: {
        json_t *a = json_array();
        char *const *names = *(char **const *)cat(s, r);
        int cnt = *(const int *)((const char *)s + r->offset2);
        for (int i = 0; i < cnt; i++)
            json_array_append_new(a, json_string(names[i]));
        return a;
    }
    case K_JSON: {
        const char *t = *(char *const *)cat(s, r);
        json_t *v = t ? json_loads(t, 0, NULL) : NULL;
        return v ? v : json_null();
    }
    case K_SHAPES: {
        json_t *o = json_object();
        const qs_input_shape *list = *(qs_input_shape *const *)cat(s, r);
        int cnt = *(const int *)((const char *)s + r->offset2);
        for (int i = 0; i < cnt; i++) {
            json_t *a = json_array();
            for (int d = 0; d < list[i].ndim; d++)
                json_array_append_new(a, json_integer(list[i].dims[d]));
            json_object_set_new(o, list[i].name, a);
        }
        return o;
    }
    }
    return NULL;
}

json_t *qs_job_spec_to_json(const qs_job_spec *s)
{
    json_t *o = json_object();
    for (int i = 0; i < qs_spec_nrows; i++)
        if (child_of(&qs_spec_rows[i], "") && accepts(&qs_spec_rows[i], s->type)) {
            json_t *v = value_json(s, &qs_spec_rows[i], s->type);
            if (v)
                json_object_set_new(o, qs_spec_rows[i].path, v);
        }
    return o;
}

json_t *qs_qconfig_to_json(const qs_qconfig *c)
{
    qs_job_spec s;
    memset(&s, 0, sizeof s);
    s.type = QS_JOB_PTQ;
    s.config = *c;
    for (int i = 0; i < qs_spec_nrows; i++)
        if (!strcmp(qs_spec_rows[i].path, "config"))
            return value_json(&s, &qs_spec_rows[i], QS_JOB_PTQ);
    return NULL;
}

char *qs_job_spec_to_text(const qs_job_spec *s)
{
    json_t *j = qs_job_spec_to_json(s);
    char *t = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return t;
}

char *qs_qconfig_to_text(const qs_qconfig *c)
{
    json_t *j = qs_qconfig_to_json(c);
    char *t = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return t;
}

json_t *qs_spec_presets_json(void)
{
    json_t *o = json_object();
    for (int i = 0; qs_spec_presets[i]; i++) {
        qs_qconfig c;
        qs_qconfig_default(&c, qs_spec_presets[i]);
        json_object_set_new(o, qs_spec_presets[i], qs_qconfig_to_json(&c));
        qs_qconfig_free(&c);
    }
    return o;
}

/* ---- the schema -------------------------------------------------------------------------------- */

static const char *schema_type(const row *r)
{
    switch (r->kind) {
    case K_OBJECT: case K_JSON: case K_SHAPES: return "object";
    case K_BOOL: return "boolean";
    case K_INT: return "integer";
    case K_NUM: return "number";
    case K_NAMES: return "array";
    default: return "string";
    }
}

static json_t *row_schema(const row *r)
{
    json_t *o = json_pack("{s:s}", "type", schema_type(r));
    char jobs[64] = "", doc[2048];
    for (int i = 0; qs_spec_types[i]; i++)
        if ((r->jobs & (unsigned)qs_spec_type_bits[i]) && qs_spec_type_bits[i] != QS_JOB_SLEEP)
            snprintf(jobs + strlen(jobs), sizeof jobs - strlen(jobs), "%s%s", *jobs ? ", " : "", qs_spec_types[i]);
    snprintf(doc, sizeof doc, "%s (job types: %s)%s%s%s%s%s%s", r->doc ? r->doc : "", jobs,
             r->fast ? " Preset fast: " : "", r->fast ? r->fast : "", r->fast ? "." : "", r->best ? " Preset best: " : "",
             r->best ? r->best : "", r->best ? "." : "");
    json_object_set_new(o, "description", json_string(doc));
    if (r->kind == K_INT || r->kind == K_NUM) {
        json_object_set_new(o, "minimum", json_real(r->min));
        json_object_set_new(o, "maximum", json_real(r->max));
    }
    if (r->choices) {
        json_t *en = json_array();
        for (int i = 0; r->choices[i]; i++)
            json_array_append_new(en, json_string(r->choices[i]));
        json_object_set_new(o, "enum", en);
    }
    if (r->nullable && r->kind != K_OBJECT)
        json_object_set_new(o, "nullable", json_true());
    if (r->kind == K_NAMES)
        json_object_set_new(o, "items", json_pack("{s:s}", "type", "string"));
    if (r->kind == K_JSON)
        json_object_set_new(o, "additionalProperties", json_true());
    if (r->kind == K_SHAPES)
        json_object_set_new(o, "additionalProperties",
                            json_pack("{s:s, s:{s:s, s:i}, s:i, s:i}", "type", "array", "items", "type", "integer",
                                      "minimum", 1, "minItems", 1, "maxItems", 8));
    if (r->dflt) {   /* the standard preset's default, as the normalised spec writes it */
        qs_job_spec s;
        memset(&s, 0, sizeof s);
        config_defaults(&s, NULL);
        json_object_set_new(o, "default", value_json(&s, r, r->jobs));
    }
    if (r->kind == K_OBJECT) {
        json_t *props = json_object();
        for (int i = 0; i < qs_spec_nrows; i++)
            if (child_of(&qs_spec_rows[i], r->path))
                json_object_set_new(props, leaf(&qs_spec_rows[i]), row_schema(&qs_spec_rows[i]));
        json_object_set_new(o, "properties", props);
        json_object_set_new(o, "additionalProperties", json_false());
    }
    return o;
}

json_t *qs_spec_config_schema(void)
{
    for (int i = 0; i < qs_spec_nrows; i++)
        if (!strcmp(qs_spec_rows[i].path, "config"))
            return row_schema(&qs_spec_rows[i]);
    return NULL;
}

int qs_spec_nfields(void) { return qs_spec_nrows; }
const char *qs_spec_field_path(int i) { return i >= 0 && i < qs_spec_nrows ? qs_spec_rows[i].path : NULL; }
unsigned qs_spec_field_jobs(int i) { return i >= 0 && i < qs_spec_nrows ? qs_spec_rows[i].jobs : 0; }
const char *qs_spec_field_schema_type(int i)
{
    return i >= 0 && i < qs_spec_nrows ? schema_type(&qs_spec_rows[i]) : NULL;
}

/* ---- data against the model --------------------------------------------------------------------- */

static void shape_text(char *buf, size_t n, const qs_spec_tensor *t, int batch_n)
{
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < t->ndim && k < n; d++) {
        if (d == 0 && batch_n)
            k += (size_t)snprintf(buf + k, n - k, "N");
        else if (t->shape[d] < 0)
            k += (size_t)snprintf(buf + k, n - k, "%s?", d ? ", " : "");
        else
            k += (size_t)snprintf(buf + k, n - k, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
    }
    if (k < n)
        snprintf(buf + k, n - k, "]");
}

int qs_spec_check_data(const char *what, const char *id, const qs_spec_tensor *inputs, int ninputs,
                       const qs_spec_tensor *arrays, int narrays, qs_err *e)
{
    int64_t rows0 = -1;
    for (int i = 0; i < ninputs; i++) {
        const qs_spec_tensor *in = &inputs[i], *a = NULL;
        for (int k = 0; k < narrays && !a; k++)
            if (in->name && arrays[k].name && !strcmp(in->name, arrays[k].name))
                a = &arrays[k];
        if (!a && narrays == 1 && ninputs == 1)
            a = &arrays[0];
        char want[192], got[192];
        shape_text(want, sizeof want, in, 1);
        if (!a)
            return qs_error(e, QS_EINVAL, "%s: data set %s has no array named '%s' (the model's input %d, shape %s); "
                            "a model with several inputs takes an .npz keyed by input name", what, id, in->name, i,
                            want);
        int ok = a->ndim == in->ndim && a->ndim >= 1;
        for (int d = 1; ok && d < in->ndim; d++)
            ok = in->shape[d] < 0 || in->shape[d] == a->shape[d];
        if (!ok) {
            shape_text(got, sizeof got, a, 0);
            return qs_error(e, QS_ESHAPE, "%s: data set %s has shape %s; the model's input '%s' expects %s", what,
                            id, got, in->name, want);
        }
        if (rows0 < 0)
            rows0 = a->shape[0];
        else if (a->shape[0] != rows0)
            return qs_error(e, QS_ESHAPE, "%s: data set %s has %lld samples for input '%s' but %lld for input '%s'",
                            what, id, (long long)a->shape[0], in->name, (long long)rows0, inputs[0].name);
    }
    if (rows0 == 0)
        return qs_error(e, QS_EINVAL, "%s: data set %s is empty (0 samples)", what, id);
    return 0;
}
