/*
 * mpi-allreduce.c -- the peer of shoal-train's parameter round in
 * perf/train-compare: MPI_Allreduce (sum) of N floats, timed one call at a
 * time, every call started together (MPI_Barrier outside the clock), like
 * the round worker 0 of shoal-train times.  Rank 0 prints one line:
 *
 *   mpi-allreduce: N floats (B bytes), P ranks: median X us, p99 Y us, min Z us over I calls
 *
 * Usage: mpirun -n 2 mpi-allreduce [FLOATS [ITERATIONS [WARMUP]]]
 *        (defaults 203530, 1000, 50: the 784-256-10 MLP's parameter count)
 */
#include <mpi.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static long arg(int argc, char **argv, int i, long def, long min, int rank)
{
    if (argc <= i)
        return def;
    char *end;
    errno = 0;
    long v = strtol(argv[i], &end, 10);
    if (errno || *end || end == argv[i] || v < min) {
        if (rank == 0)
            fprintf(stderr, "mpi-allreduce: argument %d '%s': expected an integer >= %ld\n", i,
                    argv[i], min);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    return v;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    long n = arg(argc, argv, 1, 203530, 1, rank);
    long iters = arg(argc, argv, 2, 1000, 1, rank);
    long warmup = arg(argc, argv, 3, 50, 0, rank);

    float *send = malloc((size_t)n * sizeof(float));
    float *recv = malloc((size_t)n * sizeof(float));
    double *t = malloc((size_t)iters * sizeof(double));
    if (!send || !recv || !t) {
        fprintf(stderr, "mpi-allreduce: out of memory for %ld floats\n", n);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    for (long i = 0; i < n; i++)
        send[i] = (float)((i + rank) % 97) * 0.01f;

    for (long k = 0; k < warmup + iters; k++) {
        MPI_Barrier(MPI_COMM_WORLD);
        double t0 = MPI_Wtime();
        MPI_Allreduce(send, recv, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        double dt = MPI_Wtime() - t0;
        if (k >= warmup)
            t[k - warmup] = dt * 1e6;
    }
    /* The sum must be right, or the figure means nothing. */
    long bad = 0;
    for (long i = 0; i < n; i++) {
        float want = 0;
        for (int r = 0; r < size; r++)
            want += (float)((i + r) % 97) * 0.01f;
        if (recv[i] < want - 1e-3f || recv[i] > want + 1e-3f)
            bad++;
    }
    long bad_all = 0;
    MPI_Reduce(&bad, &bad_all, 1, MPI_LONG, MPI_SUM, 0, MPI_COMM_WORLD);
    int rc = 0;
    if (rank == 0) {
        if (bad_all) {
            fprintf(stderr, "mpi-allreduce: %ld wrong sums\n", bad_all);
            rc = 1;
        } else {
            qsort(t, (size_t)iters, sizeof(double), cmp_double);
            printf("mpi-allreduce: %ld floats (%ld bytes), %d ranks: median %.0f us, p99 %.0f us, "
                   "min %.0f us over %ld calls\n",
                   n, n * (long)sizeof(float), size, t[iters / 2], t[iters * 99 / 100], t[0],
                   iters);
        }
    }
    free(send);
    free(recv);
    free(t);
    MPI_Finalize();
    return rc;
}
