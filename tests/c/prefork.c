/* prefork: a pre-forking server and its client, all processes of one tree (issue 11,
 * items 2 and 5). The parent listens on 127.0.0.1 (a port the kernel picks) and forks two
 * workers that accept on that one listening socket (the parent keeps it too: three
 * processes hold it), then a client — the workers' sibling — that closes its copy.
 *
 * Each round the client connects, reads the worker's greeting, sends a number, sleeps
 * `ms` and reads the answer (n * n + 7); the worker sleeps `ms / 2` between the greeting
 * and reading the number. Checkpoints land with the number unread at the worker or the
 * answer unread at the client: bytes in flight between two siblings. A connection still
 * waiting in the accept queue at a checkpoint comes back reset (documented): the client
 * then connects again, as a client of any server would, before it sent anything; a
 * connection that fails after the number was sent is printed as lost. The listening
 * socket has SO_REUSEADDR, as servers' have: the workers close first, so their side's
 * TIME_WAITs hold the port (without it, neither a native server nor a restart can
 * listen there again until they end).
 * With a third argument `unix`, the same over a Unix socket listening on an abstract
 * name (a pre-forking server on a local socket); with `noreuse`, over TCP without
 * SO_REUSEADDR (a restart then waits for the killed connections' TIME_WAIT).
 * stdout (the client's, then the parent's): `prefork ready`, `round N: A`,
 * `client done`, `client exit S`, `workers ended`.
 */
#include "common.h"

#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

static void worker(int l, long ms)
{
    for (;;) {
        int c = accept(l, NULL, NULL);
        if (c < 0) {
            if (errno == EINTR)
                continue;
            perror("accept");
            _exit(98);
        }
        char g = 'g';
        long n;
        fd_write_all(c, &g, 1);
        sleep_ms(ms / 2);
        if (fd_read_all(c, &n, sizeof n) == 0) {
            long a = n * n + 7;
            fd_write_all(c, &a, sizeof a);
        }
        close(c);
    }
}

static int client(const struct sockaddr *a, socklen_t alen, long rounds, long ms)
{
    printf("prefork ready\n");
    for (long r = 1; r <= rounds; r++) {
        for (;;) {
            int s = socket(a->sa_family, SOCK_STREAM, 0);
            if (s < 0 || connect(s, a, alen)) {
                perror("connect");
                return 1;
            }
            char g;
            if (fd_read_all(s, &g, 1) != 0) {
                close(s); /* reset while waiting to be accepted: connect again */
                continue;
            }
            long n = r, ans;
            fd_write_all(s, &n, sizeof n);
            sleep_ms(ms);
            if (fd_read_all(s, &ans, sizeof ans) != 0)
                printf("round %ld: lost\n", r);
            else
                printf("round %ld: %ld\n", r, ans);
            close(s);
            break;
        }
    }
    printf("client done\n");
    return 0;
}

int main(int argc, char **argv)
{
    start_program();
    long rounds = arg_long(argc, argv, 1, 20, 1, 100000);
    long ms = arg_long(argc, argv, 2, 200, 0, 100000);
    signal(SIGPIPE, SIG_IGN);
    /* argv[3] "unix": the same over a Unix socket listening on an abstract name. */
    int unix_mode = argc > 3 && strcmp(argv[3], "unix") == 0;
    struct sockaddr_storage ss = { 0 };
    socklen_t alen;
    int l;
    if (unix_mode) {
        struct sockaddr_un *u = (struct sockaddr_un *)&ss;
        u->sun_family = AF_UNIX;
        int n = snprintf(u->sun_path + 1, sizeof u->sun_path - 1, "mana-prefork-%d", (int)getpid());
        alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
        l = socket(AF_UNIX, SOCK_STREAM, 0);
        if (l < 0 || bind(l, (struct sockaddr *)&ss, alen) || listen(l, 16)) {
            perror("listen");
            return 2;
        }
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        alen = sizeof *a;
        l = socket(AF_INET, SOCK_STREAM, 0);
        int one = 1; /* as servers do: the workers close first, leaving TIME_WAITs on its port */
        if (!(argc > 3 && strcmp(argv[3], "noreuse") == 0))
            setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (l < 0 || bind(l, (struct sockaddr *)a, alen) || listen(l, 16) ||
            getsockname(l, (struct sockaddr *)a, &alen)) {
            perror("listen");
            return 2;
        }
    }
    fflush(stdout);
    pid_t w[2];
    for (int i = 0; i < 2; i++) {
        w[i] = fork();
        if (w[i] == 0)
            worker(l, ms);
    }
    pid_t c = fork();
    if (c == 0) {
        close(l);
        int rc = client((struct sockaddr *)&ss, alen, rounds, ms);
        fflush(stdout);
        _exit(rc);
    }
    int st = 0;
    waitpid(c, &st, 0);
    printf("client exit %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    int ended = 0;
    for (int i = 0; i < 2; i++) {
        kill(w[i], SIGTERM);
        int ws = 0;
        if (waitpid(w[i], &ws, 0) == w[i] && WIFSIGNALED(ws) && WTERMSIG(ws) == SIGTERM)
            ended++;
    }
    printf("workers ended: %d\n", ended);
    return 0;
}
