/* A timer signal aimed at the main thread while it spends its time inside MPI (under
 * MANA: on a lower-half TCB). The handler uses thread-local state and errno; it must run
 * on the application's own TLS. 2 or more ranks. Built with mpicc.mpich. */
#define _GNU_SOURCE
#include <errno.h>
#include <mpi.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static __thread long tls_hits;
static volatile long hits;

static void on_alarm(int sig)
{
    (void)sig;
    int saved = errno;
    tls_hits++;
    hits++;
    errno = saved;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &sa, NULL);
    struct sigaction q;
    sigaction(SIGALRM, NULL, &q);
    int query_ok = q.sa_handler == on_alarm && (q.sa_flags & SA_SIGINFO) == 0;

    timer_t timer;
    struct sigevent ev;
    memset(&ev, 0, sizeof ev);
    ev.sigev_notify = SIGEV_THREAD_ID;
    ev.sigev_signo = SIGALRM;
    ev._sigev_un._tid = (pid_t)syscall(SYS_gettid);
    timer_create(CLOCK_MONOTONIC, &ev, &timer);
    struct itimerspec its = {{0, 100000}, {0, 100000}}; /* every 100 us */
    timer_settime(timer, 0, &its, NULL);

    long sum = 0, total = 0;
    for (int i = 0; i < 20000; i++) {
        long v = i + rank;
        MPI_Allreduce(&v, &sum, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
        total += sum;
    }
    memset(&its, 0, sizeof its);
    timer_settime(timer, 0, &its, NULL);
    timer_delete(timer);

    int mine_ok = hits > 0 && tls_hits == hits, all_ok;
    MPI_Allreduce(&mine_ok, &all_ok, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD);
    int q_all;
    MPI_Allreduce(&query_ok, &q_all, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD);
    if (rank == 0)
        printf("total %ld; alarms handled on the application's TLS: %s; sigaction query shows the "
               "application's handler: %s\n",
               total, all_ok ? "yes" : "NO", q_all ? "yes" : "NO");
    MPI_Finalize();
    return 0;
}
