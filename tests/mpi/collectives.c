/* Every blocking collective (Barrier, Bcast, Gather(v), Scatter(v), Allgather(v),
 * Alltoall(v,w), Reduce, Allreduce (MAXLOC/MINLOC on the five pair types too),
 * Reduce_scatter(_block), Scan, Exscan) and its
 * nonblocking version (Ibarrier ... Iexscan, completed with Wait or Waitall), with
 * MPI_IN_PLACE where the standard allows it. Each rank checks its results against the
 * values computed locally; rank 0 prints per-collective checksums and failure counts.
 * Deterministic; 2 or more ranks. Built with mpicc.mpich.
 *
 * `--loop N`: sub-communicators, two user operations and two persistent collectives
 * (Allreduce_init, Bcast_init; the broadcast in flight across the sleep) are made once,
 * then N rounds run the above and user-op reductions on them (nonblocking ones in flight
 * across each 20 ms sleep); rank 0 prints "collectives ready", then "collectives done: <checksum> ...". */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define K 3 /* elements per rank in the regular collectives */

static int rank, size, bad;
static char first_bad[96];
static long sums[64];
static const char *names[64];
static int nsums;

static void check(int ok, const char *what)
{
    if (!ok && bad++ == 0)
        snprintf(first_bad, sizeof first_bad, "%s", what);
}

/* Records a checksum of this rank's result under a name (printed, summed over ranks). */
static void record(const char *name, const int *v, int n)
{
    long s = 0;
    for (int i = 0; i < n; i++)
        s = s * 31 + v[i];
    names[nsums] = name;
    sums[nsums++] = s % 1000003;
}

static int val(int r, int i) { return r * 100 + i; }

/* The blocking (nb == 0) or nonblocking (nb == 1) round of every collective, on w with
 * w's own rank and size (--loop runs it on sub-communicators too). */
