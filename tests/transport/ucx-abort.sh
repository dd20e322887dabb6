#!/bin/sh
# ucx-abort.sh -- reproduces a UCX 1.13 bug: a plain TCP peer that sends a
# tcp_sockcm connection-request header with length 0 followed by more
# bytes makes UCX's listener assert and abort the whole server process
# (tcp_sockcm_ep.c: `comm_ctx.offset <= comm_ctx.length`).  libshoal cannot
# catch that; this test is in XFAIL_TESTS so that a UCX which fixes it
# shows up as XPASS.  See docs/ARCHITECTURE.md, "Hostile input".
top_build=${abs_top_builddir:-$PWD}
exec "$top_build/tests/transport/test-hostile" --known-ucx-abort
