/* Graph IR storage. Values and nodes live in growable arrays; strings and attribute payloads are
 * owned by the graph. Value ids are stable for the graph's life (passes only add values), node ids
 * are positions in the (topologically sorted) node array. */
#include "graph.h"

#include <stdlib.h>
#include <string.h>

static char *xstrdup(const char *s) { return s ? strdup(s) : NULL; }

qs_graph *qs_graph_new(void)
{
    qs_graph *g = calloc(1, sizeof *g);
    if (g)
        g->ir_version = 8;
    return g;
}

static void attr_clear(qs_attr *a)
{
    free(a->name);
    free(a->s);
    qs_tensor_free(a->t);
    free(a->floats);
    free(a->ints);
    for (int i = 0; a->strings && i < a->n; i++)
        free(a->strings[i]);
    free(a->strings);
    memset(a, 0, sizeof *a);
}

static void node_clear(qs_node *n)
{
    free(n->name);
    free(n->op);
    free(n->domain);
    free(n->in);
    free(n->out);
    for (int i = 0; i < n->nattr; i++)
        attr_clear(&n->attr[i]);
    free(n->attr);
    memset(n, 0, sizeof *n);
}

static void value_clear(qs_value *v)
{
    free(v->name);
    for (int i = 0; i < QS_MAX_DIMS; i++)
        free(v->dim_param[i]);
    qs_tensor_free(v->init);
    memset(v, 0, sizeof *v);
}

void qs_graph_free(qs_graph *g)
{
    if (!g)
        return;
    for (int i = 0; i < g->nnodes; i++)
        node_clear(&g->nodes[i]);
    for (int i = 0; i < g->nvalues; i++)
        value_clear(&g->values[i]);
    for (int i = 0; i < g->nopsets; i++)
        free(g->opsets[i].domain);
    free(g->nodes);
    free(g->values);
    free(g->inputs);
    free(g->outputs);
    free(g->opsets);
    free(g->name);
    free(g->producer_name);
    free(g->producer_version);
    free(g->doc);
    free(g);
}

static int attr_copy(qs_attr *d, const qs_attr *s)
{
    memset(d, 0, sizeof *d);
    d->name = xstrdup(s->name);
    d->type = s->type;
    d->f = s->f;
    d->i = s->i;
    d->n = s->n;
    d->s = xstrdup(s->s);
    if (s->t && !(d->t = qs_tensor_copy(s->t)))
        return -1;
    if (s->floats) {
        d->floats = malloc((s->n ? s->n : 1) * sizeof *d->floats);
        if (!d->floats)
            return -1;
        memcpy(d->floats, s->floats, s->n * sizeof *d->floats);
    }
    if (s->ints) {
        d->ints = malloc((s->n ? s->n : 1) * sizeof *d->ints);
        if (!d->ints)
            return -1;
        memcpy(d->ints, s->ints, s->n * sizeof *d->ints);
    }
    if (s->strings) {
        d->strings = calloc(s->n ? s->n : 1, sizeof *d->strings);
        if (!d->strings)
            return -1;
        for (int i = 0; i < s->n; i++)
            d->strings[i] = xstrdup(s->strings[i]);
    }
    return 0;
}

