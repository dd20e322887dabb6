#!/bin/bash
# faults-pipe.sh -- the fault suite of hybrid jobs (make check-faults): 2
# replicas x 2 stages of MLP-256 (784-256 | 256-10), 1 server, 4 workers,
# a stage worker killed (-9) at a seeded point and restarted with its rank
# after SHOAL_FAULT_GAP seconds:
#   stage_kill:MODE:REPLICA:STAGE
# Each run must finish with every process at status 0 and show
#   - the stage's neighbour lost it and the replica's chain started over
#     (a new generation), the restarted stage rejoined its PS group;
#   - bsp: the job waited for it (the reporting replica made at most 2
#     iterations while the stage was down: every round needs every live
#     replica); async: the other replica went on; ssp: it went on at most
#     to --staleness iterations past the stuck replica (often it is there
#     already, and waits at once: the stuck replica's other stage is alive
#     and does not advance);
#   - every group's server applied exactly 2 x the job's iterations
#     gradients (each replica's gradient of each iteration once: nothing
#     applied twice, nothing lost);
#   - the final accuracy at least the bar (bsp SHOAL_FAULT_BAR, default
#     85%; async/ssp SHOAL_FAULT_BAR_ASYNC, 84%; 3 epochs undisturbed reach
#     about 86.5% bsp here).
# For each fault the log gives the time to detect it and to recover.
# And server_kill: the server killed after a checkpoint and restarted
# with --resume (bsp): every stage goes back to the checkpoint's iteration
# together, every group applies each gradient once, and the final model
# (--save, gathered along the pipeline) is an undisturbed run's, bit for
# bit.  (A stage checks with the servers before it offers its iteration
# to a new chain generation or skips a push: shoal_ps_refresh.)
# And one long run without a fault, "accuracy": 2 replicas x 2 stages,
# MLP-256, 10 epochs, bsp, so the global batches of faults.sh's 2-worker
# runs (88.6% data parallel): at least 88.0% (SHOAL_PIPE_ACC_BAR).  (One
# replica, batch 64: 87.82%.)
#   tests/trainer/faults-pipe.sh [SCENARIO...]     (default: all below)
# Environment, as faults.sh: SHOAL_FAULT_ARGS (more shoal-train options),
# SHOAL_FAULT_EPOCHS (3), SHOAL_FAULT_SEED, SHOAL_FAULT_GAP (seconds the
# stage stays down, 2), SHOAL_FAULT_POLL (0.05), SHOAL_FAULT_LIMIT (400 s a
# scenario).  tests/trainer/faults-vm.sh runs a scenario on verbs in the
# soft-RoCE VM ("pipe:stage_kill:bsp:1:0").
. "$(dirname "$0")/lib.sh"
need_data
seed=${SHOAL_FAULT_SEED:-42}
bar_bsp=${SHOAL_FAULT_BAR:-8500}
bar_async=${SHOAL_FAULT_BAR_ASYNC:-8400}
epochs=${SHOAL_FAULT_EPOCHS:-3}
gap=${SHOAL_FAULT_GAP:-2}
poll=${SHOAL_FAULT_POLL:-0.05}
limit=${SHOAL_FAULT_LIMIT:-400}
staleness=2
RANDOM=$seed
common="--data $data --epochs $epochs --stages 2 --micro-batches 4 --fail-timeout 2000
        --rejoin-timeout 6000 --reconnect-timeout 60000 --idle-timeout 60000
        --log-interval 0.2 ${SHOAL_FAULT_ARGS:-}"

exec {napfd}<> <(:)
nap() { read -rt "$1" -u "$napfd" || :; }

# The reporting stage (replica 0, last stage) prints "epoch e/E  iter t/T";
# its progress as one number, from whichever of its logs is newest.
progress() {
    cat "$dir"/w1.log "$dir"/w1b.log 2>/dev/null |
        sed -n 's|^epoch \([0-9]*\)/[0-9]*  iter \([0-9]*\)/\([0-9]*\) .*|\1 \2 \3|p' | tail -1 |
        awk '{ print ($1 - 1) * $3 + $2 }'
}
iters_per_epoch() {
    sed -n 's/.* \([0-9]*\) iterations per epoch.*/\1/p' "$dir"/w1.log | head -1
}

