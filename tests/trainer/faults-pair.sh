#!/bin/bash
# faults-pair.sh -- network cuts and a host crash on the verbs transport,
# across two soft-RoCE VMs (tools/softroce-vm --pair): VM a (10.55.0.1)
# runs the server and worker 0, VM b (10.55.0.2) worker 1, so worker 1's
# traffic crosses the VMs' virtio NICs (one VM cannot cut rxe traffic: see
# faults-vm.sh).  Part of make check-faults (after faults-vm.sh); alone:
# make check-faults-pair.  About 2 minutes, both boots included.
#
# The same short job as faults-vm.sh (MLP-32, a Fashion-MNIST slice,
# bsp, 2 epochs of 100 iterations), three times:
#   cut:1    b's eth0 drops everything for 1 s, less than --fail-timeout
#            (2 s): incoming frames by an nftables input rule, outgoing
#            ones by "tc netem loss 100%" (an nftables output rule is no
#            wire cut: ip_local_out fails with -EPERM, rxe takes that for
#            a full queue and resends at once without spending its retry
#            count, spinning the vCPU; the sender's own detection then
#            took ~6 s instead of ~0.4 s);
#   cut:5    ... for 5 s, more than it: the loss is detected, worker 1
#            reconnects and rejoins when the network is back;
#   flap:3   (not in the default list: it fails, see docs/ARCHITECTURE.md)
#            b's eth0 set down, 3 s, up: the rxe port goes DOWN and ACTIVE
#            again; b's GID table, routes, neighbours and rdma link are
#            printed before and after;
#   crash    b crashes (sysrq "b": no shutdown, no disconnect sent); the
#            server on a must report worker 1 lost within --fail-timeout,
#            then finish without it after --rejoin-timeout.
# Each run must finish, reach the bar and have every gradient applied
# once (the crash run: on a).  The fault's time and every log line are
# put on the host's clock (files written to the shared directory carry
# the host's mtime), so the time to detect and to recover is measured
# across the two VMs.
#   tests/trainer/faults-pair.sh [SCENARIO...]    (default: cut:1 cut:5 crash;
#                                                   crash must come last)
# Environment: SHOAL_FAULT_VM_BAR (bar in % x 100, 8000: measured 83.05-83.2%
# after cuts, 82.85% after the crash, where worker 1's data is gone),
# SHOAL_FAULT_VM_LIMIT (the VMs' time limit, 480 s).
# Exit status: 0, 1 (a check failed), 77 (SKIPPED: no VM can boot here).

