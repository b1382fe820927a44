/* Progress on stderr for the quant command line. On a terminal, a bar redrawn at most ten times a
 * second: "label [#######.......]  45%  4500/10000  1.2s  eta 1.5s". Off a terminal a bar would
 * only fill logs with carriage returns, so a pipeline's stages (cli_progress_stage) are reported
 * as lines instead: one when a stage starts, one a minute while it runs, one when it ends with
 * its time. QUANT_PROGRESS overrides the check: 1 (or "bar") draws bars, "lines" prints lines,
 * 0 prints neither.
 *
 *   cli_progress *p = cli_progress_new("eval");                   // a bar, or NULL
 *   qs_runner_run(r, in, out, cli_progress_cb, p, &abort, &e);   // (done, total) samples
 *   cli_progress_end(p);                                          // clears the line, frees p
 *
 *   cli_progress *s = cli_progress_stage("quant ptq", "calibration");   // a bar, lines, or NULL
 *
 * Every function accepts NULL, so callers need not care whether anything is shown. */
#ifndef QD_PROGRESS_H
#define QD_PROGRESS_H

#include <stdint.h>

typedef struct cli_progress cli_progress;

/* A bar (NULL when no bar is to be shown: off a terminal, or QUANT_PROGRESS=0 or "lines"). */
cli_progress *cli_progress_new(const char *label);
/* A pipeline stage: a bar where cli_progress_new draws one, else lines prefixed by who
 * ("quant ptq: calibration: started, 800 samples"); NULL with QUANT_PROGRESS=0. */
cli_progress *cli_progress_stage(const char *who, const char *stage);
void cli_progress_update(cli_progress *p, int64_t done, int64_t total);
/* The same with an estimate of the time left (< 0: the elapsed time scaled, as above). */
void cli_progress_update_eta(cli_progress *p, int64_t done, int64_t total, double eta_s);
/* The same, with qs_progress_fn's signature (ud is the cli_progress). */
void cli_progress_cb(void *ud, int64_t done, int64_t total);
/* Clears a bar's line so that a message can be printed; the next update draws it again. */
void cli_progress_clear(cli_progress *p);
/* Clears the bar (a stage's lines: prints the stage's end and its time) and frees p. */
void cli_progress_end(cli_progress *p);

/* A pipeline's stages from its progress events (stage, done, total), one cli_progress each: a
 * stage ends when it reaches its total or another begins, and starts over as a new one when its
 * count goes back (the same calibration run again for another step). Zero-initialise, set who
 * ("quant ptq") and quiet (--json: bars only, no lines), call cli_stages_end when done. */
typedef struct cli_stages {
    char who[32];
    int quiet;
    cli_progress *bar;
    char stage[128];
    double done;
    int ended;
} cli_stages;

/* eta_s: the pipeline's own estimate of the time left (< 0: none; the elapsed time scaled by the
 * remaining fraction stands in), which knows when a stage's steady part began */
void cli_stages_update(cli_stages *s, const char *stage, double done, double total, double eta_s);
void cli_stages_clear(cli_stages *s);   /* before a message: as cli_progress_clear */
void cli_stages_end(cli_stages *s);

#endif
