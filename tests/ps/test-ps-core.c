/*
 * test-ps-core.c -- the parameter server's rules, checked by driving the
 * transport-free core (lib/ps/ps_core.c) directly: no network, no floats.
 *
 * A small simulator carries out the core's actions the way the server
 * loop would (APPLY records which worker's gradient of which iteration
 * went into which update; SEND marks a buffer read until its PUT_DONE),
 * so each rule is asserted on what the core decided.
 */
#include <stdlib.h>
#include <string.h>

#include "cu.h"
#include <math.h>

#include "ps_compress.h"
#include "ps_core.h"
#include "ps_optim.h"

#define MAXW 8
#define MAXAPPLIED 100000

struct sim {
    struct ps_core c;
    double now;
    uint32_t slot_k[MAXW];          /* the iteration whose gradient is in each slot */
    /* every (worker, k) applied, to check exactly once */
    uint32_t applied_w[MAXAPPLIED], applied_k[MAXAPPLIED];
    int napplied;
    int applies;                    /* APPLY actions */
    int sends[MAXW];                /* SEND actions per worker */
    uint32_t sent_version[MAXW];
    int members[MAXW];              /* MEMBERS actions per worker */
    uint32_t members_epoch[MAXW];
    int drops, refuses, welcomes, fetches, checkpoints, giveups, replaces;
    uint32_t welcome_k[MAXW];
    int inflight[MAXW + 2];         /* puts in flight from each buffer */
    int pending_buf[MAXW][64], npending[MAXW];
    bool broken;                    /* a rule was broken: details printed */
    struct ps_action last_apply;
    int last_apply_slots[MAXW];
};

static void sim_init(struct sim *s, int W, enum ps_core_mode mode, int staleness, bool coord,
                     bool need_init)
{
    memset(s, 0, sizeof(*s));
    struct ps_core_cfg cfg = {.workers = W, .mode = mode, .staleness = staleness,
                              .iters_per_epoch = 10, .epochs = 100, .coordinator = coord,
                              .need_init = need_init, .rejoin_timeout = 5.0};
    CU_ASSERT_EQUAL_FATAL(ps_core_init(&s->c, &cfg, 0.0), 0);
}

/* Carry out the actions of the last step; SENDs stay in flight until
 * sim_complete(). */
static void sim_do(struct sim *s, int n)
{
    for (int i = 0; i < n; i++) {
        const struct ps_action *a = &s->c.act[i];
        switch (a->type) {
        case PS_ACT_APPLY:
            /* never write a buffer a put is still reading */
            if (s->inflight[a->to] != 0 || a->to == a->from) {
                printf("APPLY into buffer %d with %d puts reading it\n", a->to,
                       s->inflight[a->to]);
                s->broken = true;
            }
            for (int j = 0; j < a->n; j++) {
                int w = a->slots[j];
                for (int q = 0; q < s->napplied; q++)
                    if (s->applied_w[q] == (uint32_t)w && s->applied_k[q] == s->slot_k[w]) {
                        printf("gradient %u of worker %d applied twice\n", s->slot_k[w], w);
                        s->broken = true;
                    }
                s->applied_w[s->napplied] = (uint32_t)w;
                s->applied_k[s->napplied++] = s->slot_k[w];
            }
            s->applies++;
            s->last_apply = *a;
            memcpy(s->last_apply_slots, a->slots, (size_t)a->n * sizeof(int));
            break;
        case PS_ACT_SEND:
            s->sends[a->worker]++;
            s->sent_version[a->worker] = a->version;
            s->inflight[a->buf]++;
            s->pending_buf[a->worker][s->npending[a->worker]++] = a->buf;
            break;
        case PS_ACT_MEMBERS:
            s->members[a->worker]++;
            s->members_epoch[a->worker] = a->epoch;
            break;
        case PS_ACT_DROP: s->drops++; break;
        case PS_ACT_REFUSE: s->refuses++; break;
        case PS_ACT_WELCOME:
            s->welcomes++;
            s->welcome_k[a->worker] = a->k;
            break;
        case PS_ACT_FETCH_INIT: s->fetches++; break;
        case PS_ACT_CHECKPOINT: s->checkpoints++; break;
        case PS_ACT_GIVE_UP: s->giveups++; break;
        case PS_ACT_REPLACE:
            /* the old connection is closed: its puts end without events */
            while (s->npending[a->worker] > 0)
                s->inflight[s->pending_buf[a->worker][--s->npending[a->worker]]]--;
            s->replaces++;
            break;
        default: break;
        }
    }
}

