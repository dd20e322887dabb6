# python/local.mk -- the Python package (python/shoal: ctypes over
# libshoal-ps, and shoal.torch for PyTorch), its examples (examples/torch)
# and tests (included by Makefile.am).  Pure Python: nothing is compiled
# for it; tests/torch/ps-layout is a test helper only.
SHOAL_PY_FILES = python/shoal/__init__.py python/shoal/errors.py python/shoal/_lib.py \
	python/shoal/ps.py python/shoal/torch.py python/shoal/data.py
EXTRA_DIST += $(SHOAL_PY_FILES) python/local.mk

# Where `make install` puts the package (shoalpythondir=DIR overrides):
# Debian's python3 searches $(prefix)/lib/python3/dist-packages for prefix
# /usr and /usr/local/lib/python3.X/dist-packages for prefix /usr/local;
# any other prefix gets $(prefix)/lib/python3/dist-packages, to be added to
# PYTHONPATH.  The installed package finds libshoal-ps in $(libdir)
# (shoal/_install.py, written here).
PYTHON3 = /usr/bin/python3
shoalpythondir =
shoal_pydir_sh = d='$(shoalpythondir)'; \
	if test -z "$$d" && test '$(prefix)' = /usr/local; then \
	  d=`$(PYTHON3) -c 'import sys; print("/usr/local/lib/python%d.%d/dist-packages" % sys.version_info[:2])' 2>/dev/null` || d=; \
	fi; \
	test -n "$$d" || d='$(prefix)/lib/python3/dist-packages'

install-data-local: install-shoal-python
install-shoal-python:
	@$(shoal_pydir_sh); \
	echo " installing the Python package in $(DESTDIR)$$d/shoal"; \
	$(MKDIR_P) "$(DESTDIR)$$d/shoal" || exit 1; \
	for f in $(SHOAL_PY_FILES); do \
	  $(INSTALL_DATA) "$(srcdir)/$$f" "$(DESTDIR)$$d/shoal/" || exit 1; \
	done; \
	{ echo '"""Written by make install: where libshoal-ps was installed."""'; \
	  echo 'LIBDIR = "$(libdir)"'; } >"$(DESTDIR)$$d/shoal/_install.py"

uninstall-local: uninstall-shoal-python
uninstall-shoal-python:
	@$(shoal_pydir_sh); \
	for f in $(SHOAL_PY_FILES) python/shoal/_install.py; do \
	  rm -f "$(DESTDIR)$$d/shoal/`basename $$f`"; \
	done; \
	rm -rf "$(DESTDIR)$$d/shoal/__pycache__"; \
	rmdir "$(DESTDIR)$$d/shoal" 2>/dev/null || :
.PHONY: install-shoal-python uninstall-shoal-python

# ---- tests (tests/torch): each prints SKIPPED and exits 77 without
# python3-torch (or numpy, for those that need only numpy).
check_PROGRAMS += tests/torch/ps-layout
tests_torch_ps_layout_SOURCES = tests/torch/ps-layout.c
tests_torch_ps_layout_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/lib/ps
SHOAL_PY_TESTS = tests/torch/layout.sh tests/torch/numpy-job.sh tests/torch/install.sh \
	tests/torch/bad-use.sh tests/torch/equiv.sh tests/torch/examples.sh tests/torch/mpirun.sh
TESTS += $(SHOAL_PY_TESTS)
EXTRA_DIST += $(SHOAL_PY_TESTS) tests/torch/lib.sh tests/torch/equiv.py \
	tests/torch/bad-use.py tests/torch/numpy-job.py tests/torch/faults.sh

# The PyTorch fault suite alone (make check-faults runs it too, last).
check-faults-torch: all
	abs_top_srcdir=$(abs_top_srcdir) abs_top_builddir=$(abs_top_builddir) \
	  $(SHELL) $(srcdir)/tests/torch/faults.sh; rc=$$?; \
	test $$rc = 0 || test $$rc = 77
.PHONY: check-faults-torch