static void round_of_collectives(MPI_Comm w, int nb)
{
    int rank, size;
    MPI_Comm_rank(w, &rank);
    MPI_Comm_size(w, &size);
    MPI_Request rq[4];
    MPI_Status sts[4];
#define DONE(r) (nb ? MPI_Wait(&(r), &sts[0]) : MPI_SUCCESS)
    int n = size * K;
    int *send = malloc(sizeof(int) * n * size), *recv = malloc(sizeof(int) * n * size);
    int *counts = malloc(sizeof(int) * size), *displs = malloc(sizeof(int) * size);
    int *rcounts = malloc(sizeof(int) * size), *rdispls = malloc(sizeof(int) * size);

    /* Barrier */
    if (nb) {
        MPI_Ibarrier(w, &rq[0]);
        MPI_Wait(&rq[0], &sts[0]);
    } else {
        MPI_Barrier(w);
    }

    /* Bcast from the last rank */
    int b[K];
    for (int i = 0; i < K; i++)
        b[i] = rank == size - 1 ? val(77, i) : -1;
    if (nb)
        MPI_Ibcast(b, K, MPI_INT, size - 1, w, &rq[0]);
    else
        MPI_Bcast(b, K, MPI_INT, size - 1, w);
    DONE(rq[0]);
    for (int i = 0; i < K; i++)
        check(b[i] == val(77, i), "bcast");
    record("bcast", b, K);

    /* Gather to rank 0, then Gather with MPI_IN_PLACE at the root */
    for (int i = 0; i < K; i++)
        send[i] = val(rank, i);
    memset(recv, 0, sizeof(int) * n);
    if (nb)
        MPI_Igather(send, K, MPI_INT, recv, K, MPI_INT, 0, w, &rq[0]);
    else
        MPI_Gather(send, K, MPI_INT, recv, K, MPI_INT, 0, w);
    DONE(rq[0]);
    record("gather", recv, rank == 0 ? n : 0);
    if (rank == 0) {
        for (int j = 0; j < n; j++)
            check(recv[j] == val(j / K, j % K), "gather");
        memset(recv, 0, sizeof(int) * n);
        for (int i = 0; i < K; i++)
            recv[i] = val(0, i);
    }
    if (nb)
        MPI_Igather(rank == 0 ? MPI_IN_PLACE : send, K, MPI_INT, recv, K, MPI_INT, 0, w, &rq[0]);
    else
        MPI_Gather(rank == 0 ? MPI_IN_PLACE : send, K, MPI_INT, recv, K, MPI_INT, 0, w);
    DONE(rq[0]);
    if (rank == 0)
        for (int j = 0; j < n; j++)
            check(recv[j] == val(j / K, j % K), "gather in place");

    /* Gatherv: rank r contributes r+1 elements */
    int total = 0;
    for (int r = 0; r < size; r++) {
        counts[r] = r + 1;
        displs[r] = total;
        total += r + 1;
    }
    for (int i = 0; i <= rank; i++)
        send[i] = val(rank, i);
    memset(recv, 0, sizeof(int) * total);
    if (nb)
        MPI_Igatherv(send, rank + 1, MPI_INT, recv, counts, displs, MPI_INT, 0, w, &rq[0]);
    else
        MPI_Gatherv(send, rank + 1, MPI_INT, recv, counts, displs, MPI_INT, 0, w);
    DONE(rq[0]);
    if (rank == 0) {
        for (int r = 0; r < size; r++)
            for (int i = 0; i <= r; i++)
                check(recv[displs[r] + i] == val(r, i), "gatherv");
    }
    record("gatherv", recv, rank == 0 ? total : 0);

    /* Scatter from rank 0, then with MPI_IN_PLACE at the root */
    if (rank == 0)
        for (int j = 0; j < n; j++)
            send[j] = val(j / K + 10, j % K);
    int part[K + 64];
    if (nb)
        MPI_Iscatter(send, K, MPI_INT, part, K, MPI_INT, 0, w, &rq[0]);
    else
        MPI_Scatter(send, K, MPI_INT, part, K, MPI_INT, 0, w);
    DONE(rq[0]);
    for (int i = 0; i < K; i++)
        check(part[i] == val(rank + 10, i), "scatter");
    record("scatter", part, K);
    if (nb)
        MPI_Iscatter(send, K, MPI_INT, rank == 0 ? MPI_IN_PLACE : part, K, MPI_INT, 0, w,
                     &rq[0]);
    else
        MPI_Scatter(send, K, MPI_INT, rank == 0 ? MPI_IN_PLACE : part, K, MPI_INT, 0, w);
    DONE(rq[0]);
    for (int i = 0; i < K; i++)
        check(part[i] == val(rank + 10, i), "scatter in place");

    /* Scatterv: rank r gets r+1 elements */
    if (rank == 0)
        for (int r = 0; r < size; r++)
            for (int i = 0; i <= r; i++)
                send[displs[r] + i] = val(r + 20, i);
    if (nb)
        MPI_Iscatterv(send, counts, displs, MPI_INT, part, rank + 1, MPI_INT, 0, w, &rq[0]);
    else
        MPI_Scatterv(send, counts, displs, MPI_INT, part, rank + 1, MPI_INT, 0, w);
    DONE(rq[0]);
    for (int i = 0; i <= rank; i++)
        check(part[i] == val(rank + 20, i), "scatterv");
    record("scatterv", part, rank + 1);

    /* Allgather, and Allgather in place */
    for (int i = 0; i < K; i++)
        send[i] = val(rank + 30, i);
    if (nb)
        MPI_Iallgather(send, K, MPI_INT, recv, K, MPI_INT, w, &rq[0]);
    else
        MPI_Allgather(send, K, MPI_INT, recv, K, MPI_INT, w);
    DONE(rq[0]);
    for (int j = 0; j < n; j++)
        check(recv[j] == val(j / K + 30, j % K), "allgather");
    record("allgather", recv, n);
    memset(recv, 0, sizeof(int) * n);
    for (int i = 0; i < K; i++)
        recv[rank * K + i] = val(rank + 30, i);
    if (nb)
        MPI_Iallgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, recv, K, MPI_INT, w, &rq[0]);
    else
        MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, recv, K, MPI_INT, w);
    DONE(rq[0]);
    for (int j = 0; j < n; j++)
        check(recv[j] == val(j / K + 30, j % K), "allgather in place");

    /* Allgatherv */
    for (int i = 0; i <= rank; i++)
        send[i] = val(rank + 40, i);
    memset(recv, 0, sizeof(int) * total);
    if (nb)
        MPI_Iallgatherv(send, rank + 1, MPI_INT, recv, counts, displs, MPI_INT, w, &rq[0]);
    else
        MPI_Allgatherv(send, rank + 1, MPI_INT, recv, counts, displs, MPI_INT, w);
    DONE(rq[0]);
    for (int r = 0; r < size; r++)
        for (int i = 0; i <= r; i++)
            check(recv[displs[r] + i] == val(r + 40, i), "allgatherv");
    record("allgatherv", recv, total);

    /* Alltoall: block j of rank r's send goes to rank j */
    for (int j = 0; j < n; j++)
        send[j] = val(rank * 10 + j / K, j % K);
    if (nb)
        MPI_Ialltoall(send, K, MPI_INT, recv, K, MPI_INT, w, &rq[0]);
    else
        MPI_Alltoall(send, K, MPI_INT, recv, K, MPI_INT, w);
    DONE(rq[0]);
    for (int j = 0; j < n; j++)
        check(recv[j] == val((j / K) * 10 + rank, j % K), "alltoall");
    record("alltoall", recv, n);

    /* Alltoallv: rank r sends j+1 elements to rank j, so receives r+1 from each */
    int stot = 0, rtot = 0;
    for (int j = 0; j < size; j++) {
        counts[j] = j + 1;
        displs[j] = stot;
        stot += j + 1;
        rcounts[j] = rank + 1;
        rdispls[j] = rtot;
        rtot += rank + 1;
    }
    for (int j = 0; j < size; j++)
        for (int i = 0; i <= j; i++)
            send[displs[j] + i] = val(rank * 10 + j, i);
    if (nb)
        MPI_Ialltoallv(send, counts, displs, MPI_INT, recv, rcounts, rdispls, MPI_INT, w,
                       &rq[0]);
    else
        MPI_Alltoallv(send, counts, displs, MPI_INT, recv, rcounts, rdispls, MPI_INT, w);
    DONE(rq[0]);
    for (int j = 0; j < size; j++)
        for (int i = 0; i <= rank; i++)
            check(recv[rdispls[j] + i] == val(j * 10 + rank, i), "alltoallv");
    record("alltoallv", recv, rtot);

    /* Alltoallw: the same exchange with byte displacements and per-peer types */
    {
        int *sd = malloc(sizeof(int) * size), *rd = malloc(sizeof(int) * size);
        MPI_Datatype *ty = malloc(sizeof(MPI_Datatype) * size);
        for (int j = 0; j < size; j++) {
            sd[j] = displs[j] * (int)sizeof(int);
            rd[j] = rdispls[j] * (int)sizeof(int);
            ty[j] = MPI_INT;
        }
        memset(recv, 0, sizeof(int) * rtot);
        if (nb)
            MPI_Ialltoallw(send, counts, sd, ty, recv, rcounts, rd, ty, w, &rq[0]);
        else
            MPI_Alltoallw(send, counts, sd, ty, recv, rcounts, rd, ty, w);
        DONE(rq[0]);
        for (int j = 0; j < size; j++)
            for (int i = 0; i <= rank; i++)
                check(recv[rdispls[j] + i] == val(j * 10 + rank, i), "alltoallw");
        record("alltoallw", recv, rtot);
        free(sd);
        free(rd);
        free(ty);
    }

    /* Reduce (SUM to rank 1, MAX in place at rank 0) and Allreduce (MIN, then PROD in
     * place) */
    int red[K], red2[K];
    for (int i = 0; i < K; i++)
        send[i] = val(rank, i) - 50 * i;
    int root = 1 % size;
    if (nb) {
        MPI_Ireduce(send, red, K, MPI_INT, MPI_SUM, root, w, &rq[0]);
        MPI_Iallreduce(send, red2, K, MPI_INT, MPI_MIN, w, &rq[1]);
        MPI_Waitall(2, rq, sts);
    } else {
        MPI_Reduce(send, red, K, MPI_INT, MPI_SUM, root, w);
        MPI_Allreduce(send, red2, K, MPI_INT, MPI_MIN, w);
    }
    if (rank == root) {
        for (int i = 0; i < K; i++)
            check(red[i] == 100 * size * (size - 1) / 2 + size * (i - 50 * i), "reduce sum");
    }
    record("reduce", red, rank == root ? K : 0);
    for (int i = 0; i < K; i++)
        check(red2[i] == i - 50 * i, "allreduce min");
    record("allreduce", red2, K);
    for (int i = 0; i < K; i++)
        red[i] = send[i];
    if (nb)
        MPI_Ireduce(rank == 0 ? MPI_IN_PLACE : send, red, K, MPI_INT, MPI_MAX, 0, w, &rq[0]);
    else
        MPI_Reduce(rank == 0 ? MPI_IN_PLACE : send, red, K, MPI_INT, MPI_MAX, 0, w);
    DONE(rq[0]);
    if (rank == 0)
        for (int i = 0; i < K; i++)
            check(red[i] == val(size - 1, i) - 50 * i, "reduce max in place");
    long lp[2] = {rank + 1, 2};
    if (nb)
        MPI_Iallreduce(MPI_IN_PLACE, lp, 2, MPI_LONG, MPI_PROD, w, &rq[0]);
    else
        MPI_Allreduce(MPI_IN_PLACE, lp, 2, MPI_LONG, MPI_PROD, w);
    DONE(rq[0]);
    long fact = 1;
    for (int r = 1; r <= size; r++)
        fact *= r;
    check(lp[0] == fact && lp[1] == 1L << size, "allreduce prod in place");

    /* MAXLOC/MINLOC on MPICH's five predefined pair types (handles of the "direct" shape). */
    {
        struct { float v; int i; } fi = {(float)(rank % 3), rank}, fo;
        struct { double v; int i; } di = {rank * 1.5, rank}, dout;
        struct { long v; int i; } li = {-(long)rank, rank}, lo;
        struct { short v; int i; } si = {(short)(rank % 2), rank}, so;
        struct { long double v; int i; } ldi = {(long double)rank / 4, rank}, ldo;
        MPI_Allreduce(&fi, &fo, 1, MPI_FLOAT_INT, MPI_MAXLOC, w);
        MPI_Allreduce(&di, &dout, 1, MPI_DOUBLE_INT, MPI_MAXLOC, w);
        MPI_Allreduce(&li, &lo, 1, MPI_LONG_INT, MPI_MINLOC, w);
        MPI_Allreduce(&si, &so, 1, MPI_SHORT_INT, MPI_MINLOC, w);
        MPI_Allreduce(&ldi, &ldo, 1, MPI_LONG_DOUBLE_INT, MPI_MAXLOC, w);
        check(dout.v == (size - 1) * 1.5 && dout.i == size - 1, "allreduce maxloc double_int");
        check(lo.v == -(long)(size - 1) && lo.i == size - 1, "allreduce minloc long_int");
        check(so.v == 0 && so.i == 0, "allreduce minloc short_int");
        check(ldo.i == size - 1, "allreduce maxloc long_double_int");
        int locs[5] = {fo.i * 10 + (int)fo.v, dout.i, lo.i, so.i, ldo.i};
        record("maxloc/minloc", locs, 5);
    }

    /* Reduce_scatter: rank r gets r+1 sums; Reduce_scatter_block: K each */
    for (int j = 0; j < total; j++)
        send[j] = rank + j;
    for (int r = 0; r < size; r++)
        counts[r] = r + 1;
    if (nb)
        MPI_Ireduce_scatter(send, part, counts, MPI_INT, MPI_SUM, w, &rq[0]);
    else
        MPI_Reduce_scatter(send, part, counts, MPI_INT, MPI_SUM, w);
    DONE(rq[0]);
    int off = rank * (rank + 1) / 2;
    for (int i = 0; i <= rank; i++)
        check(part[i] == size * (size - 1) / 2 + size * (off + i), "reduce_scatter");
    record("reduce_scatter", part, rank + 1);
    for (int j = 0; j < n; j++)
        send[j] = rank * j;
    if (nb)
        MPI_Ireduce_scatter_block(send, part, K, MPI_INT, MPI_SUM, w, &rq[0]);
    else
        MPI_Reduce_scatter_block(send, part, K, MPI_INT, MPI_SUM, w);
    DONE(rq[0]);
    for (int i = 0; i < K; i++)
        check(part[i] == (rank * K + i) * size * (size - 1) / 2, "reduce_scatter_block");
    record("reduce_scatter_block", part, K);
    /* ... and in place: the result lands at the start of the buffer */
    for (int j = 0; j < n; j++)
        recv[j] = rank * j;
    if (nb)
        MPI_Ireduce_scatter_block(MPI_IN_PLACE, recv, K, MPI_INT, MPI_SUM, w, &rq[0]);
    else
        MPI_Reduce_scatter_block(MPI_IN_PLACE, recv, K, MPI_INT, MPI_SUM, w);
    DONE(rq[0]);
    for (int i = 0; i < K; i++)
        check(recv[i] == part[i], "reduce_scatter_block in place");

    /* Scan and Exscan (inclusive/exclusive prefix sums), Scan in place */
    int x[2] = {rank + 1, 10 * rank}, incl[2], excl[2] = {-1, -1};
    if (nb) {
        MPI_Iscan(x, incl, 2, MPI_INT, MPI_SUM, w, &rq[0]);
        MPI_Iexscan(x, excl, 2, MPI_INT, MPI_SUM, w, &rq[1]);
        MPI_Waitall(2, rq, sts);
    } else {
        MPI_Scan(x, incl, 2, MPI_INT, MPI_SUM, w);
        MPI_Exscan(x, excl, 2, MPI_INT, MPI_SUM, w);
    }
    check(incl[0] == (rank + 1) * (rank + 2) / 2 && incl[1] == 10 * rank * (rank + 1) / 2,
          "scan");
    if (rank > 0)
        check(excl[0] == rank * (rank + 1) / 2 && excl[1] == 10 * (rank - 1) * rank / 2,
              "exscan");
    record("scan", incl, 2);
    if (nb)
        MPI_Iscan(MPI_IN_PLACE, x, 2, MPI_INT, MPI_SUM, w, &rq[0]);
    else
        MPI_Scan(MPI_IN_PLACE, x, 2, MPI_INT, MPI_SUM, w);
    DONE(rq[0]);
    check(x[0] == incl[0] && x[1] == incl[1], "scan in place");

    free(send);
    free(recv);
    free(counts);
    free(displs);
    free(rcounts);
    free(rdispls);
