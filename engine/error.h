/* Errors, engine side: the public part (codes, qs_err, qs_error) is <quant/error.h>; QS_ASSERT,
 * for programmer errors only, stays inside the library. */
#ifndef QS_ERROR_H
#define QS_ERROR_H

#include <stdio.h>
#include <stdlib.h>

#include <quant/error.h>

#define QS_ASSERT(c) do { if (!(c)) { fprintf(stderr, "%s:%d: assertion failed: %s\n", __FILE__, __LINE__, #c); \
                                     abort(); } } while (0)

#endif
