/* A progress bar on stderr for the quant command line, drawn only when stderr is a terminal
 * (QUANT_PROGRESS=0 or 1 overrides the check), redrawn at most ten times a second.
 *
 *   cli_progress *p = cli_progress_new("eval");
 *   qs_runner_run(r, in, out, cli_progress_cb, p, &abort, &e);   // (done, total) samples
 *   cli_progress_end(p);                                          // clears the line, frees p
 *
 * Every function accepts NULL, so callers need not care whether a bar is shown. */
#ifndef QD_PROGRESS_H
#define QD_PROGRESS_H

#include <stdint.h>

typedef struct cli_progress cli_progress;

cli_progress *cli_progress_new(const char *label);   /* NULL when no bar is to be shown */
void cli_progress_update(cli_progress *p, int64_t done, int64_t total);
/* The same, with qs_progress_fn's signature (ud is the cli_progress). */
void cli_progress_cb(void *ud, int64_t done, int64_t total);
void cli_progress_end(cli_progress *p);

#endif
