/* Virtual handles (DESIGN.md §3): the tables behind mana_h_real() in mana_wrap.h.
 *
 * The application sees MPICH's own values for predefined objects and null handles, and
 * a virtual value for every object the lower half creates at run time:
 *
 *     0xC0000000 | kind << 26 | 1 << 25 | index        (index < 2^25)
 *
 * `kind` is MPICH's object kind (bits 26..29 of the real handle). The shape is MPICH's
 * "indirect" handle with a block number ≥ 8192, which the real library rejects as an
 * invalid handle, so a virtual value that ever reached the lower half untranslated
 * would fail loudly instead of naming some other object.
 *
 * Per kind: a two-level table index → real handle (readers take no lock: chunks are
 * published once and never move), a reference count per index (MPICH returns the same
 * handle again for the same object — MPI_Comm_group, MPI_Type_get_contents,
 * MPI_Comm_get_errhandler — and so do we: one virtual handle per real object, found
 * through a reverse hash map), and a ring of released indices. Requests, communicators
 * and windows reuse an index only once more than MANA_VH_REUSE_DELAY others have been
 * released after it (a stale handle is very unlikely to name a new object); the other
 * kinds reuse the last released index first, as MPICH does (REUSE_LIFO).
 * Requests (and MPI_Message, which shares their kind) are never looked up by real
 * value: each MPI call that starts one gets a new virtual handle.
 *
 * All memory comes from mmap: the tables are upper-half state and are saved in the
 * image with the rest of this library. */
#include "mana_wrap.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

int *mana_vh_dir[MANA_VH_KINDS][MANA_VH_CHUNKS];

#define CHUNK (1u << MANA_VH_CHUNK_BITS)
#define MANA_VH_REUSE_DELAY 4096u
#define KIND_REQUEST 0xb
#define KIND_COMM 0x1
#define KIND_GROUP 0x2
#define KIND_WIN 0x8
#define KIND_DATATYPE 0x3
/* Kinds whose handles carry a struct mana_comm_meta (windows: identity and fence count). */
#define HAS_COMM_META(k) ((k) == KIND_COMM || (k) == KIND_GROUP || (k) == KIND_WIN)

struct kind_table {
    int lock; /* a spin lock: held for a few table updates only */
    struct mana_req_meta *meta[MANA_VH_CHUNKS];       /* requests only: parallel to mana_vh_dir */
    struct mana_comm_meta *comm_meta[MANA_VH_CHUNKS]; /* communicators, groups, windows */
    unsigned *aux[MANA_VH_CHUNKS];   /* a word per handle for the wrappers (mana_h_aux) */
    unsigned next_fresh;             /* indices below this have been handed out */
    unsigned *refs[MANA_VH_CHUNKS];  /* reference counts, parallel to mana_vh_dir */
    unsigned *fifo;                  /* released indices, a ring */
    unsigned fifo_cap, fifo_head, fifo_len;
    unsigned *map;                   /* real handle → index + 1, open addressing */
    int *map_keys;
    unsigned map_cap, map_len;
    unsigned live;
};

static struct kind_table tables[MANA_VH_KINDS];

static void table_lock(struct kind_table *t)
{
    while (__atomic_exchange_n(&t->lock, 1, __ATOMIC_ACQUIRE))
        while (__atomic_load_n(&t->lock, __ATOMIC_RELAXED))
            __builtin_ia32_pause();
}

static void table_unlock(struct kind_table *t)
{
    __atomic_store_n(&t->lock, 0, __ATOMIC_RELEASE);
}

static void *zeroed(size_t bytes)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        fprintf(stderr, "mana: out of memory for the virtual-handle tables (%zu bytes)\n", bytes);
        abort();
    }
    return p;
}

static void unmap(void *p, size_t bytes)
{
    if (p)
        munmap(p, bytes);
}

static unsigned hash(int real, unsigned cap)
{
    return ((unsigned)real * 2654435761u) & (cap - 1);
}

