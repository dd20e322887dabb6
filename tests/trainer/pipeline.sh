#!/bin/bash
# Pipeline and hybrid parallelism (--stages): bad layouts are refused up
# front with the problem named; BSP with K stages x D replicas ends where
# single-process SGD on the same global batches ends (K = 2 and 3, D = 1
# and 2), with every gradient applied once per group; async and ssp
# replicas learn; the start and progress lines show the layout and
# --metrics gains each stage's busy share.
. "$(dirname "$0")/lib.sh"
need_data

# refused STATUS PATTERN ARGS...: a job of shoal-run -n W with ARGS must
# stop at once (every rank, before any data or network) with PATTERN.
refused() {
    local w=$1 pat=$2; shift 2
    local out rc t0=$SECONDS
    out=$(timeout 60 "$run" -n "$w" -s 1 --timeout 50 -- "$train" --data "$data" -q "$@" 2>&1)
    rc=$?
    if [ $rc = 2 ] && grep -q -- "$pat" <<<"$out" && [ $((SECONDS - t0)) -lt 10 ]; then
        ok "refused: $(grep -m1 -- "$pat" <<<"$out" | sed 's/^shoal-train: //')"
    else
        echo "$out" | tail -5
        bad "expected exit 2 and '$pat' at once, got exit $rc after $((SECONDS - t0)) s"
    fi
}
refused 3 "3 workers cannot form replicas of a 2-stage pipeline" --stages 2
refused 2 "\-\-stages 3, but the model has only 2 layers" --stages 3 --hidden 256
refused 2 "\-\-micro-batches 5 does not divide the batch of 64" --stages 2 --micro-batches 5
refused 2 "\-\-micro-batches cuts a pipeline's batch" --micro-batches 4
out=$("$train" --single --workers 3 --stages 2 --data "$data" 2>&1)
[ $? = 2 ] && grep -q "multiple of --stages" <<<"$out" && ok "--single refuses it too" ||
    bad "--single --workers 3 --stages 2: $out"

args="--epochs 2 --iters-per-epoch 30 --seed 7"
# hybrid K D HIDDEN SERVERS: BSP = single-process SGD within rounding.
hybrid() {
    local K=$1 D=$2 hid=$3 S=$4 name="bsp, $2 replica(s) x $1 stages (--hidden $3)"
    local W=$((K * D)) log=$scratch/p$K$D.log
    if ! job "$log" "$W" "$S" $args --hidden "$hid" --stages "$K" --micro-batches 4 \
        --save "$scratch/p$K$D.mdl"; then
        cat "$log"; bad "$name: the job failed"; return
    fi
    "$train" --single --workers "$W" --stages "$K" --data "$data" -q $args --hidden "$hid" \
        --save "$scratch/s$K$D.mdl" >"$scratch/s$K$D.log" 2>&1 ||
        { cat "$scratch/s$K$D.log"; bad "$name: --single failed"; return; }
    # Summation order differs (micro-batch gradients summed, replicas
    # averaged, against one gradient of D x 64 rows): rounding only.
    check "$name = single-process SGD within 1e-5" \
        "$train" --compare "$scratch/p$K$D.mdl" "$scratch/s$K$D.mdl" --tolerance 1e-5
    # every stage's group applied each replica's gradient of each iteration once
    local want=$((60 * D)) n
    n=$(grep -c "group [0-9]*: applied $want gradients, each once; dropped 0" "$log")
    [ "$n" = $((K * S)) ] && ok "$name: each of $K groups applied $want gradients on $S server(s)" ||
        { grep "applied" "$log"; bad "$name: expected $K groups x $S servers applying $want"; }
    grep -q "$D replicas\? x $K stages" "$log" && ok "$name: the start line shows the layout" ||
        bad "$name: no layout on the start line"
}
hybrid 2 1 256 1
hybrid 2 2 256 1
hybrid 3 1 256,128 2
hybrid 3 2 256,128 2
# ... and the comparison can fail: a different seed is not the same model.
"$train" --single --workers 2 --data "$data" -q --epochs 2 --iters-per-epoch 30 --seed 8 \
    --save "$scratch/other.mdl" >/dev/null 2>&1
if "$train" --compare "$scratch/p22.mdl" "$scratch/other.mdl" --tolerance 1e-5 >/dev/null; then
    bad "a different seed compares equal"
else
    ok "a different seed differs"
fi

# async and ssp replicas: they learn, and the layout is on the progress line.
for mode in async ssp; do
    log=$scratch/$mode.log
    if job "$log" 4 1 --epochs 1 --iters-per-epoch 150 --stages 2 --mode $mode \
        --staleness 1 --log-interval 0.2 --metrics "$scratch/$mode.csv"; then
        a=$(accuracy "$log")
        [ "${a:-0}" -ge 7500 ] && ok "$mode, 2 replicas x 2 stages: $(awk "BEGIN{print $a/100}")%" ||
            bad "$mode accuracy ${a:-none}"
    else
        cat "$log"; bad "$mode, 2 replicas x 2 stages: the job failed"
    fi
done
# (-q keeps progress lines out of job logs: one run with them)
if timeout 120 "$run" -n 2 -s 1 --timeout 100 -- "$train" --data "$data" --epochs 1 \
    --iters-per-epoch 100 --stages 2 --log-interval 0.1 >"$scratch/lines.log" 2>&1; then
    grep -q "^epoch 1/1  iter .* busy [0-9]*% [0-9]*%  \[784-256-10 bsp, 1 replica x 2 stages (784-256 | 256-10)" \
        "$scratch/lines.log" && ok "the progress line shows the layout and each stage's busy share" ||
        { grep -m3 "^epoch" "$scratch/lines.log"; bad "progress line without the layout"; }
    grep -q "stage busy time over .* stage 0 .* stage 1 .*GPipe ideal M/(M+K-1) = 80%" \
        "$scratch/lines.log" && ok "the busy summary at the end" || bad "no busy summary"
else
    cat "$scratch/lines.log"; bad "the run with progress lines failed"
fi
csv=$scratch/async.csv
if head -1 "$csv" | grep -q ",test_loss,busy_stage0,busy_stage1$" &&
   awk -F, 'NR > 1 && $4 != "" { n++; if ($8 < 0 || $8 > 1 || $9 < 0 || $9 > 1) bad = 1 }
            END { exit !(n > 0 && !bad) }' "$csv"; then
    ok "--metrics: busy_stage0, busy_stage1 columns with shares in [0, 1]"
else
    head -3 "$csv"; bad "--metrics: no per-stage busy columns"
fi
finish
