# lib/ps/local.mk -- libshoal-ps, the parameter server layer (included by
# Makefile.am).  It sees only lib/shoal.h.  libshoal_ps_impl has the
# internal symbols visible (the white-box tests link it); libshoal-ps.so
# exports exactly shoal_ps.h.
noinst_LTLIBRARIES += lib/ps/libshoal_ps_impl.la
lib_ps_libshoal_ps_impl_la_SOURCES = lib/ps/shoal_ps.h lib/ps/ps_int.h lib/ps/ps_util.c \
	lib/ps/ps_config.c lib/ps/ps_core.h lib/ps/ps_core.c lib/ps/ps_proto.h lib/ps/ps_proto.c \
	lib/ps/ps_optim.h lib/ps/ps_optim.c lib/ps/ps_ckpt.h lib/ps/ps_ckpt.c \
	lib/ps/ps_compress.h lib/ps/ps_compress.c \
	lib/ps/ps_ckwriter.h lib/ps/ps_ckwriter.c lib/ps/ps_net.h lib/ps/ps_net.c \
	lib/ps/ps_server.c lib/ps/ps_worker.c
lib_ps_libshoal_ps_impl_la_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/lib/ps
lib_ps_libshoal_ps_impl_la_CFLAGS = $(AM_CFLAGS) $(VEC_CFLAGS) $(ZLIB_CFLAGS)
lib_ps_libshoal_ps_impl_la_LIBADD = lib/libshoal.la $(ZLIB_LIBS) -lm

lib_LTLIBRARIES += lib/ps/libshoal-ps.la
lib_ps_libshoal_ps_la_SOURCES =
nodist_EXTRA_lib_ps_libshoal_ps_la_SOURCES = dummy.c
lib_ps_libshoal_ps_la_LIBADD = lib/ps/libshoal_ps_impl.la
lib_ps_libshoal_ps_la_LDFLAGS = -version-info 0:0:0 \
	-Wl,--version-script=$(srcdir)/lib/ps/libshoal-ps.map
EXTRA_lib_ps_libshoal_ps_la_DEPENDENCIES = lib/ps/libshoal-ps.map
include_HEADERS += lib/ps/shoal_ps.h
pkgconfig_DATA += lib/ps/shoal-ps.pc
EXTRA_DIST += lib/ps/libshoal-ps.map

# shoal-ps-server: a generic server for any job's parameters.
bin_PROGRAMS += tools/shoal-ps-server
tools_shoal_ps_server_SOURCES = tools/shoal-ps-server.c
tools_shoal_ps_server_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/lib/ps
tools_shoal_ps_server_LDADD = lib/ps/libshoal-ps.la lib/libshoal.la
dist_man_MANS += docs/man/shoal-ps-server.1 docs/man/shoal_ps.3

# The state machine, driven directly (no network).
check_PROGRAMS += tests/ps/test-ps-core
tests_ps_test_ps_core_SOURCES = tests/ps/test-ps-core.c tests/cu.h
tests_ps_test_ps_core_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/lib/ps -I$(top_srcdir)/tests
tests_ps_test_ps_core_CFLAGS = $(AM_CFLAGS) $(CUNIT_CFLAGS)
tests_ps_test_ps_core_LDADD = lib/ps/libshoal_ps_impl.la $(CUNIT_LIBS)
TESTS += tests/ps/test-ps-core

# The public API with real processes (UCX over TCP on loopback).
check_PROGRAMS += tests/ps/test-ps-api
tests_ps_test_ps_api_SOURCES = tests/ps/test-ps-api.c tests/cu.h
tests_ps_test_ps_api_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/lib/ps -I$(top_srcdir)/tests
tests_ps_test_ps_api_CFLAGS = $(AM_CFLAGS) $(CUNIT_CFLAGS)
tests_ps_test_ps_api_LDADD = lib/ps/libshoal-ps.la lib/libshoal.la $(CUNIT_LIBS) -lm
TESTS += tests/ps/test-ps-api

# The outside program: built against a `make install` into a temporary
# prefix through pkg-config, then run with 1 server and 2 workers.
TESTS += tests/ps/example.sh
EXTRA_DIST += tests/ps/example.sh examples
