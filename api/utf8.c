/* UTF-8 for JSON replies: jansson accepts nothing else, and error messages quote what a client sent
 * (a URL, a key, a file's header), which may be any bytes at all. See api.h. */
#include "config.h"
#include "api/api.h"

#include <string.h>

/* Length of the valid UTF-8 character at s (1 to 4), or 0 when s does not start one (RFC 3629:
 * no overlong forms, no surrogates, nothing above U+10FFFF). */
static size_t utf8_char(const unsigned char *s)
{
    unsigned c = s[0];
    if (c < 0x80)
        return 1;
    size_t n;
    unsigned lo = 0x80, hi = 0xbf;   /* bounds of the second byte */
    if (c >= 0xc2 && c <= 0xdf)
        n = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
    } else
        return 0;
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    return n;
}

size_t qd_utf8_prefix(const char *s, size_t max)
{
    size_t len = strnlen(s, max);
    if (len < max)
        return len;
    /* back off over continuation bytes to the start of the character that was cut */
    size_t k = len;
    while (k > 0 && len - k < 4 && ((unsigned char)s[k] & 0xc0) == 0x80)
        k--;
    return ((unsigned char)s[k] & 0xc0) == 0x80 ? len : k;
}

void qd_utf8_clean(char *dst, size_t n, const char *src)
{
    static const char fffd[] = "\xef\xbf\xbd";   /* U+FFFD REPLACEMENT CHARACTER */
    const unsigned char *s = (const unsigned char *)src;
    size_t k = 0;
    while (*s) {
        size_t c = utf8_char(s);
        const char *put = c ? (const char *)s : fffd;
        size_t len = c ? c : 3;
        if (k + len >= n)   /* cut between characters only */
            break;
        memcpy(dst + k, put, len);
        k += len;
        s += c ? c : 1;
    }
    dst[k] = 0;
}

int qd_utf8_valid(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        size_t c = utf8_char(p);
        if (!c)
            return 0;
        p += c;
    }
    return 1;
}
