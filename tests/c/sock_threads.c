/* sock_threads [records]: a Unix stream socket pair between two threads (issue 11,
 * item 2): a sender thread writes `records` records of 1..1500 bytes into one end faster
 * than the main thread reads them from the other (1,000 bytes every 2 ms), so bytes are
 * in flight at a checkpoint; the main thread answers with one byte every 10 reads, which
 * the sender collects now and then (bytes in flight the other way).
 *
 * stdout: `sockets ready`, `bytes N hash H` every 100,000 bytes, then `total N hash H`,
 * `acks A`, `final records=R`.
 */
#include "common.h"

#include <pthread.h>
#include <sys/socket.h>

static int sv[2];
static long records;

static void *sender(void *arg)
{
    (void)arg;
    uint64_t s = 0xabcdef;
    unsigned char buf[1500];
    long acks = 0;
    for (long i = 0; i < records; i++) {
        size_t len = 1 + xorshift64(&s) % 1500;
        for (size_t k = 0; k < len; k++)
            buf[k] = (unsigned char)xorshift64(&s);
        size_t off = 0;
        while (off < len) {
            ssize_t w = write(sv[0], buf + off, len - off);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0) {
                perror("sock_threads: write");
                exit(1);
            }
            off += w;
        }
        if (i % 50 == 0) {
            unsigned char a[256];
            ssize_t r = recv(sv[0], a, sizeof a, MSG_DONTWAIT);
            if (r > 0)
                acks += r;
        }
    }
    shutdown(sv[0], SHUT_WR);
    unsigned char a[256];
    ssize_t r;
    while ((r = read(sv[0], a, sizeof a)) != 0) {
        if (r > 0)
            acks += r;
        else if (errno != EINTR)
            break;
    }
    return (void *)acks;
}

int main(int argc, char **argv)
{
    start_program();
    records = arg_long(argc, argv, 1, 4000, 1, 10000000);
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv)) {
        perror("socketpair");
        return 1;
    }
    pthread_t t;
    pthread_create(&t, NULL, sender, NULL);
    printf("sockets ready\n");
    unsigned char buf[1000];
    uint64_t h = 0;
    long total = 0, reads = 0;
    for (;;) {
        ssize_t r = read(sv[1], buf, sizeof buf);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            perror("sock_threads: read");
            return 1;
        }
        if (r == 0)
            break;
        for (ssize_t k = 0; k < r; k++) {
            h = mix64(h, buf[k]);
            if (++total % 100000 == 0)
                printf("bytes %ld hash %016llx\n", total, (unsigned long long)h);
        }
        if (++reads % 10 == 0 && write(sv[1], "a", 1) != 1)
            return 1;
        sleep_ms(2);
    }
    shutdown(sv[1], SHUT_WR);
    void *acks;
    pthread_join(t, &acks);
    printf("total %ld hash %016llx\n", total, (unsigned long long)h);
    printf("acks %ld\n", (long)acks);
    printf("final records=%ld\n", records);
    return 0;
}
