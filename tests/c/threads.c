/* threads [iterations]
 *
 * Four pthreads, each with its own deterministic state, doing malloc/free- and
 * snprintf-heavy work (so a checkpoint will often stop one inside malloc or printf with a
 * libc lock held) and sleeping 5 ms every other iteration so a checkpoint can land at any
 * instant. Each thread's result depends only on its own work, never on scheduling.
 *
 * Each thread is named `worker-I` (pthread_setname_np: its `comm`, which a restart must
 * give back).
 *
 * stdout: `threads ready ...` once all threads run, then after joining them one
 * `thread I result=H` line each and `final H`. Progress goes to stderr (its interleaving
 * depends on scheduling).
 */
#include "common.h"

#include <pthread.h>

#define THREADS 4
#define LIVE 16

struct worker {
    pthread_t thread;
    int id;
    long iterations;
    uint64_t result;
};

static void *work(void *arg)
{
    struct worker *w = arg;
    char name[16];
    snprintf(name, sizeof name, "worker-%d", w->id);
    pthread_setname_np(pthread_self(), name);
    uint64_t s = 0x9e3779b97f4a7c15ULL ^ ((uint64_t)(w->id + 1) << 32);
    uint64_t h = (uint64_t)w->id;
    char *live[LIVE] = { 0 };
    size_t live_len[LIVE] = { 0 };
    for (long i = 0; i < w->iterations; i++) {
        int slot = (int)(i % LIVE);
        free(live[slot]);
        size_t len = 64 + xorshift64(&s) % 4000;
        live[slot] = malloc(len);
        if (!live[slot]) {
            perror("threads: malloc");
            exit(1);
        }
        live_len[slot] = len;
        uint64_t v = xorshift64(&s);
        int n = snprintf(live[slot], len, "thread=%d iter=%ld value=%llu hex=%llx ratio=%.6f %s", w->id,
                         i, (unsigned long long)v, (unsigned long long)(v >> 7),
                         (double)(v % 1000003) / 977.0, i % 3 ? "odd" : "even");
        if (n < 0 || (size_t)n >= len)
            n = (int)len - 1; /* truncated: hash what was stored */
        memset(live[slot] + n + 1, (int)(v & 0x7f), len - (size_t)n - 1);
        h = hash_bytes(h, live[slot], (size_t)n);
        /* a second, short-lived allocation of another size class */
        char *tmp = malloc(32 + (v % 200));
        if (!tmp) {
            perror("threads: malloc");
            exit(1);
        }
        snprintf(tmp, 32, "%ld", i * 31);
        h = mix64(h, (uint64_t)strlen(tmp));
        free(tmp);
        if (i % 2 == 0)
            sleep_ms(5);
        if (i % 200 == 0)
            fprintf(stderr, "thread %d at %ld\n", w->id, i);
    }
    for (int k = 0; k < LIVE; k++) {
        if (live[k])
            h = hash_bytes(mix64(h, live_len[k]), live[k] + live_len[k] - 16, 16);
        free(live[k]);
    }
    w->result = h;
    return NULL;
}

int main(int argc, char **argv)
{
    start_program();
    long iterations = arg_long(argc, argv, 1, 600, 1, 1L << 30);
    struct worker w[THREADS];
    for (int t = 0; t < THREADS; t++) {
        w[t].id = t;
        w[t].iterations = iterations;
        w[t].result = 0;
        int e = pthread_create(&w[t].thread, NULL, work, &w[t]);
        if (e) {
            fprintf(stderr, "threads: pthread_create: %s\n", strerror(e));
            return 1;
        }
    }
    printf("threads ready count=%d iterations=%ld\n", THREADS, iterations);
    uint64_t h = 0;
    for (int t = 0; t < THREADS; t++) {
        pthread_join(w[t].thread, NULL);
        printf("thread %d result=%016llx\n", t, (unsigned long long)w[t].result);
        h = mix64(h, w[t].result);
    }
    printf("final threads=%d result=%016llx\n", THREADS, (unsigned long long)h);
    return 0;
}
