/* fork_storm: fork while other threads hold the runtime's locks (issue 11, item 5: fork
 * safety). A thread creates and deletes SIGEV_THREAD POSIX timers all along (the
 * runtime keeps those timers in a locked list); the main thread forks `n` children one
 * after another. Each child sleeps `ms` — checkpoints find it there, a member of the tree
 * whose own checkpoint thread saves its timers under that lock (taken for ever had the
 * fork copied it held) — and exits with a code made of its number (a child calls nothing
 * but async-signal-safe functions: natively, a timer made in such a child can hang in
 * glibc). The parent checks each code.
 * stdout: `storm ready`, `child N ok` for every 10th, `storm done: N children`.
 */
#include "common.h"

#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>

static volatile int stop;

static void never(union sigval v)
{
    (void)v;
}

static int timer_cycle(void)
{
    struct sigevent ev = { 0 };
    ev.sigev_notify = SIGEV_THREAD;
    ev.sigev_notify_function = never;
    timer_t t;
    if (timer_create(CLOCK_MONOTONIC, &ev, &t) != 0)
        return -1;
    return timer_delete(t);
}

static void *churn(void *arg)
{
    (void)arg;
    /* 50 µs apart: a few hundred thousand timer ids over a run, within what a restart
     * gives back on kernels without PR_TIMER_CREATE_RESTORE_IDS (Linux < 6.16). */
    struct timespec pause = { 0, 50000 };
    while (!stop) {
        if (timer_cycle() != 0) {
            perror("timer_create");
            exit(4);
        }
        nanosleep(&pause, NULL);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    start_program();
    long n = arg_long(argc, argv, 1, 100, 1, 100000);
    long ms = arg_long(argc, argv, 2, 40, 0, 100000);
    pthread_t th;
    pthread_create(&th, NULL, churn, NULL);
    printf("storm ready\n");
    long good = 0;
    for (long i = 1; i <= n; i++) {
        pid_t c = fork();
        if (c < 0) {
            perror("fork");
            return 2;
        }
        if (c == 0) {
            sleep_ms(ms);
            _exit((int)(i % 97));
        }
        int st = 0;
        if (waitpid(c, &st, 0) != c || !WIFEXITED(st) || WEXITSTATUS(st) != i % 97) {
            printf("child %ld: status %#x\n", i, st);
            continue;
        }
        good++;
        if (i % 10 == 0)
            printf("child %ld ok\n", i);
    }
    stop = 1;
    pthread_join(th, NULL);
    printf("storm done: %ld children\n", good);
    return 0;
}
