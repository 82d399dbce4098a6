/* MANA-rs MPI wrappers: what every generated and hand-written wrapper uses.
 *
 * A wrapper looks up the real function in the lower world once (mana_lower_fn, in
 * libmana), switches the FS base to the lower world's TCB around the call (wrfsbase)
 * and back. Handles are translated between the application's virtual values and the
 * lower half's real ones (src/handles.c); statuses are copied field by field.
 * Wrappers are static and exported under the MPI names with MANA_EXPORT, so their
 * prototypes (from the MPI standard) never clash with those of MPICH's mpi.h. */
#ifndef MANA_WRAP_H
#define MANA_WRAP_H
#include <mpi.h>
#include <stddef.h>

#define MANA_HIDDEN __attribute__((visibility("hidden")))

/* Provided by libmana.so (the upper-half runtime, LD_PRELOADed by mana_launch). */
extern void *mana_lower_fn(unsigned id, const char *lower_name, unsigned long fs);
extern int mana_unsupported(const char *name);
extern unsigned long mana_lower_tcb_for_this_thread(void);
extern unsigned long mana_upper_fs_for(unsigned long lower_fs);

/* This thread's lower-world TCB (lent by libmana on its first MPI call), and the lower
 * half's generation it belongs to (libmana bumps mana_lower_generation when a restart
 * brings a new lower half). */
extern __thread unsigned long mana_tls_lower_fs
    __attribute__((tls_model("initial-exec"), visibility("hidden")));
extern __thread unsigned long mana_tls_lower_gen
    __attribute__((tls_model("initial-exec"), visibility("hidden")));
extern volatile unsigned long mana_lower_generation;

static inline __attribute__((always_inline)) unsigned long mana_thread_lower_fs(void)
{
    unsigned long fs = mana_tls_lower_fs, gen = mana_lower_generation;
    if (__builtin_expect(fs == 0 || mana_tls_lower_gen != gen, 0)) {
        fs = mana_tls_lower_fs = mana_lower_tcb_for_this_thread();
        mana_tls_lower_gen = gen;
    }
    return fs;
}

/* Every static cache of a lower-half function pointer registers itself when filled, so
 * that a restart (a new lower half) can empty them all (src/ckpt.c). */
extern void mana_cache_register(void **cache) MANA_HIDDEN;

static inline __attribute__((always_inline)) unsigned long mana_enter_lower(unsigned long fs)
{
    unsigned long up;
    __asm__ volatile("rdfsbase %0" : "=r"(up));
    __asm__ volatile("wrfsbase %0" ::"r"(fs) : "memory");
    return up;
}

static inline __attribute__((always_inline)) void mana_leave_lower(unsigned long up)
{
    __asm__ volatile("wrfsbase %0" ::"r"(up) : "memory");
}

/* In a callback the lower world makes into application code: run it on the TCB of the
 * upper thread that lent this lower TCB. */
static inline __attribute__((always_inline)) unsigned long mana_callback_enter(void)
{
    unsigned long lower;
    __asm__ volatile("rdfsbase %0" : "=r"(lower));
    unsigned long up = mana_upper_fs_for(lower);
    if (up)
        __asm__ volatile("wrfsbase %0" ::"r"(up) : "memory");
    return lower;
}

static inline __attribute__((always_inline)) void mana_callback_leave(unsigned long lower)
{
    __asm__ volatile("wrfsbase %0" ::"r"(lower) : "memory");
}

/* ---- The gate (src/gate.c) ----
 * Every call into the lower half holds the calling thread's gate token; a checkpoint
 * closes the gate and waits until no application thread holds one, so that it can use
 * the lower half alone (drain) and never stops a thread inside it. Holding the token is
 * a thread-local counter (nested entries — a callback calling MPI — just count); the
 * checkpointer makes the ordering work with membarrier(2), so the fast path has no
 * atomic instruction. Where membarrier is missing, entering uses a fenced store. */
/* The tag of a receive that cannot be posted again at restart (it was for a message the
 * lower half had already matched: MPI_Mrecv). */
#define MANA_NO_REPOST (-2)

/* The lower-half requests a thread blocked in a point-to-point call waits for (at most
 * two: MPI_Sendrecv), where the checkpointer's drain can test them (src/p2p.c). */
struct mana_blocking {
    int n;
    MPI_Request real[2];
    int comm[2];
    /* A receive's arguments, to post it again in a new lower half at restart. */
    void *buf[2];
    MPI_Count count[2];
    int datatype[2], peer[2], tag[2];
    unsigned char recv[2];
    unsigned char state[2]; /* 0 pending, 1 complete (status in st), 2 complete, not counted,
                               3 completed by the checkpointer with error st.MPI_ERROR */
    MPI_Status st[2];
    int sync_slot; /* an MPI_Ssend's registration (src/ssend.c), 0 none */
};
struct mana_gate_slot {
    volatile int in;
    struct mana_gate_slot *next;
    struct mana_blocking *blk; /* set while the thread is in a blocking call */
};
extern volatile int mana_gate_closed MANA_HIDDEN;
extern int mana_gate_fenced MANA_HIDDEN;
extern __thread struct mana_gate_slot *mana_tls_gate
    __attribute__((tls_model("initial-exec"), visibility("hidden")));
extern struct mana_gate_slot *mana_gate_register(void) MANA_HIDDEN;
extern void mana_gate_park(void) MANA_HIDDEN;
extern int mana_gate_close(double timeout) MANA_HIDDEN;
/* Calls `f` on every thread's slot (checkpointer, gate closed). */
extern void mana_gate_each(void (*f)(struct mana_gate_slot *g, void *arg), void *arg) MANA_HIDDEN;
extern void mana_gate_open(void) MANA_HIDDEN;