qs_graph *qs_graph_clone(const qs_graph *s)
{
    qs_graph *g = qs_graph_new();
    if (!g)
        return NULL;
    g->name = xstrdup(s->name);
    g->producer_name = xstrdup(s->producer_name);
    g->producer_version = xstrdup(s->producer_version);
    g->doc = xstrdup(s->doc);
    g->ir_version = s->ir_version;
    for (int i = 0; i < s->nopsets; i++)
        if (qs_graph_set_opset(g, s->opsets[i].domain, s->opsets[i].version) < 0)
            goto fail;
    for (int i = 0; i < s->nvalues; i++) {
        const qs_value *sv = &s->values[i];
        int id = qs_graph_value(g, sv->name);
        if (id != i)
            goto fail;
        qs_value *v = &g->values[id];
        v->dtype = sv->dtype;
        v->ndim = sv->ndim;
        memcpy(v->shape, sv->shape, sizeof v->shape);
        memcpy(v->run_dim, sv->run_dim, sizeof v->run_dim);
        for (int d = 0; d < QS_MAX_DIMS; d++)
            v->dim_param[d] = xstrdup(sv->dim_param[d]);
        if (sv->init && !(v->init = qs_tensor_copy(sv->init)))
            goto fail;
    }
    for (int i = 0; i < s->nnodes; i++) {
        const qs_node *sn = &s->nodes[i];
        int id = qs_graph_add_node(g, sn->op, sn->name, sn->nin, sn->in, sn->nout, sn->out);
        if (id < 0)
            goto fail;
        qs_node *n = &g->nodes[id];
        qs_node_set_domain(n, sn->domain);
        n->attr = calloc(sn->nattr ? sn->nattr : 1, sizeof *n->attr);
        if (!n->attr)
            goto fail;
        for (int a = 0; a < sn->nattr; a++, n->nattr++)
            if (attr_copy(&n->attr[a], &sn->attr[a]) < 0)
                goto fail;
    }
    g->inputs = malloc((s->ninputs + 1) * sizeof *g->inputs);
    g->outputs = malloc((s->noutputs + 1) * sizeof *g->outputs);
    if (!g->inputs || !g->outputs)
        goto fail;
    if (s->ninputs)
        memcpy(g->inputs, s->inputs, s->ninputs * sizeof *g->inputs);
    if (s->noutputs)
        memcpy(g->outputs, s->outputs, s->noutputs * sizeof *g->outputs);
    g->ninputs = s->ninputs;
    g->noutputs = s->noutputs;
    return g;
fail:
    qs_graph_free(g);
    return NULL;
}

int qs_graph_find_value(const qs_graph *g, const char *name)
{
    /* Linear scan: graphs have at most a few thousand values and lookups happen at import/pass
     * time, never per sample. */
    for (int i = 0; i < g->nvalues; i++)
        if (!strcmp(g->values[i].name, name))
            return i;
    return -1;
}

static int add_value(qs_graph *g, const char *name)
{
    if (g->nvalues == g->cap_values) {
        int cap = g->cap_values ? 2 * g->cap_values : 64;
        qs_value *v = realloc(g->values, cap * sizeof *v);
        if (!v)
            return -1;
        g->values = v;
        g->cap_values = cap;
    }
    qs_value *v = &g->values[g->nvalues];
    memset(v, 0, sizeof *v);
    if (!(v->name = strdup(name)))
        return -1;
    v->ndim = -1;
    v->producer = -1;
    return g->nvalues++;
}

int qs_graph_value(qs_graph *g, const char *name)
{
    int id = qs_graph_find_value(g, name);
    return id >= 0 ? id : add_value(g, name);
}

void qs_graph_copy_decl(qs_graph *g, int dst, int src)
{
    qs_value *d = &g->values[dst];
    const qs_value *s = &g->values[src];
    d->dtype = s->dtype;
    d->ndim = s->ndim;
    memcpy(d->shape, s->shape, sizeof d->shape);
    memcpy(d->run_dim, s->run_dim, sizeof d->run_dim);
    for (int i = 0; i < QS_MAX_DIMS; i++) {
        free(d->dim_param[i]);
        d->dim_param[i] = s->dim_param[i] ? strdup(s->dim_param[i]) : NULL;
    }
}

int qs_graph_new_value(qs_graph *g, const char *base)
{
    if (qs_graph_find_value(g, base) < 0)
        return add_value(g, base);
    char buf[512];
    for (int k = 1;; k++) {
        snprintf(buf, sizeof buf, "%s_%d", base, k);
        if (qs_graph_find_value(g, buf) < 0)
            return add_value(g, buf);
    }
}

