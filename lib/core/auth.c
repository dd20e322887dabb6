/*
 * auth.c -- the shared secret (SHOAL_AUTH_FILE) and the connection
 * handshake's decisions, for every provider.
 *
 * With a secret on both sides the handshake is a challenge-response in
 * both directions: each side sends a fresh random 16-byte nonce, and each
 * proves it holds the secret with HMAC-SHA256(secret, label, transport,
 * both endpoint ids, both nonces), where the label tells the client's
 * proof from the server's.  Each proof covers the nonce the *verifier*
 * chose for this connection, so a proof captured from another connection
 * is worthless (no clock, no replay cache).  The secret never crosses the
 * wire.  Without a secret on either side the handshake is the plain
 * two-message hello; a secret on one side only is refused, with a reason
 * the other side is told.
 *
 * This authenticates the handshake only: the connection afterwards is not
 * encrypted nor integrity-protected (see docs/ARCHITECTURE.md).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "core.h"

#define AUTH_KEY_MIN 16
#define AUTH_KEY_MAX 4096

int shoal__auth_load(shoal_ctx_t *ctx)
{
    const char *path = ctx->cfg.auth_file;
    if (!path[0])
        return 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return shoal__fail(ctx, -errno, "SHOAL_AUTH_FILE '%s': %s", path, strerror(errno));
    struct stat st;
    int rc = 0;
    uint8_t *key = NULL;
    ssize_t n = 0;
    if (fstat(fd, &st) != 0) {
        rc = shoal__fail(ctx, -errno, "SHOAL_AUTH_FILE '%s': %s", path, strerror(errno));
    } else if (!S_ISREG(st.st_mode)) {
        rc = shoal__fail(ctx, -EINVAL, "SHOAL_AUTH_FILE '%s': not a regular file", path);
    } else if (st.st_mode & (S_IROTH | S_IWOTH)) {
        rc = shoal__fail(ctx, -EPERM,
                         "SHOAL_AUTH_FILE '%s' is %s by every user (mode %04o): a secret "
                         "must not be; run `chmod o-rw %s` (e.g. mode 0600)",
                         path, st.st_mode & S_IROTH ? "readable" : "writable",
                         (unsigned)(st.st_mode & 07777), path);
    } else if (st.st_size > AUTH_KEY_MAX) {
        rc = shoal__fail(ctx, -EINVAL, "SHOAL_AUTH_FILE '%s': %lld bytes, at most %d allowed",
                         path, (long long)st.st_size, AUTH_KEY_MAX);
    } else if (!(key = malloc(AUTH_KEY_MAX + 1))) {
        rc = -ENOMEM;
    } else {
        ssize_t r;
        while (n <= AUTH_KEY_MAX && (r = read(fd, key + n, (size_t)(AUTH_KEY_MAX + 1 - n))) > 0)
            n += r;
        if (r < 0)
            rc = shoal__fail(ctx, -errno, "SHOAL_AUTH_FILE '%s': %s", path, strerror(errno));
        else if (n > AUTH_KEY_MAX)
            rc = shoal__fail(ctx, -EINVAL, "SHOAL_AUTH_FILE '%s': more than %d bytes", path,
                             AUTH_KEY_MAX);
        /* Text editors add a final newline; one side's editor must not
         * make the secrets differ. */
        while (rc == 0 && n > 0 && (key[n - 1] == '\n' || key[n - 1] == '\r'))
            n--;
        if (rc == 0 && n < AUTH_KEY_MIN)
            rc = shoal__fail(ctx, -EINVAL,
                             "SHOAL_AUTH_FILE '%s': %zd bytes of secret, at least %d needed "
                             "(make one with: head -c 32 /dev/urandom | base64 > FILE; "
                             "chmod 600 FILE)",
                             path, n, AUTH_KEY_MIN);
    }
    close(fd);
    if (rc) {
        if (key)
            OPENSSL_cleanse(key, AUTH_KEY_MAX + 1);
        free(key);
        return rc;
    }
    ctx->auth_key = key;
    ctx->auth_keylen = (size_t)n;
    shoal__info(ctx, "authentication: %zd-byte secret from %s", n, path);
    return 0;
}

