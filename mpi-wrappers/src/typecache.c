/* Vector datatypes kept for reuse (issue 9, item 7: overhead on real codes).
 *
 * ScaLAPACK's BLACS describes almost every block it sends by a datatype made for that
 * message: MPI_Type_vector of a predefined type, MPI_Type_commit, the send,
 * MPI_Type_free. In xdlu these three calls are 61 % of all MPI calls (527,061 of each in
 * one run). Each is a crossing into the lower half, and MPICH itself spends ~1 µs per
 * triple building and tearing down the type. A datatype is immutable once made, so a
 * vector the application freed can serve the next MPI_Type_vector with the same
 * arguments: the lower-half object is parked here instead of freed, and handed out again.
 *
 * Two kinds of objects are parked per (count, blocklength, stride, predefined oldtype):
 * committed ones (from MPI_Type_free of a committed type) and uncommitted ones (made by
 * MPI_Type_vector and swapped out by MPI_Type_commit). MPI_Type_vector takes an
 * uncommitted one, so an application that uses the type before committing it gets
 * MPICH's own error as it would natively; MPI_Type_commit swaps it for a committed one.
 * After the first round of a shape, the triple makes no lower-half call at all.
 *
 * What keeps reuse invisible:
 * * only a type the application named with nothing but MPI_Type_vector is tagged (its aux
 *   word, below); a name or an attribute set on it untags it (a parked object carries
 *   neither) — so does a second reference MPI handed out (MPI_Type_get_contents), which
 *   shows as more than one MPI_Type_free owed;
 * * a parked object that meanwhile got a handle of its own (MPI_Type_get_contents of a
 *   type built from it) is dropped from the cache, never handed out twice;
 * * a restart brings a new lower half: the cache is emptied (its objects were the old
 *   lower half's) and the restart's MANA_AUX_FREE_ONCE replaces every tag;
 * * MPI_Finalize frees what is parked.
 * A slot is taken over by another shape only when no tagged type of its shape is live.
 * The gate is held around every use, so a checkpoint never sees the cache half updated.
 *
 * What keeps it from changing results — MPICH 4.0.2's packing of a contiguous derived
 * datatype takes an "element size" from bits 8..15 of the datatype's *handle*
 * (MPIR_Datatype_get_basic_size(datatype) in typerep_do_pack, meant for predefined
 * handles) and packs whole elements only: a contiguous vector of 22,528 bytes whose handle
 * is 0xcc0003xx packs 22,527 (natively too, once ~770 datatypes are live: a loop that
 * holds contiguous types packed 256 of 1,200 such vectors short). A cache that keeps
 * hundreds of objects alive moves the application's new datatypes to such handles: the
 * first version of this cache (1,024 slots, 2 + 2 objects each) made xdlu's broadcasts
 * drop the last byte of a double and its solves fail with residuals of 1e10. So the cache
 * keeps at most MANA_TC_MAX_PARKED objects in all, and never parks an object whose handle
 * MPICH would misread (bits 8..15 above 1). */
#include "mana_wrap.h"
#include <limits.h>
#include <string.h>

#define TC_SLOTS 256u
#define TC_PARK 2
#define MANA_TC_MAX_PARKED 64
/* A datatype's aux word (mana_wrap.h): the low 16 bits count MPI_Type_free calls owed,
 * bit 31 is MANA_AUX_FREE_ONCE; these mark a type made here. */
#define TC_TAGGED 0x40000000u
#define TC_COMMITTED 0x20000000u
#define TC_SLOT_SHIFT 16
#define TC_SLOT_MASK (TC_SLOTS - 1)
#define TC_BITS (TC_TAGGED | TC_COMMITTED | (TC_SLOT_MASK << TC_SLOT_SHIFT))
_Static_assert(((TC_SLOT_MASK << TC_SLOT_SHIFT) & (TC_TAGGED | TC_COMMITTED | MANA_AUX_FREE_ONCE)) == 0,
               "the slot number fits between the free count and the flags");

