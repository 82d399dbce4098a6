/* timed_waits [rounds]: every kind of timed wait, each timed on CLOCK_MONOTONIC (issue
 * 11, item 4). A checkpoint must be invisible to them: none may return early or fail with
 * EINTR because of one; the program's own signal (an alarm during pause) still
 * interrupts.
 *
 * stdout, per round: `round R`, then for each wait `R NAME ok` (returned as a wait of its
 * length does: 0 / timed out, after at least the time asked) or `NAME EARLY` / `NAME
 *  EINTR`; `R pause alarm ok` when pause returned for the program's own SIGALRM; at the
 * end `waiter got R signals`, `final rounds=R`. The measured times go to stderr.
 * A signal-handling thread blocks every signal and takes SIGUSR1 with sigwait on the full
 * set (the runtime's stop signal must not be swallowed by it); the main thread sends it
 * one SIGUSR1 per round.
 */
#include "common.h"

#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/select.h>

#define MS 300

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static long round_no;

static void judge(const char *name, int failed, double t0, double want)
{
    double took = now() - t0;
    fprintf(stderr, "%s took %.3f s (asked %.3f)\n", name, took, want);
    if (failed && errno == EINTR)
        printf("%ld %s EINTR\n", round_no, name);
    else if (failed)
        printf("%ld %s failed: %s\n", round_no, name, strerror(errno));
    else if (took < want - 0.002)
        printf("%ld %s EARLY\n", round_no, name);
    else
        printf("%ld %s ok\n", round_no, name);
}

static volatile sig_atomic_t alarms;
static void on_alarm(int s)
{
    (void)s;
    alarms++;
}

static volatile long waiter_got;

static void *waiter(void *arg)
{
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    for (;;) {
        int sig;
        if (sigwait(&all, &sig) == 0 && sig == SIGUSR1)
            waiter_got++;
    }
    return arg;
}

int main(int argc, char **argv)
{
    start_program();
    long rounds = arg_long(argc, argv, 1, 3, 1, 1000);
    signal(SIGALRM, on_alarm);
    int ep = epoll_create1(0);
    sem_t sem;
    sem_init(&sem, 0, 0);
    printf("timed ready\n");
    const double w = MS / 1000.0;
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &usr1, NULL); /* blocked before the waiter exists */
    pthread_t wt;
    pthread_create(&wt, NULL, waiter, NULL);
    for (long r = 0; r < rounds; r++) {
        pthread_kill(wt, SIGUSR1);
        round_no = r;
        printf("round %ld\n", r);
        double t0;
        struct timespec ts = { 0, MS * 1000000L }, rem;

        t0 = now();
        judge("nanosleep", nanosleep(&ts, &rem) != 0, t0, w);

        t0 = now();
        int e = clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, &rem);
        errno = e;
        judge("clock_nanosleep", e != 0, t0, w);

        t0 = now();
        struct timespec abs;
        clock_gettime(CLOCK_MONOTONIC, &abs);
        abs.tv_nsec += MS * 1000000L;
        if (abs.tv_nsec >= 1000000000L) {
            abs.tv_sec++;
            abs.tv_nsec -= 1000000000L;
        }
        e = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &abs, NULL);
        errno = e;
        judge("clock_nanosleep_abs", e != 0, t0, w);

        t0 = now();
        unsigned left = sleep(1);
        errno = EINTR;
        judge("sleep", left != 0, t0, 1.0);

        t0 = now();
        judge("usleep", usleep(MS * 1000) != 0, t0, w);

        t0 = now();
        judge("poll", poll(NULL, 0, MS) != 0, t0, w);

        t0 = now();
        judge("ppoll", ppoll(NULL, 0, &ts, NULL) != 0, t0, w);

        t0 = now();
        struct timeval tv = { 0, MS * 1000 };
        judge("select", select(0, NULL, NULL, NULL, &tv) != 0, t0, w);

        t0 = now();
        judge("pselect", pselect(0, NULL, NULL, NULL, &ts, NULL) != 0, t0, w);

        t0 = now();
        struct epoll_event ev;
        judge("epoll_wait", epoll_wait(ep, &ev, 1, MS) != 0, t0, w);

        t0 = now();
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += MS * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        int s = sem_timedwait(&sem, &until);
        if (s != 0 && errno == ETIMEDOUT)
            s = 0;
        judge("sem_timedwait", s != 0, t0, w);

        /* sem_clockwait on CLOCK_MONOTONIC (an absolute deadline). */
        t0 = now();
        struct timespec mono;
        clock_gettime(CLOCK_MONOTONIC, &mono);
        mono.tv_nsec += MS * 1000000L;
        if (mono.tv_nsec >= 1000000000L) {
            mono.tv_sec++;
            mono.tv_nsec -= 1000000000L;
        }
        int c = sem_clockwait(&sem, CLOCK_MONOTONIC, &mono);
        if (c != 0 && errno == ETIMEDOUT)
            c = 0;
        judge("sem_clockwait", c != 0, t0, w);

        /* epoll_pwait2 with a timespec timeout on an epoll instance nothing wakes. */
        t0 = now();
        struct timespec ep2 = { 0, MS * 1000000L };
        struct epoll_event ev2;
        int e2 = epoll_pwait2(ep, &ev2, 1, &ep2, NULL);
        judge("epoll_pwait2", e2 != 0, t0, w);

        /* sigtimedwait for a signal that never comes (blocked: it would be taken). */
        sigset_t never;
        sigemptyset(&never);
        sigaddset(&never, SIGUSR2);
        pthread_sigmask(SIG_BLOCK, &never, NULL);
        t0 = now();
        struct timespec rel = { 0, MS * 1000000L };
        int q = sigtimedwait(&never, NULL, &rel);
        judge("sigtimedwait", !(q == -1 && errno == EAGAIN), t0, w);

        /* The program's own signal still interrupts: an alarm in 1 s ends pause. */
        long before = alarms;
        alarm(1);
        t0 = now();
        int p = pause();
        fprintf(stderr, "pause took %.3f s\n", now() - t0);
        printf("%ld pause alarm %s\n", r,
               p == -1 && errno == EINTR && alarms == before + 1 ? "ok" : "WRONG");
    }
    while (waiter_got < rounds)
        sleep_ms(10);
    printf("waiter got %ld signals\n", waiter_got);
    printf("final rounds=%ld\n", rounds);
    return 0;
}
