#!/bin/bash
# faults.sh -- the fault suite (make check-faults): a full training job
# (MLP-256 on Fashion-MNIST, 1 server + 2 workers, 10 epochs) survives
#   - a worker killed (-9) at a seeded point, with and without a restart,
#     in each mode (bsp, async, ssp);
#   - a worker stopped (SIGSTOP) for longer than --fail-timeout, then
#     continued;
#   - the server killed and restarted with --resume (bsp: the final model
#     must equal an undisturbed run's: nothing lost, nothing applied twice);
#   - with 2 and 3 servers, each server killed in turn (the last one in the
#     middle of a checkpoint write) and restarted with --resume: the others
#     roll back to the newest update they all have, and the final model
#     equals an undisturbed run's;
#   - the network cut for less and for more than --fail-timeout (a drop
#     rule in a network namespace of the test's own);
#   - a worker lost for good, its data taken over by the survivor from the
#     next epoch, then restarted and given its place back (reshard).
# Each run must finish, reach the accuracy bar (bsp 87.5%, SHOAL_FAULT_BAR;
# async and ssp 86%, SHOAL_FAULT_BAR_ASYNC: undisturbed they reach about
# 86.5-87% here, short of bsp's 88.6%), and its server must report every
# gradient applied once.  For each fault
# the log gives the time to detect it and to recover.
#   tests/trainer/faults.sh [SCENARIO...]     (default: all)
# Scenarios: worker_kill:MODE:restart|norestart worker_stop server_kill
# servers_kill:S[:MODE] netcut_run:SECS reshard, and undisturbed (not in the default list: the same job
# without a fault, to calibrate the bars).
#
# The transport is the library's choice (SHOAL_TRANSPORT, SHOAL_TRAIN_HOST
# for the address the server listens on); tests/trainer/faults-vm.sh runs
# a subset on verbs in the soft-RoCE VM with shorter jobs, through:
#   SHOAL_FAULT_ARGS       more shoal-train options (later ones win), e.g.
#                          "--iters-per-epoch 100 --hidden 32"
#   SHOAL_FAULT_EPOCHS     epochs (10)
#   SHOAL_FAULT_FAIL_MS    --fail-timeout (2000)
#   SHOAL_FAULT_STOP_SECS  how long worker_stop stops the worker (3.5)
#   SHOAL_FAULT_CK_EVERY   checkpoint period of the kill/stop/cut runs (100);
#                          the points struck scale with it: a worker is
#                          killed after update 3..20 periods, stopped or cut
#                          off after 3, the server killed after a
#                          checkpoint at 2.5..15 periods
#   SHOAL_FAULT_POLL       how often logs are polled, seconds (0.05; a
#                          process start is costly in an emulated VM)
#   SHOAL_FAULT_LIMIT      watchdog per scenario, seconds (400)
. "$(dirname "$0")/lib.sh"
need_data
seed=${SHOAL_FAULT_SEED:-42}
bar_bsp=${SHOAL_FAULT_BAR:-8750}
bar_async=${SHOAL_FAULT_BAR_ASYNC:-8600}
bar=$bar_bsp
epochs=${SHOAL_FAULT_EPOCHS:-10}
fail_ms=${SHOAL_FAULT_FAIL_MS:-2000}
stop_secs=${SHOAL_FAULT_STOP_SECS:-3.5}
ck=${SHOAL_FAULT_CK_EVERY:-100}
poll=${SHOAL_FAULT_POLL:-0.05}
limit=${SHOAL_FAULT_LIMIT:-400}
RANDOM=$seed
common="--data $data --epochs $epochs --fail-timeout $fail_ms --rejoin-timeout 6000
        --reconnect-timeout 60000 --idle-timeout 60000 --log-interval 5 ${SHOAL_FAULT_ARGS:-}"

# A point to strike: after checkpoint/update N, N seeded in [lo, hi).
pick() { echo $(( $1 + RANDOM % ($2 - $1) )); }

