/*
 * boot.c -- the bootstrap handshake's frames and decisions (lib/boot.h),
 * with no I/O: bytes in, bytes to send and a phase out.  The UCX provider
 * (lib/ucx/ucx_boot.c) owns the socket; the fuzz target fuzz-boot feeds
 * this file arbitrary streams.
 *
 * Not for: the hello's own encoding and the authentication decisions
 * (wire.c, auth.c), which this file calls at the right step.
 *
 * What is believed, when: a frame's length is checked against the bounds
 * of its kind, and its kind against the step, before anything is
 * allocated for its body; so a peer can make this side hold at most one
 * frame of the kind the step expects (a hello of at most SHOAL_HELLO_MAX
 * bytes, or an address of at most SHOAL_BOOT_ADDR_MAX).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "boot.h"
#include "core.h"

void shoal__boot_init(struct shoal_boot *b, shoal_ep_t *ep, bool server, uint32_t my_id,
                      uint64_t my_cookie, const void *my_addr, size_t my_addrlen)
{
    memset(b, 0, sizeof(*b));
    b->ep = ep;
    b->server = server;
    b->phase = SHOAL_BOOT_HELLO;
    b->my_id = my_id;
    b->my_cookie = my_cookie;
    b->my_addr = my_addr;
    b->my_addrlen = my_addrlen;
}

void shoal__boot_fini(struct shoal_boot *b)
{
    free(b->body);
    free(b->out);
    free(b->peer_addr);
    b->body = b->out = b->peer_addr = NULL;
}

void shoal__boot_fail(struct shoal_boot *b, int err, const char *fmt, ...)
{
    if (b->phase == SHOAL_BOOT_FAILED)
        return;
    b->phase = SHOAL_BOOT_FAILED;
    b->err = err;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b->why, sizeof(b->why), fmt, ap);
    va_end(ap);
}

static const char *expected(const struct shoal_boot *b)
{
    switch (b->phase) {
    case SHOAL_BOOT_HELLO: return b->server ? "a hello" : "the answer to our hello";
    case SHOAL_BOOT_PROOF: return "an authentication proof";
    case SHOAL_BOOT_ADDR: return "an address";
    default: return "nothing";
    }
}

/* Queue one frame of @kind: @a then @b (either may be empty). */
static int queue(struct shoal_boot *b, uint8_t kind, const void *a, size_t alen, const void *c,
                 size_t clen)
{
    size_t need = SHOAL_FRAME_HDR + alen + clen;
    if (b->out_off) { /* drop what was sent */
        memmove(b->out, b->out + b->out_off, b->out_len - b->out_off);
        b->out_len -= b->out_off;
        b->out_off = 0;
    }
    if (b->out_len + need > b->out_cap) {
        uint8_t *o = realloc(b->out, b->out_len + need);
        if (!o) {
            shoal__boot_fail(b, -ENOMEM, "out of memory");
            return -ENOMEM;
        }
        b->out = o;
        b->out_cap = b->out_len + need;
    }
    uint8_t *p = b->out + b->out_len;
    shoal__put_le32(p, (uint32_t)(alen + clen));
    p[4] = kind;
    if (alen)
        memcpy(p + SHOAL_FRAME_HDR, a, alen);
    if (clen)
        memcpy(p + SHOAL_FRAME_HDR + alen, c, clen);
    b->out_len += need;
    return 0;
}

static int queue_addr(struct shoal_boot *b)
{
    uint8_t cookie[SHOAL_BOOT_COOKIE_LEN];
    shoal__put_le64(cookie, b->my_cookie);
    return queue(b, SHOAL_FRAME_ADDR, cookie, sizeof(cookie), b->my_addr, b->my_addrlen);
}

int shoal__boot_start(struct shoal_boot *b)
{
    uint8_t hello[SHOAL_HELLO_MAX];
    size_t hl;
    int rc = shoal__hs_hello(b->ep, b->my_id, hello, &hl);
    if (rc) {
        shoal__boot_fail(b, rc, "%s", shoal__last_error(b->ep->ctx));
        return rc;
    }
    return queue(b, SHOAL_FRAME_HELLO, hello, hl, NULL, 0);
}

/* The 5-byte header is in: is this frame what this step may receive? */
static void check_header(struct shoal_boot *b)
{
    uint32_t len = shoal__get_le32(b->hdr);
    uint8_t kind = b->hdr[4];
    uint8_t want = b->phase == SHOAL_BOOT_ADDR ? SHOAL_FRAME_ADDR : SHOAL_FRAME_HELLO;
    size_t lo = want == SHOAL_FRAME_HELLO ? SHOAL_HELLO_LEN : SHOAL_BOOT_COOKIE_LEN + 1;
    size_t hi = want == SHOAL_FRAME_HELLO ? SHOAL_HELLO_MAX
                                          : SHOAL_BOOT_COOKIE_LEN + SHOAL_BOOT_ADDR_MAX;
    if (kind != want) {
        shoal__boot_fail(b, -EBADMSG, "%s: a frame of kind %u (%u bytes) where %s was expected",
                         kind == SHOAL_FRAME_HELLO || kind == SHOAL_FRAME_ADDR
                             ? "handshake out of order"
                             : "not a shoal handshake",
                         kind, len, expected(b));
        return;
    }
    if (len < lo || len > hi) {
        shoal__boot_fail(b, -EBADMSG, "a %s frame of %u bytes (from %zu to %zu allowed)",
                         kind == SHOAL_FRAME_HELLO ? "hello" : "address", len, lo, hi);
        return;
    }
    b->body = malloc(len);
    if (!b->body) {
        shoal__boot_fail(b, -ENOMEM, "out of memory");
        return;
    }
    b->body_len = len;
    b->body_got = 0;
}

