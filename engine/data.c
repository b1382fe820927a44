/* Data sets: numpy's .npy and .npz files, memory-mapped.
 *
 * A .npy file (NEP 1: magic "\x93NUMPY", version 1.0/2.0/3.0, a little-endian header length of 2 or
 * 4 bytes, then a Python dict literal {'descr', 'fortran_order', 'shape'} padded with spaces and a
 * newline) is mapped whole; the array view points into the mapping, so opening a large data set
 * costs no reads and batches page in on demand.
 *
 * A .npz file is a zip archive of .npy members. libzip lists and validates it. A stored member is
 * used in place: the archive is mapped once and we locate the member's bytes through the zip
 * central directory (libzip does not expose data offsets). A deflated member — or a stored one whose
 * data would be misaligned for its dtype — is inflated once into an unlinked temp file in $TMPDIR
 * and mapped from there, so even compressed data larger than memory streams. Inflation is bounded:
 * by the caller's limit (checked against the declared sizes before anything is written) and by
 * each member's declared size (a zip header may lie, so the bytes are counted as they come).
 * qs_npz_save pads each .npy header so that the member's data is 64-byte aligned in the archive:
 * what it writes opens in place.
 *
 * Only the rare hand-made .npy whose data is not aligned for its dtype is copied to the heap. */
#include "data.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zip.h>

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "data.c assumes a little-endian host (the .npy files it reads and writes are little-endian)"
#endif

struct array {
    char *name;        /* .npz key without ".npy"; "" for a .npy file */
    qs_tensor view;    /* data points into a mapping (or heap) */
    void *map;         /* a mapping owned by this array (temp file), or NULL */
    size_t maplen;
    void *heap;        /* a heap copy (misaligned data), or NULL */
};

struct qs_dataset {
    int n;
    struct array *a;
    void *map;         /* the file itself (a .npy, or an archive with members used in place) */
    size_t maplen;
    int64_t inflated;  /* bytes inflated into temp files */
};

/* --- .npy header ----------------------------------------------------------------------------- */

static const char NPY_MAGIC[6] = "\x93NUMPY";

typedef struct {
    const char *p, *end;
} cursor;

static void skip_ws(cursor *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static int eat(cursor *c, char ch)
{
    skip_ws(c);
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return 1;
    }
    return 0;
}

/* A quoted Python string ('…' or "…", no escapes needed for our keys and dtypes) into buf. */
static int parse_str(cursor *c, char *buf, size_t n)
{
    skip_ws(c);
    if (c->p >= c->end || (*c->p != '\'' && *c->p != '"'))
        return -1;
    char q = *c->p++;
    size_t k = 0;
    while (c->p < c->end && *c->p != q) {
        if (k + 1 >= n)
            return -1;
        buf[k++] = *c->p++;
    }
    if (c->p >= c->end)
        return -1;
    c->p++;
    buf[k] = 0;
    return 0;
}

static int parse_bool(cursor *c, int *v)
{
    skip_ws(c);
    size_t left = c->end - c->p;
    if (left >= 4 && !memcmp(c->p, "True", 4)) {
        c->p += 4;
        *v = 1;
        return 0;
    }
    if (left >= 5 && !memcmp(c->p, "False", 5)) {
        c->p += 5;
        *v = 0;
        return 0;
    }
    return -1;
}

/* "(2, 3)", "(3,)", "()"; Python 2's "3L" is accepted. Returns 0, -1 on syntax, -2 on too many dims. */
static int parse_shape(cursor *c, int *ndim, int64_t *shape)
{
    if (!eat(c, '('))
        return -1;
    *ndim = 0;
    for (;;) {
        if (eat(c, ')'))
            return 0;
        skip_ws(c);
        if (c->p >= c->end || *c->p < '0' || *c->p > '9')
            return -1;
        int64_t v = 0;
        while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
            if (v > (INT64_MAX - 9) / 10)
                return -1;
            v = v * 10 + (*c->p++ - '0');
        }
        if (c->p < c->end && *c->p == 'L')
            c->p++;
        if (*ndim == QS_MAX_DIMS)
            return -2;
        shape[(*ndim)++] = v;
        if (!eat(c, ',')) {
            if (eat(c, ')'))
                return 0;
            return -1;
        }
    }
}

static int parse_descr(const char *label, const char *d, qs_dtype *t, qs_err *e)
{
    static const struct { const char *code; qs_dtype t; } types[] = {
        {"f4", QS_F32}, {"f8", QS_F64}, {"i8", QS_I64}, {"i4", QS_I32}, {"i2", QS_I16},
        {"u2", QS_U16}, {"u1", QS_U8}, {"i1", QS_I8}, {"b1", QS_BOOL},
    };
    if (strchr(d, 'O'))
        return qs_error(e, QS_EUNSUPPORTED, "%s: object arrays (dtype '%s') are not supported", label, d);
    char order = d[0];
    const char *code = d + 1;
    if (order != '<' && order != '>' && order != '|' && order != '=')
        return qs_error(e, QS_EFORMAT, "%s: malformed dtype '%s' in the .npy header", label, d);
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        if (strcmp(code, types[i].code))
            continue;
        /* byte order only matters for multi-byte types; '=' is native, i.e. little-endian here */
        if (order == '>' && qs_dtype_size(types[i].t) > 1)
            return qs_error(e, QS_EUNSUPPORTED,
                            "%s: big-endian dtype '%s' is not supported; save with arr.astype('<%s')",
                            label, d, code);
        *t = types[i].t;
        return 0;
    }
    return qs_error(e, QS_EUNSUPPORTED,
                    "%s: dtype '%s' is not supported (use float32, float64, int64, int32, int16, uint16, "
                    "uint8, int8 or bool)", label, d);
}

