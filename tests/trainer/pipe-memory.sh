#!/bin/bash
# Memory of a pipeline stage: on a wide model (--hidden 4096,4096,4096,
# 36.8 M parameters) each of 2 stages holds only its own layers'
# parameters, gradients and activations.  Each worker prints its parameter
# count and peak memory; the counts must add up to the whole model, each
# stage's be at most 55% of it (the best split: 20.0 M | 16.8 M), and each
# stage's peak at most 65% of a data-parallel worker's on the same model.
# A few iterations on a slice of the data (the memory is the point).
. "$(dirname "$0")/lib.sh"
need_data
data_slice "$scratch/data" 1280 256 || { echo "cannot cut a slice of $data" >&2; exit 99; }
# (--fail-timeout 30000: the servers' first read of a worker's 147 MB of
# parameters, and a round, can take longer than the default 2 s on a
# loaded machine; the job would then look for a lost server.)
args="--data $scratch/data -q --hidden 4096,4096,4096 --epochs 1 --iters-per-epoch 2
      --fail-timeout 30000"
whole=$(( 784 * 4096 + 4096 + 2 * (4096 * 4096 + 4096) + 4096 * 10 + 10 ))
if ! timeout 300 "$run" -n 1 -s 1 --timeout 280 -- "$train" $args >"$scratch/dp.log" 2>&1; then
    cat "$scratch/dp.log"; bad "data parallel, 1 worker: the job failed"; finish
fi
if ! timeout 300 "$run" -n 2 -s 1 --timeout 280 -- "$train" $args --stages 2 \
    >"$scratch/pp.log" 2>&1; then
    cat "$scratch/pp.log"; bad "2 stages: the job failed"; finish
fi
dp_peak=$(sed -n 's/.*worker 0: peak memory \([0-9]*\) MB.*/\1/p' "$scratch/dp.log")
grep "peak memory" "$scratch/dp.log" "$scratch/pp.log" | sed 's/^[^:]*: */    /'
sum=0
for s in 0 1; do
    line=$(grep "(replica 0, stage $s): peak memory" "$scratch/pp.log")
    n=$(sed -n 's/.*parameters and gradient [0-9.]* MB (\([0-9]*\) parameters).*/\1/p' <<<"$line")
    peak=$(sed -n 's/.*peak memory \([0-9]*\) MB.*/\1/p' <<<"$line")
    mb=$(sed -n 's/.*parameters and gradient \([0-9.]*\) MB.*/\1/p' <<<"$line")
    if [ -z "$n" ] || [ -z "$peak" ] || [ -z "$dp_peak" ]; then
        bad "stage $s: no memory line"; continue
    fi
    sum=$((sum + n))
    [ $((n * 100)) -le $((whole * 55)) ] &&
        ok "stage $s holds $n of $whole parameters ($((n * 100 / whole))%), $mb MB with its gradient" ||
        bad "stage $s holds $n of $whole parameters: more than 55%"
    awk -v m="$mb" -v n="$n" 'BEGIN { exit !(m * 1e6 >= n * 8 * 0.99 && m * 1e6 <= n * 8 * 1.01) }' &&
        ok "stage $s: its parameters and gradient take 8 bytes a parameter ($mb MB)" ||
        bad "stage $s: $mb MB of parameters and gradient for $n parameters"
    [ $((peak * 100)) -le $((dp_peak * 65)) ] &&
        ok "stage $s: peak memory $peak MB, $((peak * 100 / dp_peak))% of a data-parallel worker's $dp_peak MB" ||
        bad "stage $s: peak memory $peak MB is more than 65% of a data-parallel worker's $dp_peak MB"
done
[ "$sum" = "$whole" ] && ok "the stages' parameters add up to the whole model ($whole)" ||
    bad "the stages hold $sum parameters, the model has $whole"
finish
