/* The multipart/form-data parser; see multipart.h.
 *
 * The body is "--B" part ("\r\n--B" part)* "\r\n--B--" epilogue, each part being headers, an empty
 * line and data. The parser looks for the delimiter "\r\n--B" byte by byte, remembering only how
 * much of it matched so far, so a delimiter split across chunks is found like any other and input
 * is never looked at twice: when a partial match fails, its bytes are the delimiter's own prefix,
 * re-emitted from it as data. The match then restarts at the current byte, which is exact because
 * the delimiter's CRLF occurs nowhere else in it (boundaries hold no CR or LF): no suffix of a
 * partial match can begin another one. The first delimiter has no leading CRLF: the parser starts
 * as if "\r\n" had been matched already. */
#include "api/multipart.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

enum { S_PREAMBLE, S_AFTER, S_HEADERS, S_BODY, S_END, S_FAILED };
enum { P_SKIP, P_FILE, P_NAME };

static int fail(qd_multipart *mp, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(qd_multipart *mp, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(mp->err, sizeof mp->err, fmt, ap);
    va_end(ap);
    mp->state = S_FAILED;
    return -1;
}

static int bchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || strchr("'()+_,-./:=? ", c);
}

/* The value of parameter `key` in a header value's ";"-separated parameters (token or quoted
 * string, backslash escapes), into out[n]; 1 when present, 0 when absent, -1 when malformed. */
static int param(const char *v, const char *key, char *out, size_t n)
{
    size_t kl = strlen(key);
    for (const char *p = strchr(v, ';'); p; p = strchr(p, ';')) {
        p++;
        while (*p == ' ' || *p == '\t')
            p++;
        if (strncasecmp(p, key, kl) || p[kl] != '=')
            continue;
        p += kl + 1;
        size_t k = 0;
        if (*p == '"') {
            for (p++; *p && *p != '"'; p++) {
                if (*p == '\\' && p[1])
                    p++;
                if (k + 1 < n)
                    out[k++] = *p;
            }
            if (*p != '"')
                return -1;
        } else {
            for (; *p && *p != ';' && *p != ' ' && *p != '\t'; p++)
                if (k + 1 < n)
                    out[k++] = *p;
        }
        out[k] = 0;
        return 1;
    }
    return 0;
}

int qd_multipart_init(qd_multipart *mp, const char *ct, void (*on_data)(void *, const char *, size_t), void *ud)
{
    memset(mp, 0, sizeof *mp);
    mp->on_data = on_data;
    mp->ud = ud;
    char b[QD_MP_MAX_BOUNDARY + 2];
    int rc = ct ? param(ct, "boundary", b, sizeof b) : 0;
    if (rc <= 0)
        return fail(mp, rc < 0 ? "the Content-Type's boundary parameter is malformed (an unclosed quote)"
                               : "multipart/form-data needs a boundary parameter in its Content-Type");
    size_t bl = strlen(b);
    if (bl == 0 || bl > QD_MP_MAX_BOUNDARY || b[bl - 1] == ' ')
        return fail(mp, "the multipart boundary must have 1 to 70 characters (and not end with a space)");
    for (size_t i = 0; i < bl; i++)
        if (!bchar((unsigned char)b[i]))
            return fail(mp, "the multipart boundary holds a character RFC 2046 does not allow (byte 0x%02x)",
                        (unsigned char)b[i]);
    mp->dlen = (size_t)snprintf(mp->delim, sizeof mp->delim, "\r\n--%s", b);
    mp->state = S_PREAMBLE;
    mp->m = 2;   /* as if the body began with "\r\n" */
    return 0;
}

static void flush(qd_multipart *mp)
{
    if (mp->olen && mp->on_data)
        mp->on_data(mp->ud, mp->out, mp->olen);
    mp->olen = 0;
}

/* Data of the current part (never a delimiter's byte). */
static int emit(qd_multipart *mp, const char *p, size_t n)
{
    if (mp->state != S_BODY || mp->part == P_SKIP)
        return 0;
    if (mp->part == P_NAME) {
        if (mp->name_len + n > 200)
            return fail(mp, "the form's name field is longer than 200 bytes");
        memcpy(mp->name + mp->name_len, p, n);
        mp->name_len += n;
        mp->name[mp->name_len] = 0;
        return 0;
    }
    while (n) {
        size_t k = sizeof mp->out - mp->olen < n ? sizeof mp->out - mp->olen : n;
        memcpy(mp->out + mp->olen, p, k);
        mp->olen += k;
        p += k;
        n -= k;
        if (mp->olen == sizeof mp->out)
            flush(mp);
    }
    return 0;
}

