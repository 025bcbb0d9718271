/*
 * mpi_pool.c -- the MPI executor (cfutures_mpi.h): workers are MPI ranks,
 * in SPMD mode (the other ranks of a communicator) or spawn mode
 * (MPI_Comm_spawn from a singleton).
 *
 * The root side is the process pool's design on MPI messages: submitters
 * queue futures; one manager thread sends TASK frames (MPI_Isend, the
 * buffer kept until the send completes), probes for RESULT frames and
 * completes futures.  The worker side is cf__serve (worker.c) with an MPI
 * link.  Frames travel with tag TAG_FRAME; TAG_STOP ends a worker.
 *
 * MPI has no wake-up that does not spin a core (Open MPI's blocking calls
 * poll), so both sides probe with an exponential back-off (50 us .. 1 ms);
 * a submit wakes the manager at once through its condition variable.
 */
#include "cfutures_mpi.h"
#include "remote.h"

#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

enum {
    TAG_FRAME = 7001,   /* frames, control messages */
    TAG_STOP = 7002,    /* root -> rank: the end */
    TAG_PIECE = 7003,   /* a piece of a BIG message */
    TAG_AHEAD = 7004,   /* root -> rank: a frame sent ahead (claim it first) */
    TAG_TASKCTL = 7005, /* root -> rank: stop a running task (CANCEL, KILL) */
};

/* Waiting for messages: poll for spin_ns after the last one, yielding the
 * CPU between polls (as Open MPI's own blocking calls do when the machine
 * is oversubscribed), then sleep with a back-off from MIN to MAX (the
 * waiting threads ask for a 1 us timer slack, so short sleeps are short).
 * CF_MPI_SPIN_US sets spin_ns; CF_MPI_WAIT=block makes the ranks wait in
 * MPI_Probe and the root poll without sleeping (Open MPI's blocking calls
 * spin a core: the guide has the figures). */
static uint64_t spin_ns = 200000u;
#define BACKOFF_MIN_NS 5000u
#define BACKOFF_MAX_NS 1000000u
/* Messages to the root up to INLINE_MAX bytes travel in one message (its
 * posted receive per rank); longer ones are announced (CTL_BIG). */
#define INLINE_MAX (128 * 1024)
/* Frames sent ahead: many while tasks are short, else one.  A claim then
 * starts up to CLAIM_BATCH of them (claim_batch). */
#define WINDOW_SHORT 128
#define CLAIM_BATCH 64
#define CLAIM_WORK_NS 500000u
#define WINDOW_LONG 2
#define PIPELINE_MAX_NS 200000u
/* Frames queued behind one that has run this long go to an idle rank
 * (a claim costs a round trip: there is no reason to wait longer). */
#define TAKEBACK_NS 100000u
#define LIVENESS_DEFAULT_NS 10000000000ull
/* Results of a batch of short tasks go together, up to RESULTS_MAX bytes
 * and RESULTS_WAIT_NS late (the heartbeat thread sends them then). */
#define RESULTS_MAX 65536
/* Frames sent ahead go several to a message when under this size. */
#define BATCH_FRAME_MAX 16384
#define RESULTS_WAIT_NS 2000000u
/* A rank looks for CANCEL and KILL messages this often while it works. */
#define TASKCTL_POLL_NS 5000000u
/* How often the root checks that the process of a rank on its host is
 * there. */
#define PID_CHECK_NS 50000000u
/* A manager that could not look for this long gives every rank a new
 * liveness period. */
#define STALL_NS 500000000u
enum { WAIT_POLL, WAIT_BLOCK };
static int wait_mode = WAIT_POLL;
#define ISOLATE_ARG "--cfutures-crash-isolation"
#define MAXTASKS_ARG "--cfutures-max-tasks="

/* ------------------------------------------------------------------------ */
/* MPI set-up                                                                */
/* ------------------------------------------------------------------------ */

static bool we_initialized;

/* Every pool whose manager may still call MPI: MPI_Finalize (ours at exit,
 * or the program's) shuts them down first (finalize_hook). */
static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
static struct mpi_pool *live_pools;
static bool hook_set;

static void finalize_at_exit(void)
{
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin)
        MPI_Finalize();
}

static int finalize_hook(MPI_Comm comm, int keyval, void *attr, void *extra);
static void read_piece_knob(void);

/* Initializes MPI with MPI_THREAD_MULTIPLE if needed, and checks the level
 * the program got.  CF_OK or CF_EINVAL (with a message). */
static int ensure_mpi(int *argc, char ***argv)
{
    int init = 0, provided = 0;
    MPI_Initialized(&init);
    if (!init) {
        if (MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided) !=
            MPI_SUCCESS) {
            fprintf(stderr, "cfutures: MPI_Init_thread failed\n");
            return CF_EINVAL;
        }
        we_initialized = true;
        atexit(finalize_at_exit);
    }
    read_piece_knob();
    int fin = 0;
    MPI_Finalized(&fin);
    if (fin) {
        fprintf(stderr, "cfutures: MPI is already finalized\n");
        return CF_EINVAL;
    }
    /* MPI_Finalize deletes MPI_COMM_SELF's attributes first, while MPI
     * still works: the hook shuts every live pool down there. */
    pthread_mutex_lock(&live_lock);
    if (!hook_set) {
        int key;
        if (MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, finalize_hook, &key,
                                   NULL) == MPI_SUCCESS &&
            MPI_Comm_set_attr(MPI_COMM_SELF, key, NULL) == MPI_SUCCESS)
            hook_set = true;
    }
    pthread_mutex_unlock(&live_lock);
    MPI_Query_thread(&provided);
    if (provided < MPI_THREAD_MULTIPLE) {
        fprintf(stderr,
                "cfutures: the MPI executor needs MPI_THREAD_MULTIPLE (its "
                "manager thread calls MPI), but MPI provides level %d: "
                "initialize with MPI_Init_thread(..., MPI_THREAD_MULTIPLE, "
                "...)\n",
                provided);
        return CF_EINVAL;
    }
    return CF_OK;
}

static void backoff_sleep(uint64_t *ns, uint64_t max)
{
    struct timespec ts = {0, (long)*ns};
    nanosleep(&ts, NULL);
    *ns = *ns * 2 > max ? max : *ns * 2;
}

static void fine_timer_slack(void)
{
    prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0); /* 1 us, for this thread */
}

/* ------------------------------------------------------------------------ */
/* Messages of any size                                                      */
/* ------------------------------------------------------------------------ */

/*
 * MPI counts are int: a message is at most 2 GiB - 1 bytes.  A frame
 * longer than piece_max (1 GiB; CF_MPI_PIECE=bytes lowers it, for tests)
 * travels as a BIG control message with TAG_FRAME (its total length and
 * piece size) followed by the pieces, in order, with TAG_PIECE (MPI keeps
 * the order of messages between two ranks).  A control message is 24
 * bytes: u32 magic "CFM1" | u32 kind | u64 a | u64 b, never a frame (whose
 * magic is "CFW1").
 */
#define CTL_MAGIC 0x314d4643u /* "CFM1" */
#define CTL_LEN 24
enum {
    CTL_BIG = 1, /* a message in pieces follows: a = bytes, b = piece */
    CTL_CLAIM,   /* rank -> root: may frame a (its first id) start? */
    CTL_GO,      /* root -> rank: frame a may start */
    CTL_SKIP,    /* root -> rank: drop frame a */
    CTL_CONF,    /* root -> rank: heartbeat every a ns (0: none) */
    CTL_INFO,    /* rank -> root: pid a, b bytes of host name follow */
    CTL_BEAT,    /* rank -> root: alive */
    CTL_BYE,     /* rank -> root: its last message */
    CTL_LIMIT,   /* root -> rank: the next frame, first id a, has b ns */
    CTL_CANCEL,  /* root -> rank: cancel requested for items a .. a+b-1 */
    CTL_KILL,    /* root -> rank: kill items a .. a+b-1 (crash isolation) */
};

static size_t piece_max = (size_t)1 << 30;

static void read_piece_knob(void)
{
    const char *w = getenv("CF_MPI_WAIT");
    if (w != NULL && strcmp(w, "block") == 0)
        wait_mode = WAIT_BLOCK;
    const char *sp = getenv("CF_MPI_SPIN_US");
    if (sp != NULL && atoll(sp) >= 0 && atoll(sp) <= 1000000)
        spin_ns = (uint64_t)atoll(sp) * 1000u;
    const char *e = getenv("CF_MPI_PIECE");
    long long v = e ? atoll(e) : 0;
    if (v >= 4096 && v <= INT_MAX)
        piece_max = (size_t)v;
}

static uint64_t get_u64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8); /* little-endian hosts only, as the wire */
    return v;
}

static void put_ctl(unsigned char *m, uint32_t kind, uint64_t a, uint64_t b)
{
    uint32_t magic = CTL_MAGIC;
    memcpy(m, &magic, 4);
    memcpy(m + 4, &kind, 4);
    memcpy(m + 8, &a, 8);
    memcpy(m + 16, &b, 8);
}

/* A control message's kind (and fields), or 0 if m is not one. */
static uint32_t get_ctl(const unsigned char *m, size_t len, uint64_t *a,
                        uint64_t *b)
{
    uint32_t magic, kind;
    if (len < CTL_LEN)
        return 0;
    memcpy(&magic, m, 4);
    memcpy(&kind, m + 4, 4);
    if (magic != CTL_MAGIC)
        return 0;
    *a = get_u64(m + 8);
    *b = get_u64(m + 16);
    return kind;
}

/* Number of pieces of a total-byte message. */
static uint64_t pieces_of(uint64_t total, uint64_t piece)
{
    return (total + piece - 1) / piece;
}

/* Sends n bytes to dest, blocking: in one message up to limit bytes, or
 * announced and in pieces. */
static void send_any(MPI_Comm comm, int dest, const void *p, size_t n,
                     size_t limit)
{
    if (n <= limit) {
        MPI_Send(p, (int)n, MPI_BYTE, dest, TAG_FRAME, comm);
        return;
    }
    unsigned char m[CTL_LEN];
    put_ctl(m, CTL_BIG, n, piece_max);
    MPI_Send(m, CTL_LEN, MPI_BYTE, dest, TAG_FRAME, comm);
    for (size_t off = 0; off < n; off += piece_max) {
        size_t k = n - off < piece_max ? n - off : piece_max;
        MPI_Send((const unsigned char *)p + off, (int)k, MPI_BYTE, dest,
                 TAG_PIECE, comm);
    }
}

/*
 * After a BIG announcement from src: receives the message's pieces into a
 * new buffer.  Without memory for it, drains the pieces, keeps the first
 * min(total, sizeof *head) bytes in head (for the frame's header) and
 * returns NULL.  A piece size that does not fit an int is a protocol error.
 */
