/* Attribute caching with user copy/delete callbacks (which MPI calls into the
 * application; they use thread-local counters) and with MPI_COMM_DUP_FN /
 * MPI_TYPE_DUP_FN / MPI_WIN_DUP_FN and the NULL functions, on communicators, datatypes
 * and windows; the MPI-1 MPI_Keyval_create too. 2 or more ranks.
 * `--loop N` (for checkpoint/restart at random instants): keyvals, a duplicate communicator,
 * a datatype, the predefined MPI_INT and a window with attributes are held across N rounds that read and replace
 * them and dup/free their own; the final line counts the callbacks' calls. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static __thread int copies, deletes;

static int copy_fn(MPI_Comm c, int kv, void *extra, void *in, void *out, int *flag)
{
    (void)c;
    (void)kv;
    (void)extra;
    copies++;
    *(long *)out = (long)in * 10;
    *flag = 1;
    return MPI_SUCCESS;
}

static int delete_fn(MPI_Comm c, int kv, void *attr, void *extra)
{
    (void)c;
    (void)kv;
    (void)attr;
    (void)extra;
    deletes++;
    return MPI_SUCCESS;
}

/* --loop mode ----------------------------------------------------------------------- */

/* What the callbacks saw: the sum of the attribute values handed to them and the handle
 * they were called for (checked against the application's own). */
static __thread long seen;
static __thread MPI_Comm copied_from, deleted_from;
static __thread MPI_Datatype type_seen;
static __thread MPI_Win win_seen;

static int loop_copy(MPI_Comm c, int kv, void *extra, void *in, void *out, int *flag)
{
    copied_from = c;
    seen += (long)in;
    return copy_fn(c, kv, extra, in, out, flag);
}

static int loop_delete(MPI_Comm c, int kv, void *attr, void *extra)
{
    deleted_from = c;
    seen += (long)attr;
    return delete_fn(c, kv, attr, extra);
}

static int type_copy(MPI_Datatype t, int kv, void *extra, void *in, void *out, int *flag)
{
    (void)kv;
    (void)extra;
    type_seen = t;
    seen += (long)in;
    copies++;
    *(long *)out = (long)in + 1000;
    *flag = 1;
    return MPI_SUCCESS;
}

static int type_delete(MPI_Datatype t, int kv, void *attr, void *extra)
{
    (void)kv;
    (void)extra;
    type_seen = t;
    seen += (long)attr;
    deletes++;
    return MPI_SUCCESS;
}

static int win_delete(MPI_Win w, int kv, void *attr, void *extra)
{
    (void)kv;
    (void)extra;
    win_seen = w;
    seen += (long)attr;
    deletes++;
    return MPI_SUCCESS;
}

/* A copy callback that fails: MPI_Comm_dup must fail and give MPI_COMM_NULL. */
static int failing_copy(MPI_Comm c, int kv, void *extra, void *in, void *out, int *flag)
{
    (void)c;
    (void)kv;
    (void)extra;
    (void)in;
    (void)out;
    *flag = 0;
    return MPI_ERR_OTHER;
}

static int rank, size, bad;
static unsigned long long csum = 14695981039346656037ULL;

static void check(int ok)
{
    bad += !ok;
}

/* Order-sensitive mixing: a value missed, repeated or reordered changes the result. */
static void mix(unsigned long long v)
{
    csum = (csum ^ v) * 1099511628211ULL;
    csum ^= csum >> 29;
}

/* Reads a communicator attribute: the value, or -1 when it is not set. */
static long comm_attr(MPI_Comm c, int kv)
{
    void *v;
    int flag;
    MPI_Comm_get_attr(c, kv, &v, &flag);
    return flag ? (long)v : -1;
}

static long type_attr(MPI_Datatype t, int kv)
{
    void *v;
    int flag;
    MPI_Type_get_attr(t, kv, &v, &flag);
    return flag ? (long)v : -1;
}

static long win_attr(MPI_Win w, int kv)
{
    void *v;
    int flag;
    MPI_Win_get_attr(w, kv, &v, &flag);
    return flag ? (long)v : -1;
}

/* The long-lived objects: keyvals of every kind, a duplicate of MPI_COMM_WORLD, a datatype
 * and a window, each carrying attributes that the rounds read back and replace. One
 * communicator and one datatype are "rolling" (made in a round, freed in the next, so alive
 * across the pause); the rolling communicator also carries an attribute whose keyval the
 * program has already freed. */