/* MANA_CKPT_AT_NS / MANA_MPI_TIMES call counting (src/special.c): set while counting. */
extern int mana_call_trigger MANA_HIDDEN;
extern void mana_count_call(void) MANA_HIDDEN;
/* A restart happened (src/ckpt.c): a trigger waiting for its checkpoint goes on. */
extern void mana_call_trigger_restarted(void) MANA_HIDDEN;
/* Whether a checkpoint's agreement has begun on this rank (src/ckpt.c). */
extern int mana_ckpt_pending(void) MANA_HIDDEN;
static inline __attribute__((always_inline)) void mana_gate_enter(void)
{
    struct mana_gate_slot *g = mana_tls_gate;
    if (__builtin_expect(!g, 0))
        g = mana_gate_register();
    if (g->in) {
        g->in++;
        return;
    }
    if (__builtin_expect(mana_call_trigger, 0))
        mana_count_call();
    for (;;) {
        if (__builtin_expect(mana_gate_fenced, 0))
            __atomic_store_n(&g->in, 1, __ATOMIC_SEQ_CST);
        else
            __atomic_store_n(&g->in, 1, __ATOMIC_RELAXED);
        __asm__ volatile("" ::: "memory");
        if (__builtin_expect(!__atomic_load_n(&mana_gate_closed, __ATOMIC_RELAXED), 1))
            return;
        __atomic_store_n(&g->in, 0, __ATOMIC_RELEASE);
        mana_gate_park();
    }
}

static inline __attribute__((always_inline)) void mana_gate_leave(void)
{
    struct mana_gate_slot *g = mana_tls_gate;
    __atomic_store_n(&g->in, g->in - 1, __ATOMIC_RELEASE);
}

/* Calls the lower world's `lower_name` with `args` on this thread's lower TCB and stores
 * the result in `out`, without the gate (the checkpointer's own calls, or callers that
 * hold it). The lower function is looked up once per call site and kept in a static (a
 * benign race: every thread finds the same pointer). */
#define MANA_CALL_LOWER_INTO(out, id, lower_name, ret, params, args)    \
    typedef ret(*mana_fn_t) params;                                     \
    static mana_fn_t f_cache_;                                          \
    unsigned long fs_ = mana_thread_lower_fs();                         \
    mana_fn_t f_ = f_cache_;                                            \
    if (__builtin_expect(!f_, 0)) {                                     \
        f_ = f_cache_ = (mana_fn_t)mana_lower_fn(id, lower_name, fs_);  \
        mana_cache_register((void **)&f_cache_);                        \
    }                                                                   \
    unsigned long up_ = mana_enter_lower(fs_);                          \
    out = f_ args;                                                      \
    mana_leave_lower(up_)

/* A lower-half function, looked up once per call site. Resolve it (lower_get) only while
 * holding the gate, with the FS base read after taking it: a thread that parks at the gate
 * may wake up in a restarted process with a new lower half (new functions, new TCBs). */
struct lower_fn {
    void *f;
    unsigned id;
    const char *name;
};
#define LOWER_FN(ID, NAME)                                                               \
    ({                                                                                   \
        static struct lower_fn c_ = {NULL, ID, NAME};                                    \
        &c_;                                                                             \
    })

static inline void *lower_get(struct lower_fn *c, unsigned long fs)
{
    void *f = c->f;
    if (__builtin_expect(!f, 0)) {
        f = c->f = mana_lower_fn(c->id, c->name, fs);
        mana_cache_register(&c->f);
    }
    return f;
}

/* The same, holding the gate token: what every wrapper does. */
#define MANA_FORWARD_INTO(out, id, lower_name, ret, params, args)       \
    mana_gate_enter();                                                  \
    MANA_CALL_LOWER_INTO(out, id, lower_name, ret, params, args);       \
    mana_gate_leave()

/* A static function `NAME PARAMS` returning the lower world's `LOWER` called with the
 * gate (the wrappers' own uses of MPI, with real handles). */
#define MANA_LOWER_FUNCTION(NAME, ID, LOWER, PARAMS, ARGS)                              \
    static int NAME PARAMS                                                              \
    {                                                                                   \
        MANA_FORWARD(ID, LOWER, int, PARAMS, ARGS);                                     \
    }

/* The same, returning the result. */
#define MANA_FORWARD(id, lower_name, ret, params, args)                 \
    ret r_;                                                             \
    MANA_FORWARD_INTO(r_, id, lower_name, ret, params, args);           \
    return r_

/* MPI_UNWEIGHTED / MPI_WEIGHTS_EMPTY of this library → the lower library's (src/special.c). */
extern __attribute__((visibility("hidden"))) const void *mana_translate_weights_impl(const void *p);
#define mana_translate_weights(p) ((__typeof__(p))mana_translate_weights_impl((const void *)(p)))

/* ---- Virtual handles (src/handles.c explains the encoding) ---- */
#define MANA_VH_KINDS 16
#define MANA_VH_CHUNK_BITS 15
#define MANA_VH_CHUNKS 1024
#define MANA_VH_TAG 0xC2000000u
#define MANA_VH_INDEX_MASK 0x01FFFFFFu
#define MANA_VH_KIND(h) (((unsigned)(h) >> 26) & 0xFu)

extern int *mana_vh_dir[MANA_VH_KINDS][MANA_VH_CHUNKS] MANA_HIDDEN;

/* A handle naming an object created at run time (MPICH: "direct" or "indirect"), as
 * opposed to a predefined object or a null handle, which keep their values. MPICH's five
 * predefined pair types (MPI_FLOAT_INT … MPI_LONG_DOUBLE_INT, for MINLOC/MAXLOC) are
 * "direct" handles 0x8c000000–0x8c000004 and predefined all the same. */
static inline __attribute__((always_inline)) int mana_h_is_object(int h)
{
    return ((unsigned)h >> 30) >= 2 &&
           (unsigned)h - (unsigned)MPI_FLOAT_INT > (unsigned)MPI_LONG_DOUBLE_INT - (unsigned)MPI_FLOAT_INT;
}
_Static_assert((unsigned)MPI_LONG_DOUBLE_INT - (unsigned)MPI_FLOAT_INT == 4 &&
                   (unsigned)MPI_DOUBLE_INT - (unsigned)MPI_FLOAT_INT == 1 &&
                   (unsigned)MPI_LONG_INT - (unsigned)MPI_FLOAT_INT == 2 &&
                   (unsigned)MPI_SHORT_INT - (unsigned)MPI_FLOAT_INT == 3,
               "MPICH's pair types are five consecutive handles");