static void map_insert_raw(struct kind_table *t, int real, unsigned idx)
{
    unsigned i = hash(real, t->map_cap);
    while (t->map[i])
        i = (i + 1) & (t->map_cap - 1);
    t->map_keys[i] = real;
    t->map[i] = idx + 1;
    t->map_len++;
}

static void map_grow(struct kind_table *t)
{
    unsigned old_cap = t->map_cap;
    unsigned *old = t->map;
    int *old_keys = t->map_keys;
    t->map_cap = old_cap ? old_cap * 2 : 1024;
    t->map = zeroed(t->map_cap * sizeof(unsigned));
    t->map_keys = zeroed(t->map_cap * sizeof(int));
    t->map_len = 0;
    for (unsigned i = 0; i < old_cap; i++)
        if (old[i])
            map_insert_raw(t, old_keys[i], old[i] - 1);
    unmap(old, old_cap * sizeof(unsigned));
    unmap(old_keys, old_cap * sizeof(int));
}

static void map_insert(struct kind_table *t, int real, unsigned idx)
{
    if (2 * (t->map_len + 1) > t->map_cap)
        map_grow(t);
    map_insert_raw(t, real, idx);
}

/* Index + 1 of `real`, 0 if absent. */
static unsigned map_find(const struct kind_table *t, int real)
{
    if (!t->map_cap)
        return 0;
    for (unsigned i = hash(real, t->map_cap); t->map[i]; i = (i + 1) & (t->map_cap - 1))
        if (t->map_keys[i] == real)
            return t->map[i];
    return 0;
}

/* Linear-probing deletion by backward shift (no tombstones). */
static void map_remove(struct kind_table *t, int real)
{
    if (!t->map_cap)
        return;
    unsigned mask = t->map_cap - 1, i = hash(real, t->map_cap);
    while (t->map[i] && t->map_keys[i] != real)
        i = (i + 1) & mask;
    if (!t->map[i])
        return;
    t->map[i] = 0;
    t->map_len--;
    for (unsigned j = (i + 1) & mask; t->map[j]; j = (j + 1) & mask) {
        unsigned home = hash(t->map_keys[j], t->map_cap);
        /* Move j into the hole at i unless its home lies cyclically in (i, j]. */
        int stays = (i <= j) ? (home > i && home <= j) : (home > i || home <= j);
        if (!stays) {
            t->map[i] = t->map[j];
            t->map_keys[i] = t->map_keys[j];
            t->map[j] = 0;
            i = j;
        }
    }
}

static void fifo_push(struct kind_table *t, unsigned idx)
{
    if (t->fifo_len == t->fifo_cap) {
        unsigned cap = t->fifo_cap ? t->fifo_cap * 2 : 8192;
        unsigned *ring = zeroed(cap * sizeof(unsigned));
        for (unsigned i = 0; i < t->fifo_len; i++)
            ring[i] = t->fifo[(t->fifo_head + i) % t->fifo_cap];
        unmap(t->fifo, t->fifo_cap * sizeof(unsigned));
        t->fifo = ring;
        t->fifo_cap = cap;
        t->fifo_head = 0;
    }
    t->fifo[(t->fifo_head + t->fifo_len) % t->fifo_cap] = idx;
    t->fifo_len++;
}

/* Kinds whose released indices are reused at once, the last released first, as MPICH
 * reuses its handles: a program that (wrongly) keeps using a freed datatype handle after
 * creating another one gets the new one, natively and under MANA alike (MPICH's
 * datatype/indexed_misc_oldapi does). Requests, communicators and windows keep the
 * delay: MANA itself keys state by them (drained messages by communicator, the drain's
 * requests), which a reused handle must never inherit. */
#define REUSE_LIFO(kind) ((kind) != KIND_REQUEST && (kind) != KIND_COMM && (kind) != KIND_WIN)