#undef DONE
}

/* ---- --loop mode ---- */

/* A checksum of what this rank received through MPI, folded in a fixed order (FNV-1a
 * over 64-bit values), so it is the same in every run and after any restart. */
static unsigned long long acc = 14695981039346656037ULL;

static void fold(long long v)
{
    acc = (acc ^ (unsigned long long)v) * 1099511628211ULL;
}

/* User operations. summod: elementwise sum modulo a prime on MPI_INT (commutative).
 * affine: composition of maps x -> a*x + b modulo P on MPI_2INT pairs (a, b); associative
 * but not commutative, so the result shows that MPI applied it in rank order. Both check
 * that they see the predefined datatype the application passed. */
#define P 65521

static void summod_fn(void *in, void *inout, int *len, MPI_Datatype *dt)
{
    check(*dt == MPI_INT, "summod datatype");
    int *a = in, *b = inout;
    for (int i = 0; i < *len; i++)
        b[i] = (a[i] + b[i]) % P;
}

/* first, then second: x -> s.a * (f.a * x + f.b) + s.b */
static void compose(const int *f, const int *s, int *out)
{
    int a = (int)((long long)f[0] * s[0] % P);
    int b = (int)(((long long)s[0] * f[1] + s[1]) % P);
    out[0] = a;
    out[1] = b;
}

