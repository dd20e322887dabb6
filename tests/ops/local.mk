# tests/ops/local.mk -- tests of how shoal is run and shipped rather than of
# what it computes (included by Makefile.am): the plot tool, the man pages,
# real launchers and emulated hosts.
#   plot.sh    tools/shoal-plot on a real metrics file, the PNG checked
#   man.sh     every man page renders without a warning; every exported
#              function has a page with its shoal.h prototype
#   netns.sh   server and workers on three emulated hosts (network
#              namespaces on a bridge) over UCX; one host's link cut, restored
#   slurm.sh   a one-node Slurm cluster of its own (munged, slurmctld,
#              slurmd): srun and sbatch of examples/slurm/shoal-train.sbatch
OPS_TESTS = tests/ops/plot.sh tests/ops/man.sh tests/ops/netns.sh tests/ops/slurm.sh
TESTS += $(OPS_TESTS)
EXTRA_DIST += $(OPS_TESTS) tests/ops/pngstat.py
dist_man_MANS += docs/man/shoal-plot.1

# A job script users copy for their cluster; installed with the docs.
slurmexamplesdir = $(docdir)/examples/slurm
dist_slurmexamples_DATA = examples/slurm/shoal-train.sbatch
