/* Conv forward on several batch items at once, for small output planes (the late layers of image
 * networks: 14x14, 7x7 positions).
 *
 * The per-item path multiplies W [M, K] by one item's columns [K, yvol]: with yvol = 49 OpenBLAS
 * packs all of W (up to 2048 x 4608 floats in ResNet-50) for a product that is only 49 columns
 * wide, so packing costs nearly as much as the multiply. Here a worker gathers the columns of nb
 * items side by side ([K, nb·yvol]: im2col per item, or the input planes themselves for a 1x1
 * convolution), multiplies once, and scatters the [M, nb·yvol] result back to the items' planes,
 * adding bias, residual and clamp there. The copies are O(K·yvol) per item against O(M·K·yvol)
 * multiply-adds. Group convolutions and the depthwise path keep their own loops. */
#include "ops/conv_impl.h"

#include <string.h>

#define BATCH_COLS 512   /* target width of the batched product, in output positions */

static int64_t workers_for(const qs_kctx *c, const conv_p *p)
{
    int64_t t = c->nthreads > 1 ? c->nthreads : 1;
    return t < p->N ? t : p->N;
}

int64_t conv_batch_items(const qs_kctx *c, const conv_p *p)
{
    if (p->group != 1 || p->path == PATH_DW || p->N < 2 || p->yvol * 2 > BATCH_COLS)
        return 0;
    int64_t nb = (BATCH_COLS + p->yvol - 1) / p->yvol, w = workers_for(c, p);
    int64_t even = (p->N + w - 1) / w;   /* at least one block per worker */
    if (nb > even)
        nb = even;
    return nb >= 2 ? nb : 0;
}

/* floats of one worker's slice: one item's columns (im2col only), the gathered columns, the product */
static int64_t slice_floats(const conv_p *p, int64_t nb)
{
    int64_t K = p->Cg * p->kvol;
    return (p->path == PATH_GEMM ? K * p->yvol : 0) + (K + p->M) * nb * p->yvol;
}

size_t conv_batch_scratch(const qs_kctx *c, const conv_p *p)
{
    int64_t nb = conv_batch_items(c, p);
    return nb ? (size_t)workers_for(c, p) * (size_t)slice_floats(p, nb) * sizeof(float) : 0;
}

typedef struct {
    const conv_p *p;
    const float *x, *w, *b;
    float *y, *scratch;
    int64_t nb, slice;
    clamp_t clamp;
} batch_job;

static void batch_range(void *arg, int64_t b0, int64_t b1, int worker)
{
    const batch_job *j = arg;
    const conv_p *p = j->p;
    const int64_t K = p->Cg * p->kvol, yv = p->yvol, M = p->M;
    float *one = j->scratch + worker * j->slice, *col = one + (p->path == PATH_GEMM ? K * yv : 0);
    float *prod = col + K * j->nb * yv;
    for (int64_t blk = b0; blk < b1; blk++) {
        int64_t n0 = blk * j->nb, cnt = p->N - n0 < j->nb ? p->N - n0 : j->nb, cols = cnt * yv;
        for (int64_t i = 0; i < cnt; i++) {   /* gather: item i's columns at column i·yvol */
            const float *xi = j->x + (n0 + i) * p->C * p->xvol, *src = xi;
            if (p->path == PATH_GEMM) {
                qs_im2col(&p->g, p->C, xi, one, NULL, 1);
                src = one;
            }
            for (int64_t r = 0; r < K; r++)
                memcpy(col + r * cols + i * yv, src + r * yv, yv * sizeof(float));
        }
        qs_sgemm(0, 0, M, cols, K, 1.f, j->w, K, col, cols, 0.f, prod, cols);
        for (int64_t i = 0; i < cnt; i++)     /* scatter, with the epilogue per plane */
            for (int64_t m = 0; m < M; m++) {
                int64_t off = ((n0 + i) * M + m) * yv;
                memcpy(j->y + off, prod + m * cols + i * yv, yv * sizeof(float));
                conv_epilogue(j->y + off, j->b ? j->b + m : NULL, j->clamp.res ? j->clamp.res + off : NULL, yv,
                              j->clamp);
            }
    }
}

int conv_batch_forward(qs_kctx *c, const conv_p *p, const float *x, const float *w, const float *b, float *y,
                       clamp_t clamp)
{
    int64_t nb = conv_batch_items(c, p);
    int workers = (int)workers_for(c, p), rc;
    batch_job j = { p, x, w, b, y, c->scratch, nb, slice_floats(p, nb), clamp };
    if ((rc = conv_scratch_slices(c, j.slice * sizeof(float), workers, &workers)) < 0)
        return rc;
    qs_threadpool_for(c->pool, workers, (p->N + nb - 1) / nb, 1, batch_range, &j);
    return 0;
}
