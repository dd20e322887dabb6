/*
 * report.c -- progress lines and the metrics CSV (see report.h).
 */
#include "report.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int report_open(struct report *r, const char *metrics_path, double interval, bool quiet,
                const char *transport, const char *label, int epochs, int iters_per_epoch,
                int workers, int batch, int stages, char *err, size_t errlen)
{
    memset(r, 0, sizeof(*r));
    r->tty = isatty(STDERR_FILENO);
    r->quiet = quiet;
    r->interval = interval > 0 ? interval : 1.0;
    r->transport = transport;
    r->label = label;
    r->epochs = epochs;
    r->iters_per_epoch = iters_per_epoch;
    r->workers = workers;
    r->batch = batch;
    r->stages = stages > 1 ? (stages < REPORT_MAX_STAGES ? stages : REPORT_MAX_STAGES) : 0;
    r->t0 = r->last = now_s();
    if (metrics_path && *metrics_path) {
        snprintf(r->path, sizeof(r->path), "%s", metrics_path);
        char tmp[4096 + 16];
        snprintf(tmp, sizeof(tmp), "%s.partial", metrics_path);
        r->csv = fopen(tmp, "w");
        if (!r->csv) {
            snprintf(err, errlen, "%s: cannot create: %s", tmp, strerror(errno));
            return -errno;
        }
        fprintf(r->csv, "time_s,epoch,iteration,loss,samples_per_s,test_accuracy,test_loss");
        for (int i = 0; i < r->stages; i++)
            fprintf(r->csv, ",busy_stage%d", i);
        fprintf(r->csv, "\n");
    }
    return 0;
}

static void emit(struct report *r, int epoch, int iter, double now)
{
    double dt = now - r->last;
    double rate = dt > 0 ? (double)(r->samples - r->samples_at_last) / dt : 0.0;
    double loss = r->loss_n ? r->loss_sum / r->loss_n : 0.0;
    /* each stage's share of the interval spent computing */
    char busy[16 * REPORT_MAX_STAGES + 16] = "", cols[16 * REPORT_MAX_STAGES] = "";
    for (int i = 0, at = 0, ct = 0; i < r->stages; i++) {
        double f = dt > 0 ? (r->busy[i] - r->busy_at_last[i]) / dt : 0.0;
        f = f < 0 ? 0 : f > 1 ? 1 : f;
        at += snprintf(busy + at, sizeof(busy) - (size_t)at, "%s%.0f%%", i ? " " : "  busy ",
                       100.0 * f);
        ct += snprintf(cols + ct, sizeof(cols) - (size_t)ct, ",%.3f", f);
        r->busy_at_last[i] = r->busy[i];
    }
    if (r->csv)
        fprintf(r->csv, "%.3f,%d,%d,%.6f,%.1f,,%s\n", now - r->t0, epoch + 1,
                epoch * r->iters_per_epoch + iter + 1, loss, rate, cols);
    if (!r->quiet) {
        fprintf(stderr, "%sepoch %d/%d  iter %d/%d  loss %.4f  %.0f samples/s%s  [%s, %s]%s",
                r->tty ? "\r\033[K" : "", epoch + 1, r->epochs, iter + 1, r->iters_per_epoch,
                loss, rate, busy, r->label, r->transport, r->tty ? "" : "\n");
        r->line_open = r->tty;
        fflush(stderr);
    }
    r->last = now;
    r->samples_at_last = r->samples;
    r->loss_sum = 0;
    r->loss_n = 0;
}

void report_step(struct report *r, int epoch, int iter, float loss, long samples)
{
    r->loss_sum += loss;
    r->loss_n++;
    r->samples = samples;
    double now = now_s();
    if (now - r->last >= r->interval)
        emit(r, epoch, iter, now);
}

void report_epoch(struct report *r, int epoch, double test_acc, double test_loss)
{
    double now = now_s();
    if (r->loss_n)
        emit(r, epoch, r->iters_per_epoch - 1, now);
    double el = now - r->t0;
    if (r->csv) {
        fprintf(r->csv, "%.3f,%d,%d,,,%.4f,%.6f", el, epoch + 1,
                (epoch + 1) * r->iters_per_epoch, test_acc, test_loss);
        for (int i = 0; i < r->stages; i++)
            fputc(',', r->csv);
        fputc('\n', r->csv);
        fflush(r->csv);
    }
    if (r->line_open)
        fputc('\n', stderr);
    r->line_open = false;
    fprintf(stderr, "epoch %d/%d done  test accuracy %.2f%%  test loss %.4f  %.1f s  %.0f "
            "samples/s overall\n",
            epoch + 1, r->epochs, 100.0 * test_acc, test_loss, el,
            el > 0 ? (double)r->samples / el : 0.0);
    fflush(stderr);
}

void report_busy(struct report *r, const double *busy)
{
    for (int i = 0; i < r->stages; i++)
        r->busy[i] = busy[i];
}

int report_close(struct report *r, char *err, size_t errlen)
{
    if (r->line_open)
        fputc('\n', stderr);
    if (!r->csv)
        return 0;
    char tmp[4096 + 16];
    snprintf(tmp, sizeof(tmp), "%s.partial", r->path);
    int rc = 0;
    if (fflush(r->csv) || fsync(fileno(r->csv)))
        rc = -errno;
    if (fclose(r->csv) && !rc)
        rc = -errno;
    r->csv = NULL;
    if (!rc && rename(tmp, r->path))
        rc = -errno;
    if (rc)
        snprintf(err, errlen, "%s: %s", r->path, strerror(-rc));
    return rc;
}
