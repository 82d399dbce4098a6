/* tcp_child: a loopback TCP connection between a parent and its child (issue 11, items 2
 * and 5). The parent listens on 127.0.0.1 (a port the kernel picks), forks, the child
 * connects, the parent accepts and closes its listener (the child closed its copy).
 *
 * Each round the parent sends two numbers, sleeps `ms` (checkpoints land there, with the
 * numbers unread or the answers unread: bytes in flight each way), then reads the
 * child's two answers (n * 3 + 1). At the end it shuts its end for writing; the child
 * reads end-of-file and exits with a code made of its count.
 * stdout: `tcp ready`, `round N: A B`, `child exit S`.
 */
#include "common.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/wait.h>

int main(int argc, char **argv)
{
    start_program();
    long rounds = arg_long(argc, argv, 1, 20, 1, 100000);
    long ms = arg_long(argc, argv, 2, 200, 0, 100000);
    int sv[2];
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t alen = sizeof a;
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 1) ||
        getsockname(l, (struct sockaddr *)&a, &alen)) {
        perror("listen");
        return 2;
    }
    pid_t c = fork();
    if (c == 0) {
        close(l);
        sv[1] = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(sv[1], (struct sockaddr *)&a, sizeof a)) {
            perror("connect");
            _exit(99);
        }
        int one = 1;
        setsockopt(sv[1], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        long n, count = 0;
        while (fd_read_all(sv[1], &n, sizeof n) == 0) {
            long a = n * 3 + 1;
            fd_write_all(sv[1], &a, sizeof a);
            count++;
        }
        _exit((int)(count % 200));
    }
    sv[0] = accept(l, NULL, NULL);
    close(l);
    if (sv[0] < 0) {
        perror("accept");
        return 2;
    }
    int one = 1;
    setsockopt(sv[0], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    printf("tcp ready\n");
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
