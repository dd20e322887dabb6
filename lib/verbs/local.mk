# lib/verbs/local.mk -- the verbs provider's part of the build (included by
# Makefile.am when configure found rdma-core).