struct tc_slot {
    int count, blocklength, stride, oldtype; /* the shape; oldtype 0: slot unused */
    unsigned live;                           /* tagged types of this shape the application holds */
    int n_uncommitted, n_committed;
    MPI_Datatype uncommitted[TC_PARK], committed[TC_PARK];
};
static struct tc_slot tc_slots[TC_SLOTS];
static int tc_parked; /* objects parked in all slots */
static int tc_lock_word;

static void tc_lock(void)
{
    while (__atomic_exchange_n(&tc_lock_word, 1, __ATOMIC_ACQUIRE))
        while (__atomic_load_n(&tc_lock_word, __ATOMIC_RELAXED))
            __builtin_ia32_pause();
}

static void tc_unlock(void)
{
    __atomic_store_n(&tc_lock_word, 0, __ATOMIC_RELEASE);
}

static unsigned tc_hash(int count, int blocklength, int stride, int oldtype)
{
    unsigned h = (unsigned)count * 2654435761u;
    h = (h ^ (unsigned)blocklength) * 2246822519u;
    h = (h ^ (unsigned)stride) * 3266489917u;
    h = (h ^ (unsigned)oldtype) * 668265263u;
    return (h ^ (h >> 15)) & TC_SLOT_MASK;
}

static int tc_same(const struct tc_slot *s, int count, int blocklength, int stride, int oldtype)
{
    return s->oldtype == oldtype && s->count == count && s->blocklength == blocklength && s->stride == stride;
}

static unsigned tc_hand; /* the next slot to give up an object when the cache is full */

/* Parks `real` on `stack` of `s` (cache locked); 0: not parked, the caller frees it (its
 * handle is one MPICH misreads, or the stack is full). When the whole cache is full, the
 * slots after the clock hand give up an object, returned in `*victim` for the caller to
 * free (xdlu's factorizations move through hundreds of shapes, a few at a time). */
static int tc_park(struct tc_slot *s, int committed, MPI_Datatype real, MPI_Datatype *victim)
{
    MPI_Datatype *stack = committed ? s->committed : s->uncommitted;
    int *n = committed ? &s->n_committed : &s->n_uncommitted;
    if (*n >= TC_PARK || (((unsigned)real >> 8) & 0xffu) > 1)
        return 0;
    *victim = 0;
    for (unsigned k = 0; tc_parked >= MANA_TC_MAX_PARKED && k < TC_SLOTS; k++) {
        struct tc_slot *q = &tc_slots[tc_hand];
        tc_hand = (tc_hand + 1) & TC_SLOT_MASK;
        if (q == s)
            continue;
        if (q->n_uncommitted > 0)
            *victim = q->uncommitted[--q->n_uncommitted];
        else if (q->n_committed > 0)
            *victim = q->committed[--q->n_committed];
        else
            continue;
        tc_parked--;
    }
    if (tc_parked >= MANA_TC_MAX_PARKED)
        return 0;
    stack[(*n)++] = real;
    tc_parked++;
    return 1;
}

MANA_LOWER_FUNCTION(tc_lower_free, 4801, "PMPI_Type_free", (MPI_Datatype * t), (t))

/* Frees objects taken out of the cache (gate held, cache unlocked). */
static void tc_free_all(MPI_Datatype *t, int n)
{
    for (int i = 0; i < n; i++)
        tc_lower_free(&t[i]);
}

/* Takes a parked object from `stack` (cache locked). One that got an application handle
 * meanwhile (MPI_Type_get_contents of a type built from it) is never handed out twice:
 * it goes to `drop`, whose reference the caller frees once the cache is unlocked. */
static MPI_Datatype tc_pop(MPI_Datatype *stack, int *n, MPI_Datatype *drop, int *n_drop)
{
    while (*n > 0) {
        MPI_Datatype t = stack[--*n];
        tc_parked--;
        if (mana_h_peek_virtual(t) == t)
            return t;
        drop[(*n_drop)++] = t;
    }
    return 0;
}