static int ev(struct sim *s, enum ps_ev_type t, int w, uint32_t k)
{
    struct ps_event e = {.type = t, .worker = w, .k = k, .incarnation = k, .now = s->now};
    int n = ps_core_step(&s->c, &e);
    CU_ASSERT_TRUE(n >= 0);
    if (n > 0)
        sim_do(s, n);
    return n;
}

static void join(struct sim *s, int w, uint32_t inc) { ev(s, PS_EV_JOIN, w, inc); }

static void push(struct sim *s, int w, uint32_t k)
{
    s->slot_k[w] = k;
    ev(s, PS_EV_PUSH, w, k);
}

static void lost(struct sim *s, int w)
{
    while (s->npending[w] > 0) /* its connection is closed: no PUT_DONE will come */
        s->inflight[s->pending_buf[w][--s->npending[w]]]--;
    ev(s, PS_EV_LOST, w, 0);
}

/* Complete every put in flight to worker w. */
static void complete(struct sim *s, int w)
{
    while (s->npending[w] > 0) {
        int b = s->pending_buf[w][--s->npending[w]];
        s->inflight[b]--;
        struct ps_event e = {.type = PS_EV_PUT_DONE, .worker = w, .buf = b, .now = s->now};
        int n = ps_core_step(&s->c, &e);
        CU_ASSERT_TRUE(n >= 0);
        if (n > 0)
            sim_do(s, n);
    }
}

static void complete_all(struct sim *s, int W)
{
    for (int w = 0; w < W; w++)
        complete(s, w);
}

static void tick(struct sim *s, double now)
{
    s->now = now;
    ev(s, PS_EV_TICK, 0, 0);
}

/* ---- tests ------------------------------------------------------------------ */

static void test_bsp_barrier(void)
{
    struct sim s;
    sim_init(&s, 3, PS_CORE_BSP, 0, false, false);
    for (int w = 0; w < 3; w++)
        join(&s, w, 1);
    CU_ASSERT_EQUAL(s.welcomes, 3);
    CU_ASSERT_EQUAL(s.sends[0] + s.sends[1] + s.sends[2], 3); /* the first parameters */
    complete_all(&s, 3);
    for (uint32_t k = 0; k < 20; k++) {
        push(&s, 0, k);
        push(&s, 1, k);
        CU_ASSERT_EQUAL(s.applies, (int)k); /* not before the last gradient */
        complete_all(&s, 3);
        push(&s, 2, k);
        CU_ASSERT_EQUAL(s.applies, (int)k + 1);
        CU_ASSERT_EQUAL(s.last_apply.n, 3);
        CU_ASSERT_DOUBLE_EQUAL(s.last_apply.scale, 1.0 / 3, 1e-7);
        for (int w = 0; w < 3; w++)
            CU_ASSERT_EQUAL(s.sent_version[w], k + 1);
        complete_all(&s, 3);
    }
    CU_ASSERT_EQUAL(s.c.version, 20);
    CU_ASSERT_EQUAL(s.c.grads, 60);
    CU_ASSERT_FALSE(s.broken);
    ps_core_finished(&s.c);
    ps_core_fini(&s.c);
}

static void test_async_on_arrival(void)
{
    struct sim s;
    sim_init(&s, 2, PS_CORE_ASYNC, 0, false, false);
    join(&s, 0, 1);
    join(&s, 1, 1);
    complete_all(&s, 2);
    int sends1 = s.sends[1];
    for (uint32_t k = 0; k < 10; k++) {
        push(&s, 0, k);
        CU_ASSERT_EQUAL(s.applies, (int)k + 1);
        CU_ASSERT_EQUAL(s.last_apply.n, 1);
        CU_ASSERT_EQUAL(s.last_apply_slots[0], 0);
        CU_ASSERT_DOUBLE_EQUAL(s.last_apply.scale, 0.5, 1e-7);
        CU_ASSERT_EQUAL(s.sent_version[0], k + 1); /* its sender, at once */
        complete(&s, 0);
    }
    CU_ASSERT_EQUAL(s.sends[1], sends1); /* the other worker is not answered */
    CU_ASSERT_FALSE(s.broken);
    ps_core_fini(&s.c);
}

