#!/bin/bash
# faults.sh -- the Python package's fault suite (make check-faults): a
# PyTorch job through shoal (examples/torch/mlp.py, bsp, SGD with momentum
# on the servers, 1 server + 2 workers) survives
#   - worker_kill: a worker killed (-9) at a seeded point and started again
#     with the same rank: it rejoins where the job is and the job finishes;
#   - server_kill: the server killed (-9) after a seeded checkpoint and
#     restarted with resume: the workers reconnect, go back to the
#     checkpoint's iteration and redo what was lost; the final model equals
#     an undisturbed run's bit for bit (nothing lost, nothing applied twice).
# Each run must finish with every process exiting 0, reach the accuracy bar
# (SHOAL_TORCH_FAULT_BAR, default 82.00%; undisturbed: 86.0% here), and its
# (last) server must print "applied N gradients, each once; dropped D".
# For each fault the log gives the time to detect it and to recover.
#   tests/torch/faults.sh [SCENARIO...]   (worker_kill server_kill; default both)
# SHOAL_FAULT_SEED (42) picks the points struck; SHOAL_FAULT_LIMIT (400)
# bounds each scenario in seconds (a watchdog kills what is left).
. "$(dirname "$0")/lib.sh"
need_torch
need_data
seed=${SHOAL_FAULT_SEED:-42}
bar=${SHOAL_TORCH_FAULT_BAR:-8200}
limit=${SHOAL_FAULT_LIMIT:-400}
RANDOM=$seed
ck=50   # updates between the server's checkpoints
args="$examples/mlp.py --mode bsp --epochs 3 --iters-per-epoch 250 --eval-every 0 --data $data"

# pick VAR LO HI: VAR = a seeded number in [LO, HI).  (Not $(...): bash
# reseeds RANDOM in a subshell, and the point would not be the seed's.)
pick() { printf -v "$1" %d $(( $2 + RANDOM % ($3 - $2) )); }
exec {napfd}<> <(:)
nap() { read -rt "$1" -u "$napfd" || :; }
# wait_update LOG N SECONDS: until the server's checkpoint at an update >= N.
wait_update() {
    local end=$((SECONDS + $3))
    while [ $SECONDS -lt $end ]; do
        awk -v n="$2" '/checkpoint at update/ { if ($7 + 0 >= n) f = 1 } END { exit !f }' \
            "$1" 2>/dev/null && return 0
        nap 0.1
    done
    echo "timed out waiting for a checkpoint at update >= $2 in $1" >&2
    return 1
}

