# lib.sh -- shared by the trainer's job tests (sourced).  Finds the built
# shoal-train and tools/shoal-run, makes a scratch directory, and gives
# small helpers.  A test that cannot run here exits 77 with the reason.
set -u
here=$(cd "$(dirname "$0")" && pwd)
top_src=${abs_top_srcdir:-$(cd "$here/../.." && pwd)}
top_build=${abs_top_builddir:-$PWD}
train=$top_build/trainer/shoal-train
run=$top_src/tools/shoal-run
data=${SHOAL_TEST_DATA:-/usr/share/datasets/fashion-mnist}
[ -x "$train" ] || { echo "cannot find $train (build first)" >&2; exit 99; }
scratch=$(mktemp -d "${TMPDIR:-/tmp}/shoal-train-test.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
failures=0

skip() { echo "SKIPPED: $*"; exit 77; }
need_data() {
    [ -r "$data/train-images-idx3-ubyte.gz" ] ||
        skip "no Fashion-MNIST in $data (apt-get install dataset-fashion-mnist)"
}
ok() { echo "ok: $*"; }
bad() { echo "FAIL: $*"; failures=$((failures + 1)); }
# check DESCRIPTION COMMAND...: the command must succeed.
check() { local d=$1; shift; if "$@"; then ok "$d"; else bad "$d"; fi; }
# job LOG WORKERS SERVERS ARGS...: a local job, bounded in time.
job() {
    local log=$1 w=$2 s=$3; shift 3
    timeout 300 "$run" -n "$w" -s "$s" --timeout 240 -- "$train" --data "$data" -q "$@" \
        >"$log" 2>&1
}
# accuracy LOG: the final test accuracy in percent, as an integer x100.
accuracy() {
    sed -n 's/^final test accuracy: \([0-9.]*\)%.*/\1/p' "$1" | tail -1 |
        awk '{printf "%d", $1 * 100}'
}
finish() {
    if [ $failures -ne 0 ]; then
        echo "$failures check(s) failed"
        exit 1
    fi
    exit 0
}
