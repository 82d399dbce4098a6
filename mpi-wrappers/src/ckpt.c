/* What the MPI wrappers do for a checkpoint (DRAIN.md; docs/mpi-checkpoint.md):
 *
 *   communicator identity (gid) — collective sequence numbers and the freeze at a
 *   collective's entry — the drain of messages in flight — delivery of drained messages.
 *
 * The checkpointer (libmana, Rust) drives the agreement rounds through the coordinator and
 * calls the operations below through the table this library registers with it at load
 * time (mana_register_mpi_ops); the wrappers call the hooks. */
#include "mana_wrap.h"
#include <limits.h>
#include <stdint.h>
#include "mana_ops.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- Communicator identity (DRAIN.md §1.1) ---- */

/* A 64-bit finalizer (a bijection: every bit of the input moves every bit of the output). */
static unsigned long long fmix(unsigned long long k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ull;
    return k ^ (k >> 33);
}

/* An identity derived from identity `h` and value `v`. The parent is finalized before the
 * value joins it: the earlier `h ^ (v + C + (h << 6) + (h >> 2))` made distinct small
 * pairs equal before any mixing — MPI_COMM_WORLD's (gid 1) 24th child (count 23) and
 * MPI_COMM_SELF's (0) 89th (count 88) had one gid, and a drain expected a rank's messages to itself
 * on a duplicate of MPI_COMM_SELF from its peer on a duplicate of MPI_COMM_WORLD (mpi4py's
 * test_util_pkl5 + test_comm + test_p2p_buf checkpointed: "N message(s) still in flight
 * after 120 s", 1 run in 3). */
static unsigned long long mix(unsigned long long h, unsigned long long v)
{
    return fmix(fmix(h + 0x9e3779b97f4a7c15ull) ^ v);
}

MANA_LOWER_FUNCTION(lower_comm_group, 4300, "PMPI_Comm_group", (MPI_Comm c, MPI_Group *g), (c, g))
MANA_LOWER_FUNCTION(lower_group_size, 4301, "PMPI_Group_size", (MPI_Group g, int *n), (g, n))
MANA_LOWER_FUNCTION(lower_group_translate, 4302, "PMPI_Group_translate_ranks",
                    (MPI_Group a, int n, const int *r, MPI_Group b, int *out), (a, n, r, b, out))
MANA_LOWER_FUNCTION(lower_group_free, 4303, "PMPI_Group_free", (MPI_Group * g), (g))
MANA_LOWER_FUNCTION(lower_comm_test_inter, 4304, "PMPI_Comm_test_inter", (MPI_Comm c, int *f), (c, f))
MANA_LOWER_FUNCTION(lower_comm_remote_group, 4305, "PMPI_Comm_remote_group", (MPI_Comm c, MPI_Group *g), (c, g))
MANA_LOWER_FUNCTION(lower_comm_rank, 4306, "PMPI_Comm_rank", (MPI_Comm c, int *r), (c, r))
MANA_LOWER_FUNCTION(lower_intercomm_merge, 4307, "PMPI_Intercomm_merge", (MPI_Comm c, int high, MPI_Comm *out),
                    (c, high, out))
MANA_LOWER_FUNCTION(lower_allreduce, 4308, "PMPI_Allreduce",
                    (const void *s, void *r, int n, MPI_Datatype t, MPI_Op op, MPI_Comm c), (s, r, n, t, op, c))
MANA_LOWER_FUNCTION(lower_comm_free, 4309, "PMPI_Comm_free", (MPI_Comm * c), (c))

MANA_LOWER_FUNCTION(lower_session_init, 4723, "PMPI_Session_init", (MPI_Info i, MPI_Errhandler e, MPI_Session *s),
                    (i, e, s))
MANA_LOWER_FUNCTION(lower_group_from_pset, 4724, "PMPI_Group_from_session_pset",
                    (MPI_Session s, const char *p, MPI_Group *g), (s, p, g))
MANA_LOWER_FUNCTION(lower_session_finalize, 4725, "PMPI_Session_finalize", (MPI_Session * s), (s))

/* A new reference to the group of MPI_COMM_WORLD's processes. Without MPI_Init (MPI-4's
 * sessions model: MPICH's init/session*) MPI_COMM_WORLD is not there to ask: the
 * "mpi://WORLD" process set of a session of MANA's own, `*own`, has the same processes in
 * the same order; the caller finalizes it after freeing the group (a session left open
 * keeps MPICH from finalizing at the application's last MPI_Session_finalize, and the
 * process manager then killed the job as one that exited without finalizing). */
static void world_group(MPI_Group *world, MPI_Session *own)
{
    *own = MPI_SESSION_NULL;
    if (__atomic_load_n(&mana_mpi_phase, __ATOMIC_ACQUIRE) == MANA_PHASE_INITIALIZED) {
        lower_comm_group(MPI_COMM_WORLD, world);
        return;
    }
    *world = MPI_GROUP_EMPTY;
    if (lower_session_init(MPI_INFO_NULL, MPI_ERRORS_RETURN, own) == MPI_SUCCESS &&
        lower_group_from_pset(*own, "mpi://WORLD", world) != MPI_SUCCESS)
        *world = MPI_GROUP_EMPTY;
}

/* The MPI_COMM_WORLD ranks of `g`'s members, in `g`'s order (malloc'd; *n their count). */
static int *world_ranks_of(MPI_Group g, int *n)
{
    MPI_Group world;
    MPI_Session own;
    *n = 0;
    world_group(&world, &own);
    lower_group_size(g, n);
    int *in = malloc((size_t)(*n > 0 ? *n : 1) * sizeof(int)), *out = malloc((size_t)(*n > 0 ? *n : 1) * sizeof(int));
    if (in && out) {
        for (int i = 0; i < *n; i++)
            in[i] = i;
        lower_group_translate(g, *n, in, world, out);
    }
    free(in);
    if (world != MPI_GROUP_EMPTY)
        lower_group_free(&world);
    if (own != MPI_SESSION_NULL)
        lower_session_finalize(&own);
    return out;
}

MANA_LOWER_FUNCTION(lower_topo_test, 4311, "PMPI_Topo_test", (MPI_Comm c, int *t), (c, t))
MANA_LOWER_FUNCTION(lower_cartdim_get, 4312, "PMPI_Cartdim_get", (MPI_Comm c, int *n), (c, n))
MANA_LOWER_FUNCTION(lower_cart_get, 4313, "PMPI_Cart_get", (MPI_Comm c, int n, int *d, int *p, int *co),
                    (c, n, d, p, co))
MANA_LOWER_FUNCTION(lower_graphdims_get, 4314, "PMPI_Graphdims_get", (MPI_Comm c, int *n, int *e), (c, n, e))
MANA_LOWER_FUNCTION(lower_graph_get, 4315, "PMPI_Graph_get", (MPI_Comm c, int n, int e, int *i, int *ed),
                    (c, n, e, i, ed))
MANA_LOWER_FUNCTION(lower_dist_graph_neighbors_count, 4316, "PMPI_Dist_graph_neighbors_count",
                    (MPI_Comm c, int *in, int *out, int *w), (c, in, out, w))
MANA_LOWER_FUNCTION(lower_dist_graph_neighbors, 4317, "PMPI_Dist_graph_neighbors",
                    (MPI_Comm c, int in, int *s, int *sw, int out, int *d, int *dw), (c, in, s, sw, out, d, dw))
MANA_LOWER_FUNCTION(lower_win_get_group, 4318, "PMPI_Win_get_group", (MPI_Win w, MPI_Group *g), (w, g))

static int *ints(size_t n)
{
    return calloc(n > 0 ? n : 1, sizeof(int));
}

/* A communicator's topology is kept to be created again at restart (reorder 0, so ranks
 * stay): Cartesian (dimensions, periods), graph (index, edges), distributed graph (this
 * rank's neighbours and weights, re-created with MPI_Dist_graph_create_adjacent). */
static void record_topology(MPI_Comm real, struct mana_comm_meta *m)
{
    int topo = MPI_UNDEFINED;
    lower_topo_test(real, &topo);
    if (topo == MPI_CART) {
        int nd = 0;
        lower_cartdim_get(real, &nd);
        m->cart_ndims = nd;
        m->cart_dims = ints((size_t)nd);
        m->cart_periods = ints((size_t)nd);
        int *coords = ints((size_t)nd);
        lower_cart_get(real, nd, m->cart_dims, m->cart_periods, coords);
        free(coords);
        m->topo = 1;
    } else if (topo == MPI_GRAPH) {
        int nn = 0, ne = 0;
        lower_graphdims_get(real, &nn, &ne);
        m->graph = ints(2 + (size_t)nn + (size_t)ne);
        m->graph[0] = nn;
        m->graph[1] = ne;
        lower_graph_get(real, nn, ne, m->graph + 2, m->graph + 2 + nn);
        m->topo = 2;
    } else if (topo == MPI_DIST_GRAPH) {
        int in = 0, out = 0, w = 0;
        lower_dist_graph_neighbors_count(real, &in, &out, &w);
        int *g = m->graph = ints(3 + 2 * (size_t)in + 2 * (size_t)out);
        g[0] = in;
        g[1] = out;
        g[2] = w;
        lower_dist_graph_neighbors(real, in, g + 3, g + 3 + in, out, g + 3 + 2 * in, g + 3 + 2 * in + out);
        m->topo = 3;
    } else if (topo != MPI_UNDEFINED) {
        m->topo = 4;
    }
}

void mana_group_created(int group)
{
    struct mana_comm_meta *m = mana_group_meta(group);
    if (m && !m->world_ranks)
        m->world_ranks = world_ranks_of(mana_h_real(group), &m->n_ranks);
}

void mana_group_of_comm(int group, int comm)
{
    struct mana_comm_meta *m = mana_group_meta(group);
    if (m)
        m->from_comm = comm;
}

static int lowest_of(const int *r, int n)
{
    int low = -1;
    for (int i = 0; i < n; i++)
        if (r[i] != MPI_UNDEFINED && (low < 0 || r[i] < low))
            low = r[i];
    return low;
}


/* An intercommunicator's drain key side for the group `group` (see take_sent). */
static int side_of(const int *group, int n_group, const int *other, int n_other)
{
    return 1 + (lowest_of(group, n_group) < lowest_of(other, n_other));
}

/* A communicator every member names with the same gid, whatever the rank: derived from
 * its parent's gid and constructor count and its lowest world rank (siblings of one
 * split differ by the latter). An intercommunicator's two groups have different parents:
 * its gid is agreed on over a temporary merged communicator; both groups are kept. */
/* The rest of a new communicator's record, from `base` (what every member agrees on). */
static void comm_record(struct mana_comm_meta *p, struct mana_comm_meta *m, int newcomm, unsigned long long base)
{
    MPI_Comm real = mana_h_real(newcomm);
    /* It inherits its parent's error handler (the reference is its own). */
    if (p && p->errhandler && !m->errhandler)
        m->errhandler = mana_h_is_virtual(p->errhandler) ? mana_h_virtual(mana_h_real(p->errhandler)) : p->errhandler;
    int inter = 0;
    lower_comm_test_inter(real, &inter);
    MPI_Group g;
    if (!m->world_ranks) {
        lower_comm_group(real, &g);
        m->world_ranks = world_ranks_of(g, &m->n_ranks);
        lower_group_free(&g);
    }
    if (!inter) {
        m->gid = mix(base, (unsigned long long)lowest_of(m->world_ranks, m->n_ranks) + 1) | 1;
        record_topology(real, m);
        return;
    }
    m->inter = 1;
    lower_comm_remote_group(real, &g);
    m->remote_world_ranks = world_ranks_of(g, &m->n_remote);
    lower_group_free(&g);
    m->recv_side = (unsigned char)side_of(m->world_ranks, m->n_ranks, m->remote_world_ranks, m->n_remote);
    m->send_side = (unsigned char)side_of(m->remote_world_ranks, m->n_remote, m->world_ranks, m->n_ranks);
    MPI_Comm merged = MPI_COMM_NULL;
    lower_intercomm_merge(real, 0, &merged);
    unsigned long long mine = base, agreed = 0;
    lower_allreduce(&mine, &agreed, 1, MPI_UNSIGNED_LONG_LONG, MPI_MAX, merged);
    lower_comm_free(&merged);
    /* Siblings of one MPI_Comm_split of an intercommunicator share `agreed` (one parent,
     * one count): their lowest world rank over both groups tells them apart, as it does
     * intracommunicators (before, the two had one gid and the drain summed their messages:
     * MPICH's comm/icsplit failed every checkpoint, "expects 4 message(s), received 2"). */
    int low = lowest_of(m->world_ranks, m->n_ranks), rlow = lowest_of(m->remote_world_ranks, m->n_remote);
    m->gid = mix(mix(agreed, 0x1e7e), (unsigned long long)(low < rlow ? low : rlow) + 1) | 1;
}

