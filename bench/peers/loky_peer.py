"""loky (joblib.externals.loky), a peer of process_submit_result.

    /usr/bin/python3 bench/peers/loky_peer.py process_submit_result N

2 workers of loky's reusable executor; submit N trivial tasks
(argument + 1), then result() each in order.  Prints
"RESULT process_submit_result loky <n> <ns> ns/task".
"""
import sys
import time

from joblib.externals.loky import get_reusable_executor

WORKERS = 2


def inc(x):
    return x + 1


def submit_result(ex, n):
    fs = [ex.submit(inc, i) for i in range(n)]
    for i, f in enumerate(fs):
        if f.result() != i + 1:
            sys.exit(f"loky_peer: WRONG result for item {i}")


def main():
    if len(sys.argv) != 3 or sys.argv[1] != "process_submit_result":
        sys.exit("usage: loky_peer.py process_submit_result N")
    n = int(sys.argv[2])
    ex = get_reusable_executor(max_workers=WORKERS)
    submit_result(ex, min(n, 2000))
    t0 = time.perf_counter()
    submit_result(ex, n)
    t1 = time.perf_counter()
    ex.shutdown(wait=True)
    print(f"RESULT process_submit_result loky {n} "
          f"{(t1 - t0) * 1e9 / n:.6g} ns/task", flush=True)


if __name__ == "__main__":
    main()
