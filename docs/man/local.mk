# docs/man/local.mk -- libshoal's man pages (included by Makefile.am): shoal(7),
# the model and the contract, and one section-3 page per group of calls;
# the other calls of a group are one-line .so links to it, as in rdma-core.
# tests/ops/man.sh checks that every page renders without a warning and
# that every function of lib/libshoal.map has one.
dist_man_MANS += docs/man/man7/shoal.7 \
	docs/man/man3/shoal_accept.3 \
	docs/man/man3/shoal_alloc.3 \
	docs/man/man3/shoal_bind_thread.3 \
	docs/man/man3/shoal_config_from_env.3 \
	docs/man/man3/shoal_config_init.3 \
	docs/man/man3/shoal_config_print.3 \
	docs/man/man3/shoal_config_set.3 \
	docs/man/man3/shoal_connect.3 \
	docs/man/man3/shoal_connect_retry.3 \
	docs/man/man3/shoal_ctx_create.3 \
	docs/man/man3/shoal_ctx_describe.3 \
	docs/man/man3/shoal_ctx_destroy.3 \
	docs/man/man3/shoal_ctx_errmsg.3 \
	docs/man/man3/shoal_ctx_placement.3 \
	docs/man/man3/shoal_ctx_transport.3 \
	docs/man/man3/shoal_ep_abort.3 \
	docs/man/man3/shoal_ep_close.3 \
	docs/man/man3/shoal_ep_peer.3 \
	docs/man/man3/shoal_ep_reconnect.3 \
	docs/man/man3/shoal_ep_set_user.3 \
	docs/man/man3/shoal_ep_user.3 \
	docs/man/man3/shoal_event_name.3 \
	docs/man/man3/shoal_free.3 \
	docs/man/man3/shoal_get.3 \
	docs/man/man3/shoal_listen.3 \
	docs/man/man3/shoal_listener_close.3 \
	docs/man/man3/shoal_listener_port.3 \
	docs/man/man3/shoal_mr_addr.3 \
	docs/man/man3/shoal_mr_dereg.3 \
	docs/man/man3/shoal_mr_length.3 \
	docs/man/man3/shoal_mr_pack.3 \
	docs/man/man3/shoal_mr_reg.3 \
	docs/man/man3/shoal_poll.3 \
	docs/man/man3/shoal_put.3 \
	docs/man/man3/shoal_rmr_access.3 \
	docs/man/man3/shoal_rmr_destroy.3 \
	docs/man/man3/shoal_rmr_length.3 \
	docs/man/man3/shoal_rmr_unpack.3 \
	docs/man/man3/shoal_send.3 \
	docs/man/man3/shoal_strerror.3 \
	docs/man/man3/shoal_transport_name.3 \
	docs/man/man3/shoal_wait.3
