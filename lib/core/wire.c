/*
 * wire.c -- byte-level helpers shared by the core and the providers: the
 * CRC used by descriptors, the connection hello, and the clock.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <string.h>
#include <time.h>

#include "core.h"

/* Table-free CRC-32 (reflected 0xEDB88320), four bits at a time with a
 * 16-entry constant table: small, and fast enough for descriptors. */
uint32_t shoal__crc32(uint32_t crc, const void *buf, size_t len)
{
    static const uint32_t nib[16] = {
        0x00000000, 0x1db71064, 0x3b6e20c8, 0x26d930ac, 0x76dc4190, 0x6b6b51f4,
        0x4db26158, 0x5005713c, 0xedb88320, 0xf00f9344, 0xd6d6a3e8, 0xcb61b38c,
        0x9b64c2b0, 0x86d3d2d4, 0xa00ae278, 0xbdbdf21c};
    const uint8_t *p = buf;
    crc = ~crc;
    while (len--) {
        crc ^= *p++;
        crc = (crc >> 4) ^ nib[crc & 15];
        crc = (crc >> 4) ^ nib[crc & 15];
    }
    return ~crc;
}

uint64_t shoal__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

size_t shoal__hello_encode(const struct shoal_hello *h, uint8_t out[SHOAL_HELLO_MAX])
{
    size_t n = SHOAL_HELLO_LEN;
    shoal__put_le32(out, h->magic);
    shoal__put_le16(out + 4, h->version);
    out[6] = h->transport;
    out[7] = h->flags;
    shoal__put_le32(out + 8, h->ep_id);
    shoal__put_le32(out + 12, h->peer_id);
    if (h->flags & SHOAL_HELLO_AUTH) {
        memcpy(out + n, h->nonce, SHOAL_NONCE_LEN);
        n += SHOAL_NONCE_LEN;
    }
    if (h->flags & SHOAL_HELLO_PROOF) {
        memcpy(out + n, h->proof, SHOAL_PROOF_LEN);
        n += SHOAL_PROOF_LEN;
    }
    if (h->flags & SHOAL_HELLO_REFUSE)
        out[n++] = h->reason;
    return n;
}

int shoal__hello_decode(const void *buf, size_t len, shoal_transport_t transport,
                        struct shoal_hello *h, char *why, size_t whylen)
{
    const uint8_t *p = buf;
    memset(h, 0, sizeof(*h));
    if (!buf || len < SHOAL_HELLO_LEN) {
        snprintf(why, whylen, "handshake of %zu bytes, expected at least %d", buf ? len : 0,
                 SHOAL_HELLO_LEN);
        return -EBADMSG;
    }
    h->magic = shoal__get_le32(p);
    h->version = shoal__get_le16(p + 4);
    h->transport = p[6];
    h->flags = p[7];
    h->ep_id = shoal__get_le32(p + 8);
    h->peer_id = shoal__get_le32(p + 12);
    if (h->magic != SHOAL_WIRE_MAGIC) {
        snprintf(why, whylen, "handshake magic 0x%08x, expected 0x%08x (not a shoal peer)",
                 h->magic, SHOAL_WIRE_MAGIC);
        return -EBADMSG;
    }
    if (h->version != SHOAL_WIRE_VERSION) {
        snprintf(why, whylen, "peer speaks protocol version %u, this library %u",
                 h->version, SHOAL_WIRE_VERSION);
        return -EPROTO;
    }
    if (h->transport != (uint8_t)transport) {
        snprintf(why, whylen, "peer uses transport %u, this side %s", h->transport,
                 shoal_transport_name(transport));
        return -EPROTO;
    }
    unsigned known = SHOAL_HELLO_AUTH | SHOAL_HELLO_PROOF | SHOAL_HELLO_REFUSE;
    if (h->flags & ~known) {
        snprintf(why, whylen, "handshake with unknown flags 0x%02x", h->flags);
        return -EBADMSG;
    }
    size_t need = SHOAL_HELLO_LEN + (h->flags & SHOAL_HELLO_AUTH ? SHOAL_NONCE_LEN : 0) +
                  (h->flags & SHOAL_HELLO_PROOF ? SHOAL_PROOF_LEN : 0) +
                  (h->flags & SHOAL_HELLO_REFUSE ? 1 : 0);
    if (len < need) {
        snprintf(why, whylen, "handshake of %zu bytes, its flags 0x%02x need %zu", len,
                 h->flags, need);
        return -EBADMSG;
    }
    size_t n = SHOAL_HELLO_LEN;
    if (h->flags & SHOAL_HELLO_AUTH) {
        memcpy(h->nonce, p + n, SHOAL_NONCE_LEN);
        n += SHOAL_NONCE_LEN;
    }
    if (h->flags & SHOAL_HELLO_PROOF) {
        memcpy(h->proof, p + n, SHOAL_PROOF_LEN);
        n += SHOAL_PROOF_LEN;
    }
    if (h->flags & SHOAL_HELLO_REFUSE)
        h->reason = p[n];
    return 0;
}

int shoal__resolve(shoal_ctx_t *ctx, const char *host, uint16_t port, bool passive,
                   struct sockaddr_storage *ss, socklen_t *sl)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = passive ? AI_PASSIVE : 0}, *res;
    char ports[8];
    snprintf(ports, sizeof(ports), "%u", port);
    if (passive && !host)
        hints.ai_family = AF_INET; /* "all addresses" = 0.0.0.0 */
    int rc = getaddrinfo(host, ports, &hints, &res);
    if (rc)
        return shoal__fail(ctx, -EHOSTUNREACH, "cannot resolve '%s': %s",
                           host ? host : "*", gai_strerror(rc));
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    if (sl)
        *sl = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

uint16_t shoal__addr_port(const struct sockaddr *sa)
{
    if (sa && sa->sa_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)(const void *)sa)->sin_port);
    if (sa && sa->sa_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)(const void *)sa)->sin6_port);
    return 0;
}

void shoal__addr_str(const struct sockaddr *sa, char *out, size_t len)
{
    char host[INET6_ADDRSTRLEN] = "?";
    if (sa && sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, host,
                  sizeof(host));
    else if (sa && sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, host,
                  sizeof(host));
    snprintf(out, len, "%s:%u", host, shoal__addr_port(sa));
}
