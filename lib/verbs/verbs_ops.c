/*
 * verbs_ops.c -- memory registration, remote keys, and the three
 * operations: put (RDMA WRITE, with immediate for SHOAL_PUT_IMM), get
 * (RDMA READ) and send (SEND, inline when it fits, else from a registered
 * bounce buffer).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "verbs_int.h"

/* ---- registration ---------------------------------------------------------- */

int verbs_mr_reg(shoal_mr_t *mr)
{
    shoal_ctx_t *ctx = mr->ctx;
    int access = IBV_ACCESS_LOCAL_WRITE;
    if (mr->access & SHOAL_ACCESS_REMOTE_WRITE)
        access |= IBV_ACCESS_REMOTE_WRITE;
    if (mr->access & SHOAL_ACCESS_REMOTE_READ)
        access |= IBV_ACCESS_REMOTE_READ;
    struct ibv_mr *m = ibv_reg_mr(verbs_ctx(ctx)->pd, mr->addr, mr->len, access);
    if (!m) {
        int err = errno ? -errno : -EIO;
        if (err == -ENOMEM || err == -EAGAIN || err == -EPERM)
            return shoal__fail(ctx, -ENOMEM,
                               "ibv_reg_mr of %zu bytes: %s: the locked-memory limit is "
                               "probably too low (raise `ulimit -l`, or memlock in "
                               "/etc/security/limits.conf)",
                               mr->len, strerror(-err));
        return shoal__fail(ctx, err, "ibv_reg_mr of %zu bytes at %p: %s", mr->len, mr->addr,
                           strerror(-err));
    }
    shoal__put_le32(mr->key, m->rkey);
    mr->keylen = 4;
    mr->priv = m;
    return 0;
}

void verbs_mr_dereg(shoal_mr_t *mr)
{
    struct ibv_mr *m = mr->priv;
    int rc = ibv_dereg_mr(m);
    if (rc)
        shoal__warn(mr->ctx, "verbs: ibv_dereg_mr: %s", strerror(rc));
}

int verbs_rmr_init(shoal_rmr_t *rmr)
{
    if (rmr->keylen != 4)
        return shoal__fail(rmr->ep->ctx, -EBADMSG,
                           "remote region: key of %u bytes, a verbs rkey has 4",
                           rmr->keylen);
    rmr->priv = (void *)(uintptr_t)shoal__get_le32(rmr->key);
    return 0;
}

void verbs_rmr_fini(shoal_rmr_t *rmr)
{
    rmr->priv = NULL;
}

/* ---- the send-queue mirror ----------------------------------------------------- */

/* Retire the WR at the head of the mirror with @status. */
static void retire_head(struct verbs_ep *ve, int status, const char *reason)
{
    struct verbs_swr w = ve->sq[ve->sq_head];
    ve->sq_head = (ve->sq_head + 1) % ve->sq_cap;
    ve->sq_count--;
    ve->sq_done++;
    struct shoal_op *op = w.op;
    if (!op)
        return;
    if (op->pending == 1) {
        /* The op's last WR: it no longer owes a completion. */
        ve->ops_done++;
        if (op->buf) {
            unsigned slot = (unsigned)(((uint8_t *)op->buf - ve->sbuf) / VERBS_RECV_SIZE);
            ve->sfree[ve->nsfree++] = slot;
            op->buf = NULL;
        }
    }
    shoal__op_done(op, status, reason);
}

void verbs_sq_retire(struct verbs_ep *ve, uint64_t seq, int status, const char *reason)
{
    if (seq < ve->sq_done || seq >= ve->sq_done + ve->sq_count) {
        shoal__warn(ve->ep->ctx, "verbs: completion of send WR %llu, none such in flight",
                    (unsigned long long)seq);
        return;
    }
    while (ve->sq_done < seq)
        retire_head(ve, 0, NULL);
    retire_head(ve, status, reason);
}

void verbs_sq_cancel(struct verbs_ep *ve, int status, const char *reason)
{
    while (ve->sq_count)
        retire_head(ve, status, reason);
}

/* Post the chain @wr (@n WRs, all for @op) at once.  @at_post: the op is
 * complete once posted (an inline message), so it owes no completion. */
