# perf/local.mk -- benchmarks (included by Makefile.am).
