/*
 * ucx_boot.c -- the UCX provider's own TCP sockets: the listener, and the
 * bootstrap connection on which each connection's handshake runs
 * (lib/boot.h; lib/core/boot.c decides what the bytes mean).  Once the
 * handshake has exchanged the two UCP worker addresses, ucx_ep.c makes the
 * UCP endpoints and this socket is closed: a dead peer is then reported by
 * UCX's error callback on the endpoint (peer error handling), so a second
 * socket per connection would add nothing but a file descriptor.
 *
 * Not for: UCP endpoints and messages (ucx_ep.c, ucx_rma.c).
 *
 * Why not ucp_listener: its TCP connection manager (sockcm) in UCX 1.13
 * asserts and aborts the whole process when a client sends a
 * connection-request header of length 0 followed by more bytes, before
 * any code of ours runs.  Here every byte a stranger sends is read by
 * libshoal, checked against lib/boot.h's bounds, and a stranger gets
 * nothing from UCX at all.
 *
 * Resources a stranger can hold: one socket, one pending endpoint and at
 * most one frame of the size the current step allows, per connection, for
 * at most SHOAL_CONNECT_TIMEOUT; and at most UCX_PENDING_MAX such
 * connections per context (the oldest is dropped for a new one).  All
 * sockets are in one epoll set, polled every 16th progress pass and
 * whenever a wait wakes up for it (ucx_ctx.c), so an idle listener costs
 * the hot path nothing but a counter.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ucx_int.h"

#define ACCEPT_BATCH 64 /* connections accepted per listener event */

int ucx_boot_init(shoal_ctx_t *ctx)
{
    struct ucx_ctx *u = ucx_ctx(ctx);
    u->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (u->epfd < 0)
        return shoal__fail(ctx, -errno, "ucx: epoll_create1: %s", strerror(errno));
    return 0;
}

void ucx_boot_fini(shoal_ctx_t *ctx)
{
    struct ucx_ctx *u = ucx_ctx(ctx);
    if (u->epfd >= 0)
        close(u->epfd);
    u->epfd = -1;
}

static int sock_add(struct ucx_ctx *u, int fd, void *tag, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = tag};
    if (epoll_ctl(u->epfd, EPOLL_CTL_ADD, fd, &ev))
        return -errno;
    u->nsockets++;
    return 0;
}

/* Remove *@fd from the set and close it (now: its descriptor is free). */
static void sock_close(struct ucx_ctx *u, int *fd)
{
    if (*fd < 0)
        return;
    epoll_ctl(u->epfd, EPOLL_CTL_DEL, *fd, NULL);
    close(*fd);
    *fd = -1;
    u->nsockets--;
}

/* ---- the bootstrap connection --------------------------------------------- */

static struct ucx_boot *boot_new(shoal_ep_t *ep, int fd, bool server)
{
    struct ucx_ctx *u = ucx_ctx(ep->ctx);
    struct ucx_ep *e = ucx_ep(ep);
    struct ucx_boot *b = calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    b->tag = UCX_FD_BOOT;
    b->fd = fd;
    shoal__boot_init(&b->proto, ep, server, e->token, e->cookie, u->waddr, u->waddr_len);
    e->boot = b;
    return b;
}

void ucx_boot_free(shoal_ep_t *ep)
{
    struct ucx_ep *e = ucx_ep(ep);
    if (!e || !e->boot)
        return;
    sock_close(ucx_ctx(ep->ctx), &e->boot->fd);
    shoal__boot_fini(&e->boot->proto);
    free(e->boot);
    e->boot = NULL;
}

/* Write what the protocol has queued, as far as the socket takes it; ask
 * for EPOLLOUT while some is left.  0, or a negative errno. */
static int flush_out(struct ucx_ctx *u, struct ucx_boot *b)
{
    struct shoal_boot *p = &b->proto;
    while (p->out_off < p->out_len) {
        ssize_t n = send(b->fd, p->out + p->out_off, p->out_len - p->out_off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            p->out_off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            return -errno;
        break;
    }
    bool want = p->out_off < p->out_len;
    if (want != b->want_out) {
        struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = b};
        epoll_ctl(u->epfd, EPOLL_CTL_MOD, b->fd, &ev);
        b->want_out = want;
    }
    return 0;
}

/* Read what the socket has into the protocol, until it would block or the
 * handshake is over. */
static void read_in(struct ucx_boot *b)
{
    struct shoal_boot *p = &b->proto;
    uint8_t buf[4096];
    while (p->phase != SHOAL_BOOT_DONE && p->phase != SHOAL_BOOT_FAILED) {
        ssize_t n = recv(b->fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n > 0) {
            size_t used = shoal__boot_input(p, buf, (size_t)n);
            if (used < (size_t)n && p->phase == SHOAL_BOOT_DONE)
                shoal__boot_fail(p, -EPROTO, "sent %zu bytes more after its address",
                                 (size_t)n - used);
            continue;
        }
        if (n == 0) {
            shoal__boot_closed(p, 0);
        } else if (errno == EINTR) {
            continue;
        } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
            shoal__boot_closed(p, -errno);
        }
        break;
    }
}