static int post(struct verbs_ep *ve, struct shoal_op *op, struct ibv_send_wr *wr,
                unsigned n, bool at_post, const char *what)
{
    struct ibv_send_wr *bad = NULL;
    unsigned run = ve->unsignaled, i = 0;
    for (struct ibv_send_wr *w = wr; w; w = w->next, i++) {
        w->wr_id = (ve->sq_posted + i) << 1;
        bool last = w->next == NULL;
        if ((last && !at_post) || run + 1 >= VERBS_SIGNAL_EVERY ||
            ve->sq_count + i + 1 >= ve->sq_cap) {
            w->send_flags |= IBV_SEND_SIGNALED;
            run = 0;
        } else {
            run++;
        }
    }
    int rc = ibv_post_send(ve->qp, wr, &bad);
    unsigned posted = n;
    if (rc) {
        posted = 0;
        for (struct ibv_send_wr *w = wr; w && w != bad; w = w->next)
            posted++;
        if (posted == 0) {
            if (rc == ENOMEM)
                return shoal__fail(ve->ep->ctx, -EAGAIN, "%s: the send queue of %s is full; "
                                   "poll for completions and retry", what, ve->ep->peer);
            return shoal__fail(ve->ep->ctx, -rc, "%s: ibv_post_send: %s", what,
                               strerror(rc));
        }
        /* Part of it went: what went completes, the op reports an error
         * (the QP is put in error, so the posted part is flushed). */
        op->status = -EIO;
        at_post = false;
    }
    ve->unsignaled = posted == n ? run : 0;
    for (unsigned k = 0; k < posted; k++) {
        ve->sq[(ve->sq_head + ve->sq_count) % ve->sq_cap].op = at_post ? NULL : op;
        ve->sq_count++;
    }
    ve->sq_posted += posted;
    if (at_post) {
        op->pending = 1;
        shoal__op_done(op, 0, NULL);
    } else {
        op->pending = (int)posted;
        ve->ops_posted++;
    }
    if (rc) {
        verbs_qp_error(ve);
        shoal__ep_failed(ve->ep, -EIO, "%s: ibv_post_send: %s", what, strerror(rc));
    }
    return 0;
}

/* Room in the mirror for @nwr more WRs?  The ring is the SQ's own size,
 * so this is what keeps a post from overflowing the SQ. */
static int check_room(shoal_ep_t *ep, unsigned nwr, const char *what)
{
    struct verbs_ep *ve = verbs_ep(ep);
    if (!ve || !ve->qp || ve->qp_err)
        return shoal__fail(ep->ctx, -ENOTCONN, "%s: the queue pair of %s is in error", what,
                           ep->peer);
    if (ve->sq_count + nwr > ve->sq_cap)
        return shoal__fail(ep->ctx, -EAGAIN, "%s: the send queue of %s is full (%u WRs); "
                           "poll for completions and retry", what, ep->peer, ve->sq_cap);
    return 0;
}


/*
 * A put or get, cut into WRs of VERBS_WR_BYTES (more when that would take
 * over VERBS_MAX_CHUNKS WRs, never over the device's largest message);
 * only the last carries the immediate (RC executes them in order).
 *
 * Why cut at all: a QP's retry budget (retry_count) is renewed only when a
 * WR completes.  One 16 MiB read is 4,096 response packets; a few stalls
 * of one ack timeout each on a loaded link (soft-RoCE), spread over that
 * long a transfer, can use the whole budget and fail the read with
 * IBV_WC_RETRY_EXC_ERR although the peer is alive.  1 MiB pieces renew it
 * every 256 packets and cost one WR post each, nothing on hardware.
 */
static int rdma_op(shoal_ep_t *ep, struct shoal_op *op, shoal_mr_t *lmr, size_t loff,
                   shoal_rmr_t *rmr, size_t roff, size_t len, enum ibv_wr_opcode opc,
                   bool with_imm, uint32_t imm, const char *what)
{
    struct verbs_ep *ve = verbs_ep(ep);
    uint64_t max = verbs_ctx(ep->ctx)->max_msg_sz;
    if (max == 0 || max > (1u << 30))
        max = 1u << 30;
    uint64_t piece = max < VERBS_WR_BYTES ? max : VERBS_WR_BYTES;
    if ((len + piece - 1) / piece > VERBS_MAX_CHUNKS) {
        piece = (len + VERBS_MAX_CHUNKS - 1) / VERBS_MAX_CHUNKS;
        piece = (piece + 4095) & ~(uint64_t)4095;
        if (piece > max)
            piece = max;
    }
    size_t n = (len + piece - 1) / piece;
    if (n > VERBS_MAX_CHUNKS)
        return shoal__fail(ep->ctx, -EMSGSIZE, "%s: %zu bytes, at most %llu in one operation",
                           what, len, (unsigned long long)(max * VERBS_MAX_CHUNKS));
    int rc = check_room(ep, (unsigned)n, what);
    if (rc)
        return rc;
    struct ibv_mr *m = lmr->priv;
    struct ibv_sge sge[VERBS_MAX_CHUNKS];
    struct ibv_send_wr wr[VERBS_MAX_CHUNKS];
    memset(wr, 0, sizeof(wr[0]) * n);
    for (size_t i = 0; i < n; i++) {
        size_t off = i * piece, l = len - off < piece ? len - off : piece;
        sge[i] = (struct ibv_sge){.addr = (uintptr_t)lmr->addr + loff + off,
                                  .length = (uint32_t)l, .lkey = m->lkey};
        wr[i].sg_list = &sge[i];
        wr[i].num_sge = 1;
        wr[i].opcode = opc;
        wr[i].wr.rdma.remote_addr = rmr->addr + roff + off;
        wr[i].wr.rdma.rkey = (uint32_t)(uintptr_t)rmr->priv;
        wr[i].next = i + 1 < n ? &wr[i + 1] : NULL;
    }
    /* A small put goes inline, as ib_write_lat sends it: the post copies
     * the bytes, so the device need not read them from the region. */
    if (opc == IBV_WR_RDMA_WRITE && n == 1 && len <= ve->max_inline)
        wr[0].send_flags = IBV_SEND_INLINE;
    if (with_imm) {
        wr[n - 1].opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
        wr[n - 1].imm_data = htonl(imm);
    }
    op->buf = NULL;
    return post(ve, op, wr, (unsigned)n, false, what);
}