/* A part's headers are in: what is this part? */
static int part_headers(qd_multipart *mp)
{
    int disposition = 0;
    char name[128] = "", filename[8] = "";
    int has_file = 0;
    mp->hdr[mp->hlen] = 0;
    for (char *line = mp->hdr, *end; *line; line = end + 2) {
        end = strstr(line, "\r\n");
        if (!end)
            break;
        *end = 0;
        if (!*line)
            break;   /* the empty line */
        char *colon = strchr(line, ':');
        if (!colon || colon == line)
            return fail(mp, "a part's header line is not \"Name: value\"");
        *colon = 0;
        char *v = colon + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        if (strcasecmp(line, "Content-Disposition"))
            continue;
        if (strncasecmp(v, "form-data", 9) || (v[9] && v[9] != ';' && v[9] != ' '))
            return fail(mp, "a part's Content-Disposition is not form-data");
        disposition = 1;
        int rn = param(v, "name", name, sizeof name), rf = param(v, "filename", filename, sizeof filename);
        if (rn < 0 || rf < 0)
            return fail(mp, "a part's Content-Disposition has an unclosed quote");
        has_file = rf > 0;
    }
    if (!disposition)
        return fail(mp, "a part has no Content-Disposition header");
    mp->part = P_SKIP;
    if (has_file || !strcmp(name, "file")) {
        if (++mp->nfiles > 1)
            return fail(mp, "the form holds more than one file; send one per upload");
        mp->part = P_FILE;
    } else if (!strcmp(name, "name")) {
        mp->part = P_NAME;
        mp->name_len = 0;
    }
    return 0;
}

static int delimiter_found(qd_multipart *mp)
{
    flush(mp);
    mp->state = S_AFTER;
    mp->dashes = 0;
    return 0;
}

int qd_multipart_feed(qd_multipart *mp, const char *p, size_t n)
{
    for (size_t i = 0; i < n && mp->state != S_FAILED; i++) {
        char c = p[i];
        switch (mp->state) {
        case S_PREAMBLE:
        case S_BODY:
            if (mp->m > 0 && c != mp->delim[mp->m]) {   /* a partial match fails: it was data */
                if (emit(mp, mp->delim, mp->m) < 0)
                    return -1;
                mp->m = 0;
            }
            if (c == mp->delim[mp->m]) {
                if (++mp->m == mp->dlen) {
                    mp->m = 0;
                    delimiter_found(mp);
                }
            } else if (emit(mp, &c, 1) < 0) {
                return -1;
            }
            break;
        case S_AFTER:   /* "--" ends the body; "\r\n" (after optional blanks) starts a part */
            if (mp->dashes == 1) {   /* seen "-" */
                if (c != '-')
                    return fail(mp, "a boundary is followed by neither \"--\" nor a line end");
                mp->state = S_END;
            } else if (mp->dashes == 2) {   /* seen "\r" */
                if (c != '\n')
                    return fail(mp, "a boundary is followed by neither \"--\" nor a line end");
                mp->state = S_HEADERS;
                mp->hlen = 0;
            } else if (c == '-') {
                mp->dashes = 1;
            } else if (c == '\r') {
                mp->dashes = 2;
            } else if (c != ' ' && c != '\t') {
                return fail(mp, "a boundary is followed by neither \"--\" nor a line end");
            }
            break;
        case S_HEADERS:
            if (mp->hlen + 1 >= sizeof mp->hdr)
                return fail(mp, "a part's headers are longer than %zu bytes", sizeof mp->hdr - 1);
            mp->hdr[mp->hlen++] = c;
            if ((mp->hlen == 2 && !memcmp(mp->hdr, "\r\n", 2)) ||
                (mp->hlen >= 4 && !memcmp(mp->hdr + mp->hlen - 4, "\r\n\r\n", 4))) {
                if (part_headers(mp) < 0)
                    return -1;
                mp->state = S_BODY;
                mp->m = 0;
            }
            break;
        case S_END:   /* the epilogue: ignored */
            return 0;
        }
    }
    if (mp->state == S_FAILED)
        return -1;
    flush(mp);   /* out holds only bytes known to be data: a partial match lives in m alone */
    return 0;
}

int qd_multipart_finish(qd_multipart *mp)
{
    if (mp->state == S_FAILED)
        return -1;
    if (mp->state != S_END)
        return fail(mp, mp->state == S_PREAMBLE ? "the body has no multipart boundary line (\"--%s\")"
                                                : "the multipart body ends before its closing boundary (\"--%s--\")",
                    mp->delim + 4);
    if (!mp->nfiles)
        return fail(mp, "the form has no file: send it as a file field (curl -F file=@model.onnx)");
    return 0;
}
