/* An MPI job to checkpoint at random instants: a few seconds of mixed traffic — a ring of
 * Isend/Irecv + Waitall, Sendrecv, wildcard receives after Probe, persistent requests,
 * Allreduce/Bcast, a nonblocking Iallreduce overlapped with point-to-point, collectives on
 * a split communicator, groups held across iterations (translated every iteration), and
 * messages left in flight across iterations (each rank sends
 * its next iteration's message before it receives this one's). The final checksum must
 * not depend on where the checkpoints fell. Prints "ckpt_mix ready" first (rank 0).
 * Any number of ranks >= 2; argument: iterations (default 300). */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define N 64

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    int iters = argc > 1 ? atoi(argv[1]) : 300;
    if (rank == 0) {
        printf("ckpt_mix ready\n");
        fflush(stdout);
    }
    int next = (rank + 1) % size, prev = (rank + size - 1) % size;
    MPI_Comm half, wild;
    MPI_Comm_split(MPI_COMM_WORLD, rank % 2, rank, &half);
    MPI_Comm_dup(MPI_COMM_WORLD, &wild);
    MPI_Group world_group, half_group;
    MPI_Comm_group(MPI_COMM_WORLD, &world_group);
    MPI_Comm_group(half, &half_group);
    double sbuf[N], rbuf[N], acc = 0;
    long pin = 0, pout = 0;
    MPI_Request ps, pr;
    MPI_Send_init(&pout, 1, MPI_LONG, next, 7, MPI_COMM_WORLD, &ps);
    MPI_Recv_init(&pin, 1, MPI_LONG, prev, 7, MPI_COMM_WORLD, &pr);
    /* A message always in flight: iteration i's is sent during iteration i-1. */
    double ahead = rank, got_ahead;
    MPI_Request ahead_req;
    MPI_Isend(&ahead, 1, MPI_DOUBLE, next, 9, MPI_COMM_WORLD, &ahead_req);
    for (int it = 0; it < iters; it++) {
        for (int i = 0; i < N; i++)
            sbuf[i] = rank * 1000.0 + it + i * 0.001;
        MPI_Request rq[2];
        MPI_Irecv(rbuf, N, MPI_DOUBLE, prev, 1, MPI_COMM_WORLD, &rq[0]);
        MPI_Isend(sbuf, N, MPI_DOUBLE, next, 1, MPI_COMM_WORLD, &rq[1]);
        MPI_Status sts[2];
        MPI_Waitall(2, rq, sts);
        for (int i = 0; i < N; i++)
            acc += rbuf[i] * (i + 1);
        double x = acc * 1e-9 + rank, y;
        MPI_Sendrecv(&x, 1, MPI_DOUBLE, next, 2, &y, 1, MPI_DOUBLE, prev, 2, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        acc += y;
        /* Wildcards: everyone tells rank 0 something; rank 0 probes, then receives. */
        if (rank == 0) {
            for (int k = 1; k < size; k++) {
                MPI_Status st;
                MPI_Probe(MPI_ANY_SOURCE, MPI_ANY_TAG, wild, &st);
                long v;
                MPI_Recv(&v, 1, MPI_LONG, st.MPI_SOURCE, st.MPI_TAG, wild, MPI_STATUS_IGNORE);
                acc += v * (st.MPI_TAG - 99);
            }
        } else {
            long v = it * 31 + rank;
            MPI_Send(&v, 1, MPI_LONG, 0, 100 + rank, wild);
        }
        /* Persistent pair. */
        pout = it + rank * 7;
        MPI_Start(&pr);
        MPI_Start(&ps);
        MPI_Wait(&ps, MPI_STATUS_IGNORE);
        MPI_Wait(&pr, MPI_STATUS_IGNORE);
        acc += pin;
        /* The message sent ahead. */
        MPI_Recv(&got_ahead, 1, MPI_DOUBLE, prev, 9, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        MPI_Wait(&ahead_req, MPI_STATUS_IGNORE);
        acc += got_ahead;
        ahead = acc * 1e-12 + it;
        if (it + 1 < iters)
            MPI_Isend(&ahead, 1, MPI_DOUBLE, next, 9, MPI_COMM_WORLD, &ahead_req);
        /* Collectives, blocking and not, on world and on the split communicator. */
        double s, h;
        MPI_Request ir;
        double mine = acc * 1e-6;
        MPI_Iallreduce(&mine, &s, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD, &ir);
        MPI_Allreduce(&mine, &h, 1, MPI_DOUBLE, MPI_MAX, half);
        MPI_Wait(&ir, MPI_STATUS_IGNORE);
        int root = it % size;
        double b = rank == root ? s + h : 0;
        MPI_Bcast(&b, 1, MPI_DOUBLE, root, MPI_COMM_WORLD);
        acc = acc * 0.5 + b * 1e-3;
        int first = 0, in_world = -1;
        MPI_Group_translate_ranks(half_group, 1, &first, world_group, &in_world);
        acc += in_world * 1e-3;
        usleep(3000);
    }
    MPI_Request_free(&ps);
    MPI_Request_free(&pr);
    MPI_Group_free(&half_group);
    MPI_Group_free(&world_group);
    MPI_Comm_free(&half);
    MPI_Comm_free(&wild);
    double total;
    MPI_Reduce(&acc, &total, 1, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
    if (rank == 0)
        printf("ckpt_mix done: %a\n", total);
    MPI_Finalize();
    return 0;
}
