#!/bin/bash
# slurm.sh -- shoal-train under a real Slurm (Debian's slurm-wlm and munge):
# the test starts its own one-node cluster on this machine, without
# systemd: munged as the munge user with its own key, socket and pid file,
# then slurmctld and slurmd as root with a slurm.conf of its own (its own
# ports, asked of the kernel; its own state, spool and logs; the node at
# 127.0.0.1), all in a scratch directory, all stopped at the end.  Then:
#   - srun -n 3 --overcommit shoal-train --servers 1 --coordinator ...:
#     ranks from SLURM_PROCID/SLURM_NTASKS, local ranks from Slurm, the
#     job learns (2 epochs of 150 iterations: 83.8% here; the bar is 80%);
#   - the same again at once on the same coordinator port (the old
#     server's connections are still in TIME_WAIT there);
#   - sbatch examples/slurm/shoal-train.sbatch: the job finishes
#     COMPLETED 0:0, found its coordinator through scontrol (the node's
#     NodeAddr), and learned.
# SKIPPED (77) with the reason where the daemons cannot run here.
. "$(dirname "$0")/../trainer/lib.sh"
need_data
bar=${SHOAL_SLURM_BAR:-8000}
args="-q --epochs 2 --iters-per-epoch 150"
[ "$(id -u)" = 0 ] || skip "Slurm daemons: the test runs them as root (SlurmUser=root)"
for c in munged munge unmunge slurmctld slurmd srun sbatch scontrol sinfo scancel; do
    command -v $c >/dev/null || skip "no $c (apt-get install slurm-wlm munge; tools/install-deps)"
done
id munge >/dev/null 2>&1 || skip "no munge user (apt-get install munge)"
command -v python3 >/dev/null || skip "no python3 to ask the kernel for free ports"

# The scratch directory: munged refuses a socket directory others cannot
# enter, and a key in a directory others can write.
chmod 755 "$scratch"
m=$scratch/munge
mkdir -p "$m" "$scratch"/{state,spool,log} && chown munge:munge "$m" && chmod 755 "$m"
export SLURM_CONF=$scratch/slurm.conf
jobs_started=""

stop_cluster() {
    [ -n "$jobs_started" ] && scancel $jobs_started 2>/dev/null
    local f p
    for f in "$scratch/slurmd.pid" "$scratch/slurmctld.pid" "$m/munged.pid"; do
        p=$(cat "$f" 2>/dev/null) || continue
        kill "$p" 2>/dev/null || continue
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null
    done
    rm -rf "$scratch"
}
trap stop_cluster EXIT

# munged: a fresh key, as the munge user.
runuser -u munge -- dd if=/dev/urandom of="$m/munge.key" bs=1024 count=1 status=none &&
    chmod 600 "$m/munge.key" || skip "cannot write a munge key as the munge user"
if ! runuser -u munge -- munged --socket="$m/munge.socket" --key-file="$m/munge.key" \
        --pid-file="$m/munged.pid" --log-file="$m/munged.log" --seed-file="$m/munged.seed" \
        >"$m/start.log" 2>&1; then
    skip "munged does not start here: $(tail -n 2 "$m/start.log" | tr '\n' ' ')"
fi
munge -S "$m/munge.socket" -n 2>/dev/null | unmunge -S "$m/munge.socket" >/dev/null 2>&1 ||
    skip "munged started but does not answer on $m/munge.socket"

# Free ports from the kernel for the controller and the node daemon.
read -r ctld_port slurmd_port coord_port sbatch_port < <(python3 -c '
import socket
s = [socket.socket() for _ in range(4)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])') || skip "cannot ask the kernel for free ports"
ncpu=$(nproc)
cat >"$SLURM_CONF" <<EOF
# A one-node cluster of tests/ops/slurm.sh (everything in $scratch).
ClusterName=shoaltest
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
AuthType=auth/munge
AuthInfo=socket=$m/munge.socket
CredType=cred/munge
StateSaveLocation=$scratch/state
SlurmdSpoolDir=$scratch/spool
SlurmctldPidFile=$scratch/slurmctld.pid
SlurmdPidFile=$scratch/slurmd.pid
SlurmctldLogFile=$scratch/log/slurmctld.log
SlurmdLogFile=$scratch/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
NodeName=shoal1 NodeHostname=$(hostname -s) NodeAddr=127.0.0.1 CPUs=$ncpu State=UNKNOWN
PartitionName=shoal Nodes=shoal1 Default=YES MaxTime=10 State=UP OverSubscribe=YES
EOF
slurmctld -f "$SLURM_CONF" >"$scratch/log/ctld-start.log" 2>&1 ||
    skip "slurmctld does not start here: $(tail -n 3 "$scratch/log/"{ctld-start,slurmctld}.log 2>/dev/null | tr '\n' ' ')"
slurmd -f "$SLURM_CONF" -N shoal1 >"$scratch/log/slurmd-start.log" 2>&1 ||
    skip "slurmd does not start here: $(tail -n 3 "$scratch/log/"{slurmd-start,slurmd}.log 2>/dev/null | tr '\n' ' ')"
