/*
 * make-seeds.c -- writes the seed corpus of the fuzz targets
 * (tests/fuzz/corpus/{hello,boot,desc,ps}/) from the real encoders, so the
 * seeds are valid messages the fuzzer mutates from.  Run by
 * `tests/fuzz/run.sh --regen-seeds`; the output is kept in the tree.
 */
#include <stdio.h>

#include "boot.h"
#include "fuzz-common.h"
#include "ps_proto.h"

static const char *outdir;

static void seed(const char *kind, const char *name, uint8_t sel, const void *buf, size_t len)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s/%s", outdir, kind, name);
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(1);
    }
    if (strcmp(kind, "ps") != 0)
        fputc(sel, f);
    fwrite(buf, 1, len, f);
    fclose(f);
}

static size_t hello(uint8_t *out, uint8_t transport, uint8_t flags, uint32_t ep_id,
                    uint32_t peer_id, uint8_t reason)
{
    struct shoal_hello h = {.magic = SHOAL_WIRE_MAGIC, .version = SHOAL_WIRE_VERSION,
                            .transport = transport, .flags = flags, .ep_id = ep_id,
                            .peer_id = peer_id, .reason = reason};
    for (int i = 0; i < SHOAL_NONCE_LEN; i++)
        h.nonce[i] = (uint8_t)(i * 7 + 1);
    for (int i = 0; i < SHOAL_PROOF_LEN; i++)
        h.proof[i] = (uint8_t)(i * 13 + 5);
    return shoal__hello_encode(&h, out);
}

/* A bootstrap frame of @kind around @len bytes of @body; its length. */
static size_t frame(uint8_t *out, uint8_t kind, const uint8_t *body, size_t len)
{
    shoal__put_le32(out, (uint32_t)len);
    out[4] = kind;
    memmove(out + SHOAL_FRAME_HDR, body, len);
    return SHOAL_FRAME_HDR + len;
}

