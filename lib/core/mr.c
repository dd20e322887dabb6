/*
 * mr.c -- memory registration and remote descriptors.
 *
 * A descriptor is what one side sends the other so it can put into or get
 * from a registered region: address, length, access and the provider's key,
 * in a fixed little-endian layout (core.h) closed by a CRC.  Because it
 * crosses the network it is never trusted: unpacking checks every field
 * before anything is built from it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

static int mr_reg(shoal_ctx_t *ctx, void *addr, size_t len, unsigned access,
                  shoal_mr_t **mr_p)
{
    if (!mr_p)
        return shoal__fail(ctx, -EINVAL, "mr_reg: the region pointer (mr_p) is NULL");
    if (!addr || len == 0)
        return shoal__fail(ctx, -EINVAL, "mr_reg: empty region (addr %p, length %zu)",
                           addr, len);
    if (access & ~(unsigned)(SHOAL_ACCESS_REMOTE_WRITE | SHOAL_ACCESS_REMOTE_READ))
        return shoal__fail(ctx, -EINVAL, "mr_reg: unknown access bits 0x%x", access);
    shoal_mr_t *mr = calloc(1, sizeof(*mr));
    if (!mr)
        return shoal__fail(ctx, -ENOMEM, "mr_reg: out of memory");
    mr->ctx = ctx;
    mr->addr = addr;
    mr->len = len;
    mr->access = access;
    int rc = ctx->prov->mr_reg(mr);
    if (rc) {
        free(mr);
        return rc;
    }
    ctx->n_mrs++;
    *mr_p = mr;
    return 0;
}

int shoal_mr_reg(shoal_ctx_t *ctx, void *addr, size_t len, unsigned access,
                 shoal_mr_t **mr_p)
{
    if (!ctx)
        return -EINVAL;
    shoal__enter(ctx);
    return shoal__leave(ctx, "mr_reg", mr_reg(ctx, addr, len, access, mr_p));
}

void shoal_mr_dereg(shoal_mr_t *mr)
{
    if (!mr)
        return;
    shoal_ctx_t *ctx = mr->ctx;
    shoal__lock(ctx);
    ctx->prov->mr_dereg(mr);
    ctx->n_mrs--;
    shoal__unlock(ctx);
    free(mr);
}

void *shoal_mr_addr(const shoal_mr_t *mr) { return mr->addr; }
size_t shoal_mr_length(const shoal_mr_t *mr) { return mr->len; }

static int mr_pack(const shoal_mr_t *mr, void *buf, size_t buflen, size_t *len_p)
{
    shoal_ctx_t *ctx = mr->ctx;
    if (!buf || !len_p)
        return shoal__fail(ctx, -EINVAL, "mr_pack: the %s is NULL",
                           buf ? "length pointer (len_p)" : "buffer");
    size_t need = SHOAL_DESC_HDR + mr->keylen + 4;
    if (buflen < need)
        return shoal__fail(ctx, -ENOBUFS, "mr_pack: a buffer of %zu bytes, the descriptor "
                           "needs %zu (SHOAL_DESC_MAX always fits)", buflen, need);
    uint8_t *p = buf;
    shoal__put_le32(p, SHOAL_DESC_MAGIC);
    shoal__put_le16(p + 4, SHOAL_DESC_VERSION);
    p[6] = (uint8_t)mr->ctx->prov->transport;
    p[7] = (uint8_t)mr->access;
    shoal__put_le64(p + 8, (uint64_t)(uintptr_t)mr->addr);
    shoal__put_le64(p + 16, (uint64_t)mr->len);
    shoal__put_le32(p + 24, mr->keylen);
    memcpy(p + SHOAL_DESC_HDR, mr->key, mr->keylen);
    shoal__put_le32(p + need - 4, shoal__crc32(0, p, need - 4));
    *len_p = need;
    return 0;
}

int shoal_mr_pack(const shoal_mr_t *mr, void *buf, size_t buflen, size_t *len_p)
{
    if (!mr)
        return -EINVAL;
    shoal__enter(mr->ctx);
    return shoal__leave(mr->ctx, "mr_pack", mr_pack(mr, buf, buflen, len_p));
}

int shoal__desc_parse(shoal_ctx_t *ctx, const void *buf, size_t len,
                      struct shoal_desc *d)
{
    const uint8_t *p = buf;
    if (!buf || len < SHOAL_DESC_HDR + 4)
        return shoal__fail(ctx, -EBADMSG, "descriptor truncated: %zu bytes, at least %d needed",
                           len, SHOAL_DESC_HDR + 4);
    if (shoal__get_le32(p) != SHOAL_DESC_MAGIC)
        return shoal__fail(ctx, -EBADMSG, "descriptor has bad magic 0x%08x",
                           shoal__get_le32(p));
    uint32_t keylen = shoal__get_le32(p + 24);
    if (keylen > SHOAL_DESC_KEY_MAX || len != SHOAL_DESC_HDR + (size_t)keylen + 4)
        return shoal__fail(ctx, -EBADMSG,
                           "descriptor length %zu does not match its key length %u",
                           len, keylen);
    uint32_t crc = shoal__get_le32(p + len - 4);
    if (crc != shoal__crc32(0, p, len - 4))
        return shoal__fail(ctx, -EBADMSG, "descriptor checksum mismatch (corrupt)");
    uint16_t version = shoal__get_le16(p + 4);
    if (version != SHOAL_DESC_VERSION)
        return shoal__fail(ctx, -EPROTO, "descriptor version %u, this library reads %u",
                           version, SHOAL_DESC_VERSION);
    if (p[6] != (uint8_t)ctx->prov->transport)
        return shoal__fail(ctx, -EPROTO, "descriptor is for transport %s, this context uses %s",
                           shoal_transport_name((shoal_transport_t)p[6]),
                           ctx->prov->name);
    unsigned access = p[7];
    if (access & ~(unsigned)(SHOAL_ACCESS_REMOTE_WRITE | SHOAL_ACCESS_REMOTE_READ))
        return shoal__fail(ctx, -EBADMSG, "descriptor has unknown access bits 0x%x", access);
    uint64_t addr = shoal__get_le64(p + 8), rlen = shoal__get_le64(p + 16);
    if (rlen == 0 || addr + rlen < addr)
        return shoal__fail(ctx, -EBADMSG, "descriptor region [0x%llx, +%llu) is invalid",
                           (unsigned long long)addr, (unsigned long long)rlen);
    d->addr = addr;
    d->len = rlen;
    d->access = access;
    d->keylen = keylen;
    d->key = p + SHOAL_DESC_HDR;
    return 0;
}

static int rmr_unpack(shoal_ep_t *ep, const void *buf, size_t len, shoal_rmr_t **rmr_p)
{
    shoal_ctx_t *ctx = ep->ctx;
    if (!rmr_p)
        return shoal__fail(ctx, -EINVAL, "rmr_unpack: the region pointer (rmr_p) is NULL");
    if (!buf)
        return shoal__fail(ctx, -EINVAL, "rmr_unpack: the descriptor is NULL");
    struct shoal_desc d;
    int rc = shoal__desc_parse(ctx, buf, len, &d);
    if (rc)
        return rc;
    if (ep->state != SHOAL_EP_CONNECTED)
        return shoal__fail(ctx, -ENOTCONN, "rmr_unpack: endpoint %s is not connected",
                           ep->peer);
    uint32_t keylen = d.keylen;
    shoal_rmr_t *rmr = calloc(1, sizeof(*rmr) + keylen);
    if (!rmr)
        return shoal__fail(ctx, -ENOMEM, "rmr_unpack: out of memory");
    rmr->ep = ep;
    rmr->addr = d.addr;
    rmr->len = d.len;
    rmr->access = d.access;
    rmr->keylen = keylen;
    memcpy(rmr->key, d.key, keylen);
    rc = ctx->prov->rmr_init(rmr);
    if (rc) {
        free(rmr);
        return rc;
    }
    shoal__list_add(&ep->rmrs, &rmr->node);
    *rmr_p = rmr;
    return 0;
}

int shoal_rmr_unpack(shoal_ep_t *ep, const void *buf, size_t len,
                     shoal_rmr_t **rmr_p)
{
    if (!ep)
        return -EINVAL;
    shoal__enter(ep->ctx);
    return shoal__leave(ep->ctx, "rmr_unpack", rmr_unpack(ep, buf, len, rmr_p));
}

/* Called by ep close: release the provider part, keep the struct for the
 * application's shoal_rmr_destroy(). */
void shoal__rmr_detach(shoal_rmr_t *rmr)
{
    rmr->ep->ctx->prov->rmr_fini(rmr);
    shoal__list_del(&rmr->node);
    rmr->ep = NULL;
}

void shoal_rmr_destroy(shoal_rmr_t *rmr)
{
    if (!rmr)
        return;
    if (rmr->ep) {
        shoal_ctx_t *ctx = rmr->ep->ctx;
        shoal__lock(ctx);
        shoal__rmr_detach(rmr);
        shoal__unlock(ctx);
    }
    free(rmr);
}

size_t shoal_rmr_length(const shoal_rmr_t *rmr) { return (size_t)rmr->len; }
unsigned shoal_rmr_access(const shoal_rmr_t *rmr) { return rmr->access; }
