"""pebble.ProcessPool, a peer of process_submit_result.

    /usr/bin/python3 bench/peers/pebble_peer.py process_submit_result N

2 workers; schedule N trivial tasks (argument + 1), then result() each in
order.  Prints "RESULT process_submit_result pebble <n> <ns> ns/task".
"""
import sys
import time

from pebble import ProcessPool

WORKERS = 2


def inc(x):
    return x + 1


def submit_result(pool, n):
    fs = [pool.schedule(inc, args=(i,)) for i in range(n)]
    for i, f in enumerate(fs):
        if f.result() != i + 1:
            sys.exit(f"pebble_peer: WRONG result for item {i}")


def main():
    if len(sys.argv) != 3 or sys.argv[1] != "process_submit_result":
        sys.exit("usage: pebble_peer.py process_submit_result N")
    n = int(sys.argv[2])
    pool = ProcessPool(max_workers=WORKERS)
    try:
        submit_result(pool, min(n, 2000))
        t0 = time.perf_counter()
        submit_result(pool, n)
        t1 = time.perf_counter()
    finally:
        pool.close()
        pool.join()
    print(f"RESULT process_submit_result pebble {n} "
          f"{(t1 - t0) * 1e9 / n:.6g} ns/task", flush=True)


if __name__ == "__main__":
    main()
