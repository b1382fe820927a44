/* Data sets: .npy/.npz reading (ours and numpy's files), conversion in batches, writing. */
#include "harness.h"

#include <dirent.h>
#include <signal.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <zip.h>

#include "engine/data.h"

static char dir[256];

static void rm_tmp(void)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "# could not remove %s\n", dir);
}

static void mkdir_tmp(void)
{
    snprintf(dir, sizeof dir, "/tmp/test-data-XXXXXX");
    ASSERT(mkdtemp(dir));
    atexit(rm_tmp);
}

static const char *tmp_path(const char *name)
{
    static char p[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", dir, name);
    return p[k];
}

static void write_file(const char *path, const void *buf, size_t n)
{
    FILE *f = fopen(path, "wb");
    ASSERT(f);
    ASSERT_EQ(fwrite(buf, 1, n, f), n);
    fclose(f);
}

static const char *fixture(const char *name)
{
    static char p[1024];
    const char *src = getenv("QD_SRCDIR");
    snprintf(p, sizeof p, "%s/tests/fixtures/data/%s", src ? src : QD_SRCDIR, name);
    return p;
}

/* A .npy made by hand: given version, dict text, padding to `pad` total header bytes, data bytes. */
static size_t handmade(uint8_t *buf, int major, const char *dict, const void *data, size_t nd)
{
    size_t pre = major == 1 ? 10 : 12, dl = strlen(dict);
    memcpy(buf, "\x93NUMPY", 6);
    buf[6] = (uint8_t)major;
    buf[7] = 0;
    size_t hlen = dl + 1;   /* no padding: data deliberately misaligned for most dicts */
    for (size_t i = 0; i < pre - 8; i++)
        buf[8 + i] = (uint8_t)(hlen >> (8 * i));
    memcpy(buf + pre, dict, dl);
    buf[pre + dl] = '\n';
    memcpy(buf + pre + hlen, data, nd);
    return pre + hlen + nd;
}

static qs_dataset *open_ok(const char *path)
{
    qs_err e = {0};
    qs_dataset *d = NULL;
    int rc = qs_dataset_open(path, &d, &e);
    if (rc < 0)
        QT_FAIL_("opening %s: %s", path, e.msg);
    return d;
}

static void expect_error(const char *path, const char *needle)
{
    qs_err e = {0};
    qs_dataset *d = NULL;
    int rc = qs_dataset_open(path, &d, &e);
    ASSERT(rc < 0);
    ASSERT(d == NULL);
    ASSERT_STR_CONTAINS(e.msg, needle);
    ASSERT_STR_CONTAINS(e.msg, path);   /* every message names the file */
}

TEST(npy_roundtrip_every_dtype)
{
    mkdir_tmp();
    qs_dtype types[] = {QS_F32, QS_F64, QS_I64, QS_I32, QS_I16, QS_U16, QS_U8, QS_I8, QS_BOOL};
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        int64_t shape[] = {3, 2, 5};
        qs_tensor *t = qs_tensor_new(types[k], 3, shape);
        qs_tensor *f = qs_tensor_new(QS_F64, 3, shape);
        int is_unsigned = types[k] == QS_U8 || types[k] == QS_U16;
        for (int i = 0; i < 30; i++)
            ((double *)f->data)[i] = types[k] == QS_BOOL ? i % 3 == 0 : is_unsigned ? i * 3 : i * 3 - 40;
        qs_tensor *c = qs_tensor_cast(f, types[k]);
        memcpy(t->data, c->data, qs_nbytes(t));
        qs_err e = {0};
        ASSERT_EQ(qs_npy_save(tmp_path("a.npy"), t, &e), 0);
        qs_dataset *d = open_ok(tmp_path("a.npy"));
        ASSERT_EQ(qs_dataset_count(d), 1);
        ASSERT_STR_EQ(qs_dataset_name(d, 0), "");
        ASSERT_EQ(qs_dataset_find(d, ""), 0);
        const qs_tensor *v = qs_dataset_array(d, 0);
        ASSERT_EQ(v->dtype, types[k]);
        ASSERT_EQ(v->ndim, 3);
        ASSERT(qs_shape_eq(v, t));
        ASSERT_EQ(qs_dataset_rows(d, 0), 3);
        ASSERT(!memcmp(v->data, t->data, qs_nbytes(t)));
        qs_dataset_close(d);
        qs_tensor_free(t);
        qs_tensor_free(f);
        qs_tensor_free(c);
    }
    rm_tmp();
}

