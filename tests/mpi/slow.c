/* A few seconds of MPI work (allreduce, then a short sleep, 300 times) so that a test can
 * act on the job while it runs. Prints the result from rank 0. */
#include <mpi.h>
#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (rank == 0) {
        printf("slow ready\n");
        fflush(stdout);
    }
    long acc = 0;
    for (int i = 0; i < 300; i++) {
        long v = i * (rank + 1), s;
        MPI_Allreduce(&v, &s, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
        acc = acc * 3 + s;
        usleep(10000);
    }
    if (rank == 0)
        printf("slow done %ld\n", acc);
    MPI_Finalize();
    return 0;
}
