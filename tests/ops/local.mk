# tests/ops/local.mk -- tests of how shoal is run and shipped rather than of
# what it computes (included by Makefile.am): the plot tool, the man pages,
# real launchers and emulated hosts.
OPS_TESTS = tests/ops/plot.sh
TESTS += $(OPS_TESTS)
EXTRA_DIST += $(OPS_TESTS) tests/ops/pngstat.py
dist_man_MANS += docs/man/shoal-plot.1