TEST(npy_header_follows_nep1)
{
    mkdir_tmp();
    int64_t shape[] = {7};
    qs_tensor *t = qs_tensor_new(QS_F32, 1, shape);
    qs_err e = {0};
    ASSERT_EQ(qs_npy_save(tmp_path("a.npy"), t, &e), 0);
    FILE *f = fopen(tmp_path("a.npy"), "rb");
    uint8_t b[256];
    size_t n = fread(b, 1, sizeof b, f);
    fclose(f);
    ASSERT(!memcmp(b, "\x93NUMPY\x01\x00", 8));
    size_t hlen = b[8] | b[9] << 8;
    ASSERT_EQ((10 + hlen) % 64, 0);              /* data aligned as numpy aligns it */
    ASSERT_EQ(n, 10 + hlen + 7 * 4);
    ASSERT_EQ(b[10 + hlen - 1], '\n');
    char head[256];
    memcpy(head, b + 10, hlen);
    head[hlen] = 0;
    ASSERT_STR_CONTAINS(head, "{'descr': '<f4', 'fortran_order': False, 'shape': (7,), }");
    qs_tensor_free(t);
    rm_tmp();
}

TEST(npy_scalar_and_empty)
{
    mkdir_tmp();
    qs_tensor *s = qs_tensor_new(QS_F64, 0, NULL);
    ((double *)s->data)[0] = 2.5;
    int64_t shape[] = {0, 4};
    qs_tensor *z = qs_tensor_new(QS_I32, 2, shape);
    qs_err e = {0};
    ASSERT_EQ(qs_npy_save(tmp_path("s.npy"), s, &e), 0);
    ASSERT_EQ(qs_npy_save(tmp_path("z.npy"), z, &e), 0);
    qs_dataset *d = open_ok(tmp_path("s.npy"));
    ASSERT_EQ(qs_dataset_array(d, 0)->ndim, 0);
    ASSERT_EQ(((double *)qs_dataset_array(d, 0)->data)[0], 2.5);
    qs_dataset_close(d);
    d = open_ok(tmp_path("z.npy"));
    ASSERT_EQ(qs_dataset_rows(d, 0), 0);
    ASSERT_EQ(qs_dataset_array(d, 0)->shape[1], 4);
    qs_dataset_close(d);
    qs_tensor_free(s);
    qs_tensor_free(z);
    rm_tmp();
}

TEST(handwritten_headers_v1_v2_v3)
{
    mkdir_tmp();
    float vals[6] = {1.5f, -2, 3, 4.25f, 5, -6};
    uint8_t buf[512];
    /* double quotes, no trailing comma, other key order, extra spaces: all legal Python */
    const char *dicts[3] = {
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
        "{\"shape\": (2,3), \"fortran_order\": False, \"descr\": \"<f4\"}",
        "{ 'fortran_order' : False , 'descr' : '<f4' , 'shape' : ( 2 , 3 ) }   ",
    };
    for (int v = 1; v <= 3; v++) {
        size_t n = handmade(buf, v, dicts[v - 1], vals, sizeof vals);
        write_file(tmp_path("h.npy"), buf, n);
        qs_dataset *d = open_ok(tmp_path("h.npy"));
        const qs_tensor *t = qs_dataset_array(d, 0);
        ASSERT_EQ(t->dtype, QS_F32);
        ASSERT_EQ(t->ndim, 2);
        ASSERT_EQ(t->shape[0], 2);
        ASSERT_EQ(t->shape[1], 3);
        ASSERT_EQ((uintptr_t)t->data % 4, 0);   /* misaligned in the file: copied */
        for (int i = 0; i < 6; i++)
            ASSERT_EQ(qs_f32(t)[i], vals[i]);
        qs_dataset_close(d);
    }
    rm_tmp();
}