/* Worker 0 runs ahead of worker 1 as far as the core lets it; its answer
 * for iteration k may only come while worker 1 has done k + 1 - s. */
static void ssp_run(int staleness, int *max_ahead)
{
    struct sim s;
    sim_init(&s, 2, PS_CORE_SSP, staleness, false, false);
    join(&s, 0, 1);
    join(&s, 1, 1);
    complete_all(&s, 2);
    uint32_t k0 = 0, k1 = 0;
    *max_ahead = 0;
    for (int round = 0; round < 40; round++) {
        /* worker 0 pushes whenever it has an answer; worker 1 every third turn */
        int before = s.sends[0];
        if (s.npending[0] > 0 || round == 0) {
            complete(&s, 0);
            push(&s, 0, k0++);
        }
        (void)before;
        if (round % 3 == 2) {
            complete(&s, 1);
            push(&s, 1, k1++);
        }
        /* worker 0 may start iteration k0 only when answered */
        int answered_upto = (int)s.c.w[0].clock - (s.c.w[0].waiting ? 1 : 0);
        int ahead = answered_upto - (int)s.c.w[1].clock;
        if (ahead > *max_ahead)
            *max_ahead = ahead;
    }
    CU_ASSERT_FALSE(s.broken);
    ps_core_fini(&s.c);
}

static void test_ssp_bound(void)
{
    int ahead;
    ssp_run(2, &ahead);
    CU_ASSERT_EQUAL(ahead, 2);  /* reaches the bound, never past it */
    ssp_run(0, &ahead);
    CU_ASSERT_EQUAL(ahead, 0);  /* s = 0: lock step, as bsp */
    /* s = 0 answers exactly when bsp would: worker 0 waits for worker 1 */
    struct sim s;
    sim_init(&s, 2, PS_CORE_SSP, 0, false, false);
    join(&s, 0, 1);
    join(&s, 1, 1);
    complete_all(&s, 2);
    int before = s.sends[0];
    push(&s, 0, 0);
    CU_ASSERT_EQUAL(s.sends[0], before); /* held */
    push(&s, 1, 0);
    CU_ASSERT_EQUAL(s.sends[0], before + 1);
    CU_ASSERT_FALSE(s.broken);
    ps_core_fini(&s.c);
}

static void test_duplicates_dropped(void)
{
    for (int mode = PS_CORE_BSP; mode <= PS_CORE_SSP; mode++) {
        struct sim s;
        sim_init(&s, 2, (enum ps_core_mode)mode, 1, false, false);
        join(&s, 0, 1);
        join(&s, 1, 1);
        complete_all(&s, 2);
        push(&s, 0, 0);
        int applies = s.applies;
        push(&s, 0, 0);               /* the same push again */
        CU_ASSERT_EQUAL(s.drops, 1);
        CU_ASSERT_EQUAL(s.applies, applies);
        push(&s, 1, 5);               /* from the future */
        CU_ASSERT_EQUAL(s.drops, 2);
        push(&s, 1, 0);
        complete_all(&s, 2);
        push(&s, 1, 0);               /* stale: already taken */
        CU_ASSERT_EQUAL(s.drops, 3);
        CU_ASSERT_EQUAL(s.c.dropped, 3);
        CU_ASSERT_EQUAL(s.c.grads, 2);
        CU_ASSERT_FALSE(s.broken);
        ps_core_fini(&s.c);
    }
}

/* Random schedules of pushes (good, duplicated, stale), completions,
 * losses and rejoins: no gradient is ever applied twice, and every one
 * taken is applied. */
