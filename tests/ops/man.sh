#!/bin/bash
# man.sh -- the man pages: every page under docs/man renders with man-db
# without a warning (MANWIDTH=80 man --warnings -l); every function
# lib/libshoal.map exports has a section-3 page (its own or a .so link)
# that names it and shows its prototype exactly as lib/shoal.h declares
# it; every function a page names is exported; every page is installed
# (listed in a Makefile fragment's dist_man_MANS).
set -u
top_src=${abs_top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
failures=0
ok() { echo "ok: $*"; }
bad() { echo "FAIL: $*"; failures=$((failures + 1)); }
command -v man >/dev/null || { echo "SKIPPED: no man (apt-get install man-db)"; exit 77; }
scratch=$(mktemp -d "${TMPDIR:-/tmp}/shoal-man-test.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
cd "$top_src/docs/man" || exit 99   # .so links are relative to here

# render PAGE WIDTH: the page as text, overstrikes removed; warnings to
# $scratch/err.
render() {
    MANWIDTH=$2 MAN_KEEP_FORMATTING= man --warnings -l "$1" 2>"$scratch/err" |
        sed 's/.\x08//g'
}

# ---- every page renders cleanly -------------------------------------------
pages=$(find . -name '*.[0-9]' | sed 's|^\./||' | sort)
n=0 warned=0
for p in $pages; do
    n=$((n + 1))
    out=$(render "$p" 80)
    if [ -s "$scratch/err" ]; then
        warned=$((warned + 1)); bad "$p: $(head -3 "$scratch/err" | tr '\n' ' ')"
    elif ! grep -q '^NAME' <<<"$out" || ! grep -q '^SEE ALSO\|^SYNOPSIS' <<<"$out"; then
        bad "$p: rendered without NAME and SYNOPSIS/SEE ALSO sections"
    fi
done
[ $warned = 0 ] && ok "$n pages render at 80 columns without a warning"

# ---- every page is installed ------------------------------------------------
frag=$(cat "$top_src"/Makefile.am "$top_src"/*/local.mk "$top_src"/*/*/local.mk 2>/dev/null)
missing=""
for p in $pages; do
    grep -q "docs/man/$p\b" <<<"$frag" || missing="$missing $p"
done
[ -z "$missing" ] && ok "every page is in dist_man_MANS" ||
    bad "pages not installed (add them to dist_man_MANS):$missing"

# ---- the library's functions --------------------------------------------------
exported=$(sed -n 's/^ *\(shoal_[a-z_0-9]*\);/\1/p' "$top_src/lib/libshoal.map" | sort)
[ "$(wc -w <<<"$exported")" -ge 40 ] || bad "read only $(wc -w <<<"$exported") functions from libshoal.map"
# shoal.h's declarations, one per line, whitespace squeezed: the return
# type (one word, perhaps const, perhaps pointers), the name, the
# parameters.
proto_re='(const )?[a-z_0-9]+ \**shoal_[a-z_0-9]+\([^()]*\)$'
tr '\n' ' ' <"$top_src/lib/shoal.h" | sed 's|/\*[^*]*\*\+\([^/*][^*]*\*\+\)*/||g' |
    tr ';' '\n' | tr -s ' ' | sed 's/ *$//' | grep -oE "$proto_re" >"$scratch/decls"
nopage="" noproto="" unnamed=""
for f in $exported; do
    page=man3/$f.3
    if [ ! -f "$page" ]; then nopage="$nopage $f"; continue; fi
    text=$(render "$page" 200)
    sed -n '/^NAME/,/^SYNOPSIS/p' <<<"$text" | grep -qw "$f" || unnamed="$unnamed $f"
    # The page's prototype of f, joined across lines, must be shoal.h's.
    proto=$(sed -n '/^SYNOPSIS/,/^DESCRIPTION/p' <<<"$text" | tr '\n' ' ' | tr ';' '\n' |
        tr -s ' ' | sed 's/ *$//' | grep -oE "$proto_re" | grep -E "[ *]$f\(")
    want=$(grep -E "[ *]$f\(" "$scratch/decls")
    if [ -z "$proto" ] || [ "$proto" != "$want" ]; then
        noproto="$noproto $f"
        echo "    $f: page '${proto}'" >&2
        echo "    $f: shoal.h '${want}'" >&2
    fi
done
[ -z "$nopage" ] && ok "every one of the $(wc -w <<<"$exported") functions in libshoal.map has a page" ||
    bad "no man page for:$nopage"
[ -z "$unnamed" ] && ok "each function's page names it in NAME" ||
    bad "pages that do not name their function in NAME:$unnamed"
[ -z "$noproto" ] && ok "each function's SYNOPSIS shows its shoal.h prototype" ||
    bad "SYNOPSIS differs from shoal.h for:$noproto"

# Every name in a section-3 NAME line is exported (no page for a ghost).
ghosts=""
for p in man3/*.3; do
    for f in $(render "$p" 200 | sed -n '/^NAME/{n;p;}' | sed 's/ - .*//; s/,/ /g'); do
        grep -qx "$f" <<<"$exported" || ghosts="$ghosts $f($p)"
    done
done
[ -z "$ghosts" ] && ok "every function a page names is exported" ||
    bad "pages name functions libshoal.map does not export:$ghosts"

# shoal(7) points to each section-3 page of a group.
seven=$(render man7/shoal.7 200)
unref=""
for p in man3/*.3; do
    grep -q '^\.so ' "$p" && continue
    f=$(basename "$p" .3)
    grep -q "$f(3)" <<<"$seven" || unref="$unref $f"
done
[ -z "$unref" ] && ok "shoal(7) refers to every section-3 page" || bad "shoal(7) does not refer to:$unref"

if [ $failures -ne 0 ]; then echo "$failures check(s) failed"; exit 1; fi
exit 0
