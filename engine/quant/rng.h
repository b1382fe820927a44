/* splitmix64 (Steele, Lea, Flood 2014): a small seedable generator, good enough to draw samples,
 * columns and data orders; also a hash of its state (one call on seed + k golden-ratio steps gives
 * the k-th value of the stream from seed, independent of any other).
 *   uint64_t s = seed;  uint64_t r = qs_splitmix64(&s);
 */
#ifndef QS_RNG_H
#define QS_RNG_H
#include <stdint.h>

#define QS_SPLITMIX_GAMMA 0x9e3779b97f4a7c15ull

static inline uint64_t qs_splitmix64(uint64_t *s)
{
    uint64_t z = (*s += QS_SPLITMIX_GAMMA);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

#endif
