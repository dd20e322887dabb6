#!/bin/bash
# install.sh -- `make install` puts the Python package where Debian's
# python3 finds it (dist-packages of the prefix: /usr/lib/python3/... or
# /usr/local/lib/python3.X/...), with _install.py naming the libdir; the
# installed package (not the source tree's) then runs a numpy job against
# the installed library.  A staged install (DESTDIR) in a scratch root, so
# nothing outside it is touched.  Needs numpy.
. "$(dirname "$0")/lib.sh"
need_numpy
root=$scratch/root
make -C "$top_build" install DESTDIR="$root" >"$scratch/install.log" 2>&1 ||
    { tail -20 "$scratch/install.log"; bad "make install DESTDIR=$root"; finish; }
prefix=$(sed -n 's/^prefix = //p' "$top_build/Makefile")
libdir=$(sed -n 's/^libdir = //p' "$top_build/Makefile" | sed "s|\${exec_prefix}|$prefix|")
case $prefix in
    /usr) pydir=/usr/lib/python3/dist-packages ;;
    /usr/local) pydir=$("$py" -c 'import sys; print("/usr/local/lib/python%d.%d/dist-packages" % sys.version_info[:2])') ;;
    *) pydir=$prefix/lib/python3/dist-packages ;;
esac
if [ -f "$root$pydir/shoal/torch.py" ] && [ -f "$root$pydir/shoal/_install.py" ]; then
    ok "the package is installed in $pydir/shoal (prefix $prefix)"
else
    find "$root" -name 'torch.py' | sed 's/^/    found: /'
    bad "no package in $pydir/shoal (prefix $prefix)"; finish
fi
case $prefix in /usr|/usr/local)
    "$py" -c "import sys; sys.exit('$pydir' not in sys.path)" &&
        ok "$pydir is on Debian python3's sys.path" || bad "$pydir is not on python3's sys.path" ;;
esac
grep -q "^LIBDIR = \"$libdir\"$" "$root$pydir/shoal/_install.py" &&
    ok "_install.py names the libdir ($libdir)" ||
    { cat "$root$pydir/shoal/_install.py"; bad "_install.py does not name $libdir"; }
# The installed package and library only: no source tree, no build tree.
# (libdir is under the scratch root, so the loader finds it through
# LD_LIBRARY_PATH, as it would find $libdir itself after a real install.)
cd "$scratch" || exit 99
env -u SHOAL_LIB_DIR PYTHONPATH="$root$pydir" LD_LIBRARY_PATH="$root$libdir" \
    timeout 90 "$root$prefix/bin/shoal-run" -n 2 -s 1 --timeout 60 -- \
    "$py" "$here/numpy-job.py" sgd >"$scratch/job.log" 2>&1
rc=$?
[ $rc = 0 ] && ! grep -q '^FAIL' "$scratch/job.log" &&
    ok "a job runs from the installed package and library" ||
    { tail -8 "$scratch/job.log"; bad "the job from the installed package exited $rc"; }
where=$(env -u SHOAL_LIB_DIR PYTHONPATH="$root$pydir" LD_LIBRARY_PATH="$root$libdir" "$py" -c '
import shoal, shoal._lib as l
l.load()
maps = open("/proc/self/maps").read().split()
print(shoal.__file__, [m for m in maps if "libshoal-ps.so" in m][0])' 2>&1)
case $where in
    "$root$pydir/shoal/__init__.py $root$libdir/libshoal-ps.so"*|"$root$pydir/shoal/__init__.py $libdir/libshoal-ps.so"*)
        ok "it imported the installed package and loaded the installed library" ;;
    *) bad "imported/loaded: $where" ;;
esac
make -C "$top_build" uninstall DESTDIR="$root" >"$scratch/uninstall.log" 2>&1
[ ! -e "$root$pydir/shoal" ] && ok "make uninstall removes the package" ||
    { ls -la "$root$pydir/shoal"; bad "make uninstall left $pydir/shoal"; }
finish
