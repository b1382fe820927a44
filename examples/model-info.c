/* model-info: what a program built on libquant alone can do with a model. Loads an ONNX file,
 * prints its inputs and outputs, node and parameter counts, then runs it once on zeros (batch 1,
 * symbolic dims taken as 1) and prints each output's shape and first value.
 *
 *   cc model-info.c $(pkg-config --cflags --libs quant) -o model-info
 *   ./model-info model.onnx
 *
 * It includes only <quant/quant.h>: the graph is an opaque handle read through accessors. */
#include <stdio.h>
#include <stdlib.h>

#include <quant/quant.h>

static void print_value(const qs_graph *g, int v)
{
    printf("  %s %s [", qs_graph_value_name(g, v), qs_dtype_name(qs_graph_value_dtype(g, v)));
    for (int d = 0; d < qs_graph_value_ndim(g, v); d++) {
        const char *param = qs_graph_value_dim_param(g, v, d);
        int64_t dim = qs_graph_value_dim(g, v, d);
        if (param)
            printf(d ? ", %s" : "%s", param);
        else if (dim >= 0)
            printf(d ? ", %lld" : "%lld", (long long)dim);
        else
            printf(d ? ", ?" : "?");
    }
    printf("]\n");
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: model-info MODEL.onnx\n");
        return 2;
    }
    qs_err e = {0};
    qs_graph *g = NULL;
    if (qs_onnx_load(argv[1], &g, &e) < 0) {
        fprintf(stderr, "model-info: %s\n", e.msg);
        return 1;
    }
    printf("libquant %s\n", qs_version());
    printf("inputs %d\n", qs_graph_input_count(g));
    for (int i = 0; i < qs_graph_input_count(g); i++)
        print_value(g, qs_graph_input(g, i));
    printf("outputs %d\n", qs_graph_output_count(g));
    for (int i = 0; i < qs_graph_output_count(g); i++)
        print_value(g, qs_graph_output(g, i));
    printf("nodes %d\nparameters %lld\n", qs_graph_node_count(g), (long long)qs_graph_param_count(g));

    /* one forward pass on zeros: the runner takes N rows per input (here N = 1) */
    int nin = qs_graph_input_count(g), nout = qs_graph_output_count(g), rc = 1;
    qs_tensor **x = calloc(nin + 1, sizeof *x), **y = calloc(nout + 1, sizeof *y);
    qs_runner *r = qs_runner_new(g, 1, &e);
    if (!x || !y || !r)
        goto out;
    for (int i = 0; i < nin; i++) {
        int v = qs_graph_input(g, i), ndim = qs_graph_value_ndim(g, v);
        int64_t shape[QS_MAX_DIMS];
        if (ndim < 1 || ndim > QS_MAX_DIMS) {
            qs_error(&e, QS_EUNSUPPORTED, "input %s has no known shape", qs_graph_value_name(g, v));
            goto out;
        }
        for (int d = 0; d < ndim; d++)
            shape[d] = d == 0 || qs_graph_value_dim(g, v, d) < 0 ? 1 : qs_graph_value_dim(g, v, d);
        qs_dtype t = qs_graph_value_dtype(g, v);
        if (!(x[i] = qs_tensor_new(t ? t : QS_F32, ndim, shape)))   /* zero-filled */
            goto out;
    }
    if (qs_runner_run(r, (const qs_tensor *const *)x, y, NULL, NULL, NULL, &e) < 0)
        goto out;
    for (int i = 0; i < nout; i++) {
        char s[128];
        printf("output %s %s = %g …\n", qs_graph_value_name(g, qs_graph_output(g, i)),
               qs_shape_str(y[i]->ndim, y[i]->shape, s, sizeof s), qs_numel(y[i]) ? qs_get_f64(y[i], 0) : 0.0);
    }
    rc = 0;
out:
    if (rc)
        fprintf(stderr, "model-info: %s\n", e.msg[0] ? e.msg : "out of memory");
    for (int i = 0; x && i < nin; i++)
        qs_tensor_free(x[i]);
    for (int i = 0; y && i < nout; i++)
        qs_tensor_free(y[i]);
    free(x);
    free(y);
    qs_runner_free(r);
    qs_graph_free(g);
    return rc;
}
