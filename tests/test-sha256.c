/* SHA-256 (common/sha256.c) against the FIPS 180-2 appendix B examples, streaming in odd chunk
 * sizes, and the file helper. */
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

TEST_MAIN(fips_examples, million_a_in_any_chunking, file_helper)