__attribute__((used)) static int mana_w_MPI_Type_vector(int count, int blocklength, int stride, MPI_Datatype oldtype,
                                                      MPI_Datatype *newtype)
{
    mana_gate_enter();
    /* Only predefined element types: a derived one's handle may be freed and reused. */
    const int cacheable = newtype && oldtype != MPI_DATATYPE_NULL && !mana_h_is_object(oldtype);
    unsigned slot = 0, tagged = 0;
    MPI_Datatype made = 0, evicted[2 * TC_PARK];
    int n_evicted = 0;
    if (cacheable) {
        slot = tc_hash(count, blocklength, stride, oldtype);
        struct tc_slot *s = &tc_slots[slot];
        tc_lock();
        if (!tc_same(s, count, blocklength, stride, oldtype) && s->live == 0) {
            for (int i = 0; i < s->n_uncommitted; i++)
                evicted[n_evicted++] = s->uncommitted[i];
            for (int i = 0; i < s->n_committed; i++)
                evicted[n_evicted++] = s->committed[i];
            tc_parked -= n_evicted;
            *s = (struct tc_slot){.count = count, .blocklength = blocklength, .stride = stride, .oldtype = oldtype};
        }
        if (tc_same(s, count, blocklength, stride, oldtype)) {
            made = tc_pop(s->uncommitted, &s->n_uncommitted, evicted, &n_evicted);
            if (made) /* mapped before another thread could see it unparked */
                *newtype = mana_h_virtual(made);
            s->live++;
            tagged = 1;
        }
        tc_unlock();
        tc_free_all(evicted, n_evicted);
    }
    int r = MPI_SUCCESS;
    if (!made) {
        MPI_Datatype real = 0;
        MANA_CALL_LOWER_INTO(r, 4802, "PMPI_Type_vector", int, (int, int, int, MPI_Datatype, MPI_Datatype *),
                             (count, blocklength, stride, mana_h_real(oldtype), newtype ? &real : NULL));
        made = r == MPI_SUCCESS ? real : 0;
        if (newtype)
            mana_out_handle(r, newtype, real);
    }
    if (tagged) {
        unsigned *aux = made ? mana_h_aux(*newtype) : NULL;
        if (aux) {
            __atomic_fetch_or(aux, TC_TAGGED | (slot << TC_SLOT_SHIFT), __ATOMIC_RELAXED);
        } else {
            tc_lock();
            tc_slots[slot].live--;
            tc_unlock();
        }
    }
    mana_gate_leave();
    return r;
}
MANA_EXPORT(mana_w_MPI_Type_vector, MPI_Type_vector)
MANA_EXPORT(mana_w_MPI_Type_vector, PMPI_Type_vector)

__attribute__((used)) static int mana_w_MPI_Type_commit(MPI_Datatype *datatype)
{
    mana_gate_enter();
    MPI_Datatype v = datatype ? *datatype : 0, real = mana_h_real(v), after = real;
    unsigned *aux = mana_h_is_virtual(v) && !mana_h_is_virtual(real) ? mana_h_aux(v) : NULL;
    const unsigned a = aux ? __atomic_load_n(aux, __ATOMIC_RELAXED) : 0;
    if ((a & (TC_TAGGED | TC_COMMITTED)) == TC_TAGGED) {
        struct tc_slot *s = &tc_slots[(a >> TC_SLOT_SHIFT) & TC_SLOT_MASK];
        MPI_Datatype drop[TC_PARK + 2];
        int n_drop = 0;
        tc_lock();
        const MPI_Datatype committed = tc_pop(s->committed, &s->n_committed, drop, &n_drop);
        MPI_Datatype victim = 0;
        if (committed) {
            /* The application's handle names a committed twin before the object it named
             * is parked or freed: no other thread finds that object still mapped to it. */
            mana_h_set_real(v, committed);
            __atomic_fetch_or(aux, TC_COMMITTED, __ATOMIC_RELAXED);
            if (!tc_park(s, 0, real, &victim))
                drop[n_drop++] = real;
        }
        if (victim)
            drop[n_drop++] = victim;
        tc_unlock();
        tc_free_all(drop, n_drop);
        if (committed) {
            mana_gate_leave();
            return MPI_SUCCESS;
        }
    } else if (a & TC_COMMITTED) {
        mana_gate_leave();
        return MPI_SUCCESS; /* committing a committed type again does nothing */
    }
    int r;
    MANA_CALL_LOWER_INTO(r, 4803, "PMPI_Type_commit", int, (MPI_Datatype *), (datatype ? &after : NULL));
    if (r == MPI_SUCCESS && (a & TC_TAGGED))
        __atomic_fetch_or(aux, TC_COMMITTED, __ATOMIC_RELAXED);
    if (datatype)
        *datatype = mana_h_inout_done(v, real, after);
    mana_gate_leave();
    return r;
}
MANA_EXPORT(mana_w_MPI_Type_commit, MPI_Type_commit)
MANA_EXPORT(mana_w_MPI_Type_commit, PMPI_Type_commit)

