#!/usr/bin/python3
"""The benchmark driver (issue 8): cfutures side by side with its peers.

    /usr/bin/python3 bench/run.py [--quick] [--bin-dir DIR] [--out FILE]
                                  [--only BENCH,...] [--reps N] [--strict]

For each bench row it runs ours and each peer interleaved (ours, peer1,
ours, peer2, ..., then again) for --reps repetitions after one warm-up
round, and reports per implementation the median, min and max, and per
peer the median of the pairwise ratios peer/ours (each peer run against
the run of ours just before it).  The machines drift in speed, so the
pairwise ratio is the figure to judge, not the absolute times.

It prints a table and writes a JSON array (default build/bench/results.json)
of objects
    {"bench", "impl", "n", "unit", "median", "min", "max",
     "ratio_vs_cfutures"}
("ratio_vs_cfutures" absent on our rows).  A peer that is not installed is
listed with "missing": true and null figures; a run that failed with
"error": "..." and null figures; floors carry "floor": true.

QUICK=1 in the environment (or --quick) makes a short smoke run (under two
minutes): smaller N, fewer repetitions.  Its figures are not to be judged.

Exit status: 0, or 1 when one of our runs failed (or, with --strict, any
run), 2 on bad usage or when cf_bench is not built.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PEERS = os.path.join(HERE, "peers")
PY = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
OURS = "cfutures"
MPI_NP = 3
MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "OMPI_MCA_rmaps_base_oversubscribe": "1"}


def impl(name, n=None, quick_n=None, floor=False):
    """A peer of a bench row; n / quick_n override the row's N."""
    return {"name": name, "n": n, "quick_n": quick_n, "floor": floor}


# The table.  n is the full run's N, quick_n the quick run's; a
# peer much slower than ours runs on a smaller N (every figure is per task
# or per item, so the ratio holds).
BENCHES = [
    {"bench": "thread_submit_result", "unit": "ns/task",
     "n": 200_000, "quick_n": 50_000,
     "peers": [impl("python_tpe", 20_000, 3_000), impl("onetbb_task_group"),
               impl("openmp_task"), impl("rvaser_thread_pool"),
               impl("c_thread_pool")]},
    {"bench": "thread_map", "unit": "ns/item",
     "n": 200_000, "quick_n": 50_000,
     "peers": [impl("python_tpe", 20_000, 3_000)]},
    {"bench": "future_set_result", "unit": "ns/future",
     "n": 1_000_000, "quick_n": 200_000,
     "peers": [impl("python", 200_000, 30_000)]},
    {"bench": "as_completed_done", "unit": "ns/future",
     "n": 1_000_000, "quick_n": 100_000,
     "peers": [impl("python")]},
    {"bench": "process_submit_result", "unit": "ns/task",
     "n": 100_000, "quick_n": 10_000,
     "peers": [impl("python_ppe", 10_000, 1_000), impl("pebble", 10_000, 1_000),
               impl("loky", 10_000, 1_000),
               impl("pipe_pingpong", 20_000, 5_000, floor=True),
               impl("shm_pingpong", 200_000, 20_000, floor=True)]},
    {"bench": "process_map_chunked", "unit": "ns/item",
     "n": 1_000_000, "quick_n": 100_000,
     "peers": [impl("python_ppe"), impl("pipe_batched", floor=True),
               impl("shm_batched", floor=True)]},
    {"bench": "mpi_submit_result", "unit": "ns/task", "mpi": True,
     "n": 100_000, "quick_n": 10_000,
     "peers": [impl("mpi4py", 5_000, 1_000),
               impl("mpi_pingpong", 20_000, 5_000, floor=True)]},
    {"bench": "mpi_map_chunked", "unit": "ns/item", "mpi": True,
     "n": 1_000_000, "quick_n": 100_000,
     "peers": [impl("mpi4py")]},
    {"bench": "seed_speedup_thread", "unit": "x", "n": 64, "quick_n": 64,
     "peers": []},
    {"bench": "seed_speedup_process", "unit": "x", "n": 64, "quick_n": 64,
     "peers": []},
    # Fork-join kernels (bench/peers/nested_kernels.h), the same adapter
    # for each implementation; n is fib's n, the board size, the array
    # length.
    {"bench": "nested_fib_nocutoff", "unit": "ns/task", "n": 25, "quick_n": 20,
     "peers": [impl("onetbb_task_group"), impl("openmp_task")]},
    {"bench": "nested_fib", "unit": "x", "n": 38, "quick_n": 30,
     "peers": [impl("onetbb_task_group"), impl("openmp_task")]},
    {"bench": "nested_nqueens", "unit": "x", "n": 12, "quick_n": 9,
     "peers": [impl("onetbb_task_group"), impl("openmp_task")]},
    {"bench": "nested_nqueens_placement", "unit": "ns/task", "n": 12,
     "quick_n": 9,
     "peers": [impl("onetbb_task_group"), impl("openmp_task")]},
    {"bench": "nested_sort", "unit": "x", "n": 16_777_216, "quick_n": 1_048_576,
     "peers": [impl("onetbb_task_group"), impl("openmp_task")]},
    {"bench": "memory_per_future", "unit": "B",
     "n": 1_000_000, "quick_n": 100_000,
     "peers": [impl("python")]},
]