# nap SECONDS: sleep without starting a process.
exec {napfd}<> <(:)
nap() { read -rt "$1" -u "$napfd" || :; }

# wait_line FILE REGEX SECONDS
wait_line() {
    local end=$((SECONDS + $3))
    while [ $SECONDS -lt $end ]; do
        grep -q -- "$2" "$1" 2>/dev/null && return 0
        nap "$poll"
    done
    echo "timed out waiting for '$2' in $1" >&2
    return 1
}
# wait_update FILE N SECONDS: until the server's checkpoint at an update >= N.
wait_update() {
    local end=$((SECONDS + $3))
    while [ $SECONDS -lt $end ]; do
        awk -v n="$2" '/checkpoint at update/ { if ($7 + 0 >= n) f = 1 } END { exit !f }' \
            "$1" 2>/dev/null && return 0
        nap "$poll"
    done
    echo "timed out waiting for a checkpoint at update >= $2 in $1" >&2
    return 1
}

# The clock: every log line of a run is stamped as it is written (tail -F
# follows them all), so the time from a fault to its detection and to the
# recovery can be read off.
clock_start() {
    ( exec </dev/null 2>/dev/null
      tail -n +1 -s 0.1 -F "$dir"/{s0,s0b,w0,w1,w1b}.log |
          while IFS= read -r l; do printf '%s %s\n' "$EPOCHREALTIME" "$l"; done
    ) >"$dir/events" &
    clock=$!
}
clock_stop() {
    [ -n "${clock:-}" ] || return 0
    pkill -P "$clock" 2>/dev/null; kill "$clock" 2>/dev/null; wait "$clock" 2>/dev/null
    clock=
}
# since T REGEX [N]: seconds from T to the Nth (default 1st) line matching
# REGEX stamped at or after T; "-" if none.
since() {
    awk -v t="$1" -v re="$2" -v n="${3:-1}" '
        $1 >= t && $0 ~ re && ++k == n { printf "%.2f", $1 - t; f = 1; exit }
        END { if (!f) printf "-" }' "$dir/events"
}
# fault_times T DETECT_REGEX RECOVER_REGEX [N]: the line the suite prints per fault.
fault_times() {
    echo "    time to detect: $(since "$1" "$2") s, time to recover: $(since "$1" "$3" "${4:-1}") s" \
         "(from the fault)"
}

# Start one rank in the background: rank LOG [extra args]; sets $last_pid.
# (exec: $! is the trainer itself, so kill -9 strikes it, not a wrapper;
# the watchdog bounds every scenario instead of timeout(1).  The local
# rank and size tell libshoal's placement that three processes share the
# node, as tools/shoal-run does: without them each would take CPU 0.)
rank() {
    local r=$1 log=$2; shift 2
    (SHOAL_RANK=$r SHOAL_SIZE=${size:-3} SHOAL_LOCAL_RANK=$r SHOAL_LOCAL_SIZE=${size:-3} \
     SHOAL_RENDEZVOUS=$dir/rdv exec "$train" $common "$@" \
        >>"$log" 2>&1) &
    last_pid=$!
    echo $last_pid >>"$scratch/pids"
}
watchdog() {
    : >"$scratch/pids"
    [ -n "${dog:-}" ] && { pkill -P "$dog" 2>/dev/null; kill "$dog" 2>/dev/null; }
    # (Its output closed: a sleeping watchdog must not hold a pipe open.)
    ( exec >/dev/null 2>&1 </dev/null
      sleep "$limit" && xargs -r kill -9 <"$scratch/pids" ) &
    dog=$!
}

# Wait for every pid; all must exit 0.
wait_all() {
    local st=0 p
    for p in "$@"; do wait "$p" || st=1; done
    return $st
}

