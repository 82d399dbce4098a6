/* full_window: a TCP connection between a parent and its child whose receive window is
 * full at a checkpoint (issue 11, items 2 and 5). The parent connects to its child's
 * listener and writes 8 MiB; the child reads nothing for `ms` milliseconds, so the
 * parent's send queue holds bytes no image could carry: a checkpoint then fails naming
 * the descriptor. Once the child has read everything (and said how much over a pipe), a
 * checkpoint succeeds.
 * stdout: `window full`, `child read N`, `drained`, `done`.
 */
#include "common.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>

#define TOTAL (8L << 20)

int main(int argc, char **argv)
{
    start_program();
    long ms = arg_long(argc, argv, 1, 3000, 0, 100000);
    long after = arg_long(argc, argv, 2, 2000, 0, 100000);
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t alen = sizeof a;
    int report[2];
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 1) ||
        getsockname(l, (struct sockaddr *)&a, &alen) || pipe(report)) {
        perror("listen");
        return 2;
    }
    pid_t c = fork();
    if (c == 0) {
        int s = accept(l, NULL, NULL);
        close(l);
        sleep_ms(ms);
        static char buf[1 << 16];
        long total = 0;
        ssize_t n;
        while ((n = read(s, buf, sizeof buf)) > 0)
            total += n;
        fd_write_all(report[1], &total, sizeof total);
        _exit(0);
    }
    close(l);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(s, (struct sockaddr *)&a, sizeof a)) {
        perror("connect");
        return 2;
    }
    static char big[1 << 16];
    long sent = 0;
    fcntl(s, F_SETFL, O_NONBLOCK);
    for (;;) {
        ssize_t w = write(s, big, sizeof big);
        if (w <= 0)
            break;
        sent += w;
    }
    fcntl(s, F_SETFL, 0);
    printf("window full\n");
    while (sent < TOTAL) {
        long chunk = TOTAL - sent < (long)sizeof big ? TOTAL - sent : (long)sizeof big;
        fd_write_all(s, big, (size_t)chunk);
        sent += chunk;
    }
    close(s);
    long total = 0;
    if (fd_read_all(report[0], &total, sizeof total) != 0)
        total = -1;
    printf("child read %ld\n", total);
    waitpid(c, NULL, 0);
    printf("drained\n");
    sleep_ms(after);
    printf("done\n");
    return 0;
}
