#!/bin/bash
# BSP with W workers must end where single-process SGD on the same global
# batches ends (within float rounding), whatever the number of servers;
# every parameter delivery is checked (--verify) on the way; co-located
# servers give the same model.
. "$(dirname "$0")/lib.sh"
need_data
args="--epochs 2 --iters-per-epoch 30 --seed 7"
job "$scratch/s2.log" 2 2 $args --verify --save "$scratch/s2.mdl" ||
    { cat "$scratch/s2.log"; bad "BSP, 2 workers, 2 servers, --verify"; finish; }
ok "BSP, 2 workers, 2 servers, --verify"
job "$scratch/s1.log" 2 1 $args --save "$scratch/s1.mdl" ||
    { cat "$scratch/s1.log"; bad "BSP, 2 workers, 1 server"; finish; }
"$train" --single --workers 2 --data "$data" -q $args --save "$scratch/single.mdl" \
    >"$scratch/single.log" 2>&1 || { cat "$scratch/single.log"; bad "--single"; finish; }
# Summation order differs (two 64-row gradients averaged vs one 128-row
# gradient): allow rounding, nothing more.
check "BSP (2 servers) = single-process SGD within 1e-5" \
    "$train" --compare "$scratch/s2.mdl" "$scratch/single.mdl" --tolerance 1e-5
# Co-located servers (every worker serves a shard in a thread of its own)
# are the same job laid out otherwise: bit for bit the same model.
job "$scratch/co.log" 2 colocated $args --save "$scratch/co.mdl" ||
    { cat "$scratch/co.log"; bad "BSP, 2 workers, co-located servers"; finish; }
check "co-located servers = 2 server processes, bit for bit" \
    "$train" --compare "$scratch/co.mdl" "$scratch/s2.mdl" --tolerance 0
# --overlap pushes each layer's gradient from inside backward (early
# pieces without an immediate, the rest with it): the same model bit for
# bit, with separate and co-located servers, fp32 and fp16 on the wire.
deep="$args --hidden 256,128,64"
job "$scratch/d2.log" 2 2 $deep --save "$scratch/d2.mdl" &&
job "$scratch/d2o.log" 2 2 $deep --overlap --save "$scratch/d2o.mdl" &&
job "$scratch/dco.log" 2 colocated $deep --overlap --save "$scratch/dco.mdl" ||
    { tail -20 "$scratch"/d*.log; bad "3 hidden layers with --overlap"; finish; }
pct=$(sed -n 's/^overlap: \([0-9.]*\)% .*/\1/p' "$scratch/d2o.log" | head -1)
awk -v p="${pct:-0}" 'BEGIN { exit !(p > 10) }' &&
    ok "--overlap sent ${pct}% of the gradient during backward" ||
    bad "--overlap sent ${pct:-no}% of the gradient during backward (expected > 10)"
check "--overlap = without, 2 servers, bit for bit" \
    "$train" --compare "$scratch/d2o.mdl" "$scratch/d2.mdl" --tolerance 0
check "--overlap co-located = without, bit for bit" \
    "$train" --compare "$scratch/dco.mdl" "$scratch/d2.mdl" --tolerance 0
job "$scratch/h2.log" 2 2 $deep --compress fp16 --save "$scratch/h2.mdl" &&
job "$scratch/hco.log" 2 colocated $deep --compress fp16 --overlap --save "$scratch/hco.mdl" ||
    { tail -20 "$scratch"/h*.log; bad "fp16 with --overlap"; finish; }
check "--overlap co-located fp16 = fp16 without, bit for bit" \
    "$train" --compare "$scratch/hco.mdl" "$scratch/h2.mdl" --tolerance 0
# The server count only moves shard boundaries: bit for bit the same.
check "1 server = 2 servers, bit for bit" \
    "$train" --compare "$scratch/s1.mdl" "$scratch/s2.mdl" --tolerance 0
# ... and a different seed is not (the comparison can fail).
"$train" --single --workers 2 --data "$data" -q --epochs 2 --iters-per-epoch 30 --seed 8 \
    --save "$scratch/other.mdl" >/dev/null 2>&1
if "$train" --compare "$scratch/s2.mdl" "$scratch/other.mdl" --tolerance 1e-5 >/dev/null; then
    bad "a different seed compares equal"
else
    ok "a different seed differs"
fi
finish