/* A name or an attribute is about to be set on `v` (gate held). A type of the cache is
 * untagged; a parked object that the application reached through another handle
 * (MPI_Type_get_contents of a type built from it) leaves the cache. */
void mana_tc_untag(int v)
{
    if (!mana_h_is_virtual(v) || MANA_VH_KIND(v) != 0x3)
        return;
    unsigned *aux = mana_h_aux(v);
    if (!aux)
        return;
    const unsigned a = __atomic_fetch_and(aux, ~TC_BITS, __ATOMIC_RELAXED);
    const MPI_Datatype real = mana_h_real(v);
    MPI_Datatype out = 0;
    tc_lock();
    if (a & TC_TAGGED)
        tc_slots[(a >> TC_SLOT_SHIFT) & TC_SLOT_MASK].live--;
    for (unsigned i = 0; !out && tc_parked > 0 && i < TC_SLOTS; i++) {
        struct tc_slot *q = &tc_slots[i];
        for (int k = 0; !out && k < 2; k++) {
            MPI_Datatype *stack = k ? q->committed : q->uncommitted;
            int *n = k ? &q->n_committed : &q->n_uncommitted;
            for (int j = 0; j < *n; j++)
                if (stack[j] == real) {
                    out = real;
                    stack[j] = stack[--*n];
                    tc_parked--;
                    break;
                }
        }
    }
    tc_unlock();
    if (out)
        tc_lower_free(&out); /* the cache's reference; the application holds its own */
}

unsigned mana_tc_released(unsigned aux, int real)
{
    if (!(aux & TC_TAGGED))
        return aux;
    struct tc_slot *s = &tc_slots[(aux >> TC_SLOT_SHIFT) & TC_SLOT_MASK];
    const unsigned frees = aux & 0xffffu;
    int parked = 0;
    MPI_Datatype victim = 0;
    tc_lock();
    s->live--;
    if (frees == 1 && !(aux & MANA_AUX_FREE_ONCE))
        parked = tc_park(s, !!(aux & TC_COMMITTED), real, &victim);
    tc_unlock();
    if (victim)
        tc_lower_free(&victim);
    return parked ? 0 : aux & ~TC_BITS;
}

void mana_tc_forget(void)
{
    tc_lock();
    for (unsigned i = 0; i < TC_SLOTS; i++)
        tc_slots[i] = (struct tc_slot){0};
    tc_parked = 0;
    tc_unlock();
}

void mana_tc_free_parked(void)
{
    mana_gate_enter();
    for (unsigned i = 0; i < TC_SLOTS; i++) {
        MPI_Datatype t[2 * TC_PARK];
        int n = 0;
        tc_lock();
        struct tc_slot *s = &tc_slots[i];
        while (s->n_uncommitted > 0)
            t[n++] = s->uncommitted[--s->n_uncommitted];
        while (s->n_committed > 0)
            t[n++] = s->committed[--s->n_committed];
        tc_parked -= n;
        tc_unlock();
        tc_free_all(t, n);
    }
    mana_gate_leave();
}

/* A name or an attribute makes a type unfit to be handed out again. */
__attribute__((used)) static int mana_w_MPI_Type_set_name(MPI_Datatype datatype, const char *type_name)
{
    mana_gate_enter();
    mana_tc_untag(datatype);
    int r;
    MANA_CALL_LOWER_INTO(r, 4804, "PMPI_Type_set_name", int, (MPI_Datatype, const char *),
                         (mana_h_real(datatype), type_name));
    mana_gate_leave();
    return r;
}
MANA_EXPORT(mana_w_MPI_Type_set_name, MPI_Type_set_name)
MANA_EXPORT(mana_w_MPI_Type_set_name, PMPI_Type_set_name)

