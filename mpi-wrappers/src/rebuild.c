/* The application's MPI objects, created again in a new lower half (docs/mpi-checkpoint.md).
 *
 * MANA's own metadata already says how to create communicators, groups, user operations,
 * error handlers and keyvals again (src/ckpt.c, src/special.c). What only the lower half
 * knows is read from it at each checkpoint, after the drain, into upper-half memory (the
 * snapshot, saved with the image):
 *
 *   derived datatypes   their constructors and arguments (MPI_Type_get_contents), also
 *                       of types the application freed that live ones are built from;
 *   info objects        keys and values (also communicators' hints);
 *   attributes          the value of every keyval MANA saw created, on every communicator,
 *                       derived datatype and window;
 *   names               of communicators, datatypes and windows.
 *
 * (The Bsend buffer the application attached and the user error classes, codes and
 * strings it added are recorded when it does so.)
 *
 * The snapshot also closes each window's fence epoch (an extra MPI_Win_fence, in window
 * order: RMA operations issued since the application's last fence complete now, as they
 * would at its next one), or flushes a window in passive-target epochs (MPI_Win_lock,
 * lock_all: a restart locks again what was locked). No window is in a PSCW epoch then
 * (src/ckpt.c, mana_win_epoch). A session or an unknown datatype constructor makes the
 * image one a restart refuses, with a line that says why.
 *
 * At restart (mana_rebuild_objects): keyvals, error handlers, operations, info objects and
 * datatypes first (communicators are then created by src/ckpt.c), then windows (over a
 * communicator of their group, in window order; a shared window's segment mapped again
 * where it was, a dynamic window's regions attached again), attributes and names. No application callback runs while this happens:
 * datatypes are built without attributes, which are set last, on fresh objects. */
#include "mana_wrap.h"
#include <pthread.h>
#include <stdio.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#define KIND_DATATYPE 0x3
#define KIND_ERRHANDLER 0x5
#define KIND_OP 0x6
#define KIND_INFO 0x7
#define KIND_SESSION 0xe

MANA_LOWER_FUNCTION(type_get_envelope_c, 4705, "PMPI_Type_get_envelope_c",
                    (MPI_Datatype t, MPI_Count *ni, MPI_Count *na, MPI_Count *nc, MPI_Count *nd, int *c),
                    (t, ni, na, nc, nd, c))
MANA_LOWER_FUNCTION(type_get_contents_c, 4706, "PMPI_Type_get_contents_c",
                    (MPI_Datatype t, MPI_Count ni, MPI_Count na, MPI_Count nc, MPI_Count nd, int *i, MPI_Aint *a,
                     MPI_Count *c, MPI_Datatype *d),
                    (t, ni, na, nc, nd, i, a, c, d))
MANA_LOWER_FUNCTION(type_contiguous_c, 4707, "PMPI_Type_contiguous_c", (MPI_Count n, MPI_Datatype t, MPI_Datatype *o),
                    (n, t, o))
MANA_LOWER_FUNCTION(type_vector_c, 4708, "PMPI_Type_vector_c",
                    (MPI_Count n, MPI_Count b, MPI_Count s, MPI_Datatype t, MPI_Datatype *o), (n, b, s, t, o))
MANA_LOWER_FUNCTION(type_hvector_c, 4709, "PMPI_Type_create_hvector_c",
                    (MPI_Count n, MPI_Count b, MPI_Count s, MPI_Datatype t, MPI_Datatype *o), (n, b, s, t, o))
MANA_LOWER_FUNCTION(type_indexed_c, 4710, "PMPI_Type_indexed_c",
                    (MPI_Count n, const MPI_Count *b, const MPI_Count *d, MPI_Datatype t, MPI_Datatype *o),
                    (n, b, d, t, o))
MANA_LOWER_FUNCTION(type_hindexed_c, 4711, "PMPI_Type_create_hindexed_c",
                    (MPI_Count n, const MPI_Count *b, const MPI_Count *d, MPI_Datatype t, MPI_Datatype *o),
                    (n, b, d, t, o))
MANA_LOWER_FUNCTION(type_indexed_block_c, 4712, "PMPI_Type_create_indexed_block_c",
                    (MPI_Count n, MPI_Count b, const MPI_Count *d, MPI_Datatype t, MPI_Datatype *o), (n, b, d, t, o))
MANA_LOWER_FUNCTION(type_hindexed_block_c, 4713, "PMPI_Type_create_hindexed_block_c",
                    (MPI_Count n, MPI_Count b, const MPI_Count *d, MPI_Datatype t, MPI_Datatype *o), (n, b, d, t, o))
MANA_LOWER_FUNCTION(type_struct_c, 4714, "PMPI_Type_create_struct_c",
                    (MPI_Count n, const MPI_Count *b, const MPI_Count *d, const MPI_Datatype *t, MPI_Datatype *o),
                    (n, b, d, t, o))
MANA_LOWER_FUNCTION(type_subarray_c, 4715, "PMPI_Type_create_subarray_c",
                    (int n, const MPI_Count *sz, const MPI_Count *sub, const MPI_Count *st, int order, MPI_Datatype t,
                     MPI_Datatype *o),
                    (n, sz, sub, st, order, t, o))
MANA_LOWER_FUNCTION(type_darray_c, 4716, "PMPI_Type_create_darray_c",
                    (int size, int rank, int n, const MPI_Count *g, const int *dist, const int *darg, const int *ps,
                     int order, MPI_Datatype t, MPI_Datatype *o),
                    (size, rank, n, g, dist, darg, ps, order, t, o))
MANA_LOWER_FUNCTION(type_resized_c, 4717, "PMPI_Type_create_resized_c",
                    (MPI_Datatype t, MPI_Count lb, MPI_Count ext, MPI_Datatype *o), (t, lb, ext, o))
MANA_LOWER_FUNCTION(type_free, 4402, "PMPI_Type_free", (MPI_Datatype * t), (t))
MANA_LOWER_FUNCTION(type_get_name, 4403, "PMPI_Type_get_name", (MPI_Datatype t, char *n, int *l), (t, n, l))
MANA_LOWER_FUNCTION(type_set_name, 4404, "PMPI_Type_set_name", (MPI_Datatype t, const char *n), (t, n))
MANA_LOWER_FUNCTION(type_commit, 4405, "PMPI_Type_commit", (MPI_Datatype * t), (t))
MANA_LOWER_FUNCTION(type_dup, 4406, "PMPI_Type_dup", (MPI_Datatype t, MPI_Datatype *o), (t, o))
MANA_LOWER_FUNCTION(type_contiguous, 4407, "PMPI_Type_contiguous", (int n, MPI_Datatype t, MPI_Datatype *o), (n, t, o))
MANA_LOWER_FUNCTION(type_vector, 4408, "PMPI_Type_vector", (int n, int b, int s, MPI_Datatype t, MPI_Datatype *o),
                    (n, b, s, t, o))
MANA_LOWER_FUNCTION(type_hvector, 4409, "PMPI_Type_create_hvector",
                    (int n, int b, MPI_Aint s, MPI_Datatype t, MPI_Datatype *o), (n, b, s, t, o))
MANA_LOWER_FUNCTION(type_indexed, 4410, "PMPI_Type_indexed",
                    (int n, const int *b, const int *d, MPI_Datatype t, MPI_Datatype *o), (n, b, d, t, o))
