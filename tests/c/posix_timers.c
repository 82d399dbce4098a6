/* posix_timers [rounds]: POSIX timers, an interval timer and a long sleep across
 * checkpoints (issue 11, item 4).
 *
 * - timer A: SIGEV_SIGNAL, SIGRTMIN+3 every 10 ms, counted by a handler;
 * - timer B: SIGEV_THREAD every 15 ms, its function (a new thread per expiry) counts and
 *   checks its sigval (77);
 * - timer C: SIGEV_THREAD_ID to a worker thread, SIGRTMIN+4 every 12 ms, blocked there
 *   and taken by sigwaitinfo, which checks the sigval (91);
 * - setitimer(ITIMER_REAL) every 20 ms, a SIGALRM handler counts.
 * Each round waits until every counter has gone up by its share, then prints the round
 * with A's period from timer_gettime (a timer that did not come back
 * after a restart, or came back under another id, hangs the program or prints an error).
 * Then, every timer stopped, sleep(5) timed on the monotonic clock: it must last 5 s (a
 * checkpoint must not cut it short).
 * Built with -DMPI_RANKS (tests/mpi/timers_mpi.c), every rank does the same, the rounds
 * are joined by an MPI_Allreduce of the bad sigvals, and rank 0 alone prints.
 * stdout: `timers ready`, `round N ok …`, `sleep 5 lasted at least 5 s`, `final …`.
 */
#include "common.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/time.h>
#ifdef MPI_RANKS
#include <mpi.h>
static int rank;
#define SAY(...) (rank == 0 ? printf(__VA_ARGS__) : 0)
#else
#define SAY(...) printf(__VA_ARGS__)
#endif

static atomic_long a, b, c, d, bad, worker_tid;

static void on_a(int sig)
{
    (void)sig;
    atomic_fetch_add(&a, 1);
}

static void on_alarm(int sig)
{
    (void)sig;
    atomic_fetch_add(&d, 1);
}

static void on_b(union sigval v)
{
    if (v.sival_int != 77)
        atomic_fetch_add(&bad, 1);
    atomic_fetch_add(&b, 1);
}

static void *worker(void *arg)
{
    atomic_store(&worker_tid, gettid());
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGRTMIN + 4);
    for (;;) {
        siginfo_t si;
        if (sigwaitinfo(&set, &si) < 0)
            continue;
        if (si.si_value.sival_int != 91)
            atomic_fetch_add(&bad, 1);
        atomic_fetch_add(&c, 1);
    }
    return arg;
}

static void every(timer_t t, long ms)
{
    struct itimerspec it = { { ms / 1000, (ms % 1000) * 1000000L }, { ms / 1000, (ms % 1000) * 1000000L } };
    if (timer_settime(t, 0, &it, NULL) != 0) {
        perror("posix_timers: timer_settime");
        exit(1);
    }
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
#ifdef MPI_RANKS
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
#endif
    start_program();
    long rounds = arg_long(argc, argv, 1, 20, 1, 100000);
    struct sigaction sa = { 0 };
    sa.sa_handler = on_a;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGRTMIN + 3, &sa, NULL);
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);

    sigset_t wset;
    sigemptyset(&wset);
    sigaddset(&wset, SIGRTMIN + 4);
    pthread_sigmask(SIG_BLOCK, &wset, NULL); /* the worker inherits it blocked */
    pthread_t w;
    pthread_create(&w, NULL, worker, NULL);
    pthread_sigmask(SIG_UNBLOCK, &wset, NULL);
    while (atomic_load(&worker_tid) == 0)
        sleep_ms(1);
    pid_t wtid = (pid_t)atomic_load(&worker_tid);

    timer_t ta, tb, tc;
    struct sigevent ev = { 0 };
    ev.sigev_notify = SIGEV_SIGNAL;
    ev.sigev_signo = SIGRTMIN + 3;
    ev.sigev_value.sival_int = 5;
    if (timer_create(CLOCK_MONOTONIC, &ev, &ta) != 0) {
        perror("posix_timers: timer_create A");
        return 1;
    }
    memset(&ev, 0, sizeof ev);
    ev.sigev_notify = SIGEV_THREAD;
    ev.sigev_notify_function = on_b;
    ev.sigev_value.sival_int = 77;
    if (timer_create(CLOCK_MONOTONIC, &ev, &tb) != 0) {
        perror("posix_timers: timer_create B");
        return 1;
    }
    memset(&ev, 0, sizeof ev);
    ev.sigev_notify = SIGEV_THREAD_ID;
    ev.sigev_signo = SIGRTMIN + 4;
    ev.sigev_value.sival_int = 91;
    ev._sigev_un._tid = wtid;
    if (timer_create(CLOCK_MONOTONIC, &ev, &tc) != 0) {
        perror("posix_timers: timer_create C");
        return 1;
    }
    every(ta, 10);
    every(tb, 15);
    every(tc, 12);
    struct itimerval itv = { { 0, 20000 }, { 0, 20000 } };
    setitimer(ITIMER_REAL, &itv, NULL);
    SAY("timers ready\n");

    for (long r = 1; r <= rounds; r++) {
        while (atomic_load(&a) < r * 20 || atomic_load(&b) < r * 12 || atomic_load(&c) < r * 15 ||
               atomic_load(&d) < r * 9)
            sleep_ms(5);
        struct itimerspec got;
        if (timer_gettime(ta, &got) != 0 || timer_gettime(tb, &got) != 0 || timer_gettime(tc, &got) != 0) {
            perror("posix_timers: timer_gettime");
            return 1;
        }
        timer_gettime(ta, &got);
        long badness = atomic_load(&bad);
#ifdef MPI_RANKS
        long mine = badness;
        MPI_Allreduce(&mine, &badness, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
#endif
        SAY("round %ld ok: A period %ld ns, bad sigvals %ld\n", r, got.it_interval.tv_nsec, badness);
    }
    /* The program's own timers stop: only a checkpoint could cut the sleep short now. */
    struct itimerspec off = { { 0, 0 }, { 0, 0 } };
    timer_settime(ta, 0, &off, NULL);
    timer_settime(tb, 0, &off, NULL);
    timer_settime(tc, 0, &off, NULL);
    struct itimerval ioff = { { 0, 0 }, { 0, 0 } };
    setitimer(ITIMER_REAL, &ioff, NULL);
    sleep_ms(50); /* signals already on their way arrive */
    /* ... and any still pending stays blocked in this thread: the program's own signals
     * must not cut the sleep short either (only a checkpoint's could). */
    sigset_t own;
    sigemptyset(&own);
    sigaddset(&own, SIGALRM);
    sigaddset(&own, SIGRTMIN + 3);
    pthread_sigmask(SIG_BLOCK, &own, NULL);
    double t0 = now();
    unsigned left = sleep(5);
    double took = now() - t0;
    SAY("sleep 5 %s, %u s left\n", took >= 5.0 ? "lasted at least 5 s" : "WAS CUT SHORT", left);
    SAY("final rounds %ld bad %ld\n", rounds, atomic_load(&bad));
#ifdef MPI_RANKS
    MPI_Finalize();
#endif
    return 0;
}