# Peer programs built by bench/CMakeLists.txt (binary dir).
C_PEERS = {
    "onetbb_task_group": "peer_onetbb_task_group",
    "openmp_task": "peer_openmp_task",
    "rvaser_thread_pool": "peer_rvaser_thread_pool",
    "c_thread_pool": "peer_c_thread_pool",
}
# The nested_* rows run these instead (BENCH N on the command line).
NESTED_PEERS = {
    "onetbb_task_group": "peer_nested_onetbb",
    "openmp_task": "peer_nested_openmp",
}
# Python peers: script and the module it needs.
PY_PEERS = {
    "python_tpe": ("cf_python.py", "concurrent.futures"),
    "python_ppe": ("cf_python.py", "concurrent.futures"),
    "python": ("cf_python.py", "concurrent.futures"),
    "pebble": ("pebble_peer.py", "pebble"),
    "loky": ("loky_peer.py", "joblib.externals.loky"),
}


class Runner:
    def __init__(self, args):
        self.args = args
        self.bin = args.bin_dir
        self._modules = {}
        self._ours = None

    # --- availability -----------------------------------------------------
    def have_module(self, module):
        if module not in self._modules:
            try:
                ok = subprocess.run([PY, "-c", f"import {module}"],
                                    capture_output=True, timeout=60).returncode == 0
            except (OSError, subprocess.TimeoutExpired):
                ok = False
            self._modules[module] = ok
        return self._modules[module]

    def our_benches(self):
        if self._ours is None:
            out = subprocess.run([os.path.join(self.bin, "cf_bench"), "--list"],
                                 capture_output=True, text=True, check=True)
            self._ours = set(out.stdout.split())
        return self._ours

    def missing_reason(self, row, name):
        """None if the implementation can run, else why not."""
        mpirun = shutil.which("mpirun")
        if name == OURS:
            if row["bench"] not in self.our_benches():
                return ("cfutures has no MPI executor yet" if row.get("mpi")
                        else "not in this cf_bench")
            if row.get("mpi") and not mpirun:
                return "mpirun not installed"
            return None
        if row["bench"].startswith("nested_") and name in NESTED_PEERS:
            if not os.path.exists(os.path.join(self.bin, NESTED_PEERS[name])):
                return "not built (bench/install-peers.sh, then reconfigure)"
            return None
        if name in C_PEERS:
            if not os.path.exists(os.path.join(self.bin, C_PEERS[name])):
                return "not built (bench/install-peers.sh, then reconfigure)"
            return None
        if name in ("pipe_pingpong", "pipe_batched"):
            if not os.path.exists(os.path.join(self.bin, "pipe_floor")):
                return "pipe_floor not built"
            return None
        if name in ("shm_pingpong", "shm_batched"):
            if not os.path.exists(os.path.join(self.bin, "shm_floor")):
                return "shm_floor not built"
            return None
        if name == "mpi_pingpong":
            if not mpirun:
                return "mpirun not installed (openmpi-bin)"
            if not os.path.exists(os.path.join(self.bin, "mpi_pingpong")):
                return "not built (libopenmpi-dev, then reconfigure)"
            return None
        if name == "mpi4py":
            if not mpirun:
                return "mpirun not installed (openmpi-bin)"
            if not self.have_module("mpi4py.futures"):
                return "python3-mpi4py not installed"
            return None
        if name in PY_PEERS:
            if not os.path.exists(PY):
                return "python3 not installed"
            if not self.have_module(PY_PEERS[name][1]):
                return f"{PY_PEERS[name][1]} not importable by {PY}"
            return None
        return "unknown implementation"

    # --- commands ---------------------------------------------------------
    @staticmethod
    def mpirun():
        return ["mpirun", "--oversubscribe", "--allow-run-as-root",
                "-np", str(MPI_NP)]

    def command(self, row, name, n):
        bench, n = row["bench"], str(n)
        if name == OURS:
            cmd = [os.path.join(self.bin, "cf_bench"), bench, n]
            return self.mpirun() + cmd if row.get("mpi") else cmd
        if bench.startswith("nested_") and name in NESTED_PEERS:
            return [os.path.join(self.bin, NESTED_PEERS[name]), bench, n]
        if name in C_PEERS:
            return [os.path.join(self.bin, C_PEERS[name]), n]
        if name == "pipe_pingpong":
            return [os.path.join(self.bin, "pipe_floor"), "pingpong", n]
        if name == "pipe_batched":
            return [os.path.join(self.bin, "pipe_floor"), "batched", n]
        if name == "shm_pingpong":
            return [os.path.join(self.bin, "shm_floor"), "pingpong", n]
        if name == "shm_batched":
            return [os.path.join(self.bin, "shm_floor"), "batched", n]
        if name == "mpi_pingpong":
            return self.mpirun() + [os.path.join(self.bin, "mpi_pingpong"), n]
        if name == "mpi4py":
            return self.mpirun() + [PY, "-m", "mpi4py.futures",
                                    os.path.join(PEERS, "mpi4py_peer.py"),
                                    bench, n]
        script = PY_PEERS[name][0]
        return [PY, os.path.join(PEERS, script), bench, n]

    def run_once(self, row, name, n):
        """One run: (value, None) or (None, error message)."""
        cmd = self.command(row, name, n)
        env = dict(os.environ, **MPI_ENV)
        env.setdefault("OMP_NUM_THREADS", "2")
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, env=env,
                               timeout=self.args.timeout, cwd=ROOT)
        except subprocess.TimeoutExpired:
            return None, f"timed out after {self.args.timeout} s"
        except OSError as e:
            return None, str(e)
        for line in p.stdout.splitlines():
            f = line.split()
            if len(f) == 6 and f[0] == "RESULT" and f[1] == row["bench"] \
                    and f[2] == name:
                if p.returncode != 0:
                    break
                if f[5] != row["unit"]:
                    return None, f"unit {f[5]}, expected {row['unit']}"
                return float(f[4]), None
        tail = (p.stderr.strip().splitlines() or ["(no output)"])[-1]
        return None, f"exit {p.returncode}: {tail}"[:200]