void shoal__auth_free(shoal_ctx_t *ctx)
{
    if (!ctx->auth_key)
        return;
    OPENSSL_cleanse(ctx->auth_key, AUTH_KEY_MAX + 1);
    free(ctx->auth_key);
    ctx->auth_key = NULL;
    ctx->auth_keylen = 0;
}

int shoal__auth_proof(const uint8_t *key, size_t keylen, char role, uint8_t transport,
                      uint32_t client_id, uint32_t server_id,
                      const uint8_t nonce_c[SHOAL_NONCE_LEN],
                      const uint8_t nonce_s[SHOAL_NONCE_LEN], uint8_t out[SHOAL_PROOF_LEN])
{
    /* label(14) role(1) transport(1) client_id(4) server_id(4) nonces(32) */
    uint8_t msg[14 + 1 + 1 + 4 + 4 + 2 * SHOAL_NONCE_LEN];
    memcpy(msg, "shoal-auth-v1/", 14);
    msg[14] = (uint8_t)role;
    msg[15] = transport;
    shoal__put_le32(msg + 16, client_id);
    shoal__put_le32(msg + 20, server_id);
    memcpy(msg + 24, nonce_c, SHOAL_NONCE_LEN);
    memcpy(msg + 24 + SHOAL_NONCE_LEN, nonce_s, SHOAL_NONCE_LEN);
    unsigned len = 0;
    if (!HMAC(EVP_sha256(), key, (int)keylen, msg, sizeof(msg), out, &len) ||
        len != SHOAL_PROOF_LEN)
        return -EIO;
    return 0;
}

static struct shoal_hello hello_base(const shoal_ep_t *ep, uint8_t flags)
{
    struct shoal_hello h = {.magic = SHOAL_WIRE_MAGIC, .version = SHOAL_WIRE_VERSION,
                            .transport = (uint8_t)ep->ctx->prov->transport, .flags = flags,
                            .ep_id = ep->hs.my_id, .peer_id = ep->hs.peer_id};
    return h;
}

static int fresh_nonce(shoal_ctx_t *ctx, uint8_t nonce[SHOAL_NONCE_LEN])
{
    if (RAND_bytes(nonce, SHOAL_NONCE_LEN) != 1)
        return shoal__fail(ctx, -EIO, "authentication: no random bytes for a nonce");
    return 0;
}

int shoal__hs_hello(shoal_ep_t *ep, uint32_t my_id, uint8_t out[SHOAL_HELLO_MAX],
                    size_t *outlen)
{
    shoal_ctx_t *ctx = ep->ctx;
    memset(&ep->hs, 0, sizeof(ep->hs));
    ep->hs.my_id = my_id;
    struct shoal_hello h = hello_base(ep, 0);
    if (ctx->auth_key) {
        int rc = fresh_nonce(ctx, ep->hs.my_nonce);
        if (rc)
            return rc;
        h.flags |= SHOAL_HELLO_AUTH;
        memcpy(h.nonce, ep->hs.my_nonce, SHOAL_NONCE_LEN);
    }
    *outlen = shoal__hello_encode(&h, out);
    return 0;
}

static size_t refusal(const shoal_ep_t *ep, uint8_t reason, uint8_t out[SHOAL_HELLO_MAX])
{
    struct shoal_hello h = hello_base(ep, SHOAL_HELLO_REFUSE);
    h.reason = reason;
    return shoal__hello_encode(&h, out);
}