static void test_exactly_once_random(void)
{
    srand(7);
    for (int trial = 0; trial < 300; trial++) {
        int W = 2 + trial % 3;
        enum ps_core_mode mode = (enum ps_core_mode)(trial % 3);
        struct sim s;
        sim_init(&s, W, mode, 1, trial % 2 == 0, false);
        uint32_t k[MAXW] = {0}, inc[MAXW] = {0};
        bool up[MAXW] = {false};
        for (int w = 0; w < W; w++) {
            inc[w] = 1;
            join(&s, w, inc[w]);
            up[w] = true;
            k[w] = s.welcome_k[w];
        }
        for (int step = 0; step < 400; step++) {
            int w = rand() % W, r = rand() % 20;
            s.now += 0.01;
            if (!up[w]) {
                if (r < 3) {
                    join(&s, w, ++inc[w]);
                    up[w] = true;
                    k[w] = s.welcome_k[w];
                }
                continue;
            }
            if (r == 0) {
                lost(&s, w);
                up[w] = false;
            } else if (r < 3) {
                push(&s, w, k[w] > 0 ? k[w] - 1 : 0); /* a duplicate */
            } else if (r < 12) {
                if (s.npending[w] > 0 || s.c.w[w].answer_due == false) {
                    complete(&s, w);
                    /* the worker pushes its next gradient only once answered */
                    if (!s.c.w[w].waiting && !s.c.w[w].queued && !s.c.w[w].arrived &&
                        s.c.w[w].clock == k[w])
                        push(&s, w, k[w]++);
                }
            } else {
                complete(&s, w);
            }
        }
        CU_ASSERT_FALSE(s.broken);
        CU_ASSERT_EQUAL((uint64_t)s.napplied, s.c.grads);
        ps_core_fini(&s.c);
        if (s.broken)
            break;
    }
}

static void test_lost_and_rejoin(void)
{
    struct sim s;
    sim_init(&s, 2, PS_CORE_BSP, 0, false, false);
    join(&s, 0, 1);
    join(&s, 1, 1);
    complete_all(&s, 2);
    push(&s, 0, 0);
    push(&s, 1, 0);
    complete_all(&s, 2);
    CU_ASSERT_EQUAL(s.c.version, 1);
    push(&s, 1, 1);
    lost(&s, 1);                       /* its gradient of round 1 is forgotten */
    push(&s, 0, 1);
    CU_ASSERT_EQUAL(s.c.version, 1);   /* bsp waits for it */
    s.now = 1.0;
    join(&s, 1, 2);                    /* back, a new incarnation */
    CU_ASSERT_EQUAL(s.welcome_k[1], 1); /* it redoes round 1 */
    push(&s, 1, 1);
    CU_ASSERT_EQUAL(s.c.version, 2);
    CU_ASSERT_EQUAL(s.c.grads, 4);
    complete_all(&s, 2);
    /* an older incarnation cannot replace a newer one */
    join(&s, 1, 1);
    CU_ASSERT_EQUAL(s.refuses, 1);
    /* the same or a newer one replaces the old connection */
    join(&s, 1, 3);
    CU_ASSERT_EQUAL(s.replaces, 1);
    complete_all(&s, 2);
    /* lost for good: given up after the rejoin timeout, and the round goes on */
    push(&s, 0, 2);
    lost(&s, 1);
    tick(&s, 3.0);
    CU_ASSERT_EQUAL(s.giveups, 0);
    CU_ASSERT_EQUAL(s.c.version, 2);
    tick(&s, 7.0);
    CU_ASSERT_EQUAL(s.giveups, 1);
    CU_ASSERT_EQUAL(s.c.version, 3);
    CU_ASSERT_EQUAL(s.last_apply.n, 1);
    CU_ASSERT_DOUBLE_EQUAL(s.last_apply.scale, 1.0, 1e-7);
    /* async goes on at once without a lost worker */
    struct sim a;
    sim_init(&a, 2, PS_CORE_ASYNC, 0, false, false);
    join(&a, 0, 1);
    join(&a, 1, 1);
    complete_all(&a, 2);
    lost(&a, 1);
    push(&a, 0, 0);
    CU_ASSERT_EQUAL(a.applies, 1);
    CU_ASSERT_FALSE(s.broken || a.broken);
    ps_core_fini(&s.c);
    ps_core_fini(&a.c);
}