__attribute__((used)) static int mana_w_MPI_Type_set_attr(MPI_Datatype datatype, int type_keyval, void *attribute_val)
{
    mana_gate_enter();
    mana_tc_untag(datatype);
    int r;
    MANA_CALL_LOWER_INTO(r, 4805, "PMPI_Type_set_attr", int, (MPI_Datatype, int, void *),
                         (mana_h_real(datatype), mana_h_real(type_keyval), attribute_val));
    mana_gate_leave();
    return r;
}
MANA_EXPORT(mana_w_MPI_Type_set_attr, MPI_Type_set_attr)
MANA_EXPORT(mana_w_MPI_Type_set_attr, PMPI_Type_set_attr)

/* ---- Calls about a cached vector answered in the upper half ----
 * BLACS packs most blocks it broadcasts or sends asynchronously: MPI_Pack_size and
 * MPI_Pack with the vector of the message, 140,734 of each in xdlu. For a committed
 * vector made here the shape is known (its slot cannot change while the type lives), so
 * both are answered without a crossing, with MPICH's results: the size is count ×
 * blocklength × the element size (MPICH keeps a predefined type's size in bits 8..15 of
 * its handle), and MPICH's non-external pack format is the bytes of the type map in
 * order. Only when MPICH would pack the whole type: anything else (an error to report, a
 * buffer too small, a handle MPICH misreads) goes to the lower half as before. */

/* The slot of a committed vector made here, and its element size (gate held). */
static const struct tc_slot *tc_known(MPI_Datatype v, unsigned *esize)
{
    if (!mana_h_is_virtual(v) || MANA_VH_KIND(v) != 0x3)
        return NULL;
    const unsigned *aux = mana_h_aux(v);
    const unsigned a = aux ? __atomic_load_n(aux, __ATOMIC_RELAXED) : 0;
    if ((a & (TC_TAGGED | TC_COMMITTED)) != (TC_TAGGED | TC_COMMITTED))
        return NULL;
    const struct tc_slot *s = &tc_slots[(a >> TC_SLOT_SHIFT) & TC_SLOT_MASK];
    const MPI_Datatype real = mana_h_real(v);
    /* A predefined element type of MPICH's "builtin" kind, whose handle holds its size;
     * an object whose handle MPICH misreads when packing (see the top) goes to MPICH. */
    if (((unsigned)s->oldtype >> 30) != 1 || s->count <= 0 || s->blocklength <= 0 || s->stride < 0 ||
        mana_h_is_virtual(real) || (((unsigned)real >> 8) & 0xffu) > 1)
        return NULL;
    *esize = ((unsigned)s->oldtype >> 8) & 0xffu;
    return *esize ? s : NULL;
}

/* A communicator MPICH would accept: predefined world or self, or a live one of ours. */
static int tc_comm_ok(MPI_Comm c)
{
    if (!mana_h_is_object(c))
        return c == MPI_COMM_WORLD || c == MPI_COMM_SELF;
    return mana_h_is_virtual(c) && MANA_VH_KIND(c) == 0x1 && !mana_h_is_virtual(mana_h_real(c));
}

/* Bytes of `incount` elements of shape `s` (element size `esize`); -1 on overflow. */
static long long tc_bytes(const struct tc_slot *s, unsigned esize, int incount)
{
    long long n;
    if (__builtin_mul_overflow((long long)s->count * s->blocklength, (long long)esize, &n) ||
        __builtin_mul_overflow(n, (long long)incount, &n))
        return -1;
    return n;
}

