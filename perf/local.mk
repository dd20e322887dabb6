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
