/* Every blocking collective (Barrier, Bcast, Gather(v), Scatter(v), Allgather(v),
 * Alltoall(v,w), Reduce, Allreduce, Reduce_scatter(_block), Scan, Exscan) and its
 * nonblocking version (Ibarrier ... Iexscan, completed with Wait or Waitall), with
 * MPI_IN_PLACE where the standard allows it. Each rank checks its results against the
 * values computed locally; rank 0 prints per-collective checksums and failure counts.
 * Deterministic; 2 or more ranks. Built with mpicc.mpich. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* The blocking (nb == 0) or nonblocking (nb == 1) round of every collective. */
static void round_of_collectives(MPI_Comm w, int nb)
{
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

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);

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