/* The handshake of server endpoint @ep failed: say so (once: auth.c has
 * already named the peer for a refused hello or proof), send the refusal
 * the protocol queued if the socket takes it at once, close the socket,
 * and leave the endpoint for the sweep. */
static void server_failed(shoal_ctx_t *ctx, shoal_ep_t *ep, struct ucx_boot *b)
{
    struct ucx_ctx *u = ucx_ctx(ctx);
    if (!b->proto.logged)
        shoal__refusal(ctx, "ucx: refused connection from %s: %s", ep->peer, b->proto.why);
    if (b->fd >= 0)
        (void)flush_out(u, b);
    sock_close(u, &b->fd);
    shoal__ep_failed(ep, b->proto.err, "%s", b->proto.why);
    u->sweep = true;
}

static void client_failed(shoal_ctx_t *ctx, shoal_ep_t *ep, struct ucx_boot *b)
{
    struct ucx_ep *e = ucx_ep(ep);
    if (b->fd >= 0)
        (void)flush_out(ucx_ctx(ctx), b); /* our refusal of the server, if any */
    sock_close(ucx_ctx(ctx), &b->fd);
    if (!e->hs_err) {
        e->hs_err = b->proto.err ? b->proto.err : -ECONNRESET;
        snprintf(e->hs_why, sizeof(e->hs_why), "%s", b->proto.why);
    }
}

/* One epoll event on a bootstrap socket. */
static void boot_event(shoal_ctx_t *ctx, struct ucx_boot *b, uint32_t events)
{
    struct ucx_ctx *u = ucx_ctx(ctx);
    struct shoal_boot *p = &b->proto;
    shoal_ep_t *ep = p->ep;
    if (b->fd < 0 || p->phase == SHOAL_BOOT_FAILED)
        return; /* closed earlier in this batch */
    if (b->connecting) {
        int err = 0;
        socklen_t el = sizeof(err);
        if (getsockopt(b->fd, SOL_SOCKET, SO_ERROR, &err, &el) || err) {
            err = err ? err : errno;
            shoal__boot_fail(p, -err, "%s", strerror(err));
            client_failed(ctx, ep, b);
            return;
        }
        if (!(events & EPOLLOUT))
            return;
        b->connecting = false;
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
        read_in(b);
    int rc = p->phase == SHOAL_BOOT_FAILED && !p->server ? 0 : flush_out(u, b);
    if (rc && p->phase != SHOAL_BOOT_FAILED)
        shoal__boot_fail(p, -ECONNRESET, "writing: %s", strerror(-rc));
    if (p->phase == SHOAL_BOOT_FAILED) {
        if (p->server)
            server_failed(ctx, ep, b);
        else
            client_failed(ctx, ep, b);
        return;
    }
    if (p->phase != SHOAL_BOOT_DONE)
        return;
    if (!b->handed) { /* the first time: hand the addresses over */
        b->handed = true;
        ucx_boot_done(ep, p);
    }
    if (p->out_off == p->out_len) /* all sent: the socket has done its job */
        sock_close(u, &b->fd);
}

/* ---- client --------------------------------------------------------------------- */

int ucx_boot_connect(shoal_ep_t *ep, const struct sockaddr_storage *ss, socklen_t sl)
{
    shoal_ctx_t *ctx = ep->ctx;
    struct ucx_ctx *u = ucx_ctx(ctx);
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return shoal__fail(ctx, -errno, "connect to %s: socket: %s", ep->peer, strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (const struct sockaddr *)ss, sl) && errno != EINPROGRESS) {
        int err = errno;
        close(fd);
        return shoal__fail(ctx, -err, "connect to %s: %s", ep->peer, strerror(err));
    }
    struct ucx_boot *b = boot_new(ep, fd, false);
    if (!b) {
        close(fd);
        return shoal__fail(ctx, -ENOMEM, "connect to %s: out of memory", ep->peer);
    }
    b->connecting = true;
    b->want_out = true;
    int rc = shoal__boot_start(&b->proto);
    if (rc == 0 && (rc = sock_add(u, fd, b, EPOLLIN | EPOLLOUT)) != 0) {
        close(fd);
        b->fd = -1;
        return shoal__fail(ctx, rc, "connect to %s: epoll: %s", ep->peer, strerror(-rc));
    }
    if (rc)
        return shoal__fail(ctx, rc, "connect to %s: %s", ep->peer, b->proto.why);
    return 0;
}

/* ---- listener --------------------------------------------------------------------- */

