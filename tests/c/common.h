/* Shared helpers of the MANA-rs test programs.
 *
 * Every program follows the same contract, which the test harness relies on:
 *   - `BANNER pid=<pid>` is printed to stderr exactly once, at program start (a restored
 *     process continues and must never print it again);
 *   - stdout is a deterministic function of the arguments (no pids, times or addresses),
 *     one write(2) per line, every line unique, the last one `final ...`;
 *   - sleeps are restarted after EINTR, so a checkpoint signal landing in one changes
 *     nothing but timing.
 */
#ifndef MANA_TEST_COMMON_H
#define MANA_TEST_COMMON_H

#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static inline uint64_t xorshift64(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return x;
}

/* Order-sensitive 64-bit mixing of one value into a running hash. */
static inline uint64_t mix64(uint64_t h, uint64_t v)
{
    h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return h;
}

static inline uint64_t hash_words(uint64_t h, const uint64_t *w, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = mix64(h, w[i]);
    return h;
}

static inline uint64_t hash_bytes(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = mix64(h, b[i]);
    return h;
}

/* Sleeps `ms` milliseconds, continuing after signal interruptions. */
static inline void sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

/* Line-buffered stdout (one write per line) and the start banner. */
static inline void start_program(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    fprintf(stderr, "BANNER pid=%d\n", (int)getpid());
}

/* Reads exactly n bytes from fd (EINTR retried): 0, or -1 at end of file or an error. */
static inline int fd_read_all(int fd, void *p, size_t n)
{
    char *c = p;
    while (n > 0) {
        ssize_t r = read(fd, c, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        c += r;
        n -= (size_t)r;
    }
    return 0;
}

/* Writes all n bytes to fd (EINTR retried); exits with status 3 on an error. */
static inline void fd_write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            perror("write");
            exit(3);
        }
        c += w;
        n -= (size_t)w;
    }
}

static inline long arg_long(int argc, char **argv, int i, long dflt, long min, long max)
{
    if (argc <= i)
        return dflt;
    char *end;
    errno = 0;
    long v = strtol(argv[i], &end, 10);
    if (errno || *end || v < min || v > max) {
        fprintf(stderr, "%s: argument %d must be a number in %ld..%ld, got '%s'\n", argv[0], i, min,
                max, argv[i]);
        exit(2);
    }
    return v;
}

#endif
