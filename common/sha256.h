/* SHA-256, streaming: uploads are hashed as they arrive, artifacts as they are listed. A thin
 * wrapper over nettle (Debian's nettle-dev, already a dependency of libmicrohttpd's TLS stack),
 * which keeps one small interface for the daemon and the CLI.
 *
 *   qd_sha256 h;
 *   qd_sha256_init(&h);
 *   qd_sha256_update(&h, buf, n);          // any number of times
 *   char hex[65];
 *   qd_sha256_hex(&h, hex);                // finishes; hex is lower-case, NUL-terminated
 *
 * And HMAC-SHA256 (RFC 2104) on top, for signing webhook bodies. */
#ifndef QD_SHA256_H
#define QD_SHA256_H

#include <nettle/sha2.h>
#include <stddef.h>
#include <stdint.h>

typedef struct qd_sha256 {
    struct sha256_ctx ctx;
    uint64_t len;        /* bytes hashed so far */
} qd_sha256;

void qd_sha256_init(qd_sha256 *s);
void qd_sha256_update(qd_sha256 *s, const void *data, size_t n);
void qd_sha256_final(qd_sha256 *s, uint8_t out[32]);
void qd_sha256_hex(qd_sha256 *s, char out[65]);
/* Hashes a whole file; 0, or -1 with errno set. size (may be NULL) receives its length. */
int qd_sha256_file(const char *path, char out[65], int64_t *size);
/* HMAC-SHA256 of msg under key (any length); hex (may be NULL) receives it in lower-case hex. */
void qd_hmac_sha256(const void *key, size_t klen, const void *msg, size_t n, uint8_t out[32], char hex[65]);

#endif
