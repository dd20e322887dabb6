# trainer/local.mk -- shoal-train, the parameter-server trainer (included by
# Makefile.am).