clock_start() {
    ( exec </dev/null 2>/dev/null
      tail -n +1 -s 0.1 -F "$dir"/{s0,w0,w1,w2,w3,w0b,w1b,w2b,w3b}.log |
          while IFS= read -r l; do printf '%s %s\n' "$EPOCHREALTIME" "$l"; done
    ) >"$dir/events" &
    clock=$!
}
clock_stop() {
    [ -n "${clock:-}" ] || return 0
    pkill -P "$clock" 2>/dev/null; kill "$clock" 2>/dev/null; wait "$clock" 2>/dev/null
    clock=
}
since() {
    awk -v t="$1" -v re="$2" '
        $1 >= t && $0 ~ re { printf "%.2f", $1 - t; f = 1; exit }
        END { if (!f) printf "-" }' "$dir/events"
}

# rank R LOG [args]: one rank in the background (exec: $! is the trainer).
rank() {
    local r=$1 log=$2; shift 2
    (SHOAL_RANK=$r SHOAL_SIZE=5 SHOAL_LOCAL_RANK=$r SHOAL_LOCAL_SIZE=5 \
     SHOAL_RENDEZVOUS=$dir/rdv exec "$train" $common "$@" >>"$log" 2>&1) &
    last_pid=$!
    echo $last_pid >>"$scratch/pids"
}
watchdog() {
    : >"$scratch/pids"
    [ -n "${dog:-}" ] && { pkill -P "$dog" 2>/dev/null; kill "$dog" 2>/dev/null; }
    ( exec >/dev/null 2>&1 </dev/null
      sleep "$limit" && xargs -r kill -9 <"$scratch/pids" ) &
    dog=$!
}
wait_all() {
    local st=0 p
    for p in "$@"; do wait "$p" || st=1; done
    return $st
}

