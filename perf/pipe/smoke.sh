#!/bin/bash
# smoke.sh -- make check runs perf/pipe-compare briefly (--smoke: a small
# model, 6 iterations) so the benchmark cannot rot: every configuration
# runs and its row has a rate, busy shares for the pipelines and bytes
# sent.  It checks no speed: perf/pipe-compare itself is the benchmark.
set -u
here=$(cd "$(dirname "$0")" && pwd)
top_build=${abs_top_builddir:-$PWD}
[ -x "$top_build/trainer/shoal-train" ] || { echo "smoke.sh: $top_build/trainer/shoal-train not built" >&2; exit 99; }
data=${SHOAL_TEST_DATA:-/usr/share/datasets/fashion-mnist}
[ -r "$data/train-images-idx3-ubyte.gz" ] ||
    { echo "SKIPPED: no Fashion-MNIST in $data (apt-get install dataset-fashion-mnist)"; exit 77; }
out=$(timeout 300 "$here/../pipe-compare" --smoke --data "$data" -B "$top_build" 2>&1); rc=$?
echo "$out"
fails=0
check() {  # check NAME STATUS
    if [ "$2" = 0 ]; then echo "ok: $1"; else echo "FAILED: $1"; fails=$((fails + 1)); fi
}
[ $rc = 0 ]; check "pipe-compare --smoke exits 0 (got $rc)" $?
num='[0-9]+'
echo "$out" | grep -E "^data parallel +[1-9][0-9]* +- +- +- +[0-9.]+ \+ 0\.00 +$num$" >/dev/null
check "data-parallel row" $?
echo "$out" | grep -E "^2 x 2 stages +[1-9][0-9]* +$num% $num% +80% +$num% +[0-9.]+ \+ [0-9.]+ +$num$" >/dev/null
check "2 x 2 stages row (busy per stage, ideal 80%)" $?
echo "$out" | grep -E "^1 x 4 stages +[1-9][0-9]* +$num% $num% $num% $num% +57% +$num% +[0-9.]+ \+ [0-9.]+ +$num$" >/dev/null
check "1 x 4 stages row (busy per stage, ideal 57%)" $?
echo "$out" | grep -q "load average [0-9.]* [0-9.]* [0-9.]* before"; check "the machine's load is in the header" $?
# Bad input: a clear error and exit 2, no run.
err=$("$here/../pipe-compare" --stages 3 -B "$top_build" 2>&1); rc=$?
[ $rc = 2 ] && echo "$err" | grep -q -- '--stages 3: 4 workers must be a multiple'
check "--stages 3 with 4 workers is refused (exit $rc)" $?
err=$("$here/../pipe-compare" --data /nonexistent -B "$top_build" 2>&1); rc=$?
[ $rc = 2 ] && echo "$err" | grep -q '/nonexistent: no such directory'
check "--data /nonexistent is refused (exit $rc)" $?
[ $fails = 0 ]
