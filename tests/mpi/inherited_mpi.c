/* An MPI rank using descriptors it inherited from the shell that started it (issue 11,
 * item 1): `mpiexec -n N bash -c 'exec prog 40> >(cat > out.$PMI_RANK) 41< <(printf data)'`
 * (numbers above those mpiexec.mpich itself leaks into ranks, its PMI connection among them).
 * Every step: an Allreduce, then the line `line N` written to descriptor 7 (a failed
 * write aborts the job). At the end each rank reads descriptor 41 to its end; rank 0 prints
 * `inherited_mpi done: sum=S read=B` (B: bytes read by all ranks) after `inherited_mpi
 * ready` at the start. Arguments: steps (default 300), milliseconds per step (default 10).
 */
#include <errno.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    long steps = argc > 1 ? atol(argv[1]) : 300;
    long ms = argc > 2 ? atol(argv[2]) : 10;
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (rank == 0)
        printf("inherited_mpi ready\n");
    long sum = 0;
    for (long i = 0; i < steps; i++) {
        long mine = i * (rank + 1), all = 0;
        MPI_Allreduce(&mine, &all, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
        sum += all;
        char line[64];
        int n = snprintf(line, sizeof line, "line %ld\n", i);
        ssize_t w;
        while ((w = write(40, line, n)) < 0 && errno == EINTR)
            ;
        if (w != n) {
            fprintf(stderr, "rank %d: write to descriptor 40 at step %ld: %s\n", rank, i,
                    w < 0 ? strerror(errno) : "short");
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
        while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
            ;
    }
    long got = 0;
    char buf[4096];
    for (;;) {
        ssize_t r = read(41, buf, sizeof buf);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += r;
    }
    long total = 0;
    MPI_Reduce(&got, &total, 1, MPI_LONG, MPI_SUM, 0, MPI_COMM_WORLD);
    if (rank == 0)
        printf("inherited_mpi done: sum=%ld read=%ld\n", sum, total);
    MPI_Finalize();
    return 0;
}
