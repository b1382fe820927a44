/* A streaming multipart/form-data parser (RFC 7578) for uploads: `curl -F file=@model.onnx`, and
 * browsers' forms. Bytes go in as they arrive, in chunks of any size; the file part's bytes come
 * out through a callback as soon as they are known not to be a boundary, so nothing is buffered
 * whole (a part's headers at most, 8 KiB). No I/O, no allocation: the fuzzers reach it through the
 * HTTP harness.
 *
 *   qd_multipart mp;
 *   if (qd_multipart_init(&mp, content_type, on_file_bytes, ud) < 0) → 400 with mp.err
 *   qd_multipart_feed(&mp, chunk, n) …   // -1: malformed (mp.err says why); stop feeding
 *   qd_multipart_finish(&mp)             // -1: truncated, or no file part
 *   mp.name: the `name` field's value, if the form had one
 *
 * The file is the one part with a filename parameter (or the part named "file"); a part named
 * "name" without a filename sets mp.name (the upload's display name, like ?name=); other parts are
 * read and ignored. */
#ifndef QD_MULTIPART_H
#define QD_MULTIPART_H

#include <stddef.h>

enum { QD_MP_MAX_BOUNDARY = 70 };   /* RFC 2046 */

typedef struct qd_multipart {
    char delim[QD_MP_MAX_BOUNDARY + 5];   /* "\r\n--" boundary */
    size_t dlen, m;                       /* delim's length; bytes of it matched so far */
    int state, part;                      /* where the parser is; what the current part is */
    int nfiles, dashes;
    char hdr[8192];                       /* the current part's headers */
    size_t hlen;
    char name[256];                       /* the form's `name` field */
    size_t name_len;
    char out[4096];                       /* file bytes not yet handed to on_data */
    size_t olen;
    void (*on_data)(void *ud, const char *p, size_t n);
    void *ud;
    char err[256];
} qd_multipart;

/* Reads the boundary from a Content-Type value (multipart/form-data; boundary=…); -1 with err
 * when it is missing or invalid. */
int qd_multipart_init(qd_multipart *mp, const char *content_type, void (*on_data)(void *, const char *, size_t),
                      void *ud);
int qd_multipart_feed(qd_multipart *mp, const char *p, size_t n);
int qd_multipart_finish(qd_multipart *mp);

#endif