static void test_restore(void)
{
    struct sim s;
    sim_init(&s, 2, PS_CORE_BSP, 0, false, true);
    uint32_t clock[2] = {10, 10};
    uint8_t done[2] = {0, 0};
    CU_ASSERT_EQUAL(ps_core_restore(&s.c, 10, 20, clock, done, 0.0), 0);
    CU_ASSERT_EQUAL(s.c.version, 10);
    join(&s, 0, 99);
    CU_ASSERT_EQUAL(s.fetches, 0);       /* the checkpoint has the parameters */
    CU_ASSERT_EQUAL(s.welcome_k[0], 10); /* the clock rolled back to the checkpoint */
    push(&s, 0, 13);                     /* where it was before the restart: dropped */
    CU_ASSERT_EQUAL(s.drops, 1);
    push(&s, 0, 10);
    CU_ASSERT_EQUAL(s.applies, 0);       /* bsp waits for worker 1, lost until it rejoins */
    join(&s, 1, 99);
    CU_ASSERT_EQUAL(s.welcome_k[1], 10);
    push(&s, 1, 10);
    CU_ASSERT_EQUAL(s.c.version, 11);
    CU_ASSERT_EQUAL(s.c.grads, 22);
    ps_core_fini(&s.c);
    /* async: each worker continues at its own checkpointed clock */
    sim_init(&s, 2, PS_CORE_ASYNC, 0, false, false);
    uint32_t ac[2] = {7, 4};
    uint8_t adone[2] = {0, 1};
    CU_ASSERT_EQUAL(ps_core_restore(&s.c, 11, 11, ac, adone, 0.0), 0);
    join(&s, 0, 5);
    CU_ASSERT_EQUAL(s.welcome_k[0], 7);
    join(&s, 1, 5);
    CU_ASSERT_EQUAL(s.refuses, 1);       /* worker 1 had finished */
    ps_core_fini(&s.c);
    /* clocks that cannot be: refused */
    sim_init(&s, 2, PS_CORE_BSP, 0, false, false);
    uint32_t bad[2] = {12, 10};
    CU_ASSERT_EQUAL(ps_core_restore(&s.c, 10, 20, bad, done, 0.0), -EINVAL);
    ps_core_fini(&s.c);
}

static void test_init_fetch(void)
{
    struct sim s;
    sim_init(&s, 2, PS_CORE_BSP, 0, false, true);
    join(&s, 1, 1);
    CU_ASSERT_EQUAL(s.fetches, 0);       /* only from worker 0: the same on every server */
    CU_ASSERT_EQUAL(s.sends[1], 0);      /* nothing sent before the parameters are in */
    join(&s, 0, 1);
    CU_ASSERT_EQUAL(s.fetches, 1);
    CU_ASSERT_EQUAL(s.sends[0] + s.sends[1], 0);
    /* worker 0 is lost while it is read: fetched again when it is back */
    lost(&s, 0);
    CU_ASSERT_EQUAL(s.fetches, 1);
    join(&s, 0, 2);
    CU_ASSERT_EQUAL(s.fetches, 2);
    ev(&s, PS_EV_INIT_DONE, 0, 0);
    CU_ASSERT_EQUAL(s.sends[0], 1);
    CU_ASSERT_EQUAL(s.sends[1], 1);
    CU_ASSERT_FALSE(s.broken);
    ps_core_fini(&s.c);
}

static void test_membership(void)
{
    struct sim s;
    sim_init(&s, 3, PS_CORE_BSP, 0, true, false);
    for (int w = 0; w < 3; w++)
        join(&s, w, 1);
    for (int w = 0; w < 3; w++) {
        CU_ASSERT_EQUAL(s.members[w], 1);  /* epoch 0, before its first parameters */
        CU_ASSERT_EQUAL(s.members_epoch[w], 0);
    }
    complete_all(&s, 3);
    /* through epoch 0: one MEMBERS a connection and epoch */
    for (uint32_t k = 0; k < 9; k++) {
        for (int w = 0; w < 3; w++)
            push(&s, w, k);
        complete_all(&s, 3);
    }
    CU_ASSERT_EQUAL(s.members[0], 1);
    /* worker 2 is lost for good before epoch 1 */
    lost(&s, 2);
    tick(&s, 10.0);
    CU_ASSERT_EQUAL(s.giveups, 1);
    push(&s, 0, 9);
    push(&s, 1, 9);
    CU_ASSERT_EQUAL(s.members[0], 2);
    CU_ASSERT_EQUAL(s.members_epoch[0], 1);
    const uint8_t *live = s.c.run[s.c.nrun - 1].live;
    CU_ASSERT_TRUE(ps_core_member(live, 0) && ps_core_member(live, 1));
    CU_ASSERT_FALSE(ps_core_member(live, 2));
    ps_core_fini(&s.c);
}

