/* config.overrides: quantizer settings for one tensor or for every node of one op type, on top of
 * config.weights and config.activations. The job spec keeps the JSON; this module checks its shape
 * (at submit, through spec.c) and turns it into a table the placement rules (quantsim.c) consult:
 *
 *   {"tensors": {"<tensor name>": {"bits": 16, "symmetric": false, "per_channel": false, "skip": false}},
 *    "ops":     {"<op type>": {"bits": 16, "symmetric": true, "weight_bits": 8, "weight_symmetric": true,
 *                              "per_channel": false, "skip": false}}}
 *
 * A tensor entry sets the quantizer of that tensor, a weight (initializer name) or an activation
 * (value name); per_channel applies to weights only; skip: the tensor gets no quantizer. An op-type
 * entry sets the output activations of every node of that type (bits, symmetric), their weights
 * (weight_bits, weight_symmetric, per_channel), and skip keeps those nodes in floating point (as
 * config.exclude does for names). A tensor entry wins over an op-type entry, which wins over the
 * config. Every field is optional. Names the model does not have are refused when the simulation is
 * built (qs_overrides_check).
 *
 *   qs_qoverrides ov = {0};
 *   if (qs_overrides_parse(cfg.overrides, &ov, &e) < 0) …    // e.msg: "config.overrides.tensors.x.bits: …"
 *   const qs_qoverride *t = qs_overrides_find(&ov, 0, "x");   // NULL: none
 *   qs_overrides_free(&ov);
 */
#ifndef QS_QUANT_OVERRIDES_H
#define QS_QUANT_OVERRIDES_H

#include "error.h"
#include "graph.h"

typedef struct qs_qoverride {
    char *name;                     /* tensor name, or op type when is_op */
    int is_op;
    int bits, symmetric, per_channel, skip;   /* -1: not set */
    int wbits, wsymmetric;          /* op entries: their weights (-1: not set) */
} qs_qoverride;

typedef struct qs_qoverrides {
    int n;
    qs_qoverride *o;
} qs_qoverrides;

/* text: the JSON object (NULL or "{}": none). On error o is left empty. */
int qs_overrides_parse(const char *text, qs_qoverrides *o, qs_err *e);
void qs_overrides_free(qs_qoverrides *o);
/* Appends a tensor entry setting bits (an entry already there for the name keeps its own). */
int qs_overrides_add_bits(qs_qoverrides *o, const char *tensor, int bits);
const qs_qoverride *qs_overrides_find(const qs_qoverrides *o, int is_op, const char *name);
/* Every tensor entry names a value of g and every op entry an op type g has; else QS_EINVAL
 * naming the entry. */
int qs_overrides_check(const qs_qoverrides *o, const qs_graph *g, qs_err *e);

#endif
