#!/bin/bash
# layout.sh -- the Python package's ctypes mirror of shoal_ps.h
# (python/shoal/_lib.py) must match the compiler's layout field for field
# (tests/torch/ps-layout prints it), and the package must load the library
# of this build tree.  Needs only Debian's python3.
. "$(dirname "$0")/lib.sh"
need_python
c=$top_build/tests/torch/ps-layout
[ -x "$c" ] || { echo "cannot find $c (make check builds it)" >&2; exit 99; }
"$c" >"$scratch/c.txt" || bad "ps-layout ran"
"$py" - >"$scratch/py.txt" <<'PY'
import ctypes
from shoal import _lib
for name, cls in (("shoal_ps_job_t", _lib.Job), ("shoal_ps_config_t", _lib.Config),
                  ("shoal_ps_tensor_t", _lib.Tensor)):
    print("%s.sizeof 0 %d" % (name, ctypes.sizeof(cls)))
    for f, t in cls._fields_:
        d = getattr(cls, f)
        print("%s.%s %d %d" % (name, f, d.offset, d.size))
PY
if diff -u "$scratch/c.txt" "$scratch/py.txt" >"$scratch/diff"; then
    ok "ctypes mirror = C layout ($(wc -l <"$scratch/c.txt") fields and sizes)"
else
    cat "$scratch/diff"; bad "ctypes mirror differs from the C layout (see the diff above)"
fi
out=$("$py" -c 'from shoal import _lib; _lib.load(); print(_lib.where())' 2>&1)
[ "$out" = "$top_build/lib/ps/.libs/libshoal-ps.so.0" ] &&
    ok "loads this build's library ($out)" || bad "loaded '$out', not this build's library"
# No library where it is told to look, and none elsewhere: a clear error.
if /sbin/ldconfig -p 2>/dev/null | grep -q 'libshoal-ps\.so\.0'; then
    echo "note: libshoal-ps is installed system-wide; the no-library check cannot run here"
    finish
fi
mkdir -p "$scratch/empty/shoal"
cp "$top_src"/python/shoal/*.py "$scratch/empty/shoal/"
out=$(cd "$scratch" && SHOAL_LIB_DIR=$scratch/empty PYTHONPATH=$scratch/empty LD_LIBRARY_PATH= \
    "$py" -c 'import shoal.ps; shoal.ps.make_config()' 2>&1)
echo "$out" | grep -q "cannot find libshoal-ps: looked in" &&
    echo "$out" | grep -q "SHOAL_LIB_DIR" &&
    ok "no library: ShoalError naming where it looked" ||
    { echo "$out" | tail -3; bad "no library: expected a ShoalError saying where it looked"; }
finish
