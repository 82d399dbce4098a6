/* many_threads [rounds]: 64 application threads (issue 11, item 6), each with a name
 * (`t-NN`) and thread-local state, meeting every round at a barrier and a
 * mutex-and-condition-variable turnstile, while extra threads sit blocked at the
 * checkpoint in read (a pipe), nanosleep, poll, epoll_wait and pthread_join.
 *
 * Each round: every thread adds its TLS counter into a shared sum under the mutex, waits
 * for its turn (cond var: thread k goes when turn == k), then all meet at the barrier.
 * Round results are deterministic. stdout: `many ready`, `round R sum S` every 10
 * rounds, `final S`.
 */
#include "common.h"

#include <poll.h>
#include <pthread.h>
#include <sys/epoll.h>

#define N 64

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static pthread_barrier_t bar;
static long rounds, turn, sum;
static __thread uint64_t tls_state;
static int feed[2];

static void *worker(void *arg)
{
    long id = (long)arg;
    char name[16];
    snprintf(name, sizeof name, "t-%02ld", id);
    pthread_setname_np(pthread_self(), name);
    tls_state = 0x9e3779b97f4a7c15ULL * (id + 1);
    for (long r = 0; r < rounds; r++) {
        uint64_t v = xorshift64(&tls_state) % 1000;
        pthread_mutex_lock(&mu);
        while (turn % N != id)
            pthread_cond_wait(&cv, &mu);
        sum = (sum * 31 + (long)v) % 1000000007L;
        turn++;
        pthread_cond_broadcast(&cv);
        pthread_mutex_unlock(&mu);
        pthread_barrier_wait(&bar);
        if (id == 0 && r % 10 == 9)
            printf("round %ld sum %ld\n", r + 1, sum);
        if (id == 0)
            sleep_ms(5);
        pthread_barrier_wait(&bar);
    }
    return (void *)(long)(tls_state & 0xffff);
}

/* Blocked in read until the main thread writes the end mark. */
static void *reader(void *arg)
{
    (void)arg;
    char c = 0;
    long got = 0;
    while (read(feed[0], &c, 1) == 1 && c != 'E')
        got++;
    return (void *)got;
}

/* Blocked in nanosleep, poll and epoll_wait in turn, 200 ms each, until told to stop. */
static volatile int stop;
static void *sleeper(void *arg)
{
    (void)arg;
    int ep = epoll_create1(0);
    struct epoll_event ev;
    long laps = 0;
    while (!stop) {
        sleep_ms(200);
        poll(NULL, 0, 200);
        epoll_wait(ep, &ev, 1, 200);
        laps++;
    }
    close(ep);
    return NULL;
}

static void *joiner(void *arg)
{
    pthread_t *t = arg;
    void *r;
    pthread_join(*t, &r);
    return r;
}

int main(int argc, char **argv)
{
    start_program();
    rounds = arg_long(argc, argv, 1, 300, 1, 1000000);
    pthread_barrier_init(&bar, NULL, N);
    if (pipe(feed)) {
        perror("pipe");
        return 1;
    }
    pthread_t t[N], rd, sl, jn;
    for (long i = 0; i < N; i++)
        pthread_create(&t[i], NULL, worker, (void *)i);
    pthread_create(&rd, NULL, reader, NULL);
    pthread_create(&sl, NULL, sleeper, NULL);
    pthread_create(&jn, NULL, joiner, &t[N - 1]);
    printf("many ready\n");
    long tls_sum = 0;
    for (long i = 0; i < N - 1; i++) {
        void *r;
        pthread_join(t[i], &r);
        tls_sum += (long)r;
        if (write(feed[1], "x", 1) != 1)
            return 1;
    }
    void *last;
    pthread_join(jn, &last);
    tls_sum += (long)last;
    if (write(feed[1], "E", 1) != 1)
        return 1;
    void *got;
    pthread_join(rd, &got);
    stop = 1;
    pthread_join(sl, NULL);
    printf("joined tls %ld reads %ld\n", tls_sum, (long)got);
    printf("final %ld\n", sum);
    return 0;
}