static void test_bad_events(void)
{
    struct sim s;
    sim_init(&s, 2, PS_CORE_BSP, 0, false, false);
    struct ps_event e = {.type = PS_EV_PUSH, .worker = 2};
    CU_ASSERT_EQUAL(ps_core_step(&s.c, &e), -EINVAL);
    e.worker = -1;
    CU_ASSERT_EQUAL(ps_core_step(&s.c, &e), -EINVAL);
    e = (struct ps_event){.type = PS_EV_PUT_DONE, .worker = 0, .buf = 99};
    CU_ASSERT_EQUAL(ps_core_step(&s.c, &e), -EINVAL);
    ps_core_fini(&s.c);
    struct ps_core c;
    struct ps_core_cfg bad = {.workers = 0, .iters_per_epoch = 1, .epochs = 1};
    CU_ASSERT_EQUAL(ps_core_init(&c, &bad, 0), -EINVAL);
}

static void test_checkpoints(void)
{
    struct sim s;
    sim_init(&s, 2, PS_CORE_BSP, 0, false, false);
    s.c.cfg.checkpoint_every = 3;
    join(&s, 0, 1);
    join(&s, 1, 1);
    complete_all(&s, 2);
    for (uint32_t k = 0; k < 9; k++) {
        push(&s, 0, k);
        push(&s, 1, k);
        complete_all(&s, 2);
    }
    CU_ASSERT_EQUAL(s.checkpoints, 3);   /* at updates 3, 6, 9: round boundaries */
    CU_ASSERT_EQUAL(s.c.ckpt_version, 9);
    ps_core_fini(&s.c);
}

/* ---- wire compression ------------------------------------------------------ */

/* Each value through a 9-element pack, at index 0 (vector path) and 8
 * (the scalar tail), so both paths are checked against the same bits. */
static uint16_t pack1(shoal_ps_compress_t k, float v, int *agree)
{
    float in[9] = {v, 0, 0, 0, 0, 0, 0, 0, v};
    uint16_t out[9];
    ps_half_pack(k, out, in, 9);
    *agree &= out[0] == out[8];
    return out[0];
}