/* A free index whose chunk exists, or ~0u when the kind's 2^25 indices are exhausted. */
static unsigned take_index(struct kind_table *t, int kind)
{
    if (REUSE_LIFO(kind) && t->fifo_len) {
        t->fifo_len--;
        return t->fifo[(t->fifo_head + t->fifo_len) % t->fifo_cap];
    }
    if (t->fifo_len > MANA_VH_REUSE_DELAY) {
        unsigned idx = t->fifo[t->fifo_head];
        t->fifo_head = (t->fifo_head + 1) % t->fifo_cap;
        t->fifo_len--;
        return idx;
    }
    if (t->next_fresh >= CHUNK * MANA_VH_CHUNKS)
        return ~0u;
    unsigned idx = t->next_fresh++;
    unsigned c = idx >> MANA_VH_CHUNK_BITS;
    if (!mana_vh_dir[kind][c]) {
        t->refs[c] = zeroed(CHUNK * sizeof(unsigned));
        if (kind == KIND_REQUEST)
            t->meta[c] = zeroed(CHUNK * sizeof(struct mana_req_meta));
        if (HAS_COMM_META(kind))
            t->comm_meta[c] = zeroed(CHUNK * sizeof(struct mana_comm_meta));
        t->aux[c] = zeroed(CHUNK * sizeof(unsigned));
        __atomic_store_n(&mana_vh_dir[kind][c], (int *)zeroed(CHUNK * sizeof(int)), __ATOMIC_RELEASE);
    }
    return idx;
}

static int virtual_of(unsigned kind, unsigned idx)
{
    return (int)(MANA_VH_TAG | (kind << 26) | idx);
}

int mana_h_virtual(int real)
{
    if (!mana_h_is_object(real))
        return real;
    unsigned kind = MANA_VH_KIND(real);
    struct kind_table *t = &tables[kind];
    table_lock(t);
    unsigned found = kind == KIND_REQUEST ? 0 : map_find(t, real);
    if (found && t->refs[(found - 1) >> MANA_VH_CHUNK_BITS][(found - 1) & (CHUNK - 1)] == 0) {
        /* A handle being released in another thread (release() frees the object before it
         * unmaps it), whose real value MPICH already gave to a new object: not that handle. */
        map_remove(t, real);
        found = 0;
    }
    unsigned idx;
    if (found) {
        idx = found - 1;
        t->refs[idx >> MANA_VH_CHUNK_BITS][idx & (CHUNK - 1)]++;
        /* A datatype a restart created again (MPI counts it once) handed out once more by
         * MPI (MPI_Type_get_contents, MPI_File_get_view): one more free is owed. */
        unsigned *owed = &t->aux[idx >> MANA_VH_CHUNK_BITS][idx & (CHUNK - 1)];
        if (kind == KIND_DATATYPE && (*owed & MANA_AUX_FREE_ONCE))
            ++*owed;
    } else {
        idx = take_index(t, kind);
        if (idx == ~0u) {
            table_unlock(t);
            fprintf(stderr, "mana: more than %u live MPI objects of kind %#x\n", CHUNK * MANA_VH_CHUNKS, kind);
            abort();
        }
        mana_vh_dir[kind][idx >> MANA_VH_CHUNK_BITS][idx & (CHUNK - 1)] = real;
        t->refs[idx >> MANA_VH_CHUNK_BITS][idx & (CHUNK - 1)] = 1;
        if (kind == KIND_REQUEST) {
            struct mana_req_meta *m = &t->meta[idx >> MANA_VH_CHUNK_BITS][idx & (CHUNK - 1)];
            free(m->replay_args);
            free(m->send_copy);
            memset(m, 0, sizeof *m);
        }
        t->aux[idx >> MANA_VH_CHUNK_BITS][idx & (CHUNK - 1)] = 0;
        if (HAS_COMM_META(kind)) {
            struct mana_comm_meta *m = &t->comm_meta[idx >> MANA_VH_CHUNK_BITS][idx & (CHUNK - 1)];
            if (m->sent)
                mana_sent_free(m->sent, m->n_peers);
            free(m->world_ranks);
            free(m->cart_dims);
            free(m->cart_periods);
            free(m->remote_world_ranks);
            free(m->graph);
            free(m->win_locks);
            free(m->win_copies);
            free(m->win_attached);
            memset(m, 0, sizeof *m);
        }
        if (kind != KIND_REQUEST)
            map_insert(t, real, idx);
        t->live++;

    }
    table_unlock(t);
    return virtual_of(kind, idx);
}