__attribute__((used)) static int mana_w_MPI_Pack_size(int incount, MPI_Datatype datatype, MPI_Comm comm, int *size)
{
    mana_gate_enter();
    unsigned esize = 0;
    const struct tc_slot *s = incount >= 0 && size && tc_comm_ok(comm) ? tc_known(datatype, &esize) : NULL;
    const long long n = s ? tc_bytes(s, esize, incount) : -1;
    if (n >= 0) {
        *size = n > INT_MAX ? MPI_UNDEFINED : (int)n; /* as MPICH does */
        mana_gate_leave();
        return MPI_SUCCESS;
    }
    int r;
    MANA_CALL_LOWER_INTO(r, 4806, "PMPI_Pack_size", int, (int, MPI_Datatype, MPI_Comm, int *),
                         (incount, mana_h_real(datatype), mana_h_real(comm), size));
    mana_gate_leave();
    return r;
}
MANA_EXPORT(mana_w_MPI_Pack_size, MPI_Pack_size)
MANA_EXPORT(mana_w_MPI_Pack_size, PMPI_Pack_size)

__attribute__((used)) static int mana_w_MPI_Pack(const void *inbuf, int incount, MPI_Datatype datatype, void *outbuf,
                                               int outsize, int *position, MPI_Comm comm)
{
    mana_gate_enter();
    unsigned esize = 0;
    const struct tc_slot *s = incount >= 0 && outsize >= 0 && position && *position >= 0 && tc_comm_ok(comm)
                                  ? tc_known(datatype, &esize)
                                  : NULL;
    const long long n = s ? tc_bytes(s, esize, incount) : -1;
    if (n >= 0 && n <= (long long)outsize - *position && (n == 0 || (inbuf && outbuf))) {
        const size_t block = (size_t)s->blocklength * esize, stride = (size_t)s->stride * esize;
        const size_t extent = (size_t)(s->count - 1) * stride + block;
        char *out = (char *)outbuf + *position;
        for (int i = 0; i < incount; i++) {
            const char *in = (const char *)inbuf + (size_t)i * extent;
            for (int b = 0; b < s->count; b++, out += block)
                memcpy(out, in + (size_t)b * stride, block);
        }
        *position += (int)n;
        mana_gate_leave();
        return MPI_SUCCESS;
    }
    int r;
    MANA_CALL_LOWER_INTO(r, 4807, "PMPI_Pack", int, (const void *, int, MPI_Datatype, void *, int, int *, MPI_Comm),
                         (inbuf, incount, mana_h_real(datatype), outbuf, outsize, position, mana_h_real(comm)));
    mana_gate_leave();
    return r;
}
MANA_EXPORT(mana_w_MPI_Pack, MPI_Pack)
MANA_EXPORT(mana_w_MPI_Pack, PMPI_Pack)

/* MPI_Type_match_size names a predefined type, the same for the same question in every
 * MPICH of this ABI (BLACS asks it at every combine: 24,731 times in xdlu). Answers are
 * kept once MPICH gave them; errors are asked again. */
static int tc_matched[4][33];

__attribute__((used)) static int mana_w_MPI_Type_match_size(int typeclass, int size, MPI_Datatype *datatype)
{
    mana_gate_enter();
    const int known = typeclass >= 0 && typeclass < 4 && size >= 0 && size < 33 && datatype
                          ? __atomic_load_n(&tc_matched[typeclass][size], __ATOMIC_RELAXED)
                          : 0;
    if (known) {
        *datatype = known;
        mana_gate_leave();
        return MPI_SUCCESS;
    }
    MPI_Datatype t = 0;
    int r;
    MANA_CALL_LOWER_INTO(r, 4808, "PMPI_Type_match_size", int, (int, int, MPI_Datatype *),
                         (typeclass, size, datatype ? &t : NULL));
    if (datatype)
        mana_out_handle(r, datatype, t);
    if (r == MPI_SUCCESS && t && !mana_h_is_object(t) && typeclass >= 0 && typeclass < 4 && size >= 0 && size < 33)
        __atomic_store_n(&tc_matched[typeclass][size], t, __ATOMIC_RELAXED);
    mana_gate_leave();
    return r;
}
MANA_EXPORT(mana_w_MPI_Type_match_size, MPI_Type_match_size)
MANA_EXPORT(mana_w_MPI_Type_match_size, PMPI_Type_match_size)