static void test_half(void)
{
    int agree = 1;
    shoal_ps_compress_t f = SHOAL_PS_COMPRESS_FP16, b = SHOAL_PS_COMPRESS_BF16;
    CU_ASSERT_EQUAL(pack1(f, 1.0f, &agree), 0x3c00);
    CU_ASSERT_EQUAL(pack1(f, -2.0f, &agree), 0xc000);
    CU_ASSERT_EQUAL(pack1(f, 65504.0f, &agree), 0x7bff);      /* the largest half */
    CU_ASSERT_EQUAL(pack1(f, 65520.0f, &agree), 0x7c00);      /* rounds to inf */
    CU_ASSERT_EQUAL(pack1(f, ldexpf(1, -24), &agree), 0x0001); /* the smallest subnormal */
    CU_ASSERT_EQUAL(pack1(f, 1.0f + ldexpf(1, -11), &agree), 0x3c00);     /* tie: to even */
    CU_ASSERT_EQUAL(pack1(f, 1.0f + 3 * ldexpf(1, -11), &agree), 0x3c02); /* tie: to even */
    CU_ASSERT_EQUAL(pack1(b, 1.0f, &agree), 0x3f80);
    CU_ASSERT_EQUAL(pack1(b, 1.0f + ldexpf(1, -8), &agree), 0x3f80);      /* tie: to even */
    CU_ASSERT_EQUAL(pack1(b, 1.0f + 3 * ldexpf(1, -8), &agree), 0x3f82);
    uint16_t nan = pack1(b, NAN, &agree);
    CU_ASSERT((nan & 0x7f80) == 0x7f80 && (nan & 0x7f) != 0);
    CU_ASSERT(agree);
    /* values a half holds exactly come back exactly; others within half an
     * ulp; the add form adds */
    enum { N = 1003 };
    static float x[N], y[N], acc[N];
    static uint16_t h[N];
    uint64_t st = 5;
    for (int i = 0; i < N; i++) {
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        float u = (float)((st >> 11) & 0xffffff) / 8388608.0f - 1.0f;
        x[i] = i < 100 ? (float)(i - 50) * 0.25f : u * 100.0f;
    }
    shoal_ps_compress_t kinds[2] = {f, b};
    double tol[2] = {ldexp(1, -11), ldexp(1, -8)};
    for (int t = 0; t < 2; t++) {
        ps_half_pack(kinds[t], h, x, N);
        ps_half_unpack(kinds[t], y, h, N);
        int exact = 1, close = 1;
        for (int i = 0; i < N; i++) {
            if (i < 100)
                exact &= y[i] == x[i];
            close &= fabs(y[i] - x[i]) <= tol[t] * fabs(x[i]) + 1e-30;
            acc[i] = 1.0f;
        }
        CU_ASSERT(exact);
        CU_ASSERT(close);
        ps_half_unpack_add(kinds[t], acc, h, N);
        CU_ASSERT(acc[7] == 1.0f + y[7] && acc[N - 1] == 1.0f + y[N - 1]);
    }
}

static void test_topk(void)
{
    enum { N = 1000, K = 10, T = 50 };
    static float g[N], resid[N], scratch[N], sent[N], total[N], acc[N];
    static uint8_t buf[8 * K];
    CU_ASSERT_EQUAL(ps_topk_k(0.01f, N), K);
    CU_ASSERT_EQUAL(ps_topk_k(1e-9f, N), 1);
    CU_ASSERT_EQUAL(ps_topk_k(1.0f, N), N);
    uint64_t st = 9;
    for (int t = 0; t < T; t++) {
        for (int i = 0; i < N; i++) {
            st = st * 6364136223846793005ull + 1442695040888963407ull;
            g[i] = (float)((int)(st >> 40 & 0xffff) - 32768) / 32768.0f;
            total[i] += g[i];
        }
        /* the k sent are the largest of g + resid in magnitude */
        float cand[N];
        for (int i = 0; i < N; i++)
            cand[i] = fabsf(g[i] + resid[i]);
        ps_topk_pack(buf, g, resid, N, K, scratch);
        memset(acc, 0, sizeof(acc));
        CU_ASSERT_EQUAL(ps_topk_unpack_add(acc, buf, N, K), 0);
        float least = INFINITY;
        int nsent = 0;
        for (int i = 0; i < N; i++)
            if (acc[i] != 0.0f) {
                least = fminf(least, cand[i]);
                nsent++;
                sent[i] += acc[i];
            }
        int larger_unsent = 0;
        for (int i = 0; i < N; i++)
            larger_unsent += acc[i] == 0.0f && cand[i] > least;
        CU_ASSERT_EQUAL(nsent, K);
        CU_ASSERT_EQUAL(larger_unsent, 0);
    }
    /* error feedback conserves the gradient: all sent + what is left = all pushed */
    double worst = 0;
    for (int i = 0; i < N; i++)
        worst = fmax(worst, fabs(sent[i] + resid[i] - total[i]));
    CU_ASSERT(worst < 1e-4);
    /* without feedback nothing is kept */
    ps_topk_pack(buf, g, NULL, N, K, scratch);
    /* an index outside the slice is refused */
    uint32_t bad = N;
    memcpy(buf + 8, &bad, 4);
    CU_ASSERT_EQUAL(ps_topk_unpack_add(acc, buf, N, K), -EBADMSG);
    /* the names */
    shoal_ps_compress_t c;
    float r;
    CU_ASSERT_EQUAL(shoal_ps_parse_compress("topk:0.01", &c, &r), 0);
    CU_ASSERT(c == SHOAL_PS_COMPRESS_TOPK && r == 0.01f);
    CU_ASSERT_EQUAL(shoal_ps_parse_compress("topk-noef:0.5", &c, &r), 0);
    CU_ASSERT_EQUAL(c, SHOAL_PS_COMPRESS_TOPK_NOEF);
    CU_ASSERT_EQUAL(shoal_ps_parse_compress("topk:0", &c, &r), -EINVAL);
    CU_ASSERT_EQUAL(shoal_ps_parse_compress("topk:1.5", &c, &r), -EINVAL);
    CU_ASSERT_EQUAL(shoal_ps_parse_compress("fp8", &c, &r), -EINVAL);
    size_t push, pull;
    shoal_ps_job_t j = {.compress = SHOAL_PS_COMPRESS_FP16};
    shoal_ps_wire_bytes(&j, 203530, 2, &push, &pull);
    CU_ASSERT(push == 407060 && pull == 407060);
}

