/* SHA-256 (FIPS 180-4), streaming: uploads are hashed as they arrive, artifacts as they are listed.
 *
 *   qd_sha256 h;
 *   qd_sha256_init(&h);
 *   qd_sha256_update(&h, buf, n);          // any number of times
 *   char hex[65];
 *   qd_sha256_hex(&h, hex);                // finishes; hex is lower-case, NUL-terminated
 *
 * Written here (about a hundred lines) so that neither the daemon nor the CLI needs libcrypto. */
#ifndef QD_SHA256_H
#define QD_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct qd_sha256 {
    uint32_t h[8];
    uint64_t len;        /* bytes hashed so far */
    uint8_t block[64];
    size_t fill;         /* bytes waiting in block */
} qd_sha256;

void qd_sha256_init(qd_sha256 *s);
void qd_sha256_update(qd_sha256 *s, const void *data, size_t n);
void qd_sha256_final(qd_sha256 *s, uint8_t out[32]);
void qd_sha256_hex(qd_sha256 *s, char out[65]);
/* Hashes a whole file; 0, or -1 with errno set. size (may be NULL) receives its length. */
int qd_sha256_file(const char *path, char out[65], int64_t *size);

#endif
