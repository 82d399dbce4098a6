/* resources DIR [steps]: what a process sets about itself besides memory (issue 11, item
 * 7): it enters DIR, sets its umask to 027, its soft open-files limit to 777 and stack
 * limit to 12 MiB, its personality to ADDR_NO_RANDOMIZE, and pins a worker thread to
 * CPU 0. Every step prints what it sees of all of them (the worker's affinity as it reads
 * it itself), so a restart that loses any of them shows.
 *
 * stdout: `resources ready`, then per step `step N cwd=NAME umask=027 nofile=777
 * stack=12582912 persona=0x40000 worker_cpus=1`, then `final steps=N`.
 */
#include "common.h"

#include <pthread.h>
#include <sched.h>
#include <sys/personality.h>
#include <sys/resource.h>
#include <sys/stat.h>

static volatile unsigned long worker_cpus;
static volatile int stop;

static void *worker(void *arg)
{
    (void)arg;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(0, &one);
    if (pthread_setaffinity_np(pthread_self(), sizeof one, &one) != 0) {
        fprintf(stderr, "resources: cannot pin the worker\n");
        exit(1);
    }
    while (!stop) {
        cpu_set_t now;
        sched_getaffinity(0, sizeof now, &now);
        unsigned long bits = 0;
        for (int c = 0; c < 64; c++)
            if (CPU_ISSET(c, &now))
                bits |= 1UL << c;
        worker_cpus = bits;
        sleep_ms(5);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    start_program();
    if (argc < 2 || chdir(argv[1]) != 0) {
        fprintf(stderr, "usage: resources DIR [steps] (DIR must exist)\n");
        return 2;
    }
    long steps = arg_long(argc, argv, 2, 100, 1, 1000000);
    umask(027);
    struct rlimit nofile, stack;
    getrlimit(RLIMIT_NOFILE, &nofile);
    getrlimit(RLIMIT_STACK, &stack);
    nofile.rlim_cur = 777;
    stack.rlim_cur = 12 << 20;
    if (setrlimit(RLIMIT_NOFILE, &nofile) || setrlimit(RLIMIT_STACK, &stack)) {
        perror("resources: setrlimit");
        return 1;
    }
    if (personality(PER_LINUX | ADDR_NO_RANDOMIZE) == -1) {
        perror("resources: personality");
        return 1;
    }
    pthread_t w;
    pthread_create(&w, NULL, worker, NULL);
    while (!worker_cpus)
        sleep_ms(1);
    printf("resources ready\n");
    for (long i = 0; i < steps; i++) {
        char cwd[4096] = "?";
        if (!getcwd(cwd, sizeof cwd))
            strcpy(cwd, "?");
        const char *base = strrchr(cwd, '/') ? strrchr(cwd, '/') + 1 : cwd;
        mode_t m = umask(0);
        umask(m);
        getrlimit(RLIMIT_NOFILE, &nofile);
        getrlimit(RLIMIT_STACK, &stack);
        printf("step %ld cwd=%s umask=%03o nofile=%llu stack=%llu persona=%#x worker_cpus=%lx\n", i,
               base, (unsigned)m, (unsigned long long)nofile.rlim_cur,
               (unsigned long long)stack.rlim_cur, (unsigned)personality(0xffffffff),
               worker_cpus);
        sleep_ms(50);
    }
    stop = 1;
    pthread_join(w, NULL);
    printf("final steps=%ld\n", steps);
    return 0;
}