TEST(handwritten_bad_files)
{
    mkdir_tmp();
    float vals[6] = {0};
    uint8_t buf[512];
    struct { int v; const char *dict; size_t nd; const char *err; } cases[] = {
        {1, "{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }", 24, "big-endian"},
        {1, "{'descr': '|O', 'fortran_order': False, 'shape': (2, 3), }", 24, "object arrays"},
        {1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", 24,
         "Fortran-order arrays are not supported; save with np.ascontiguousarray"},
        {1, "{'descr': '<f2', 'fortran_order': False, 'shape': (2, 3), }", 12, "dtype '<f2' is not supported"},
        {1, "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }", 8, "structured"},
        {1, "{'descr': '<f4', 'shape': (2, 3), }", 24, "missing 'fortran_order'"},
        {1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, x), }", 24, "bad 'shape'"},
        {1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'x': 1}", 24, "unexpected key 'x'"},
        {1, "['descr']", 24, "expected a dict"},
        {1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 20, "truncated"},
        {2, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 23, "needs 24 data bytes"},
        {1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,2,3,4,5,6,7,8,9), }", 24, "more than 8"},
        /* empty, but a row's element count overflows int64 (a fuzzing finding: UB in qs_shape_numel) */
        {1, "{'descr': '>i1', 'fortran_order': False, 'shape': (1, 2, 1,3, 2222222222222222212, 0,3), }", 0,
         "array too large"},
        {1, "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 3074457345618258603, 3), }", 0, "array too large"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        size_t n = handmade(buf, cases[k].v, cases[k].dict, vals, cases[k].nd);
        write_file(tmp_path("bad.npy"), buf, n);
        expect_error(tmp_path("bad.npy"), cases[k].err);
    }
    /* bad magic, unknown version, header longer than the file, empty file, missing file */
    size_t n = handmade(buf, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", vals, 24);
    buf[1] = 'X';
    write_file(tmp_path("bad.npy"), buf, n);
    expect_error(tmp_path("bad.npy"), "bad magic");
    buf[1] = 'N';
    buf[6] = 4;
    write_file(tmp_path("bad.npy"), buf, n);
    expect_error(tmp_path("bad.npy"), "version 4.0 is not supported");
    buf[6] = 1;
    write_file(tmp_path("bad.npy"), buf, 40);
    expect_error(tmp_path("bad.npy"), "truncated .npy header");
    write_file(tmp_path("bad.npy"), buf, 0);
    expect_error(tmp_path("bad.npy"), "empty file");
    expect_error(tmp_path("missing.npy"), "No such file");
    write_file(tmp_path("bad.npz"), "hello world", 11);
    expect_error(tmp_path("bad.npz"), "not a .npz");
    static const char fake_zip[] = "PK\x03\x04 not really a zip";
    write_file(tmp_path("bad2.npz"), fake_zip, sizeof fake_zip - 1);
    expect_error(tmp_path("bad2.npz"), "not a valid .npz");
    rm_tmp();
}

/* the formulas of tests/fixtures/make_data.py */
static void check_fixture_f32(const qs_tensor *t)
{
    ASSERT_EQ(t->dtype, QS_F32);
    ASSERT_EQ(t->ndim, 2);
    ASSERT_EQ(t->shape[0], 3);
    ASSERT_EQ(t->shape[1], 4);
    for (int i = 0; i < 12; i++)
        ASSERT_EQ(qs_f32(t)[i], i * 0.5f - 1);
}

static void check_fixture_i64(const qs_tensor *t)
{
    ASSERT_EQ(t->dtype, QS_I64);
    ASSERT_EQ(t->ndim, 1);
    ASSERT_EQ(t->shape[0], 5);
    for (int i = 0; i < 5; i++)
        ASSERT_EQ(qs_i64(t)[i], (int64_t)(i - 2) * ((int64_t)1 << 40));
}

static void check_fixture_u8(const qs_tensor *t)
{
    ASSERT_EQ(t->dtype, QS_U8);
    ASSERT_EQ(t->ndim, 3);
    ASSERT_EQ(t->shape[2], 2);
    for (int i = 0; i < 12; i++)
        ASSERT_EQ(qs_u8(t)[i], (i * 23) % 256);
}

static void check_fixture_f64(const qs_tensor *t)
{
    ASSERT_EQ(t->dtype, QS_F64);
    ASSERT_EQ(t->shape[0], 2);
    ASSERT_EQ(t->shape[1], 3);
    for (int i = 0; i < 6; i++)
        ASSERT_EQ(((double *)t->data)[i], i / 3.0);
}

static void check_fixture_i32(const qs_tensor *t)
{
    ASSERT_EQ(t->dtype, QS_I32);
    for (int i = 0; i < 4; i++)
        ASSERT_EQ(qs_i32(t)[i], i * 1000 - 1500);
}

