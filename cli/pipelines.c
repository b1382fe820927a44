/* The pipeline commands of quant (ptq, …): build the job spec's config from --config and the
 * flags, run the engine's pipeline with a progress bar per stage, and publish OUTDIR atomically —
 * the pipeline writes into a fresh sibling folder that replaces OUTDIR only when everything
 * succeeded, so a failed or interrupted run leaves the previous results as they were. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/progress.h"
#include "cli/remote.h"
#include "engine/pipeline.h"
#include "engine/spec.h"

/* --- config from --config and flags ------------------------------------------------------------ */

json_t *cli_load_config(const command *c, const char *path)
{
    if (!path)
        return json_object();
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j) {
        fail(c, "%s:%d: %s", path, je.line, je.text);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        fail(c, "%s: the config must be a JSON object", path);
        return NULL;
    }
    json_t *inner = json_object_get(j, "config");   /* a whole job spec */
    if (inner && json_is_object(inner)) {
        json_incref(inner);
        json_decref(j);
        return inner;
    }
    return j;
}

/* config.<section>.<key> = v (steals v); section NULL sets a top-level key */
void cli_set_cfg(json_t *cfg, const char *section, const char *key, json_t *v)
{
    json_t *o = cfg;
    if (section) {
        o = json_object_get(cfg, section);
        if (!o || !json_is_object(o)) {
            o = json_object();
            json_object_set_new(cfg, section, o);
        }
    }
    json_object_set_new(o, key, v);
}

/* --- events → progress bars and messages ------------------------------------------------------- */

typedef struct cli_events {
    const command *c;
    cli_stages st;
} cli_events;

/* A bar per stage on a terminal, a line as each starts and ends elsewhere; --json (quiet) keeps
 * stderr for warnings and errors, so it gets the bar but not the lines. */
static void on_event(void *ud, const qs_event *ev)
{
    cli_events *s = ud;
    switch (ev->type) {
    case QS_EV_PROGRESS:
        cli_stages_update(&s->st, ev->stage, ev->done, ev->total, isfinite(ev->eta_s) ? ev->eta_s : -1);
        break;
    case QS_EV_LOG:
        if (!strcmp(ev->level, "warning") || !s->st.quiet) {
            cli_stages_clear(&s->st);   /* the message on its own line; the bar comes back */
            fprintf(stderr, "%s: %s%s\n", s->st.who, strcmp(ev->level, "warning") ? "" : "warning: ", ev->message);
        }
        break;
    default:
        break;
    }
}

/* --- OUTDIR published atomically --------------------------------------------------------------- */

static void remove_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *de;
    char p[4096];
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        struct stat st;
        if (!lstat(p, &st) && S_ISDIR(st.st_mode))
            remove_tree(p);
        else
            unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