MANA_LOWER_FUNCTION(type_hindexed, 4411, "PMPI_Type_create_hindexed",
                    (int n, const int *b, const MPI_Aint *d, MPI_Datatype t, MPI_Datatype *o), (n, b, d, t, o))
MANA_LOWER_FUNCTION(type_indexed_block, 4412, "PMPI_Type_create_indexed_block",
                    (int n, int b, const int *d, MPI_Datatype t, MPI_Datatype *o), (n, b, d, t, o))
MANA_LOWER_FUNCTION(type_hindexed_block, 4413, "PMPI_Type_create_hindexed_block",
                    (int n, int b, const MPI_Aint *d, MPI_Datatype t, MPI_Datatype *o), (n, b, d, t, o))
MANA_LOWER_FUNCTION(type_struct, 4414, "PMPI_Type_create_struct",
                    (int n, const int *b, const MPI_Aint *d, const MPI_Datatype *t, MPI_Datatype *o), (n, b, d, t, o))
MANA_LOWER_FUNCTION(type_subarray, 4415, "PMPI_Type_create_subarray",
                    (int n, const int *sz, const int *sub, const int *st, int order, MPI_Datatype t, MPI_Datatype *o),
                    (n, sz, sub, st, order, t, o))
MANA_LOWER_FUNCTION(type_darray, 4416, "PMPI_Type_create_darray",
                    (int size, int rank, int n, const int *g, const int *d, const int *a, const int *p, int order,
                     MPI_Datatype t, MPI_Datatype *o),
                    (size, rank, n, g, d, a, p, order, t, o))
MANA_LOWER_FUNCTION(type_resized, 4417, "PMPI_Type_create_resized",
                    (MPI_Datatype t, MPI_Aint lb, MPI_Aint ext, MPI_Datatype *o), (t, lb, ext, o))
MANA_LOWER_FUNCTION(type_f90_real, 4418, "PMPI_Type_create_f90_real", (int p, int r, MPI_Datatype *o), (p, r, o))
MANA_LOWER_FUNCTION(type_f90_complex, 4419, "PMPI_Type_create_f90_complex", (int p, int r, MPI_Datatype *o),
                    (p, r, o))
MANA_LOWER_FUNCTION(type_f90_integer, 4420, "PMPI_Type_create_f90_integer", (int r, MPI_Datatype *o), (r, o))
MANA_LOWER_FUNCTION(info_create, 4421, "PMPI_Info_create", (MPI_Info * i), (i))
MANA_LOWER_FUNCTION(info_set, 4422, "PMPI_Info_set", (MPI_Info i, const char *k, const char *v), (i, k, v))
MANA_LOWER_FUNCTION(info_get_nkeys, 4423, "PMPI_Info_get_nkeys", (MPI_Info i, int *n), (i, n))
MANA_LOWER_FUNCTION(info_get_nthkey, 4424, "PMPI_Info_get_nthkey", (MPI_Info i, int n, char *k), (i, n, k))
MANA_LOWER_FUNCTION(info_get_valuelen, 4425, "PMPI_Info_get_valuelen", (MPI_Info i, const char *k, int *l, int *f),
                    (i, k, l, f))
MANA_LOWER_FUNCTION(info_get, 4426, "PMPI_Info_get", (MPI_Info i, const char *k, int l, char *v, int *f),
                    (i, k, l, v, f))
MANA_LOWER_FUNCTION(comm_get_attr, 4427, "PMPI_Comm_get_attr", (MPI_Comm c, int k, void *v, int *f), (c, k, v, f))
MANA_LOWER_FUNCTION(comm_set_attr, 4428, "PMPI_Comm_set_attr", (MPI_Comm c, int k, void *v), (c, k, v))
MANA_LOWER_FUNCTION(type_get_attr, 4429, "PMPI_Type_get_attr", (MPI_Datatype t, int k, void *v, int *f), (t, k, v, f))
MANA_LOWER_FUNCTION(type_set_attr, 4430, "PMPI_Type_set_attr", (MPI_Datatype t, int k, void *v), (t, k, v))
MANA_LOWER_FUNCTION(win_get_attr, 4431, "PMPI_Win_get_attr", (MPI_Win w, int k, void *v, int *f), (w, k, v, f))
MANA_LOWER_FUNCTION(win_set_attr, 4432, "PMPI_Win_set_attr", (MPI_Win w, int k, void *v), (w, k, v))
/* The language bindings' access (MPICH's attribute type: Fortran attributes are integers). */
MANA_LOWER_FUNCTION(comm_get_attr_typed, 4462, "MPII_Comm_get_attr", (MPI_Comm c, int k, void *v, int *f, int t), (c, k, v, f, t))
MANA_LOWER_FUNCTION(comm_set_attr_typed, 4463, "MPII_Comm_set_attr", (MPI_Comm c, int k, void *v, int t), (c, k, v, t))
MANA_LOWER_FUNCTION(type_get_attr_typed, 4464, "MPII_Type_get_attr", (MPI_Datatype d, int k, void *v, int *f, int t), (d, k, v, f, t))
MANA_LOWER_FUNCTION(type_set_attr_typed, 4465, "MPII_Type_set_attr", (MPI_Datatype d, int k, void *v, int t), (d, k, v, t))
MANA_LOWER_FUNCTION(win_get_attr_typed, 4466, "MPII_Win_get_attr", (MPI_Win w, int k, void *v, int *f, int t), (w, k, v, f, t))
MANA_LOWER_FUNCTION(win_set_attr_typed, 4467, "MPII_Win_set_attr", (MPI_Win w, int k, void *v, int t), (w, k, v, t))
MANA_LOWER_FUNCTION(comm_get_name, 4433, "PMPI_Comm_get_name", (MPI_Comm c, char *n, int *l), (c, n, l))
MANA_LOWER_FUNCTION(comm_set_name, 4434, "PMPI_Comm_set_name", (MPI_Comm c, const char *n), (c, n))
MANA_LOWER_FUNCTION(win_get_name, 4435, "PMPI_Win_get_name", (MPI_Win w, char *n, int *l), (w, n, l))
MANA_LOWER_FUNCTION(win_set_name, 4436, "PMPI_Win_set_name", (MPI_Win w, const char *n), (w, n))
MANA_LOWER_FUNCTION(win_fence, 4437, "PMPI_Win_fence", (int a, MPI_Win w), (a, w))
MANA_LOWER_FUNCTION(win_create_c, 4438, "PMPI_Win_create_c",
                    (void *b, MPI_Aint s, MPI_Aint d, MPI_Info i, MPI_Comm c, MPI_Win *w), (b, s, d, i, c, w))
MANA_LOWER_FUNCTION(win_flush_all, 4451, "PMPI_Win_flush_all", (MPI_Win w), (w))
MANA_LOWER_FUNCTION(win_lock, 4452, "PMPI_Win_lock", (int t, int r, int a, MPI_Win w), (t, r, a, w))
MANA_LOWER_FUNCTION(win_lock_all, 4453, "PMPI_Win_lock_all", (int a, MPI_Win w), (a, w))
MANA_LOWER_FUNCTION(barrier, 4454, "PMPI_Barrier", (MPI_Comm c), (c))
MANA_LOWER_FUNCTION(win_set_errhandler, 4439, "PMPI_Win_set_errhandler", (MPI_Win w, MPI_Errhandler e), (w, e))

MANA_LOWER_FUNCTION(buffer_attach_c, 4441, "PMPI_Buffer_attach_c", (void *b, MPI_Count n), (b, n))

/* ---- The snapshot ---- */

