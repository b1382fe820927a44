/* quant info: a model's inputs, outputs, ops, parameters and compute per pass. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <quant/quant.h>

#include "cli/cli.h"

static json_t *shape_json(const qs_graph *g, int v)
{
    int ndim = qs_graph_value_ndim(g, v);
    if (ndim < 0)
        return json_null();
    json_t *a = json_array();
    for (int d = 0; d < ndim; d++) {
        const char *param = qs_graph_value_dim_param(g, v, d);
        int64_t dim = qs_graph_value_dim(g, v, d);
        json_array_append_new(a, param ? json_string(param) : dim >= 0 ? json_integer(dim) : json_null());
    }
    return a;
}

static char *shape_text(const qs_graph *g, int v, char *buf, size_t n)
{
    int ndim = qs_graph_value_ndim(g, v);
    if (ndim < 0) {
        snprintf(buf, n, "unknown");
        return buf;
    }
    size_t k = snprintf(buf, n, "[");
    for (int d = 0; d < ndim && k < n; d++) {
        const char *param = qs_graph_value_dim_param(g, v, d);
        int64_t dim = qs_graph_value_dim(g, v, d);
        if (param)
            k += snprintf(buf + k, n - k, d ? ", %s" : "%s", param);
        else if (dim >= 0)
            k += snprintf(buf + k, n - k, d ? ", %lld" : "%lld", (long long)dim);
        else
            k += snprintf(buf + k, n - k, d ? ", ?" : "?");
    }
    if (k < n)
        snprintf(buf + k, n - k, "]");
    return buf;
}

/* 1234567 → "1.23 M" */
static void si(char *buf, size_t n, double v)
{
    const char *unit[] = {"", " K", " M", " G", " T", " P"};
    int u = 0;
    while (fabs(v) >= 1000 && u < 5) {
        v /= 1000;
        u++;
    }
    snprintf(buf, n, u ? "%.3g%s" : "%.0f%s", v, unit[u]);
}

/* Multiply-accumulates of the compute-heavy ops per pass of the plan. */
static double count_macs(const qs_graph *g, const qs_exec *x)
{
    double macs = 0;
    for (int i = 0; i < qs_graph_node_count(g); i++)
        macs += qs_exec_node_macs(x, i);
    return macs;
}

struct op_count { const char *op; int n; };

static int cmp_count(const void *a, const void *b)
{
    const struct op_count *x = a, *y = b;
    return x->n != y->n ? y->n - x->n : strcmp(x->op, y->op);
}