static unsigned char *recv_big(MPI_Comm comm, int src, uint64_t total,
                               uint64_t piece, unsigned char (*head)[4096])
{
    if (piece == 0 || piece > INT_MAX || total > CF_WIRE_MAX_BODY + 64) {
        fprintf(stderr, "cfutures: bad message announcement from rank %d\n",
                src);
        MPI_Abort(comm, 70);
    }
    unsigned char *buf = malloc((size_t)total), *scratch = NULL;
    if (buf == NULL && (scratch = malloc((size_t)piece)) == NULL) {
        fprintf(stderr, "cfutures: out of memory for a %llu-byte message\n",
                (unsigned long long)total);
        MPI_Abort(comm, 70);
    }
    for (uint64_t off = 0; off < total; off += piece) {
        uint64_t k = total - off < piece ? total - off : piece;
        unsigned char *to = buf ? buf + off : scratch;
        MPI_Recv(to, (int)k, MPI_BYTE, src, TAG_PIECE, comm, MPI_STATUS_IGNORE);
        if (buf == NULL && off == 0)
            memcpy(*head, scratch, k < sizeof *head ? (size_t)k : sizeof *head);
    }
    free(scratch);
    return buf;
}

/* ------------------------------------------------------------------------ */
/* The worker side                                                           */
/* ------------------------------------------------------------------------ */

/*
 * A rank serves with cf__serve (worker.c) over this link.  Its main thread
 * probes for the root's messages (spinning spin_ns after each, then with a
 * back-off) and keeps the frames in a local FIFO.  A frame sent ahead
 * (TAG_AHEAD) is only queued here: when it comes to run, the rank asks the
 * root (CLAIM) and runs it on GO, drops it on SKIP (the root took it back,
 * or the future was cancelled meanwhile).  A second thread sends INFO (pid
 * and host) once, then a heartbeat every beat period (CONF from the root),
 * and stops at the end with BYE, the rank's last message.
 */
typedef struct lframe {
    struct lframe *next;
    cf_wire_header h;
    unsigned char *body;         /* NULL: no memory for it (head kept) */
    unsigned char (*head)[4096]; /* its first bytes, when body is NULL */
    uint64_t total, id;
    uint64_t limit_ns; /* its time limit (crash isolation), 0: none */
    bool ahead, claimed;
    uint32_t answer; /* CTL_GO, CTL_SKIP, 0 */
} lframe;

typedef struct mpi_link {
    cf_link link;
    MPI_Comm comm;
    int root;
    bool isolate;            /* crash isolation asked for */
    int max_tasks_per_child; /* of the local pool */
    cf_executor *local;      /* crash isolation: a one-process local pool */
    lframe *head, *tail;     /* frames received, not run yet */
    bool stopped;            /* STOP came */
    uint64_t last_msg;       /* ns: when the last message came or went */
    uint64_t grant_end;      /* frames sent ahead below this id may start */
    cf_wbuf results;         /* results not sent yet (lock) */
    uint64_t results_since;  /* ns: the oldest of them */
    /* the heartbeat thread */
    pthread_t beat;
    bool beating;
    pthread_mutex_t lock;
    pthread_cond_t cv;
    uint64_t beat_ns; /* 0: none */
    bool beat_stop;
    /* Stopping a running task (lock): the item running (id + 1, 0: none),
     * its future in the local pool, the items asked to stop. */
    _Atomic uint64_t cancel_id; /* id + 1 of an item asked to stop */
    _Atomic uint64_t cur;       /* id + 1 of the item running, 0: none */
    _Atomic bool have_ctl;      /* a range below is set */
    uint64_t cancel_a, cancel_n, kill_a, kill_n;
    cf_future *local_f;
    uint64_t limit_id, limit_ns; /* CTL_LIMIT of the next frame */
    uint64_t cur_limit_ns;       /* of the frame being run */
} mpi_link;

/* A CANCEL or KILL for items a .. a+n-1 (lock held): applied to the item
 * running now if it is one of them, and kept for the next ones. */
static void task_ctl_locked(mpi_link *m, uint32_t kind, uint64_t a, uint64_t n)
{
    if (kind == CTL_CANCEL) {
        m->cancel_a = a;
        m->cancel_n = n;
    } else {
        m->kill_a = a;
        m->kill_n = n;
    }
    atomic_store(&m->have_ctl, true);
    uint64_t cur = atomic_load(&m->cur);
    if (cur == 0 || cur - 1 < a || cur - 1 - a >= n)
        return;
    if (kind == CTL_CANCEL)
        atomic_store(&m->cancel_id, cur);
    if (m->local_f != NULL) {
        if (kind == CTL_CANCEL)
            cf_request_cancel(m->local_f);
        else
            cf_kill_task(m->local_f);
    }
}

/* Receives the CANCEL and KILL messages waiting (heartbeat thread). */
static void poll_task_ctl(mpi_link *m)
{
    for (;;) {
        int flag = 0;
        MPI_Status st;
        MPI_Iprobe(m->root, TAG_TASKCTL, m->comm, &flag, &st);
        if (!flag)
            return;
        unsigned char b[CTL_LEN];
        int count = 0;
        MPI_Get_count(&st, MPI_BYTE, &count);
        if (count != CTL_LEN) {
            fprintf(stderr, "cfutures: a bad task control message\n");
            MPI_Abort(m->comm, 70);
        }
        MPI_Recv(b, CTL_LEN, MPI_BYTE, m->root, TAG_TASKCTL, m->comm,
                 MPI_STATUS_IGNORE);
        uint64_t a, n;
        uint32_t kind = get_ctl(b, CTL_LEN, &a, &n);
        pthread_mutex_lock(&m->lock);
        if (kind == CTL_CANCEL || kind == CTL_KILL)
            task_ctl_locked(m, kind, a, n);
        pthread_mutex_unlock(&m->lock);
    }
}

static void flush_results_locked(mpi_link *m);
static void flush_results(mpi_link *m);

static void send_ctl(MPI_Comm comm, int dest, uint32_t kind, uint64_t a,
                     uint64_t b)
{
    unsigned char m[CTL_LEN];
    put_ctl(m, kind, a, b);
    MPI_Send(m, CTL_LEN, MPI_BYTE, dest, TAG_FRAME, comm);
}

static void *beat_main(void *arg)
{
    mpi_link *m = arg;
    char host[MPI_MAX_PROCESSOR_NAME + CTL_LEN];
    int len = 0;
    MPI_Get_processor_name(host + CTL_LEN, &len);
    put_ctl((unsigned char *)host, CTL_INFO, (uint64_t)getpid(), (uint64_t)len);
    MPI_Send(host, CTL_LEN + len, MPI_BYTE, m->root, TAG_FRAME, m->comm);
    /* Heartbeats every beat_ns; CANCEL and KILL looked for every
     * TASKCTL_POLL_NS. */
    uint64_t last_beat = cf__now_ns();
    pthread_mutex_lock(&m->lock);
    while (!m->beat_stop) {
        cf_deadline d = {.forever = false};
        clock_gettime(CLOCK_MONOTONIC, &d.at);
        uint64_t ns = (uint64_t)d.at.tv_nsec + TASKCTL_POLL_NS;
        d.at.tv_sec += (time_t)(ns / 1000000000u);
        d.at.tv_nsec = (long)(ns % 1000000000u);
        cf__cond_wait(&m->cv, &m->lock, &d);
        if (m->beat_stop)
            break;
        uint64_t now = cf__now_ns(), every = m->beat_ns;
        pthread_mutex_unlock(&m->lock);
        if (every != 0 && now - last_beat >= every) {
            send_ctl(m->comm, m->root, CTL_BEAT, 0, 0);
            last_beat = now;
        }
        poll_task_ctl(m);
        pthread_mutex_lock(&m->lock);
        if (m->results.len > 0 &&
            cf__now_ns() - m->results_since >= RESULTS_WAIT_NS)
            flush_results_locked(m);
    }
    pthread_mutex_unlock(&m->lock);
    send_ctl(m->comm, m->root, CTL_BYE, 0, 0);
    return NULL;
}

/* Runs one item (every item of this rank): it sees a CANCEL through
 * cf_cancel_requested; under crash isolation it runs in the rank's local
 * process pool, with its time limit, where a KILL reaches it. */
static void run_item_hook(cf_link *l, cf_task_fn fn, cf_call *c)
{
    mpi_link *m = (mpi_link *)l;
    c->cancel_id = &m->cancel_id;
    atomic_store(&m->cur, c->id + 1);
    bool cancel = false, kill = false;
    if (atomic_load(&m->have_ctl)) {
        pthread_mutex_lock(&m->lock);
        cancel = c->id >= m->cancel_a && c->id - m->cancel_a < m->cancel_n;
        kill = c->id >= m->kill_a && c->id - m->kill_a < m->kill_n;
        pthread_mutex_unlock(&m->lock);
        if (cancel)
            atomic_store(&m->cancel_id, c->id + 1);
    }
    if (m->local == NULL) {
        fn(c);
        atomic_store(&m->cur, 0);
        return;
    }
    cf_future *f = cf_submit_ex(
        m->local, fn, c->arg, c->arg_len,
        &(cf_task_opts){.time_limit = (double)m->cur_limit_ns / 1e9});
    if (f == NULL) {
        atomic_store(&m->cur, 0);
        cf__outcome_failf(&c->out, cf_last_error(), 0,
                          "the rank's local process pool refused the task");
        return;
    }
    pthread_mutex_lock(&m->lock);
    m->local_f = f;
    if (cancel)
        cf_request_cancel(f);
    if (kill)
        cf_kill_task(f);
    pthread_mutex_unlock(&m->lock);
    const void *data;
    size_t len;
    int rc = cf_result(f, CF_FOREVER, &data, &len);
    if (rc == CF_OK) {
        cf__outcome_set(&c->out, f->out.kind, data, len);
    } else {
        cf_error e = {.code = 0, .message = NULL};
        cf_exception(f, 0, &e);
        cf__outcome_failf(&c->out, rc, e.code, "%s",
                          e.message ? e.message : cf_strerror(rc));
    }
    pthread_mutex_lock(&m->lock);
    m->local_f = NULL;
    pthread_mutex_unlock(&m->lock);
    atomic_store(&m->cur, 0);
    cf_future_release(f);
}

/* Crash isolation: the rank's local one-process pool, with the pool's
 * initializer (from the INIT frame), so that the tasks, which run there,
 * see what it set up.  (cf__serve runs it on the rank too, and reports its
 * outcome to the root.)  Without a pool, tasks run on the rank. */
static void start_local_pool(mpi_link *m, const unsigned char *body, size_t len)
{
    cf_rbuf r = {body, len, 0};
    cf_fnref ref;
    const void *arg = NULL;
    size_t arg_len = 0;
    cf_process_pool_opts o = {.max_workers = 1,
                              .max_tasks_per_child = m->max_tasks_per_child};
    char err[256];
    if (cf__wire_read_fnref(&r, &ref) == CF_OK &&
        cf__wire_read_bytes(&r, &arg, &arg_len) == CF_OK &&
        !(ref.module_len == 0 && ref.offset == 0) &&
        cf__fnref_resolve(&ref, &o.initializer, err, sizeof err) == CF_OK) {
        o.initarg = arg;
        o.initarg_len = arg_len;
    }
    m->local = cf_process_pool(&o);
}

/* A TASK frame this rank has no memory for: each of its items fails with
 * CF_ENOMEM (head: the frame's first bytes). */
