/*
 * data.h -- training data: the IDX format (MNIST, Fashion-MNIST; raw or
 * gzip), kept as its bytes (a quarter of the floats' memory, converted a
 * row at a time), and the LIBSVM text format, loaded into a dense float
 * matrix.
 *
 * Every loader validates its input and, on failure, returns a negative
 * errno and writes a message naming the file, the offset or line, and the
 * problem into err.
 */
#ifndef SHOAL_TRAIN_DATA_H
#define SHOAL_TRAIN_DATA_H

#include <stddef.h>
#include <stdint.h>

/* Debian's dataset-fashion-mnist. */
#define DATA_DEFAULT_DIR "/usr/share/datasets/fashion-mnist"
#define DATA_MAX_CLASSES 1000

struct dataset {
    size_t n;       /* samples kept (this shard) */
    size_t total;   /* samples in the file */
    int dim;        /* features per sample */
    int classes;    /* labels are 0 .. classes-1 */
    float *x;       /* n x dim, row-major (LIBSVM), or NULL and ... */
    uint8_t *x8;    /* ... n x dim bytes (IDX); a feature is byte / 255 */
    int32_t *y;     /* n labels */
};

/* Bytes the samples take in memory. */
static inline size_t data_bytes(const struct dataset *d)
{
    return d->n * ((size_t)d->dim * (d->x8 ? 1 : sizeof(float)) + sizeof(int32_t));
}

/* Sample @i's features as floats into @out (dim of them). */
static inline void data_row(const struct dataset *d, size_t i, float *out)
{
    const size_t dim = (size_t)d->dim;
    if (d->x8) {
        const uint8_t *src = d->x8 + i * dim;
        for (size_t j = 0; j < dim; j++)
            out[j] = (float)src[j] * (1.0f / 255.0f);
    } else {
        const float *src = d->x + i * dim;
        for (size_t j = 0; j < dim; j++)
            out[j] = src[j];
    }
}

/* The class map of a LIBSVM training file, reused for its test file so a
 * label means the same class in both. */
struct label_map {
    int n;
    double label[DATA_MAX_CLASSES];
};

/* Called every few thousand samples during a load, so a caller in a
 * running job can keep its heartbeats going while it reads a large file.
 * NULL: none. */
struct data_tick {
    void (*fn)(void *arg);
    void *arg;
};

/*
 * Load an IDX image file (unsigned bytes, 3 dimensions) and its IDX label
 * file (unsigned bytes, 1 dimension); pixels are scaled to [0, 1].  Keeps
 * only the samples with index % stride == offset (a worker's shard; pass
 * 1, 0 for all).  classes > 0 bounds the labels; 0 takes max label + 1.
 */
int data_load_idx(const char *images, const char *labels, size_t stride, size_t offset,
                  int classes, struct dataset *d, const struct data_tick *tick, char *err,
                  size_t errlen);

/*
 * Find the IDX files of @dir: {train,t10k}-{images-idx3,labels-idx1}-ubyte
 * with or without .gz.  @which is "train" or "t10k".
 */
int data_idx_paths(const char *dir, const char *which, char *images, char *labels,
                   size_t pathlen, char *err, size_t errlen);

/*
 * Load a LIBSVM file ("label index:value ..." per line, indices 1-based
 * and increasing).  dim > 0 fixes the feature count (an index beyond it is
 * an error); 0 takes the largest index seen.  Labels are mapped to classes
 * in ascending numeric order; with @map->n > 0 on entry the map is fixed
 * (a test file using a label the training file lacks is an error),
 * otherwise it is filled.  Sharding as for IDX.
 */
int data_load_libsvm(const char *path, int dim, struct label_map *map, size_t stride,
                     size_t offset, struct dataset *d, const struct data_tick *tick, char *err,
                     size_t errlen);

void data_free(struct dataset *d);

#endif
