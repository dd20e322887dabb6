#!/bin/bash
# The torn-read check can fail: a server that writes a worker's parameters
# a second time (SHOAL_TRAIN_INJECT=torn) is caught by --verify, and the
# job stops with an error instead of training on mixed parameters.
. "$(dirname "$0")/lib.sh"
need_data
if SHOAL_TRAIN_INJECT=torn job "$scratch/torn.log" 2 1 --epochs 1 --iters-per-epoch 20 \
    --verify; then
    cat "$scratch/torn.log"
    bad "a torn write went unnoticed"
else
    grep -q "TORN PARAMETERS" "$scratch/torn.log" && ok "torn write detected" ||
        { cat "$scratch/torn.log"; bad "job failed without naming the torn write"; }
fi
finish
