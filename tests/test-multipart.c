/* The multipart/form-data parser (api/multipart.c): the file part comes out byte for byte whatever
 * the chunking (every split point of the body, and one byte at a time), when the data is full of
 * near misses of the delimiter (its prefixes, CRLFs, dashes), and for random data over the
 * delimiter's own alphabet, against a reference: the body cut at the delimiter with memmem. */
#include "harness.h"
#include "api/multipart.h"

#include <stdint.h>

typedef struct { char buf[1 << 16]; size_t n; } sink;

static void collect(void *ud, const char *p, size_t n)
{
    sink *s = ud;
    ASSERT(s->n + n <= sizeof s->buf);
    memcpy(s->buf + s->n, p, n);
    s->n += n;
}

/* body: preamble, a text field, the file, an epilogue */
static size_t make_body(char *out, const char *boundary, const char *file, size_t flen)
{
    size_t k = (size_t)sprintf(out, "preamble\r\n--%s\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nmy model"
                                    "\r\n--%s  \r\nContent-Disposition: form-data; name=\"file\"; filename=\"m.onnx\"\r\n"
                                    "Content-Type: application/octet-stream\r\n\r\n", boundary, boundary);
    memcpy(out + k, file, flen);
    k += flen;
    k += (size_t)sprintf(out + k, "\r\n--%s--\r\nepilogue", boundary);
    return k;
}

/* Parses body split at `split` (and then in pieces of `step`), checks the file and the name. */
static void parse_check(const char *ct, const char *body, size_t blen, size_t split, size_t step, const char *file,
                        size_t flen)
{
    static qd_multipart mp;
    static sink s;
    s.n = 0;
    ASSERT_EQ(qd_multipart_init(&mp, ct, collect, &s), 0);
    ASSERT_EQ(qd_multipart_feed(&mp, body, split), 0);
    for (size_t i = split; i < blen; i += step)
        ASSERT_EQ(qd_multipart_feed(&mp, body + i, i + step < blen ? step : blen - i), 0);
    if (qd_multipart_finish(&mp) < 0)
        QT_FAIL_("finish: %s", mp.err);
    ASSERT_EQ(s.n, flen);
    ASSERT(!memcmp(s.buf, file, flen));
    ASSERT_STR_EQ(mp.name, "my model");
}

TEST(every_split_point_and_byte_at_a_time)
{
    const char *b = "----WebKitFormBoundary7MA4YWxkTrZu0gW";
    char file[600], body[2048], ct[128], delim[80];
    /* the data is made of the delimiter's prefixes and line ends */
    snprintf(delim, sizeof delim, "\r\n--%s", b);
    size_t dl = strlen(delim), flen = 0;
    for (size_t i = 0; flen + dl < sizeof file; i++) {
        size_t cut = 1 + (i * 7) % (dl - 1);   /* never the whole delimiter */
        memcpy(file + flen, delim, cut);
        flen += cut;
        file[flen++] = "x\r\n-"[i % 4];
    }
    size_t blen = make_body(body, b, file, flen);
    snprintf(ct, sizeof ct, "multipart/form-data; boundary=\"%s\"", b);
    for (size_t split = 0; split <= blen; split++)
        parse_check(ct, body, blen, split, blen, file, flen);
    parse_check(ct, body, blen, 0, 1, file, flen);
    parse_check(ct, body, blen, 3, 5, file, flen);
}

TEST(random_near_misses_against_memmem)
{
    /* boundary "-a-a-ab" (delimiter "\r\n---a-a-ab"): random data over its alphabet makes many
     * partial matches of every length */
    const char *b = "-a-a-ab";
    char delim[32], ct[64];
    snprintf(delim, sizeof delim, "\r\n--%s", b);
    snprintf(ct, sizeof ct, "multipart/form-data; boundary=%s", b);
    uint32_t x = 12345;
    static char file[4096], body[8192];
    for (int round = 0; round < 200; round++) {
        size_t flen = 1 + round * 13 % 4000;
        for (size_t i = 0; i < flen; i++) {
            x = x * 1103515245u + 12345u;
            file[i] = "\r\n-ab"[(x >> 16) % 5];
        }
        if (memmem(file, flen, delim, strlen(delim)) || (flen >= 1 && file[flen - 1] == '\r'))
            continue;   /* not a valid file for this boundary (nor one a sender would pick it for) */
        size_t blen = make_body(body, b, file, flen);
        /* the reference: the file is what lies between its part's header end and the next delimiter */
        const char *start = strstr(body, "octet-stream\r\n\r\n") + 16;
        const char *end = memmem(start, blen - (size_t)(start - body), delim, strlen(delim));
        ASSERT(end && (size_t)(end - start) == flen && !memcmp(start, file, flen));
        parse_check(ct, body, blen, (size_t)round % blen, 1 + (size_t)round % 17, file, flen);
    }
}

TEST(malformed_bodies_are_refused_with_a_reason)
{
    static qd_multipart mp;
    ASSERT_EQ(qd_multipart_init(&mp, "multipart/form-data", NULL, NULL), -1);
    ASSERT_STR_CONTAINS(mp.err, "boundary");
    ASSERT_EQ(qd_multipart_init(&mp, "multipart/form-data; boundary=a\x01", NULL, NULL), -1);
    ASSERT_STR_CONTAINS(mp.err, "0x01");
    const struct { const char *body; int feed_fails; const char *words; } bad[] = {
        { "--x\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nabc", 0, "closing boundary" },
        { "--x\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nabc\r\n--x--", 0, "no file" },
        { "--x\r\nContent-Disposition: form-data; name=\"a\r\n\r\nabc\r\n--x--", 1, "unclosed quote" },
        { "--x\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\n"
          "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
          "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
          "0\r\n--x--", 1, "longer than 200" },
        { "--x--", 0, "no file" },
        { "", 0, "no multipart boundary line" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ASSERT_EQ(qd_multipart_init(&mp, "multipart/form-data; boundary=x", NULL, NULL), 0);
        int rc = qd_multipart_feed(&mp, bad[i].body, strlen(bad[i].body));
        ASSERT_EQ(rc, bad[i].feed_fails ? -1 : 0);
        ASSERT_EQ(qd_multipart_finish(&mp), -1);
        ASSERT_STR_CONTAINS(mp.err, bad[i].words);
    }
}

TEST_MAIN(every_split_point_and_byte_at_a_time, random_near_misses_against_memmem,
          malformed_bodies_are_refused_with_a_reason)