void qs_graph_weights_changed(qs_graph *g) { g->wgen++; }

void qs_graph_set_init_steal(qs_graph *g, int value, qs_tensor *t)
{
    qs_value *v = &g->values[value];
    g->wgen++;
    qs_tensor_free(v->init);
    v->init = t;
    if (t) {
        v->dtype = t->dtype;
        v->ndim = t->ndim;
        for (int i = 0; i < t->ndim; i++)
            v->shape[i] = t->shape[i];
    }
}

int qs_graph_add_node(qs_graph *g, const char *op, const char *name, int nin, const int *in, int nout,
                      const int *out)
{
    if (g->nnodes == g->cap_nodes) {
        int cap = g->cap_nodes ? 2 * g->cap_nodes : 64;
        qs_node *n = realloc(g->nodes, cap * sizeof *n);
        if (!n)
            return -1;
        g->nodes = n;
        g->cap_nodes = cap;
    }
    qs_node *n = &g->nodes[g->nnodes];
    memset(n, 0, sizeof *n);
    n->op = strdup(op);
    n->name = strdup(name ? name : "");
    n->domain = strdup("");
    n->in = malloc((nin + 1) * sizeof *n->in);
    n->out = malloc((nout + 1) * sizeof *n->out);
    if (!n->op || !n->name || !n->domain || !n->in || !n->out) {
        node_clear(n);
        return -1;
    }
    n->nin = nin;
    n->nout = nout;
    if (nin)
        memcpy(n->in, in, nin * sizeof *in);
    if (nout)
        memcpy(n->out, out, nout * sizeof *out);
    for (int i = 0; i < nout; i++)
        if (out[i] >= 0)
            g->values[out[i]].producer = g->nnodes;
    return g->nnodes++;
}

static qs_attr *attr_slot(qs_node *n, const char *name)
{
    for (int i = 0; i < n->nattr; i++)
        if (!strcmp(n->attr[i].name, name)) {
            attr_clear(&n->attr[i]);
            n->attr[i].name = strdup(name);
            return n->attr[i].name ? &n->attr[i] : NULL;
        }
    qs_attr *a = realloc(n->attr, (n->nattr + 1) * sizeof *a);
    if (!a)
        return NULL;
    n->attr = a;
    a = &n->attr[n->nattr];
    memset(a, 0, sizeof *a);
    if (!(a->name = strdup(name)))
        return NULL;
    n->nattr++;
    return a;
}

int qs_node_set_int(qs_node *n, const char *name, int64_t v)
{
    qs_attr *a = attr_slot(n, name);
    if (!a)
        return QS_ENOMEM;
    a->type = QS_ATTR_INT;
    a->i = v;
    return 0;
}

int qs_node_set_float(qs_node *n, const char *name, float v)
{
    qs_attr *a = attr_slot(n, name);
    if (!a)
        return QS_ENOMEM;
    a->type = QS_ATTR_FLOAT;
    a->f = v;
    return 0;
}

int qs_node_set_string(qs_node *n, const char *name, const char *v)
{
    qs_attr *a = attr_slot(n, name);
    if (!a || !(a->s = strdup(v)))
        return QS_ENOMEM;
    a->type = QS_ATTR_STRING;
    return 0;
}

int qs_node_set_ints(qs_node *n, const char *name, int count, const int64_t *v)
{
    qs_attr *a = attr_slot(n, name);
    if (!a || !(a->ints = malloc((count + 1) * sizeof *v)))
        return QS_ENOMEM;
    a->type = QS_ATTR_INTS;
    a->n = count;
    if (count)
        memcpy(a->ints, v, count * sizeof *v);
    return 0;
}

int qs_node_set_floats(qs_node *n, const char *name, int count, const float *v)
{
    qs_attr *a = attr_slot(n, name);
    if (!a || !(a->floats = malloc((count + 1) * sizeof *v)))
        return QS_ENOMEM;
    a->type = QS_ATTR_FLOATS;
    a->n = count;
    if (count)
        memcpy(a->floats, v, count * sizeof *v);
    return 0;
}

