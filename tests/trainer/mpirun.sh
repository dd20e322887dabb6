#!/bin/bash
# A real Open MPI launch: 1 server + 2 workers on localhost, ranks from
# OMPI_COMM_WORLD_*, meeting through --coordinator.
. "$(dirname "$0")/lib.sh"
need_data
command -v mpirun >/dev/null || skip "no mpirun (apt-get install openmpi-bin)"
# A port the kernel just handed out (free now; the job starts at once).
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])') ||
    skip "cannot ask the kernel for a free port (python3)"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
if timeout 240 mpirun -n 3 --oversubscribe --bind-to none "$train" --servers 1 \
    --coordinator 127.0.0.1:$port --data "$data" -q --epochs 1 --iters-per-epoch 100 \
    >"$scratch/mpi.log" 2>&1; then
    a=$(accuracy "$scratch/mpi.log")
    grep -q "bsp, 2 workers" "$scratch/mpi.log" && ok "mpirun: 1 server + 2 workers" ||
        { cat "$scratch/mpi.log"; bad "mpirun: the job did not see 2 workers"; }
    [ "${a:-0}" -ge 7000 ] && ok "mpirun job learned ($a/100 %)" ||
        { cat "$scratch/mpi.log"; bad "mpirun job accuracy ${a:-none}"; }
else
    cat "$scratch/mpi.log"
    bad "mpirun job failed"
fi
finish