static void affine_fn(void *in, void *inout, int *len, MPI_Datatype *dt)
{
    check(*dt == MPI_2INT, "affine datatype");
    int *a = in, *b = inout;
    /* MPI passes the lower ranks' part as in: inout = in, then inout. */
    for (int i = 0; i < *len; i++)
        compose(a + 2 * i, b + 2 * i, b + 2 * i);
}

/* The (a, b) pair of world rank q, element i, round r. */
static void affine_of(int q, int i, int r, int *out)
{
    out[0] = (q * 3 + i + r + 2) % P;
    out[1] = (q * 31 + i * 7 + r * 5) % P;
}

/* The composition of ranks' pairs in the order given by world ranks qs[0..n). */
static void affine_chain(const int *qs, int n, int i, int r, int *out)
{
    affine_of(qs[0], i, r, out);
    for (int j = 1; j < n; j++) {
        int e[2];
        affine_of(qs[j], i, r, e);
        compose(out, e, out);
    }
}

/* Adds this rank's collective checksums to acc and forgets them. */
static void fold_records(void)
{
    for (int i = 0; i < nsums; i++)
        fold(sums[i]);
    nsums = 0;
}

#define LK 3 /* pairs / ints per rank in the loop's user-op reductions */

static int loop_main(int rounds)
{
    MPI_Comm w = MPI_COMM_WORLD;
    if (size > 64) {
        if (rank == 0)
            fprintf(stderr, "collectives --loop needs at most 64 ranks\n");
        MPI_Finalize();
        return 2;
    }

    /* Long-lived: a duplicate, the odd/even halves (in world order), world reversed, and
     * the two user operations. */
    MPI_Comm dup, half, rev;
    MPI_Comm_dup(w, &dup);
    MPI_Comm_split(w, rank % 2, rank, &half);
    MPI_Comm_split(w, 0, -rank, &rev);
    MPI_Op summod, affine;
    MPI_Op_create(summod_fn, 1, &summod);
    MPI_Op_create(affine_fn, 0, &affine);
    int hsize, hrank, revrank;
    MPI_Comm_size(half, &hsize);
    MPI_Comm_rank(half, &hrank);
    MPI_Comm_rank(rev, &revrank);
    /* World ranks in each communicator's rank order, for the expected values. */
    int world_order[64], half_order[64], rev_order[64];
    for (int q = 0; q < size; q++) {
        world_order[q] = q;
        rev_order[q] = size - 1 - q;
    }
    for (int j = 0; j < hsize; j++)
        half_order[j] = rank % 2 + 2 * j;

    /* Persistent collectives, initialized once, started every round (one across the
     * sleep): a sum on the duplicate and a broadcast on the reversed communicator. */
    int psum_in, psum_out, pbc;
    MPI_Request psum, pbcast;
    MPI_Allreduce_init(&psum_in, &psum_out, 1, MPI_INT, MPI_SUM, dup, MPI_INFO_NULL, &psum);
    MPI_Bcast_init(&pbc, 1, MPI_INT, 0, rev, MPI_INFO_NULL, &pbcast);

    if (rank == 0) {
        printf("collectives ready\n");
        fflush(stdout);
    }

    for (int round = 0; round < rounds; round++) {
        fold(round);
        psum_in = rank * 3 + round;
        MPI_Start(&psum);
        MPI_Wait(&psum, MPI_STATUS_IGNORE);
        check(psum_out == 3 * size * (size - 1) / 2 + size * round, "persistent allreduce");
        fold(psum_out);
        pbc = revrank == 0 ? 4000 + round : -1;
        MPI_Start(&pbcast);
        int flag;
        MPI_Op_commutative(affine, &flag);
        check(!flag, "affine not commutative");
        MPI_Op_commutative(summod, &flag);
        check(flag, "summod commutative");

        /* Every collective on world or one of the sub-communicators, every other round
         * (about 40 collectives: slow with more ranks than cores); blocking and
         * nonblocking alternate after the four communicators. */
        if (round % 2 == 0) {
            MPI_Comm on[4] = {w, dup, half, rev};
            round_of_collectives(on[round / 2 % 4], round / 8 % 2);
            fold_records();
        }

        /* User operations: Allreduce, Reduce to a moving root, Scan, Exscan. */
        int x[LK], y[LK], want[LK];
        for (int i = 0; i < LK; i++)
            x[i] = (rank * 1009 + i * 7 + round * 13) % P;
        MPI_Allreduce(x, y, LK, MPI_INT, summod, dup);
        for (int i = 0; i < LK; i++) {
            want[i] = 0;
            for (int q = 0; q < size; q++)
                want[i] = (want[i] + (q * 1009 + i * 7 + round * 13) % P) % P;
            check(y[i] == want[i], "allreduce summod");
            fold(y[i]);
        }
        int pa[2 * LK], pr[2 * LK], pw[2];
        for (int i = 0; i < LK; i++)
            affine_of(rank, i, round, pa + 2 * i);
        int root = round % size;
        MPI_Reduce(pa, pr, LK, MPI_2INT, affine, root, rev);
        if (revrank == root) {
            for (int i = 0; i < LK; i++) {
                affine_chain(rev_order, size, i, round, pw);
                check(pr[2 * i] == pw[0] && pr[2 * i + 1] == pw[1], "reduce affine");
                fold(pr[2 * i]);
                fold(pr[2 * i + 1]);
            }
        }
        MPI_Scan(pa, pr, LK, MPI_2INT, affine, half);
        for (int i = 0; i < LK; i++) {
            affine_chain(half_order, hrank + 1, i, round, pw);
            check(pr[2 * i] == pw[0] && pr[2 * i + 1] == pw[1], "scan affine");
            fold(pr[2 * i]);
            fold(pr[2 * i + 1]);
        }
        MPI_Exscan(pa, pr, LK, MPI_2INT, affine, dup);
        if (rank > 0) {
            for (int i = 0; i < LK; i++) {
                affine_chain(world_order, rank, i, round, pw);
                check(pr[2 * i] == pw[0] && pr[2 * i + 1] == pw[1], "exscan affine");
                fold(pr[2 * i]);
                fold(pr[2 * i + 1]);
            }
        }
        int rs[64 * LK], rsb[LK];
        for (int j = 0; j < size * LK; j++)
            rs[j] = (rank + j + round) % P;
        MPI_Reduce_scatter_block(rs, rsb, LK, MPI_INT, summod, w);
        for (int i = 0; i < LK; i++) {
            int j = rank * LK + i, s = 0;
            for (int q = 0; q < size; q++)
                s = (s + (q + j + round) % P) % P;
            check(rsb[i] == s, "reduce_scatter_block summod");
            fold(rsb[i]);
        }

        /* Short-lived: a split of the duplicate (rotating colours), a duplicate of the
         * half, an operation, each used once and freed. */
        MPI_Comm sp, sh;
        int color = (rank + round) % 2, spsize;
        MPI_Comm_split(dup, color, rank, &sp);
        MPI_Comm_size(sp, &spsize);
        int members[64], nm = 0;
        for (int q = 0; q < size; q++)
            if ((q + round) % 2 == color)
                members[nm++] = q;
        check(nm == spsize, "short split size");
        MPI_Allreduce(pa, pr, LK, MPI_2INT, affine, sp);
        for (int i = 0; i < LK; i++) {
            affine_chain(members, nm, i, round, pw);
            check(pr[2 * i] == pw[0] && pr[2 * i + 1] == pw[1], "allreduce affine");
            fold(pr[2 * i]);
            fold(pr[2 * i + 1]);
        }
        MPI_Comm_free(&sp);
        MPI_Op sop;
        MPI_Op_create(summod_fn, 1, &sop);
        MPI_Comm_dup(half, &sh);
        MPI_Allreduce(x, y, LK, MPI_INT, sop, sh);
        for (int i = 0; i < LK; i++) {
            int s = 0;
            for (int j = 0; j < hsize; j++)
                s = (s + (half_order[j] * 1009 + i * 7 + round * 13) % P) % P;
            check(y[i] == s, "short op allreduce");
            fold(y[i]);
        }
        MPI_Op_free(&sop);
        MPI_Comm_free(&sh);

        /* In flight across the sleep: nonblocking collectives with the user operations and
         * on every sub-communicator. */
        MPI_Request rq[5];
        MPI_Status sts[5];
        int iy[LK], ipr[2 * LK], bc[LK], a2a[64], a2aout[64];
        for (int i = 0; i < LK; i++)
            bc[i] = hrank == 0 ? 900 + round + i : -1;
        for (int q = 0; q < size; q++)
            a2aout[q] = rank * 100 + q + round;
        MPI_Iallreduce(x, iy, LK, MPI_INT, summod, dup, &rq[0]);
        MPI_Ireduce(pa, ipr, LK, MPI_2INT, affine, 0, rev, &rq[1]);
        MPI_Ibcast(bc, LK, MPI_INT, 0, half, &rq[2]);
        MPI_Ialltoall(a2aout, 1, MPI_INT, a2a, 1, MPI_INT, w, &rq[3]);
        MPI_Ibarrier(rev, &rq[4]);
        usleep(20000);
        MPI_Waitall(5, rq, sts);
        MPI_Wait(&pbcast, MPI_STATUS_IGNORE);
        check(pbc == 4000 + round, "persistent bcast across the sleep");
        fold(pbc);
        for (int i = 0; i < LK; i++) {
            check(iy[i] == want[i], "iallreduce summod across the sleep");
            fold(iy[i]);
            check(bc[i] == 900 + round + i, "ibcast across the sleep");
            fold(bc[i]);
        }
        if (revrank == 0) {
            for (int i = 0; i < LK; i++) {
                affine_chain(rev_order, size, i, round, pw);
                check(ipr[2 * i] == pw[0] && ipr[2 * i + 1] == pw[1],
                      "ireduce affine across the sleep");
                fold(ipr[2 * i]);
                fold(ipr[2 * i + 1]);
            }
        }
        for (int q = 0; q < size; q++) {
            check(a2a[q] == q * 100 + rank + round, "ialltoall across the sleep");
            fold(a2a[q]);
        }
    }

    MPI_Request_free(&psum);
    MPI_Request_free(&pbcast);
    MPI_Op_free(&affine);
    MPI_Op_free(&summod);
    MPI_Comm_free(&rev);
    MPI_Comm_free(&half);
    MPI_Comm_free(&dup);

    unsigned long long accs[64];
    MPI_Gather(&acc, 1, MPI_UNSIGNED_LONG_LONG, accs, 1, MPI_UNSIGNED_LONG_LONG, 0, w);
    int total_bad;
    MPI_Allreduce(&bad, &total_bad, 1, MPI_INT, MPI_SUM, w);
    if (rank == 0) {
        acc = 14695981039346656037ULL;
        for (int r = 0; r < size; r++)
            fold((long long)accs[r]);
        printf("collectives done: %llx failed checks: %d\n", acc, total_bad);
    }
    if (bad)
        fprintf(stderr, "rank %d: %d failed, first: %s\n", rank, bad, first_bad);
    MPI_Finalize();
    return total_bad != 0;
}