/* Parses the .npy bytes [buf, buf+len): fills view (dtype, shape) and *data_off. */
static int parse_npy(const char *label, const uint8_t *buf, size_t len, qs_tensor *view, size_t *data_off,
                     qs_err *e)
{
    if (len < 10 || memcmp(buf, NPY_MAGIC, 6))
        return len >= 6 && !memcmp(buf, NPY_MAGIC, 6)
                   ? qs_error(e, QS_EFORMAT, "%s: truncated .npy header", label)
                   : qs_error(e, QS_EFORMAT, "%s: not a .npy file (bad magic)", label);
    int major = buf[6], minor = buf[7];
    if (major < 1 || major > 3 || minor != 0)
        return qs_error(e, QS_EUNSUPPORTED, "%s: .npy format version %d.%d is not supported (1.0–3.0 are)",
                        label, major, minor);
    size_t pre = major == 1 ? 10 : 12, hlen;
    if (len < pre)
        return qs_error(e, QS_EFORMAT, "%s: truncated .npy header", label);
    if (major == 1)
        hlen = buf[8] | (size_t)buf[9] << 8;
    else
        hlen = buf[8] | (size_t)buf[9] << 8 | (size_t)buf[10] << 16 | (size_t)buf[11] << 24;
    if (hlen > len - pre)
        return qs_error(e, QS_EFORMAT, "%s: truncated .npy header (%zu bytes declared, %zu present)", label,
                        hlen, len - pre);

    cursor c = {(const char *)buf + pre, (const char *)buf + pre + hlen};
    char key[32], descr[64] = "";
    int have_descr = 0, have_order = 0, have_shape = 0, fortran = 0;
    if (!eat(&c, '{'))
        return qs_error(e, QS_EFORMAT, "%s: malformed .npy header: expected a dict", label);
    for (;;) {
        if (eat(&c, '}'))
            break;
        if (parse_str(&c, key, sizeof key) < 0 || !eat(&c, ':'))
            return qs_error(e, QS_EFORMAT, "%s: malformed .npy header: expected 'key': value", label);
        if (!strcmp(key, "descr")) {
            skip_ws(&c);
            if (c.p < c.end && *c.p == '[')
                return qs_error(e, QS_EUNSUPPORTED, "%s: structured dtypes are not supported", label);
            if (parse_str(&c, descr, sizeof descr) < 0)
                return qs_error(e, QS_EFORMAT, "%s: malformed .npy header: bad 'descr'", label);
            have_descr = 1;
        } else if (!strcmp(key, "fortran_order")) {
            if (parse_bool(&c, &fortran) < 0)
                return qs_error(e, QS_EFORMAT, "%s: malformed .npy header: 'fortran_order' is not True/False",
                                label);
            have_order = 1;
        } else if (!strcmp(key, "shape")) {
            int r = parse_shape(&c, &view->ndim, view->shape);
            if (r == -2)
                return qs_error(e, QS_EUNSUPPORTED, "%s: arrays of more than %d dimensions are not supported",
                                label, QS_MAX_DIMS);
            if (r < 0)
                return qs_error(e, QS_EFORMAT, "%s: malformed .npy header: bad 'shape' tuple", label);
            have_shape = 1;
        } else {
            return qs_error(e, QS_EFORMAT, "%s: malformed .npy header: unexpected key '%s'", label, key);
        }
        if (!eat(&c, ',')) {
            if (eat(&c, '}'))
                break;
            return qs_error(e, QS_EFORMAT, "%s: malformed .npy header: expected ',' or '}'", label);
        }
    }
    skip_ws(&c);
    while (c.p < c.end && *c.p == 0)   /* some writers pad with NULs */
        c.p++;
    if (c.p != c.end)
        return qs_error(e, QS_EFORMAT, "%s: malformed .npy header: unexpected text after the dict", label);
    if (!have_descr || !have_order || !have_shape)
        return qs_error(e, QS_EFORMAT, "%s: malformed .npy header: missing '%s'", label,
                        !have_descr ? "descr" : !have_order ? "fortran_order" : "shape");
    int rc = parse_descr(label, descr, &view->dtype, e);
    if (rc < 0)
        return rc;
    /* With at most one dimension longer than 1 both orders are the same bytes. */
    int nontrivial = 0;
    for (int i = 0; i < view->ndim; i++)
        nontrivial += view->shape[i] > 1;
    if (fortran && nontrivial > 1)
        return qs_error(e, QS_EUNSUPPORTED,
                        "%s: Fortran-order arrays are not supported; save with np.ascontiguousarray", label);

    /* every count the readers form from the shape must fit in int64, also in an empty array */
    size_t need;
    if (qs_shape_bytes(view->dtype, view->ndim, view->shape, &need) < 0)
        return qs_error(e, QS_EFORMAT, "%s: array too large", label);
    *data_off = pre + hlen;
    if (need > len - *data_off) {
        char s[128];
        return qs_error(e, QS_EFORMAT, "%s: truncated: shape %s of %s needs %zu data bytes, the file has %zu",
                        label, qs_shape_str(view->ndim, view->shape, s, sizeof s), qs_dtype_name(view->dtype),
                        need, len - *data_off);
    }
    return 0;
}

