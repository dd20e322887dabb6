#!/bin/bash
# verbs-vm.sh -- run libshoal's transport suite on the verbs provider.
#
# Where the host itself has an ACTIVE RDMA port, the suite runs here
# directly (SHOAL_TEST_HOST must then name an address on that device).
# Otherwise it runs in one boot of the soft-RoCE VM (tools/softroce-vm),
# after an ib_write_bw / ib_write_lat smoke test that shows rxe0 works.
# Exit status: the suite's; 77 (skipped) when neither is possible.
set -u

here=$(cd "$(dirname "$0")" && pwd)
top_src=${abs_top_srcdir:-${srcdir:+$(cd "$srcdir" && pwd)}}
top_src=${top_src:-$(cd "$here/.." && pwd)}
top_build=${abs_top_builddir:-$PWD}
bin=$top_build/tests/transport/test-transport
[ -x "$bin" ] || bin=$here/transport/test-transport
vbin=$(dirname "$bin")/test-verbs
hbin=$(dirname "$bin")/test-hostile
if [ ! -x "$bin" ] || [ ! -x "$vbin" ] || [ ! -x "$hbin" ]; then
    echo "verbs-vm.sh: cannot find tests/transport/test-transport and test-verbs" \
         "(build them first: make check)" >&2
    exit 99
fi
bindir=$(cd "$(dirname "$bin")/../.." && pwd)

skip() {
    echo "SKIPPED: verbs suite: $*"
    exit 77
}

# A real RDMA port here: no VM needed.
for st in /sys/class/infiniband/*/ports/*/state; do
    if [ -r "$st" ] && grep -q ACTIVE "$st"; then
        echo "verbs-vm.sh: this host has an active RDMA port ($st); running the suite here"
        "$bin" verbs; rc=$?
        "$vbin"; vrc=$?
        "$hbin" verbs; hrc=$?
        [ $rc = 0 ] && [ $vrc = 0 ] && [ $hrc = 0 ]; exit $?
    fi
done

[ "$(id -u)" = 0 ] || skip "no RDMA device here and the soft-RoCE VM needs root"
vm=$top_src/tools/softroce-vm
[ -x "$vm" ] || skip "tools/softroce-vm not found"
if ! why=$("$vm" --check 2>&1); then
    skip "no RDMA device here and no soft-RoCE VM: $(echo "$why" | tr '\n' ' ')"
fi

# One boot: perftest smoke test (informational), then the transport suite,
# then the verbs-only tests.
guest_cmd='
echo "== rxe: $SOFTROCE_DEV on $SOFTROCE_NETDEV, $SOFTROCE_IP"
# perftest TOOL ARGS: server in the background, client against it, print
# its result row.
perftest() {
    tool=$1; shift
    echo "== $tool $* (environment check)"
    timeout 40 "$tool" -d "$SOFTROCE_DEV" "$@" -F >/dev/null 2>&1 &
    sleep 1
    timeout 30 "$tool" -d "$SOFTROCE_DEV" "$@" -F "$SOFTROCE_IP" 2>&1 |
        grep -A1 "#bytes" || echo "$tool failed"
    wait
}
if command -v ib_write_bw >/dev/null; then
    perftest ib_write_bw -s 65536 -n 500
    perftest ib_write_lat -s 2 -n 1000
fi
# The library on the same device, same sizes: its figures next to
# perftest'"'"'s (informational; TCG timing is noisy, nothing asserts on it).
# shoal-demo reports MB/s in 10^6 bytes and the put+immediate round trip;
# perftest MB/sec in 2^20 bytes and half a round trip.
demo=$SHOAL_BUILDDIR/tools/shoal-demo
if [ -x "$demo" ]; then
    echo "== shoal-demo -s 65536 -n 500 --pings 1000 (the library, same device)"
    SHOAL_TRANSPORT=verbs timeout 60 "$demo" -H "$SOFTROCE_IP" -s 65536 -n 500 --pings 1000 \
        2>&1 | grep -E "transport|bandwidth|round trip" || echo "shoal-demo failed"
fi
echo "== transport suite on verbs"
cd "$SHOAL_BUILDDIR" || exit 99
start=$(date +%s)
SHOAL_TEST_HOST=$SOFTROCE_IP "$SHOAL_TEST_BIN" verbs
rc=$?
echo "== suite: exit $rc in $(( $(date +%s) - start )) s"
echo "== verbs-only tests"
start=$(date +%s)
SHOAL_TEST_HOST=$SOFTROCE_IP "$SHOAL_TEST_VBIN"
vrc=$?
echo "== verbs-only tests: exit $vrc in $(( $(date +%s) - start )) s"
echo "== authentication on verbs (tests/transport/test-hostile verbs)"
start=$(date +%s)
SHOAL_TEST_HOST=$SOFTROCE_IP "$SHOAL_TEST_HBIN" verbs
hrc=$?
echo "== authentication on verbs: exit $hrc in $(( $(date +%s) - start )) s"
# rxe'"'"'s own counters (retries, sequence errors, drops): where a timing
# failure came from, should one happen.
echo "== rxe counters: $(rdma statistic show 2>/dev/null | tr -s " " | tr "\n" " ")"
[ $rc = 0 ] && [ $vrc = 0 ] && [ $hrc = 0 ]
'
"$vm" -t 420 -w "$bindir" -e "SHOAL_BUILDDIR=$bindir" -e "SHOAL_TEST_BIN=$bin" -e "SHOAL_TEST_VBIN=$vbin" \
    -e "SHOAL_TEST_HBIN=$hbin" \
    -e "ASAN_OPTIONS=${ASAN_OPTIONS:-}" -e "UBSAN_OPTIONS=${UBSAN_OPTIONS:-}" -c "$guest_cmd"
rc=$?
case $rc in
    124) echo "verbs-vm.sh: the VM run hit its 420 s limit" >&2; exit 1 ;;
    125) echo "verbs-vm.sh: the VM died before reporting a result" >&2; exit 99 ;;
esac
exit $rc