# rank R LOG [VAR=VALUE...]: start rank R of the 3-rank job in the
# background (exec: $! is the Python process itself, so kill -9 strikes
# it); sets $last_pid.
rank() {
    local r=$1 log=$2; shift 2
    (export SHOAL_RANK=$r SHOAL_SIZE=3 SHOAL_LOCAL_RANK=$r SHOAL_LOCAL_SIZE=3 SHOAL_SERVERS=1 \
        SHOAL_RENDEZVOUS=$dir/rdv SHOAL_PS_FAIL_TIMEOUT=2000 SHOAL_PS_REJOIN_TIMEOUT=30000 \
        SHOAL_PS_RECONNECT_TIMEOUT=60000 SHOAL_PS_IDLE_TIMEOUT=90000 \
        SHOAL_PS_CHECKPOINT_DIR=$dir/ck SHOAL_PS_CHECKPOINT_EVERY=$ck "$@"
     exec "$py" $args $save >>"$log" 2>&1) &
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
# The logs are not time-stamped: the suite polls them for the lines that
# mark detection and recovery, and takes the time when it sees them.
t_now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
# until_line LOG REGEX SECONDS: wait for the line; prints when it came.
until_line() {
    local end=$((SECONDS + $3))
    while [ $SECONDS -lt $end ]; do
        grep -Eq -- "$2" "$1" 2>/dev/null && { t_now; return 0; }
        nap 0.05
    done
    echo "-"
    return 1
}

new_dir() { dir=$scratch/$1; mkdir -p "$dir/ck"; save=""; }

judge() { # NAME SERVER_LOG
    local name=$1 a
    a=$(accuracy "$dir/w0.log")
    if [ -z "$a" ]; then tail -n 5 "$dir"/*.log; bad "$name: no final accuracy"; return; fi
    [ "$a" -ge "$bar" ] && ok "$name: final accuracy $(awk "BEGIN{print $a/100}")%" ||
        bad "$name: final accuracy $(awk "BEGIN{print $a/100}")% is below $(awk "BEGIN{print $bar/100}")%"
    if grep -q "applied [0-9]* gradients, each once; dropped [0-9]*" "$2"; then
        ok "$name: $(grep -o 'applied [0-9]* gradients, each once; dropped [0-9]* [a-z ]*' "$2")"
    else
        tail -n 5 "$2"; bad "$name: the server did not print its account"
    fi
    grep -h "lost worker\|lost server\|rejoined\|reconnected\|did not rejoin\|resumed from\|starting at iteration" \
        "$dir"/*.log | sed 's/^/    /' | head -12
}

worker_kill() {
    local name="kill -9 a PyTorch worker, restart it with the same rank (bsp)"
    new_dir worker
    rank 0 "$dir/s0.log"; local s=$last_pid
    rank 1 "$dir/w0.log"; local w0=$last_pid
    rank 2 "$dir/w1.log"; local w1=$last_pid
    local at; pick at 2 10
    wait_update "$dir/s0.log" $((at * ck)) 240 || { bad "$name: no start"; kill -9 $s $w0 $w1; return; }
    kill -9 $w1; wait $w1 2>/dev/null
    local t_kill; t_kill=$(t_now)
    echo "    killed worker 1 (pid $w1) after update $((at * ck))"
    nap 0.5
    rank 2 "$dir/w1b.log"; w1=$last_pid
    local t_lost t_back
    t_lost=$(until_line "$dir/s0.log" "lost worker 1" 60)
    t_back=$(until_line "$dir/s0.log" "worker 1 rejoined" 120)
    if wait_all $s $w0 $w1; then judge "$name" "$dir/s0.log"; else
        tail -n 5 "$dir"/*.log; bad "$name: a process failed"; return; fi
    [ "$t_lost" != - ] && ok "$name: the server saw worker 1 lost" || bad "$name: no 'lost worker 1'"
    [ "$t_back" != - ] && ok "$name: worker 1 rejoined" || bad "$name: worker 1 did not rejoin"
    # The restarted process starts where the job is, as the server says.
    local k ks
    k=$(sed -n 's/^worker 1: starting at iteration \([0-9]*\) .*/\1/p' "$dir/w1b.log" | head -1)
    ks=$(sed -n 's/.*worker 1 rejoined (.*continues at \([0-9]*\)).*/\1/p' "$dir/s0.log" | head -1)
    [ -n "$k" ] && [ "$k" -gt 0 ] && [ "$k" = "$ks" ] &&
        ok "$name: the restarted worker went on at iteration $k, where the server said" ||
        bad "$name: the restarted worker started at iteration '$k', the server said '$ks'"
    echo "    time to detect: $( [ "$t_lost" != - ] && secs "$t_kill" "$t_lost" || echo -) s," \
         "time to rejoin: $( [ "$t_back" != - ] && secs "$t_kill" "$t_back" || echo -) s (from the kill;" \
         "the restart includes starting Python and importing torch)"
}

server_kill() {
    local name="kill -9 the server, restart it with resume (bsp)"
    new_dir server
    save="--save $dir/model.pt"
    rank 0 "$dir/s0.log"; local s=$last_pid
    rank 1 "$dir/w0.log"; local w0=$last_pid
    save=""
    rank 2 "$dir/w1.log"; local w1=$last_pid
    local at; pick at 3 10
    wait_update "$dir/s0.log" $((at * ck)) 240 || { bad "$name: no start"; kill -9 $s $w0 $w1; return; }
    kill -9 $s; wait $s 2>/dev/null
    local t_kill; t_kill=$(t_now)
    local was; was=$(awk '/checkpoint at update/ { c = $7 } END { print c }' "$dir/s0.log")
    echo "    killed the server after its checkpoint at update $was"
    nap 1
    rank 0 "$dir/s0b.log" SHOAL_PS_RESUME=1; s=$last_pid
    local t_back
    t_back=$(until_line "$dir/w1.log" "reconnected after" 120)
    if wait_all $s $w0 $w1; then judge "$name" "$dir/s0b.log"; else
        tail -n 5 "$dir"/*.log; bad "$name: a process failed"; return; fi
    grep -q "resumed from .*(update $was," "$dir/s0b.log" &&
        ok "$name: the server resumed from its checkpoint at update $was" ||
        { grep resumed "$dir/s0b.log"; bad "$name: did not resume from update $was"; }
    local n; n=$(cat "$dir"/w*.log | grep -c "reconnected after .*continuing at iteration $was ")
    [ "$n" = 2 ] && ok "$name: both workers went back to iteration $was and went on" ||
        { grep -h "reconnected" "$dir"/w*.log; bad "$name: $n of 2 workers continued at iteration $was"; }
    echo "    time to recover: $( [ "$t_back" != - ] && secs "$t_kill" "$t_back" || echo -) s" \
         "(from the kill; the server restarted 1 s after it, Python and torch included)"
    # Undisturbed, the same job ends at the same parameters, bit for bit.
    local ref=$dir/model.pt
    new_dir server-ref
    save="--save $dir/ref.pt"
    rank 0 "$dir/s0.log"; s=$last_pid
    rank 1 "$dir/w0.log"; w0=$last_pid
    save=""
    rank 2 "$dir/w1.log"; w1=$last_pid
    wait_all $s $w0 $w1 || { tail -n 5 "$dir"/*.log; bad "$name: the undisturbed run failed"; return; }
    echo "    undisturbed: final test accuracy $(sed -n 's/^final test accuracy: //p' "$dir/w0.log")"
    check "$name: final model = undisturbed run (no update lost or doubled)" \
        "$py" -c 'import sys, torch
a, b = torch.load(sys.argv[1]), torch.load(sys.argv[2])
sys.exit(not (a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)))' "$ref" "$dir/ref.pt"
}

for sc in ${*:-worker_kill server_kill}; do
    echo "== $sc"
    t0=$SECONDS
    watchdog
    $sc
    echo "   ($((SECONDS - t0)) s)"
done
pkill -P "$dog" 2>/dev/null; kill "$dog" 2>/dev/null
finish
