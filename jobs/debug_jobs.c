/* Test-only job types (quantd's debug_jobs option); see debug_jobs.h. */
#include "jobs/debug_jobs.h"

#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* "sleep": waits config.seconds in 50 ms steps, reporting progress and polling the abort flag
 * like a pipeline does, keeps a checkpoint (the step reached) in its output's checkpoint/ folder
 * and resumes from io->resume's, and writes two artifacts. With config.fail it fails at the end.
 * It lets the service's tests exercise every job path without depending on the engine. */
static int debug_sleep(const qs_pipeline_io *io, json_t **result, qs_err *e)
{
    json_t *c = io->config;
    double seconds = json_number_value(json_object_get(c, "seconds"));
    if (!json_object_get(c, "seconds"))
        seconds = 1;
    int fail = json_is_true(json_object_get(c, "fail"));
    json_int_t nbytes = json_integer_value(json_object_get(c, "artifact_bytes"));
    if (!json_object_get(c, "artifact_bytes"))
        nbytes = 100000;
    int steps = (int)(seconds / 0.05 + 0.5);
    if (steps < 1)
        steps = 1;
    int start = 0;
    char path[PATH_MAX];
    if (io->resume) {
        snprintf(path, sizeof path, "%s/checkpoint/step", io->resume);
        FILE *f = fopen(path, "r");
        if (f) {
            if (fscanf(f, "%d", &start) != 1 || start < 0 || start > steps)
                start = 0;
            fclose(f);
        }
    }
    snprintf(path, sizeof path, "%s/checkpoint", io->outdir);
    mkdir(path, 0750);
    if (start && io->event) {
        char msg[128];
        snprintf(msg, sizeof msg, "resuming from step %d of %d", start, steps);
        io->event(io->ud, &(qs_event){ .type = QS_EV_LOG, .level = "info", .message = msg });
    }
    for (int i = start; i < steps; i++) {
        if (io->abort && atomic_load(io->abort))
            return qs_error(e, QS_EABORTED, "aborted at step %d of %d", i, steps);
        struct timespec ts = { 0, 50 * 1000 * 1000 };
        nanosleep(&ts, NULL);
        snprintf(path, sizeof path, "%s/checkpoint/step", io->outdir);
        FILE *f = fopen(path, "w");
        if (f) {
            fprintf(f, "%d\n", i + 1);
            fclose(f);
        }
        if (io->event)
            io->event(io->ud, &(qs_event){ .type = QS_EV_PROGRESS, .stage = "sleep", .done = i + 1,
                                           .total = steps, .eta_s = (steps - i - 1) * 0.05 });
    }
    if (fail)
        return qs_error(e, QS_EINVAL, "debug job failed as asked (config.fail)");
    if (io->event) {
        io->event(io->ud, &(qs_event){ .type = QS_EV_METRIC, .name = "steps", .value = steps });
        io->event(io->ud, &(qs_event){ .type = QS_EV_LOG, .level = "info", .message = "done sleeping" });
    }
    snprintf(path, sizeof path, "%s/data.bin", io->outdir);
    FILE *f = fopen(path, "wb");
    if (!f)
        return qs_error(e, QS_EIO, "%s: %s", path, strerror(errno));
    for (json_int_t i = 0; i < nbytes; i++)
        fputc((int)((i * 2654435761u) >> 24) & 255, f);
    int bad = ferror(f);
    if (fclose(f) != 0 || bad)   /* a full disk must fail the job, as in a pipeline */
        return qs_error(e, QS_EIO, "%s: %s", path, strerror(errno));
    *result = json_pack("{s:i, s:i}", "steps", steps, "resumed_from", start);
    snprintf(path, sizeof path, "%s/report.json", io->outdir);
    if (json_dump_file(*result, path, JSON_INDENT(2)) < 0)
        return qs_error(e, QS_EIO, "%s: cannot write", path);
    return 0;
}

const qs_pipeline_type qd_debug_job_types[] = {
    { .name = "sleep", .run = debug_sleep, .resumable = 1 },
    { .name = NULL },
};