TEST(numpy_npy_fixtures)
{
    struct { const char *file; void (*check)(const qs_tensor *); } f[] = {
        {"f32.npy", check_fixture_f32}, {"f32_v2.npy", check_fixture_f32}, {"f32_v3.npy", check_fixture_f32},
        {"i64.npy", check_fixture_i64}, {"u8.npy", check_fixture_u8}, {"f64.npy", check_fixture_f64},
        {"i32.npy", check_fixture_i32},
    };
    for (size_t k = 0; k < sizeof f / sizeof f[0]; k++) {
        qs_dataset *d = open_ok(fixture(f[k].file));
        f[k].check(qs_dataset_array(d, 0));
        qs_dataset_close(d);
    }
    qs_dataset *d = open_ok(fixture("i8.npy"));
    for (int i = 0; i < 4; i++)
        ASSERT_EQ(qs_i8(qs_dataset_array(d, 0))[i], i * 50 - 100);
    qs_dataset_close(d);
    d = open_ok(fixture("b1.npy"));
    ASSERT_EQ(qs_dataset_array(d, 0)->dtype, QS_BOOL);
    for (int i = 0; i < 5; i++)
        ASSERT_EQ(qs_u8(qs_dataset_array(d, 0))[i], i % 2 == 0);
    qs_dataset_close(d);
}

TEST(numpy_refused_fixtures)
{
    char want[1200];
    snprintf(want, sizeof want, "%s: Fortran-order arrays are not supported; save with np.ascontiguousarray",
             fixture("fortran.npy"));
    qs_err e = {0};
    qs_dataset *d;
    ASSERT(qs_dataset_open(fixture("fortran.npy"), &d, &e) < 0);
    ASSERT_STR_EQ(e.msg, want);
    expect_error(fixture("bigendian.npy"), "big-endian dtype '>f4'");
    expect_error(fixture("object.npy"), "object arrays");
}

TEST(numpy_npz_stored_and_deflated)
{
    qs_dataset *d = open_ok(fixture("stored.npz"));
    ASSERT_EQ(qs_dataset_count(d), 3);
    ASSERT_EQ(qs_dataset_find(d, "nope"), -1);
    check_fixture_f32(qs_dataset_array(d, qs_dataset_find(d, "ab")));
    check_fixture_i64(qs_dataset_array(d, qs_dataset_find(d, "i64")));
    check_fixture_u8(qs_dataset_array(d, qs_dataset_find(d, "u8")));
    qs_dataset_close(d);
    /* numpy writes zip64 extras; "ab.npy" is aligned and read in place, "i64.npy" needs a temp file */
    setenv("TMPDIR", "/nonexistent-quantd-dir", 1);
    expect_error(fixture("stored.npz"), "member 'i64.npy': cannot create a temp file");
    unsetenv("TMPDIR");

    d = open_ok(fixture("deflated.npz"));
    ASSERT_EQ(qs_dataset_count(d), 3);
    check_fixture_f64(qs_dataset_array(d, qs_dataset_find(d, "f64")));
    check_fixture_i32(qs_dataset_array(d, qs_dataset_find(d, "i32")));
    int b = qs_dataset_find(d, "big");
    ASSERT_EQ(qs_dataset_rows(d, b), 1000);
    const qs_tensor *big = qs_dataset_array(d, b);
    for (int i = 0; i < 3000; i++)
        ASSERT_EQ(qs_f32(big)[i], (float)i);
    qs_dataset_close(d);
}

TEST(deflated_members_go_through_tmpdir)
{
    mkdir_tmp();
    setenv("TMPDIR", dir, 1);
    qs_dataset *d = open_ok(fixture("deflated.npz"));
    DIR *dd = opendir(dir);
    struct dirent *ent;
    int files = 0;
    while ((ent = readdir(dd)))
        files += ent->d_name[0] != '.';
    closedir(dd);
    ASSERT_EQ(files, 0);   /* the temp files are unlinked while mapped */
    qs_dataset_close(d);
    setenv("TMPDIR", "/nonexistent-quantd-dir", 1);
    expect_error(fixture("deflated.npz"), "cannot create a temp file in /nonexistent-quantd-dir");
    rm_tmp();
}