# Verdict on a finished run: accuracy, nothing applied twice.
judge() {
    local name=$1 a
    a=$(accuracy "$dir/w0.log")
    if [ -z "$a" ]; then
        tail -n 5 "$dir"/*.log; bad "$name: no final accuracy"; return
    fi
    if ! grep -q "applied [0-9]* gradients, each once" "$dir"/s*.log; then
        tail -n 5 "$dir"/s*.log; bad "$name: the server did not finish its account"; return
    fi
    [ "$a" -ge "$bar" ] && ok "$name: final accuracy $(awk "BEGIN{print $a/100}")%" ||
        bad "$name: final accuracy $(awk "BEGIN{print $a/100}")% is below $(awk "BEGIN{print $bar/100}")%"
    grep -h "lost worker\|lost server\|rejoined\|reconnected\|did not rejoin\|resumed from\|dropped push\|share the training data\|data shard\|not among" \
        "$dir"/*.log | sed 's/^/    /' | head -12
}

# A survivor's data after its partner was given up on: server 0 fixes a
# new membership from some epoch N on (1-based), and worker 0 must train
# on the whole set from that epoch.  With MUST, the change must happen
# (bsp waits for the verdict, so the next epoch always comes).
# Prints N (empty if it did not happen).
whole_set() { # NAME MUST
    local n
    n=$(sed -n 's/.*server 0: from epoch \([0-9]*\) on, 1 of 2 workers share.*/\1/p' \
        "$dir/s0.log" | head -1)
    if [ -z "$n" ]; then
        [ "$2" = must ] && bad "$1: the server never split the data among the survivors"
        [ "$2" = must ] || echo "    (worker 0 finished before worker 1 was given up on)"
        return
    fi
    grep -q "worker 0: epoch $n: data shard 0 of 1 live workers (60000 samples" "$dir/w0.log" &&
        ok "$1: from epoch $n the survivor trains on all 60000 samples" ||
        bad "$1: from epoch $n the survivor should hold all 60000 samples"
    echo "$n" >"$dir/whole-from"
}

new_dir() {
    clock_stop
    dir=$scratch/$1
    mkdir -p "$dir/ck"
    clock_start
}

# ---- scenarios ----------------------------------------------------------

