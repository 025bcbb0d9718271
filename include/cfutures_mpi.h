/**
 * @file
 * cfutures_mpi.h -- the MPI executor: the same futures, with workers that
 * are MPI ranks (on this machine or across a cluster).  Library target
 * cfutures_mpi (pkg-config / CMake: cfutures::mpi), built when CMake finds
 * MPI; the core library has no MPI dependency.
 *
 * Two ways to get one, as mpi4py.futures:
 *
 *   SPMD (MPICommExecutor): run `mpirun -np N ./prog`; every rank calls
 *   cf_mpi_comm_executor.  The root rank gets an executor whose N-1 workers
 *   are the other ranks; every other rank serves tasks inside the call
 *   until the root shuts the executor down, then returns with *ex == NULL
 *   so the rank can go on to MPI_Finalize.
 *
 *   Spawn (MPIPoolExecutor): run `./prog` (an MPI singleton); call
 *   cf_mpi_worker_main at the top of main (it turns a spawned copy into a
 *   worker that serves and exits), then cf_mpi_pool spawns max_workers
 *   copies of the program with MPI_Comm_spawn.
 *
 * Tasks, arguments, results and errors are those of every executor (the
 * process pool's frames; functions travel as module + build-id + offset
 * and are checked on the worker: every rank must run the same binary).
 * Arguments and results of any size the process pool takes travel: MPI
 * counts are int, so a frame above 1 GiB goes in pieces.  A rank (or the
 * root) without memory for one fails that one future with CF_ENOMEM.
 *
 * Failure behaviour, honestly: a task error fails only its future.  A
 * crashing task kills its rank, and Open MPI 4.1 then takes the whole job
 * down -- unless the job runs under `mpirun --enable-recovery`: then the
 * pool notices the dead rank (a rank on the root's host at once; any rank
 * when it has been silent for cf_mpi_opts.liveness_timeout, its heartbeat
 * having stopped), the task it ran ends with CF_ECRASHED (the message
 * names the rank, its host and pid), what it had queued runs elsewhere,
 * and the pool goes on with the other ranks (CF_EBROKEN once none is
 * left).  Ranks are never replaced.  Set cf_mpi_opts.crash_isolation to
 * run each task in a one-process local process pool on its rank instead:
 * a crash then fails only its future (CF_ECRASHED) and the rank lives, at
 * the cost of a process round trip per task; the initializer runs on the
 * rank and in that local process (again in each replacement), so tasks
 * see what it set up.
 *
 * Stopping tasks: cf_request_cancel of a running task reaches it by a
 * message to its rank (cf_cancel_requested() turns true within a few
 * milliseconds).  With crash_isolation, cf_task_opts.time_limit and
 * cf_kill_task work as on the process pool: the rank's local process is
 * killed (CF_ETIMEDOUT, CF_ECANCELLED) and replaced.  Without it they are
 * refused, because the task runs in the rank's own process and killing a
 * rank ends the job: cf_submit_ex with a time limit fails with CF_EINVAL,
 * cf_kill_task returns CF_EINVAL and raises the cooperative flag instead
 * (both say why on stderr, once per pool).  cf_terminate_workers and
 * cf_kill_workers return CF_EINVAL on MPI pools (a rank on another host
 * cannot be signalled from the root, and a killed rank ends the job).
 *
 * Placement, as the process pool: an idle rank gets the next task; a busy
 * rank gets one more ahead of time (up to 16 while tasks take under 200
 * us), so that it never waits for the root.  A task sent ahead is only
 * queued on its rank: it stays pending (cf_running() false; cf_cancel and
 * cf_map_free take it back) until the rank starts it, which costs the rank
 * one small round trip to the root (a claim) then.  While tasks are that
 * short, one claim also starts the (up to 7) tasks queued right behind on
 * the same rank: those report running up to 7 task durations (about a
 * millisecond at most) before they start, and their results travel
 * together (a few milliseconds late at most).  A rank that goes idle
 * takes over a task queued behind one that runs long elsewhere, so a task
 * never waits behind a long one while a rank idles.  A map's chunk is one
 * task (one message each way, per 64 KiB of results).
 *
 * Threads and waiting: the root's MPI calls are made by the executor's
 * own manager thread, so MPI must provide MPI_THREAD_MULTIPLE (cf_mpi_*
 * initialize MPI with it if the program has not; if it has, with less,
 * they fail with CF_EINVAL and say so on stderr).  Each rank also runs a
 * heartbeat thread.  The manager and idle ranks poll for messages:
 * for 200 us after the last one they poll yielding the CPU between polls
 * (CF_MPI_SPIN_US changes it), then sleep with a back-off from 5 us to
 * 1 ms.  Open MPI's blocking calls spin a core for as long as they wait,
 * so an idle pool would burn one core per rank: the guide has the
 * figures of both (CF_MPI_WAIT=block selects blocking waits).
 *
 * Exit: MPI_Finalize -- the program's, or the one cfutures runs at exit
 * when it initialized MPI -- first shuts down every MPI executor still
 * alive, as cf_shutdown(ex, true, false): queued and running tasks finish,
 * the worker ranks are released, then MPI finalizes.  So returning from
 * main with a live pool is clean; cf_executor_free afterwards only frees.
 */
