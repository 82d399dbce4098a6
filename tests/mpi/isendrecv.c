/* MPI-4's nonblocking send-receive answered by ordinary point-to-point calls, across
 * checkpoints the job survives. 2 or more ranks. Built with mpicc.mpich.
 *
 * `isendrecv --loop N`: N rounds; in each, every rank MPI_Isendrecv's around the ring (send
 * to next, receive from prev) and completes it with MPI_Wait, MPI_Test or MPI_Waitall;
 * rank 0 MPI_Isendrecv's to rank 1, which answers with MPI_Recv + MPI_Send (and the other
 * way round with MPI_Isendrecv_replace answered by MPI_Sendrecv); then rank 0 posts an
 * MPI_Isendrecv with a large send (256 KiB: rendezvous) to rank 1 and sleeps 10 ms outside
 * MPI before waiting for it, while rank 1 sleeps 10 ms before receiving that message and
 * sending the one rank 0's receive half waits for (a checkpoint then finds the request
 * pending with neither half done); the others sleep 10 ms. Every received value is checked
 * and folded into a checksum; rank 0 prints "isendrecv ready" first and
 * "isendrecv done: <checksum> bad=<n>" last. */
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uint64_t sum = 1469598103934665603ULL;
static int bad;

static void fold(long long v)
{
    sum = (sum ^ (uint64_t)v) * 1099511628211ULL;
}

static int value(int from, int round, int i)
{
    return from * 100003 + round * 31 + i;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    int rounds = argc > 2 && strcmp(argv[1], "--loop") == 0 ? atoi(argv[2]) : 0;
    if (size < 2 || rounds < 1) {
        if (rank == 0)
            fprintf(stderr, "usage: isendrecv --loop N (2 or more ranks)\n");
        MPI_Finalize();
        return 2;
    }
    int next = (rank + 1) % size, prev = (rank + size - 1) % size;
    enum { N = 32 };
    int out[N], in[N];
    MPI_Comm w = MPI_COMM_WORLD;
    if (rank == 0) {
        printf("isendrecv ready\n");
        fflush(stdout);
    }
    for (int round = 0; round < rounds; round++) {
        MPI_Request r[2];
        MPI_Status st[2];
        int flag = 0;
        /* Around the ring, three ways of completing. */
        for (int i = 0; i < N; i++)
            out[i] = value(rank, round, i);
        MPI_Isendrecv(out, N, MPI_INT, next, 1, in, N, MPI_INT, prev, 1, w, &r[0]);
        if (round % 3 == 0)
            MPI_Wait(&r[0], &st[0]);
        else if (round % 3 == 1)
            while (!flag)
                MPI_Test(&r[0], &flag, &st[0]);
        else
            MPI_Waitall(1, r, st);
        for (int i = 0; i < N; i++) {
            bad += in[i] != value(prev, round, i);
            fold(in[i]);
        }
        /* Rank 0 and rank 1: a send-receive answered by a receive and a send, and one in
         * place answered by MPI_Sendrecv. */
        if (rank == 0) {
            int a = value(0, round, 7), b = -1;
            MPI_Isendrecv(&a, 1, MPI_INT, 1, 2, &b, 1, MPI_INT, 1, 3, w, &r[0]);
            MPI_Wait(&r[0], &st[0]);
            bad += b != value(1, round, 8);
            fold(b);
            int c = value(0, round, 9);
            MPI_Isendrecv_replace(&c, 1, MPI_INT, 1, 4, 1, 5, w, &r[1]);
            MPI_Wait(&r[1], &st[1]);
            bad += c != value(1, round, 10);
            fold(c);
        } else if (rank == 1) {
            int a = -1, b = value(1, round, 8), c = value(1, round, 10), d = -1;
            MPI_Recv(&a, 1, MPI_INT, 0, 2, w, MPI_STATUS_IGNORE);
            MPI_Send(&b, 1, MPI_INT, 0, 3, w);
            MPI_Sendrecv(&c, 1, MPI_INT, 0, 5, &d, 1, MPI_INT, 0, 4, w, MPI_STATUS_IGNORE);
            bad += a != value(0, round, 7) || d != value(0, round, 9);
            fold(a);
            fold(d);
        }
        /* Pending across the sleep. */
        enum { BIG = 65536 };
        static int big[BIG];
        if (rank == 0) {
            int b = -1;
            for (int i = 0; i < BIG; i++)
                big[i] = value(0, round, i);
            MPI_Isendrecv(big, BIG, MPI_INT, 1, 6, &b, 1, MPI_INT, 1, 7, w, &r[0]);
            usleep(10000);
            MPI_Wait(&r[0], &st[0]);
            bad += b != value(1, round, 11);
            fold(b);
        } else if (rank == 1) {
            int b = value(1, round, 11);
            usleep(10000);
            MPI_Recv(big, BIG, MPI_INT, 0, 6, w, MPI_STATUS_IGNORE);
            for (int i = 0; i < BIG; i += 997) {
                bad += big[i] != value(0, round, i);
                fold(big[i]);
            }
            MPI_Send(&b, 1, MPI_INT, 0, 7, w);
        } else {
            usleep(10000);
        }
    }
    long long mine[2] = {(long long)(sum & 0x7fffffffffffffffULL), bad}, all[2];
    MPI_Reduce(mine, all, 2, MPI_LONG_LONG, MPI_SUM, 0, w);
    if (rank == 0)
        printf("isendrecv done: %llx bad=%lld\n", (unsigned long long)all[0], all[1]);
    MPI_Finalize();
    return 0;
}