/* A datatype's constructor: `old` is its real handle in the lower half of the checkpoint,
 * `types` its constituents' (derived ones have records before it). */
struct type_rec {
    int old, v; /* v: the application's handle; 0 for a type only others are built from */
    int comb, ni, na, nd;
    int *ints;
    MPI_Aint *aints;
    int *types;
    /* A large-count constructor's (MPI_Type_contiguous_c ...; mpi4py makes every derived
     * type with them): its MPI_Count arguments, read with MPI_Type_get_contents_c. */
    int large, nc;
    MPI_Count *counts;
    int fresh; /* its real handle in the new lower half */
    char name[MPI_MAX_OBJECT_NAME];
};

struct info_rec {
    int v, n; /* v: an info object, or a communicator whose hints these are */
    char **keys, **vals;
};

enum obj { OBJ_COMM = 0, OBJ_TYPE = 1, OBJ_WIN = 2 };

struct attr_rec {
    int obj, keyval;
    enum obj kind;
    void *value;
};

struct name_rec {
    int obj;
    enum obj kind;
    char name[MPI_MAX_OBJECT_NAME];
};

#define LIST(T)     \
    struct {        \
        T *at;      \
        int n, cap; \
    }
#define PUSH(l, x)                                                          \
    do {                                                                    \
        if ((l).n == (l).cap) {                                             \
            (l).cap = (l).cap ? 2 * (l).cap : 16;                           \
            (l).at = realloc((l).at, (size_t)(l).cap * sizeof *(l).at);     \
        }                                                                   \
        (l).at[(l).n++] = (x);                                              \
    } while (0)

static struct {
    LIST(struct type_rec) types;
    LIST(struct info_rec) infos;
    LIST(struct info_rec) hints;
    LIST(struct attr_rec) attrs;
    LIST(struct name_rec) names;
    LIST(int) fetched; /* constituent handles MPI_Type_get_contents returned (to free) */
    char unsupported[512];
} snap;

static void free_info_rec(struct info_rec *r)
{
    for (int k = 0; k < r->n; k++) {
        free(r->keys[k]);
        free(r->vals[k]);
    }
    free(r->keys);
    free(r->vals);
}

static void snap_clear(void)
{
    for (int i = 0; i < snap.types.n; i++) {
        free(snap.types.at[i].ints);
        free(snap.types.at[i].aints);
        free(snap.types.at[i].types);
        free(snap.types.at[i].counts);
    }
    for (int i = 0; i < snap.infos.n; i++)
        free_info_rec(&snap.infos.at[i]);
    for (int i = 0; i < snap.hints.n; i++)
        free_info_rec(&snap.hints.at[i]);
    snap.types.n = snap.infos.n = snap.hints.n = snap.attrs.n = snap.names.n = snap.fetched.n = 0;
    snap.unsupported[0] = 0;
}

static void refuse(const char *why)
{
    if (!snap.unsupported[0])
        snprintf(snap.unsupported, sizeof snap.unsupported, "%s", why);
}

static int type_rec_of(int old)
{
    for (int i = 0; i < snap.types.n; i++)
        if (snap.types.at[i].old == old)
            return i;
    return -1;
}

/* Records the constructor of real datatype `t` after those of its constituents; returns
 * its record, -1 for a predefined (named) type, -2 if it cannot be described. */
static int decode_type(int t)
{
    int i = type_rec_of(t);
    if (i >= 0)
        return i;
    struct type_rec r = {.old = t};
    /* The large-count calls describe types of either kind of constructor; MPICH describes
     * one made by a large-count constructor (nc > 0) with them only — MPI_Type_get_envelope
     * raises an error on it, which the application's handler may make fatal. */
    MPI_Count ni, na, nc, nd;
    if (type_get_envelope_c(t, &ni, &na, &nc, &nd, &r.comb) != MPI_SUCCESS || ni < 0 || na < 0 || nc < 0 ||
        nd < 0 || ni > INT_MAX / 2 || na > INT_MAX / 2 || nc > INT_MAX / 2 || nd > INT_MAX / 2) {
        refuse("the application holds a datatype MPI cannot describe");
        return -2;
    }
    r.large = nc > 0;
    r.ni = (int)ni;
    r.na = (int)na;
    r.nc = (int)nc;
    r.nd = (int)nd;
    if (r.comb == MPI_COMBINER_NAMED)
        return -1;
    r.ints = calloc((size_t)r.ni + 1, sizeof(int));
    r.aints = calloc((size_t)r.na + 1, sizeof(MPI_Aint));
    r.types = calloc((size_t)r.nd + 1, sizeof(int));
    r.counts = calloc((size_t)r.nc + 1, sizeof(MPI_Count));
    if (!r.ints || !r.aints || !r.types || !r.counts) {
        free(r.ints);
        free(r.aints);
        free(r.types);
        free(r.counts);
        refuse("out of memory recording a derived datatype");
        return -2;
    }
    type_get_contents_c(t, r.ni, r.na, r.nc, r.nd, r.ints, r.aints, r.counts, r.types);
    for (int k = 0; k < r.nd; k++) {
        int sub = decode_type(r.types[k]);
        if (sub == -2)
            return -2;
        if (sub >= 0)
            PUSH(snap.fetched, r.types[k]);
    }
    PUSH(snap.types, r);
    return snap.types.n - 1;
}

static void snap_type(int v, void *arg)
{
    (void)arg;
    int real = mana_h_real(v), i = decode_type(real);
    if (i == -2)
        return;
    if (i == -1) { /* a predefined type the application got a handle for (pair types) */
        struct type_rec r = {.old = real, .comb = MPI_COMBINER_NAMED};
        PUSH(snap.types, r);
        i = snap.types.n - 1;
    }
    struct type_rec *r = &snap.types.at[i];
    r->v = v;
    int len = 0;
    r->name[0] = 0;
    type_get_name(real, r->name, &len);
}

/* The keys and values of real info object `info`. */
static struct info_rec read_info(int v, MPI_Info info)
{
    struct info_rec r = {v, 0, NULL, NULL};
    info_get_nkeys(info, &r.n);
    r.keys = calloc((size_t)r.n + 1, sizeof(char *));
    r.vals = calloc((size_t)r.n + 1, sizeof(char *));
    for (int k = 0; k < r.n; k++) {
        char key[MPI_MAX_INFO_KEY + 1] = "";
        int len = 0, flag = 0;
        info_get_nthkey(info, k, key);
        info_get_valuelen(info, key, &len, &flag);
        r.keys[k] = strdup(key);
        r.vals[k] = calloc((size_t)len + 2, 1);
        info_get(info, key, len + 1, r.vals[k], &flag);
    }
    return r;
}

static void snap_info(int v, void *arg)
{
    (void)arg;
    PUSH(snap.infos, read_info(v, mana_h_real(v)));
}

MANA_LOWER_FUNCTION(comm_get_info, 4448, "PMPI_Comm_get_info", (MPI_Comm c, MPI_Info *i), (c, i))
MANA_LOWER_FUNCTION(comm_set_info, 4449, "PMPI_Comm_set_info", (MPI_Comm c, MPI_Info i), (c, i))
MANA_LOWER_FUNCTION(info_free, 4450, "PMPI_Info_free", (MPI_Info * i), (i))

