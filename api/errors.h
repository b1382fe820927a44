/* API errors: one table (errors.c) maps each code to its HTTP status and a hint; every error
 * reply has the body {"error": {"code", "message", "field"?, "hint"}}.
 *
 *   return qd_reply_error(r, QD_E_INVALID_FIELD, "config.weights.bits", "must be from 2 to 16");
 */
#ifndef QD_ERRORS_H
#define QD_ERRORS_H

typedef enum qd_errcode {
    QD_E_BAD_REQUEST,
    QD_E_INVALID_JSON,
    QD_E_INVALID_FIELD,
    QD_E_BAD_MODEL,
    QD_E_BAD_DATASET,
    QD_E_UNAUTHORIZED,
    QD_E_FORBIDDEN,
    QD_E_NOT_FOUND,
    QD_E_METHOD_NOT_ALLOWED,
    QD_E_TIMEOUT,
    QD_E_IN_USE,
    QD_E_JOB_ENDING,
    QD_E_TOO_LARGE,
    QD_E_MEDIA_TYPE,
    QD_E_RANGE,
    QD_E_UNSUPPORTED_MODEL,
    QD_E_UNSUPPORTED_DATASET,
    QD_E_UNKNOWN_REFERENCE,
    QD_E_DATA_MISMATCH,
    QD_E_UNKNOWN_NAME,
    QD_E_CONFLICTING_FIELDS,
    QD_E_QUEUE_FULL,
    QD_E_INTERNAL,
    QD_E_SHUTTING_DOWN,
    QD_E_STORAGE_FULL,
    QD_E_COUNT
} qd_errcode;

typedef struct qd_error_def {
    const char *code;    /* "invalid_field" */
    unsigned status;     /* 400 */
    const char *hint;    /* what the client can do about it */
} qd_error_def;

extern const qd_error_def qd_errors[QD_E_COUNT];

#endif
