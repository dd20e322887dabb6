/*
 * chain.c -- a pipeline stage's connections to its neighbours and the
 * chain protocol (pipe_proto.h): events, generations, the recovery of the
 * replica after a failure.  The steps themselves are stage.c's.
 *
 * The stages of a replica form a chain of connections: stage s connects
 * to s + 1, which listens and publishes "host port" in a file (next to
 * the rendezvous file, or in --pipe-dir).  HELLO (the job, the sender's
 * gradient inbox) and WELCOME (the receiver's activation inbox) exchange
 * the descriptors.
 *
 * Generations.  A lost connection (its EP_FAILED, a failed put or send),
 * or a new one replacing a live one (a restarted neighbour), starts a new
 * generation: the stage drops the step it was in, says RESET to its
 * neighbours (who do the same), reconnects (or waits for the restarted
 * stage to connect to it), and the chain agrees where to go on: stage 0
 * sends SYNC with its PS iteration down, each stage passes on the smaller
 * of that and its own, the last answers GO with the result, and every
 * stage runs that step next.  Every message carries its generation; an
 * older one's is dropped.  Immediates and messages are ordered on a
 * connection, so the data of an old generation always arrives before the
 * SYNC or GO of the new one, and is ignored while the chain syncs.  A
 * restarted stage learns the job from the stage before it's HELLO and
 * rejoins its PS group with its rank; the PS layer applies each gradient
 * once, and a stage whose PS iteration is past the agreed step runs it
 * without pushing (stage.c).
 *
 * Threads: the stage's one; everything here runs in chain_pump() and
 * chain_sync(), on the stage's own context.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "modelfile.h"
#include "stage.h"

static void send_to(struct link *L, const struct pipe_msg *m)
{
    if (L->ep && L->up)
        (void)pipe_send(L->ep, m); /* a failure shows as the link's EP_FAILED */
}

/*
 * Start generation @g: the step in progress stops, the neighbours hear of
 * it, and the chain agrees where to go on.
 */
void chain_reset(struct stage *st, uint32_t g)
{
    st->gen = g;
    st->syncing = st->restart = true;
    st->sync_in = st->sync_out = st->go = st->refreshed = false;
    st->done_down = st->exit_up = false;
    struct pipe_msg m = {.type = PIPE_RESET, .gen = g};
    send_to(&st->up, &m);
    send_to(&st->down, &m);
}

int chain_went_back(struct stage *st, uint32_t j, uint32_t k)
{
    fprintf(stderr, "shoal-train: worker %d: step %u, but the servers continue this stage at "
            "iteration %u; the replica starts over from there\n", st->w, j, k);
    chain_reset(st, st->gen + 1);
    return -ERESTART;
}

/* Forget a connection (its puts are canceled with it). */
void chain_drop(struct stage *st, struct link *L)
{
    if (L->rmr)
        shoal_rmr_destroy(L->rmr);
    if (L->ep)
        shoal_ep_abort(L->ep);
    L->rmr = NULL;
    L->ep = NULL;
    L->up = false;
    L->puts = 0;
    if (L == &st->down) {
        st->out_busy[0] = st->out_busy[1] = false;
        st->gather_busy = false;
        if (st->grmr)
            shoal_rmr_destroy(st->grmr);
        st->grmr = NULL;
    } else if (L == &st->up) {
        st->gout_busy[0] = st->gout_busy[1] = false;
    }
}

static void lose_link(struct stage *st, struct link *L, const char *why)
{
    if (st->finished)
        return;
    if (st->finishing && L == &st->up) {
        /* Every step is done and the stage before closed: it has finished
         * (its EXIT may come after the close event); nothing is lost. */
        chain_drop(st, L);
        st->exit_up = true;
        return;
    }
    fprintf(stderr, "shoal-train: worker %d: lost %s: %s; the replica starts over from the "
            "last step every stage has\n", st->w, L->name, why ? why : "connection failed");
    chain_drop(st, L);
    chain_reset(st, st->gen + 1);
}

