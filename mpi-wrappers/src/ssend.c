/* Synchronous sends across a checkpoint (docs/mpi-checkpoint.md, "Synchronous sends").
 *
 * MPI completes MPI_Ssend/MPI_Issend only once the receiver's matching receive has
 * started. The drain receives every message in flight into the upper half, and for a
 * synchronous send that receive is the match MPICH waits for: left alone, the send would
 * complete although the receiver's application has not received yet. So:
 *
 * - The sender registers each synchronous send while it is pending, with how many sends
 *   to the same (communicator, destination, tag) it posted after it (`after`).
 * - The drain does not complete a synchronous send it finds complete in the lower half: it
 *   becomes a suspect.
 * - After the drain, every rank publishes its suspects (collectively, over the lower half's
 *   MPI_COMM_WORLD). Messages of one sender on one communicator with one tag are matched in
 *   send order, so the receiver's application matched a prefix of them and this drain took
 *   the rest: with k of them drained now, a suspect with `after` < k is drained message
 *   k-1-after; one with `after` >= k was matched by the application (a plain completion).
 * - For a drained one the receiver marks that drained message, and the sender's request
 *   waits for an acknowledgement: it becomes a receive of an empty message on MANA's own
 *   communicator (a duplicate of MPI_COMM_WORLD made in MPI_Init), which the receiver sends
 *   when its application receives the marked message. As an ordinary pending receive it is
 *   handled by every wait and test, counted by the drain and posted again by a restart;
 *   its completion reports the send's status.
 *
 * Persistent synchronous sends (MPI_Ssend_init) are not tracked: they may still complete
 * at a checkpoint. Two threads sending to the same (communicator, destination, tag) at the
 * same time may make `after` count one send on the wrong side, or give two sends the same
 * `after`; then the acknowledgement comes when a neighbouring message is received (a
 * later or earlier completion, never a lost one: a message marked twice passes the second
 * mark to the nearest unmarked one, see mana_drained_mark). */
#include "mana_wrap.h"
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* MANA's communicator for acknowledgements (virtual), or MPI_COMM_NULL. */
static int ack_comm = MPI_COMM_NULL;

void mana_ssend_init(void)
{
    if (ack_comm != MPI_COMM_NULL)
        return;
    MPI_Comm c = MPI_COMM_NULL;
    if (PMPI_Comm_dup(MPI_COMM_WORLD, &c) == MPI_SUCCESS)
        ack_comm = c;
}

/* ---- Pending synchronous sends (any thread) ---- */

struct live {
    int used, comm, dest, tag;
    unsigned after;
};
static struct live *lives;
static int n_lives;
static int mana_ssend_live;
static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;

int mana_ssend_register(int comm, int dest, int tag)
{
    if (ack_comm == MPI_COMM_NULL || dest < 0)
        return 0;
    pthread_mutex_lock(&live_lock);
    int i = 0;
    while (i < n_lives && lives[i].used)
        i++;
    if (i == n_lives) {
        struct live *more = realloc(lives, (size_t)(n_lives ? 2 * n_lives : 16) * sizeof *lives);
        if (!more) {
            pthread_mutex_unlock(&live_lock);
            return 0;
        }
        memset(more + n_lives, 0, (size_t)(n_lives ? n_lives : 16) * sizeof *lives);
        lives = more;
        n_lives = n_lives ? 2 * n_lives : 16;
    }
    lives[i] = (struct live){1, comm, dest, tag, 0};
    __atomic_add_fetch(&mana_ssend_live, 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&live_lock);
    return i + 1;
}

