/* popen_sort: popen("sort") in a loop (issue 11, item 5).
 *
 * Each round writes `lines` lines in a scrambled order to `sort` through popen, waits
 * `ms` milliseconds with the lines unread or half read by sort (checkpoints land there:
 * the shell popen starts and sort are the program's descendants), then pclose: sort
 * prints them in order to the program's stdout, and its exit status is printed. Then a
 * system("exit 3") whose status is printed too.
 * Built with -DMPI_RANKS (tests/mpi/popen_mpi.c) every rank does the same (sort's output
 * of ranks but 0 to /dev/null), the statuses are added up over the ranks, rank 0 prints.
 * stdout: `popen ready`, sorted lines `rR line NN`, `round R: sort status S, system S`.
 */
#include "common.h"

#include <sys/wait.h>
#ifdef MPI_RANKS
#include <mpi.h>
static int rank;
#define SAY(...) (rank == 0 ? printf(__VA_ARGS__) : 0)
#else
static const int rank = 0;
#define SAY(...) printf(__VA_ARGS__)
#endif

int main(int argc, char **argv)
{
#ifdef MPI_RANKS
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
#endif
    start_program();
    long rounds = arg_long(argc, argv, 1, 10, 1, 100000);
    long ms = arg_long(argc, argv, 2, 200, 0, 100000);
    long lines = arg_long(argc, argv, 3, 20, 1, 1000);
    SAY("popen ready\n");
    for (long r = 1; r <= rounds; r++) {
        fflush(stdout);
        FILE *p = popen(rank == 0 ? "sort" : "sort > /dev/null", "w");
        if (!p) {
            perror("popen");
            return 2;
        }
        for (long i = 0; i < lines; i++)
            fprintf(p, "r%ld line %03ld\n", r, (i * 7) % lines);
        fflush(p);
        sleep_ms(ms);
        int st = pclose(p);
        int sys = system("exit 3");
        long codes[2] = { WIFEXITED(st) ? WEXITSTATUS(st) : 100, WIFEXITED(sys) ? WEXITSTATUS(sys) : 100 };
#ifdef MPI_RANKS
        long mine[2] = { codes[0], codes[1] };
        MPI_Allreduce(mine, codes, 2, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
#endif
        SAY("round %ld: sort status %ld, system %ld\n", r, codes[0], codes[1]);
    }
#ifdef MPI_RANKS
    MPI_Finalize();
#endif
    return 0;
}
