/* Vector datatypes made, committed, used and freed per message, as ScaLAPACK's BLACS does
 * (MANA keeps the freed lower-half objects and hands them out again: mpi-wrappers/src/
 * typecache.c). Every round, for six shapes (two colliding on one element type, MPI_DOUBLE
 * and MPI_INT): MPI_Type_vector, its envelope, contents, name and attribute read back
 * (a reused type must carry nothing of its previous life), sometimes a send with the type
 * before MPI_Type_commit (MPI's error class is printed: a reused type must be as
 * uncommitted as a new one), commit (sometimes twice), sometimes a name or an attribute
 * with a delete callback, a ring exchange of two elements of the type checked element by
 * element (gaps untouched), sometimes freed before the send completes, and sometimes an
 * outer type built from it, the vector freed, the outer type's contents read back and a
 * new vector of the same shape used. Deterministic output from rank 0; 2 or more ranks.
 *
 * `type_reuse [--loop N]`: N rounds (default 20); with --loop it prints "type_reuse
 * ready" first and sleeps 25 ms per round (checkpoint/restart at random instants: 40
 * rounds outlast the tests' 700 ms window). */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NSHAPES 6
static const int shape[NSHAPES][3] = {{3, 2, 5}, {4, 1, 3}, {3, 2, 5}, {2, 3, 4}, {5, 1, 2}, {1, 4, 4}};
#define SPAN 64 /* elements in each buffer: two vectors of every shape fit */

static int rank, size, bad, deletes, errors_seen;
static unsigned long long csum;
static char first_bad[96];

static void check(int ok, const char *what)
{
    if (!ok && bad++ == 0)
        snprintf(first_bad, sizeof first_bad, "%s", what);
}

static int count_delete(MPI_Datatype t, int keyval, void *value, void *extra)
{
    (void)t, (void)keyval, (void)value, (void)extra;
    deletes++;
    return MPI_SUCCESS;
}

static MPI_Datatype elem_of(int k)
{
    return k % 2 ? MPI_INT : MPI_DOUBLE;
}

/* The envelope and contents of `t`: a vector of shape k, with no attribute and (unless
 * `named_ok`) no name. */
static void check_fresh(MPI_Datatype t, int k, int keyval, int named_ok)
{
    int ni, na, nd, comb;
    MPI_Type_get_envelope(t, &ni, &na, &nd, &comb);
    check(comb == MPI_COMBINER_VECTOR && ni == 3 && na == 0 && nd == 1, "envelope");
    int ints[3];
    MPI_Aint aints[1];
    MPI_Datatype old;
    MPI_Type_get_contents(t, 3, 0, 1, ints, aints, &old);
    check(ints[0] == shape[k][0] && ints[1] == shape[k][1] && ints[2] == shape[k][2], "contents");
    check(old == elem_of(k), "old type");
    char name[MPI_MAX_OBJECT_NAME];
    int len = -1;
    MPI_Type_get_name(t, name, &len);
    check(len == 0 || named_ok, "a new vector has no name");
    void *value;
    int flag = 1;
    MPI_Type_get_attr(t, keyval, &value, &flag);
    check(!flag, "a new vector has no attribute");
}

/* Sends two elements of vector `t` (shape k) around the ring and checks what arrived. */
static void ring(MPI_Datatype t, int k, int salt, int free_early, MPI_Comm comm)
{
    const int right = (rank + 1) % size, left = (rank + size - 1) % size;
    const int n = shape[k][0], b = shape[k][1], s = shape[k][2];
    double sd[SPAN], rd[SPAN];
    int si[SPAN], ri[SPAN];
    for (int e = 0; e < SPAN; e++) {
        sd[e] = rank * 1000.0 + salt * 10.0 + e;
        si[e] = rank * 1000 + salt * 10 + e;
        rd[e] = -1.0;
        ri[e] = -1;
    }
    const int is_int = k % 2;
    void *sbuf = is_int ? (void *)si : (void *)sd, *rbuf = is_int ? (void *)ri : (void *)rd;
    MPI_Request req;
    MPI_Isend(sbuf, 2, t, right, salt, comm, &req);
    if (free_early)
        MPI_Type_free(&t); /* MPI keeps it until the send completes */
    MPI_Datatype rt;
    MPI_Type_vector(n, b, s, elem_of(k), &rt);
    MPI_Type_commit(&rt);
    MPI_Status st;
    MPI_Recv(rbuf, 2, rt, left, salt, comm, &st);
    MPI_Wait(&req, MPI_STATUS_IGNORE);
    int got;
    MPI_Get_count(&st, rt, &got);
    check(got == 2, "count");
    MPI_Aint lb, extent;
    MPI_Type_get_extent(rt, &lb, &extent);
    const int ext = (int)(extent / (is_int ? (MPI_Aint)sizeof(int) : (MPI_Aint)sizeof(double)));
    check(lb == 0 && ext == (n - 1) * s + b, "extent");
    char covered[SPAN] = {0};
    for (int c = 0; c < 2; c++)
        for (int i = 0; i < n; i++)
            for (int j = 0; j < b; j++)
                covered[c * ext + i * s + j] = 1;
    for (int e = 0; e < SPAN; e++) {
        if (is_int) {
            int want = covered[e] ? left * 1000 + salt * 10 + e : -1;
            check(ri[e] == want, "int element");
            csum = csum * 31 + (unsigned)ri[e];
        } else {
            double want = covered[e] ? left * 1000.0 + salt * 10.0 + e : -1.0;
            check(rd[e] == want, "double element");
            csum = csum * 31 + (unsigned long long)(long long)rd[e];
        }
    }
    MPI_Type_free(&rt);
    if (!free_early)
        MPI_Type_free(&t);
}