def summarize(values):
    if not values:
        return None, None, None
    return statistics.median(values), min(values), max(values)


def run_row(runner, row, quick, reps, log):
    """Runs one bench row; returns the list of result dicts."""
    nkey = "quick_n" if quick else "n"
    impls = [impl(OURS)] + row["peers"]
    res = {}
    for im in impls:
        n = im[nkey] or row[nkey]
        res[im["name"]] = {"bench": row["bench"], "impl": im["name"], "n": n,
                           "unit": row["unit"], "floor": im["floor"],
                           "missing": runner.missing_reason(row, im["name"]),
                           "values": [], "ratios": [], "error": None}
    ours = res[OURS]
    peers = [res[im["name"]] for im in row["peers"]
             if res[im["name"]]["missing"] is None]

    def one(r):
        if r["error"] is not None:
            return None
        v, err = runner.run_once(row, r["impl"], r["n"])
        if err is not None:
            r["error"] = err
            log(f"  {row['bench']} {r['impl']}: FAILED: {err}")
        return v

    have_ours = ours["missing"] is None
    # Round 0 is the warm-up: its figures are dropped.
    for rnd in range(reps + 1):
        keep = rnd > 0
        if have_ours and not peers:
            v = one(ours)
            if keep and v is not None:
                ours["values"].append(v)
        for p in peers:
            mine = one(ours) if have_ours else None
            theirs = one(p)
            if keep and mine is not None:
                ours["values"].append(mine)
            if keep and theirs is not None:
                p["values"].append(theirs)
                if mine is not None and mine > 0:
                    p["ratios"].append(theirs / mine)
    return [res[im["name"]] for im in impls]


