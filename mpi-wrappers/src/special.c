/* Hand-written wrappers (listed in gen/handwritten.txt; the generator skips them). */
#include "mana_wrap.h"
#include <fcntl.h>
#include <signal.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

__thread unsigned long mana_tls_lower_fs __attribute__((tls_model("initial-exec"), visibility("hidden")));
__thread unsigned long mana_tls_lower_gen __attribute__((tls_model("initial-exec"), visibility("hidden")));

/* Varargs cannot be forwarded generically; MPICH's MPI_Pcontrol only returns
 * MPI_SUCCESS, and so does this. */
int MPI_Pcontrol(const int level, ...)
{
    (void)level;
    return MPI_SUCCESS;
}
int PMPI_Pcontrol(const int level, ...) __attribute__((alias("MPI_Pcontrol")));

/* Application callbacks are called by MPICH in the lower world, with the lower TCB in
 * FS: each is registered through a trampoline that switches to the upper TCB for the
 * call. MPI functions take no user-data pointer, so trampolines are a fixed pool of
 * slots, one per registered callback. */
#define MANA_SLOTS 64
#define MANA_REPEAT64(M) M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7) M(8) M(9) M(10) M(11) M(12) \
    M(13) M(14) M(15) M(16) M(17) M(18) M(19) M(20) M(21) M(22) M(23) M(24) M(25) M(26) M(27) \
    M(28) M(29) M(30) M(31) M(32) M(33) M(34) M(35) M(36) M(37) M(38) M(39) M(40) M(41) M(42) \
    M(43) M(44) M(45) M(46) M(47) M(48) M(49) M(50) M(51) M(52) M(53) M(54) M(55) M(56) M(57) \
    M(58) M(59) M(60) M(61) M(62) M(63)

static int mana_slots_full(const char *what)
{
    fprintf(stderr, "mana: more than %d %s alive at once; MANA-rs supports %d\n", MANA_SLOTS, what, MANA_SLOTS);
    return MPI_ERR_INTERN;
}

/* A pool's busy slots, one bit each: a slot is taken when its object is created and given
 * back when the application's last handle to it is released (mana_handle_released). */
typedef unsigned long long slot_pool;

