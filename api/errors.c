/* The API's error codes; see errors.h. The reply itself is built in server.c (qd_reply_error). */
#include "api/errors.h"

const qd_error_def qd_errors[QD_E_COUNT] = {
    [QD_E_BAD_REQUEST] = { "bad_request", 400, "the request is malformed; see message" },
    [QD_E_INVALID_JSON] = { "invalid_json", 400, "the body must be one JSON object (UTF-8)" },
    [QD_E_INVALID_FIELD] = { "invalid_field", 400,
                             "a field of the job spec is missing, of the wrong type or out of range; "
                             "see field and GET /v1/openapi.json" },
    [QD_E_BAD_MODEL] = { "bad_model", 400, "upload a valid ONNX model file (the raw bytes of the .onnx)" },
    [QD_E_BAD_DATASET] = { "bad_dataset", 400, "upload a valid .npy or .npz file (numpy.save / numpy.savez)" },
    [QD_E_UNAUTHORIZED] = { "unauthorized", 401, "send the header `Authorization: Bearer <token>`" },
    [QD_E_FORBIDDEN] = { "forbidden", 403,
                         "the Host or Origin header is not one of this server's; the operator can add it to "
                         "allowed_hosts or allowed_origins in quantd.conf" },
    [QD_E_NOT_FOUND] = { "not_found", 404, "check the id or path; GET /v1/openapi.json lists the routes" },
    [QD_E_METHOD_NOT_ALLOWED] = { "method_not_allowed", 405, "the Allow header lists the methods of this path" },
    [QD_E_TIMEOUT] = { "timeout", 408, "send the headers and the body without pausing (header_timeout, body_timeout)" },
    [QD_E_IN_USE] = { "in_use", 409, "a queued or running job uses it; cancel that job or wait for it" },
    [QD_E_JOB_ENDING] = { "job_ending", 409, "the job is recording its final state; DELETE again in a moment" },
    [QD_E_TOO_LARGE] = { "too_large", 413, "the body exceeds the server's limit (see message); "
                                           "the operator can raise it in quantd.conf" },
    [QD_E_MEDIA_TYPE] = { "unsupported_media_type", 415,
                          "uploads take the file's raw bytes as application/octet-stream (curl --data-binary @file); "
                          "job specs take application/json" },
    [QD_E_RANGE] = { "range_not_satisfiable", 416, "the Range lies outside the file; see Content-Range" },
    [QD_E_UNSUPPORTED_MODEL] = { "unsupported_model", 422,
                                 "the model parses but uses operators or types the engine does not run" },
    [QD_E_UNSUPPORTED_DATASET] = { "unsupported_dataset", 422,
                                   "the array parses but its dtype or layout is not supported (C order; "
                                   "float32/64, int8/32/64, uint8, bool)" },
    [QD_E_UNKNOWN_REFERENCE] = { "unknown_reference", 422,
                                 "the id in field does not exist; upload it first (POST /v1/models or /v1/datasets)" },
    [QD_E_DATA_MISMATCH] = { "data_mismatch", 422,
                             "the job needs a data set (field) that holds the model's inputs: the shape in the "
                             "message, N samples first" },
    [QD_E_UNKNOWN_NAME] = { "unknown_name", 422,
                            "the config names a node, tensor or op type (field) the model does not have; "
                            "`quant info` or the model's record lists what it has" },
    [QD_E_CONFLICTING_FIELDS] = { "conflicting_fields", 422,
                                  "two fields of the job spec contradict each other (field and the one the "
                                  "message names); give one of them" },
    [QD_E_QUEUE_FULL] = { "queue_full", 429, "too many queued jobs; retry after Retry-After seconds" },
    [QD_E_INTERNAL] = { "internal", 500, "the server failed; its log has the details" },
    [QD_E_SHUTTING_DOWN] = { "shutting_down", 503, "the server is stopping; retry shortly" },
    [QD_E_STORAGE_FULL] = { "storage_full", 507, "the server's disk is full; nothing was stored: retry once the "
                                                 "operator has freed space" },
};
