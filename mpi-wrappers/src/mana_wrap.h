/* MANA-rs MPI wrappers: what every generated and hand-written wrapper uses.
 *
 * A wrapper looks up the real function in the lower world once (mana_lower_fn, in
 * libmana), switches the FS base to the lower world's TCB around the call (wrfsbase)
 * and back. Handles and statuses pass unchanged for now: the lower half is MPICH with
 * the same ABI (virtual handles come with checkpoint/restart of MPI state).
 * Wrappers are static and exported under the MPI names with MANA_EXPORT, so their
 * prototypes (from the MPI standard) never clash with those of MPICH's mpi.h. */
#ifndef MANA_WRAP_H
#define MANA_WRAP_H
#include <mpi.h>

/* Provided by libmana.so (the upper-half runtime, LD_PRELOADed by mana_launch). */
extern void *mana_lower_fn(unsigned id, const char *lower_name, unsigned long fs);
extern int mana_unsupported(const char *name);
extern unsigned long mana_lower_tcb_for_this_thread(void);
extern unsigned long mana_upper_fs_for(unsigned long lower_fs);

/* This thread's lower-world TCB (lent by libmana on its first MPI call). */
extern __thread unsigned long mana_tls_lower_fs
    __attribute__((tls_model("initial-exec"), visibility("hidden")));

static inline __attribute__((always_inline)) unsigned long mana_thread_lower_fs(void)
{
    unsigned long fs = mana_tls_lower_fs;
    if (__builtin_expect(fs == 0, 0))
        fs = mana_tls_lower_fs = mana_lower_tcb_for_this_thread();
    return fs;
}

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

/* Calls the lower world's `lower_name` with `args` on this thread's lower TCB and stores
 * the result in `out`. The lower function is looked up once per wrapper and kept in a
 * static (a benign race: every thread finds the same pointer). */
#define MANA_FORWARD_INTO(out, id, lower_name, ret, params, args)       \
    typedef ret(*mana_fn_t) params;                                     \
    static mana_fn_t f_cache_;                                          \
    unsigned long fs_ = mana_thread_lower_fs();                         \
    mana_fn_t f_ = f_cache_;                                            \
    if (__builtin_expect(!f_, 0))                                       \
        f_ = f_cache_ = (mana_fn_t)mana_lower_fn(id, lower_name, fs_);  \
    unsigned long up_ = mana_enter_lower(fs_);                          \
    out = f_ args;                                                      \
    mana_leave_lower(up_)

/* The same, returning the result. */
#define MANA_FORWARD(id, lower_name, ret, params, args)                 \
    ret r_;                                                             \
    MANA_FORWARD_INTO(r_, id, lower_name, ret, params, args);           \
    return r_

/* MPI_UNWEIGHTED / MPI_WEIGHTS_EMPTY of this library → the lower library's (src/special.c). */
extern __attribute__((visibility("hidden"))) const void *mana_translate_weights_impl(const void *p);
#define mana_translate_weights(p) ((__typeof__(p))mana_translate_weights_impl((const void *)(p)))

#define MANA_EXPORT(internal, name)                                     \
    __asm__(".globl " #name "\n.type " #name ", @function\n.set " #name ", " #internal);

#define MANA_DATA(name, size)                                           \
    __attribute__((used, aligned(16))) static char mana_d_##name[size]; \
    __asm__(".globl " #name "\n.type " #name ", @object\n.size " #name ", " #size "\n.set " #name ", mana_d_" #name);

#endif