int qs_node_set_domain(qs_node *n, const char *domain)
{
    char *d = strdup(domain ? domain : "");
    if (!d)
        return QS_ENOMEM;
    free(n->domain);
    n->domain = d;
    return 0;
}

const qs_attr *qs_node_attr(const qs_node *n, const char *name)
{
    for (int i = 0; i < n->nattr; i++)
        if (!strcmp(n->attr[i].name, name))
            return &n->attr[i];
    return NULL;
}

int64_t qs_node_int(const qs_node *n, const char *name, int64_t dflt)
{
    const qs_attr *a = qs_node_attr(n, name);
    return a && a->type == QS_ATTR_INT ? a->i : dflt;
}

float qs_node_float(const qs_node *n, const char *name, float dflt)
{
    const qs_attr *a = qs_node_attr(n, name);
    if (!a)
        return dflt;
    return a->type == QS_ATTR_FLOAT ? a->f : a->type == QS_ATTR_INT ? (float)a->i : dflt;
}

const char *qs_node_string(const qs_node *n, const char *name, const char *dflt)
{
    const qs_attr *a = qs_node_attr(n, name);
    return a && a->type == QS_ATTR_STRING && a->s ? a->s : dflt;
}

int qs_node_ints(const qs_node *n, const char *name, const int64_t **v)
{
    const qs_attr *a = qs_node_attr(n, name);
    if (!a || a->type != QS_ATTR_INTS) {
        *v = NULL;
        return 0;
    }
    *v = a->ints;
    return a->n;
}

int qs_node_floats(const qs_node *n, const char *name, const float **v)
{
    const qs_attr *a = qs_node_attr(n, name);
    if (!a || a->type != QS_ATTR_FLOATS) {
        *v = NULL;
        return 0;
    }
    *v = a->floats;
    return a->n;
}

int64_t qs_graph_opset(const qs_graph *g, const char *domain)
{
    if (!domain || !strcmp(domain, "ai.onnx"))
        domain = "";
    for (int i = 0; i < g->nopsets; i++) {
        const char *d = g->opsets[i].domain ? g->opsets[i].domain : "";
        if (!strcmp(d, "ai.onnx"))
            d = "";
        if (!strcmp(d, domain))
            return g->opsets[i].version;
    }
    return 0;
}

int qs_graph_set_opset(qs_graph *g, const char *domain, int64_t version)
{
    if (!domain)
        domain = "";
    for (int i = 0; i < g->nopsets; i++)
        if (!strcmp(g->opsets[i].domain, domain)) {
            g->opsets[i].version = version;
            return 0;
        }
    qs_opset *o = realloc(g->opsets, (g->nopsets + 1) * sizeof *o);
    if (!o)
        return QS_ENOMEM;
    g->opsets = o;
    if (!(o[g->nopsets].domain = strdup(domain)))
        return QS_ENOMEM;
    o[g->nopsets++].version = version;
    return 0;
}

int qs_graph_consumers(const qs_graph *g, int v, int *ids, int max)
{
    int k = 0;
    for (int i = 0; i < g->nnodes; i++)
        for (int j = 0; j < g->nodes[i].nin; j++)
            if (g->nodes[i].in[j] == v) {
                if (k < max)
                    ids[k] = i;
                k++;
                break;
            }
    return k;
}

int qs_graph_is_output(const qs_graph *g, int v)
{
    for (int i = 0; i < g->noutputs; i++)
        if (g->outputs[i] == v)
            return 1;
    return 0;
}

int qs_graph_count_reads(const qs_graph *g, int v)
{
    int k = 0;
    for (int i = 0; i < g->nnodes; i++)
        for (int j = 0; j < g->nodes[i].nin; j++)
            k += g->nodes[i].in[j] == v;
    return k + qs_graph_is_output(g, v);
}

