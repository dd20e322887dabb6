# lib/verbs/local.mk -- the verbs provider's part of the build (included by
# Makefile.am when configure found rdma-core).
# Keep: makes lib/core/ctx.c list shoal_verbs_provider.
AM_CPPFLAGS += -DHAVE_VERBS=1
lib_libshoal_impl_la_SOURCES += lib/verbs/verbs_int.h lib/verbs/verbs_ctx.c \
	lib/verbs/verbs_ep.c lib/verbs/verbs_ops.c
lib_libshoal_impl_la_CFLAGS += $(VERBS_CFLAGS)
lib_libshoal_impl_la_LIBADD += $(VERBS_LIBS)

# The verbs transport suite in the soft-RoCE VM (skipped where no VM can
# run).  This file is included before Makefile.am sets TESTS, and automake
# refuses `TESTS +=` before `TESTS =`; Makefile.am adds $(VERBS_VM_TESTS)
# to TESTS (empty without verbs).
VERBS_VM_TESTS = tests/verbs-vm.sh
EXTRA_DIST += tests/verbs-vm.sh
