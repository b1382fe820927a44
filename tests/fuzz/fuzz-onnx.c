/* fuzz-onnx: bytes as an ONNX model, through what an upload does with one — import, the op check —
 * and then what `quant info` and every job do first: a plan at batch 1 (shapes, folding of the
 * values known at plan time). Kernels run only on the folded values, which the 64 MB tensor limit
 * keeps small; no forward pass. */
#include <stddef.h>
#include <stdint.h>

#include "exec.h"
#include "onnx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    qs_set_max_tensor_bytes((size_t)64 << 20);
    qs_err e = { 0 };
    qs_graph *g = NULL;
    /* no base dir: external data is looked up in the current directory, where there is none */
    if (qs_onnx_load_buffer(data, size, "/nonexistent", &g, &e) < 0)
        return 0;
    if (qs_exec_check(g, &e) == 0) {
        qs_exec *x = qs_exec_new(g, QS_EXEC_INFER, &e);
        if (x)
            qs_exec_plan(x, 1, &e);
        qs_exec_free(x);
    }
    qs_graph_free(g);
    return 0;
}
