#!/bin/bash
# bad-use.sh -- wrong use of shoal.torch gets a ShoalError naming the
# problem, never a crash or a hang (bad-use.py has the Python side):
# calls before init(), bad arguments, bad environment variables, a missing
# server (bounded by the connect timeout), a wrong secret (SHOAL_AUTH_FILE),
# parameters whose shapes or names differ between workers, an lr scheduler
# in a server mode, a step past the end or after finish().
. "$(dirname "$0")/lib.sh"
need_torch
launcher="-u SHOAL_RANK -u SHOAL_SIZE -u SHOAL_SERVERS -u SHOAL_RENDEZVOUS -u SHOAL_COORDINATOR
    -u OMPI_COMM_WORLD_RANK -u OMPI_COMM_WORLD_SIZE -u PMIX_RANK -u SLURM_PROCID -u SLURM_NTASKS"
# verdicts LOG WHAT: the ok:/FAIL: lines of LOG count; no traceback.
verdicts() {
    grep -E '^(ok|FAIL):' "$1" | cut -c1-220
    grep -q '^FAIL:' "$1" && failures=$((failures + 1))
    grep -q '^ok:' "$1" || { tail -5 "$1"; bad "$2: no verdict"; }
    ! grep -q '^Traceback' "$1" || { grep -A12 '^Traceback' "$1"; bad "$2: a traceback"; }
}
bu() { env $launcher "$@"; }

bu "$py" "$here/bad-use.py" before-init >"$scratch/init.log" 2>&1
verdicts "$scratch/init.log" "before init"

bu SHOAL_RANK=1 SHOAL_SIZE=2 SHOAL_RENDEZVOUS="$scratch/nobody/rdv" \
    "$py" "$here/bad-use.py" args >"$scratch/args.log" 2>&1
verdicts "$scratch/args.log" "bad arguments"

envcase() { # LOG VARS... -- WORDS...
    local log=$scratch/env-$1.log vars=()
    shift
    while [ "$1" != -- ]; do vars+=("$1"); shift; done
    shift
    bu "${vars[@]}" "$py" "$here/bad-use.py" env "${vars[*]}" "$@" >"$log" 2>&1
    verdicts "$log" "${vars[*]}"
}
envcase norank -- "no rank/size" "launcher"
envcase rank SHOAL_RANK=x SHOAL_SIZE=2 -- "SHOAL_RANK='x'"
envcase timeout SHOAL_RANK=1 SHOAL_SIZE=2 SHOAL_RENDEZVOUS=$scratch/r SHOAL_PS_CONNECT_TIMEOUT=abc \
    -- "SHOAL_PS_CONNECT_TIMEOUT='abc'" "whole number"
envcase resume SHOAL_RANK=0 SHOAL_SIZE=2 SHOAL_RENDEZVOUS=$scratch/r SHOAL_PS_RESUME=1 \
    -- "resume needs a checkpoint directory"
envcase servers SHOAL_RANK=0 SHOAL_SIZE=2 SHOAL_SERVERS=2 SHOAL_RENDEZVOUS=$scratch/r \
    -- "has no worker"

# No server: the join gives up after SHOAL_PS_CONNECT_TIMEOUT (1.5 s here).
mkdir -p "$scratch/none"
t0=$SECONDS
bu SHOAL_RANK=1 SHOAL_SIZE=2 SHOAL_RENDEZVOUS="$scratch/none/rdv" SHOAL_PS_CONNECT_TIMEOUT=1500 \
    timeout 60 "$py" "$here/bad-use.py" join "no parameter server answered|1500 ms" \
    >"$scratch/noserver.log" 2>&1
[ $? = 3 ] || bad "no server: the worker should exit 3 (refused)"
verdicts "$scratch/noserver.log" "no server"
[ $((SECONDS - t0)) -lt 30 ] && ok "no server: the error came after $((SECONDS - t0)) s" ||
    bad "no server: the error took $((SECONDS - t0)) s (connect timeout 1.5 s)"

# A wrong secret: the server has one, the worker another.
head -c 32 /dev/urandom | base64 >"$scratch/secret-a"
head -c 32 /dev/urandom | base64 >"$scratch/secret-b"
chmod 600 "$scratch"/secret-*
mkdir -p "$scratch/auth"
bu SHOAL_RANK=0 SHOAL_SIZE=2 SHOAL_RENDEZVOUS="$scratch/auth/rdv" SHOAL_AUTH_FILE="$scratch/secret-a" \
    timeout 60 "$py" "$here/bad-use.py" join x >"$scratch/auth-server.log" 2>&1 &
server=$!
bu SHOAL_RANK=1 SHOAL_SIZE=2 SHOAL_RENDEZVOUS="$scratch/auth/rdv" SHOAL_AUTH_FILE="$scratch/secret-b" \
    SHOAL_PS_CONNECT_TIMEOUT=20000 timeout 60 "$py" "$here/bad-use.py" join \
    "SHOAL_AUTH_FILE|differs from the server" >"$scratch/auth.log" 2>&1
[ $? = 3 ] || bad "wrong secret: the worker should exit 3 (refused)"
verdicts "$scratch/auth.log" "wrong secret"
kill "$server" 2>/dev/null; wait "$server" 2>/dev/null

# Parameters that differ between workers: the one refused says so and
# exits (3, bad-use.py's "refused as expected"); shoal-run then stops the
# job (bounded: --timeout 60).
for how in shape names; do
    job "$scratch/$how.log" 2 1 60 "$py" "$here/bad-use.py" join \
        "parameters differ between workers|this worker's" --$how
    rc=$?
    verdicts "$scratch/$how.log" "$how differ"
    [ $rc = 3 ] && ok "$how differ: the job stopped (exit $rc)" ||
        bad "$how differ: the job exited $rc"
done

job "$scratch/misc.log" 1 1 60 "$py" "$here/bad-use.py" misc
rc=$?
verdicts "$scratch/misc.log" "misc"
[ $rc = 0 ] && ok "misc: the job ended cleanly" || bad "misc: exit $rc"
finish
