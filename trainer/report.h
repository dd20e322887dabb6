/*
 * report.h -- what a user sees of a training run: a progress line (in
 * place on a terminal, plain lines otherwise), per-epoch test accuracy,
 * and the --metrics CSV (one row per logging step; written to
 * FILE.partial and renamed into place when the run ends).  A pipeline
 * run (stages > 1) adds each stage's busy time: the share of the
 * interval it spent computing, as busy_stageN columns and on the line.
 */
#ifndef SHOAL_TRAIN_REPORT_H
#define SHOAL_TRAIN_REPORT_H

#include <stdbool.h>
#include <stdio.h>

#define REPORT_MAX_STAGES 8

struct report {
    FILE *csv;
    char path[4096];
    bool tty, quiet, line_open;
    double t0, last;
    double interval;
    const char *transport;
    const char *label;       /* "bsp 2 workers" */
    int epochs, iters_per_epoch, workers, batch;
    double loss_sum;
    int loss_n;
    long samples_at_last;
    long samples;
    int stages;              /* > 1: report busy time per stage */
    double busy[REPORT_MAX_STAGES], busy_at_last[REPORT_MAX_STAGES];
};

double now_s(void);

int report_open(struct report *r, const char *metrics_path, double interval, bool quiet,
                const char *transport, const char *label, int epochs, int iters_per_epoch,
                int workers, int batch, int stages, char *err, size_t errlen);
/* Each stage's busy seconds so far (stages of them). */
void report_busy(struct report *r, const double *busy);
/* One iteration done (by this worker); samples = global samples so far. */
void report_step(struct report *r, int epoch, int iter, float loss, long samples);
void report_epoch(struct report *r, int epoch, double test_acc, double test_loss);
int report_close(struct report *r, char *err, size_t errlen);

#endif
