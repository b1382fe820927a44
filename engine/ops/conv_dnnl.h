/* What conv_dnnl.c (Conv forward on oneDNN) shares with conv_dnnl_bwd.c (its backward): the engine
 * and the reorder helpers. Internal to engine/ops; conv_impl.h has the op-facing functions. */
#ifndef QS_CONV_DNNL_H
#define QS_CONV_DNNL_H

#include <oneapi/dnnl/dnnl.h>
#include <stddef.h>

/* the CPU engine, or NULL when oneDNN is disabled (QUANT_CONV_DNNL=0, conv_dnnl_enable(0)) or absent */
dnnl_engine_t conv_dnnl_engine(void);
/* a reorder from one layout to another, or *out = NULL (and 0) when they are the same; -1: failed
 * (also when it would need a scratchpad: reorders run on any worker without one) */
int conv_dnnl_reorder(const dnnl_memory_desc_t *from, const dnnl_memory_desc_t *to, dnnl_primitive_t *out);
/* bytes of a buffer in layout `to` when it differs from `from`, else 0 (the plain buffer is used) */
size_t conv_dnnl_buf_bytes(const dnnl_memory_desc_t *from, const dnnl_memory_desc_t *to);
/* a memory object over buf (not owned), NULL on failure */
dnnl_memory_t conv_dnnl_mem(const dnnl_memory_desc_t *md, const void *buf);
/* from → to through reorder r; 0 or -1 */
int conv_dnnl_run_reorder(dnnl_primitive_t r, dnnl_stream_t s, const dnnl_memory_desc_t *fmd, const void *from,
                          const dnnl_memory_desc_t *tmd, void *to);
/* destroys p unless NULL */
static inline void conv_dnnl_release(dnnl_primitive_t p)
{
    if (p)
        dnnl_primitive_destroy(p);
}
/* a stream for the calling pool worker, oneDNN on one OpenMP thread (the backward splits its chunks
 * over the pool); NULL on failure */
dnnl_stream_t conv_dnnl_stream(void);

#endif
