/*
 * fuzz-boot.c -- libFuzzer target for the bootstrap handshake of UCX
 * connections (lib/core/boot.c: the frames and the protocol's steps, which
 * call the hello decoder and the authentication decisions), fed the input
 * as the peer's byte stream, cut into pieces as a socket might deliver it.
 * Invariants: no crash, no sanitizer report; nothing is buffered beyond a
 * frame's bounds; what we send is well-framed; with a secret the handshake
 * never completes (the fuzzer cannot prove it); without one, it completes
 * only with an address of allowed length; once over, no more input is
 * taken.
 *
 * Input: byte 0 selects the role (bit 0: server, else client), a secret
 * (bit 1) and how the rest is cut (bits 2-7 seed the piece sizes).
 */
#include <stdint.h>
#include <stdio.h>

#include "boot.h"
#include "fuzz-common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Every frame in b->out is whole, of a known kind, within bounds. */
static void check_out(const struct shoal_boot *b)
{
    size_t off = 0;
    while (off < b->out_len) {
        FZ_CHECK(b->out_len - off >= SHOAL_FRAME_HDR);
        uint32_t len = shoal__get_le32(b->out + off);
        uint8_t kind = b->out[off + 4];
        FZ_CHECK(kind == SHOAL_FRAME_HELLO || kind == SHOAL_FRAME_ADDR);
        FZ_CHECK(kind != SHOAL_FRAME_HELLO || (len >= SHOAL_HELLO_LEN && len <= SHOAL_HELLO_MAX));
        FZ_CHECK(kind != SHOAL_FRAME_ADDR || len <= SHOAL_BOOT_COOKIE_LEN + SHOAL_BOOT_ADDR_MAX);
        off += SHOAL_FRAME_HDR + len;
        FZ_CHECK(off <= b->out_len);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t sel = data[0];
    bool server = sel & 1, secret = sel & 2;
    uint32_t cut = (sel >> 2) * 2654435761u + 1;
    shoal_ctx_t ctx;
    shoal_ep_t ep;
    fz_setup(&ctx, &ep, 0, secret, SHOAL_EP_CONNECTING);
    static const uint8_t my_addr[] = "a UCP worker address, for the fuzzer";
    struct shoal_boot b;
    shoal__boot_init(&b, &ep, server, 9, 0x1122334455667788ull, my_addr, sizeof(my_addr));
    if (!server)
        FZ_CHECK(shoal__boot_start(&b) == 0);
    const uint8_t *in = data + 1;
    size_t left = size - 1;
    while (left) {
        cut = cut * 1103515245u + 12345u;
        size_t n = 1 + (cut >> 16) % 97;
        if (n > left)
            n = left;
        size_t used = shoal__boot_input(&b, in, n);
        FZ_CHECK(used <= n);
        bool over = b.phase == SHOAL_BOOT_DONE || b.phase == SHOAL_BOOT_FAILED;
        FZ_CHECK(used == n || over);
        FZ_CHECK(!b.body || b.body_len <= SHOAL_BOOT_COOKIE_LEN + SHOAL_BOOT_ADDR_MAX);
        check_out(&b);
        if (over) {
            /* The handshake is over: it takes nothing more. */
            FZ_CHECK(shoal__boot_input(&b, in + used, left - used) == 0);
            break;
        }
        in += n;
        left -= n;
    }
    if (b.phase == SHOAL_BOOT_DONE) {
        FZ_CHECK(!secret); /* a proof the fuzzer made cannot be right */
        FZ_CHECK(b.peer_addr && b.peer_addrlen >= 1 && b.peer_addrlen <= SHOAL_BOOT_ADDR_MAX);
        FZ_CHECK(!ep.hs.need_proof);
    }
    if (b.phase == SHOAL_BOOT_FAILED) {
        FZ_CHECK(b.err < 0);
        FZ_CHECK(memchr(b.why, '\0', sizeof(b.why)) != NULL);
    }
    shoal__boot_closed(&b, 0);
    FZ_CHECK(b.phase == SHOAL_BOOT_DONE || b.phase == SHOAL_BOOT_FAILED);
    shoal__boot_fini(&b);
    return 0;
}