/* A communicator's hints (MPI_Comm_dup_with_info, MPI_Comm_set_info). */
static void snap_hints(int c, struct mana_comm_meta *m, void *arg)
{
    (void)m;
    (void)arg;
    MPI_Info info = MPI_INFO_NULL;
    if (!mana_h_is_virtual(c) || comm_get_info(mana_h_real(c), &info) != MPI_SUCCESS)
        return;
    struct info_rec r = read_info(c, info);
    info_free(&info);
    if (r.n)
        PUSH(snap.hints, r);
    else
        free_info_rec(&r);
}

/* ---- Attributes and names ---- */

/* An attribute's value. `type` is its keyval's attribute type: a pointer (C) is read as
 * C reads it; an integer set by Fortran is read as the integer itself (C's access would
 * give a pointer into the lower half's copy of it). */
static int get_attr(enum obj kind, int real, int kv, int type, void *value, int *flag)
{
    if (type == 0)
        return kind == OBJ_COMM   ? comm_get_attr(real, kv, value, flag)
               : kind == OBJ_TYPE ? type_get_attr(real, kv, value, flag)
                                  : win_get_attr(real, kv, value, flag);
    enum { ATTR_AINT = 1 };
    return kind == OBJ_COMM   ? comm_get_attr_typed(real, kv, value, flag, ATTR_AINT)
           : kind == OBJ_TYPE ? type_get_attr_typed(real, kv, value, flag, ATTR_AINT)
                              : win_get_attr_typed(real, kv, value, flag, ATTR_AINT);
}

static int set_attr(enum obj kind, int real, int kv, int type, void *value)
{
    if (type == 0)
        return kind == OBJ_COMM   ? comm_set_attr(real, kv, value)
               : kind == OBJ_TYPE ? type_set_attr(real, kv, value)
                                  : win_set_attr(real, kv, value);
    return kind == OBJ_COMM   ? comm_set_attr_typed(real, kv, value, type)
           : kind == OBJ_TYPE ? type_set_attr_typed(real, kv, value, type)
                              : win_set_attr_typed(real, kv, value, type);
}

struct attr_scan {
    int keyval, real; /* the keyval's index in mana_keyvals(), its real handle */
    enum obj kind;
    int record; /* 0: only count */
    int found;
};

static void snap_attr_on(int obj, struct attr_scan *a)
{
    void *value = NULL;
    int flag = 0;
    int type = mana_keyval_at((unsigned)a->keyval)->attr_type;
    if (get_attr(a->kind, mana_h_real(obj), a->real, type, &value, &flag) != MPI_SUCCESS || !flag)
        return;
    a->found++;
    if (a->record) {
        struct attr_rec r = {obj, a->keyval, a->kind, value};
        PUSH(snap.attrs, r);
    }
}

static void attr_on_comm(int c, struct mana_comm_meta *m, void *arg)
{
    (void)m;
    snap_attr_on(c, arg);
}

static void attr_on_handle(int h, void *arg)
{
    snap_attr_on(h, arg);
}

static void attr_on_win(int w, struct mana_comm_meta *m, void *arg)
{
    (void)m;
    snap_attr_on(w, arg);
}

/* The predefined datatypes (MPICH's mpi.h; those it maps to MPI_DATATYPE_NULL are
 * skipped): attributes the application hangs on them are kept like any other. */
static const MPI_Datatype predefined_types[] = {
    MPI_CHAR, MPI_SIGNED_CHAR, MPI_UNSIGNED_CHAR, MPI_BYTE, MPI_WCHAR, MPI_SHORT, MPI_UNSIGNED_SHORT, MPI_INT,
    MPI_UNSIGNED, MPI_LONG, MPI_UNSIGNED_LONG, MPI_FLOAT, MPI_DOUBLE, MPI_LONG_DOUBLE, MPI_LONG_LONG_INT,
    MPI_UNSIGNED_LONG_LONG, MPI_PACKED, MPI_FLOAT_INT, MPI_DOUBLE_INT, MPI_LONG_INT, MPI_SHORT_INT, MPI_2INT,
    MPI_LONG_DOUBLE_INT, MPI_INT8_T, MPI_INT16_T, MPI_INT32_T, MPI_INT64_T, MPI_UINT8_T, MPI_UINT16_T,
    MPI_UINT32_T, MPI_UINT64_T, MPI_C_BOOL, MPI_C_FLOAT_COMPLEX, MPI_C_DOUBLE_COMPLEX,
    MPI_C_LONG_DOUBLE_COMPLEX, MPI_AINT, MPI_OFFSET, MPI_COUNT, MPI_CXX_BOOL, MPI_CXX_FLOAT_COMPLEX,
    MPI_CXX_DOUBLE_COMPLEX, MPI_CXX_LONG_DOUBLE_COMPLEX, MPI_CHARACTER, MPI_INTEGER, MPI_REAL, MPI_LOGICAL,
    MPI_COMPLEX, MPI_DOUBLE_PRECISION, MPI_2INTEGER, MPI_2REAL, MPI_DOUBLE_COMPLEX, MPI_2DOUBLE_PRECISION,
    MPI_REAL4, MPI_REAL8, MPI_REAL16, MPI_COMPLEX8, MPI_COMPLEX16, MPI_COMPLEX32, MPI_INTEGER1, MPI_INTEGER2,
    MPI_INTEGER4, MPI_INTEGER8, MPI_INTEGER16,
};

/* Looks for attributes of keyval `a->real` on every object of its kind. */
static void scan_attrs(struct attr_scan *a)
{
    if (a->kind == OBJ_COMM) {
        mana_comm_each(attr_on_comm, a);
    } else if (a->kind == OBJ_TYPE) {
        for (size_t i = 0; i < sizeof predefined_types / sizeof predefined_types[0]; i++)
            if (predefined_types[i] != MPI_DATATYPE_NULL)
                snap_attr_on(predefined_types[i], a);
        mana_h_each(KIND_DATATYPE, attr_on_handle, a);
    } else {
        mana_win_each(attr_on_win, a);
    }
}

int mana_keyval_in_use(int v)
{
    unsigned n = mana_keyval_count();
    for (unsigned i = 0; i < n; i++) {
        const struct mana_keyval *k = mana_keyval_at(i);
        if (k->v == v && !k->app_freed && !k->dead) {
            struct attr_scan a = {(int)i, mana_h_real(v), (enum obj)k->kind, 0, 0};
            scan_attrs(&a);
            return a.found > 0 || mana_win_copies_use(i);
        }
    }
    return 0;
}

/* Every keyval still alive in MPI: the application's, and those it freed while attributes
 * with them remained (those die once no attribute is left: marked dead here, their
 * callback slot released). With `record`, the attribute values are recorded for a
 * restart; without, only freed keyvals are looked at (mana_keyvals_collect). */
static void sweep_keyvals(int record)
{
    unsigned n = mana_keyval_count();
    for (unsigned i = 0; i < n; i++) {
        struct mana_keyval *k = mana_keyval_at(i);
        if (k->dead || (!record && !k->app_freed))
            continue;
        int real = k->app_freed ? k->real : mana_h_real(k->v);
        /* A keyval created later with the same handle: MPI had destroyed this one. */
        for (unsigned j = i + 1; j < n && k->app_freed; j++) {
            const struct mana_keyval *later = mana_keyval_at(j);
            if (!later->dead && (later->app_freed ? later->real : mana_h_real(later->v)) == real)
                real = 0;
        }
        struct attr_scan a = {(int)i, real, (enum obj)k->kind, record, 0};
        if (real)
            scan_attrs(&a);
        /* A copy on a window's internal communicator (src/special.c) is an attribute too. */
        if (k->app_freed && !a.found && !mana_win_copies_use(i))
            mana_keyval_dead(k);
    }
}