void mana_comm_created(int parent, int newcomm)
{
    struct mana_comm_meta *p = mana_comm_meta(parent), *m = mana_comm_meta(newcomm);
    /* Counted on every member, also those that get MPI_COMM_NULL (split with
     * MPI_UNDEFINED, create without them): the next gids must agree. */
    unsigned long long base = p ? mix(p->gid, __atomic_fetch_add(&p->ctor_count, 1, __ATOMIC_RELAXED)) : 0;
    if (m && newcomm != MPI_COMM_NULL)
        comm_record(p, m, newcomm, base);
}

static int *ints_copy(const int *from, int n)
{
    int *to = ints((size_t)(n > 0 ? n : 0));
    if (from && n > 0)
        memcpy(to, from, (size_t)n * sizeof(int));
    return to;
}

/* MPI_Comm_idup(_with_info): MPICH may not let the new communicator be queried before the
 * request completes (an assertion in its ch4 layer), so its group, remote group and
 * topology are copied from the parent, and its identity is derived as comm_record derives
 * it — for an intercommunicator without the agreement on the merged communicator (both
 * groups call every constructor of an intercommunicator, so the count agrees). */
void mana_comm_created_dup(int parent, int newcomm)
{
    struct mana_comm_meta *p = mana_comm_meta(parent), *m = mana_comm_meta(newcomm);
    unsigned long long base = p ? mix(p->gid, __atomic_fetch_add(&p->ctor_count, 1, __ATOMIC_RELAXED)) : 0;
    if (!m || newcomm == MPI_COMM_NULL)
        return;
    if (!p || !p->world_ranks) {
        comm_record(p, m, newcomm, base);
        return;
    }
    if (p->errhandler && !m->errhandler)
        m->errhandler = mana_h_is_virtual(p->errhandler) ? mana_h_virtual(mana_h_real(p->errhandler)) : p->errhandler;
    m->n_ranks = p->n_ranks;
    m->world_ranks = ints_copy(p->world_ranks, p->n_ranks);
    m->topo = p->topo;
    m->cart_ndims = p->cart_ndims;
    if (p->topo == 1) {
        m->cart_dims = ints_copy(p->cart_dims, p->cart_ndims);
        m->cart_periods = ints_copy(p->cart_periods, p->cart_ndims);
    } else if (p->topo == 2 && p->graph) {
        m->graph = ints_copy(p->graph, 2 + p->graph[0] + p->graph[1]);
    } else if (p->topo == 3 && p->graph) {
        m->graph = ints_copy(p->graph, 3 + 2 * p->graph[0] + 2 * p->graph[1]);
    }
    if (!p->inter) {
        m->gid = mix(base, (unsigned long long)lowest_of(m->world_ranks, m->n_ranks) + 1) | 1;
        return;
    }
    m->inter = 1;
    m->n_remote = p->n_remote;
    m->remote_world_ranks = ints_copy(p->remote_world_ranks, p->n_remote);
    m->recv_side = p->recv_side;
    m->send_side = p->send_side;
    m->gid = mix(base, 0x1e7e) | 1;
}

/* MPI_Comm_create_group calls of the same group and tag (over one parent) match in call
 * order among the members: their count, per (parent, group, tag) key, is what the members
 * agree on. */
#define CG_KEYS 1024
static struct {
    unsigned long long key, count;
} cg_counts[CG_KEYS];
static pthread_mutex_t cg_lock = PTHREAD_MUTEX_INITIALIZER;

void mana_comm_created_group(int parent, int newcomm, int tag)
{
    struct mana_comm_meta *p = mana_comm_meta(parent), *m = mana_comm_meta(newcomm);
    if (!p || !m || newcomm == MPI_COMM_NULL)
        return;
    MPI_Group g;
    lower_comm_group(mana_h_real(newcomm), &g);
    m->world_ranks = world_ranks_of(g, &m->n_ranks); /* comm_record keeps them */
    lower_group_free(&g);
    unsigned long long key = mix(mix(p->gid, 0xc9), (unsigned long long)tag);
    for (int i = 0; i < m->n_ranks && m->world_ranks; i++)
        key = mix(key, (unsigned long long)m->world_ranks[i]);
    pthread_mutex_lock(&cg_lock);
    unsigned i = (unsigned)key % CG_KEYS;
    while (cg_counts[i].key && cg_counts[i].key != key)
        i = (i + 1) % CG_KEYS;
    cg_counts[i].key = key;
    unsigned long long count = cg_counts[i].count++;
    pthread_mutex_unlock(&cg_lock);
    comm_record(p, m, newcomm, mix(key, count));
}

/* A window: its identity (like a communicator built from `parent`), its group as world
 * ranks, and the memory it exposes — what a restart needs to create it again. */
void mana_win_created(int parent, int win, void *base, MPI_Aint size, MPI_Aint disp_unit)
{
    struct mana_comm_meta *p = mana_comm_meta(parent), *m = mana_comm_meta(win);
    if (!m)
        return;
    unsigned long long base_gid = p ? mix(p->gid, __atomic_fetch_add(&p->ctor_count, 1, __ATOMIC_RELAXED)) : 0;
    MPI_Group g;
    lower_win_get_group(mana_h_real(win), &g);
    m->world_ranks = world_ranks_of(g, &m->n_ranks);
    lower_group_free(&g);
    m->gid = mix(base_gid, 0x3717) | 1;
    m->win_base = base;
    m->win_size = size;
    m->win_disp_unit = disp_unit;
}

void mana_win_attached(int win, void *base, MPI_Aint size)
{
    struct mana_comm_meta *m = mana_comm_meta(win);
    if (!m)
        return;
    pthread_mutex_lock(&cg_lock);
    if (size < 0) {
        for (int i = 0; i < m->win_n_attached; i++)
            if ((void *)m->win_attached[2 * i] == base) {
                m->win_n_attached--;
                memmove(m->win_attached + 2 * i, m->win_attached + 2 * i + 2,
                        (size_t)(m->win_n_attached - i) * 2 * sizeof *m->win_attached);
                break;
            }
    } else {
        if (m->win_n_attached == m->win_attached_cap) {
            int cap = m->win_attached_cap ? 2 * m->win_attached_cap : 4;
            MPI_Aint *more = realloc(m->win_attached, (size_t)cap * 2 * sizeof *more);
            if (more) {
                m->win_attached = more;
                m->win_attached_cap = cap;
            }
        }
        /* Unrecorded (out of memory): the restart would lack the region. */
        if (m->win_n_attached < m->win_attached_cap) {
            m->win_attached[2 * m->win_n_attached] = (MPI_Aint)base;
            m->win_attached[2 * m->win_n_attached + 1] = size;
            m->win_n_attached++;
        } else {
            m->win_attach_lost = 1;
        }
    }
    pthread_mutex_unlock(&cg_lock);
}

void mana_win_fenced(int win, int assert_)
{
    struct mana_comm_meta *m = mana_comm_meta(win);
    if (m)
        m->win_fenced = !(assert_ & MPI_MODE_NOSUCCEED);
}

void mana_win_locked(int win, int rank, int type, int assert_, int delta)
{
    struct mana_comm_meta *m = mana_comm_meta(win);
    if (!m)
        return;
    if (rank < 0) {
        m->win_lock_all = delta > 0 ? assert_ + 1 : 0;
        return;
    }
    pthread_mutex_lock(&cg_lock); /* threads may lock different targets at once */
    int i = 0;
    while (i < m->win_n_locks && m->win_locks[3 * i] != rank)
        i++;
    if (delta < 0 && i < m->win_n_locks) {
        m->win_n_locks--;
        memmove(&m->win_locks[3 * i], &m->win_locks[3 * i + 3], (size_t)(m->win_n_locks - i) * 3 * sizeof(int));
    } else if (delta > 0) {
        int *l = m->win_locks;
        if (m->win_n_locks == m->win_locks_cap) { /* grows only: lock/unlock may be frequent */
            int cap = m->win_locks_cap ? 2 * m->win_locks_cap : 4;
            l = realloc(m->win_locks, (size_t)cap * 3 * sizeof(int));
            if (l) {
                m->win_locks = l;
                m->win_locks_cap = cap;
            }
        }
        if (l) {
            l[3 * m->win_n_locks] = rank;
            l[3 * m->win_n_locks + 1] = type;
            l[3 * m->win_n_locks + 2] = assert_;
            m->win_n_locks++;
        }
    }
    pthread_mutex_unlock(&cg_lock);
}

/* ---- Collective sequence numbers and the freeze (DRAIN.md §1.2–1.3) ---- */

static pthread_mutex_t coll_lock = PTHREAD_MUTEX_INITIALIZER;
static int pending, passes, in_blocking;

/* Communicators and windows: both count their collectives (a window its fences). */
static void coll_each(void (*f)(int h, struct mana_comm_meta *m, void *arg), void *arg)
{
    mana_comm_each(f, arg);
    mana_win_each(f, arg);
}

/* Which thread calls a counter's collectives. Threads that each keep to communicators of
 * their own (MPICH's threads/comm/comm_create_group_threads: four threads per rank, each
 * creating communicators from its own) would otherwise leapfrog each other's targets: a
 * rank was held only when every counter was at its target, so the threads behind let the
 * others through, whose calls raised targets the peers then had to reach (3-11 s per
 * agreement). A thread is now also held at a counter at its target when every counter
 * behind its target is another single thread's business (coll_lock). */
static __thread int coll_thread;
static int coll_threads;

static int coll_thread_id(void)
{
    if (!coll_thread)
        coll_thread = __atomic_add_fetch(&coll_threads, 1, __ATOMIC_RELAXED);
    return coll_thread;
}

static void note_owner(int *owner)
{
    const int me = coll_thread_id();
    if (*owner == 0)
        *owner = me;
    else if (*owner != me)
        *owner = -1;
}

struct reach {
    int all;    /* every counter at its target */
    int me;     /* the asking thread */
    int others; /* every counter behind its target is another single thread's */
};

static void behind(struct reach *r, int owner)
{
    r->all = 0;
    if (owner <= 0 || owner == r->me)
        r->others = 0;
}

static void check_reached(int c, struct mana_comm_meta *m, void *arg)
{
    (void)c;
    struct reach *r = arg;
    if (m->gid && m->seq < m->target)
        behind(r, m->coll_owner);
}

/* ---- Persistent collectives: each counts its own starts ----
 * Their starts may come in different orders on different ranks (MPI 4.0 §6.13; MPICH's
 * coll/p_order starts a Bcast_init and a Barrier_init in opposite orders): counted on the
 * communicator, an agreement converged with rank 0 inside one and rank 1 inside the other,
 * and the drain waited for both for ever. Each persistent collective has its own counter,
 * agreed on like a communicator's: its identity comes from its communicator's and its
 * place among the persistent collectives initialized on it (the same on every rank: the
 * initializations are collective, counted on the communicator). Slots: coll_lock. */
