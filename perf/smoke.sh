#!/bin/bash
# smoke.sh -- make check entry for shoal-perf: every test, a few iterations,
# server and client as two real processes on loopback (UCX over TCP), so
# the benchmark cannot rot.  Asserts: both roles exit 0, the client prints
# one result row per size with the asked iteration count, the JSON output
# parses, and bad options fail with a message.  No timing is checked.
set -u
top_build=${abs_top_builddir:-$PWD}
bin=$top_build/perf/shoal-perf
[ -x "$bin" ] || { echo "smoke.sh: $bin not built" >&2; exit 99; }
export SHOAL_TRANSPORT=ucx
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }

# run NAME CLIENT-ARGS...: server on a kernel-chosen port, then the client.
run() {
    local name=$1; shift
    rm -f "$tmp/srv.out" "$tmp/srv.err" # no stale "listening" line from the last run
    SHOAL_LOCAL_RANK=0 SHOAL_LOCAL_SIZE=2 timeout 60 "$bin" -p 0 >"$tmp/srv.out" 2>"$tmp/srv.err" &
    local spid=$! port="" i
    for i in $(seq 100); do
        port=$(sed -n 's/.*listening on port \([0-9]*\).*/\1/p' "$tmp/srv.out" 2>/dev/null)
        [ -n "$port" ] && break
        kill -0 $spid 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$port" ]; then
        bad "$name: server did not start: $(cat "$tmp/srv.err")"
        kill $spid 2>/dev/null; wait $spid 2>/dev/null
        return 1
    fi
    SHOAL_LOCAL_RANK=1 SHOAL_LOCAL_SIZE=2 timeout 60 "$bin" -p "$port" "$@" 127.0.0.1 \
        >"$tmp/cli.out" 2>"$tmp/cli.err"
    local crc=$?
    wait $spid
    local src=$?
    cat "$tmp/cli.out"
    [ $crc = 0 ] || bad "$name: client exit $crc: $(cat "$tmp/cli.err")"
    [ $src = 0 ] || bad "$name: server exit $src: $(cat "$tmp/srv.err")"
    return 0
}

# rows FILE ITERS: number of table rows with that iteration count.
rows() { awk -v n="$2" '$1 ~ /^[0-9]+$/ && $2 == n' "$1" | wc -l; }

for t in put_lat get_lat; do
    run "$t" -t $t -s 64 -n 50 -w 5
    [ "$(rows "$tmp/cli.out" 50)" = 1 ] || bad "$t: no result row with 50 iterations"
done
for t in put_bw get_bw put_rate; do
    run "$t" -t $t -s 4096 -n 200 -w 10 -W 16
    [ "$(rows "$tmp/cli.out" 200)" = 1 ] || bad "$t: no result row with 200 iterations"
    run "$t --busy" -t $t -s 4096 -n 200 -w 10 -W 16 --busy
    [ "$(rows "$tmp/cli.out" 200)" = 1 ] || bad "$t --busy: no result row with 200 iterations"
done
# -a: every size 2 B..8 MiB in one connection (23 rows), each checked.
run all -t put_lat -a -n 3 -w 1
[ "$(rows "$tmp/cli.out" 3)" = 23 ] || bad "put_lat -a: expected 23 result rows"
run all-get -t get_bw -a -n 3 -w 1 -W 2
[ "$(rows "$tmp/cli.out" 3)" = 23 ] || bad "get_bw -a: expected 23 result rows"

run json -t get_bw -s 1024 -n 20 -w 2 --json
if command -v python3 >/dev/null; then
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); r=d["results"][0];
assert d["test"]=="get_bw" and r["bytes"]==1024 and r["iterations"]==20 and r["bw_avg_MiB_s"]>0' \
        "$tmp/cli.out" || bad "json: output does not parse or lacks the fields"
else
    grep -q '"iterations": 20' "$tmp/cli.out" || bad "json: no iterations field"
fi

# Bad input: a clear message and a non-zero exit, at once.
for args in "-t nope" "-s 0" "-s 9m" "-n x" "-a -s 8" "-W 0 127.0.0.1" "-p 70000" "a b"; do
    # shellcheck disable=SC2086
    if timeout 10 "$bin" $args >/dev/null 2>"$tmp/err"; then
        bad "shoal-perf $args: accepted"
    elif ! grep -q "shoal-perf:" "$tmp/err"; then
        bad "shoal-perf $args: no message"
    fi
done
# Nothing listens: the client fails (ECONNREFUSED), it does not hang.
timeout 30 "$bin" -p 1 127.0.0.1 -n 1 >/dev/null 2>"$tmp/err"
rc=$?
[ $rc = 1 ] || bad "client to a closed port: exit $rc, expected 1"

if [ $fails != 0 ]; then
    echo "smoke.sh: $fails failure(s)"
    exit 1
fi
echo "smoke.sh: all shoal-perf smoke runs passed"
