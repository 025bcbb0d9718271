"""Python's concurrent.futures, the peer of most benches.

    /usr/bin/python3 bench/peers/cf_python.py BENCH N

Runs BENCH once after a short warm-up and prints one line:

    RESULT <bench> <impl> <n> <value> <unit>

impl is python_tpe (ThreadPoolExecutor), python_ppe (ProcessPoolExecutor)
or python (a standalone Future), after the bench.  2 workers; the trivial
task returns its argument + 1, as in cfutures' bench (bench/cf_bench.c).
"""
import concurrent.futures as cf
import gc
import os
import sys
import time

WORKERS = 2


def inc(x):
    return x + 1


def report(bench, impl, n, value, unit):
    print(f"RESULT {bench} {impl} {n} {value:.6g} {unit}", flush=True)


def check(i, got, want):
    if got != want:
        sys.exit(f"cf_python: WRONG result for item {i}: {got} != {want}")


def submit_result(ex, n):
    fs = [ex.submit(inc, i) for i in range(n)]
    for i, f in enumerate(fs):
        check(i, f.result(), i + 1)


def bench_submit_result(bench, impl, ex, n):
    with ex:
        submit_result(ex, min(n, 2000))
        t0 = time.perf_counter()
        submit_result(ex, n)
        t1 = time.perf_counter()
    report(bench, impl, n, (t1 - t0) * 1e9 / n, "ns/task")


def map_items(ex, n, chunksize):
    for i, v in enumerate(ex.map(inc, range(n), chunksize=chunksize)):
        check(i, v, i + 1)


def bench_map(bench, impl, ex, n, chunksize):
    with ex:
        map_items(ex, min(n, 4096), chunksize)
        t0 = time.perf_counter()
        map_items(ex, n, chunksize)
        t1 = time.perf_counter()
    report(bench, impl, n, (t1 - t0) * 1e9 / n, "ns/item")


def set_result_loop(n):
    Future = cf.Future
    for i in range(n):
        f = Future()
        f.set_result(i)
        check(i, f.result(), i)
        del f


def bench_future_set_result(bench, n):
    set_result_loop(min(n, 10000))
    t0 = time.perf_counter()
    set_result_loop(n)
    t1 = time.perf_counter()
    report(bench, "python", n, (t1 - t0) * 1e9 / n, "ns/future")


def bench_as_completed_done(bench, n):
    fs = []
    for i in range(n):
        f = cf.Future()
        f.set_result(i)
        fs.append(f)
    t0 = time.perf_counter()
    count = total = 0
    for f in cf.as_completed(fs):
        total += f.result()
        count += 1
    t1 = time.perf_counter()
    check(count, total, n * (n - 1) // 2)
    report(bench, "python", n, (t1 - t0) * 1e9 / n, "ns/future")


def resident_bytes():
    with open("/proc/self/statm") as fp:
        return int(fp.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def bench_memory_per_future(bench, n):
    # The list that holds the futures is allocated before the first
    # reading, as cfutures' bench allocates its pointer array.
    fs = [None] * n
    gc.collect()
    gc.disable()
    cf.Future()
    before = resident_bytes()
    for i in range(n):
        fs[i] = cf.Future()
    after = resident_bytes()
    gc.enable()
    for i, f in enumerate(fs):
        if f.done():
            sys.exit(f"cf_python: future {i} is not pending")
    report(bench, "python", n, (after - before) / n, "B")


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: cf_python.py BENCH N")
    bench, n = sys.argv[1], int(sys.argv[2])
    if bench == "thread_submit_result":
        bench_submit_result(bench, "python_tpe",
                            cf.ThreadPoolExecutor(WORKERS), n)
    elif bench == "thread_map":
        bench_map(bench, "python_tpe", cf.ThreadPoolExecutor(WORKERS), n, 1)
    elif bench == "process_submit_result":
        bench_submit_result(bench, "python_ppe",
                            cf.ProcessPoolExecutor(WORKERS), n)
    elif bench == "process_map_chunked":
        bench_map(bench, "python_ppe", cf.ProcessPoolExecutor(WORKERS), n,
                  256)
    elif bench == "future_set_result":
        bench_future_set_result(bench, n)
    elif bench == "as_completed_done":
        bench_as_completed_done(bench, n)
    elif bench == "memory_per_future":
        bench_memory_per_future(bench, n)
    else:
        sys.exit(f"cf_python.py: unknown bench {bench}")


if __name__ == "__main__":
    main()
