/* Point-to-point wrappers that a checkpoint must be able to interrupt (DRAIN.md §3).
 *
 * No application thread ever waits inside the lower half: a blocking call is its
 * nonblocking twin plus a test loop, and the loop holds the gate token only while it
 * tests (a bounded number of times), so a checkpoint can close the gate between two
 * tests. Requests carry what the checkpointer needs (kind, communicator, state); a
 * request the checkpointer completed (MANA_REQ_DONE) is answered from its saved status.
 * Messages are counted per communicator — sends at initiation, receives at completion —
 * so the drain knows how many are still in flight.
 *
 * Listed in gen/handwritten.txt; the generator skips these names. */
#include "mana_wrap.h"
#include <stdlib.h>
#include <string.h>

/* Tests per gate hold while waiting: bounds how long a checkpoint waits at the gate. */
#define MANA_SPIN 256

typedef int (*test_fn)(MPI_Request *, int *, MPI_Status *);
typedef int (*testall_fn)(int, MPI_Request *, int *, MPI_Status *);
typedef int (*iprobe_fn)(int, int, MPI_Comm, int *, MPI_Status *);
typedef int (*improbe_fn)(int, int, MPI_Comm, int *, MPI_Message *, MPI_Status *);

#define LOWER_PTR(type, id, name)                                                        \
    ({                                                                                   \
        static type f_;                                                                  \
        if (__builtin_expect(!f_, 0))                                                    \
            f_ = (type)mana_lower_fn(id, name, mana_thread_lower_fs());                  \
        f_;                                                                              \
    })

/* Repeats `test` (a call that sets `flag_`) holding the gate, up to MANA_SPIN times or
 * until the gate closes; then lets go of the gate and starts over (parking at the gate
 * if a checkpoint closed it). `rc_` receives the last result. */
#define MANA_TEST_LOOP(rc_, flag_, test)                                                 \
    do {                                                                                 \
        for (;;) {                                                                       \
            unsigned long fs_ = mana_thread_lower_fs();                                  \
            mana_gate_enter();                                                           \
            unsigned long up_ = mana_enter_lower(fs_);                                   \
            for (int i_ = 0; i_ < MANA_SPIN; i_++) {                                     \
                rc_ = (test);                                                            \
                if (rc_ != MPI_SUCCESS || (flag_) || mana_gate_closed)                   \
                    break;                                                               \
            }                                                                            \
            mana_leave_lower(up_);                                                       \
            mana_gate_leave();                                                           \
            if (rc_ != MPI_SUCCESS || (flag_))                                           \
                break;                                                                   \
        }                                                                                \
    } while (0)

/* Waits for the real request `*r` (which becomes MPI_REQUEST_NULL unless persistent). */
static int wait_real(MPI_Request *r, MPI_Status *st)
{
    test_fn test = LOWER_PTR(test_fn, 4200, "PMPI_Test");
    int rc = MPI_SUCCESS, flag = 0;
    MANA_TEST_LOOP(rc, flag, test(r, &flag, st));
    return rc;
}

static int waitall_real(int n, MPI_Request *r, MPI_Status *st)
{
    testall_fn testall = LOWER_PTR(testall_fn, 4201, "PMPI_Testall");
    int rc = MPI_SUCCESS, flag = 0;
    MANA_TEST_LOOP(rc, flag, testall(n, r, &flag, st));
    return rc;
}

