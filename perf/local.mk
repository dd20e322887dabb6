# perf/local.mk -- benchmarks (included by Makefile.am).
#
# shoal-perf: perftest-style put/get latency and bandwidth between two
# processes.  perf/compare runs it next to ucx_perftest (UCX over TCP) or
# ib_write_*/ib_read_* (verbs, soft-RoCE VM when there is no RDMA device).
# perf/smoke.sh (make check) runs every test briefly, both roles, so the
# benchmark cannot rot.
bin_PROGRAMS += perf/shoal-perf
perf_shoal_perf_SOURCES = perf/shoal-perf.c
perf_shoal_perf_LDADD = lib/libshoal.la -lm
dist_bin_SCRIPTS += perf/compare
dist_man_MANS += docs/man/shoal-perf.1
TESTS += perf/smoke.sh
EXTRA_DIST += perf/smoke.sh docs/PERFORMANCE.md

# ---- train-compare (perf/train/): shoal-train against PyTorch ------------
# perf/train-compare trains the same MLP with PyTorch DDP (gloo, 2 workers),
# single-process PyTorch and shoal-train BSP in one run, and times
# shoal-train's parameter round next to MPI_Allreduce of the same bytes
# (perf/train/mpi-allreduce, built when configure finds Open MPI).  Not
# installed: run it from the source tree.  perf/train/smoke.sh (make check)
# runs it briefly.  See docs/PERFORMANCE.md "Training: shoal-train vs PyTorch".
EXTRA_DIST += perf/train-compare perf/train/torch-train.py perf/train/smoke.sh perf/ps-scale
if HAVE_MPI
noinst_PROGRAMS = perf/train/mpi-allreduce
perf_train_mpi_allreduce_SOURCES = perf/train/mpi-allreduce.c
perf_train_mpi_allreduce_CFLAGS = $(AM_CFLAGS) $(MPI_CFLAGS)
perf_train_mpi_allreduce_LDADD = $(MPI_LIBS)
endif
TESTS += perf/train/smoke.sh

# ---- pipe-compare: data parallel against pipelines (shoal-train --stages) --
# perf/pipe-compare trains one wide model pure data parallel and as 2- and
# 4-stage pipelines of the same workers and global batch, in one run:
# samples/s, each stage's busy share against the GPipe ideal, bytes each
# worker sends per iteration, peak memory.  perf/pipe/smoke.sh (make
# check) runs it briefly.  See docs/PERFORMANCE.md "Hybrid parallelism".
EXTRA_DIST += perf/pipe-compare perf/pipe/smoke.sh
TESTS += perf/pipe/smoke.sh