static inline __attribute__((always_inline)) int mana_h_is_virtual(int h)
{
    return ((unsigned)h & MANA_VH_TAG) == MANA_VH_TAG;
}

/* The real handle behind an application handle. Not a handle MANA handed out (never
 * created, or already freed): a value the real library rejects as invalid, of the same
 * kind, so MPICH's error handling reports it as it would have. */
static inline __attribute__((always_inline)) int mana_h_real(int h)
{
    if (__builtin_expect(!mana_h_is_object(h), 1))
        return h;
    if (mana_h_is_virtual(h)) {
        unsigned idx = (unsigned)h & MANA_VH_INDEX_MASK;
        int *chunk = __atomic_load_n(&mana_vh_dir[MANA_VH_KIND(h)][idx >> MANA_VH_CHUNK_BITS], __ATOMIC_ACQUIRE);
        if (chunk) {
            int r = chunk[idx & ((1u << MANA_VH_CHUNK_BITS) - 1)];
            if (r)
                return r;
        }
    }
    return (int)(MANA_VH_TAG | ((unsigned)h & 0x3C000000u) | MANA_VH_INDEX_MASK);
}

/* The real handle behind `h`, or `fallback` if `h` names no live object any more. */
static inline int mana_h_real_or(int h, int fallback)
{
    int r = mana_h_real(h);
    return mana_h_is_object(h) && mana_h_is_virtual(r) ? fallback : r;
}

/* The application's handle for a real handle the lower half returned: new objects get
 * a new virtual handle, an object already known gets its handle again (one more
 * reference). */
extern int mana_h_virtual(int real) MANA_HIDDEN;
/* The application's handle for a real handle MPI passes to a callback (no new reference). */
extern int mana_h_lookup_virtual(int real) MANA_HIDDEN;
/* The same, or `real` itself when it names no object of the application (handles.c). */
extern int mana_h_peek_virtual(int real) MANA_HIDDEN;
/* After a call that may free or replace the object behind an in-out handle: the
 * application's new value. */
extern int mana_h_inout_done(int v_before, int real_before, int real_after) MANA_HIDDEN;
/* Stores the application's handle for `real` in `*out` if the call succeeded. */
static inline int mana_out_handle(int r, int *out, int real)
{
    if (r == MPI_SUCCESS && real)
        *out = mana_h_virtual(real);
    else if (real && !mana_h_is_object(real))
        *out = real; /* the null handle MPI sets on an error (MPI_Comm_dup whose copy callback failed) */
    return r;
}
/* ---- What MANA knows about each request (src/handles.c, src/p2p.c) ---- */
enum mana_req_kind { MANA_REQ_OTHER = 0, MANA_REQ_SEND, MANA_REQ_RECV, MANA_REQ_COLL, MANA_REQ_IO, MANA_REQ_RMA };
enum mana_req_state {
    MANA_REQ_LIVE = 0, /* the real request is the lower half's */
    MANA_REQ_DONE,     /* completed by the checkpointer (or served from drained messages):
                          `status` holds the result, the real handle is gone */
};
struct mana_req_meta {
    unsigned char kind, state, persistent, active;
    unsigned char send_mode; /* a persistent send's MPI_*_init: 0 Send, 1 Ssend, 2 Bsend, 3 Rsend */
    unsigned char app_freed; /* MPI_Request_free'd while active: kept for the drain */
    unsigned char io;        /* made by an MPI-IO call (a ROMIO generalized request) */
    unsigned char part;      /* a partitioned send or receive (MPI_Psend_init, MPI_Precv_init) */
    int comm;                /* the application's communicator */
    int peer;                /* destination of a send, source of a receive */
    int tag, datatype;       /* a receive's arguments: to serve a persistent one from */
    void *buf;               /* drained messages at MPI_Start, to post a pending one */
    MPI_Count count;         /* again at restart */
    unsigned long long posted; /* posting order of receives (and persistent collectives) */
    int (*replay)(const void *args, MPI_Request *out); /* a persistent collective's init */
    void *replay_args;                                 /* again, with these (malloc'd) */
    void *send_copy; /* an MPI_Isendrecv_replace's packed send data (malloc'd) */
    int pcoll;       /* a persistent collective's start counter (src/ckpt.c), 0 none */
    unsigned char cancel; /* a send the application cancelled: 1 asked, 2 its count taken back */
    unsigned char suspect; /* a synchronous send the drain found complete (src/ssend.c) */
    unsigned char held;    /* a synchronous send waiting for its acknowledgement, as a
                              receive on MANA's communicator; `status` is the send's */
    int sync_slot;         /* an MPI_Issend's registration (src/ssend.c), 0 none */
    int error;             /* MANA_REQ_DONE: the error MPI completed it with (MPI_Test said
                              so, and freed it: an MPI_Comm_idup out of context ids) */
    MPI_Status status;
};
/* Metadata of virtual request `v` (zeroed when the handle is created); NULL if `v` is not
 * a live virtual request. */
extern struct mana_req_meta *mana_req_meta(int v) MANA_HIDDEN;
/* Calls `f` for every live virtual request (checkpointer only: the gate is closed). */
extern void mana_req_each(void (*f)(int v, struct mana_req_meta *m, void *arg), void *arg) MANA_HIDDEN;

/* A persistent collective: `replay(args)` initializes it again in a new lower half. */
extern void mana_req_replayable(int v, int (*replay)(const void *, MPI_Request *), const void *args,
                                size_t size) MANA_HIDDEN;
/* The same for one with datatype arrays (alltoallw): `arrays` arrays of the application's
 * handles, `types[k]` of `n[k]` entries, are copied after `args` (their lengths first). */