static void refuse_task(mpi_link *m, const unsigned char *head, size_t have,
                        uint64_t total)
{
    cf_wire_header h;
    cf_fnref ref;
    uint64_t id;
    cf_rbuf r = {head + CF_WIRE_HEADER, have - CF_WIRE_HEADER, 0};
    if (have < CF_WIRE_HEADER || cf__wire_header(head, &h) != CF_OK ||
        h.type != CF_FRAME_TASK ||
        cf__wire_read_task_head(&r, &ref, &id) != CF_OK) {
        fprintf(stderr, "cfutures: no memory for a %llu-byte frame\n",
                (unsigned long long)total);
        MPI_Abort(m->comm, 70);
    }
    char msg[160];
    int rank = -1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    snprintf(msg, sizeof msg,
             "no memory on MPI rank %d for a task frame of %llu bytes", rank,
             (unsigned long long)total);
    for (uint32_t i = 0; i < h.count; i++) {
        cf_wbuf out = {0};
        size_t off = cf__wire_begin(&out, CF_FRAME_RESULT, 1);
        cf__wire_result(&out, id + i, CF_ENOMEM, 0, CF_KIND_NONE, NULL, 0, msg,
                        strlen(msg));
        cf__wire_end(&out, off);
        if (!out.oom)
            send_any(m->comm, m->root, out.p, out.len, INLINE_MAX);
        cf__wbuf_free(&out);
    }
}

/* Waits for the root's next message (spinning a little, then sleeping
 * with a back-off) and receives it: *buf (malloc'd), *len, its tag.  A BIG
 * message comes whole (*buf NULL if there was no memory for it: *head). */
static void next_message(mpi_link *m, unsigned char **buf, uint64_t *len,
                         int *tag, unsigned char (**head)[4096])
{
    uint64_t wait = BACKOFF_MIN_NS, spin_until = m->last_msg + spin_ns;
    MPI_Status st;
    for (;;) {
        int flag = 0;
        if (wait_mode == WAIT_BLOCK) {
            MPI_Probe(m->root, MPI_ANY_TAG, m->comm, &st);
            break;
        }
        MPI_Iprobe(m->root, MPI_ANY_TAG, m->comm, &flag, &st);
        if (flag)
            break;
        uint64_t now = cf__now_ns();
        if (now < spin_until) {
            sched_yield();
            continue;
        }
        backoff_sleep(&wait, BACKOFF_MAX_NS);
    }
    int count = 0;
    MPI_Get_count(&st, MPI_BYTE, &count);
    unsigned char *b = malloc(count > 0 ? (size_t)count : 1);
    if (b == NULL) {
        fprintf(stderr, "cfutures: MPI worker out of memory\n");
        MPI_Abort(m->comm, 70);
    }
    MPI_Recv(b, count, MPI_BYTE, m->root, st.MPI_TAG, m->comm,
             MPI_STATUS_IGNORE);
    m->last_msg = cf__now_ns();
    *tag = st.MPI_TAG;
    *len = (uint64_t)count;
    *head = NULL;
    uint64_t total, piece;
    if (*tag != TAG_STOP && get_ctl(b, *len, &total, &piece) == CTL_BIG) {
        free(b);
        *head = malloc(sizeof **head);
        if (*head == NULL) {
            fprintf(stderr, "cfutures: MPI worker out of memory\n");
            MPI_Abort(m->comm, 70);
        }
        b = recv_big(m->comm, m->root, total, piece, *head);
        *len = total;
        if (b != NULL) {
            free(*head);
            *head = NULL;
        }
    }
    *buf = b;
}

static lframe *find_frame(mpi_link *m, uint64_t id)
{
    for (lframe *f = m->head; f != NULL; f = f->next)
        if (f->ahead && f->id == id)
            return f;
    return NULL;
}

/* Receives one message from the root and files it. */
static void add_frame(mpi_link *m, unsigned char *buf, uint64_t len,
                      unsigned char (*head)[4096], bool ahead);

static void take_message(mpi_link *m)
{
    unsigned char *buf, (*head)[4096];
    uint64_t len, a, b;
    int tag;
    next_message(m, &buf, &len, &tag, &head);
    if (tag == TAG_STOP) {
        free(buf);
        m->stopped = true;
        return;
    }
    if (tag == TAG_TASKCTL) { /* for a task not started yet, or done */
        uint32_t k = head == NULL ? get_ctl(buf, len, &a, &b) : 0;
        pthread_mutex_lock(&m->lock);
        if (k == CTL_CANCEL || k == CTL_KILL)
            task_ctl_locked(m, k, a, b);
        pthread_mutex_unlock(&m->lock);
        free(buf);
        return;
    }
    uint32_t kind = head == NULL ? get_ctl(buf, len, &a, &b) : 0;
    if (kind == CTL_GO || kind == CTL_SKIP) {
        lframe *f = find_frame(m, a);
        if (f == NULL || b < a) {
            fprintf(stderr, "cfutures: an answer for no task from the root\n");
            MPI_Abort(m->comm, 70);
        }
        f->answer = kind;
        if (kind == CTL_GO && b + 1 > m->grant_end)
            m->grant_end = b + 1; /* frames up to b start without a claim */
        free(buf);
        return;
    }
    if (kind == CTL_LIMIT) {
        m->limit_id = a;
        m->limit_ns = b;
        free(buf);
        return;
    }
    if (kind == CTL_CONF) {
        pthread_mutex_lock(&m->lock);
        m->beat_ns = a;
        pthread_cond_signal(&m->cv);
        pthread_mutex_unlock(&m->lock);
        free(buf);
        return;
    }
    /* Frames sent ahead may come several to a message: each gets its own
     * copy of its body (cf__serve frees each). */
    cf_wire_header h0;
    if (head == NULL && tag == TAG_AHEAD && len >= CF_WIRE_HEADER &&
        cf__wire_header(buf, &h0) == CF_OK &&
        h0.body_len < len - CF_WIRE_HEADER) {
        for (size_t pos = 0; pos < len;) {
            cf_wire_header hx;
            if (len - pos < CF_WIRE_HEADER ||
                cf__wire_header(buf + pos, &hx) != CF_OK ||
                hx.body_len > len - pos - CF_WIRE_HEADER) {
                fprintf(stderr, "cfutures: malformed frames from the root\n");
                MPI_Abort(m->comm, 70);
            }
            size_t fl = CF_WIRE_HEADER + (size_t)hx.body_len;
            unsigned char *one = malloc(fl);
            if (one == NULL) {
                fprintf(stderr, "cfutures: MPI worker out of memory\n");
                MPI_Abort(m->comm, 70);
            }
            memcpy(one, buf + pos, fl);
            add_frame(m, one, fl, NULL, true);
            pos += fl;
        }
        free(buf);
        return;
    }
    add_frame(m, buf, len, head, tag == TAG_AHEAD);
}

/* Queues a frame (buf, len bytes; or, buf NULL, no memory for it and its
 * first bytes in head), taking buf and head. */
static void add_frame(mpi_link *m, unsigned char *buf, uint64_t len,
                      unsigned char (*head)[4096], bool ahead)
{
    lframe *f = calloc(1, sizeof *f);
    if (f == NULL) {
        fprintf(stderr, "cfutures: MPI worker out of memory\n");
        MPI_Abort(m->comm, 70);
    }
    f->ahead = ahead;
    f->total = len;
    const unsigned char *hb = buf ? buf : *head;
    size_t have = buf ? (size_t)len : (len < 4096 ? (size_t)len : 4096);
    cf_fnref ref;
    cf_rbuf r = {hb + CF_WIRE_HEADER, have - CF_WIRE_HEADER, 0};
    if (have < CF_WIRE_HEADER || cf__wire_header(hb, &f->h) != CF_OK ||
        (buf && f->h.body_len != len - CF_WIRE_HEADER) ||
        (f->h.type == CF_FRAME_TASK &&
         cf__wire_read_task_head(&r, &ref, &f->id) != CF_OK) ||
        (f->h.type != CF_FRAME_TASK && buf == NULL)) {
        fprintf(stderr, "cfutures: malformed frame from the MPI root\n");
        MPI_Abort(m->comm, 70);
    }
    if (buf != NULL)
        memmove(buf, buf + CF_WIRE_HEADER, (size_t)f->h.body_len);
    if (f->h.type == CF_FRAME_TASK && m->limit_ns != 0 &&
        m->limit_id == f->id) {
        f->limit_ns = m->limit_ns;
        m->limit_ns = 0;
    }
    f->body = buf;
    f->head = head;
    if (m->tail)
        m->tail->next = f;
    else
        m->head = f;
    m->tail = f;
}

static void drop_head(mpi_link *m)
{
    lframe *f = m->head;
    m->head = f->next;
    if (m->head == NULL)
        m->tail = NULL;
    free(f->head);
    free(f);
}

static bool mpi_recv(cf_link *l, cf_wire_header *h, unsigned char **body)
{
    mpi_link *m = (mpi_link *)l;
    for (;;) {
        lframe *f = m->head;
        if (f == NULL && m->stopped)
            return false;
        if (f != NULL && f->ahead && f->answer == CTL_SKIP) {
            free(f->body);
            drop_head(m);
            continue;
        }
        if (f != NULL && (!f->ahead || f->answer == CTL_GO ||
                          (f->answer == 0 && f->id < m->grant_end))) {
            if (f->body == NULL) { /* no memory for it: its items fail */
                refuse_task(m, *f->head,
                            f->total < 4096 ? (size_t)f->total : 4096,
                            f->total);
                drop_head(m);
                continue;
            }
            *h = f->h;
            *body = f->body;
            m->cur_limit_ns = f->limit_ns;
            drop_head(m);
            if (h->type == CF_FRAME_INIT && m->isolate && m->local == NULL)
                start_local_pool(m, *body, (size_t)h->body_len);
            return true;
        }
        flush_results(m);               /* before waiting for anything */
        if (f != NULL && !f->claimed) { /* its turn: may it start? */
            send_ctl(m->comm, m->root, CTL_CLAIM, f->id, 0);
            m->last_msg = cf__now_ns();
            f->claimed = true;
        }
        take_message(m);
    }
}

/* A message of one or more frames to the root: inline up to INLINE_MAX
 * bytes (the root's receive buffers), else announced and in pieces, one
 * frame per message, so that a result the root has no memory for fails
 * alone. */
/* Sends the results kept back (lock held). */
static void flush_results_locked(mpi_link *m)
{
    if (m->results.len == 0)
        return;
    MPI_Send(m->results.p, (int)m->results.len, MPI_BYTE, m->root, TAG_FRAME,
             m->comm);
    m->results.len = 0;
}

static void flush_results(mpi_link *m)
{
    pthread_mutex_lock(&m->lock);
    flush_results_locked(m);
    pthread_mutex_unlock(&m->lock);
}

/* True if the next frame may start at once (no claim to wait for). */
static bool next_runnable(const mpi_link *m)
{
    const lframe *f = m->head;
    return f != NULL && f->body != NULL &&
           (!f->ahead || f->answer == CTL_GO ||
            (f->answer == 0 && f->id < m->grant_end));
}

