/* The MPI checkpoint benchmark's job: every rank fills MIB MiB with incompressible data,
 * then exchanges with its neighbours and reduces in a loop (messages in flight) until the
 * file named by STOP exists. Prints "ready" (rank 0) once the memory is filled, and
 * "alive N" lines (rank 0) every 200 iterations, so a restart can be seen resuming. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    long mib = argc > 1 ? atol(argv[1]) : 64;
    const char *stop = argc > 2 ? argv[2] : "stop";
    size_t n = (size_t)mib << 17; /* 8-byte words */
    unsigned long long *mem = malloc(n * sizeof *mem), x = 0x9e3779b97f4a7c15ull ^ (unsigned long long)rank;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        mem[i] = x;
    }
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) {
        printf("ready\n");
        fflush(stdout);
    }
    int next = (rank + 1) % size, prev = (rank + size - 1) % size;
    for (long it = 0;; it++) {
        unsigned long long out = mem[it % n], in;
        MPI_Sendrecv(&out, 1, MPI_UNSIGNED_LONG_LONG, next, 0, &in, 1, MPI_UNSIGNED_LONG_LONG, prev, 0,
                     MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        mem[(it * 7) % n] ^= in;
        int done = rank == 0 && access(stop, F_OK) == 0, any;
        MPI_Allreduce(&done, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
        if (any)
            break;
        if (rank == 0 && it % 200 == 0) {
            printf("alive %ld\n", it);
            fflush(stdout);
        }
        usleep(1000);
    }
    if (rank == 0)
        printf("stopped\n");
    MPI_Finalize();
    return 0;
}
