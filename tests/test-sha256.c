/* SHA-256 (common/sha256.c) against the FIPS 180-2 appendix B examples, streaming in odd chunk
 * sizes, and the file helper; HMAC-SHA256 against RFC 4231's test cases. */
#include "harness.h"
#include "common/sha256.h"

#include <stdint.h>

static void hex_of(const void *data, size_t n, size_t chunk, char out[65])
{
    qd_sha256 s;
    qd_sha256_init(&s);
    const uint8_t *p = data;
    while (n) {
        size_t k = chunk < n ? chunk : n;
        qd_sha256_update(&s, p, k);
        p += k;
        n -= k;
    }
    qd_sha256_hex(&s, out);
}

TEST(fips_examples)
{
    char h[65];
    hex_of("abc", 3, 3, h);
    ASSERT_STR_EQ(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    hex_of("", 0, 1, h);
    ASSERT_STR_EQ(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";   /* 448 bits: padding spills */
    hex_of(m, strlen(m), 64, h);
    ASSERT_STR_EQ(h, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST(million_a_in_any_chunking)
{
    static char a[1000000];
    memset(a, 'a', sizeof a);
    static const size_t chunks[] = { 1, 7, 63, 64, 65, 4096, 1000000 };
    for (size_t i = 0; i < sizeof chunks / sizeof chunks[0]; i++) {
        char h[65];
        hex_of(a, sizeof a, chunks[i], h);
        ASSERT_STR_EQ(h, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    }
}

TEST(file_helper)
{
    char path[] = "/tmp/qd-sha256-XXXXXX";
    int fd = mkstemp(path);
    ASSERT(fd >= 0);
    ASSERT_EQ(write(fd, "abc", 3), 3);
    close(fd);
    char h[65];
    int64_t size = -1;
    ASSERT_EQ(qd_sha256_file(path, h, &size), 0);
    ASSERT_EQ(size, 3);
    ASSERT_STR_EQ(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    unlink(path);
    ASSERT_EQ(qd_sha256_file(path, h, NULL), -1);   /* gone: an error, not a hash */
}

/* RFC 4231 section 4: cases 1–4, 6 and 7 (5 is a truncated output): short keys, a key and data
 * with every byte value pattern, and keys longer than the block (hashed first). */
TEST(hmac_rfc4231)
{
    uint8_t k20b[20], k20a[20], d50d[50], k25[25], d50c[50], k131[131];
    memset(k20b, 0x0b, sizeof k20b);
    memset(k20a, 0xaa, sizeof k20a);
    memset(d50d, 0xdd, sizeof d50d);
    for (int i = 0; i < 25; i++)
        k25[i] = (uint8_t)(i + 1);
    memset(d50c, 0xcd, sizeof d50c);
    memset(k131, 0xaa, sizeof k131);
    const char *big = "This is a test using a larger than block-size key and a larger than block-size data. The key "
                      "needs to be hashed before being used by the HMAC algorithm.";
    const char *hi = "Test Using Larger Than Block-Size Key - Hash Key First";
    struct { const void *k; size_t kl; const void *m; size_t ml; const char *want; } c[] = {
        { k20b, 20, "Hi There", 8, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7" },
        { "Jefe", 4, "what do ya want for nothing?", 28,
          "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843" },
        { k20a, 20, d50d, 50, "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe" },
        { k25, 25, d50c, 50, "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b" },
        { k131, 131, hi, strlen(hi), "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54" },
        { k131, 131, big, strlen(big), "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2" },
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        uint8_t mac[32];
        char hex[65];
        qd_hmac_sha256(c[i].k, c[i].kl, c[i].m, c[i].ml, mac, hex);
        ASSERT_STR_EQ(hex, c[i].want);
        char again[65];   /* the raw bytes and the hex agree */
        for (int b = 0; b < 32; b++)
            snprintf(again + 2 * b, 3, "%02x", mac[b]);
        ASSERT_STR_EQ(again, hex);
    }
}

TEST_MAIN(fips_examples, million_a_in_any_chunking, file_helper, hmac_rfc4231)
