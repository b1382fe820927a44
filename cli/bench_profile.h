/* quant bench --profile: time per layer type of a forward pass (cli/bench_profile.c).
 *
 *   cli_profile *p = cli_profile_new(g, batch, &e);   // before the timed plan: labels, MACs
 *   cli_profile_attach(p, x);                         // x: the exec that is timed
 *   cli_profile_start(p); qs_exec_forward(x, &e);     // per pass
 *   cli_profile_print(p, passes);                     // or cli_profile_json */
#ifndef CLI_BENCH_PROFILE_H
#define CLI_BENCH_PROFILE_H

#include <jansson.h>
#include <stdint.h>

#include <quant/error.h>

struct qs_graph;
struct qs_exec;
typedef struct cli_profile cli_profile;

cli_profile *cli_profile_new(struct qs_graph *g, int64_t batch, qs_err *e);
void cli_profile_free(cli_profile *p);
void cli_profile_attach(cli_profile *p, struct qs_exec *x);
void cli_profile_start(cli_profile *p);   /* before each pass */
void cli_profile_reset(cli_profile *p);   /* forget the passes so far (the warm-up) */
/* per layer type, slowest first: {layer, nodes, ms (per pass), fraction, gflop, gflops} */
json_t *cli_profile_json(const cli_profile *p, int64_t passes);
void cli_profile_print(const cli_profile *p, int64_t passes);

#endif
