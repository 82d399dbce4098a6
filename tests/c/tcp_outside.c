/* tcp_outside PORT [steps]: a TCP connection to something outside the process (a server
 * on 127.0.0.1:PORT that never writes). Prints `outside ready`, then `step N` every
 * 100 ms, then tries a non-blocking read: `read: would block` while the connection
 * lives, `read: Connection reset by peer` after a restart (issue 11, item 2: a
 * connection to something outside the job comes back reset by its peer), and a write
 * after it the same way (`write: …`, SIGPIPE ignored). `final` last. */
#include "common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>

int main(int argc, char **argv)
{
    start_program();
    long port = arg_long(argc, argv, 1, 0, 1, 65535);
    long steps = arg_long(argc, argv, 2, 30, 1, 100000);
    signal(SIGPIPE, SIG_IGN);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { 0 };
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(s, (struct sockaddr *)&a, sizeof a) != 0) {
        perror("tcp_outside: connect");
        return 1;
    }
    printf("outside ready\n");
    for (long i = 0; i < steps; i++) {
        printf("step %ld\n", i);
        sleep_ms(100);
    }
    char c;
    ssize_t r = recv(s, &c, 1, MSG_DONTWAIT);
    printf("read: %s\n", r >= 0 ? "data" : errno == EAGAIN ? "would block" : strerror(errno));
    r = send(s, "x", 1, MSG_DONTWAIT);
    printf("write: %s\n", r >= 0 ? "sent" : strerror(errno));
    printf("final\n");
    return 0;
}