static int slot_take(slot_pool *busy)
{
    slot_pool b = __atomic_load_n(busy, __ATOMIC_RELAXED);
    for (;;) {
        if (~b == 0)
            return MANA_SLOTS;
        int k = __builtin_ctzll(~b);
        if (__atomic_compare_exchange_n(busy, &b, b | (1ull << k), 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
            return k;
    }
}

static void slot_put(slot_pool *busy, int k)
{
    if (k >= 0 && k < MANA_SLOTS)
        __atomic_fetch_and(busy, ~(1ull << k), __ATOMIC_RELEASE);
}

/* MPI_Op_create / MPI_Op_create_c */
static MPI_User_function *op_fn[MANA_SLOTS];
static MPI_User_function_c *op_fn_c[MANA_SLOTS];
/* An operation made by the C++ binding (libmpichcxx's MPII_Op_set_cxx): called through
 * the binding's caller with the C++ function, as MPICH would. */
typedef void(mana_cxx_op_call)(const void *, void *, int, MPI_Datatype, MPI_User_function *);
static mana_cxx_op_call *op_cxx_call[MANA_SLOTS];
static slot_pool op_busy, op_busy_c;
#define OP_TRAMP(k)                                                                     \
    static void op_tramp_##k(void *in, void *inout, int *len, MPI_Datatype *dt)          \
    {                                                                                   \
        unsigned long l_ = mana_callback_enter();                                       \
        MPI_Datatype v_ = mana_h_lookup_virtual(*dt);                                   \
        if (op_cxx_call[k])                                                             \
            op_cxx_call[k](in, inout, *len, v_, op_fn[k]);                              \
        else                                                                            \
            op_fn[k](in, inout, len, &v_);                                              \
        mana_callback_leave(l_);                                                        \
    }                                                                                   \
    static void op_tramp_c_##k(void *in, void *inout, MPI_Count *len, MPI_Datatype *dt) \
    {                                                                                   \
        unsigned long l_ = mana_callback_enter();                                       \
        MPI_Datatype v_ = mana_h_lookup_virtual(*dt);                                   \
        op_fn_c[k](in, inout, len, &v_);                                                \
        mana_callback_leave(l_);                                                        \
    }
MANA_REPEAT64(OP_TRAMP)
#define OP_ENTRY(k) op_tramp_##k,
#define OP_ENTRY_C(k) op_tramp_c_##k,
static MPI_User_function *const op_tramps[MANA_SLOTS] = {MANA_REPEAT64(OP_ENTRY)};
static MPI_User_function_c *const op_tramps_c[MANA_SLOTS] = {MANA_REPEAT64(OP_ENTRY_C)};

/* What a restart needs to create a user operation again: its slot (trampoline), whether it
 * is the large-count kind, whether it commutes — kept in the handle's aux word. */
#define AUX_OP_LARGE 0x10000u
#define AUX_OP_COMMUTE 0x20000u
static int op_created(int r, MPI_Op op, int k, int large, int commute)
{
    if (r != MPI_SUCCESS)
        slot_put(large ? &op_busy_c : &op_busy, k);
    unsigned *aux = r == MPI_SUCCESS ? mana_h_aux(op) : NULL;
    if (aux)
        *aux = (unsigned)(k + 1) | (large ? AUX_OP_LARGE : 0) | (commute ? AUX_OP_COMMUTE : 0);
    return r;
}

static void eh_released(unsigned aux);

/* The last reference to a user operation or error handler is gone: its slot can serve a
 * new one. The last reference to a datatype is gone: the frees MPI_Type_free deferred
 * reach the lower half now. Its real handle and the count are read holding the gate: the
 * caller (MPI_Type_free's wrapper, which holds none) may wait at it while a checkpoint is
 * taken and wake up in a restarted process, where `v` names the type the restart created
 * again, which the new MPI counts once (the restart's MANA_AUX_FREE_ONCE in the aux word).
 * Freeing the old lower half's handle there freed another object, or one already freed
 * (xdlu of scalapack-mpi-test, restarted: MPICH's "ref_count >= 0" assertion). */
MANA_LOWER_FUNCTION(lower_type_free, 4055, "PMPI_Type_free", (MPI_Datatype * t), (t))

void mana_handle_released(int kind, unsigned aux, int v)
{
    if (kind == 0x3) {
        mana_gate_enter();
        unsigned *word = mana_h_aux(v);
        unsigned again = word ? __atomic_exchange_n(word, 0, __ATOMIC_RELAXED) : 0;
        const int real = mana_h_real(v);
        unsigned owed = mana_tc_released(again ? again : aux, real);
        unsigned frees = owed & MANA_AUX_FREE_ONCE ? 1 + (owed & 0xffffu) : owed;
        for (unsigned i = 0; i < frees; i++) {
            MPI_Datatype t = real;
            lower_type_free(&t);
        }
        mana_gate_leave();
        return;
    }
    if (kind == 0x6) {
        if (!(aux & AUX_OP_LARGE) && (aux & 0xffff))
            op_cxx_call[(aux & 0xffff) - 1] = NULL;
        slot_put((aux & AUX_OP_LARGE) ? &op_busy_c : &op_busy, (int)(aux & 0xffff) - 1);
    }
    else if (kind == 0x5)
        eh_released(aux);
}

int mana_recreate_op(int op)
{
    unsigned *aux = mana_h_aux(op), a = aux ? *aux : 0;
    int k = (int)(a & 0xffff) - 1, commute = !!(a & AUX_OP_COMMUTE), r;
    if (k < 0)
        return MPI_ERR_OP;
    MPI_Op op_l = 0;
    if (a & AUX_OP_LARGE) {
        MPI_User_function_c *tramp = op_tramps_c[k];
        MANA_CALL_LOWER_INTO(r, 4001, "PMPI_Op_create_c", int, (MPI_User_function_c * f, int c, MPI_Op *o),
                             (tramp, commute, &op_l));
    } else {
        MPI_User_function *tramp = op_tramps[k];
        MANA_CALL_LOWER_INTO(r, 4000, "PMPI_Op_create", int, (MPI_User_function * f, int c, MPI_Op *o),
                             (tramp, commute, &op_l));
    }
    if (r == MPI_SUCCESS)
        mana_h_set_real(op, op_l);
    return r;
}

__attribute__((used)) static int mana_w_MPI_Op_create(MPI_User_function *user_fn, int commute, MPI_Op *op)
{
    int k = slot_take(&op_busy);
    if (k >= MANA_SLOTS)
        return mana_slots_full("user-defined operations");
    op_fn[k] = user_fn;
    MPI_User_function *tramp = op_tramps[k];
    MPI_Op op_l = 0;
    int r;
    {
        MANA_FORWARD_INTO(r, 4000, "PMPI_Op_create", int, (MPI_User_function * f, int c, MPI_Op *o),
                          (tramp, commute, &op_l));
    }
    r = mana_out_handle(r, op, op_l);
    return op_created(r, *op, k, 0, commute);
}
MANA_EXPORT(mana_w_MPI_Op_create, MPI_Op_create)
MANA_EXPORT(mana_w_MPI_Op_create, PMPI_Op_create)

__attribute__((used)) static int mana_w_MPI_Op_create_c(MPI_User_function_c *user_fn, int commute, MPI_Op *op)
{
    int k = slot_take(&op_busy_c);
    if (k >= MANA_SLOTS)
        return mana_slots_full("large-count user-defined operations");
    op_fn_c[k] = user_fn;
    MPI_User_function_c *tramp = op_tramps_c[k];
    MPI_Op op_l = 0;
    int r;
    {
        MANA_FORWARD_INTO(r, 4001, "PMPI_Op_create_c", int, (MPI_User_function_c * f, int c, MPI_Op *o),
                          (tramp, commute, &op_l));
    }
    r = mana_out_handle(r, op, op_l);
    return op_created(r, *op, k, 1, commute);
}
MANA_EXPORT(mana_w_MPI_Op_create_c, MPI_Op_create_c)
MANA_EXPORT(mana_w_MPI_Op_create_c, PMPI_Op_create_c)

/* libmpichcxx marks an operation it created as C++: MPICH would call `opcall` with the
 * C++ function instead of the function itself. The lower half keeps calling our
 * trampoline as a C function; the trampoline calls `opcall` (kept in upper memory, so a
 * restart keeps it too). */
__attribute__((used)) static void mana_w_MPII_Op_set_cxx(MPI_Op op, void (*opcall)(void))
{
    unsigned *aux = mana_h_aux(op);
    if (aux && (*aux & 0xffff) && !(*aux & AUX_OP_LARGE))
        op_cxx_call[(*aux & 0xffff) - 1] = (mana_cxx_op_call *)opcall;
}
MANA_EXPORT(mana_w_MPII_Op_set_cxx, MPII_Op_set_cxx)

/* Error handlers (communicator, window, file, session): MPICH calls them with
 * (handle *, code *); the handle is passed by address whatever its type, so one pool
 * serves every kind. The handler sees the application's handle. */
typedef void(mana_errh_fn)(void *, int *, ...);
static mana_errh_fn *eh_fn[MANA_SLOTS];
static char eh_is_file[MANA_SLOTS];
/* A handler made by the C++ binding (MPII_Errhandler_set_cxx): MPICH calls the binding's
 * `errcall(kind, handle *, code *, handler)` (kind 0 communicator, 1 file, 2 window). */
typedef void(mana_cxx_eh_call)(int, void *, int *, void (*)(void));
static mana_cxx_eh_call *eh_cxx_call[MANA_SLOTS];
static char eh_cxx_kind[MANA_SLOTS];
static slot_pool eh_busy;
static void eh_call(int k, void *handle, int *code)
{
    if (eh_cxx_call[k])
        eh_cxx_call[k](eh_cxx_kind[k], handle, code, (void (*)(void))eh_fn[k]);
    else
        eh_fn[k](handle, code);
}
#define EH_TRAMP(k)                                                  \
    static void eh_tramp_##k(void *handle, int *code, ...)           \
    {                                                                \
        unsigned long l_ = mana_callback_enter();                    \
        if (eh_is_file[k]) {                                         \
            MPI_File f_ = mana_file_virtual(*(MPI_File *)handle);    \
            eh_call(k, &f_, code);                                   \
        } else {                                                     \
            int v_ = mana_h_lookup_virtual(*(int *)handle);          \
            eh_call(k, &v_, code);                                   \
        }                                                            \
        mana_callback_leave(l_);                                     \
    }
MANA_REPEAT64(EH_TRAMP)
#define EH_ENTRY(k) eh_tramp_##k,
static mana_errh_fn *const eh_tramps[MANA_SLOTS] = {MANA_REPEAT64(EH_ENTRY)};

/* The lower functions that create each kind of handler; a handler's aux word holds its
 * slot + 1 and (<< 16) its index here, for a restart. */
static const struct {
    unsigned id;
    const char *name;
} eh_creators[] = {{4002, "PMPI_Comm_create_errhandler"},
                   {4014, "PMPI_Win_create_errhandler"},
                   {4015, "PMPI_File_create_errhandler"},
                   {4016, "PMPI_Session_create_errhandler"}};

/* Creates handler slot `k` in the lower half with creator `which`, without the gate. */
static int eh_create_lower(int k, int which, MPI_Errhandler *eh_l)
{
    void *tramp = (void *)eh_tramps[k];
    int (*f)(void *, MPI_Errhandler *) =
        (int (*)(void *, MPI_Errhandler *))mana_lower_fn(eh_creators[which].id, eh_creators[which].name,
                                                         mana_thread_lower_fs());
    unsigned long up = mana_enter_lower(mana_thread_lower_fs());
    int r = f(tramp, eh_l);
    mana_leave_lower(up);
    return r;
}

static void eh_released(unsigned aux)
{
    if (aux & 0xffff)
        eh_cxx_call[(aux & 0xffff) - 1] = NULL;
    slot_put(&eh_busy, (int)(aux & 0xffff) - 1);
}

/* The lower half's C++ dispatcher: MPICH calls it, for a handler marked C++, with the
 * handler's function — our trampoline, a C function. */
static void eh_lower_cxx_call(int kind, void *handle, int *code, void (*fn)(void))
{
    (void)kind;
    ((mana_errh_fn *)(void *)fn)(handle, code);
}

/* Marks the lower handler `eh_l` C++ too, without the gate: MPICH then returns
 * MPI_SUCCESS after calling it, as natively (a C++ handler throws or returns; there is
 * no error code), so the binding does not call it a second time (MPICH's
 * errors/cxx/errhan/errsetx counts the calls). */
static void eh_mark_lower_cxx(MPI_Errhandler eh_l)
{
    void (*f)(MPI_Errhandler, void (*)(void)) = (void (*)(MPI_Errhandler, void (*)(void)))mana_lower_fn(
        4800, "MPII_Errhandler_set_cxx", mana_thread_lower_fs());
    unsigned long up = mana_enter_lower(mana_thread_lower_fs());
    f(eh_l, (void (*)(void))eh_lower_cxx_call);
    mana_leave_lower(up);
}

/* libmpichcxx marks a handler it created as C++ (see eh_call). */
__attribute__((used)) static void mana_w_MPII_Errhandler_set_cxx(MPI_Errhandler eh, void (*errcall)(void))
{
    static const char cxx_kind[] = {0, 2, 1, 0}; /* creator → MPICH's C++ handle kind */
    unsigned *aux = mana_h_aux(eh);
    if (!aux || !(*aux & 0xffff))
        return;
    int k = (int)(*aux & 0xffff) - 1;
    eh_cxx_kind[k] = cxx_kind[(*aux >> 16) & 3];
    eh_cxx_call[k] = (mana_cxx_eh_call *)errcall;
    mana_gate_enter();
    eh_mark_lower_cxx(mana_h_real(eh));
    mana_gate_leave();
}
MANA_EXPORT(mana_w_MPII_Errhandler_set_cxx, MPII_Errhandler_set_cxx)

int mana_recreate_errhandler(int eh)
{
    unsigned *aux = mana_h_aux(eh), a = aux ? *aux : 0;
    MPI_Errhandler eh_l = 0;
    if (!(a & 0xffff))
        return MPI_ERR_ARG;
    int k = (int)(a & 0xffff) - 1;
    int r = eh_create_lower(k, (int)(a >> 16), &eh_l);
    if (r == MPI_SUCCESS) {
        mana_h_set_real(eh, eh_l);
        if (eh_cxx_call[k])
            eh_mark_lower_cxx(eh_l);
    }
    return r;
}

#define ERRHANDLER_WRAPPER(NAME, WHICH, IS_FILE)                                               \
    __attribute__((used)) static int mana_w_##NAME(void *fn, MPI_Errhandler *eh)               \
    {                                                                                          \
        int k = slot_take(&eh_busy);                                                           \
        if (k >= MANA_SLOTS)                                                                   \
            return mana_slots_full("error handlers");                                          \
        eh_fn[k] = (mana_errh_fn *)fn;                                                         \
        eh_is_file[k] = IS_FILE;                                                               \
        MPI_Errhandler eh_l = 0;                                                               \
        mana_gate_enter();                                                                     \
        int r = eh_create_lower(k, WHICH, &eh_l);                                              \
        r = mana_out_handle(r, eh, eh_l);                                                      \
        if (r != MPI_SUCCESS)                                                                  \
            slot_put(&eh_busy, k);                                                             \
        unsigned *aux = r == MPI_SUCCESS ? mana_h_aux(*eh) : NULL;                             \
        if (aux)                                                                               \
            *aux = (unsigned)(k + 1) | (WHICH << 16);                                          \
        mana_gate_leave();                                                                     \
        return r;                                                                              \
    }                                                                                          \
    MANA_EXPORT(mana_w_##NAME, NAME)                                                           \
    MANA_EXPORT(mana_w_##NAME, P##NAME)
ERRHANDLER_WRAPPER(MPI_Comm_create_errhandler, 0, 0)
ERRHANDLER_WRAPPER(MPI_Win_create_errhandler, 1, 0)
ERRHANDLER_WRAPPER(MPI_File_create_errhandler, 2, 1)
ERRHANDLER_WRAPPER(MPI_Session_create_errhandler, 3, 0)

/* Generalized requests: query, free and cancel functions, one slot per request. The
 * lower MPICH calls the trampolines with C's conventions always (MANA does not pass
 * MPII_Grequest_set_lang_f77 on). A request the Fortran binding made
 * (MPII_Grequest_set_lang_f77) gets Fortran's from the trampolines: arguments by
 * reference, a trailing `ierr` of the trampoline's own (until 2026-12-04 the trampolines
 * took a third argument MPICH never passes for C, and the Fortran query function wrote
 * its `ierr` there: MPICH's f77/pt2pt/greqf died of SIGSEGV), a Fortran status (MPICH's
 * MPI_Status is one, MPI_STATUS_SIZE integers). */
typedef int(mana_gq_fn)(void *, MPI_Status *);
typedef int(mana_gf_fn)(void *);
typedef int(mana_gc_fn)(void *, int);
typedef void(mana_gq_f77)(void *, MPI_Fint *, MPI_Fint *);
typedef void(mana_gf_f77)(void *, MPI_Fint *);
typedef void(mana_gc_f77)(void *, MPI_Fint *, MPI_Fint *);
static mana_gq_fn *gq_fn[MANA_SLOTS];
static mana_gf_fn *gf_fn[MANA_SLOTS];
static mana_gc_fn *gc_fn[MANA_SLOTS];
static MPI_Request gr_request[MANA_SLOTS]; /* the application's handle of each slot */
static char gr_f77[MANA_SLOTS];
static int gr_used;
static int gq_call(int k, void *ex, MPI_Status *st)
{
    if (!gr_f77[k])
        return gq_fn[k](ex, st);
    MPI_Fint ierr = MPI_SUCCESS;
    ((mana_gq_f77 *)gq_fn[k])(ex, (MPI_Fint *)st, &ierr);
    return (int)ierr;
}
static int gf_call(int k, void *ex)
{
    if (!gr_f77[k])
        return gf_fn[k](ex);
    MPI_Fint ierr = MPI_SUCCESS;
    ((mana_gf_f77 *)gf_fn[k])(ex, &ierr);
    return (int)ierr;
}
static int gc_call(int k, void *ex, int complete)
{
    if (!gr_f77[k])
        return gc_fn[k](ex, complete);
    MPI_Fint ierr = MPI_SUCCESS, c = complete ? 1 : 0; /* Fortran's .TRUE. in gfortran */
    ((mana_gc_f77 *)gc_fn[k])(ex, &c, &ierr);
    return (int)ierr;
}
#define GR_TRAMP(k)                                                  \
    static int gq_tramp_##k(void *ex, MPI_Status *st)                \
    {                                                                \
        unsigned long l_ = mana_callback_enter();                    \
        MPI_Status s_;                                               \
        mana_status_copy(&s_, st);                                   \
        int r_ = gq_call(k, ex, &s_);                                \
        mana_status_copy(st, &s_);                                   \
        mana_callback_leave(l_);                                     \
        return r_;                                                   \
    }                                                                \
    static int gf_tramp_##k(void *ex)                                \
    {                                                                \
        unsigned long l_ = mana_callback_enter();                    \
        int r_ = gf_call(k, ex);                                     \
        mana_callback_leave(l_);                                     \
        return r_;                                                   \
    }                                                                \
    static int gc_tramp_##k(void *ex, int complete)                  \
    {                                                                \
        unsigned long l_ = mana_callback_enter();                    \
        int r_ = gc_call(k, ex, complete);                           \
        mana_callback_leave(l_);                                     \
        return r_;                                                   \
    }
MANA_REPEAT64(GR_TRAMP)
#define GQ_ENTRY(k) (void *)gq_tramp_##k,
#define GF_ENTRY(k) (void *)gf_tramp_##k,
#define GC_ENTRY(k) (void *)gc_tramp_##k,
static void *const gq_tramps[MANA_SLOTS] = {MANA_REPEAT64(GQ_ENTRY)};
static void *const gf_tramps[MANA_SLOTS] = {MANA_REPEAT64(GF_ENTRY)};
static void *const gc_tramps[MANA_SLOTS] = {MANA_REPEAT64(GC_ENTRY)};

__attribute__((used)) static int mana_w_MPI_Grequest_start(MPI_Grequest_query_function *query,
                                                           MPI_Grequest_free_function *freef,
                                                           MPI_Grequest_cancel_function *cancel, void *extra,
                                                           MPI_Request *request)
{
    int k = __atomic_fetch_add(&gr_used, 1, __ATOMIC_RELAXED);
    if (k >= MANA_SLOTS)
        return mana_slots_full("generalized requests");
    gq_fn[k] = query;
    gf_fn[k] = freef;
    gc_fn[k] = cancel;
    void *q = gq_tramps[k], *f = gf_tramps[k], *c = gc_tramps[k];
    MPI_Request req_l = 0;
    int r;
    {
        MANA_FORWARD_INTO(r, 4017, "PMPI_Grequest_start", int,
                          (void *q_, void *f_, void *c_, void *e_, MPI_Request *r_), (q, f, c, extra, &req_l));
    }
    r = mana_out_handle(r, request, req_l);
    if (r == MPI_SUCCESS)
        gr_request[k] = *request;
    return r;
}
/* The Fortran binding's MPI_GREQUEST_START marks the request it just started as Fortran's. */
__attribute__((used)) static void mana_w_MPII_Grequest_set_lang_f77(MPI_Request greq)
{
    int n = __atomic_load_n(&gr_used, __ATOMIC_RELAXED);
    for (int k = (n < MANA_SLOTS ? n : MANA_SLOTS) - 1; k >= 0; k--)
        if (gr_request[k] == greq) {
            gr_f77[k] = 1;
            return;
        }
}
MANA_EXPORT(mana_w_MPII_Grequest_set_lang_f77, MPII_Grequest_set_lang_f77)
MANA_EXPORT(mana_w_MPI_Grequest_start, MPI_Grequest_start)
MANA_EXPORT(mana_w_MPI_Grequest_start, PMPI_Grequest_start)

/* MANA_MPI_TIMES=FILE: appends `init RANK UNIX_NS` when MPI_Init(_thread) has returned,
 * `finalize_called RANK UNIX_NS` when the application calls MPI_Finalize and
 * `finalize RANK UNIX_NS` when MPICH's MPI_Finalize is called (later if a pending
 * checkpoint held the rank at the wrapper's entry) (CLOCK_REALTIME; RANK from the
 * launcher's PMI_RANK). For harnesses that need the instants between which a checkpoint
 * lands inside a program's MPI lifetime (scripts/mpich-testsuite.sh); also `calls RANK N`
 * at MPI_Finalize (below). The file is open only for the write. */
static void mana_mark_time(const char *what)
{
    const char *path = getenv("MANA_MPI_TIMES");
    if (!path || !*path)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    const char *rank = getenv("PMI_RANK");
    char line[128];
    int n = snprintf(line, sizeof line, "%s %s %lld\n", what, rank ? rank : "0",
                     (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    if (write(fd, line, (size_t)n) != n) {
        /* best effort: the harness sees a missing line */
    }
    close(fd);
}

/* MANA_CKPT_AT_NS=RANK:NS, for harnesses (scripts/mpich-testsuite.sh, restart mode), with
 * `mana_launch --checkpoint-signal SIG`: the first MPI call rank RANK makes NS nanoseconds
 * or more after its MPI_Init returned sends the process SIG — a job-wide checkpoint, which
 * also ends the job when MANA_CHECKPOINT_ON_SIGNAL_KILL=1 — and waits at that call,
 * outside MPI, until the checkpoint's agreement has begun (at most 5 s); the call then
 * meets the closed gate as any other. An instant inside a program's MPI lifetime that no
 * external trigger can hit when the program spends a millisecond there: the rank is held
 * until the checkpoint is under way, so the job cannot end first. (Held longer, to the
 * end of the checkpoint, the rank would stop a peer's collective from reaching the
 * agreement's target.) With MANA_MPI_TIMES, MPI_Finalize also writes
 * `calls RANK N`, the MPI calls counted since MPI_Init returned. Calls are counted at the
 * gate's entry, outermost only (mana_wrap.h), while mana_call_trigger is set. */
int mana_call_trigger;
static unsigned long long calls_counted, trigger_deadline_ns;
static int trigger_signal;
static volatile int trigger_restarted;

static unsigned long long monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (unsigned long long)ts.tv_sec * 1000000000ULL + (unsigned long long)ts.tv_nsec;
}

static void call_trigger_start(void)
{
    const char *times = getenv("MANA_MPI_TIMES"), *at = getenv("MANA_CKPT_AT_NS");
    const char *rank = getenv("PMI_RANK"), *sig = getenv("MANA_CHECKPOINT_ON_SIGNAL");
    int want = -1;
    unsigned long long ns = 0;
    trigger_deadline_ns = 0;
    if (at && sig && sscanf(at, "%d:%llu", &want, &ns) == 2 && want == (rank ? atoi(rank) : 0) && atoi(sig) > 0) {
        trigger_deadline_ns = monotonic_ns() + ns;
        trigger_signal = atoi(sig);
    }
    __atomic_store_n(&calls_counted, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&mana_call_trigger, (times && *times) || trigger_deadline_ns, __ATOMIC_RELEASE);
}

/* Sends the checkpoint signal once (`now`: whether or not the deadline has passed) and
 * holds the calling thread until the checkpoint's agreement has begun. */
static void trigger_fire(int now)
{
    unsigned long long deadline = __atomic_load_n(&trigger_deadline_ns, __ATOMIC_RELAXED);
    if (!deadline || (!now && monotonic_ns() < deadline) ||
        !__atomic_compare_exchange_n(&trigger_deadline_ns, &deadline, 0, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
        return;
    trigger_restarted = 0;
    kill(getpid(), trigger_signal);
    /* Also until a restart: the checkpoint may stop this thread after the agreement began
     * but before it looked again, and a restored process has no checkpoint pending. */
    for (int i = 0; i < 5000 && !mana_ckpt_pending() && !trigger_restarted; i++) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}

void mana_call_trigger_restarted(void)
{
    trigger_restarted = 1;
}

void mana_count_call(void)
{
    __atomic_add_fetch(&calls_counted, 1, __ATOMIC_RELAXED);
    trigger_fire(0);
}

/* At the application's MPI_Finalize call: a trigger whose instant the rank's calls did
 * not reach (its last ones blocked past it, or it made none since) fires now, still
 * inside the MPI lifetime. */
static void call_trigger_stop(void)
{
    trigger_fire(1);
    __atomic_store_n(&mana_call_trigger, 0, __ATOMIC_RELEASE);
    const char *path = getenv("MANA_MPI_TIMES"), *rank = getenv("PMI_RANK");
    if (!path || !*path)
        return;
    char line[96];
    int n = snprintf(line, sizeof line, "calls %s %llu\n", rank ? rank : "0",
                     __atomic_load_n(&calls_counted, __ATOMIC_RELAXED));
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    if (write(fd, line, (size_t)n) != n) {
        /* best effort: the harness sees a missing line */
    }
    close(fd);
}

/* MPI_Finalize: lets the runtime look at the lower half one last time (region dump for
 * tests, MANA_DUMP_REGIONS) before the real MPI_Finalize. Counted as a collective on
 * MPI_COMM_WORLD (as MPI_Init is), so that a checkpoint's agreement converges with every
 * rank on the same side of it: all still in MPI, or all finalized (mana_mpi_phase). */
extern void mana_before_finalize(void);
__attribute__((used)) static int mana_w_MPI_Finalize(void)
{
    mana_mark_time("finalize_called");
    call_trigger_stop();
    mana_before_finalize();
    mana_tc_free_parked();
    const int counted = mana_coll_enter(MPI_COMM_WORLD);
    mana_mark_time("finalize");
    int r;
    {
        MANA_FORWARD_INTO(r, 4003, "PMPI_Finalize", int, (void), ());
    }
    if (r == MPI_SUCCESS)
        __atomic_store_n(&mana_mpi_phase, MANA_PHASE_FINALIZED, __ATOMIC_RELEASE);
    mana_coll_leave(counted);
    return r;
}
MANA_EXPORT(mana_w_MPI_Finalize, MPI_Finalize)
MANA_EXPORT(mana_w_MPI_Finalize, PMPI_Finalize)

/* MPI_Initialized / MPI_Finalized are answered from mana_mpi_phase, without the lower
 * half: before MPI_Init they do not load one (Python bindings ask at import), and after a
 * restart of a finalized process — which gets no new lower half — they still say what
 * MPICH said before the checkpoint. */
__attribute__((used)) static int mana_w_MPI_Initialized(int *flag)
{
    *flag = __atomic_load_n(&mana_mpi_phase, __ATOMIC_ACQUIRE) != MANA_PHASE_BEFORE_INIT;
    return MPI_SUCCESS;
}
MANA_EXPORT(mana_w_MPI_Initialized, MPI_Initialized)
MANA_EXPORT(mana_w_MPI_Initialized, PMPI_Initialized)

__attribute__((used)) static int mana_w_MPI_Finalized(int *flag)
{
    *flag = __atomic_load_n(&mana_mpi_phase, __ATOMIC_ACQUIRE) == MANA_PHASE_FINALIZED;
    return MPI_SUCCESS;
}
MANA_EXPORT(mana_w_MPI_Finalized, MPI_Finalized)
MANA_EXPORT(mana_w_MPI_Finalized, PMPI_Finalized)

/* MPI_UNWEIGHTED and MPI_WEIGHTS_EMPTY are sentinel addresses exported as constant
 * pointers. The application gets ours; wrappers of the functions taking weights
 * translate them to the lower library's, read from its own exported pointers. */
static int mana_unweighted_sentinel, mana_weights_empty_sentinel;
__attribute__((used)) static int *const mana_p_unweighted = &mana_unweighted_sentinel;
__attribute__((used)) static int *const mana_p_weights_empty = &mana_weights_empty_sentinel;
__asm__(".globl MPI_UNWEIGHTED\n.type MPI_UNWEIGHTED, @object\n.size MPI_UNWEIGHTED, 8\n"
        ".set MPI_UNWEIGHTED, mana_p_unweighted");
__asm__(".globl MPI_WEIGHTS_EMPTY\n.type MPI_WEIGHTS_EMPTY, @object\n.size MPI_WEIGHTS_EMPTY, 8\n"
        ".set MPI_WEIGHTS_EMPTY, mana_p_weights_empty");

const void *mana_translate_weights_impl(const void *p)
{
    const char *name;
    if (p == &mana_unweighted_sentinel)
        name = "MPI_UNWEIGHTED";
    else if (p == &mana_weights_empty_sentinel)
        name = "MPI_WEIGHTS_EMPTY";
    else
        return p;
    /* The lower library's exported pointer variable holds its sentinel. */
    const void *const *lower = mana_lower_fn(p == &mana_unweighted_sentinel ? 4004 : 4005, name, mana_thread_lower_fs());
    return *lower;
}

/* Attribute copy/delete callbacks (MPI_Comm/Type/Win_create_keyval and the MPI-1
 * MPI_Keyval_create). Handles are ints in the MPICH ABI, so one pool serves all kinds.
 * NULL functions pass through; MPI_*_DUP_FN (our MPIR_Dup_fn) becomes the lower
 * library's own, which needs no upper state. */
typedef int(mana_copy_fn)(int, int, void *, void *, void *, int *);
typedef int(mana_delete_fn)(int, int, void *, void *);
static mana_copy_fn *kv_copy_fn[MANA_SLOTS];
static mana_delete_fn *kv_del_fn[MANA_SLOTS];
static slot_pool kv_busy;
/* Attribute copies made while a window is created. MPICH's window creation duplicates its
 * communicator internally (MPIR_Comm_dup_impl), which runs the copy callbacks of the
 * communicator's attributes, and MPI_Win_free frees that internal communicator, which runs
 * the delete callbacks of the copies. The application cannot name that communicator, nor
 * can a restart set attributes on it: what each copy callback returned is recorded per
 * window while the application's MPI_Win_create runs, and a restart creates the window
 * over a communicator holding those keyvals while the trampolines answer from the record
 * (src/rebuild.c, rebuild_windows) — the application's callbacks do not run again, and
 * its later MPI_Win_free runs the delete callbacks as natively. (Keyvals with
 * MPI_COMM_DUP_FN are copied inside MPICH without a trampoline: not recorded.) Before
 * that, a restarted f_attrs ended with one comm and one MPI-1 delete callback fewer per
 * rank when the instant fell inside a window's life. */
struct win_copy_list {
    struct mana_win_copy *at;
    int n, cap;
};
static __thread struct win_copy_list *tl_recording; /* the calling thread's MPI_Win_create */
static const struct mana_comm_meta *replaying;      /* a restart (single-threaded) */
static int kv_index_of_real(int real);

/* After an application copy callback of keyval `kv` (lower handle) returned `r`. */
static void win_copy_record(int kv, void *out, int flag, int r)
{
    struct win_copy_list *l = tl_recording;
    if (!l || r != MPI_SUCCESS || !flag)
        return;
    int i = kv_index_of_real(kv);
    if (i < 0)
        return;
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 8;
        struct mana_win_copy *more = realloc(l->at, (size_t)cap * sizeof *more);
        if (!more)
            return;
        l->at = more;
        l->cap = cap;
    }
    l->at[l->n++] = (struct mana_win_copy){(unsigned)i, *(void **)out, flag};
}

/* While a restart creates a window again: the recorded copy for keyval `kv` (lower
 * handle) instead of the application's callback. Returns 0 when not replaying. */
static int win_copy_replay(int kv, void *out, int *flag)
{
    const struct mana_comm_meta *m = __atomic_load_n(&replaying, __ATOMIC_ACQUIRE);
    if (!m)
        return 0;
    int i = kv_index_of_real(kv);
    *flag = 0;
    for (int j = 0; j < m->n_win_copies; j++)
        if (i >= 0 && m->win_copies[j].keyval == (unsigned)i) {
            *(void **)out = m->win_copies[j].value;
            *flag = m->win_copies[j].flag;
        }
    return 1;
}

void mana_win_copies_replay(const struct mana_comm_meta *m)
{
    __atomic_store_n(&replaying, m, __ATOMIC_RELEASE);
}

struct copies_use {
    unsigned keyval;
    int found;
};

static void win_copies_use_on(int w, struct mana_comm_meta *m, void *arg)
{
    (void)w;
    struct copies_use *u = arg;
    for (int j = 0; j < m->n_win_copies; j++)
        if (m->win_copies[j].keyval == u->keyval)
            u->found = 1;
}

int mana_win_copies_use(unsigned keyval)
{
    struct copies_use u = {keyval, 0};
    mana_win_each(win_copies_use_on, &u);
    return u.found;
}

#define KV_TRAMP(k)                                                                    \
    static int kv_copy_##k(int h, int kv, void *ex, void *in, void *out, int *flag)    \
    {                                                                                  \
        unsigned long l_ = mana_callback_enter();                                      \
        int r_ = MPI_SUCCESS;                                                          \
        if (!win_copy_replay(kv, out, flag)) {                                         \
            r_ = kv_copy_fn[k](mana_h_peek_virtual(h), mana_h_lookup_virtual(kv), ex, in, out, flag); \
            win_copy_record(kv, out, *flag, r_);                                       \
        }                                                                              \
        mana_callback_leave(l_);                                                       \
        return r_;                                                                     \
    }                                                                                  \
    static int kv_del_##k(int h, int kv, void *attr, void *ex)                         \
    {                                                                                  \
        if (__atomic_load_n(&replaying, __ATOMIC_ACQUIRE))                             \
            return MPI_SUCCESS;                                                        \
        unsigned long l_ = mana_callback_enter();                                      \
        int r_ = kv_del_fn[k](mana_h_peek_virtual(h), mana_h_lookup_virtual(kv), attr, ex); \
        mana_callback_leave(l_);                                                       \
        return r_;                                                                     \
    }
MANA_REPEAT64(KV_TRAMP)
#define KV_COPY_ENTRY(k) kv_copy_##k,
#define KV_DEL_ENTRY(k) kv_del_##k,
static mana_copy_fn *const kv_copy_tramps[MANA_SLOTS] = {MANA_REPEAT64(KV_COPY_ENTRY)};
static mana_delete_fn *const kv_del_tramps[MANA_SLOTS] = {MANA_REPEAT64(KV_DEL_ENTRY)};

/* MPI_DUP_FN: copies the attribute value. Uses no thread-local state. */
int MPIR_Dup_fn(MPI_Comm comm, int keyval, void *extra, void *in, void *out, int *flag)
{
    (void)comm;
    (void)keyval;
    (void)extra;
    *(void **)out = in;
    *flag = 1;
    return MPI_SUCCESS;
}

/* What the lower library gets for the application's (copy, del) using slot `k` (-1: none
 * needed): NULL stays NULL, MPI_*_DUP_FN becomes the lower library's own. */
static void kv_lower_fns(mana_copy_fn *copy, mana_delete_fn *del, int k, void *fns[2])
{
    fns[0] = (void *)copy;
    fns[1] = (void *)del;
    if (copy == (mana_copy_fn *)MPIR_Dup_fn)
        fns[0] = mana_lower_fn(4006, "MPIR_Dup_fn", mana_thread_lower_fs());
    else if (copy)
        fns[0] = (void *)kv_copy_tramps[k];
    if (del)
        fns[1] = (void *)kv_del_tramps[k];
}

/* Claims a slot for (copy, del) if they need trampolines: the slot, -1 if none is needed,
 * -2 if all are taken. */
static int kv_slot(mana_copy_fn *copy, mana_delete_fn *del)
{
    int need = (copy && copy != (mana_copy_fn *)MPIR_Dup_fn) || del;
    if (!need)
        return -1;
    int k = slot_take(&kv_busy);
    if (k >= MANA_SLOTS)
        return -2;
    kv_copy_fn[k] = copy;
    kv_del_fn[k] = del;
    return k;
}

/* Every keyval the application created, for a restart: its functions, slot, extra state
 * and creator (the handle's aux word is its index + 1 here). */
static const struct {
    unsigned id;
    const char *name;
} kv_creators[] = {{4007, "PMPI_Comm_create_keyval"},
                   {4008, "PMPI_Type_create_keyval"},
                   {4009, "PMPI_Win_create_keyval"},
                   {4010, "PMPI_Keyval_create"}};
/* Keyval records live in chunks that never move: a wrapper on one thread may read a record
 * (kv_rec_of) while another thread's MPI_*_create_keyval adds one. kv_n is published after
 * the record it counts is written; records are added under kv_lock. */
#define KV_CHUNK 256u
#define KV_CHUNKS 16384u
static struct mana_keyval *kv_dir[KV_CHUNKS];
static unsigned kv_n;
static pthread_mutex_t kv_lock = PTHREAD_MUTEX_INITIALIZER;

struct mana_keyval *mana_keyval_at(unsigned i)
{
    return &kv_dir[i / KV_CHUNK][i % KV_CHUNK];
}

unsigned mana_keyval_count(void)
{
    return __atomic_load_n(&kv_n, __ATOMIC_ACQUIRE);
}

/* Appends `rec` (holding kv_lock); its 1-based index, 0 when the store is full. */
static unsigned kv_append(const struct mana_keyval *rec)
{
    unsigned i = kv_n;
    if (i >= KV_CHUNK * KV_CHUNKS)
        return 0;
    if (!kv_dir[i / KV_CHUNK] && !(kv_dir[i / KV_CHUNK] = calloc(KV_CHUNK, sizeof(struct mana_keyval))))
        return 0;
    kv_dir[i / KV_CHUNK][i % KV_CHUNK] = *rec;
    __atomic_store_n(&kv_n, i + 1, __ATOMIC_RELEASE);
    return i + 1;
}

static int kv_create_lower(const struct mana_keyval *rec, int *kv_l)
{
    void *fns[2];
    kv_lower_fns((mana_copy_fn *)rec->copy, (mana_delete_fn *)rec->del, rec->slot, fns);
    int (*f)(void *, void *, int *, void *) = (int (*)(void *, void *, int *, void *))mana_lower_fn(
        kv_creators[rec->which].id, kv_creators[rec->which].name, mana_thread_lower_fs());
    unsigned long up = mana_enter_lower(mana_thread_lower_fs());
    int r = f(fns[0], fns[1], kv_l, rec->extra);
    mana_leave_lower(up);
    return r;
}

static int keyval_create(int which, mana_copy_fn *copy, mana_delete_fn *del, int *keyval, void *extra)
{
    struct mana_keyval rec = {(void *)copy, (void *)del, extra, kv_slot(copy, del), which, which == 3 ? 0 : which,
                              0, 0, 0, 0};
    mana_gate_enter();
    if (rec.slot == -2) {
        pthread_mutex_lock(&kv_lock);
        mana_keyvals_collect();
        pthread_mutex_unlock(&kv_lock);
        rec.slot = kv_slot(copy, del);
    }
    if (rec.slot == -2) {
        mana_gate_leave();
        return mana_slots_full("attribute keyvals with callbacks");
    }
    int kv_l = 0;
    int r = kv_create_lower(&rec, &kv_l);
    r = mana_out_handle(r, keyval, kv_l);
    unsigned *aux = r == MPI_SUCCESS ? mana_h_aux(*keyval) : NULL;
    if (r != MPI_SUCCESS)
        slot_put(&kv_busy, rec.slot);
    if (aux) {
        rec.v = *keyval;
        rec.real = kv_l;
        pthread_mutex_lock(&kv_lock);
        *aux = kv_append(&rec);
        pthread_mutex_unlock(&kv_lock);
        if (!*aux) { /* no record: MANA could not re-create it, so the application does not get it */
            slot_put(&kv_busy, rec.slot);
            r = mana_slots_full("attribute keyvals");
        }
    }
    mana_gate_leave();
    return r;
}

static struct mana_keyval *kv_rec_of(int keyval)
{
    unsigned *aux = mana_h_aux(keyval);
    return aux && *aux && *aux <= mana_keyval_count() ? mana_keyval_at(*aux - 1) : NULL;
}

/* The application freed keyval `v`; `in_use`: attributes with it remain (MPI keeps it,
 * and its callbacks, until they are deleted). */
void mana_keyval_freed(int v, int in_use)
{
    struct mana_keyval *k = kv_rec_of(v);
    if (!k)
        return;
    k->app_freed = 1;
    if (!in_use)
        mana_keyval_dead(k);
}

/* Before MPI_*_free_keyval(`v`): whether `v` stays bound to its keyval. MPI keeps a freed
 * keyval while attributes use it, and MPICH lets the application go on using its handle
 * meanwhile: delete an attribute with a saved copy of it (MPICH's attr/fkeyval), or free it
 * again, a no-op (attr/keyval_double_free, from a delete callback too). So the handle is
 * neither unbound nor reused for another keyval until the keyval dies: its record owns one
 * reference (holds_v), dropped by mana_keyval_dead. Each kept free takes one more here,
 * which the wrapper's release of the freed handle gives back. */
int mana_keyval_free_begin(int v)
{
    struct mana_keyval *k = kv_rec_of(v);
    if (!k || k->dead)
        return 0;
    int keep = k->app_freed ? k->holds_v : mana_keyval_in_use(v);
    if (keep) {
        mana_h_hold(v);
        k->holds_v = 1;
    }
    return keep;
}

void mana_keyval_dead(struct mana_keyval *k)
{
    if (!k->dead) {
        k->dead = 1;
        slot_put(&kv_busy, k->slot);
        if (k->holds_v) {
            k->holds_v = 0;
            mana_h_unref(k->v);
        }
    }
}

/* Language bindings (libmpichfort) call the application's attribute functions through
 * a proxy of their own: MPICH calls proxy(user function, handle, keyval, attribute type,
 * …). The lower half gets these two trampolines as proxies; they find the keyval's record
 * and call the binding's proxy with the application's function and handles. */
typedef int(mana_copy_proxy)(void *, int, int, void *, int, void *, void **, int *);
typedef int(mana_delete_proxy)(void *, int, int, int, void *, void *);

/* The index in mana_keyvals() of the live keyval with lower handle `real` (-1: none). */
static int kv_index_of_real(int real)
{
    int found = -1;
    pthread_mutex_lock(&kv_lock);
    for (unsigned i = kv_n; i-- > 0 && found < 0;)
        if (mana_keyval_at(i)->real == real && !mana_keyval_at(i)->dead)
            found = (int)i;
    pthread_mutex_unlock(&kv_lock);
    return found;
}

static struct mana_keyval *kv_rec_of_real(int real)
{
    int i = kv_index_of_real(real);
    return i < 0 ? NULL : mana_keyval_at((unsigned)i);
}

static int kv_copy_proxy_tramp(void *fn, int h, int kv, void *extra, int type, void *attrib, void **copy, int *flag)
{
    (void)fn;
    unsigned long l = mana_callback_enter();
    int r = MPI_SUCCESS;
    if (!win_copy_replay(kv, copy, flag)) {
        struct mana_keyval *k = kv_rec_of_real(kv);
        r = MPI_ERR_KEYVAL;
        if (k && k->copy_proxy)
            r = ((mana_copy_proxy *)k->copy_proxy)(k->copy, mana_h_peek_virtual(h), k->v, extra, type, attrib, copy,
                                                   flag);
        win_copy_record(kv, copy, *flag, r);
    }
    mana_callback_leave(l);
    return r;
}

static int kv_delete_proxy_tramp(void *fn, int h, int kv, int type, void *attrib, void *extra)
{
    (void)fn;
    if (__atomic_load_n(&replaying, __ATOMIC_ACQUIRE))
        return MPI_SUCCESS;
    unsigned long l = mana_callback_enter();
    struct mana_keyval *k = kv_rec_of_real(kv);
    int r = MPI_ERR_KEYVAL;
    if (k && k->del_proxy)
        r = ((mana_delete_proxy *)k->del_proxy)(k->del, mana_h_peek_virtual(h), k->v, type, attrib, extra);
    mana_callback_leave(l);
    return r;
}

/* Gives keyval `k`'s lower twin the proxy trampolines (without the gate). */
static void kv_set_proxy_lower(const struct mana_keyval *k)
{
    void (*f)(int, void *, void *) =
        (void (*)(int, void *, void *))mana_lower_fn(4455, "MPII_Keyval_set_proxy", mana_thread_lower_fs());
    unsigned long up = mana_enter_lower(mana_thread_lower_fs());
    f(k->real, k->copy_proxy ? (void *)kv_copy_proxy_tramp : NULL, k->del_proxy ? (void *)kv_delete_proxy_tramp : NULL);
    mana_leave_lower(up);
}

__attribute__((used)) static void mana_w_MPII_Keyval_set_proxy(int keyval, void *copy_proxy, void *del_proxy)
{
    mana_gate_enter();
    struct mana_keyval *k = kv_rec_of(keyval);
    if (k) {
        k->copy_proxy = copy_proxy;
        k->del_proxy = del_proxy;
        kv_set_proxy_lower(k);
    }
    mana_gate_leave();
}
MANA_EXPORT(mana_w_MPII_Keyval_set_proxy, MPII_Keyval_set_proxy)

int mana_recreate_keyval(struct mana_keyval *k)
{
    int kv_l = 0, r = kv_create_lower(k, &kv_l);
    if (r == MPI_SUCCESS) {
        k->real = kv_l;
        if (!k->app_freed || k->holds_v)
            mana_h_set_real(k->v, kv_l);
        if (k->copy_proxy || k->del_proxy)
            kv_set_proxy_lower(k);
    }
    return r;
}

/* The bindings' attribute access with MPICH's attribute type (Fortran's values are
 * integers, not pointers). A keyval remembers the type its attributes were set with, so
 * that the checkpoint reads their values, not pointers into the lower half, and the
 * restart sets them again as what they were. */
int mana_keyval_attr_type(int keyval_v)
{
    struct mana_keyval *k = kv_rec_of(keyval_v);
    return k ? k->attr_type : 0;
}

void mana_keyval_attr_type_set(int keyval_v, int type)
{
    struct mana_keyval *k = kv_rec_of(keyval_v);
    if (k)
        k->attr_type = type;
}

#define MPII_ATTR_WRAPPERS(KIND, HANDLE, ID_GET, ID_SET)                                                      \
    __attribute__((used)) static int mana_w_MPII_##KIND##_set_attr(HANDLE h, int keyval, void *value, int type) \
    {                                                                                                         \
        mana_gate_enter();                                                                                    \
        mana_tc_untag(h); /* a type with an attribute is never reused (src/typecache.c) */                    \
        HANDLE h_r = mana_h_real(h);                                                                          \
        int kv_r = mana_h_real(keyval), r;                                                                    \
        MANA_CALL_LOWER_INTO(r, ID_SET, "MPII_" #KIND "_set_attr", int, (HANDLE, int, void *, int),           \
                             (h_r, kv_r, value, type));                                                       \
        mana_gate_leave();                                                                                    \
        if (r == MPI_SUCCESS)                                                                                 \
            mana_keyval_attr_type_set(keyval, type);                                                          \
        return r;                                                                                             \
    }                                                                                                         \
    MANA_EXPORT(mana_w_MPII_##KIND##_set_attr, MPII_##KIND##_set_attr)                                        \
    __attribute__((used)) static int mana_w_MPII_##KIND##_get_attr(HANDLE h, int keyval, void *value, int *flag, \
                                                                   int type)                                  \
    {                                                                                                         \
        mana_gate_enter();                                                                                    \
        HANDLE h_r = mana_h_real(h);                                                                          \
        int kv_r = mana_h_real(keyval), r;                                                                    \
        MANA_CALL_LOWER_INTO(r, ID_GET, "MPII_" #KIND "_get_attr", int, (HANDLE, int, void *, int *, int),    \
                             (h_r, kv_r, value, flag, type));                                                 \
        mana_gate_leave();                                                                                    \
        return r;                                                                                             \
    }                                                                                                         \
    MANA_EXPORT(mana_w_MPII_##KIND##_get_attr, MPII_##KIND##_get_attr)
MPII_ATTR_WRAPPERS(Comm, MPI_Comm, 4456, 4457)
MPII_ATTR_WRAPPERS(Type, MPI_Datatype, 4458, 4459)

#define KEYVAL_WRAPPER(NAME, WHICH)                                                           \
    __attribute__((used)) static int mana_w_##NAME(void *copy, void *del, int *keyval, void *extra) \
    {                                                                                         \
        return keyval_create(WHICH, (mana_copy_fn *)copy, (mana_delete_fn *)del, keyval, extra); \
    }                                                                                         \
    MANA_EXPORT(mana_w_##NAME, NAME)                                                          \
    MANA_EXPORT(mana_w_##NAME, P##NAME)
KEYVAL_WRAPPER(MPI_Comm_create_keyval, 0)
KEYVAL_WRAPPER(MPI_Type_create_keyval, 1)
KEYVAL_WRAPPER(MPI_Win_create_keyval, 2)
KEYVAL_WRAPPER(MPI_Keyval_create, 3)

/* Memory the application gets from MPI must be upper-half memory (DESIGN.md §3): the
 * lower half's would vanish at restart. MPI_Alloc_mem is the application's malloc;
 * MPI_Win_allocate is MPI_Win_create over such memory (freed with the window). */
#include <stdlib.h>

__attribute__((used)) static int mana_w_MPI_Alloc_mem(MPI_Aint size, MPI_Info info, void *baseptr)
{
    (void)info;
    void *p = malloc(size > 0 ? (size_t)size : 1);
    if (!p)
        return MPI_ERR_NO_MEM;
    *(void **)baseptr = p;
    return MPI_SUCCESS;
}
MANA_EXPORT(mana_w_MPI_Alloc_mem, MPI_Alloc_mem)
MANA_EXPORT(mana_w_MPI_Alloc_mem, PMPI_Alloc_mem)

__attribute__((used)) static int mana_w_MPI_Free_mem(void *base)
{
    free(base);
    return MPI_SUCCESS;
}
MANA_EXPORT(mana_w_MPI_Free_mem, MPI_Free_mem)
MANA_EXPORT(mana_w_MPI_Free_mem, PMPI_Free_mem)

#define MANA_WINS 1024
static struct {
    MPI_Win win;
    void *base;
} win_mem[MANA_WINS];

/* Shared-memory windows (MPI_Win_allocate_shared): the segment is upper-half memory too —
 * a /dev/shm file created by the communicator's rank 0, mapped by every rank, unlinked
 * once all have mapped it — and the window is MPI_Win_create over this rank's part.
 * Segments are contiguous in rank order (what MPI guarantees without
 * alloc_shared_noncontig); MPI_Win_shared_query is answered here. */
#define MANA_SHARED_WINS 256
static struct shared_win {
    MPI_Win win;    /* the application's handle; 0 = free slot */
    char *map;
    size_t map_len;
    int n;
    MPI_Aint *size; /* per rank of the window's group: size, displacement unit, offset */
    MPI_Aint *unit;
    MPI_Aint *off;
} shared_wins[MANA_SHARED_WINS];
static int shared_seq;

/* MPI_Win_create (every window flavour but the dynamic one ends up here) or, `dynamic`,
 * MPI_Win_create_dynamic: collective over `comm`; the window is recorded for a restart
 * (src/ckpt.c). A displacement unit beyond int takes the large-count call. */
static int win_create_any(void *base, MPI_Aint size, MPI_Aint disp_unit, MPI_Info info, MPI_Comm comm, MPI_Win *win,
                          int dynamic)
{
    MPI_Win win_l = 0;
    int r, counted = mana_coll_enter(comm);
    mana_gate_enter();
    MPI_Info info_l = mana_h_real(info);
    MPI_Comm comm_l = mana_h_real(comm);
    struct win_copy_list copies = {0};
    tl_recording = &copies;
    if (dynamic) {
        MANA_CALL_LOWER_INTO(r, 4700, "PMPI_Win_create_dynamic", int, (MPI_Info i, MPI_Comm c, MPI_Win *w),
                             (info_l, comm_l, &win_l));
    } else if (disp_unit == (int)disp_unit) {
        int unit = (int)disp_unit;
        MANA_CALL_LOWER_INTO(r, 4011, "PMPI_Win_create", int,
                             (void *b, MPI_Aint s, int d, MPI_Info i, MPI_Comm c, MPI_Win *w),
                             (base, size, unit, info_l, comm_l, &win_l));
    } else {
        MANA_CALL_LOWER_INTO(r, 4013, "PMPI_Win_create_c", int,
                             (void *b, MPI_Aint s, MPI_Aint d, MPI_Info i, MPI_Comm c, MPI_Win *w),
                             (base, size, disp_unit, info_l, comm_l, &win_l));
    }
    tl_recording = NULL;
    r = mana_out_handle(r, win, win_l);
    struct mana_comm_meta *m = r == MPI_SUCCESS ? mana_comm_meta(*win) : NULL;
    if (m) {
        mana_win_created(comm, *win, base, size, disp_unit);
        m->win_dynamic = (unsigned char)dynamic;
        m->win_copies = copies.at;
        m->n_win_copies = copies.n;
    } else {
        free(copies.at);
    }
    mana_gate_leave();
    mana_coll_leave(counted);
    return r;
}

static int win_create(void *base, MPI_Aint size, MPI_Aint disp_unit, MPI_Info info, MPI_Comm comm, MPI_Win *win)
{
    return win_create_any(base, size, disp_unit, info, comm, win, 0);
}

__attribute__((used)) static int mana_w_MPI_Win_create(void *base, MPI_Aint size, int disp_unit, MPI_Info info,
                                                       MPI_Comm comm, MPI_Win *win)
{
    return win_create(base, size, disp_unit, info, comm, win);
}
MANA_EXPORT(mana_w_MPI_Win_create, MPI_Win_create)
MANA_EXPORT(mana_w_MPI_Win_create, PMPI_Win_create)

__attribute__((used)) static int mana_w_MPI_Win_create_c(void *base, MPI_Aint size, MPI_Aint disp_unit, MPI_Info info,
                                                         MPI_Comm comm, MPI_Win *win)
{
    return win_create(base, size, disp_unit, info, comm, win);
}
MANA_EXPORT(mana_w_MPI_Win_create_c, MPI_Win_create_c)
MANA_EXPORT(mana_w_MPI_Win_create_c, PMPI_Win_create_c)

/* A dynamic window: created again at restart with the regions attached at the checkpoint
 * (upper-half memory, at the same addresses: the displacements peers computed with
 * MPI_Get_address stay valid). */
__attribute__((used)) static int mana_w_MPI_Win_create_dynamic(MPI_Info info, MPI_Comm comm, MPI_Win *win)
{
    return win_create_any(NULL, 0, 1, info, comm, win, 1);
}
MANA_EXPORT(mana_w_MPI_Win_create_dynamic, MPI_Win_create_dynamic)
MANA_EXPORT(mana_w_MPI_Win_create_dynamic, PMPI_Win_create_dynamic)

__attribute__((used)) static int mana_w_MPI_Win_attach(MPI_Win win, void *base, MPI_Aint size)
{
    mana_gate_enter();
    MPI_Win w_l = mana_h_real(win);
    int r;
    MANA_CALL_LOWER_INTO(r, 4701, "PMPI_Win_attach", int, (MPI_Win w, void *b, MPI_Aint s), (w_l, base, size));
    if (r == MPI_SUCCESS)
        mana_win_attached(win, base, size);
    mana_gate_leave();
    return r;
}
MANA_EXPORT(mana_w_MPI_Win_attach, MPI_Win_attach)
MANA_EXPORT(mana_w_MPI_Win_attach, PMPI_Win_attach)

__attribute__((used)) static int mana_w_MPI_Win_detach(MPI_Win win, const void *base)
{
    mana_gate_enter();
    MPI_Win w_l = mana_h_real(win);
    int r;
    MANA_CALL_LOWER_INTO(r, 4702, "PMPI_Win_detach", int, (MPI_Win w, const void *b), (w_l, base));
    if (r == MPI_SUCCESS)
        mana_win_attached(win, (void *)base, -1);
    mana_gate_leave();
    return r;
}
MANA_EXPORT(mana_w_MPI_Win_detach, MPI_Win_detach)
MANA_EXPORT(mana_w_MPI_Win_detach, PMPI_Win_detach)

/* Records a window's memory (freed by MPI_Win_free) and returns it, or frees it if the
 * window could not be created. */
static int win_allocated(int r, void *p, MPI_Win *win, void *baseptr)
{
    if (r != MPI_SUCCESS) {
        free(p);
        return r;
    }
    for (int i = 0; i < MANA_WINS; i++) {
        if (__sync_bool_compare_and_swap(&win_mem[i].base, NULL, p)) {
            win_mem[i].win = *win;
            break;
        }
    }
    *(void **)baseptr = p;
    return MPI_SUCCESS;
}

__attribute__((used)) static int mana_w_MPI_Win_allocate(MPI_Aint size, int disp_unit, MPI_Info info, MPI_Comm comm,
                                                         void *baseptr, MPI_Win *win)
{
    void *p = calloc(1, size > 0 ? (size_t)size : 1);
    if (!p)
        return MPI_ERR_NO_MEM;
    return win_allocated(win_create(p, size, disp_unit, info, comm, win), p, win, baseptr);
}
MANA_EXPORT(mana_w_MPI_Win_allocate, MPI_Win_allocate)
MANA_EXPORT(mana_w_MPI_Win_allocate, PMPI_Win_allocate)

__attribute__((used)) static int mana_w_MPI_Win_allocate_c(MPI_Aint size, MPI_Aint disp_unit, MPI_Info info,
                                                           MPI_Comm comm, void *baseptr, MPI_Win *win)
{
    void *p = calloc(1, size > 0 ? (size_t)size : 1);
    if (!p)
        return MPI_ERR_NO_MEM;
    return win_allocated(win_create(p, size, disp_unit, info, comm, win), p, win, baseptr);
}
MANA_EXPORT(mana_w_MPI_Win_allocate_c, MPI_Win_allocate_c)
MANA_EXPORT(mana_w_MPI_Win_allocate_c, PMPI_Win_allocate_c)

#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

MANA_LOWER_FUNCTION(lower_comm_rank, 4040, "PMPI_Comm_rank", (MPI_Comm c, int *r), (c, r))
MANA_LOWER_FUNCTION(lower_comm_size, 4041, "PMPI_Comm_size", (MPI_Comm c, int *n), (c, n))
MANA_LOWER_FUNCTION(lower_allgather, 4042, "PMPI_Allgather",
           (const void *s, int sc, MPI_Datatype st, void *r, int rc, MPI_Datatype rt, MPI_Comm c),
           (s, sc, st, r, rc, rt, c))
MANA_LOWER_FUNCTION(lower_bcast, 4043, "PMPI_Bcast", (void *b, int n, MPI_Datatype t, int root, MPI_Comm c),
           (b, n, t, root, c))
MANA_LOWER_FUNCTION(lower_barrier, 4044, "PMPI_Barrier", (MPI_Comm c), (c))

static struct shared_win *shared_win_of(MPI_Win win)
{
    for (int i = 0; i < MANA_SHARED_WINS; i++)
        if (shared_wins[i].win == win && win)
            return &shared_wins[i];
    return NULL;
}

/* A new /dev/shm segment of `len` bytes mapped by every rank of real communicator `c`
 * (collective; at `at` if not NULL, replacing what is there): created by rank 0, unlinked
 * once all have mapped it. MAP_FAILED on failure (on every rank). */
static char *shared_segment(MPI_Comm c, int me, size_t len, void *at)
{
    char path[128] = "";
    int fd = -1;
    if (me == 0) {
        snprintf(path, sizeof path, "/dev/shm/mana-win-%d-%d", (int)getpid(), __atomic_fetch_add(&shared_seq, 1, 0));
        fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0 || ftruncate(fd, (off_t)len) != 0) {
            fprintf(stderr, "mana: cannot create the shared window segment %s (%zu bytes)\n", path, len);
            path[0] = 0;
        }
    }
    lower_bcast(path, sizeof path, MPI_CHAR, 0, c);
    if (!path[0]) {
        if (fd >= 0)
            close(fd);
        return MAP_FAILED;
    }
    if (me != 0)
        fd = open(path, O_RDWR | O_CLOEXEC);
    char *map = fd < 0 ? MAP_FAILED
                       : mmap(at, len, PROT_READ | PROT_WRITE, MAP_SHARED | (at ? MAP_FIXED : 0), fd, 0);
    if (fd >= 0)
        close(fd);
    lower_barrier(c);
    if (me == 0)
        unlink(path);
    if (map == MAP_FAILED)
        fprintf(stderr, "mana: cannot map the shared window segment %s\n", path);
    return map;
}

/* At restart: the window's segment again, where it was (the image restored this rank's
 * copy as private memory): this rank's own part is carried over into the new segment. */
int mana_recreate_shared_segment(int win, MPI_Comm c)
{
    struct shared_win *sw = shared_win_of(win);
    if (!sw)
        return MPI_SUCCESS;
    int me = 0;
    lower_comm_rank(c, &me);
    size_t own = (size_t)sw->size[me];
    char *keep = malloc(own ? own : 1);
    if (!keep)
        return MPI_ERR_NO_MEM;
    memcpy(keep, sw->map + sw->off[me], own);
    char *map = shared_segment(c, me, sw->map_len, sw->map);
    if (map != MAP_FAILED)
        memcpy(sw->map + sw->off[me], keep, own);
    free(keep);
    lower_barrier(c);
    return map == MAP_FAILED ? MPI_ERR_NO_MEM : MPI_SUCCESS;
}

static int win_allocate_shared(MPI_Aint size, MPI_Aint disp_unit, MPI_Info info, MPI_Comm comm, void *baseptr,
                               MPI_Win *win)
{
    MPI_Comm c = mana_h_real(comm);
    int me, n, r;
    if ((r = lower_comm_rank(c, &me)) != MPI_SUCCESS || (r = lower_comm_size(c, &n)) != MPI_SUCCESS)
        return r;
    struct shared_win *sw = NULL;
    for (int i = 0; i < MANA_SHARED_WINS && !sw; i++)
        if (__sync_bool_compare_and_swap(&shared_wins[i].win, 0, -1))
            sw = &shared_wins[i];
    if (!sw)
        return mana_slots_full("shared-memory windows");
    MPI_Aint *all = calloc(3 * (size_t)n, sizeof(MPI_Aint)), *pairs = calloc(2 * (size_t)n, sizeof(MPI_Aint));
    MPI_Aint mine[2] = {size, disp_unit};
    /* The exchange of sizes and the segment's making (an allgather, a broadcast and a
     * barrier in the lower half) are one collective on `comm` for the checkpoint's
     * agreement, as the window's creation after them is another: uncounted, a rank inside
     * them waited for a peer parked at the closed gate, and the checkpoint failed after
     * 60 s (MPICH's rma/win_zero, win_info, win_shared: 0.2-0.9 s natively, 60 s under
     * checkpoints every 50 ms). */
    const int counted = mana_coll_enter(comm);
    if (!all || !pairs || (r = lower_allgather(mine, 2, MPI_AINT, pairs, 2, MPI_AINT, c)) != MPI_SUCCESS) {
        mana_coll_leave(counted);
        free(all);
        free(pairs);
        sw->win = 0;
        return all && pairs ? r : MPI_ERR_NO_MEM;
    }
    sw->n = n;
    sw->size = all;
    sw->unit = all + n;
    sw->off = all + 2 * n;
    MPI_Aint total = 0;
    for (int i = 0; i < n; i++) {
        sw->size[i] = pairs[2 * i];
        sw->unit[i] = pairs[2 * i + 1];
        sw->off[i] = total;
        total += pairs[2 * i];
    }
    free(pairs);
    sw->map_len = ((size_t)total + 4095) & ~(size_t)4095;
    if (!sw->map_len)
        sw->map_len = 4096;
    sw->map = shared_segment(c, me, sw->map_len, NULL);
    mana_coll_leave(counted);
    if (sw->map == MAP_FAILED) {
        free(all);
        sw->win = 0;
        return MPI_ERR_NO_MEM;
    }
    void *base = sw->map + sw->off[me];
    MPI_Win w = 0;
    r = win_create(base, size, disp_unit, info, comm, &w);
    if (r != MPI_SUCCESS) {
        munmap(sw->map, sw->map_len);
        free(all);
        sw->win = 0;
        return r;
    }
    sw->win = w;
    *win = w;
    *(void **)baseptr = base;
    return MPI_SUCCESS;
}

__attribute__((used)) static int mana_w_MPI_Win_allocate_shared(MPI_Aint size, int disp_unit, MPI_Info info,
                                                                MPI_Comm comm, void *baseptr, MPI_Win *win)
{
    return win_allocate_shared(size, disp_unit, info, comm, baseptr, win);
}
MANA_EXPORT(mana_w_MPI_Win_allocate_shared, MPI_Win_allocate_shared)
MANA_EXPORT(mana_w_MPI_Win_allocate_shared, PMPI_Win_allocate_shared)

__attribute__((used)) static int mana_w_MPI_Win_allocate_shared_c(MPI_Aint size, MPI_Aint disp_unit, MPI_Info info,
                                                                  MPI_Comm comm, void *baseptr, MPI_Win *win)
{
    return win_allocate_shared(size, disp_unit, info, comm, baseptr, win);
}
MANA_EXPORT(mana_w_MPI_Win_allocate_shared_c, MPI_Win_allocate_shared_c)
MANA_EXPORT(mana_w_MPI_Win_allocate_shared_c, PMPI_Win_allocate_shared_c)

/* The segment of `rank` (MPI_PROC_NULL: the first non-empty one). */
static int shared_query(MPI_Win win, int rank, MPI_Aint *size, MPI_Aint *unit, void *baseptr)
{
    struct shared_win *sw = shared_win_of(win);
    if (!sw)
        return MPI_ERR_RMA_FLAVOR;
    if (rank == MPI_PROC_NULL) {
        rank = 0;
        while (rank < sw->n - 1 && sw->size[rank] == 0)
            rank++;
    }
    if (rank < 0 || rank >= sw->n)
        return MPI_ERR_RANK;
    *size = sw->size[rank];
    *unit = sw->unit[rank];
    *(void **)baseptr = sw->map + sw->off[rank];
    return MPI_SUCCESS;
}

__attribute__((used)) static int mana_w_MPI_Win_shared_query(MPI_Win win, int rank, MPI_Aint *size, int *disp_unit,
                                                             void *baseptr)
{
    MPI_Aint unit = 0;
    int r = shared_query(win, rank, size, &unit, baseptr);
    if (r == MPI_SUCCESS)
        *disp_unit = (int)unit;
    return r;
}
MANA_EXPORT(mana_w_MPI_Win_shared_query, MPI_Win_shared_query)
MANA_EXPORT(mana_w_MPI_Win_shared_query, PMPI_Win_shared_query)

__attribute__((used)) static int mana_w_MPI_Win_shared_query_c(MPI_Win win, int rank, MPI_Aint *size,
                                                               MPI_Aint *disp_unit, void *baseptr)
{
    return shared_query(win, rank, size, disp_unit, baseptr);
}
MANA_EXPORT(mana_w_MPI_Win_shared_query_c, MPI_Win_shared_query_c)
MANA_EXPORT(mana_w_MPI_Win_shared_query_c, PMPI_Win_shared_query_c)

/* The window's flavor is the one the application asked for (the lower half only sees
 * MPI_Win_create). */
/* The flavor the application asked for, if the lower half's (always "create") is not it. */
static const int *win_flavor_override(MPI_Win win)
{
    static const int flavor_shared = MPI_WIN_FLAVOR_SHARED, flavor_allocate = MPI_WIN_FLAVOR_ALLOCATE;
    const int *f = shared_win_of(win) ? &flavor_shared : NULL;
    for (int i = 0; i < MANA_WINS; i++)
        if (win_mem[i].base && win_mem[i].win == win)
            f = &flavor_allocate;
    return f;
}

__attribute__((used)) static int mana_w_MPI_Win_get_attr(MPI_Win win, int keyval, void *value, int *flag)
{
    MPI_Win w = mana_h_real(win);
    int kv = mana_h_real(keyval), r;
    {
        MANA_FORWARD_INTO(r, 4045, "PMPI_Win_get_attr", int, (MPI_Win w_, int k_, void *v_, int *f_),
                          (w, kv, value, flag));
    }
    const int *flavor = r == MPI_SUCCESS && keyval == MPI_WIN_CREATE_FLAVOR && *flag ? win_flavor_override(win) : NULL;
    if (flavor)
        *(const int **)value = flavor;
    return r;
}
MANA_EXPORT(mana_w_MPI_Win_get_attr, MPI_Win_get_attr)
MANA_EXPORT(mana_w_MPI_Win_get_attr, PMPI_Win_get_attr)

/* The Fortran binding's window attributes (see MPII_ATTR_WRAPPERS): integers by value. */
__attribute__((used)) static int mana_w_MPII_Win_get_attr(MPI_Win win, int keyval, void *value, int *flag, int type)
{
    mana_gate_enter();
    MPI_Win w = mana_h_real(win);
    int kv = mana_h_real(keyval), r;
    MANA_CALL_LOWER_INTO(r, 4460, "MPII_Win_get_attr", int, (MPI_Win, int, void *, int *, int),
                         (w, kv, value, flag, type));
    mana_gate_leave();
    const int *flavor = r == MPI_SUCCESS && keyval == MPI_WIN_CREATE_FLAVOR && *flag ? win_flavor_override(win) : NULL;
    if (flavor && type == 0)
        *(const int **)value = flavor;
    else if (flavor)
        *(intptr_t *)value = *flavor;
    return r;
}
MANA_EXPORT(mana_w_MPII_Win_get_attr, MPII_Win_get_attr)

__attribute__((used)) static int mana_w_MPII_Win_set_attr(MPI_Win win, int keyval, void *value, int type)
{
    mana_gate_enter();
    MPI_Win w = mana_h_real(win);
    int kv = mana_h_real(keyval), r;
    MANA_CALL_LOWER_INTO(r, 4461, "MPII_Win_set_attr", int, (MPI_Win, int, void *, int), (w, kv, value, type));
    mana_gate_leave();
    if (r == MPI_SUCCESS)
        mana_keyval_attr_type_set(keyval, type);
    return r;
}
MANA_EXPORT(mana_w_MPII_Win_set_attr, MPII_Win_set_attr)

__attribute__((used)) static int mana_w_MPI_Win_free(MPI_Win *win)
{
    MPI_Win w = *win;
    int r, counted = mana_coll_enter(w);
    mana_gate_enter();
    MPI_Win w_r = mana_h_real(w), w_l = w_r;
    {
        MANA_CALL_LOWER_INTO(r, 4012, "PMPI_Win_free", int, (MPI_Win * w), (&w_l));
    }
    struct mana_comm_meta *m = mana_comm_meta(w);
    if (r == MPI_SUCCESS)
        mana_win_epochs_drop(w);
    if (r == MPI_SUCCESS && m && m->win_comm) {
        MPI_Comm c = m->win_comm;
        int r_free;
        m->win_comm = 0;
        MANA_CALL_LOWER_INTO(r_free, 4054, "PMPI_Comm_free", int, (MPI_Comm *), (&c));
        (void)r_free;
    }
    mana_gate_leave();
    mana_coll_leave(counted);
    *win = mana_h_inout_done(w, w_r, w_l);
    struct shared_win *sw = r == MPI_SUCCESS ? shared_win_of(w) : NULL;
    if (sw) {
        munmap(sw->map, sw->map_len);
        free(sw->size);
        sw->win = 0;
    }
    if (r == MPI_SUCCESS)
        for (int i = 0; i < MANA_WINS; i++)
            if (win_mem[i].base && win_mem[i].win == w) {
                void *p = win_mem[i].base;
                win_mem[i].base = NULL;
                free(p);
                break;
            }
    return r;
}
MANA_EXPORT(mana_w_MPI_Win_free, MPI_Win_free)
MANA_EXPORT(mana_w_MPI_Win_free, PMPI_Win_free)

/* Fortran status sentinels. MPICH sets MPI_F_STATUS(ES)_IGNORE only when its Fortran
 * binding initializes (NULL from C); MPI_F08_STATUS(ES)_IGNORE point at objects. The
 * application gets ours, with the same roles; the wrappers of the status conversion
 * functions translate them to the lower library's, read from its own variables. */
MPI_Fint *MPI_F_STATUS_IGNORE = NULL;
MPI_Fint *MPI_F_STATUSES_IGNORE = NULL;
MPI_F08_status MPIR_F08_MPI_STATUS_IGNORE_OBJ;
MPI_F08_status MPIR_F08_MPI_STATUSES_IGNORE_OBJ[1];
MPI_F08_status *MPI_F08_STATUS_IGNORE = &MPIR_F08_MPI_STATUS_IGNORE_OBJ;
MPI_F08_status *MPI_F08_STATUSES_IGNORE = MPIR_F08_MPI_STATUSES_IGNORE_OBJ;

static const void *lower_pointer_variable(unsigned id, const char *name)
{
    const void *const *lower = mana_lower_fn(id, name, mana_thread_lower_fs());
    return *lower;
}

const void *mana_translate_fstatus_impl(const void *p)
{
    if (p == MPI_F08_STATUS_IGNORE)
        return lower_pointer_variable(4020, "MPI_F08_STATUS_IGNORE");
    if (p == MPI_F08_STATUSES_IGNORE)
        return lower_pointer_variable(4021, "MPI_F08_STATUSES_IGNORE");
    if (p == MPI_F_STATUS_IGNORE)
        return lower_pointer_variable(4022, "MPI_F_STATUS_IGNORE");
    if (p == MPI_F_STATUSES_IGNORE)
        return lower_pointer_variable(4023, "MPI_F_STATUSES_IGNORE");
    return p;
}

/* MPI_Register_datarep(_c): the read/write conversion functions and the file-extent
 * function are called by the I/O layer in the lower world; one slot per registered
 * representation (a representation cannot be unregistered). NULL functions (e.g.
 * MPI_CONVERSION_FN_NULL) pass through. */
static MPI_Datarep_conversion_function *dr_read[MANA_SLOTS], *dr_write[MANA_SLOTS];
static MPI_Datarep_conversion_function_c *dr_read_c[MANA_SLOTS], *dr_write_c[MANA_SLOTS];
static MPI_Datarep_extent_function *dr_extent[MANA_SLOTS];
static int dr_used;
/* What each registration was given, to register it again at restart (before any file
 * is opened again: a view may use it). */
static char *dr_name[MANA_SLOTS];
static void *dr_extra[MANA_SLOTS];
static unsigned char dr_large[MANA_SLOTS], dr_done[MANA_SLOTS];
#define DR_CONV(NAME, FN, COUNT_T)                                                                   \
    static int NAME(void *ub, MPI_Datatype dt, COUNT_T n, void *fb, MPI_Offset pos, void *ex)       \
    {                                                                                                \
        unsigned long l_ = mana_callback_enter();                                                    \
        int r_ = FN(ub, mana_h_lookup_virtual(dt), n, fb, pos, ex);                                  \
        mana_callback_leave(l_);                                                                     \
        return r_;                                                                                   \
    }
#define DR_TRAMP(k)                                                                                  \
    DR_CONV(dr_read_tramp_##k, dr_read[k], int)                                                      \
    DR_CONV(dr_write_tramp_##k, dr_write[k], int)                                                    \
    DR_CONV(dr_read_tramp_c_##k, dr_read_c[k], MPI_Count)                                            \
    DR_CONV(dr_write_tramp_c_##k, dr_write_c[k], MPI_Count)                                          \
    static int dr_extent_tramp_##k(MPI_Datatype dt, MPI_Aint *extent, void *ex)                      \
    {                                                                                                \
        unsigned long l_ = mana_callback_enter();                                                    \
        int r_ = dr_extent[k](mana_h_lookup_virtual(dt), extent, ex);                                \
        mana_callback_leave(l_);                                                                     \
        return r_;                                                                                   \
    }
MANA_REPEAT64(DR_TRAMP)
#define DR_ENTRY(k) {dr_read_tramp_##k, dr_write_tramp_##k, dr_read_tramp_c_##k, dr_write_tramp_c_##k, dr_extent_tramp_##k},
static const struct {
    MPI_Datarep_conversion_function *read, *write;
    MPI_Datarep_conversion_function_c *read_c, *write_c;
    MPI_Datarep_extent_function *extent;
} dr_tramps[MANA_SLOTS] = {MANA_REPEAT64(DR_ENTRY)};

__attribute__((used)) static int mana_w_MPI_Register_datarep(const char *datarep,
                                                             MPI_Datarep_conversion_function *read_fn,
                                                             MPI_Datarep_conversion_function *write_fn,
                                                             MPI_Datarep_extent_function *extent_fn, void *extra)
{
    int k = __atomic_fetch_add(&dr_used, 1, __ATOMIC_RELAXED);
    if (k >= MANA_SLOTS)
        return mana_slots_full("data representations");
    dr_read[k] = read_fn;
    dr_write[k] = write_fn;
    dr_extent[k] = extent_fn;
    void *rd_ = read_fn ? (void *)dr_tramps[k].read : NULL, *wr_ = write_fn ? (void *)dr_tramps[k].write : NULL;
    void *ex_ = extent_fn ? (void *)dr_tramps[k].extent : NULL;
    dr_name[k] = strdup(datarep ? datarep : "");
    dr_extra[k] = extra;
    dr_large[k] = 0;
    int r;
    MANA_FORWARD_INTO(r, 4030, "PMPI_Register_datarep", int, (const char *d, void *r, void *w, void *e, void *x),
                      (datarep, rd_, wr_, ex_, extra));
    dr_done[k] = r == MPI_SUCCESS;
    return r;
}
MANA_EXPORT(mana_w_MPI_Register_datarep, MPI_Register_datarep)
MANA_EXPORT(mana_w_MPI_Register_datarep, PMPI_Register_datarep)

__attribute__((used)) static int mana_w_MPI_Register_datarep_c(const char *datarep,
                                                               MPI_Datarep_conversion_function_c *read_fn,
                                                               MPI_Datarep_conversion_function_c *write_fn,
                                                               MPI_Datarep_extent_function *extent_fn, void *extra)
{
    int k = __atomic_fetch_add(&dr_used, 1, __ATOMIC_RELAXED);
    if (k >= MANA_SLOTS)
        return mana_slots_full("data representations");
    dr_read_c[k] = read_fn;
    dr_write_c[k] = write_fn;
    dr_extent[k] = extent_fn;
    void *rd_ = read_fn ? (void *)dr_tramps[k].read_c : NULL, *wr_ = write_fn ? (void *)dr_tramps[k].write_c : NULL;
    void *ex_ = extent_fn ? (void *)dr_tramps[k].extent : NULL;
    dr_name[k] = strdup(datarep ? datarep : "");
    dr_extra[k] = extra;
    dr_large[k] = 1;
    int r;
    MANA_FORWARD_INTO(r, 4031, "PMPI_Register_datarep_c", int, (const char *d, void *r, void *w, void *e, void *x),
                      (datarep, rd_, wr_, ex_, extra));
    dr_done[k] = r == MPI_SUCCESS;
    return r;
}
MANA_EXPORT(mana_w_MPI_Register_datarep_c, MPI_Register_datarep_c)
MANA_EXPORT(mana_w_MPI_Register_datarep_c, PMPI_Register_datarep_c)

int mana_reregister_datareps(char *err, int errlen)
{
    int n = __atomic_load_n(&dr_used, __ATOMIC_RELAXED);
    for (int k = 0; k < n && k < MANA_SLOTS; k++) {
        if (!dr_done[k] || !dr_name[k])
            continue;
        void *rd_, *wr_, *ex_ = dr_extent[k] ? (void *)dr_tramps[k].extent : NULL;
        int r;
        if (dr_large[k]) {
            rd_ = dr_read_c[k] ? (void *)dr_tramps[k].read_c : NULL;
            wr_ = dr_write_c[k] ? (void *)dr_tramps[k].write_c : NULL;
            {
                MANA_CALL_LOWER_INTO(r, 4628, "PMPI_Register_datarep_c", int,
                                     (const char *d, void *r, void *w, void *e, void *x), (dr_name[k], rd_, wr_, ex_, dr_extra[k]));
            }
        } else {
            rd_ = dr_read[k] ? (void *)dr_tramps[k].read : NULL;
            wr_ = dr_write[k] ? (void *)dr_tramps[k].write : NULL;
            {
                MANA_CALL_LOWER_INTO(r, 4629, "PMPI_Register_datarep", int,
                                     (const char *d, void *r, void *w, void *e, void *x), (dr_name[k], rd_, wr_, ex_, dr_extra[k]));
            }
        }
        if (r != MPI_SUCCESS) {
            snprintf(err, (size_t)errlen, "registering the data representation %s again failed (error %d)", dr_name[k],
                     r);
            return -1;
        }
    }
    return 0;
}

/* MPI_Init / MPI_Init_thread: the thread level the application asked for is what a
 * restart's new lower half is initialized with (src/ckpt.c). Both count as a collective on
 * MPI_COMM_WORLD: a checkpoint requested while some ranks are still before MPI_Init and
 * others inside it converges once every rank has returned from it (the ranks still before
 * it are behind and run on), so that every rank of an image is on the same side of
 * MPI_Init; one requested while all are before it holds a rank that arrives at MPI_Init
 * at its entry, outside the lower half, until the image is written. */
__attribute__((visibility("hidden"))) int mana_init_level = -1;

__attribute__((used)) static int mana_w_MPI_Init(int *argc, char ***argv)
{
    const int counted = mana_coll_enter(MPI_COMM_WORLD);
    int r;
    {
        MANA_FORWARD_INTO(r, 4050, "PMPI_Init", int, (int *, char ***), (argc, argv));
    }
    if (r == MPI_SUCCESS) {
        mana_init_level = MPI_THREAD_SINGLE;
        __atomic_store_n(&mana_mpi_phase, MANA_PHASE_INITIALIZED, __ATOMIC_RELEASE);
        mana_mark_time("init");
    }
    mana_coll_leave(counted);
    if (r == MPI_SUCCESS) {
        mana_ssend_init(); /* collective, counted like the application's */
        call_trigger_start();
    }
    return r;
}
MANA_EXPORT(mana_w_MPI_Init, MPI_Init)
MANA_EXPORT(mana_w_MPI_Init, PMPI_Init)

__attribute__((used)) static int mana_w_MPI_Init_thread(int *argc, char ***argv, int required, int *provided)
{
    const int counted = mana_coll_enter(MPI_COMM_WORLD);
    int r;
    {
        MANA_FORWARD_INTO(r, 4051, "PMPI_Init_thread", int, (int *, char ***, int, int *),
                          (argc, argv, required, provided));
    }
    if (r == MPI_SUCCESS) {
        mana_init_level = required;
        __atomic_store_n(&mana_mpi_phase, MANA_PHASE_INITIALIZED, __ATOMIC_RELEASE);
        mana_mark_time("init");
    }
    mana_coll_leave(counted);
    if (r == MPI_SUCCESS) {
        mana_ssend_init(); /* collective, counted like the application's */
        call_trigger_start();
    }
    return r;
}
MANA_EXPORT(mana_w_MPI_Init_thread, MPI_Init_thread)
MANA_EXPORT(mana_w_MPI_Init_thread, PMPI_Init_thread)

/* MPI_Comm/Win_set_errhandler: the handler is recorded with the object, so a restart can
 * set it again in the new lower half (src/ckpt.c, src/rebuild.c). The record holds a
 * reference on the handler's handle: applications commonly free their handle right after
 * setting it, while MPI keeps the handler with the object. */
#define SET_ERRHANDLER_WRAPPER(KIND, ID)                                                        \
    __attribute__((used)) static int mana_w_MPI_##KIND##_set_errhandler(int obj, MPI_Errhandler errhandler) \
    {                                                                                           \
        int r;                                                                                  \
        mana_gate_enter();                                                                      \
        int o = mana_h_real(obj);                                                               \
        MPI_Errhandler e = mana_h_real(errhandler);                                             \
        {                                                                                       \
            MANA_CALL_LOWER_INTO(r, ID, "PMPI_" #KIND "_set_errhandler", int, (int, MPI_Errhandler), (o, e)); \
        }                                                                                       \
        struct mana_comm_meta *m = mana_comm_meta(obj);                                         \
        if (r == MPI_SUCCESS && m) {                                                            \
            int old = m->errhandler;                                                            \
            m->errhandler = mana_h_is_virtual(errhandler) ? mana_h_virtual(e) : errhandler;     \
            if (mana_h_is_virtual(old))                                                         \
                mana_h_unref(old);                                                              \
        }                                                                                       \
        mana_gate_leave();                                                                      \
        return r;                                                                               \
    }                                                                                           \
    MANA_EXPORT(mana_w_MPI_##KIND##_set_errhandler, MPI_##KIND##_set_errhandler)                \
    MANA_EXPORT(mana_w_MPI_##KIND##_set_errhandler, PMPI_##KIND##_set_errhandler)
SET_ERRHANDLER_WRAPPER(Comm, 4052)
SET_ERRHANDLER_WRAPPER(Win, 4053)

/* MPI_Type_free: a pending or persistent request may still hold the datatype (MANA
 * re-posts it at restart, and the snapshot describes it then), so the lower half frees it
 * only when its last reference goes (mana_handle_released) — at once when nothing holds
 * it. */
__attribute__((used)) static int mana_w_MPI_Type_free(MPI_Datatype *datatype)
{
    MPI_Datatype v = *datatype, real = mana_h_real(v);
    unsigned *aux = mana_h_is_virtual(v) && !mana_h_is_virtual(real) ? mana_h_aux(v) : NULL;
    if (!aux) { /* predefined, null or invalid: MPI's own answer */
        int r;
        MANA_FORWARD_INTO(r, 4056, "PMPI_Type_free", int, (MPI_Datatype *), (&real));
        return r;
    }
    if (!(__atomic_load_n(aux, __ATOMIC_RELAXED) & MANA_AUX_FREE_ONCE))
        __atomic_fetch_add(aux, 1, __ATOMIC_RELAXED);
    mana_h_unref(v);
    *datatype = MPI_DATATYPE_NULL;
    return MPI_SUCCESS;
}
MANA_EXPORT(mana_w_MPI_Type_free, MPI_Type_free)
MANA_EXPORT(mana_w_MPI_Type_free, PMPI_Type_free)