/* Points a->view at the array in [buf, buf+len); copies to the heap when misaligned. */
static int attach(struct array *a, const char *label, const uint8_t *buf, size_t len, qs_err *e)
{
    size_t off;
    int rc = parse_npy(label, buf, len, &a->view, &off, e);
    if (rc < 0)
        return rc;
    size_t esz = qs_dtype_size(a->view.dtype), nb = qs_nbytes(&a->view);
    const uint8_t *p = buf + off;
    static uint64_t empty;
    if (nb == 0) {
        a->view.data = &empty;
    } else if ((uintptr_t)p % esz == 0) {
        a->view.data = (void *)p;
    } else {
        if (!(a->heap = malloc(nb)))
            return qs_error(e, QS_ENOMEM, "%s: out of memory copying %zu bytes", label, nb);
        memcpy(a->heap, p, nb);
        a->view.data = a->heap;
    }
    a->view.owns_data = 0;
    return 0;
}

/* --- files ----------------------------------------------------------------------------------- */

static int map_fd(int fd, const char *label, void **map, size_t *len, qs_err *e)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return qs_error(e, QS_EIO, "%s: %s", label, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return qs_error(e, QS_EIO, "%s: not a regular file", label);
    if (st.st_size == 0)
        return qs_error(e, QS_EFORMAT, "%s: empty file", label);
    void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED)
        return qs_error(e, QS_EIO, "%s: mmap failed: %s", label, strerror(errno));
    *map = m;
    *len = (size_t)st.st_size;
    return 0;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcasecmp(s + n - k, suffix);
}

void qs_dataset_close(qs_dataset *d)
{
    if (!d)
        return;
    for (int i = 0; i < d->n; i++) {
        free(d->a[i].name);
        free(d->a[i].heap);
        if (d->a[i].map)
            munmap(d->a[i].map, d->a[i].maplen);
    }
    free(d->a);
    if (d->map)
        munmap(d->map, d->maplen);
    free(d);
}

/* --- .npz ------------------------------------------------------------------------------------ */

static uint16_t rd16(const uint8_t *p) { return p[0] | p[1] << 8; }
static uint32_t rd32(const uint8_t *p) { return rd16(p) | (uint32_t)rd16(p + 2) << 16; }
static uint64_t rd64(const uint8_t *p) { return rd32(p) | (uint64_t)rd32(p + 4) << 32; }

/* Where a stored member's bytes start in the archive m[0..len): found through the central directory
 * (zip64 aware). Returns 0 and sets *off, or -1 when it cannot be located (then we extract). */
static int zip_data_offset(const uint8_t *m, size_t len, const char *name, uint64_t size, uint64_t *off)
{
    if (len < 22)
        return -1;
    size_t eocd = len - 22, stop = len > 22 + 65535 ? len - 22 - 65535 : 0;
    while (rd32(m + eocd) != 0x06054b50) {
        if (eocd == stop)
            return -1;
        eocd--;
    }
    uint64_t entries = rd16(m + eocd + 10), cd_off = rd32(m + eocd + 16);
    if ((entries == 0xffff || cd_off == 0xffffffff) && eocd >= 20 && rd32(m + eocd - 20) == 0x07064b50) {
        uint64_t z = rd64(m + eocd - 20 + 8);
        if (z > len - 56 || rd32(m + z) != 0x06064b50)
            return -1;
        entries = rd64(m + z + 32);
        cd_off = rd64(m + z + 48);
    }
    uint64_t p = cd_off, nlen = strlen(name);
    for (uint64_t i = 0; i < entries; i++) {
        if (p > len || len - p < 46 || rd32(m + p) != 0x02014b50)
            return -1;
        uint64_t csize = rd32(m + p + 20), usize = rd32(m + p + 24), loc = rd32(m + p + 42);
        size_t fn = rd16(m + p + 28), xn = rd16(m + p + 30), cn = rd16(m + p + 32);
        if (len - p - 46 < fn + xn + cn)
            return -1;
        if (fn == nlen && !memcmp(m + p + 46, name, fn)) {
            /* zip64 extra field: only the fields saturated in the fixed part are present, in order */
            const uint8_t *x = m + p + 46 + fn, *xe = x + xn;
            while (xe - x >= 4) {
                unsigned id = rd16(x), sz = rd16(x + 2);
                const uint8_t *f = x + 4, *fe = f + sz;
                if (fe > xe)
                    return -1;
                if (id == 0x0001) {
                    if (usize == 0xffffffff && fe - f >= 8) usize = rd64(f), f += 8;
                    if (csize == 0xffffffff && fe - f >= 8) csize = rd64(f), f += 8;
                    if (loc == 0xffffffff && fe - f >= 8) loc = rd64(f), f += 8;
                }
                x = fe;
            }
            if (csize != size || usize != size || loc > len || len - loc < 30 || rd32(m + loc) != 0x04034b50)
                return -1;
            uint64_t start = loc + 30 + rd16(m + loc + 26) + rd16(m + loc + 28);
            if (start > len || len - start < size)
                return -1;
            *off = start;
            return 0;
        }
        p += 46 + fn + xn + cn;
    }
    return -1;
}

