#!/bin/bash
# Short runs (300 iterations of the MLP) in each consistency mode reach a
# test accuracy that only learning gives, and async/SSP stay near BSP.
. "$(dirname "$0")/lib.sh"
need_data
args="--epochs 2 --iters-per-epoch 150"
declare -A acc
for mode in bsp async ssp; do
    extra=""
    [ $mode = ssp ] && extra="--staleness 1"
    if job "$scratch/$mode.log" 2 1 $args --mode $mode $extra; then
        acc[$mode]=$(accuracy "$scratch/$mode.log")
        echo "$mode: test accuracy $(awk "BEGIN{print ${acc[$mode]}/100}")%"
    else
        cat "$scratch/$mode.log"
        bad "$mode run failed"
        acc[$mode]=0
    fi
done
[ "${acc[bsp]}" -ge 8000 ] && ok "bsp >= 80%" || bad "bsp accuracy ${acc[bsp]} < 80%"
for mode in async ssp; do
    d=$(( ${acc[bsp]} - ${acc[$mode]} ))
    [ "$d" -le 300 ] && ok "$mode within 3 points of bsp" ||
        bad "$mode is $d/100 points below bsp"
done
finish