TEST(npz_roundtrip_in_place_and_extracted)
{
    mkdir_tmp();
    int64_t s1[] = {4, 3}, s2[] = {6};
    qs_tensor *a = qs_tensor_new(QS_F32, 2, s1), *b = qs_tensor_new(QS_I64, 1, s2);
    for (int i = 0; i < 12; i++)
        qs_f32(a)[i] = i * 1.25f - 3;
    for (int i = 0; i < 6; i++)
        qs_i64(b)[i] = -i * 100000000000LL;
    qs_err e = {0};
    /* Our writer pads each .npy header so that every member's data is aligned in the archive,
     * whatever the names' lengths: both files open in place, with TMPDIR pointing nowhere.
     * (numpy's misaligned members are extracted: numpy_npz_stored_and_deflated.) */
    const char *n1[] = {"ab"}, *n2[] = {"abc"};
    const qs_tensor *arr1[] = {a}, *arr2[] = {b, a};
    ASSERT_EQ(qs_npz_save(tmp_path("in_place.npz"), 1, n1, arr1, &e), 0);
    const char *n3[] = {"int", "abc"};
    ASSERT_EQ(qs_npz_save(tmp_path("two.npz"), 2, n3, arr2, &e), 0);
    (void)n2;
    setenv("TMPDIR", "/nonexistent-quantd-dir", 1);
    qs_dataset *d = open_ok(tmp_path("in_place.npz"));
    ASSERT_EQ(qs_dataset_count(d), 1);
    ASSERT_STR_EQ(qs_dataset_name(d, 0), "ab");
    ASSERT(!memcmp(qs_dataset_array(d, 0)->data, a->data, 48));
    ASSERT_EQ(qs_dataset_inflated(d), 0);
    qs_dataset_close(d);
    d = open_ok(tmp_path("two.npz"));
    ASSERT_EQ(qs_dataset_inflated(d), 0);
    unsetenv("TMPDIR");
    ASSERT_EQ(qs_dataset_count(d), 2);
    const qs_tensor *x = qs_dataset_array(d, qs_dataset_find(d, "abc"));
    const qs_tensor *y = qs_dataset_array(d, qs_dataset_find(d, "int"));
    ASSERT(qs_shape_eq(x, a));
    ASSERT(!memcmp(x->data, a->data, 48));
    ASSERT(qs_shape_eq(y, b));
    ASSERT(!memcmp(y->data, b->data, 48));
    qs_dataset_close(d);

    const char *dup[] = {"x", "x"};
    ASSERT(qs_npz_save(tmp_path("dup.npz"), 2, dup, arr2, &e) < 0);
    ASSERT_STR_CONTAINS(e.msg, "'x' given twice");
    qs_tensor_free(a);
    qs_tensor_free(b);
    rm_tmp();
}

/* --- bounded inflation (zip bombs) and inflating once ------------------------------------------ */

/* A .npz of one deflated member `name`.npy: a float32 vector of n zeros (compresses ~1000:1). */
static void deflated_zeros(const char *path, const char *name, int64_t n)
{
    qs_tensor *t = qs_tensor_new(QS_F32, 1, &n);
    const char *names[] = {name};
    const qs_tensor *arrays[] = {t};
    qs_err e = {0};
    ASSERT_EQ(qs_npz_save(path, 1, names, arrays, &e), 0);
    qs_tensor_free(t);
    /* re-add the member deflated */
    zip_t *za = zip_open(path, 0, NULL);
    ASSERT(za);
    ASSERT_EQ(zip_set_file_compression(za, 0, ZIP_CM_DEFLATE, 9), 0);
    ASSERT_EQ(zip_close(za), 0);
}

static void deflated_many(const char *path, int members, int64_t n)
{
    qs_tensor *t = qs_tensor_new(QS_F32, 1, &n);
    char names[8][8];
    const char *np[8];
    const qs_tensor *arrays[8];
    for (int i = 0; i < members; i++) {
        snprintf(names[i], sizeof names[i], "m%d", i);
        np[i] = names[i];
        arrays[i] = t;
    }
    qs_err e = {0};
    ASSERT_EQ(qs_npz_save(path, members, np, arrays, &e), 0);
    qs_tensor_free(t);
    zip_t *za = zip_open(path, 0, NULL);
    ASSERT(za);
    for (int i = 0; i < members; i++)
        ASSERT_EQ(zip_set_file_compression(za, i, ZIP_CM_DEFLATE, 9), 0);
    ASSERT_EQ(zip_close(za), 0);
}

/* Member i's uncompressed size as the archive declares it. */
static long long member_size(const char *path, int i)
{
    zip_t *za = zip_open(path, ZIP_RDONLY, NULL);
    ASSERT(za);
    zip_stat_t st;
    ASSERT_EQ(zip_stat_index(za, i, 0, &st), 0);
    zip_discard(za);
    return (long long)st.size;
}

static int open_limit(const char *path, int64_t limit, qs_err *e)
{
    qs_dataset *d = NULL;
    int rc = qs_dataset_open_limit(path, limit, NULL, &d, e);
    qs_dataset_close(d);
    return rc;
}

