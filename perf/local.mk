# perf/local.mk -- benchmarks (included by Makefile.am).

# ---- train-compare (perf/train/): shoal-train against PyTorch ------------
# perf/train-compare trains the same MLP with PyTorch DDP (gloo, 2 workers),
# single-process PyTorch and shoal-train BSP in one run, and times
# shoal-train's parameter round next to MPI_Allreduce of the same bytes
# (perf/train/mpi-allreduce, built when configure finds Open MPI).  Not
# installed: run it from the source tree.  perf/train/smoke.sh (make check)
# runs it briefly.  See docs/PERFORMANCE.md "Training: shoal-train vs PyTorch".
EXTRA_DIST += perf/train-compare perf/train/torch-train.py perf/train/smoke.sh
if HAVE_MPI
noinst_PROGRAMS = perf/train/mpi-allreduce
perf_train_mpi_allreduce_SOURCES = perf/train/mpi-allreduce.c
perf_train_mpi_allreduce_CFLAGS = $(AM_CFLAGS) $(MPI_CFLAGS)
perf_train_mpi_allreduce_LDADD = $(MPI_LIBS)
endif
TESTS += perf/train/smoke.sh
