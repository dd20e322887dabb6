#!/bin/bash
# scale.sh -- 32 workers and 4 servers on this machine, in bsp, async and
# ssp (perf/scale, short: MLP 784-32-10, a 32,000-image slice, 14 epochs =
# 210 iterations): each job must finish with all 32 workers connected to
# all 4 servers, every server must account for its gradients (each applied
# once), and the job must learn (bsp 80%, async and ssp 65%: 84.8% and 74.9%
# here).  A server may hold at most 64 + 8 per worker file descriptors (2
# per worker here, on loopback: UCX's connection-manager socket and one
# TCP connection; 3 when UCX also uses another interface) and 200 MB.
# (perf/scale keeps UCX on loopback, UCX_NET_DEVICES=lo, unless it is set.)
# perf/scale with its defaults is the full
# measurement (docs/PERFORMANCE.md "Scale").
. "$(dirname "$0")/../trainer/lib.sh"
need_data
W=32 S=4
if ! "$top_src/perf/scale" -B "$top_build" -w $W -s $S -m "bsp async ssp" --epochs 14 \
        --limit 240 >"$scratch/scale.out" 2>&1; then
    cat "$scratch/scale.out"
    bad "perf/scale reported a failed job"
fi
sed -n '/^mode/,$p' "$scratch/scale.out" | sed 's/^/    /'
for mode in bsp async ssp; do
    l=$(grep "^scale: mode=$mode workers=$W servers=$S " "$scratch/scale.out")
    if [ -z "$l" ]; then bad "$mode: no result line"; continue; fi
    declare -A v=()
    for kv in ${l#scale: }; do v[${kv%%=*}]=${kv#*=}; done
    bar=6500; [ $mode = bsp ] && bar=8000
    [ "${v[status]}" = 0 ] && [ "${v[connected]}" = $W ] && [ "${v[servers_accounted]}" = $S ] &&
        ok "$mode: $W workers x $S servers finished in ${v[wall_s]} s (all connected after ${v[all_up_s]} s), every server accounted for its gradients" ||
        bad "$mode: status ${v[status]}, ${v[connected]} of $W workers connected, ${v[servers_accounted]} of $S servers accounted"
    a=$(awk -v a="${v[accuracy]}" 'BEGIN { printf "%d", a * 100 }')
    [ "${v[accuracy]}" != - ] && [ "$a" -ge $bar ] &&
        ok "$mode: final accuracy ${v[accuracy]}%" ||
        bad "$mode: final accuracy ${v[accuracy]}%, bar $((bar / 100))%"
    [ "${v[server_fds]}" -gt 0 ] && [ "${v[server_fds]}" -le $((64 + 8 * W)) ] &&
        ok "$mode: a server held at most ${v[server_fds]} file descriptors" ||
        bad "$mode: a server held ${v[server_fds]} file descriptors (at most $((64 + 8 * W)))"
    awk -v m="${v[server_hwm_mb]}" 'BEGIN { exit !(m > 0 && m <= 200) }' &&
        ok "$mode: server peak memory ${v[server_hwm_mb]} MB" ||
        bad "$mode: server peak memory ${v[server_hwm_mb]} MB (at most 200)"
    unset v
done
finish
