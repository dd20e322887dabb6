#!/bin/bash
# example.sh -- the outside program: install shoal into a temporary
# prefix, build examples/c/linreg.c against the installed shoal_ps.h and
# libshoal-ps through pkg-config (not the source tree), and run it with 1
# server and 2 workers; every worker must learn the weights.
set -u
top=${abs_top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
build=${abs_top_builddir:-$PWD}   # make check runs tests in the build directory
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
command -v pkg-config >/dev/null || { echo "SKIPPED: pkg-config is not installed"; exit 77; }
# A staged install (DESTDIR): the configured prefix, under a scratch root;
# pkg-config is pointed at it with its sysroot.
make -C "$build" install DESTDIR="$scratch/root" >"$scratch/install.log" 2>&1 ||
    { tail -20 "$scratch/install.log"; fail "make install DESTDIR=$scratch/root"; }
prefix=$(sed -n 's/^prefix = //p' "$build/Makefile")
root=$scratch/root$prefix
pc="$root/lib/pkgconfig"
[ -f "$pc/shoal-ps.pc" ] && [ -f "$root/include/shoal_ps.h" ] &&
    echo "ok: installed shoal_ps.h, libshoal-ps and shoal-ps.pc" ||
    fail "shoal_ps.h or shoal-ps.pc not installed"
cp "$top/examples/c/linreg.c" "$top/examples/c/Makefile" "$scratch/"
# In a sanitizer build the installed libraries need the ASan runtime first:
# the example is built with the same flags.
san=$(sed -n 's/^SAN_CFLAGS = //p' "$build/Makefile")
PKG_CONFIG_PATH=$pc PKG_CONFIG_SYSROOT_DIR=$scratch/root make -C "$scratch" linreg CFLAGS="-O2 -Wall -Wextra -Werror $san" \
    >"$scratch/build.log" 2>&1 || { cat "$scratch/build.log"; fail "building the example"; }
flags=$(PKG_CONFIG_PATH=$pc PKG_CONFIG_SYSROOT_DIR=$scratch/root pkg-config --cflags --libs shoal-ps)
grep -q -- "-I$root/include" <<<"$flags" && grep -q -- "-L$root/lib" <<<"$flags" &&
    echo "ok: the example builds against the installed headers (pkg-config)" ||
    fail "pkg-config does not point at the installed prefix: $flags"
LD_LIBRARY_PATH=$root/lib timeout 120 "$root/bin/shoal-run" -n 2 -s 1 \
    -- "$scratch/linreg" >"$scratch/run.log" 2>&1
rc=$?
cat "$scratch/run.log" | grep -v '^\[' | tail -8
[ $rc = 0 ] && [ "$(grep -c 'largest weight error' "$scratch/run.log")" = 2 ] &&
    echo "ok: linear regression with 1 server and 2 workers learned the weights" ||
    fail "the example job (exit $rc)"
grep -q "applied [0-9]* gradients, each once" "$scratch/run.log" &&
    echo "ok: the server applied every gradient once" || fail "no exactly-once line"
