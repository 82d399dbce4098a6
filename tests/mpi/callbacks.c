/* User-defined reduction operations, communicator and window error handlers, and a
 * generalized request: callbacks MPI calls into
 * application code. Both use thread-local state, which must be the application's own
 * (under MANA the call comes from the lower half's world). Also MPI_ERRORS_RETURN.
 * Deterministic output from rank 0; 2 or more ranks. Built with mpicc.mpich.
 * `--loop N` (for checkpoint/restart at random instants): two user operations (one not
 * commutative), a user error handler set on MPI_COMM_WORLD and a duplicate, and a window
 * with its own, held across N rounds that reduce and raise errors (no generalized request). */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static __thread long calls_tls = 100;
static __thread int handled_tls;

static void absmax(void *in, void *inout, int *len, MPI_Datatype *dt)
{
    (void)dt;
    long *a = in, *b = inout;
    for (int i = 0; i < *len; i++) {
        long x = a[i] < 0 ? -a[i] : a[i], y = b[i] < 0 ? -b[i] : b[i];
        b[i] = x > y ? x : y;
    }
    calls_tls++;
}

static __thread int win_handled_tls, greq_calls_tls;

static void on_win_error(MPI_Win *win, int *code, ...)
{
    (void)win;
    int cls;
    MPI_Error_class(*code, &cls);
    win_handled_tls = cls;
}

static int greq_query(void *extra, MPI_Status *st)
{
    greq_calls_tls++;
    MPI_Status_set_elements(st, MPI_INT, *(int *)extra);
    MPI_Status_set_cancelled(st, 0);
    st->MPI_SOURCE = MPI_UNDEFINED;
    st->MPI_TAG = MPI_UNDEFINED;
    return MPI_SUCCESS;
}

static int greq_free(void *extra)
{
    (void)extra;
    greq_calls_tls += 10;
    return MPI_SUCCESS;
}

static int greq_cancel(void *extra, int complete)
{
    (void)extra;
    (void)complete;
    return MPI_SUCCESS;
}

static void on_error(MPI_Comm *comm, int *code, ...)
{
    (void)comm;
    int cls;
    MPI_Error_class(*code, &cls);
    handled_tls = cls;
}

/* --loop mode ----------------------------------------------------------------------- */

#define P 1000003L

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

/* Affine maps x -> a*x + b (mod P) as (a, b) pairs, composed left to right: associative
 * but not commutative, so the result shows whether MPI kept the operands in rank order. */
static void affine_then(const long *f, const long *g, long *out)
{
    long a = f[0] * g[0] % P, b = (f[1] * g[0] + g[1]) % P;
    out[0] = a;
    out[1] = b;
}

static MPI_Datatype aff_t;
static __thread long aff_calls;
static __thread int op_saw_other_type;

static void compose(void *in, void *inout, int *len, MPI_Datatype *dt)
{
    long *a = in, *b = inout;
    if (*dt != aff_t)
        op_saw_other_type = 1;
    for (int i = 0; i < *len; i++)
        affine_then(a + 2 * i, b + 2 * i, b + 2 * i);
    aff_calls++;
}

/* Error handlers: count calls (part of the result: a restart must not call them) and
 * remember the class and the handle they were called for. */
static __thread long comm_errors, win_errors;
static __thread int last_class;
static __thread MPI_Comm err_comm;
static __thread MPI_Win err_win;

static void loop_on_error(MPI_Comm *comm, int *code, ...)
{
    err_comm = *comm;
    MPI_Error_class(*code, &last_class);
    comm_errors++;
}

static void loop_on_win_error(MPI_Win *win, int *code, ...)
{
    err_win = *win;
    MPI_Error_class(*code, &last_class);
    win_errors++;
}

/* Rank i's affine map for element k of round r. */
static void element(int i, int k, int r, long *f)
{
    f[0] = (i + 2 + r + k) % P;
    f[1] = (i * 7 + r * 3 + k) % P;
}

/* Calls a communicator's error handler with `code` and checks it saw `comm` and the class. */
static void raise_on(MPI_Comm comm, int code)
{
    long before = comm_errors;
    err_comm = MPI_COMM_NULL;
    MPI_Comm_call_errhandler(comm, code);
    check(comm_errors == before + 1 && err_comm == comm && last_class == code);
    mix(last_class);
}

/* The long-lived objects: a commutative and a non-commutative user operation (the latter
 * on a derived type built from an intermediate type freed at once), a communicator error
 * handler set on a duplicate of MPI_COMM_WORLD and on MPI_COMM_WORLD itself, and a window
 * with its own error handler. Rolling (made in a round, freed in the next): an operation,
 * and a duplicate communicator whose own error handler was freed right after being set. */