int qs_node_is_op(const qs_node *n, const char *op)
{
    return (!n->domain || !n->domain[0]) && !strcmp(n->op, op);
}

int qs_node_is_fakequant(const qs_node *n)
{
    return n->domain && !strcmp(n->domain, "quantd") && !strcmp(n->op, "FakeQuant");
}

const qs_tensor *qs_graph_const_of(const qs_graph *g, int v)
{
    if (v < 0)
        return NULL;
    if (g->values[v].init)
        return g->values[v].init;
    int p = g->values[v].producer;
    if (p >= 0 && qs_node_is_op(&g->nodes[p], "Constant") && g->nodes[p].nin == 0) {
        const qs_attr *a = qs_node_attr(&g->nodes[p], "value");
        return a && a->type == QS_ATTR_TENSOR ? a->t : NULL;
    }
    return NULL;
}

int qs_graph_promote_constants(qs_graph *g)
{
    char *drop = calloc((size_t)g->nnodes + 1, 1);
    if (!drop)
        return -1;
    int n = 0;
    for (int i = 0; i < g->nnodes; i++) {
        qs_node *nd = &g->nodes[i];
        if (!qs_node_is_op(nd, "Constant") || nd->nin != 0 || nd->nout != 1 || nd->out[0] < 0)
            continue;
        int v = nd->out[0];
        qs_attr *a = (qs_attr *)qs_node_attr(nd, "value");
        /* a graph output stays a node: an output that is an initializer is not what the model said */
        if (!a || a->type != QS_ATTR_TENSOR || !a->t || g->values[v].init || qs_graph_is_output(g, v))
            continue;
        qs_value *val = &g->values[v];
        qs_graph_set_init_steal(g, v, a->t);
        a->t = NULL;
        val->dtype = val->init->dtype;
        val->ndim = val->init->ndim;
        for (int d = 0; d < QS_MAX_DIMS; d++) {
            val->shape[d] = d < val->ndim ? val->init->shape[d] : 0;
            free(val->dim_param[d]);
            val->dim_param[d] = NULL;
        }
        drop[i] = 1;
        n++;
    }
    if (n)
        qs_graph_remove_nodes(g, drop);
    free(drop);
    return n;
}

int qs_graph_skip_identity(const qs_graph *g, int v)
{
    /* bounded: a malformed graph may loop before toposort rejects it */
    for (int hops = 0; v >= 0 && hops < 16 && !g->values[v].init; hops++) {
        int p = g->values[v].producer;
        if (p < 0 || !qs_node_is_op(&g->nodes[p], "Identity") || g->nodes[p].nin != 1)
            break;
        v = g->nodes[p].in[0];
    }
    return v;
}

const char *qs_node_label(const qs_graph *g, int node, char *buf, int n)
{
    const qs_node *nd = &g->nodes[node];
    if (nd->name && nd->name[0])
        snprintf(buf, n, "%s '%s'", nd->op, nd->name);
    else
        snprintf(buf, n, "%s (node %d)", nd->op, node);
    return buf;
}

