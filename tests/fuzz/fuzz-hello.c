/*
 * fuzz-hello.c -- libFuzzer target for the connection handshake: the hello
 * decoder (lib/core/wire.c) and the handshake's decisions (lib/core/auth.c)
 * on both sides, with and without a secret, fed the input as the peer's
 * message.  Invariants: no crash, no sanitizer report; a decoded hello
 * re-encodes to a prefix of the input; nothing is accepted with a secret
 * unless the proof was computed with it.
 *
 * Input: byte 0 selects transport (bit 0), secret (bit 1) and which step
 * reads the rest (bits 2-3: server hello, client ack, server proof, raw
 * decode).
 */
#include <stdint.h>
#include <stdio.h>

#include "fuzz-common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t sel = data[0];
    const uint8_t *in = data + 1;
    size_t len = size - 1;
    int t = sel & 1;
    bool secret = sel & 2;
    shoal_ctx_t ctx;
    shoal_ep_t ep;
    uint8_t out[SHOAL_HELLO_MAX];
    size_t outlen = 0;
    char why[160];
    struct shoal_hello h, h2;
    fz_setup(&ctx, &ep, t, secret, SHOAL_EP_CONNECTING);
    shoal_transport_t tr = ctx.prov->transport;

    /* Always: the raw decoder and its round trip. */
    int rc = shoal__hello_decode(len ? in : NULL, len, tr, &h, why, sizeof(why));
    if (rc == 0) {
        size_t n = shoal__hello_encode(&h, out);
        FZ_CHECK(n <= len && n <= SHOAL_HELLO_MAX);
        FZ_CHECK(memcmp(out, in, n) == 0);
        FZ_CHECK(shoal__hello_decode(out, n, tr, &h2, why, sizeof(why)) == 0);
        FZ_CHECK(memcmp(&h, &h2, sizeof(h)) == 0);
    } else {
        FZ_CHECK(rc == -EBADMSG || rc == -EPROTO);
        FZ_CHECK(memchr(why, '\0', sizeof(why)) != NULL);
    }

    switch ((sel >> 2) & 3) {
    case 0: /* server: a client's first hello */
        rc = shoal__hs_accept(&ep, in, len, 7, out, &outlen);
        FZ_CHECK(outlen <= SHOAL_HELLO_MAX);
        if (rc == 0) {
            FZ_CHECK(ep.hs.need_proof == secret);
            FZ_CHECK(shoal__hello_decode(out, outlen, tr, &h2, why, sizeof(why)) == 0);
        }
        break;
    case 1: { /* client: the server's answer to our hello */
        uint8_t hello[SHOAL_HELLO_MAX];
        size_t hl;
        FZ_CHECK(shoal__hs_hello(&ep, 9, hello, &hl) == 0);
        rc = shoal__hs_ack(&ep, in, len, out, &outlen);
        FZ_CHECK(outlen <= SHOAL_HELLO_MAX);
        /* With a secret, acceptance needs the server's proof over our
         * fresh nonce: the fuzzer cannot produce it. */
        FZ_CHECK(!(rc == 0 && secret));
        break;
    }
    case 2: { /* server: the proof after a genuine hello from a client */
        shoal_ctx_t cctx;
        shoal_ep_t cep;
        uint8_t hello[SHOAL_HELLO_MAX];
        size_t hl;
        fz_setup(&cctx, &cep, t, secret, SHOAL_EP_CONNECTING);
        FZ_CHECK(shoal__hs_hello(&cep, 9, hello, &hl) == 0);
        rc = shoal__hs_accept(&ep, hello, hl, 7, out, &outlen);
        FZ_CHECK(rc == 0);
        if (ep.hs.need_proof) {
            rc = shoal__hs_proof(&ep, in, len);
            FZ_CHECK(rc != 0); /* a proof the fuzzer made cannot be right */
            FZ_CHECK(ep.hs.need_proof);
        }
        break;
    }
    default:
        break;
    }
    return 0;
}