static void mpi_send(cf_link *l, const void *p, size_t n)
{
    mpi_link *m = (mpi_link *)l;
    m->last_msg = cf__now_ns();
    /* While the next task may start at once (a batch of short ones),
     * results wait to go together, up to RESULTS_MAX bytes; the
     * heartbeat thread sends any kept back RESULTS_WAIT_NS. */
    pthread_mutex_lock(&m->lock);
    if (n <= RESULTS_MAX && next_runnable(m)) {
        if (m->results.len + n > RESULTS_MAX)
            flush_results_locked(m);
        if (cf__wbuf_reserve(&m->results, n)) {
            if (m->results.len == 0)
                m->results_since = cf__now_ns();
            cf__wbuf_put(&m->results, p, n);
            pthread_mutex_unlock(&m->lock);
            return;
        }
        m->results.oom = false; /* no memory to keep it: send it now */
    }
    flush_results_locked(m);
    pthread_mutex_unlock(&m->lock);
    if (n <= INLINE_MAX) {
        MPI_Send(p, (int)n, MPI_BYTE, m->root, TAG_FRAME, m->comm);
        return;
    }
    const unsigned char *b = p;
    for (size_t pos = 0; pos + CF_WIRE_HEADER <= n;) {
        cf_wire_header h;
        if (cf__wire_header(b + pos, &h) != CF_OK) /* we wrote it */
            break;
        size_t len = CF_WIRE_HEADER + (size_t)h.body_len;
        send_any(m->comm, m->root, b + pos, len, INLINE_MAX);
        pos += len;
    }
}

/* Serves the root until it says stop. */
static void serve(MPI_Comm comm, int root, bool isolate, int max_tasks)
{
    mpi_link m = {
        .link = {.recv = mpi_recv, .send = mpi_send, .run = run_item_hook},
        .comm = comm,
        .root = root,
        .isolate = isolate,
        .max_tasks_per_child = max_tasks,
    };
    fine_timer_slack();
    pthread_mutex_init(&m.lock, NULL);
    cf__cond_init(&m.cv);
    m.beating = pthread_create(&m.beat, NULL, beat_main, &m) == 0;
    if (!m.beating) { /* no heartbeat: the root hears from us still */
        send_ctl(comm, root, CTL_INFO, (uint64_t)getpid(), 0);
    }
    cf__serve(&m.link);
    flush_results(&m);
    pthread_mutex_lock(&m.lock);
    m.beat_stop = true;
    pthread_cond_signal(&m.cv);
    pthread_mutex_unlock(&m.lock);
    if (m.beating)
        pthread_join(m.beat, NULL);
    else
        send_ctl(comm, root, CTL_BYE, 0, 0);
    while (m.head != NULL) {
        free(m.head->body);
        drop_head(&m);
    }
    cf_executor_free(m.local);
    cf__wbuf_free(&m.results);
    pthread_mutex_destroy(&m.lock);
    pthread_cond_destroy(&m.cv);
}

/* ------------------------------------------------------------------------ */
/* The root side                                                             */
/* ------------------------------------------------------------------------ */

/*
 * One manager thread makes every MPI call of the root.  Each worker has a
 * receive posted (MPI_Irecv of up to INLINE_MAX bytes; longer messages are
 * announced and come in pieces); the manager tests them all at once
 * (MPI_Testsome), spins spin_ns after anything happened, then sleeps with
 * a back-off (5 us .. 1 ms) on a condition variable a submit signals.
 *
 * A frame carries one future: a task, or a map's chunk (many items).  To
 * an idle worker it goes as TAG_FRAME, its future RUNNING.  Ahead of time
 * to a busy one (TAG_AHEAD: one behind the running one, up to
 * WINDOW_SHORT while tasks are short), its future stays PENDING until the
 * rank claims it as it starts it: the manager then answers GO (RUNNING
 * now) or SKIP (cancelled meanwhile, or taken back).  A worker that goes
 * idle takes back the frames queued behind a task that runs long, so a
 * task never waits behind a long one while a rank idles.
 *
 * Liveness: every rank sends INFO (pid, host) and then heartbeats; a rank
 * silent for the liveness timeout, or (on this host) whose process is
 * gone, is dead: the item it ran fails with CF_ECRASHED, the rest of its
 * chunk and its frames sent ahead go back to the queue, and the pool goes
 * on with the others (broken when none is left).
 */

enum fstate { F_RUNNING, F_AHEAD, F_REVOKED };
enum { TOLD_CANCEL = 1, TOLD_KILL = 2 };

typedef struct mframe {
    cf_future *f;     /* NULL once revoked */
    cf_chunk_run *rs; /* a chunk's results so far */
    uint64_t id;      /* first item's id */
    uint32_t count;   /* items in the frame */
    uint32_t done;    /* items answered */
    uint8_t state;
    uint8_t told;    /* TOLD_CANCEL, TOLD_KILL: sent to the rank */
    uint64_t queued; /* submit time, for the trace (0: not tracing) */
    uint64_t started;
} mframe;

#define WMAX 128 /* frames in flight per worker, at most */

typedef struct mworker {
    int rank;   /* destination rank in comm (or in the remote group) */
    bool ready; /* HELLO received */
    bool dead, bye;
    pid_t pid;
    char host[64];
    mframe fr[WMAX]; /* oldest first */
    int n;
    uint64_t next_id;
    uint64_t last_heard, busy_since, checked;
    unsigned char *in; /* the posted receive's buffer */
    cf_wbuf batch;     /* frames sent ahead, not posted yet (dispatch) */
} mworker;

typedef struct sendbuf { /* MPI_Isends in progress and their buffer */
    struct sendbuf *next;
    int rank;
    MPI_Request one, *reqs; /* &one, or the announcement and pieces */
    int nreq;
    unsigned char ctl[CTL_LEN]; /* the BIG announcement */
    cf_wbuf buf;
} sendbuf;

typedef struct redo { /* the rest of a chunk whose rank died */
    struct redo *next;
    cf_future *f;
    cf_chunk_run *rs;
} redo;

typedef struct mpi_pool {
    cf_executor base;
    pthread_mutex_t lock;
    pthread_cond_t wake_cv; /* the manager's back-off sleep; submit wakes */
    cf_fqueue q;
    redo *redo;
    bool shutdown, broken, manager_sleeping;
    char *broken_msg;
    cf_manager manager;
    MPI_Comm comm; /* a duplicate (SPMD) or the intercommunicator (spawn) */
    bool spawned, isolated, said_kill, said_limit;
    int nworkers, alive;
    mworker *w;
    MPI_Request *rreq; /* posted receives, one per worker */
    int *idx;
    MPI_Status *sts;
    cf_fncache fncache;
    sendbuf *sends, **sends_tail; /* oldest first */
    unsigned reaps;
    cf_wbuf init; /* the INIT frame every worker gets first */
    uint64_t ewma_ns;
    uint64_t liveness_ns; /* 0: never */
    uint64_t last_check;  /* ns: the last liveness check */
    char self_host[MPI_MAX_PROCESSOR_NAME];
    struct mpi_pool *live_next; /* live_pools */
} mpi_pool;

static void pool_free(mpi_pool *p);

static mpi_pool *pool_of(cf_executor *ex)
{
    return (mpi_pool *)ex;
}

/* Starts sending buf's bytes to rank (the buffer is kept until the send
 * completes).  Takes the buffer's contents. */
static void post_send(mpi_pool *p, int rank, int tag, cf_wbuf *buf)
{
    sendbuf *s = calloc(1, sizeof *s);
    if (s == NULL) { /* no memory to send: the job cannot go on */
        fprintf(stderr, "cfutures: out of memory sending to rank %d\n", rank);
        MPI_Abort(p->comm, 70);
    }
    s->buf = *buf;
    s->rank = rank;
    memset(buf, 0, sizeof *buf);
    size_t n = s->buf.len;
    s->reqs = &s->one;
    s->nreq = 1;
    if (n <= piece_max) {
        MPI_Isend(s->buf.p, (int)n, MPI_BYTE, rank, tag, p->comm, &s->one);
    } else { /* announced, then in pieces (send_any) */
        uint64_t k = pieces_of(n, piece_max);
        s->reqs = malloc((size_t)(k + 1) * sizeof *s->reqs);
        if (s->reqs == NULL) {
            fprintf(stderr, "cfutures: out of memory sending to rank %d\n",
                    rank);
            MPI_Abort(p->comm, 70);
        }
        s->nreq = (int)(k + 1);
        put_ctl(s->ctl, CTL_BIG, n, piece_max);
        MPI_Isend(s->ctl, CTL_LEN, MPI_BYTE, rank, tag, p->comm, &s->reqs[0]);
        for (uint64_t i = 0; i < k; i++) {
            size_t off = (size_t)i * piece_max;
            size_t len = n - off < piece_max ? n - off : piece_max;
            MPI_Isend(s->buf.p + off, (int)len, MPI_BYTE, rank, TAG_PIECE,
                      p->comm, &s->reqs[i + 1]);
        }
    }
    s->next = NULL;
    *p->sends_tail = s;
    p->sends_tail = &s->next;
}

static void post_ctl_tag(mpi_pool *p, int rank, int tag, uint32_t kind,
                         uint64_t a, uint64_t b)
{
    cf_wbuf m = {0};
    unsigned char c[CTL_LEN];
    put_ctl(c, kind, a, b);
    cf__wbuf_put(&m, c, CTL_LEN);
    if (m.oom) {
        fprintf(stderr, "cfutures: out of memory sending to rank %d\n", rank);
        MPI_Abort(p->comm, 70);
    }
    post_send(p, rank, tag, &m);
}

static void post_ctl(mpi_pool *p, int rank, uint32_t kind, uint64_t a,
                     uint64_t b)
{
    post_ctl_tag(p, rank, TAG_FRAME, kind, a, b);
}

/* Frees the buffers of completed sends; true if one completed. */
static void fix_sends_tail(mpi_pool *p)
{
    p->sends_tail = &p->sends;
    while (*p->sends_tail != NULL)
        p->sends_tail = &(*p->sends_tail)->next;
}

/* Frees the buffers of completed sends, oldest first, up to the first
 * still going (every 64th call, all of them): one MPI test per call in
 * the common case, not one per send in flight.  True if one completed. */
static bool reap_sends(mpi_pool *p)
{
    bool any = false, all = (++p->reaps & 63) == 0;
    for (sendbuf **pp = &p->sends; *pp != NULL;) {
        sendbuf *s = *pp;
        int done = 0;
        MPI_Testall(s->nreq, s->reqs, &done, MPI_STATUSES_IGNORE);
        if (!done) {
            if (!all)
                break;
            pp = &s->next;
            continue;
        }
        *pp = s->next;
        cf__wbuf_free(&s->buf);
        if (s->reqs != &s->one)
            free(s->reqs);
        free(s);
        any = true;
    }
    if (all || p->sends == NULL)
        fix_sends_tail(p);
    return any;
}

