/* seqpacket: a SOCK_SEQPACKET socket pair between two threads (issue 11, item 2). A
 * writer sends `n` messages of 1 to 3,000 bytes (lengths and contents from the message's
 * number), a few at a time, pausing between bursts; the reader takes them slowly, so that
 * several messages wait at its end at the checkpoints. Each message must arrive whole,
 * with its own length and contents, in order (a stream would merge them).
 * Every 97th message is empty (a message of its own all the same).
 * stdout: `seqpacket ready`, `message N: L bytes` for every 50th, `seqpacket done: N
 * messages, hash H`.
 */
#include "common.h"

#include <pthread.h>
#include <sys/socket.h>

static int sv[2];
static long n_msgs;

static size_t len_of(long i)
{
    return i % 97 == 0 ? 0 : (size_t)(1 + (i * 7919) % 3000); /* some empty ones too */
}

static void fill(unsigned char *b, long i, size_t len)
{
    for (size_t k = 0; k < len; k++)
        b[k] = (unsigned char)(i * 31 + (long)k * 7);
}

static void *writer(void *arg)
{
    (void)arg;
    static unsigned char b[3000];
    for (long i = 1; i <= n_msgs; i++) {
        size_t len = len_of(i);
        fill(b, i, len);
        if (send(sv[1], b, len, 0) != (ssize_t)len) {
            perror("send");
            exit(3);
        }
        if (i % 8 == 0)
            sleep_ms(20);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    start_program();
    n_msgs = arg_long(argc, argv, 1, 1000, 1, 1000000);
    long ms = arg_long(argc, argv, 2, 5, 0, 100000);
    if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv)) {
        perror("socketpair");
        return 2;
    }
    printf("seqpacket ready\n");
    pthread_t w;
    pthread_create(&w, NULL, writer, NULL);
    static unsigned char b[4096], want[3000];
    unsigned long hash = 1469598103934665603UL;
    for (long i = 1; i <= n_msgs; i++) {
        ssize_t r;
        do
            r = recv(sv[0], b, sizeof b, 0);
        while (r < 0 && errno == EINTR);
        size_t len = len_of(i);
        fill(want, i, len);
        if (r != (ssize_t)len || memcmp(b, want, len) != 0) {
            printf("message %ld: %zd bytes, wanted %zu (or other contents)\n", i, r, len);
            return 1;
        }
        for (ssize_t k = 0; k < r; k++)
            hash = (hash ^ b[k]) * 1099511628211UL;
        if (i % 50 == 0)
            printf("message %ld: %zd bytes\n", i, r);
        sleep_ms(ms);
    }
    pthread_join(w, NULL);
    printf("seqpacket done: %ld messages, hash %lx\n", n_msgs, hash);
    return 0;
}
