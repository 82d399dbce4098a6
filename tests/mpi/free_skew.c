/* MPI_Comm_free is local: ranks may free the same communicator at very different times.
 * 2 ranks. Both duplicate MPI_COMM_WORLD twice (x, y) and print "free_skew ready" (rank 0);
 * rank 1 frees x at once and waits in a receive from rank 0; rank 0 computes for about a
 * second outside MPI, then frees x, uses y, and sends to rank 1. A checkpoint requested
 * during that second must not catch x alive on rank 0 and freed on rank 1 (a restart would
 * then re-create it on rank 0 alone and wait forever): it completes once rank 0 has freed it.
 * Prints "free_skew done: <sum>". */
#include <mpi.h>
#include <stdio.h>
#include <time.h>

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int r, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (size != 2) {
        if (r == 0)
            fprintf(stderr, "usage: free_skew (2 ranks)\n");
        MPI_Finalize();
        return 2;
    }
    MPI_Comm x, y;
    MPI_Comm_dup(MPI_COMM_WORLD, &x);
    MPI_Comm_dup(MPI_COMM_WORLD, &y);
    MPI_Barrier(MPI_COMM_WORLD);
    long v = 0, sum = 0;
    if (r == 0) {
        printf("free_skew ready\n");
        fflush(stdout);
        struct timespec t0, t;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        do { /* a second of computation, outside MPI */
            for (int i = 0; i < 100000; i++)
                v = v * 6364136223846793005L + 1442695040888963407L;
            clock_gettime(CLOCK_MONOTONIC, &t);
        } while ((t.tv_sec - t0.tv_sec) * 1000000000L + (t.tv_nsec - t0.tv_nsec) < 1000000000L);
        MPI_Comm_free(&x);
        v = 42;
        MPI_Send(&v, 1, MPI_LONG, 1, 7, y);
    } else {
        MPI_Comm_free(&x);
        MPI_Recv(&v, 1, MPI_LONG, 0, 7, y, MPI_STATUS_IGNORE);
    }
    MPI_Allreduce(&v, &sum, 1, MPI_LONG, MPI_SUM, y);
    MPI_Comm_free(&y);
    if (r == 0)
        printf("free_skew done: %ld\n", sum);
    MPI_Finalize();
    return 0;
}
