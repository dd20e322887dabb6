/*
 * error.c -- error text and logging.
 *
 * Errors are negative errno values everywhere.  shoal_strerror() gives the
 * meaning in libshoal's terms for the codes the library uses on purpose
 * and falls back to the C library's text for the rest.  The detailed text
 * of a failure (which host, which descriptor field) is kept per context,
 * like sqlite3_errmsg(): it describes the last public call on the context
 * and only that one (shoal__enter clears it, shoal__leave makes sure a
 * failure has one and a success none).
 */
#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "core.h"

const char *shoal_strerror(int err)
{
    if (err < 0)
        err = -err;
    switch (err) {
    case 0: return "success";
    case EAGAIN: return "resources busy: poll for completions and retry";
    case ERANGE: return "offset or length outside the registered region";
    case EACCES: return "access refused (a region not registered for this access, or a "
                        "peer that failed authentication)";
    case EBADMSG: return "corrupt or truncated message or descriptor";
    case EPROTO: return "protocol mismatch (version, magic or transport)";
    case ENOTCONN: return "endpoint is not connected (failed or closing)";
    case ECONNREFUSED: return "connection refused: nothing listens there";
    case ETIMEDOUT: return "timed out";
    case ECONNRESET: return "connection reset by peer";
    case EMSGSIZE: return "message larger than SHOAL_MSG_MAX";
    case ENODEV: return "no usable device for this transport";
    case ENOBUFS: return "buffer too small";
    case ECANCELED: return "operation canceled (endpoint closed)";
    case EHOSTUNREACH: return "peer unreachable";
    default: return strerror(err);
    }
}

const char *shoal_ctx_errmsg(const shoal_ctx_t *ctx)
{
    return ctx ? ctx->errmsg : "";
}

static const char level_tag[][6] = {"error", "warn", "info", "debug", "trace"};

static void vlog(const shoal_ctx_t *ctx, shoal_log_level_t lvl,
                 const char *fmt, va_list ap)
{
    shoal_log_level_t max = ctx ? ctx->cfg.log_level : SHOAL_LOG_WARN;
    if (lvl > max)
        return;
    char msg[768];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    /* One write per line so lines from several processes don't mix. */
    char line[900];
    int n = snprintf(line, sizeof(line), "[%lld.%06ld] shoal[%d] %s: %s\n",
                     (long long)ts.tv_sec, ts.tv_nsec / 1000, (int)getpid(),
                     level_tag[lvl], msg);
    if (n > (int)sizeof(line))
        n = sizeof(line);
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}

void shoal__log(const shoal_ctx_t *ctx, shoal_log_level_t lvl,
                const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(ctx, lvl, fmt, ap);
    va_end(ap);
}

/* errmsg, unless the progress thread is working: then its scratch copy,
 * so the application's last message stays as its last call left it.
 * (err_out is NULL in a context the fuzz targets build by hand.) */
static char *err_out(shoal_ctx_t *ctx)
{
    return ctx->err_out ? ctx->err_out : ctx->errmsg;
}

int shoal__fail(shoal_ctx_t *ctx, int err, const char *fmt, ...)
{
    va_list ap;
    if (ctx) {
        char *out = err_out(ctx);
        va_start(ap, fmt);
        vsnprintf(out, sizeof(ctx->errmsg), fmt, ap);
        va_end(ap);
        /* -EAGAIN is back-pressure in a retry loop, not news. */
        if (err != -EAGAIN)
            shoal__debug(ctx, "%s (%s)", out, shoal_strerror(err));
    }
    return err;
}

const char *shoal__last_error(const shoal_ctx_t *ctx)
{
    return err_out((shoal_ctx_t *)ctx);
}

void shoal__enter(shoal_ctx_t *ctx)
{
    shoal__lock(ctx);
    ctx->errmsg[0] = '\0';
}

int shoal__leave(shoal_ctx_t *ctx, const char *call, int rc)
{
    if (rc >= 0)
        ctx->errmsg[0] = '\0';
    else if (!ctx->errmsg[0])
        snprintf(ctx->errmsg, sizeof(ctx->errmsg), "%s: %s", call, shoal_strerror(rc));
    shoal__unlock(ctx);
    return rc;
}
