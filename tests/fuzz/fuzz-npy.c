/* fuzz-npy: bytes as a data set file — .npy, or .npz when they start with a zip signature, as
 * qs_dataset_open decides — written to a memfd and opened by its /proc path; then every array is
 * read: its first rows and its last row converted to float32, as calibration and eval read them. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#include "data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void read_rows(const qs_dataset *d, int i, int64_t start, int64_t n)
{
    const qs_tensor *a = qs_dataset_array(d, i);
    if (!a || a->ndim < 1 || n <= 0)
        return;
    int64_t shape[QS_MAX_DIMS];
    for (int k = 0; k < a->ndim; k++)
        shape[k] = a->shape[k];
    shape[0] = n;
    qs_tensor *out = qs_tensor_new(QS_F32, a->ndim, shape);
    if (!out)
        return;
    qs_err e = { 0 };
    qs_dataset_batch(d, i, start, n, QS_F32, out, &e);
    qs_tensor_free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    qs_set_max_tensor_bytes((size_t)64 << 20);
    int fd = memfd_create("fuzz-npy", MFD_CLOEXEC);
    if (fd < 0 || write(fd, data, size) != (ssize_t)size) {
        if (fd >= 0)
            close(fd);
        return 0;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    qs_err e = { 0 };
    qs_dataset *d = NULL;
    if (qs_dataset_open(path, &d, &e) == 0) {
        for (int i = 0; i < qs_dataset_count(d); i++) {
            (void)qs_dataset_name(d, i);
            int64_t rows = qs_dataset_rows(d, i);
            read_rows(d, i, 0, rows < 4 ? rows : 4);
            if (rows > 0)
                read_rows(d, i, rows - 1, 1);
        }
        qs_dataset_close(d);
    }
    close(fd);
    return 0;
}