worker_kill() { # MODE restart|norestart
    local mode=$1 how=$2 name="kill -9 worker 1 ($1, $2)"
    new_dir "kill-$1-$2"
    bar=$bar_bsp
    [ $mode = bsp ] || bar=$bar_async
    local extra="--mode $mode"
    [ $mode = ssp ] && extra="$extra --staleness 2"
    rank 0 "$dir/s0.log" $extra --checkpoint-dir "$dir/ck" --checkpoint-every $ck
    local s=$last_pid
    rank 1 "$dir/w0.log" $extra; local w0=$last_pid
    rank 2 "$dir/w1.log" $extra; local w1=$last_pid
    local at; at=$(pick $((3 * ck)) $((20 * ck)))
    wait_line "$dir/s0.log" "checkpoint at update [0-9]*[0-9]" 120 || { bad "$name: no start"; kill -9 $s $w0 $w1; return; }
    # Strike after update >= at (async counts per gradient, so scale).
    while ! awk -v at="$at" '/checkpoint at update/ { if ($7 + 0 >= at) f = 1 } END { exit !f }' \
        "$dir/s0.log"; do nap "$poll"; kill -0 $w1 2>/dev/null || break; done
    kill -9 $w1 2>/dev/null
    local t_kill=$EPOCHREALTIME
    echo "    killed worker 1 after update $at"
    if [ $how = restart ]; then
        sleep 0.5
        rank 2 "$dir/w1b.log" $extra; w1=$last_pid
    else
        wait $w1 2>/dev/null
        w1=
    fi
    if wait_all $s $w0 $w1; then judge "$name"; else tail -n 5 "$dir"/*.log; bad "$name: a process failed"; fi
    local t_lost
    t_lost=$(grep -m1 -o "lost worker 1" "$dir/s0.log" >/dev/null && echo yes)
    [ -n "$t_lost" ] || bad "$name: the server never reported the lost worker"
    if [ $how = restart ]; then
        grep -q "worker 1 rejoined" "$dir/s0.log" && ok "$name: worker 1 rejoined" ||
            bad "$name: worker 1 did not rejoin"
        fault_times "$t_kill" "lost worker 1" "worker 1 rejoined"
    else
        whole_set "$name" "$([ $mode = bsp ] && echo must)"
        fault_times "$t_kill" "lost worker 1" "worker 1 did not rejoin|lost worker 1 .*going on without"
    fi
}

# bsp: worker 1 killed for good; the survivor takes over its data from the
# epoch after worker 1 is given up on (--rejoin-timeout); then worker 1 is
# restarted and both split the data again from the next epoch.
reshard() {
    local name="reshard: lose worker 1 for good, then restart it (bsp)"
    bar=$bar_bsp
    new_dir reshard
    rank 0 "$dir/s0.log" --checkpoint-dir "$dir/ck" --checkpoint-every 100; local s=$last_pid
    rank 1 "$dir/w0.log"; local w0=$last_pid
    rank 2 "$dir/w1.log"; local w1=$last_pid
    local at; at=$(pick 3 14)
    wait_line "$dir/s0.log" "checkpoint at update ${at}00 " 120 ||
        { bad "$name: no start"; kill -9 $s $w0 $w1; return; }
    kill -9 $w1; wait $w1 2>/dev/null
    echo "    killed worker 1 after update ${at}00"
    if ! wait_line "$dir/w0.log" "data shard 0 of 1 live workers" 120; then
        tail -n 5 "$dir"/*.log; bad "$name: the survivor never took over the data"
        kill -9 $s $w0; return
    fi
    whole_set "$name" must
    # The epoch of the take-over is the one after the verdict: the last
    # checkpoint before "did not rejoin" (bsp: a multiple of 100 at most 99
    # updates before the stalled round) bounds the round it came in.
    local ipe from c
    ipe=$(sed -n 's/.* \([0-9]*\) iterations per epoch.*/\1/p' "$dir/w0.log" | head -1)
    from=$(cat "$dir/whole-from" 2>/dev/null)
    c=$(awk '/checkpoint at update/ { c = $7 + 0 } /did not rejoin/ { print c; exit }' "$dir/s0.log")
    if [ -n "$ipe" ] && [ -n "$from" ] && [ -n "$c" ] &&
       [ "$from" -ge $((c / ipe + 2)) ] && [ "$from" -le $(((c + 99) / ipe + 2)) ]; then
        ok "$name: the data moved at the first epoch after the verdict (epoch $from; verdict after update $c, $ipe iterations per epoch)"
    else
        bad "$name: the data moved at epoch '$from', not the one after update '$c' (epochs of '$ipe')"
    fi
    rank 2 "$dir/w1b.log"; w1=$last_pid
    if wait_all $s $w0 $w1; then judge "$name"; else tail -n 5 "$dir"/*.log; bad "$name: a process failed"; return; fi
    grep -q "worker 1 rejoined" "$dir/s0.log" && ok "$name: worker 1 rejoined" ||
        bad "$name: worker 1 did not rejoin"
    local back
    back=$(sed -n 's/.*server 0: from epoch \([0-9]*\) on, 2 of 2 workers share.*/\1/p' \
        "$dir/s0.log" | head -1)
    if [ -z "$back" ]; then
        bad "$name: the restarted worker never got its place back"
    elif grep -q "worker 0: epoch $back: data shard 0 of 2 live workers (30000 samples" "$dir/w0.log" &&
         grep -q "worker 1: epoch $back: data shard 1 of 2 live workers (30000 samples" "$dir/w1b.log"; then
        ok "$name: from epoch $back the two workers split the data again"
    else
        grep -h "data shard\|not among" "$dir"/w*.log
        bad "$name: from epoch $back the workers should hold shards 0 and 1 of 2"
    fi
}