/* The index + 1 of the virtual handle of real object `real` of `kind` (0: none). */
static unsigned known_index(unsigned kind, int real)
{
    struct kind_table *t = &tables[kind];
    table_lock(t);
    unsigned found = map_find(t, real);
    table_unlock(t);
    return found;
}

int mana_h_lookup_virtual(int real)
{
    if (!mana_h_is_object(real))
        return real;
    unsigned kind = MANA_VH_KIND(real), found = known_index(kind, real);
    return found ? virtual_of(kind, found - 1) : mana_h_virtual(real);
}

/* The application's handle of real object `real` if it has one, else `real` itself,
 * without making one: attribute callbacks also run for MPICH's internal objects (the
 * communicator MPI_Win_create duplicates and MPI_Win_free frees), which the application
 * never holds — a virtual handle made for one would outlive it in the tables. */
int mana_h_peek_virtual(int real)
{
    if (!mana_h_is_object(real))
        return real;
    unsigned kind = MANA_VH_KIND(real), found = known_index(kind, real);
    return found ? virtual_of(kind, found - 1) : real;
}

/* Drops one reference of virtual handle `v` (the application freed it, or MPI completed
 * the request it names). */
static void release(int v)
{
    unsigned kind = MANA_VH_KIND(v), idx = (unsigned)v & MANA_VH_INDEX_MASK;
    struct kind_table *t = &tables[kind];
    int *chunk = mana_vh_dir[kind][idx >> MANA_VH_CHUNK_BITS];
    if (!chunk)
        return;
    table_lock(t);
    unsigned *ref = &t->refs[idx >> MANA_VH_CHUNK_BITS][idx & (CHUNK - 1)];
    int real = chunk[idx & (CHUNK - 1)], gone = 0, errhandler = 0, held = 0, pcoll = 0, sync_slot = 0;
    unsigned long long dead_gid = 0, dead_seq = 0;
    struct mana_comm_meta *m = NULL;
    unsigned long long *sent = NULL;
    int send_side = 0, n_peers = 0;
    if (real && *ref && --*ref == 0) {
        unsigned *owed = &t->aux[idx >> MANA_VH_CHUNK_BITS][idx & (CHUNK - 1)];
        if (kind == KIND_DATATYPE && *owed) {
            /* MPI_Type_free reaches the lower half now, while the handle still maps to the
             * datatype: attribute delete callbacks see the application's handle. */
            unsigned frees = *owed;
            *owed = 0;
            table_unlock(t);
            mana_handle_released((int)kind, frees, v);
            table_lock(t);
            /* A restart while it waited at the gate bound `v` to a new object. */
            real = chunk[idx & (CHUNK - 1)];
        }
        if (kind != KIND_REQUEST && map_find(t, real) == idx + 1) /* not a new object's */
            map_remove(t, real);
        chunk[idx & (CHUNK - 1)] = 0;
        fifo_push(t, idx);
        t->live--;
        gone = 1;
        if (kind == KIND_REQUEST) { /* the datatype it held (p2p.c, hold_datatype) */
            struct mana_req_meta *rm = &t->meta[idx >> MANA_VH_CHUNK_BITS][idx & (CHUNK - 1)];
            held = rm->datatype;
            rm->datatype = 0;
            pcoll = rm->pcoll; /* a persistent collective's start counter */
            rm->pcoll = 0;
            sync_slot = rm->sync_slot; /* an MPI_Issend's registration (src/ssend.c) */
            rm->sync_slot = 0;
        }
        if (HAS_COMM_META(kind)) { /* the handler it held a reference on, its send counts */
            m = &t->comm_meta[idx >> MANA_VH_CHUNK_BITS][idx & (CHUNK - 1)];
            dead_gid = m->gid; /* its final sequence number, for the next agreement */
            dead_seq = m->seq;
            errhandler = m->errhandler;
            m->errhandler = 0;
            sent = m->sent;
            m->sent = NULL;
            send_side = m->send_side; /* read here: the slot may be reused once unlocked */
            n_peers = m->n_peers;
        }
    }
    table_unlock(t);
    if (dead_gid)
        mana_comm_dead(dead_gid, dead_seq);
    if (pcoll)
        mana_pcoll_dead(pcoll);
    if (sync_slot)
        mana_ssend_forget(sync_slot);
    if (gone && kind == KIND_COMM) /* its drained messages can never be received now */
        mana_drained_forget_comm(v);
    if (sent)
        mana_comm_released(dead_gid, send_side, sent, n_peers);
    unsigned aux = gone && kind != KIND_REQUEST ? t->aux[idx >> MANA_VH_CHUNK_BITS][idx & (CHUNK - 1)] : 0;
    if (aux)
        mana_handle_released((int)kind, aux, v);
    if (mana_h_is_virtual(errhandler))
        release(errhandler);
    if (mana_h_is_virtual(held))
        release(held);
}

