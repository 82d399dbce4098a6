/* unix_sockets DIR OUTSIDE [rounds]: listening Unix sockets and a Unix connection to
 * another process, across checkpoints (issue 11, item 2).
 *
 * Listens on DIR/listen.sock (stream), on an abstract name (seqpacket), has a datagram
 * socket bound to DIR/dgram.sock and keeps a connection to OUTSIDE, a Unix stream server of
 * another process that never writes. Each round an unbound datagram socket sends a
 * numbered datagram to DIR/dgram.sock, which receives it.
 * Each round a client thread connects to both listeners, sends a numbered message, the
 * main thread accepts, answers, and the client checks the answer (so each listener must
 * listen again after a restart, on its address). At the end a non-blocking read and a
 * write on the outside connection: `read: would block` / `write: sent` while it lives,
 * `read: end of file` / `write: Broken pipe` after a restart (its peer was another
 * process's). stdout: `unix ready`, `round N: …`, `read: …`, `write: …`, `final`.
 */
#include "common.h"

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>

static struct sockaddr_un path_addr, abstract_addr;
static socklen_t abstract_len;

static int listener(int type, const struct sockaddr_un *a, socklen_t len)
{
    int s = socket(AF_UNIX, type, 0);
    if (s < 0 || bind(s, (const struct sockaddr *)a, len) != 0 || listen(s, 8) != 0) {
        perror("unix_sockets: listen");
        exit(1);
    }
    return s;
}

struct round {
    long n;
    int ok;
};

static void *client(void *arg)
{
    struct round *r = arg;
    r->ok = 1;
    for (int k = 0; k < 2; k++) {
        int type = k == 0 ? SOCK_STREAM : SOCK_SEQPACKET;
        int c = socket(AF_UNIX, type, 0);
        const struct sockaddr_un *a = k == 0 ? &path_addr : &abstract_addr;
        socklen_t len = k == 0 ? sizeof path_addr : abstract_len;
        if (connect(c, (const struct sockaddr *)a, len) != 0) {
            r->ok = 0;
            close(c);
            continue;
        }
        char msg[64], back[64] = { 0 };
        int m = snprintf(msg, sizeof msg, "hello %ld/%d", r->n, k);
        if (write(c, msg, m) != m || read(c, back, sizeof back - 1) <= 0 || back[0] != 'H')
            r->ok = 0;
        close(c);
    }
    return NULL;
}

static int serve(int l)
{
    int c = accept(l, NULL, NULL);
    if (c < 0)
        return 0;
    char buf[64] = { 0 };
    ssize_t n = read(c, buf, sizeof buf - 1);
    int ok = n > 0 && buf[0] == 'h';
    buf[0] = 'H';
    if (n > 0 && write(c, buf, n) != n)
        ok = 0;
    close(c);
    return ok;
}

int main(int argc, char **argv)
{
    start_program();
    if (argc < 3) {
        fprintf(stderr, "usage: unix_sockets DIR OUTSIDE [rounds]\n");
        return 2;
    }
    long rounds = arg_long(argc, argv, 3, 30, 1, 100000);
    signal(SIGPIPE, SIG_IGN);
    path_addr.sun_family = AF_UNIX;
    snprintf(path_addr.sun_path, sizeof path_addr.sun_path, "%s/listen.sock", argv[1]);
    unlink(path_addr.sun_path);
    abstract_addr.sun_family = AF_UNIX;
    int an = snprintf(abstract_addr.sun_path + 1, sizeof abstract_addr.sun_path - 1,
                      "mana-test-%d", (int)getpid());
    abstract_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + an);
    int ls = listener(SOCK_STREAM, &path_addr, sizeof path_addr);
    int la = listener(SOCK_SEQPACKET, &abstract_addr, abstract_len);
    struct sockaddr_un dg_addr = { .sun_family = AF_UNIX };
    snprintf(dg_addr.sun_path, sizeof dg_addr.sun_path, "%s/dgram.sock", argv[1]);
    unlink(dg_addr.sun_path);
    int dg = socket(AF_UNIX, SOCK_DGRAM, 0);
    int sender = socket(AF_UNIX, SOCK_DGRAM, 0);
    if (dg < 0 || sender < 0 || bind(dg, (struct sockaddr *)&dg_addr, sizeof dg_addr) != 0) {
        perror("unix_sockets: datagram socket");
        return 1;
    }

    struct sockaddr_un out = { .sun_family = AF_UNIX };
    snprintf(out.sun_path, sizeof out.sun_path, "%s", argv[2]);
    int o = socket(AF_UNIX, SOCK_STREAM, 0);
    if (connect(o, (struct sockaddr *)&out, sizeof out) != 0) {
        perror("unix_sockets: connect to the outside server");
        return 1;
    }
    printf("unix ready\n");
    for (long i = 1; i <= rounds; i++) {
        struct round r = { .n = i };
        pthread_t t;
        pthread_create(&t, NULL, client, &r);
        int ok = serve(ls);
        ok = serve(la) && ok;
        pthread_join(t, NULL);
        char d[32], got[32] = { 0 };
        int dn = snprintf(d, sizeof d, "datagram %ld", i);
        /* A datagram queued at a checkpoint is not kept: sent again after 200 ms, as
         * datagram programs do. */
        int recvd = 0;
        for (int attempt = 0; attempt < 10 && !recvd; attempt++) {
            if (sendto(sender, d, dn, 0, (struct sockaddr *)&dg_addr, sizeof dg_addr) != dn)
                continue;
            struct pollfd p = { .fd = dg, .events = POLLIN };
            if (poll(&p, 1, 200) == 1)
                recvd = recv(dg, got, sizeof got - 1, 0) == dn && strcmp(got, d) == 0;
        }
        printf("round %ld: %s, %s\n", i, ok && r.ok ? "both listeners answered" : "A LISTENER FAILED",
               recvd ? "datagram received" : "DATAGRAM LOST");
        usleep(100 * 1000);
    }
    char c;
    ssize_t n = recv(o, &c, 1, MSG_DONTWAIT);
    printf("read: %s\n", n > 0 ? "data" : n == 0 ? "end of file" : errno == EAGAIN ? "would block" : strerror(errno));
    n = send(o, "x", 1, MSG_NOSIGNAL);
    printf("write: %s\n", n >= 0 ? "sent" : strerror(errno));
    printf("final\n");
    return 0;
}