# The accounts and the accuracy of a finished run.
judge() {
    local name=$1 bar=$2 a total
    a=$(cat "$dir"/w1.log "$dir"/w1b.log 2>/dev/null |
        sed -n 's/^final test accuracy: \([0-9.]*\)%.*/\1/p' | tail -1 | awk '{printf "%d", $1 * 100}')
    if [ -z "$a" ]; then
        tail -n 5 "$dir"/*.log; bad "$name: no final accuracy"; return
    fi
    [ "$a" -ge "$bar" ] && ok "$name: final accuracy $(awk "BEGIN{print $a/100}")%" ||
        bad "$name: final accuracy $(awk "BEGIN{print $a/100}")% is below $(awk "BEGIN{print $bar/100}")%"
    total=$(( $(iters_per_epoch) * epochs * 2 ))
    for g in 0 1; do
        if grep -q "group $g: applied $total gradients, each once" "$dir/s0.log"; then
            ok "$name: group $g applied $total gradients (2 replicas x $((total / 2)) iterations), each once"
        else
            grep "applied" "$dir/s0.log"
            bad "$name: group $g should have applied exactly $total gradients"
        fi
    done
}

new_dir() {
    clock_stop
    dir=$scratch/$1
    mkdir -p "$dir"
    clock_start
}

stage_kill() { # MODE REPLICA STAGE
    local mode=$1 rep=$2 stg=$3 name="kill -9 replica $2's stage $3 ($1)"
    local w=$((rep * 2 + stg)) bar=$bar_bsp
    [ "$mode" = bsp ] || bar=$bar_async
    new_dir "kill-$mode-$rep-$stg"
    local extra="--mode $mode --staleness $staleness" pids=() p
    rank 0 "$dir/s0.log" $extra; pids+=($last_pid)
    for i in 0 1 2 3; do rank $((i + 1)) "$dir/w$i.log" $extra; pids+=($last_pid); done
    local victim=${pids[$((w + 1))]}
    local end=$((SECONDS + 120)) ipe
    until ipe=$(iters_per_epoch) && [ -n "$ipe" ]; do
        [ $SECONDS -gt $end ] && { bad "$name: no start"; kill -9 "${pids[@]}"; return; }
        nap "$poll"
    done
    local total=$((ipe * epochs)) at
    at=$(( total / 5 + RANDOM % (total * 2 / 5) ))
    until [ "$(progress)" -ge "$at" ] 2>/dev/null; do
        kill -0 "$victim" 2>/dev/null || break
        [ $SECONDS -gt $((end + limit)) ] && break
        nap "$poll"
    done
    kill -9 "$victim" 2>/dev/null
    local t_kill=$EPOCHREALTIME it0 it1
    it0=$(progress)
    wait "$victim" 2>/dev/null
    echo "    killed worker $w (replica $rep, stage $stg) at iteration $it0 of $total"
    nap "$gap"
    it1=$(progress)
    rank $((w + 1)) "$dir/w${w}b.log" $extra; pids[$((w + 1))]=$last_pid
    echo "    restarted it $gap s later; meanwhile the reporting replica went from iteration $it0 to $it1"
    if wait_all "${pids[@]}"; then judge "$name" "$bar"; else tail -n 5 "$dir"/*.log; bad "$name: a process failed"; return; fi
    local nb=$((stg == 0 ? w + 1 : w - 1)) gone=$((it1 - it0))
    grep -q "worker $nb: lost the stage" "$dir/w$nb.log" &&
        ok "$name: its neighbour (worker $nb) lost it and the chain started over" ||
        bad "$name: worker $nb never reported the lost stage"
    grep -q "generation [0-9]* of the chain: step" "$dir/w${w}b.log" &&
        ok "$name: the restarted stage joined its replica's chain" ||
        bad "$name: the restarted stage never joined its chain"
    grep -q "group $stg: worker $rep rejoined" "$dir/s0.log" &&
        ok "$name: it rejoined PS group $stg with the group's current parameters" ||
        bad "$name: no rejoin in group $stg"
    case $mode in
    bsp)
        [ "$gone" -le 2 ] && ok "$name: the job waited for it ($gone iteration(s) while it was down)" ||
            bad "$name: bsp went $gone iterations on without a stage" ;;
    async)
        if [ "$rep" = 0 ]; then :
        elif [ "$gone" -ge 3 ]; then ok "$name: the other replica went on ($gone iterations while it was down)"
        else bad "$name: the other replica stood still ($gone iterations)"; fi ;;
    ssp)
        if [ "$rep" = 0 ]; then :
        elif [ "$gone" -le $((staleness + 2)) ]; then
            ok "$name: the other replica went on only to the staleness bound ($gone iterations, staleness $staleness)"
        else bad "$name: ssp went $gone iterations on (staleness $staleness)"; fi ;;
    esac
    grep -h "lost the stage\|generation\|rejoined\|lost worker" "$dir"/*.log | sed 's/^/    /' | head -8
    echo "    time to detect: $(since "$t_kill" "worker $nb: lost the stage") s, time to" \
         "recover: $(since "$t_kill" "worker $w: generation [0-9]* of the chain") s (from the" \
         "kill; the restart came $gap s after it)"
}

server_kill() {
    local name="kill -9 the server, restart with --resume (bsp, 2 x 2 stages)" pids=() i
    new_dir server
    local cks="--checkpoint-dir $dir/ck --checkpoint-every 100"
    mkdir -p "$dir/ck"
    rank 0 "$dir/s0.log" $cks; pids+=($last_pid)
    for i in 0 1 2 3; do rank $((i + 1)) "$dir/w$i.log" --save "$dir/model.bin"; pids+=($last_pid); done
    local at=$(( 2 + RANDOM % 8 )) end=$((SECONDS + 200))
    until grep -q "checkpoint at update ${at}00 " "$dir/s0.log" 2>/dev/null; do
        [ $SECONDS -gt $end ] && { bad "$name: no checkpoint at update ${at}00"; kill -9 "${pids[@]}"; return; }
        nap "$poll"
    done
    kill -9 "${pids[0]}"; wait "${pids[0]}" 2>/dev/null
    echo "    killed the server after its checkpoint at update ${at}00"
    nap 1
    rank 0 "$dir/s0b.log" $cks --resume; pids[0]=$last_pid
    if ! wait_all "${pids[@]}"; then tail -n 5 "$dir"/*.log; bad "$name: a process failed"; return; fi
    cat "$dir/s0b.log" >>"$dir/s0.log"
    judge "$name" "$bar_bsp"
    grep -q "resumed from" "$dir/s0b.log" && ok "$name: resumed from a checkpoint" ||
        bad "$name: did not resume"
    # every stage's handle reconnected at the update the server resumed
    # from (the checkpoint of ${at}00, or a newer one written before the
    # kill landed), and its chain ran that step again
    local n=0 f u
    u=$(sed -n 's/.*resumed from .*(update \([0-9]*\),.*/\1/p' "$dir/s0b.log" | head -1)
    for f in "$dir"/w?.log; do
        grep -q "continuing at iteration ${u:-none} " "$f" &&
            grep -q "generation [0-9]* of the chain: step ${u:-none} next" "$f" && n=$((n + 1))
    done
    [ "$n" = 4 ] && ok "$name: every stage went back to the checkpoint's iteration ($u)" ||
        bad "$name: $n of 4 stages went back to the iteration the server resumed at (${u:-none})"
    new_dir server-ref
    pids=()
    rank 0 "$dir/s0.log"; pids+=($last_pid)
    for i in 0 1 2 3; do rank $((i + 1)) "$dir/w$i.log" --save "$dir/ref.bin"; pids+=($last_pid); done
    wait_all "${pids[@]}" || bad "$name: the undisturbed run failed"
    check "$name: final model = undisturbed run (no update lost or doubled)" \
        "$train" --compare "$scratch/server/model.bin" "$dir/ref.bin" --tolerance 0
}