static void snap_keyvals(void)
{
    sweep_keyvals(1);
}

/* Holding the gate and the keyval records' lock, when every callback slot is taken: the
 * keyvals the application freed while attributes with them remained, and whose last
 * attribute has gone since, release their slots (else only the next checkpoint would:
 * a program that creates and frees such a keyval every step ran out of slots after 64
 * steps without a checkpoint — tests/mpi/f_attrs.f90 restarted with 64 rounds left). */
void mana_keyvals_collect(void)
{
    sweep_keyvals(0);
}

static void snap_comm_name(int c, struct mana_comm_meta *m, void *arg)
{
    (void)m;
    (void)arg;
    struct name_rec r = {c, OBJ_COMM, ""};
    int len = 0;
    comm_get_name(mana_h_real(c), r.name, &len);
    const char *fresh = c == MPI_COMM_WORLD ? "MPI_COMM_WORLD" : c == MPI_COMM_SELF ? "MPI_COMM_SELF" : "";
    if (strcmp(r.name, fresh) != 0)
        PUSH(snap.names, r);
}

/* ---- Windows ---- */

struct win_list {
    LIST(int) v;
    LIST(struct mana_comm_meta *) m;
};

static void list_win(int w, struct mana_comm_meta *m, void *arg)
{
    struct win_list *l = arg;
    PUSH(l->v, w);
    PUSH(l->m, m);
}

/* Every window, in ascending gid order (the same on every rank: collective calls over
 * them cannot cross). */
static void windows_in_order(struct win_list *l)
{
    mana_win_each(list_win, l);
    mana_sort_by_gid(l->v.at, l->m.at, l->v.n);
}

static void win_list_free(struct win_list *l)
{
    free(l->v.at);
    free(l->m.at);
}

static void snap_windows(void)
{
    struct win_list l = {0};
    windows_in_order(&l);
    for (int i = 0; i < l.v.n; i++) {
        struct mana_comm_meta *m = l.m.at[i];
        MPI_Win w = mana_h_real(l.v.at[i]);
        if (!m->world_ranks)
            refuse("the application holds a window whose group MANA could not record, which a restart cannot "
                   "create again");
        if (m->win_attach_lost)
            refuse("a region attached to a dynamic window could not be recorded (out of memory), so a restart "
                   "cannot attach it again");
        /* Never at a converged checkpoint (src/ckpt.c, mana_win_epoch): kept as a guard. */
        if (m->win_epochs > 0)
            refuse("a window was in a post/start/complete/wait (PSCW) epoch at the checkpoint, which a "
                   "restart cannot open again");
        /* Some member holds a lock: the fence epoch the members opened last is not in use
         * (MPI does not mix the two), and none of them fences now (src/ckpt.c explains) —
         * nor at restart, nor at a later checkpoint before the application fences again:
         * every member forgets it alike. */
        if (mana_win_locked_somewhere(m->gid))
            m->win_fenced = 0;
        if (m->win_lock_all || m->win_n_locks)
            win_flush_all(w); /* its passive-target epochs stay open: a restart opens them again */
        else if (m->win_fenced && m->win_epochs <= 0)
            win_fence(0, w);
        struct name_rec r = {l.v.at[i], OBJ_WIN, ""};
        int len = 0;
        win_get_name(w, r.name, &len);
        if (r.name[0])
            PUSH(snap.names, r);
    }
    win_list_free(&l);
}

int mana_snapshot(char *why, int len)
{
    snap_clear();
    mana_ssend_exchange();
    if (mana_h_live(KIND_SESSION))
        refuse("the application holds an MPI session, which a restart cannot create again yet");
    char file_why[sizeof snap.unsupported];
    if (mana_files_snapshot(file_why, sizeof file_why) != 0)
        refuse(file_why);
    mana_h_each(KIND_DATATYPE, snap_type, NULL);
    mana_h_each(KIND_INFO, snap_info, NULL);
    snap_keyvals();
    mana_comm_each(snap_comm_name, NULL);
    mana_comm_each(snap_hints, NULL);
    snap_windows();
    /* A flush may need its target's progress: no rank leaves before every flush is done. */
    barrier(MPI_COMM_WORLD);
    mana_rma_requests_done();
    for (int i = 0; i < snap.fetched.n; i++)
        type_free(&snap.fetched.at[i]);
    snap.fetched.n = 0;
    snprintf(why, (size_t)len, "%s", snap.unsupported);
    return snap.unsupported[0] ? -1 : 0;
}

int mana_snapshot_unsupported(char *err, int errlen)
{
    if (!snap.unsupported[0])
        return 0;
    snprintf(err, (size_t)errlen, "%s", snap.unsupported);
    return -1;
}

/* ---- Restart ---- */

static int fresh_type(int old)
{
    int i = type_rec_of(old);
    return i >= 0 ? snap.types.at[i].fresh : old;
}

/* A large-count constructor again (`T`: its constituents' new handles). The layouts of
 * MPI_Type_get_contents_c's arrays, as MPICH 4.0.2 fills them: counts hold every count,
 * block length, stride and displacement (indexed: n, blocklengths, displacements;
 * subarray: sizes, subsizes, starts after ints {ndims, order}; darray: gsizes, with ints
 * {size, rank, ndims, distribs, dargs, psizes, order}; resized: lb, extent). */
static int build_large_type(struct type_rec *r, const MPI_Datatype *T)
{
    const int *I = r->ints;
    const MPI_Count *C = r->counts;
    MPI_Datatype *o = &r->fresh;
    /* Every layout below reads at most these many entries. */
    const MPI_Count n = r->nc > 0 ? C[0] : 0;
    switch (r->comb) {
    case MPI_COMBINER_DUP: return type_dup(T[0], o);
    case MPI_COMBINER_CONTIGUOUS: return r->nc >= 1 ? type_contiguous_c(C[0], T[0], o) : MPI_ERR_TYPE;
    case MPI_COMBINER_VECTOR: return r->nc >= 3 ? type_vector_c(C[0], C[1], C[2], T[0], o) : MPI_ERR_TYPE;
    case MPI_COMBINER_HVECTOR: return r->nc >= 3 ? type_hvector_c(C[0], C[1], C[2], T[0], o) : MPI_ERR_TYPE;
    case MPI_COMBINER_INDEXED:
        return r->nc >= 1 + 2 * n ? type_indexed_c(n, C + 1, C + 1 + n, T[0], o) : MPI_ERR_TYPE;
    case MPI_COMBINER_HINDEXED:
        return r->nc >= 1 + 2 * n ? type_hindexed_c(n, C + 1, C + 1 + n, T[0], o) : MPI_ERR_TYPE;
    case MPI_COMBINER_INDEXED_BLOCK:
        return r->nc >= 2 + n ? type_indexed_block_c(n, C[1], C + 2, T[0], o) : MPI_ERR_TYPE;
    case MPI_COMBINER_HINDEXED_BLOCK:
        return r->nc >= 2 + n ? type_hindexed_block_c(n, C[1], C + 2, T[0], o) : MPI_ERR_TYPE;
    case MPI_COMBINER_STRUCT:
        return r->nc >= 1 + 2 * n && r->nd >= n ? type_struct_c(n, C + 1, C + 1 + n, T, o) : MPI_ERR_TYPE;
    case MPI_COMBINER_SUBARRAY: {
        int d = r->ni >= 2 ? I[0] : -1;
        return d >= 0 && r->nc >= 3 * d ? type_subarray_c(d, C, C + d, C + 2 * d, I[1], T[0], o) : MPI_ERR_TYPE;
    }
    case MPI_COMBINER_DARRAY: {
        int d = r->ni >= 3 ? I[2] : -1;
        return d >= 0 && r->ni >= 4 + 3 * d && r->nc >= d
                   ? type_darray_c(I[0], I[1], d, C, I + 3, I + 3 + d, I + 3 + 2 * d, I[3 + 3 * d], T[0], o)
                   : MPI_ERR_TYPE;
    }
    case MPI_COMBINER_RESIZED: return r->nc >= 2 ? type_resized_c(T[0], C[0], C[1], o) : MPI_ERR_TYPE;
    default: return MPI_ERR_TYPE;
    }
}

