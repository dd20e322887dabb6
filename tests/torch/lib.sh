# lib.sh -- shared by the Python package's tests (sourced): finds the source
# and build trees, points the package at them (PYTHONPATH, SHOAL_LIB_DIR),
# keeps PyTorch to one thread, makes a scratch directory, and gives the
# ok:/FAIL: helpers tools/run-tests counts.  A test that cannot run here
# exits 77 with the reason.
set -u
here=$(cd "$(dirname "$0")" && pwd)
top_src=${abs_top_srcdir:-$(cd "$here/../.." && pwd)}
top_build=${abs_top_builddir:-$PWD}
run=$top_src/tools/shoal-run
py=/usr/bin/python3   # Debian's python3, where python3-torch lives
data=${SHOAL_TEST_DATA:-/usr/share/datasets/fashion-mnist}
examples=$top_src/examples/torch
export PYTHONPATH=$top_src/python${PYTHONPATH:+:$PYTHONPATH}
export SHOAL_LIB_DIR=$top_build
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
export PYTHONDONTWRITEBYTECODE=1   # no __pycache__ in the source tree
[ -e "$top_build/lib/ps/.libs/libshoal-ps.so.0" ] ||
    { echo "cannot find $top_build/lib/ps/.libs/libshoal-ps.so.0 (build first)" >&2; exit 99; }
scratch=$(mktemp -d "${TMPDIR:-/tmp}/shoal-py-test.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
failures=0

skip() { echo "SKIPPED: $*"; exit 77; }
need_python() {
    [ -x "$py" ] || skip "no $py (Debian's python3)"
}
need_numpy() {
    need_python
    "$py" -c 'import numpy' 2>/dev/null ||
        skip "no numpy for $py (apt-get install python3-numpy)"
}
need_torch() {
    need_numpy
    "$py" -c 'import torch' 2>/dev/null ||
        skip "no PyTorch for $py (apt-get install python3-torch; tools/install-deps --perf)"
}
need_data() {
    [ -r "$data/train-images-idx3-ubyte.gz" ] || [ -r "$data/train-images-idx3-ubyte" ] ||
        skip "no Fashion-MNIST in $data (apt-get install dataset-fashion-mnist)"
}
ok() { echo "ok: $*"; }
bad() { echo "FAIL: $*"; failures=$((failures + 1)); }
# check DESCRIPTION COMMAND...: the command must succeed.
check() { local d=$1; shift; if "$@"; then ok "$d"; else bad "$d"; fi; }
# job LOG WORKERS SERVERS SECONDS COMMAND...: a local job through shoal-run,
# bounded in time (shoal-run stops every rank after SECONDS).
job() {
    local log=$1 w=$2 s=$3 secs=$4; shift 4
    timeout $((secs + 30)) "$run" -n "$w" -s "$s" --timeout "$secs" -- "$@" >"$log" 2>&1
}
# accuracy LOG: the final test accuracy in percent, as an integer x100.
accuracy() {
    sed -n 's/.*final test accuracy: \([0-9.]*\)%.*/\1/p' "$1" | tail -1 |
        awk '{printf "%d", $1 * 100}'
}
# has LOG REGEX DESCRIPTION: the log must have a line matching REGEX.
has() {
    if grep -Eq -- "$2" "$1"; then ok "$3"; else tail -n 8 "$1" | sed 's/^/    /'; bad "$3"; fi
}
finish() {
    if [ $failures -ne 0 ]; then
        echo "$failures check(s) failed"
        exit 1
    fi
    exit 0
}
