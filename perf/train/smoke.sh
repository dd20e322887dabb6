#!/bin/bash
# smoke.sh -- make check runs perf/train-compare briefly (1 epoch of 40
# iterations, 100 MPI_Allreduce calls) so the benchmark cannot rot: every
# method runs, the table has a figure for each, and every accuracy is above
# chance.  It checks no speed: perf/train-compare itself is the benchmark.
set -u
here=$(cd "$(dirname "$0")" && pwd)
top_build=${abs_top_builddir:-$PWD}
[ -x "$top_build/trainer/shoal-train" ] || { echo "smoke.sh: $top_build/trainer/shoal-train not built" >&2; exit 99; }
if ! /usr/bin/python3 -c 'import numpy, torch' 2>/dev/null; then
    echo "SKIPPED: no PyTorch for /usr/bin/python3 (install python3-torch: tools/install-deps --perf)"
    exit 77
fi
out=$(/usr/bin/python3 "$here/../train-compare" --smoke -B "$top_build" 2>&1); rc=$?
echo "$out"
fails=0
check() {  # check NAME STATUS
    if [ "$2" = 0 ]; then echo "ok: $1"; else echo "FAILED: $1"; fails=$((fails + 1)); fi
}
[ $rc = 0 ]; check "train-compare --smoke exits 0 (got $rc)" $?
# A row: method name, samples/s, accuracy above 50% (10 classes: chance is 10%).
row() { echo "$out" | grep -E "^$1 +[0-9]+ +([5-9][0-9]|100)\.[0-9]+% " >/dev/null; }
row 'PyTorch DDP \(gloo, 2 proc x 1 thread\)'; check "PyTorch DDP row" $?
row 'PyTorch single process \(1 thread\)'; check "single-process PyTorch row" $?
row 'shoal-train BSP \(1 server \+ 2 workers\)'; check "shoal-train row" $?
row 'PyTorch through shoal, bsp \(1\+2\)'; check "PyTorch through shoal row (MLP)" $?
row 'PyTorch through shoal, bsp, co-located'; check "PyTorch through shoal co-located row (MLP)" $?
# The CNN's table: after 40 iterations it is well above chance (10%), not yet at 50%.
cnn=$(echo "$out" | sed -n '/^Training: CNN/,/^Parameter round/p')
cnnrow() { echo "$cnn" | grep -E "^$1 +[0-9]+ +([2-9][0-9]|100)\.[0-9]+% " >/dev/null; }
cnnrow 'PyTorch DDP \(gloo, 2 proc x 1 thread\)'; check "CNN: PyTorch DDP row" $?
cnnrow 'PyTorch single process \(1 thread\)'; check "CNN: single-process PyTorch row" $?
cnnrow 'PyTorch through shoal, bsp \(1\+2\)'; check "CNN: PyTorch through shoal row" $?
cnnrow 'PyTorch through shoal, bsp, co-located'; check "CNN: PyTorch through shoal co-located row" $?
echo "$out" | grep -E '^  PyTorch through shoal, per step: [0-9]+ us .* 0 gradient copies' >/dev/null
check "PyTorch through shoal: per-step line, no gradient copied" $?
echo "$out" | grep -E '^  CNN: PyTorch through shoal >= 1.0x DDP samples/s' >/dev/null
check "issue 13's targets are stated" $?
echo "$out" | grep -E '^shoal-train BSP, in training .* [0-9]+ +[0-9]+$' >/dev/null; check "shoal round row (in training)" $?
echo "$out" | grep -E '^shoal-train BSP, back to back .* [0-9]+ +[0-9]+$' >/dev/null; check "shoal round row (back to back)" $?
if [ -x "$top_build/perf/train/mpi-allreduce" ] && command -v mpirun >/dev/null; then
    echo "$out" | grep -E '^MPI_Allreduce .* [0-9]+ +[0-9]+$' >/dev/null; check "MPI_Allreduce row" $?
    echo "$out" | grep -E '^ratio shoal round \(back to back\) / MPI_Allreduce: [0-9.]+x' >/dev/null; check "round ratio" $?
else
    echo "note: no MPI_Allreduce row here (perf/train/mpi-allreduce not built or no mpirun)"
fi
# Bad input: a clear error and a non-zero exit, no run.
err=$(/usr/bin/python3 "$here/../train-compare" --epochs 0 -B "$top_build" 2>&1); rc=$?
[ $rc = 2 ] && echo "$err" | grep -q -- '--epochs must be a positive integer'; check "--epochs 0 is refused (exit $rc)" $?
err=$(/usr/bin/python3 "$here/../train-compare" --data /nonexistent -B "$top_build" 2>&1); rc=$?
[ $rc = 2 ] && echo "$err" | grep -q '/nonexistent: no such directory'; check "--data /nonexistent is refused (exit $rc)" $?
[ $fails = 0 ]