/* Datatype record `r` again, from its constituents' new handles. */
static int build_type(struct type_rec *r)
{
    const int *I = r->ints;
    const MPI_Aint *A = r->aints;
    MPI_Datatype T[r->nd > 0 ? r->nd : 1];
    for (int k = 0; k < r->nd; k++)
        T[k] = fresh_type(r->types[k]);
    MPI_Datatype *o = &r->fresh;
    if (r->large)
        return build_large_type(r, T);
    switch (r->comb) {
    case MPI_COMBINER_NAMED: r->fresh = r->old; return MPI_SUCCESS;
    case MPI_COMBINER_DUP: return type_dup(T[0], o);
    case MPI_COMBINER_CONTIGUOUS: return type_contiguous(I[0], T[0], o);
    case MPI_COMBINER_VECTOR: return type_vector(I[0], I[1], I[2], T[0], o);
    case MPI_COMBINER_HVECTOR: return type_hvector(I[0], I[1], A[0], T[0], o);
    case MPI_COMBINER_INDEXED: return type_indexed(I[0], I + 1, I + 1 + I[0], T[0], o);
    case MPI_COMBINER_HINDEXED: return type_hindexed(I[0], I + 1, A, T[0], o);
    case MPI_COMBINER_INDEXED_BLOCK: return type_indexed_block(I[0], I[1], I + 2, T[0], o);
    case MPI_COMBINER_HINDEXED_BLOCK: return type_hindexed_block(I[0], I[1], A, T[0], o);
    case MPI_COMBINER_STRUCT: return type_struct(I[0], I + 1, A, T, o);
    case MPI_COMBINER_SUBARRAY: {
        int n = I[0];
        return type_subarray(n, I + 1, I + 1 + n, I + 1 + 2 * n, I[1 + 3 * n], T[0], o);
    }
    case MPI_COMBINER_DARRAY: {
        int n = I[2];
        return type_darray(I[0], I[1], n, I + 3, I + 3 + n, I + 3 + 2 * n, I + 3 + 3 * n, I[3 + 4 * n], T[0], o);
    }
    case MPI_COMBINER_RESIZED: return type_resized(T[0], A[0], A[1], o);
    case MPI_COMBINER_F90_REAL: return type_f90_real(I[0], I[1], o);
    case MPI_COMBINER_F90_COMPLEX: return type_f90_complex(I[0], I[1], o);
    case MPI_COMBINER_F90_INTEGER: return type_f90_integer(I[0], o);
    default: return MPI_ERR_TYPE;
    }
}

static int predefined_result(int comb)
{
    return comb == MPI_COMBINER_NAMED || comb == MPI_COMBINER_F90_REAL || comb == MPI_COMBINER_F90_COMPLEX ||
           comb == MPI_COMBINER_F90_INTEGER;
}

static int rebuild_types(char *err, int errlen)
{
    for (int i = 0; i < snap.types.n; i++) {
        struct type_rec *r = &snap.types.at[i];
        int rc = build_type(r);
        if (rc == MPI_SUCCESS && r->v && !predefined_result(r->comb))
            rc = type_commit(&r->fresh);
        if (rc != MPI_SUCCESS) {
            snprintf(err, (size_t)errlen, "creating a derived datatype (combiner %d) again failed (error %d)",
                     r->comb, rc);
            return -1;
        }
        if (r->v) {
            if (r->name[0])
                type_set_name(r->fresh, r->name);
            mana_h_set_real(r->v, r->fresh);
            unsigned *aux = mana_h_aux(r->v); /* MPI counts the new object once */
            if (aux && !predefined_result(r->comb))
                *aux = MANA_AUX_FREE_ONCE;
        }
    }
    /* Types only others were built from: the application had freed them. */
    for (int i = 0; i < snap.types.n; i++)
        if (!snap.types.at[i].v && !predefined_result(snap.types.at[i].comb))
            type_free(&snap.types.at[i].fresh);
    return 0;
}

struct recreate {
    int (*f)(int v);
    const char *what;
    char *err;
    int errlen, bad;
};

static void recreate_one(int v, void *arg)
{
    struct recreate *r = arg;
    if (r->bad)
        return;
    int rc = r->f(v);
    if (rc != MPI_SUCCESS) {
        r->bad = 1;
        snprintf(r->err, (size_t)r->errlen, "creating %s again failed (error %d)", r->what, rc);
    }
}

/* A new real info object with `r`'s keys and values. */
static int make_info(const struct info_rec *r, MPI_Info *info)
{
    int rc = info_create(info);
    for (int k = 0; k < r->n && rc == MPI_SUCCESS; k++)
        rc = info_set(*info, r->keys[k], r->vals[k]);
    return rc;
}

static int recreate_info(int v)
{
    for (int i = 0; i < snap.infos.n; i++) {
        MPI_Info info = MPI_INFO_NULL;
        if (snap.infos.at[i].v != v)
            continue;
        int rc = make_info(&snap.infos.at[i], &info);
        if (rc == MPI_SUCCESS)
            mana_h_set_real(v, info);
        return rc;
    }
    return MPI_ERR_INFO;
}

static int rebuild_hints(char *err, int errlen)
{
    for (int i = 0; i < snap.hints.n; i++) {
        MPI_Info info = MPI_INFO_NULL;
        int rc = make_info(&snap.hints.at[i], &info);
        if (rc == MPI_SUCCESS)
            rc = comm_set_info(mana_h_real(snap.hints.at[i].v), info);
        info_free(&info);
        if (rc != MPI_SUCCESS) {
            snprintf(err, (size_t)errlen, "setting a communicator's hints again failed (error %d)", rc);
            return -1;
        }
    }
    return 0;
}

static int recreate_kind(int kind, int (*f)(int), const char *what, char *err, int errlen)
{
    struct recreate r = {f, what, err, errlen, 0};
    mana_h_each(kind, recreate_one, &r);
    return r.bad ? -1 : 0;
}

MANA_LOWER_FUNCTION(win_create_dynamic, 4703, "PMPI_Win_create_dynamic", (MPI_Info i, MPI_Comm c, MPI_Win *w),
                    (i, c, w))
MANA_LOWER_FUNCTION(win_attach, 4704, "PMPI_Win_attach", (MPI_Win w, void *b, MPI_Aint s), (w, b, s))
MANA_LOWER_FUNCTION(comm_delete_attr, 4479, "PMPI_Comm_delete_attr", (MPI_Comm c, int k), (c, k))