worker_stop() {
    local name="SIGSTOP worker 1 for $stop_secs s (bsp)"
    bar=$bar_bsp
    new_dir stop
    rank 0 "$dir/s0.log" --checkpoint-dir "$dir/ck" --checkpoint-every $ck; local s=$last_pid
    rank 1 "$dir/w0.log"; local w0=$last_pid
    rank 2 "$dir/w1.log"; local w1=$last_pid
    wait_update "$dir/s0.log" $((3 * ck)) 120 || { bad "$name: no start"; kill -9 $s $w0 $w1; return; }
    kill -STOP $w1
    local t_stop=$EPOCHREALTIME
    nap "$stop_secs"
    kill -CONT $w1
    local t_cont=$EPOCHREALTIME
    if wait_all $s $w0 $w1; then judge "$name"; else tail -n 5 "$dir"/*.log; bad "$name: a process failed"; fi
    grep -q "lost worker 1 (silent" "$dir/s0.log" && ok "$name: detected as silent" ||
        bad "$name: the stop went unnoticed"
    grep -q "worker 1 rejoined" "$dir/s0.log" && ok "$name: worker 1 rejoined after SIGCONT" ||
        bad "$name: worker 1 did not rejoin"
    fault_times "$t_stop" "lost worker 1 [(]silent" "worker 1 rejoined"
    echo "    rejoined $(since "$t_cont" "worker 1 rejoined") s after SIGCONT"
}

server_kill() {
    local name="kill -9 the server, restart with --resume (bsp)"
    bar=$bar_bsp
    new_dir server
    local half=$((ck / 2))
    local cks="--checkpoint-dir $dir/ck --checkpoint-every $half"
    rank 0 "$dir/s0.log" $cks; local s=$last_pid
    rank 1 "$dir/w0.log" --save "$dir/model.bin"; local w0=$last_pid
    rank 2 "$dir/w1.log"; local w1=$last_pid
    local at; at=$(pick 5 30)
    wait_line "$dir/s0.log" "checkpoint at update $((at * half)) " 120 || { bad "$name: no start"; kill -9 $s $w0 $w1; return; }
    kill -9 $s
    local t_kill=$EPOCHREALTIME
    wait $s 2>/dev/null
    echo "    killed the server after its checkpoint at update $((at * half))"
    sleep 1
    rank 0 "$dir/s0b.log" $cks --resume; s=$last_pid
    if wait_all $s $w0 $w1; then judge "$name"; else tail -n 5 "$dir"/*.log; bad "$name: a process failed"; return; fi
    grep -q "resumed from" "$dir/s0b.log" && ok "$name: resumed from a checkpoint" ||
        bad "$name: did not resume"
    # (restarted 1 s after the kill; recovered = both workers reconnected)
    fault_times "$t_kill" "lost server" "reconnected after" 2
    # Undisturbed, the same job ends at the same parameters, bit for bit:
    # the resumed server and the workers redid exactly the lost rounds.
    new_dir server-ref
    rank 0 "$dir/s0.log"; s=$last_pid
    rank 1 "$dir/w0.log" --save "$dir/ref.bin"; w0=$last_pid
    rank 2 "$dir/w1.log"; w1=$last_pid
    wait_all $s $w0 $w1 || bad "$name: the undisturbed run failed"
    check "$name: final model = undisturbed run (no update lost or doubled)" \
        "$train" --compare "$scratch/server/model.bin" "$dir/ref.bin" --tolerance 0
}

# S servers (ranks 0..S-1) and 2 workers; each server in turn is killed
# mid-epoch and restarted with --resume once the workers are back; the
# last one is killed while it writes a checkpoint (the writer stalls with
# half the file written, SHOAL_TEST_CKPT_STALL), so it restarts from
# the checkpoint before, and the others roll back to that update.
reconnects() { cat "$dir/w0.log" "$dir/w1.log" | grep -c "reconnected after"; }
servers_kill() {
    local S=$1 mode=${2:-bsp} name="kill -9 each of $1 servers in turn, restart with --resume (${2:-bsp})"
    bar=$bar_bsp
    [ "$mode" = bsp ] || bar=$bar_async
    new_dir "servers$S$mode"
    size=$((S + 2))
    local half=$((ck / 2)) j pids=() ats=() at=3 t_kill
    local cks="--servers $S --mode $mode --checkpoint-dir $dir/ck --checkpoint-every $half"
    for ((j = 0; j < S; j++)); do at=$((at + $(pick 1 4))); ats[$j]=$at; done
    for ((j = 0; j < S; j++)); do
        local stall=""
        [ $j = $((S - 1)) ] && stall="$((at * half)):2000"
        SHOAL_TEST_CKPT_STALL=$stall rank $j "$dir/s$j.log" $cks; pids[$j]=$last_pid
    done
    rank $S "$dir/w0.log" $cks --save "$dir/model.bin"; local w0=$last_pid
    rank $((S + 1)) "$dir/w1.log" $cks; local w1=$last_pid
    for ((j = 0; j < S; j++)); do
        at=${ats[$j]}
        if [ $j = $((S - 1)) ]; then
            # in the middle of a write: the checkpoint file is half written
            wait_line "$dir/s$j.log" "writing checkpoint at update $((at * half)) " 150 ||
                { bad "$name: server $j never wrote update $((at * half))"; break; }
        else
            wait_line "$dir/s$j.log" "checkpoint at update $((at * half)) " 150 ||
                { bad "$name: server $j never reached update $((at * half))"; break; }
            nap "0.$((RANDOM % 5))"
        fi
        kill -9 "${pids[$j]}"; wait "${pids[$j]}" 2>/dev/null
        t_kill=$EPOCHREALTIME
        echo "    killed server $j after update $((at * half))$([ $j = $((S - 1)) ] && echo ', during its checkpoint write')"
        nap 1
        rank $j "$dir/s${j}b.log" $cks --resume; pids[$j]=$last_pid
        # back when both workers reconnected once more than before
        local want=$(( $(reconnects) + 2 )) end=$((SECONDS + 120))
        while [ $SECONDS -lt $end ] && [ "$(reconnects)" -lt $want ]; do nap 0.2; done
        fault_times "$t_kill" "lost server" "reconnected after" 2
    done
    if wait_all "${pids[@]}" $w0 $w1; then judge "$name"; else tail -n 5 "$dir"/*.log; bad "$name: a process failed"; size=3; return; fi
    if [ "$mode" != bsp ]; then
        # async/ssp: no common update; each shard goes on from its server
        grep -h "behind the others" "$dir"/w*.log | sort -u | sed 's/^/    /' | head -4
        for ((j = 0; j < S; j++)); do
            cat "$dir/s$j.log" "$dir/s${j}b.log" 2>/dev/null |
                grep -q "server $j: applied [0-9]* gradients, each once" ||
                bad "$name: server $j did not report its gradients applied once"
        done
        size=3
        return
    fi
    grep -q "rolled back from update" "$dir"/s*.log && ok "$name: the servers rolled back to a common update" ||
        bad "$name: no server rolled back"
    grep -h "rolled back\|resumed from\|rolling the job back\|cannot roll back" "$dir"/*.log | sort -u | sed 's/^/    /' | head -8
    for ((j = 0; j < S; j++)); do
        cat "$dir/s$j.log" "$dir/s${j}b.log" 2>/dev/null |
            grep -q "server $j: applied [0-9]* gradients, each once" ||
            bad "$name: server $j did not report its gradients applied once"
    done
    # Undisturbed, the same job ends at the same parameters, bit for bit.
    local kept=$dir
    new_dir "servers$S-ref"
    for ((j = 0; j < S; j++)); do rank $j "$dir/s$j.log" --servers $S; pids[$j]=$last_pid; done
    rank $S "$dir/w0.log" --servers $S --save "$dir/ref.bin"; w0=$last_pid
    rank $((S + 1)) "$dir/w1.log" --servers $S; w1=$last_pid
    wait_all "${pids[@]}" $w0 $w1 || bad "$name: the undisturbed run failed"
    check "$name: final model = undisturbed run (no update lost or doubled)" \
        "$train" --compare "$kept/model.bin" "$dir/ref.bin" --tolerance 0
    size=3
}

netcut_run() {
    local cut=$1 name="network cut for $1 s (bsp)"
    bar=$bar_bsp
    command -v nft >/dev/null || { echo "SKIPPED: $name: no nft (apt-get install nftables)"; return; }
    command -v unshare >/dev/null || { echo "SKIPPED: $name: no unshare"; return; }
    # A private network namespace with nftables is needed (a container may
    # forbid either): probe, and skip with the reason if it is refused.
    local why
    if ! why=$(unshare -n sh -c 'nft add table inet shoalprobe' 2>&1); then
        echo "SKIPPED: $name: cannot use nftables in a private network namespace here: $why"
        return
    fi
    new_dir "cut$cut"
    export dir train common cut ck
    if unshare -n bash -c '
        set -u
        ip link set lo up || exit 90
        run() { SHOAL_RANK=$1 SHOAL_SIZE=3 SHOAL_LOCAL_RANK=$1 SHOAL_LOCAL_SIZE=3 SHOAL_RENDEZVOUS=$dir/rdv timeout 400 "$train" $common "${@:3}" >>"$2" 2>&1 & }
        run 0 "$dir/s0.log" --checkpoint-dir "$dir/ck" --checkpoint-every $ck; s=$!
        run 1 "$dir/w0.log"; w0=$!
        run 2 "$dir/w1.log"; w1=$!
        end=$((SECONDS + 120))
        until awk -v n=$((3 * ck)) "/checkpoint at update/ { if (\$7 + 0 >= n) f = 1 } END { exit !f }" \
            "$dir/s0.log" 2>/dev/null; do
            [ $SECONDS -gt $end ] && exit 91; sleep 0.05; done
        nft add table inet cut && nft add chain inet cut in "{ type filter hook input priority 0; }" &&
            nft add rule inet cut in iif lo drop || exit 92
        echo $EPOCHREALTIME >"$dir/t_cut"
        echo "    network down for $cut s"
        sleep "$cut"
        nft delete table inet cut
        echo "    network up"
        st=0
        for p in $s $w0 $w1; do wait $p || st=1; done
        exit $st
    '; then
        judge "$name"
    else
        rc=$?
        tail -n 5 "$dir"/*.log
        bad "$name: the job failed (status $rc)"
    fi
    [ -s "$dir/t_cut" ] && fault_times "$(cat "$dir/t_cut")" "lost worker|lost server" "rejoined|reconnected"
}

undisturbed() {
    local name="undisturbed (bsp)"
    bar=$bar_bsp
    new_dir undisturbed
    rank 0 "$dir/s0.log"; local s=$last_pid
    rank 1 "$dir/w0.log"; local w0=$last_pid
    rank 2 "$dir/w1.log"; local w1=$last_pid
    if wait_all $s $w0 $w1; then judge "$name"; else tail -n 5 "$dir"/*.log; bad "$name: a process failed"; fi
    ! grep -q "lost worker\|lost server" "$dir"/*.log && ok "$name: no peer reported lost" ||
        bad "$name: a peer was reported lost without a fault (a timeout too short for this machine?)"
}

all="worker_kill:bsp:norestart worker_kill:bsp:restart worker_kill:async:norestart
     worker_kill:async:restart worker_kill:ssp:norestart worker_kill:ssp:restart
     worker_stop server_kill servers_kill:2 servers_kill:3 servers_kill:2:async netcut_run:1
     netcut_run:4 reshard"
for sc in ${*:-$all}; do
    IFS=: read -r fn a b <<<"$sc"
    echo "== $fn $a $b"
    t0=$SECONDS
    watchdog
    $fn $a $b
    clock_stop
    echo "   ($((SECONDS - t0)) s)"
done
pkill -P "$dog" 2>/dev/null; kill "$dog" 2>/dev/null
finish