extern void mana_req_replayable_types(int v, int (*replay)(const void *, MPI_Request *), const void *args,
                                      size_t size, const MPI_Datatype *const *types, const size_t *n,
                                      int arrays) MANA_HIDDEN;
/* The next number in the order receives and persistent collectives were posted. */
extern unsigned long long mana_next_posted(void) MANA_HIDDEN;

/* Releases virtual request `v` (completed or freed); its handle becomes invalid. */
extern void mana_req_release(int v) MANA_HIDDEN;

/* ---- What MANA knows about each communicator (src/handles.c) ---- */
struct mana_comm_meta {
    unsigned long long recvd;   /* messages received (completed receives) */
    unsigned long long *sent;   /* messages sent, per destination rank */
    int n_peers;                /* entries of `sent`: (remote) group size */
    /* Collective safety (DRAIN.md §1; src/ckpt.c). gid 0: not tracked. */
    unsigned long long gid;
    unsigned long long seq;        /* collectives this rank initiated on it */
    unsigned long long target;     /* while a checkpoint is pending */
    int coll_owner;                /* the thread that calls its collectives (src/ckpt.c):
                                      0 none yet, -1 several */
    unsigned long long ctor_count; /* communicators constructed from it */
    unsigned long long pcoll_count; /* persistent collectives initialized on it */
    /* How to create it again in a new lower half (src/ckpt.c): its group as ranks of
     * MPI_COMM_WORLD, a Cartesian topology, the error handler the application set. */
    int *world_ranks, n_ranks;
    int *remote_world_ranks, n_remote; /* an intercommunicator's remote group */
    unsigned char send_side, recv_side; /* drain keys of an intercommunicator's groups */
    unsigned char inter, topo; /* topo: 0 none, 1 Cartesian, 2 graph, 3 distributed graph,
                                  4 other (not re-created) */
    int cart_ndims, *cart_dims, *cart_periods;
    int *graph; /* topo 2: nnodes, nedges, index[nnodes], edges[nedges];
                   topo 3: indegree, outdegree, weighted, sources, sourceweights,
                   destinations, destweights (this rank's adjacency) */
    int errhandler; /* 0: never set (holds a reference on a virtual handler) */
    int from_comm;  /* a group: the communicator MPI_Comm_group took it from */
    /* Windows (src/rebuild.c): the memory they expose and their synchronisation. */
    void *win_base;
    MPI_Aint win_size, win_disp_unit;
    unsigned char win_fenced; /* a fence opened an epoch (the last fence lacked NOSUCCEED) */
    int win_epochs;           /* start or post (PSCW) epochs open */
    unsigned char win_dynamic; /* MPI_Win_create_dynamic: its memory is win_attached */
    unsigned char win_attach_lost; /* an attached region could not be recorded */
    MPI_Aint *win_attached;   /* a dynamic window's regions: (base, size) pairs */
    int win_n_attached, win_attached_cap;
    int win_lock_all;         /* MPI_Win_lock_all held: its assert + 1 (0: not held) */
    int *win_locks, win_n_locks, win_locks_cap; /* MPI_Win_lock held: (rank, type, assert) */
    MPI_Comm win_comm;        /* after a restart: the real communicator it was created over */
    /* The attribute copies MPICH made into the window's internal communicator when the
     * application created it (src/special.c, "Attribute copies made while a window is
     * created"). */
    struct mana_win_copy *win_copies;
    int n_win_copies;
};
/* One attribute copy: the keyval (its index in the keyval records), what the copy callback
 * returned as the new value, and its flag. */
struct mana_win_copy {
    unsigned keyval;
    void *value;
    int flag;
};
/* Sorts communicators or windows `v` (their metadata `m`) by ascending gid: an order every
 * rank shares, for collective re-creation. */
extern void mana_sort_by_gid(int *v, struct mana_comm_meta **m, int n) MANA_HIDDEN;
/* Every live virtual window's metadata (its world_ranks are the window's group). */
extern void mana_win_each(void (*f)(int w, struct mana_comm_meta *m, void *arg), void *arg) MANA_HIDDEN;
/* After a window was created over `base` (collective over `comm`): its identity. */
extern void mana_win_created(int comm, int win, void *base, MPI_Aint size, MPI_Aint disp_unit) MANA_HIDDEN;
/* At a checkpoint, after the drain's first round: whether some rank of the job holds a
 * lock on the window with identity `gid` (src/ckpt.c). */
extern int mana_win_locked_somewhere(unsigned long long gid) MANA_HIDDEN;
/* After MPI_Win_fence / a call opening (+1) or closing (-1) a lock or PSCW epoch. */
extern void mana_win_fenced(int win, int assert_) MANA_HIDDEN;
extern void mana_win_epoch(int win, int delta) MANA_HIDDEN;
/* After MPI_Win_attach (size >= 0) or MPI_Win_detach (size -1) of `base` (src/ckpt.c). */
extern void mana_win_attached(int win, void *base, MPI_Aint size) MANA_HIDDEN;
/* Before a window is freed: epochs left open on it stop counting (src/ckpt.c). */
extern void mana_win_epochs_drop(int win) MANA_HIDDEN;
/* After MPI_Win_lock (rank, type, assert, +1) / unlock (rank, -1), lock_all (rank -1,
 * assert, +1) / unlock_all (rank -1, -1). */
extern void mana_win_locked(int win, int rank, int type, int assert_, int delta) MANA_HIDDEN;
/* A word per virtual handle for the wrappers (what a restart needs to create its object
 * again: src/special.c); NULL if `v` is not virtual. Zero when the handle is created. */
extern unsigned *mana_h_aux(int v) MANA_HIDDEN;
/* Calls `f` for every live virtual handle of MPICH object kind `kind`. */
extern void mana_h_each(int kind, void (*f)(int v, void *arg), void *arg) MANA_HIDDEN;
/* Drops a reference taken with mana_h_virtual on an existing object. */
extern void mana_h_unref(int v) MANA_HIDDEN;
/* Forgets every real handle's reverse mapping (a restart: the old lower half's values
 * mean nothing in the new one). */
