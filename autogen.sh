#!/bin/sh
# autogen.sh -- generate ./configure from configure.ac (needs autoconf,
# automake, libtool and pkg-config: tools/install-deps installs them).
set -e
cd "$(dirname "$0")"
mkdir -p m4 build-aux
autoreconf --install --force --warnings=all
