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
# need_vm WHAT: set $vm to tools/softroce-vm, or skip (status 77) saying
# why WHAT cannot run: not root, no runner, no VM bootable here.
need_vm() {
    [ "$(id -u)" = 0 ] || skip "$1: the soft-RoCE VM needs root"
    vm=$top_src/tools/softroce-vm
    [ -x "$vm" ] || skip "$1: tools/softroce-vm not found"
    local why
    why=$("$vm" --check 2>&1) || skip "$1: no soft-RoCE VM: $(echo "$why" | tr '\n' ' ')"
}
need_data() {
    [ -r "$data/train-images-idx3-ubyte.gz" ] || [ -r "$data/train-images-idx3-ubyte" ] ||
        skip "no Fashion-MNIST in $data (apt-get install dataset-fashion-mnist)"
}
# data_slice DIR NTRAIN NTEST: the first NTRAIN training and NTEST test
# images (and labels) of $data as uncompressed IDX files in DIR, for short
# jobs (an emulated VM would spend seconds in gunzip).
data_slice() {
    local out=$1
    mkdir -p "$out" || return 1
    be32() { printf "$(printf '\\x%02x\\x%02x\\x%02x\\x%02x' $(($1 >> 24 & 255)) \
        $(($1 >> 16 & 255)) $(($1 >> 8 & 255)) $(($1 & 255)))"; }
    slice() { # NAME COUNT
        { printf '\x00\x00\x08\x03'; be32 "$2"; be32 28; be32 28
          gzip -dc "$data/$1-images-idx3-ubyte.gz" | tail -c +17 | head -c $(($2 * 784)); } \
            >"$out/$1-images-idx3-ubyte" &&
        { printf '\x00\x00\x08\x01'; be32 "$2"
          gzip -dc "$data/$1-labels-idx1-ubyte.gz" | tail -c +9 | head -c "$2"; } \
            >"$out/$1-labels-idx1-ubyte" &&
        [ "$(stat -c %s "$out/$1-images-idx3-ubyte")" = $((16 + $2 * 784)) ] &&
        [ "$(stat -c %s "$out/$1-labels-idx1-ubyte")" = $((8 + $2)) ]
    }
    slice train "$2" && slice t10k "$3"
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
