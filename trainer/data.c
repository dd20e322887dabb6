/*
 * data.c -- IDX and LIBSVM readers (see data.h).
 *
 * IDX files are read through zlib's gzread, which reads gzip and plain
 * files alike.  A file is trusted only after every size in its header has
 * been checked against what it really holds: a short read, bytes after the
 * end, a wrong magic or a count that disagrees with the partner file each
 * stop the load with a message naming the file and the offset.
 */
#include "data.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

__attribute__((format(printf, 3, 4)))
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -EINVAL;
}

/* ---- IDX ----------------------------------------------------------------- */

struct idx_file {
    gzFile gz;
    const char *path;
    int ndims;
    uint32_t dims[3];
    size_t offset;     /* bytes of payload consumed so far */
};

/* Read exactly @len bytes or explain why not. */
static int idx_read(struct idx_file *f, void *buf, size_t len, const char *what, char *err,
                    size_t errlen)
{
    size_t got = 0;
    while (got < len) {
        size_t chunk = len - got > (1u << 30) ? (1u << 30) : len - got;
        int n = gzread(f->gz, (char *)buf + got, (unsigned)chunk);
        if (n < 0) {
            int zerr;
            const char *msg = gzerror(f->gz, &zerr);
            return fail(err, errlen, "%s: offset %zu: corrupt data while reading %s: %s",
                        f->path, f->offset + got, what, msg);
        }
        if (n == 0) {
            int zerr;
            const char *msg = gzerror(f->gz, &zerr);
            if (zerr != Z_OK && zerr != Z_STREAM_END)
                return fail(err, errlen, "%s: offset %zu: %s while reading %s", f->path,
                            f->offset + got, msg, what);
            return fail(err, errlen,
                        "%s: truncated: %s needs %zu bytes at offset %zu, the file ends "
                        "after %zu",
                        f->path, what, len, f->offset, f->offset + got);
        }
        got += (size_t)n;
    }
    f->offset += len;
    return 0;
}

static int idx_open(struct idx_file *f, const char *path, int want_dims, char *err,
                    size_t errlen)
{
    memset(f, 0, sizeof(*f));
    f->path = path;
    f->gz = gzopen(path, "rb");
    if (!f->gz)
        return fail(err, errlen, "%s: cannot open: %s", path, strerror(errno ? errno : ENOENT)),
               -ENOENT;
    gzbuffer(f->gz, 1 << 20);
    uint8_t magic[4];
    int rc = idx_read(f, magic, 4, "the IDX magic number", err, errlen);
    if (rc)
        return rc;
    if (magic[0] != 0 || magic[1] != 0)
        return fail(err, errlen,
                    "%s: offset 0: not an IDX file (magic %02x%02x%02x%02x; expected "
                    "0000080%d)",
                    path, magic[0], magic[1], magic[2], magic[3], want_dims);
    if (magic[2] != 0x08)
        return fail(err, errlen,
                    "%s: offset 2: IDX element type 0x%02x is not supported (only unsigned "
                    "bytes, 0x08)",
                    path, magic[2]);
    if (magic[3] != want_dims)
        return fail(err, errlen, "%s: offset 3: IDX file has %d dimensions, expected %d", path,
                    magic[3], want_dims);
    f->ndims = want_dims;
    for (int i = 0; i < want_dims; i++) {
        uint8_t b[4];
        rc = idx_read(f, b, 4, "the IDX header", err, errlen);
        if (rc)
            return rc;
        f->dims[i] = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
    }
    return 0;
}

/* After the payload: the file must end here. */
static int idx_check_end(struct idx_file *f, char *err, size_t errlen)
{
    char extra[64];
    int n = gzread(f->gz, extra, sizeof(extra));
    if (n < 0) {
        int zerr;
        return fail(err, errlen, "%s: offset %zu: corrupt data after the payload: %s", f->path,
                    f->offset, gzerror(f->gz, &zerr));
    }
    if (n > 0)
        return fail(err, errlen,
                    "%s: offset %zu: unexpected bytes after the %zu the header declares "
                    "(wrong file or corrupt header)",
                    f->path, f->offset, f->offset);
    return 0;
}

static void idx_close(struct idx_file *f)
{
    if (f->gz)
        gzclose(f->gz);
    f->gz = NULL;
}

#define TICK_EVERY 4096 /* samples */

