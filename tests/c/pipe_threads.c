/* pipe_threads [records]: pipes between threads of one process (issue 11, item 2).
 *
 * - `bulk`, capacity raised to 256 KiB: a writer thread sends `records` records of
 *   1..2000 bytes, faster than the main thread reads them (1,500 bytes every 2 ms), so
 *   unread data sits in it (up to its capacity; the writer then blocks in write).
 * - `packets`, packet mode (O_DIRECT): the writer sends a packet of 1..600 bytes with
 *   every 300th record (each packet takes one of the pipe's 16 pages); the main thread
 *   reads them only after `bulk` ends, one packet per read (boundaries must survive).
 * - `ticks`: the main thread writes one byte every 50 reads of `bulk`; a third thread,
 *   blocked in read on it nearly all the time, counts them.
 *
 * stdout: `pipes ready`, `bytes N hash H` at every 100,000 bytes of `bulk`, then
 * `bulk N hash H`, `packets K hash H`, `ticks T`, `final ...`.
 */
#include "common.h"

#include <fcntl.h>
#include <pthread.h>

static int bulk[2], packets[2], ticks[2];
static long records;

static void write_all(int fd, const unsigned char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            perror("pipe_threads: write");
            exit(1);
        }
        p += w;
        n -= w;
    }
}

static void *writer(void *arg)
{
    (void)arg;
    uint64_t s = 0x1234567;
    unsigned char buf[2000];
    for (long i = 0; i < records; i++) {
        size_t len = 1 + xorshift64(&s) % 2000;
        for (size_t k = 0; k < len; k++)
            buf[k] = (unsigned char)xorshift64(&s);
        write_all(bulk[1], buf, len);
        if (i % 300 == 0) {
            size_t plen = 1 + xorshift64(&s) % 600;
            ssize_t w;
            while ((w = write(packets[1], buf, plen)) < 0 && errno == EINTR)
                ;
            if (w != (ssize_t)plen) {
                perror("pipe_threads: packet write");
                exit(1);
            }
        }
        if (i % 10 == 0)
            sleep_ms(1);
    }
    close(bulk[1]);
    close(packets[1]);
    return NULL;
}

static void *ticker(void *arg)
{
    (void)arg;
    long n = 0;
    unsigned char c;
    for (;;) {
        ssize_t r = read(ticks[0], &c, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += c;
    }
    return (void *)n;
}

int main(int argc, char **argv)
{
    start_program();
    records = arg_long(argc, argv, 1, 4000, 1, 10000000);
    if (pipe2(bulk, 0) || pipe2(packets, O_DIRECT) || pipe2(ticks, 0)) {
        perror("pipe_threads: pipe2");
        return 1;
    }
    if (fcntl(bulk[1], F_SETPIPE_SZ, 256 << 10) < 0) {
        perror("pipe_threads: F_SETPIPE_SZ");
        return 1;
    }
    pthread_t w, t;
    pthread_create(&w, NULL, writer, NULL);
    pthread_create(&t, NULL, ticker, NULL);
    printf("pipes ready\n");
    unsigned char buf[65536];
    uint64_t h = 0;
    long total = 0, reads = 0;
    for (;;) {
        ssize_t r = read(bulk[0], buf, 1500);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            perror("pipe_threads: read");
            return 1;
        }
        if (r == 0)
            break;
        for (ssize_t k = 0; k < r; k++) {
            h = mix64(h, buf[k]);
            if (++total % 100000 == 0)
                printf("bytes %ld hash %016llx\n", total, (unsigned long long)h);
        }
        if (++reads % 50 == 0) {
            unsigned char one = 1;
            write_all(ticks[1], &one, 1);
        }
        sleep_ms(2);
    }
    printf("bulk %ld hash %016llx\n", total, (unsigned long long)h);
    long npk = 0;
    uint64_t ph = 0;
    for (;;) {
        ssize_t r = read(packets[0], buf, sizeof buf);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        ph = mix64(hash_bytes(ph, buf, r), (uint64_t)r);
        npk++;
    }
    printf("packets %ld hash %016llx\n", npk, (unsigned long long)ph);
    close(ticks[1]);
    void *n;
    pthread_join(t, &n);
    pthread_join(w, NULL);
    printf("ticks %ld\n", (long)n);
    printf("final records=%ld\n", records);
    return 0;
}
