/*
 * modelfile.h -- a trained model on disk: the architecture and the
 * parameters, with a CRC-32, written atomically (temporary file, fsync,
 * rename, fsync of the directory) so a reader sees the old file or the
 * new one, never a mixture.
 *
 * Layout (little-endian): "SHOALMDL" u32 version u32 nlayers
 *   u32 dims[nlayers + 1] u64 nparams f32 params[nparams] u32 crc32
 * (the CRC covers every byte before it).
 */
#ifndef SHOAL_TRAIN_MODELFILE_H
#define SHOAL_TRAIN_MODELFILE_H

#include <stddef.h>

#include "model.h"

int modelfile_save(const char *path, const struct model *m, const float *p, char *err,
                   size_t errlen);

/* Load; *p_out is malloc'd.  A wrong magic, version, size or checksum is
 * an error naming the file and the problem. */
int modelfile_load(const char *path, struct model *m, float **p_out, char *err,
                   size_t errlen);

/* Write @len bytes to @path atomically (used for every output file). */
int atomic_write(const char *path, const void *data, size_t len, char *err, size_t errlen);

#endif