void mana_ssend_forget(int slot)
{
    pthread_mutex_lock(&live_lock);
    if (slot > 0 && slot <= n_lives && lives[slot - 1].used) {
        lives[slot - 1].used = 0;
        __atomic_sub_fetch(&mana_ssend_live, 1, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&live_lock);
}

void mana_ssend_sent(int comm, int dest, int tag)
{
    if (__builtin_expect(!__atomic_load_n(&mana_ssend_live, __ATOMIC_ACQUIRE), 1))
        return;
    pthread_mutex_lock(&live_lock);
    for (int i = 0; i < n_lives; i++)
        if (lives[i].used && lives[i].comm == comm && lives[i].dest == dest && lives[i].tag == tag)
            lives[i].after++;
    pthread_mutex_unlock(&live_lock);
}

/* Slot `slot`'s send (taken: the slot is free again), 0 if there is none. */
static int take_live(int slot, struct live *out)
{
    pthread_mutex_lock(&live_lock);
    int ok = slot > 0 && slot <= n_lives && lives[slot - 1].used;
    if (ok) {
        *out = lives[slot - 1];
        lives[slot - 1].used = 0;
        __atomic_sub_fetch(&mana_ssend_live, 1, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&live_lock);
    return ok;
}

/* ---- Suspects (the checkpointer's thread only, gate closed) ---- */

struct suspect {
    int v;                  /* the application's request, or 0 for a blocked thread's send */
    struct mana_blocking *b; /* ... registered there */
    struct live send;
    int dest_world, id;
};
static struct suspect *suspects;
static int n_suspects, cap_suspects;

static int add_suspect(int v, struct mana_blocking *b, const struct live *send)
{
    if (n_suspects == cap_suspects) {
        int cap = cap_suspects ? 2 * cap_suspects : 16;
        struct suspect *more = realloc(suspects, (size_t)cap * sizeof *suspects);
        if (!more)
            return 0;
        suspects = more;
        cap_suspects = cap;
    }
    suspects[n_suspects++] = (struct suspect){v, b, *send, -1, 0};
    return 1;
}

int mana_ssend_suspect_req(int v, struct mana_req_meta *m, const MPI_Status *st)
{
    struct live send;
    if (!m->sync_slot || (st->count_hi_and_cancelled & 1) || !take_live(m->sync_slot, &send))
        return 0;
    m->sync_slot = 0;
    if (!add_suspect(v, NULL, &send))
        return 0;
    m->suspect = 1;
    m->status = *st;
    /* The lower request is gone: a wait meanwhile (a failed checkpoint) completes at once. */
    mana_h_set_real(v, MPI_REQUEST_NULL);
    return 1;
}

void mana_ssend_suspect_blocked(struct mana_blocking *b)
{
    struct live send;
    if (b->sync_slot && take_live(b->sync_slot, &send)) {
        b->sync_slot = 0;
        add_suspect(0, b, &send);
    }
}

void mana_ssend_drain_begin(void)
{
    /* Suspects of a checkpoint that failed before its exchange complete as they would have
     * without this module; their requests are done. */
    for (int i = 0; i < n_suspects; i++) {
        struct mana_req_meta *m = suspects[i].v ? mana_req_meta(suspects[i].v) : NULL;
        if (m && m->suspect) {
            m->suspect = 0;
            mana_req_finished(suspects[i].v, m, &m->status);
        }
    }
    n_suspects = 0;
    mana_drained_fresh_clear();
}

/* ---- The exchange after the drain ---- */

struct record {
    unsigned long long gid;
    int dest_world, sender_world, src_rank, tag, id;
    unsigned after;
};
struct verdict {
    int sender_world, id, drained;
};

MANA_LOWER_FUNCTION(lower_rank, 4640, "PMPI_Comm_rank", (MPI_Comm c, int *r), (c, r))
MANA_LOWER_FUNCTION(lower_allgather_int, 4641, "PMPI_Allgather",
                    (const void *s, int sc, MPI_Datatype st, void *r, int rc, MPI_Datatype rt, MPI_Comm c),
                    (s, sc, st, r, rc, rt, c))
MANA_LOWER_FUNCTION(lower_allgatherv, 4642, "PMPI_Allgatherv",
                    (const void *s, int sc, MPI_Datatype st, void *r, const int *rc, const int *d, MPI_Datatype rt,
                     MPI_Comm c),
                    (s, sc, st, r, rc, d, rt, c))
MANA_LOWER_FUNCTION(lower_world_size, 4643, "PMPI_Comm_size", (MPI_Comm c, int *n), (c, n))
MANA_LOWER_FUNCTION(lower_irecv, 4644, "PMPI_Irecv",
                    (void *b, int n, MPI_Datatype t, int src, int tag, MPI_Comm c, MPI_Request *r),
                    (b, n, t, src, tag, c, r))

/* Every rank's `n` items of `size` bytes, gathered (malloc'd, *total items), or NULL with
 * *total 0 when nobody has any. */
static void *gather_all(const void *mine, int n, size_t size, int world, int *total)
{
    *total = 0;
    int *counts = calloc((size_t)world, sizeof(int)), *displs = calloc((size_t)world, sizeof(int));
    void *all = NULL;
    int bytes = (int)((size_t)n * size);
    if (!counts || !displs || lower_allgather_int(&bytes, 1, MPI_INT, counts, 1, MPI_INT, MPI_COMM_WORLD) != MPI_SUCCESS)
        goto out;
    long long sum = 0;
    for (int r = 0; r < world; r++) {
        displs[r] = (int)sum;
        sum += counts[r];
    }
    if (sum == 0 || sum > 0x7fffffff || !(all = malloc((size_t)sum)))
        goto out;
    if (lower_allgatherv(mine, bytes, MPI_BYTE, all, counts, displs, MPI_BYTE, MPI_COMM_WORLD) != MPI_SUCCESS) {
        free(all);
        all = NULL;
        goto out;
    }
    *total = (int)(sum / (long long)size);
out:
    free(counts);
    free(displs);
    return all;
}

/* The world rank of `dest` in the application's communicator `comm` (this rank is world
 * rank `me`), or -1. */
static int world_rank_of(int comm, int dest, int me)
{
    if (comm == MPI_COMM_WORLD)
        return dest;
    if (comm == MPI_COMM_SELF) /* gid 0: drained locally, like every other communicator */
        return dest == 0 ? me : -1;
    struct mana_comm_meta *m = mana_comm_meta(comm);
    if (!m || !m->gid)
        return -1;
    if (m->inter)
        return m->remote_world_ranks && dest < m->n_remote ? m->remote_world_ranks[dest] : -1;
    return m->world_ranks && dest < m->n_ranks ? m->world_ranks[dest] : -1;
}

static int next_id(void)
{
    static int id;
    id = id % 32767 + 1; /* within every MPI's MPI_TAG_UB */
    return id;
}

/* The suspect's send waits for its acknowledgement from `s->dest_world`. */
static void await_ack(struct suspect *s)
{
    MPI_Request real = MPI_REQUEST_NULL;
    if (lower_irecv(NULL, 0, MPI_BYTE, s->dest_world, s->id, mana_h_real(ack_comm), &real) != MPI_SUCCESS)
        return; /* it completes now, as before this module */
    if (s->b) {
        struct mana_blocking *b = s->b;
        b->real[0] = real;
        b->comm[0] = ack_comm;
        b->recv[0] = 1;
        b->buf[0] = NULL;
        b->count[0] = 0;
        b->datatype[0] = MPI_BYTE;
        b->peer[0] = s->dest_world;
        b->tag[0] = s->id;
        b->state[0] = 0;
        return;
    }
    struct mana_req_meta *m = mana_req_meta(s->v);
    if (!m)
        return;
    m->kind = MANA_REQ_RECV;
    m->comm = ack_comm;
    m->peer = s->dest_world;
    m->tag = s->id;
    m->buf = NULL;
    m->count = 0;
    m->datatype = MPI_BYTE;
    m->posted = mana_next_posted();
    m->held = 1;
    m->suspect = 0;
    mana_h_set_real(s->v, real);
}

void mana_ssend_exchange(void)
{
    if (ack_comm == MPI_COMM_NULL)
        return; /* MPI_Init did not make one on any rank (the agreement puts them on one side) */
    int me = -1, world = 0;
    lower_rank(MPI_COMM_WORLD, &me);
    lower_world_size(MPI_COMM_WORLD, &world);
    struct record *out = calloc((size_t)n_suspects + 1, sizeof *out);
    int n_out = 0;
    for (int i = 0; i < n_suspects && out; i++) {
        struct suspect *s = &suspects[i];
        struct mana_comm_meta *cm = mana_comm_meta(s->send.comm);
        int src = -1;
        s->dest_world = world_rank_of(s->send.comm, s->send.dest, me);
        if (s->dest_world < 0 || !cm || lower_rank(mana_h_real(s->send.comm), &src) != MPI_SUCCESS)
            continue;
        s->id = next_id();
        out[n_out++] = (struct record){cm->gid, s->dest_world, me, src, s->send.tag, s->id, s->send.after};
    }
    int n_all = 0;
    struct record *all = gather_all(out, out ? n_out : 0, sizeof *out, world, &n_all);
    struct verdict *mine = calloc((size_t)n_all + 1, sizeof *mine);
    int n_mine = 0;
    for (int i = 0; i < n_all && mine; i++) {
        struct record *r = &all[i];
        if (r->dest_world != me)
            continue;
        int drained = mana_drained_mark(r->gid, r->src_rank, r->tag, r->after, r->sender_world, r->id);
        mine[n_mine++] = (struct verdict){r->sender_world, r->id, drained};
    }
    int n_verdicts = 0;
    struct verdict *verdicts = gather_all(mine, mine ? n_mine : 0, sizeof *mine, world, &n_verdicts);
    for (int i = 0; i < n_suspects; i++) {
        struct suspect *s = &suspects[i];
        int drained = 0;
        for (int k = 0; k < n_verdicts && s->id; k++)
            if (verdicts[k].sender_world == me && verdicts[k].id == s->id)
                drained = verdicts[k].drained;
        if (drained) {
            await_ack(s);
        } else if (!s->b) {
            struct mana_req_meta *m = mana_req_meta(s->v);
            if (m && m->suspect) {
                m->suspect = 0;
                mana_req_finished(s->v, m, &m->status);
            }
        }
    }
    free(out);
    free(all);
    free(mine);
    free(verdicts);
    n_suspects = 0;
    mana_drained_fresh_clear();
}

/* ---- The receiver's acknowledgement (any thread, outside the gate) ---- */

void mana_ssend_ack(int to, int tag)
{
    mana_gate_enter();
    MPI_Request r = MPI_REQUEST_NULL;
    int rc;
    {
        MANA_CALL_LOWER_INTO(rc, 4645, "PMPI_Isend", int,
                             (const void *, int, MPI_Datatype, int, int, MPI_Comm, MPI_Request *),
                             (NULL, 0, MPI_BYTE, to, tag, mana_h_real(ack_comm), &r));
    }
    if (rc == MPI_SUCCESS) {
        mana_count_sent(ack_comm, to);
        MANA_CALL_LOWER_INTO(rc, 4646, "PMPI_Request_free", int, (MPI_Request *), (&r));
    }
    mana_gate_leave();
}