/* `v` now names `real` (MPI replaced the object behind an in-out handle). */
static void rebind(int v, int real)
{
    unsigned kind = MANA_VH_KIND(v), idx = (unsigned)v & MANA_VH_INDEX_MASK;
    struct kind_table *t = &tables[kind];
    int *chunk = mana_vh_dir[kind][idx >> MANA_VH_CHUNK_BITS];
    if (!chunk)
        return;
    table_lock(t);
    int old = chunk[idx & (CHUNK - 1)];
    if (kind != KIND_REQUEST) {
        if (map_find(t, old) == idx + 1) /* after a restart it may name another object */
            map_remove(t, old);
        map_insert(t, real, idx);
    }
    chunk[idx & (CHUNK - 1)] = real;
    table_unlock(t);
}

struct mana_req_meta *mana_req_meta(int v)
{
    if (!mana_h_is_virtual(v) || MANA_VH_KIND(v) != KIND_REQUEST)
        return NULL;
    unsigned idx = (unsigned)v & MANA_VH_INDEX_MASK;
    struct mana_req_meta *chunk = tables[KIND_REQUEST].meta[idx >> MANA_VH_CHUNK_BITS];
    if (!chunk || !mana_vh_dir[KIND_REQUEST][idx >> MANA_VH_CHUNK_BITS][idx & (CHUNK - 1)])
        return NULL;
    return &chunk[idx & (CHUNK - 1)];
}

void mana_req_release(int v)
{
    release(v);
}

/* MPI_COMM_WORLD has gid 1 (DRAIN.md §1.1); MPI_COMM_SELF is not tracked (its
 * collectives are local). */
static struct mana_comm_meta world_meta = {.gid = 1}, self_meta;

struct mana_comm_meta *mana_comm_meta(int c)
{
    if (c == MPI_COMM_WORLD)
        return &world_meta;
    if (c == MPI_COMM_SELF)
        return &self_meta;
    if (!mana_h_is_virtual(c) || (MANA_VH_KIND(c) != KIND_COMM && MANA_VH_KIND(c) != KIND_WIN))
        return NULL;
    unsigned idx = (unsigned)c & MANA_VH_INDEX_MASK;
    struct mana_comm_meta *chunk = tables[MANA_VH_KIND(c)].comm_meta[idx >> MANA_VH_CHUNK_BITS];
    return chunk ? &chunk[idx & (CHUNK - 1)] : NULL;
}