static void set_broken(mpi_pool *p, char *msg)
{
    pthread_mutex_lock(&p->lock);
    if (!p->broken) {
        p->broken = true;
        p->broken_msg = msg;
        msg = NULL;
    }
    pthread_mutex_unlock(&p->lock);
    free(msg);
}

static void frame_remove(mworker *w, int i)
{
    memmove(&w->fr[i], &w->fr[i + 1], (size_t)(w->n - i - 1) * sizeof w->fr[0]);
    w->n--;
}

/* The frame of w that item id belongs to, or -1. */
static int frame_of(const mworker *w, uint64_t id)
{
    for (int i = 0; i < w->n; i++)
        if (id >= w->fr[i].id && id - w->fr[i].id < w->fr[i].count)
            return i;
    return -1;
}

/* Sends the frames batched for w (sent ahead: one message for many). */
static void flush_batch(mpi_pool *p, mworker *w)
{
    if (w->batch.len == 0)
        return;
    cf_wbuf b = w->batch;
    memset(&w->batch, 0, sizeof w->batch);
    post_send(p, w->rank, TAG_AHEAD, &b);
}

/* Sends f (and its chunk's results so far, rs) to w: running (TAG_FRAME:
 * f is RUNNING, or made so here) or ahead (TAG_AHEAD: f stays PENDING).
 * Lock held.  False if f was not sent (cancelled, failed). */
static bool send_task(mpi_pool *p, mworker *w, cf_future *f, cf_chunk_run *rs,
                      bool ahead)
{
    if (!ahead && rs == NULL) {
        int st = cf_set_running_or_notify_cancel(f);
        if (st == CF_ECANCELLED) {
            cf__stats_cancelled(&p->base);
            cf_future_release(f);
            return false;
        }
        if (st == CF_OK)
            cf__stats_started(&p->base);
    } else if (ahead && cf_cancelled(f)) {
        cf__stats_cancelled(&p->base);
        cf_future_release(f);
        return false;
    }
    cf_fnref ref;
    const char *why = NULL;
    if (cf__fncache_get(&p->fncache, f->fn, &ref) != CF_OK)
        why = "the task function is in no loaded module";
    if (why == NULL && rs == NULL && (f->arg_flags & CF_ARG_CHUNK) &&
        (rs = cf__chunk_run_new(f)) == NULL)
        why = "no memory for the results of a chunk";
    uint32_t start = rs ? rs->next : 0;
    uint32_t count = cf__task_count(f) - start;
    const unsigned char *items;
    size_t items_len;
    bool prefix;
    cf__task_items(f, start, &items, &items_len, &prefix);
    cf_wbuf out = {0};
    if (why == NULL) {
        size_t off = cf__wire_begin(&out, CF_FRAME_TASK, count);
        cf__wire_task_head(&out, &ref, w->next_id);
        if (prefix)
            cf__wbuf_u64(&out, items_len);
        cf__wbuf_put(&out, items, items_len);
        cf__wire_end(&out, off);
        if (out.oom)
            why = "no memory to send the task to a rank";
    }
    if (why != NULL) { /* fails here, with the lock dropped */
        cf__wbuf_free(&out);
        pthread_mutex_unlock(&p->lock);
        if (ahead && cf_set_running_or_notify_cancel(f) == CF_OK)
            cf__stats_started(&p->base);
        else if (ahead) {
            cf_future_release(f);
            pthread_mutex_lock(&p->lock);
            return false;
        }
        if (rs != NULL) { /* every item left fails */
            while (rs->next < cf__task_count(f)) {
                cf__stats_ended(&p->base, CF_ENOMEM);
                cf__chunk_run_fail(rs, CF_ENOMEM, 0, why);
            }
            cf__chunk_run_finish(f, rs);
        } else {
            cf__stats_ended(&p->base, CF_ENOMEM);
            cf__future_fail(f, why[3] == 'm' ? CF_ENOMEM : CF_EINVAL, 0, "%s",
                            why);
        }
        cf_future_release(f);
        pthread_mutex_lock(&p->lock);
        return false;
    }
    if (!ahead || f->time_limit > 0 || out.len > BATCH_FRAME_MAX ||
        w->batch.len + out.len > INLINE_MAX)
        flush_batch(p, w); /* in order: what was batched goes first */
    if (f->time_limit > 0) /* crash isolation only (mp_submit) */
        post_ctl(p, w->rank, CTL_LIMIT, w->next_id,
                 (uint64_t)((double)f->time_limit * 1e9));
    uint64_t now = cf__now_ns();
    mframe *fr = &w->fr[w->n++];
    *fr = (mframe){.f = f,
                   .rs = rs,
                   .id = w->next_id,
                   .count = count,
                   .state = ahead ? F_AHEAD : F_RUNNING,
                   .queued = cf__tracing() ? (uint64_t)f->out.v.i64 : 0,
                   .started = now};
    w->next_id += count;
    if (w->n == 1)
        w->busy_since = now;
    if (ahead && out.len <= BATCH_FRAME_MAX &&
        cf__wbuf_reserve(&w->batch, out.len)) {
        cf__wbuf_put(&w->batch, out.p, out.len); /* goes with others */
        cf__wbuf_free(&out);
        return true;
    }
    w->batch.oom = false;
    post_send(p, w->rank, ahead ? TAG_AHEAD : TAG_FRAME, &out);
    return true;
}

/* The next queued work (lock held): a chunk to finish first, then the
 * queue.  Cancelled futures are dropped. */
static bool next_work(mpi_pool *p, cf_future **f, cf_chunk_run **rs)
{
    if (p->redo != NULL) {
        redo *r = p->redo;
        p->redo = r->next;
        *f = r->f;
        *rs = r->rs;
        free(r);
        return true;
    }
    for (cf_future *h; (h = cf__fq_pop(&p->q)) != NULL;) {
        h->next = NULL;
        if ((cf__state_load(h) & FS_STATE) == CF_CANCELLED) {
            cf__stats_cancelled(&p->base);
            cf_future_release(h);
            continue;
        }
        *f = h;
        *rs = NULL;
        return true;
    }
    return false;
}

static bool has_work(const mpi_pool *p)
{
    return p->redo != NULL || p->q.head != NULL;
}

static bool may_take(const mworker *w)
{
    return w->ready && !w->dead;
}

/* Takes back the oldest frame w has queued ahead (not claimed yet) to the
 * front of the queue; its future is still PENDING (its claim will get
 * SKIP). */
static void take_back(mpi_pool *p, mworker *w)
{
    for (int i = 0; i < w->n; i++) {
        mframe *fr = &w->fr[i];
        if (fr->state != F_AHEAD)
            continue;
        fr->state = F_REVOKED;
        fr->f->next = NULL;
        cf__fq_splice_front(&p->q, fr->f);
        fr->f = NULL;
        return;
    }
}

static bool has_ahead(const mworker *w)
{
    for (int i = 0; i < w->n; i++)
        if (w->fr[i].state == F_AHEAD)
            return true;
    return false;
}

static int live_frames(const mworker *w)
{
    int n = 0;
    for (int i = 0; i < w->n; i++)
        n += w->fr[i].state != F_REVOKED;
    return n;
}

static int window(const mpi_pool *p)
{
    return p->ewma_ns > 0 && p->ewma_ns < PIPELINE_MAX_NS ? WINDOW_SHORT
                                                          : WINDOW_LONG;
}

/* Hands out work (lock held): an idle worker first takes back frames
 * queued behind a long task elsewhere, then the queue; then each busy
 * worker gets frames ahead up to its window.  Returns the time at which a
 * take-back becomes due (0: none). */
static uint64_t dispatch(mpi_pool *p)
{
    uint64_t now = cf__now_ns(), due = 0;
    uint64_t thr = TAKEBACK_NS;
    for (int i = 0; i < p->nworkers; i++) {
        mworker *w = &p->w[i];
        if (!may_take(w) || w->n != 0)
            continue;
        /* Idle: a frame queued behind a task that runs long elsewhere
         * comes first (the one that has waited longest). */
        mworker *from = NULL;
        for (int j = 0; j < p->nworkers && !has_work(p); j++) {
            mworker *o = &p->w[j];
            if (o == w || o->dead || !has_ahead(o) ||
                o->fr[0].state != F_RUNNING)
                continue;
            if (now - o->fr[0].started < thr) {
                if (due == 0 || o->fr[0].started + thr < due)
                    due = o->fr[0].started + thr;
            } else if (from == NULL || o->fr[0].started < from->fr[0].started)
                from = o;
        }
        if (from != NULL)
            take_back(p, from);
        cf_future *f;
        cf_chunk_run *rs;
        while (w->n == 0 && next_work(p, &f, &rs))
            send_task(p, w, f, rs, false);
    }
    /* Ahead, round robin: one frame per busy rank per pass. */
    int win = window(p);
    for (bool more = true; more && has_work(p) && p->redo == NULL;) {
        more = false;
        for (int i = 0; i < p->nworkers && has_work(p); i++) {
            mworker *w = &p->w[i];
            cf_future *f;
            cf_chunk_run *rs;
            if (!may_take(w) || w->n == 0 || live_frames(w) >= win ||
                w->n >= WMAX || !next_work(p, &f, &rs))
                continue;
            send_task(p, w, f, rs, true);
            more = true;
        }
    }
    for (int i = 0; i < p->nworkers; i++)
        flush_batch(p, &p->w[i]);
    return due;
}

/* ---- results, claims, deaths ---- */

static void update_ewma(mpi_pool *p, uint64_t ns)
{
    p->ewma_ns = p->ewma_ns ? (7 * p->ewma_ns + ns) / 8 : (ns ? ns : 1);
}

/* One RESULT item (raw bytes item, len) from w. */
static bool handle_result(mpi_pool *p, mworker *w, const unsigned char *item,
                          size_t len)
{
    cf_rbuf r = {item, len, 0};
    cf_wire_result res;
    if (cf__wire_read_result(&r, &res) != CF_OK || r.pos != len)
        return false;
    int i = frame_of(w, res.id);
    if (i < 0 || w->fr[i].state != F_RUNNING ||
        res.id != w->fr[i].id + w->fr[i].done)
        return false;
    mframe *fr = &w->fr[i];
    fr->done++;
    cf_future *f = fr->f;
    uint64_t now = cf__now_ns();
    if (fr->queued != 0)
        cf__trace_task(&p->base, w->rank, f->fn, fr->queued, fr->started, now,
                       res.status);
    if (fr->rs != NULL) {
        cf__stats_ended(&p->base, res.status);
        cf__chunk_run_add(fr->rs, item, len);
    } else {
        cf__remote_finish(f, &res);
    }
    if (fr->done < fr->count)
        return true;
    update_ewma(p, (now - fr->started) / fr->count);
    cf_chunk_run *rs = fr->rs;
    frame_remove(w, i);
    if (w->n == 0)
        cf__stats_busy(&p->base, now - w->busy_since);
    else if (w->fr[0].state == F_RUNNING)
        w->fr[0].started = now;
    if (rs != NULL)
        cf__chunk_run_finish(f, rs);
    cf_future_release(f);
    return true;
}