# ---- guest side (both VMs run this file; $SOFTROCE_ROLE is a or b) -------
if [ -n "${SOFTROCE_VM:-}" ]; then
    set -u
    S=$PAIR_DIR role=$SOFTROCE_ROLE train=$PAIR_BUILD/trainer/shoal-train
    ck=8 fail_ms=2000
    export SHOAL_TRANSPORT=verbs SHOAL_TRAIN_HOST=$SOFTROCE_IP
    common="--data $S/data --epochs 2 --iters-per-epoch 100 --hidden 32
            --fail-timeout $fail_ms --rejoin-timeout 6000 --reconnect-timeout 60000
            --idle-timeout 60000 --log-interval 5"
    exec {napfd}<> <(:)
    nap() { read -rt "$1" -u "$napfd" || :; }
    # waitfor FILE SECONDS (builtins only: 9p polls are cheap, forks not)
    waitfor() {
        local i
        for ((i = 0; i < $2 * 10; i++)); do [ -e "$1" ] && return 0; nap 0.1; done
        echo "timed out waiting for $1"
        return 1
    }
    # rank R LOG: start a trainer rank in the background; sets $last_pid.
    rank() {
        (SHOAL_RANK=$1 SHOAL_SIZE=3 SHOAL_RENDEZVOUS=$d/rdv exec timeout 300 "$train" $common \
            --checkpoint-dir "$local/ck" --checkpoint-every $ck >"$local/$2" 2>&1) &
        last_pid=$!
    }
    # This VM's clock against the host's: a file written to the share gets
    # the host's mtime.  off = host - guest, in seconds.
    clock_offset() {
        local g
        g=$EPOCHREALTIME; : >"$d/clk.$role"
        awk -v g="$g" -v h="$(stat -c %.6Y "$d/clk.$role")" 'BEGIN { printf "%.6f", h - g }' \
            >"$d/off.$role"
    }
    for sc in $PAIR_SCENARIOS; do
        d=$S/$sc local=/tmp/$sc
        mkdir -p "$d" "$local/ck"
        echo "== $sc"
        clock_offset
        # Every log line of this VM, stamped on arrival (guest clock).
        ( exec </dev/null 2>/dev/null
          tail -n +1 -s 0.1 -F "$local"/{s0,w0,w1}.log |
              while IFS= read -r l; do printf '%s %s\n' "$EPOCHREALTIME" "$l"; done
        ) >"$local/events" &
        clock=$!
        if [ "$role" = a ]; then
            rank 0 s0.log; s=$last_pid
            rank 1 w0.log; w0=$last_pid
            # Tell b when to strike: after the checkpoint at update 3 * ck.
            end=$((SECONDS + 120))
            until awk -v n=$((3 * ck)) '/checkpoint at update/ { if ($7 + 0 >= n) f = 1 }
                                         END { exit !f }' "$local/s0.log" 2>/dev/null; do
                [ $SECONDS -gt $end ] && break; nap 0.25
            done
            : >"$d/go"
            wait $s; echo $? >"$d/s0.rc"
            wait $w0; echo $? >"$d/w0.rc"
            [ "$sc" = crash ] || waitfor "$d/w1.rc" 200
        else
            rank 2 w1.log; w1=$last_pid
            if waitfor "$d/go" 150; then
                case $sc in
                cut:*)
                    secs=${sc#cut:}
                    nft add table inet cut &&
                        nft add chain inet cut in '{ type filter hook input priority 0; }' &&
                        nft add rule inet cut in iif eth0 drop &&
                        tc qdisc add dev eth0 root netem loss 100% ||
                        echo "nft or tc failed on b" >"$d/fault.err"
                    : >"$d/fault"
                    echo "network of b cut for $secs s"
                    nap "$secs"
                    tc qdisc del dev eth0 root; nft delete table inet cut
                    echo "network of b back"
                    ;;
                flap:*)
                    secs=${sc#flap:}
                    show() {
                        echo "    b $1: port $(cat /sys/class/infiniband/rxe0/ports/1/state)," \
                             "gid0 $(cat /sys/class/infiniband/rxe0/ports/1/gids/0)," \
                             "gid1 $(cat /sys/class/infiniband/rxe0/ports/1/gids/1);" \
                             "$(ip -br addr show dev eth0 | tr -s ' ');" \
                             "route: $(ip route show dev eth0 | tr '\n' ' ');" \
                             "neigh: $(ip neigh show dev eth0 | tr '\n' ' ');" \
                             "$(rdma link show rxe0/1 | tr -s ' ')"
                    }
                    show before
                    ip link set dev eth0 down || echo "ip link down failed on b" >"$d/fault.err"
                    : >"$d/fault"
                    echo "link of b down for $secs s"
                    nap "$secs"
                    show down
                    ip link set dev eth0 up
                    echo "link of b up"
                    nap 1; show "up 1 s"
                    ;;
                crash)
                    echo "crashing VM b (sysrq b) after update $((3 * ck))"
                    echo 0 >"$SOFTROCE_SCRATCH/rc"    # b's result: a reports
                    : >"$d/fault"
                    echo b >/proc/sysrq-trigger
                    ;;
                esac
            fi
            wait $w1; echo $? >"$d/w1.rc"
        fi
        pkill -P "$clock" 2>/dev/null; kill "$clock" 2>/dev/null
        cp "$local"/*.log "$d/" 2>/dev/null
        cp "$local/events" "$d/events.$role"
        : >"$d/done.$role"
        [ "$role" = a ] || waitfor "$d/done.a" 60 || exit 1
    done
    [ "$role" = a ] && : >"$S/a.finished"
    exit 0
fi

# ---- host side -------------------------------------------------------------
. "$(dirname "$0")/lib.sh"
need_data
need_vm "verbs pair faults"
command -v nft >/dev/null || skip "verbs pair faults: no nft (apt-get install nftables)"
data_slice "$scratch/data" 12800 2000 ||
    { echo "faults-pair.sh: cannot cut a slice of $data" >&2; exit 99; }
scenarios=${*:-cut:1 cut:5 crash}
bar=${SHOAL_FAULT_VM_BAR:-8000}
limit=${SHOAL_FAULT_VM_LIMIT:-480}
echo "faults-pair.sh: verbs over rxe, two VMs (1 vCPU each); scenarios: $scenarios"
start=$SECONDS
"$vm" --pair -t "$limit" -w "$top_build" -w "$scratch" -e "PAIR_DIR=$scratch" \
    -e "PAIR_BUILD=$top_build" -e "PAIR_SCENARIOS=$scenarios" \
    -- bash "$top_src/tests/trainer/faults-pair.sh"
rc=$?
echo "faults-pair.sh: the VM run took $((SECONDS - start)) s (rc $rc)"
case $rc in
    124) bad "verbs pair faults: the VM run hit its $limit s limit" ;;
    125) bad "verbs pair faults: a VM died before reporting a result" ;;
esac

# Host time of each stamped line: guest stamp + that VM's offset.
host_events() { # DIR
    local r
    for r in a b; do
        [ -s "$1/events.$r" ] && [ -s "$1/off.$r" ] &&
            awk -v o="$(cat "$1/off.$r")" -v r="$r" '{ $1 = sprintf("%.6f", $1 + o); print $0, "[" r "]" }' \
                "$1/events.$r"
    done | sort -n
}
# since T REGEX [N]: seconds from T to the Nth line matching REGEX at or after T.
since() {
    awk -v t="$1" -v re="$2" -v n="${3:-1}" '
        $1 >= t && $0 ~ re && ++k == n { printf "%.2f", $1 - t; f = 1; exit }
        END { if (!f) printf "-" }' "$dir/host-events"
}
for sc in $scenarios; do
    dir=$scratch/$sc
    echo "== $sc (the job's logs: host times, s after the fault)"
    [ -e "$dir/done.a" ] || { bad "$sc: VM a did not finish the run"; continue; }
    host_events "$dir" >"$dir/host-events"
    t=$(stat -c %.6Y "$dir/fault" 2>/dev/null) || { bad "$sc: no fault was struck"; continue; }
    [ -e "$dir/fault.err" ] && bad "$sc: $(cat "$dir/fault.err")"
    grep -h "lost worker\|lost server\|rejoined\|reconnected\|did not rejoin\|going on without" \
        "$dir/host-events" | awk -v t="$t" '{ printf "    %+7.2f %s\n", $1 - t, substr($0, index($0, " ") + 1) }' |
        head -10
    want="0 0 0" rcs=("$dir/s0.rc" "$dir/w0.rc" "$dir/w1.rc")
    [ "$sc" = crash ] && want="0 0" rcs=("$dir/s0.rc" "$dir/w0.rc")
    st=$(cat "${rcs[@]}" 2>/dev/null | tr '\n' ' '); st=${st% }
    name="$sc (verbs, two VMs)"
    case $sc in cut:*) name="network of worker 1's VM cut for ${sc#cut:} s (verbs, two VMs)";;
                flap:*) name="link of worker 1's VM down for ${sc#flap:} s, then up (verbs, two VMs)";;
                crash) name="VM of worker 1 crashed (verbs, two VMs)";; esac
    if [ "$st" != "$want" ]; then
        tail -n 5 "$dir"/*.log; bad "$name: a process failed (exit statuses $st)"; continue
    fi
    a=$(accuracy "$dir/w0.log")
    if [ -z "$a" ]; then bad "$name: no final accuracy"; continue; fi
    [ "$a" -ge "$bar" ] && ok "$name: final accuracy $(awk "BEGIN{print $a/100}")%" ||
        bad "$name: final accuracy $(awk "BEGIN{print $a/100}")% is below $(awk "BEGIN{print $bar/100}")%"
    grep -q "applied [0-9]* gradients, each once" "$dir/s0.log" ||
        bad "$name: the server did not finish its account"
    # recovered: worker 1 back; after the crash, the job going on without it
    rec_re="worker 1 rejoined"; [ "$sc" = crash ] && rec_re="worker 1 did not rejoin"
    det=$(since "$t" "lost worker 1|lost server") rec=$(since "$t" "$rec_re")
    echo "    time to detect: $det s, time to recover: $rec s (from the fault)"
    case $sc in
    cut:* | flap:*)
        if [ "${sc#*:}" -gt $((2000 / 1000)) ]; then
            [ "$det" != - ] && ok "$name: detected" || bad "$name: the cut went unnoticed"
            grep -q "worker 1 rejoined" "$dir/s0.log" && ok "$name: worker 1 rejoined" ||
                bad "$name: worker 1 did not rejoin"
        fi ;;
    crash)
        grep -q "lost worker 1" "$dir/s0.log" && ok "$name: the server reported worker 1 lost" ||
            bad "$name: the server never reported worker 1 lost"
        grep -h "lost worker 1" "$dir/s0.log" | sed 's/^/    how: /'
        # The heartbeat alone finds a silent peer by --fail-timeout (2 s);
        # the generous margin is for TCG's noise, not a speed target.
        if [ "$det" != - ] && awk -v d="$det" 'BEGIN { exit !(d <= 3.5) }'; then
            ok "$name: detected $det s after the crash (--fail-timeout 2 s)"
        else
            bad "$name: detected after $det s, not within --fail-timeout (2 s) + 1.5 s"
        fi ;;
    esac
done
finish