/* A job from a HELLO must be the one this stage was started for. */
static int check_job(struct stage *st, const struct pipe_job *j, char *why, size_t len)
{
    const struct train_cfg *c = st->c;
    if (j->stages != (uint32_t)st->K || j->replicas != (uint32_t)st->D ||
        j->micro != (uint32_t)st->M || j->batch != (uint32_t)st->b ||
        j->epochs != (uint32_t)c->epochs) {
        snprintf(why, len, "its job is %u replicas x %u stages, batch %u in %u micro-batches, "
                 "%u epochs; this stage's is %d x %d, batch %d in %d, %d epochs", j->replicas,
                 j->stages, j->batch, j->micro, j->epochs, st->D, st->K, st->b, st->M,
                 c->epochs);
        return -EINVAL;
    }
    bool same = j->nlayers == (uint32_t)c->nhidden + 1;
    for (int l = 1; same && l <= c->nhidden; l++)
        same = j->dims[l] == (uint32_t)c->hidden[l - 1];
    if (!same) {
        snprintf(why, len, "its model has other hidden layers than --hidden gave this stage");
        return -EINVAL;
    }
    if (st->have_job && memcmp(j, &st->job, sizeof(*j)) != 0) {
        snprintf(why, len, "its job differs from the one this stage learned first (another "
                 "data set or iteration count?)");
        return -EINVAL;
    }
    return 0;
}

int chain_pack(struct stage *st, shoal_mr_t *mr, uint8_t *desc, uint32_t *len)
{
    size_t n;
    int rc = shoal_mr_pack(mr, desc, SHOAL_DESC_MAX, &n);
    if (rc)
        return stage_fail(st, "packing a descriptor: %s", shoal_strerror(rc));
    *len = (uint32_t)n;
    return 0;
}

static int unpack(struct stage *st, struct link *L, const uint8_t *desc, uint32_t len,
                  size_t want, shoal_rmr_t **rmr)
{
    int rc = shoal_rmr_unpack(L->ep, desc, len, rmr);
    if (rc)
        return stage_fail(st, "%s sent a bad descriptor: %s", L->name, shoal_ctx_errmsg(st->ctx));
    if (shoal_rmr_length(*rmr) != want || !(shoal_rmr_access(*rmr) & SHOAL_ACCESS_REMOTE_WRITE))
        return stage_fail(st, "%s offers a %zu-byte region (or not writable); this layout needs %zu",
                     L->name, shoal_rmr_length(*rmr), want);
    return 0;
}

/* Where worker @w publishes its address. */
void chain_addr_path(const struct train_cfg *c, int w, char *buf, size_t len)
{
    if (c->pipe_dir[0])
        snprintf(buf, len, "%s/stage-%d", c->pipe_dir, w);
    else
        snprintf(buf, len, "%s.stage-%d", c->rendezvous, w);
}

int chain_listen(struct stage *st)
{
    const struct train_cfg *c = st->c;
    int rc = shoal_listen(st->ctx, c->host, 0, &st->lis);
    if (rc)
        return stage_fail(st, "cannot listen on %s: %s", c->host, shoal_ctx_errmsg(st->ctx));
    char line[SHOAL_PS_HOST_MAX + 16], err[512];
    int n = snprintf(line, sizeof(line), "%s %u\n", c->host, shoal_listener_port(st->lis));
    chain_addr_path(c, st->w, st->addr_file, sizeof(st->addr_file));
    if (atomic_write(st->addr_file, line, (size_t)n, err, sizeof(err)))
        return stage_fail(st, "publishing this stage's address: %s", err);
    return 0;
}

static int send_hello(struct stage *st)
{
    struct pipe_msg m = {.type = PIPE_HELLO, .gen = st->gen};
    struct pipe_hello *h = &m.u.hello;
    h->worker = (uint32_t)st->w;
    h->stage = (uint32_t)st->s;
    h->replica = (uint32_t)st->r;
    h->incarnation = st->incarnation;
    h->job = st->job;
    int rc = chain_pack(st, st->gin_mr, h->desc, &h->desc_len);
    if (rc)
        return rc;
    if (pipe_send(st->down.ep, &m)) {
        lose_link(st, &st->down, "could not send HELLO");
        return 0;
    }
    return 0;
}

/* Stage s < K-1: one attempt to connect to stage s + 1 (its address from
 * its file; it may not be up yet, or restarting). */