int main(int argc, char **argv)
{
    outdir = argc > 1 ? argv[1] : "corpus";
    uint8_t b[SHOAL_MSG_MAX];
    char name[64];
    size_t n;
    /* hello: selector bit 0 transport, bit 1 secret, bits 2-3 step. */
    for (int t = 0; t < 2; t++) {
        uint8_t tr = t ? SHOAL_TRANSPORT_VERBS : SHOAL_TRANSPORT_UCX;
        n = hello(b, tr, 0, 5, 0, 0);
        snprintf(name, sizeof(name), "accept-plain-%d", t);
        seed("hello", name, (uint8_t)t, b, n);
        n = hello(b, tr, SHOAL_HELLO_AUTH, 5, 0, 0);
        snprintf(name, sizeof(name), "accept-auth-%d", t);
        seed("hello", name, (uint8_t)(t | 2), b, n);
        n = hello(b, tr, 0, 7, 9, 0);
        snprintf(name, sizeof(name), "ack-plain-%d", t);
        seed("hello", name, (uint8_t)(t | 4), b, n);
        n = hello(b, tr, SHOAL_HELLO_AUTH | SHOAL_HELLO_PROOF, 7, 9, 0);
        snprintf(name, sizeof(name), "ack-auth-%d", t);
        seed("hello", name, (uint8_t)(t | 2 | 4), b, n);
        for (uint8_t r = 1; r <= 3; r++) {
            n = hello(b, tr, SHOAL_HELLO_REFUSE, 7, 9, r);
            snprintf(name, sizeof(name), "ack-refuse%u-%d", r, t);
            seed("hello", name, (uint8_t)(t | 4), b, n);
        }
        n = hello(b, tr, SHOAL_HELLO_PROOF, 9, 7, 0);
        snprintf(name, sizeof(name), "proof-%d", t);
        seed("hello", name, (uint8_t)(t | 2 | 8), b, n);
        n = hello(b, tr, SHOAL_HELLO_REFUSE, 9, 7, 3);
        snprintf(name, sizeof(name), "proof-refuse-%d", t);
        seed("hello", name, (uint8_t)(t | 2 | 8), b, n);
        /* rdma_cm pads private data: a REQ is 56 bytes, a REP 196. */
        memset(b, 0, sizeof(b));
        hello(b, tr, SHOAL_HELLO_AUTH, 5, 0, 0);
        snprintf(name, sizeof(name), "accept-padded-%d", t);
        seed("hello", name, (uint8_t)(t | 2), b, 56);
    }
    /* boot: selector bit 0 server, bit 1 secret, bits 2-7 how the stream
     * is cut.  The streams a peer sends: to a server, a client's hello
     * and address; to a client (id 9), the server's answer and address. */
    for (int cut = 0; cut < 2; cut++) {
        uint8_t *p = b;
        p += frame(p, SHOAL_FRAME_HELLO, b + 1024, hello(b + 1024, SHOAL_TRANSPORT_UCX, 0, 5, 0, 0));
        p += frame(p, SHOAL_FRAME_ADDR, (const uint8_t *)"cookie!!worker address", 22);
        snprintf(name, sizeof(name), "server-plain-%d", cut);
        seed("boot", name, (uint8_t)(1 | (cut << 5)), b, (size_t)(p - b));
        p = b;
        p += frame(p, SHOAL_FRAME_HELLO, b + 1024,
                   hello(b + 1024, SHOAL_TRANSPORT_UCX, SHOAL_HELLO_AUTH, 5, 0, 0));
        p += frame(p, SHOAL_FRAME_HELLO, b + 1024,
                   hello(b + 1024, SHOAL_TRANSPORT_UCX, SHOAL_HELLO_PROOF, 5, 9, 0));
        p += frame(p, SHOAL_FRAME_ADDR, (const uint8_t *)"cookie!!worker address", 22);
        snprintf(name, sizeof(name), "server-auth-%d", cut);
        seed("boot", name, (uint8_t)(1 | 2 | (cut << 5)), b, (size_t)(p - b));
        p = b;
        p += frame(p, SHOAL_FRAME_HELLO, b + 1024, hello(b + 1024, SHOAL_TRANSPORT_UCX, 0, 7, 9, 0));
        p += frame(p, SHOAL_FRAME_ADDR, (const uint8_t *)"cookie!!worker address", 22);
        snprintf(name, sizeof(name), "client-plain-%d", cut);
        seed("boot", name, (uint8_t)(cut << 5), b, (size_t)(p - b));
        p = b;
        p += frame(p, SHOAL_FRAME_HELLO, b + 1024,
                   hello(b + 1024, SHOAL_TRANSPORT_UCX, SHOAL_HELLO_AUTH | SHOAL_HELLO_PROOF, 7, 9,
                         0));
        p += frame(p, SHOAL_FRAME_ADDR, (const uint8_t *)"cookie!!worker address", 22);
        snprintf(name, sizeof(name), "client-auth-%d", cut);
        seed("boot", name, (uint8_t)(2 | (cut << 5)), b, (size_t)(p - b));
        p = b;
        p += frame(p, SHOAL_FRAME_HELLO, b + 1024,
                   hello(b + 1024, SHOAL_TRANSPORT_UCX, SHOAL_HELLO_REFUSE, 7, 9, 2));
        snprintf(name, sizeof(name), "client-refused-%d", cut);
        seed("boot", name, (uint8_t)(cut << 5), b, (size_t)(p - b));
    }
    /* desc: selector bit 0 transport, bit 1 fix the CRC. */
    static const uint32_t keylens[] = {0, 4, 16, 100};
    for (int t = 0; t < 2; t++)
        for (size_t k = 0; k < sizeof(keylens) / sizeof(keylens[0]); k++) {
            uint32_t kl = keylens[k];
            n = SHOAL_DESC_HDR + kl + 4;
            memset(b, 0, n);
            shoal__put_le32(b, SHOAL_DESC_MAGIC);
            shoal__put_le16(b + 4, SHOAL_DESC_VERSION);
            b[6] = t ? SHOAL_TRANSPORT_VERBS : SHOAL_TRANSPORT_UCX;
            b[7] = SHOAL_ACCESS_REMOTE_WRITE | SHOAL_ACCESS_REMOTE_READ;
            shoal__put_le64(b + 8, 0x7f0000001000ull);
            shoal__put_le64(b + 16, 1u << 20);
            shoal__put_le32(b + 24, kl);
            for (uint32_t i = 0; i < kl; i++)
                b[SHOAL_DESC_HDR + i] = (uint8_t)(0xa0 + i);
            shoal__put_le32(b + n - 4, shoal__crc32(0, b, n - 4));
            snprintf(name, sizeof(name), "desc-key%u-%d", kl, t);
            seed("desc", name, (uint8_t)t, b, n);
            snprintf(name, sizeof(name), "desc-key%u-%d-fixcrc", kl, t);
            seed("desc", name, (uint8_t)(t | 2), b, n);
        }
    /* ps: one of each message type. */
    static struct ps_msg m;
    memset(&m, 0, sizeof(m));
    m.type = PS_SERVER_REG;
    m.u.reg.rank = 1;
    snprintf(m.u.reg.addr.host, PS_HOST_MAX, "node1");
    m.u.reg.addr.port = 4000;
    seed("ps", "server-reg", 0, b, (size_t)ps_encode(&m, b, sizeof(b)));
    memset(&m, 0, sizeof(m));
    m.type = PS_TABLE_REQ;
    seed("ps", "table-req", 0, b, (size_t)ps_encode(&m, b, sizeof(b)));
    m.type = PS_BYE;
    seed("ps", "bye", 0, b, (size_t)ps_encode(&m, b, sizeof(b)));
    memset(&m, 0, sizeof(m));
    m.type = PS_TABLE;
    m.u.table.n = 2;
    snprintf(m.u.table.addr[0].host, PS_HOST_MAX, "10.0.0.1");
    m.u.table.addr[0].port = 4000;
    snprintf(m.u.table.addr[1].host, PS_HOST_MAX, "10.0.0.2");
    m.u.table.addr[1].port = 4001;
    seed("ps", "table", 0, b, (size_t)ps_encode(&m, b, sizeof(b)));
    memset(&m, 0, sizeof(m));
    m.type = PS_HELLO;
    m.u.hello = (struct ps_hello){.worker = 1, .servers = 1, .incarnation = 1,
                                  .nparams = 203530, .ntensors = 4, .layout = 77,
                                  .desc_len = 36};
    m.u.hello.job = (shoal_ps_job_t){.workers = 2, .mode = SHOAL_PS_SSP, .staleness = 2,
                                     .batch = 64, .iters_per_epoch = 469, .epochs = 2,
                                     .lr = 0.1f, .momentum = 0.9f, .beta1 = 0.9f,
                                     .beta2 = 0.999f, .eps = 1e-8f};
    snprintf(m.u.hello.job.label, PS_MODEL_MAX, "784-256-10");
    seed("ps", "hello", 0, b, (size_t)ps_encode(&m, b, sizeof(b)));
    memset(&m, 0, sizeof(m));
    m.type = PS_WELCOME;
    m.u.welcome = (struct ps_welcome){.server = 0, .offset = 0, .length = 203530,
                                      .version = 5, .desc_len = 36};
    seed("ps", "welcome", 0, b, (size_t)ps_encode(&m, b, sizeof(b)));
    memset(&m, 0, sizeof(m));
    m.type = PS_ERROR;
    snprintf(m.u.error.text, sizeof(m.u.error.text), "rank 3 is taken");
    seed("ps", "error", 0, b, (size_t)ps_encode(&m, b, sizeof(b)));
    memset(&m, 0, sizeof(m));
    m.type = PS_CHECK;
    m.u.check.version = 9;
    m.u.check.crc = 0xdeadbeef;
    seed("ps", "check", 0, b, (size_t)ps_encode(&m, b, sizeof(b)));
    memset(&m, 0, sizeof(m));
    m.type = PS_PING;
    seed("ps", "ping", 0, b, (size_t)ps_encode(&m, b, sizeof(b)));
    memset(&m, 0, sizeof(m));
    m.type = PS_PROBE;
    m.u.probe.nonce = 7;
    seed("ps", "probe", 0, b, (size_t)ps_encode(&m, b, sizeof(b)));
    memset(&m, 0, sizeof(m));
    m.type = PS_MEMBERS;
    m.u.members.epoch = 3;
    m.u.members.workers = 11; /* 2 bytes, the last one partly used */
    ps_member_set(m.u.members.live, 0);
    ps_member_set(m.u.members.live, 9);
    seed("ps", "members", 0, b, (size_t)ps_encode(&m, b, sizeof(b)));
    return 0;
}