int shoal__hs_accept(shoal_ep_t *ep, const void *in, size_t inlen, uint32_t my_id,
                     uint8_t out[SHOAL_HELLO_MAX], size_t *outlen)
{
    shoal_ctx_t *ctx = ep->ctx;
    const char *tname = shoal_transport_name(ctx->prov->transport);
    struct shoal_hello h;
    char why[160];
    *outlen = 0;
    memset(&ep->hs, 0, sizeof(ep->hs));
    ep->hs.my_id = my_id;
    int rc = shoal__hello_decode(in, inlen, ctx->prov->transport, &h, why, sizeof(why));
    if (rc == 0 && (h.flags & (SHOAL_HELLO_PROOF | SHOAL_HELLO_REFUSE))) {
        snprintf(why, sizeof(why), "a first hello with flags 0x%02x", h.flags);
        rc = -EBADMSG;
    }
    if (rc) {
        shoal__refusal(ctx, "%s: refused connection from %s: %s", tname, ep->peer, why);
        return rc;
    }
    ep->hs.peer_id = h.ep_id;
    bool peer_auth = h.flags & SHOAL_HELLO_AUTH;
    if (ctx->auth_key && !peer_auth) {
        shoal__refusal(ctx, "%s: refused connection from %s: it sent no authentication and "
                    "this side requires it (SHOAL_AUTH_FILE is set)", tname, ep->peer);
        *outlen = refusal(ep, SHOAL_REFUSE_AUTH_REQUIRED, out);
        return -EACCES;
    }
    if (!ctx->auth_key && peer_auth) {
        shoal__refusal(ctx, "%s: refused connection from %s: it authenticates with a secret "
                    "and this side has none (SHOAL_AUTH_FILE is not set)", tname, ep->peer);
        *outlen = refusal(ep, SHOAL_REFUSE_AUTH_UNEXPECTED, out);
        return -EACCES;
    }
    struct shoal_hello ack = hello_base(ep, 0);
    if (ctx->auth_key) {
        memcpy(ep->hs.peer_nonce, h.nonce, SHOAL_NONCE_LEN);
        rc = fresh_nonce(ctx, ep->hs.my_nonce);
        if (rc == 0)
            rc = shoal__auth_proof(ctx->auth_key, ctx->auth_keylen, 'S',
                                   (uint8_t)ctx->prov->transport, h.ep_id, my_id, h.nonce,
                                   ep->hs.my_nonce, ack.proof);
        if (rc) {
            shoal__refusal(ctx, "%s: refused connection from %s: cannot compute a proof", tname,
                        ep->peer);
            return rc;
        }
        ack.flags = SHOAL_HELLO_AUTH | SHOAL_HELLO_PROOF;
        memcpy(ack.nonce, ep->hs.my_nonce, SHOAL_NONCE_LEN);
        ep->hs.auth = true;
        ep->hs.need_proof = true;
    }
    *outlen = shoal__hello_encode(&ack, out);
    return 0;
}

static const char *refusal_text(uint8_t reason, bool server)
{
    switch (reason) {
    case SHOAL_REFUSE_AUTH_REQUIRED:
        return server ? "the server requires authentication and this side has no secret "
                        "(set SHOAL_AUTH_FILE to the job's secret file)"
                      : "the client requires authentication and this side has no secret";
    case SHOAL_REFUSE_AUTH_UNEXPECTED:
        return server ? "the server has no secret (no SHOAL_AUTH_FILE) but this side "
                        "authenticates: set the same SHOAL_AUTH_FILE on both sides, or none"
                      : "the client has no secret but this side authenticates";
    case SHOAL_REFUSE_AUTH_FAILED:
        return server ? "the server says our proof does not match its secret (the two "
                        "SHOAL_AUTH_FILE secrets differ)"
                      : "the client says our proof does not match its secret (the two "
                        "SHOAL_AUTH_FILE secrets differ)";
    default:
        return "refused for an unknown reason";
    }
}