undisturbed() { # MODE
    local mode=${1:-bsp} name="undisturbed ($1)" bar=$bar_bsp pids=()
    [ "$mode" = bsp ] || bar=$bar_async
    new_dir "undisturbed-$mode"
    rank 0 "$dir/s0.log" --mode $mode --staleness $staleness; pids+=($last_pid)
    for i in 0 1 2 3; do rank $((i + 1)) "$dir/w$i.log" --mode $mode --staleness $staleness; pids+=($last_pid); done
    if wait_all "${pids[@]}"; then judge "$name" "$bar"; else tail -n 5 "$dir"/*.log; bad "$name: a process failed"; fi
}

# 2 replicas of 2 stages, 10 epochs: the accuracy of MLP-256.
accuracy() {
    local name="2 replicas x 2 stages, MLP-256, 10 epochs (bsp)" bar=${SHOAL_PIPE_ACC_BAR:-8800} a
    new_dir accuracy
    if timeout "$limit" "$run" -n 4 -s 1 --timeout $((limit - 10)) -- "$train" --data "$data" \
        -q --epochs 10 --stages 2 --micro-batches 4 >"$dir/w1.log" 2>&1; then
        a=$(accuracy_of "$dir/w1.log")
        [ "${a:-0}" -ge "$bar" ] && ok "$name: $(awk "BEGIN{print $a/100}")%" ||
            bad "$name: ${a:-no} accuracy, below $(awk "BEGIN{print $bar/100}")%"
        grep "^epoch .* done\|busy time" "$dir/w1.log" | tail -3 | sed 's/^/    /'
    else
        tail -5 "$dir/w1.log"; bad "$name: the job failed"
    fi
}
accuracy_of() {
    sed -n 's/^final test accuracy: \([0-9.]*\)%.*/\1/p' "$1" | tail -1 | awk '{printf "%d", $1 * 100}'
}

all="stage_kill:bsp:1:0 stage_kill:bsp:0:1 stage_kill:async:1:1 stage_kill:ssp:1:0 server_kill
     accuracy"
for sc in ${*:-$all}; do
    IFS=: read -r fn a b c <<<"$sc"
    echo "== $fn $a $b $c"
    t0=$SECONDS
    watchdog
    $fn $a $b $c
    clock_stop
    echo "   ($((SECONDS - t0)) s)"
done
pkill -P "$dog" 2>/dev/null; kill "$dog" 2>/dev/null
finish
