#!/usr/bin/env bash
# test-install.sh -- install a built tree into a temporary prefix and build
# a consumer against it the ways a user would, then run it.
#
#   test-install.sh <builddir> <srcdir>
#
#   1. cmake --install <builddir> --prefix $tmp/prefix; check the layout
#      (header, versioned shared library, static library, .pc, CMake package);
#   2. pkg-config: cc consumer.c $(pkg-config --cflags --libs cfutures),
#      run with LD_LIBRARY_PATH; and statically, with Libs.private;
#   3. CMake: a standalone project, find_package(cfutures CONFIG REQUIRED)
#      with CMAKE_PREFIX_PATH=$tmp/prefix, linked to cfutures::cfutures (and
#      cfutures::cfutures_static); run both;
#   4. when the tree was built with MPI (cfutures-mpi.pc is installed): the
#      MPI consumer, built with pkg-config cfutures-mpi and with
#      cfutures::mpi, each run under mpirun -np 2.
# Each consumer must print "consumer ok 500500".  Exit 77 (skipped) if
# pkg-config is missing.
# Environment: CMAKE, CC, PKG_CONFIG, MPIEXEC (default mpiexec), KEEP_TMP=1.
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 <builddir> <srcdir>" >&2
    exit 2
fi
builddir=$(cd "$1" && pwd)
srcdir=$(cd "$2" && pwd)
consumer_dir=$srcdir/tests/install
CMAKE=${CMAKE:-cmake}
CC=${CC:-cc}
PKG_CONFIG=${PKG_CONFIG:-pkg-config}
expected="consumer ok 500500"

if ! command -v "$PKG_CONFIG" >/dev/null 2>&1; then
    echo "test-install: SKIPPED: $PKG_CONFIG not found (Debian: apt-get install pkg-config)"
    exit 77
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/cfutures-install.XXXXXX")
if [ "${KEEP_TMP:-0}" = 1 ]; then
    echo "test-install: keeping $tmp"
else
    trap 'rm -rf "$tmp"' EXIT
fi
prefix=$tmp/prefix

fail() {
    echo "test-install: FAIL: $*" >&2
    exit 1
}

# Runs a consumer and checks what it printed on stdout.
check_run() {
    local what=$1
    shift
    local out st=0
    out=$("$@" 2>"$tmp/stderr") || st=$?
    if [ $st -ne 0 ] || [ "$out" != "$expected" ]; then
        cat "$tmp/stderr" >&2
        fail "$what: exit status $st, printed '$out', expected '$expected'"
    fi
    echo "test-install: $what: $out"
}

# --- 1. install -------------------------------------------------------------
"$CMAKE" --install "$builddir" --prefix "$prefix" >"$tmp/install.log" 2>&1 \
    || { cat "$tmp/install.log" >&2; fail "cmake --install"; }

# GNUInstallDirs gives lib, lib64 or lib/<multiarch>: find where it went.
pc=$(find "$prefix" -name cfutures.pc -path '*/pkgconfig/*' | head -n 1)
[ -n "$pc" ] || fail "no pkgconfig/cfutures.pc under $prefix"
pcdir=$(dirname "$pc")
libdir=$(dirname "$pcdir")
echo "test-install: installed into $prefix (libdir ${libdir#"$prefix"/})"

[ -f "$prefix/include/cfutures.h" ] || fail "include/cfutures.h not installed"
[ -f "$libdir/libcfutures.a" ] || fail "libcfutures.a not installed in $libdir"
[ -L "$libdir/libcfutures.so" ] || fail "libcfutures.so (dev symlink) not installed in $libdir"
real=$(readlink -f "$libdir/libcfutures.so")
[ -f "$real" ] || fail "libcfutures.so is a dangling link"
if command -v readelf >/dev/null 2>&1; then
    soname=$(readelf -d "$real" | sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p')
    [ -n "$soname" ] || fail "libcfutures.so has no SONAME"
    [ -e "$libdir/$soname" ] || fail "SONAME $soname is not installed in $libdir"
    case $soname in libcfutures.so.[0-9]*) ;; *) fail "unexpected SONAME $soname" ;; esac
fi
for f in cfuturesConfig.cmake cfuturesConfigVersion.cmake cfuturesTargets.cmake; do
    [ -f "$libdir/cmake/cfutures/$f" ] || fail "$f not installed in $libdir/cmake/cfutures"
done

