#!/bin/bash
# examples.sh -- short runs of examples/torch/mlp.py and cnn.py (1 server,
# 2 workers, 2 epochs of 150 iterations, batch 64 per worker) in each mode,
# with fp16 on the wire, and with co-located servers (shoal-run -s
# colocated: 2 processes, each a worker serving half the parameters): each
# must finish, print its epoch lines and a final test accuracy above a bar,
# and its server(s) must account for every gradient applied once.
# Bars: the accuracies measured here (in each comment; bsp and aggregate
# repeat exactly, async and ssp vary with timing) minus 5 to 8 points.
. "$(dirname "$0")/lib.sh"
need_torch
need_data
short="--epochs 2 --iters-per-epoch 150 --eval-every 1 --data $data"
# NAME BAR(x100) SCRIPT ARGS...  ($servers: 1, or colocated)
servers=1
run_example() {
    local name=$1 bar=$2 script=$3 log=$scratch/$1.log a rc
    shift 3
    job "$log" 2 "$servers" 240 "$py" "$examples/$script" $short "$@"
    rc=$?
    if [ $rc != 0 ]; then tail -n 8 "$log"; bad "$name: exit $rc"; return; fi
    has "$log" "^epoch 1/2 done  test accuracy [0-9.]+%" "$name: an epoch line"
    has "$log" "applied [0-9]+ gradients, each once; dropped 0 " \
        "$name: the server applied every gradient once"
    has "$log" "per step: push-pull .* 0 gradient copies" "$name: no gradient copied"
    a=$(accuracy "$log")
    if [ -z "$a" ]; then tail -n 5 "$log"; bad "$name: no final accuracy"; return; fi
    [ "$a" -ge "$bar" ] && ok "$name: final accuracy $(awk "BEGIN{print $a/100}")%" ||
        bad "$name: final accuracy $(awk "BEGIN{print $a/100}")% is below $(awk "BEGIN{print $bar/100}")%"
}
run_example "mlp bsp sgd" 7900 mlp.py --mode bsp                            # 83.9%, 84.2%
run_example "mlp aggregate adam" 7650 mlp.py --mode aggregate --optimizer adam --lr 0.001 # 81.7%
run_example "mlp async sgd" 7200 mlp.py --mode async                        # 78.4%, 80.7%, 80.4%
run_example "mlp ssp sgd" 7200 mlp.py --mode ssp --staleness 2          # 80.1%, 77.6%, 81.3%
run_example "mlp bsp sgd fp16" 7900 mlp.py --mode bsp --compress fp16       # 84.2%
run_example "cnn bsp sgd" 7850 cnn.py --mode bsp                            # 83.6%, 83.0%
servers=colocated
run_example "mlp bsp sgd, co-located" 7900 mlp.py --mode bsp                 # 84.2%
finish
