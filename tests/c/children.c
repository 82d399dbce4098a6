/* children: a parent with two child processes connected by pipes (issue 11, item 5).
 *
 * Child 1 reads numbers from the parent on one pipe and answers each with its running
 * sum on another; child 2 blocks in a read on a third pipe until the parent, at the end,
 * writes to it (checkpoints find it blocked, for as long as the program runs), then
 * exits with a code made of what it read. Each round the parent sends a number, reads
 * the sum, and sleeps `ms` (checkpoints land there). At the end: both children waited
 * for, their exit codes printed, and a third child that exited long before (a zombie
 * until then) waited for too.
 * Built with -DMPI_RANKS (tests/mpi/children_mpi.c) every rank has its children, each
 * round's sums are added up over the ranks (MPI_Allreduce), rank 0 alone prints.
 * stdout: `children ready`, `round N: sum S`, `child 1 …`, `child 2 …`, `zombie …`.
 */
#include "common.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef MPI_RANKS
#include <mpi.h>
static int rank;
#define SAY(...) (rank == 0 ? printf(__VA_ARGS__) : 0)
#else
#define SAY(...) printf(__VA_ARGS__)
#endif

int main(int argc, char **argv)
{
#ifdef MPI_RANKS
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
#endif
    start_program();
    long rounds = arg_long(argc, argv, 1, 20, 1, 100000);
    long ms = arg_long(argc, argv, 2, 200, 0, 100000);
    int to1[2], from1[2], to2[2];
    if (pipe(to1) || pipe(from1) || pipe(to2)) {
        perror("pipe");
        return 2;
    }
    pid_t zombie = fork();
    if (zombie == 0)
        _exit(42);
    pid_t c1 = fork();
    if (c1 == 0) {
        close(to1[1]);
        close(from1[0]);
        close(to2[0]);
        close(to2[1]);
        long sum = 0, v;
        while (fd_read_all(to1[0], &v, sizeof v) == 0) {
            sum += v * v;
            fd_write_all(from1[1], &sum, sizeof sum);
        }
        _exit(sum % 100 == 0 ? 10 : 11);
    }
    pid_t c2 = fork();
    if (c2 == 0) {
        close(to1[0]);
        close(to1[1]);
        close(from1[0]);
        close(from1[1]);
        close(to2[1]);
        char buf[16] = { 0 };
        int n = 0;
        ssize_t r;
        while ((r = read(to2[0], buf + n, sizeof buf - 1 - (size_t)n)) > 0 || (r < 0 && errno == EINTR))
            if (r > 0)
                n += (int)r;
        _exit(n == 2 && buf[0] == 'g' && buf[1] == 'o' ? 20 : 21);
    }
    close(to1[0]);
    close(from1[1]);
    close(to2[0]);
    SAY("children ready\n");
    for (long r = 1; r <= rounds; r++) {
        fd_write_all(to1[1], &r, sizeof r);
        long sum = 0;
        if (fd_read_all(from1[0], &sum, sizeof sum) != 0) {
            printf("round %ld: child 1 is gone\n", r);
            return 1;
        }
#ifdef MPI_RANKS
        long mine = sum;
        MPI_Allreduce(&mine, &sum, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
#endif
        SAY("round %ld: sum %ld\n", r, sum);
        sleep_ms(ms);
    }
    fd_write_all(to2[1], "go", 2);
    close(to2[1]);
    close(to1[1]);
    int st1 = 0, st2 = 0, stz = 0;
    pid_t w1 = waitpid(c1, &st1, 0), w2 = waitpid(c2, &st2, 0), wz = waitpid(zombie, &stz, 0);
    long bad = (w1 != c1) + (w2 != c2) + (wz != zombie);
#ifdef MPI_RANKS
    long mine = bad;
    MPI_Allreduce(&mine, &bad, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
#endif
    SAY("child 1 %s exit %d\n", w1 == c1 ? "waited" : "LOST", WIFEXITED(st1) ? WEXITSTATUS(st1) : -1);
    SAY("child 2 %s exit %d\n", w2 == c2 ? "waited" : "LOST", WIFEXITED(st2) ? WEXITSTATUS(st2) : -1);
    SAY("zombie %s exit %d\n", wz == zombie ? "waited" : "LOST", WIFEXITED(stz) ? WEXITSTATUS(stz) : -1);
    SAY("children lost over all ranks: %ld\n", bad);
#ifdef MPI_RANKS
    MPI_Finalize();
#endif
    return 0;
}
