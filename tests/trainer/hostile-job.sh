#!/bin/bash
# hostile-job.sh -- a training job with a secret (SHOAL_AUTH_FILE) under a
# bounded hostile load at server 0's port: thousands of connections from
# this machine that send random bytes, truncated or oversized handshake
# frames, UCX's own connection-request header (the bytes that aborted UCX's
# sockcm listener), or nothing at all.  The job must finish with its normal
# accuracy, every gradient applied once, the legitimate workers never
# refused, and server 0's descriptors and memory must stay bounded
# (sampled before, during and after the load).
. "$(dirname "$0")/lib.sh"
need_data
py=/usr/bin/python3
[ -x $py ] || skip "no /usr/bin/python3 for the hostile client"
key=$scratch/secret
head -c 32 /dev/urandom | base64 >"$key"
chmod 600 "$key"
export SHOAL_AUTH_FILE=$key
args="--epochs 3 --log-interval 3600"
rdv=$scratch/rdv
# the job, by hand (rank by rank), so server 0's pid is known
for r in 0 1 2; do
    SHOAL_RANK=$r SHOAL_SIZE=3 SHOAL_LOCAL_RANK=$r SHOAL_LOCAL_SIZE=3 SHOAL_RENDEZVOUS=$rdv \
        timeout 300 "$train" --data "$data" $args >"$scratch/r$r.log" 2>&1 &
    pids[$r]=$!
done
for _ in $(seq 100); do [ -s "$rdv" ] && break; sleep 0.1; done
read -r host port <"$rdv" || { bad "server 0 published no address"; finish; }
spid=$(pgrep -P "${pids[0]}" -f shoal-train | head -1)
[ -n "$spid" ] || spid=${pids[0]}
sample() { # fds rss_kb of server 0
    echo "$(ls /proc/"$1"/fd 2>/dev/null | wc -l) $(awk '/VmRSS/ {print $2}' /proc/"$1"/status 2>/dev/null)"
}
before=$(sample "$spid")
# the load: N connections, K at a time, each bounded in time
$py - "$host" "$port" 3000 <<'PY' >"$scratch/load.log" 2>&1 &
import os, random, socket, struct, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
random.seed(7)
kinds = ["random", "truncated", "oversized", "sockcm", "silent"]
sent = {k: 0 for k in kinds}
refused = 0
silent = []
t0 = time.time()
for i in range(n):
    k = kinds[i % len(kinds)]
    try:
        s = socket.create_connection((host, port), timeout=2)
    except OSError:
        refused += 1
        continue
    try:
        if k == "random":
            s.sendall(os.urandom(random.randint(1, 2048)))
        elif k == "truncated":
            s.sendall(struct.pack("<IH", 0x4c414f53, 4)[:random.randint(1, 5)])
        elif k == "oversized":
            s.sendall(struct.pack("<II", 0xffffffff, 0x7fffffff) + os.urandom(64))
        elif k == "sockcm":
            s.sendall(b"\0" * 17 + os.urandom(32))
        if k == "silent" and len(silent) < 200:
            silent.append(s)  # say nothing; the server must time them out
        else:
            s.close()
    except OSError:
        s.close()
    sent[k] += 1
time.sleep(1)
for s in silent:
    s.close()
print("hostile load: %d connections in %.1f s (%s), %d refused at connect"
      % (sum(sent.values()), time.time() - t0,
         ", ".join("%s %d" % kv for kv in sent.items()), refused))
PY
lpid=$!
peak_fds=0 peak_rss=0
while kill -0 $lpid 2>/dev/null; do
    read -r f m <<<"$(sample "$spid")"
    [ -n "$f" ] && [ "$f" -gt "$peak_fds" ] && peak_fds=$f
    [ -n "$m" ] && [ "$m" -gt "$peak_rss" ] && peak_rss=$m
    sleep 0.2
done
wait $lpid
cat "$scratch/load.log"
sleep 2 # the silent ones time out
after=$(sample "$spid")
st=0
for r in 0 1 2; do wait "${pids[$r]}" || st=1; done
read -r f0 m0 <<<"$before"
read -r f1 m1 <<<"$after"
echo "server 0: descriptors $f0 before, $peak_fds at most during, ${f1:-exited} after; RSS ${m0} KB before, ${peak_rss} KB at most, ${m1:-exited} KB after"
[ $st = 0 ] && ok "the job finished under the hostile load" ||
    { tail -n 5 "$scratch"/r*.log; bad "a rank failed under the hostile load"; }
grep -q "hostile load: 3000 connections" "$scratch/load.log" && ok "3000 hostile connections made" ||
    bad "the hostile load did not run: $(cat "$scratch/load.log")"
a=$(accuracy "$scratch/r1.log")
[ -n "$a" ] && [ "$a" -ge 8000 ] && ok "final accuracy $(awk "BEGIN{print $a/100}")% (>= 80%)" ||
    bad "final accuracy ${a:-none}"
grep -q "applied [0-9]* gradients, each once" "$scratch/r0.log" && ok "every gradient applied once" ||
    bad "no exactly-once account"
grep -q "refused this worker\|job mismatch" "$scratch"/r1.log "$scratch"/r2.log &&
    bad "a legitimate worker was refused" || ok "no legitimate worker refused"
[ -n "$f1" ] && [ "$f1" -le $((f0 + 8)) ] && ok "server 0 freed them all after the load ($f0 -> $f1)" || bad "server 0 holds ${f1:-?} descriptors after the load (had $f0; it may have exited first)"
[ "$peak_fds" -le $((f0 + 300)) ] && ok "server 0's descriptors stayed bounded ($f0 -> at most $peak_fds)" ||
    bad "server 0's descriptors grew to $peak_fds (from $f0)"
[ "$peak_rss" -le $((m0 + 65536)) ] && ok "server 0's memory stayed bounded (+$((peak_rss - m0)) KB)" ||
    bad "server 0's memory grew by $((peak_rss - m0)) KB"
grep -c "refused connection" "$scratch/r0.log" | sed 's/^/    refusal lines logged by server 0: /'
finish