/* Frames one claim starts while tasks are short: up to CLAIM_BATCH, and
 * about CLAIM_WORK_NS of work (the frames granted with it can no longer
 * be taken back by an idle rank); 1 while tasks are long or unknown. */
static int claim_batch(const mpi_pool *p)
{
    if (p->ewma_ns == 0 || p->ewma_ns >= PIPELINE_MAX_NS)
        return 1;
    uint64_t n = CLAIM_WORK_NS / p->ewma_ns;
    return n >= CLAIM_BATCH ? CLAIM_BATCH : n < 1 ? 1 : (int)n;
}

/* CLAIM of the frame whose first item is id: GO if its future can start,
 * SKIP if it was cancelled or taken back. */
static bool handle_claim(mpi_pool *p, mworker *w, uint64_t id)
{
    int i = frame_of(w, id);
    if (i < 0 || w->fr[i].id != id || w->fr[i].state == F_RUNNING)
        return false;
    mframe *fr = &w->fr[i];
    bool go = false;
    if (fr->state == F_AHEAD) {
        int st = cf_set_running_or_notify_cancel(fr->f);
        go = st == CF_OK;
        if (go)
            cf__stats_started(&p->base);
        else {
            cf__stats_cancelled(&p->base);
            cf_future_release(fr->f);
        }
    }
    uint64_t last = id;
    if (go) {
        fr->state = F_RUNNING;
        fr->started = cf__now_ns();
        /* Short tasks: the frames queued behind it on this rank start with
         * it, one claim for a batch (a round trip per task would cost more
         * than the tasks). */
        int batch = claim_batch(p);
        for (int j = i + 1; j < w->n && j - i < batch; j++) {
            mframe *nx = &w->fr[j];
            if (nx->state != F_AHEAD ||
                cf_set_running_or_notify_cancel(nx->f) != CF_OK)
                break;
            cf__stats_started(&p->base);
            nx->state = F_RUNNING;
            nx->started = fr->started;
            last = nx->id;
        }
    }
    post_ctl(p, w->rank, go ? CTL_GO : CTL_SKIP, id, last);
    if (!go)
        frame_remove(w, i);
    return true;
}

static void handle_hello(mpi_pool *p, mworker *w, cf_rbuf *r)
{
    int32_t st, code;
    const char *msg;
    size_t n;
    if (cf__wire_read_hello(r, &st, &code, &msg, &n) != CF_OK)
        st = CF_EINVAL, code = 0, msg = "a malformed HELLO", n = 17;
    w->ready = true;
    if (st != CF_OK) {
        char *m = NULL;
        if (asprintf(&m, "the initializer failed on rank %d: %s(%d)%s%.*s",
                     w->rank, cf_err_name(st), code, n ? ": " : "", (int)n,
                     msg) < 0)
            m = NULL;
        set_broken(p, m);
    }
}

/* A message of len bytes from w: frames, or a control message. */
static bool handle_message(mpi_pool *p, mworker *w, const unsigned char *buf,
                           size_t len)
{
    uint64_t a, b;
    switch (get_ctl(buf, len, &a, &b)) {
    case CTL_INFO:
        w->pid = (pid_t)a;
        snprintf(w->host, sizeof w->host, "%.*s",
                 (int)(b < len - CTL_LEN ? b : len - CTL_LEN),
                 (const char *)buf + CTL_LEN);
        return true;
    case CTL_BEAT:
        return true;
    case CTL_BYE:
        w->bye = true;
        return true;
    case CTL_CLAIM:
        return handle_claim(p, w, a);
    case 0:
        break;
    default:
        return false;
    }
    for (size_t pos = 0; pos < len;) { /* one or more frames */
        cf_wire_header h;
        if (len - pos < CF_WIRE_HEADER ||
            cf__wire_header(buf + pos, &h) != CF_OK ||
            h.body_len > len - pos - CF_WIRE_HEADER)
            return false;
        const unsigned char *body = buf + pos + CF_WIRE_HEADER;
        cf_rbuf r = {body, (size_t)h.body_len, 0};
        if (h.type == CF_FRAME_HELLO && !w->ready) {
            handle_hello(p, w, &r);
        } else if (h.type == CF_FRAME_RESULT && w->ready) {
            for (uint32_t i = 0; i < h.count; i++) {
                size_t at = r.pos;
                cf_wire_result res;
                if (cf__wire_read_result(&r, &res) != CF_OK ||
                    !handle_result(p, w, body + at, r.pos - at))
                    return false;
            }
        } else {
            return false;
        }
        pos += CF_WIRE_HEADER + (size_t)h.body_len;
    }
    return true;
}

/* A result the root had no memory for: the item w runs fails with
 * CF_ENOMEM. */
static bool lost_result(mpi_pool *p, mworker *w, uint64_t total)
{
    if (w->n == 0 || w->fr[0].state != F_RUNNING)
        return false;
    char msg[160];
    int n = snprintf(msg, sizeof msg,
                     "no memory for a %llu-byte result from MPI rank %d",
                     (unsigned long long)total, w->rank);
    cf_wbuf item = {0};
    cf__wire_result(&item, w->fr[0].id + w->fr[0].done, CF_ENOMEM, 0,
                    CF_KIND_NONE, NULL, 0, msg, (size_t)n);
    bool ok = !item.oom && handle_result(p, w, item.p, item.len);
    cf__wbuf_free(&item);
    return ok;
}

static void post_recv(mpi_pool *p, int i)
{
    MPI_Irecv(p->w[i].in, INLINE_MAX, MPI_BYTE, p->w[i].rank, TAG_FRAME,
              p->comm, &p->rreq[i]);
}

/* Queues RUNNING work (a task, or a chunk's rest) to run on another rank
 * (after what is there already).  Without memory for that, it fails. */
static void redo_push(mpi_pool *p, cf_future *f, cf_chunk_run *rs)
{
    redo *r = malloc(sizeof *r);
    if (r == NULL) {
        const char *why = "no memory to run it on another rank";
        if (rs == NULL) {
            cf__future_fail(f, CF_ENOMEM, 0, "%s", why);
        } else {
            while (rs->next < cf__task_count(f))
                cf__chunk_run_fail(rs, CF_ENOMEM, 0, why);
            cf__chunk_run_finish(f, rs);
        }
        cf_future_release(f);
        return;
    }
    *r = (redo){NULL, f, rs};
    pthread_mutex_lock(&p->lock);
    redo **pp = &p->redo;
    while (*pp != NULL)
        pp = &(*pp)->next;
    *pp = r;
    pthread_mutex_unlock(&p->lock);
}

/* The rank of w is gone (or silent too long): what it ran fails, what it
 * had queued goes back (lock held). */
static void worker_died(mpi_pool *p, mworker *w, const char *why)
{
    w->dead = true;
    p->alive--;
    if (p->rreq[w - p->w] != MPI_REQUEST_NULL) {
        MPI_Cancel(&p->rreq[w - p->w]);
        MPI_Request_free(&p->rreq[w - p->w]);
    }
    /* Sends to it may never complete: let them go (their buffers leak). */
    for (sendbuf **pp = &p->sends; *pp != NULL;) {
        sendbuf *s = *pp;
        if (s->rank != w->rank) {
            pp = &s->next;
            continue;
        }
        *pp = s->next;
        for (int k = 0; k < s->nreq; k++)
            if (s->reqs[k] != MPI_REQUEST_NULL)
                MPI_Request_free(&s->reqs[k]);
    }
    fix_sends_tail(p);
    char msg[256];
    snprintf(msg, sizeof msg, "MPI rank %d on host %s (pid %d) %s", w->rank,
             w->host[0] ? w->host : "?", (int)w->pid, why);
    cf_future *back = NULL, **tail = &back;
    bool crashed = false;
    for (int i = 0; i < w->n; i++) {
        mframe *fr = &w->fr[i];
        if (fr->state == F_AHEAD) { /* never started: queued again */
            *tail = fr->f;
            fr->f->next = NULL;
            tail = &fr->f->next;
        } else if (fr->state == F_RUNNING && !crashed) {
            /* The item it ran crashed; a chunk's later items run
             * elsewhere. */
            crashed = true;
            cf__stats_ended(&p->base, CF_ECRASHED);
            if (fr->rs == NULL) {
                cf__future_fail(fr->f, CF_ECRASHED, 0, "%s", msg);
                cf_future_release(fr->f);
                continue;
            }
            /* A rank answers a chunk's items in batches: any item from
             * the first unanswered one on may have run, or crashed.  They
             * all fail (none is run twice). */
            char cmsg[400];
            snprintf(cmsg, sizeof cmsg,
                     "%s while running items %u..%u of this chunk (it "
                     "answers in batches: which one crashed is unknown; "
                     "none is run again)",
                     msg, (unsigned)fr->rs->next,
                     (unsigned)cf__task_count(fr->f) - 1);
            while (fr->rs->next < cf__task_count(fr->f))
                cf__chunk_run_fail(fr->rs, CF_ECRASHED, 0, cmsg);
            cf__chunk_run_finish(fr->f, fr->rs);
            cf_future_release(fr->f);
        } else if (fr->state == F_RUNNING) {
            /* Started by a batch claim, never run: runs elsewhere (it
             * stays RUNNING). */
            redo_push(p, fr->f, fr->rs);
        }
    }
    w->n = 0;
    pthread_mutex_lock(&p->lock);
    cf__fq_splice_front(&p->q, back);
    pthread_mutex_unlock(&p->lock);
    fprintf(stderr, "cfutures: %s\n", msg);
    if (p->alive == 0) {
        char *m = NULL;
        if (asprintf(&m, "every rank of the MPI pool is gone (last: %s)", msg) <
            0)
            m = NULL;
        set_broken(p, m);
    }
}

/* Dead ranks: silent past the liveness timeout, or (on this host) whose
 * process is gone. */
static bool poll_messages(mpi_pool *p);

static void check_liveness(mpi_pool *p, uint64_t now)
{
    /* The manager itself was busy (a frame of gigabytes takes seconds to
     * copy and move): heartbeats may wait unread; silence counts from
     * now. */
    if (p->last_check != 0 && now - p->last_check > STALL_NS)
        for (int i = 0; i < p->nworkers; i++)
            p->w[i].last_heard = now;
    p->last_check = now;
    for (int i = 0; i < p->nworkers; i++) {
        mworker *w = &p->w[i];
        if (w->dead || w->bye)
            continue;
        if (p->liveness_ns != 0 && now - w->last_heard > p->liveness_ns) {
            while (poll_messages(p)) /* read what has come, first */
                ;
            if (cf__now_ns() - w->last_heard <= p->liveness_ns)
                continue;
            char why[96];
            snprintf(why, sizeof why,
                     "is presumed dead: not heard from for %.1f s",
                     (double)(now - w->last_heard) / 1e9);
            worker_died(p, w, why);
        } else if (w->pid > 0 && now - w->checked > PID_CHECK_NS &&
                   strcmp(w->host, p->self_host) == 0) {
            w->checked = now;
            if (kill(w->pid, 0) != 0 && errno == ESRCH)
                worker_died(p, w, "died (its process is gone)");
        }
    }
}