/* Inflates member idx, which declares `size` bytes, into an unlinked temp file and maps it. The
 * caller's limit (-1: none) bounds all members together; `used` bytes of it are inflated already. */
static int extract(zip_t *za, zip_uint64_t idx, uint64_t size, int64_t limit, int64_t used, const char *dir,
                   const char *label, void **map, size_t *maplen, qs_err *e)
{
    if (limit >= 0 && size > (uint64_t)(limit - used))
        return used ? qs_error(e, QS_ELIMIT, "%s inflates to %llu bytes, which with the %lld bytes of the members "
                                             "before it is over the limit of %lld bytes", label,
                               (unsigned long long)size, (long long)used, (long long)limit)
                    : qs_error(e, QS_ELIMIT, "%s inflates to %llu bytes, over the limit of %lld bytes", label,
                               (unsigned long long)size, (long long)limit);
    if (!dir || !*dir)
        dir = getenv("TMPDIR");
    if (!dir || !*dir)
        dir = "/tmp";
    char tmpl[4096];
    snprintf(tmpl, sizeof tmpl, "%s/quantd-npz-XXXXXX", dir);
    int fd = mkstemp(tmpl);
    if (fd < 0)
        return qs_error(e, QS_EIO, "%s: cannot create a temp file in %s: %s", label, dir, strerror(errno));
    unlink(tmpl);   /* the file lives as long as the mapping */
    int rc = 0;
    zip_file_t *zf = zip_fopen_index(za, idx, 0);
    char *buf = malloc(1 << 20);
    if (!zf || !buf) {
        rc = zf ? qs_error(e, QS_ENOMEM, "%s: out of memory", label)
                : qs_error(e, QS_EFORMAT, "%s: %s", label, zip_error_strerror(zip_get_error(za)));
        goto out;
    }
    uint64_t got = 0;
    for (;;) {
        zip_int64_t n = zip_fread(zf, buf, 1 << 20);
        if (n < 0) {
            rc = qs_error(e, QS_EFORMAT, "%s: cannot inflate: %s", label, zip_error_strerror(zip_file_get_error(zf)));
            goto out;
        }
        if (n == 0)
            break;
        if ((uint64_t)n > size - got) {   /* the header lied: stop before writing any of it */
            rc = qs_error(e, QS_EFORMAT, "%s inflates to more than the %llu bytes its header declares", label,
                          (unsigned long long)size);
            goto out;
        }
        for (zip_int64_t w = 0; w < n;) {
            ssize_t k = write(fd, buf + w, n - w);
            if (k < 0) {
                if (errno == EINTR)
                    continue;
                rc = qs_error(e, QS_EIO, "%s: writing the temp file: %s", label, strerror(errno));
                goto out;
            }
            w += k;
        }
        got += n;
    }
    if (got != size) {
        rc = qs_error(e, QS_EFORMAT, "%s: inflated %llu bytes, expected %llu", label, (unsigned long long)got,
                      (unsigned long long)size);
        goto out;
    }
    rc = map_fd(fd, label, map, maplen, e);
out:
    free(buf);
    if (zf)
        zip_fclose(zf);
    close(fd);
    return rc;
}

