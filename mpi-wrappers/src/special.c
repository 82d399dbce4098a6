/* Hand-written wrappers (listed in gen/handwritten.txt; the generator skips them). */
#include "mana_wrap.h"
#include <stdio.h>

__thread unsigned long mana_tls_lower_fs __attribute__((tls_model("initial-exec"), visibility("hidden")));

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
        op_fn[k](in, inout, len, dt);                                                   \
        mana_callback_leave(l_);                                                        \
    }                                                                                   \
    static void op_tramp_c_##k(void *in, void *inout, MPI_Count *len, MPI_Datatype *dt) \
    {                                                                                   \
        unsigned long l_ = mana_callback_enter();                                       \
        op_fn_c[k](in, inout, len, dt);                                                 \
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
    MANA_FORWARD(4000, "PMPI_Op_create", int, (MPI_User_function * f, int c, MPI_Op *o), (tramp, commute, op));
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
    MANA_FORWARD(4001, "PMPI_Op_create_c", int, (MPI_User_function_c * f, int c, MPI_Op *o), (tramp, commute, op));
}
MANA_EXPORT(mana_w_MPI_Op_create_c, MPI_Op_create_c)
MANA_EXPORT(mana_w_MPI_Op_create_c, PMPI_Op_create_c)

/* MPI_Comm_create_errhandler: MPICH calls the handler with (comm, code). */
static MPI_Comm_errhandler_function *eh_fn[MANA_SLOTS];
static int eh_used;
#define EH_TRAMP(k)                                                  \
    static void eh_tramp_##k(MPI_Comm *comm, int *code, ...)         \
    {                                                                \
        unsigned long l_ = mana_callback_enter();                    \
        eh_fn[k](comm, code);                                        \
        mana_callback_leave(l_);                                     \
    }
MANA_REPEAT64(EH_TRAMP)
#define EH_ENTRY(k) eh_tramp_##k,
static MPI_Comm_errhandler_function *const eh_tramps[MANA_SLOTS] = {MANA_REPEAT64(EH_ENTRY)};

__attribute__((used)) static int mana_w_MPI_Comm_create_errhandler(MPI_Comm_errhandler_function *fn, MPI_Errhandler *eh)
{
    int k = __atomic_fetch_add(&eh_used, 1, __ATOMIC_RELAXED);
    if (k >= MANA_SLOTS)
        return mana_slots_full("communicator error handlers");
    eh_fn[k] = fn;
    MPI_Comm_errhandler_function *tramp = eh_tramps[k];
    MANA_FORWARD(4002, "PMPI_Comm_create_errhandler", int, (MPI_Comm_errhandler_function * f, MPI_Errhandler *e),
                 (tramp, eh));
}
MANA_EXPORT(mana_w_MPI_Comm_create_errhandler, MPI_Comm_create_errhandler)
MANA_EXPORT(mana_w_MPI_Comm_create_errhandler, PMPI_Comm_create_errhandler)

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
