/*
 * fuzz-desc.c -- libFuzzer target for remote descriptors (lib/core/mr.c):
 * shoal__desc_parse and shoal_rmr_unpack on a connected endpoint whose
 * provider is stubbed.  Invariants: no crash or sanitizer report; an
 * accepted descriptor's fields lie within the input and describe a
 * non-empty, non-wrapping region with known access bits.
 *
 * Input: byte 0 bit 0 = transport; bit 1 = fix up the CRC before parsing
 * (so the fuzzer gets past the checksum to the fields behind it).
 */
#include <stdint.h>
#include <stdio.h>

#include "fuzz-common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 4 * SHOAL_DESC_MAX)
        return 0;
    uint8_t sel = data[0];
    size_t len = size - 1;
    uint8_t *buf = malloc(len ? len : 1); /* exact size: ASan sees overreads */
    if (!buf)
        return 0;
    memcpy(buf, data + 1, len);
    if ((sel & 2) && len >= 4)
        shoal__put_le32(buf + len - 4, shoal__crc32(0, buf, len - 4));
    shoal_ctx_t ctx;
    shoal_ep_t ep;
    fz_setup(&ctx, &ep, sel & 1, false, SHOAL_EP_CONNECTED);
    struct shoal_desc d;
    int rc = shoal__desc_parse(&ctx, buf, len, &d);
    if (rc == 0) {
        FZ_CHECK(d.len > 0 && d.addr + d.len > d.addr);
        FZ_CHECK((d.access & ~3u) == 0);
        FZ_CHECK(d.key >= buf && d.key + d.keylen + 4 == buf + len);
    } else {
        FZ_CHECK(rc == -EBADMSG || rc == -EPROTO);
    }
    shoal_rmr_t *rmr = NULL;
    int rc2 = shoal_rmr_unpack(&ep, buf, len, &rmr);
    FZ_CHECK((rc2 == 0) == (rmr != NULL));
    if (rc2 == 0) {
        FZ_CHECK(rc == 0 && rmr->keylen == 4 && shoal_rmr_length(rmr) == d.len);
        shoal_rmr_destroy(rmr);
    }
    free(buf);
    return 0;
}