static int try_connect(struct stage *st)
{
    if (st->down.ep || now_s() < st->next_connect)
        return 0;
    st->next_connect = now_s() + 0.1;
    FILE *f = fopen(st->down_file, "r");
    if (!f)
        return 0;
    char host[SHOAL_PS_HOST_MAX];
    unsigned port;
    int n = fscanf(f, "%63s %u", host, &port);
    fclose(f);
    if (n != 2 || port == 0 || port > 65535)
        return 0; /* being rewritten */
    shoal_ep_t *ep;
    if (shoal_connect_retry(st->ctx, host, (uint16_t)port, 500, &ep))
        return 0; /* a restarted stage publishes a new port: read the file again */
    st->down.ep = ep;
    st->down.up = false;
    shoal_ep_set_user(ep, &st->down);
    return send_hello(st);
}

static int on_hello(struct stage *st, const struct pipe_msg *m)
{
    const struct pipe_hello *h = &m->u.hello;
    char why[512];
    struct link *P = &st->pending;
    if (h->stage != (uint32_t)st->s - 1 || h->replica != (uint32_t)st->r ||
        h->worker != (uint32_t)st->w - 1) {
        snprintf(why, sizeof(why), "it is worker %u (replica %u, stage %u); this is worker %d "
                 "(replica %d, stage %d), which takes only worker %d", h->worker, h->replica,
                 h->stage, st->w, st->r, st->s, st->w - 1);
        goto refuse;
    }
    if (check_job(st, &h->job, why, sizeof(why)))
        goto refuse;
    if (!st->have_job) {
        st->job = h->job;
        int rc = stage_setup(st);
        if (rc)
            return rc;
    }
    /* the new connection replaces the old one */
    bool was_up = st->up.ep != NULL;
    chain_drop(st, &st->up);
    st->up.ep = P->ep;
    st->up.up = true;
    shoal_ep_set_user(st->up.ep, &st->up);
    P->ep = NULL;
    int rc = unpack(st, &st->up, h->desc, h->desc_len,
                    2 * (size_t)st->mb * (size_t)st->in_w * sizeof(float), &st->up.rmr);
    if (rc)
        return rc;
    if (m->gen > st->gen) {
        chain_reset(st, m->gen);
    } else if (!st->syncing) {
        if (was_up)
            fprintf(stderr, "shoal-train: worker %d: the stage before reconnected; the replica "
                    "starts over from the last step every stage has\n", st->w);
        chain_reset(st, st->gen + 1);
    }
    struct pipe_msg wm = {.type = PIPE_WELCOME, .gen = st->gen};
    wm.u.hello.worker = (uint32_t)st->w;
    wm.u.hello.stage = (uint32_t)st->s;
    wm.u.hello.replica = (uint32_t)st->r;
    wm.u.hello.incarnation = st->incarnation;
    if ((rc = chain_pack(st, st->inbox_mr, wm.u.hello.desc, &wm.u.hello.desc_len)))
        return rc;
    send_to(&st->up, &wm);
    /* the SYNC that counts comes on this connection */
    st->sync_in = false;
    return 0;
refuse:
    fprintf(stderr, "shoal-train: worker %d: refused a stage at %s: %s\n", st->w,
            shoal_ep_peer(P->ep), why);
    struct pipe_msg em = {.type = PIPE_ERROR};
    snprintf(em.u.text, sizeof(em.u.text), "worker %d refused this stage: %.450s", st->w, why);
    (void)pipe_send(P->ep, &em);
    shoal_ep_close(P->ep);
    P->ep = NULL;
    return 0;
}

static int on_welcome(struct stage *st, const struct pipe_msg *m)
{
    const struct pipe_hello *h = &m->u.hello;
    if (st->down.up)
        return stage_fail(st, "the stage after sent WELCOME twice");
    if (h->stage != (uint32_t)st->s + 1 || h->replica != (uint32_t)st->r)
        return stage_fail(st, "the address of worker %d (%s) is worker %u's (replica %u, stage "
                     "%u): stale --pipe-dir files of another job?", st->w + 1, st->down_file,
                     h->worker, h->replica, h->stage);
    /* its inbox: M slots of our out slot's size */
    int rc = unpack(st, &st->down, h->desc, h->desc_len, (size_t)st->M * st->out_slot,
                    &st->down.rmr);
    if (rc)
        return rc;
    st->down.up = true;
    if (m->gen > st->gen)
        chain_reset(st, m->gen);
    st->sync_out = false; /* (again) on this connection */
    return 0;
}

