#!/bin/bash
# mpirun.sh -- a PyTorch job through shoal under a real Open MPI launch:
# 1 server + 2 workers of examples/torch/mlp.py on localhost, ranks from
# OMPI_COMM_WORLD_*, meeting through SHOAL_COORDINATOR (a port the kernel
# just handed out); the job learns and its server accounts for every
# gradient.
. "$(dirname "$0")/lib.sh"
need_torch
need_data
command -v mpirun >/dev/null || skip "no mpirun (apt-get install openmpi-bin)"
port=$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])') ||
    skip "cannot ask the kernel for a free port"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
log=$scratch/mpi.log
timeout 240 mpirun -n 3 --oversubscribe --bind-to none -x SHOAL_SERVERS=1 \
    -x SHOAL_COORDINATOR=127.0.0.1:$port -x PYTHONPATH -x SHOAL_LIB_DIR -x OMP_NUM_THREADS \
    -x MKL_NUM_THREADS -x OPENBLAS_NUM_THREADS -x PYTHONDONTWRITEBYTECODE \
    "$py" "$examples/mlp.py" --epochs 1 --iters-per-epoch 150 --data "$data" -q >"$log" 2>&1
rc=$?
[ $rc = 0 ] && ok "mpirun -n 3: the job exited 0" || { tail -n 12 "$log"; bad "mpirun: exit $rc"; }
has "$log" "^mlp.py: bsp, 2 workers, 1 servers" "mpirun: 1 server + 2 workers from Open MPI's ranks"
has "$log" "applied [0-9]+ gradients, each once" "mpirun: the server applied every gradient once"
a=$(accuracy "$log")
[ "${a:-0}" -ge 7000 ] && ok "mpirun: the job learned ($(awk "BEGIN{print ${a:-0}/100}")%)" ||
    { tail -n 12 "$log"; bad "mpirun: final accuracy '${a:-none}' (x100) is below 70%"; }
finish