static int open_npz(const char *path, qs_dataset *d, int fd, int64_t max_inflate, const char *tmpdir, qs_err *e)
{
    int zerr = 0;
    zip_t *za = zip_fdopen(fd, ZIP_RDONLY | ZIP_CHECKCONS, &zerr);
    if (!za) {
        zip_error_t ze;
        zip_error_init_with_code(&ze, zerr);
        int rc = qs_error(e, QS_EFORMAT, "%s: not a valid .npz (zip) file: %s", path, zip_error_strerror(&ze));
        zip_error_fini(&ze);
        close(fd);
        return rc;
    }
    int rc = 0;
    zip_int64_t n = zip_get_num_entries(za, 0);
    if (!(d->a = calloc(n > 0 ? n : 1, sizeof *d->a))) {
        rc = qs_error(e, QS_ENOMEM, "%s: out of memory", path);
        goto out;
    }
    for (zip_int64_t i = 0; i < n; i++) {
        zip_stat_t st;
        if (zip_stat_index(za, i, 0, &st) < 0) {
            rc = qs_error(e, QS_EFORMAT, "%s: %s", path, zip_error_strerror(zip_get_error(za)));
            goto out;
        }
        char label[1024];
        snprintf(label, sizeof label, "%s: member '%s'", path, st.name);
        size_t nl = strlen(st.name);
        if (nl && st.name[nl - 1] == '/')   /* a directory entry */
            continue;
        if (!ends_with(st.name, ".npy")) {
            rc = qs_error(e, QS_EFORMAT, "%s is not a .npy array", label);
            goto out;
        }
        if ((st.valid & ZIP_STAT_ENCRYPTION_METHOD) && st.encryption_method != ZIP_EM_NONE) {
            rc = qs_error(e, QS_EUNSUPPORTED, "%s is encrypted", label);
            goto out;
        }
        struct array *a = &d->a[d->n];
        if (!(a->name = strndup(st.name, nl - 4))) {
            rc = qs_error(e, QS_ENOMEM, "%s: out of memory", path);
            goto out;
        }
        d->n++;
        for (int j = 0; j < d->n - 1; j++)
            if (!strcmp(d->a[j].name, a->name)) {
                rc = qs_error(e, QS_EFORMAT, "%s: array '%s' appears twice", path, a->name);
                goto out;
            }
        uint64_t off;
        size_t hdr;
        if (st.comp_method == ZIP_CM_STORE && zip_data_offset(d->map, d->maplen, st.name, st.size, &off) == 0) {
            const uint8_t *p = (const uint8_t *)d->map + off;
            if ((rc = parse_npy(label, p, st.size, &a->view, &hdr, e)) < 0)
                goto out;
            /* in place only when the data is aligned for its dtype; otherwise extract below */
            if ((off + hdr) % qs_dtype_size(a->view.dtype) == 0) {
                if ((rc = attach(a, label, p, st.size, e)) < 0)
                    goto out;
                continue;
            }
        }
        if (st.comp_method != ZIP_CM_STORE && st.comp_method != ZIP_CM_DEFLATE) {
            rc = qs_error(e, QS_EUNSUPPORTED, "%s: compression method %d is not supported (stored or deflated are)",
                          label, (int)st.comp_method);
            goto out;
        }
        if (st.size == 0) {
            rc = qs_error(e, QS_EFORMAT, "%s: empty member", label);
            goto out;
        }
        if ((rc = extract(za, i, st.size, max_inflate, d->inflated, tmpdir, label, &a->map, &a->maplen, e)) < 0)
            goto out;
        d->inflated += (int64_t)st.size;
        if ((rc = attach(a, label, a->map, a->maplen, e)) < 0)
            goto out;
    }
out:
    zip_discard(za);   /* read-only: closes fd */
    return rc;
}

int qs_dataset_open(const char *path, qs_dataset **out, qs_err *e)
{
    return qs_dataset_open_limit(path, -1, NULL, out, e);
}

int qs_dataset_open_limit(const char *path, int64_t max_inflate, const char *tmpdir, qs_dataset **out, qs_err *e)
{
    *out = NULL;
    qs_dataset *d = calloc(1, sizeof *d);
    if (!d)
        return qs_error(e, QS_ENOMEM, "%s: out of memory", path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        free(d);
        return qs_error(e, QS_EIO, "%s: %s", path, strerror(errno));
    }
    int rc = map_fd(fd, path, &d->map, &d->maplen, e);
    if (rc < 0) {
        close(fd);
        free(d);
        return rc;
    }
    const uint8_t *m = d->map;
    if (d->maplen >= 4 && !memcmp(m, "PK", 2)) {
        rc = open_npz(path, d, fd, max_inflate, tmpdir, e);   /* takes fd */
    } else if (ends_with(path, ".npz")) {
        close(fd);
        rc = qs_error(e, QS_EFORMAT, "%s: not a .npz file (no zip signature)", path);
    } else {
        close(fd);
        if (!(d->a = calloc(1, sizeof *d->a)) || !(d->a->name = strdup(""))) {
            rc = qs_error(e, QS_ENOMEM, "%s: out of memory", path);
        } else {
            d->n = 1;
            rc = attach(d->a, path, m, d->maplen, e);
        }
    }
    if (rc < 0) {
        qs_dataset_close(d);
        return rc;
    }
    *out = d;
    return 0;
}

int qs_dataset_count(const qs_dataset *d) { return d->n; }
int64_t qs_dataset_inflated(const qs_dataset *d) { return d->inflated; }
const char *qs_dataset_name(const qs_dataset *d, int i) { return i >= 0 && i < d->n ? d->a[i].name : NULL; }
const qs_tensor *qs_dataset_array(const qs_dataset *d, int i) { return i >= 0 && i < d->n ? &d->a[i].view : NULL; }