int qs_graph_toposort(qs_graph *g, qs_err *e)
{
    /* Kahn's algorithm, always taking the lowest-numbered ready node, so a graph already in order
     * keeps its order. */
    int nn = g->nnodes, nv = g->nvalues;
    int *producer = malloc((nv + 1) * sizeof *producer);
    int *missing = calloc(nn + 1, sizeof *missing);
    int *order = malloc((nn + 1) * sizeof *order);
    char *done = calloc(nn + 1, 1), *avail = calloc(nv + 1, 1);
    int rc = 0;
    if (!producer || !missing || !order || !done || !avail) {
        rc = qs_error(e, QS_ENOMEM, "out of memory sorting the graph");
        goto out;
    }
    for (int v = 0; v < nv; v++)
        producer[v] = -1;
    for (int i = 0; i < nn; i++)
        for (int j = 0; j < g->nodes[i].nout; j++) {
            int v = g->nodes[i].out[j];
            if (v < 0)
                continue;
            if (producer[v] >= 0) {
                char b[256];
                rc = qs_error(e, QS_EINVAL, "value '%s' is produced twice (second time by %s)",
                              g->values[v].name, qs_node_label(g, i, b, sizeof b));
                goto out;
            }
            producer[v] = i;
        }
    for (int v = 0; v < nv; v++)
        avail[v] = producer[v] < 0;   /* inputs, initializers */
    for (int i = 0; i < nn; i++)
        for (int j = 0; j < g->nodes[i].nin; j++) {
            int v = g->nodes[i].in[j];
            if (v < 0)
                continue;
            if (producer[v] < 0 && !g->values[v].init) {
                int is_input = 0;
                for (int k = 0; k < g->ninputs; k++)
                    is_input |= g->inputs[k] == v;
                if (!is_input) {
                    char b[256];
                    rc = qs_error(e, QS_EINVAL, "%s reads '%s', which is neither a graph input, an "
                                  "initializer nor any node's output", qs_node_label(g, i, b, sizeof b),
                                  g->values[v].name);
                    goto out;
                }
            }
        }
    int k = 0;
    while (k < nn) {
        int progressed = 0;
        for (int i = 0; i < nn; i++) {
            if (done[i])
                continue;
            int ready = 1;
            for (int j = 0; j < g->nodes[i].nin && ready; j++)
                ready = g->nodes[i].in[j] < 0 || avail[g->nodes[i].in[j]];
            if (!ready)
                continue;
            done[i] = 1;
            order[k++] = i;
            for (int j = 0; j < g->nodes[i].nout; j++)
                if (g->nodes[i].out[j] >= 0)
                    avail[g->nodes[i].out[j]] = 1;
            progressed = 1;
            break;   /* restart from the lowest id to keep the existing order */
        }
        if (!progressed) {
            for (int i = 0; i < nn; i++)
                if (!done[i]) {
                    char b[256];
                    rc = qs_error(e, QS_EINVAL, "the graph has a cycle through %s",
                                  qs_node_label(g, i, b, sizeof b));
                    goto out;
                }
        }
    }
    qs_node *sorted = malloc((nn + 1) * sizeof *sorted);
    if (!sorted) {
        rc = qs_error(e, QS_ENOMEM, "out of memory sorting the graph");
        goto out;
    }
    for (int i = 0; i < nn; i++)
        sorted[i] = g->nodes[order[i]];
    if (nn)   /* an empty graph has no node array: memcpy from or to NULL is undefined even for 0 bytes */
        memcpy(g->nodes, sorted, nn * sizeof *sorted);
    free(sorted);
    for (int v = 0; v < nv; v++)
        g->values[v].producer = -1;
    for (int i = 0; i < nn; i++)
        for (int j = 0; j < g->nodes[i].nout; j++)
            if (g->nodes[i].out[j] >= 0)
                g->values[g->nodes[i].out[j]].producer = i;
out:
    free(producer);
    free(missing);
    free(order);
    free(done);
    free(avail);
    return rc;
}

void qs_graph_remove_nodes(qs_graph *g, const char *drop)
{
    int k = 0;
    for (int i = 0; i < g->nnodes; i++) {
        if (drop[i]) {
            node_clear(&g->nodes[i]);
            continue;
        }
        g->nodes[k++] = g->nodes[i];
    }
    g->nnodes = k;
    for (int v = 0; v < g->nvalues; v++)
        g->values[v].producer = -1;
    for (int i = 0; i < g->nnodes; i++)
        for (int j = 0; j < g->nodes[i].nout; j++)
            if (g->nodes[i].out[j] >= 0)
                g->values[g->nodes[i].out[j]].producer = i;
}