# --- 2. pkg-config ------------------------------------------------------------
export PKG_CONFIG_PATH=$pcdir
header_version=$(sed -n 's/^#define CF_VERSION_STRING "\(.*\)"/\1/p' "$prefix/include/cfutures.h")
pc_version=$("$PKG_CONFIG" --modversion cfutures) || fail "pkg-config --modversion cfutures"
[ "$pc_version" = "$header_version" ] \
    || fail "cfutures.pc says version $pc_version, the header $header_version"
cflags=$("$PKG_CONFIG" --cflags cfutures)
libs=$("$PKG_CONFIG" --libs cfutures)
echo "test-install: pkg-config --cflags --libs cfutures: $cflags $libs"

# shellcheck disable=SC2086 # word splitting of the flags is intended
"$CC" -std=c17 -o "$tmp/consumer-pc" "$consumer_dir/consumer.c" $cflags $libs \
    || fail "building the consumer with pkg-config"
check_run "pkg-config, shared" env LD_LIBRARY_PATH="$libdir" "$tmp/consumer-pc"

# Static: the same flags, -lcfutures taken from the archive, plus Libs.private.
static_libs=$("$PKG_CONFIG" --static --libs cfutures)
# shellcheck disable=SC2086
"$CC" -std=c17 -o "$tmp/consumer-pc-static" "$consumer_dir/consumer.c" $cflags \
    -Wl,-Bstatic -lcfutures -Wl,-Bdynamic ${static_libs//-lcfutures/} \
    || fail "building the consumer with pkg-config --static"
check_run "pkg-config, static" "$tmp/consumer-pc-static"

# --- 3. CMake find_package ----------------------------------------------------
unset PKG_CONFIG_PATH
cm_build=$tmp/consumer-cmake
"$CMAKE" -S "$consumer_dir" -B "$cm_build" \
    -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF \
    -DCMAKE_FIND_USE_SYSTEM_PACKAGE_REGISTRY=OFF \
    >"$tmp/cmake-configure.log" 2>&1 \
    || { cat "$tmp/cmake-configure.log" >&2; fail "configuring the CMake consumer"; }
grep -q "cfutures .* from $libdir/cmake/cfutures" "$tmp/cmake-configure.log" \
    || { cat "$tmp/cmake-configure.log" >&2; fail "find_package did not find the package under $prefix"; }
"$CMAKE" --build "$cm_build" >"$tmp/cmake-build.log" 2>&1 \
    || { cat "$tmp/cmake-build.log" >&2; fail "building the CMake consumer"; }
# No LD_LIBRARY_PATH: CMake's build RPATH must find the installed library.
check_run "cmake find_package, cfutures::cfutures" "$cm_build/consumer"
check_run "cmake find_package, cfutures::cfutures_static" "$cm_build/consumer_static"

# --- 4. MPI ---------------------------------------------------------------------
if [ -f "$pcdir/cfutures-mpi.pc" ]; then
    [ -f "$prefix/include/cfutures_mpi.h" ] || fail "include/cfutures_mpi.h not installed"
    [ -x "$cm_build/consumer_mpi" ] \
        || fail "find_package(cfutures COMPONENTS mpi) did not give cfutures::mpi"
    mpi_cflags=$(PKG_CONFIG_PATH=$pcdir "$PKG_CONFIG" --cflags cfutures-mpi)
    mpi_libs=$(PKG_CONFIG_PATH=$pcdir "$PKG_CONFIG" --libs cfutures-mpi)
    echo "test-install: pkg-config --cflags --libs cfutures-mpi: $mpi_cflags $mpi_libs"
    # shellcheck disable=SC2086
    "$CC" -std=c17 -o "$tmp/consumer-mpi-pc" "$consumer_dir/consumer_mpi.c" \
        $mpi_cflags $mpi_libs || fail "building the MPI consumer with pkg-config"
    MPIEXEC=${MPIEXEC:-mpiexec}
    if command -v "$MPIEXEC" >/dev/null 2>&1; then
        # Open MPI refuses root without these; 2 ranks need no oversubscription
        # on 2 cores, but a busy CI machine may have fewer slots.
        export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
        export OMPI_MCA_rmaps_base_oversubscribe=1
        check_run "pkg-config cfutures-mpi, mpiexec -n 2" \
            env LD_LIBRARY_PATH="$libdir" "$MPIEXEC" -n 2 "$tmp/consumer-mpi-pc"
        check_run "cmake find_package, cfutures::mpi, mpiexec -n 2" \
            "$MPIEXEC" -n 2 "$cm_build/consumer_mpi"
    else
        echo "test-install: $MPIEXEC not found: MPI consumers built, not run"
    fi
fi

echo "test-install: ok"