int data_load_idx(const char *images, const char *labels, size_t stride, size_t offset,
                  int classes, struct dataset *d, const struct data_tick *tick, char *err,
                  size_t errlen)
{
    struct idx_file fi, fl;
    uint8_t *row = NULL, *lab = NULL;
    int rc;
    memset(d, 0, sizeof(*d));
    if (stride == 0 || offset >= stride)
        return fail(err, errlen, "bad shard %zu of %zu", offset, stride);
    rc = idx_open(&fi, images, 3, err, errlen);
    if (rc)
        goto out_fi;
    rc = idx_open(&fl, labels, 1, err, errlen);
    if (rc)
        goto out_fl;
    size_t n = fi.dims[0];
    if (fl.dims[0] != n) {
        rc = fail(err, errlen, "%s: offset 4: %u labels, but %s holds %zu images", labels,
                  fl.dims[0], images, n);
        goto out;
    }
    if (n == 0 || fi.dims[1] == 0 || fi.dims[2] == 0) {
        rc = fail(err, errlen, "%s: offset 4: empty IDX file (%zu x %u x %u)", images, n,
                  fi.dims[1], fi.dims[2]);
        goto out;
    }
    if ((uint64_t)fi.dims[1] * fi.dims[2] > (1u << 24)) {
        rc = fail(err, errlen, "%s: offset 8: %u x %u pixels per image is implausible", images,
                  fi.dims[1], fi.dims[2]);
        goto out;
    }
    int dim = (int)(fi.dims[1] * fi.dims[2]);
    size_t keep = n > offset ? (n - offset + stride - 1) / stride : 0;
    lab = malloc(n);
    row = malloc((size_t)dim);
    d->x8 = malloc((keep ? keep : 1) * (size_t)dim);
    d->y = malloc((keep ? keep : 1) * sizeof(int32_t));
    if (!lab || !row || !d->x8 || !d->y) {
        fail(err, errlen, "%s: out of memory for %zu samples", images, keep);
        rc = -ENOMEM;
        goto out;
    }
    rc = idx_read(&fl, lab, n, "the labels", err, errlen);
    if (rc)
        goto out;
    rc = idx_check_end(&fl, err, errlen);
    if (rc)
        goto out;
    int maxlab = 0;
    for (size_t i = 0; i < n; i++) {
        if (classes > 0 && lab[i] >= classes) {
            rc = fail(err, errlen, "%s: offset %zu: label %u out of range (%d classes)", labels,
                      8 + i, lab[i], classes);
            goto out;
        }
        if (lab[i] > maxlab)
            maxlab = lab[i];
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        rc = idx_read(&fi, row, (size_t)dim, "an image", err, errlen);
        if (rc)
            goto out;
        if (tick && i % TICK_EVERY == TICK_EVERY - 1)
            tick->fn(tick->arg);
        if (i % stride != offset)
            continue;
        memcpy(d->x8 + k * (size_t)dim, row, (size_t)dim);
        d->y[k++] = lab[i];
    }
    rc = idx_check_end(&fi, err, errlen);
    if (rc)
        goto out;
    d->n = k;
    d->total = n;
    d->dim = dim;
    d->classes = classes > 0 ? classes : maxlab + 1;
out:
    idx_close(&fl);
out_fl:
    idx_close(&fi);
out_fi:
    free(row);
    free(lab);
    if (rc)
        data_free(d);
    return rc;
}

static int find_file(const char *dir, const char *base, char *out, size_t outlen)
{
    struct stat st;
    snprintf(out, outlen, "%s/%s.gz", dir, base);
    if (stat(out, &st) == 0)
        return 0;
    snprintf(out, outlen, "%s/%s", dir, base);
    return stat(out, &st) == 0 ? 0 : -ENOENT;
}

int data_idx_paths(const char *dir, const char *which, char *images, char *labels,
                   size_t pathlen, char *err, size_t errlen)
{
    char base[64];
    snprintf(base, sizeof(base), "%s-images-idx3-ubyte", which);
    if (find_file(dir, base, images, pathlen))
        return fail(err, errlen,
                    "%s: no %s[.gz] there (for Fashion-MNIST: apt-get install "
                    "dataset-fashion-mnist)",
                    dir, base),
               -ENOENT;
    snprintf(base, sizeof(base), "%s-labels-idx1-ubyte", which);
    if (find_file(dir, base, labels, pathlen))
        return fail(err, errlen, "%s: no %s[.gz] there", dir, base), -ENOENT;
    return 0;
}

/* ---- LIBSVM ------------------------------------------------------------- */

struct svm_scan {
    size_t lines;      /* samples */
    long maxidx;
    struct label_map seen;
};

static int label_find(const struct label_map *m, double v)
{
    for (int i = 0; i < m->n; i++)
        if (m->label[i] == v)
            return i;
    return -1;
}

static int label_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Parse one line.  With @row == NULL only validate and record the label
 * and the largest index into @scan; otherwise write the features. */