TEST(zip_bomb_refused_by_declared_size_before_inflating)
{
    mkdir_tmp();
    deflated_zeros(tmp_path("bomb.npz"), "x", 1 << 20);   /* 4 MiB + 128 header bytes inflated */
    struct stat sb;
    ASSERT_EQ(stat(tmp_path("bomb.npz"), &sb), 0);
    ASSERT(sb.st_size < 64 * 1024);
    /* TMPDIR points nowhere: had it tried to inflate, the error would be about the temp file */
    setenv("TMPDIR", "/nonexistent-quantd-dir", 1);
    long long size = member_size(tmp_path("bomb.npz"), 0);
    ASSERT(size > 4 << 20 && size < (4 << 20) + 256);   /* the data and its .npy header */
    char want[256];
    snprintf(want, sizeof want, "member 'x.npy' inflates to %lld bytes, over the limit of 1048576 bytes", size);
    qs_err e = {0};
    ASSERT_EQ(open_limit(tmp_path("bomb.npz"), 1 << 20, &e), QS_ELIMIT);
    ASSERT_STR_CONTAINS(e.msg, want);
    /* at the limit it opens (and so needs the temp file) */
    ASSERT_EQ(open_limit(tmp_path("bomb.npz"), size, &e), QS_EIO);
    ASSERT_STR_CONTAINS(e.msg, "cannot create a temp file");
    unsetenv("TMPDIR");
    ASSERT_EQ(open_limit(tmp_path("bomb.npz"), size, &e), 0);
    rm_tmp();
}

TEST(zip_bomb_limit_counts_all_members)
{
    mkdir_tmp();
    deflated_many(tmp_path("many.npz"), 3, 100000);   /* 3 × 400000 data bytes */
    long long s0 = member_size(tmp_path("many.npz"), 0), s1 = member_size(tmp_path("many.npz"), 1),
              s2 = member_size(tmp_path("many.npz"), 2);
    char want[256];
    snprintf(want, sizeof want, "member 'm2.npy' inflates to %lld bytes, which with the %lld bytes of the "
             "members before it is over the limit of 1000000 bytes", s2, s0 + s1);
    qs_err e = {0};
    ASSERT_EQ(open_limit(tmp_path("many.npz"), 1000000, &e), QS_ELIMIT);
    ASSERT_STR_CONTAINS(e.msg, want);
    ASSERT_EQ(open_limit(tmp_path("many.npz"), s0 + s1 + s2, &e), 0);
    rm_tmp();
}

/* Rewrites the uncompressed size of the archive's only member in its local and central headers. */
static void lie_about_size(const char *path, uint32_t size)
{
    FILE *f = fopen(path, "r+b");
    ASSERT(f);
    uint8_t buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf, f);
    int patched = 0;
    for (size_t i = 0; i + 46 <= n; i++) {
        uint32_t sig = buf[i] | buf[i + 1] << 8 | buf[i + 2] << 16 | (uint32_t)buf[i + 3] << 24;
        size_t at = sig == 0x04034b50 ? i + 22 : sig == 0x02014b50 ? i + 24 : 0;
        if (!at)
            continue;
        for (int k = 0; k < 4; k++)
            buf[at + k] = (uint8_t)(size >> (8 * k));
        patched++;
    }
    ASSERT_EQ(patched, 2);
    rewind(f);
    ASSERT_EQ(fwrite(buf, 1, n, f), n);
    fclose(f);
}

TEST(zip_bomb_lying_header_stops_at_the_declared_size)
{
    mkdir_tmp();
    deflated_zeros(tmp_path("liar.npz"), "x", 1 << 20);   /* really 4194432 bytes */
    lie_about_size(tmp_path("liar.npz"), 4096);
    /* a file size limit in this (forked) test process: writing past 64 KiB fails with EFBIG, so
     * only a reader that stops at the declared 4096 bytes gets to report the lie */
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit rl = {64 * 1024, 64 * 1024};
    ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &rl), 0);
    setenv("TMPDIR", dir, 1);
    qs_err e = {0};
    ASSERT_EQ(open_limit(tmp_path("liar.npz"), 1 << 30, &e), QS_EFORMAT);
    ASSERT_STR_CONTAINS(e.msg, "member 'x.npy' inflates to more than the 4096 bytes its header declares");
    ASSERT_EQ(open_limit(tmp_path("liar.npz"), -1, &e), QS_EFORMAT);
    ASSERT_STR_CONTAINS(e.msg, "its header declares");
    rm_tmp();
}