int main(int argc, char **argv)
{
    int loop = argc > 1 && strcmp(argv[1], "--loop") == 0;
    int rounds = loop && argc > 2 ? atoi(argv[2]) : 0;
    if (loop && rounds < 1) {
        fprintf(stderr, "usage: %s [--loop N]   (N >= 1)\n", argv[0]);
        return 2;
    }
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (loop)
        return loop_main(rounds);

    round_of_collectives(MPI_COMM_WORLD, 0);
    int blocking = nsums;
    round_of_collectives(MPI_COMM_WORLD, 1);
    for (int i = 0; i < blocking; i++)
        check(sums[i] == sums[blocking + i], "nonblocking result equals blocking");

    /* Several nonblocking collectives in flight at once, completed by one Waitall. */
    int a = rank, s1 = 0, s2 = 0, bc = rank == 0 ? 99 : 0;
    MPI_Request rq[4];
    MPI_Status sts[4];
    MPI_Iallreduce(&a, &s1, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD, &rq[0]);
    MPI_Ibcast(&bc, 1, MPI_INT, 0, MPI_COMM_WORLD, &rq[1]);
    MPI_Iallreduce(&a, &s2, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD, &rq[2]);
    MPI_Ibarrier(MPI_COMM_WORLD, &rq[3]);
    MPI_Waitall(4, rq, sts);
    check(s1 == size * (size - 1) / 2 && s2 == size - 1 && bc == 99, "overlapping");

    long all[64] = {0};
    long mine[64];
    for (int i = 0; i < blocking; i++)
        mine[i] = sums[i];
    MPI_Reduce(mine, all, blocking, MPI_LONG, MPI_SUM, 0, MPI_COMM_WORLD);
    int bads[64] = {0};
    MPI_Gather(&bad, 1, MPI_INT, bads, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (rank == 0) {
        printf("collectives size=%d\n", size);
        for (int i = 0; i < blocking; i++)
            printf("%s %ld\n", names[i], all[i]);
        for (int r = 0; r < size; r++)
            printf("rank %d failed checks: %d\n", r, bads[r]);
    }
    if (bad)
        fprintf(stderr, "rank %d: %d failed, first: %s\n", rank, bad, first_bad);
    MPI_Finalize();
    return 0;
}
