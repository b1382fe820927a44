/* The ptq job (paper §3.5, Fig. 8): the PTQ stages of engine/quant/ptq.c in order (each optional
 * step checked against a held-out score when config.check_steps, ptq_check.c), with §3.7's
 * closed loop (engine/quant/target_drop.c) when the config sets target_drop. */
#include "pipeline/drivers.h"

#include "quant/analyze.h"
#include "quant/ptq.h"

int qs_pipeline_ptq(const qs_pipeline_io *io, json_t **result, qs_err *e)
{
    *result = NULL;
    QS_NEED_MODEL(io, e);
    qs_ptq p;
    json_t *res = json_object();
    int rc = qs_ptq_open(&p, io, e);
    if (rc == 0 && !p.calib.d)
        rc = qs_error(e, QS_EINVAL, "PTQ needs calibration data");
    if (rc == 0)   /* the standard preset keeps only the steps that do not lower a held-out score */
        rc = p.cfg.check_steps ? qs_ptq_prepare_checked(&p, e) : qs_ptq_prepare(&p, e);
    if (rc == 0)
        rc = qs_ptq_accuracy(&p, res, e);
    if (rc == 0 && p.cfg.target_drop >= 0)   /* §3.7's closed loop: keep sensitive groups wider */
        rc = qs_ptq_target_drop(&p, p.cfg.target_drop, res, e);
    if (rc == 0)
        rc = qs_ptq_write(&p, "ptq", res, e);
    if (rc == 0 && io->outdir)
        json_object_set_new(res, "outdir", json_string(io->outdir));
    if (rc < 0)
        json_decref(res);
    else
        *result = res;
    qs_ptq_close(&p);
    return rc;
}
