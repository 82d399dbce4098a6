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

static int read_all(int fd, void *p, size_t n)
{
    char *c = p;
    while (n > 0) {
        ssize_t r = read(fd, c, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        c += r;
        n -= (size_t)r;
    }
    return 0;
}

static void write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            perror("write");
            exit(3);
        }
        c += w;
        n -= (size_t)w;
    }
}

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
        while (read_all(sv[1], &n, sizeof n) == 0) {
            long a = n * 3 + 1;
            write_all(sv[1], &a, sizeof a);
            count++;
        }
        _exit((int)(count % 200));
    }
    close(sv[1]);
    printf("pair ready\n");
    for (long r = 1; r <= rounds; r++) {
        long q[2] = { r, r + 1000 }, a[2];
        write_all(sv[0], q, sizeof q);
        sleep_ms(ms);
        if (read_all(sv[0], a, sizeof a) != 0) {
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