static int svm_line(const char *path, size_t lineno, char *s, struct svm_scan *scan, int dim,
                    const struct label_map *map, float *row, int32_t *label, char *err,
                    size_t errlen)
{
    char *end;
    while (isspace((unsigned char)*s))
        s++;
    errno = 0;
    double lab = strtod(s, &end);
    if (end == s || errno || !isfinite(lab) || (*end && !isspace((unsigned char)*end)))
        return fail(err, errlen, "%s: line %zu: the label is not a number", path, lineno);
    s = end;
    if (!row) {
        if (label_find(&scan->seen, lab) < 0) {
            if (scan->seen.n == DATA_MAX_CLASSES)
                return fail(err, errlen, "%s: line %zu: more than %d distinct labels", path,
                            lineno, DATA_MAX_CLASSES);
            scan->seen.label[scan->seen.n++] = lab;
        }
    } else {
        int c = label_find(map, lab);
        if (c < 0)
            return fail(err, errlen, "%s: line %zu: label %g is not among the %d classes of "
                        "the training data", path, lineno, lab, map->n);
        *label = c;
    }
    long last = 0;
    for (;;) {
        while (isspace((unsigned char)*s))
            s++;
        if (!*s || *s == '#')
            break;
        errno = 0;
        long idx = strtol(s, &end, 10);
        if (end == s || *end != ':' || errno)
            return fail(err, errlen, "%s: line %zu: expected index:value at \"%.16s\"", path,
                        lineno, s);
        if (idx <= last)
            return fail(err, errlen,
                        "%s: line %zu: feature index %ld after %ld (indices must be >= 1 "
                        "and increasing)",
                        path, lineno, idx, last);
        if (idx > INT_MAX / 2 || (dim > 0 && idx > dim))
            return fail(err, errlen, "%s: line %zu: feature index %ld beyond the %d features",
                        path, lineno, idx, dim > 0 ? dim : INT_MAX / 2);
        s = end + 1;
        errno = 0;
        double v = strtod(s, &end);
        if (end == s || errno == ERANGE || !isfinite(v) ||
            (*end && !isspace((unsigned char)*end)))
            return fail(err, errlen, "%s: line %zu: feature %ld: bad value", path, lineno, idx);
        s = end;
        last = idx;
        if (row)
            row[idx - 1] = (float)v;
    }
    if (!row && last > scan->maxidx)
        scan->maxidx = last;
    return 0;
}

static int svm_pass(const char *path, FILE *f, struct svm_scan *scan, int dim,
                    const struct label_map *map, size_t stride, size_t offset,
                    struct dataset *d, const struct data_tick *tick, char *err, size_t errlen)
{
    char *line = NULL;
    size_t cap = 0, lineno = 0, sample = 0, k = 0;
    ssize_t len;
    int rc = 0;
    while ((len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if (tick && lineno % TICK_EVERY == 0)
            tick->fn(tick->arg);
        if (memchr(line, 0, (size_t)len)) {
            rc = fail(err, errlen, "%s: line %zu: binary data (NUL byte) in a text file", path,
                      lineno);
            break;
        }
        char *p = line;
        while (isspace((unsigned char)*p))
            p++;
        if (!*p || *p == '#')
            continue;
        if (!d) {
            rc = svm_line(path, lineno, p, scan, dim, NULL, NULL, NULL, err, errlen);
            scan->lines++;
        } else if (sample++ % stride == offset) {
            rc = svm_line(path, lineno, p, scan, dim, map, d->x + k * (size_t)d->dim, d->y + k,
                          err, errlen);
            k++;
        }
        if (rc)
            break;
    }
    if (!rc && ferror(f))
        rc = fail(err, errlen, "%s: read error: %s", path, strerror(errno));
    free(line);
    return rc;
}

int data_load_libsvm(const char *path, int dim, struct label_map *map, size_t stride,
                     size_t offset, struct dataset *d, const struct data_tick *tick, char *err,
                     size_t errlen)
{
    memset(d, 0, sizeof(*d));
    if (stride == 0 || offset >= stride)
        return fail(err, errlen, "bad shard %zu of %zu", offset, stride);
    FILE *f = fopen(path, "r");
    if (!f)
        return fail(err, errlen, "%s: cannot open: %s", path, strerror(errno)), -ENOENT;
    struct svm_scan scan = {0};
    int rc = svm_pass(path, f, &scan, dim, NULL, 1, 0, NULL, tick, err, errlen);
    if (rc)
        goto out;
    if (scan.lines == 0) {
        rc = fail(err, errlen, "%s: no samples in the file", path);
        goto out;
    }
    if (map->n == 0) {
        if (scan.seen.n < 2) {
            rc = fail(err, errlen, "%s: only one distinct label: nothing to classify", path);
            goto out;
        }
        *map = scan.seen;
        qsort(map->label, (size_t)map->n, sizeof(double), label_cmp);
    }
    d->dim = dim > 0 ? dim : (int)scan.maxidx;
    if (d->dim <= 0) {
        rc = fail(err, errlen, "%s: no features in any line", path);
        goto out;
    }
    d->classes = map->n;
    size_t keep = scan.lines > offset ? (scan.lines - offset + stride - 1) / stride : 0;
    d->x = calloc((keep ? keep : 1) * (size_t)d->dim, sizeof(float));
    d->y = calloc(keep ? keep : 1, sizeof(int32_t));
    if (!d->x || !d->y) {
        fail(err, errlen, "%s: out of memory for %zu x %d features", path, keep, d->dim);
        rc = -ENOMEM;
        goto out;
    }
    rewind(f);
    rc = svm_pass(path, f, &scan, d->dim, map, stride, offset, d, tick, err, errlen);
    d->n = keep;
    d->total = scan.lines;
out:
    fclose(f);
    if (rc)
        data_free(d);
    return rc;
}

void data_free(struct dataset *d)
{
    free(d->x);
    free(d->x8);
    free(d->y);
    memset(d, 0, sizeof(*d));
}