struct pcoll {
    unsigned long long gid, seq, target;
    int live;
    int owner; /* as a communicator's coll_owner */
};
static struct pcoll *pcolls;
static int n_pcolls;

/* A new live counter with `gid` (coll_lock held): its index, -1 when out of memory. */
static int pcoll_add_locked(unsigned long long gid)
{
    int i = 0;
    while (i < n_pcolls && pcolls[i].live)
        i++;
    if (i == n_pcolls) {
        struct pcoll *more = realloc(pcolls, (size_t)(n_pcolls + 1) * sizeof *more);
        if (!more)
            return -1;
        pcolls = more;
        n_pcolls++;
    }
    pcolls[i] = (struct pcoll){gid, 0, 0, 1, 0};
    return i;
}

/* A new counter for the persistent collective initialized on `cm`; 0 if none (untracked
 * communicator, or out of memory: its starts are then not held, as before). */
static int pcoll_new(struct mana_comm_meta *cm)
{
    if (!cm || !cm->gid)
        return 0;
    unsigned long long nth = __atomic_fetch_add(&cm->pcoll_count, 1, __ATOMIC_RELAXED);
    unsigned long long gid = mix(mix(cm->gid, 0x9c011), nth) | 1;
    pthread_mutex_lock(&coll_lock);
    int i = pcoll_add_locked(gid);
    pthread_mutex_unlock(&coll_lock);
    return i + 1;
}

/* The counter a thread is about to advance: a communicator's, or persistent collective
 * (or MPI_Comm_create_group) number `pcoll` (index + 1); neither for the calls that only
 * wait for peers (mana_sync_enter). */
struct counter {
    struct mana_comm_meta *comm;
    int pcoll;
};

/* Whether the calling thread stops before advancing counter `x` (coll_lock held): every
 * counter of this rank is at its target, or `x` is and every counter behind its target is
 * another single thread's to advance. */
static int reached(struct counter x)
{
    struct reach r = {1, coll_thread_id(), 1};
    coll_each(check_reached, &r);
    for (int i = 0; i < n_pcolls && (r.all || r.others); i++)
        if (pcolls[i].live && pcolls[i].seq < pcolls[i].target)
            behind(&r, pcolls[i].owner);
    if (r.all || !r.others)
        return r.all;
    if (x.comm)
        return x.comm->seq >= x.comm->target;
    return x.pcoll && pcolls[x.pcoll - 1].seq >= pcolls[x.pcoll - 1].target;
}

typedef int (*iprobe_fn)(int, int, MPI_Comm, int *, MPI_Status *);

/* A rank frozen at a collective's entry keeps the lower half progressing (its pending
 * rendezvous sends may be what a laggard waits for). The probe is on MPI_COMM_WORLD: on
 * MPI_COMM_SELF MPICH answers without running its progress engine, and a peer inside
 * MPI_Win_unlock waited for this rank until its gate gave up after 60 s (rma.c, about one
 * checkpoint in eight under load; none in 55 with WORLD). */
static void drive_progress(void)
{
    int flag;
    if (__atomic_load_n(&mana_mpi_phase, __ATOMIC_ACQUIRE) != MANA_PHASE_INITIALIZED) {
        /* Held at MPI_Init's entry: there is no MPI to progress (nor, perhaps, a lower
         * half: this must not load one). */
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
        return;
    }
    mana_gate_enter();
    unsigned long fs = mana_thread_lower_fs();
    iprobe_fn f = (iprobe_fn)lower_get(LOWER_FN(4310, "PMPI_Iprobe"), fs);
    unsigned long up = mana_enter_lower(fs);
    f(MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_WORLD, &flag, MPI_STATUS_IGNORE);
    mana_leave_lower(up);
    mana_gate_leave();
    struct timespec ts = {0, 50000};
    nanosleep(&ts, NULL);
}

/* With coll_lock held: while a checkpoint is pending and this thread has reached a
 * stopping point before counter `x` (reached()), waits (driving progress) until the stall
 * breaker lets one through. */
static void wait_at_entry_locked(struct counter x)
{
    while (pending && passes == 0 && reached(x)) {
        pthread_mutex_unlock(&coll_lock);
        drive_progress();
        pthread_mutex_lock(&coll_lock);
    }
    if (pending && reached(x))
        passes--;
}

int mana_coll_enter(int c)
{
    struct mana_comm_meta *m = mana_comm_meta(c);
    if (!m || !m->gid)
        return 0;
    pthread_mutex_lock(&coll_lock);
    wait_at_entry_locked((struct counter){m, 0});
    note_owner(&m->coll_owner);
    m->seq++;
    int raised = 0;
    if (pending && m->seq > m->target) {
        m->target = m->seq;
        raised = 1;
    }
    in_blocking++;
    pthread_mutex_unlock(&coll_lock);
    return 1 + raised; /* 2: this call raised the communicator's target */
}

/* MPICH's error classes of argument checks, made before a call communicates (MPICH
 * codes carry their class in the low 7 bits). */
static int refused_by_argument_checks(int rc)
{
    switch (rc & 0x7f) {
    case MPI_ERR_BUFFER:
    case MPI_ERR_COUNT:
    case MPI_ERR_TYPE:
    case MPI_ERR_TAG:
    case MPI_ERR_RANK:
    case MPI_ERR_ROOT:
    case MPI_ERR_GROUP:
    case MPI_ERR_OP:
    case MPI_ERR_TOPOLOGY:
    case MPI_ERR_DIMS:
    case MPI_ERR_ARG:
        return 1;
    default:
        return 0;
    }
}

void mana_coll_leave_rc(int counted, int c, int rc)
{
    if (!counted)
        return;
    struct mana_comm_meta *m = rc != MPI_SUCCESS && refused_by_argument_checks(rc) ? mana_comm_meta(c) : NULL;
    pthread_mutex_lock(&coll_lock);
    if (m && m->seq > 0) {
        if (counted == 2 && m->target == m->seq)
            m->target--;
        m->seq--;
    }
    in_blocking--;
    pthread_mutex_unlock(&coll_lock);
}

/* Around a call that may wait inside MPI for a peer's application thread: MPI_Win_lock of
 * a window a peer holds locked (MPICH blocks until the holder unlocks), MPI_Win_lock_all,
 * the unlocks and flushes (which may be where MPICH waits for a lock it requested lazily),
 * MPI_Win_start, MPI_Win_complete (where MPICH waits for the target's post), MPI_Win_wait.
 * A thread inside one when the gate closes may never leave: the peer it waits for is
 * parked at its own closed gate (measured with mpi4py's test_rma: a rank's exclusive lock
 * of its own window waited for the other rank's unlock, and the checkpoint failed after
 * 60 s). So such a call counts as a blocking collective does — no agreement converges
 * while a thread is inside one — and while a checkpoint is pending a thread that arrives
 * at one waits at its entry, outside the lower half, as at a collective's (with the same
 * stall breaker). Nothing is counted on a communicator. */
void mana_sync_enter(void)
{
    pthread_mutex_lock(&coll_lock);
    wait_at_entry_locked((struct counter){NULL, 0});
    in_blocking++;
    pthread_mutex_unlock(&coll_lock);
}

/* A PSCW epoch opened (+1: MPI_Win_post, MPI_Win_start) or closed (-1: MPI_Win_wait,
 * MPI_Win_complete, MPI_Win_test answering true) on `win`. While one is open anywhere the
 * job does not converge, as while a rank is inside a blocking collective: its members run
 * on to the call that closes it (never held at that call, and counted by the epoch until
 * it returns), and MPI_Win_post and
 * MPI_Win_start are held at their entry while a checkpoint is pending, with the stall
 * breaker letting one through when a peer waits for it. So no image holds an open PSCW
 * epoch: a restart could not open one again — the target's exposure must match what each
 * origin has already completed, and operations issued in the epoch may or may not have
 * reached the target (MPICH's suite, rma/test3, pscw_ordering: refused at restart before).
 * A program that keeps an epoch open for longer than the agreement's limit fails that
 * checkpoint, with a line saying so. */
void mana_win_epoch(int win, int delta)
{
    struct mana_comm_meta *m = mana_comm_meta(win);
    if (!m)
        return;
    pthread_mutex_lock(&coll_lock);
    m->win_epochs += delta;
    in_blocking += delta;
    pthread_mutex_unlock(&coll_lock);
}

/* A window freed with epochs still open (erroneous; MPICH refuses it): they no longer
 * count. */
void mana_win_epochs_drop(int win)
{
    struct mana_comm_meta *m = mana_comm_meta(win);
    if (!m)
        return;
    pthread_mutex_lock(&coll_lock);
    if (m->win_epochs > 0)
        in_blocking -= m->win_epochs;
    m->win_epochs = 0;
    pthread_mutex_unlock(&coll_lock);
}

void mana_sync_leave(void)
{
    pthread_mutex_lock(&coll_lock);
    in_blocking--;
    pthread_mutex_unlock(&coll_lock);
}

void mana_pcoll_start(int pcoll)
{
    pthread_mutex_lock(&coll_lock);
    wait_at_entry_locked((struct counter){NULL, pcoll});
    struct pcoll *p = &pcolls[pcoll - 1];
    note_owner(&p->owner);
    p->seq++;
    if (pending && p->seq > p->target)
        p->target = p->seq;
    in_blocking++; /* until the lower MPI_Start returned (mana_coll_leave) */
    pthread_mutex_unlock(&coll_lock);
}

/* The job-wide maxima of the agreement's last round (coll_lock), for a counter made while
 * a checkpoint is pending: its first call must see the target its peers set. */
static struct mana_seq *last_max;
static int n_last_max;

void mana_cg_enter(int parent, int group, int tag)
{
    struct mana_comm_meta *p = mana_comm_meta(parent);
    int n = 0, *ranks = p && p->gid ? world_ranks_of(mana_h_real(group), &n) : NULL;
    if (!ranks) {
        free(ranks);
        mana_sync_enter();
        return;
    }
    unsigned long long key = mix(mix(p->gid, 0xc9), (unsigned long long)tag);
    for (int i = 0; i < n; i++)
        key = mix(key, (unsigned long long)ranks[i]);
    free(ranks);
    unsigned long long gid = mix(key, 0x5c9) | 1;
    pthread_mutex_lock(&coll_lock);
    int i = 0;
    while (i < n_pcolls && !(pcolls[i].live && pcolls[i].gid == gid))
        i++;
    if (i == n_pcolls) {
        i = pcoll_add_locked(gid);
        if (i < 0) { /* out of memory: held at its entry, as before */
            pthread_mutex_unlock(&coll_lock);
            mana_sync_enter();
            return;
        }
        for (int j = 0; pending && j < n_last_max; j++)
            if (last_max[j].gid == gid)
                pcolls[i].target = last_max[j].seq;
    }
    wait_at_entry_locked((struct counter){NULL, i + 1}); /* (pcolls may move meanwhile) */
    struct pcoll *c = &pcolls[i];
    note_owner(&c->owner);
    c->seq++;
    if (pending && c->seq > c->target)
        c->target = c->seq;
    in_blocking++; /* until the lower call returned (mana_sync_leave) */
    pthread_mutex_unlock(&coll_lock);
}

void mana_pcoll_dead(int pcoll)
{
    pthread_mutex_lock(&coll_lock);
    struct pcoll p = pcolls[pcoll - 1];
    pcolls[pcoll - 1].live = 0;
    pthread_mutex_unlock(&coll_lock);
    mana_comm_dead(p.gid, p.seq);
}

void mana_coll_leave(int counted)
{
    if (!counted)
        return;
    pthread_mutex_lock(&coll_lock);
    in_blocking--;
    pthread_mutex_unlock(&coll_lock);
}

