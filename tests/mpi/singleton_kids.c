/* singleton_kids: an MPI program started without a launcher (a world of one) with a child
 * made before its first MPI call (issue 11, item 5). Under mana_launch its checkpoint
 * thread starts with a descriptor table of its own and, at MPI_Init, gives way to one
 * sharing the program's; a checkpoint before that made the socket the child joins in the
 * old thread's table. The parent forks a child answering numbers over two pipes (n * 2 +
 * 1), exchanges `pre` rounds, calls MPI_Init, then `post` rounds with an Allreduce each;
 * at the end it closes its pipe and waits for the child.
 * stdout: `kids ready`, `round N: A`, `mpi ready`, `child exit S`.
 */
#include "../c/common.h"

#include <mpi.h>
#include <sys/wait.h>

int main(int argc, char **argv)
{
    start_program();
    long pre = arg_long(argc, argv, 1, 10, 0, 100000);
    long post = arg_long(argc, argv, 2, 10, 0, 100000);
    long ms = arg_long(argc, argv, 3, 150, 0, 100000);
    int down[2], up[2];
    if (pipe(down) || pipe(up)) {
        perror("pipe");
        return 2;
    }
    fflush(stdout);
    pid_t c = fork();
    if (c == 0) {
        close(down[1]);
        close(up[0]);
        long n, count = 0;
        while (fd_read_all(down[0], &n, sizeof n) == 0) {
            long a = n * 2 + 1;
            fd_write_all(up[1], &a, sizeof a);
            count++;
        }
        _exit((int)(count % 200));
    }
    close(down[0]);
    close(up[1]);
    printf("kids ready\n");
    for (long r = 1; r <= pre + post; r++) {
        if (r == pre + 1) {
            MPI_Init(&argc, &argv);
            printf("mpi ready\n");
        }
        long a;
        fd_write_all(down[1], &r, sizeof r);
        sleep_ms(ms);
        if (fd_read_all(up[0], &a, sizeof a) != 0) {
            printf("round %ld: the child is gone\n", r);
            return 1;
        }
        if (r > pre) {
            long sum = 0;
            MPI_Allreduce(&a, &sum, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
            a = sum;
        }
        printf("round %ld: %ld\n", r, a);
    }
    close(down[1]);
    int st = 0;
    waitpid(c, &st, 0);
    printf("child exit %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    MPI_Finalize();
    return 0;
}