state=""
for _ in $(seq 150); do
    state=$(sinfo -h -n shoal1 -o %t 2>/dev/null)
    [ "$state" = idle ] && break
    sleep 0.2
done
[ "$state" = idle ] ||
    skip "the Slurm node did not come up (state '$state'): $(tail -n 3 "$scratch/log/"*.log | tr '\n' ' ')"
ok "one-node Slurm cluster up: munged, slurmctld (port $ctld_port), slurmd (port $slurmd_port), $ncpu CPUs"

# accuracy_ok NAME LOG: the job's final accuracy reaches the bar.
accuracy_ok() {
    local a; a=$(accuracy "$2" 2>/dev/null)
    [ -n "$a" ] && [ "$a" -ge "$bar" ] &&
        ok "$1: final accuracy $(awk "BEGIN{print $a/100}")%" ||
        { tail -n 20 "$2" 2>/dev/null; bad "$1: final accuracy '${a:-none}' (x100), bar $bar"; }
}

# ---- srun --------------------------------------------------------------------
srun_job() { # LOG
    timeout 180 srun -n 3 --overcommit -J shoal-srun "$train" --servers 1 \
        --coordinator 127.0.0.1:$coord_port --data "$data" $args >"$1" 2>&1
}
t0=$EPOCHREALTIME
if srun_job "$scratch/srun.log"; then
    t=$(awk "BEGIN{printf \"%.1f\", $EPOCHREALTIME - $t0}")
    ok "srun -n 3 --overcommit: the job finished in $t s"
    grep -q "bsp, 2 workers, .* 1 servers" "$scratch/srun.log" &&
        ok "srun: ranks from Slurm: 1 server + 2 workers" ||
        { cat "$scratch/srun.log"; bad "srun: the job did not see 1 server and 2 workers"; }
    grep -q "local rank [0-9] of 3 (Slurm)" "$scratch/srun.log" &&
        ok "srun: local ranks from Slurm (3 on the node)" ||
        bad "srun: libshoal did not take the local rank from Slurm"
    grep -q "applied 600 gradients, each once" "$scratch/srun.log" &&
        ok "srun: the server applied 600 gradients, each once" ||
        bad "srun: the server's account is not 600 gradients, each once"
    accuracy_ok "srun" "$scratch/srun.log"
else
    cat "$scratch/srun.log"
    bad "srun job failed"
fi
# At once again on the same port: the server must be able to listen there.
if srun_job "$scratch/srun2.log"; then
    accuracy_ok "srun again at once on the same coordinator port" "$scratch/srun2.log"
else
    cat "$scratch/srun2.log"
    bad "srun again on coordinator port $coord_port failed"
fi

# ---- sbatch --------------------------------------------------------------------
script=$top_src/examples/slurm/shoal-train.sbatch
# One node here (the script asks for 2), the job's tasks overcommitted, and
# Slurm's own bound on it shorter than the script's.
if id=$(cd "$scratch" && sbatch --parsable -N 1 -n 3 --overcommit --time=5 \
        --output="$scratch/sbatch-%j.out" \
        --export=ALL,SHOAL_TRAIN="$train",SHOAL_PORT="$sbatch_port" \
        "$script" --data "$data" $args 2>"$scratch/sbatch.err"); then
    jobs_started="$jobs_started $id"
    ok "sbatch $(basename "$script"): job $id submitted"
    t0=$SECONDS js=""
    while [ $((SECONDS - t0)) -lt ${SHOAL_SLURM_WAIT:-180} ]; do
        js=$(scontrol show job "$id" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p')
        case "$js" in PENDING|RUNNING|CONFIGURING|COMPLETING|"") sleep 0.5 ;; *) break ;; esac
    done
    out=$scratch/sbatch-$id.out
    ec=$(scontrol show job "$id" | sed -n 's/.* ExitCode=\([0-9:]*\).*/\1/p')
    if [ "$js" = COMPLETED ] && [ "$ec" = 0:0 ]; then
        ok "sbatch: job $id COMPLETED, exit code 0:0, after $((SECONDS - t0)) s"
    else
        cat "$out" 2>/dev/null
        scontrol show job "$id" | grep -E "JobState|Reason"; sinfo -N -l
        tail -n 15 "$scratch"/log/slurm*.log
        bad "sbatch: job $id ended $js, exit code $ec"
    fi
    grep -q "coordinator 127.0.0.1:$sbatch_port" "$out" 2>/dev/null &&
        ok "sbatch: the coordinator is the first node's NodeAddr: $(grep -o 'coordinator .*' "$out")" ||
        bad "sbatch: the script did not find the coordinator at 127.0.0.1:$sbatch_port"
    grep -q "bsp, 2 workers, .* 1 servers" "$out" 2>/dev/null &&
        ok "sbatch: 1 server + 2 workers" || bad "sbatch: the job did not see 1 server + 2 workers"
    accuracy_ok "sbatch" "$out"
else
    cat "$scratch/sbatch.err"
    bad "sbatch refused the job script"
fi
finish
