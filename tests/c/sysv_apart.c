/* sysv_apart: a SysV shared memory segment a parent and its child each attach on their
 * own after the fork, at different addresses (the child maps 1 MiB first) (issue 11,
 * items 2 and 5). Each round the parent writes a number in the segment and pokes the
 * child through a pipe; the child writes its answer beside it (n * 7 + 3) and pokes
 * back; the parent waits `ms` and prints what it reads there. Two private copies after a
 * restart would show the parent stale answers.
 * stdout: `sysv ready`, `round N: A`, `done`. */
#include "common.h"
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/wait.h>
int main(int argc, char **argv)
{
    start_program();
    long rounds = arg_long(argc, argv, 1, 20, 1, 100000);
    long ms = arg_long(argc, argv, 2, 150, 0, 100000);
    int id = shmget(IPC_PRIVATE, 8192, IPC_CREAT | 0600);
    int down[2], up[2];
    if (id < 0 || pipe(down) || pipe(up)) { perror("shmget"); return 2; }
    fflush(stdout);
    pid_t c = fork();
    if (c == 0) {
        close(down[1]);
        close(up[0]);
        /* a mapping first: the segment lands elsewhere than in the parent */
        mmap(NULL, 1 << 20, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        volatile long *m = shmat(id, NULL, 0);
        char b;
        while (read(down[0], &b, 1) == 1) {
            m[1] = m[0] * 7 + 3;
            write(up[1], &b, 1);
        }
        _exit(0);
    }
    close(down[0]);
    close(up[1]);
    volatile long *m = shmat(id, NULL, 0);
    printf("sysv ready\n");
    for (long r = 1; r <= rounds; r++) {
        char b = 'x';
        m[0] = r;
        write(down[1], &b, 1);
        read(up[0], &b, 1);
        sleep_ms(ms);
        printf("round %ld: %ld\n", r, m[1]);
    }
    close(down[1]);
    waitpid(c, NULL, 0);
    shmctl(id, IPC_RMID, NULL);
    printf("done\n");
    return 0;
}
