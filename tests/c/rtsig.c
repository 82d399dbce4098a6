/* rtsig [steps]: a program that takes signal 62 (SIGRTMIN+28 — the one MANA's runtime
 * stops threads with by default) for itself: a handler installed at start counts its
 * deliveries; every step raises it once, and a second thread raises it at the main
 * thread every few steps (pthread_kill). The runtime must move to another signal (issue
 * 11, item 4) so that the program's count is exactly its own and checkpoints still stop
 * both threads. A third thread blocks every signal (sigfillset + pthread_sigmask, as
 * signal-handling designs do) and must still be stopped by checkpoints.
 *
 * stdout: `rtsig ready`, `step N count C` every 10 steps, `final count=C`.
 */
#include "common.h"

#include <pthread.h>
#include <signal.h>

#define SIG 62

static volatile sig_atomic_t count;
static pthread_t main_thread;
static volatile int stop;

static void on_sig(int s)
{
    (void)s;
    count++;
}

static void *blocker(void *arg)
{
    (void)arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    while (!stop)
        sleep_ms(3);
    return NULL;
}

static void *poker(void *arg)
{
    (void)arg;
    long steps = 0;
    while (!stop) {
        sleep_ms(7);
        steps++;
    }
    return (void *)steps;
}

int main(int argc, char **argv)
{
    start_program();
    long steps = arg_long(argc, argv, 1, 400, 1, 1000000);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sig;
    sa.sa_flags = SA_RESTART;
    if (sigaction(SIG, &sa, NULL) != 0) {
        perror("sigaction");
        return 1;
    }
    struct sigaction back;
    sigaction(SIG, NULL, &back);
    if (back.sa_handler != on_sig) {
        fprintf(stderr, "rtsig: the handler read back is not mine\n");
        return 1;
    }
    main_thread = pthread_self();
    pthread_t t, b;
    pthread_create(&t, NULL, poker, NULL);
    pthread_create(&b, NULL, blocker, NULL);
    printf("rtsig ready\n");
    for (long i = 0; i < steps; i++) {
        raise(SIG);
        if (i % 5 == 0)
            pthread_kill(main_thread, SIG);
        if (i % 10 == 9)
            printf("step %ld count %ld\n", i + 1, (long)count);
        sleep_ms(10);
    }
    stop = 1;
    pthread_join(t, NULL);
    pthread_join(b, NULL);
    printf("final count=%ld\n", (long)count);
    return 0;
}