/* top-k SGD: momentum correction (DGC) moves the momentum to the workers;
 * every other job keeps it on the servers. */
static void test_topk_momentum(void)
{
    shoal_ps_job_t j = {.mode = SHOAL_PS_BSP, .optimizer = SHOAL_PS_SGD, .momentum = 0.9f,
                        .workers = 2, .compress = SHOAL_PS_COMPRESS_TOPK};
    CU_ASSERT_EQUAL(ps_optim_momentum(&j), 0.0f);
    CU_ASSERT_EQUAL(ps_topk_momentum(&j), 0.9f);
    j.compress = SHOAL_PS_COMPRESS_TOPK_NOEF; /* no residual to correct */
    CU_ASSERT_EQUAL(ps_optim_momentum(&j), 0.9f);
    CU_ASSERT_EQUAL(ps_topk_momentum(&j), 0.0f);
    j.compress = SHOAL_PS_COMPRESS_FP16;
    CU_ASSERT_EQUAL(ps_optim_momentum(&j), 0.9f);
    CU_ASSERT_EQUAL(ps_topk_momentum(&j), 0.0f);
    j.compress = SHOAL_PS_COMPRESS_TOPK;
    j.optimizer = SHOAL_PS_ADAM; /* Adam's moments stay on the servers */
    CU_ASSERT_EQUAL(ps_topk_momentum(&j), 0.0f);
    j.optimizer = SHOAL_PS_SGD;
    j.mode = SHOAL_PS_ASYNC; /* the auto rule applies where the momentum is */
    j.momentum_auto = true;
    CU_ASSERT(fabsf(ps_topk_momentum(&j) - 0.8f) < 1e-6f);
    CU_ASSERT_EQUAL(ps_optim_momentum(&j), 0.0f);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("ps core", NULL, NULL);
    CU_add_test(s, "bsp: one update when every live worker's gradient is in", test_bsp_barrier);
    CU_add_test(s, "async: applied on arrival, its sender answered", test_async_on_arrival);
    CU_add_test(s, "ssp: never more than s ahead of the slowest; s = 0 is bsp", test_ssp_bound);
    CU_add_test(s, "duplicate, stale and future pushes dropped", test_duplicates_dropped);
    CU_add_test(s, "exactly once over random schedules with losses", test_exactly_once_random);
    CU_add_test(s, "worker lost, rejoined, given up on", test_lost_and_rejoin);
    CU_add_test(s, "restart from a checkpoint rolls the clocks back", test_restore);
    CU_add_test(s, "initial parameters fetched from worker 0 first", test_init_fetch);
    CU_add_test(s, "data membership per epoch", test_membership);
    CU_add_test(s, "checkpoints at round boundaries", test_checkpoints);
    CU_add_test(s, "events naming no worker refused", test_bad_events);
    CU_pSuite z = CU_add_suite("wire compression", NULL, NULL);
    CU_add_test(z, "fp16 and bf16: exact where they must be, rounding to even, both paths",
                test_half);
    CU_add_test(z, "top-k: the k largest sent; error feedback conserves the gradient",
                test_topk);
    CU_add_test(z, "top-k SGD: the momentum on the workers (momentum correction)",
                test_topk_momentum);
    return cu_run_all();
}