def to_json(r):
    out = {"bench": r["bench"], "impl": r["impl"], "n": r["n"],
           "unit": r["unit"]}
    ok = r["missing"] is None and r["error"] is None and r["values"]
    med, lo, hi = summarize(r["values"]) if ok else (None, None, None)
    out.update(median=med, min=lo, max=hi)
    if r["impl"] != OURS:
        out["ratio_vs_cfutures"] = (statistics.median(r["ratios"])
                                    if ok and r["ratios"] else None)
    out["reps"] = len(r["values"]) if ok else 0
    if r["floor"]:
        out["floor"] = True
    if r["missing"] is not None:
        out["missing"] = True
        out["why"] = r["missing"]
    elif r["error"] is not None:
        out["error"] = r["error"]
    return out


def fmt(v):
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}"


def print_table(rows, out=sys.stdout):
    head = ["bench", "impl", "n", "median", "min", "max", "unit",
            "peer/ours", "ours/peer", "floor"]
    lines = []
    by_bench = {}
    for r in rows:
        by_bench.setdefault(r["bench"], []).append(r)
    for bench, group in by_bench.items():
        floor_ratio = None
        for r in group:
            if r.get("floor") and r.get("ratio_vs_cfutures"):
                floor_ratio = r["ratio_vs_cfutures"]
        for r in group:
            if r.get("missing"):
                lines.append([bench, r["impl"], str(r["n"]), "missing", "", "",
                              r["unit"], "", "", r.get("why", "")])
                continue
            if r.get("error"):
                lines.append([bench, r["impl"], str(r["n"]), "FAILED", "", "",
                              r["unit"], "", "", r["error"][:60]])
                continue
            ratio = r.get("ratio_vs_cfutures")
            floor = ""
            if r.get("floor"):
                floor = "(floor)"
            elif r["impl"] == OURS and floor_ratio:
                floor = f"{1 / floor_ratio:.2f}x floor"
            lines.append([bench, r["impl"], str(r["n"]), fmt(r["median"]),
                          fmt(r["min"]), fmt(r["max"]), r["unit"],
                          f"{ratio:.3g}" if ratio else "",
                          f"{1 / ratio:.3g}" if ratio else "", floor])
    widths = [max(len(h), *(len(line[i]) for line in lines))
              for i, h in enumerate(head)]
    right = {2, 3, 4, 5, 7, 8}

    def show(cells):
        return "  ".join(c.rjust(widths[i]) if i in right else c.ljust(widths[i])
                         for i, c in enumerate(cells)).rstrip()

    print(show(head), file=out)
    print(show(["-" * w for w in widths]), file=out)
    prev = None
    for line in lines:
        if prev is not None and line[0] != prev:
            print("", file=out)
        print(show(line if line[0] != prev else [""] + line[1:]), file=out)
        prev = line[0]


