/* tcp_ranks: a loopback TCP connection between two ranks of an MPI job (issue 11, item 2:
 * "connections whose two ends are in the checkpointed job come back connected with their
 * in-flight data"). Rank 0 listens on 127.0.0.1 (a port the kernel picks) and tells rank 1
 * the port (MPI_Bcast); rank 1 connects, rank 0 accepts and closes its listener.
 *
 * Each round rank 0 sends two numbers, sleeps `ms` (checkpoints land there: the numbers
 * unread at rank 1 or the answers unread at rank 0), reads rank 1's answers (n * 3 + 1)
 * and prints them; every `every` rounds both ranks also meet in an MPI_Allreduce of the
 * answers. At the end rank 0 shuts its side for writing; rank 1 reads end-of-file and
 * sends its count over MPI. Rank 0 alone prints. With a fourth argument `unix`, the same
 * over a Unix socket rank 0 listens on (an abstract name made of its pid).
 * stdout: `tcp ranks ready`, `round N: A B`, `sum S` (every `every` rounds),
 * `rank 1 answered C`.
 */
#include "../c/common.h"

#include <mpi.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    start_program();
    long rounds = arg_long(argc, argv, 1, 20, 1, 100000);
    long ms = arg_long(argc, argv, 2, 200, 0, 100000);
    long every = arg_long(argc, argv, 3, 5, 1, 100000);
    if (size != 2) {
        fprintf(stderr, "tcp_ranks: 2 ranks\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    int unix_mode = argc > 4 && strcmp(argv[4], "unix") == 0;
    struct sockaddr_storage ss = { 0 };
    struct sockaddr_in *a = (struct sockaddr_in *)&ss;
    struct sockaddr_un *u = (struct sockaddr_un *)&ss;
    socklen_t alen = sizeof *a;
    int l = -1, s = -1, one = 1, where = 0;
    if (rank == 0) {
        if (unix_mode) {
            u->sun_family = AF_UNIX;
            where = (int)getpid();
            int n = snprintf(u->sun_path + 1, sizeof u->sun_path - 1, "mana-tcp-ranks-%d", where);
            alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
            l = socket(AF_UNIX, SOCK_STREAM, 0);
        } else {
            a->sin_family = AF_INET;
            a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            l = socket(AF_INET, SOCK_STREAM, 0);
        }
        if (l < 0 || bind(l, (struct sockaddr *)&ss, alen) || listen(l, 1) ||
            (!unix_mode && getsockname(l, (struct sockaddr *)&ss, &alen))) {
            perror("listen");
            MPI_Abort(MPI_COMM_WORLD, 2);
        }
        if (!unix_mode)
            where = ntohs(a->sin_port);
    }
    MPI_Bcast(&where, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (rank == 1) {
        if (unix_mode) {
            u->sun_family = AF_UNIX;
            int n = snprintf(u->sun_path + 1, sizeof u->sun_path - 1, "mana-tcp-ranks-%d", where);
            alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
            s = socket(AF_UNIX, SOCK_STREAM, 0);
        } else {
            a->sin_family = AF_INET;
            a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            a->sin_port = htons((unsigned short)where);
            s = socket(AF_INET, SOCK_STREAM, 0);
        }
        if (s < 0 || connect(s, (struct sockaddr *)&ss, alen)) {
            perror("connect");
            MPI_Abort(MPI_COMM_WORLD, 2);
        }
    } else {
        s = accept(l, NULL, NULL);
        close(l);
        if (s < 0) {
            perror("accept");
            MPI_Abort(MPI_COMM_WORLD, 2);
        }
    }
    if (!unix_mode)
        setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0)
        printf("tcp ranks ready\n");
    long total = 0, count = 0;
    for (long r = 1; r <= rounds; r++) {
        long mine = 0;
        if (rank == 0) {
            long q[2] = { r, r + 1000 }, ans[2];
            fd_write_all(s, q, sizeof q);
            sleep_ms(ms);
            if (fd_read_all(s, ans, sizeof ans) != 0) {
                printf("round %ld: the connection is gone\n", r);
                MPI_Abort(MPI_COMM_WORLD, 1);
            }
            printf("round %ld: %ld %ld\n", r, ans[0], ans[1]);
            mine = ans[0] + ans[1];
        } else {
            long n[2];
            if (fd_read_all(s, n, sizeof n) != 0) {
                fprintf(stderr, "rank 1: the connection is gone\n");
                MPI_Abort(MPI_COMM_WORLD, 1);
            }
            long ans[2] = { n[0] * 3 + 1, n[1] * 3 + 1 };
            fd_write_all(s, ans, sizeof ans);
            count++;
            mine = 0;
        }
        if (r % every == 0) {
            MPI_Allreduce(&mine, &total, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
            if (rank == 0)
                printf("sum %ld\n", total);
        }
    }
    if (rank == 0) {
        shutdown(s, SHUT_WR);
        MPI_Recv(&count, 1, MPI_LONG, 1, 7, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        printf("rank 1 answered %ld\n", count);
    } else {
        char c;
        long extra = 0;
        while (read(s, &c, 1) > 0)
            extra++;
        count += extra * 1000000;
        MPI_Send(&count, 1, MPI_LONG, 0, 7, MPI_COMM_WORLD);
    }
    close(s);
    MPI_Finalize();
    return 0;
}
