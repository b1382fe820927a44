/* Errors: every engine function returns 0 or a negative QS_E* code and, when given a qs_err,
 * fills it with a message that names the problem (the op and node, the field, the expected shape).
 *
 *   qs_err e = {0};
 *   if (qs_onnx_load(path, &g, &e) < 0) fprintf(stderr, "%s\n", e.msg);
 *
 * Bad input never aborts. */
#ifndef QUANT_ERROR_H
#define QUANT_ERROR_H

enum {
    QS_OK = 0,
    QS_EINVAL = -1,        /* bad argument or malformed input */
    QS_ENOMEM = -2,
    QS_EUNSUPPORTED = -3,  /* valid but not supported: op, opset, type */
    QS_EIO = -4,
    QS_EABORTED = -5,      /* the abort flag was raised */
    QS_ESHAPE = -6,        /* shapes do not fit */
    QS_EFORMAT = -7,       /* a file is not what it claims to be */
    QS_ELIMIT = -8,        /* over a size limit the caller set (a data set inflating too far) */
};

#define QS_ERRMSG_MAX 4096
typedef struct qs_err {
    int code;
    char msg[QS_ERRMSG_MAX];
} qs_err;

/* Sets e (when not NULL) and returns code, so that `return qs_error(e, QS_EINVAL, "...")` reads well. */
int qs_error(qs_err *e, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Prefixes the message already in e with more context ("loading x.onnx: " + msg). */
int qs_error_prefix(qs_err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const char *qs_strerror(int code);

#endif