#ifndef CFUTURES_MPI_H
#define CFUTURES_MPI_H

#include "cfutures.h"

#include <mpi.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Options of an MPI executor.  Zero-initialise; every zero means default. */
typedef struct cf_mpi_opts {
    /** Spawn mode: worker processes to spawn; 0 means the CPUs this
     *  process may run on.  Ignored in SPMD mode (all other ranks). */
    int max_workers;
    /** Runs once on each worker rank before its first task (as in
     *  cf_process_pool_opts); a raise breaks the pool (CF_EBROKEN). */
    cf_task_fn initializer;
    const void *initarg; /**< the initializer's argument (copied) */
    size_t initarg_len;  /**< its length in bytes */
    /** Each rank runs tasks in a local one-process pool: a crash fails
     *  only its future (CF_ECRASHED); time limits and cf_kill_task work
     *  (see above). */
    bool crash_isolation;
    /** A rank silent this many seconds is presumed dead (every rank sends
     *  a heartbeat from a thread of its own, four times per period, even
     *  while a task runs); its tasks end with CF_ECRASHED and the pool goes
     *  on with the other ranks.  A rank on this host whose process is gone
     *  is noticed at once.  0 means 10 s; CF_FOREVER, never. */
    double liveness_timeout;
    /** Under crash_isolation: the rank's local process is replaced after
     *  this many tasks (cf_process_pool_opts.max_tasks_per_child); 0 =
     *  never.  Without crash_isolation, CF_EINVAL: a rank is not replaced. */
    int max_tasks_per_child;
    /** Spawn mode: where the ranks go, as Open MPI's MPI_Comm_spawn info
     *  keys (NULL: not set; ignored in SPMD mode).  hosts: "a,b,c" ("host"
     *  key; a host may repeat, once per slot); hostfile: a path
     *  ("hostfile"); map_by: "node", "slot", "core", ... ("map_by"). */
    const char *hosts;
    const char *hostfile; /**< see hosts */
    const char *map_by;   /**< see hosts */
} cf_mpi_opts;

/**
 * SPMD mode, collective over comm: on `root`, stores an executor in *ex
 * (free it with cf_executor_free before MPI_Finalize; that also releases
 * the other ranks); on every other rank, serves tasks until the root's
 * executor shuts down, then stores NULL in *ex and returns CF_OK.
 * Returns CF_EINVAL (comm has fewer than 2 ranks, bad root, MPI without
 * MPI_THREAD_MULTIPLE), CF_ENOMEM.  Blocks (on workers, for the executor's
 * whole life).
 */
CF_API int cf_mpi_comm_executor(MPI_Comm comm, int root,
                                const cf_mpi_opts *opts, cf_executor **ex);

/**
 * Spawn mode, in a worker copy: call first thing in main.  Initializes MPI
 * if needed; in a copy spawned by cf_mpi_pool, serves tasks, finalizes MPI
 * and exits the process (never returns).  In the original program, returns
 * CF_OK (MPI is then initialized; it is finalized at exit if cfutures
 * initialized it).
 */
CF_API int cf_mpi_worker_main(int *argc, char ***argv);

/**
 * Spawn mode: spawns max_workers copies of this program (which must call
 * cf_mpi_worker_main) with MPI_Comm_spawn and returns an executor whose
 * workers they are.  NULL on error (cf_last_error()): CF_EBROKEN if MPI
 * cannot spawn (the message on stderr says why: e.g. no slots -- set
 * OMPI_MCA_rmaps_base_oversubscribe=1 -- or no MPI runtime), CF_EINVAL,
 * CF_ENOMEM.
 */
CF_API cf_executor *cf_mpi_pool(const cf_mpi_opts *opts);

#ifdef __cplusplus
}
#endif

#endif /* CFUTURES_MPI_H */