unsigned *mana_h_aux(int v)
{
    if (!mana_h_is_virtual(v))
        return NULL;
    unsigned idx = (unsigned)v & MANA_VH_INDEX_MASK;
    unsigned *chunk = tables[MANA_VH_KIND(v)].aux[idx >> MANA_VH_CHUNK_BITS];
    return chunk ? &chunk[idx & (CHUNK - 1)] : NULL;
}

int mana_h_hold(int v)
{
    if (!mana_h_is_virtual(v) || !mana_h_is_object(v))
        return v;
    unsigned kind = MANA_VH_KIND(v), idx = (unsigned)v & MANA_VH_INDEX_MASK;
    struct kind_table *t = &tables[kind];
    table_lock(t);
    int *chunk = mana_vh_dir[kind][idx >> MANA_VH_CHUNK_BITS];
    if (chunk && chunk[idx & (CHUNK - 1)])
        t->refs[idx >> MANA_VH_CHUNK_BITS][idx & (CHUNK - 1)]++;
    table_unlock(t);
    return v;
}

unsigned mana_h_refs(int v)
{
    if (!mana_h_is_virtual(v))
        return 0;
    unsigned kind = MANA_VH_KIND(v), idx = (unsigned)v & MANA_VH_INDEX_MASK;
    struct kind_table *t = &tables[kind];
    table_lock(t);
    int *chunk = mana_vh_dir[kind][idx >> MANA_VH_CHUNK_BITS];
    unsigned n = chunk && chunk[idx & (CHUNK - 1)] ? t->refs[idx >> MANA_VH_CHUNK_BITS][idx & (CHUNK - 1)] : 0;
    table_unlock(t);
    return n;
}

void mana_h_each(int kind, void (*f)(int v, void *arg), void *arg)
{
    struct kind_table *t = &tables[kind];
    for (unsigned idx = 0; idx < t->next_fresh; idx++) {
        int *chunk = mana_vh_dir[kind][idx >> MANA_VH_CHUNK_BITS];
        if (chunk && chunk[idx & (CHUNK - 1)])
            f(virtual_of((unsigned)kind, idx), arg);
    }
}

/* Groups keep their members as MPI_COMM_WORLD ranks (the `world_ranks` of the same
 * metadata), to be created again at restart. */
struct mana_comm_meta *mana_group_meta(int g)
{
    if (!mana_h_is_virtual(g) || MANA_VH_KIND(g) != KIND_GROUP)
        return NULL;
    unsigned idx = (unsigned)g & MANA_VH_INDEX_MASK;
    struct mana_comm_meta *chunk = tables[KIND_GROUP].comm_meta[idx >> MANA_VH_CHUNK_BITS];
    return chunk ? &chunk[idx & (CHUNK - 1)] : NULL;
}

/* Calls `f` for every live virtual handle of `kind` (one with metadata) and its metadata. */
static void meta_each(unsigned kind, void (*f)(int h, struct mana_comm_meta *m, void *arg), void *arg)
{
    struct kind_table *t = &tables[kind];
    for (unsigned idx = 0; idx < t->next_fresh; idx++) {
        int *chunk = mana_vh_dir[kind][idx >> MANA_VH_CHUNK_BITS];
        if (chunk && chunk[idx & (CHUNK - 1)])
            f(virtual_of(kind, idx), &t->comm_meta[idx >> MANA_VH_CHUNK_BITS][idx & (CHUNK - 1)], arg);
    }
}

void mana_group_each(void (*f)(int g, struct mana_comm_meta *m, void *arg), void *arg)
{
    meta_each(KIND_GROUP, f, arg);
}

void mana_comm_each(void (*f)(int c, struct mana_comm_meta *m, void *arg), void *arg)
{
    f(MPI_COMM_WORLD, &world_meta, arg);
    f(MPI_COMM_SELF, &self_meta, arg);
    meta_each(KIND_COMM, f, arg);
}