/* MPI_Win_create over `c` for window `m`, its internal communicator getting the attribute
 * copies the application's callbacks made when it created the window (src/special.c):
 * `c` holds the recorded keyvals while MPICH duplicates it, the trampolines answering from
 * the record, and loses them again silently. */
static int win_create_replaying_copies(const struct mana_comm_meta *m, MPI_Comm c, MPI_Win *w)
{
    unsigned n = mana_keyval_count();
    int rc = MPI_SUCCESS, set = 0;
    mana_win_copies_replay(m);
    for (; set < m->n_win_copies && rc == MPI_SUCCESS; set++) {
        const struct mana_win_copy *x = &m->win_copies[set];
        if (x->keyval >= n || mana_keyval_at(x->keyval)->dead)
            continue;
        rc = set_attr(OBJ_COMM, c, mana_keyval_at(x->keyval)->real, mana_keyval_at(x->keyval)->attr_type, x->value);
    }
    if (rc == MPI_SUCCESS && m->win_dynamic) {
        rc = win_create_dynamic(MPI_INFO_NULL, c, w);
        for (int i = 0; rc == MPI_SUCCESS && i < m->win_n_attached; i++)
            rc = win_attach(*w, (void *)m->win_attached[2 * i], m->win_attached[2 * i + 1]);
    } else if (rc == MPI_SUCCESS) {
        rc = win_create_c(m->win_base, m->win_size, m->win_disp_unit, MPI_INFO_NULL, c, w);
    }
    for (int i = 0; i < set; i++) {
        const struct mana_win_copy *x = &m->win_copies[i];
        if (x->keyval < n && !mana_keyval_at(x->keyval)->dead)
            comm_delete_attr(c, mana_keyval_at(x->keyval)->real);
    }
    mana_win_copies_replay(NULL);
    return rc;
}

static int rebuild_windows(char *err, int errlen)
{
    struct win_list l = {0};
    windows_in_order(&l);
    int bad = 0;
    for (int i = 0; i < l.v.n && !bad; i++) {
        struct mana_comm_meta *m = l.m.at[i];
        MPI_Comm c = MPI_COMM_NULL;
        MPI_Win w = MPI_WIN_NULL;
        int rc = mana_comm_of_world_ranks(m->world_ranks, m->n_ranks, m->gid, &c);
        if (rc == MPI_SUCCESS)
            rc = mana_recreate_shared_segment(l.v.at[i], c);
        if (rc == MPI_SUCCESS)
            rc = win_create_replaying_copies(m, c, &w);
        /* Kept until the window is freed: MPICH's windows misbehave (RMA operations are lost
         * after a restart) when the communicator they were created over is freed and its
         * context id reused by the next window's (measured with tests/mpi/rma.c). */
        m->win_comm = c;
        if (rc == MPI_SUCCESS && m->errhandler)
            rc = win_set_errhandler(w, mana_h_real(m->errhandler));
        /* The epoch the application was in is open again: its passive-target locks, or a
         * fence epoch. */
        if (rc == MPI_SUCCESS && m->win_lock_all)
            rc = win_lock_all(m->win_lock_all - 1, w);
        for (int k = 0; rc == MPI_SUCCESS && k < m->win_n_locks; k++)
            rc = win_lock(m->win_locks[3 * k + 1], m->win_locks[3 * k], m->win_locks[3 * k + 2], w);
        if (rc == MPI_SUCCESS && m->win_fenced && !m->win_lock_all && !m->win_n_locks)
            rc = win_fence(0, w);
        if (rc != MPI_SUCCESS) {
            bad = 1;
            snprintf(err, (size_t)errlen, "creating a window again failed (error %d)", rc);
        } else {
            mana_h_set_real(l.v.at[i], w);
        }
    }
    win_list_free(&l);
    return bad ? -1 : 0;
}

MANA_LOWER_FUNCTION(comm_free_keyval, 4442, "PMPI_Comm_free_keyval", (int *k), (k))
MANA_LOWER_FUNCTION(type_free_keyval, 4443, "PMPI_Type_free_keyval", (int *k), (k))
MANA_LOWER_FUNCTION(win_free_keyval, 4444, "PMPI_Win_free_keyval", (int *k), (k))

/* Keyvals again (phase 0); those the application had freed are freed again once their
 * attributes are set (rebuild_attrs_and_names). */
static int rebuild_keyvals(char *err, int errlen)
{
    unsigned n = mana_keyval_count();
    for (unsigned i = 0; i < n; i++) {
        int rc = mana_keyval_at(i)->dead ? MPI_SUCCESS : mana_recreate_keyval(mana_keyval_at(i));
        if (rc != MPI_SUCCESS) {
            snprintf(err, (size_t)errlen, "creating a keyval again failed (error %d)", rc);
            return -1;
        }
    }
    return 0;
}

static int rebuild_attrs_and_names(char *err, int errlen)
{
    unsigned n_keyvals = mana_keyval_count();
    for (int i = 0; i < snap.attrs.n; i++) {
        struct attr_rec *a = &snap.attrs.at[i];
        if (a->keyval < 0 || (unsigned)a->keyval >= n_keyvals) {
            snprintf(err, (size_t)errlen, "an attribute names keyval record %d of %u", a->keyval, n_keyvals);
            return -1;
        }
        int obj = mana_h_real(a->obj), kv = mana_keyval_at((unsigned)a->keyval)->real;
        int rc = set_attr(a->kind, obj, kv, mana_keyval_at((unsigned)a->keyval)->attr_type, a->value);
        if (rc != MPI_SUCCESS) {
            snprintf(err, (size_t)errlen, "setting an attribute again failed (error %d)", rc);
            return -1;
        }
    }
    for (unsigned i = 0; i < n_keyvals; i++) {
        struct mana_keyval *k = mana_keyval_at(i);
        int real = k->real;
        if (k->dead || !k->app_freed)
            continue;
        if (k->kind == OBJ_COMM)
            comm_free_keyval(&real);
        else if (k->kind == OBJ_TYPE)
            type_free_keyval(&real);
        else
            win_free_keyval(&real);
    }
    for (int i = 0; i < snap.names.n; i++) {
        struct name_rec *n = &snap.names.at[i];
        if (n->kind == OBJ_COMM)
            comm_set_name(mana_h_real(n->obj), n->name);
        else
            win_set_name(mana_h_real(n->obj), n->name);
    }
    return 0;
}

MANA_LOWER_FUNCTION(add_error_class, 4445, "PMPI_Add_error_class", (int *c), (c))
MANA_LOWER_FUNCTION(add_error_code, 4446, "PMPI_Add_error_code", (int c, int *e), (c, e))
MANA_LOWER_FUNCTION(add_error_string, 4447, "PMPI_Add_error_string", (int e, const char *s), (e, s))

MANA_LOWER_FUNCTION(delete_error_class, 4718, "PMPIX_Delete_error_class", (int c), (c))
MANA_LOWER_FUNCTION(delete_error_code, 4719, "PMPIX_Delete_error_code", (int c), (c))

/* User error classes and codes alive (each code with its class) and their latest strings. */
struct error_rec {
    int what, arg, result; /* 0 class (result), 1 code (class arg, result), 2 string (of arg) */
    char *string;
};
static LIST(struct error_rec) errors;
static pthread_mutex_t errors_lock = PTHREAD_MUTEX_INITIALIZER;