extern void mana_h_forget_reals(void) MANA_HIDDEN;
/* In src/special.c: create the object behind virtual handle `v` again in a new lower
 * half (0 or an MPI error code). */
extern int mana_recreate_op(int v) MANA_HIDDEN;
extern int mana_recreate_errhandler(int v) MANA_HIDDEN;
/* The last reference to an object with an aux word is released (src/special.c gives a user
 * operation's or error handler's trampoline slot back, frees a datatype in the lower half
 * as often as the application freed it). `v`: its virtual handle, still bound. */
extern void mana_handle_released(int kind, unsigned aux, int v) MANA_HIDDEN;
/* A datatype's aux word: how many MPI_Type_free the lower half is owed, or (a datatype
 * re-created by a restart, whose new object MPI counts once) this flag: free it once. */
#define MANA_AUX_FREE_ONCE 0x80000000u
/* With MANA_AUX_FREE_ONCE, the low 16 bits count the references MPI handed out again
 * after the restart (MPI_Type_get_contents returning the type): frees owed beyond the one. */
/* Vector datatypes kept for reuse (src/typecache.c). A released datatype's aux word goes
 * through mana_tc_released (gate held), which parks the lower object (returns 0: nothing to
 * free) or returns the word without the cache's bits; a name or an attribute untags a type;
 * a restart empties the cache (the objects were the old lower half's); MPI_Finalize frees
 * what is parked. */
extern unsigned mana_tc_released(unsigned aux, int real) MANA_HIDDEN;
extern void mana_tc_untag(int v) MANA_HIDDEN;
extern void mana_tc_forget(void) MANA_HIDDEN;
extern void mana_tc_free_parked(void) MANA_HIDDEN;
/* One more reference MANA itself holds on live virtual handle `v` (a request's datatype, a
 * file's view): released with mana_h_unref; not a reference MPI counts. Returns `v`. */
extern int mana_h_hold(int v) MANA_HIDDEN;
/* Every keyval the application created (src/special.c), for the snapshot and restart. */
struct mana_keyval {
    void *copy, *del, *extra; /* the application's functions and extra state */
    int slot, which;          /* trampoline slot (-1: none); creator: 0 Comm, 1 Type, 2 Win,
                                 3 MPI-1 Keyval_create */
    int kind;                 /* objects its attributes are on: 0 comms, 1 datatypes, 2 windows */
    int v, real;              /* the application's handle, the lower half's */
    unsigned char app_freed;  /* freed while attributes with it remained: MPI still has it */
    unsigned char dead;       /* freed and no attribute uses it: nothing to re-create */
    unsigned char holds_v;    /* freed, but its handle `v` still names it (one reference,
                                 dropped when it dies): mana_keyval_free_begin */
    void *copy_proxy, *del_proxy; /* a language binding's callers (MPII_Keyval_set_proxy) */
    int attr_type;            /* MPICH's MPIR_Attr_type of its attributes: 0 pointer (C),
                                 1 address-sized or 3 Fortran INTEGER (set by Fortran) */
};
/* The keyval records (src/special.c): record `i` < mana_keyval_count() never moves. */
extern struct mana_keyval *mana_keyval_at(unsigned i) MANA_HIDDEN;
extern unsigned mana_keyval_count(void) MANA_HIDDEN;
/* At a restart, around creating window `m` again (NULL: done): the attribute copy
 * callbacks answer from its record and delete callbacks do nothing (src/special.c). */
extern void mana_win_copies_replay(const struct mana_comm_meta *m) MANA_HIDDEN;
/* Whether a live window's record holds a copy with keyval index `keyval`. */
extern int mana_win_copies_use(unsigned keyval) MANA_HIDDEN;
/* ---- MPI-IO files (src/files.c) ---- */
/* The lower half's file behind the application's handle (MPI_FILE_NULL as it is; any
 * other value that names no open file: one the lower half reports as invalid). */
extern MPI_File mana_file_real(MPI_File v) MANA_HIDDEN;
/* MANA's own communicator over an open file's group (MPI_COMM_NULL if not a file). */
extern MPI_Comm mana_file_comm(MPI_File v) MANA_HIDDEN;
/* The application's handle of a real file (error handlers), MPI_FILE_NULL if unknown. */
extern MPI_File mana_file_virtual(MPI_File real) MANA_HIDDEN;
/* After MPI_File_set_view (`real_info`: the real info given) / set_info / set_errhandler
 * (on MPI_FILE_NULL: the default for later files) succeeded. */
extern void mana_file_view_set(MPI_File v, MPI_Offset disp, MPI_Datatype etype, MPI_Datatype filetype,
                               const char *datarep, MPI_Info real_info) MANA_HIDDEN;
extern void mana_file_info_set(MPI_File v, MPI_Info real_info) MANA_HIDDEN;
extern void mana_file_errhandler_set(MPI_File v, MPI_Errhandler eh) MANA_HIDDEN;
/* After a call that used the file's shared file pointer. */
extern void mana_file_used_shared(MPI_File v) MANA_HIDDEN;
/* After a nonblocking I/O call (collective or not) returned request `req`. */
extern void mana_file_request(MPI_Request req, MPI_File v, int collective) MANA_HIDDEN;
/* After a split collective's *_begin on real file `real`: completes it in the lower half
 * (src/files.c explains). */
extern int mana_file_split_begun(MPI_File v, MPI_File real, const void *buf, int which) MANA_HIDDEN;
/* At a checkpoint: syncs every open file and records its pointers (0, or -1 with why). */
extern int mana_files_snapshot(char *why, int len) MANA_HIDDEN;
/* At restart, after communicators, datatypes and error handlers: every file opened again
 * and put back in its state (0, or -1 with one line naming the file). */