static int on_imm(struct stage *st, struct link *L, uint32_t imm)
{
    if (st->syncing)
        return 0; /* the old generation's: dropped */
    enum pipe_kind k = pipe_imm_kind(imm);
    uint32_t i = pipe_imm_index(imm);
    if (L == &st->up && k == PIPE_ACT) {
        if (i != st->acts_in % (uint32_t)st->M)
            return stage_fail(st, "the stage before sent micro-batch %u, expected %u", i,
                         st->acts_in % (uint32_t)st->M);
        st->acts_in++;
    } else if (L == &st->up && k == PIPE_EVAL) {
        if (i != (st->evals_in & 0x0fffffffu))
            return stage_fail(st, "the stage before sent evaluation chunk %u, expected %u", i,
                         st->evals_in);
        st->evals_in++;
    } else if (L == &st->up && k == PIPE_MODEL) {
        st->gather_in = true;
    } else if (L == &st->down && k == PIPE_GRAD) {
        if (i != st->grads_in % (uint32_t)st->M)
            return stage_fail(st, "the stage after sent the gradient of micro-batch %u, expected "
                         "%u", i, st->grads_in % (uint32_t)st->M);
        st->grads_in++;
    } else {
        return stage_fail(st, "%s wrote data of kind %d unasked", L->name, (int)k);
    }
    return 0;
}

static int on_message(struct stage *st, struct link *L, const void *data, size_t len)
{
    struct pipe_msg m;
    char why[256];
    if (pipe_decode(data, len, &m, why, sizeof(why)))
        return stage_fail(st, "%s sent a bad message: %s", L->name, why);
    if (L == &st->pending) {
        if (m.type == PIPE_HELLO)
            return on_hello(st, &m);
        return stage_fail(st, "a stage connected and sent %s before HELLO", pipe_type_name(m.type));
    }
    if (m.type == PIPE_ERROR)
        return stage_fail(st, "%s: %s", L->name, m.u.text);
    if (m.type == PIPE_WELCOME && L == &st->down)
        return on_welcome(st, &m);
    if (m.gen > st->gen) /* a newer generation: start it, whatever the message */
        chain_reset(st, m.gen);
    if (m.gen < st->gen)
        return 0;        /* an older one's: dropped */
    bool from_up = L == &st->up;
    switch (m.type) {
    case PIPE_RESET:
        return 0;
    case PIPE_SYNC:
        if (from_up && st->syncing) {
            st->sync_in = true;
            st->sync_k = m.u.iteration;
        }
        return 0; /* (a repeat after a reconnection: already handled) */
    case PIPE_GO:
        if (!from_up && st->syncing && st->sync_out) {
            st->go = true;
            st->go_k = m.u.iteration;
        }
        return 0;
    case PIPE_CREDIT:
        if (m.u.kind == PIPE_GRAD && from_up)       /* our gradient inbox there */
            st->credits_grad++;
        else if (m.u.kind == PIPE_EVAL && !from_up) /* our chunks in its inbox */
            st->credits_eval++;
        else
            break;
        if (st->credits_grad > 2 || st->credits_eval > st->M)
            return stage_fail(st, "%s returned more credits than it was given", L->name);
        return 0;
    case PIPE_STATS:
        if (!from_up || m.u.stats.n != (uint32_t)st->s)
            break;
        for (uint32_t i = 0; i < m.u.stats.n; i++)
            st->busy_all[i] = m.u.stats.busy[i];
        return 0;
    case PIPE_EVAL_END:
        if (!from_up)
            break;
        st->eval_ends++;
        st->eval_chunks = m.u.chunks;
        return 0;
    case PIPE_GATHER: {
        if (from_up)
            break;
        if (st->grmr) /* offered again after a reset */
            shoal_rmr_destroy(st->grmr);
        st->grmr = NULL;
        if (shoal_rmr_unpack(L->ep, m.u.gather.desc, m.u.gather.desc_len, &st->grmr))
            return stage_fail(st, "the stage after sent a bad descriptor: %s",
                         shoal_ctx_errmsg(st->ctx));
        if (shoal_rmr_length(st->grmr) < (st->m.base + st->m.nparams) * sizeof(float))
            return stage_fail(st, "the stage after offers %zu bytes to gather the model in; it "
                         "needs %zu", shoal_rmr_length(st->grmr),
                         (st->m.base + st->m.nparams) * sizeof(float));
        return 0;
    }
    case PIPE_DONE:
        if (from_up)
            break;
        st->done_down = true;
        return 0;
    case PIPE_EXIT:
        if (!from_up)
            break;
        st->exit_up = true;
        return 0;
    case PIPE_HELLO:
    case PIPE_WELCOME:
        break;
    default:
        break;
    }
    return stage_fail(st, "%s sent an unexpected %s", L->name, pipe_type_name(m.type));
}