static void round_of(int r, int keyval, MPI_Comm comm)
{
    for (int k = 0; k < NSHAPES; k++) {
        const int salt = (r * NSHAPES + k) % 1000;
        MPI_Datatype t;
        MPI_Type_vector(shape[k][0], shape[k][1], shape[k][2], elem_of(k), &t);
        check_fresh(t, k, keyval, 0);
        if ((r + k) % 5 == 0) { /* used before it is committed: MPI's own error */
            int x[SPAN];
            int rc = MPI_Send(x, 1, t, MPI_PROC_NULL, 0, comm), cls = MPI_SUCCESS;
            MPI_Error_class(rc, &cls);
            errors_seen += cls;
        }
        MPI_Type_commit(&t);
        if ((r + k) % 6 == 1)
            MPI_Type_commit(&t);
        check_fresh(t, k, keyval, 0); /* committing gives no name, no attribute either */
        if ((r + k) % 7 == 2) {
            char name[MPI_MAX_OBJECT_NAME];
            int len;
            snprintf(name, sizeof name, "shape %d round %d", k, r);
            MPI_Type_set_name(t, name);
            MPI_Type_get_name(t, name, &len);
            check(len > 0, "name set");
        }
        if ((r + k) % 4 == 3)
            MPI_Type_set_attr(t, keyval, (void *)(long)(r + 1));
        if ((r + k) % 4 == 0) { /* an outer type outlives the vector it was built from */
            MPI_Datatype outer, inner, again;
            MPI_Type_contiguous(2, t, &outer);
            MPI_Type_commit(&outer);
            MPI_Type_free(&t);
            int ni, na, nd, comb;
            MPI_Type_get_envelope(outer, &ni, &na, &nd, &comb);
            int count;
            MPI_Aint none[1];
            MPI_Type_get_contents(outer, 1, 0, 1, &count, none, &inner);
            check(comb == MPI_COMBINER_CONTIGUOUS && count == 2, "outer contents");
            check_fresh(inner, k, keyval, 1);
            MPI_Type_vector(shape[k][0], shape[k][1], shape[k][2], elem_of(k), &again);
            MPI_Type_commit(&again);
            ring(again, k, salt, 0, comm);
            MPI_Type_free(&inner);
            MPI_Type_free(&outer);
            continue;
        }
        ring(t, k, salt, (r + k) % 3 == 0, comm);
    }
}

int main(int argc, char **argv)
{
    int rounds = 20, loop = 0;
    if (argc > 2 && strcmp(argv[1], "--loop") == 0) {
        rounds = atoi(argv[2]);
        loop = 1;
    }
    if (rounds < 1) {
        fprintf(stderr, "usage: type_reuse [--loop N] (N >= 1)\n");
        return 2;
    }
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Comm comm;
    MPI_Comm_dup(MPI_COMM_WORLD, &comm);
    MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN);
    int keyval;
    MPI_Type_create_keyval(MPI_TYPE_NULL_COPY_FN, count_delete, &keyval, NULL);
    if (loop && rank == 0) {
        printf("type_reuse ready\n");
        fflush(stdout);
    }
    for (int r = 0; r < rounds; r++) {
        round_of(r, keyval, comm);
        if (loop)
            usleep(25000);
    }
    MPI_Type_free_keyval(&keyval);
    int local[3] = {bad, deletes, errors_seen}, all[3];
    MPI_Reduce(local, all, 3, MPI_INT, MPI_SUM, 0, MPI_COMM_WORLD);
    unsigned long long total;
    MPI_Reduce(&csum, &total, 1, MPI_UNSIGNED_LONG_LONG, MPI_SUM, 0, MPI_COMM_WORLD);
    if (bad)
        fprintf(stderr, "rank %d: %d failed checks, first: %s\n", rank, bad, first_bad);
    if (rank == 0)
        printf("type_reuse done: %llx deletes=%d errors=%d bad=%d\n", total, all[1], all[2], all[0]);
    MPI_Comm_free(&comm);
    MPI_Finalize();
    return 0;
}