extern int mana_files_reopen(char *err, int errlen) MANA_HIDDEN;
/* At restart, before files: every data representation registered again (src/special.c). */
extern int mana_reregister_datareps(char *err, int errlen) MANA_HIDDEN;
/* The attribute type (struct mana_keyval's attr_type) of a keyval's attributes. */
extern int mana_keyval_attr_type(int keyval_v) MANA_HIDDEN;
extern void mana_keyval_attr_type_set(int keyval_v, int type) MANA_HIDDEN;
extern int mana_recreate_keyval(struct mana_keyval *k) MANA_HIDDEN;
extern void mana_keyval_dead(struct mana_keyval *k) MANA_HIDDEN;
/* Around MPI_*_free_keyval: whether attributes with real keyval `real` exist (asked
 * before the free, src/rebuild.c), then the record (after it succeeded). */
extern int mana_keyval_in_use(int v) MANA_HIDDEN;
extern int mana_keyval_free_begin(int v) MANA_HIDDEN;
extern void mana_keyval_freed(int v, int in_use) MANA_HIDDEN;
/* src/rebuild.c: freed keyvals whose attributes have all gone release their callback
 * slots (holding the gate, when all slots are taken). */
extern void mana_keyvals_collect(void) MANA_HIDDEN;
/* src/ckpt.c: the communicator of world ranks `ranks` (collective over them only; the
 * tag comes from `gid`). */
extern int mana_comm_of_world_ranks(const int *ranks, int n, unsigned long long gid, MPI_Comm *out) MANA_HIDDEN;
/* src/rebuild.c. At a checkpoint (gate closed, drain done): records what a restart needs
 * beyond MANA's metadata; returns 0, or -1 with why a restart of this image will fail. */
extern int mana_snapshot(char *why, int len) MANA_HIDDEN;
/* After MPI_Add_error_class (what 0, result), _code (what 1, class `arg`, result) or
 * _string (what 2, code `arg`, `string`): added again at restart, in the same order. */
extern void mana_error_added(int what, int arg, int result, const char *string) MANA_HIDDEN;
/* After MPI_Buffer_attach (NULL, 0 after MPI_Buffer_detach): attached again at restart. */
extern void mana_buffer_attached(void *buffer, MPI_Count size) MANA_HIDDEN;
/* At restart: -1 with the snapshot's reason if the image cannot be restarted. */
extern int mana_snapshot_unsupported(char *err, int errlen) MANA_HIDDEN;
/* At restart, phase 0 before communicators (keyvals, error handlers, operations, info,
 * datatypes), phase 1 after them and groups (windows, attributes, names). */
extern int mana_rebuild_objects(int phase, char *err, int errlen) MANA_HIDDEN;
/* A shared-memory window's segment, created again at restart and mapped where it was
 * (collective over the window's group, `comm` a real communicator of it). */
extern int mana_recreate_shared_segment(int win, MPI_Comm comm) MANA_HIDDEN;
/* A group's metadata (its `world_ranks`), and every live virtual group's. */
extern struct mana_comm_meta *mana_group_meta(int g) MANA_HIDDEN;
extern void mana_group_each(void (*f)(int g, struct mana_comm_meta *m, void *arg), void *arg) MANA_HIDDEN;
/* After MPI_Comm_group: where the group came from. */
extern void mana_group_of_comm(int group, int comm) MANA_HIDDEN;
/* After a call that gave the application a group: its members as world ranks. */
extern void mana_group_created(int group) MANA_HIDDEN;
/* Calls `f` for every communicator with metadata (world, self, live virtual ones). */
extern void mana_comm_each(void (*f)(int c, struct mana_comm_meta *m, void *arg), void *arg) MANA_HIDDEN;
/* A new virtual request with no real one behind it (a receive served from drained
 * messages): its metadata is returned zeroed, for the caller to mark done. */
extern int mana_req_placeholder(struct mana_req_meta **meta) MANA_HIDDEN;

/* ---- Checkpoint support (src/ckpt.c) ---- */
/* Where this process is in MPI's lifetime (src/special.c sets it when MPI_Init(_thread)
 * and MPI_Finalize return successfully). A checkpoint drains messages and snapshots the
 * lower half only while MPI is initialized; a restart brings a new lower half up (and
 * MPI_Init runs in it) only then — before MPI_Init or after MPI_Finalize a restarted
 * process loads a lower half at its next MPI call, as at start-up. */
#define MANA_PHASE_BEFORE_INIT 0
#define MANA_PHASE_INITIALIZED 1
#define MANA_PHASE_FINALIZED 2
extern int mana_mpi_phase MANA_HIDDEN;
/* Before/after every collective (and communicator constructor, MPI_Comm_free, window and
 * file creation) on the application's communicator `c`: counts it, and while a
 * checkpoint is pending may hold the thread here, outside the lower half. Returns
 * whether it counted (pass that to mana_coll_leave). Until mana_coll_leave the call
 * counts as blocking (no agreement converges), nonblocking and split ones too: counted
 * at the entry, a thread parked before its lower call would leave the peers' requests
 * that need it incomplete for ever. */
extern int mana_coll_enter(int c) MANA_HIDDEN;
extern void mana_coll_leave(int counted) MANA_HIDDEN;
/* The same, for the call on `c` that returned `rc`: one that MPI's argument checks
 * refused (a class such as MPI_ERR_BUFFER, MPI_ERR_COUNT, MPI_ERR_ROOT) never reached its
 * peers, who may never call it — MPICH's errors/coll/noalias* call a collective with
 * aliased buffers on one rank only — so it is not counted. */
extern void mana_coll_leave_rc(int counted, int c, int rc) MANA_HIDDEN;
/* Before MPI_Comm_create_group(parent, group, tag) (the application's handles): it is
 * collective over `group` only, so it is counted per (parent, tag, group) — a counter of
 * its own in the agreement, like a persistent collective's — instead of being held at its
 * entry whenever a checkpoint is pending: with several threads of each rank in it at
 * once (MPICH's threads/comm/comm_create_group_threads), a held thread was what a peer's
 * thread inside waited for, and the agreement never converged. mana_sync_leave after. */