static void accept_poll(struct stage *st)
{
    shoal_ep_t *ep;
    if (shoal_accept(st->lis, 0, &ep))
        return;
    if (st->pending.ep) /* one at a time: the newer one wins */
        shoal_ep_abort(st->pending.ep);
    st->pending.ep = ep;
    shoal_ep_set_user(ep, &st->pending);
}

/* Wait up to @timeout_ms for events and handle them; <0 on a failure. */
int chain_pump(struct stage *st, int timeout_ms)
{
    if (st->lis && now_s() - st->last_accept > 0.02) {
        st->last_accept = now_s();
        accept_poll(st);
    }
    shoal_event_t ev[32];
    int n = timeout_ms ? shoal_wait(st->ctx, ev, 32, timeout_ms) : shoal_poll(st->ctx, ev, 32);
    if (n < 0)
        return stage_fail(st, "transport: %s", shoal_ctx_errmsg(st->ctx));
    for (int i = 0; i < n; i++) {
        struct link *L = ev[i].ep ? shoal_ep_user(ev[i].ep) : NULL;
        if (!L || L->ep != ev[i].ep)
            continue; /* a connection already dropped */
        int rc = 0;
        switch (ev[i].type) {
        case SHOAL_EV_PUT_DONE: {
            int kind = (int)(ev[i].wr_id >> 8), slot = (int)(ev[i].wr_id & 1);
            L->puts--;
            if (kind == PIPE_GRAD)
                st->gout_busy[slot] = false;
            else if (kind == PIPE_MODEL)
                st->gather_busy = false;
            else
                st->out_busy[slot] = false;
            if (ev[i].status)
                lose_link(st, L, ev[i].reason ? ev[i].reason : shoal_strerror(ev[i].status));
            break;
        }
        case SHOAL_EV_SEND_DONE:
            if (ev[i].status && L != &st->pending)
                lose_link(st, L, ev[i].reason ? ev[i].reason : shoal_strerror(ev[i].status));
            break;
        case SHOAL_EV_IMM:
            if (L != &st->pending)
                rc = on_imm(st, L, ev[i].imm);
            break;
        case SHOAL_EV_RECV:
            rc = on_message(st, L, ev[i].data, ev[i].len);
            break;
        case SHOAL_EV_EP_FAILED:
            if (L == &st->pending) {
                shoal_ep_abort(L->ep);
                L->ep = NULL;
            } else {
                lose_link(st, L, ev[i].reason);
            }
            break;
        default:
            break;
        }
        if (rc)
            return rc;
    }
    return 0;
}

/* Pump until @ready(st, arg): 0, -ERESTART when a reset stops the step,
 * or a failure (no progress for the idle timeout included). */
int chain_wait(struct stage *st, ready_fn ready, uint32_t arg, const char *what)
{
    double since = now_s();
    for (;;) {
        if (st->restart)
            return -ERESTART;
        if (ready(st, arg))
            return 0;
        if (st->ps && shoal_ps_iteration(st->ps) < st->step) /* the handle reconnected */
            return chain_went_back(st, st->step, shoal_ps_iteration(st->ps));
        int rc = chain_pump(st, 20);
        if (rc)
            return rc;
        if ((now_s() - since) * 1000 > st->c->idle_timeout_ms)
            return stage_fail(st, "no progress for %d ms while waiting for %s",
                         st->c->idle_timeout_ms, what);
    }
}