def default_bin_dir():
    env = os.environ.get("CF_BENCH_BIN")
    if env:
        return env
    for d in ("build-bench/bench", "build/bench"):
        p = os.path.join(ROOT, d)
        if os.path.exists(os.path.join(p, "cf_bench")):
            return p
    return os.path.join(ROOT, "build-bench/bench")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    default=os.environ.get("QUICK", "") not in ("", "0"),
                    help="short smoke run (also QUICK=1)")
    ap.add_argument("--bin-dir", default=default_bin_dir(),
                    help="where cf_bench and the C peers are "
                         "(default: build-bench/bench or build/bench, "
                         "or $CF_BENCH_BIN)")
    ap.add_argument("--out", default=os.path.join(ROOT, "build/bench/results.json"),
                    help="results file (default build/bench/results.json)")
    ap.add_argument("--only", default="",
                    help="comma-separated benches to run (default: all)")
    ap.add_argument("--reps", type=int, default=0,
                    help="repetitions after the warm-up (default 7, quick 5)")
    ap.add_argument("--timeout", type=float, default=0,
                    help="seconds per run (default 600, quick 120)")
    ap.add_argument("--strict", action="store_true",
                    help="exit 1 when any run fails, a peer's too")
    args = ap.parse_args()
    reps = args.reps or (5 if args.quick else 7)
    if reps < 1:
        ap.error("--reps must be at least 1")
    args.timeout = args.timeout or (120 if args.quick else 600)

    if not os.path.exists(os.path.join(args.bin_dir, "cf_bench")):
        print(f"run.py: no cf_bench in {args.bin_dir}: build with "
              "-DCF_BUILD_BENCH=ON first (make bench)", file=sys.stderr)
        return 2
    rows = BENCHES
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {r["bench"] for r in BENCHES}
        if unknown:
            ap.error(f"unknown bench(es): {', '.join(sorted(unknown))}")
        rows = [r for r in BENCHES if r["bench"] in wanted]

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    runner = Runner(args)
    t_start = time.monotonic()
    log(f"run.py: {'QUICK ' if args.quick else ''}run, {reps} repetitions "
        f"after a warm-up, binaries from {args.bin_dir}, peers with {PY}")
    results = []
    for row in rows:
        t0 = time.monotonic()
        log(f"run.py: {row['bench']} ...")
        results += [to_json(r) for r in run_row(runner, row, args.quick, reps, log)]
        log(f"run.py: {row['bench']} done in {time.monotonic() - t0:.1f} s")

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fp:
        json.dump(results, fp, indent=1)
        fp.write("\n")

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\ncfutures benchmarks{' (QUICK: smoke test, do not judge)' if args.quick else ''}"
          f" -- {os.cpu_count()} CPUs, load {load:.2f}, {reps} reps after a "
          f"warm-up, {time.monotonic() - t_start:.0f} s")
    print("peer/ours: median of the pairwise ratios (each peer run against "
          "our run just before it); ours/peer is its inverse (the targets' "
          "form)\n")
    print_table(results)
    missing = sorted({r["impl"] for r in results if r.get("missing") and r["impl"] != OURS})
    if missing:
        print(f"\nmissing peers: {', '.join(missing)}")
    print(f"\nresults: {os.path.relpath(os.path.abspath(args.out), os.getcwd())}")

    ours_failed = [r for r in results if r["impl"] == OURS and r.get("error")]
    any_failed = [r for r in results if r.get("error")]
    if ours_failed or (args.strict and any_failed):
        print(f"run.py: {len(any_failed)} implementation(s) failed",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