void mana_req_mark_coll(int request, int comm, int persistent)
{
    struct mana_req_meta *m = mana_req_meta(request);
    if (m) {
        m->kind = MANA_REQ_COLL;
        m->comm = comm;
        m->persistent = (unsigned char)persistent;
        m->active = !persistent;
        if (persistent)
            m->pcoll = pcoll_new(mana_comm_meta(comm));
    }
}

void mana_req_mark_partitioned(int request)
{
    struct mana_req_meta *m = mana_req_meta(request);
    if (m)
        m->part = 1;
}

void mana_req_mark_rma(int request)
{
    struct mana_req_meta *m = mana_req_meta(request);
    if (m) {
        m->kind = MANA_REQ_RMA;
        m->active = 1;
    }
}

struct snapshot {
    struct mana_seq *out;
    int cap, n;
};

static void take_seq(int c, struct mana_comm_meta *m, void *arg)
{
    (void)c;
    struct snapshot *s = arg;
    if (m->gid && s->n < s->cap) {
        s->out[s->n].gid = m->gid;
        s->out[s->n].seq = m->seq;
        s->n++;
    }
}

/* Final sequence numbers of the communicators and windows this rank freed since the last
 * agreement (coll_lock). MPI_Comm_free is local: without them a peer that has not freed a
 * communicator yet would be at "its" maximum, the agreement would converge with the
 * communicator alive on one rank and freed on another, and a restart would re-create it on
 * that rank alone (measured: both ranks of attrs.c then waited in different
 * MPI_Comm_create_group calls). Reported like live ones, a peer catches up to the free. */
static struct mana_seq *dead;
static int n_dead, cap_dead;

void mana_comm_dead(unsigned long long gid, unsigned long long seq)
{
    pthread_mutex_lock(&coll_lock);
    if (n_dead == cap_dead) {
        int cap = cap_dead ? 2 * cap_dead : 64;
        struct mana_seq *more = realloc(dead, (size_t)cap * sizeof *dead);
        if (more) {
            dead = more;
            cap_dead = cap;
        }
    }
    if (n_dead < cap_dead)
        dead[n_dead++] = (struct mana_seq){gid, seq};
    pthread_mutex_unlock(&coll_lock);
}

int mana_ckpt_pending(void)
{
    return __atomic_load_n(&pending, __ATOMIC_ACQUIRE);
}

/* Marks a checkpoint pending and returns this rank's (gid, seq) pairs: live communicators
 * and windows, and those freed since the last agreement. */
static int coll_snapshot(struct mana_seq *out, int cap)
{
    struct snapshot s = {out, cap, 0};
    pthread_mutex_lock(&coll_lock);
    pending = 1;
    coll_each(take_seq, &s);
    for (int i = 0; i < n_pcolls; i++) {
        if (!pcolls[i].live)
            continue;
        if (s.n < cap)
            out[s.n] = (struct mana_seq){pcolls[i].gid, pcolls[i].seq};
        s.n++;
    }
    for (int i = 0; i < n_dead; i++, s.n++)
        if (s.n < cap)
            out[s.n] = dead[i];
    pthread_mutex_unlock(&coll_lock);
    return s.n;
}

struct apply {
    const struct mana_seq *t;
    int n, conv;
};

static void apply_target(int c, struct mana_comm_meta *m, void *arg)
{
    (void)c;
    struct apply *a = arg;
    if (!m->gid)
        return;
    unsigned long long t = 0;
    for (int i = 0; i < a->n; i++)
        if (a->t[i].gid == m->gid)
            t = a->t[i].seq;
    if (t > m->target)
        m->target = t;
    if (m->seq != t)
        a->conv = 0;
}

static void graveyard_prune(const struct mana_seq *t, int n);

/* Raises the targets to the job-wide maxima `t`; returns whether this rank has converged:
 * at every target exactly, and inside no blocking collective. */
static int coll_apply(const struct mana_seq *t, int n)
{
    struct apply a = {t, n, 1};
    graveyard_prune(t, n);
    pthread_mutex_lock(&coll_lock);
    passes = 0;
    struct mana_seq *copy = n > 0 ? malloc((size_t)n * sizeof *copy) : NULL;
    if (copy)
        memcpy(copy, t, (size_t)n * sizeof *copy);
    free(last_max);
    last_max = copy;
    n_last_max = copy ? n : 0;
    coll_each(apply_target, &a);
    for (int i = 0; i < n_pcolls; i++) {
        struct pcoll *p = &pcolls[i];
        if (!p->live)
            continue;
        /* Converged means at the job-wide maximum, as for communicators, not at the own
         * target: a start let through by the stall breaker after this round's snapshot
         * raised the target with it, and comparing with that converged the job with this
         * rank one start ahead — its peer was held before the start it needed, and the
         * drain waited for ever (pcoll_order, about 1 run in 15 at 30 ms checkpoints). */
        unsigned long long max = p->target;
        for (int j = 0; j < n; j++)
            if (t[j].gid == p->gid) {
                max = t[j].seq;
                if (t[j].seq > p->target)
                    p->target = t[j].seq;
            }
        if (p->seq != max)
            a.conv = 0;
    }
    int conv = a.conv && in_blocking == 0;
    pthread_mutex_unlock(&coll_lock);
    return conv;
}

static void coll_grant_pass(void)
{
    pthread_mutex_lock(&coll_lock);
    passes = 1;
    pthread_mutex_unlock(&coll_lock);
}

static void clear_target(int c, struct mana_comm_meta *m, void *arg)
{
    (void)c;
    (void)arg;
    m->target = 0;
}

static void coll_finish(int agreed)
{
    pthread_mutex_lock(&coll_lock);
    /* Converged: every rank is at the final sequence number of every communicator freed
     * anywhere, so every rank has freed it. */
    if (agreed)
        n_dead = 0;
    pending = 0;
    passes = 0;
    coll_each(clear_target, NULL);
    for (int i = 0; i < n_pcolls; i++)
        pcolls[i].target = 0;
    free(last_max);
    last_max = NULL;
    n_last_max = 0;
    pthread_mutex_unlock(&coll_lock);
}

/* ---- The drain (DRAIN.md §2) ---- */

struct mana_drained *volatile mana_drained_head;
static struct mana_drained *drained_tail;
static pthread_mutex_t drained_lock = PTHREAD_MUTEX_INITIALIZER;

/* The key under which senders count messages for a receiver: (gid, side, rank) where
 * `side` separates an intercommunicator's two groups (1 + whether the group's lowest
 * world rank is the lower one; 0 within an intracommunicator). A communicator's sides are
 * computed when it is created (mana_comm_created). */

/* Send counts of communicators this rank freed (MPI_Comm_free is local: a peer may still
 * be receiving what was sent on them). Dropped once no rank has the communicator. */
struct dead_sent {
    unsigned long long gid, side;
    unsigned long long *sent;
    int n;
    struct dead_sent *next;
};
static struct dead_sent *graveyard;
static pthread_mutex_t graveyard_lock = PTHREAD_MUTEX_INITIALIZER;

void mana_comm_released(unsigned long long gid, int send_side, unsigned long long *sent, int n_peers)
{
    struct dead_sent *d = malloc(sizeof *d);
    if (!d)
        return;
    *d = (struct dead_sent){gid, (unsigned long long)send_side, sent, n_peers, NULL};
    pthread_mutex_lock(&graveyard_lock);
    d->next = graveyard;
    graveyard = d;
    pthread_mutex_unlock(&graveyard_lock);
}

/* Forgets the counts of communicators no rank has any more (`t`: every live gid). */
static void graveyard_prune(const struct mana_seq *t, int n)
{
    pthread_mutex_lock(&graveyard_lock);
    for (struct dead_sent **p = &graveyard; *p;) {
        int live = 0;
        for (int i = 0; i < n && !live; i++)
            live = t[i].gid == (*p)->gid;
        if (live) {
            p = &(*p)->next;
            continue;
        }
        struct dead_sent *d = *p;
        *p = d->next;
        mana_sent_free(d->sent, d->n);
        free(d);
    }
    pthread_mutex_unlock(&graveyard_lock);
}

struct counts {
    struct mana_count *out;
    int cap, n;
};

static void add_sent(struct counts *k, unsigned long long gid, unsigned long long side, const unsigned long long *sent,
                     int n)
{
    for (int d = 0; d < n; d++) {
        unsigned long long v = __atomic_load_n(&sent[d], __ATOMIC_RELAXED);
        if (!v)
            continue;
        if (k->n < k->cap) {
            k->out[k->n].key[0] = gid;
            k->out[k->n].key[1] = side;
            k->out[k->n].key[2] = (unsigned long long)d;
            k->out[k->n].count = v;
        }
        k->n++;
    }
}

static void take_sent(int c, struct mana_comm_meta *m, void *arg)
{
    (void)c;
    if (m->gid && m->sent)
        add_sent(arg, m->gid, m->send_side, m->sent, m->n_peers);
}

/* Windows in a passive-target epoch somewhere in the job. The drain's sums carry, beside
 * the send counts, one entry (window gid, WIN_LOCKED_SIDE, 0) per window on which some
 * rank holds a lock at the checkpoint (the gate is closed: no lock changes meanwhile).
 * The snapshot's collective decision for a window — close its fence epoch with an extra
 * MPI_Win_fence, or flush its locks — must be the same on every member: a program may
 * open a fence epoch and then use locks without closing it (mpi4py's test_rma does), and a
 * rank that held no lock at the checkpoint then fenced while a rank that held one flushed
 * and waited in the snapshot's barrier: both waited forever. */
#define WIN_LOCKED_SIDE 0x4c4f434bull /* "LOCK": never a communicator side (0, 1, 2) */
static unsigned long long *locked_wins;
static int n_locked_wins, cap_locked_wins;

static void take_lock(int w, struct mana_comm_meta *m, void *arg)
{
    (void)w;
    struct counts *k = arg;
    if (!m->gid || (!m->win_lock_all && !m->win_n_locks))
        return;
    if (k->n < k->cap) {
        k->out[k->n].key[0] = m->gid;
        k->out[k->n].key[1] = WIN_LOCKED_SIDE;
        k->out[k->n].key[2] = 0;
        k->out[k->n].count = 1;
    }
    k->n++;
}

static void record_locked_windows(const struct mana_count *sums, int n)
{
    n_locked_wins = 0;
    for (int i = 0; i < n; i++) {
        if (sums[i].key[1] != WIN_LOCKED_SIDE || !sums[i].count)
            continue;
        if (n_locked_wins == cap_locked_wins) {
            int cap = cap_locked_wins ? 2 * cap_locked_wins : 16;
            unsigned long long *more = realloc(locked_wins, (size_t)cap * sizeof *more);
            if (!more)
                return;
            locked_wins = more;
            cap_locked_wins = cap;
        }
        locked_wins[n_locked_wins++] = sums[i].key[0];
    }
}

int mana_win_locked_somewhere(unsigned long long gid)
{
    for (int i = 0; i < n_locked_wins; i++)
        if (locked_wins[i] == gid)
            return 1;
    return 0;
}

/* This rank's cumulative send counts, keyed for the receivers (also on communicators it
 * freed: their receivers may not have), and the windows it holds locks on. */
static int p2p_sent(struct mana_count *out, int cap)
{
    struct counts k = {out, cap, 0};
    mana_ssend_drain_begin(); /* the drain starts here */
    mana_comm_each(take_sent, &k);
    pthread_mutex_lock(&graveyard_lock);
    for (struct dead_sent *d = graveyard; d; d = d->next)
        add_sent(&k, d->gid, d->side, d->sent, d->n);
    pthread_mutex_unlock(&graveyard_lock);
    mana_win_each(take_lock, &k);
    return k.n;
}

