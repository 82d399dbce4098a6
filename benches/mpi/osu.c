/* OSU-style micro-benchmarks between ranks 0 and 1: ping-pong latency (8 B .. 1 MiB),
 * windowed bandwidth (64 messages in flight), and 8 B MPI_Allreduce latency over all
 * ranks. Prints `latency SIZE USEC`, `bandwidth SIZE MBPS`, `allreduce 8 USEC` lines. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WINDOW 64

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    size_t max = 1 << 20;
    char *buf = malloc(max * WINDOW);
    memset(buf, rank, max * WINDOW);
    MPI_Request req[WINDOW];
    for (size_t n = 8; n <= max; n = n == 262144 ? max : n * 8) {
        int iters = n <= 4096 ? 20000 : n <= 65536 ? 2000 : 200, warm = iters / 10;
        double t0 = 0;
        for (int i = 0; i < iters + warm; i++) {
            if (i == warm) {
                MPI_Barrier(MPI_COMM_WORLD);
                t0 = MPI_Wtime();
            }
            if (rank == 0) {
                MPI_Send(buf, (int)n, MPI_CHAR, 1, 1, MPI_COMM_WORLD);
                MPI_Recv(buf, (int)n, MPI_CHAR, 1, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            } else if (rank == 1) {
                MPI_Recv(buf, (int)n, MPI_CHAR, 0, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
                MPI_Send(buf, (int)n, MPI_CHAR, 0, 1, MPI_COMM_WORLD);
            }
        }
        double lat = (MPI_Wtime() - t0) / iters / 2 * 1e6;
        if (rank == 0)
            printf("latency %zu %.3f\n", n, lat);
    }
    for (size_t n = 8; n <= max; n = n == 262144 ? max : n * 8) {
        int iters = n <= 65536 ? 200 : 40;
        double t0 = 0;
        for (int i = 0; i < iters + 5; i++) {
            if (i == 5) {
                MPI_Barrier(MPI_COMM_WORLD);
                t0 = MPI_Wtime();
            }
            if (rank == 0) {
                for (int w = 0; w < WINDOW; w++)
                    MPI_Isend(buf + w * n, (int)n, MPI_CHAR, 1, 2, MPI_COMM_WORLD, &req[w]);
                MPI_Waitall(WINDOW, req, MPI_STATUSES_IGNORE);
                MPI_Recv(buf, 1, MPI_CHAR, 1, 3, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            } else if (rank == 1) {
                for (int w = 0; w < WINDOW; w++)
                    MPI_Irecv(buf + w * n, (int)n, MPI_CHAR, 0, 2, MPI_COMM_WORLD, &req[w]);
                MPI_Waitall(WINDOW, req, MPI_STATUSES_IGNORE);
                MPI_Send(buf, 1, MPI_CHAR, 0, 3, MPI_COMM_WORLD);
            }
        }
        double mbps = (double)n * WINDOW * iters / (MPI_Wtime() - t0) / 1e6;
        if (rank == 0)
            printf("bandwidth %zu %.1f\n", n, mbps);
    }
    {
        long in = rank, out;
        int iters = 20000;
        double t0 = 0;
        for (int i = 0; i < iters + 1000; i++) {
            if (i == 1000) {
                MPI_Barrier(MPI_COMM_WORLD);
                t0 = MPI_Wtime();
            }
            MPI_Allreduce(&in, &out, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
        }
        double lat = (MPI_Wtime() - t0) / iters * 1e6;
        if (rank == 0)
            printf("allreduce 8 %.3f\n", lat);
    }
    free(buf);
    MPI_Finalize();
    return 0;
}