void mana_win_each(void (*f)(int w, struct mana_comm_meta *m, void *arg), void *arg)
{
    meta_each(KIND_WIN, f, arg);
}

int mana_req_placeholder(struct mana_req_meta **meta)
{
    struct kind_table *t = &tables[KIND_REQUEST];
    table_lock(t);
    unsigned idx = take_index(t, KIND_REQUEST);
    if (idx == ~0u) {
        table_unlock(t);
        fprintf(stderr, "mana: more than %u live MPI requests\n", CHUNK * MANA_VH_CHUNKS);
        abort();
    }
    mana_vh_dir[KIND_REQUEST][idx >> MANA_VH_CHUNK_BITS][idx & (CHUNK - 1)] = MPI_REQUEST_NULL;
    t->refs[idx >> MANA_VH_CHUNK_BITS][idx & (CHUNK - 1)] = 1;
    struct mana_req_meta *m = &t->meta[idx >> MANA_VH_CHUNK_BITS][idx & (CHUNK - 1)];
    free(m->replay_args);
    free(m->send_copy);
    memset(m, 0, sizeof *m);
    t->live++;
    table_unlock(t);
    *meta = m;
    return virtual_of(KIND_REQUEST, idx);
}

void mana_count_recvd(int c)
{
    struct mana_comm_meta *m = mana_comm_meta(c);
    if (m)
        __atomic_fetch_add(&m->recvd, 1, __ATOMIC_RELAXED);
}

/* The counters of a communicator are sized on its first send (its (remote) group size). */
static pthread_mutex_t sent_alloc_lock = PTHREAD_MUTEX_INITIALIZER;

void mana_sent_free(unsigned long long *sent, int n_peers)
{
    munmap(sent, (size_t)n_peers * sizeof(*sent));
}

void mana_count_sent(int c, int dest)
{
    struct mana_comm_meta *m = mana_comm_meta(c);
    if (!m || dest < 0)
        return;
    unsigned long long *sent = __atomic_load_n(&m->sent, __ATOMIC_ACQUIRE);
    if (__builtin_expect(!sent, 0)) {
        pthread_mutex_lock(&sent_alloc_lock);
        if (!m->sent) {
            int n = mana_alltoallw_len(mana_h_real(c));
            m->n_peers = n > 0 ? n : 1;
            __atomic_store_n(&m->sent, zeroed((size_t)m->n_peers * sizeof(*m->sent)), __ATOMIC_RELEASE);
        }
        pthread_mutex_unlock(&sent_alloc_lock);
        sent = m->sent;
    }
    if (dest < m->n_peers)
        __atomic_fetch_add(&sent[dest], 1, __ATOMIC_RELAXED);
}

void mana_uncount_sent(int c, int dest)
{
    struct mana_comm_meta *m = mana_comm_meta(c);
    unsigned long long *sent = m ? __atomic_load_n(&m->sent, __ATOMIC_ACQUIRE) : NULL;
    if (sent && dest >= 0 && dest < m->n_peers)
        __atomic_fetch_sub(&sent[dest], 1, __ATOMIC_RELAXED);
}

void mana_req_each(void (*f)(int v, struct mana_req_meta *m, void *arg), void *arg)
{
    struct kind_table *t = &tables[KIND_REQUEST];
    for (unsigned idx = 0; idx < t->next_fresh; idx++) {
        int *chunk = mana_vh_dir[KIND_REQUEST][idx >> MANA_VH_CHUNK_BITS];
        if (chunk && chunk[idx & (CHUNK - 1)])
            f(virtual_of(KIND_REQUEST, idx), &t->meta[idx >> MANA_VH_CHUNK_BITS][idx & (CHUNK - 1)], arg);
    }
}

void mana_h_unref(int v)
{
    release(v);
}

