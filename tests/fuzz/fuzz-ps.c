/*
 * fuzz-ps.c -- libFuzzer target for shoal-train's control messages
 * (trainer/protocol.c, linked alone): ps_decode on any bytes.  Invariants:
 * no crash or sanitizer report; a decoded message re-encodes, and the
 * re-encoding decodes and re-encodes to the same bytes.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ps_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                              \
    do {                                                                         \
        if (!(cond)) {                                                           \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, \
                    #cond);                                                      \
            abort();                                                             \
        }                                                                        \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct ps_msg m, m2;
    static uint8_t enc[SHOAL_MSG_MAX], enc2[SHOAL_MSG_MAX];
    char why[256];
    uint8_t *buf = malloc(size ? size : 1); /* exact size: ASan sees overreads */
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    int rc = ps_decode(buf, size, &m, why, sizeof(why));
    free(buf);
    if (rc != 0) {
        CHECK(rc < 0 && memchr(why, '\0', sizeof(why)) != NULL);
        return 0;
    }
    int n = ps_encode(&m, enc, sizeof(enc));
    CHECK(n > 0);
    CHECK(ps_decode(enc, (size_t)n, &m2, why, sizeof(why)) == 0);
    int n2 = ps_encode(&m2, enc2, sizeof(enc2));
    CHECK(n2 == n && memcmp(enc, enc2, (size_t)n) == 0);
    (void)ps_type_name(m.type);
    return 0;
}
