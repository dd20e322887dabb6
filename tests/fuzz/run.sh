#!/bin/bash
# run.sh -- build libshoal's libFuzzer targets with Debian's clang (ASan +
# UBSan + libFuzzer) and run each for a bounded time, starting from the
# seed corpus kept in the tree (tests/fuzz/corpus/<target>, copied first:
# the tree is never written).
#
#   tests/fuzz/run.sh [-t SECONDS] [-o OUTDIR] [TARGET...]
#        targets: hello (handshake, lib/core/wire.c + auth.c),
#                 boot (UCX's bootstrap stream, lib/core/boot.c),
#                 desc (descriptors, lib/core/mr.c),
#                 ps (shoal-train control messages, trainer/protocol.c);
#        default all; SECONDS per target (default $FUZZ_SECONDS or 25);
#        OUTDIR default ./fuzz-out (binaries, working corpus, crashes)
#   tests/fuzz/run.sh --regen-seeds    rewrite tests/fuzz/corpus/ from the
#                                      real encoders (tests/fuzz/make-seeds.c)
#
# Prints one line per target, "ok: fuzz <target>: ..." (executions, corpus
# size) or "FAIL: fuzz <target>: ...", as tools/run-tests counts them.
# Exit 0 if no target crashed, 1 if one did (its input is
# OUTDIR/crash-<target>-*; replay with OUTDIR/fuzz-<target> FILE), 77 if
# clang's libFuzzer is missing (SKIPPED, with the package to install).
set -u -o pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
secs=${FUZZ_SECONDS:-25}
out=$PWD/fuzz-out
regen=0
targets=()
while [ $# -gt 0 ]; do
  case $1 in
    -t) secs=$2; shift 2 ;;
    -o) out=$2; shift 2 ;;
    --regen-seeds) regen=1; shift ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    hello|boot|desc|ps) targets+=("$1"); shift ;;
    *) echo "run.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=(hello boot desc ps)
case $secs in ''|*[!0-9]*) echo "run.sh: -t wants whole seconds, not '$secs'" >&2; exit 2 ;; esac

CC=${FUZZ_CC:-clang}
if ! command -v "$CC" >/dev/null; then
  echo "SKIPPED: fuzzing needs clang with libFuzzer (apt-get install clang)"; exit 77
fi
if ! echo 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n){(void)d;(void)n;return 0;}' |
     "$CC" -x c -fsanitize=fuzzer - -o /dev/null 2>/dev/null; then
  echo "SKIPPED: $CC cannot link libFuzzer (-fsanitize=fuzzer; apt-get install clang)"; exit 77
fi
crypto=$(pkg-config --cflags --libs libcrypto) ||
  { echo "run.sh: libcrypto not found (apt-get install libssl-dev)" >&2; exit 1; }

mkdir -p "$out" || exit 1
FLAGS="-std=c11 -D_GNU_SOURCE -g -O1 -Wall -Wextra -Werror -Wno-unused-parameter
  -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
  -I$top/lib -I$top/lib/core -I$top/lib/ps"
CORE="$top/lib/core/wire.c $top/lib/core/mr.c $top/lib/core/auth.c $top/lib/core/error.c
  $top/lib/core/config.c $top/lib/core/boot.c"
build() {  # build NAME SOURCES...
  local name=$1; shift
  # shellcheck disable=SC2086
  "$CC" $FLAGS "$@" $crypto -o "$out/$name" 2>"$out/$name.build.log" ||
    { cat "$out/$name.build.log"; echo "FAIL: $name: does not build"; exit 1; }
}

if [ $regen = 1 ]; then
  # make-seeds is an ordinary program: no -fsanitize=fuzzer main.
  # shellcheck disable=SC2086
  "$CC" -std=c11 -D_GNU_SOURCE -g -I"$top/lib" -I"$top/lib/core" -I"$top/lib/ps" \
    -DFUZZ_NO_TARGET "$here/make-seeds.c" $CORE "$top/lib/ps/ps_proto.c" $crypto \
    -o "$out/make-seeds" || exit 1
  rm -rf "$here/corpus" &&
    mkdir -p "$here/corpus/hello" "$here/corpus/boot" "$here/corpus/desc" "$here/corpus/ps"
  "$out/make-seeds" "$here/corpus" || exit 1
  echo "run.sh: seeds written: $(find "$here/corpus" -type f | wc -l) files in $here/corpus"
  exit 0
fi

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}:abort_on_error=1
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
failed=0
for t in "${targets[@]}"; do
  case $t in
    hello) build fuzz-hello "$here/fuzz-hello.c" $CORE ;;
    boot)  build fuzz-boot "$here/fuzz-boot.c" $CORE ;;
    desc)  build fuzz-desc "$here/fuzz-desc.c" $CORE ;;
    ps)    build fuzz-ps "$here/fuzz-ps.c" "$top/lib/ps/ps_proto.c" ;;
  esac
  work=$out/corpus-$t
  mkdir -p "$work"
  log=$out/fuzz-$t.log
  # Working corpus first (new inputs go there), the tree's seeds second.
  "$out/fuzz-$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$out/crash-$t-" "$work" "$here/corpus/$t" \
    >"$log" 2>&1
  rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1)
  size=$(find "$work" -type f | wc -l)
  if [ $rc = 0 ]; then
    printf 'ok: fuzz %s: %s executions in %s s, %s, working corpus %s inputs\n' \
      "$t" "${execs:-?}" "$secs" "${cov:-cov: ?}" "$size"
  else
    failed=1
    printf 'FAIL: fuzz %s: exit %s after %s executions; last lines of %s:\n' \
      "$t" "$rc" "${execs:-?}" "$log"
    grep -vE '^#[0-9]+' "$log" | tail -30
    ls "$out"/crash-"$t"-* 2>/dev/null
  fi
done
exit $failed