void mana_h_forget_reals(void)
{
    for (int k = 0; k < MANA_VH_KINDS; k++) {
        struct kind_table *t = &tables[k];
        table_lock(t);
        if (t->map_cap) {
            memset(t->map, 0, t->map_cap * sizeof(unsigned));
            t->map_len = 0;
        }
        table_unlock(t);
    }
}

void mana_h_set_real(int v, int real)
{
    rebind(v, real);
}

int mana_h_inout_done(int v_before, int real_before, int real_after)
{
    if (real_after == real_before)
        return v_before;
    if (!mana_h_is_virtual(v_before))
        return mana_h_virtual(real_after);
    if (mana_h_is_object(real_after)) {
        rebind(v_before, real_after);
        return v_before;
    }
    release(v_before);
    return real_after;
}

unsigned mana_h_live(int kind)
{
    return kind >= 0 && kind < MANA_VH_KINDS ? tables[kind].live : 0;
}

/* Scratch arrays for translating handle and status arrays longer than MANA_TMP_INLINE. */
void *mana_tmp_alloc(size_t bytes)
{
    void *p = malloc(bytes);
    if (!p) {
        fprintf(stderr, "mana: out of memory translating an array of MPI handles (%zu bytes)\n", bytes);
        abort();
    }
    return p;
}

void mana_tmp_release(void *p, size_t bytes)
{
    (void)bytes;
    free(p);
}

/* Lengths the standard gives as "*": the datatype arrays of the alltoallw family have
 * one entry per process of the (remote) group, or per neighbour in a topology. These
 * ask the lower library directly, with real handles. */
MANA_LOWER_FUNCTION(mana_lower_comm_size, 4100, "PMPI_Comm_size", (MPI_Comm c, int *n), (c, n))
MANA_LOWER_FUNCTION(mana_lower_comm_remote_size, 4101, "PMPI_Comm_remote_size", (MPI_Comm c, int *n), (c, n))
MANA_LOWER_FUNCTION(mana_lower_comm_test_inter, 4102, "PMPI_Comm_test_inter", (MPI_Comm c, int *f), (c, f))
MANA_LOWER_FUNCTION(mana_lower_topo_test, 4103, "PMPI_Topo_test", (MPI_Comm c, int *t), (c, t))
MANA_LOWER_FUNCTION(mana_lower_dist_graph_neighbors_count, 4104, "PMPI_Dist_graph_neighbors_count",
            (MPI_Comm c, int *i, int *o, int *w), (c, i, o, w))
MANA_LOWER_FUNCTION(mana_lower_cartdim_get, 4105, "PMPI_Cartdim_get", (MPI_Comm c, int *n), (c, n))
MANA_LOWER_FUNCTION(mana_lower_graph_neighbors_count, 4106, "PMPI_Graph_neighbors_count", (MPI_Comm c, int r, int *n),
            (c, r, n))
MANA_LOWER_FUNCTION(mana_lower_comm_rank, 4107, "PMPI_Comm_rank", (MPI_Comm c, int *r), (c, r))

int mana_alltoallw_len(MPI_Comm real)
{
    int inter = 0, n = 0;
    mana_lower_comm_test_inter(real, &inter);
    if (inter)
        mana_lower_comm_remote_size(real, &n);
    else
        mana_lower_comm_size(real, &n);
    return n;
}

int mana_neighbor_len(MPI_Comm real, int send)
{
    int topo = MPI_UNDEFINED, n = 0;
    mana_lower_topo_test(real, &topo);
    if (topo == MPI_DIST_GRAPH) {
        int in = 0, out = 0, w = 0;
        mana_lower_dist_graph_neighbors_count(real, &in, &out, &w);
        n = send ? out : in;
    } else if (topo == MPI_CART) {
        mana_lower_cartdim_get(real, &n);
        n *= 2;
    } else if (topo == MPI_GRAPH) {
        int rank = 0;
        mana_lower_comm_rank(real, &rank);
        mana_lower_graph_neighbors_count(real, rank, &n);
    }
    return n;
}
