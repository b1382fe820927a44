/* fuzz-spec: bytes as a POST /v1/jobs body — JSON, then api/spec.c's validator (the engine's
 * spec table, engine/spec_rows.c) and the normalised spec it records, parsed again — and the whole
 * document as a config object of its own, as `quant --config` reads one. The validator's
 * replies go to a stub: what is fuzzed is the walk over the JSON, not libmicrohttpd. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "api/api.h"
#include "spec_json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int qd_reply_error(qd_req *r, qd_errcode code, const char *field, const char *fmt, ...)
{
    (void)r, (void)code, (void)field, (void)fmt;
    return QD_H_OK;
}

/* qd_spec_check_data and the submit-time model check (not fuzzed: they read the store) link
 * against the store */
json_t *qd_store_get(qd_store *st, qd_kind kind, const char *id)
{
    (void)st, (void)kind, (void)id;
    return NULL;
}

void qd_store_file_path(const qd_store *st, qd_kind kind, const char *id, const char *ext, char *out, size_t n)
{
    (void)st, (void)kind, (void)id, (void)ext;
    if (n)
        out[0] = 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *j = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    if (!j)
        return 0;
    qs_job_spec s;
    int ok;
    qd_spec_check(NULL, j, 1, &s, &ok);
    if (ok) {
        qd_ref refs[6];
        qd_spec_refs(&s, refs);
        json_t *n = qs_job_spec_to_json(&s);
        qs_job_spec t;
        qs_err e = { 0 };
        if (qs_job_spec_parse(n, QS_SPEC_DEBUG_JOBS, &t, &e) < 0)
            abort();   /* the normalised spec must parse */
        json_t *m = qs_job_spec_to_json(&t);
        if (!json_equal(n, m))
            abort();   /* … to the same spec */
        json_decref(m);
        json_decref(n);
        qs_job_spec_free(&t);
        qs_job_spec_free(&s);
    }
    if (json_is_object(j)) {
        qs_qconfig c;
        qs_err e = { 0 };
        if (qs_qconfig_parse(j, &c, &e) == 0) {
            json_decref(qs_qconfig_to_json(&c));
            qs_qconfig_free(&c);
        }
    }
    json_decref(j);
    return 0;
}
