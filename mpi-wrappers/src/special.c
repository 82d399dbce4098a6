/* Hand-written wrappers (listed in gen/handwritten.txt; the generator skips them). */
#include "mana_wrap.h"
#include <stdio.h>

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
    fprintf(stderr, "mana: more than %d %s registered; MANA-rs supports %d\n", MANA_SLOTS, what, MANA_SLOTS);
    return MPI_ERR_INTERN;
}

/* MPI_Op_create / MPI_Op_create_c */
static MPI_User_function *op_fn[MANA_SLOTS];
static MPI_User_function_c *op_fn_c[MANA_SLOTS];
static int op_used, op_used_c;
#define OP_TRAMP(k)                                                                     \
    static void op_tramp_##k(void *in, void *inout, int *len, MPI_Datatype *dt)          \
    {                                                                                   \
        unsigned long l_ = mana_callback_enter();                                       \
        MPI_Datatype v_ = mana_h_lookup_virtual(*dt);                                   \
        op_fn[k](in, inout, len, &v_);                                                  \
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

__attribute__((used)) static int mana_w_MPI_Op_create(MPI_User_function *user_fn, int commute, MPI_Op *op)
{
    int k = __atomic_fetch_add(&op_used, 1, __ATOMIC_RELAXED);
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
    return mana_out_handle(r, op, op_l);
}
MANA_EXPORT(mana_w_MPI_Op_create, MPI_Op_create)
MANA_EXPORT(mana_w_MPI_Op_create, PMPI_Op_create)

__attribute__((used)) static int mana_w_MPI_Op_create_c(MPI_User_function_c *user_fn, int commute, MPI_Op *op)
{
    int k = __atomic_fetch_add(&op_used_c, 1, __ATOMIC_RELAXED);
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
    return mana_out_handle(r, op, op_l);
}
MANA_EXPORT(mana_w_MPI_Op_create_c, MPI_Op_create_c)
MANA_EXPORT(mana_w_MPI_Op_create_c, PMPI_Op_create_c)

/* Error handlers (communicator, window, file, session): MPICH calls them with
 * (handle *, code *); the handle is passed by address whatever its type, so one pool
 * serves every kind. The handler sees the application's handle (MPI_File, a pointer in
 * MPICH, is not virtual). */
typedef void(mana_errh_fn)(void *, int *, ...);
static mana_errh_fn *eh_fn[MANA_SLOTS];
static char eh_is_file[MANA_SLOTS];
static int eh_used;
#define EH_TRAMP(k)                                                  \
    static void eh_tramp_##k(void *handle, int *code, ...)           \
    {                                                                \
        unsigned long l_ = mana_callback_enter();                    \
        if (eh_is_file[k]) {                                         \
            eh_fn[k](handle, code);                                  \
        } else {                                                     \
            int v_ = mana_h_lookup_virtual(*(int *)handle);          \
            eh_fn[k](&v_, code);                                     \
        }                                                            \
        mana_callback_leave(l_);                                     \
    }
MANA_REPEAT64(EH_TRAMP)
#define EH_ENTRY(k) eh_tramp_##k,
static mana_errh_fn *const eh_tramps[MANA_SLOTS] = {MANA_REPEAT64(EH_ENTRY)};

#define ERRHANDLER_WRAPPER(NAME, ID, IS_FILE)                                                  \
    __attribute__((used)) static int mana_w_##NAME(void *fn, MPI_Errhandler *eh)               \
    {                                                                                          \
        int k = __atomic_fetch_add(&eh_used, 1, __ATOMIC_RELAXED);                             \
        if (k >= MANA_SLOTS)                                                                   \
            return mana_slots_full("error handlers");                                          \
        eh_fn[k] = (mana_errh_fn *)fn;                                                         \
        eh_is_file[k] = IS_FILE;                                                               \
        void *tramp = (void *)eh_tramps[k];                                                    \
        MPI_Errhandler eh_l = 0;                                                               \
        int r;                                                                                 \
        {                                                                                      \
            MANA_FORWARD_INTO(r, ID, "P" #NAME, int, (void *f, MPI_Errhandler *e), (tramp, &eh_l)); \
        }                                                                                      \
        return mana_out_handle(r, eh, eh_l);                                                   \
    }                                                                                          \
    MANA_EXPORT(mana_w_##NAME, NAME)                                                           \
    MANA_EXPORT(mana_w_##NAME, P##NAME)
ERRHANDLER_WRAPPER(MPI_Comm_create_errhandler, 4002, 0)
ERRHANDLER_WRAPPER(MPI_Win_create_errhandler, 4014, 0)
ERRHANDLER_WRAPPER(MPI_File_create_errhandler, 4015, 1)
ERRHANDLER_WRAPPER(MPI_Session_create_errhandler, 4016, 0)

/* Generalized requests: query, free and cancel functions, one slot per request. */
typedef int(mana_gq_fn)(void *, MPI_Status *);
typedef int(mana_gf_fn)(void *);
typedef int(mana_gc_fn)(void *, int);
static mana_gq_fn *gq_fn[MANA_SLOTS];
static mana_gf_fn *gf_fn[MANA_SLOTS];
static mana_gc_fn *gc_fn[MANA_SLOTS];
static int gr_used;
#define GR_TRAMP(k)                                                  \
    static int gq_tramp_##k(void *ex, MPI_Status *st)                \
    {                                                                \
        unsigned long l_ = mana_callback_enter();                    \
        MPI_Status s_;                                               \
        mana_status_copy(&s_, st);                                   \
        int r_ = gq_fn[k](ex, &s_);                                  \
        mana_status_copy(st, &s_);                                   \
        mana_callback_leave(l_);                                     \
        return r_;                                                   \
    }                                                                \
    static int gf_tramp_##k(void *ex)                                \
    {                                                                \
        unsigned long l_ = mana_callback_enter();                    \
        int r_ = gf_fn[k](ex);                                       \
        mana_callback_leave(l_);                                     \
        return r_;                                                   \
    }                                                                \
    static int gc_tramp_##k(void *ex, int complete)                  \
    {                                                                \
        unsigned long l_ = mana_callback_enter();                    \
        int r_ = gc_fn[k](ex, complete);                             \
        mana_callback_leave(l_);                                     \
        return r_;                                                   \
    }
MANA_REPEAT64(GR_TRAMP)
#define GQ_ENTRY(k) gq_tramp_##k,
#define GF_ENTRY(k) gf_tramp_##k,
#define GC_ENTRY(k) gc_tramp_##k,
static mana_gq_fn *const gq_tramps[MANA_SLOTS] = {MANA_REPEAT64(GQ_ENTRY)};
static mana_gf_fn *const gf_tramps[MANA_SLOTS] = {MANA_REPEAT64(GF_ENTRY)};
static mana_gc_fn *const gc_tramps[MANA_SLOTS] = {MANA_REPEAT64(GC_ENTRY)};

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
    void *q = (void *)gq_tramps[k], *f = (void *)gf_tramps[k], *c = (void *)gc_tramps[k];
    MPI_Request req_l = 0;
    int r;
    {
        MANA_FORWARD_INTO(r, 4017, "PMPI_Grequest_start", int,
                          (void *q_, void *f_, void *c_, void *e_, MPI_Request *r_), (q, f, c, extra, &req_l));
    }
    return mana_out_handle(r, request, req_l);
}
MANA_EXPORT(mana_w_MPI_Grequest_start, MPI_Grequest_start)
MANA_EXPORT(mana_w_MPI_Grequest_start, PMPI_Grequest_start)

/* MPI_Finalize: lets the runtime look at the lower half one last time (region dump for
 * tests, MANA_DUMP_REGIONS) before the real MPI_Finalize. */
extern void mana_before_finalize(void);
__attribute__((used)) static int mana_w_MPI_Finalize(void)
{
    mana_before_finalize();
    MANA_FORWARD(4003, "PMPI_Finalize", int, (void), ());
}
MANA_EXPORT(mana_w_MPI_Finalize, MPI_Finalize)
MANA_EXPORT(mana_w_MPI_Finalize, PMPI_Finalize)

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
static int kv_used;
#define KV_TRAMP(k)                                                                    \
    static int kv_copy_##k(int h, int kv, void *ex, void *in, void *out, int *flag)    \
    {                                                                                  \
        unsigned long l_ = mana_callback_enter();                                      \
        int r_ = kv_copy_fn[k](mana_h_lookup_virtual(h), mana_h_lookup_virtual(kv), ex, in, out, flag); \
        mana_callback_leave(l_);                                                       \
        return r_;                                                                     \
    }                                                                                  \
    static int kv_del_##k(int h, int kv, void *attr, void *ex)                         \
    {                                                                                  \
        unsigned long l_ = mana_callback_enter();                                      \
        int r_ = kv_del_fn[k](mana_h_lookup_virtual(h), mana_h_lookup_virtual(kv), attr, ex); \
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

/* Fills `fns[0..1]` with what the lower library gets for (copy, del); -1 if no slot. */
static int kv_translate(mana_copy_fn *copy, mana_delete_fn *del, void *fns[2])
{
    fns[0] = (void *)copy;
    fns[1] = (void *)del;
    if (copy == (mana_copy_fn *)MPIR_Dup_fn)
        fns[0] = mana_lower_fn(4006, "MPIR_Dup_fn", mana_thread_lower_fs());
    int need = (copy && copy != (mana_copy_fn *)MPIR_Dup_fn) || del;
    if (!need)
        return 0;
    int k = __atomic_fetch_add(&kv_used, 1, __ATOMIC_RELAXED);
    if (k >= MANA_SLOTS)
        return -1;
    if (copy && copy != (mana_copy_fn *)MPIR_Dup_fn) {
        kv_copy_fn[k] = copy;
        fns[0] = (void *)kv_copy_tramps[k];
    }
    if (del) {
        kv_del_fn[k] = del;
        fns[1] = (void *)kv_del_tramps[k];
    }
    return 0;
}

#define KEYVAL_WRAPPER(NAME, ID)                                                              \
    __attribute__((used)) static int mana_w_##NAME(void *copy, void *del, int *keyval, void *extra) \
    {                                                                                         \
        void *fns[2];                                                                         \
        if (kv_translate((mana_copy_fn *)copy, (mana_delete_fn *)del, fns))                  \
            return mana_slots_full("attribute keyvals with callbacks");                       \
        void *c_ = fns[0], *d_ = fns[1];                                                      \
        int kv_l = 0, r;                                                                      \
        {                                                                                     \
            MANA_FORWARD_INTO(r, ID, "P" #NAME, int, (void *c, void *d, int *k, void *e), (c_, d_, &kv_l, extra)); \
        }                                                                                     \
        return mana_out_handle(r, keyval, kv_l);                                              \
    }                                                                                         \
    MANA_EXPORT(mana_w_##NAME, NAME)                                                          \
    MANA_EXPORT(mana_w_##NAME, P##NAME)
KEYVAL_WRAPPER(MPI_Comm_create_keyval, 4007)
KEYVAL_WRAPPER(MPI_Type_create_keyval, 4008)
KEYVAL_WRAPPER(MPI_Win_create_keyval, 4009)
KEYVAL_WRAPPER(MPI_Keyval_create, 4010)

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

static int win_create(void *base, MPI_Aint size, int disp_unit, MPI_Info info, MPI_Comm comm, MPI_Win *win)
{
    MPI_Info info_l = mana_h_real(info);
    MPI_Comm comm_l = mana_h_real(comm);
    MPI_Win win_l = 0;
    int r, counted = mana_coll_enter(comm, 1);
    {
        MANA_FORWARD_INTO(r, 4011, "PMPI_Win_create", int,
                          (void *b, MPI_Aint s, int d, MPI_Info i, MPI_Comm c, MPI_Win *w),
                          (base, size, disp_unit, info_l, comm_l, &win_l));
    }
    mana_coll_leave(counted, 1);
    return mana_out_handle(r, win, win_l);
}

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

static int win_create_c(void *base, MPI_Aint size, MPI_Aint disp_unit, MPI_Info info, MPI_Comm comm, MPI_Win *win)
{
    MPI_Info info_l = mana_h_real(info);
    MPI_Comm comm_l = mana_h_real(comm);
    MPI_Win win_l = 0;
    int r, counted = mana_coll_enter(comm, 1);
    {
        MANA_FORWARD_INTO(r, 4013, "PMPI_Win_create_c", int,
                          (void *b, MPI_Aint s, MPI_Aint d, MPI_Info i, MPI_Comm c, MPI_Win *w),
                          (base, size, disp_unit, info_l, comm_l, &win_l));
    }
    mana_coll_leave(counted, 1);
    return mana_out_handle(r, win, win_l);
}

__attribute__((used)) static int mana_w_MPI_Win_allocate_c(MPI_Aint size, MPI_Aint disp_unit, MPI_Info info,
                                                           MPI_Comm comm, void *baseptr, MPI_Win *win)
{
    void *p = calloc(1, size > 0 ? (size_t)size : 1);
    if (!p)
        return MPI_ERR_NO_MEM;
    return win_allocated(win_create_c(p, size, disp_unit, info, comm, win), p, win, baseptr);
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
    if (!all || !pairs || (r = lower_allgather(mine, 2, MPI_AINT, pairs, 2, MPI_AINT, c)) != MPI_SUCCESS) {
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
    char path[128] = "";
    int fd = -1;
    sw->map_len = ((size_t)total + 4095) & ~(size_t)4095;
    if (!sw->map_len)
        sw->map_len = 4096;
    if (me == 0) {
        snprintf(path, sizeof path, "/dev/shm/mana-win-%d-%d", (int)getpid(), __atomic_fetch_add(&shared_seq, 1, 0));
        fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0 || ftruncate(fd, (off_t)sw->map_len) != 0) {
            fprintf(stderr, "mana: cannot create the shared window segment %s (%zu bytes)\n", path, sw->map_len);
            path[0] = 0;
        }
    }
    lower_bcast(path, sizeof path, MPI_CHAR, 0, c);
    if (!path[0]) {
        if (fd >= 0)
            close(fd);
        free(all);
        sw->win = 0;
        return MPI_ERR_NO_MEM;
    }
    if (me != 0)
        fd = open(path, O_RDWR | O_CLOEXEC);
    sw->map = fd < 0 ? MAP_FAILED : mmap(NULL, sw->map_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (fd >= 0)
        close(fd);
    lower_barrier(c);
    if (me == 0)
        unlink(path);
    if (sw->map == MAP_FAILED) {
        fprintf(stderr, "mana: cannot map the shared window segment %s\n", path);
        free(all);
        sw->win = 0;
        return MPI_ERR_NO_MEM;
    }
    void *base = sw->map + sw->off[me];
    MPI_Win w = 0;
    r = disp_unit == (int)disp_unit ? win_create(base, size, (int)disp_unit, info, comm, &w)
                                    : win_create_c(base, size, disp_unit, info, comm, &w);
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
__attribute__((used)) static int mana_w_MPI_Win_get_attr(MPI_Win win, int keyval, void *value, int *flag)
{
    static int flavor_shared = MPI_WIN_FLAVOR_SHARED, flavor_allocate = MPI_WIN_FLAVOR_ALLOCATE;
    MPI_Win w = mana_h_real(win);
    int kv = mana_h_real(keyval), r;
    {
        MANA_FORWARD_INTO(r, 4045, "PMPI_Win_get_attr", int, (MPI_Win w_, int k_, void *v_, int *f_),
                          (w, kv, value, flag));
    }
    if (r == MPI_SUCCESS && keyval == MPI_WIN_CREATE_FLAVOR && *flag) {
        if (shared_win_of(win))
            *(int **)value = &flavor_shared;
        for (int i = 0; i < MANA_WINS; i++)
            if (win_mem[i].base && win_mem[i].win == win)
                *(int **)value = &flavor_allocate;
    }
    return r;
}
MANA_EXPORT(mana_w_MPI_Win_get_attr, MPI_Win_get_attr)
MANA_EXPORT(mana_w_MPI_Win_get_attr, PMPI_Win_get_attr)

__attribute__((used)) static int mana_w_MPI_Win_free(MPI_Win *win)
{
    MPI_Win w = *win, w_r = mana_h_real(w), w_l = w_r;
    int r;
    {
        MANA_FORWARD_INTO(r, 4012, "PMPI_Win_free", int, (MPI_Win * w), (&w_l));
    }
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
    MANA_FORWARD(4030, "PMPI_Register_datarep", int, (const char *d, void *r, void *w, void *e, void *x),
                 (datarep, rd_, wr_, ex_, extra));
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
    MANA_FORWARD(4031, "PMPI_Register_datarep_c", int, (const char *d, void *r, void *w, void *e, void *x),
                 (datarep, rd_, wr_, ex_, extra));
}
MANA_EXPORT(mana_w_MPI_Register_datarep_c, MPI_Register_datarep_c)
MANA_EXPORT(mana_w_MPI_Register_datarep_c, PMPI_Register_datarep_c)

/* MPI_Init / MPI_Init_thread: the thread level the application asked for is what a
 * restart's new lower half is initialized with (src/ckpt.c). */
__attribute__((visibility("hidden"))) int mana_init_level = -1;

__attribute__((used)) static int mana_w_MPI_Init(int *argc, char ***argv)
{
    int r;
    {
        MANA_FORWARD_INTO(r, 4050, "PMPI_Init", int, (int *, char ***), (argc, argv));
    }
    if (r == MPI_SUCCESS)
        mana_init_level = MPI_THREAD_SINGLE;
    return r;
}
MANA_EXPORT(mana_w_MPI_Init, MPI_Init)
MANA_EXPORT(mana_w_MPI_Init, PMPI_Init)

__attribute__((used)) static int mana_w_MPI_Init_thread(int *argc, char ***argv, int required, int *provided)
{
    int r;
    {
        MANA_FORWARD_INTO(r, 4051, "PMPI_Init_thread", int, (int *, char ***, int, int *),
                          (argc, argv, required, provided));
    }
    if (r == MPI_SUCCESS)
        mana_init_level = required;
    return r;
}
MANA_EXPORT(mana_w_MPI_Init_thread, MPI_Init_thread)
MANA_EXPORT(mana_w_MPI_Init_thread, PMPI_Init_thread)

/* MPI_Comm_set_errhandler: the handler is recorded with the communicator, so a restart can
 * set it again in the new lower half (src/ckpt.c). */
__attribute__((used)) static int mana_w_MPI_Comm_set_errhandler(MPI_Comm comm, MPI_Errhandler errhandler)
{
    int r;
    mana_gate_enter();
    MPI_Comm c = mana_h_real(comm);
    MPI_Errhandler e = mana_h_real(errhandler);
    {
        MANA_CALL_LOWER_INTO(r, 4052, "PMPI_Comm_set_errhandler", int, (MPI_Comm, MPI_Errhandler), (c, e));
    }
    struct mana_comm_meta *m = mana_comm_meta(comm);
    if (r == MPI_SUCCESS && m)
        m->errhandler = errhandler;
    mana_gate_leave();
    return r;
}
MANA_EXPORT(mana_w_MPI_Comm_set_errhandler, MPI_Comm_set_errhandler)
MANA_EXPORT(mana_w_MPI_Comm_set_errhandler, PMPI_Comm_set_errhandler)