extern void mana_cg_enter(int parent, int group, int tag) MANA_HIDDEN;
/* Around a call that may wait inside MPI for a peer's application thread (passive-target
 * locks, PSCW start/wait): counted like a blocking collective, held at its entry while a
 * checkpoint is pending. */
extern void mana_sync_enter(void) MANA_HIDDEN;
extern void mana_sync_leave(void) MANA_HIDDEN;
/* After a communicator constructor succeeded: the new communicator's identity. */
extern void mana_comm_created(int parent, int newcomm) MANA_HIDDEN;
/* The same for MPI_Comm_idup: the new communicator is its parent's copy (it cannot be
 * asked anything before the request completes). */
extern void mana_comm_created_dup(int parent, int newcomm) MANA_HIDDEN;
/* The same after MPI_Comm_create_group (called by the group's members only). */
extern void mana_comm_created_group(int parent, int newcomm, int tag) MANA_HIDDEN;
/* A nonblocking or persistent collective's request (the drain completes them). */
extern void mana_req_mark_coll(int request, int comm, int persistent) MANA_HIDDEN;
/* Before MPI_Start of a persistent collective with start counter `pcoll`: counts the start
 * (a pending checkpoint may hold the thread here, like at a collective's entry); it counts
 * as blocking until mana_coll_leave(1) after the lower MPI_Start returned. */
extern void mana_pcoll_start(int pcoll) MANA_HIDDEN;
/* Its request is gone: the counter's final value goes to the next agreement. */
extern void mana_pcoll_dead(int pcoll) MANA_HIDDEN;
/* After MPI_Rput, MPI_Rget, MPI_Raccumulate, MPI_Rget_accumulate returned `request`. */
extern void mana_req_mark_rma(int request) MANA_HIDDEN;
/* `request` is partitioned: MPICH 4.0.2's MPI_Testall fails on it (see p2p.c). */
extern void mana_req_mark_partitioned(int request) MANA_HIDDEN;
/* In the snapshot, once every window is flushed or fenced: the request-based one-sided
 * operations are complete; their requests are marked done (src/ckpt.c). */
extern void mana_rma_requests_done(void) MANA_HIDDEN;
/* Messages drained at a checkpoint, waiting for the application's receives. */
struct mana_drained {
    int comm, source, tag;
    int bytes;     /* packed size */
    char *data;    /* MPI_PACKED */
    struct mana_drained *next;
    unsigned char fresh; /* received from the lower half by the current checkpoint's drain */
    int ack_to, ack_tag; /* a synchronous send's: acknowledged at delivery (ack_tag != 0) */
};
/* The earliest drained message matching (comm, source, tag), removed (`take`) or not. */
extern struct mana_drained *mana_drained_match(int comm, int source, int tag, int take) MANA_HIDDEN;
/* Receives matched message `*msg` (probe status `st`) on the application's communicator
 * `comm` into a new upper-half copy, counted as received (the drain; src/ckpt.c). */
extern struct mana_drained *mana_drained_take(MPI_Message *msg, MPI_Status *st, int comm) MANA_HIDDEN;
/* Receives every message the application matched (MPI_Mprobe/Improbe) but has not
 * received into the upper half, for its MPI_Mrecv/Imrecv (src/p2p.c; drain, gate closed).
 * Returns how many. */
extern int mana_drain_matched(void) MANA_HIDDEN;
/* Unpacks a drained message into (buf, count, datatype) and fills `status`; frees it. */
extern int mana_drained_deliver(struct mana_drained *d, void *buf, MPI_Count count, MPI_Datatype dt, int comm,
                                MPI_Status *status) MANA_HIDDEN;
extern void mana_drained_status(const struct mana_drained *d, MPI_Status *status) MANA_HIDDEN;
/* Non-zero once any message was drained and not yet delivered (fast path check). */
extern struct mana_drained *volatile mana_drained_head MANA_HIDDEN;
/* Metadata of the application's communicator `c` (MPI_COMM_WORLD, MPI_COMM_SELF or a
 * live virtual one); NULL otherwise. */
extern struct mana_comm_meta *mana_comm_meta(int c) MANA_HIDDEN;
/* A communicator's last handle is gone (src/ckpt.c keeps its send counts, `sent` from
 * mana_sent_alloc, for the drain); mana_sent_free releases such counters. */
extern void mana_comm_released(unsigned long long gid, int send_side, unsigned long long *sent, int n_peers) MANA_HIDDEN;
/* A communicator or window with identity `gid` is gone here after `seq` collectives: the
 * next agreement makes every peer catch up to that (src/ckpt.c). */
extern void mana_comm_dead(unsigned long long gid, unsigned long long seq) MANA_HIDDEN;
extern void mana_sent_free(unsigned long long *sent, int n_peers) MANA_HIDDEN;
/* Counts one message sent to `dest` (a rank of `c`'s (remote) group) / received on `c`. */
extern void mana_count_sent(int c, int dest) MANA_HIDDEN;

/* ---- Synchronous sends across a checkpoint (src/ssend.c) ---- */
/* Makes MANA's communicator for acknowledgements (MPI_Init, collective). */
extern void mana_ssend_init(void) MANA_HIDDEN;
/* Holding the gate: a synchronous send to `dest` was posted (and counted); its
 * registration (0 if not tracked), released with mana_ssend_forget. */
extern int mana_ssend_register(int comm, int dest, int tag) MANA_HIDDEN;
extern void mana_ssend_forget(int slot) MANA_HIDDEN;
/* Holding the gate: any send was posted to (comm, dest, tag). */
extern void mana_ssend_sent(int comm, int dest, int tag) MANA_HIDDEN;
/* The drain found synchronous send request `v` (or blocked thread `b`'s) complete in the
 * lower half: whether it waits for the exchange (1) or completes as usual (0). */