/* Messages still to receive on communicator `c`: what its senders say they sent to this
 * rank (`sums`, the job-wide SUM of every rank's p2p_sent) minus what it received. */
static long long comm_outstanding(int c, struct mana_comm_meta *m, const struct mana_count *sums, int n)
{
    /* MPI_COMM_SELF has no identity (its collectives are local), and its messages are
     * this rank's own: what it sent itself and has not received yet. MPICH completes an
     * MPI_Isend to itself only when a receive matches it; undrained, such a send kept the
     * drain waiting for ever (mpi4py's test_p2p_buf_matched: MPI_Isend then MPI_Mprobe on
     * MPI_COMM_SELF) and a restart would have lost the message. */
    if (c == MPI_COMM_SELF) {
        const unsigned long long *sent = __atomic_load_n(&m->sent, __ATOMIC_ACQUIRE);
        return sent ? (long long)__atomic_load_n(&sent[0], __ATOMIC_RELAXED) -
                          (long long)__atomic_load_n(&m->recvd, __ATOMIC_RELAXED)
                    : 0;
    }
    if (!m->gid)
        return 0;
    MPI_Comm real = mana_h_real(c);
    int me = -1;
    lower_comm_rank(real, &me);
    unsigned long long side = m->recv_side, expected = 0;
    for (int i = 0; i < n; i++)
        if (sums[i].key[0] == m->gid && sums[i].key[1] == side && sums[i].key[2] == (unsigned long long)me)
            expected = sums[i].count;
    return (long long)expected - (long long)__atomic_load_n(&m->recvd, __ATOMIC_RELAXED);
}

/* Tests every live send, receive and collective request; one the lower half finished is
 * marked done with its status (a receive counts). Counts the sends and collectives still
 * incomplete: the drain waits for them. */
/* The oldest incomplete nonblocking collective MPI-IO request of each communicator (at
 * most MANA_IO_COMMS communicators; beyond, every such request is tested). */
#define MANA_IO_COMMS 16
struct test_all {
    int incomplete;
    int n_io;
    struct {
        int comm;
        unsigned long long posted;
    } io[MANA_IO_COMMS];
};

static int io_collective(const struct mana_req_meta *m)
{
    return m->io && m->kind == MANA_REQ_COLL && m->state == MANA_REQ_LIVE && m->active && !m->persistent;
}

/* ROMIO's nonblocking collective I/O (MPI_File_iwrite_at_all ...) is a state machine that
 * starts its next nonblocking collective (MPI_Iallreduce, MPI_Ialltoall ...) on the file's
 * communicator when its request is tested. With several pending on one file, a rank that
 * tests them in another order than its peers starts those collectives in another order:
 * they mismatch and never complete (MPICH's io/i_aggregation1: four MPI_File_iwrite_at_all,
 * checkpointed in MPI_Waitall — which waits for one request after the other — then the
 * drain tested all four: the drain hung). So the drain tests only the oldest on each
 * communicator, as the application's MPI_Waitall does. */
static void io_oldest(int v, struct mana_req_meta *m, void *arg)
{
    (void)v;
    struct test_all *t = arg;
    if (!io_collective(m))
        return;
    for (int i = 0; i < t->n_io; i++)
        if (t->io[i].comm == m->comm) {
            if (m->posted < t->io[i].posted)
                t->io[i].posted = m->posted;
            return;
        }
    if (t->n_io < MANA_IO_COMMS) {
        t->io[t->n_io].comm = m->comm;
        t->io[t->n_io].posted = m->posted;
        t->n_io++;
    }
}

/* Whether collective MPI-IO request `m` must wait for an older one (io_oldest). */
static int io_not_yet(const struct test_all *t, const struct mana_req_meta *m)
{
    if (!io_collective(m))
        return 0;
    for (int i = 0; i < t->n_io; i++)
        if (t->io[i].comm == m->comm)
            return m->posted != t->io[i].posted;
    return 0;
}

/* What the last drain round left on this rank, for drain_report: communicators still
 * expecting messages, and requests not complete (the first few of each). */
#define STUCK_SHOWN 6
static struct {
    unsigned long long gid;
    long long expected, received;
    int ranks;
} stuck_comms[STUCK_SHOWN];
static struct {
    int kind, peer, tag, blocked;
    unsigned long long gid;
} stuck_reqs[STUCK_SHOWN];
static int n_stuck_comms, n_stuck_reqs;

static void note_stuck_request(int kind, int comm, int peer, int tag, int blocked)
{
    if (n_stuck_reqs < STUCK_SHOWN) {
        struct mana_comm_meta *cm = mana_comm_meta(comm);
        stuck_reqs[n_stuck_reqs].kind = kind;
        stuck_reqs[n_stuck_reqs].peer = peer;
        stuck_reqs[n_stuck_reqs].tag = tag;
        stuck_reqs[n_stuck_reqs].blocked = blocked;
        stuck_reqs[n_stuck_reqs].gid = comm == MPI_COMM_SELF ? 0 : cm ? cm->gid : 0;
    }
    n_stuck_reqs++;
}

typedef int (*test_fn)(MPI_Request *, int *, MPI_Status *);

/* Tests virtual request `v` in the lower half, up to `tries` times while it is not
 * finished; the lower call's result. A request MPI reports finished (*flag) with an error
 * is gone in the lower half (MPICH completes and frees it): testing it again aborts in
 * MPICH (the `ref_count >= 0` assertion of MPICH's errors/comm/too_many_icomms2, an
 * MPI_Comm_idup out of context ids, under checkpoints). */
static int test_lower(int v, int tries, int *flag, MPI_Status *st)
{
    unsigned long fs = mana_thread_lower_fs();
    test_fn test = (test_fn)lower_get(LOWER_FN(4320, "PMPI_Test"), fs);
    MPI_Request real = mana_h_real(v);
    int rc = MPI_SUCCESS;
    *flag = 0;
    memset(st, 0, sizeof *st);
    for (int i = 0; i < tries && !*flag && rc == MPI_SUCCESS; i++) {
        unsigned long up = mana_enter_lower(fs);
        rc = test(&real, flag, st);
        mana_leave_lower(up);
    }
    return rc;
}

/* Request `v`, finished in the lower half with status `st`: released if the application
 * freed it, else done — the next wait or test reports the saved status (a persistent
 * request then becomes inactive; its real handle stays valid). */
void mana_req_finished(int v, struct mana_req_meta *m, const MPI_Status *st)
{
    if (m->app_freed) {
        mana_req_release(v);
        return;
    }
    if (!m->held) /* a synchronous send's acknowledgement reports the send's status */
        m->status = *st;
    m->held = 0;
    m->active = 0;
    m->state = MANA_REQ_DONE;
}

static void test_request(int v, struct mana_req_meta *m, void *arg)
{
    struct test_all *t = arg;
    if (m->state != MANA_REQ_LIVE || !m->active || m->suspect || m->kind == MANA_REQ_OTHER ||
        m->kind == MANA_REQ_RMA)
        return;
    int flag = 0;
    MPI_Status st;
    int rc = io_not_yet(t, m) ? MPI_SUCCESS : test_lower(v, 1, &flag, &st);
    if (!flag) {
        if (m->kind != MANA_REQ_RECV) {
            t->incomplete++;
            note_stuck_request(m->kind, m->comm, m->peer, m->tag, 0);
        }
        return;
    }
    if (m->kind == MANA_REQ_RECV && mana_received_a_message(m->peer, &st))
        mana_count_recvd(m->comm); /* also a truncated one: the message was taken */
    m->error = rc;
    if (rc != MPI_SUCCESS) { /* finished with an error: the application's wait reports it */
        mana_req_finished(v, m, &st);
        return;
    }
    if (m->kind == MANA_REQ_SEND && m->sync_slot && mana_ssend_suspect_req(v, m, &st))
        return; /* src/ssend.c decides after the drain */
    mana_send_completed(m, &st);
    mana_req_finished(v, m, &st);
}

/* A request-based one-sided operation (MPI_Rput ...): it may wait for the application's
 * unlock or flush (MPICH may issue operations only then), so the drain leaves it alone;
 * the snapshot's flush or fence of its window completes it at origin and target, and then
 * it is answered like a drained request: done, with its status (a restart re-creates no
 * one-sided operation). One the lower half still calls incomplete stays live, and a
 * restart refuses the image. */
static void rma_request_done(int v, struct mana_req_meta *m, void *arg)
{
    (void)arg;
    if (m->state != MANA_REQ_LIVE || !m->active || m->kind != MANA_REQ_RMA)
        return;
    int flag;
    MPI_Status st;
    int rc = test_lower(v, 1000, &flag, &st);
    if (flag) {
        m->error = rc;
        mana_req_finished(v, m, &st);
    }
}

void mana_rma_requests_done(void)
{
    mana_req_each(rma_request_done, NULL);
}

/* The requests of threads blocked in point-to-point calls (struct mana_blocking): tested
 * like the application's; a completion is counted here and seen by the thread later. */
static void test_blocking(struct mana_gate_slot *g, void *arg)
{
    struct test_all *t = arg;
    struct mana_blocking *b = g->blk;
    if (!b)
        return;
    unsigned long fs = mana_thread_lower_fs();
    test_fn test = (test_fn)lower_get(LOWER_FN(4324, "PMPI_Test"), fs);
    for (int i = 0; i < b->n; i++) {
        if (b->state[i])
            continue;
        int flag = 0;
        unsigned long up = mana_enter_lower(fs);
        int rc = test(&b->real[i], &flag, &b->st[i]);
        mana_leave_lower(up);
        if (!flag) {
            if (!b->recv[i]) {
                t->incomplete++;
                note_stuck_request(MANA_REQ_SEND, b->comm[i], b->peer[i], b->tag[i], 1);
            }
            continue;
        }
        b->state[i] = rc == MPI_SUCCESS ? 1 : 3; /* 3: gone in the lower half, the blocked call returns rc */
        if (rc != MPI_SUCCESS)
            b->st[i].MPI_ERROR = rc;
        if (b->recv[i] && mana_received_a_message(b->peer[i], &b->st[i]))
            mana_count_recvd(b->comm[i]);
        else if (!b->recv[i] && b->sync_slot && rc == MPI_SUCCESS && !(b->st[i].count_hi_and_cancelled & 1))
            mana_ssend_suspect_blocked(b); /* src/ssend.c decides after the drain */
    }
}

typedef int (*improbe_fn)(int, int, MPI_Comm, int *, MPI_Message *, MPI_Status *);
typedef int (*get_count_fn)(const MPI_Status *, MPI_Datatype, int *);
typedef int (*mrecv_fn)(void *, int, MPI_Datatype, MPI_Message *, MPI_Status *);

/* Receives matched message `msg` (probed with status `st`) on the application's
 * communicator `c` into a new upper-half copy (MPI_PACKED), and counts its receive. */
struct mana_drained *mana_drained_take(MPI_Message *msg, MPI_Status *st, int c)
{
    unsigned long fs = mana_thread_lower_fs();
    get_count_fn get_count = (get_count_fn)lower_get(LOWER_FN(4322, "PMPI_Get_count"), fs);
    mrecv_fn mrecv = (mrecv_fn)lower_get(LOWER_FN(4323, "PMPI_Mrecv"), fs);
    int bytes = 0;
    unsigned long up = mana_enter_lower(fs);
    get_count(st, MPI_PACKED, &bytes);
    mana_leave_lower(up);
    struct mana_drained *d = calloc(1, sizeof *d);
    char *data = malloc(bytes > 0 ? (size_t)bytes : 1);
    if (!d || !data) {
        fprintf(stderr, "mana: out of memory draining a message of %d bytes\n", bytes);
        abort();
    }
    up = mana_enter_lower(fs);
    mrecv(data, bytes, MPI_PACKED, msg, st);
    mana_leave_lower(up);
    d->comm = c;
    d->source = st->MPI_SOURCE;
    d->tag = st->MPI_TAG;
    d->bytes = bytes;
    d->data = data;
    mana_count_recvd(c);
    return d;
}