/* Receives what the workers sent; true if anything came. */
static bool poll_messages(mpi_pool *p)
{
    int n = 0;
    MPI_Status *sts = p->sts;
    MPI_Testsome(p->nworkers, p->rreq, &n, p->idx, sts);
    if (n == MPI_UNDEFINED)
        n = 0;
    for (int k = 0; k < n; k++) {
        int i = p->idx[k];
        mworker *w = &p->w[i];
        int count = 0;
        MPI_Get_count(&sts[k], MPI_BYTE, &count);
        w->last_heard = cf__now_ns();
        unsigned char *buf = w->in, *big = NULL;
        size_t len = (size_t)count;
        uint64_t total, piece;
        bool ok = true;
        if (get_ctl(buf, len, &total, &piece) == CTL_BIG) {
            unsigned char head[4096];
            big = recv_big(p->comm, w->rank, total, piece, &head);
            buf = big;
            len = (size_t)total;
            if (big == NULL) { /* one result frame: its item fails */
                ok = lost_result(p, w, total);
                len = 0;
            }
        }
        ok = ok && (len == 0 || handle_message(p, w, buf, len));
        free(big);
        if (!ok) {
            fprintf(stderr, "cfutures: malformed message from rank %d\n",
                    w->rank);
            MPI_Abort(p->comm, 70);
        }
        if (!w->bye && !w->dead)
            post_recv(p, i);
    }
    return n > 0;
}

/* cf_request_cancel and cf_kill_task of running tasks: their flags are in
 * the futures' state; tell their ranks once. */
static void send_stops(mpi_pool *p)
{
    for (int i = 0; i < p->nworkers; i++) {
        mworker *w = &p->w[i];
        for (int k = 0; k < w->n; k++) {
            mframe *fr = &w->fr[k];
            if (fr->state != F_RUNNING || fr->told == (TOLD_CANCEL | TOLD_KILL))
                continue;
            uint32_t st = cf__state_load(fr->f);
            if ((st & FS_KILL_REQ) && !(fr->told & TOLD_KILL)) {
                if (p->isolated) {
                    post_ctl_tag(p, w->rank, TAG_TASKCTL, CTL_KILL, fr->id,
                                 fr->count);
                    fr->told |= TOLD_KILL | TOLD_CANCEL;
                    continue;
                }
                fr->told |= TOLD_KILL;
                if (!p->said_kill)
                    fprintf(stderr,
                            "cfutures: cf_kill_task cannot stop a task on "
                            "MPI rank %d: without crash_isolation the task "
                            "runs in the rank's own process, and killing a "
                            "rank ends the job; its cancel flag is raised "
                            "instead\n",
                            w->rank);
                p->said_kill = true;
            }
            if ((st & FS_CANCEL_REQ) && !(fr->told & TOLD_CANCEL)) {
                post_ctl_tag(p, w->rank, TAG_TASKCTL, CTL_CANCEL, fr->id,
                             fr->count);
                fr->told |= TOLD_CANCEL;
            }
        }
    }
}

static bool all_idle(const mpi_pool *p)
{
    for (int i = 0; i < p->nworkers; i++)
        if (p->w[i].n != 0)
            return false;
    return true;
}

static void *manager_main(void *arg)
{
    mpi_pool *p = arg;
    cf__manager_enter(&p->manager);
    fine_timer_slack();
    uint64_t now = cf__now_ns();
    for (int i = 0; i < p->nworkers; i++) {
        mworker *w = &p->w[i];
        w->last_heard = now;
        w->in = malloc(INLINE_MAX);
        if (w->in == NULL) {
            fprintf(stderr, "cfutures: out of memory for the MPI pool\n");
            MPI_Abort(p->comm, 70);
        }
        post_recv(p, i);
        post_ctl(p, w->rank, CTL_CONF, p->liveness_ns / 4, 0);
        cf_wbuf copy = {0};
        cf__wbuf_put(&copy, p->init.p, p->init.len);
        post_send(p, w->rank, TAG_FRAME, &copy);
    }
    uint64_t wait = BACKOFF_MIN_NS, spin_until = now + spin_ns;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        if (p->broken && has_work(p)) {
            cf_future *all = cf__fq_take_all(&p->q);
            redo *rd = p->redo;
            p->redo = NULL;
            pthread_mutex_unlock(&p->lock);
            const char *why = p->broken_msg ? p->broken_msg
                                            : "the pool is broken";
            for (redo *r = rd, *next; r != NULL; r = next) {
                next = r->next;
                if (r->rs == NULL) {
                    cf__future_fail(r->f, CF_EBROKEN, 0, "%s", why);
                } else {
                    while (r->rs->next < cf__task_count(r->f))
                        cf__chunk_run_fail(r->rs, CF_EBROKEN, 0, why);
                    cf__chunk_run_finish(r->f, r->rs);
                }
                cf_future_release(r->f);
                free(r);
            }
            cf__fail_list(all, CF_EBROKEN,
                          p->broken_msg ? p->broken_msg : "the pool is broken");
            pthread_mutex_lock(&p->lock);
        }
        uint64_t due = dispatch(p);
        if (p->shutdown && !has_work(p) && all_idle(p))
            break;
        pthread_mutex_unlock(&p->lock);
        bool progress = poll_messages(p);
        send_stops(p);
        progress |= reap_sends(p);
        now = cf__now_ns();
        check_liveness(p, now);
        pthread_mutex_lock(&p->lock);
        if (progress) {
            wait = BACKOFF_MIN_NS;
            spin_until = now + spin_ns;
            continue;
        }
        if (now < spin_until || (due != 0 && now >= due) ||
            wait_mode == WAIT_BLOCK) {
            pthread_mutex_unlock(&p->lock);
            sched_yield();
            pthread_mutex_lock(&p->lock);
            continue;
        }
        /* Nothing happened: sleep a little, or until a submit. */
        cf_deadline d = {.forever = false};
        uint64_t ns = wait;
        if (due != 0 && due - now < ns)
            ns = due - now;
        clock_gettime(CLOCK_MONOTONIC, &d.at);
        d.at.tv_nsec += (long)ns;
        if (d.at.tv_nsec >= 1000000000L) {
            d.at.tv_sec++;
            d.at.tv_nsec -= 1000000000L;
        }
        p->manager_sleeping = true;
        cf__cond_wait(&p->wake_cv, &p->lock, &d);
        if (!p->manager_sleeping) /* a submit woke us */
            spin_until = cf__now_ns() + spin_ns;
        p->manager_sleeping = false;
        wait = wait * 2 > BACKOFF_MAX_NS ? BACKOFF_MAX_NS : wait * 2;
    }
    pthread_mutex_unlock(&p->lock);

    /* Stop the workers, wait for their last word, let go of the
     * communicator. */
    bool lost = false;
    for (int i = 0; i < p->nworkers; i++) {
        if (p->w[i].dead) {
            lost = true;
            continue;
        }
        cf_wbuf empty = {0};
        cf__wbuf_u8(&empty, 0);
        post_send(p, p->w[i].rank, TAG_STOP, &empty);
    }
    for (;;) {
        bool waiting = p->sends != NULL;
        for (int i = 0; i < p->nworkers; i++)
            waiting |= !p->w[i].dead && !p->w[i].bye;
        if (!waiting)
            break;
        bool progress = poll_messages(p);
        progress |= reap_sends(p);
        check_liveness(p, cf__now_ns());
        if (!progress)
            backoff_sleep(&wait, BACKOFF_MAX_NS);
    }
    for (int i = 0; i < p->nworkers; i++) {
        if (p->rreq[i] != MPI_REQUEST_NULL) {
            MPI_Cancel(&p->rreq[i]);
            MPI_Wait(&p->rreq[i], MPI_STATUS_IGNORE);
        }
        lost |= p->w[i].dead;
    }
    if (p->spawned && !lost)
        MPI_Comm_disconnect(&p->comm);
    else
        MPI_Comm_free(&p->comm);
    if (cf__manager_exit(&p->manager)) /* freed from a callback here */
        pool_free(p);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* vtable                                                                    */
/* ------------------------------------------------------------------------ */

static int mp_submit(cf_executor *ex, cf_future *f, unsigned flags)
{
    (void)flags;
    mpi_pool *p = pool_of(ex);
    pthread_mutex_lock(&p->lock);
    int rc = CF_OK;
    if (p->broken)
        rc = CF_EBROKEN;
    else if (p->shutdown)
        rc = CF_ESHUTDOWN;
    else if (f->time_limit > 0 && !p->isolated) {
        rc = CF_EINVAL;
        if (!p->said_limit)
            fprintf(stderr, "cfutures: a time limit on an MPI pool needs "
                            "cf_mpi_opts.crash_isolation: a task runs in its "
                            "rank's own process, and killing a rank ends the "
                            "job\n");
        p->said_limit = true;
    } else {
        cf__fq_push(&p->q, f);
        if (p->manager_sleeping) {
            p->manager_sleeping = false;
            pthread_cond_signal(&p->wake_cv);
        }
    }
    pthread_mutex_unlock(&p->lock);
    return rc;
}

static void mp_shutdown(cf_executor *ex, bool cancel_futures)
{
    mpi_pool *p = pool_of(ex);
    pthread_mutex_lock(&p->lock);
    p->shutdown = true;
    cf_future *cancelled = cancel_futures ? cf__fq_take_all(&p->q) : NULL;
    pthread_cond_signal(&p->wake_cv);
    pthread_mutex_unlock(&p->lock);
    while (cancelled != NULL) {
        cf_future *next = cancelled->next;
        cancelled->next = NULL;
        if (cf_cancel(cancelled))
            cf__stats_cancelled(ex);
        cf_future_release(cancelled);
        cancelled = next;
    }
}

static int mp_wait(cf_executor *ex, const cf_deadline *d)
{
    return cf__manager_wait(&pool_of(ex)->manager, d);
}

static void pool_free(mpi_pool *p)
{
    pthread_mutex_lock(&live_lock);
    for (mpi_pool **pp = &live_pools; *pp != NULL; pp = &(*pp)->live_next)
        if (*pp == p) {
            *pp = p->live_next;
            break;
        }
    pthread_mutex_unlock(&live_lock);
    for (int i = 0; p->w != NULL && i < p->nworkers; i++) {
        if (!p->w[i].dead) /* a dead rank's receive may still hold it */
            free(p->w[i].in);
        cf__wbuf_free(&p->w[i].batch);
    }
    free(p->w);
    free(p->rreq);
    free(p->idx);
    free(p->sts);
    cf__wbuf_free(&p->init);
    free(p->broken_msg);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->wake_cv);
    cf__manager_fini(&p->manager);
    free(p);
}

static void mp_destroy(cf_executor *ex)
{
    mpi_pool *p = pool_of(ex);
    if (cf__manager_release(&p->manager))
        pool_free(p);
}

/* Runs first in MPI_Finalize (an attribute of MPI_COMM_SELF being
 * deleted), whoever calls it: shuts down every live pool as
 * cf_shutdown(ex, true, false) does and waits for their managers, which
 * stop their workers and let go of their communicators while MPI still
 * works.  Without this, a program that returns from main with a live pool
 * crashed in MPI_Finalize under the manager's feet. */