static int cancelled(const MPI_Status *st)
{
    /* MPICH keeps the cancelled bit in the low bit of count_hi_and_cancelled. */
    return st->count_hi_and_cancelled & 1;
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

/* After the lower half completed the request behind `*v` (its real handle now `real_after`)
 * with status `st`: count a received message, and give the application its new handle. */
static void completed(MPI_Request *v, int real_before, int real_after, const MPI_Status *st)
{
    struct mana_req_meta *m = mana_req_meta(*v);
    if (m) {
        if (m->kind == MANA_REQ_RECV && m->active && !cancelled(st))
            mana_count_recvd(m->comm);
        m->active = 0;
    }
    *v = mana_h_inout_done(*v, real_before, real_after);
}

/* A request the checkpointer completed: its status, and the application's new handle
 * (MPI_REQUEST_NULL, or the inactive persistent request). */
static void completed_by_checkpoint(MPI_Request *v, struct mana_req_meta *m, MPI_Status *st)
{
    if (st)
        mana_status_copy(st, &m->status);
    if (m->persistent) {
        m->state = MANA_REQ_LIVE;
        m->active = 0;
    } else {
        mana_req_release(*v);
        *v = MPI_REQUEST_NULL;
    }
}

static int done_by_checkpoint(int v)
{
    struct mana_req_meta *m = mana_req_meta(v);
    return m && m->state == MANA_REQ_DONE;
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

/* ---- Sends ---- */

typedef int (*isend_fn)(const void *, int, MPI_Datatype, int, int, MPI_Comm, MPI_Request *);
typedef int (*isend_c_fn)(const void *, MPI_Count, MPI_Datatype, int, int, MPI_Comm, MPI_Request *);

/* Starts a send with the lower function `f` (any mode) and counts it. With `test`
 * (blocking sends), goes on testing the request in the same crossing (up to MANA_SPIN
 * times): a send that completes soon costs one crossing, like the native call. */
#define START_SEND_TEST(rc, f, buf, count, dt, dest, tag, comm, real_req, test, flag)     \
    do {                                                                                 \
        MPI_Comm c_ = mana_h_real(comm);                                                 \
        MPI_Datatype t_ = mana_h_real(dt);                                               \
        unsigned long fs_ = mana_thread_lower_fs();                                      \
        mana_gate_enter();                                                               \
        unsigned long up_ = mana_enter_lower(fs_);                                       \
        rc = f(buf, count, t_, dest, tag, c_, real_req);                                 \
        if (rc == MPI_SUCCESS && (test))                                                 \
            for (int i_ = 0; i_ < MANA_SPIN; i_++) {                                     \
                rc = (test)(real_req, (flag), MPI_STATUS_IGNORE);                        \
                if (rc != MPI_SUCCESS || *(flag) || mana_gate_closed)                    \
                    break;                                                               \
            }                                                                            \
        mana_leave_lower(up_);                                                           \
        if (rc == MPI_SUCCESS && dest != MPI_PROC_NULL)                                  \
            mana_count_sent(comm, dest);                                                 \
        mana_gate_leave();                                                               \
    } while (0)
#define START_SEND(rc, f, buf, count, dt, dest, tag, comm, real_req)                      \
    START_SEND_TEST(rc, f, buf, count, dt, dest, tag, comm, real_req, (test_fn)NULL, (int *)NULL)

#define BLOCKING_SEND(NAME, LOWER, ID, FN_T, COUNT_T)                                    \
    __attribute__((used)) static int mana_w_##NAME(const void *buf, COUNT_T count, MPI_Datatype dt, int dest, \
                                                   int tag, MPI_Comm comm)                \
    {                                                                                    \
        FN_T f = LOWER_PTR(FN_T, ID, LOWER);                                             \
        test_fn test = LOWER_PTR(test_fn, 4209, "PMPI_Test");                            \
        MPI_Request r = MPI_REQUEST_NULL;                                                \
        int rc, flag = 0;                                                                \
        START_SEND_TEST(rc, f, buf, count, dt, dest, tag, comm, &r, test, &flag);        \
        return rc == MPI_SUCCESS && !flag ? wait_real(&r, MPI_STATUS_IGNORE) : rc;       \
    }                                                                                    \
    MANA_EXPORT(mana_w_##NAME, NAME)                                                     \
    MANA_EXPORT(mana_w_##NAME, P##NAME)

BLOCKING_SEND(MPI_Send, "PMPI_Isend", 4210, isend_fn, int)
BLOCKING_SEND(MPI_Send_c, "PMPI_Isend_c", 4211, isend_c_fn, MPI_Count)
BLOCKING_SEND(MPI_Ssend, "PMPI_Issend", 4212, isend_fn, int)
BLOCKING_SEND(MPI_Ssend_c, "PMPI_Issend_c", 4213, isend_c_fn, MPI_Count)
BLOCKING_SEND(MPI_Bsend, "PMPI_Ibsend", 4214, isend_fn, int)
BLOCKING_SEND(MPI_Bsend_c, "PMPI_Ibsend_c", 4215, isend_c_fn, MPI_Count)
BLOCKING_SEND(MPI_Rsend, "PMPI_Irsend", 4216, isend_fn, int)
BLOCKING_SEND(MPI_Rsend_c, "PMPI_Irsend_c", 4217, isend_c_fn, MPI_Count)

#define NONBLOCKING_SEND(NAME, LOWER, ID, FN_T, COUNT_T)                                 \
    __attribute__((used)) static int mana_w_##NAME(const void *buf, COUNT_T count, MPI_Datatype dt, int dest, \
                                                   int tag, MPI_Comm comm, MPI_Request *request) \
    {                                                                                    \
        FN_T f = LOWER_PTR(FN_T, ID, LOWER);                                             \
        MPI_Request r = MPI_REQUEST_NULL;                                                \
        int rc;                                                                          \
        START_SEND(rc, f, buf, count, dt, dest, tag, comm, &r);                          \
        return rc == MPI_SUCCESS ? new_request(r, MANA_REQ_SEND, comm, dest, 0, request) : rc; \
    }                                                                                    \
    MANA_EXPORT(mana_w_##NAME, NAME)                                                     \
    MANA_EXPORT(mana_w_##NAME, P##NAME)

NONBLOCKING_SEND(MPI_Isend, "PMPI_Isend", 4220, isend_fn, int)
NONBLOCKING_SEND(MPI_Isend_c, "PMPI_Isend_c", 4221, isend_c_fn, MPI_Count)
NONBLOCKING_SEND(MPI_Issend, "PMPI_Issend", 4222, isend_fn, int)
NONBLOCKING_SEND(MPI_Issend_c, "PMPI_Issend_c", 4223, isend_c_fn, MPI_Count)
NONBLOCKING_SEND(MPI_Ibsend, "PMPI_Ibsend", 4224, isend_fn, int)
NONBLOCKING_SEND(MPI_Ibsend_c, "PMPI_Ibsend_c", 4225, isend_c_fn, MPI_Count)
NONBLOCKING_SEND(MPI_Irsend, "PMPI_Irsend", 4226, isend_fn, int)
NONBLOCKING_SEND(MPI_Irsend_c, "PMPI_Irsend_c", 4227, isend_c_fn, MPI_Count)

/* Persistent sends: counted at every MPI_Start. */
#define PERSISTENT_SEND(NAME, LOWER, ID, FN_T, COUNT_T)                                  \
    __attribute__((used)) static int mana_w_##NAME(const void *buf, COUNT_T count, MPI_Datatype dt, int dest, \
                                                   int tag, MPI_Comm comm, MPI_Request *request) \
    {                                                                                    \
        FN_T f = LOWER_PTR(FN_T, ID, LOWER);                                             \
        MPI_Request r = MPI_REQUEST_NULL;                                                \
        int rc;                                                                          \
        MPI_Comm c_ = mana_h_real(comm);                                                 \
        MPI_Datatype t_ = mana_h_real(dt);                                               \
        unsigned long fs_ = mana_thread_lower_fs();                                      \
        mana_gate_enter();                                                               \
        unsigned long up_ = mana_enter_lower(fs_);                                       \
        rc = f(buf, count, t_, dest, tag, c_, &r);                                       \
        mana_leave_lower(up_);                                                           \
        mana_gate_leave();                                                               \
        return rc == MPI_SUCCESS ? new_request(r, MANA_REQ_SEND, comm, dest, 1, request) : rc; \
    }                                                                                    \
    MANA_EXPORT(mana_w_##NAME, NAME)                                                     \
    MANA_EXPORT(mana_w_##NAME, P##NAME)

PERSISTENT_SEND(MPI_Send_init, "PMPI_Send_init", 4230, isend_fn, int)
PERSISTENT_SEND(MPI_Send_init_c, "PMPI_Send_init_c", 4231, isend_c_fn, MPI_Count)
PERSISTENT_SEND(MPI_Ssend_init, "PMPI_Ssend_init", 4232, isend_fn, int)
PERSISTENT_SEND(MPI_Ssend_init_c, "PMPI_Ssend_init_c", 4233, isend_c_fn, MPI_Count)
PERSISTENT_SEND(MPI_Bsend_init, "PMPI_Bsend_init", 4234, isend_fn, int)
PERSISTENT_SEND(MPI_Bsend_init_c, "PMPI_Bsend_init_c", 4235, isend_c_fn, MPI_Count)
PERSISTENT_SEND(MPI_Rsend_init, "PMPI_Rsend_init", 4236, isend_fn, int)
PERSISTENT_SEND(MPI_Rsend_init_c, "PMPI_Rsend_init_c", 4237, isend_c_fn, MPI_Count)

/* ---- Receives ---- */

typedef int (*irecv_fn)(void *, int, MPI_Datatype, int, int, MPI_Comm, MPI_Request *);
typedef int (*irecv_c_fn)(void *, MPI_Count, MPI_Datatype, int, int, MPI_Comm, MPI_Request *);

/* Posts a receive; with `flag`, goes on testing it in the same crossing (up to
 * MANA_SPIN times): a blocking receive whose message comes soon costs one crossing. */
static int start_recv_test(irecv_fn f, void *buf, int count, MPI_Datatype dt, int src, int tag, MPI_Comm comm,
                           MPI_Request *r, int *flag, MPI_Status *st)
{
    MPI_Comm c = mana_h_real(comm);
    MPI_Datatype t = mana_h_real(dt);
    test_fn test = flag ? LOWER_PTR(test_fn, 4208, "PMPI_Test") : NULL;
    unsigned long fs = mana_thread_lower_fs();
    mana_gate_enter();
    unsigned long up = mana_enter_lower(fs);
    int rc = f(buf, count, t, src, tag, c, r);
    if (rc == MPI_SUCCESS && flag)
        for (int i = 0; i < MANA_SPIN; i++) {
            rc = test(r, flag, st);
            if (rc != MPI_SUCCESS || *flag || mana_gate_closed)
                break;
        }
    mana_leave_lower(up);
    mana_gate_leave();
    return rc;
}

static int start_recv(irecv_fn f, void *buf, int count, MPI_Datatype dt, int src, int tag, MPI_Comm comm,
                      MPI_Request *r)
{
    return start_recv_test(f, buf, count, dt, src, tag, comm, r, NULL, NULL);
}

static int start_recv_c(irecv_c_fn f, void *buf, MPI_Count count, MPI_Datatype dt, int src, int tag, MPI_Comm comm,
                        MPI_Request *r)
{
    MPI_Comm c = mana_h_real(comm);
    MPI_Datatype t = mana_h_real(dt);
    unsigned long fs = mana_thread_lower_fs();
    mana_gate_enter();
    unsigned long up = mana_enter_lower(fs);
    int rc = f(buf, count, t, src, tag, c, r);
    mana_leave_lower(up);
    mana_gate_leave();
    return rc;
}

static int finish_recv_tested(int rc, int flag, MPI_Status *stp, MPI_Request *r, MPI_Comm comm, MPI_Status *status);

/* ---- Messages drained at a checkpoint come first (DRAIN.md §2.6) ---- */

/* A receive that a drained message satisfies: delivered now (it was counted when it was
 * drained). Returns 1 and sets *rc if so. */
static int served_from_drain(void *buf, MPI_Count count, MPI_Datatype dt, int src, int tag, MPI_Comm comm,
                             MPI_Status *status, int *rc)
{
    if (src == MPI_PROC_NULL)
        return 0;
    struct mana_drained *d = mana_drained_match(comm, src, tag, 1);
    if (!d)
        return 0;
    MPI_Status st;
    mana_status_copy(&st, mana_status_ignored(status) ? &st : status);
    *rc = mana_drained_deliver(d, buf, count, dt, comm, &st);
    if (!mana_status_ignored(status))
        mana_status_copy(status, &st);
    return 1;
}

/* A nonblocking receive a drained message satisfies: an already completed request. */
static int served_request(void *buf, MPI_Count count, MPI_Datatype dt, int src, int tag, MPI_Comm comm,
                          MPI_Request *request, int *rc)
{
    if (src == MPI_PROC_NULL || !mana_drained_head)
        return 0;
    struct mana_drained *d = mana_drained_match(comm, src, tag, 1);
    if (!d)
        return 0;
    struct mana_req_meta *m;
    int v = mana_req_placeholder(&m);
    m->kind = MANA_REQ_RECV;
    m->comm = comm;
    m->peer = src;
    empty_status(&m->status);
    *rc = mana_drained_deliver(d, buf, count, dt, comm, &m->status);
    m->state = MANA_REQ_DONE;
    *request = v;
    return 1;
}

/* A blocking receive: the lower half's nonblocking one, waited for here; counted. */
static int finish_recv(int rc, MPI_Request *r, MPI_Comm comm, MPI_Status *status)
{
    MPI_Status st;
    mana_status_copy(&st, mana_status_ignored(status) ? &st : status);
    return finish_recv_tested(rc, 0, &st, r, comm, status);
}

/* The same after a first test (`flag`, with its status in `st`). */
static int finish_recv_tested(int rc, int flag, MPI_Status *stp, MPI_Request *r, MPI_Comm comm, MPI_Status *status)
{
    if (rc != MPI_SUCCESS)
        return rc;
    MPI_Status st = *stp;
    if (!flag)
        rc = wait_real(r, &st);
    if (rc == MPI_SUCCESS && !cancelled(&st))
        mana_count_recvd(comm);
    if (!mana_status_ignored(status))
        mana_status_copy(status, &st);
    return rc;
}

__attribute__((used)) static int mana_w_MPI_Recv(void *buf, int count, MPI_Datatype dt, int src, int tag,
                                                 MPI_Comm comm, MPI_Status *status)
{
    MPI_Request r = MPI_REQUEST_NULL;
    int rc;
    if (served_from_drain(buf, count, dt, src, tag, comm, status, &rc))
        return rc;
    MPI_Status st;
    mana_status_copy(&st, mana_status_ignored(status) ? &st : status);
    int flag = 0;
    rc = start_recv_test(LOWER_PTR(irecv_fn, 4240, "PMPI_Irecv"), buf, count, dt, src, tag, comm, &r, &flag, &st);
    return finish_recv_tested(rc, flag, &st, &r, comm, status);
}
MANA_EXPORT(mana_w_MPI_Recv, MPI_Recv)
MANA_EXPORT(mana_w_MPI_Recv, PMPI_Recv)

__attribute__((used)) static int mana_w_MPI_Recv_c(void *buf, MPI_Count count, MPI_Datatype dt, int src, int tag,
                                                   MPI_Comm comm, MPI_Status *status)
{
    MPI_Request r = MPI_REQUEST_NULL;
    int rc;
    if (served_from_drain(buf, count, dt, src, tag, comm, status, &rc))
        return rc;
    rc = start_recv_c(LOWER_PTR(irecv_c_fn, 4241, "PMPI_Irecv_c"), buf, count, dt, src, tag, comm, &r);
    return finish_recv(rc, &r, comm, status);
}
MANA_EXPORT(mana_w_MPI_Recv_c, MPI_Recv_c)
MANA_EXPORT(mana_w_MPI_Recv_c, PMPI_Recv_c)

__attribute__((used)) static int mana_w_MPI_Irecv(void *buf, int count, MPI_Datatype dt, int src, int tag,
                                                  MPI_Comm comm, MPI_Request *request)
{
    MPI_Request r = MPI_REQUEST_NULL;
    int rc;
    if (served_request(buf, count, dt, src, tag, comm, request, &rc))
        return rc;
    rc = start_recv(LOWER_PTR(irecv_fn, 4242, "PMPI_Irecv"), buf, count, dt, src, tag, comm, &r);
    return rc == MPI_SUCCESS ? new_request(r, MANA_REQ_RECV, comm, src, 0, request) : rc;
}
MANA_EXPORT(mana_w_MPI_Irecv, MPI_Irecv)
MANA_EXPORT(mana_w_MPI_Irecv, PMPI_Irecv)

__attribute__((used)) static int mana_w_MPI_Irecv_c(void *buf, MPI_Count count, MPI_Datatype dt, int src, int tag,
                                                    MPI_Comm comm, MPI_Request *request)
{
    MPI_Request r = MPI_REQUEST_NULL;
    int rc;
    if (served_request(buf, count, dt, src, tag, comm, request, &rc))
        return rc;
    rc = start_recv_c(LOWER_PTR(irecv_c_fn, 4243, "PMPI_Irecv_c"), buf, count, dt, src, tag, comm, &r);
    return rc == MPI_SUCCESS ? new_request(r, MANA_REQ_RECV, comm, src, 0, request) : rc;
}
MANA_EXPORT(mana_w_MPI_Irecv_c, MPI_Irecv_c)
MANA_EXPORT(mana_w_MPI_Irecv_c, PMPI_Irecv_c)

/* A persistent receive keeps its arguments: MPI_Start may serve it from drained messages. */
static void persistent_recv(MPI_Request v, void *buf, MPI_Count count, MPI_Datatype dt, int tag)
{
    struct mana_req_meta *m = mana_req_meta(v);
    if (m) {
        m->buf = buf;
        m->count = count;
        m->datatype = dt;
        m->tag = tag;
    }
}

__attribute__((used)) static int mana_w_MPI_Recv_init(void *buf, int count, MPI_Datatype dt, int src, int tag,
                                                      MPI_Comm comm, MPI_Request *request)
{
    MPI_Request r = MPI_REQUEST_NULL;
    int rc = start_recv(LOWER_PTR(irecv_fn, 4244, "PMPI_Recv_init"), buf, count, dt, src, tag, comm, &r);
    if (rc == MPI_SUCCESS) {
        new_request(r, MANA_REQ_RECV, comm, src, 1, request);
        persistent_recv(*request, buf, count, dt, tag);
    }
    return rc;
}
MANA_EXPORT(mana_w_MPI_Recv_init, MPI_Recv_init)
MANA_EXPORT(mana_w_MPI_Recv_init, PMPI_Recv_init)

__attribute__((used)) static int mana_w_MPI_Recv_init_c(void *buf, MPI_Count count, MPI_Datatype dt, int src,
                                                        int tag, MPI_Comm comm, MPI_Request *request)
{
    MPI_Request r = MPI_REQUEST_NULL;
    int rc = start_recv_c(LOWER_PTR(irecv_c_fn, 4245, "PMPI_Recv_init_c"), buf, count, dt, src, tag, comm, &r);
    if (rc == MPI_SUCCESS) {
        new_request(r, MANA_REQ_RECV, comm, src, 1, request);
        persistent_recv(*request, buf, count, dt, tag);
    }
    return rc;
}
MANA_EXPORT(mana_w_MPI_Recv_init_c, MPI_Recv_init_c)
MANA_EXPORT(mana_w_MPI_Recv_init_c, PMPI_Recv_init_c)

/* Matched probes and receives. A message handle names a message the lower half holds. */
typedef int (*imrecv_fn)(void *, int, MPI_Datatype, MPI_Message *, MPI_Request *);
typedef int (*imrecv_c_fn)(void *, MPI_Count, MPI_Datatype, MPI_Message *, MPI_Request *);

/* The communicator a message handle was probed on, for counting its receive. */
#define MANA_MSG_COMMS 4096
static struct {
    int msg, comm;
} msg_comm[MANA_MSG_COMMS];

static void remember_msg_comm(int msg, int comm)
{
    for (int i = 0; i < MANA_MSG_COMMS; i++)
        if (__sync_bool_compare_and_swap(&msg_comm[i].msg, 0, msg)) {
            msg_comm[i].comm = comm;
            return;
        }
}

static int take_msg_comm(int msg)
{
    for (int i = 0; i < MANA_MSG_COMMS; i++)
        if (msg_comm[i].msg == msg) {
            int c = msg_comm[i].comm;
            __atomic_store_n(&msg_comm[i].msg, 0, __ATOMIC_RELEASE);
            return c;
        }
    return MPI_COMM_NULL;
}

static int imrecv_common(void *f, int large, void *buf, MPI_Count count, MPI_Datatype dt, MPI_Message *message,
                         MPI_Request *r, int *comm)
{
    MPI_Message v = *message, real = mana_h_real(v), m = real;
    MPI_Datatype t = mana_h_real(dt);
    unsigned long fs = mana_thread_lower_fs();
    mana_gate_enter();
    unsigned long up = mana_enter_lower(fs);
    int rc = large ? ((imrecv_c_fn)f)(buf, count, t, &m, r) : ((imrecv_fn)f)(buf, (int)count, t, &m, r);
    mana_leave_lower(up);
    mana_gate_leave();
    *comm = real == MPI_MESSAGE_NO_PROC ? MPI_COMM_NULL : take_msg_comm(v);
    *message = mana_h_inout_done(v, real, m);
    return rc;
}

__attribute__((used)) static int mana_w_MPI_Mrecv(void *buf, int count, MPI_Datatype dt, MPI_Message *message,
                                                  MPI_Status *status)
{
    MPI_Request r = MPI_REQUEST_NULL;
    int comm;
    int rc = imrecv_common(LOWER_PTR(void *, 4250, "PMPI_Imrecv"), 0, buf, count, dt, message, &r, &comm);
    return finish_recv(rc, &r, comm, status);
}
MANA_EXPORT(mana_w_MPI_Mrecv, MPI_Mrecv)
MANA_EXPORT(mana_w_MPI_Mrecv, PMPI_Mrecv)

__attribute__((used)) static int mana_w_MPI_Mrecv_c(void *buf, MPI_Count count, MPI_Datatype dt,
                                                    MPI_Message *message, MPI_Status *status)
{
    MPI_Request r = MPI_REQUEST_NULL;
    int comm;
    int rc = imrecv_common(LOWER_PTR(void *, 4251, "PMPI_Imrecv_c"), 1, buf, count, dt, message, &r, &comm);
    return finish_recv(rc, &r, comm, status);
}
MANA_EXPORT(mana_w_MPI_Mrecv_c, MPI_Mrecv_c)
MANA_EXPORT(mana_w_MPI_Mrecv_c, PMPI_Mrecv_c)

__attribute__((used)) static int mana_w_MPI_Imrecv(void *buf, int count, MPI_Datatype dt, MPI_Message *message,
                                                   MPI_Request *request)
{
    MPI_Request r = MPI_REQUEST_NULL;
    int comm;
    int rc = imrecv_common(LOWER_PTR(void *, 4252, "PMPI_Imrecv"), 0, buf, count, dt, message, &r, &comm);
    return rc == MPI_SUCCESS ? new_request(r, MANA_REQ_RECV, comm, MPI_ANY_SOURCE, 0, request) : rc;
}
MANA_EXPORT(mana_w_MPI_Imrecv, MPI_Imrecv)
MANA_EXPORT(mana_w_MPI_Imrecv, PMPI_Imrecv)

__attribute__((used)) static int mana_w_MPI_Imrecv_c(void *buf, MPI_Count count, MPI_Datatype dt,
                                                     MPI_Message *message, MPI_Request *request)
{
    MPI_Request r = MPI_REQUEST_NULL;
    int comm;
    int rc = imrecv_common(LOWER_PTR(void *, 4253, "PMPI_Imrecv_c"), 1, buf, count, dt, message, &r, &comm);
    return rc == MPI_SUCCESS ? new_request(r, MANA_REQ_RECV, comm, MPI_ANY_SOURCE, 0, request) : rc;
}
MANA_EXPORT(mana_w_MPI_Imrecv_c, MPI_Imrecv_c)
MANA_EXPORT(mana_w_MPI_Imrecv_c, PMPI_Imrecv_c)

/* ---- Probes ---- */

static int iprobe_once(int src, int tag, MPI_Comm comm, int *flag, MPI_Status *status)
{
    struct mana_drained *d = src == MPI_PROC_NULL ? NULL : mana_drained_match(comm, src, tag, 0);
    if (d) {
        *flag = 1;
        mana_drained_status(d, status);
        return MPI_SUCCESS;
    }
    iprobe_fn f = LOWER_PTR(iprobe_fn, 4260, "PMPI_Iprobe");
    MPI_Comm c = mana_h_real(comm);
    MPI_Status st, *sp = mana_status_ignored(status) ? status : &st;
    if (sp == &st)
        mana_status_copy(&st, status);
    int rc;
    unsigned long fs = mana_thread_lower_fs();
    mana_gate_enter();
    unsigned long up = mana_enter_lower(fs);
    rc = f(src, tag, c, flag, sp);
    mana_leave_lower(up);
    mana_gate_leave();
    if (sp == &st)
        mana_status_copy(status, &st);
    return rc;
}

__attribute__((used)) static int mana_w_MPI_Iprobe(int src, int tag, MPI_Comm comm, int *flag, MPI_Status *status)
{
    return iprobe_once(src, tag, comm, flag, status);
}
MANA_EXPORT(mana_w_MPI_Iprobe, MPI_Iprobe)
MANA_EXPORT(mana_w_MPI_Iprobe, PMPI_Iprobe)

__attribute__((used)) static int mana_w_MPI_Probe(int src, int tag, MPI_Comm comm, MPI_Status *status)
{
    struct mana_drained *d = src == MPI_PROC_NULL ? NULL : mana_drained_match(comm, src, tag, 0);
    if (d) {
        mana_drained_status(d, status);
        return MPI_SUCCESS;
    }
    iprobe_fn f = LOWER_PTR(iprobe_fn, 4261, "PMPI_Iprobe");
    MPI_Comm c = mana_h_real(comm);
    MPI_Status st;
    mana_status_copy(&st, mana_status_ignored(status) ? &st : status);
    int rc = MPI_SUCCESS, flag = 0;
    MANA_TEST_LOOP(rc, flag, f(src, tag, c, &flag, &st));
    if (!mana_status_ignored(status))
        mana_status_copy(status, &st);
    return rc;
}
MANA_EXPORT(mana_w_MPI_Probe, MPI_Probe)
MANA_EXPORT(mana_w_MPI_Probe, PMPI_Probe)

static int improbe_common(int blocking, int src, int tag, MPI_Comm comm, int *flag, MPI_Message *message,
                          MPI_Status *status)
{
    improbe_fn f = LOWER_PTR(improbe_fn, 4262, "PMPI_Improbe");
    MPI_Comm c = mana_h_real(comm);
    MPI_Status st;
    mana_status_copy(&st, mana_status_ignored(status) ? &st : status);
    MPI_Message m = MPI_MESSAGE_NULL;
    int rc = MPI_SUCCESS;
    *flag = 0;
    if (blocking) {
        MANA_TEST_LOOP(rc, *flag, f(src, tag, c, flag, &m, &st));
    } else {
        unsigned long fs = mana_thread_lower_fs();
        mana_gate_enter();
        unsigned long up = mana_enter_lower(fs);
        rc = f(src, tag, c, flag, &m, &st);
        mana_leave_lower(up);
        mana_gate_leave();
    }
    if (rc == MPI_SUCCESS && *flag) {
        *message = mana_h_virtual(m);
        if (m != MPI_MESSAGE_NO_PROC)
            remember_msg_comm(*message, comm);
        if (!mana_status_ignored(status))
            mana_status_copy(status, &st);
    }
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
    isend_c_fn isend = LOWER_PTR(isend_c_fn, 4270, "PMPI_Isend_c");
    irecv_c_fn irecv = LOWER_PTR(irecv_c_fn, 4271, "PMPI_Irecv_c");
    MPI_Request r[2] = {MPI_REQUEST_NULL, MPI_REQUEST_NULL};
    int rc;
    if (served_from_drain(rbuf, rcount, rtype, src, rtag, comm, status, &rc)) {
        if (rc != MPI_SUCCESS)
            return rc;
        START_SEND(rc, isend, sbuf, scount, stype, dest, stag, comm, &r[1]);
        return rc == MPI_SUCCESS ? wait_real(&r[1], MPI_STATUS_IGNORE) : rc;
    }
    rc = start_recv_c(irecv, rbuf, rcount, rtype, src, rtag, comm, &r[0]);
    if (rc != MPI_SUCCESS)
        return rc;
    START_SEND(rc, isend, sbuf, scount, stype, dest, stag, comm, &r[1]);
    if (rc != MPI_SUCCESS)
        return rc;
    MPI_Status st[2];
    mana_status_copy(&st[0], mana_status_ignored(status) ? &st[0] : status);
    rc = waitall_real(2, r, st);
    if (rc == MPI_SUCCESS && !cancelled(&st[0]))
        mana_count_recvd(comm);
    if (!mana_status_ignored(status))
        mana_status_copy(status, &st[0]);
    return rc;
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

/* The send side goes out of a packed copy (upper-half memory), so the receive can land in
 * the same buffer. */
typedef int (*pack_size_fn)(int, MPI_Datatype, MPI_Comm, int *);
typedef int (*pack_fn)(const void *, int, MPI_Datatype, void *, int, int *, MPI_Comm);

static int sendrecv_replace_common(void *buf, MPI_Count count, MPI_Datatype dt, int dest, int stag, int src,
                                   int rtag, MPI_Comm comm, MPI_Status *status)
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
    void *tmp = malloc(size > 0 ? (size_t)size : 1);
    if (!tmp)
        return MPI_ERR_NO_MEM;
    {
        MANA_FORWARD_INTO(rc, 4273, "PMPI_Pack", int, (const void *, int, MPI_Datatype, void *, int, int *, MPI_Comm),
                          (buf, (int)count, t, tmp, size, &pos, c));
    }
    if (rc == MPI_SUCCESS)
        rc = sendrecv_common(tmp, pos, MPI_PACKED, dest, stag, buf, count, dt, src, rtag, comm, status);
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

/* ---- Persistent requests: start ---- */

typedef int (*start_fn)(MPI_Request *);

static int start_one(MPI_Request *v)
{
    struct mana_req_meta *m = mana_req_meta(*v);
    if (m && m->kind == MANA_REQ_RECV && mana_drained_head && m->peer != MPI_PROC_NULL) {
        struct mana_drained *d = mana_drained_match(m->comm, m->peer, m->tag, 1);
        if (d) {
            int rc = mana_drained_deliver(d, m->buf, m->count, m->datatype, m->comm, &m->status);
            m->active = 0;
            m->state = MANA_REQ_DONE;
            return rc;
        }
    }
    MPI_Request real = mana_h_real(*v);
    start_fn f = LOWER_PTR(start_fn, 4280, "PMPI_Start");
    unsigned long fs = mana_thread_lower_fs();
    mana_gate_enter();
    unsigned long up = mana_enter_lower(fs);
    int rc = f(&real);
    mana_leave_lower(up);
    if (rc == MPI_SUCCESS && m) {
        m->active = 1;
        if (m->kind == MANA_REQ_SEND && m->peer != MPI_PROC_NULL)
            mana_count_sent(m->comm, m->peer);
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

/* ---- Completion ---- */

typedef int (*testany_fn)(int, MPI_Request *, int *, int *, MPI_Status *);
typedef int (*testsome_fn)(int, MPI_Request *, int *, int *, MPI_Status *);

__attribute__((used)) static int mana_w_MPI_Wait(MPI_Request *request, MPI_Status *status)
{
    struct mana_req_meta *m = mana_req_meta(*request);
    if (m && m->state == MANA_REQ_DONE) {
        completed_by_checkpoint(request, m, mana_status_ignored(status) ? NULL : status);
        return MPI_SUCCESS;
    }
    MPI_Request before = mana_h_real(*request), r = before;
    MPI_Status st;
    mana_status_copy(&st, mana_status_ignored(status) ? &st : status);
    int rc = wait_real(&r, &st);
    completed(request, before, r, &st);
    if (!mana_status_ignored(status))
        mana_status_copy(status, &st);
    return rc;
}
MANA_EXPORT(mana_w_MPI_Wait, MPI_Wait)
MANA_EXPORT(mana_w_MPI_Wait, PMPI_Wait)

__attribute__((used)) static int mana_w_MPI_Test(MPI_Request *request, int *flag, MPI_Status *status)
{
    struct mana_req_meta *m = mana_req_meta(*request);
    if (m && m->state == MANA_REQ_DONE) {
        completed_by_checkpoint(request, m, mana_status_ignored(status) ? NULL : status);
        *flag = 1;
        return MPI_SUCCESS;
    }
    MPI_Request before = mana_h_real(*request), r = before;
    MPI_Status st;
    mana_status_copy(&st, mana_status_ignored(status) ? &st : status);
    int rc;
    {
        MANA_FORWARD_INTO(rc, 4290, "PMPI_Test", int, (MPI_Request *, int *, MPI_Status *), (&r, flag, &st));
    }
    if (*flag)
        completed(request, before, r, &st);
    if (!mana_status_ignored(status))
        mana_status_copy(status, &st);
    return rc;
}
MANA_EXPORT(mana_w_MPI_Test, MPI_Test)
MANA_EXPORT(mana_w_MPI_Test, PMPI_Test)

/* The real handles of `n` application requests (MPI_REQUEST_NULL for those the
 * checkpointer completed), and the statuses, in scratch arrays. */
struct batch {
    MPI_Request *v, *before, *real;
    MPI_Status *st;
    int n, done; /* `done`: how many were completed by the checkpointer */
};

/* Scratch statuses start as the application's (`app_st`, per request; NULL if ignored):
 * MPICH leaves some fields (MPI_ERROR) alone, and so must we. */
static int batch_init(struct batch *b, int n, MPI_Request *v, MPI_Request *s_before, MPI_Request *s_real,
                      MPI_Status *s_st, MPI_Status *app_st)
{
    b->n = n;
    b->v = v;
    b->done = 0;
    if (n <= MANA_TMP_INLINE) {
        b->before = s_before;
        b->real = s_real;
        b->st = s_st;
    } else {
        b->before = malloc((size_t)n * sizeof(MPI_Request));
        b->real = malloc((size_t)n * sizeof(MPI_Request));
        b->st = malloc((size_t)n * sizeof(MPI_Status));
        if (!b->before || !b->real || !b->st)
            return MPI_ERR_NO_MEM;
    }
    for (int i = 0; i < n; i++) {
        int done = mana_h_is_virtual(v[i]) && done_by_checkpoint(v[i]);
        b->before[i] = done ? MPI_REQUEST_NULL : mana_h_real(v[i]);
        b->done += done;
        b->real[i] = b->before[i];
        if (app_st)
            mana_status_copy(&b->st[i], &app_st[i]);
        else
            empty_status(&b->st[i]);
    }
    return MPI_SUCCESS;
}

static void batch_free(struct batch *b, MPI_Request *s_before)
{
    if (b->before != s_before) {
        free(b->before);
        free(b->real);
        free(b->st);
    }
}

/* Element i completed (by the lower half, or earlier by the checkpointer): the
 * application's handle and status. */
static void batch_complete(struct batch *b, int i, MPI_Status *app_st)
{
    struct mana_req_meta *m = b->done ? mana_req_meta(b->v[i]) : NULL;
    if (m && m->state == MANA_REQ_DONE)
        completed_by_checkpoint(&b->v[i], m, &b->st[i]);
    else if (b->v[i] != MPI_REQUEST_NULL)
        completed(&b->v[i], b->before[i], b->real[i], &b->st[i]);
    if (app_st)
        mana_status_copy(app_st, &b->st[i]);
}

#define BATCH_SCRATCH                                                                    \
    MPI_Request s_before[MANA_TMP_INLINE], s_real[MANA_TMP_INLINE];                      \
    MPI_Status s_st[MANA_TMP_INLINE];                                                    \
    struct batch b

static int all_common(int count, MPI_Request v[], int *flag, MPI_Status sts[], int blocking)
{
    BATCH_SCRATCH;
    int rc = batch_init(&b, count, v, s_before, s_real, s_st, mana_status_ignored(sts) ? NULL : sts);
    if (rc != MPI_SUCCESS)
        return rc;
    int f = 0;
    if (blocking) {
        rc = waitall_real(count, b.real, b.st);
        f = 1;
        /* MPI_Waitall (MPICH) reports success in every status; MPI_Testall does not. */
        if (rc == MPI_SUCCESS)
            for (int i = 0; i < count; i++)
                b.st[i].MPI_ERROR = MPI_SUCCESS;
    } else {
        MANA_FORWARD_INTO(rc, 4291, "PMPI_Testall", int, (int, MPI_Request *, int *, MPI_Status *),
                          (count, b.real, &f, b.st));
    }
    if (rc == MPI_SUCCESS || rc == MPI_ERR_IN_STATUS) {
        if (f)
            for (int i = 0; i < count; i++)
                batch_complete(&b, i, mana_status_ignored(sts) ? NULL : &sts[i]);
    }
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
        if (done_by_checkpoint(b->v[i]))
            return i;
    return -1;
}

static int any_common(int count, MPI_Request v[], int *index, int *flag, MPI_Status *status, int blocking)
{
    BATCH_SCRATCH;
    int rc = batch_init(&b, count, v, s_before, s_real, s_st, NULL);
    if (rc != MPI_SUCCESS)
        return rc;
    int f = 0, i = first_done(&b);
    MPI_Status st;
    if (mana_status_ignored(status))
        empty_status(&st);
    else
        mana_status_copy(&st, status);
    if (i >= 0) {
        f = 1;
    } else {
        testany_fn testany = LOWER_PTR(testany_fn, 4292, "PMPI_Testany");
        if (blocking) {
            MANA_TEST_LOOP(rc, f, testany(count, b.real, &i, &f, &st));
        } else {
            unsigned long fs = mana_thread_lower_fs();
            mana_gate_enter();
            unsigned long up = mana_enter_lower(fs);
            rc = testany(count, b.real, &i, &f, &st);
            mana_leave_lower(up);
            mana_gate_leave();
        }
    }
    if (i >= 0 && i < count && !done_by_checkpoint(v[i]))
        b.st[i] = st;
    if ((rc == MPI_SUCCESS || rc == MPI_ERR_IN_STATUS) && f && i >= 0 && i < count)
        batch_complete(&b, i, mana_status_ignored(status) ? NULL : status);
    else if (f && !mana_status_ignored(status))
        mana_status_copy(status, &st);
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

/* One MPI_Testsome; `*got` when something completed (or nothing is active). */
static int testsome_step(testsome_fn f, int incount, MPI_Request *real, int *n, int *idx, MPI_Status *st, int *got)
{
    int rc = f(incount, real, n, idx, st);
    *got = rc == MPI_SUCCESS && *n != 0;
    return rc;
}

static int some_common(int incount, MPI_Request v[], int *outcount, int indices[], MPI_Status sts[], int blocking)
{
    BATCH_SCRATCH;
    int rc = batch_init(&b, incount, v, s_before, s_real, s_st, NULL);
    if (rc != MPI_SUCCESS)
        return rc;
    int n = 0, *idx = indices;
    int s_idx[MANA_TMP_INLINE], *lidx = incount <= MANA_TMP_INLINE ? s_idx : malloc((size_t)incount * sizeof(int));
    MPI_Status s_lst[MANA_TMP_INLINE],
        *lst = incount <= MANA_TMP_INLINE ? s_lst : malloc((size_t)incount * sizeof(MPI_Status));
    /* Output statuses are compacted: the k-th completion's lands in sts[k]. */
    for (int k = 0; k < incount; k++)
        if (mana_status_ignored(sts))
            empty_status(&lst[k]);
        else
            mana_status_copy(&lst[k], &sts[k]);
    if (b.done) {
        for (int i = 0; i < incount; i++)
            if (done_by_checkpoint(v[i]))
                idx[n++] = i;
    } else {
        testsome_fn testsome = LOWER_PTR(testsome_fn, 4293, "PMPI_Testsome");
        int got = 0;
        if (blocking) {
            MANA_TEST_LOOP(rc, got, testsome_step(testsome, incount, b.real, &n, lidx, lst, &got));
        } else {
            unsigned long fs = mana_thread_lower_fs();
            mana_gate_enter();
            unsigned long up = mana_enter_lower(fs);
            rc = testsome(incount, b.real, &n, lidx, lst);
            mana_leave_lower(up);
            mana_gate_leave();
        }
        if (n != MPI_UNDEFINED)
            for (int k = 0; k < n; k++) {
                idx[k] = lidx[k];
                b.st[lidx[k]] = lst[k];
            }
    }
    if (b.done) {
        for (int k = 0; k < n; k++)
            if (!mana_status_ignored(sts))
                mana_status_copy(&b.st[idx[k]], &sts[k]);
    }
    if (n != MPI_UNDEFINED)
        for (int k = 0; k < n; k++)
            batch_complete(&b, idx[k], mana_status_ignored(sts) ? NULL : &sts[k]);
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
    struct mana_req_meta *m = mana_req_meta(request);
    if (m && m->state == MANA_REQ_DONE) {
        *flag = 1;
        if (!mana_status_ignored(status))
            mana_status_copy(status, &m->status);
        return MPI_SUCCESS;
    }
    MPI_Request r = mana_h_real(request);
    MPI_Status st, *sp = mana_status_ignored(status) ? status : &st;
    if (sp == &st)
        mana_status_copy(&st, status);
    int rc;
    {
        MANA_FORWARD_INTO(rc, 4294, "PMPI_Request_get_status", int, (MPI_Request, int *, MPI_Status *),
                          (r, flag, sp));
    }
    if (sp == &st)
        mana_status_copy(status, &st);
    return rc;
}
MANA_EXPORT(mana_w_MPI_Request_get_status, MPI_Request_get_status)
MANA_EXPORT(mana_w_MPI_Request_get_status, PMPI_Request_get_status)

/* An active receive the application frees still completes in the lower half: the
 * request is kept (hidden from the application) so that the drain can count it. */
__attribute__((used)) static int mana_w_MPI_Request_free(MPI_Request *request)
{
    struct mana_req_meta *m = mana_req_meta(*request);
    if (m && m->state == MANA_REQ_DONE) {
        mana_req_release(*request);
        *request = MPI_REQUEST_NULL;
        return MPI_SUCCESS;
    }
    if (m && m->kind == MANA_REQ_RECV && m->active && !m->persistent) {
        m->app_freed = 1;
        *request = MPI_REQUEST_NULL;
        return MPI_SUCCESS;
    }
    MPI_Request before = mana_h_real(*request), r = before;
    int rc;
    {
        MANA_FORWARD_INTO(rc, 4295, "PMPI_Request_free", int, (MPI_Request *), (&r));
    }
    *request = mana_h_inout_done(*request, before, r);
    return rc;
}
MANA_EXPORT(mana_w_MPI_Request_free, MPI_Request_free)
MANA_EXPORT(mana_w_MPI_Request_free, PMPI_Request_free)

/* Cancelling a request the checkpointer already completed does nothing (DRAIN.md §2.7). */
__attribute__((used)) static int mana_w_MPI_Cancel(MPI_Request *request)
{
    if (done_by_checkpoint(*request))
        return MPI_SUCCESS;
    MPI_Request r = mana_h_real(*request);
    int rc;
    {
        MANA_FORWARD_INTO(rc, 4296, "PMPI_Cancel", int, (MPI_Request *), (&r));
    }
    return rc;
}
MANA_EXPORT(mana_w_MPI_Cancel, MPI_Cancel)
MANA_EXPORT(mana_w_MPI_Cancel, PMPI_Cancel)
