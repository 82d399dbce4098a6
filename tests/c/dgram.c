/* dgram PATH [steps]: datagram sockets across checkpoints (issue 11, item 2).
 *
 * - UDP inside the process: a socket bound to 127.0.0.1 (a port the kernel picks) and a
 *   socket connected to it. Each step the client sends "udp N"; the server waits up to
 *   200 ms for it and the client sends again if it did not come (a datagram queued at a
 *   checkpoint is not kept: like any UDP program, this one sends again), ignoring stale
 *   ones;
 * - an unbound Unix datagram socket connected to PATH (as libc's syslog keeps one to
 *   /dev/log): each step sends "log N" to the test's server there.
 * stdout: `dgram ready`, `step N` per step, `final N`.
 */
#include "common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

int main(int argc, char **argv)
{
    start_program();
    if (argc < 2) {
        fprintf(stderr, "usage: dgram PATH [steps]\n");
        return 2;
    }
    long steps = arg_long(argc, argv, 2, 150, 1, 1000000);
    int srv = socket(AF_INET, SOCK_DGRAM, 0), cli = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = { 0 };
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    if (bind(srv, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(srv, (struct sockaddr *)&a, &alen) != 0 ||
        connect(cli, (struct sockaddr *)&a, sizeof a) != 0) {
        perror("dgram: udp");
        return 1;
    }
    int log = socket(AF_UNIX, SOCK_DGRAM, 0);
    struct sockaddr_un u = { 0 };
    u.sun_family = AF_UNIX;
    strncpy(u.sun_path, argv[1], sizeof u.sun_path - 1);
    if (connect(log, (struct sockaddr *)&u, sizeof u) != 0) {
        perror("dgram: connect to the log");
        return 1;
    }
    printf("dgram ready\n");
    for (long i = 0; i < steps; i++) {
        char want[32], got[32];
        int n = snprintf(want, sizeof want, "udp %ld", i);
        for (;;) {
            if (send(cli, want, n, 0) != n) {
                perror("dgram: send");
                return 1;
            }
            struct pollfd p = { srv, POLLIN, 0 };
            int r = poll(&p, 1, 200);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                continue; /* lost: send again */
            ssize_t g = recv(srv, got, sizeof got - 1, 0);
            if (g == n && memcmp(got, want, n) == 0)
                break;
            /* a stale copy of an earlier datagram: wait for this one */
            while (recv(srv, got, sizeof got - 1, MSG_DONTWAIT) > 0)
                ;
        }
        char line[32];
        int m = snprintf(line, sizeof line, "log %ld", i);
        if (send(log, line, m, 0) != m) {
            perror("dgram: send to the log");
            return 1;
        }
        printf("step %ld\n", i);
        sleep_ms(20);
    }
    printf("final %ld\n", steps);
    return 0;
}