static int finalize_hook(MPI_Comm comm, int keyval, void *attr, void *extra)
{
    (void)comm;
    (void)attr;
    (void)extra;
    pthread_mutex_lock(&live_lock);
    for (mpi_pool *p = live_pools; p != NULL; p = p->live_next) {
        pthread_mutex_lock(&p->lock);
        p->shutdown = true;
        pthread_cond_signal(&p->wake_cv);
        pthread_mutex_unlock(&p->lock);
    }
    for (;;) {
        bool running = false;
        for (mpi_pool *p = live_pools; p != NULL; p = p->live_next) {
            pthread_mutex_lock(&p->lock);
            running |= !p->manager.done && !cf__manager_is_self(&p->manager);
            pthread_mutex_unlock(&p->lock);
        }
        pthread_mutex_unlock(&live_lock);
        if (!running)
            break;
        usleep(1000);
        pthread_mutex_lock(&live_lock);
    }
    pthread_mutex_lock(&live_lock);
    hook_set = false; /* MPI is going away: a new hook if it comes back */
    pthread_mutex_unlock(&live_lock);
    MPI_Comm_free_keyval(&keyval);
    return MPI_SUCCESS;
}

/* cf_request_cancel / cf_kill_task of a running task (crash isolation):
 * the flags are in f's state already; wake the manager to pass them on. */
static void mp_cancel_running(cf_executor *ex, cf_future *f, bool force)
{
    (void)f;
    (void)force;
    mpi_pool *p = pool_of(ex);
    pthread_mutex_lock(&p->lock);
    if (p->manager_sleeping) {
        p->manager_sleeping = false;
        pthread_cond_signal(&p->wake_cv);
    }
    pthread_mutex_unlock(&p->lock);
}

/* Without crash isolation no cancel_running: cf_kill_task says CF_EINVAL
 * (the manager still passes the cooperative flag on, at its next look). */
static const cf_executor_vtable mpi_pool_vtable = {
    .kind = "mpi",
    .submit = mp_submit,
    .shutdown = mp_shutdown,
    .wait = mp_wait,
    .chunks = true,
    .destroy = mp_destroy,
};

static const cf_executor_vtable mpi_isolated_vtable = {
    .kind = "mpi",
    .submit = mp_submit,
    .shutdown = mp_shutdown,
    .wait = mp_wait,
    .cancel_running = mp_cancel_running,
    .chunks = true,
    .destroy = mp_destroy,
};

/* A pool over comm whose workers are the given ranks. */
static cf_executor *pool_new(MPI_Comm comm, bool spawned, const int *ranks,
                             int n, const cf_mpi_opts *opts)
{
    mpi_pool *p = calloc(1, sizeof *p);
    if (p == NULL)
        return cf__fail_null(CF_ENOMEM);
    p->w = calloc((size_t)n, sizeof *p->w);
    p->rreq = malloc((size_t)n * sizeof *p->rreq);
    p->idx = malloc((size_t)n * sizeof *p->idx);
    p->sts = malloc((size_t)n * sizeof *p->sts);
    p->nworkers = p->alive = n;
    p->sends_tail = &p->sends;
    p->comm = comm;
    p->spawned = spawned;
    pthread_mutex_init(&p->lock, NULL);
    cf__cond_init(&p->wake_cv);
    if (p->w == NULL || p->rreq == NULL || p->idx == NULL || p->sts == NULL) {
        pool_free(p);
        return cf__fail_null(CF_ENOMEM);
    }
    for (int i = 0; i < n; i++) {
        p->w[i].rank = ranks[i];
        p->rreq[i] = MPI_REQUEST_NULL;
    }
    double lt = opts->liveness_timeout;
    p->liveness_ns = lt == 0              ? (uint64_t)LIVENESS_DEFAULT_NS
                     : lt < 0 || lt > 1e9 ? 0
                                          : (uint64_t)(lt * 1e9);
    int len = 0;
    MPI_Get_processor_name(p->self_host, &len);
    cf_fnref none = {0}, ref;
    if (opts->initializer != NULL &&
        cf__fnref_make(opts->initializer, &ref) != CF_OK) {
        pool_free(p);
        return cf__fail_null(CF_EINVAL);
    }
    size_t off = cf__wire_begin(&p->init, CF_FRAME_INIT, 1);
    cf__wire_fnref(&p->init, opts->initializer ? &ref : &none);
    cf__wbuf_u64(&p->init, opts->initarg_len);
    cf__wbuf_put(&p->init, opts->initarg, opts->initarg_len);
    cf__wire_end(&p->init, off);
    if (p->init.oom) {
        pool_free(p);
        return cf__fail_null(CF_ENOMEM);
    }
    p->isolated = opts->crash_isolation;
    cf__executor_init(&p->base,
                      p->isolated ? &mpi_isolated_vtable : &mpi_pool_vtable, n);
    pthread_mutex_lock(&live_lock);
    p->live_next = live_pools;
    live_pools = p;
    pthread_mutex_unlock(&live_lock);
    if (cf__manager_start(&p->manager, &p->lock, manager_main, p) != CF_OK) {
        pool_free(p);
        return cf__fail_null(CF_ENOMEM);
    }
    return &p->base;
}

static const cf_mpi_opts no_opts;

static int check_opts(const cf_mpi_opts *o)
{
    if (o->max_workers < 0 || o->max_tasks_per_child < 0 ||
        (o->initarg == NULL && o->initarg_len > 0) ||
        o->liveness_timeout != o->liveness_timeout)
        return CF_EINVAL;
    if (o->max_tasks_per_child > 0 && !o->crash_isolation) {
        fprintf(stderr, "cfutures: max_tasks_per_child on an MPI pool needs "
                        "crash_isolation (it replaces the rank's local "
                        "process; a rank is not replaced)\n");
        return CF_EINVAL;
    }
    return CF_OK;
}

int cf_mpi_comm_executor(MPI_Comm comm, int root, const cf_mpi_opts *opts,
                         cf_executor **ex)
{
    if (ex == NULL)
        return CF_EINVAL;
    *ex = NULL;
    if (opts == NULL)
        opts = &no_opts;
    if (check_opts(opts) != CF_OK)
        return CF_EINVAL;
    int rc = ensure_mpi(NULL, NULL);
    if (rc != CF_OK)
        return rc;
    int size = 0, rank = 0;
    if (comm == MPI_COMM_NULL || MPI_Comm_size(comm, &size) != MPI_SUCCESS ||
        size < 2 || root < 0 || root >= size) {
        fprintf(stderr, "cfutures: cf_mpi_comm_executor needs a communicator "
                        "of at least 2 ranks and a root inside it\n");
        return CF_EINVAL;
    }
    MPI_Comm_rank(comm, &rank);
    MPI_Comm dup;
    MPI_Comm_dup(comm, &dup); /* our traffic never mixes with the program's */
    MPI_Comm_set_errhandler(dup, MPI_ERRORS_RETURN);
    if (rank != root) {
        serve(dup, root, opts->crash_isolation, opts->max_tasks_per_child);
        MPI_Comm_free(&dup);
        return CF_OK;
    }
    int *ranks = malloc((size_t)(size - 1) * sizeof *ranks);
    if (ranks == NULL)
        return CF_ENOMEM;
    for (int r = 0, k = 0; r < size; r++)
        if (r != root)
            ranks[k++] = r;
    *ex = pool_new(dup, false, ranks, size - 1, opts);
    free(ranks);
    return *ex ? CF_OK : cf_last_error();
}

int cf_mpi_worker_main(int *argc, char ***argv)
{
    int rc = ensure_mpi(argc, argv);
    if (rc != CF_OK)
        return rc;
    MPI_Comm parent = MPI_COMM_NULL;
    MPI_Comm_get_parent(&parent);
    if (parent == MPI_COMM_NULL)
        return CF_OK; /* the original program */
    MPI_Comm_set_errhandler(parent, MPI_ERRORS_RETURN);
    /* cf_mpi_pool passes its options to its copies as arguments. */
    bool isolate = false;
    int max_tasks = 0;
    for (int i = 1; argc != NULL && argv != NULL && i < *argc; i++) {
        isolate |= strcmp((*argv)[i], ISOLATE_ARG) == 0;
        if (strncmp((*argv)[i], MAXTASKS_ARG, strlen(MAXTASKS_ARG)) == 0)
            max_tasks = atoi((*argv)[i] + strlen(MAXTASKS_ARG));
    }
    serve(parent, 0, isolate, max_tasks);
    MPI_Comm_disconnect(&parent);
    MPI_Finalize();
    exit(0);
}

cf_executor *cf_mpi_pool(const cf_mpi_opts *opts)
{
    if (opts == NULL)
        opts = &no_opts;
    if (check_opts(opts) != CF_OK)
        return cf__fail_null(CF_EINVAL);
    int rc = ensure_mpi(NULL, NULL);
    if (rc != CF_OK)
        return cf__fail_null(rc);
    int n = opts->max_workers ? opts->max_workers : cf__cpu_count();
    char exe[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len <= 0)
        return cf__fail_null(CF_EINVAL);
    exe[len] = '\0';
    MPI_Info info;
    MPI_Info_create(&info);
    if (opts->hosts != NULL)
        MPI_Info_set(info, "host", opts->hosts);
    if (opts->hostfile != NULL)
        MPI_Info_set(info, "hostfile", opts->hostfile);
    if (opts->map_by != NULL)
        MPI_Info_set(info, "map_by", opts->map_by);
    MPI_Comm inter;
    int *errs = calloc((size_t)n, sizeof *errs);
    if (errs == NULL) {
        MPI_Info_free(&info);
        return cf__fail_null(CF_ENOMEM);
    }
    MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_RETURN);
    char iso[] = ISOLATE_ARG, maxt[64];
    snprintf(maxt, sizeof maxt, "%s%d", MAXTASKS_ARG,
             opts->max_tasks_per_child);
    char *args[] = {opts->crash_isolation ? iso : NULL,
                    opts->crash_isolation ? maxt : NULL, NULL};
    int e = MPI_Comm_spawn(exe, args, n, info, 0, MPI_COMM_SELF, &inter, errs);
    MPI_Info_free(&info);
    free(errs);
    if (e != MPI_SUCCESS) {
        char msg[MPI_MAX_ERROR_STRING];
        int mlen = 0;
        MPI_Error_string(e, msg, &mlen);
        fprintf(stderr,
                "cfutures: MPI cannot spawn %d worker processes: %s (not "
                "enough slots? set OMPI_MCA_rmaps_base_oversubscribe=1; "
                "hosts, hostfile, map_by as given?)\n",
                n, msg);
        return cf__fail_null(CF_EBROKEN);
    }
    MPI_Comm_set_errhandler(inter, MPI_ERRORS_RETURN);
    int *ranks = malloc((size_t)n * sizeof *ranks);
    if (ranks == NULL)
        return cf__fail_null(CF_ENOMEM);
    for (int i = 0; i < n; i++)
        ranks[i] = i;
    cf_executor *ex = pool_new(inter, true, ranks, n, opts);
    free(ranks);
    return ex;
}