TEST(save_stored_opens_without_inflating)
{
    mkdir_tmp();
    qs_dataset *d = open_ok(fixture("deflated.npz"));
    ASSERT_EQ(qs_dataset_inflated(d), 176 + 144 + 12128);   /* the members' sizes, as Python's zipfile lists them */
    qs_err e = {0};
    ASSERT_EQ(qs_dataset_save_stored(d, tmp_path("stored.npz"), &e), 0);
    qs_dataset_close(d);
    setenv("TMPDIR", "/nonexistent-quantd-dir", 1);   /* no temp file can be made: none may be needed */
    d = open_ok(tmp_path("stored.npz"));
    ASSERT_EQ(qs_dataset_inflated(d), 0);
    ASSERT_EQ(qs_dataset_count(d), 3);
    check_fixture_f64(qs_dataset_array(d, qs_dataset_find(d, "f64")));
    check_fixture_i32(qs_dataset_array(d, qs_dataset_find(d, "i32")));
    const qs_tensor *big = qs_dataset_array(d, qs_dataset_find(d, "big"));
    ASSERT_EQ(big->shape[0], 1000);
    for (int i = 0; i < 3000; i++)
        ASSERT_EQ(qs_f32(big)[i], (float)i);
    qs_dataset_close(d);
    unsetenv("TMPDIR");
    rm_tmp();
}

TEST(batches_convert_rows)
{
    qs_dataset *d = open_ok(fixture("u8.npy"));   /* [2, 3, 2] */
    int64_t shape[] = {1, 3, 2};
    qs_tensor *out = qs_tensor_new(QS_F32, 3, shape);
    qs_err e = {0};
    ASSERT_EQ(qs_dataset_batch(d, 0, 1, 1, QS_F32, out, &e), 0);
    for (int i = 0; i < 6; i++)
        ASSERT_EQ(qs_f32(out)[i], (float)(((6 + i) * 23) % 256));
    ASSERT(qs_dataset_batch(d, 0, 2, 1, QS_F32, out, &e) < 0);
    ASSERT_STR_CONTAINS(e.msg, "outside the array's 2 rows");
    ASSERT(qs_dataset_batch(d, 0, 0, 2, QS_F32, out, &e) < 0);   /* out holds one row */
    ASSERT_STR_CONTAINS(e.msg, "[2, 3, 2]");
    ASSERT(qs_dataset_batch(d, 0, 0, 1, QS_I64, out, &e) < 0);
    qs_tensor_free(out);
    qs_dataset_close(d);

    d = open_ok(fixture("stored.npz"));   /* the i64 member: [-2, -1, 0, 1, 2] * 2**40 */
    int64_t s2[] = {2};
    qs_tensor *o2 = qs_tensor_new(QS_F32, 1, s2);
    ASSERT_EQ(qs_dataset_batch(d, qs_dataset_find(d, "i64"), 3, 2, QS_F32, o2, &e), 0);
    ASSERT_EQ(qs_f32(o2)[0], 1099511627776.f);
    ASSERT_EQ(qs_f32(o2)[1], 2199023255552.f);
    qs_tensor *o3 = qs_tensor_new(QS_I32, 1, s2);
    ASSERT_EQ(qs_dataset_batch(d, qs_dataset_find(d, "i64"), 0, 2, QS_I32, o3, &e), 0);
    ASSERT_EQ(qs_i32(o3)[0], INT32_MIN);   /* saturated */
    qs_tensor_free(o2);
    qs_tensor_free(o3);
    qs_dataset_close(d);

    d = open_ok(fixture("f64.npy"));
    int64_t s3[] = {2, 3};
    qs_tensor *o4 = qs_tensor_new(QS_F32, 2, s3);
    ASSERT_EQ(qs_dataset_batch(d, 0, 0, 2, QS_F32, o4, &e), 0);
    for (int i = 0; i < 6; i++)
        ASSERT_EQ(qs_f32(o4)[i], (float)(i / 3.0));
    qs_tensor_free(o4);
    qs_dataset_close(d);
}

static long rss_file_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "RssFile: %ld kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb;
}

static double sum_rows(const qs_tensor *t, int64_t r0, int64_t r1)
{
    int64_t per = qs_numel(t) / t->shape[0];
    double s = 0;
    for (int64_t k = r0 * per; k < r1 * per; k++)
        s += qs_f32(t)[k];
    return s;
}

/* Released rows leave the resident set and read back unchanged (mapped .npy, and a deflated .npz
 * member mapped from its temp file); a heap copy is left alone. */