/* Receives one unexpected message on `c` into the drained list; 1 if there was one. */
static int drain_one(int c)
{
    unsigned long fs = mana_thread_lower_fs();
    improbe_fn improbe = (improbe_fn)lower_get(LOWER_FN(4321, "PMPI_Improbe"), fs);
    int flag = 0;
    MPI_Message msg;
    MPI_Status st;
    unsigned long up = mana_enter_lower(fs);
    improbe(MPI_ANY_SOURCE, MPI_ANY_TAG, mana_h_real(c), &flag, &msg, &st);
    mana_leave_lower(up);
    if (!flag)
        return 0;
    struct mana_drained *d = mana_drained_take(&msg, &st, c);
    d->fresh = 1;
    pthread_mutex_lock(&drained_lock);
    if (drained_tail)
        drained_tail->next = d;
    else
        mana_drained_head = d;
    drained_tail = d;
    pthread_mutex_unlock(&drained_lock);
    return 1;
}

struct step {
    const struct mana_count *sums;
    int n;
    long long outstanding;
    int negative;
};

static void drain_comm(int c, struct mana_comm_meta *m, void *arg)
{
    struct step *s = arg;
    long long left = comm_outstanding(c, m, s->sums, s->n);
    while (left > 0 && drain_one(c))
        left--;
    if (left < 0)
        s->negative = 1;
    else
        s->outstanding += left;
    if (left > 0) {
        if (n_stuck_comms < STUCK_SHOWN) {
            long long received = (long long)__atomic_load_n(&m->recvd, __ATOMIC_RELAXED);
            stuck_comms[n_stuck_comms].gid = c == MPI_COMM_SELF ? 0 : m->gid;
            stuck_comms[n_stuck_comms].expected = received + left;
            stuck_comms[n_stuck_comms].received = received;
            stuck_comms[n_stuck_comms].ranks = c == MPI_COMM_SELF ? 1 : m->n_ranks;
        }
        n_stuck_comms++;
    }
}

/* One round of the drain (gate closed): tests requests, receives what is in flight.
 * Returns what is left to do here (messages still expected + incomplete send and
 * collective requests), or -1 if more messages arrived than were sent (a bug). */
static long long drain_step(const struct mana_count *sums, int n)
{
    struct test_all t = {0};
    n_stuck_comms = n_stuck_reqs = 0;
    record_locked_windows(sums, n);
    mana_drain_matched();
    mana_req_each(io_oldest, &t);
    mana_req_each(test_request, &t);
    mana_gate_each(test_blocking, &t);
    struct step s = {sums, n, 0, 0};
    mana_comm_each(drain_comm, &s);
    if (s.negative)
        return -1;
    return s.outstanding + t.incomplete;
}

/* The same from the checkpointer's thread while it waits for the coordinator. */
static void progress(void)
{
    int flag;
    unsigned long fs = mana_thread_lower_fs();
    iprobe_fn f = (iprobe_fn)lower_get(LOWER_FN(4310, "PMPI_Iprobe"), fs);
    unsigned long up = mana_enter_lower(fs);
    f(MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_WORLD, &flag, MPI_STATUS_IGNORE);
    mana_leave_lower(up);
}

/* What the last drain round left on this rank, in words (for the error of a drain that
 * timed out); returns the length written. */
static int drain_report(char *buf, int len)
{
    static const char *const kinds[] = {"other", "send", "receive", "collective", "I/O", "one-sided"};
    int at = 0;
#define PUT(...)                                                                          \
    do {                                                                                  \
        if (at < len)                                                                     \
            at += snprintf(buf + at, (size_t)(len - at), __VA_ARGS__);                    \
    } while (0)
    if (len > 0)
        buf[0] = 0;
    for (int i = 0; i < n_stuck_comms && i < STUCK_SHOWN; i++)
        PUT("%scommunicator %s%016llx (%d ranks) expects %lld message(s) to this rank, received %lld",
            i ? "; " : "", stuck_comms[i].gid ? "gid " : "MPI_COMM_SELF ", stuck_comms[i].gid, stuck_comms[i].ranks,
            stuck_comms[i].expected, stuck_comms[i].received);
    if (n_stuck_comms > STUCK_SHOWN)
        PUT("; %d more communicator(s)", n_stuck_comms - STUCK_SHOWN);
    for (int i = 0; i < n_stuck_reqs && i < STUCK_SHOWN; i++) {
        int k = stuck_reqs[i].kind;
        PUT("%s%s%s incomplete", at ? "; " : "", stuck_reqs[i].blocked ? "a blocked thread's " : "",
            kinds[k >= 0 && k <= MANA_REQ_RMA ? k : 0]);
        if (k == MANA_REQ_SEND)
            PUT(" to rank %d, tag %d,", stuck_reqs[i].peer, stuck_reqs[i].tag);
        PUT(" on communicator %016llx", stuck_reqs[i].gid);
    }
    if (n_stuck_reqs > STUCK_SHOWN)
        PUT("; %d more request(s)", n_stuck_reqs - STUCK_SHOWN);
#undef PUT
    return at < len ? at : len - 1;
}

static int drained_count(void)
{
    int n = 0;
    for (struct mana_drained *d = mana_drained_head; d; d = d->next)
        n++;
    return n;
}

/* Whether `d` is a message of this drain from `src` with `tag` on the communicator `gid`. */
static int drained_fresh_of(const struct mana_drained *d, unsigned long long gid, int src, int tag)
{
    if (!d->fresh || d->source != src || d->tag != tag)
        return 0;
    struct mana_comm_meta *m = mana_comm_meta(d->comm);
    return m && m->gid == gid;
}

/* Drained message number k-1-`after` of those this checkpoint's drain received from rank
 * `src` of the communicator with `gid`, with `tag` (k of them, in arrival order), is a
 * synchronous send's: its delivery acknowledges it to world rank `ack_to` with tag
 * `ack_tag` (src/ssend.c). 1 if there is such a message, 0 if the application had
 * matched that send. */
int mana_drained_mark(unsigned long long gid, int src, int tag, unsigned after, int ack_to, int ack_tag)
{
    pthread_mutex_lock(&drained_lock);
    unsigned k = 0;
    for (struct mana_drained *d = mana_drained_head; d; d = d->next)
        k += drained_fresh_of(d, gid, src, tag);
    struct mana_drained *best = NULL;
    if (after < k) {
        /* Message k-1-after, or when this exchange marked it already, the nearest unmarked
         * one (earlier first): two threads sending to one destination with one tag at
         * the same instant can give two sends the same `after` (src/ssend.c), and two
         * marks on one message lost an acknowledgement — the sender waited for ever
         * (MPICH threads/pt2pt/mt_issendirecv, 1 run in ~20 under 50 ms checkpoints). */
        unsigned want = k - 1 - after, i = 0, best_dist = ~0u;
        for (struct mana_drained *d = mana_drained_head; d; d = d->next) {
            if (!drained_fresh_of(d, gid, src, tag))
                continue;
            unsigned dist = i > want ? i - want : want - i;
            if (!d->ack_tag && dist < best_dist) {
                best = d;
                best_dist = dist;
            }
            i++;
        }
    }
    if (best) {
        best->ack_to = ack_to;
        best->ack_tag = ack_tag;
    }
    pthread_mutex_unlock(&drained_lock);
    return best != NULL;
}

void mana_drained_forget_comm(int comm)
{
    if (!__atomic_load_n(&mana_drained_head, __ATOMIC_ACQUIRE))
        return;
    pthread_mutex_lock(&drained_lock);
    struct mana_drained *prev = NULL, *d = mana_drained_head;
    while (d) {
        struct mana_drained *next = d->next;
        if (d->comm != comm) {
            prev = d;
        } else {
            if (prev)
                prev->next = next;
            else
                mana_drained_head = next;
            if (drained_tail == d)
                drained_tail = prev;
            free(d->data);
            free(d);
        }
        d = next;
    }
    pthread_mutex_unlock(&drained_lock);
}

void mana_drained_fresh_clear(void)
{
    pthread_mutex_lock(&drained_lock);
    for (struct mana_drained *d = mana_drained_head; d; d = d->next)
        d->fresh = 0;
    pthread_mutex_unlock(&drained_lock);
}

/* ---- Delivery of drained messages (DRAIN.md §2.5–2.6) ---- */

struct mana_drained *mana_drained_match(int comm, int source, int tag, int take)
{
    if (!__atomic_load_n(&mana_drained_head, __ATOMIC_ACQUIRE))
        return NULL;
    pthread_mutex_lock(&drained_lock);
    struct mana_drained *prev = NULL, *d = mana_drained_head;
    for (; d; prev = d, d = d->next)
        if (d->comm == comm && (source == MPI_ANY_SOURCE || source == d->source) &&
            (tag == MPI_ANY_TAG || tag == d->tag))
            break;
    if (d && take) {
        if (prev)
            prev->next = d->next;
        else
            mana_drained_head = d->next;
        if (drained_tail == d)
            drained_tail = prev;
        d->next = NULL;
    }
    pthread_mutex_unlock(&drained_lock);
    return d;
}

typedef int (*unpack_fn)(const void *, MPI_Count, MPI_Count *, void *, MPI_Count, MPI_Datatype, MPI_Comm);
typedef int (*pack_size_c_fn)(MPI_Count, MPI_Datatype, MPI_Comm, MPI_Count *);
typedef int (*set_elements_fn)(MPI_Status *, MPI_Datatype, MPI_Count);

void mana_drained_status(const struct mana_drained *d, MPI_Status *status)
{
    if (mana_status_ignored(status))
        return;
    status->MPI_SOURCE = d->source;
    status->MPI_TAG = d->tag;
    status->count_lo = d->bytes;
    status->count_hi_and_cancelled = 0;
}

int mana_drained_deliver(struct mana_drained *d, void *buf, MPI_Count count, MPI_Datatype dt, int comm,
                         MPI_Status *status)
{
    MPI_Comm c = mana_h_real(comm);
    MPI_Datatype t = mana_h_real(dt);
    MPI_Count room = 0, pos = 0;
    int rc;
    {
        MANA_FORWARD_INTO(rc, 4330, "PMPI_Pack_size_c", int, (MPI_Count, MPI_Datatype, MPI_Comm, MPI_Count *),
                          (count, t, c, &room));
    }
    if (rc == MPI_SUCCESS && d->bytes > room) {
        rc = MPI_ERR_TRUNCATE;
    } else if (rc == MPI_SUCCESS) {
        /* The elements the message reaches into (the last maybe partly) are unpacked; a
         * message that ends inside a basic element fails with MPI_ERR_TRUNCATE, as MPICH's
         * receive does (errors/pt2pt/truncmsg2: 3 bytes into a type of ints). */
        MPI_Count one = 0;
        MANA_FORWARD_INTO(rc, 4331, "PMPI_Pack_size_c", int, (MPI_Count, MPI_Datatype, MPI_Comm, MPI_Count *),
                          (1, t, c, &one));
        MPI_Count n = one > 0 ? (d->bytes + one - 1) / one : 0;
        /* Into MPI_BOTTOM (Fortran's too) with absolute addresses in the datatype: MPICH's
         * MPI_Unpack refuses a NULL output buffer, so unpack one element of a type that
         * starts `anchor` bytes below address 0 into `anchor` (as Sendrecv_replace packs). */
        static char anchor_byte;
        MPI_Datatype wrapped = MPI_DATATYPE_NULL;
        if (rc == MPI_SUCCESS && n > 0 && !buf) {
            MPI_Count disp = -(MPI_Count)(uintptr_t)&anchor_byte;
            MANA_FORWARD_INTO(rc, 4480, "PMPI_Type_create_struct_c", int,
                              (MPI_Count, const MPI_Count *, const MPI_Count *, const MPI_Datatype *, MPI_Datatype *),
                              (1, &n, &disp, &t, &wrapped));
            if (rc == MPI_SUCCESS) {
                MANA_FORWARD_INTO(rc, 4481, "PMPI_Type_commit", int, (MPI_Datatype *), (&wrapped));
            }
            buf = &anchor_byte;
            n = 1;
            t = wrapped;
        }
        if (rc == MPI_SUCCESS && n > 0) {
            MANA_FORWARD_INTO(rc, 4332, "PMPI_Unpack_c", int,
                              (const void *, MPI_Count, MPI_Count *, void *, MPI_Count, MPI_Datatype, MPI_Comm),
                              (d->data, d->bytes, &pos, buf, n, t, c));
            if (rc == MPI_SUCCESS && pos != d->bytes)
                rc = MPI_ERR_TRUNCATE;
        }
        if (wrapped != MPI_DATATYPE_NULL) {
            int rf;
            MANA_FORWARD_INTO(rf, 4482, "PMPI_Type_free", int, (MPI_Datatype *), (&wrapped));
            (void)rf;
        }
    }
    mana_drained_status(d, status);
    if (d->ack_tag) /* a synchronous send's message: its sender may complete it now */
        mana_ssend_ack(d->ack_to, d->ack_tag);
    free(d->data);
    free(d);
    return rc;
}