int qs_dataset_find(const qs_dataset *d, const char *name)
{
    for (int i = 0; i < d->n; i++)
        if (!strcmp(d->a[i].name, name))
            return i;
    return -1;
}

int64_t qs_dataset_rows(const qs_dataset *d, int i)
{
    if (i < 0 || i >= d->n)
        return -1;
    return d->a[i].view.ndim ? d->a[i].view.shape[0] : 1;
}

/* A mapped file's pages count in the resident set once read, and a calibration set read batch by
 * batch would end up resident whole (2,048 images at 224×224 are 1.2 GB): the pages of rows a
 * reader is done with are dropped from this process's mapping. The mapping is read-only and
 * private, so MADV_DONTNEED loses nothing: the next read faults the page back in from the page
 * cache (or the file). The range is rounded outward to whole pages (a neighbour row sharing a
 * page just faults again); heap copies are left alone. */
void qs_dataset_release(const qs_dataset *d, int i, int64_t start, int64_t n)
{
    if (!d || i < 0 || i >= d->n || n <= 0 || start < 0)
        return;
    const struct array *a = &d->a[i];
    const uint8_t *map = a->map ? a->map : d->map, *data = a->view.data;
    size_t maplen = a->map ? a->maplen : d->maplen;
    if (!map || a->heap || data < map || data >= map + maplen)
        return;
    int64_t rows = a->view.ndim ? a->view.shape[0] : 1;
    if (start >= rows)
        return;
    if (n > rows - start)
        n = rows - start;
    size_t row = rows ? qs_nbytes(&a->view) / (size_t)rows : 0;
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t lo = (uintptr_t)(data + (size_t)start * row), hi = (uintptr_t)(data + (size_t)(start + n) * row);
    lo &= ~(page - 1);
    hi = (hi + page - 1) & ~(page - 1);
    if (lo < (uintptr_t)map)   /* the mapping starts on a page: rounding down stays inside it */
        lo = (uintptr_t)map;
    if (hi > (uintptr_t)map + maplen)
        hi = ((uintptr_t)map + maplen + page - 1) & ~(page - 1);
    if (hi > lo)
        madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

/* --- conversion ------------------------------------------------------------------------------ */

static double get_f(const void *p, qs_dtype t, int64_t i)
{
    switch (t) {
    case QS_F32: return ((const float *)p)[i];
    case QS_F64: return ((const double *)p)[i];
    case QS_U8: case QS_BOOL: case QS_U4: return ((const uint8_t *)p)[i];
    case QS_I8: case QS_I4: return ((const int8_t *)p)[i];
    case QS_U16: return ((const uint16_t *)p)[i];
    case QS_I16: return ((const int16_t *)p)[i];
    case QS_I32: return ((const int32_t *)p)[i];
    case QS_I64: return (double)((const int64_t *)p)[i];
    default: return 0;
    }
}

static int64_t get_i(const void *p, qs_dtype t, int64_t i)
{
    if (t == QS_I64)
        return ((const int64_t *)p)[i];
    double v = get_f(p, t, i);
    /* float → int saturates (and NaN → 0) instead of being undefined behaviour */
    if (!(v == v))
        return 0;
    if (v >= 9.2233720368547758e18)
        return INT64_MAX;
    if (v <= -9.2233720368547758e18)
        return INT64_MIN;
    return (int64_t)v;
}

static int64_t clampi(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : v > hi ? hi : v; }

static void convert(const void *src, qs_dtype st, void *dst, qs_dtype dt, int64_t n)
{
    if (st == dt) {
        memcpy(dst, src, (size_t)n * qs_dtype_size(st));
        return;
    }
    switch (dt) {
    case QS_F32: {
        float *d = dst;
        if (st == QS_U8)
            for (int64_t i = 0; i < n; i++) d[i] = ((const uint8_t *)src)[i];
        else if (st == QS_F64)
            for (int64_t i = 0; i < n; i++) d[i] = (float)((const double *)src)[i];
        else
            for (int64_t i = 0; i < n; i++) d[i] = (float)get_f(src, st, i);
        return;
    }
    case QS_F64:
        for (int64_t i = 0; i < n; i++) ((double *)dst)[i] = get_f(src, st, i);
        return;
    case QS_BOOL:
        for (int64_t i = 0; i < n; i++) ((uint8_t *)dst)[i] = get_f(src, st, i) != 0;
        return;
    case QS_I64:
        for (int64_t i = 0; i < n; i++) ((int64_t *)dst)[i] = get_i(src, st, i);
        return;
    case QS_I32:
        for (int64_t i = 0; i < n; i++) ((int32_t *)dst)[i] = (int32_t)clampi(get_i(src, st, i), INT32_MIN, INT32_MAX);
        return;
    case QS_I16:
        for (int64_t i = 0; i < n; i++) ((int16_t *)dst)[i] = (int16_t)clampi(get_i(src, st, i), INT16_MIN, INT16_MAX);
        return;
    case QS_U16:
        for (int64_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = (uint16_t)clampi(get_i(src, st, i), 0, UINT16_MAX);
        return;
    case QS_I8: case QS_I4:
        for (int64_t i = 0; i < n; i++) ((int8_t *)dst)[i] = (int8_t)clampi(get_i(src, st, i), INT8_MIN, INT8_MAX);
        return;
    case QS_U8: case QS_U4:
        for (int64_t i = 0; i < n; i++) ((uint8_t *)dst)[i] = (uint8_t)clampi(get_i(src, st, i), 0, UINT8_MAX);
        return;
    default:
        return;
    }
}

int qs_copy_rows(const qs_tensor *src, int64_t start, int64_t n, qs_tensor *out, qs_err *e)
{
    if (src->ndim < 1)
        return qs_error(e, QS_ESHAPE, "cannot take rows of a scalar");
    int64_t rows = src->shape[0];
    if (start < 0 || n < 0 || start > rows || n > rows - start)
        return qs_error(e, QS_ESHAPE, "rows %lld..%lld are outside the array's %lld rows", (long long)start,
                        (long long)(start + n), (long long)rows);
    if (!qs_dtype_size(out->dtype) || !qs_dtype_size(src->dtype))
        return qs_error(e, QS_EUNSUPPORTED, "cannot convert %s to %s", qs_dtype_name(src->dtype),
                        qs_dtype_name(out->dtype));
    int64_t row = qs_shape_numel(src->ndim - 1, src->shape + 1);
    if (qs_numel(out) != n * row) {
        char a[128], b[128];
        int64_t want[QS_MAX_DIMS];
        memcpy(want, src->shape, sizeof want);
        want[0] = n;
        return qs_error(e, QS_ESHAPE, "expected %s elements %s, the destination has shape %s",
                        qs_dtype_name(src->dtype), qs_shape_str(src->ndim, want, a, sizeof a),
                        qs_shape_str(out->ndim, out->shape, b, sizeof b));
    }
    const char *p = (const char *)src->data + (size_t)(start * row) * qs_dtype_size(src->dtype);
    convert(p, src->dtype, out->data, out->dtype, n * row);
    return 0;
}

int qs_dataset_batch(const qs_dataset *d, int i, int64_t start, int64_t n, qs_dtype to, qs_tensor *out,
                     qs_err *e)
{
    if (i < 0 || i >= d->n)
        return qs_error(e, QS_EINVAL, "no array %d in the data set", i);
    if (out->dtype != to)
        return qs_error(e, QS_EINVAL, "batch tensor is %s, expected %s", qs_dtype_name(out->dtype), qs_dtype_name(to));
    int rc = qs_copy_rows(&d->a[i].view, start, n, out, e);
    if (rc < 0 && d->a[i].name[0])
        qs_error_prefix(e, "array '%s': ", d->a[i].name);
    return rc;
}

/* --- writing --------------------------------------------------------------------------------- */

static const char *descr_of(qs_dtype t)
{
    switch (t) {
    case QS_F32: return "<f4";
    case QS_F64: return "<f8";
    case QS_I64: return "<i8";
    case QS_I32: return "<i4";
    case QS_I16: return "<i2";
    case QS_U16: return "<u2";
    case QS_U8: return "|u1";
    case QS_I8: return "|i1";
    case QS_BOOL: return "|b1";
    default: return NULL;
    }
}

/* The header (magic … newline), padded so the data starts at a multiple of 64 bytes as numpy does —
 * counted from `base`, where the header itself starts in the file (0 for a .npy, the member's data
 * offset in a .npz). Version 1.0 unless the dict does not fit a 2-byte length. Returns a malloc'd
 * buffer. */
static uint8_t *npy_header(const qs_tensor *t, uint64_t base, size_t *len, qs_err *e)
{
    const char *descr = descr_of(t->dtype);
    if (!descr) {
        qs_error(e, QS_EUNSUPPORTED, "cannot save %s arrays as .npy", qs_dtype_name(t->dtype));
        return NULL;
    }
    char shape[QS_MAX_DIMS * 24 + 4] = "";
    size_t k = 0;
    for (int i = 0; i < t->ndim; i++)
        k += snprintf(shape + k, sizeof shape - k, i ? ", %lld" : "%lld", (long long)t->shape[i]);
    if (t->ndim == 1)
        snprintf(shape + k, sizeof shape - k, ",");
    char dict[512];
    int dl = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }", descr, shape);
    size_t pre = 10;
    size_t total = (base + pre + dl + 1 + 63) / 64 * 64 - base;
    if (total - pre > 65535) {
        pre = 12;
        total = (base + pre + dl + 1 + 63) / 64 * 64 - base;
    }
    uint8_t *h = malloc(total);
    if (!h) {
        qs_error(e, QS_ENOMEM, "out of memory");
        return NULL;
    }
    size_t hlen = total - pre;
    memcpy(h, NPY_MAGIC, 6);
    h[6] = pre == 10 ? 1 : 2;
    h[7] = 0;
    for (size_t i = 0; i < pre - 8; i++)
        h[8 + i] = (uint8_t)(hlen >> (8 * i));
    memcpy(h + pre, dict, dl);
    memset(h + pre + dl, ' ', total - pre - dl - 1);
    h[total - 1] = '\n';
    *len = total;
    return h;
}

static int write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n) {
        ssize_t k = write(fd, p, n);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += k;
        n -= k;
    }
    return 0;
}