/* The peer's address goes into a zeroed buffer of the largest size
 * allowed: UCX's parser trusts the lengths inside an address, and a short
 * or lying one must not make it read past our buffer. */
static void take_addr(struct shoal_boot *b)
{
    b->peer_cookie = shoal__get_le64(b->body);
    b->peer_addrlen = b->body_len - SHOAL_BOOT_COOKIE_LEN;
    b->peer_addr = calloc(1, SHOAL_BOOT_ADDR_MAX);
    if (!b->peer_addr) {
        shoal__boot_fail(b, -ENOMEM, "out of memory");
        return;
    }
    memcpy(b->peer_addr, b->body + SHOAL_BOOT_COOKIE_LEN, b->peer_addrlen);
}

/* A whole frame of the kind the step wants is in b->body. */
static void step(struct shoal_boot *b)
{
    shoal_ep_t *ep = b->ep;
    uint8_t out[SHOAL_HELLO_MAX];
    size_t outlen = 0;
    int rc;
    switch (b->phase) {
    case SHOAL_BOOT_HELLO:
        if (b->server) {
            rc = shoal__hs_accept(ep, b->body, b->body_len, b->my_id, out, &outlen);
            if (outlen && queue(b, SHOAL_FRAME_HELLO, out, outlen, NULL, 0))
                return;
            if (rc) { /* auth.c logged why, naming the peer */
                shoal__boot_fail(b, rc, "refused in the hello");
                b->logged = true;
                return;
            }
            b->phase = ep->hs.need_proof ? SHOAL_BOOT_PROOF : SHOAL_BOOT_ADDR;
        } else {
            rc = shoal__hs_ack(ep, b->body, b->body_len, out, &outlen);
            if (outlen && queue(b, SHOAL_FRAME_HELLO, out, outlen, NULL, 0))
                return;
            if (rc) {
                shoal__boot_fail(b, rc, "%s", shoal__last_error(ep->ctx));
                return;
            }
            if (queue_addr(b))
                return;
            b->phase = SHOAL_BOOT_ADDR;
        }
        break;
    case SHOAL_BOOT_PROOF:
        rc = shoal__hs_proof(ep, b->body, b->body_len);
        if (rc) {
            shoal__boot_fail(b, rc, "refused its proof");
            b->logged = true;
            return;
        }
        b->phase = SHOAL_BOOT_ADDR;
        break;
    case SHOAL_BOOT_ADDR:
        take_addr(b);
        if (b->phase == SHOAL_BOOT_FAILED || (b->server && queue_addr(b)))
            return;
        b->phase = SHOAL_BOOT_DONE;
        break;
    default:
        break;
    }
}

size_t shoal__boot_input(struct shoal_boot *b, const uint8_t *in, size_t n)
{
    size_t used = 0;
    while (used < n && b->phase != SHOAL_BOOT_DONE && b->phase != SHOAL_BOOT_FAILED) {
        if (b->hdr_got < SHOAL_FRAME_HDR) {
            size_t k = SHOAL_FRAME_HDR - b->hdr_got;
            if (k > n - used)
                k = n - used;
            memcpy(b->hdr + b->hdr_got, in + used, k);
            b->hdr_got += k;
            used += k;
            if (b->hdr_got == SHOAL_FRAME_HDR)
                check_header(b);
            continue;
        }
        size_t k = b->body_len - b->body_got;
        if (k > n - used)
            k = n - used;
        memcpy(b->body + b->body_got, in + used, k);
        b->body_got += k;
        used += k;
        if (b->body_got < b->body_len)
            continue;
        step(b);
        free(b->body);
        b->body = NULL;
        b->hdr_got = 0;
    }
    return used;
}

void shoal__boot_closed(struct shoal_boot *b, int err)
{
    if (b->phase == SHOAL_BOOT_DONE)
        return;
    if (err)
        shoal__boot_fail(b, -ECONNRESET, "the connection failed during the handshake, "
                         "waiting for %s: %s", expected(b), strerror(-err));
    else if (!b->server && b->phase == SHOAL_BOOT_ADDR)
        shoal__boot_fail(b, -ECONNRESET, "the server closed the connection instead of "
                         "sending its address (it refused the handshake: see its log)");
    else
        shoal__boot_fail(b, -ECONNRESET, "closed the connection%s, waiting for %s",
                         b->hdr_got || b->body_got ? " in the middle of a frame" : "",
                         expected(b));
}
