/* singleton [steps]: an MPI program started without a launcher (MPICH's singleton
 * MPI_Init: a world of one). Under mana_launch such a process starts as no MPI rank — its
 * checkpoint thread keeps a descriptor table of its own — until its first MPI call loads
 * the lower half; the checkpoint thread then gives way to one sharing the application's
 * table (docs/process-state.md, "Runtime cost"). Prints `singleton ready` right after
 * MPI_Init, then per step an Allreduce on MPI_COMM_WORLD and a Bcast of a buffer from a
 * duplicated communicator, `step N sum S hash H`, every 20 ms; `final H`. */
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    setvbuf(stdout, NULL, _IOLBF, 0);
    int size;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (size != 1) {
        fprintf(stderr, "singleton: run without a launcher (world of %d)\n", size);
        return 1;
    }
    long steps = argc > 1 ? atol(argv[1]) : 200;
    MPI_Comm dup;
    MPI_Comm_dup(MPI_COMM_WORLD, &dup);
    printf("singleton ready\n");
    double sum = 0;
    uint64_t h = 1469598103934665603ull;
    for (long i = 0; i < steps; i++) {
        double x = (double)i * 0.25, y = 0;
        MPI_Allreduce(&x, &y, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        sum += y;
        uint64_t buf[8];
        for (int k = 0; k < 8; k++)
            buf[k] = h + (uint64_t)(i * 8 + k);
        MPI_Bcast(buf, 8, MPI_UINT64_T, 0, dup);
        for (int k = 0; k < 8; k++)
            h = (h ^ buf[k]) * 1099511628211ull;
        printf("step %ld sum %.2f hash %016llx\n", i, sum, (unsigned long long)h);
        struct timespec t = { 0, 20 * 1000 * 1000 };
        while (nanosleep(&t, &t) != 0)
            ;
    }
    printf("final %016llx\n", (unsigned long long)h);
    MPI_Comm_free(&dup);
    MPI_Finalize();
    return 0;
}
