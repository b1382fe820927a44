/* quant qat: the standard QAT pipeline of paper §4.4 (engine/quant/qat.h) from the command line.
 * Builds the job spec's config from --config and the flags, runs the "qat" pipeline into OUTDIR
 * atomically (cli_run_pipeline) and prints FP32, PTQ and QAT accuracy, or with --json the result
 * object {"fp32_accuracy", "ptq_accuracy", "qat_accuracy", "seconds", "outdir"}.
 *
 * --resume DIR continues from DIR/checkpoint (a previous OUTDIR, which may also be -o's): the
 * same model and training setup, possibly more epochs. */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "engine/pipeline.h"

static int double_opt(const command *c, const char *name, const char *s, double lo, double hi, double *v)
{
    if (!s)
        return PARSED;
    char *end;
    errno = 0;
    double d = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(d) || d < lo || d > hi)
        return usage_error(c, "%s: expected a number in [%g, %g], got '%s'", name, lo, hi, s);
    *v = d;
    return PARSED;
}

int cmd_qat(const command *c, int argc, char **argv)
{
    const char *pos[1], *train = NULL, *labels = NULL, *val = NULL, *val_labels = NULL, *calib = NULL,
               *cfgpath = NULL, *wbits = NULL, *abits = NULL, *epochs = NULL, *batch = NULL, *lr = NULL,
               *optimizer = NULL, *schedule = NULL, *resume = NULL, *steps = NULL, *outdir = NULL, *threads = NULL;
    int npos, json = 0, per_channel = 0, per_tensor = 0, no_bn_fold = 0, flip = 0, freeze = 0;
    const char *shapes[CLI_OPT_MAX];
    int nshapes = 0, requantize = 0;
    const opt opts[] = {
        {.name = "--input-shape", .val = shapes, .count = &nshapes}, {.name = "--requantize", .flag = &requantize},
        
        {.name = "--train", .val = &train}, {.name = "--labels", .val = &labels}, {.name = "--val", .val = &val},
        {.name = "--val-labels", .val = &val_labels}, {.name = "--calib", .val = &calib},
        {.name = "--config", .val = &cfgpath}, {.name = "--wbits", .val = &wbits}, {.name = "--abits", .val = &abits},
        {.name = "--epochs", .val = &epochs}, {.name = "--batch", .val = &batch}, {.name = "--lr", .val = &lr},
        {.name = "--optimizer", .val = &optimizer}, {.name = "--schedule", .val = &schedule},
        {.name = "--resume", .val = &resume}, {.name = "--steps", .val = &steps}, {.name = "-o", .val = &outdir},
        {.name = "--output", .val = &outdir}, {.name = "--threads", .val = &threads}, {.name = "--json", .flag = &json},
        {.name = "--per-channel", .flag = &per_channel}, {.name = "--per-tensor", .flag = &per_tensor},
        {.name = "--no-bn-fold", .flag = &no_bn_fold}, {.name = "--flip", .flag = &flip},
        {.name = "--freeze-ranges", .flag = &freeze}, {.name = NULL}};
    int rc = parse_args(c, argc, argv, opts, pos, 1, &npos);
    if (rc != PARSED)
        return rc;
    if (npos < 1)
        return usage_error(c, "missing MODEL");
    if (!train || !labels)
        return usage_error(c, "missing --train X.npy --labels Y.npy");
    if (!val != !val_labels)
        return usage_error(c, "--val and --val-labels go together");
    if (!outdir)
        return usage_error(c, "missing -o OUTDIR");
    if (per_channel && per_tensor)
        return usage_error(c, "--per-channel and --per-tensor exclude each other");
    if (optimizer && strcmp(optimizer, "sgd") && strcmp(optimizer, "adam") && strcmp(optimizer, "nesterov"))
        return usage_error(c, "--optimizer: expected sgd, nesterov or adam, got '%s'", optimizer);
    if (schedule && strcmp(schedule, "cosine") && strcmp(schedule, "step") && strcmp(schedule, "constant"))
        return usage_error(c, "--schedule: expected cosine, step or constant, got '%s'", schedule);
    struct stat st;
    if (resume && (stat(resume, &st) < 0 || !S_ISDIR(st.st_mode)))
        return usage_error(c, "--resume %s: not a folder (give a previous run's OUTDIR)", resume);
    int64_t wb = 0, ab = 0, ep = -1, bs = 0, ns = -1, th = 0;
    double rate = -1;
    if ((rc = int_opt(c, "--wbits", wbits, 2, 16, &wb)) != PARSED ||
        (rc = int_opt(c, "--abits", abits, 2, 16, &ab)) != PARSED ||
        (rc = int_opt(c, "--epochs", epochs, 0, 10000, &ep)) != PARSED ||
        (rc = int_opt(c, "--batch", batch, 1, 65536, &bs)) != PARSED ||
        (rc = int_opt(c, "--steps", steps, 0, 100000000, &ns)) != PARSED ||
        (rc = int_opt(c, "--threads", threads, 1, 1024, &th)) != PARSED ||
        (rc = double_opt(c, "--lr", lr, 0, 10, &rate)) != PARSED)
        return rc;
    json_t *cfg = cli_load_config(c, cfgpath);
    if (!cfg)
        return EXIT_FAIL;
    if (wb) cli_set_cfg(cfg, "weights", "bits", json_integer(wb));
    if (ab) cli_set_cfg(cfg, "activations", "bits", json_integer(ab));
    if (per_channel || per_tensor) cli_set_cfg(cfg, "weights", "per_channel", json_boolean(per_channel));
    if (no_bn_fold) cli_set_cfg(cfg, NULL, "bn_fold", json_false());
    if (ep >= 0) cli_set_cfg(cfg, "qat", "epochs", json_integer(ep));
    if (bs) cli_set_cfg(cfg, "qat", "batch_size", json_integer(bs));
    if (ns >= 0) cli_set_cfg(cfg, "qat", "steps", json_integer(ns));
    if (rate >= 0) cli_set_cfg(cfg, "qat", "lr", json_real(rate));
    if (optimizer) cli_set_cfg(cfg, "qat", "optimizer", json_string(optimizer));
    if (schedule) cli_set_cfg(cfg, "qat", "schedule", json_string(schedule));
    if (flip) cli_set_cfg(cfg, "qat", "flip", json_true());
    if (freeze) cli_set_cfg(cfg, "qat", "learn_ranges", json_false());
    if (requantize) cli_set_cfg(cfg, NULL, "requantize", json_true());
    if ((rc = cli_shapes_to_cfg(c, cfg, shapes, nshapes)) != EXIT_OK) {
        json_decref(cfg);
        return rc;
    }
    qs_pipeline_io io = {.model = pos[0], .calib = calib, .train = train, .train_labels = labels, .val = val,
                         .val_labels = val_labels, .resume = resume, .config = cfg};
    json_t *result = NULL;
    rc = cli_run_pipeline(c, "qat", &io, (int)th, outdir, json, &result);
    json_decref(cfg);
    if (rc != EXIT_OK || !result)
        return rc;
    if (json) {
        json_t *out = json_pack("{s:O, s:O, s:O, s:O, s:O}", "fp32_accuracy", json_object_get(result, "fp32_accuracy"),
                                "ptq_accuracy", json_object_get(result, "ptq_accuracy"), "qat_accuracy",
                                json_object_get(result, "qat_accuracy"), "seconds", json_object_get(result, "seconds"),
                                "outdir", json_object_get(result, "outdir"));
        print_json(out);
    } else {
        cli_print_accuracy("fp32 accuracy", json_object_get(result, "fp32_accuracy"));
        cli_print_accuracy("ptq accuracy", json_object_get(result, "ptq_accuracy"));
        cli_print_accuracy("qat accuracy", json_object_get(result, "qat_accuracy"));
        printf("%-18s %.1f s\n%-18s %s\n", "time", json_number_value(json_object_get(result, "seconds")), "written to",
               outdir);
    }
    json_decref(result);
    return EXIT_OK;
}