int cmd_info(const command *c, int argc, char **argv)
{
    int json = 0, npos;
    const char *pos[1], *shapes[CLI_OPT_MAX];
    int nshapes = 0;
    const opt opts[] = {{.name = "--json", .flag = &json}, {.name = "--input-shape", .val = shapes, .count = &nshapes},
                        {.name = NULL}};
    int rc = parse_args(c, argc, argv, opts, pos, 1, &npos);
    if (rc != PARSED)
        return rc;
    if (npos < 1)
        return usage_error(c, "missing MODEL");
    qs_graph *g = cli_load_model(c, pos[0]);
    if (!g)
        return EXIT_FAIL;
    if (cli_bind_shapes(c, g, shapes, nshapes) != EXIT_OK) {
        qs_graph_free(g);
        return EXIT_FAIL;
    }

    /* op counts, most frequent first */
    int nnodes = qs_graph_node_count(g);
    struct op_count *ops = calloc(nnodes + 1, sizeof *ops);
    int nops = 0;
    for (int i = 0; i < nnodes; i++) {
        const char *op = qs_graph_node_op(g, i);
        int k = 0;
        while (k < nops && strcmp(ops[k].op, op))
            k++;
        if (k == nops)
            ops[nops++].op = op;
        ops[k].n++;
    }
    qsort(ops, nops, sizeof *ops, cmp_count);

    /* parameters: elements of float initializers (int64 shape constants are not parameters) */
    int64_t params = qs_graph_param_count(g);

    qs_err e = {0};
    int supported = qs_exec_check(g, &e) == 0;
    char unsupported[QS_ERRMSG_MAX];
    snprintf(unsupported, sizeof unsupported, "%s", supported ? "" : e.msg);

    /* FLOPs at batch 1 (per sample for a model with a fixed larger batch), from a plan's shapes */
    double macs = -1;
    char why[QS_ERRMSG_MAX] = "";
    if (supported) {
        qs_exec *x = qs_exec_new(g, QS_EXEC_INFER, &e);
        if (x && qs_exec_plan(x, 1, &e) == 0)
            macs = count_macs(g, x) / (qs_exec_batch(x) > 0 ? qs_exec_batch(x) : 1);
        else
            snprintf(why, sizeof why, "%s", e.msg);
        qs_exec_free(x);
    } else {
        snprintf(why, sizeof why, "the model has unsupported ops");
    }

    if (json) {
        json_t *j = json_object(), *opsets = json_object(), *ins = json_array(), *outs = json_array(),
               *counts = json_object(), *uns = json_array();
        json_object_set_new(j, "model", json_string(pos[0]));
        json_object_set_new(j, "ir_version", json_integer(qs_graph_ir_version(g)));
        json_object_set_new(j, "producer", json_string(qs_graph_producer_name(g) ? qs_graph_producer_name(g) : ""));
        json_object_set_new(j, "opset", json_integer(qs_graph_opset(g, "")));
        for (int i = 0; i < qs_graph_opset_count(g); i++)
            json_object_set_new(opsets, qs_graph_opset_domain(g, i), json_integer(qs_graph_opset_version(g, i)));
        json_object_set_new(j, "opsets", opsets);
        for (int k = 0; k < 2; k++) {
            int n = k ? qs_graph_output_count(g) : qs_graph_input_count(g);
            for (int i = 0; i < n; i++) {
                int v = k ? qs_graph_output(g, i) : qs_graph_input(g, i);
                json_array_append_new(k ? outs : ins,
                                      json_pack("{s:s, s:o, s:s}", "name", qs_graph_value_name(g, v), "shape",
                                                shape_json(g, v), "dtype", qs_dtype_name(qs_graph_value_dtype(g, v))));
            }
        }
        json_object_set_new(j, "inputs", ins);
        json_object_set_new(j, "outputs", outs);
        json_object_set_new(j, "nodes", json_integer(nnodes));
        for (int k = 0; k < nops; k++)
            json_object_set_new(counts, ops[k].op, json_integer(ops[k].n));
        json_object_set_new(j, "ops", counts);
        json_object_set_new(j, "parameters", json_integer(params));
        json_object_set_new(j, "flops", macs >= 0 ? json_real(2 * macs) : json_null());
        json_object_set_new(j, "macs", macs >= 0 ? json_real(macs) : json_null());
        /* one entry per problem: the check's indented lines, or its whole message */
        for (char *line = unsupported, *nl; *line; line = nl ? nl + 1 : line + strlen(line)) {
            nl = strchr(line, '\n');
            size_t len = nl ? (size_t)(nl - line) : strlen(line), lead = strspn(line, " \t");
            if (lead && lead < len)
                json_array_append_new(uns, json_stringn(line + lead, len - lead));
        }
        if (!supported && !json_array_size(uns))
            json_array_append_new(uns, json_string(unsupported));
        json_object_set_new(j, "unsupported", uns);
        print_json(j);
    } else {
        char s[256];
        printf("model        %s\n", pos[0]);
        const char *producer = qs_graph_producer_name(g), *producer_version = qs_graph_producer_version(g);
        if (producer && producer[0])
            printf("producer     %s %s\n", producer, producer_version ? producer_version : "");
        printf("ir_version   %lld\nopset        %lld", (long long)qs_graph_ir_version(g),
               (long long)qs_graph_opset(g, ""));
        for (int i = 0; i < qs_graph_opset_count(g); i++)
            if (qs_graph_opset_domain(g, i)[0])
                printf(", %s %lld", qs_graph_opset_domain(g, i), (long long)qs_graph_opset_version(g, i));
        printf("\n");
        for (int k = 0; k < 2; k++) {
            int n = k ? qs_graph_output_count(g) : qs_graph_input_count(g);
            printf("%s\n", k ? "outputs" : "inputs");
            for (int i = 0; i < n; i++) {
                int v = k ? qs_graph_output(g, i) : qs_graph_input(g, i);
                printf("  %-16s %-8s %s\n", qs_graph_value_name(g, v), qs_dtype_name(qs_graph_value_dtype(g, v)),
                       shape_text(g, v, s, sizeof s));
            }
        }
        printf("nodes        %d\nops          ", nnodes);
        for (int k = 0; k < nops; k++)
            printf(k ? ", %s %d" : "%s %d", ops[k].op, ops[k].n);
        si(s, sizeof s, (double)params);
        printf(params >= 1000 ? "\nparameters   %lld (%s)\n" : "\nparameters   %lld\n", (long long)params, s);
        if (macs >= 0) {
            char m[64];
            si(s, sizeof s, 2 * macs);
            si(m, sizeof m, macs);
            printf("FLOPs        %s per sample (2 x %s MACs of Conv, Gemm, MatMul)\n", s, m);
        } else {
            printf("FLOPs        unknown: %s\n", why);
        }
        if (supported)
            printf("unsupported  none\n");
        else {
            printf("unsupported\n");
            for (char *line = unsupported, *nl; *line; line = nl ? nl + 1 : line + strlen(line)) {
                nl = strchr(line, '\n');
                size_t lead = strspn(line, " \t"), len = nl ? (size_t)(nl - line) : strlen(line);
                printf("  %.*s\n", (int)(len - lead), line + lead);
            }
        }
    }
    free(ops);
    qs_graph_free(g);
    return EXIT_OK;
}