TEST(released_rows_leave_rss_and_read_back)
{
    mkdir_tmp();
    int64_t shape[] = {1024, 1024};   /* 4 MiB */
    qs_tensor *t = qs_tensor_new(QS_F32, 2, shape);
    for (int64_t k = 0; k < 1024 * 1024; k++)
        qs_f32(t)[k] = (float)(k % 1000) * 0.5f;
    double want = sum_rows(t, 0, 1024), want_mid = sum_rows(t, 100, 300);
    qs_err e = {0};
    ASSERT_EQ(qs_npy_save(tmp_path("big.npy"), t, &e), 0);
    const char *names[] = {"x"};
    const qs_tensor *arr[] = {t};
    ASSERT_EQ(qs_npz_save(tmp_path("big.npz"), 1, names, arr, &e), 0);
    qs_tensor_free(t);

    qs_dataset *d = open_ok(tmp_path("big.npy"));
    const qs_tensor *v = qs_dataset_array(d, 0);
    long before = rss_file_kb();
    if (before < 0)
        SKIP("no RssFile in /proc/self/status");
    ASSERT_EQ(sum_rows(v, 0, 1024), want);
    long read = rss_file_kb();
    ASSERT(read - before > 3 * 1024);   /* the 4 MiB just read are resident */
    qs_dataset_release(d, 0, 0, 1024);
    ASSERT(read - rss_file_kb() > 3 * 1024);
    ASSERT_EQ(sum_rows(v, 100, 300), want_mid);   /* faulted back in */
    qs_dataset_release(d, 0, 150, 10);            /* a range inside: neighbours read back too */
    ASSERT_EQ(sum_rows(v, 100, 300), want_mid);
    qs_dataset_release(d, 0, 1000, 500);          /* past the end: clamped */
    qs_dataset_release(d, 0, -1, 5);              /* ignored */
    ASSERT_EQ(sum_rows(v, 0, 1024), want);
    qs_dataset_close(d);

    d = open_ok(tmp_path("big.npz"));   /* qs_npz_save deflates: a temp file's mapping */
    v = qs_dataset_array(d, 0);
    ASSERT_EQ(sum_rows(v, 0, 1024), want);
    qs_dataset_release(d, 0, 0, 1024);
    ASSERT_EQ(sum_rows(v, 0, 1024), want);
    qs_dataset_close(d);
    rm_tmp();
}

/* numpy itself must read what we write */
TEST(numpy_reads_our_files)
{
    if (system("/usr/bin/python3 -c 'import numpy' 2>/dev/null") != 0)
        SKIP("python3 with numpy not available");
    mkdir_tmp();
    int64_t s1[] = {2, 3}, s2[] = {4};
    qs_tensor *a = qs_tensor_new(QS_F32, 2, s1), *b = qs_tensor_new(QS_I64, 1, s2);
    for (int i = 0; i < 6; i++)
        qs_f32(a)[i] = i * 0.5f;
    for (int i = 0; i < 4; i++)
        qs_i64(b)[i] = i - 7;
    qs_err e = {0};
    ASSERT_EQ(qs_npy_save(tmp_path("a.npy"), a, &e), 0);
    const char *names[] = {"x", "labels"};
    const qs_tensor *arr[] = {a, b};
    ASSERT_EQ(qs_npz_save(tmp_path("b.npz"), 2, names, arr, &e), 0);
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -c \"import numpy as np, sys; a = np.load('%s'); z = np.load('%s'); "
             "ok = a.dtype == np.float32 and a.tolist() == [[0, .5, 1], [1.5, 2, 2.5]] and "
             "sorted(z.files) == ['labels', 'x'] and z['labels'].dtype == np.int64 and "
             "z['labels'].tolist() == [-7, -6, -5, -4] and (z['x'] == a).all(); sys.exit(0 if ok else 1)\"",
             tmp_path("a.npy"), tmp_path("b.npz"));
    ASSERT_EQ(system(cmd), 0);
    qs_tensor_free(a);
    qs_tensor_free(b);
    rm_tmp();
}

TEST_MAIN(npy_roundtrip_every_dtype, npy_header_follows_nep1, npy_scalar_and_empty, handwritten_headers_v1_v2_v3,
          handwritten_bad_files, numpy_npy_fixtures, numpy_refused_fixtures, numpy_npz_stored_and_deflated,
          deflated_members_go_through_tmpdir, npz_roundtrip_in_place_and_extracted, batches_convert_rows,
          numpy_reads_our_files, zip_bomb_refused_by_declared_size_before_inflating, zip_bomb_limit_counts_all_members,
          zip_bomb_lying_header_stops_at_the_declared_size, save_stored_opens_without_inflating,
          released_rows_leave_rss_and_read_back)
