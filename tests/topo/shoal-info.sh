#!/bin/bash
# shoal-info.sh -- tools/shoal-info end to end: it runs here, its JSON
# parses, the plan for a synthetic two-socket node (tests/topo/two-socket.xml,
# mlx5_0 on package 1) is the expected one, and bad input fails clearly.
set -u
here=$(cd "$(dirname "$0")" && pwd)
top_build=${abs_top_builddir:-$PWD}
info=$top_build/tools/shoal-info
xml=$here/two-socket.xml
[ -x "$info" ] || { echo "shoal-info.sh: $info not built" >&2; exit 99; }
fails=0
check() {  # check NAME COND-EXIT-STATUS
    if [ "$2" = 0 ]; then echo "ok: $1"; else echo "FAILED: $1"; fails=$((fails + 1)); fi
}
out=$("$info" 2>&1); rc=$?
check "runs here (exit $rc)" $rc
echo "$out" | grep -q '^Selection' && echo "$out" | grep -q 'placement: ' ; check "text has a selection and a placement" $?

json=$("$info" --json -x "$xml" -d mlx5_0 -r 1 -n 2 2>/dev/null); rc=$?
check "--json --topology (exit $rc)" $rc
if command -v python3 >/dev/null; then
    echo "$json" | python3 -c '
import json, sys
d = json.load(sys.stdin)
p = d["selection"]["placement"]
assert p["cpus"] == "6,7", p
assert p["numa_node"] == 1 and p["ncpus"] == 2 and p["local_rank"] == 1, p
assert d["topology"]["packages"] == 2 and d["topology"]["numa_nodes"] == 2
assert any(x["name"] == "mlx5_0" and "Package 1" in x["locality"] for x in d["topology"]["devices"])
'
    check "JSON parses; rank 1 of 2 gets CPUs 6,7 near mlx5_0 on NUMA node 1" $?
else
    echo "$json" | grep -q '"cpus": "6,7"'
    check "JSON plan: rank 1 of 2 gets CPUs 6,7 (python3 missing: grep only)" $?
fi

err=$("$info" --bind 0,65535 2>&1 >/dev/null); rc=$?
[ $rc = 1 ] && echo "$err" | grep -q "CPU 65535 does not exist"
check "impossible --bind: exit 1 naming the CPU (got $rc)" $?
err=$("$info" --bind 3-1 2>&1 >/dev/null); rc=$?
[ $rc = 2 ] && echo "$err" | grep -q "SHOAL_BIND='3-1'"
check "malformed --bind: exit 2 naming the value (got $rc)" $?
err=$("$info" --topology /nonexistent.xml 2>&1 >/dev/null); rc=$?
[ $rc = 2 ] && echo "$err" | grep -q "/nonexistent.xml"
check "missing --topology file: exit 2 naming it (got $rc)" $?
err=$(SHOAL_BIND=sometimes "$info" 2>&1 >/dev/null); rc=$?
[ $rc = 2 ] && echo "$err" | grep -q "SHOAL_BIND='sometimes'"
check "bad SHOAL_BIND in the environment: exit 2 (got $rc)" $?
[ $fails = 0 ]