/* MPICH's numbering of user error classes, and apart of codes (dynerrutil.c): a deleted
 * number is handed out again first, in the order of deletion (a FIFO free list), else the
 * next never-used one. MANA follows it, so that a restart makes the same numbers: it takes
 * every number ever used, then deletes the free ones in that order. `code_class[n]`: the
 * class code number n had when last added (a class to add it to again). `astray`: a number
 * MPICH gave that this model did not predict (the restart then only checks). */
#define MANA_ERR_DYN 0x40000000
#define MANA_ERR_GENERIC_MASK 0x0007FF00
#define MANA_ERR_GENERIC_SHIFT 8
struct error_numbers {
    int seen, first, next, astray; /* `first`: the first number seen (MPICH reserves 0) */
    LIST(int) free;
};
static struct error_numbers class_numbers, code_numbers;
static LIST(int) code_class;

static int class_number(int errorclass)
{
    return errorclass & ~MANA_ERR_DYN;
}

static int code_number(int errorcode)
{
    return (int)(((unsigned)errorcode & MANA_ERR_GENERIC_MASK) >> MANA_ERR_GENERIC_SHIFT);
}

static void number_taken(struct error_numbers *e, int n)
{
    if (!e->seen) {
        e->seen = 1;
        e->first = e->next = n;
    }
    if (e->free.n) {
        if (e->free.at[0] != n)
            e->astray = 1;
        memmove(e->free.at, e->free.at + 1, (size_t)(e->free.n - 1) * sizeof *e->free.at);
        e->free.n--;
    } else if (n == e->next) {
        e->next++;
    } else {
        e->astray = 1;
    }
}

/* Removes the records matching (what, field) — field: result for 0 and 1, arg for 2. */
static void errors_remove(int what, int value)
{
    int j = 0;
    for (int i = 0; i < errors.n; i++) {
        struct error_rec *e = &errors.at[i];
        if (e->what == what && (what == 2 ? e->arg : e->result) == value)
            free(e->string);
        else
            errors.at[j++] = *e;
    }
    errors.n = j;
}

void mana_error_added(int what, int arg, int result, const char *string)
{
    pthread_mutex_lock(&errors_lock);
    if (what == 2) /* a new string replaces the code's previous one */
        errors_remove(2, arg);
    if (what == 0)
        number_taken(&class_numbers, class_number(result));
    if (what == 1) {
        int n = code_number(result);
        number_taken(&code_numbers, n);
        while (code_class.n <= n)
            PUSH(code_class, MPI_ERR_OTHER);
        code_class.at[n] = arg;
    }
    struct error_rec r = {what, arg, result, string ? strdup(string) : NULL};
    PUSH(errors, r);
    pthread_mutex_unlock(&errors_lock);
}

/* MPIX_Delete_error_class/_code/_string (MPI 4.1's MPI_Remove_error_*) succeeded. */
static void error_deleted(int what, int value)
{
    pthread_mutex_lock(&errors_lock);
    errors_remove(2, value); /* its string goes with it */
    if (what == 0) {
        errors_remove(0, value);
        PUSH(class_numbers.free, class_number(value));
    } else if (what == 1) {
        errors_remove(1, value);
        PUSH(code_numbers.free, code_number(value));
    }
    pthread_mutex_unlock(&errors_lock);
}

#define DELETE_ERROR_WRAPPER(NAME, ID, WHAT)                                             \
    __attribute__((used)) static int mana_w_##NAME(int value)                            \
    {                                                                                    \
        int r;                                                                           \
        MANA_FORWARD_INTO(r, ID, "P" #NAME, int, (int v), (value));                      \
        if (r == MPI_SUCCESS)                                                            \
            error_deleted(WHAT, value);                                                  \
        return r;                                                                        \
    }                                                                                    \
    MANA_EXPORT(mana_w_##NAME, NAME)                                                     \
    MANA_EXPORT(mana_w_##NAME, P##NAME)
DELETE_ERROR_WRAPPER(MPIX_Delete_error_class, 4720, 0)
DELETE_ERROR_WRAPPER(MPIX_Delete_error_code, 4721, 1)
DELETE_ERROR_WRAPPER(MPIX_Delete_error_string, 4722, 2)

/* Takes every class and code number ever used again, then deletes the free ones in
 * their order, and checks that the live ones came out as they were. */
static int readd_errors(char *err, int errlen)
{
    const char *bad = NULL;
    int rc = MPI_SUCCESS, got = 0, want = 0;
    if (class_numbers.astray || code_numbers.astray)
        bad = "MPI numbered a user error class or code in an order MANA did not follow";
    for (int n = class_numbers.first; !bad && n < class_numbers.next; n++)
        if ((rc = add_error_class(&got)) != MPI_SUCCESS || class_number(got) != n) {
            bad = "adding a user error class again";
            want = n | MANA_ERR_DYN;
        }
    for (int n = code_numbers.first; !bad && n < code_numbers.next; n++)
        if ((rc = add_error_code(n < code_class.n ? code_class.at[n] : MPI_ERR_OTHER, &got)) != MPI_SUCCESS ||
            code_number(got) != n) {
            bad = "adding a user error code again";
            want = n;
        }
    for (int i = 0; !bad && i < code_numbers.free.n; i++) {
        int n = code_numbers.free.at[i];
        if ((rc = delete_error_code(code_class.at[n] | (n << MANA_ERR_GENERIC_SHIFT))) != MPI_SUCCESS)
            bad = "deleting a free user error code again";
    }
    for (int i = 0; !bad && i < class_numbers.free.n; i++)
        if ((rc = delete_error_class(class_numbers.free.at[i] | MANA_ERR_DYN)) != MPI_SUCCESS)
            bad = "deleting a free user error class again";
    if (bad) {
        snprintf(err, (size_t)errlen, "%s failed (error %d, got %d for %d)", bad, rc, got, want);
        return -1;
    }
    for (int i = 0; i < errors.n; i++) /* strings once every code exists */
        if (errors.at[i].what == 2)
            add_error_string(errors.at[i].arg, errors.at[i].string);
    return 0;
}

/* The Bsend buffer (upper-half memory the application attached). */
static void *bsend_buffer;
static MPI_Count bsend_size;

void mana_buffer_attached(void *buffer, MPI_Count size)
{
    bsend_buffer = buffer;
    bsend_size = size;
}

static int reattach_buffer(char *err, int errlen)
{
    int rc = bsend_buffer ? buffer_attach_c(bsend_buffer, bsend_size) : MPI_SUCCESS;
    if (rc != MPI_SUCCESS)
        snprintf(err, (size_t)errlen, "attaching the Bsend buffer again failed (error %d)", rc);
    return rc != MPI_SUCCESS;
}

int mana_rebuild_objects(int phase, char *err, int errlen)
{
    if (phase == 0) {
        mana_tc_forget(); /* the datatypes it kept were the old lower half's */
        return rebuild_keyvals(err, errlen) ||
                       recreate_kind(KIND_ERRHANDLER, mana_recreate_errhandler, "an error handler", err, errlen) ||
                       recreate_kind(KIND_OP, mana_recreate_op, "a user-defined operation", err, errlen) ||
                       recreate_kind(KIND_INFO, recreate_info, "an info object", err, errlen) ||
                       rebuild_types(err, errlen) || reattach_buffer(err, errlen) ||
                       readd_errors(err, errlen)
                   ? -1
                   : 0;
    }
    return rebuild_hints(err, errlen) || rebuild_windows(err, errlen) || rebuild_attrs_and_names(err, errlen) ||
                   mana_reregister_datareps(err, errlen) || mana_files_reopen(err, errlen)
               ? -1
               : 0;
}
