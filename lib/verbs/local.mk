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

# Verbs-only tests (tests/transport/test-verbs.c), run by tests/verbs-vm.sh
# in the same VM boot as the transport suite; not a TESTS entry of their
# own (on a host without RDMA they could only skip).  Makefile.am adds
# $(VERBS_CHECK_BINS) to check_PROGRAMS, for the same reason as above.
VERBS_CHECK_BINS = tests/transport/test-verbs
tests_transport_test_verbs_SOURCES = tests/transport/test-verbs.c \
	tests/transport/harness.c tests/transport/harness.h tests/cu.h
tests_transport_test_verbs_CFLAGS = $(AM_CFLAGS) $(CUNIT_CFLAGS) $(VERBS_CFLAGS)
tests_transport_test_verbs_LDADD = lib/libshoal_impl.la $(CUNIT_LIBS) $(VERBS_LIBS)
