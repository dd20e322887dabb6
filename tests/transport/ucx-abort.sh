#!/bin/sh
# ucx-abort.sh -- the bytes that made UCX 1.13's ucp_listener (its sockcm
# connection manager) assert and abort the whole server process: a
# connection-request header with length 0 followed by more bytes
# (tcp_sockcm_ep.c: `comm_ctx.offset <= comm_ctx.length`).  libshoal now
# owns the listening socket (lib/ucx/ucx_boot.c), so the same bytes must be
# refused with a warning naming the peer, and the server must go on to
# serve a good client.  See docs/ARCHITECTURE.md, "Hostile input".
top_build=${abs_top_builddir:-$PWD}
exec "$top_build/tests/transport/test-hostile" --ucx-abort-bytes
