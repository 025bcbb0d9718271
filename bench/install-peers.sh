#!/usr/bin/env bash
# Installs the benchmark peers from Debian packages (never vendored).
#
#   bash bench/install-peers.sh          # as root (or with sudo available)
#
# Each package is tried on its own, so one that is missing from the archive
# does not stop the rest; the packages that could not be installed are
# listed at the end (the benchmark table then shows their peers as
# "missing").  Idempotent: installed packages are skipped (dpkg -s), and
# apt-get update runs once, only if something has to be installed.
# Exits 0 even when some peers are missing: a missing peer is reported, not
# fatal.
set -uo pipefail

export DEBIAN_FRONTEND=noninteractive

pkgs=(
    python3            # concurrent.futures (Debian's /usr/bin/python3)
    python3-pebble     # pebble.ProcessPool
    python3-joblib     # joblib.externals.loky
    python3-mpi4py     # mpi4py.futures
    libtbb-dev         # oneTBB task_group
    libthread-pool-dev # rvaser/thread_pool (Submit returns std::future)
    cthreadpool-dev    # C thread pool (/usr/include/cthreadpool)
    g++                # the C++ peers
    gcc                # OpenMP (libgomp comes with gcc)
    libgomp1
    openmpi-bin        # mpirun
    libopenmpi-dev     # mpicc, mpi.h
    cmake
    make
)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "install-peers: not root and no sudo; only checking" >&2
    fi
fi

installed() { dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed'; }

todo=()
for p in "${pkgs[@]}"; do
    if installed "$p"; then
        echo "install-peers: $p already installed"
    else
        todo+=("$p")
    fi
done

missing=()
if [ ${#todo[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; then
        echo "install-peers: apt-get update"
        $SUDO apt-get update -qq || echo "install-peers: apt-get update failed" >&2
    fi
    for p in "${todo[@]}"; do
        echo "install-peers: installing $p"
        if { [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; } &&
           $SUDO apt-get install -y -qq --no-install-recommends "$p" >/dev/null 2>&1 &&
           installed "$p"; then
            echo "install-peers: $p installed"
        else
            echo "install-peers: $p could not be installed" >&2
            missing+=("$p")
        fi
    done
fi

if [ ${#missing[@]} -gt 0 ]; then
    echo "install-peers: MISSING: ${missing[*]}"
else
    echo "install-peers: all peers installed"
fi
exit 0