int ucx_listen(shoal_listener_t *l, const char *host, uint16_t port)
{
    shoal_ctx_t *ctx = l->ctx;
    struct ucx_ctx *u = ucx_ctx(ctx);
    struct sockaddr_storage ss;
    socklen_t sl;
    const char *h = host ? host : "*";
    int rc = shoal__resolve(ctx, host, port, true, &ss, &sl);
    if (rc)
        return rc;
    struct ucx_listener *ul = calloc(1, sizeof(*ul));
    if (!ul)
        return shoal__fail(ctx, -ENOMEM, "listen on %s:%u: out of memory", h, port);
    ul->tag = UCX_FD_LISTENER;
    ul->l = l;
    ul->fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    const char *step = "socket";
    if (ul->fd < 0 ||
        (step = "SO_REUSEADDR",
         setsockopt(ul->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one))) ||
        (step = "bind", bind(ul->fd, (struct sockaddr *)&ss, sl)) ||
        (step = "listen", listen(ul->fd, 128))) {
        rc = -errno;
        if (ul->fd >= 0)
            close(ul->fd);
        free(ul);
        return shoal__fail(ctx, rc, "listen on %s:%u: %s: %s", h, port, step, strerror(-rc));
    }
    struct sockaddr_storage bound;
    socklen_t bl = sizeof(bound);
    if (getsockname(ul->fd, (struct sockaddr *)&bound, &bl) ||
        (rc = sock_add(u, ul->fd, ul, EPOLLIN)) != 0) {
        rc = rc ? rc : -errno;
        close(ul->fd);
        free(ul);
        return shoal__fail(ctx, rc, "listen on %s:%u: %s", h, port, strerror(-rc));
    }
    l->port = shoal__addr_port((const struct sockaddr *)&bound);
    l->priv = ul;
    return 0;
}

void ucx_listener_close(shoal_listener_t *l)
{
    shoal_ctx_t *ctx = l->ctx;
    struct ucx_ctx *u = ucx_ctx(ctx);
    struct ucx_listener *ul = l->priv;
    /* Its half-open connections go with it. */
    for (struct shoal_list *n = u->pending.next; n != &u->pending; n = n->next) {
        struct ucx_ep *e = shoal__container_of(n, struct ucx_ep, pnode);
        if (e->listener == l)
            shoal__ep_failed(u->slots[e->token & 0xffff], -ECANCELED, "listener closed");
    }
    ucx_sweep_pending(ctx);
    sock_close(u, &ul->fd);
    free(ul);
    l->priv = NULL;
}

/* Make room for one more pending handshake: drop the oldest still going
 * (its socket is closed now; the endpoint goes with the sweep). */
static void drop_oldest(shoal_ctx_t *ctx)
{
    struct ucx_ctx *u = ucx_ctx(ctx);
    for (struct shoal_list *n = u->pending.next; n != &u->pending; n = n->next) {
        struct ucx_ep *e = shoal__container_of(n, struct ucx_ep, pnode);
        shoal_ep_t *ep = u->slots[e->token & 0xffff];
        if (ep->state != SHOAL_EP_CONNECTING)
            continue;
        shoal__refusal(ctx, "ucx: %u handshakes pending, the most allowed: dropped the "
                       "oldest, from %s", u->npending, ep->peer);
        if (e->boot)
            sock_close(u, &e->boot->fd);
        shoal__ep_failed(ep, -EBUSY, "too many handshakes pending");
        u->sweep = true;
        return;
    }
}

static void accept_some(shoal_ctx_t *ctx, struct ucx_listener *ul)
{
    struct ucx_ctx *u = ucx_ctx(ctx);
    for (int i = 0; i < ACCEPT_BATCH && ul->fd >= 0; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int fd = accept4(ul->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE)
                shoal__refusal(ctx, "ucx: cannot accept on port %u: %s", ul->l->port,
                               strerror(errno));
            else if (errno != EAGAIN && errno != EWOULDBLOCK)
                shoal__warn(ctx, "ucx: accept on port %u: %s", ul->l->port, strerror(errno));
            return;
        }
        char peer[96];
        shoal__addr_str((const struct sockaddr *)&ss, peer, sizeof(peer));
        if (u->npending >= UCX_PENDING_MAX)
            drop_oldest(ctx);
        shoal_ep_t *ep = shoal__ep_new(ctx);
        struct ucx_boot *b = NULL;
        if (ep && ucx_ep_priv_new(ep) == 0)
            b = boot_new(ep, fd, true);
        if (!b || sock_add(u, fd, b, EPOLLIN)) {
            shoal__refusal(ctx, "ucx: refused connection from %s: out of resources", peer);
            if (b)
                b->fd = -1; /* not in the set: closed below */
            close(fd);
            if (ep)
                shoal__ep_discard(ep);
            continue;
        }
        snprintf(ep->peer, sizeof(ep->peer), "%s", peer);
        ucx_pending_add(ep, ul->l);
        shoal__debug(ctx, "ucx: connection from %s: handshake begins", peer);
    }
}

int ucx_boot_progress(shoal_ctx_t *ctx)
{
    struct ucx_ctx *u = ucx_ctx(ctx);
    struct epoll_event evs[64];
    int n = epoll_wait(u->epfd, evs, 64, 0);
    for (int i = 0; i < n; i++) {
        uint32_t *tag = evs[i].data.ptr;
        if (*tag == UCX_FD_LISTENER)
            accept_some(ctx, (struct ucx_listener *)tag);
        else
            boot_event(ctx, (struct ucx_boot *)tag, evs[i].events);
    }
    return n > 0 ? n : 0;
}