int qs_npy_save(const char *path, const qs_tensor *t, qs_err *e)
{
    size_t hl;
    uint8_t *h = npy_header(t, 0, &hl, e);
    if (!h)
        return qs_error_prefix(e, "%s: ", path);
    /* write a temp file beside the target and rename it, so readers never see half a file; not
     * mkstemp, whose 0600 would survive the rename: O_EXCL + the umask gives the usual mode */
    static atomic_uint counter;
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld.%u", path, (long)getpid(), atomic_fetch_add(&counter, 1));
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0) {
        free(h);
        return qs_error(e, QS_EIO, "%s: %s", path, strerror(errno));
    }
    int bad = write_all(fd, h, hl) < 0 || write_all(fd, t->data, qs_nbytes(t)) < 0;
    int err = errno;
    free(h);
    if (close(fd) < 0 && !bad) {
        bad = 1;
        err = errno;
    }
    if (!bad && rename(tmp, path) < 0) {
        bad = 1;
        err = errno;
    }
    if (bad) {
        unlink(tmp);
        return qs_error(e, QS_EIO, "%s: %s", path, strerror(err));
    }
    return 0;
}

int qs_npz_save(const char *path, int n, const char *const *names, const qs_tensor *const *arrays, qs_err *e)
{
    if (n < 0)
        return qs_error(e, QS_EINVAL, "%s: negative array count", path);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < i; j++)
            if (!strcmp(names[i], names[j]))
                return qs_error(e, QS_EINVAL, "%s: array name '%s' given twice", path, names[i]);
    int zerr = 0;
    zip_t *za = zip_open(path, ZIP_CREATE | ZIP_TRUNCATE, &zerr);
    if (!za) {
        zip_error_t ze;
        zip_error_init_with_code(&ze, zerr);
        int rc = qs_error(e, QS_EIO, "%s: %s", path, zip_error_strerror(&ze));
        zip_error_fini(&ze);
        return rc;
    }
    /* headers must live until zip_close, which is when libzip reads the sources */
    uint8_t **hdr = calloc((size_t)n + 1, sizeof *hdr);
    int rc = 0;
    if (!hdr) {
        rc = qs_error(e, QS_ENOMEM, "out of memory");
        goto fail;
    }
    /* where each member's data will start: libzip writes stored members in order, each after a
     * 30-byte local header and its name (no extra fields for these small, known-size sources) */
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        size_t hl;
        off += 30 + strlen(names[i]) + 4;
        if (!(hdr[i] = npy_header(arrays[i], off, &hl, e))) {
            rc = qs_error_prefix(e, "%s: array '%s': ", path, names[i]);
            goto fail;
        }
        zip_buffer_fragment_t frag[2] = {{hdr[i], hl}, {arrays[i]->data, qs_nbytes(arrays[i])}};
        char member[1024];
        snprintf(member, sizeof member, "%s.npy", names[i]);
        zip_source_t *src = zip_source_buffer_fragment(za, frag, frag[1].length ? 2 : 1, 0);
        zip_int64_t idx = src ? zip_file_add(za, member, src, ZIP_FL_ENC_UTF_8 | ZIP_FL_OVERWRITE) : -1;
        if (idx < 0) {
            if (src)
                zip_source_free(src);
            rc = qs_error(e, QS_EIO, "%s: adding '%s': %s", path, member, zip_error_strerror(zip_get_error(za)));
            goto fail;
        }
        zip_set_file_compression(za, idx, ZIP_CM_STORE, 0);
        off += hl + qs_nbytes(arrays[i]);
    }
    if (zip_close(za) < 0) {
        rc = qs_error(e, QS_EIO, "%s: %s", path, zip_error_strerror(zip_get_error(za)));
        goto fail;
    }
    za = NULL;
fail:
    if (za)
        zip_discard(za);
    for (int i = 0; hdr && i < n; i++)
        free(hdr[i]);
    free(hdr);
    return rc;
}

int qs_dataset_save_stored(const qs_dataset *d, const char *path, qs_err *e)
{
    const char **names = calloc((size_t)d->n + 1, sizeof *names);
    const qs_tensor **arrays = calloc((size_t)d->n + 1, sizeof *arrays);
    int rc = names && arrays ? 0 : qs_error(e, QS_ENOMEM, "%s: out of memory", path);
    for (int i = 0; rc == 0 && i < d->n; i++) {
        names[i] = d->a[i].name;
        arrays[i] = &d->a[i].view;
    }
    if (rc == 0)
        rc = qs_npz_save(path, d->n, names, arrays, e);
    free(names);
    free(arrays);
    return rc;
}