static int loop_main(int rounds)
{
    int kv_user, kv_dup, kv_null, kv_old, kv_type, kv_tcopy, kv_win;
    MPI_Comm_create_keyval(loop_copy, loop_delete, &kv_user, NULL);
    MPI_Comm_create_keyval(MPI_COMM_DUP_FN, MPI_COMM_NULL_DELETE_FN, &kv_dup, NULL);
    MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, MPI_COMM_NULL_DELETE_FN, &kv_null, NULL);
    MPI_Keyval_create(loop_copy, loop_delete, &kv_old, NULL);
    MPI_Type_create_keyval(MPI_TYPE_DUP_FN, type_delete, &kv_type, NULL);
    MPI_Type_create_keyval(type_copy, type_delete, &kv_tcopy, NULL);
    MPI_Win_create_keyval(MPI_WIN_DUP_FN, win_delete, &kv_win, NULL);

    MPI_Comm c1;
    MPI_Comm_dup(MPI_COMM_WORLD, &c1);
    long user = 7, dupv = 11, world = 1;
    MPI_Comm_set_attr(c1, kv_user, (void *)user);
    MPI_Comm_set_attr(c1, kv_dup, (void *)dupv);
    MPI_Comm_set_attr(c1, kv_null, (void *)13L);
    MPI_Attr_put(c1, kv_old, (void *)3L);
    MPI_Comm_set_attr(MPI_COMM_WORLD, kv_dup, (void *)world);

    /* Built from an intermediate type the program frees at once. */
    MPI_Datatype t1, pair;
    long tval = 5, tcval = 6;
    MPI_Type_contiguous(2, MPI_INT, &pair);
    MPI_Type_create_resized(pair, 0, 2 * sizeof(int), &t1);
    MPI_Type_free(&pair);
    MPI_Type_commit(&t1);
    MPI_Type_set_attr(t1, kv_type, (void *)tval);
    MPI_Type_set_attr(t1, kv_tcopy, (void *)tcval);
    /* A predefined datatype carries one too. */
    long pval = 21;
    MPI_Type_set_attr(MPI_INT, kv_type, (void *)pval);

    static int wbuf[4];
    long wval = 9;
    MPI_Win win;
    /* Over a split of c1 (a split copies no attribute): the copies MPI makes of the
     * creating communicator's attributes into a window are not made again when a restart
     * re-creates it (docs/mpi-checkpoint.md, known gaps), so the long-lived window's
     * communicator has none; the short-lived windows of each round do get them. */
    MPI_Comm wc;
    MPI_Comm_split(c1, 0, rank, &wc);
    MPI_Win_create(wbuf, sizeof wbuf, sizeof(int), MPI_INFO_NULL, wc, &win);
    MPI_Comm_free(&wc);
    MPI_Win_set_attr(win, kv_win, (void *)wval);
    if (rank == 0) {
        printf("attrs ready\n");
        fflush(stdout);
    }

    int next = (rank + 1) % size, prev = (rank + size - 1) % size;
    MPI_Comm croll = MPI_COMM_NULL;
    long croll_user = 0, croll_dup = 0;
    int kv_held = MPI_KEYVAL_INVALID; /* freed by the program, still used by c1's attribute */
    MPI_Comm cfail;
    MPI_Comm_dup(MPI_COMM_WORLD, &cfail);
    MPI_Comm_set_errhandler(cfail, MPI_ERRORS_RETURN);
    MPI_Datatype troll = MPI_DATATYPE_NULL;
    long troll_val = 0, troll_cval = 0;
    for (int r = 0; r < rounds; r++) {
        /* The long-lived communicator's attributes are what the last round left. */
        check(comm_attr(c1, kv_user) == user && comm_attr(c1, kv_dup) == dupv &&
              comm_attr(c1, kv_null) == 13 && comm_attr(MPI_COMM_WORLD, kv_dup) == world);
        void *v;
        int flag;
        MPI_Attr_get(c1, kv_old, &v, &flag);
        check(flag && (long)v == 3);
        long mine = (rank + 1) * (r + 1), s;
        MPI_Allreduce(&mine, &s, 1, MPI_LONG, MPI_SUM, c1);
        mix(s);
        /* Replacing a value calls the delete callback on the old one. */
        user = s % 1000 + r;
        dupv = s * 3 + 1;
        world = r + 2;
        MPI_Comm_set_attr(c1, kv_user, (void *)user);
        MPI_Comm_set_attr(c1, kv_dup, (void *)dupv);
        MPI_Comm_set_attr(MPI_COMM_WORLD, kv_dup, (void *)world);

        /* Short-lived duplicate: the user copy callbacks run (they see c1), DUP_FN copies
         * as is, the NULL copy function drops the attribute. */
        MPI_Comm c2;
        copied_from = MPI_COMM_NULL;
        MPI_Comm_dup(c1, &c2);
        check(copied_from == c1);
        check(comm_attr(c2, kv_user) == user * 10 && comm_attr(c2, kv_dup) == dupv &&
              comm_attr(c2, kv_null) == -1 && comm_attr(c2, kv_old) == 30);
        long s2;
        MPI_Allreduce(&s, &s2, 1, MPI_LONG, MPI_MAX, c2);
        mix(s2 + comm_attr(c2, kv_user));
        MPI_Comm gone = c2;
        MPI_Comm_free(&c2);
        check(deleted_from == gone);

        /* Rolling communicator: last round's is read back and freed (its delete callbacks,
         * including the one of the freed keyval, run now); this round's is made. */
        if (croll != MPI_COMM_NULL) {
            check(comm_attr(croll, kv_user) == croll_user * 10 &&
                  comm_attr(croll, kv_dup) == croll_dup && comm_attr(croll, kv_old) == 30);
            long x = r, y;
            MPI_Sendrecv(&x, 1, MPI_LONG, next, 3, &y, 1, MPI_LONG, prev, 3, croll,
                         MPI_STATUS_IGNORE);
            mix(y + comm_attr(croll, kv_user));
            MPI_Comm_free(&croll);
        }
        MPI_Comm_dup(c1, &croll);
        croll_user = user;
        croll_dup = dupv;
        int kv_tmp;
        MPI_Comm_create_keyval(loop_copy, loop_delete, &kv_tmp, NULL);
        MPI_Comm_set_attr(croll, kv_tmp, (void *)(100L + r));
        MPI_Comm_free_keyval(&kv_tmp);
        check(kv_tmp == MPI_KEYVAL_INVALID);

        /* A keyval the program freed while an attribute uses it stays usable through a saved
         * copy of its handle until that attribute is deleted (MPICH's attr/fkeyval and
         * attr/keyval_double_free): last round's is read, freed once more (a no-op), read
         * again and deleted with the copy; this round's is made, used and freed, held
         * across the pause. Keyvals made meanwhile get other handles. */
        if (kv_held != MPI_KEYVAL_INVALID) {
            check(comm_attr(c1, kv_held) == 200 + r - 1);
            int again = kv_held;
            check(MPI_Comm_free_keyval(&again) == MPI_SUCCESS && again == MPI_KEYVAL_INVALID);
            check(comm_attr(c1, kv_held) == 200 + r - 1);
            deleted_from = MPI_COMM_NULL;
            MPI_Comm_delete_attr(c1, kv_held);
            check(deleted_from == c1 && comm_attr(c1, kv_user) == user);
        }
        int kv_new;
        MPI_Comm_create_keyval(loop_copy, loop_delete, &kv_new, NULL);
        MPI_Comm_set_attr(c1, kv_new, (void *)(200L + r));
        kv_held = kv_new;
        MPI_Comm_free_keyval(&kv_new);
        int kv_other;
        MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, MPI_COMM_NULL_DELETE_FN, &kv_other, NULL);
        check(kv_other != kv_held && comm_attr(c1, kv_held) == 200 + r);
        MPI_Comm_free_keyval(&kv_other);

        /* A copy callback that fails fails MPI_Comm_dup, which gives MPI_COMM_NULL
         * (MPICH's attr/attrerr). */
        int kv_fail;
        MPI_Comm_create_keyval(failing_copy, MPI_COMM_NULL_DELETE_FN, &kv_fail, NULL);
        MPI_Comm_set_attr(cfail, kv_fail, (void *)1L);
        MPI_Comm cdup = MPI_COMM_WORLD;
        check(MPI_Comm_dup(cfail, &cdup) != MPI_SUCCESS && cdup == MPI_COMM_NULL);
        MPI_Comm_delete_attr(cfail, kv_fail);
        MPI_Comm_free_keyval(&kv_fail);

        /* Datatype attributes: read back, replaced, copied by MPI_TYPE_DUP_FN and by a
         * user callback on Type_dup, and a rolling dup held across the pause. */
        check(type_attr(t1, kv_type) == tval && type_attr(t1, kv_tcopy) == tcval);
        tval = s % 97 + r;
        tcval = r * 7 + 1;
        MPI_Type_set_attr(t1, kv_type, (void *)tval);
        MPI_Type_set_attr(t1, kv_tcopy, (void *)tcval);
        MPI_Datatype t2;
        type_seen = MPI_DATATYPE_NULL;
        MPI_Type_dup(t1, &t2);
        check(type_seen == t1);
        check(type_attr(t2, kv_type) == tval && type_attr(t2, kv_tcopy) == tcval + 1000);
        int pair[2] = {r, rank}, got[2];
        MPI_Sendrecv(pair, 1, t2, next, 4, got, 1, t2, prev, 4, c1, MPI_STATUS_IGNORE);
        check(got[0] == r && got[1] == prev);
        mix(got[0] * 64 + got[1]);
        MPI_Datatype tgone = t2;
        MPI_Type_free(&t2);
        check(type_seen == tgone);
        if (troll != MPI_DATATYPE_NULL) {
            check(type_attr(troll, kv_type) == troll_val &&
                  type_attr(troll, kv_tcopy) == troll_cval + 1000);
            MPI_Sendrecv(pair, 1, troll, prev, 5, got, 1, troll, next, 5, c1, MPI_STATUS_IGNORE);
            check(got[0] == r && got[1] == next);
            mix(got[1] + type_attr(troll, kv_tcopy));
            MPI_Type_free(&troll);
        }
        MPI_Type_dup(t1, &troll);
        troll_val = tval;
        troll_cval = tcval;
        check(type_attr(MPI_INT, kv_type) == pval);
        mix(pval);
        pval = s % 89 + 2 * r;
        type_seen = MPI_DATATYPE_NULL;
        MPI_Type_set_attr(MPI_INT, kv_type, (void *)pval);
        check(type_seen == MPI_INT);

        /* The long-lived window: a fence epoch (closed before the pause), its attribute
         * read back and replaced, and the predefined attributes. */
        MPI_Win_fence(MPI_MODE_NOPRECEDE, win);
        int put = r * 100 + rank;
        MPI_Put(&put, 1, MPI_INT, next, r % 4, 1, MPI_INT, win);
        MPI_Win_fence(MPI_MODE_NOSUCCEED, win);
        check(wbuf[r % 4] == r * 100 + prev);
        mix(wbuf[r % 4]);
        check(win_attr(win, kv_win) == wval);
        wval = s + wbuf[r % 4];
        MPI_Win_set_attr(win, kv_win, (void *)wval);
        check(win_seen == win);
        void *base;
        MPI_Aint *wsize;
        int *unit;
        MPI_Win_get_attr(win, MPI_WIN_BASE, &base, &flag);
        check(flag && base == (void *)wbuf);
        MPI_Win_get_attr(win, MPI_WIN_SIZE, &wsize, &flag);
        check(flag && *wsize == sizeof wbuf);
        MPI_Win_get_attr(win, MPI_WIN_DISP_UNIT, &unit, &flag);
        check(flag && *unit == sizeof(int));
        mix(*wsize * 16 + *unit);

        /* A short-lived window with an attribute, freed in the round. */
        long local[2] = {0, 0};
        MPI_Win w2;
        MPI_Win_create(local, sizeof local, sizeof(long), MPI_INFO_NULL, MPI_COMM_WORLD, &w2);
        MPI_Win_set_attr(w2, kv_win, (void *)(long)(r + 40));
        MPI_Win_fence(MPI_MODE_NOPRECEDE, w2);
        long lput = s + rank;
        MPI_Put(&lput, 1, MPI_LONG, prev, 1, 1, MPI_LONG, w2);
        MPI_Win_fence(MPI_MODE_NOSUCCEED, w2);
        check(local[1] == s + next && win_attr(w2, kv_win) == r + 40);
        mix(local[1]);
        MPI_Win gone_w = w2;
        MPI_Win_free(&w2);
        check(win_seen == gone_w);
        usleep(20000);
    }
    MPI_Comm_free(&croll);
    MPI_Comm_free(&cfail);
    MPI_Type_free(&troll);
    MPI_Type_delete_attr(MPI_INT, kv_type);
    MPI_Comm_delete_attr(MPI_COMM_WORLD, kv_dup);
    MPI_Win_free(&win);
    MPI_Type_free(&t1);
    MPI_Comm_free(&c1);
    MPI_Comm_free_keyval(&kv_user);
    MPI_Comm_free_keyval(&kv_dup);
    MPI_Comm_free_keyval(&kv_null);
    MPI_Keyval_free(&kv_old);
    MPI_Type_free_keyval(&kv_type);
    MPI_Type_free_keyval(&kv_tcopy);
    MPI_Win_free_keyval(&kv_win);

    /* The callbacks' counts and the values they saw go into the result: a restart must
     * neither call them again nor miss a call. */
    long mine[4] = {copies, deletes, seen, bad}, tot[4];
    MPI_Allreduce(mine, tot, 4, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
    unsigned long long sums[64];
    MPI_Gather(&csum, 1, MPI_UNSIGNED_LONG_LONG, sums, 1, MPI_UNSIGNED_LONG_LONG, 0,
               MPI_COMM_WORLD);
    if (rank == 0) {
        csum = 14695981039346656037ULL;
        for (int i = 0; i < size; i++)
            mix(sums[i]);
        printf("attrs done: %llx copies %ld deletes %ld values seen %ld failed checks: %ld\n",
               csum, tot[0], tot[1], tot[2], tot[3]);
    }
    if (bad)
        fprintf(stderr, "rank %d: %d failed checks\n", rank, bad);
    return tot[3] != 0;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (argc > 1 && strcmp(argv[1], "--loop") == 0) {
        int rounds = argc > 2 ? atoi(argv[2]) : 0;
        if (rounds < 1) {
            if (rank == 0)
                fprintf(stderr, "usage: attrs [--loop N] (N >= 1)\n");
            MPI_Finalize();
            return 2;
        }
        int rc = loop_main(rounds);
        MPI_Finalize();
        return rc;
    }
    int kv_user, kv_dup, kv_null, kv_old, kv_type, kv_win, flag;
    MPI_Comm_create_keyval(copy_fn, delete_fn, &kv_user, NULL);
    MPI_Comm_create_keyval(MPI_COMM_DUP_FN, MPI_COMM_NULL_DELETE_FN, &kv_dup, NULL);
    MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, MPI_COMM_NULL_DELETE_FN, &kv_null, NULL);
    MPI_Keyval_create(copy_fn, delete_fn, &kv_old, NULL);
    MPI_Comm c1;
    MPI_Comm_dup(MPI_COMM_WORLD, &c1);
    MPI_Comm_set_attr(c1, kv_user, (void *)7L);
    MPI_Comm_set_attr(c1, kv_dup, (void *)11L);
    MPI_Comm_set_attr(c1, kv_null, (void *)13L);
    MPI_Attr_put(c1, kv_old, (void *)3L);
    MPI_Comm c2;
    MPI_Comm_dup(c1, &c2);
    void *v;
    long got_user = -1, got_dup = -1, got_old = -1;
    int has_null;
    MPI_Comm_get_attr(c2, kv_user, &v, &flag);
    if (flag)
        got_user = (long)v;
    MPI_Comm_get_attr(c2, kv_dup, &v, &flag);
    if (flag)
        got_dup = (long)v;
    MPI_Comm_get_attr(c2, kv_null, &v, &has_null);
    MPI_Comm_get_attr(c2, kv_old, &v, &flag);
    if (flag)
        got_old = (long)v;
    MPI_Comm_free(&c2);
    MPI_Comm_free(&c1);

    MPI_Type_create_keyval(MPI_TYPE_DUP_FN, (MPI_Type_delete_attr_function *)delete_fn, &kv_type, NULL);
    MPI_Datatype t1, t2;
    MPI_Type_contiguous(2, MPI_INT, &t1);
    MPI_Type_set_attr(t1, kv_type, (void *)5L);
    MPI_Type_dup(t1, &t2);
    long got_type = -1;
    MPI_Type_get_attr(t2, kv_type, &v, &flag);
    if (flag)
        got_type = (long)v;
    MPI_Type_free(&t2);
    MPI_Type_free(&t1);

    int buf[4];
    MPI_Win win;
    MPI_Win_create(buf, sizeof buf, sizeof(int), MPI_INFO_NULL, MPI_COMM_WORLD, &win);
    MPI_Win_create_keyval(MPI_WIN_DUP_FN, (MPI_Win_delete_attr_function *)delete_fn, &kv_win, NULL);
    MPI_Win_set_attr(win, kv_win, (void *)9L);
    MPI_Win_free(&win);

    MPI_Comm_free_keyval(&kv_user);
    MPI_Comm_free_keyval(&kv_dup);
    MPI_Comm_free_keyval(&kv_null);
    MPI_Keyval_free(&kv_old);
    MPI_Type_free_keyval(&kv_type);
    MPI_Win_free_keyval(&kv_win);

    int mine[2] = {copies, deletes}, sums[2];
    MPI_Reduce(mine, sums, 2, MPI_INT, MPI_SUM, 0, MPI_COMM_WORLD);
    if (rank == 0)
        printf("user copy->%ld dup->%ld null-copied=%d mpi1 copy->%ld type dup->%ld; "
               "callbacks on app TLS: copies %d deletes %d\n",
               got_user, got_dup, has_null, got_old, got_type, sums[0], sums[1]);
    MPI_Finalize();
    return 0;
}
