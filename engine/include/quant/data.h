/* Data sets: .npy (format 1.0–3.0) and .npz (stored or deflated) arrays, memory-mapped and read in
 * batches, so a data set larger than memory still streams.
 *
 *   qs_dataset *d;
 *   qs_dataset_open("calib.npz", &d, &e);
 *   int i = qs_dataset_find(d, "input");            // .npz key without ".npy"; a .npy has one array ""
 *   const qs_tensor *all = qs_dataset_array(d, i);  // view of the whole array (mapped, read-only)
 *   qs_dataset_batch(d, i, 128, 32, QS_F32, out, &e); // rows 128..159 converted into out
 *   qs_dataset_close(d);
 *
 * dtypes: float32, float64, int64, int32, uint8 (and int8, bool); C order only — Fortran order is
 * refused with a clear error. A deflated .npz member is inflated once into an unlinked temp file
 * and mapped from there; qs_dataset_open_limit bounds how much that may write (a zip bomb's
 * headers may lie: inflation also stops at a member's declared size), and qs_dataset_save_stored
 * writes a copy that later opens need not inflate at all. */
#ifndef QUANT_DATA_H
#define QUANT_DATA_H

#include <quant/tensor.h>

typedef struct qs_dataset qs_dataset;

int qs_dataset_open(const char *path, qs_dataset **out, qs_err *e);
/* As qs_dataset_open, inflating at most max_inflate bytes in all (-1: no limit) into temp files in
 * tmpdir (NULL: $TMPDIR, else /tmp): a member whose declared size would pass the limit is refused
 * before anything is inflated (QS_ELIMIT, naming the member, its size and the limit); one
 * inflating past its declared size is QS_EFORMAT. */
int qs_dataset_open_limit(const char *path, int64_t max_inflate, const char *tmpdir, qs_dataset **out,
                          qs_err *e);
/* Bytes inflated into temp files when d was opened: 0 when every array is used in place. */
int64_t qs_dataset_inflated(const qs_dataset *d);
/* Writes d's arrays as a .npz of stored members whose data is aligned, which qs_dataset_open maps
 * in place (inflated() == 0). */
int qs_dataset_save_stored(const qs_dataset *d, const char *path, qs_err *e);
void qs_dataset_close(qs_dataset *d);
int qs_dataset_count(const qs_dataset *d);
const char *qs_dataset_name(const qs_dataset *d, int i);
int qs_dataset_find(const qs_dataset *d, const char *name);      /* -1 when absent */
const qs_tensor *qs_dataset_array(const qs_dataset *d, int i);   /* borrowed view */
int64_t qs_dataset_rows(const qs_dataset *d, int i);              /* leading dim */
/* Drops rows [start, start+n) of array i from the process's resident set when they are read from
 * a mapped file (they are read back from the file when touched again); no-op for heap copies. A
 * reader streaming a large data set calls it on the rows it is done with, so its peak RSS does
 * not grow with the data set. */
void qs_dataset_release(const qs_dataset *d, int i, int64_t start, int64_t n);
/* Copies rows [start, start+n) of array i into out (shape [n, …] already set by the caller, dtype
 * `to`), converting the element type. */
int qs_dataset_batch(const qs_dataset *d, int i, int64_t start, int64_t n, qs_dtype to, qs_tensor *out,
                     qs_err *e);

/* Copies rows [start, start+n) of any array (leading dim = rows) into out, converting the element
 * type (float → int saturates); out must hold n rows' worth of elements. */
int qs_copy_rows(const qs_tensor *src, int64_t start, int64_t n, qs_tensor *out, qs_err *e);

int qs_npy_save(const char *path, const qs_tensor *t, qs_err *e);
int qs_npz_save(const char *path, int n, const char *const *names, const qs_tensor *const *arrays,
                qs_err *e);

#endif
