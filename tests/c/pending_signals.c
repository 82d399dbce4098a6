/* pending_signals: signals pending (blocked) across checkpoints, and an alternate signal
 * stack (issue 11, item 4).
 *
 * Every thread blocks SIGUSR1 and SIGRTMIN+1; the worker also SIGUSR2, and has an
 * alternate signal stack for its SIGUSR2 handler (SA_ONSTACK). The program then makes
 * pending: SIGUSR1 to the process (kill), SIGRTMIN+1 twice to the process with values 7
 * and 8 (sigqueue: a real-time signal queues each), SIGUSR2 to the worker with value 42
 * (pthread_sigqueue). It waits `ms` milliseconds (checkpoints land there), says what is
 * pending, then unblocks: each handler records what it got (value, order, whether on the
 * alternate stack). stdout: `pending ready`, `waiting N`, `pending: …`, `got: …`.
 */
#define _GNU_SOURCE
#include "common.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>

static char altstack[64 * 1024];
static atomic_int usr1, rt_n, usr2_value, usr2_on_alt;
static int rt_values[8];
static pthread_mutex_t lk = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int stage; /* 1: worker set up; 2: worker may unblock; 3: worker done */

static void on_usr1(int sig)
{
    (void)sig;
    atomic_fetch_add(&usr1, 1);
}

static void on_rt(int sig, siginfo_t *si, void *uc)
{
    (void)sig;
    (void)uc;
    int n = atomic_fetch_add(&rt_n, 1);
    if (n < 8)
        rt_values[n] = si->si_value.sival_int;
}

static void on_usr2(int sig, siginfo_t *si, void *uc)
{
    (void)sig;
    (void)uc;
    char here;
    uintptr_t p = (uintptr_t)&here, lo = (uintptr_t)altstack;
    atomic_store(&usr2_on_alt, p >= lo && p < lo + sizeof altstack);
    atomic_store(&usr2_value, si->si_value.sival_int);
}

static void *worker(void *arg)
{
    (void)arg;
    stack_t ss = { .ss_sp = altstack, .ss_size = sizeof altstack, .ss_flags = 0 };
    sigaltstack(&ss, NULL);
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &s, NULL);
    pthread_mutex_lock(&lk);
    stage = 1;
    pthread_cond_broadcast(&cv);
    while (stage < 2)
        pthread_cond_wait(&cv, &lk);
    pthread_mutex_unlock(&lk);
    sigset_t pend;
    sigpending(&pend);
    int mine = sigismember(&pend, SIGUSR2);
    stack_t now;
    sigaltstack(NULL, &now);
    pthread_sigmask(SIG_UNBLOCK, &s, NULL);
    pthread_mutex_lock(&lk);
    printf("worker: SIGUSR2 %s, alternate stack %s\n", mine ? "pending" : "NOT PENDING",
           now.ss_sp == altstack && now.ss_size == sizeof altstack ? "kept" : "LOST");
    stage = 3;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&lk);
    return NULL;
}

int main(int argc, char **argv)
{
    start_program();
    long ms = arg_long(argc, argv, 1, 3000, 0, 600000);
    struct sigaction sa = { 0 };
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    sa.sa_handler = NULL;
    sa.sa_sigaction = on_rt;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGRTMIN + 1, &sa, NULL);
    sa.sa_sigaction = on_usr2;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigaction(SIGUSR2, &sa, NULL);
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR1);
    sigaddset(&s, SIGRTMIN + 1);
    pthread_sigmask(SIG_BLOCK, &s, NULL);

    pthread_t w;
    pthread_create(&w, NULL, worker, NULL);
    pthread_mutex_lock(&lk);
    while (stage < 1)
        pthread_cond_wait(&cv, &lk);
    pthread_mutex_unlock(&lk);

    kill(getpid(), SIGUSR1);
    union sigval v;
    v.sival_int = 7;
    sigqueue(getpid(), SIGRTMIN + 1, v);
    v.sival_int = 8;
    sigqueue(getpid(), SIGRTMIN + 1, v);
    v.sival_int = 42;
    pthread_sigqueue(w, SIGUSR2, v);
    printf("pending ready\n");
    for (long t = 0; t < ms; t += 100) {
        usleep(100 * 1000);
        if (t % 500 == 0)
            printf("waiting %ld\n", t / 500);
    }
    sigset_t pend;
    sigpending(&pend);
    printf("pending: SIGUSR1 %d, SIGRTMIN+1 %d\n", sigismember(&pend, SIGUSR1),
           sigismember(&pend, SIGRTMIN + 1));
    pthread_mutex_lock(&lk);
    stage = 2;
    pthread_cond_broadcast(&cv);
    while (stage < 3)
        pthread_cond_wait(&cv, &lk);
    pthread_mutex_unlock(&lk);
    pthread_join(w, NULL);
    pthread_sigmask(SIG_UNBLOCK, &s, NULL);
    printf("got: SIGUSR1 %d time(s), SIGRTMIN+1 %d time(s) values %d %d, SIGUSR2 value %d on the "
           "alternate stack: %s\n",
           atomic_load(&usr1), atomic_load(&rt_n), rt_values[0], rt_values[1],
           atomic_load(&usr2_value), atomic_load(&usr2_on_alt) ? "yes" : "no");
    return 0;
}
