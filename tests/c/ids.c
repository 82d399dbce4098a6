/* ids: process and thread ids, signals aimed by id, and mutexes that remember their owner's
 * thread id, across checkpoints (issue 11, item 3).
 *
 * At start the program notes getpid(), getppid(), gettid() and syscall(SYS_gettid) of the
 * main thread and of a worker thread. Each round, the main thread takes an error-checking
 * mutex, a recursive mutex (twice) and a robust mutex, and holds them while it sleeps
 * (checkpoints land there), then checks: every id as noted at start; locking the
 * error-checking mutex again answers EDEADLK (it knows its owner); raise, kill(getpid()),
 * pthread_kill and tgkill(saved pid, saved worker tid) each reach their handler; a forked
 * child that calls abort() ends by SIGABRT; the worker, asked by condition variable, checks
 * its own ids; every unlock succeeds (EPERM if the owner's id had changed).
 * Built with -DMPI_RANKS (tests/mpi/ids_mpi.c), every rank does the same, each round ends in
 * an MPI_Allreduce of the problems, and rank 0 alone prints.
 * stdout: `ids ready`, `round N: …`, `final …`.
 */
#include "common.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#ifdef MPI_RANKS
#include <mpi.h>
static int rank;
#define SAY(...) (rank == 0 ? printf(__VA_ARGS__) : 0)
#else
#define SAY(...) printf(__VA_ARGS__)
#endif

static pid_t pid0, ppid0, tid0, wtid0;
static atomic_long usr1, usr2, worker_bad;
static pthread_mutex_t errm, recm, robm;
static pthread_mutex_t lk = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static long asked, answered;

static void on_usr1(int sig)
{
    (void)sig;
    atomic_fetch_add(&usr1, 1);
}

static void on_usr2(int sig)
{
    (void)sig;
    if (gettid() == wtid0)
        atomic_fetch_add(&usr2, 1);
}

static void *worker(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&lk);
    wtid0 = gettid();
    pthread_cond_broadcast(&cv);
    for (;;) {
        while (answered == asked)
            pthread_cond_wait(&cv, &lk);
        if (gettid() != wtid0 || syscall(SYS_gettid) != wtid0 || getpid() != pid0)
            atomic_fetch_add(&worker_bad, 1);
        answered = asked;
        pthread_cond_broadcast(&cv);
    }
    return NULL;
}

/* Waits (at most 5 s) until *counter reaches want; 0 when it did. */
static int reached(atomic_long *counter, long want)
{
    for (int i = 0; i < 5000 && atomic_load(counter) < want; i++)
        usleep(1000);
    return atomic_load(counter) >= want ? 0 : 1;
}

static void init_mutex(pthread_mutex_t *m, int type, int robust)
{
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_settype(&a, type);
    if (robust)
        pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(m, &a);
    pthread_mutexattr_destroy(&a);
}

int main(int argc, char **argv)
{
#ifdef MPI_RANKS
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
#endif
    start_program();
    long rounds = arg_long(argc, argv, 1, 20, 1, 100000);
    long hold_ms = arg_long(argc, argv, 2, 200, 0, 100000);
    pid0 = getpid();
    ppid0 = getppid();
    tid0 = gettid();
    if (syscall(SYS_gettid) != tid0 || tid0 != pid0) {
        SAY("main thread ids disagree at start\n");
        return 1;
    }
    struct sigaction sa = { 0 };
    sa.sa_handler = on_usr1;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);
    sa.sa_handler = on_usr2;
    sigaction(SIGUSR2, &sa, NULL);
    init_mutex(&errm, PTHREAD_MUTEX_ERRORCHECK, 0);
    init_mutex(&recm, PTHREAD_MUTEX_RECURSIVE, 0);
    init_mutex(&robm, PTHREAD_MUTEX_ERRORCHECK, 1);

    pthread_t w;
    pthread_mutex_lock(&lk);
    pthread_create(&w, NULL, worker, NULL);
    while (wtid0 == 0)
        pthread_cond_wait(&cv, &lk);
    pthread_mutex_unlock(&lk);
    SAY("ids ready\n");

    long total_bad = 0;
    for (long r = 1; r <= rounds; r++) {
        long bad = 0;
        bad += pthread_mutex_lock(&errm) != 0;
        bad += pthread_mutex_lock(&recm) != 0;
        bad += pthread_mutex_lock(&recm) != 0;
        bad += pthread_mutex_lock(&robm) != 0;
        usleep(hold_ms * 1000); /* checkpoints land here, the mutexes held */

        long ids = 0;
        ids += getpid() != pid0;
        ids += getppid() != ppid0;
        ids += gettid() != tid0;
        ids += syscall(SYS_gettid) != tid0;
        long owner = 0;
        owner += pthread_mutex_lock(&errm) != EDEADLK;
        owner += pthread_mutex_lock(&robm) != EDEADLK;

        long sig = 0;
        long u1 = atomic_load(&usr1), u2 = atomic_load(&usr2);
        raise(SIGUSR1);
        sig += reached(&usr1, u1 + 1);
        kill(getpid(), SIGUSR1);
        sig += reached(&usr1, u1 + 2);
        pthread_kill(w, SIGUSR2);
        sig += reached(&usr2, u2 + 1);
        syscall(SYS_tgkill, pid0, wtid0, SIGUSR2);
        sig += reached(&usr2, u2 + 2);

        long aborted = 0;
        pid_t child = fork();
        if (child == 0) {
            signal(SIGABRT, SIG_DFL);
            abort();
        }
        int st = 0;
        if (child < 0 || waitpid(child, &st, 0) != child || !WIFSIGNALED(st) ||
            WTERMSIG(st) != SIGABRT)
            aborted = 1;

        pthread_mutex_lock(&lk);
        asked++;
        pthread_cond_broadcast(&cv);
        while (answered != asked)
            pthread_cond_wait(&cv, &lk);
        pthread_mutex_unlock(&lk);
        long wbad = atomic_exchange(&worker_bad, 0);

        long unlock = 0;
        unlock += pthread_mutex_unlock(&robm) != 0;
        unlock += pthread_mutex_unlock(&recm) != 0;
        unlock += pthread_mutex_unlock(&recm) != 0;
        unlock += pthread_mutex_unlock(&errm) != 0;
        bad += ids + owner + sig + aborted + wbad + unlock;
#ifdef MPI_RANKS
        long mine = bad;
        MPI_Allreduce(&mine, &bad, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
#endif
        total_bad += bad;
        if (bad == 0)
            SAY("round %ld: ids kept, owners known, signals delivered, mutexes released\n", r);
        else
            SAY("round %ld: PROBLEMS ids %ld owner %ld signals %ld abort %ld worker %ld unlock %ld\n",
                r, ids, owner, sig, aborted, wbad, unlock);
    }
    SAY("final rounds %ld problems %ld\n", rounds, total_bad);
#ifdef MPI_RANKS
    MPI_Finalize();
#endif
    return total_bad != 0;
}
