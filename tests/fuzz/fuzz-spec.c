/* fuzz-spec: bytes as a POST /v1/jobs body — JSON, then api/spec.c's validator (which hands the
 * "config" object to engine/qconfig.c's parser) — and the whole document as a config object of
 * its own, as `quant --config` reads one. The validator's replies go to a stub: what is fuzzed is
 * the walk over the JSON, not libmicrohttpd. */
#include <stddef.h>
#include <stdint.h>

#include "api/api.h"
#include "qconfig.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int qd_reply_error(qd_req *r, qd_errcode code, const char *field, const char *fmt, ...)
{
    (void)r, (void)code, (void)field, (void)fmt;
    return QD_H_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *j = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    if (!j)
        return 0;
    qd_ref refs[8];
    int nrefs, ok;
    qd_spec_check(NULL, j, 1, refs, &nrefs, &ok);
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
