/* Input shapes: the concrete sizes the symbolic dims of a model's inputs run at (see shapes.h).
 *
 * A model declares [N, 3, 48, W]: the leading dim is the batch (the runner chooses it), every other
 * symbolic dim needs a size before the executor can plan. It is recorded in the input value's
 * run_dim[] — never in its declared shape, so that exports keep the dim symbolic — from, in order,
 * the job spec's config.input_shapes (quant's --input-shape) and the data sets' samples: every
 * sample of a .npy has one shape. A later source must agree with an earlier one. */
#include "shapes.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int find_input(const qs_graph *g, const char *name)
{
    for (int k = 0; k < g->ninputs; k++)
        if (!strcmp(g->values[g->inputs[k]].name, name))
            return k;
    return -1;
}

static void decl_text(const qs_value *v, char *buf, size_t n)
{
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < v->ndim && k < n; d++) {
        const char *sep = d ? ", " : "";
        if (v->shape[d] >= 0)
            k += (size_t)snprintf(buf + k, n - k, "%s%lld", sep, (long long)v->shape[d]);
        else
            k += (size_t)snprintf(buf + k, n - k, "%s%s", sep, v->dim_param[d] ? v->dim_param[d] : "?");
    }
    if (k < n)
        snprintf(buf + k, n - k, "]");
}

/* Binds dims[1..] of input k (dims[0], a batch, is checked only when the model fixes it). */
static int bind(qs_graph *g, int k, int ndim, const int64_t *dims, int check_batch, const char *source, qs_err *e)
{
    qs_value *v = &g->values[g->inputs[k]];
    char decl[256];
    decl_text(v, decl, sizeof decl);
    if (v->ndim < 0)
        return qs_error(e, QS_EINVAL, "%s: input '%s' has no declared shape", source, v->name);
    if (ndim != v->ndim)
        return qs_error(e, QS_ESHAPE, "%s: input '%s' has %d dims %s, not %d", source, v->name, v->ndim, decl, ndim);
    for (int d = check_batch ? 0 : 1; d < ndim; d++) {
        int symbolic = v->shape[d] < 0 || (d == 0 && v->dim_param[0]);
        if (dims[d] < 1)
            return qs_error(e, QS_ESHAPE, "%s: input '%s' dim %d must be at least 1, not %lld", source, v->name, d,
                            (long long)dims[d]);
        if (!symbolic && dims[d] != v->shape[d])
            return qs_error(e, QS_ESHAPE, "%s: input '%s' dim %d: expected %lld (the model's input is %s), got %lld",
                            source, v->name, d, (long long)v->shape[d], decl, (long long)dims[d]);
        if (symbolic && d > 0 && v->run_dim[d] > 0 && v->run_dim[d] != dims[d])
            return qs_error(e, QS_ESHAPE, "%s: input '%s' dim %d%s%s%s: got %lld, but it already runs at %lld "
                            "(set by config.input_shapes / --input-shape or other data); every data set of a job "
                            "must have the same sample shape", source, v->name, d, v->dim_param[d] ? " ('" : "",
                            v->dim_param[d] ? v->dim_param[d] : "", v->dim_param[d] ? "')" : "",
                            (long long)dims[d], (long long)v->run_dim[d]);
    }
    for (int d = 1; d < ndim; d++)
        if (v->shape[d] < 0)
            v->run_dim[d] = dims[d];
    return 0;
}

int qs_graph_bind_input(qs_graph *g, const char *name, int ndim, const int64_t *dims, qs_err *e)
{
    int k = find_input(g, name);
    if (k < 0) {
        char names[512] = "";
        size_t n = 0;
        for (int i = 0; i < g->ninputs && n < sizeof names; i++)
            n += (size_t)snprintf(names + n, sizeof names - n, "%s%s", i ? ", " : "", g->values[g->inputs[i]].name);
        return qs_error(e, QS_EINVAL, "input shape for '%s': the model has no such input (its inputs: %s)", name,
                        names);
    }
    return bind(g, k, ndim, dims, 1, "input shape", e);
}

int qs_shape_parse(const char *text, char *name, size_t nname, int *ndim, int64_t *dims, qs_err *e)
{
    const char *eq = strrchr(text, '=');
    if (!eq || eq == text || !eq[1])
        return qs_error(e, QS_EINVAL, "input shape '%s': expected NAME=D0xD1x… (e.g. x=1x3x48x192)", text);
    *ndim = 0;
    for (const char *p = eq + 1; *p;) {
        char *end;
        long long v = strtoll(p, &end, 10);
        if (end == p || v < 1 || v > (1LL << 31) || *ndim == QS_MAX_DIMS || (*end && *end != 'x') ||
            (*end && !end[1]))
            return qs_error(e, QS_EINVAL, "input shape '%s': expected NAME=D0xD1x… with 1 to %d sizes from 1 to "
                            "2^31 (e.g. x=1x3x48x192)", text, QS_MAX_DIMS);
        dims[(*ndim)++] = v;
        p = *end ? end + 1 : end;
    }
    snprintf(name, nname, "%.*s", (int)(eq - text), text);
    return 0;
}