static int loop_main(int rounds)
{
    MPI_Datatype pair;
    MPI_Type_contiguous(2, MPI_LONG, &pair);
    MPI_Type_create_resized(pair, 0, 2 * sizeof(long), &aff_t);
    MPI_Type_free(&pair);
    MPI_Type_commit(&aff_t);
    MPI_Op op_abs, op_aff;
    MPI_Op_create(absmax, 1, &op_abs);
    MPI_Op_create(compose, 0, &op_aff);
    MPI_Errhandler eh, weh;
    MPI_Comm_create_errhandler(loop_on_error, &eh);
    MPI_Comm ecomm;
    MPI_Comm_dup(MPI_COMM_WORLD, &ecomm);
    MPI_Comm_set_errhandler(ecomm, eh);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, eh);
    static int wbuf[4];
    MPI_Win win;
    MPI_Win_create(wbuf, sizeof wbuf, sizeof(int), MPI_INFO_NULL, ecomm, &win);
    MPI_Win_create_errhandler(loop_on_win_error, &weh);
    MPI_Win_set_errhandler(win, weh);
    if (rank == 0) {
        printf("callbacks ready\n");
        fflush(stdout);
    }

    int next = (rank + 1) % size, prev = (rank + size - 1) % size;
    MPI_Op oproll = MPI_OP_NULL;
    MPI_Comm croll = MPI_COMM_NULL;
    int codes[3] = {MPI_ERR_OTHER, MPI_ERR_TAG, MPI_ERR_COUNT};
    for (int r = 0; r < rounds; r++) {
        /* Non-commutative reductions: the result is the composition in rank order. */
        long mine[6], all[6], scan[6], expect[6], prefix[6];
        for (int k = 0; k < 3; k++) {
            element(rank, k, r, mine + 2 * k);
            element(0, k, r, expect + 2 * k);
            for (int i = 1; i < size; i++) {
                long f[2];
                element(i, k, r, f);
                affine_then(expect + 2 * k, f, expect + 2 * k);
                if (i == rank)
                    memcpy(prefix + 2 * k, expect + 2 * k, sizeof f);
            }
            if (rank == 0)
                element(0, k, r, prefix + 2 * k);
        }
        MPI_Allreduce(mine, all, 3, aff_t, op_aff, ecomm);
        MPI_Scan(mine, scan, 3, aff_t, op_aff, ecomm);
        check(memcmp(all, expect, sizeof all) == 0 && memcmp(scan, prefix, sizeof scan) == 0);
        for (int i = 0; i < 6; i++)
            mix(all[i] * 7 + scan[i]);
        /* The commutative one, on a predefined type. */
        long v[3] = {rank * (rank % 2 ? -3 : 2) + r, -rank - r, rank * 10 - 7 * r}, m[3];
        MPI_Allreduce(v, m, 3, MPI_LONG, op_abs, MPI_COMM_WORLD);
        for (int k = 0; k < 3; k++) {
            long want = 0;
            for (int i = 0; i < size; i++) {
                long w[3] = {i * (i % 2 ? -3 : 2) + r, -i - r, i * 10 - 7 * r};
                long a = w[k] < 0 ? -w[k] : w[k];
                want = a > want ? a : want;
            }
            check(m[k] == want);
            mix(m[k]);
        }
        /* Short-lived operation (commutative or not by round) reducing to a moving root. */
        MPI_Op op_tmp;
        MPI_Op_create(compose, r % 2, &op_tmp);
        int root = r % size;
        if (r % 2 == 0) {
            MPI_Reduce(mine, all, 3, aff_t, op_tmp, root, MPI_COMM_WORLD);
            if (rank == root) {
                check(memcmp(all, expect, sizeof all) == 0);
                mix(all[0] + all[5]);
            }
        } else {
            /* Declared commutative: only the composition of identical maps is safe. */
            long same[2] = {r + 2, r}, red[2];
            MPI_Reduce(same, red, 1, aff_t, op_tmp, root, MPI_COMM_WORLD);
            if (rank == root) {
                long want[2] = {same[0], same[1]};
                for (int i = 1; i < size; i++)
                    affine_then(want, same, want);
                check(red[0] == want[0] && red[1] == want[1]);
                mix(red[0] * P + red[1]);
            }
        }
        MPI_Op_free(&op_tmp);
        check(op_tmp == MPI_OP_NULL);
        /* Rolling operation: last round's reduces once more, then this round's is made. */
        if (oproll != MPI_OP_NULL) {
            /* Rank i gets the composition of every rank's element i. */
            long rsin[2 * 64], rs[2], want[2];
            for (int k = 0; k < size; k++)
                element(rank, k, r, rsin + 2 * k);
            MPI_Reduce_scatter_block(rsin, rs, 1, aff_t, oproll, ecomm);
            element(0, rank, r, want);
            for (int i = 1; i < size; i++) {
                long f[2];
                element(i, rank, r, f);
                affine_then(want, f, want);
            }
            check(rs[0] == want[0] && rs[1] == want[1]);
            mix(rs[0] * P + rs[1]);
            MPI_Op_free(&oproll);
        }
        MPI_Op_create(compose, 0, &oproll);
        check(!op_saw_other_type);

        /* Communicator error handlers: raised by hand and by a real error. */
        raise_on(ecomm, codes[r % 3]);
        raise_on(MPI_COMM_WORLD, codes[(r + 1) % 3]);
        int x = r;
        long before = comm_errors;
        int rc = MPI_Send(&x, 1, MPI_INT, size + 5, 0, ecomm), cls;
        MPI_Error_class(rc, &cls);
        check(comm_errors == before + 1 && last_class == MPI_ERR_RANK && cls == MPI_ERR_RANK &&
              err_comm == ecomm);
        mix(cls);
        MPI_Errhandler got;
        MPI_Comm_get_errhandler(ecomm, &got);
        check(got == eh);
        MPI_Errhandler_free(&got);
        /* Rolling communicator: a dup inherits the handler; it gets a new one of its own,
         * which the program frees at once (the communicator keeps it), and is raised on
         * in the next round before being freed. */
        if (croll != MPI_COMM_NULL) {
            raise_on(croll, codes[(r + 2) % 3]);
            MPI_Comm_free(&croll);
        }
        MPI_Comm_dup(ecomm, &croll);
        raise_on(croll, MPI_ERR_ARG);
        MPI_Errhandler eroll;
        MPI_Comm_create_errhandler(loop_on_error, &eroll);
        MPI_Comm_set_errhandler(croll, eroll);
        MPI_Errhandler_free(&eroll);

        /* The window: a fence epoch with a valid put and one to a rank that does not
         * exist (its handler runs), closed before the pause; then a raise by hand. */
        MPI_Win_fence(MPI_MODE_NOPRECEDE, win);
        int put = r * 100 + rank;
        MPI_Put(&put, 1, MPI_INT, next, r % 4, 1, MPI_INT, win);
        before = win_errors;
        err_win = MPI_WIN_NULL;
        MPI_Put(&put, 1, MPI_INT, size + 3, 0, 1, MPI_INT, win);
        check(win_errors == before + 1 && err_win == win && last_class == MPI_ERR_RANK);
        MPI_Win_fence(MPI_MODE_NOSUCCEED, win);
        check(wbuf[r % 4] == r * 100 + prev);
        mix(wbuf[r % 4]);
        err_win = MPI_WIN_NULL;
        MPI_Win_call_errhandler(win, codes[r % 3]);
        check(err_win == win && last_class == codes[r % 3]);
        /* A short-lived window sharing the window error handler. */
        int local = 0;
        MPI_Win w2;
        MPI_Win_create(&local, sizeof local, sizeof(int), MPI_INFO_NULL, MPI_COMM_WORLD, &w2);
        MPI_Win_set_errhandler(w2, weh);
        MPI_Win_fence(MPI_MODE_NOPRECEDE, w2);
        MPI_Put(&put, 1, MPI_INT, prev, 0, 1, MPI_INT, w2);
        MPI_Win_fence(MPI_MODE_NOSUCCEED, w2);
        check(local == r * 100 + next);
        MPI_Win_call_errhandler(w2, MPI_ERR_OTHER);
        check(err_win == w2);
        mix(local);
        MPI_Win_free(&w2);
        usleep(20000);
    }
    MPI_Op_free(&oproll);
    MPI_Comm_free(&croll);
    MPI_Win_free(&win);
    MPI_Errhandler_free(&weh);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_ARE_FATAL);
    MPI_Comm_free(&ecomm);
    MPI_Errhandler_free(&eh);
    MPI_Op_free(&op_aff);
    MPI_Op_free(&op_abs);
    MPI_Type_free(&aff_t);

    /* The operations ran on this thread's own TLS somewhere (how often depends on MPICH's
     * algorithms, so only that goes into the checks). */
    long mine[4] = {comm_errors, win_errors, bad, aff_calls > 0 && calls_tls > 100}, tot[4],
         ran;
    MPI_Allreduce(mine, tot, 3, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
    MPI_Allreduce(&mine[3], &ran, 1, MPI_LONG, MPI_MAX, MPI_COMM_WORLD);
    tot[2] += !ran;
    unsigned long long sums[64];
    MPI_Gather(&csum, 1, MPI_UNSIGNED_LONG_LONG, sums, 1, MPI_UNSIGNED_LONG_LONG, 0,
               MPI_COMM_WORLD);
    if (rank == 0) {
        csum = 14695981039346656037ULL;
        for (int i = 0; i < size; i++)
            mix(sums[i]);
        printf("callbacks done: %llx error handler calls %ld comm %ld win, failed checks: %ld\n",
               csum, tot[0], tot[1], tot[2]);
    }
    if (bad)
        fprintf(stderr, "rank %d: %d failed checks\n", rank, bad);
    return tot[2] != 0;
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
                fprintf(stderr, "usage: callbacks [--loop N] (N >= 1)\n");
            MPI_Finalize();
            return 2;
        }
        int rc = loop_main(rounds);
        MPI_Finalize();
        return rc;
    }

    MPI_Op op;
    MPI_Op_create(absmax, 1, &op);
    long v[3] = {rank * (rank % 2 ? -3 : 2), -rank, rank * 10 - 7}, r[3] = {0, 0, 0};
    MPI_Allreduce(v, r, 3, MPI_LONG, op, MPI_COMM_WORLD);
    long called = calls_tls > 100; /* the op ran on this thread's own TLS */
    long any_called;
    MPI_Allreduce(&called, &any_called, 1, MPI_LONG, MPI_MAX, MPI_COMM_WORLD);
    MPI_Op_free(&op);

    /* A user error handler: an invalid destination rank reaches it, not an abort. */
    MPI_Errhandler eh;
    MPI_Comm_create_errhandler(on_error, &eh);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, eh);
    int x = 1;
    int rc1 = MPI_Send(&x, 1, MPI_INT, size + 5, 0, MPI_COMM_WORLD);
    int cls1;
    MPI_Error_class(rc1, &cls1);

    /* MPI_ERRORS_RETURN: the call returns the error. */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    int rc2 = MPI_Send(&x, 1, MPI_INT, 0, -7, MPI_COMM_WORLD); /* negative tag */
    int cls2, len;
    char msg[MPI_MAX_ERROR_STRING];
    MPI_Error_class(rc2, &cls2);
    MPI_Error_string(cls2, msg, &len);
    MPI_Errhandler_free(&eh);

    /* A window error handler: a put to an invalid rank reaches it. */
    int wbuf[2] = {0, 0};
    MPI_Win win;
    MPI_Win_create(wbuf, sizeof wbuf, sizeof(int), MPI_INFO_NULL, MPI_COMM_WORLD, &win);
    MPI_Errhandler weh;
    MPI_Win_create_errhandler(on_win_error, &weh);
    MPI_Win_set_errhandler(win, weh);
    MPI_Win_fence(0, win);
    MPI_Put(&x, 1, MPI_INT, size + 3, 0, 1, MPI_INT, win);
    MPI_Win_fence(0, win);
    MPI_Win_free(&win);
    MPI_Errhandler_free(&weh);

    /* A generalized request: completed by the application, queried and freed by MPI. */
    int n_elems = 3, got_count = -1;
    MPI_Request greq;
    MPI_Grequest_start(greq_query, greq_free, greq_cancel, &n_elems, &greq);
    MPI_Grequest_complete(greq);
    MPI_Status gst;
    MPI_Wait(&greq, &gst);
    MPI_Get_count(&gst, MPI_INT, &got_count);

    if (rank == 0) {
        printf("absmax %ld %ld %ld op-ran-on-app-tls=%ld\n", r[0], r[1], r[2], any_called);
        printf("errhandler saw class %s (%d), call returned class %d\n",
               handled_tls == MPI_ERR_RANK ? "MPI_ERR_RANK" : "OTHER", handled_tls, cls1);
        printf("errors-return class %s: %s\n", cls2 == MPI_ERR_TAG ? "MPI_ERR_TAG" : "OTHER", msg);
        printf("window errhandler saw class %s; generalized request count %d, callbacks on app TLS %d\n",
               win_handled_tls == MPI_ERR_RANK ? "MPI_ERR_RANK" : "OTHER", got_count, greq_calls_tls);
    }
    MPI_Finalize();
    return 0;
}