int verbs_put(shoal_ep_t *ep, struct shoal_op *op, shoal_mr_t *lmr, size_t loff,
              shoal_rmr_t *rmr, size_t roff, size_t len, unsigned flags, uint32_t imm)
{
    return rdma_op(ep, op, lmr, loff, rmr, roff, len, IBV_WR_RDMA_WRITE,
                   (flags & SHOAL_PUT_IMM) != 0, imm, "put");
}

int verbs_get(shoal_ep_t *ep, struct shoal_op *op, shoal_mr_t *lmr, size_t loff,
              shoal_rmr_t *rmr, size_t roff, size_t len)
{
    return rdma_op(ep, op, lmr, loff, rmr, roff, len, IBV_WR_RDMA_READ, false, 0, "get");
}

int verbs_send(shoal_ep_t *ep, struct shoal_op *op, const void *buf, size_t len)
{
    struct verbs_ep *ve = verbs_ep(ep);
    int rc = check_room(ep, 1, "send");
    if (rc)
        return rc;
    struct ibv_sge sge = {.addr = (uintptr_t)buf, .length = (uint32_t)len};
    struct ibv_send_wr wr = {.sg_list = &sge, .num_sge = len ? 1 : 0, .opcode = IBV_WR_SEND};
    op->buf = NULL;
    if (len <= ve->max_inline) {
        wr.send_flags = IBV_SEND_INLINE; /* copied by the post itself */
    } else {
        if (!ve->nsfree)
            return shoal__fail(ep->ctx, -EAGAIN, "send: all %d message buffers of %s are in "
                               "flight; poll for completions and retry", VERBS_NBOUNCE,
                               ep->peer);
        unsigned slot = ve->sfree[--ve->nsfree];
        op->buf = ve->sbuf + (size_t)slot * VERBS_RECV_SIZE;
        memcpy(op->buf, buf, len);
        sge.addr = (uintptr_t)op->buf;
        sge.lkey = ve->smr->lkey;
    }
    rc = post(ve, op, &wr, 1, op->buf == NULL, "send");
    if (rc && op->buf) {
        ve->sfree[ve->nsfree++] = (unsigned)(((uint8_t *)op->buf - ve->sbuf) / VERBS_RECV_SIZE);
        op->buf = NULL;
    }
    return rc;
}

int verbs_send_hs(struct verbs_ep *ve, const void *buf, size_t len)
{
    if (ve->sq_count >= ve->sq_cap)
        return -EAGAIN;
    struct ibv_sge sge = {.addr = (uintptr_t)buf, .length = (uint32_t)len};
    struct ibv_send_wr wr = {.wr_id = ve->sq_posted << 1, .sg_list = &sge, .num_sge = 1,
                             .opcode = IBV_WR_SEND, .send_flags = IBV_SEND_SIGNALED}, *bad;
    if (len <= ve->max_inline) {
        wr.send_flags |= IBV_SEND_INLINE;
    } else {
        /* No inline sends on this device: a bounce buffer, kept for the
         * connection's life (one of VERBS_NBOUNCE). */
        if (!ve->nsfree)
            return -EAGAIN;
        uint8_t *b = ve->sbuf + (size_t)ve->sfree[--ve->nsfree] * VERBS_RECV_SIZE;
        memcpy(b, buf, len);
        sge.addr = (uintptr_t)b;
        sge.lkey = ve->smr->lkey;
    }
    int rc = ibv_post_send(ve->qp, &wr, &bad);
    if (rc)
        return -rc;
    ve->sq[(ve->sq_head + ve->sq_count) % ve->sq_cap].op = NULL;
    ve->sq_count++;
    ve->sq_posted++;
    uint64_t deadline = shoal__now_ms() + 1000;
    while (ve->sq_done < ve->sq_posted && !ve->qp_err && shoal__now_ms() < deadline)
        verbs_poll_ep(ve);
    if (ve->qp_err)
        return -ECONNRESET;
    return ve->sq_done >= ve->sq_posted ? 0 : -ETIMEDOUT;
}
