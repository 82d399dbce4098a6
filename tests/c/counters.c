/* counters [steps]: eventfd, timerfd and signalfd (issue 11, item 2).
 *
 * - an eventfd (semaphore mode) the main thread adds 3 to every step and a thread takes
 *   one at a time from, keeping a backlog in its counter;
 * - a periodic 20 ms timerfd a thread reads, counting expirations;
 * - SIGUSR1 blocked and taken through a signalfd: the main thread raises it every step
 *   and reads it back (pending signals are per process: one read per raise).
 *
 * stdout: `counters ready`, `step N signals S` every 10 steps, then `taken T`,
 * `timer went on` (it kept expiring to the end), `final steps=N`.
 */
#include "common.h"

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>

static int efd, tfd;
static volatile int stop;
static volatile long timer_ticks;

static void *taker(void *arg)
{
    long want = (long)arg, taken = 0;
    while (taken < want) {
        uint64_t one;
        if (read(efd, &one, 8) == 8)
            taken += one;
        else if (errno != EINTR)
            break;
        sleep_ms(1);
    }
    return (void *)taken;
}

static void *ticker(void *arg)
{
    (void)arg;
    while (!stop) {
        struct pollfd p = { tfd, POLLIN, 0 };
        if (poll(&p, 1, 1000) == 1) {
            uint64_t n;
            if (read(tfd, &n, 8) == 8)
                timer_ticks += n;
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    start_program();
    long steps = arg_long(argc, argv, 1, 200, 1, 1000000);
    efd = eventfd(0, EFD_SEMAPHORE);
    tfd = timerfd_create(CLOCK_MONOTONIC, 0);
    struct itimerspec its = { { 0, 20000000 }, { 0, 20000000 } };
    timerfd_settime(tfd, 0, &its, NULL);
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &usr1, NULL);
    int sfd = signalfd(-1, &usr1, 0);
    if (efd < 0 || tfd < 0 || sfd < 0) {
        perror("counters");
        return 1;
    }
    pthread_t ta, ti;
    pthread_create(&ta, NULL, taker, (void *)(3 * steps));
    pthread_create(&ti, NULL, ticker, NULL);
    printf("counters ready\n");
    long signals = 0;
    for (long i = 0; i < steps; i++) {
        uint64_t three = 3;
        if (write(efd, &three, 8) != 8)
            return 1;
        raise(SIGUSR1);
        struct signalfd_siginfo si;
        ssize_t r;
        while ((r = read(sfd, &si, sizeof si)) < 0 && errno == EINTR)
            ;
        if (r == sizeof si && si.ssi_signo == SIGUSR1)
            signals++;
        if (i % 10 == 9)
            printf("step %ld signals %ld\n", i + 1, signals);
        sleep_ms(10);
    }
    void *taken;
    pthread_join(ta, &taken);
    printf("taken %ld\n", (long)taken);
    long before = timer_ticks;
    sleep_ms(200);
    printf(timer_ticks > before ? "timer went on\n" : "timer STOPPED\n");
    stop = 1;
    pthread_join(ti, NULL);
    printf("final steps=%ld\n", steps);
    return 0;
}