/* ---- Restart: a new lower half (docs/mpi-checkpoint.md) ---- */

#define MANA_CACHES 16384
static void **caches[MANA_CACHES];
static int n_caches;

void mana_cache_register(void **cache)
{
    int i = __atomic_fetch_add(&n_caches, 1, __ATOMIC_RELAXED);
    if (i < MANA_CACHES)
        caches[i] = cache;
}

static void restart_reset(void)
{
    mana_call_trigger_restarted();
    int n = n_caches < MANA_CACHES ? n_caches : MANA_CACHES;
    for (int i = 0; i < n; i++)
        if (caches[i])
            *caches[i] = NULL;
    n_caches = 0;
}

extern int mana_init_level __attribute__((visibility("hidden")));

struct repost {
    int v;
    struct mana_req_meta *m;
};

struct restart_scan {
    char *err;
    int errlen, bad;
    struct repost *list;
    int n, cap;
};

static void scan_request(int v, struct mana_req_meta *m, void *arg)
{
    struct restart_scan *r = arg;
    if (r->bad || m->app_freed)
        return;
    int persistent_p2p = m->persistent && (m->kind == MANA_REQ_SEND || m->kind == MANA_REQ_RECV ||
                                            (m->kind == MANA_REQ_COLL && m->replay));
    if (m->state == MANA_REQ_DONE && !persistent_p2p)
        return;
    if (persistent_p2p || (m->kind == MANA_REQ_RECV && m->active && !m->persistent && m->tag != MANA_NO_REPOST)) {
        if (r->n == r->cap) {
            r->cap = r->cap ? 2 * r->cap : 64;
            r->list = realloc(r->list, (size_t)r->cap * sizeof *r->list);
        }
        r->list[r->n].v = v;
        r->list[r->n].m = m;
        r->n++;
        return;
    }
    r->bad = 1;
    snprintf(r->err, (size_t)r->errlen,
             "the application holds a %s request (%s) that cannot be re-created in a new lower half yet",
             m->persistent ? "persistent" : "pending",
             m->kind == MANA_REQ_RECV   ? "receive"
             : m->kind == MANA_REQ_SEND ? "send"
             : m->kind == MANA_REQ_COLL ? "collective"
                                        : "generalized, file, one-sided or matched-message");
}

static int by_posting(const void *a, const void *b)
{
    const struct repost *x = a, *y = b;
    return (x->m->posted > y->m->posted) - (x->m->posted < y->m->posted);
}

typedef int (*irecv_c_fn)(void *, MPI_Count, MPI_Datatype, int, int, MPI_Comm, MPI_Request *);

static void repost_blocking(struct mana_gate_slot *g, void *arg)
{
    struct restart_scan *r = arg;
    struct mana_blocking *b = g->blk;
    if (!b || r->bad)
        return;
    unsigned long fs = mana_thread_lower_fs();
    irecv_c_fn irecv = (irecv_c_fn)lower_get(LOWER_FN(4340, "PMPI_Irecv_c"), fs);
    for (int i = 0; i < b->n; i++) {
        if (b->state[i])
            continue;
        if (!b->recv[i] || b->tag[i] == MANA_NO_REPOST) {
            r->bad = 1;
            snprintf(r->err, (size_t)r->errlen, "a thread was blocked in a %s that cannot be re-created yet",
                     b->recv[i] ? "matched receive (MPI_Mrecv)" : "send");
            return;
        }
        unsigned long up = mana_enter_lower(fs);
        int rc = irecv(b->buf[i], b->count[i], mana_h_real(b->datatype[i]), b->peer[i], b->tag[i],
                       mana_h_real(b->comm[i]), &b->real[i]);
        mana_leave_lower(up);
        if (rc != MPI_SUCCESS) {
            r->bad = 1;
            snprintf(r->err, (size_t)r->errlen, "posting a blocked thread's receive again failed (%d)", rc);
            return;
        }
    }
}

struct comm_list {
    int *v;
    struct mana_comm_meta **m;
    int n, cap;
    char *err;
    int errlen, bad;
};

static void comm_list_add(struct comm_list *l, int c, struct mana_comm_meta *m)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 16;
        l->v = realloc(l->v, (size_t)l->cap * sizeof *l->v);
        l->m = realloc(l->m, (size_t)l->cap * sizeof *l->m);
    }
    l->v[l->n] = c;
    l->m[l->n++] = m;
}

static void list_comm(int c, struct mana_comm_meta *m, void *arg)
{
    struct comm_list *l = arg;
    if (!mana_h_is_virtual(c)) {
        if (m->errhandler) /* MPI_COMM_WORLD / MPI_COMM_SELF: only their error handler */
            comm_list_add(l, c, m);
        return;
    }
    if (m->topo == 4 || !m->world_ranks || (m->inter && !m->remote_world_ranks)) {
        l->bad = 1;
        snprintf(l->err, (size_t)l->errlen,
                 "the application holds %s; re-creating it in a new lower half is not implemented yet",
                 m->topo == 4 ? "a communicator with an unknown topology"
                              : "a communicator from a call MANA does not record (spawn, connect, sessions)");
        return;
    }
    comm_list_add(l, c, m);
}

MANA_LOWER_FUNCTION(lower_group_incl, 4350, "PMPI_Group_incl", (MPI_Group g, int n, const int *r, MPI_Group *out),
                    (g, n, r, out))
MANA_LOWER_FUNCTION(lower_comm_create_group, 4351, "PMPI_Comm_create_group",
                    (MPI_Comm c, MPI_Group g, int tag, MPI_Comm *out), (c, g, tag, out))
MANA_LOWER_FUNCTION(lower_cart_create, 4352, "PMPI_Cart_create",
                    (MPI_Comm c, int n, const int *d, const int *p, int reorder, MPI_Comm *out),
                    (c, n, d, p, reorder, out))
MANA_LOWER_FUNCTION(lower_comm_set_errhandler, 4353, "PMPI_Comm_set_errhandler", (MPI_Comm c, MPI_Errhandler e),
                    (c, e))
MANA_LOWER_FUNCTION(lower_graph_create, 4354, "PMPI_Graph_create",
                    (MPI_Comm c, int n, const int *i, const int *e, int reorder, MPI_Comm *out),
                    (c, n, i, e, reorder, out))
MANA_LOWER_FUNCTION(lower_dist_graph_create_adjacent, 4355, "PMPI_Dist_graph_create_adjacent",
                    (MPI_Comm c, int in, const int *s, const int *sw, int out, const int *d, const int *dw,
                     MPI_Info info, int reorder, MPI_Comm *newc),
                    (c, in, s, sw, out, d, dw, info, reorder, newc))
MANA_LOWER_FUNCTION(lower_intercomm_create, 4356, "PMPI_Intercomm_create",
                    (MPI_Comm l, int ll, MPI_Comm peer, int rl, int tag, MPI_Comm *out), (l, ll, peer, rl, tag, out))

/* The communicator of world ranks `ranks` (collective over them only), or an error. */
int mana_comm_of_world_ranks(const int *ranks, int n, unsigned long long gid, MPI_Comm *out)
{
    MPI_Group world, g = MPI_GROUP_NULL;
    lower_comm_group(MPI_COMM_WORLD, &world);
    int rc = lower_group_incl(world, n, ranks, &g);
    if (rc == MPI_SUCCESS)
        rc = lower_comm_create_group(MPI_COMM_WORLD, g, (int)(gid % 32767), out);
    lower_group_free(&g);
    lower_group_free(&world);
    return rc;
}

void mana_sort_by_gid(int *v, struct mana_comm_meta **m, int n)
{
    for (int i = 0; i < n; i++) /* insertion sort: short lists */
        for (int j = i; j > 0 && m[j]->gid < m[j - 1]->gid; j--) {
            int tv = v[j];
            struct mana_comm_meta *tm = m[j];
            v[j] = v[j - 1];
            m[j] = m[j - 1];
            v[j - 1] = tv;
            m[j - 1] = tm;
        }
}

/* Communicator `m` again: from its world ranks, then its topology (reorder 0, so every
 * rank keeps its rank); an intercommunicator from its local group and the remote group's
 * first world rank, over MPI_COMM_WORLD. */
static int recreate_comm(struct mana_comm_meta *m, MPI_Comm *out)
{
    MPI_Comm c = MPI_COMM_NULL, t = MPI_COMM_NULL;
    int rc = mana_comm_of_world_ranks(m->world_ranks, m->n_ranks, m->gid, &c);
    if (rc != MPI_SUCCESS)
        return rc;
    if (m->inter) {
        rc = lower_intercomm_create(c, 0, MPI_COMM_WORLD, m->remote_world_ranks[0], (int)(m->gid % 32767), &t);
    } else if (m->topo == 1) {
        rc = lower_cart_create(c, m->cart_ndims, m->cart_dims, m->cart_periods, 0, &t);
    } else if (m->topo == 2) {
        const int *g = m->graph;
        rc = lower_graph_create(c, g[0], g + 2, g + 2 + g[0], 0, &t);
    } else if (m->topo == 3) {
        const int *g = m->graph, in = g[0], out_ = g[1];
        const int *unweighted = mana_translate_weights(MPI_UNWEIGHTED);
        rc = lower_dist_graph_create_adjacent(c, in, g + 3, g[2] ? g + 3 + in : unweighted, out_, g + 3 + 2 * in,
                                              g[2] ? g + 3 + 2 * in + out_ : unweighted, MPI_INFO_NULL, 0, &t);
    } else {
        *out = c;
        return MPI_SUCCESS;
    }
    lower_comm_free(&c);
    *out = t;
    return rc;
}

/* Communicators the application created, again, in ascending gid order (a total order
 * every rank shares, so overlapping creations cannot deadlock — DRAIN.md §4), then the
 * error handler the application set. */
static int rebuild_comms(char *err, int errlen)
{
    struct comm_list l = {NULL, NULL, 0, 0, err, errlen, 0};
    mana_comm_each(list_comm, &l);
    if (!l.bad)
        mana_sort_by_gid(l.v, l.m, l.n); /* world/self first */
    for (int i = 0; i < l.n && !l.bad; i++) {
        struct mana_comm_meta *m = l.m[i];
        if (mana_h_is_virtual(l.v[i])) {
            MPI_Comm c = MPI_COMM_NULL;
            int rc = recreate_comm(m, &c);
            if (rc != MPI_SUCCESS) {
                l.bad = 1;
                snprintf(err, (size_t)errlen, "creating a communicator again failed (error %d)", rc);
                break;
            }
            mana_h_set_real(l.v[i], c);
        }
        if (m->errhandler)
            lower_comm_set_errhandler(mana_h_real(l.v[i]), mana_h_real(m->errhandler));
    }
    free(l.v);
    free(l.m);
    return l.bad ? -1 : 0;
}

