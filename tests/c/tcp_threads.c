/* tcp_threads [records]: a loopback TCP connection between two threads of one process,
 * and the listening socket it came from (issue 11, item 2).
 *
 * The main thread listens on 127.0.0.1 (a port the kernel picks), a client thread
 * connects (TCP_NODELAY) and sends `records` records of 1..2000 bytes; the main thread
 * reads them in pieces of at most 1,500 bytes, sleeping 2 ms every 2 reads, and answers
 * every 64 records with the 8-byte hash so far, which the client checks before going on
 * (up to ~128 KB in flight). At the end the client shuts its side (the main thread reads
 * end-of-file after the last byte), then connects again to the listening socket and sends
 * "bye" on a second connection, which the main thread accepts.
 * stdout: `tcp ready`, `bytes N hash H` at every 100,000 bytes, `stream N hash H`,
 * `acks A`, `second connection: bye`, `final …`.
 */
#include "common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sys/socket.h>

static long records;
static int port;
static long acks_ok;

static void write_all(int fd, const void *p, size_t n)
{
    const unsigned char *b = p;
    while (n) {
        ssize_t w = write(fd, b, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            perror("tcp_threads: write");
            exit(1);
        }
        b += w;
        n -= w;
    }
}

static size_t read_full(int fd, void *p, size_t n)
{
    unsigned char *b = p;
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, b + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            perror("tcp_threads: read");
            exit(1);
        }
        if (r == 0)
            break;
        got += r;
    }
    return got;
}

static int connect_to_listener(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { 0 };
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    while (connect(s, (struct sockaddr *)&a, sizeof a) != 0) {
        if (errno != EINTR) {
            perror("tcp_threads: connect");
            exit(1);
        }
    }
    return s;
}

static void *client(void *arg)
{
    (void)arg;
    int s = connect_to_listener();
    int one = 1;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    uint64_t seed = 7, h = 1;
    unsigned char buf[2000];
    for (long i = 0; i < records; i++) {
        size_t n = 1 + xorshift64(&seed) % 2000;
        for (size_t k = 0; k < n; k++)
            buf[k] = (unsigned char)(xorshift64(&seed) >> 7);
        write_all(s, buf, n);
        h = hash_bytes(h, buf, n);
        if (i % 64 == 63) {
            uint64_t ack;
            if (read_full(s, &ack, sizeof ack) != sizeof ack || ack != h) {
                fprintf(stderr, "tcp_threads: wrong acknowledgement at record %ld\n", i);
                exit(1);
            }
            acks_ok++;
        }
    }
    shutdown(s, SHUT_WR);
    char c;
    while (read(s, &c, 1) > 0) /* until the main thread closes its side */
        ;
    close(s);
    int s2 = connect_to_listener();
    write_all(s2, "bye", 3);
    close(s2);
    return NULL;
}

int main(int argc, char **argv)
{
    start_program();
    records = arg_long(argc, argv, 1, 3000, 1, 10000000);
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { 0 };
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    if (bind(l, (struct sockaddr *)&a, sizeof a) != 0 || listen(l, 4) != 0 ||
        getsockname(l, (struct sockaddr *)&a, &alen) != 0) {
        perror("tcp_threads: listen");
        return 1;
    }
    port = ntohs(a.sin_port);
    pthread_t t;
    pthread_create(&t, NULL, client, NULL);
    int s;
    while ((s = accept(l, NULL, NULL)) < 0 && errno == EINTR)
        ;
    printf("tcp ready\n");
    uint64_t h = 1, seed = 7;
    long total = 0, next_report = 100000, reads = 0, rec = 0;
    /* Records are rebuilt from the client's generator to know where each ends. */
    size_t left = 1 + xorshift64(&seed) % 2000;
    for (size_t k = 0; k < left; k++)
        xorshift64(&seed);
    unsigned char buf[1500];
    for (;;) {
        size_t want = left < sizeof buf ? left : sizeof buf;
        ssize_t r = read(s, buf, want);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            perror("tcp_threads: read");
            return 1;
        }
        if (r == 0)
            break;
        h = hash_bytes(h, buf, r);
        total += r;
        left -= r;
        if (total >= next_report) {
            printf("bytes %ld hash %016llx\n", next_report, (unsigned long long)h);
            next_report += 100000;
        }
        if (left == 0) {
            rec++;
            if (rec % 64 == 0)
                write_all(s, &h, sizeof h);
            left = 1 + xorshift64(&seed) % 2000;
            for (size_t k = 0; k < left; k++)
                xorshift64(&seed);
        }
        if (++reads % 2 == 0)
            sleep_ms(2);
    }
    printf("stream %ld hash %016llx\n", total, (unsigned long long)h);
    close(s);
    int s2;
    while ((s2 = accept(l, NULL, NULL)) < 0 && errno == EINTR)
        ;
    char bye[4] = { 0 };
    read_full(s2, bye, 3);
    printf("second connection: %s\n", bye);
    pthread_join(t, NULL);
    printf("acks %ld\n", acks_ok);
    printf("final %016llx records %ld\n", (unsigned long long)h, rec);
    return 0;
}
