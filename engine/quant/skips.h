/* Skip lists: the layers (or, for CLE, layer pairs) a pass matched but left alone, each with the
 * reason, so a report says why a layer was not corrected rather than silently leaving it. The
 * reports of CLE, bias correction and AdaRound each hold one as `int nskipped; qs_skip *skipped;`.
 *
 *   if (qs_skip_add(&r->skipped, &r->nskipped, node->name, NULL, "Gemm with transA") < 0) → OOM
 *   json_t *a = qs_skips_json(r->skipped, r->nskipped, "name", NULL);   // [{"name","reason"}]
 *   qs_skips_free(r->skipped, r->nskipped);
 */
#ifndef QS_QUANT_SKIPS_H
#define QS_QUANT_SKIPS_H

typedef struct qs_skip {
    char *name;     /* the layer left alone (CLE: the pair's first layer) */
    char *name2;    /* CLE: the pair's second layer; NULL in single-layer lists */
    char *reason;
} qs_skip;

/* Appends {name, name2, printf(fmt, …)} (copies; a NULL name is stored as ""), growing the list.
 * Returns 0, or -1 on OOM (the list stays valid and freeable). */
int qs_skip_add(qs_skip **list, int *n, const char *name, const char *name2, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
void qs_skips_free(qs_skip *list, int n);

/* A new JSON array [{key: name, key2: name2, "reason": reason}] (key2 NULL: no second name). */
struct json_t;
struct json_t *qs_skips_json(const qs_skip *list, int n, const char *key, const char *key2);

#endif