/* Groups the application holds, again: taken from the same communicator if that is where
 * the application got it (MPI_Comm_group then keeps returning it), else from its world
 * ranks. */
struct group_rebuild {
    MPI_Group world;
    char *err;
    int errlen, bad;
};

static void rebuild_group(int g, struct mana_comm_meta *m, void *arg)
{
    struct group_rebuild *r = arg;
    if (r->bad)
        return;
    MPI_Group real = MPI_GROUP_NULL;
    struct mana_comm_meta *c = m->from_comm ? mana_comm_meta(m->from_comm) : NULL;
    int same = m->from_comm == MPI_COMM_WORLD || m->from_comm == MPI_COMM_SELF ||
               (c && m->world_ranks && c->world_ranks && c->n_ranks == m->n_ranks && !c->inter &&
                memcmp(c->world_ranks, m->world_ranks, (size_t)m->n_ranks * sizeof(int)) == 0);
    int rc = same            ? lower_comm_group(mana_h_real(m->from_comm), &real)
             : m->world_ranks ? lower_group_incl(r->world, m->n_ranks, m->world_ranks, &real)
                              : MPI_ERR_GROUP;
    /* MPI_Comm_group hands out the communicator's group itself, one reference per call:
     * an application that called it n times holds this handle n times and frees it n
     * times, each free reaching the new lower half (MPICH's suite, f90/io/c2f2ciof90
     * restarted with MPI_COMM_WORLD's group taken twice: "ref_count >= 0" failed in
     * MPI_Finalize). Take as many references again. */
    for (unsigned i = 1, n = same ? mana_h_refs(g) : 1; rc == MPI_SUCCESS && i < n; i++) {
        MPI_Group again = MPI_GROUP_NULL;
        rc = lower_comm_group(mana_h_real(m->from_comm), &again);
        if (rc == MPI_SUCCESS && again != real) {
            lower_group_free(&again);
            break;
        }
    }
    if (rc != MPI_SUCCESS) {
        r->bad = 1;
        snprintf(r->err, (size_t)r->errlen, "creating a group again failed (error %d)", rc);
        return;
    }
    mana_h_set_real(g, real);
}

static int rebuild_groups(char *err, int errlen)
{
    struct group_rebuild r = {MPI_GROUP_NULL, err, errlen, 0};
    lower_comm_group(MPI_COMM_WORLD, &r.world);
    mana_group_each(rebuild_group, &r);
    lower_group_free(&r.world);
    return r.bad ? -1 : 0;
}

/* Persistent point-to-point requests again (MPI_*_init with their recorded arguments); an
 * active receive among them is started again. */
typedef int (*init_c_fn)(void *, MPI_Count, MPI_Datatype, int, int, MPI_Comm, MPI_Request *);
static const char *const send_inits[] = {"PMPI_Send_init_c", "PMPI_Ssend_init_c", "PMPI_Bsend_init_c",
                                         "PMPI_Rsend_init_c"};

static int recreate_persistent(int v, struct mana_req_meta *m, char *err, int errlen)
{
    if (m->kind == MANA_REQ_COLL) { /* inactive: the drain completed it if it was active */
        MPI_Request real = MPI_REQUEST_NULL;
        int rc = m->replay(m->replay_args, &real);
        if (rc != MPI_SUCCESS) {
            snprintf(err, (size_t)errlen, "initializing a persistent collective again failed (error %d)", rc);
            return -1;
        }
        mana_h_set_real(v, real);
        return 0;
    }
    unsigned long fs = mana_thread_lower_fs();
    const char *name = m->kind == MANA_REQ_RECV ? "PMPI_Recv_init_c" : send_inits[m->send_mode & 3];
    init_c_fn f = (init_c_fn)mana_lower_fn(4360 + (m->kind == MANA_REQ_RECV ? 4 : m->send_mode), name, fs);
    MPI_Request real = MPI_REQUEST_NULL;
    unsigned long up = mana_enter_lower(fs);
    int rc = f(m->buf, m->count, mana_h_real(m->datatype), m->peer, m->tag, mana_h_real(m->comm), &real);
    mana_leave_lower(up);
    if (rc == MPI_SUCCESS && m->active && m->state == MANA_REQ_LIVE) {
        int (*start)(MPI_Request *) = (int (*)(MPI_Request *))mana_lower_fn(4365, "PMPI_Start", fs);
        up = mana_enter_lower(fs);
        rc = start(&real);
        mana_leave_lower(up);
    }
    if (rc != MPI_SUCCESS) {
        snprintf(err, (size_t)errlen, "creating a persistent request again failed (error %d)", rc);
        return -1;
    }
    mana_h_set_real(v, real);
    return 0;
}

/* In a restored process whose lower half is new: MPI_Init at the level the application
 * asked for, the same rank and size as the image's, then what the application holds:
 * pending receives are posted again in their posting order (the drain completed every
 * send and collective). Objects MANA cannot re-create yet are a clear error. */
static double init_s, rebuild_s;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void restart_times(double *init, double *rebuild)
{
    *init = init_s;
    *rebuild = rebuild_s;
}

static int mpi_restart(int rank, int size, char *err, int errlen)
{
    double t0 = now_s();
    err[0] = 0;
    if (mana_snapshot_unsupported(err, errlen))
        return -1;
    mana_h_forget_reals();
    int provided = 0, rc;
    unsigned long fs = mana_thread_lower_fs();
    int (*init_thread)(int *, char ***, int, int *) =
        (int (*)(int *, char ***, int, int *))mana_lower_fn(4341, "PMPI_Init_thread", fs);
    unsigned long up = mana_enter_lower(fs);
    rc = init_thread(NULL, NULL, mana_init_level < 0 ? MPI_THREAD_SINGLE : mana_init_level, &provided);
    mana_leave_lower(up);
    if (rc != MPI_SUCCESS) {
        snprintf(err, (size_t)errlen, "MPI_Init in the new lower half failed (error %d)", rc);
        return -1;
    }
    double t1 = now_s();
    init_s = t1 - t0;
    int r = -1, n = -1;
    lower_comm_rank(MPI_COMM_WORLD, &r);
    {
        MANA_CALL_LOWER_INTO(rc, 4342, "PMPI_Comm_size", int, (MPI_Comm, int *), (MPI_COMM_WORLD, &n));
    }
    if (r != rank || n != size) {
        snprintf(err, (size_t)errlen,
                 "the new MPI job has rank %d of %d where the image is rank %d of %d (restart with as many processes, in the same order)",
                 r, n, rank, size);
        return -1;
    }
    if (mana_rebuild_objects(0, err, errlen) != 0 || rebuild_comms(err, errlen) != 0 ||
        rebuild_groups(err, errlen) != 0 || mana_rebuild_objects(1, err, errlen) != 0)
        return -1;
    struct restart_scan scan = {err, errlen, 0, NULL, 0, 0};
    mana_req_each(scan_request, &scan);
    if (!scan.bad) {
        qsort(scan.list, (size_t)scan.n, sizeof *scan.list, by_posting);
        irecv_c_fn irecv = (irecv_c_fn)mana_lower_fn(4343, "PMPI_Irecv_c", fs);
        for (int i = 0; i < scan.n && !scan.bad; i++) {
            struct mana_req_meta *m = scan.list[i].m;
            if (m->persistent) {
                scan.bad = recreate_persistent(scan.list[i].v, m, err, errlen) != 0;
                continue;
            }
            MPI_Request real = MPI_REQUEST_NULL;
            up = mana_enter_lower(fs);
            rc = irecv(m->buf, m->count, mana_h_real(m->datatype), m->peer, m->tag, mana_h_real(m->comm), &real);
            mana_leave_lower(up);
            if (rc != MPI_SUCCESS) {
                scan.bad = 1;
                snprintf(err, (size_t)errlen, "posting a pending receive again failed (error %d)", rc);
            } else {
                mana_h_set_real(scan.list[i].v, real);
            }
        }
        mana_gate_each(repost_blocking, &scan);
    }
    free(scan.list);
    rebuild_s = now_s() - t1;
    return scan.bad ? -1 : 0;
}

/* ---- The table the checkpointer calls ---- */

static int gate_close(double timeout)
{
    return mana_gate_close(timeout);
}

static void gate_open(void)
{
    mana_gate_open();
}

int mana_mpi_phase = MANA_PHASE_BEFORE_INIT;

/* A program that holds MPI sessions but never called MPI_Init counts as initialized, as
 * before phases were told apart: its checkpoint snapshots the lower half, which records
 * the sessions, and a restart refuses it with that reason (sessions are not re-created
 * yet) instead of restarting it without them. */
static int phase(void)
{
    int p = __atomic_load_n(&mana_mpi_phase, __ATOMIC_ACQUIRE);
    if (p == MANA_PHASE_BEFORE_INIT && mana_h_live(0xe /* MPICH's session kind */))
        return MANA_PHASE_INITIALIZED;
    return p;
}

/* The checkpointer's exchange between ranks after a restart (struct mana_mpi_ops). */
static int allgather_lens(int len, int *lens)
{
    int rc;
    MANA_CALL_LOWER_INTO(rc, 4900, "PMPI_Allgather", int,
                         (const void *, int, MPI_Datatype, void *, int, MPI_Datatype, MPI_Comm),
                         (&len, 1, MPI_INT, lens, 1, MPI_INT, MPI_COMM_WORLD));
    return rc == MPI_SUCCESS ? 0 : -1;
}

static int allgather_bytes(const char *in, int len, char *out, const int *lens, int size)
{
    if (size <= 0 || len < 0)
        return -1;
    int *displs = malloc((size_t)size * sizeof *displs);
    if (!displs)
        return -1;
    long long at = 0;
    for (int i = 0; i < size; i++) {
        if (lens[i] < 0 || at + lens[i] > INT_MAX) {
            free(displs);
            return -1;
        }
        displs[i] = (int)at;
        at += lens[i];
    }
    int rc;
    {
        MANA_CALL_LOWER_INTO(rc, 4901, "PMPI_Allgatherv", int,
                             (const void *, int, MPI_Datatype, void *, const int *, const int *,
                              MPI_Datatype, MPI_Comm),
                             (in, len, MPI_BYTE, out, lens, displs, MPI_BYTE, MPI_COMM_WORLD));
    }
    free(displs);
    return rc == MPI_SUCCESS ? 0 : -1;
}

static const struct mana_mpi_ops ops = {
    .version = MANA_MPI_OPS_VERSION,
    .coll_snapshot = coll_snapshot,
    .coll_apply = coll_apply,
    .coll_grant_pass = coll_grant_pass,
    .coll_finish = coll_finish,
    .gate_close = gate_close,
    .gate_open = gate_open,
    .p2p_sent = p2p_sent,
    .drain_step = drain_step,
    .drained_count = drained_count,
    .progress = progress,
    .snapshot = mana_snapshot,
    .restart_reset = restart_reset,
    .restart = mpi_restart,
    .restart_times = restart_times,
    .phase = phase,
    .drain_report = drain_report,
    .allgather_lens = allgather_lens,
    .allgather_bytes = allgather_bytes,
};

extern void mana_register_mpi_ops(const struct mana_mpi_ops *ops) __attribute__((weak));

__attribute__((constructor)) static void register_ops(void)
{
    if (mana_register_mpi_ops)
        mana_register_mpi_ops(&ops);
}