/* Put @len bytes from @mr+@loff to the link's inbox at @roff. */
int chain_put(struct stage *st, struct link *L, shoal_mr_t *mr, size_t loff, shoal_rmr_t *rmr,
               size_t roff, size_t len, uint32_t imm, uint64_t wr_id)
{
    for (;;) {
        if (st->restart)
            return -ERESTART;
        int rc = shoal_put(L->ep, mr, loff, rmr, roff, len, SHOAL_PUT_IMM, imm, wr_id);
        if (rc == 0) {
            L->puts++;
            if (pipe_imm_kind(imm) == PIPE_ACT || pipe_imm_kind(imm) == PIPE_GRAD)
                st->bytes_sent += len; /* training traffic (not evaluation, --save) */
            return 0;
        }
        if (rc != -EAGAIN) {
            lose_link(st, L, shoal_strerror(rc));
            return -ERESTART;
        }
        if ((rc = chain_pump(st, 1)))
            return rc;
    }
}

void chain_send(struct stage *st, struct link *L, struct pipe_msg *m)
{
    m->gen = st->gen;
    if (L->ep && pipe_send(L->ep, m))
        lose_link(st, L, "could not send");
}

int chain_sync(struct stage *st)
{
    double since = now_s();
    for (;;) {
        int rc;
        if (st->s < st->K - 1 && st->have_job && (rc = try_connect(st)))
            return rc;
        if ((rc = chain_pump(st, 20)))
            return rc;
        if (st->have_job && !st->ps && (rc = stage_join_ps(st)))
            return rc;
        if (!st->ps) {
            if ((now_s() - since) * 1000 > st->c->connect_timeout_ms)
                return stage_fail(st, "no word from worker %d (the stage before) within %d ms",
                             st->w - 1, st->c->connect_timeout_ms);
            continue;
        }
        bool up_ok = st->s == 0 || st->up.up, down_ok = st->s == st->K - 1 || st->down.up;
        if (st->gen > 0 && !st->refreshed && up_ok && down_ok) {
            /* After a failure the handle's iteration may be one a restarted
             * server no longer has (its keeper has not noticed yet): the
             * iteration this stage offers is the servers' current word. */
            if ((rc = stage_refresh(st)))
                return rc;
            st->refreshed = true;
            continue;
        }
        uint32_t mine = shoal_ps_iteration(st->ps);
        if (up_ok && down_ok && !st->sync_out && st->s < st->K - 1 &&
            (st->s == 0 || st->sync_in)) {
            struct pipe_msg m = {.type = PIPE_SYNC};
            m.u.iteration = st->s == 0 || mine < st->sync_k ? mine : st->sync_k;
            chain_send(st, &st->down, &m);
            st->sync_out = true;
            continue;
        }
        uint32_t j = 0;
        bool start = false;
        if (st->s == st->K - 1 && up_ok && st->sync_in) {
            j = mine < st->sync_k ? mine : st->sync_k;
            start = true;
        } else if (st->s < st->K - 1 && st->go && up_ok) {
            j = st->go_k;
            start = true;
        }
        if (start) {
            /* new generation's counters before anyone may send its data */
            st->acts_in = st->acts_used = st->grads_in = st->grads_used = 0;
            st->evals_in = st->eval_ends = 0;
            st->gather_in = false;
            st->credits_grad = 2;
            st->credits_eval = st->M;
            st->out_seq = st->gout_seq = 0;
            st->syncing = st->restart = false;
            if (st->s > 0) {
                struct pipe_msg m = {.type = PIPE_GO};
                m.u.iteration = j;
                chain_send(st, &st->up, &m);
            }
            if (st->syncing) /* the GO could not be sent */
                continue;
            if (st->gen > 0)
                fprintf(stderr, "shoal-train: worker %d: generation %u of the chain: step %u "
                        "next\n", st->w, st->gen, j);
            st->step = j;
            return 0;
        }
        if ((now_s() - since) * 1000 > st->c->idle_timeout_ms)
            return stage_fail(st, "the replica's stages did not come together within %d ms (%s%s)",
                         st->c->idle_timeout_ms, up_ok ? "" : "no stage before; ",
                         down_ok ? "" : "no stage after");
    }
}

/* Close the connections after the chain ended: the messages sent are
 * flushed by shoal_ep_close. */
void chain_close(struct stage *st)
{
    struct link *L[] = {&st->up, &st->down};
    for (int i = 0; i < 2; i++) {
        if (L[i]->rmr)
            shoal_rmr_destroy(L[i]->rmr);
        L[i]->rmr = NULL;
        if (L[i]->ep)
            shoal_ep_close(L[i]->ep);
        L[i]->ep = NULL;
    }
    if (st->grmr)
        shoal_rmr_destroy(st->grmr);
    st->grmr = NULL;
}
