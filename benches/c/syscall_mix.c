/* syscall_mix [N]: a syscall- and malloc-heavy loop for the runtime-overhead benchmark of
 * issue 11 (benches/src/process_overhead.rs): each of N iterations writes 64 bytes into
 * a pipe and reads them back, calls getpid, clock_gettime(CLOCK_MONOTONIC) twice, and
 * mallocs and frees eight blocks of 16 B to 64 KiB; every 64th iteration sleeps
 * nanosleep({0, 1000}). Prints a checksum of what it read and allocated, so the native
 * and the MANA run can be compared. Nothing here is a wait the runtime must resume except
 * nanosleep, which mana_launch interposes: it is in the loop on purpose.
 * `syscall_mix N thread` first starts one thread that only waits (blocked in read), as
 * a control: what a process pays for having a second thread at all.
 * `syscall_mix N spawn` instead starts N/2000 child processes that run /bin/true (fork,
 * exec, waitpid): what a child costs under the runtime (issue 11, item 5: every
 * descendant runs it too).
 */
#include <sys/wait.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int idle_pipe[2];

static void *idle(void *arg)
{
    char c;
    while (read(idle_pipe[0], &c, 1) < 0)
        ;
    return arg;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    int p[2];
    if (pipe(p) != 0 || pipe(idle_pipe) != 0) {
        perror("pipe");
        return 1;
    }
    pthread_t waiter;
    if (argc > 2 && strcmp(argv[2], "thread") == 0 && pthread_create(&waiter, NULL, idle, NULL) != 0) {
        perror("pthread_create");
        return 1;
    }
    if (argc > 2 && strcmp(argv[2], "spawn") == 0) {
        long children = n / 2000, ok = 0;
        for (long i = 0; i < children; i++) {
            pid_t c = fork();
            if (c == 0) {
                execl("/bin/true", "true", (char *)NULL);
                _exit(127);
            }
            int st = 0;
            ok += c > 0 && waitpid(c, &st, 0) == c && WIFEXITED(st) && WEXITSTATUS(st) == 0;
        }
        printf("syscall_mix %ld children, %ld ran\n", children, ok);
        return 0;
    }
    uint64_t sum = 0, seed = 88172645463325252ull;
    char buf[64];
    for (long i = 0; i < n; i++) {
        memset(buf, (int)(i & 0xff), sizeof buf);
        if (write(p[1], buf, sizeof buf) != sizeof buf || read(p[0], buf, sizeof buf) != sizeof buf) {
            perror("pipe i/o");
            return 1;
        }
        sum += (unsigned char)buf[i % 64];
        sum += getpid() != 0;
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        void *blocks[8];
        for (int k = 0; k < 8; k++) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            size_t size = (size_t)16 << (seed % 13);
            blocks[k] = malloc(size);
            if (!blocks[k])
                return 1;
            ((char *)blocks[k])[0] = (char)k;
            ((char *)blocks[k])[size - 1] = (char)k;
            sum += size;
        }
        for (int k = 7; k >= 0; k--)
            free(blocks[k]);
        clock_gettime(CLOCK_MONOTONIC, &b);
        sum += b.tv_sec >= a.tv_sec;
        if (i % 64 == 0) {
            struct timespec t = { 0, 1000 };
            nanosleep(&t, NULL);
        }
    }
    printf("syscall_mix %ld iterations checksum %llu\n", n, (unsigned long long)sum);
    return 0;
}
