#!/usr/bin/env bash
# valgrind.sh -- runs test binaries under valgrind memcheck (issue 6, part 5).
#
#   tests/valgrind.sh <build-dir> [test ...]
#
# A test is a binary name under <build-dir>/tests, optionally followed by
# ":KIND" for test-executor (CF_TEST_EXECUTOR=KIND).  Without a list, runs
# the default one below.  Fails (exit 1) on any memcheck error: invalid
# reads or writes, uninitialised values, definitely or indirectly lost
# bytes, or a test that fails or exceeds its time limit.
#
# Environment:
#   VALGRIND_JOBS     tests run in parallel (default 1; valgrind runs each
#                     test's threads one at a time, so 2 on 2 cores helps)
#   VALGRIND_TIMEOUT  seconds per test (default 600)
#   VALGRIND_FLAGS    extra valgrind options
#
# test-executor:process checks the parent side of the process pool (the
# workers, spawned from the program's path, run natively: valgrind does not
# follow children).
# Logs: <build-dir>/valgrind/<test>.log.
set -uo pipefail

if [ $# -lt 1 ] || [ ! -d "$1" ]; then
    echo "usage: $0 <build-dir> [test[:executor-kind] ...]" >&2
    exit 2
fi
build=$(cd "$1" && pwd)
shift
here=$(cd "$(dirname "$0")" && pwd)

tests=("$@")
if [ ${#tests[@]} -eq 0 ]; then
    tests=(test-future test-wait test-as-completed test-map test-shutdown
           test-continuation test-observability test-executor:thread
           test-executor:process test-bad-input test-smoke)
fi

if ! command -v valgrind >/dev/null; then
    echo "valgrind.sh: valgrind not found (apt-get install valgrind)" >&2
    exit 2
fi

supp=()
if [ -f "$here/valgrind.supp" ]; then
    supp=(--suppressions="$here/valgrind.supp")
fi
# --fair-sched: the library spins briefly before sleeping; with valgrind's
# default lock a spinning thread can starve the one it waits for.
vg=(valgrind --tool=memcheck --error-exitcode=1 --leak-check=full
    "--errors-for-leak-kinds=definite,indirect"
    "--show-leak-kinds=definite,indirect" --track-origins=yes
    --fair-sched=yes --num-callers=30 "${supp[@]}")
read -r -a extra <<<"${VALGRIND_FLAGS:-}"
vg+=("${extra[@]}")
timeout_s=${VALGRIND_TIMEOUT:-600}
jobs=${VALGRIND_JOBS:-1}
logdir="$build/valgrind"
mkdir -p "$logdir"

# Runs one test; prints one line; returns its status.
run_one() {
    local spec=$1 name=${1%%:*} kind="" envs=() label
    [[ $spec == *:* ]] && kind=${spec#*:}
    label=$name${kind:+-$kind}
    local bin="$build/tests/$name" log="$logdir/$label.log"
    if [ ! -x "$bin" ]; then
        echo "FAIL $label: no binary $bin"
        return 1
    fi
    [ -n "$kind" ] && envs=(CF_TEST_EXECUTOR="$kind")
    local t0=$SECONDS rc=0
    env "${envs[@]}" timeout -k 10 "$timeout_s" "${vg[@]}" \
        --log-file="$log.vg" "$bin" >"$log" 2>&1 || rc=$?
    cat "$log.vg" >>"$log"
    rm -f "$log.vg"
    local errs
    errs=$(sed -n 's/.*ERROR SUMMARY: \([0-9]*\) errors.*/\1/p' "$log" | tail -1)
    if [ "$rc" -eq 0 ]; then
        echo "ok   $label ($((SECONDS - t0)) s, ${errs:-?} errors)"
    else
        local why="exit $rc"
        [ "$rc" -eq 124 ] && why="timed out after ${timeout_s}s"
        echo "FAIL $label ($((SECONDS - t0)) s, $why, ${errs:-?} errors): see $log"
        grep -E '^==[0-9]+== (Invalid|Conditional|Use of|Syscall|Mismatched|Source and|Argument)|definitely lost in|indirectly lost in|assertion failed|failed:' \
            "$log" | head -20 | sed 's/^/    /'
    fi
    return "$rc"
}
start=$SECONDS
fails=0
if [ "$jobs" -gt 1 ]; then
    # A pool of background jobs; each writes its line to a file, printed
    # in list order at the end.
    i=0
    for t in "${tests[@]}"; do
        while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do
            wait -n || true
        done
        run_one "$t" >"$logdir/.result.$i" &
        i=$((i + 1))
    done
    wait
    for ((k = 0; k < i; k++)); do
        cat "$logdir/.result.$k"
        grep -q '^FAIL' "$logdir/.result.$k" && fails=$((fails + 1))
        rm -f "$logdir/.result.$k"
    done
else
    for t in "${tests[@]}"; do
        run_one "$t" || fails=$((fails + 1))
    done
fi
echo "valgrind: ${#tests[@]} tests, $fails failed, $((SECONDS - start)) s"
[ "$fails" -eq 0 ]
