/* pair_child: a Unix socket pair between a parent and its child (issue 11, items 2 and 5).
 *
 * Each round the parent sends two numbers, sleeps `ms` (checkpoints land there, with the
 * numbers unread or the answers unread: bytes in flight each way), then reads the
 * child's two answers (n * 3 + 1). At the end it shuts its end for writing; the child
 * reads end-of-file and exits with a code made of its count.
 * stdout: `pair ready`, `round N: A B`, `child exit S`.
 */
#include "common.h"

#include <sys/socket.h>
#include <sys/wait.h>

int main(int argc, char **argv)
{
    start_program();
    long rounds = arg_long(argc, argv, 1, 20, 1, 100000);
    long ms = arg_long(argc, argv, 2, 200, 0, 100000);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv)) {
        perror("socketpair");
        return 2;
    }
    pid_t c = fork();
    if (c == 0) {
        close(sv[0]);
        long n, count = 0;
        while (fd_read_all(sv[1], &n, sizeof n) == 0) {
            long a = n * 3 + 1;
            fd_write_all(sv[1], &a, sizeof a);
            count++;
        }
        _exit((int)(count % 200));
    }
    close(sv[1]);
    printf("pair ready\n");
    for (long r = 1; r <= rounds; r++) {
        long q[2] = { r, r + 1000 }, a[2];
        fd_write_all(sv[0], q, sizeof q);
        sleep_ms(ms);
        if (fd_read_all(sv[0], a, sizeof a) != 0) {
            printf("round %ld: the child is gone\n", r);
            return 1;
        }
        printf("round %ld: %ld %ld\n", r, a[0], a[1]);
    }
    shutdown(sv[0], SHUT_WR);
    int st = 0;
    waitpid(c, &st, 0);
    printf("child exit %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    return 0;
}