int cli_run_pipeline(const command *c, const char *type, qs_pipeline_io *io, int threads, const char *outdir,
                     int json, json_t **result)
{
    if (cli_remote.server) {
        qd_remote_paths rp = {.model = io->model, .calib = io->calib, .train = io->train,
                              .train_labels = io->train_labels, .val = io->val, .val_labels = io->val_labels};
        catch_interrupts();
        if (io->resume)
            return usage_error(c, "--resume applies to local runs; a server resumes its own jobs");
        cli_remote.quiet = json;
        return qd_remote_run(&cli_remote, type, &rp, io->config, outdir, result);
    }
    char tmp[4096], old[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp-%ld", outdir, (long)getpid());
    snprintf(old, sizeof old, "%s.old-%ld", outdir, (long)getpid());
    remove_tree(tmp);
    if (mkdir(tmp, 0755) < 0)
        return fail(c, "cannot create %s: %s", tmp, strerror(errno));
    cli_events ev = {.c = c, .st.quiet = json};
    snprintf(ev.st.who, sizeof ev.st.who, "quant %s", c->name);
    io->outdir = tmp;
    io->event = on_event;
    io->ud = &ev;
    io->abort = &interrupted;
    qs_err e = {0};
    catch_interrupts();
    int rc = (io->pool = qs_threadpool_new(threads, 0, &e)) ? qs_pipeline_run(type, io, result, &e) : e.code;
    qs_threadpool_free(io->pool);
    io->pool = NULL;
    cli_stages_end(&ev.st);
    if (rc < 0) {
        /* a run that got as far as a training checkpoint keeps it, so --resume can pick it up */
        char ck[4200], partial[4200];
        snprintf(ck, sizeof ck, "%s/checkpoint/state.json", tmp);
        snprintf(partial, sizeof partial, "%s.partial", outdir);
        struct stat cst;
        if (!stat(ck, &cst)) {
            remove_tree(partial);
            if (!rename(tmp, partial))
                fprintf(stderr, "quant %s: the last checkpoint is in %s; continue with --resume %s\n", c->name,
                        partial, partial);
        }
        remove_tree(tmp);
        return engine_fail(c, rc, &e);
    }
    struct stat st;
    int had = stat(outdir, &st) == 0;
    if (had && rename(outdir, old) < 0) {
        remove_tree(tmp);
        return fail(c, "cannot replace %s: %s", outdir, strerror(errno));
    }
    if (rename(tmp, outdir) < 0) {
        int err = errno;
        if (had)
            rename(old, outdir);
        remove_tree(tmp);
        return fail(c, "cannot create %s: %s", outdir, strerror(err));
    }
    if (had)
        remove_tree(old);
    json_object_set_new(*result, "outdir", json_string(outdir));
    return EXIT_OK;
}

void cli_print_accuracy(const char *label, json_t *v)
{
    if (json_is_number(v))
        printf("%-18s %.2f%%\n", label, 100 * json_number_value(v));
}

/* "  fast      what it does and costs, wrapped at 100 columns" for each preset offered */
void cli_print_presets(void)
{
    printf("\nPresets (--preset, config.preset; times measured on 2 cores, see docs/results.md):\n");
    for (int i = 0; qs_spec_preset_name(i); i++) {
        const char *name = qs_spec_preset_name(i), *t = qs_spec_preset_about(name);
        int col = printf("  %-10s", name), first = 1;
        while (*t) {
            size_t w = strcspn(t, " ");
            if (col + 1 + (int)w > 100)
                col = printf("\n%12s", "") - 1, first = 1;
            col += printf("%s%.*s", first ? "" : " ", (int)w, t);
            first = 0;
            t += w + (t[w] ? 1 : 0);
        }
        printf("\n");
    }
    printf("  basic is accepted as the former name of fast.\n");
}

/* --- quant ptq --------------------------------------------------------------------------------- */

/* The closed loop's outcome (engine/quant/analyze.h): the groups kept in higher precision. */
static void print_target_drop(json_t *td)
{
    if (!td)
        return;
    json_t *kept = json_object_get(td, "kept"), *k;
    size_t i;
    printf("%-18s %.2f points: %s\n", "target drop", json_number_value(json_object_get(td, "points")),
           json_is_true(json_object_get(td, "met")) ? "met" : "NOT met");
    if (!json_array_size(kept))
        printf("%-18s none (already within the target)\n", "kept");
    json_array_foreach(kept, i, k)
        printf("%-18s %s (%s) in %s\n", i ? "" : "kept", json_string_value(json_object_get(k, "group")),
               json_string_value(json_object_get(k, "op")), json_string_value(json_object_get(k, "precision")));
}

int cmd_ptq(const command *c, int argc, char **argv)
{
    const char *pos[1], *calib = NULL, *val = NULL, *labels = NULL, *cfgpath = NULL, *wbits = NULL, *abits = NULL,
               *wrange = NULL, *arange = NULL, *exclude = NULL, *outdir = NULL, *samples = NULL, *batch = NULL,
               *threads = NULL, *biascorr = NULL, *rounding = NULL, *ada_iters = NULL, *preset = NULL, *tdrop = NULL, *target = NULL;
    int npos, json = 0, reduce_range = 0, no_reduce_range = 0, per_channel = 0, per_tensor = 0, no_bn_fold = 0, cle = 0, no_cle = 0, ada = 0, no_ada = 0,
        no_check = 0;
    const char *shapes[CLI_OPT_MAX];
    int nshapes = 0, requantize = 0;
    const opt opts[] = {
        {.name = "--input-shape", .val = shapes, .count = &nshapes}, {.name = "--requantize", .flag = &requantize},
        
        {.name = "--calib", .val = &calib}, {.name = "--val", .val = &val}, {.name = "--labels", .val = &labels},
        {.name = "--config", .val = &cfgpath}, {.name = "--wbits", .val = &wbits}, {.name = "--abits", .val = &abits},
        {.name = "--wrange", .val = &wrange}, {.name = "--arange", .val = &arange},
        {.name = "--exclude", .val = &exclude}, {.name = "-o", .val = &outdir}, {.name = "--output", .val = &outdir},
        {.name = "--calib-samples", .val = &samples}, {.name = "--batch", .val = &batch},
        {.name = "--threads", .val = &threads}, {.name = "--json", .flag = &json},
        {.name = "--per-channel", .flag = &per_channel}, {.name = "--per-tensor", .flag = &per_tensor},
        {.name = "--no-bn-fold", .flag = &no_bn_fold}, {.name = "--cle", .flag = &cle},
        {.name = "--no-cle", .flag = &no_cle}, {.name = "--bias-correction", .val = &biascorr},
        {.name = "--rounding", .val = &rounding},
        {.name = "--adaround", .flag = &ada}, {.name = "--no-adaround", .flag = &no_ada},
        {.name = "--adaround-iterations", .val = &ada_iters}, {.name = "--preset", .val = &preset},
        {.name = "--target-drop", .val = &tdrop}, {.name = "--target", .val = &target},
        {.name = "--reduce-range", .flag = &reduce_range}, {.name = "--no-reduce-range", .flag = &no_reduce_range},
        {.name = "--no-check-steps", .flag = &no_check}, {.name = NULL}};
    int rc = parse_args(c, argc, argv, opts, pos, 1, &npos);
    if (rc != PARSED)
        return rc;
    if (npos < 1)
        return usage_error(c, "missing MODEL");
    if (!calib)
        return usage_error(c, "missing --calib X.npy|X.npz");
    if (!outdir)
        return usage_error(c, "missing -o OUTDIR");
    if (!val != !labels)
        return usage_error(c, "--val and --labels go together");
    if (per_channel && per_tensor)
        return usage_error(c, "--per-channel and --per-tensor exclude each other");
    if ((cle && no_cle) || (ada && no_ada) || (reduce_range && no_reduce_range))
        return usage_error(c, "--X and --no-X exclude each other");
    double drop = -1;
    if (tdrop) {
        char *end;
        drop = strtod(tdrop, &end);
        if (end == tdrop || *end || !(drop >= 0 && drop <= 100))
            return usage_error(c, "--target-drop must be a number of accuracy points from 0 to 100, not '%s'", tdrop);
        if (!val)
            return usage_error(c, "--target-drop needs validation data: --val X.npy --labels Y.npy");
    }
    int64_t wb = 0, ab = 0, ns = 0, bs = 0, th = 0, ai = 0;
    if ((rc = int_opt(c, "--wbits", wbits, 2, 16, &wb)) != PARSED || (rc = int_opt(c, "--abits", abits, 2, 16, &ab)) != PARSED ||
        (rc = int_opt(c, "--calib-samples", samples, 1, 1LL << 40, &ns)) != PARSED ||
        (rc = int_opt(c, "--batch", batch, 1, 65536, &bs)) != PARSED ||
        (rc = int_opt(c, "--threads", threads, 1, 1024, &th)) != PARSED ||
        (rc = int_opt(c, "--adaround-iterations", ada_iters, 1, 1000000, &ai)) != PARSED)
        return rc;
    json_t *cfg = cli_load_config(c, cfgpath);
    if (!cfg)
        return EXIT_FAIL;
    if (preset) cli_set_cfg(cfg, NULL, "preset", json_string(preset));
    if (cle || no_cle) cli_set_cfg(cfg, NULL, "cle", json_boolean(cle));
    if (biascorr) cli_set_cfg(cfg, NULL, "bias_correction", json_string(biascorr));
    if (rounding) cli_set_cfg(cfg, NULL, "rounding", json_string(rounding));
    if (ada || no_ada) cli_set_cfg(cfg, "adaround", "enabled", json_boolean(ada));
    if (ai) cli_set_cfg(cfg, "adaround", "iterations", json_integer(ai));
    if (wb) cli_set_cfg(cfg, "weights", "bits", json_integer(wb));
    if (ab) cli_set_cfg(cfg, "activations", "bits", json_integer(ab));
    if (per_channel || per_tensor) cli_set_cfg(cfg, "weights", "per_channel", json_boolean(per_channel));
    if (wrange) cli_set_cfg(cfg, "weights", "range", json_string(wrange));
    if (arange) cli_set_cfg(cfg, "activations", "range", json_string(arange));
    if (no_bn_fold) cli_set_cfg(cfg, NULL, "bn_fold", json_false());
    if (ns) cli_set_cfg(cfg, "calibration", "samples", json_integer(ns));
    if (bs) cli_set_cfg(cfg, "calibration", "batch_size", json_integer(bs));
    if (tdrop) cli_set_cfg(cfg, NULL, "target_drop", json_real(drop));
    if (target) cli_set_cfg(cfg, NULL, "target", json_string(target));
    if (reduce_range || no_reduce_range) cli_set_cfg(cfg, "weights", "reduce_range", json_boolean(reduce_range));
    if (no_check) cli_set_cfg(cfg, NULL, "check_steps", json_false());
    if (requantize) cli_set_cfg(cfg, NULL, "requantize", json_true());
    if ((rc = cli_shapes_to_cfg(c, cfg, shapes, nshapes)) != EXIT_OK) {
        json_decref(cfg);
        return rc;
    }
    if (exclude) {
        json_t *arr = json_array();
        char *dup = strdup(exclude), *save = NULL;
        for (char *t = strtok_r(dup, ",", &save); t; t = strtok_r(NULL, ",", &save))
            json_array_append_new(arr, json_string(t));
        free(dup);
        cli_set_cfg(cfg, NULL, "exclude", arr);
    }
    qs_pipeline_io io = {.model = pos[0], .calib = calib, .val = val, .val_labels = labels, .config = cfg};
    json_t *result = NULL;
    rc = cli_run_pipeline(c, "ptq", &io, (int)th, outdir, json, &result);
    json_decref(cfg);
    if (rc != EXIT_OK || !result)
        return rc;
    if (json) {
        json_t *out = json_pack("{s:O, s:O, s:O, s:O}", "fp32_accuracy", json_object_get(result, "fp32_accuracy"),
                                "quant_accuracy", json_object_get(result, "quant_accuracy"), "seconds",
                                json_object_get(result, "seconds"), "outdir", json_object_get(result, "outdir"));
        if (json_object_get(result, "target_drop"))
            json_object_set(out, "target_drop", json_object_get(result, "target_drop"));
        print_json(out);
    } else {
        cli_print_accuracy("fp32 accuracy", json_object_get(result, "fp32_accuracy"));
        cli_print_accuracy("quantized accuracy", json_object_get(result, "quant_accuracy"));
        print_target_drop(json_object_get(result, "target_drop"));
        printf("%-18s %.1f s\n%-18s %s\n", "time", json_number_value(json_object_get(result, "seconds")), "written to",
               outdir);
    }
    json_decref(result);
    return EXIT_OK;
}
