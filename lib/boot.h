/*
 * boot.h -- the bootstrap handshake: how a UCX connection is set up over
 * a TCP socket that libshoal owns (lib/core/boot.c decides, with no I/O;
 * lib/ucx/ucx_boot.c moves the bytes).  Shared by the core, the UCX
 * provider and the fuzz targets; not installed.
 *
 * The stream is a sequence of frames:
 *    u32 length (of the body, little-endian)   u8 kind   body[length]
 *    kind HELLO (1): a shoal hello (provider.h), SHOAL_HELLO_LEN to
 *                    SHOAL_HELLO_MAX bytes
 *    kind ADDR  (2): u64 cookie, then the sender's UCP worker address
 *                    (1 to SHOAL_BOOT_ADDR_MAX bytes)
 * A frame of another kind, or whose length is outside its kind's bounds,
 * ends the handshake at once: nothing is allocated for a length that is
 * not believed.
 *
 *   client                               server
 *   HELLO  hello [AUTH nonce]     ->     shoal__hs_accept
 *          shoal__hs_ack          <-     HELLO  ack [AUTH nonce, PROOF] | refusal
 *   HELLO  [proof]                ->     shoal__hs_proof (only with a secret)
 *   ADDR   cookie_c, address_c    ->
 *                                 <-     ADDR   cookie_s, address_s
 * Each side sends its address only to a peer that has passed the hello
 * (and, with a secret, proved it), so only such a peer gets a UCX
 * endpoint.  The cookies are fresh random numbers: each side's first
 * active message on the new UCX connection carries the other's cookie
 * (ucx_ep.c, BIND), which is how a side knows which UCX connection is the
 * one this handshake set up.
 */
#ifndef SHOAL_BOOT_H
#define SHOAL_BOOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "provider.h"

#define SHOAL_FRAME_HDR 5
#define SHOAL_FRAME_HELLO 1
#define SHOAL_FRAME_ADDR 2
#define SHOAL_BOOT_COOKIE_LEN 8
#define SHOAL_BOOT_ADDR_MAX 16384

enum shoal_boot_phase {
    SHOAL_BOOT_HELLO = 0, /* server: waiting for the hello; client: for the answer */
    SHOAL_BOOT_PROOF,     /* server: waiting for the client's proof */
    SHOAL_BOOT_ADDR,      /* waiting for the peer's ADDR */
    SHOAL_BOOT_DONE,      /* both addresses known (the last frame may still be in out) */
    SHOAL_BOOT_FAILED     /* err and why say why; out may hold a refusal */
};

/* One bootstrap connection's protocol state.  The endpoint's handshake
 * state (ep->hs) lives in the endpoint, as on every transport. */
struct shoal_boot {
    shoal_ep_t *ep;
    bool server;
    enum shoal_boot_phase phase;
    uint32_t my_id;                       /* our endpoint id in the hello */
    uint64_t my_cookie, peer_cookie;
    const void *my_addr;                  /* our worker address (not owned) */
    size_t my_addrlen;
    /* the frame being read */
    uint8_t hdr[SHOAL_FRAME_HDR];
    size_t hdr_got;
    uint8_t *body;
    size_t body_len, body_got;
    /* bytes to send, from out_off */
    uint8_t *out;
    size_t out_len, out_off, out_cap;
    /* the peer's address (DONE), in a zeroed buffer of SHOAL_BOOT_ADDR_MAX */
    uint8_t *peer_addr;
    size_t peer_addrlen;
    int err;                              /* FAILED: negative errno */
    bool logged;                          /* FAILED: the refusal was logged already */
    char why[200];
};

/* Set up @b for endpoint @ep; nothing is sent yet. */
void shoal__boot_init(struct shoal_boot *b, shoal_ep_t *ep, bool server, uint32_t my_id,
                      uint64_t my_cookie, const void *my_addr, size_t my_addrlen);
/* Client: queue the first hello.  0, or a negative errno with why. */
int shoal__boot_start(struct shoal_boot *b);
/* Take @n received bytes.  Returns how many it consumed: all of them
 * while the handshake goes on; fewer once it is DONE (the peer must send
 * nothing more, so any rest is the caller's to refuse) or FAILED. */
size_t shoal__boot_input(struct shoal_boot *b, const uint8_t *in, size_t n);
/* The peer closed its end (or the socket failed with @err, 0 for EOF). */
void shoal__boot_closed(struct shoal_boot *b, int err);
/* Fail with @err and a reason (a timeout, an I/O error). */
void shoal__boot_fail(struct shoal_boot *b, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Free what @b allocated. */
void shoal__boot_fini(struct shoal_boot *b);

#endif
