/* quant analyze: the debugging flow of paper §3.7 (engine/quant/analyze.h) from the command line.
 * Builds the job spec's config from --config and the flags, runs the "analyze" pipeline into
 * OUTDIR atomically (cli_run_pipeline) and prints the summary: FP32, quantized, weights-only and
 * activations-only accuracy and the worst quantizer groups, or the result object with --json. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "engine/pipeline.h"

/* The worst groups of OUTDIR/analysis.json as a small table (the result only names them). */
static void print_worst(const char *outdir, int max)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/analysis.json", outdir);
    json_t *an = json_load_file(path, 0, NULL);
    json_t *rk = an ? json_object_get(an, "ranking") : NULL;
    if (!rk || !json_array_size(rk)) {
        json_decref(an);
        return;
    }
    printf("\nmost sensitive quantizer groups (accuracy with only that group quantized, all but it):\n");
    size_t i;
    json_t *r;
    json_array_foreach(rk, i, r) {
        if ((int)i >= max)
            break;
        json_t *sq = json_object_get(r, "sqnr_only_this_db");
        printf("  %zu. %-40s %-10s only %6.2f%%  all but %6.2f%%  SQNR ", i + 1,
               json_string_value(json_object_get(r, "name")), json_string_value(json_object_get(r, "op")),
               100 * json_number_value(json_object_get(r, "accuracy_only_this")),
               100 * json_number_value(json_object_get(r, "accuracy_all_but_this")));
        if (json_is_number(sq))
            printf("%.1f dB\n", json_number_value(sq));
        else
            printf("exact\n");
    }
    json_t *fp = json_object_get(an, "fp32");
    if (fp && json_is_false(json_object_get(fp, "ok")))
        printf("\nFP32 sanity check failed: %s\n", json_string_value(json_object_get(fp, "message")));
    json_decref(an);
}

int cmd_analyze(const command *c, int argc, char **argv)
{
    const char *pos[1], *calib = NULL, *val = NULL, *labels = NULL, *cfgpath = NULL, *wbits = NULL, *abits = NULL,
               *outdir = NULL, *vsamples = NULL, *csamples = NULL, *batch = NULL, *threads = NULL;
    int npos, json = 0, per_channel = 0, per_tensor = 0, cle = 0, no_cle = 0;
    const char *shapes[CLI_OPT_MAX];
    int nshapes = 0, requantize = 0;
    const opt opts[] = {
        {.name = "--input-shape", .val = shapes, .count = &nshapes}, {.name = "--requantize", .flag = &requantize},
        
        {.name = "--calib", .val = &calib}, {.name = "--val", .val = &val}, {.name = "--labels", .val = &labels},
        {.name = "--config", .val = &cfgpath}, {.name = "--wbits", .val = &wbits}, {.name = "--abits", .val = &abits},
        {.name = "-o", .val = &outdir}, {.name = "--output", .val = &outdir},
        {.name = "--val-samples", .val = &vsamples}, {.name = "--calib-samples", .val = &csamples},
        {.name = "--batch", .val = &batch}, {.name = "--threads", .val = &threads}, {.name = "--json", .flag = &json},
        {.name = "--per-channel", .flag = &per_channel}, {.name = "--per-tensor", .flag = &per_tensor},
        {.name = "--cle", .flag = &cle}, {.name = "--no-cle", .flag = &no_cle}, {.name = NULL}};
    int rc = parse_args(c, argc, argv, opts, pos, 1, &npos);
    if (rc != PARSED)
        return rc;
    if (npos < 1)
        return usage_error(c, "missing MODEL");
    if (!calib)
        return usage_error(c, "missing --calib X.npy|X.npz");
    if (!val || !labels)
        return usage_error(c, "the analysis needs validation data: --val X.npy --labels Y.npy");
    if (!outdir)
        return usage_error(c, "missing -o OUTDIR");
    if (per_channel && per_tensor)
        return usage_error(c, "--per-channel and --per-tensor exclude each other");
    if (cle && no_cle)
        return usage_error(c, "--cle and --no-cle exclude each other");
    int64_t wb = 0, ab = 0, vs = 0, cs = 0, bs = 0, th = 0;
    if ((rc = int_opt(c, "--wbits", wbits, 2, 16, &wb)) != PARSED ||
        (rc = int_opt(c, "--abits", abits, 2, 16, &ab)) != PARSED ||
        (rc = int_opt(c, "--val-samples", vsamples, 1, 1LL << 40, &vs)) != PARSED ||
        (rc = int_opt(c, "--calib-samples", csamples, 1, 1LL << 40, &cs)) != PARSED ||
        (rc = int_opt(c, "--batch", batch, 1, 65536, &bs)) != PARSED ||
        (rc = int_opt(c, "--threads", threads, 1, 1024, &th)) != PARSED)
        return rc;
    json_t *cfg = cli_load_config(c, cfgpath);
    if (!cfg)
        return EXIT_FAIL;
    if (wb) cli_set_cfg(cfg, "weights", "bits", json_integer(wb));
    if (ab) cli_set_cfg(cfg, "activations", "bits", json_integer(ab));
    if (per_channel || per_tensor) cli_set_cfg(cfg, "weights", "per_channel", json_boolean(per_channel));
    if (cle || no_cle) cli_set_cfg(cfg, NULL, "cle", json_boolean(cle));
    if (vs) cli_set_cfg(cfg, "analysis", "val_samples", json_integer(vs));
    if (cs) cli_set_cfg(cfg, "calibration", "samples", json_integer(cs));
    if (bs) cli_set_cfg(cfg, "calibration", "batch_size", json_integer(bs));
    if (requantize) cli_set_cfg(cfg, NULL, "requantize", json_true());
    if ((rc = cli_shapes_to_cfg(c, cfg, shapes, nshapes)) != EXIT_OK) {
        json_decref(cfg);
        return rc;
    }
    qs_pipeline_io io = {.model = pos[0], .calib = calib, .val = val, .val_labels = labels, .config = cfg};
    json_t *result = NULL;
    rc = cli_run_pipeline(c, "analyze", &io, (int)th, outdir, json, &result);
    json_decref(cfg);
    if (rc != EXIT_OK || !result)
        return rc;
    if (json) {
        print_json(result);
        return EXIT_OK;
    }
    cli_print_accuracy("fp32 accuracy", json_object_get(result, "fp32_accuracy"));
    cli_print_accuracy("quantized", json_object_get(result, "quant_accuracy"));
    cli_print_accuracy("weights only", json_object_get(result, "weights_only_accuracy"));
    cli_print_accuracy("activations only", json_object_get(result, "activations_only_accuracy"));
    print_worst(outdir, 5);
    printf("\n%-18s %.1f s\n%-18s %s/analysis.json\n", "time", json_number_value(json_object_get(result, "seconds")),
           "written to", outdir);
    json_decref(result);
    return EXIT_OK;
}