int qs_graph_bind_text(qs_graph *g, const char *text, qs_err *e)
{
    char name[256];
    int64_t dims[QS_MAX_DIMS];
    int ndim;
    int rc = qs_shape_parse(text, name, sizeof name, &ndim, dims, e);
    return rc < 0 ? rc : qs_graph_bind_input(g, name, ndim, dims, e);
}

int qs_graph_bind_data(qs_graph *g, int k, const qs_tensor *t, const char *what, qs_err *e)
{
    char source[300];
    snprintf(source, sizeof source, "%s data", what);
    if (k < 0 || k >= g->ninputs)
        return qs_error(e, QS_EINVAL, "%s: no input %d", source, k);
    const qs_value *v = &g->values[g->inputs[k]];
    char want[256] = "[N", got[128];
    for (int d = 1; d < v->ndim && strlen(want) < sizeof want - 32; d++) {
        if (v->shape[d] >= 0)
            snprintf(want + strlen(want), sizeof want - strlen(want), ", %lld", (long long)v->shape[d]);
        else
            snprintf(want + strlen(want), sizeof want - strlen(want), ", %s", v->dim_param[d] ? v->dim_param[d] : "?");
    }
    strcat(want, "]");
    qs_shape_str(t->ndim, t->shape, got, sizeof got);
    if (t->ndim != v->ndim)
        return qs_error(e, QS_ESHAPE, "%s for input '%s' has shape %s; expected %s (%d dims, samples along dim 0)",
                        source, v->name, got, want, v->ndim);
    for (int d = 1; d < v->ndim; d++)
        if (v->shape[d] >= 0 && v->shape[d] != t->shape[d])
            return qs_error(e, QS_ESHAPE, "%s for input '%s' has shape %s; expected %s: dim %d must be %lld, got %lld",
                            source, v->name, got, want, d, (long long)v->shape[d], (long long)t->shape[d]);
    return bind(g, k, t->ndim, t->shape, 0, source, e);
}

int qs_graph_bind_config(qs_graph *g, const qs_qconfig *c, qs_err *e)
{
    for (int i = 0; i < c->ninput_shapes; i++) {
        const qs_input_shape *s = &c->input_shapes[i];
        int rc = qs_graph_bind_input(g, s->name, s->ndim, s->dims, e);
        if (rc < 0)
            return qs_error_prefix(e, "config.input_shapes.%s: ", s->name);
    }
    return 0;
}

int qs_graph_unbound_dims(const qs_graph *g, char *msg, size_t n)
{
    int count = 0;
    size_t k = 0;
    if (n)
        msg[0] = 0;
    for (int i = 0; i < g->ninputs; i++) {
        const qs_value *v = &g->values[g->inputs[i]];
        for (int d = 1; d < v->ndim; d++) {
            if (v->shape[d] >= 0 || v->run_dim[d] > 0)
                continue;
            if (k < n)
                k += (size_t)snprintf(msg + k, n - k, "%s'%s' dim %d%s%s%s", count ? ", " : "", v->name, d,
                                      v->dim_param[d] ? " (" : "", v->dim_param[d] ? v->dim_param[d] : "",
                                      v->dim_param[d] ? ")" : "");
            count++;
        }
    }
    return count;
}

json_t *qs_graph_input_shapes_json(const qs_graph *g)
{
    json_t *o = json_object();
    for (int i = 0; i < g->ninputs; i++) {
        const qs_value *v = &g->values[g->inputs[i]];
        if (v->init || v->ndim < 0)
            continue;
        json_t *a = json_array();
        for (int d = 0; d < v->ndim; d++) {
            int64_t dim = d == 0 ? (v->shape[0] < 0 || v->dim_param[0] ? 1 : v->shape[0])
                                 : v->shape[d] >= 0 ? v->shape[d] : v->run_dim[d];
            json_array_append_new(a, dim > 0 ? json_integer(dim) : json_null());
        }
        json_object_set_new(o, v->name, a);
    }
    return o;
}

int qs_spec_apply_input_shapes(const qs_qconfig *c, qs_spec_tensor *inputs, int n, qs_err *e)
{
    for (int i = 0; i < c->ninput_shapes; i++) {
        const qs_input_shape *s = &c->input_shapes[i];
        qs_spec_tensor *in = NULL;
        for (int k = 0; k < n && !in; k++)
            if (inputs[k].name && !strcmp(inputs[k].name, s->name))
                in = &inputs[k];
        if (!in)
            return qs_error(e, QS_EINVAL, "config.input_shapes.%s: the model has no input '%s'", s->name, s->name);
        if (in->ndim != s->ndim)
            return qs_error(e, QS_ESHAPE, "config.input_shapes.%s: the input has %d dims, not %d", s->name, in->ndim,
                            s->ndim);
        for (int d = 1; d < s->ndim; d++) {
            if (in->shape[d] >= 0 && in->shape[d] != s->dims[d])
                return qs_error(e, QS_ESHAPE, "config.input_shapes.%s: dim %d: expected %lld (fixed by the model), "
                                "got %lld", s->name, d, (long long)in->shape[d], (long long)s->dims[d]);
            in->shape[d] = s->dims[d];
        }
    }
    return 0;
}
