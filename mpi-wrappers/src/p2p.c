/* Point-to-point wrappers that a checkpoint must be able to interrupt (DRAIN.md §2–3).
 *
 * No application thread ever waits inside the lower half: a blocking call is its
 * nonblocking twin plus a test loop, and the loop holds the gate token only while it
 * tests (at most MANA_SPIN times), so a checkpoint can close the gate between two tests.
 * While the gate is closed the checkpointer drains: it may complete any request —
 * the application's (virtual, with kind/state in their metadata) and the ones a thread
 * blocked in a call is waiting for (registered in the thread's gate slot, struct
 * mana_blocking). So every wait re-reads what it waits for each time it takes the gate.
 * Messages are counted per communicator: sends at initiation, receives at completion, by
 * whoever observes the completion first. Receives and probes look at drained messages
 * first, under the gate.
 *
 * Listed in gen/handwritten.txt; the generator skips these names. */
#include "mana_wrap.h"
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

/* Tests per gate hold while waiting: bounds how long a checkpoint waits at the gate. */
#define MANA_SPIN 256

typedef int (*test_fn)(MPI_Request *, int *, MPI_Status *);
typedef int (*testall_fn)(int, MPI_Request *, int *, MPI_Status *);
typedef int (*testany_fn)(int, MPI_Request *, int *, int *, MPI_Status *);
typedef int (*testsome_fn)(int, MPI_Request *, int *, int *, MPI_Status *);
typedef int (*iprobe_fn)(int, int, MPI_Comm, int *, MPI_Status *);
typedef int (*improbe_fn)(int, int, MPI_Comm, int *, MPI_Message *, MPI_Status *);
typedef int (*isend_fn)(const void *, int, MPI_Datatype, int, int, MPI_Comm, MPI_Request *);
typedef int (*isend_c_fn)(const void *, MPI_Count, MPI_Datatype, int, int, MPI_Comm, MPI_Request *);
typedef int (*irecv_fn)(void *, int, MPI_Datatype, int, int, MPI_Comm, MPI_Request *);
typedef int (*irecv_c_fn)(void *, MPI_Count, MPI_Datatype, int, int, MPI_Comm, MPI_Request *);
typedef int (*imrecv_fn)(void *, int, MPI_Datatype, MPI_Message *, MPI_Request *);
typedef int (*imrecv_c_fn)(void *, MPI_Count, MPI_Datatype, MPI_Message *, MPI_Request *);
typedef int (*start_fn)(MPI_Request *);


/* A request keeps its datatype's handle for as long as it lives (released with it,
 * src/handles.c): MPI lets the application free the datatype meanwhile, and a restart
 * posts the request again with it. */
static void hold_datatype(struct mana_req_meta *m, MPI_Datatype dt)
{
    MPI_Datatype real = mana_h_real(dt);
    m->datatype = mana_h_is_virtual(dt) && !mana_h_is_virtual(real) ? mana_h_hold(dt) : dt;
}

static void empty_status(MPI_Status *st)
{
    if (!mana_status_ignored(st)) {
        st->MPI_SOURCE = MPI_ANY_SOURCE;
        st->MPI_TAG = MPI_ANY_TAG;
        st->MPI_ERROR = MPI_SUCCESS;
        st->count_lo = 0;
        st->count_hi_and_cancelled = 0;
    }
}

static struct mana_gate_slot *my_slot(void)
{
    return mana_tls_gate ? mana_tls_gate : mana_gate_register();
}

/* ---- The requests of a blocking call (struct mana_blocking) ---- */

/* Holding the gate: registers the real request of a blocking call where the drain sees it
 * (and, for a receive, its arguments: a restart posts it again). `tag` MANA_NO_REPOST: a
 * receive that cannot be posted again (of a matched message). */
static void blk_add(struct mana_gate_slot *g, struct mana_blocking *b, MPI_Request r, int comm, int recv, void *buf,
                    MPI_Count count, int dt, int src, int tag)
{
    int i = b->n++;
    b->real[i] = r;
    b->comm[i] = comm;
    b->recv[i] = (unsigned char)recv;
    b->buf[i] = buf;
    b->count[i] = count;
    b->datatype[i] = dt;
    b->peer[i] = src;
    b->tag[i] = tag;
    b->state[i] = 0;
    g->blk = b;
}

/* Holding the gate, on the lower TCB: tests the pending requests up to MANA_SPIN times.
 * Returns how many are still pending; `*rc` the first error. A completion seen here is
 * marked 2 (to be counted by blk_settle, outside the lower half). */
static int blk_spin(struct mana_blocking *b, test_fn test, int *rc)
{
    int pending = 0;
    for (int k = 0; k < MANA_SPIN; k++) {
        pending = 0;
        for (int i = 0; i < b->n; i++) {
            if (b->state[i]) {
                if (b->state[i] == 3) { /* the checkpointer saw it fail: gone in the lower half */
                    b->state[i] = 1;
                    *rc = b->st[i].MPI_ERROR;
                    return 0;
                }
                continue;
            }
            int flag = 0;
            *rc = test(&b->real[i], &flag, &b->st[i]);
            if (*rc != MPI_SUCCESS) {
                /* Complete with an error (MPI_ERR_TRUNCATE: the message was received,
                 * and must be counted, or the drain waits for it for ever — MPICH's
                 * errors/pt2pt/truncmsg1 under checkpoints). */
                if (flag)
                    b->state[i] = 2;
                return 0;
            }
            if (flag)
                b->state[i] = 2;
            else
                pending++;
        }
        if (!pending || mana_gate_closed)
            break;
    }
    return pending;
}

/* Holding the gate: counts the receives completed here; unregisters when all are done. */
static void blk_settle(struct mana_gate_slot *g, struct mana_blocking *b, int pending)
{
    for (int i = 0; i < b->n; i++)
        if (b->state[i] == 2) {
            b->state[i] = 1;
            if (b->recv[i] && mana_received_a_message(b->peer[i], &b->st[i]))
                mana_count_recvd(b->comm[i]);
        }
    if (!pending)
        g->blk = NULL;
}

/* Waits until every request of `b` completed (here, or by the checkpointer's drain). */
static int blk_wait(struct mana_blocking *b)
{
    struct lower_fn *lt = LOWER_FN(4200, "PMPI_Test");
    struct mana_gate_slot *g = my_slot();
    for (;;) {
        int rc = MPI_SUCCESS;
        mana_gate_enter();
        unsigned long fs = mana_thread_lower_fs();
        test_fn test = (test_fn)lower_get(lt, fs);
        unsigned long up = mana_enter_lower(fs);
        int pending = blk_spin(b, test, &rc);
        mana_leave_lower(up);
        blk_settle(g, b, rc != MPI_SUCCESS ? 0 : pending);
        mana_gate_leave();
        if (rc != MPI_SUCCESS || !pending)
            return rc;
    }
}

/* ---- Requests ---- */

static int new_request(int real, int kind, int comm, int peer, int persistent, MPI_Request *out)
{
    int v = mana_h_virtual(real);
    struct mana_req_meta *m = mana_req_meta(v);
    if (m) {
        m->kind = (unsigned char)kind;
        m->comm = comm;
        m->peer = peer;
        m->persistent = (unsigned char)persistent;
        m->active = !persistent;
    }
    *out = v;
    return MPI_SUCCESS;
}

/* The lower half completed the request behind `*v` (its real handle now `real_after`)
 * with status `st`: count a received message, and give the application its new handle. */
static void completed(MPI_Request *v, int real_before, int real_after, MPI_Status *st)
{
    struct mana_req_meta *m = mana_req_meta(*v);
    if (m) {
        if (m->kind == MANA_REQ_RECV && m->active && mana_received_a_message(m->peer, st))
            mana_count_recvd(m->comm);
        mana_send_completed(m, st);
        m->active = 0;
        if (m->held) { /* a synchronous send's acknowledgement (src/ssend.c): the send's status */
            int err = st->MPI_ERROR;
            mana_status_copy(st, &m->status);
            st->MPI_ERROR = err;
            m->held = 0;
        }
    }
    *v = mana_h_inout_done(*v, real_before, real_after);
}

/* A request completed in the upper half (from a drained message, or by the checkpointer)
 * gives `st` its saved status but leaves MPI_ERROR as it was: MPICH sets that field only in
 * the calls that report errors in statuses, and those set it themselves. */
static void saved_status(MPI_Status *st, const struct mana_req_meta *m)
{
    int err = st->MPI_ERROR;
    mana_status_copy(st, &m->status);
    st->MPI_ERROR = err;
}

/* A request the checkpointer completed: its status, and the application's new handle
 * (MPI_REQUEST_NULL, or the inactive persistent request). */
static void completed_by_checkpoint(MPI_Request *v, struct mana_req_meta *m, MPI_Status *st)
{
    if (st)
        saved_status(st, m);
    if (m->persistent) {
        m->state = MANA_REQ_LIVE;
        m->active = 0;
        m->error = 0; /* reported: its next start begins afresh */
    } else {
        mana_req_release(*v);
        *v = MPI_REQUEST_NULL;
    }
}

static struct mana_req_meta *done_meta(int v)
{
    if (!mana_h_is_virtual(v))
        return NULL;
    struct mana_req_meta *m = mana_req_meta(v);
    /* A suspect synchronous send (src/ssend.c) is seen only after a failed checkpoint. */
    return m && (m->state == MANA_REQ_DONE || m->suspect) ? m : NULL;
}

/* ---- Sends ---- */

/* Starts a send with `f` (any mode; int count) or `fc` (MPI_Count) holding the gate and
 * counts it. With `b` (blocking sends), registers the request there and goes on testing
 * it in the same crossing: a send that completes soon costs one crossing, like the
 * native call. */
static int post_send(struct lower_fn *lf, struct lower_fn *lfc, const void *buf, MPI_Count count, MPI_Datatype dt,
                     int dest, int tag, MPI_Comm comm, MPI_Request *r, struct mana_blocking *b, int *pending,
                     int *sync_slot)
{
    struct mana_gate_slot *g = my_slot();
    mana_gate_enter();
    MPI_Comm c = mana_h_real(comm);
    MPI_Datatype t = mana_h_real(dt);
    unsigned long fs = mana_thread_lower_fs();
    test_fn test = b ? (test_fn)lower_get(LOWER_FN(4201, "PMPI_Test"), fs) : NULL;
    isend_fn f = lf ? (isend_fn)lower_get(lf, fs) : NULL;
    isend_c_fn fc = lfc ? (isend_c_fn)lower_get(lfc, fs) : NULL;
    unsigned long up = mana_enter_lower(fs);
    int rc = f ? f(buf, (int)count, t, dest, tag, c, r) : fc(buf, count, t, dest, tag, c, r);
    mana_leave_lower(up);
    if (rc == MPI_SUCCESS) {
        if (dest != MPI_PROC_NULL) {
            mana_count_sent(comm, dest);
            mana_ssend_sent(comm, dest, tag);
            if (sync_slot) /* a synchronous send: src/ssend.c */
                *sync_slot = mana_ssend_register(comm, dest, tag);
        }
        if (b) {
            blk_add(g, b, *r, comm, 0, NULL, 0, 0, dest, tag);
            up = mana_enter_lower(fs);
            *pending = blk_spin(b, test, &rc);
            mana_leave_lower(up);
            blk_settle(g, b, rc != MPI_SUCCESS ? 0 : *pending);
        }
    }
    mana_gate_leave();
    return rc;
}

