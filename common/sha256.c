/* SHA-256 on nettle; see sha256.h. */
#include "common/sha256.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

void qd_sha256_init(qd_sha256 *s)
{
    sha256_init(&s->ctx);
    s->len = 0;
}

void qd_sha256_update(qd_sha256 *s, const void *data, size_t n)
{
    sha256_update(&s->ctx, n, data);
    s->len += n;
}

void qd_sha256_final(qd_sha256 *s, uint8_t out[32])
{
    sha256_digest(&s->ctx, SHA256_DIGEST_SIZE, out);
}

void qd_sha256_hex(qd_sha256 *s, char out[65])
{
    uint8_t d[32];
    qd_sha256_final(s, d);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

int qd_sha256_file(const char *path, char out[65], int64_t *size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    qd_sha256 s;
    qd_sha256_init(&s);
    static __thread uint8_t buf[1 << 16];
    for (;;) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            int saved = errno;
            close(fd);
            errno = saved;
            return -1;
        }
        if (r == 0)
            break;
        qd_sha256_update(&s, buf, (size_t)r);
    }
    close(fd);
    if (size)
        *size = (int64_t)s.len;
    qd_sha256_hex(&s, out);
    return 0;
}

/* RFC 2104: H((K ^ opad) || H((K ^ ipad) || msg)), K the key zero-padded to the block size (64
 * bytes), or its hash when longer than a block. */
void qd_hmac_sha256(const void *key, size_t klen, const void *msg, size_t n, uint8_t out[32], char hex[65])
{
    uint8_t k[64] = { 0 }, pad[64], inner[32];
    qd_sha256 h;
    if (klen > sizeof k) {
        qd_sha256_init(&h);
        qd_sha256_update(&h, key, klen);
        qd_sha256_final(&h, k);
    } else if (klen) {
        memcpy(k, key, klen);
    }
    for (int i = 0; i < 64; i++)
        pad[i] = k[i] ^ 0x36;
    qd_sha256_init(&h);
    qd_sha256_update(&h, pad, sizeof pad);
    qd_sha256_update(&h, msg, n);
    qd_sha256_final(&h, inner);
    for (int i = 0; i < 64; i++)
        pad[i] = k[i] ^ 0x5c;
    qd_sha256_init(&h);
    qd_sha256_update(&h, pad, sizeof pad);
    qd_sha256_update(&h, inner, sizeof inner);
    qd_sha256_final(&h, out);
    if (hex)
        for (int i = 0; i < 32; i++)
            snprintf(hex + 2 * i, 3, "%02x", out[i]);
}
