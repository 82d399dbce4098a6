/* sock_stdio: a child whose stdin and stdout are a Unix socket (issue 11, items 2 and 5),
 * as inetd-style helpers and programs started with a socket pair for their standard
 * streams have. The parent makes a socket pair, forks and execs itself as the child with
 * the other end as descriptors 0 and 1; each round the parent sends a number, waits `ms`
 * (checkpoints land with the number or the answer in flight) and reads the child's answer
 * (n * 5 + 2). At the end it shuts its side; the child reads end-of-file and exits with a
 * code made of its count.
 * stdout (the parent's): `stdio ready`, `round N: A`, `child exit S`.
 */
#include "common.h"

#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "child") == 0) {
        long n, count = 0;
        while (fd_read_all(0, &n, sizeof n) == 0) {
            long a = n * 5 + 2;
            fd_write_all(1, &a, sizeof a);
            count++;
        }
        return (int)(count % 200);
    }
    start_program();
    long rounds = arg_long(argc, argv, 1, 20, 1, 100000);
    long ms = arg_long(argc, argv, 2, 200, 0, 100000);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv)) {
        perror("socketpair");
        return 2;
    }
    fflush(stdout);
    pid_t c = fork();
    if (c == 0) {
        dup2(sv[1], 0);
        dup2(sv[1], 1);
        close(sv[0]);
        close(sv[1]);
        execl("/proc/self/exe", argv[0], "child", (char *)NULL);
        _exit(99);
    }
    close(sv[1]);
    printf("stdio ready\n");
    for (long r = 1; r <= rounds; r++) {
        long q = r, a;
        fd_write_all(sv[0], &q, sizeof q);
        sleep_ms(ms);
        if (fd_read_all(sv[0], &a, sizeof a) != 0) {
            printf("round %ld: the child is gone\n", r);
            return 1;
        }
        printf("round %ld: %ld\n", r, a);
    }
    shutdown(sv[0], SHUT_WR);
    int st = 0;
    waitpid(c, &st, 0);
    printf("child exit %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    return 0;
}
