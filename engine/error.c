#include "error.h"

#include <stdarg.h>
#include <string.h>

int qs_error(qs_err *e, int code, const char *fmt, ...)
{
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
        e->code = code;
    }
    return code;
}

int qs_error_prefix(qs_err *e, const char *fmt, ...)
{
    if (!e)
        return QS_EINVAL;
    char head[512], old[QS_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(head, sizeof head, fmt, ap);
    va_end(ap);
    memcpy(old, e->msg, sizeof old);
    snprintf(e->msg, sizeof e->msg, "%s%s", head, old);
    return e->code;
}

const char *qs_strerror(int code)
{
    switch (code) {
    case QS_OK: return "ok";
    case QS_EINVAL: return "invalid input";
    case QS_ENOMEM: return "out of memory";
    case QS_EUNSUPPORTED: return "unsupported";
    case QS_EIO: return "i/o error";
    case QS_EABORTED: return "aborted";
    case QS_ESHAPE: return "shape mismatch";
    case QS_EFORMAT: return "bad file format";
    case QS_ELIMIT: return "over a size limit";
    default: return "unknown error";
    }
}
