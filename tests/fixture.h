/* The committed fixtures (tests/fixtures/, made by tests/fixtures/make_*.py) as tests load them:
 * a path that must exist, a graph, the first rows of a .npy. Each fails the test, naming the file,
 * when the fixture is missing or does not load (harness.h's ASSERT_FIXTURE). */
#ifndef QD_TESTS_FIXTURE_H
#define QD_TESTS_FIXTURE_H

#include <stdio.h>
#include <string.h>

#include "engine/data.h"
#include "engine/onnx.h"
#include "tests/harness.h"

/* buf = QD_SRCDIR/tests/fixtures/name; fails the test if the file is missing */
static inline const char *qt_fixture_path(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "%s/tests/fixtures/%s", QD_SRCDIR, name);
    ASSERT_FIXTURE(buf);
    return buf;
}

static inline qs_graph *qt_fixture_graph(const char *name)
{
    char path[1024];
    qs_graph *g;
    qs_err e = {0};
    if (qs_onnx_load(qt_fixture_path(path, sizeof path, name), &g, &e) < 0)
        QT_FAIL_("%s: %s", path, e.msg);
    return g;
}

/* A copy of the first min(rows, all) rows of the fixture's first array; rows < 0: all of them. */
static inline qs_tensor *qt_fixture_rows(const char *name, int64_t rows)
{
    char path[1024];
    qs_dataset *d;
    qs_err e = {0};
    if (qs_dataset_open(qt_fixture_path(path, sizeof path, name), &d, &e) < 0)
        QT_FAIL_("%s: %s", path, e.msg);
    const qs_tensor *a = qs_dataset_array(d, 0);
    int64_t shape[QS_MAX_DIMS];
    memcpy(shape, a->shape, sizeof shape);
    if (rows >= 0 && rows < a->shape[0])
        shape[0] = rows;
    qs_tensor *t = qs_tensor_new(QS_F32, a->ndim, shape);
    ASSERT(t && qs_copy_rows(a, 0, shape[0], t, &e) == 0);
    qs_dataset_close(d);
    return t;
}

#endif