static int blocking_send(struct lower_fn *f, struct lower_fn *fc, int sync, const void *buf, MPI_Count count,
                         MPI_Datatype dt, int dest, int tag, MPI_Comm comm)
{
    struct mana_blocking b = {0};
    MPI_Request r = MPI_REQUEST_NULL;
    int pending = 0;
    int rc = post_send(f, fc, buf, count, dt, dest, tag, comm, &r, &b, &pending, sync ? &b.sync_slot : NULL);
    if (rc == MPI_SUCCESS && pending)
        rc = blk_wait(&b);
    if (b.sync_slot)
        mana_ssend_forget(b.sync_slot);
    return rc;
}

#define BLOCKING_SEND(NAME, LOWER, ID, INT_F, C_F, COUNT_T, SYNC)                        \
    __attribute__((used)) static int mana_w_##NAME(const void *buf, COUNT_T count, MPI_Datatype dt, int dest, \
                                                   int tag, MPI_Comm comm)                \
    {                                                                                    \
        return blocking_send(INT_F(ID, LOWER), C_F(ID, LOWER), SYNC, buf, count, dt, dest, tag, comm); \
    }                                                                                    \
    MANA_EXPORT(mana_w_##NAME, NAME)                                                     \
    MANA_EXPORT(mana_w_##NAME, P##NAME)
#define NONE(id, name) ((struct lower_fn *)NULL)

/* An MPI_Issend's request keeps its registration (src/ssend.c) until it is released. */
static void sync_request(MPI_Request v, int slot)
{
    struct mana_req_meta *m = mana_req_meta(v);
    if (m)
        m->sync_slot = slot;
    else
        mana_ssend_forget(slot);
}

BLOCKING_SEND(MPI_Send, "PMPI_Isend", 4210, LOWER_FN, NONE, int, 0)
BLOCKING_SEND(MPI_Send_c, "PMPI_Isend_c", 4211, NONE, LOWER_FN, MPI_Count, 0)
BLOCKING_SEND(MPI_Ssend, "PMPI_Issend", 4212, LOWER_FN, NONE, int, 1)
BLOCKING_SEND(MPI_Ssend_c, "PMPI_Issend_c", 4213, NONE, LOWER_FN, MPI_Count, 1)
BLOCKING_SEND(MPI_Bsend, "PMPI_Ibsend", 4214, LOWER_FN, NONE, int, 0)
BLOCKING_SEND(MPI_Bsend_c, "PMPI_Ibsend_c", 4215, NONE, LOWER_FN, MPI_Count, 0)
BLOCKING_SEND(MPI_Rsend, "PMPI_Irsend", 4216, LOWER_FN, NONE, int, 0)
BLOCKING_SEND(MPI_Rsend_c, "PMPI_Irsend_c", 4217, NONE, LOWER_FN, MPI_Count, 0)

#define NONBLOCKING_SEND(NAME, LOWER, ID, INT_F, C_F, COUNT_T, SYNC)                     \
    __attribute__((used)) static int mana_w_##NAME(const void *buf, COUNT_T count, MPI_Datatype dt, int dest, \
                                                   int tag, MPI_Comm comm, MPI_Request *request) \
    {                                                                                    \
        MPI_Request r = MPI_REQUEST_NULL;                                                \
        int slot = 0;                                                                    \
        int rc = post_send(INT_F(ID, LOWER), C_F(ID, LOWER), buf, count, dt, dest, tag, comm, &r, NULL, NULL, \
                           SYNC ? &slot : NULL);                                         \
        if (rc != MPI_SUCCESS)                                                           \
            return rc;                                                                   \
        new_request(r, MANA_REQ_SEND, comm, dest, 0, request);                           \
        if (slot)                                                                        \
            sync_request(*request, slot);                                                \
        return MPI_SUCCESS;                                                              \
    }                                                                                    \
    MANA_EXPORT(mana_w_##NAME, NAME)                                                     \
    MANA_EXPORT(mana_w_##NAME, P##NAME)

NONBLOCKING_SEND(MPI_Isend, "PMPI_Isend", 4220, LOWER_FN, NONE, int, 0)
NONBLOCKING_SEND(MPI_Isend_c, "PMPI_Isend_c", 4221, NONE, LOWER_FN, MPI_Count, 0)
NONBLOCKING_SEND(MPI_Issend, "PMPI_Issend", 4222, LOWER_FN, NONE, int, 1)
NONBLOCKING_SEND(MPI_Issend_c, "PMPI_Issend_c", 4223, NONE, LOWER_FN, MPI_Count, 1)
NONBLOCKING_SEND(MPI_Ibsend, "PMPI_Ibsend", 4224, LOWER_FN, NONE, int, 0)
NONBLOCKING_SEND(MPI_Ibsend_c, "PMPI_Ibsend_c", 4225, NONE, LOWER_FN, MPI_Count, 0)
NONBLOCKING_SEND(MPI_Irsend, "PMPI_Irsend", 4226, LOWER_FN, NONE, int, 0)
NONBLOCKING_SEND(MPI_Irsend_c, "PMPI_Irsend_c", 4227, NONE, LOWER_FN, MPI_Count, 0)

static void recv_args(MPI_Request v, void *buf, MPI_Count count, MPI_Datatype dt, int tag);

/* A persistent send or receive (MPI_*_init): created in the lower half, its arguments
 * kept (MPI_Start may serve a receive from drained messages; a restart creates either
 * again). Sends are counted at every MPI_Start. */
static int p2p_init(struct lower_fn *lf, struct lower_fn *lfc, int kind, void *buf, MPI_Count count,
                    MPI_Datatype dt, int peer, int tag, MPI_Comm comm, MPI_Request *request)
{
    MPI_Request r = MPI_REQUEST_NULL;
    mana_gate_enter();
    MPI_Comm c = mana_h_real(comm);
    MPI_Datatype t = mana_h_real(dt);
    unsigned long fs = mana_thread_lower_fs();
    void *f = lf ? lower_get(lf, fs) : lower_get(lfc, fs);
    unsigned long up = mana_enter_lower(fs);
    int rc;
    if (kind == MANA_REQ_SEND)
        rc = lf ? ((isend_fn)f)(buf, (int)count, t, peer, tag, c, &r) : ((isend_c_fn)f)(buf, count, t, peer, tag, c, &r);
    else
        rc = lf ? ((irecv_fn)f)(buf, (int)count, t, peer, tag, c, &r) : ((irecv_c_fn)f)(buf, count, t, peer, tag, c, &r);
    mana_leave_lower(up);
    mana_gate_leave();
    if (rc != MPI_SUCCESS)
        return rc;
    new_request(r, kind, comm, peer, 1, request);
    recv_args(*request, buf, count, dt, tag);
    return rc;
}

static int send_init(struct lower_fn *lf, struct lower_fn *lfc, int mode, const void *buf, MPI_Count count,
                     MPI_Datatype dt, int dest, int tag, MPI_Comm comm, MPI_Request *request)
{
    int rc = p2p_init(lf, lfc, MANA_REQ_SEND, (void *)buf, count, dt, dest, tag, comm, request);
    struct mana_req_meta *m = rc == MPI_SUCCESS ? mana_req_meta(*request) : NULL;
    if (m)
        m->send_mode = (unsigned char)mode;
    return rc;
}

#define PERSISTENT_SEND(NAME, LOWER, ID, INT_F, C_F, COUNT_T)                            \
    __attribute__((used)) static int mana_w_##NAME(const void *buf, COUNT_T count, MPI_Datatype dt, int dest, \
                                                   int tag, MPI_Comm comm, MPI_Request *request) \
    {                                                                                    \
        return send_init(INT_F(ID, LOWER), C_F(ID, LOWER), (ID - 4230) / 2, buf, count, dt, dest, tag, comm, \
                         request);                                                       \
    }                                                                                    \
    MANA_EXPORT(mana_w_##NAME, NAME)                                                     \
    MANA_EXPORT(mana_w_##NAME, P##NAME)

PERSISTENT_SEND(MPI_Send_init, "PMPI_Send_init", 4230, LOWER_FN, NONE, int)
PERSISTENT_SEND(MPI_Send_init_c, "PMPI_Send_init_c", 4231, NONE, LOWER_FN, MPI_Count)
PERSISTENT_SEND(MPI_Ssend_init, "PMPI_Ssend_init", 4232, LOWER_FN, NONE, int)
PERSISTENT_SEND(MPI_Ssend_init_c, "PMPI_Ssend_init_c", 4233, NONE, LOWER_FN, MPI_Count)
PERSISTENT_SEND(MPI_Bsend_init, "PMPI_Bsend_init", 4234, LOWER_FN, NONE, int)
PERSISTENT_SEND(MPI_Bsend_init_c, "PMPI_Bsend_init_c", 4235, NONE, LOWER_FN, MPI_Count)
PERSISTENT_SEND(MPI_Rsend_init, "PMPI_Rsend_init", 4236, LOWER_FN, NONE, int)
PERSISTENT_SEND(MPI_Rsend_init_c, "PMPI_Rsend_init_c", 4237, NONE, LOWER_FN, MPI_Count)

/* ---- Receives ----
 *
 * Messages drained at a checkpoint come first (DRAIN.md §2.6). A receive checks them while
 * it holds the gate, right before it posts to the lower half: the drain runs with the
 * gate closed, so a message is either drained before the check or still in the lower half
 * when the receive is posted — never lost between the two. */

/* Holding the gate: the earliest drained message for (comm, src, tag), taken. */
static struct mana_drained *drained_locked(int comm, int src, int tag)
{
    if (src == MPI_PROC_NULL || !__atomic_load_n(&mana_drained_head, __ATOMIC_ACQUIRE))
        return NULL;
    return mana_drained_match(comm, src, tag, 1);
}

/* Posts a receive with `f` (int count) or `fc` (MPI_Count), unless a drained message
 * matches (*hit, nothing posted). With `b` (blocking receives), registers it there and
 * goes on testing it in the same crossing. */
static int post_recv(struct lower_fn *lf, struct lower_fn *lfc, void *buf, MPI_Count count, MPI_Datatype dt, int src,
                     int tag, MPI_Comm comm, MPI_Request *r, struct mana_blocking *b, int *pending,
                     struct mana_drained **hit)
{
    struct mana_gate_slot *g = my_slot();
    mana_gate_enter();
    if ((*hit = drained_locked(comm, src, tag))) {
        mana_gate_leave();
        return MPI_SUCCESS;
    }
    MPI_Comm c = mana_h_real(comm);
    MPI_Datatype t = mana_h_real(dt);
    unsigned long fs = mana_thread_lower_fs();
    test_fn test = b ? (test_fn)lower_get(LOWER_FN(4202, "PMPI_Test"), fs) : NULL;
    irecv_fn f = lf ? (irecv_fn)lower_get(lf, fs) : NULL;
    irecv_c_fn fc = lfc ? (irecv_c_fn)lower_get(lfc, fs) : NULL;
    unsigned long up = mana_enter_lower(fs);
    int rc = f ? f(buf, (int)count, t, src, tag, c, r) : fc(buf, count, t, src, tag, c, r);
    mana_leave_lower(up);
    if (rc == MPI_SUCCESS && b) {
        blk_add(g, b, *r, comm, 1, buf, count, dt, src, tag);
        up = mana_enter_lower(fs);
        *pending = blk_spin(b, test, &rc);
        mana_leave_lower(up);
        blk_settle(g, b, rc != MPI_SUCCESS ? 0 : *pending);
    }
    mana_gate_leave();
    return rc;
}

/* A drained message delivered to a blocking receive. */
static int deliver_to(struct mana_drained *d, void *buf, MPI_Count count, MPI_Datatype dt, MPI_Comm comm,
                      MPI_Status *status)
{
    MPI_Status st;
    mana_status_copy(&st, mana_status_ignored(status) ? &st : status);
    int rc = mana_drained_deliver(d, buf, count, dt, comm, &st);
    if (!mana_status_ignored(status))
        mana_status_copy(status, &st);
    return rc;
}

/* A drained message delivered to a nonblocking receive: an already completed request. Its
 * error (MPI_ERR_TRUNCATE) is the request's, reported by the wait or test, as MPI's
 * MPI_Irecv/MPI_Imrecv succeed and the completion fails. */
static int deliver_request(struct mana_drained *d, void *buf, MPI_Count count, MPI_Datatype dt, MPI_Comm comm,
                           int src, MPI_Request *request)
{
    struct mana_req_meta *m;
    int v = mana_req_placeholder(&m);
    m->kind = MANA_REQ_RECV;
    m->comm = comm;
    m->peer = src;
    empty_status(&m->status);
    m->error = mana_drained_deliver(d, buf, count, dt, comm, &m->status);
    m->state = MANA_REQ_DONE;
    *request = v;
    return MPI_SUCCESS;
}

/* A blocking receive whose request is registered in `b` (entry `i`): waits for it and
 * fills the application's status (MPI_ERROR as the application had it). */
static int finish_blocking_recv(int rc, int pending, struct mana_blocking *b, int i, MPI_Status *status,
                                const MPI_Status *app_in)
{
    if (rc == MPI_SUCCESS && pending)
        rc = blk_wait(b);
    if (!mana_status_ignored(status)) {
        int err = app_in->MPI_ERROR;
        mana_status_copy(status, &b->st[i]);
        status->MPI_ERROR = err;
    }
    return rc;
}

static int recv_common(struct lower_fn *f, struct lower_fn *fc, void *buf, MPI_Count count, MPI_Datatype dt, int src, int tag,
                       MPI_Comm comm, MPI_Status *status)
{
    struct mana_blocking b = {0};
    MPI_Status in;
    mana_status_copy(&in, mana_status_ignored(status) ? &in : status);
    MPI_Request r = MPI_REQUEST_NULL;
    struct mana_drained *hit;
    int pending = 0;
    int rc = post_recv(f, fc, buf, count, dt, src, tag, comm, &r, &b, &pending, &hit);
    if (hit)
        return deliver_to(hit, buf, count, dt, comm, status);
    if (rc != MPI_SUCCESS)
        return rc;
    return finish_blocking_recv(rc, pending, &b, 0, status, &in);
}

__attribute__((used)) static int mana_w_MPI_Recv(void *buf, int count, MPI_Datatype dt, int src, int tag,
                                                 MPI_Comm comm, MPI_Status *status)
{
    return recv_common(LOWER_FN(4240, "PMPI_Irecv"), NULL, buf, count, dt, src, tag, comm, status);
}
MANA_EXPORT(mana_w_MPI_Recv, MPI_Recv)
MANA_EXPORT(mana_w_MPI_Recv, PMPI_Recv)

__attribute__((used)) static int mana_w_MPI_Recv_c(void *buf, MPI_Count count, MPI_Datatype dt, int src, int tag,
                                                   MPI_Comm comm, MPI_Status *status)
{
    return recv_common(NULL, LOWER_FN(4241, "PMPI_Irecv_c"), buf, count, dt, src, tag, comm, status);
}
MANA_EXPORT(mana_w_MPI_Recv_c, MPI_Recv_c)
MANA_EXPORT(mana_w_MPI_Recv_c, PMPI_Recv_c)

/* A receive request keeps its arguments (and its posting order): a persistent one may be
 * served from drained messages at MPI_Start; a pending one is posted again at restart. */
unsigned long long mana_next_posted(void)
{
    static unsigned long long posted;
    return __atomic_add_fetch(&posted, 1, __ATOMIC_RELAXED);
}

static void recv_args(MPI_Request v, void *buf, MPI_Count count, MPI_Datatype dt, int tag)
{
    struct mana_req_meta *m = mana_req_meta(v);
    if (m) {
        m->buf = buf;
        m->count = count;
        hold_datatype(m, dt);
        m->tag = tag;
        m->posted = mana_next_posted();
    }
}

void mana_req_replayable(int v, int (*replay)(const void *, MPI_Request *), const void *args, size_t size)
{
    mana_req_replayable_types(v, replay, args, size, NULL, NULL, 0);
}

void mana_req_replayable_types(int v, int (*replay)(const void *, MPI_Request *), const void *args, size_t size,
                               const MPI_Datatype *const *types, const size_t *n, int arrays)
{
    struct mana_req_meta *m = mana_req_meta(v);
    size_t total = size + (size_t)arrays * sizeof(size_t);
    for (int k = 0; k < arrays; k++)
        total += n[k] * sizeof(MPI_Datatype);
    char *copy = malloc(total);
    if (!m || !copy) {
        free(copy);
        return;
    }
    memcpy(copy, args, size);
    if (arrays)
        memcpy(copy + size, n, (size_t)arrays * sizeof(size_t));
    MPI_Datatype *t = (MPI_Datatype *)(copy + size + (size_t)arrays * sizeof(size_t));
    for (int k = 0; k < arrays; k++) {
        if (n[k])
            memcpy(t, types[k], n[k] * sizeof(MPI_Datatype));
        t += n[k];
    }
    m->replay = replay;
    m->replay_args = copy;
    m->posted = mana_next_posted();
}

static int irecv_common(struct lower_fn *f, struct lower_fn *fc, void *buf, MPI_Count count, MPI_Datatype dt, int src, int tag,
                        MPI_Comm comm, MPI_Request *request)
{
    MPI_Request r = MPI_REQUEST_NULL;
    struct mana_drained *hit;
    int rc = post_recv(f, fc, buf, count, dt, src, tag, comm, &r, NULL, NULL, &hit);
    if (hit)
        return deliver_request(hit, buf, count, dt, comm, src, request);
    if (rc != MPI_SUCCESS)
        return rc;
    new_request(r, MANA_REQ_RECV, comm, src, 0, request);
    recv_args(*request, buf, count, dt, tag);
    return rc;
}

__attribute__((used)) static int mana_w_MPI_Irecv(void *buf, int count, MPI_Datatype dt, int src, int tag,
                                                  MPI_Comm comm, MPI_Request *request)
{
    return irecv_common(LOWER_FN(4242, "PMPI_Irecv"), NULL, buf, count, dt, src, tag, comm, request);
}
MANA_EXPORT(mana_w_MPI_Irecv, MPI_Irecv)
MANA_EXPORT(mana_w_MPI_Irecv, PMPI_Irecv)

__attribute__((used)) static int mana_w_MPI_Irecv_c(void *buf, MPI_Count count, MPI_Datatype dt, int src, int tag,
                                                    MPI_Comm comm, MPI_Request *request)
{
    return irecv_common(NULL, LOWER_FN(4243, "PMPI_Irecv_c"), buf, count, dt, src, tag, comm,
                        request);
}
MANA_EXPORT(mana_w_MPI_Irecv_c, MPI_Irecv_c)
MANA_EXPORT(mana_w_MPI_Irecv_c, PMPI_Irecv_c)


__attribute__((used)) static int mana_w_MPI_Recv_init(void *buf, int count, MPI_Datatype dt, int src, int tag,
                                                      MPI_Comm comm, MPI_Request *request)
{
    return p2p_init(LOWER_FN(4244, "PMPI_Recv_init"), NULL, MANA_REQ_RECV, buf, count, dt, src, tag, comm,
                            request);
}
MANA_EXPORT(mana_w_MPI_Recv_init, MPI_Recv_init)
MANA_EXPORT(mana_w_MPI_Recv_init, PMPI_Recv_init)

__attribute__((used)) static int mana_w_MPI_Recv_init_c(void *buf, MPI_Count count, MPI_Datatype dt, int src,
                                                        int tag, MPI_Comm comm, MPI_Request *request)
{
    return p2p_init(NULL, LOWER_FN(4245, "PMPI_Recv_init_c"), MANA_REQ_RECV, buf, count, dt, src, tag, comm,
                            request);
}
MANA_EXPORT(mana_w_MPI_Recv_init_c, MPI_Recv_init_c)
MANA_EXPORT(mana_w_MPI_Recv_init_c, PMPI_Recv_init_c)

/* ---- Matched probes and receives ----
 * A message handle names a message the lower half holds; MANA remembers the communicator
 * it was probed on (for counting its receive) and the probe's status. A checkpoint's drain
 * receives every such message into the upper half (mana_drain_matched): the application's
 * MPI_Mrecv/Imrecv on the handle then gets it from there, before or after a restart. */

#define MANA_MSG_COMMS 4096
static struct {
    int msg, comm;
    MPI_Status st;             /* the lower half's status from the probe */
    struct mana_drained *data; /* once drained */
} msg_comm[MANA_MSG_COMMS];

/* `data`: the drained message itself, when the probe matched one already in the upper half. */
static void remember_msg_comm(int msg, int comm, const MPI_Status *st, struct mana_drained *data)
{
    for (int i = 0; i < MANA_MSG_COMMS; i++)
        if (__sync_bool_compare_and_swap(&msg_comm[i].msg, 0, msg)) {
            msg_comm[i].comm = comm;
            msg_comm[i].st = *st;
            msg_comm[i].data = data;
            return;
        }
}

/* A matched probe that finds a drained message: the message leaves the drained list (no
 * other receive may take it) and the application gets a message handle with no lower-half
 * object behind it, which MPI_Mrecv/Imrecv serve from the upper half. MPICH's Mprobe leaves
 * MPI_ERROR alone, so `st` keeps it. */
static int probe_drained(struct mana_drained *d, int comm, MPI_Status *st)
{
    struct mana_req_meta *m;
    int v = mana_req_placeholder(&m);
    m->kind = MANA_REQ_RECV;
    m->comm = comm;
    m->state = MANA_REQ_DONE;
    mana_drained_status(d, st);
    remember_msg_comm(v, comm, st, d);
    return v;
}

/* The communicator message `msg` was probed on (and its drained copy, if any), forgotten. */
static int take_msg_comm(int msg, struct mana_drained **data)
{
    for (int i = 0; i < MANA_MSG_COMMS; i++)
        if (msg_comm[i].msg == msg) {
            int c = msg_comm[i].comm;
            *data = msg_comm[i].data;
            __atomic_store_n(&msg_comm[i].msg, 0, __ATOMIC_RELEASE);
            return c;
        }
    *data = NULL;
    return MPI_COMM_NULL;
}

int mana_drain_matched(void)
{
    int n = 0;
    for (int i = 0; i < MANA_MSG_COMMS; i++) {
        int v = msg_comm[i].msg;
        if (!v || msg_comm[i].data)
            continue;
        MPI_Message real = mana_h_real(v);
        MPI_Status st = msg_comm[i].st;
        msg_comm[i].data = mana_drained_take(&real, &st, msg_comm[i].comm);
        /* The handle stays the application's; nothing of it is left in the lower half. */
        struct mana_req_meta *m = mana_req_meta(v);
        if (m)
            m->state = MANA_REQ_DONE;
        n++;
    }
    return n;
}

/* Posts Imrecv for the application's message handle; with `b`, registers and tests it. */
static int post_mrecv(struct lower_fn *lf, int large, void *buf, MPI_Count count, MPI_Datatype dt,
                      MPI_Message *message, MPI_Request *r, int *comm, struct mana_blocking *b, int *pending,
                      struct mana_drained **drained_out)
{
    *drained_out = NULL;
    struct mana_gate_slot *g = my_slot();
    mana_gate_enter();
    MPI_Message v = *message, real = mana_h_real(v), m = real;
    MPI_Datatype t = mana_h_real(dt);
    struct mana_drained *drained = NULL;
    *comm = v == MPI_MESSAGE_NO_PROC ? MPI_COMM_NULL : take_msg_comm(v, &drained);
    if (drained) { /* a checkpoint's drain received it */
        *drained_out = drained;
        mana_gate_leave();
        mana_req_release(v);
        *message = MPI_MESSAGE_NULL;
        return MPI_SUCCESS;
    }
    unsigned long fs = mana_thread_lower_fs();
    test_fn test = b ? (test_fn)lower_get(LOWER_FN(4203, "PMPI_Test"), fs) : NULL;
    void *f = lower_get(lf, fs);
    unsigned long up = mana_enter_lower(fs);
    int rc = large ? ((imrecv_c_fn)f)(buf, count, t, &m, r) : ((imrecv_fn)f)(buf, (int)count, t, &m, r);
    mana_leave_lower(up);
    if (rc == MPI_SUCCESS && b) {
        blk_add(g, b, *r, *comm, 1, buf, count, dt, MPI_ANY_SOURCE, MANA_NO_REPOST);
        up = mana_enter_lower(fs);
        *pending = blk_spin(b, test, &rc);
        mana_leave_lower(up);
        blk_settle(g, b, rc != MPI_SUCCESS ? 0 : *pending);
    }
    mana_gate_leave();
    *message = mana_h_inout_done(v, real, m);
    return rc;
}

static int mrecv_common(struct lower_fn *f, int large, void *buf, MPI_Count count, MPI_Datatype dt, MPI_Message *message,
                        MPI_Status *status)
{
    struct mana_blocking b = {0};
    MPI_Status in;
    mana_status_copy(&in, mana_status_ignored(status) ? &in : status);
    MPI_Request r = MPI_REQUEST_NULL;
    int comm, pending = 0;
    struct mana_drained *drained;
    int rc = post_mrecv(f, large, buf, count, dt, message, &r, &comm, &b, &pending, &drained);
    if (drained)
        return deliver_to(drained, buf, count, dt, comm, status);
    if (rc != MPI_SUCCESS)
        return rc;
    return finish_blocking_recv(rc, pending, &b, 0, status, &in);
}

__attribute__((used)) static int mana_w_MPI_Mrecv(void *buf, int count, MPI_Datatype dt, MPI_Message *message,
                                                  MPI_Status *status)
{
    return mrecv_common(LOWER_FN(4250, "PMPI_Imrecv"), 0, buf, count, dt, message, status);
}
MANA_EXPORT(mana_w_MPI_Mrecv, MPI_Mrecv)
MANA_EXPORT(mana_w_MPI_Mrecv, PMPI_Mrecv)

__attribute__((used)) static int mana_w_MPI_Mrecv_c(void *buf, MPI_Count count, MPI_Datatype dt,
                                                    MPI_Message *message, MPI_Status *status)
{
    return mrecv_common(LOWER_FN(4251, "PMPI_Imrecv_c"), 1, buf, count, dt, message, status);
}
MANA_EXPORT(mana_w_MPI_Mrecv_c, MPI_Mrecv_c)
MANA_EXPORT(mana_w_MPI_Mrecv_c, PMPI_Mrecv_c)

__attribute__((used)) static int mana_w_MPI_Imrecv(void *buf, int count, MPI_Datatype dt, MPI_Message *message,
                                                   MPI_Request *request)
{
    MPI_Request r = MPI_REQUEST_NULL;
    int comm;
    struct mana_drained *drained;
    int rc =
        post_mrecv(LOWER_FN(4252, "PMPI_Imrecv"), 0, buf, count, dt, message, &r, &comm, NULL, NULL, &drained);
    if (drained)
        return deliver_request(drained, buf, count, dt, comm, MPI_ANY_SOURCE, request);
    if (rc == MPI_SUCCESS) {
        new_request(r, MANA_REQ_RECV, comm, MPI_ANY_SOURCE, 0, request);
        recv_args(*request, buf, count, dt, MANA_NO_REPOST);
    }
    return rc;
}
MANA_EXPORT(mana_w_MPI_Imrecv, MPI_Imrecv)
MANA_EXPORT(mana_w_MPI_Imrecv, PMPI_Imrecv)

__attribute__((used)) static int mana_w_MPI_Imrecv_c(void *buf, MPI_Count count, MPI_Datatype dt,
                                                     MPI_Message *message, MPI_Request *request)
{
    MPI_Request r = MPI_REQUEST_NULL;
    int comm;
    struct mana_drained *drained;
    int rc = post_mrecv(LOWER_FN(4253, "PMPI_Imrecv_c"), 1, buf, count, dt, message, &r, &comm, NULL, NULL,
                        &drained);
    if (drained)
        return deliver_request(drained, buf, count, dt, comm, MPI_ANY_SOURCE, request);
    if (rc == MPI_SUCCESS) {
        new_request(r, MANA_REQ_RECV, comm, MPI_ANY_SOURCE, 0, request);
        recv_args(*request, buf, count, dt, MANA_NO_REPOST);
    }
    return rc;
}
MANA_EXPORT(mana_w_MPI_Imrecv_c, MPI_Imrecv_c)
MANA_EXPORT(mana_w_MPI_Imrecv_c, PMPI_Imrecv_c)

/* ---- Probes: drained messages first (checked under the gate, like receives) ---- */

static int probe_common(int blocking, int src, int tag, MPI_Comm comm, int *flag, MPI_Status *status)
{
    struct lower_fn *lf = LOWER_FN(4260, "PMPI_Iprobe");
    MPI_Status st;
    mana_status_copy(&st, mana_status_ignored(status) ? &st : status);
    int rc = MPI_SUCCESS;
    *flag = 0;
    for (;;) {
        mana_gate_enter();
        unsigned long fs = mana_thread_lower_fs();
        iprobe_fn f = (iprobe_fn)lower_get(lf, fs);
        MPI_Comm c = mana_h_real(comm);
        struct mana_drained *d = src == MPI_PROC_NULL ? NULL : mana_drained_match(comm, src, tag, 0);
        if (d) {
            mana_drained_status(d, &st);
            st.MPI_ERROR = MPI_SUCCESS;
            *flag = 1;
        } else {
            unsigned long up = mana_enter_lower(fs);
            for (int i = 0; i < (blocking ? MANA_SPIN : 1); i++) {
                rc = f(src, tag, c, flag, &st);
                if (rc != MPI_SUCCESS || *flag || mana_gate_closed)
                    break;
            }
            mana_leave_lower(up);
        }
        mana_gate_leave();
        if (rc != MPI_SUCCESS || *flag || !blocking)
            break;
    }
    if (!mana_status_ignored(status))
        mana_status_copy(status, &st);
    return rc;
}

__attribute__((used)) static int mana_w_MPI_Iprobe(int src, int tag, MPI_Comm comm, int *flag, MPI_Status *status)
{
    return probe_common(0, src, tag, comm, flag, status);
}
MANA_EXPORT(mana_w_MPI_Iprobe, MPI_Iprobe)
MANA_EXPORT(mana_w_MPI_Iprobe, PMPI_Iprobe)

__attribute__((used)) static int mana_w_MPI_Probe(int src, int tag, MPI_Comm comm, MPI_Status *status)
{
    int flag;
    return probe_common(1, src, tag, comm, &flag, status);
}
MANA_EXPORT(mana_w_MPI_Probe, MPI_Probe)
MANA_EXPORT(mana_w_MPI_Probe, PMPI_Probe)

static int improbe_common(int blocking, int src, int tag, MPI_Comm comm, int *flag, MPI_Message *message,
                          MPI_Status *status)
{
    struct lower_fn *lf = LOWER_FN(4262, "PMPI_Improbe");
    MPI_Status st;
    mana_status_copy(&st, mana_status_ignored(status) ? &st : status);
    MPI_Message m = MPI_MESSAGE_NULL;
    int rc = MPI_SUCCESS;
    *flag = 0;
    for (;;) {
        mana_gate_enter();
        unsigned long fs = mana_thread_lower_fs();
        improbe_fn f = (improbe_fn)lower_get(lf, fs);
        MPI_Comm c = mana_h_real(comm);
        struct mana_drained *d = src == MPI_PROC_NULL ? NULL : mana_drained_match(comm, src, tag, 1);
        if (d) {
            *message = probe_drained(d, comm, &st);
            *flag = 1;
            mana_gate_leave();
            break;
        }
        unsigned long up = mana_enter_lower(fs);
        for (int i = 0; i < (blocking ? MANA_SPIN : 1); i++) {
            rc = f(src, tag, c, flag, &m, &st);
            if (rc != MPI_SUCCESS || *flag || mana_gate_closed)
                break;
        }
        mana_leave_lower(up);
        /* Recorded before the gate opens: a checkpoint's drain must find every matched
         * message (mana_drain_matched). */
        if (rc == MPI_SUCCESS && *flag) {
            *message = mana_h_virtual(m);
            if (m != MPI_MESSAGE_NO_PROC)
                remember_msg_comm(*message, comm, &st, NULL);
        }
        mana_gate_leave();
        if (rc != MPI_SUCCESS || *flag || !blocking)
            break;
    }
    if (rc == MPI_SUCCESS && *flag && !mana_status_ignored(status))
        mana_status_copy(status, &st);
    return rc;
}

__attribute__((used)) static int mana_w_MPI_Improbe(int src, int tag, MPI_Comm comm, int *flag, MPI_Message *message,
                                                    MPI_Status *status)
{
    return improbe_common(0, src, tag, comm, flag, message, status);
}
MANA_EXPORT(mana_w_MPI_Improbe, MPI_Improbe)
MANA_EXPORT(mana_w_MPI_Improbe, PMPI_Improbe)

__attribute__((used)) static int mana_w_MPI_Mprobe(int src, int tag, MPI_Comm comm, MPI_Message *message,
                                                   MPI_Status *status)
{
    int flag;
    return improbe_common(1, src, tag, comm, &flag, message, status);
}
MANA_EXPORT(mana_w_MPI_Mprobe, MPI_Mprobe)
MANA_EXPORT(mana_w_MPI_Mprobe, PMPI_Mprobe)

/* ---- Send-receive ---- */

static int sendrecv_common(const void *sbuf, MPI_Count scount, MPI_Datatype stype, int dest, int stag, void *rbuf,
                           MPI_Count rcount, MPI_Datatype rtype, int src, int rtag, MPI_Comm comm,
                           MPI_Status *status)
{
    struct lower_fn *isend = LOWER_FN(4270, "PMPI_Isend_c");
    struct lower_fn *irecv = LOWER_FN(4271, "PMPI_Irecv_c");
    struct mana_blocking b = {0};
    MPI_Status in;
    mana_status_copy(&in, mana_status_ignored(status) ? &in : status);
    MPI_Request r[2] = {MPI_REQUEST_NULL, MPI_REQUEST_NULL};
    struct mana_drained *hit;
    int pending = 0;
    int rc = post_recv(NULL, irecv, rbuf, rcount, rtype, src, rtag, comm, &r[0], &b, &pending, &hit);
    if (rc != MPI_SUCCESS)
        return rc;
    if (hit) {
        rc = deliver_to(hit, rbuf, rcount, rtype, comm, &in);
        if (rc != MPI_SUCCESS)
            return rc;
        rc = post_send(NULL, isend, sbuf, scount, stype, dest, stag, comm, &r[1], &b, &pending, NULL);
        if (rc == MPI_SUCCESS && pending)
            rc = blk_wait(&b);
        if (!mana_status_ignored(status))
            mana_status_copy(status, &in);
        return rc;
    }
    rc = post_send(NULL, isend, sbuf, scount, stype, dest, stag, comm, &r[1], &b, &pending, NULL);
    if (rc != MPI_SUCCESS)
        return rc;
    return finish_blocking_recv(rc, 1, &b, 0, status, &in);
}

__attribute__((used)) static int mana_w_MPI_Sendrecv(const void *sbuf, int scount, MPI_Datatype stype, int dest,
                                                     int stag, void *rbuf, int rcount, MPI_Datatype rtype, int src,
                                                     int rtag, MPI_Comm comm, MPI_Status *status)
{
    return sendrecv_common(sbuf, scount, stype, dest, stag, rbuf, rcount, rtype, src, rtag, comm, status);
}
MANA_EXPORT(mana_w_MPI_Sendrecv, MPI_Sendrecv)
MANA_EXPORT(mana_w_MPI_Sendrecv, PMPI_Sendrecv)

__attribute__((used)) static int mana_w_MPI_Sendrecv_c(const void *sbuf, MPI_Count scount, MPI_Datatype stype,
                                                       int dest, int stag, void *rbuf, MPI_Count rcount,
                                                       MPI_Datatype rtype, int src, int rtag, MPI_Comm comm,
                                                       MPI_Status *status)
{
    return sendrecv_common(sbuf, scount, stype, dest, stag, rbuf, rcount, rtype, src, rtag, comm, status);
}
MANA_EXPORT(mana_w_MPI_Sendrecv_c, MPI_Sendrecv_c)
MANA_EXPORT(mana_w_MPI_Sendrecv_c, PMPI_Sendrecv_c)

/* Packs `count` elements of `dt` at `buf` into a malloc'd copy (*tmp, *bytes): the send
 * side of a send-receive in place goes out of it, so the receive can land in the buffer. */
static int pack_copy(const void *buf, MPI_Count count, MPI_Datatype dt, MPI_Comm comm, void **tmp, int *bytes)
{
    if (count > 0x7fffffff)
        return mana_unsupported("MPI_Sendrecv_replace_c with more than 2^31-1 elements");
    MPI_Comm c = mana_h_real(comm);
    MPI_Datatype t = mana_h_real(dt);
    int size = 0, pos = 0, rc;
    {
        MANA_FORWARD_INTO(rc, 4272, "PMPI_Pack_size", int, (int, MPI_Datatype, MPI_Comm, int *),
                          ((int)count, t, c, &size));
    }
    if (rc != MPI_SUCCESS)
        return rc;
    *tmp = malloc(size > 0 ? (size_t)size : 1);
    if (!*tmp)
        return MPI_ERR_NO_MEM;
    /* MPI_BOTTOM (Fortran's too) with absolute addresses in the datatype: MPICH's MPI_Pack
     * refuses a NULL input buffer, so pack one element of a type that starts `anchor`
     * bytes below address 0 from `anchor`. */
    static const char anchor_byte;
    const void *from = buf;
    int n = (int)count, wrapped = 0;
    if (!buf && count > 0) {
        MPI_Aint disp = -(MPI_Aint)(uintptr_t)&anchor_byte;
        MPI_Datatype w = MPI_DATATYPE_NULL;
        MANA_FORWARD_INTO(rc, 4468, "PMPI_Type_create_struct", int,
                          (int, const int *, const MPI_Aint *, const MPI_Datatype *, MPI_Datatype *),
                          (1, &n, &disp, &t, &w));
        if (rc == MPI_SUCCESS) {
            MANA_FORWARD_INTO(rc, 4469, "PMPI_Type_commit", int, (MPI_Datatype *), (&w));
        }
        if (rc != MPI_SUCCESS) {
            free(*tmp);
            return rc;
        }
        from = &anchor_byte;
        n = 1;
        t = w;
        wrapped = 1;
    }
    {
        MANA_FORWARD_INTO(rc, 4273, "PMPI_Pack", int, (const void *, int, MPI_Datatype, void *, int, int *, MPI_Comm),
                          (from, n, t, *tmp, size, &pos, c));
    }
    if (wrapped) {
        int rf;
        MANA_FORWARD_INTO(rf, 4470, "PMPI_Type_free", int, (MPI_Datatype *), (&t));
        (void)rf;
    }
    if (rc != MPI_SUCCESS)
        free(*tmp);
    *bytes = pos;
    return rc;
}

static int sendrecv_replace_common(void *buf, MPI_Count count, MPI_Datatype dt, int dest, int stag, int src,
                                   int rtag, MPI_Comm comm, MPI_Status *status)
{
    void *tmp;
    int bytes;
    int rc = pack_copy(buf, count, dt, comm, &tmp, &bytes);
    if (rc != MPI_SUCCESS)
        return rc;
    rc = sendrecv_common(tmp, bytes, MPI_PACKED, dest, stag, buf, count, dt, src, rtag, comm, status);
    free(tmp);
    /* MPICH's MPI_Sendrecv_replace reports success in the status; MPI_Sendrecv does not. */
    if (rc == MPI_SUCCESS && !mana_status_ignored(status))
        status->MPI_ERROR = MPI_SUCCESS;
    return rc;
}

__attribute__((used)) static int mana_w_MPI_Sendrecv_replace(void *buf, int count, MPI_Datatype dt, int dest,
                                                             int stag, int src, int rtag, MPI_Comm comm,
                                                             MPI_Status *status)
{
    return sendrecv_replace_common(buf, count, dt, dest, stag, src, rtag, comm, status);
}
MANA_EXPORT(mana_w_MPI_Sendrecv_replace, MPI_Sendrecv_replace)
MANA_EXPORT(mana_w_MPI_Sendrecv_replace, PMPI_Sendrecv_replace)

__attribute__((used)) static int mana_w_MPI_Sendrecv_replace_c(void *buf, MPI_Count count, MPI_Datatype dt,
                                                               int dest, int stag, int src, int rtag, MPI_Comm comm,
                                                               MPI_Status *status)
{
    return sendrecv_replace_common(buf, count, dt, dest, stag, src, rtag, comm, status);
}
MANA_EXPORT(mana_w_MPI_Sendrecv_replace_c, MPI_Sendrecv_replace_c)
MANA_EXPORT(mana_w_MPI_Sendrecv_replace_c, PMPI_Sendrecv_replace_c)

/* ---- Nonblocking send-receive (MPI-4) ----
 * MPICH's MPI_Isendrecv(_replace) does the exchange (its request completes when both
 * halves have), with the bookkeeping of MPI_Isend and MPI_Irecv around it: the send is
 * counted when posted, the receive when the request completes (kind RECV: the drain counts
 * it as it counts a pending MPI_Irecv's). Before, neither was counted, and a job that
 * answered an MPI_Isendrecv with MPI_Recv/MPI_Send failed every later checkpoint ("a rank
 * received more messages than were sent to it"). One still pending when the drain ends
 * has its send half delivered — the send was counted, and the drain ends only when every
 * counted message has been received by its destination — and its receive half not
 * matched: had its message been sent before the checkpoint, the drain would have waited
 * for it, and it is counted only when the whole request completes, which the delivered
 * send half then allows. So a restart posts it again as the receive alone, as it does a
 * pending MPI_Irecv. A drained message that matches the receive is delivered at once
 * (the lower half would never see it) and only the send is posted. Its completion leaves
 * the status alone, as MPICH 4.0.2's MPI_Isendrecv does when the message had arrived
 * before the call (measured; when it arrives later MPICH zeroes source, tag and count —
 * the standard's receive status is in neither case). In place (_replace), the send goes
 * out of a packed copy (`send_copy`, freed when the request's handle is reused). */
typedef int (*isendrecv_c_fn)(const void *, MPI_Count, MPI_Datatype, int, int, void *, MPI_Count, MPI_Datatype, int,
                              int, MPI_Comm, MPI_Request *);
typedef int (*isendrecv_replace_c_fn)(void *, MPI_Count, MPI_Datatype, int, int, int, int, MPI_Comm, MPI_Request *);

static int isendrecv_drained(struct mana_drained *d, int replace, const void *sbuf, MPI_Count scount,
                             MPI_Datatype stype, int dest, int stag, void *rbuf, MPI_Count rcount,
                             MPI_Datatype rtype, MPI_Comm comm, MPI_Request *request)
{
    void *tmp = NULL;
    int bytes = 0, rc;
    if (replace) {
        rc = pack_copy(rbuf, rcount, rtype, comm, &tmp, &bytes);
        if (rc != MPI_SUCCESS)
            return rc;
        sbuf = tmp;
        scount = bytes;
        stype = MPI_PACKED;
    }
    MPI_Status st;
    empty_status(&st);
    rc = mana_drained_deliver(d, rbuf, rcount, rtype, comm, &st);
    MPI_Request r = MPI_REQUEST_NULL;
    if (rc == MPI_SUCCESS)
        rc = post_send(NULL, LOWER_FN(4631, "PMPI_Isend_c"), sbuf, scount, stype, dest, stag, comm, &r, NULL, NULL,
                       NULL);
    if (rc != MPI_SUCCESS) {
        free(tmp);
        return rc;
    }
    new_request(r, MANA_REQ_SEND, comm, dest, 0, request);
    struct mana_req_meta *m = mana_req_meta(*request);
    if (m)
        m->send_copy = tmp;
    else
        free(tmp);
    return MPI_SUCCESS;
}

static int isendrecv_common(int replace, const void *sbuf, MPI_Count scount, MPI_Datatype stype, int dest, int stag,
                            void *rbuf, MPI_Count rcount, MPI_Datatype rtype, int src, int rtag, MPI_Comm comm,
                            MPI_Request *request)
{
    mana_gate_enter();
    struct mana_drained *hit = drained_locked(comm, src, rtag);
    if (hit) {
        mana_gate_leave();
        return isendrecv_drained(hit, replace, sbuf, scount, stype, dest, stag, rbuf, rcount, rtype, comm, request);
    }
    MPI_Request r = MPI_REQUEST_NULL;
    MPI_Comm c = mana_h_real(comm);
    MPI_Datatype rt = mana_h_real(rtype);
    unsigned long fs = mana_thread_lower_fs(), up;
    int rc;
    if (replace) {
        isendrecv_replace_c_fn f =
            (isendrecv_replace_c_fn)lower_get(LOWER_FN(4632, "PMPI_Isendrecv_replace_c"), fs);
        up = mana_enter_lower(fs);
        rc = f(rbuf, rcount, rt, dest, stag, src, rtag, c, &r);
    } else {
        MPI_Datatype t = mana_h_real(stype);
        isendrecv_c_fn f = (isendrecv_c_fn)lower_get(LOWER_FN(4633, "PMPI_Isendrecv_c"), fs);
        up = mana_enter_lower(fs);
        rc = f(sbuf, scount, t, dest, stag, rbuf, rcount, rt, src, rtag, c, &r);
    }
    mana_leave_lower(up);
    if (rc == MPI_SUCCESS && dest != MPI_PROC_NULL) {
        mana_count_sent(comm, dest);
        mana_ssend_sent(comm, dest, stag);
    }
    mana_gate_leave();
    if (rc != MPI_SUCCESS)
        return rc;
    new_request(r, MANA_REQ_RECV, comm, src, 0, request);
    recv_args(*request, rbuf, rcount, rtype, rtag);
    return MPI_SUCCESS;
}

__attribute__((used)) static int mana_w_MPI_Isendrecv(const void *sbuf, int scount, MPI_Datatype stype, int dest,
                                                      int stag, void *rbuf, int rcount, MPI_Datatype rtype, int src,
                                                      int rtag, MPI_Comm comm, MPI_Request *request)
{
    return isendrecv_common(0, sbuf, scount, stype, dest, stag, rbuf, rcount, rtype, src, rtag, comm, request);
}
MANA_EXPORT(mana_w_MPI_Isendrecv, MPI_Isendrecv)
MANA_EXPORT(mana_w_MPI_Isendrecv, PMPI_Isendrecv)

__attribute__((used)) static int mana_w_MPI_Isendrecv_c(const void *sbuf, MPI_Count scount, MPI_Datatype stype,
                                                        int dest, int stag, void *rbuf, MPI_Count rcount,
                                                        MPI_Datatype rtype, int src, int rtag, MPI_Comm comm,
                                                        MPI_Request *request)
{
    return isendrecv_common(0, sbuf, scount, stype, dest, stag, rbuf, rcount, rtype, src, rtag, comm, request);
}
MANA_EXPORT(mana_w_MPI_Isendrecv_c, MPI_Isendrecv_c)
MANA_EXPORT(mana_w_MPI_Isendrecv_c, PMPI_Isendrecv_c)

__attribute__((used)) static int mana_w_MPI_Isendrecv_replace(void *buf, int count, MPI_Datatype dt, int dest,
                                                              int stag, int src, int rtag, MPI_Comm comm,
                                                              MPI_Request *request)
{
    return isendrecv_common(1, NULL, 0, dt, dest, stag, buf, count, dt, src, rtag, comm, request);
}
MANA_EXPORT(mana_w_MPI_Isendrecv_replace, MPI_Isendrecv_replace)
MANA_EXPORT(mana_w_MPI_Isendrecv_replace, PMPI_Isendrecv_replace)

__attribute__((used)) static int mana_w_MPI_Isendrecv_replace_c(void *buf, MPI_Count count, MPI_Datatype dt,
                                                                int dest, int stag, int src, int rtag,
                                                                MPI_Comm comm, MPI_Request *request)
{
    return isendrecv_common(1, NULL, 0, dt, dest, stag, buf, count, dt, src, rtag, comm, request);
}
MANA_EXPORT(mana_w_MPI_Isendrecv_replace_c, MPI_Isendrecv_replace_c)
MANA_EXPORT(mana_w_MPI_Isendrecv_replace_c, PMPI_Isendrecv_replace_c)

/* ---- Persistent requests: start ---- */

static int start_one(MPI_Request *v)
{
    struct mana_req_meta *m = mana_req_meta(*v);
    /* Starting a persistent collective initiates one (counted on its own: starts may come
     * in any order; a pending checkpoint may hold the thread here, outside the gate). */
    const int pcoll = m && m->kind == MANA_REQ_COLL && m->pcoll;
    if (pcoll)
        mana_pcoll_start(m->pcoll);
    mana_gate_enter();
    unsigned long fs = mana_thread_lower_fs();
    start_fn f = (start_fn)lower_get(LOWER_FN(4280, "PMPI_Start"), fs);
    /* A persistent receive a drained message satisfies completes at once. */
    struct mana_drained *d = m && m->kind == MANA_REQ_RECV ? drained_locked(m->comm, m->peer, m->tag) : NULL;
    if (d) {
        mana_gate_leave();
        m->error = mana_drained_deliver(d, m->buf, m->count, m->datatype, m->comm, &m->status);
        m->active = 0;
        m->state = MANA_REQ_DONE;
        return MPI_SUCCESS; /* MPI_Start succeeds; the wait or test reports the error */
    }
    MPI_Request real = mana_h_real(*v);
    unsigned long up = mana_enter_lower(fs);
    int rc = f(&real);
    mana_leave_lower(up);
    if (pcoll)
        mana_coll_leave(1);
    if (rc == MPI_SUCCESS && m) {
        m->active = 1;
        m->cancel = 0;
        if (m->kind == MANA_REQ_SEND && m->peer != MPI_PROC_NULL) {
            mana_count_sent(m->comm, m->peer);
            mana_ssend_sent(m->comm, m->peer, m->tag);
        }
    }
    mana_gate_leave();
    return rc;
}

__attribute__((used)) static int mana_w_MPI_Start(MPI_Request *request)
{
    return start_one(request);
}
MANA_EXPORT(mana_w_MPI_Start, MPI_Start)
MANA_EXPORT(mana_w_MPI_Start, PMPI_Start)

__attribute__((used)) static int mana_w_MPI_Startall(int count, MPI_Request requests[])
{
    for (int i = 0; i < count; i++) {
        int rc = start_one(&requests[i]);
        if (rc != MPI_SUCCESS)
            return rc;
    }
    return MPI_SUCCESS;
}
MANA_EXPORT(mana_w_MPI_Startall, MPI_Startall)
MANA_EXPORT(mana_w_MPI_Startall, PMPI_Startall)

/* ---- Completion ----
 *
 * Each attempt reads the application's requests afresh while holding the gate: between
 * two attempts the checkpointer may have completed some (MANA_REQ_DONE, answered from
 * their saved status; their real handles are gone). */

struct batch {
    MPI_Request *v, *before, *real;
    MPI_Status *st;
    int n, done; /* `done`: how many were completed by the checkpointer */
};

#define BATCH_SCRATCH                                                                    \
    MPI_Request s_before[MANA_TMP_INLINE], s_real[MANA_TMP_INLINE];                      \
    MPI_Status s_st[MANA_TMP_INLINE];                                                    \
    struct batch b

static int batch_alloc(struct batch *b, int n, MPI_Request *v, MPI_Request *s_before, MPI_Request *s_real,
                       MPI_Status *s_st)
{
    b->n = n;
    b->v = v;
    if (n <= MANA_TMP_INLINE) {
        b->before = s_before;
        b->real = s_real;
        b->st = s_st;
        return MPI_SUCCESS;
    }
    b->before = malloc((size_t)n * sizeof(MPI_Request));
    b->real = malloc((size_t)n * sizeof(MPI_Request));
    b->st = malloc((size_t)n * sizeof(MPI_Status));
    return b->before && b->real && b->st ? MPI_SUCCESS : MPI_ERR_NO_MEM;
}

static void batch_free(struct batch *b, MPI_Request *s_before)
{
    if (b->before != s_before) {
        free(b->before);
        free(b->real);
        free(b->st);
    }
}

/* Holding the gate: the real handles (MPI_REQUEST_NULL for requests the checkpointer
 * completed) and fresh scratch statuses (the application's, where it gave them: MPICH
 * leaves some fields alone, and so must we). */
static void batch_refresh(struct batch *b, MPI_Status *app_st)
{
    b->done = 0;
    for (int i = 0; i < b->n; i++) {
        int done = done_meta(b->v[i]) != NULL;
        b->before[i] = done ? MPI_REQUEST_NULL : mana_h_real(b->v[i]);
        b->done += done;
        b->real[i] = b->before[i];
        if (app_st)
            mana_status_copy(&b->st[i], &app_st[i]);
        else
            empty_status(&b->st[i]);
    }
}

/* Element i completed (by the lower half, or earlier by the checkpointer): the
 * application's handle and status. */
static void batch_complete(struct batch *b, int i, MPI_Status *app_st)
{
    struct mana_req_meta *m = b->done ? done_meta(b->v[i]) : NULL;
    if (m)
        completed_by_checkpoint(&b->v[i], m, &b->st[i]);
    else if (b->v[i] != MPI_REQUEST_NULL)
        completed(&b->v[i], b->before[i], b->real[i], &b->st[i]);
    if (app_st)
        mana_status_copy(app_st, &b->st[i]);
}

/* The result of a multiple-completion call over requests `idx` (NULL: all) of `b`, whose
 * lower call said `rc`: if the checkpointer completed one of them with an error (MPI freed
 * it then), MPI_ERR_IN_STATUS, with that error in its status and, when `rc` was success,
 * MPI_SUCCESS in the others'. */
static int done_errors(struct batch *b, const int *idx, int n, int rc)
{
    int failed = 0;
    for (int k = 0; b->done && k < n && !failed; k++) {
        struct mana_req_meta *m = done_meta(b->v[idx ? idx[k] : k]);
        failed = m && m->error;
    }
    if (!failed)
        return rc;
    for (int k = 0; k < n; k++) {
        const int i = idx ? idx[k] : k;
        struct mana_req_meta *m = done_meta(b->v[i]);
        if (m && m->error)
            b->st[i].MPI_ERROR = m->error;
        else if (rc == MPI_SUCCESS)
            b->st[i].MPI_ERROR = MPI_SUCCESS;
    }
    return MPI_ERR_IN_STATUS;
}

/* One attempt holding the gate; `attempt` returns the lower call's result and sets
 * *finished; it runs up to MANA_SPIN times (once when not blocking). */
#define ATTEMPTS(blocking, finished, rc, call)                                           \
    do {                                                                                 \
        for (;;) {                                                                       \
            mana_gate_enter();                                                           \
            unsigned long fs_ = mana_thread_lower_fs();                                  \
            call;                                                                        \
            mana_gate_leave();                                                           \
            if (rc != MPI_SUCCESS || finished || !(blocking))                            \
                break;                                                                   \
            (void)fs_;                                                                   \
        }                                                                                \
    } while (0)

static int wait_or_test(MPI_Request *request, int *flag, MPI_Status *status, int blocking)
{
    struct lower_fn *lt = LOWER_FN(4290, "PMPI_Test");
    MPI_Status st;
    int rc = MPI_SUCCESS, f = 0;
    for (;;) {
        if (mana_status_ignored(status))
            empty_status(&st);
        else
            mana_status_copy(&st, status);
        mana_gate_enter();
        unsigned long fs = mana_thread_lower_fs();
        test_fn test = (test_fn)lower_get(lt, fs);
        struct mana_req_meta *m = done_meta(*request);
        if (m) {
            const int err = m->error; /* MPI's error, as the call would have returned it */
            mana_gate_leave();
            completed_by_checkpoint(request, m, mana_status_ignored(status) ? NULL : status);
            *flag = 1;
            return err;
        }
        MPI_Request before = mana_h_real(*request), r = before;
        unsigned long up = mana_enter_lower(fs);
        for (int i = 0; i < (blocking ? MANA_SPIN : 1); i++) {
            rc = test(&r, &f, &st);
            if (rc != MPI_SUCCESS || f || mana_gate_closed)
                break;
        }
        mana_leave_lower(up);
        if (f)
            completed(request, before, r, &st);
        mana_gate_leave();
        if (rc != MPI_SUCCESS || f || !blocking)
            break;
    }
    *flag = f;
    if (!mana_status_ignored(status))
        mana_status_copy(status, &st);
    return rc;
}

__attribute__((used)) static int mana_w_MPI_Wait(MPI_Request *request, MPI_Status *status)
{
    int flag;
    return wait_or_test(request, &flag, status, 1);
}
MANA_EXPORT(mana_w_MPI_Wait, MPI_Wait)
MANA_EXPORT(mana_w_MPI_Wait, PMPI_Wait)

__attribute__((used)) static int mana_w_MPI_Test(MPI_Request *request, int *flag, MPI_Status *status)
{
    return wait_or_test(request, flag, status, 0);
}
MANA_EXPORT(mana_w_MPI_Test, MPI_Test)
MANA_EXPORT(mana_w_MPI_Test, PMPI_Test)

/* Whether any of the requests is one of ROMIO's (MPI-IO) generalized requests, a
 * persistent collective or a partitioned request. */
static int any_request_testall_fails(int count, const MPI_Request v[])
{
    for (int i = 0; i < count; i++) {
        struct mana_req_meta *m = v[i] != MPI_REQUEST_NULL ? mana_req_meta(v[i]) : NULL;
        if (m && (m->io || m->part || (m->kind == MANA_REQ_COLL && m->persistent)))
            return 1;
    }
    return 0;
}

/* MPI_Waitall over MPI-IO requests or persistent collectives: one request after the
 * other, each with MPI_Test (as MPI_Wait does). MPICH 4.0.2's MPI_Testall answers
 * MPI_ERR_IN_STATUS (MPI_ERR_PENDING in the status of a request not complete yet) while
 * persistent collectives are still running, natively too: its MPI_Waitall does not, and a
 * wait that spun on MPI_Testall failed (MPICH's suite, coll/p_order: MPI_Bcast_init and
 * MPI_Barrier_init started in opposite orders on two ranks, then MPI_Waitall). The other
 * waits spin on MPI_Testall, but with ROMIO's generalized
 * requests MPICH's MPI_Testall (and MPI_Testsome) loops fail natively too: ROMIO's poll
 * function for asynchronous I/O completes a finished request again each time it is
 * polled (MPICH asserts ref_count >= 0 once two requests finish apart), and its
 * nonblocking collective I/O never completes when every request is polled in turn
 * (io/i_hindexed spins forever). With partitioned requests MPICH's MPI_Testall fails
 * (MPI_ERR_IN_STATUS, natively too: MPICH's part/multipart waited with it and aborted).
 * MPICH's own MPI_Waitall uses the request class's wait function instead. */
static int waitall_in_order(int count, MPI_Request v[], MPI_Status sts[])
{
    MPI_Status *app = mana_status_ignored(sts) ? NULL : sts;
    int rc = MPI_SUCCESS;
    for (int i = 0; i < count; i++) {
        int flag = 0;
        MPI_Status *st = app ? &app[i] : MPI_STATUS_IGNORE;
        if (app)
            empty_status(st);
        int r = wait_or_test(&v[i], &flag, st, 1);
        if (r != MPI_SUCCESS) { /* as MPI_Waitall reports it: this one failed, the rest pending */
            for (int k = 0; app && k < count; k++)
                app[k].MPI_ERROR = k < i ? MPI_SUCCESS : k == i ? r : MPI_ERR_PENDING;
            return MPI_ERR_IN_STATUS;
        }
        if (app)
            st->MPI_ERROR = MPI_SUCCESS;
    }
    return rc;
}

/* A status's error after MPI_ERR_IN_STATUS: the request is neither complete nor failed. */
static int still_pending(int err)
{
    return err == MPI_ERR_PENDING || (err & 0x7f) == MPIX_ERR_PROC_FAILED_PENDING;
}

static int all_common(int count, MPI_Request v[], int *flag, MPI_Status sts[], int blocking)
{
    if (blocking && any_request_testall_fails(count, v))
        return waitall_in_order(count, v, sts);
    struct lower_fn *lt = LOWER_FN(4291, "PMPI_Testall");
    MPI_Status *app = mana_status_ignored(sts) ? NULL : sts;
    BATCH_SCRATCH;
    int rc = batch_alloc(&b, count, v, s_before, s_real, s_st);
    if (rc != MPI_SUCCESS)
        return rc;
    int f = 0;
    ATTEMPTS(blocking, f, rc, {
        batch_refresh(&b, app);
        testall_fn testall = (testall_fn)lower_get(lt, fs_);
        unsigned long up_ = mana_enter_lower(fs_);
        for (int i_ = 0; i_ < (blocking ? MANA_SPIN : 1); i_++) {
            rc = testall(count, b.real, &f, b.st);
            if (rc != MPI_SUCCESS || f || mana_gate_closed)
                break;
        }
        mana_leave_lower(up_);
        if ((f && rc == MPI_SUCCESS) || rc == MPI_ERR_IN_STATUS) {
            /* MPI_Waitall (MPICH) reports success in every status; MPI_Testall does not. */
            if (blocking && rc == MPI_SUCCESS)
                for (int i = 0; i < count; i++)
                    b.st[i].MPI_ERROR = MPI_SUCCESS;
            rc = done_errors(&b, NULL, count, rc);
            /* With MPI_ERR_IN_STATUS (whether or not all are complete) MPI has completed
             * and freed every complete request, failed or not, and marked the others
             * pending in their status (MPICH's errors/comm/too_many_icomms2: the idup
             * that ran out of context ids). */
            for (int i = 0; i < count; i++)
                if (rc == MPI_SUCCESS || !still_pending(b.st[i].MPI_ERROR))
                    batch_complete(&b, i, app ? &app[i] : NULL);
                else if (app)
                    mana_status_copy(&app[i], &b.st[i]);
        }
    });
    if (flag)
        *flag = f;
    batch_free(&b, s_before);
    return rc;
}

__attribute__((used)) static int mana_w_MPI_Waitall(int count, MPI_Request v[], MPI_Status sts[])
{
    return all_common(count, v, NULL, sts, 1);
}
MANA_EXPORT(mana_w_MPI_Waitall, MPI_Waitall)
MANA_EXPORT(mana_w_MPI_Waitall, PMPI_Waitall)

__attribute__((used)) static int mana_w_MPI_Testall(int count, MPI_Request v[], int *flag, MPI_Status sts[])
{
    return all_common(count, v, flag, sts, 0);
}
MANA_EXPORT(mana_w_MPI_Testall, MPI_Testall)
MANA_EXPORT(mana_w_MPI_Testall, PMPI_Testall)

/* The first request the checkpointer completed, or -1. */
static int first_done(struct batch *b)
{
    if (!b->done)
        return -1;
    for (int i = 0; i < b->n; i++)
        if (done_meta(b->v[i]))
            return i;
    return -1;
}

static int any_common(int count, MPI_Request v[], int *index, int *flag, MPI_Status *status, int blocking)
{
    struct lower_fn *lt = LOWER_FN(4292, "PMPI_Testany");
    BATCH_SCRATCH;
    int rc = batch_alloc(&b, count, v, s_before, s_real, s_st);
    if (rc != MPI_SUCCESS)
        return rc;
    int f = 0, i = MPI_UNDEFINED;
    MPI_Status st;
    ATTEMPTS(blocking, f, rc, {
        batch_refresh(&b, NULL);
        if (mana_status_ignored(status))
            empty_status(&st);
        else
            mana_status_copy(&st, status);
        i = first_done(&b);
        if (i >= 0) {
            f = 1;
            b.st[i] = st; /* the application's MPI_ERROR stays */
            rc = done_meta(b.v[i])->error;
            batch_complete(&b, i, mana_status_ignored(status) ? NULL : status);
        } else {
            i = MPI_UNDEFINED;
            testany_fn testany = (testany_fn)lower_get(lt, fs_);
            unsigned long up_ = mana_enter_lower(fs_);
            for (int k = 0; k < (blocking ? MANA_SPIN : 1); k++) {
                rc = testany(count, b.real, &i, &f, &st);
                if (rc != MPI_SUCCESS || f || mana_gate_closed)
                    break;
            }
            mana_leave_lower(up_);
            if (f && i >= 0 && i < count) {
                b.st[i] = st;
                batch_complete(&b, i, mana_status_ignored(status) ? NULL : status);
            } else if (f && !mana_status_ignored(status)) {
                mana_status_copy(status, &st);
            }
        }
    });
    *index = i;
    if (flag)
        *flag = f;
    batch_free(&b, s_before);
    return rc;
}

__attribute__((used)) static int mana_w_MPI_Waitany(int count, MPI_Request v[], int *index, MPI_Status *status)
{
    return any_common(count, v, index, NULL, status, 1);
}
MANA_EXPORT(mana_w_MPI_Waitany, MPI_Waitany)
MANA_EXPORT(mana_w_MPI_Waitany, PMPI_Waitany)

__attribute__((used)) static int mana_w_MPI_Testany(int count, MPI_Request v[], int *index, int *flag,
                                                   MPI_Status *status)
{
    return any_common(count, v, index, flag, status, 0);
}
MANA_EXPORT(mana_w_MPI_Testany, MPI_Testany)
MANA_EXPORT(mana_w_MPI_Testany, PMPI_Testany)

static int some_common(int incount, MPI_Request v[], int *outcount, int indices[], MPI_Status sts[], int blocking)
{
    struct lower_fn *lt = LOWER_FN(4293, "PMPI_Testsome");
    BATCH_SCRATCH;
    int rc = batch_alloc(&b, incount, v, s_before, s_real, s_st);
    if (rc != MPI_SUCCESS)
        return rc;
    int n = 0;
    int s_idx[MANA_TMP_INLINE], *lidx = incount <= MANA_TMP_INLINE ? s_idx : malloc((size_t)incount * sizeof(int));
    MPI_Status s_lst[MANA_TMP_INLINE],
        *lst = incount <= MANA_TMP_INLINE ? s_lst : malloc((size_t)incount * sizeof(MPI_Status));
    if (!lidx || !lst)
        return MPI_ERR_NO_MEM;
    int got = 0;
    ATTEMPTS(blocking, got, rc, {
        batch_refresh(&b, NULL);
        n = 0;
        if (b.done) {
            /* Requests the checkpointer completed are reported first. */
            for (int i = 0; i < incount; i++)
                if (done_meta(v[i]))
                    indices[n++] = i;
            for (int k = 0; k < n; k++)
                if (!mana_status_ignored(sts)) /* the application's MPI_ERROR stays */
                    mana_status_copy(&b.st[indices[k]], &sts[k]);
            rc = done_errors(&b, indices, n, rc);
            for (int k = 0; k < n; k++)
                batch_complete(&b, indices[k], mana_status_ignored(sts) ? NULL : &sts[k]);
        } else {
            /* Output statuses are compacted: the k-th completion's lands in sts[k]. */
            for (int k = 0; k < incount; k++)
                if (mana_status_ignored(sts))
                    empty_status(&lst[k]);
                else
                    mana_status_copy(&lst[k], &sts[k]);
            testsome_fn testsome = (testsome_fn)lower_get(lt, fs_);
            unsigned long up_ = mana_enter_lower(fs_);
            for (int k = 0; k < (blocking ? MANA_SPIN : 1); k++) {
                rc = testsome(incount, b.real, &n, lidx, lst);
                if (rc != MPI_SUCCESS || n != 0 || mana_gate_closed)
                    break;
            }
            mana_leave_lower(up_);
            if (n != MPI_UNDEFINED)
                for (int k = 0; k < n; k++) {
                    indices[k] = lidx[k];
                    b.st[lidx[k]] = lst[k];
                    batch_complete(&b, lidx[k], mana_status_ignored(sts) ? NULL : &sts[k]);
                }
        }
        got = n != 0;
    });
    *outcount = n;
    if (lidx != s_idx)
        free(lidx);
    if (lst != s_lst)
        free(lst);
    batch_free(&b, s_before);
    return rc;
}

__attribute__((used)) static int mana_w_MPI_Waitsome(int incount, MPI_Request v[], int *outcount, int indices[],
                                                     MPI_Status sts[])
{
    return some_common(incount, v, outcount, indices, sts, 1);
}
MANA_EXPORT(mana_w_MPI_Waitsome, MPI_Waitsome)
MANA_EXPORT(mana_w_MPI_Waitsome, PMPI_Waitsome)

__attribute__((used)) static int mana_w_MPI_Testsome(int incount, MPI_Request v[], int *outcount, int indices[],
                                                     MPI_Status sts[])
{
    return some_common(incount, v, outcount, indices, sts, 0);
}
MANA_EXPORT(mana_w_MPI_Testsome, MPI_Testsome)
MANA_EXPORT(mana_w_MPI_Testsome, PMPI_Testsome)

__attribute__((used)) static int mana_w_MPI_Request_get_status(MPI_Request request, int *flag, MPI_Status *status)
{
    /* A status of our own even when the application ignores it: a cancelled send's count
     * is taken back from it. */
    const int ignored = mana_status_ignored(status);
    MPI_Status st = {0}, *sp = &st;
    if (!ignored)
        mana_status_copy(&st, status);
    int rc = MPI_SUCCESS;
    mana_gate_enter();
    struct mana_req_meta *m = done_meta(request);
    if (m) {
        *flag = 1;
        saved_status(&st, m);
        rc = m->error; /* MPICH returns a finished request's error here too */
    } else {
        MPI_Request r = mana_h_real(request);
        MANA_CALL_LOWER_INTO(rc, 4294, "PMPI_Request_get_status", int, (MPI_Request, int *, MPI_Status *),
                             (r, flag, sp));
        struct mana_req_meta *q = mana_req_meta(request);
        if (rc == MPI_SUCCESS && *flag && q)
            mana_send_completed(q, sp);
    }
    mana_gate_leave();
    if (!ignored)
        mana_status_copy(status, &st);
    return rc;
}
MANA_EXPORT(mana_w_MPI_Request_get_status, MPI_Request_get_status)
MANA_EXPORT(mana_w_MPI_Request_get_status, PMPI_Request_get_status)

/* Holding the gate: if send `m` (real request `r`, which the application cancelled) is
 * complete and cancelled, its count is taken back (the request stays the application's). */
static void take_back_if_cancelled(struct mana_req_meta *m, MPI_Request r)
{
    int flag = 0, q;
    MPI_Status st;
    MANA_CALL_LOWER_INTO(q, 4634, "PMPI_Request_get_status", int, (MPI_Request, int *, MPI_Status *),
                         (r, &flag, &st));
    if (q == MPI_SUCCESS && flag)
        mana_send_completed(m, &st);
}

/* An active receive the application frees still completes in the lower half: the
 * request is kept (hidden from the application) so that the drain can count it. */
__attribute__((used)) static int mana_w_MPI_Request_free(MPI_Request *request)
{
    int rc = MPI_SUCCESS;
    mana_gate_enter();
    struct mana_req_meta *m = mana_req_meta(*request);
    if (m && m->state == MANA_REQ_DONE) {
        mana_req_release(*request);
        *request = MPI_REQUEST_NULL;
    } else if (m && m->kind == MANA_REQ_RECV && m->active && !m->persistent) {
        m->app_freed = 1;
        *request = MPI_REQUEST_NULL;
    } else {
        MPI_Request before = mana_h_real(*request), r = before;
        if (m && m->cancel == 1) /* a cancelled send freed without a wait or test */
            take_back_if_cancelled(m, r);
        MANA_CALL_LOWER_INTO(rc, 4295, "PMPI_Request_free", int, (MPI_Request *), (&r));
        *request = mana_h_inout_done(*request, before, r);
    }
    mana_gate_leave();
    return rc;
}
MANA_EXPORT(mana_w_MPI_Request_free, MPI_Request_free)
MANA_EXPORT(mana_w_MPI_Request_free, PMPI_Request_free)

/* Cancelling a request the checkpointer already completed does nothing (DRAIN.md §2.7).
 * A send MPICH cancels never arrives, so its count is taken back: MPICH cancels a send to
 * the rank itself at once (its request completes cancelled here); one that completes
 * cancelled later is seen when the application waits for, tests, queries or frees it.
 * Uncounted, the drain waited for it for ever (mpi4py's testCancel and testProbeCancel on
 * MPI_COMM_SELF: MPI_Issend to itself, MPI_Cancel, MPI_Request_free). */
__attribute__((used)) static int mana_w_MPI_Cancel(MPI_Request *request)
{
    int rc = MPI_SUCCESS;
    mana_gate_enter();
    struct mana_req_meta *held = mana_req_meta(*request);
    /* A synchronous send whose message a checkpoint drained (src/ssend.c) cannot be
     * cancelled any more: it completes, uncancelled, when the receiver receives it (its
     * lower request is only the wait for that acknowledgement). Cancelling that wait left
     * the message for a later receive (mpi4py's test_util_pkl5 testISSendCancel on
     * MPI_COMM_SELF, then every later self-test received the wrong message). */
    if (held && held->held) {
        mana_gate_leave();
        return MPI_SUCCESS;
    }
    if (!done_meta(*request)) {
        struct mana_req_meta *m = mana_req_meta(*request);
        MPI_Request r = mana_h_real(*request);
        MANA_CALL_LOWER_INTO(rc, 4296, "PMPI_Cancel", int, (MPI_Request *), (&r));
        if (rc == MPI_SUCCESS && m && m->kind == MANA_REQ_SEND && m->active && !m->cancel) {
            m->cancel = 1;
            take_back_if_cancelled(m, r);
        }
    }
    mana_gate_leave();
    return rc;
}
MANA_EXPORT(mana_w_MPI_Cancel, MPI_Cancel)
MANA_EXPORT(mana_w_MPI_Cancel, PMPI_Cancel)
