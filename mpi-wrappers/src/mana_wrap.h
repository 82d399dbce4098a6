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

/* ---- Virtual handles (src/handles.c explains the encoding) ---- */
#define MANA_VH_KINDS 16
#define MANA_VH_CHUNK_BITS 15
#define MANA_VH_CHUNKS 1024
#define MANA_VH_TAG 0xC2000000u
#define MANA_VH_INDEX_MASK 0x01FFFFFFu
#define MANA_VH_KIND(h) (((unsigned)(h) >> 26) & 0xFu)
#define MANA_HIDDEN __attribute__((visibility("hidden")))

extern int *mana_vh_dir[MANA_VH_KINDS][MANA_VH_CHUNKS] MANA_HIDDEN;

/* A handle naming an object created at run time (MPICH: "direct" or "indirect"), as
 * opposed to a predefined object or a null handle, which keep their values. */
static inline __attribute__((always_inline)) int mana_h_is_object(int h)
{
    return ((unsigned)h >> 30) >= 2;
}

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

/* The application's handle for a real handle the lower half returned: new objects get
 * a new virtual handle, an object already known gets its handle again (one more
 * reference). */
extern int mana_h_virtual(int real) MANA_HIDDEN;
/* The application's handle for a real handle MPI passes to a callback (no new reference). */
extern int mana_h_lookup_virtual(int real) MANA_HIDDEN;
/* After a call that may free or replace the object behind an in-out handle: the
 * application's new value. */
extern int mana_h_inout_done(int v_before, int real_before, int real_after) MANA_HIDDEN;
/* Stores the application's handle for `real` in `*out` if the call succeeded. */
static inline int mana_out_handle(int r, int *out, int real)
{
    if (r == MPI_SUCCESS && real)
        *out = mana_h_virtual(real);
    return r;
}
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