extern int mana_ssend_suspect_req(int v, struct mana_req_meta *m, const MPI_Status *st) MANA_HIDDEN;
extern void mana_ssend_suspect_blocked(struct mana_blocking *b) MANA_HIDDEN;
/* The drain starts; after it, every rank exchanges what it found (collective). */
extern void mana_ssend_drain_begin(void) MANA_HIDDEN;
extern void mana_ssend_exchange(void) MANA_HIDDEN;
/* Delivery of a marked drained message: tells its sender (any thread, gate not held). */
extern void mana_ssend_ack(int to, int tag) MANA_HIDDEN;
/* Drained messages of the current drain (src/ckpt.c, for src/ssend.c). */
extern int mana_drained_mark(unsigned long long gid, int src, int tag, unsigned after, int ack_to,
                             int ack_tag) MANA_HIDDEN;
extern void mana_drained_fresh_clear(void) MANA_HIDDEN;
/* The application's communicator `comm` is gone (its handle released): its drained
 * messages can never be received, and a new communicator may get the handle. */
extern void mana_drained_forget_comm(int comm) MANA_HIDDEN;
/* Request `v`, finished in the lower half with status `st` (src/ckpt.c): released if the
 * application freed it, else done with its status. */
extern void mana_req_finished(int v, struct mana_req_meta *m, const MPI_Status *st) MANA_HIDDEN;
extern void mana_count_recvd(int c) MANA_HIDDEN;

/* Virtual handle `v` now names real handle `real` (a restart re-created its object). */
extern void mana_h_set_real(int v, int real) MANA_HIDDEN;
/* How many references virtual handle `v` holds (MPI handed its object out that many times,
 * plus MANA's own holds); 0 if it is not live. */
extern unsigned mana_h_refs(int v) MANA_HIDDEN;
/* Number of live virtual handles of one MPICH object kind (tests). */
extern unsigned mana_h_live(int kind) MANA_HIDDEN;

/* Statuses: the application's MPI_Status and the lower library's are translated field
 * by field (identical layouts today, but nothing else may assume it). */
static inline __attribute__((always_inline)) void mana_status_copy(MPI_Status *to, const MPI_Status *from)
{
    to->count_lo = from->count_lo;
    to->count_hi_and_cancelled = from->count_hi_and_cancelled;
    to->MPI_SOURCE = from->MPI_SOURCE;
    to->MPI_TAG = from->MPI_TAG;
    to->MPI_ERROR = from->MPI_ERROR;
}
#define mana_status_ignored(p) ((p) == MPI_STATUS_IGNORE || (p) == MPI_STATUSES_IGNORE)

/* Whether a completed receive posted for source `peer` took a message that a sender
 * counted, given its (lower-half) status `st`: not if it was cancelled (MPICH keeps that
 * bit in the low bit of count_hi_and_cancelled), nor if it was a receive from
 * MPI_PROC_NULL, which completes at once with no sender — told by the source it was
 * posted for: MPICH 4.0.2's MPI_Test of such a request leaves the status alone. (mpi4py's
 * test_p2p_buf.testProcNull: counting those made every later checkpoint of the job fail
 * with "a rank received more messages than were sent to it".) */
static inline int mana_received_a_message(int peer, const MPI_Status *st)
{
    return peer != MPI_PROC_NULL && st->MPI_SOURCE != MPI_PROC_NULL && !(st->count_hi_and_cancelled & 1);
}

/* A send counted when posted (mana_count_sent) that MPI_Cancel took back never arrives:
 * its count is taken back too (src/handles.c). */
extern void mana_uncount_sent(int c, int dest) MANA_HIDDEN;
/* Send request `m`, complete with status `st`: if the application's MPI_Cancel cancelled
 * it, its count is taken back (once). */
static inline void mana_send_completed(struct mana_req_meta *m, const MPI_Status *st)
{
    if (__builtin_expect(m->cancel == 1, 0) && m->kind == MANA_REQ_SEND && (st->count_hi_and_cancelled & 1)) {
        m->cancel = 2;
        if (m->peer != MPI_PROC_NULL)
            mana_uncount_sent(m->comm, m->peer);
    }
}

/* Scratch arrays for handle and status arrays: a stack buffer of MANA_TMP_INLINE
 * elements, mmap beyond. */
#define MANA_TMP_INLINE 32
extern void *mana_tmp_alloc(size_t bytes) MANA_HIDDEN;
extern void mana_tmp_release(void *p, size_t bytes) MANA_HIDDEN;
#define MANA_TMP(type, name, n)                                                       \
    type name##_s_[MANA_TMP_INLINE];                                                  \
    size_t name##_n_ = (n) > 0 ? (size_t)(n) : 0;                                     \
    type *name = name##_n_ <= MANA_TMP_INLINE ? name##_s_ : mana_tmp_alloc(name##_n_ * sizeof(type))
#define MANA_TMP_FREE(name)                                                           \
    do {                                                                              \
        if (name != name##_s_)                                                        \
            mana_tmp_release(name, name##_n_ * sizeof(*name));                        \
    } while (0)

/* Array lengths the standard gives as "*" (src/handles.c). */
extern int mana_alltoallw_len(MPI_Comm real) MANA_HIDDEN;
extern int mana_neighbor_len(MPI_Comm real, int send) MANA_HIDDEN;

/* Fortran status sentinels (MPI_F_STATUS(ES)_IGNORE, MPI_F08_STATUS(ES)_IGNORE) of this
 * library → the lower library's (src/special.c). */
extern const void *mana_translate_fstatus_impl(const void *p) MANA_HIDDEN;
#define mana_translate_fstatus(p) ((__typeof__(p))mana_translate_fstatus_impl((const void *)(p)))

#define MANA_EXPORT(internal, name)                                     \
    __asm__(".globl " #name "\n.type " #name ", @function\n.set " #name ", " #internal);

#define MANA_DATA(name, size)                                           \
    __attribute__((used, aligned(16))) static char mana_d_##name[size]; \
    __asm__(".globl " #name "\n.type " #name ", @object\n.size " #name ", " #size "\n.set " #name ", mana_d_" #name);

#endif
