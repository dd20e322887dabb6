#!/bin/bash
# Short runs (300 iterations of the MLP, 2 workers, 2 servers) with each
# wire compression: they say how many bytes cross per iteration, and learn
# about as well as fp32 (half width within 1 point, top-k 1% with error
# feedback within 3; these runs are short, docs/PERFORMANCE.md has the
# 10-epoch figures).
. "$(dirname "$0")/lib.sh"
need_data
args="--epochs 2 --iters-per-epoch 150"
declare -A acc bytes=([none]=814120 [fp16]=407060 [bf16]=407060 [topk:0.01]=16288)
for cz in none fp16 bf16 topk:0.01; do
    if job "$scratch/$cz.log" 2 2 $args --compress $cz; then
        acc[$cz]=$(accuracy "$scratch/$cz.log")
        echo "$cz: test accuracy $(awk "BEGIN{print ${acc[$cz]}/100}")%"
    else
        tail -5 "$scratch/$cz.log"
        bad "$cz run failed"
        acc[$cz]=0
    fi
    grep -q "compression $cz: ${bytes[$cz]} bytes pushed" "$scratch/$cz.log" &&
        ok "$cz: ${bytes[$cz]} bytes pushed per worker and iteration" ||
        bad "$cz: no or wrong byte count: $(grep -m1 compression "$scratch/$cz.log")"
done
[ "${acc[none]}" -ge 8000 ] && ok "fp32 >= 80%" || bad "fp32 accuracy ${acc[none]} < 80%"
for cz in fp16 bf16; do
    d=$(( ${acc[none]} - ${acc[$cz]} ))
    [ "$d" -le 100 ] && ok "$cz within 1 point of fp32" || bad "$cz is $d/100 points below fp32"
done
d=$(( ${acc[none]} - ${acc[topk:0.01]} ))
[ "$d" -le 300 ] && ok "topk 1% within 3 points of fp32" || bad "topk 1% is $d/100 points below fp32"
finish
