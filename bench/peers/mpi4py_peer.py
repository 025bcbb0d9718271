"""mpi4py.futures, the peer of the MPI benches.  Run with 3 ranks (one
client and 2 workers), through mpi4py.futures' own launcher:

    mpirun -np 3 /usr/bin/python3 -m mpi4py.futures \\
        bench/peers/mpi4py_peer.py BENCH N

BENCH is mpi_submit_result (submit N trivial tasks, argument + 1, then
result() each in order; ns/task) or mpi_map_chunked (map over N inputs with
chunksize 256; ns/item).  Prints "RESULT <bench> mpi4py <n> <value> <unit>".
"""
import sys
import time

from mpi4py.futures import MPIPoolExecutor


def inc(x):
    return x + 1


def check(i, got, want):
    if got != want:
        sys.exit(f"mpi4py_peer: WRONG result for item {i}: {got} != {want}")


def submit_result(ex, n):
    fs = [ex.submit(inc, i) for i in range(n)]
    for i, f in enumerate(fs):
        check(i, f.result(), i + 1)


def map_items(ex, n):
    for i, v in enumerate(ex.map(inc, range(n), chunksize=256)):
        check(i, v, i + 1)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: mpi4py_peer.py mpi_submit_result|mpi_map_chunked N")
    bench, n = sys.argv[1], int(sys.argv[2])
    if bench == "mpi_submit_result":
        run, unit = submit_result, "ns/task"
    elif bench == "mpi_map_chunked":
        run, unit = map_items, "ns/item"
    else:
        sys.exit(f"mpi4py_peer.py: unknown bench {bench}")
    with MPIPoolExecutor() as ex:
        ex.bootup(wait=True)
        run(ex, min(n, 2000))
        t0 = time.perf_counter()
        run(ex, n)
        t1 = time.perf_counter()
    print(f"RESULT {bench} mpi4py {n} {(t1 - t0) * 1e9 / n:.6g} {unit}",
          flush=True)


if __name__ == "__main__":
    main()
