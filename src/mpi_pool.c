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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

enum { TAG_FRAME = 7001, TAG_STOP = 7002, TAG_PIECE = 7003 };

/* Probing back-off: from MIN up to BUSY_MAX while work is in flight (or a
 * message came in the last ACTIVE_NS), up to IDLE_MAX otherwise.  The
 * polling threads ask for a 1 us timer slack, so short sleeps are short. */
#define BACKOFF_MIN_NS 5000u
#define BACKOFF_BUSY_MAX_NS 50000u
#define BACKOFF_MAX_NS 1000000u
#define ACTIVE_NS 5000000u
#define WINDOW 4
#define ISOLATE_ARG "--cfutures-crash-isolation"

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
enum { CTL_BIG = 1 };

static size_t piece_max = (size_t)1 << 30;

static void read_piece_knob(void)
{
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
    if (len != CTL_LEN)
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

/* Sends n bytes to dest, blocking: in one message, or announced and in
 * pieces. */
static void send_any(MPI_Comm comm, int dest, const void *p, size_t n)
{
    if (n <= piece_max) {
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

typedef struct mpi_link {
    cf_link link;
    MPI_Comm comm;
    int root;
    bool isolate;       /* crash isolation asked for */
    cf_executor *local; /* crash isolation: a one-process local pool */
    uint64_t last_msg;  /* ns: when the last frame came */
} mpi_link;

/* Crash isolation: run the task in the rank's local process pool. */
static void isolated_run(cf_link *l, cf_task_fn fn, cf_call *c)
{
    mpi_link *m = (mpi_link *)l;
    cf_future *f = cf_submit(m->local, fn, c->arg, c->arg_len);
    if (f == NULL) {
        cf__outcome_failf(&c->out, cf_last_error(), 0,
                          "the rank's local process pool refused the task");
        return;
    }
    const void *data;
    size_t len;
    int rc = cf_result(f, CF_FOREVER, &data, &len);
    if (rc == CF_OK) {
        cf__outcome_set(&c->out, f->out.kind, data, len);
    } else {
        cf_error e;
        cf_exception(f, 0, &e);
        cf__outcome_failf(&c->out, rc, e.code, "%s", e.message);
    }
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
    cf_process_pool_opts o = {.max_workers = 1};
    char err[256];
    if (cf__wire_read_fnref(&r, &ref) == CF_OK &&
        cf__wire_read_bytes(&r, &arg, &arg_len) == CF_OK &&
        !(ref.module_len == 0 && ref.offset == 0) &&
        cf__fnref_resolve(&ref, &o.initializer, err, sizeof err) == CF_OK) {
        o.initarg = arg;
        o.initarg_len = arg_len;
    }
    m->local = cf_process_pool(&o);
    if (m->local != NULL)
        m->link.run = isolated_run;
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
            send_any(m->comm, m->root, out.p, out.len);
        cf__wbuf_free(&out);
    }
}

static bool mpi_recv(cf_link *l, cf_wire_header *h, unsigned char **body)
{
    mpi_link *m = (mpi_link *)l;
    for (;;) {
        uint64_t wait = BACKOFF_MIN_NS;
        MPI_Status st;
        for (;;) {
            int flag = 0;
            MPI_Iprobe(m->root, MPI_ANY_TAG, m->comm, &flag, &st);
            if (flag)
                break;
            bool active = cf__now_ns() - m->last_msg < ACTIVE_NS;
            backoff_sleep(&wait, active ? BACKOFF_BUSY_MAX_NS : BACKOFF_MAX_NS);
        }
        m->last_msg = cf__now_ns();
        int count = 0;
        MPI_Get_count(&st, MPI_BYTE, &count);
        unsigned char *buf = malloc(count > 0 ? (size_t)count : 1);
        if (buf == NULL) {
            fprintf(stderr, "cfutures: MPI worker out of memory\n");
            MPI_Abort(m->comm, 70);
        }
        MPI_Recv(buf, count, MPI_BYTE, m->root, st.MPI_TAG, m->comm,
                 MPI_STATUS_IGNORE);
        if (st.MPI_TAG == TAG_STOP) {
            free(buf);
            return false;
        }
        uint64_t len = (uint64_t)count, total, piece;
        if (get_ctl(buf, len, &total, &piece) == CTL_BIG) {
            free(buf);
            unsigned char head[4096];
            buf = recv_big(m->comm, m->root, total, piece, &head);
            if (buf == NULL) {
                refuse_task(m, head, total < sizeof head ? total : sizeof head,
                            total);
                continue;
            }
            len = total;
        }
        if (len < CF_WIRE_HEADER || cf__wire_header(buf, h) != CF_OK ||
            h->body_len != len - CF_WIRE_HEADER) {
            fprintf(stderr, "cfutures: malformed frame from the MPI root\n");
            MPI_Abort(m->comm, 70);
        }
        memmove(buf, buf + CF_WIRE_HEADER, (size_t)h->body_len);
        *body = buf;
        if (h->type == CF_FRAME_INIT && m->isolate && m->local == NULL)
            start_local_pool(m, buf, (size_t)h->body_len);
        return true;
    }
}

/* A message of one or more frames to the root.  Above piece_max, one frame
 * per message, so that a result the root has no memory for fails alone. */
static void mpi_send(cf_link *l, const void *p, size_t n)
{
    mpi_link *m = (mpi_link *)l;
    if (n <= piece_max) {
        MPI_Send(p, (int)n, MPI_BYTE, m->root, TAG_FRAME, m->comm);
        return;
    }
    const unsigned char *b = p;
    for (size_t pos = 0; pos + CF_WIRE_HEADER <= n;) {
        cf_wire_header h;
        if (cf__wire_header(b + pos, &h) != CF_OK) /* we wrote it */
            break;
        size_t len = CF_WIRE_HEADER + (size_t)h.body_len;
        send_any(m->comm, m->root, b + pos, len);
        pos += len;
    }
}

/* Serves the root until it says stop. */
static void serve(MPI_Comm comm, int root, bool isolate)
{
    mpi_link m = {
        .link = {.recv = mpi_recv, .send = mpi_send},
        .comm = comm,
        .root = root,
    };
    m.isolate = isolate;
    fine_timer_slack();
    cf__serve(&m.link);
    cf_executor_free(m.local);
}

/* ------------------------------------------------------------------------ */
/* The root side                                                             */
/* ------------------------------------------------------------------------ */

typedef struct mworker {
    int rank;   /* destination rank in comm (or in the remote group) */
    bool ready; /* HELLO received */
    cf_remote r;
} mworker;

typedef struct sendbuf { /* MPI_Isends in progress and their buffer */
    struct sendbuf *next;
    MPI_Request one, *reqs; /* &one, or the announcement and pieces */
    int nreq;
    unsigned char ctl[CTL_LEN]; /* the BIG announcement */
    cf_wbuf buf;
} sendbuf;

typedef struct mpi_pool {
    cf_executor base;
    pthread_mutex_t lock;
    pthread_cond_t wake_cv; /* the manager's back-off sleep; submit wakes */
    cf_fqueue q;
    bool shutdown, broken, manager_sleeping;
    char *broken_msg;
    cf_manager manager;
    MPI_Comm comm; /* a duplicate (SPMD) or the intercommunicator (spawn) */
    bool spawned;
    int nworkers;
    mworker *w;
    cf_fncache fncache;
    sendbuf *sends;
    cf_wbuf init; /* the INIT frame every worker gets first */
    uint64_t ewma_ns;
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
    s->next = p->sends;
    p->sends = s;
}

/* Frees the buffers of completed sends; true if one completed. */
static bool reap_sends(mpi_pool *p)
{
    bool any = false;
    for (sendbuf **pp = &p->sends; *pp != NULL;) {
        sendbuf *s = *pp;
        int done = 0;
        MPI_Testall(s->nreq, s->reqs, &done, MPI_STATUSES_IGNORE);
        if (!done) {
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
    return any;
}

static mworker *worker_of_rank(mpi_pool *p, int rank)
{
    for (int i = 0; i < p->nworkers; i++)
        if (p->w[i].rank == rank)
            return &p->w[i];
    return NULL;
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

/* Handles one frame from worker w; false on a protocol error. */
static bool handle_frame(mpi_pool *p, mworker *w, const cf_wire_header *hp,
                         const unsigned char *body)
{
    cf_wire_header h = *hp;
    cf_rbuf r = {body, (size_t)h.body_len, 0};
    if (h.type == CF_FRAME_HELLO && !w->ready) {
        int32_t st, code;
        const char *msg;
        size_t n;
        if (cf__wire_read_hello(&r, &st, &code, &msg, &n) != CF_OK)
            return false;
        w->ready = true;
        if (st != CF_OK) {
            char *m = NULL;
            if (asprintf(&m, "the initializer failed on rank %d: %s(%d)%s%.*s",
                         w->rank, cf_err_name(st), code, n ? ": " : "", (int)n,
                         msg) < 0)
                m = NULL;
            set_broken(p, m);
        }
        return true;
    }
    if (h.type != CF_FRAME_RESULT || !w->ready)
        return false;
    for (uint32_t i = 0; i < h.count; i++) {
        cf_wire_result res;
        uint64_t ran = cf__now_ns() - w->r.head_start;
        if (cf__wire_read_result(&r, &res) != CF_OK ||
            !cf__remote_result(&p->base, &w->r, w->rank, &res))
            return false;
        p->ewma_ns = p->ewma_ns ? (7 * p->ewma_ns + ran) / 8 : ran;
    }
    return true;
}

/* A result the root had no memory for: its item (the oldest in flight on
 * w) fails with CF_ENOMEM. */
static bool lost_result(mpi_pool *p, mworker *w, uint64_t total)
{
    if (w->r.count == 0)
        return false;
    char msg[160];
    int n = snprintf(msg, sizeof msg,
                     "no memory for a %llu-byte result from MPI rank %d",
                     (unsigned long long)total, w->rank);
    cf_wire_result res = {.id = cf__remote_at(&w->r, 0)->id,
                          .status = CF_ENOMEM,
                          .msg = msg,
                          .msg_len = (size_t)n};
    return cf__remote_result(&p->base, &w->r, w->rank, &res);
}

/* Receives every frame waiting; true if there was one. */
static bool poll_results(mpi_pool *p)
{
    bool any = false;
    for (;;) {
        int flag = 0;
        MPI_Status st;
        MPI_Iprobe(MPI_ANY_SOURCE, TAG_FRAME, p->comm, &flag, &st);
        if (!flag)
            return any;
        int count = 0;
        MPI_Get_count(&st, MPI_BYTE, &count);
        unsigned char *buf = malloc(count > 0 ? (size_t)count : 1);
        if (buf == NULL) {
            fprintf(stderr, "cfutures: out of memory for a result\n");
            MPI_Abort(p->comm, 70);
        }
        MPI_Recv(buf, count, MPI_BYTE, st.MPI_SOURCE, TAG_FRAME, p->comm,
                 MPI_STATUS_IGNORE);
        mworker *w = worker_of_rank(p, st.MPI_SOURCE);
        bool ok = w != NULL;
        size_t len = (size_t)count;
        uint64_t total, piece;
        if (ok && get_ctl(buf, len, &total, &piece) == CTL_BIG) {
            free(buf);
            unsigned char head[4096];
            buf = recv_big(p->comm, w->rank, total, piece, &head);
            len = (size_t)total;
            if (buf == NULL) { /* one result frame: its item fails */
                ok = lost_result(p, w, total);
                buf = malloc(1);
                len = 0;
            }
        }
        /* One message holds one or more frames (a batch of results). */
        for (size_t pos = 0; ok && pos < len;) {
            cf_wire_header h;
            ok = len - pos >= CF_WIRE_HEADER &&
                 cf__wire_header(buf + pos, &h) == CF_OK &&
                 h.body_len <= len - pos - CF_WIRE_HEADER &&
                 handle_frame(p, w, &h, buf + pos + CF_WIRE_HEADER);
            if (ok)
                pos += CF_WIRE_HEADER + (size_t)h.body_len;
        }
        if (!ok) {
            fprintf(stderr, "cfutures: malformed frame from rank %d\n",
                    st.MPI_SOURCE);
            MPI_Abort(p->comm, 70);
        }
        free(buf);
        any = true;
    }
}

/* Sends w a frame of queued work (lock held; dropped while encoding). */
static bool dispatch_one_locked(mpi_pool *p, mworker *w)
{
    size_t n;
    cf_future *batch = cf__take_batch(&p->base, &p->q, SIZE_MAX, &n);
    if (batch == NULL)
        return p->q.head != NULL;
    pthread_mutex_unlock(&p->lock);
    cf_wbuf out = {0};
    cf__send_batch(&w->r, batch, n, &out, &p->fncache);
    if (out.oom) { /* cannot happen: cf__send_batch reserves first */
        fprintf(stderr, "cfutures: out of memory encoding a task frame\n");
        MPI_Abort(p->comm, 70);
    }
    if (out.len > 0)
        post_send(p, w->rank, TAG_FRAME, &out);
    cf__wbuf_free(&out);
    pthread_mutex_lock(&p->lock);
    return true;
}

static void *manager_main(void *arg)
{
    mpi_pool *p = arg;
    cf__manager_enter(&p->manager);
    fine_timer_slack();
    for (int i = 0; i < p->nworkers; i++) {
        cf_wbuf copy = {0};
        cf__wbuf_put(&copy, p->init.p, p->init.len);
        post_send(p, p->w[i].rank, TAG_FRAME, &copy);
    }
    uint64_t wait = BACKOFF_MIN_NS;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        if (p->broken && p->q.head != NULL) {
            cf_future *all = cf__fq_take_all(&p->q);
            pthread_mutex_unlock(&p->lock);
            cf__fail_list(all, CF_EBROKEN,
                          p->broken_msg ? p->broken_msg : "the pool is broken");
            pthread_mutex_lock(&p->lock);
        }
        /* Idle workers first; a second frame to a busy one only for a
         * backlog of short tasks (see process_pool.c). */
        int busy = 0;
        for (int i = 0; i < p->nworkers; i++) {
            mworker *w = &p->w[i];
            if (w->ready && w->r.count == 0 && p->q.head != NULL)
                dispatch_one_locked(p, w);
            busy += w->r.count > 0;
        }
        /* A message costs tens of microseconds here: with a backlog of
         * two frames per worker, keep WINDOW frames on each. */
        bool backlog = p->q.n >= 2 * (size_t)p->nworkers;
        if (backlog || (p->q.n >= (size_t)p->nworkers && p->ewma_ns > 0 &&
                        p->ewma_ns < 200000)) {
            uint64_t now = cf__now_ns();
            for (int i = 0; i < p->nworkers && p->q.head != NULL; i++) {
                mworker *w = &p->w[i];
                while (w->ready && w->r.frames < WINDOW && p->q.head != NULL &&
                       (backlog ||
                        now - w->r.head_start <= 4 * p->ewma_ns + 50000))
                    if (!dispatch_one_locked(p, w))
                        break;
            }
        }
        if (p->shutdown && p->q.head == NULL && busy == 0)
            break;
        pthread_mutex_unlock(&p->lock);
        bool progress = poll_results(p);
        progress |= reap_sends(p);
        pthread_mutex_lock(&p->lock);
        if (progress) {
            wait = BACKOFF_MIN_NS;
            continue;
        }
        /* Nothing happened: sleep a little, or until a submit. */
        cf_deadline d = {.forever = false};
        clock_gettime(CLOCK_MONOTONIC, &d.at);
        d.at.tv_nsec += (long)wait;
        if (d.at.tv_nsec >= 1000000000L) {
            d.at.tv_sec++;
            d.at.tv_nsec -= 1000000000L;
        }
        p->manager_sleeping = true;
        cf__cond_wait(&p->wake_cv, &p->lock, &d);
        p->manager_sleeping = false;
        uint64_t max = busy > 0 ? BACKOFF_BUSY_MAX_NS : BACKOFF_MAX_NS;
        wait = wait * 2 > max ? max : wait * 2;
    }
    pthread_mutex_unlock(&p->lock);

    /* Stop the workers, finish the sends, let go of the communicator. */
    for (int i = 0; i < p->nworkers; i++) {
        cf_wbuf empty = {0};
        cf__wbuf_u8(&empty, 0);
        post_send(p, p->w[i].rank, TAG_STOP, &empty);
    }
    while (p->sends != NULL) {
        if (!reap_sends(p))
            backoff_sleep(&wait, BACKOFF_MAX_NS);
    }
    if (p->spawned)
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
    else {
        cf__fq_push(&p->q, f);
        if (p->manager_sleeping)
            pthread_cond_signal(&p->wake_cv);
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
    for (int i = 0; i < p->nworkers; i++)
        cf__remote_free(&p->w[i].r);
    free(p->w);
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

static const cf_executor_vtable mpi_pool_vtable = {
    .kind = "mpi",
    .submit = mp_submit,
    .shutdown = mp_shutdown,
    .wait = mp_wait,
    .destroy = mp_destroy,
};

/* A pool over comm whose workers are the given ranks. */
static cf_executor *pool_new(MPI_Comm comm, bool spawned, const int *ranks,
                             int n, const cf_mpi_opts *opts)
{
    mpi_pool *p = calloc(1, sizeof *p);
    mworker *w = calloc((size_t)n, sizeof *w);
    if (p == NULL || w == NULL) {
        free(p);
        free(w);
        return cf__fail_null(CF_ENOMEM);
    }
    p->w = w;
    p->nworkers = n;
    for (int i = 0; i < n; i++)
        w[i].rank = ranks[i];
    p->comm = comm;
    p->spawned = spawned;
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
    cf__executor_init(&p->base, &mpi_pool_vtable, n);
    pthread_mutex_init(&p->lock, NULL);
    cf__cond_init(&p->wake_cv);
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

int cf_mpi_comm_executor(MPI_Comm comm, int root, const cf_mpi_opts *opts,
                         cf_executor **ex)
{
    if (ex == NULL)
        return CF_EINVAL;
    *ex = NULL;
    if (opts == NULL)
        opts = &no_opts;
    if (opts->initarg == NULL && opts->initarg_len > 0)
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
    if (rank != root) {
        serve(dup, root, opts->crash_isolation);
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
    /* cf_mpi_pool passes its options to its copies as arguments. */
    bool isolate = false;
    for (int i = 1; argc != NULL && argv != NULL && i < *argc; i++)
        isolate |= strcmp((*argv)[i], ISOLATE_ARG) == 0;
    serve(parent, 0, isolate);
    MPI_Comm_disconnect(&parent);
    MPI_Finalize();
    exit(0);
}

cf_executor *cf_mpi_pool(const cf_mpi_opts *opts)
{
    if (opts == NULL)
        opts = &no_opts;
    if (opts->max_workers < 0 ||
        (opts->initarg == NULL && opts->initarg_len > 0))
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
    MPI_Comm inter;
    int *errs = calloc((size_t)n, sizeof *errs);
    if (errs == NULL) {
        MPI_Info_free(&info);
        return cf__fail_null(CF_ENOMEM);
    }
    MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_RETURN);
    char iso[] = ISOLATE_ARG;
    char *args[] = {opts->crash_isolation ? iso : NULL, NULL};
    int e = MPI_Comm_spawn(exe, args, n, info, 0, MPI_COMM_SELF, &inter, errs);
    MPI_Info_free(&info);
    free(errs);
    if (e != MPI_SUCCESS) {
        char msg[MPI_MAX_ERROR_STRING];
        int mlen = 0;
        MPI_Error_string(e, msg, &mlen);
        fprintf(stderr,
                "cfutures: MPI cannot spawn %d worker processes: %s (not "
                "enough slots? set OMPI_MCA_rmaps_base_oversubscribe=1)\n",
                n, msg);
        return cf__fail_null(CF_EBROKEN);
    }
    int *ranks = malloc((size_t)n * sizeof *ranks);
    if (ranks == NULL)
        return cf__fail_null(CF_ENOMEM);
    for (int i = 0; i < n; i++)
        ranks[i] = i;
    cf_executor *ex = pool_new(inter, true, ranks, n, opts);
    free(ranks);
    return ex;
}