int shoal__hs_ack(shoal_ep_t *ep, const void *in, size_t inlen,
                  uint8_t out[SHOAL_HELLO_MAX], size_t *outlen)
{
    shoal_ctx_t *ctx = ep->ctx;
    struct shoal_hello h;
    char why[160];
    *outlen = 0;
    int rc = shoal__hello_decode(in, inlen, ctx->prov->transport, &h, why, sizeof(why));
    if (rc)
        return shoal__fail(ctx, rc, "bad handshake from the server: %s", why);
    if (h.flags & SHOAL_HELLO_REFUSE)
        return shoal__fail(ctx, -EACCES, "refused: %s", refusal_text(h.reason, true));
    if (h.peer_id != ep->hs.my_id)
        return shoal__fail(ctx, -EBADMSG, "bad handshake from the server: it answers "
                           "endpoint %u, this is %u", h.peer_id, ep->hs.my_id);
    ep->hs.peer_id = h.ep_id;
    bool peer_auth = (h.flags & (SHOAL_HELLO_AUTH | SHOAL_HELLO_PROOF)) ==
                     (SHOAL_HELLO_AUTH | SHOAL_HELLO_PROOF);
    if (!ctx->auth_key && peer_auth)
        return shoal__fail(ctx, -EACCES, "refused: %s", refusal_text(
                               SHOAL_REFUSE_AUTH_REQUIRED, true));
    if (!ctx->auth_key)
        return 0;
    if (!peer_auth)
        return shoal__fail(ctx, -EACCES, "the server did not authenticate itself (it has "
                           "no SHOAL_AUTH_FILE?); refusing it");
    uint8_t want[SHOAL_PROOF_LEN];
    rc = shoal__auth_proof(ctx->auth_key, ctx->auth_keylen, 'S', (uint8_t)ctx->prov->transport,
                           ep->hs.my_id, h.ep_id, ep->hs.my_nonce, h.nonce, want);
    if (rc)
        return shoal__fail(ctx, rc, "authentication: cannot compute a proof");
    if (CRYPTO_memcmp(want, h.proof, SHOAL_PROOF_LEN) != 0) {
        /* Tell the server why we leave; send no proof of our own to a
         * peer that does not hold our secret. */
        *outlen = refusal(ep, SHOAL_REFUSE_AUTH_FAILED, out);
        return shoal__fail(ctx, -EACCES, "refused the server: its authentication proof does "
                           "not match this side's secret (SHOAL_AUTH_FILE '%s' differs from "
                           "the server's)", ctx->cfg.auth_file);
    }
    memcpy(ep->hs.peer_nonce, h.nonce, SHOAL_NONCE_LEN);
    ep->hs.auth = true;
    struct shoal_hello p = hello_base(ep, SHOAL_HELLO_PROOF);
    rc = shoal__auth_proof(ctx->auth_key, ctx->auth_keylen, 'C', (uint8_t)ctx->prov->transport,
                           ep->hs.my_id, h.ep_id, ep->hs.my_nonce, h.nonce, p.proof);
    if (rc)
        return shoal__fail(ctx, rc, "authentication: cannot compute a proof");
    *outlen = shoal__hello_encode(&p, out);
    return 0;
}

int shoal__hs_proof(shoal_ep_t *ep, const void *in, size_t inlen)
{
    shoal_ctx_t *ctx = ep->ctx;
    const char *tname = shoal_transport_name(ctx->prov->transport);
    struct shoal_hello h;
    char why[160];
    if (!ctx->auth_key || !ep->hs.need_proof) {
        shoal__refusal(ctx, "%s: refused connection from %s: a proof nobody asked for", tname,
                    ep->peer);
        return -EPROTO;
    }
    int rc = shoal__hello_decode(in, inlen, ctx->prov->transport, &h, why, sizeof(why));
    if (rc == 0 && (h.ep_id != ep->hs.peer_id || h.peer_id != ep->hs.my_id)) {
        snprintf(why, sizeof(why), "its proof names endpoints %u/%u, expected %u/%u", h.ep_id,
                 h.peer_id, ep->hs.peer_id, ep->hs.my_id);
        rc = -EBADMSG;
    }
    if (rc) {
        shoal__refusal(ctx, "%s: refused connection from %s: %s", tname, ep->peer, why);
        return rc;
    }
    if (h.flags & SHOAL_HELLO_REFUSE) {
        shoal__refusal(ctx, "%s: refused connection from %s: %s", tname, ep->peer,
                    refusal_text(h.reason, false));
        return -EACCES;
    }
    if (!(h.flags & SHOAL_HELLO_PROOF)) {
        shoal__refusal(ctx, "%s: refused connection from %s: it sent no authentication proof",
                    tname, ep->peer);
        return -EACCES;
    }
    uint8_t want[SHOAL_PROOF_LEN];
    rc = shoal__auth_proof(ctx->auth_key, ctx->auth_keylen, 'C', (uint8_t)ctx->prov->transport,
                           ep->hs.peer_id, ep->hs.my_id, ep->hs.peer_nonce, ep->hs.my_nonce,
                           want);
    if (rc == 0 && CRYPTO_memcmp(want, h.proof, SHOAL_PROOF_LEN) != 0)
        rc = -EACCES;
    if (rc) {
        shoal__refusal(ctx, "%s: refused connection from %s: wrong authentication proof "
                    "(a different secret, or a replayed handshake)", tname, ep->peer);
        return -EACCES;
    }
    ep->hs.need_proof = false;
    shoal__info(ctx, "%s: %s authenticated", tname, ep->peer);
    return 0;
}
