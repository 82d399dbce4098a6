/* shm_child: memory a parent and its child share (MAP_SHARED|MAP_ANONYMOUS made before
 * the fork; issue 11, items 2 and 5).
 *
 * Each round the parent writes a number into the shared page and pokes the child
 * through a pipe; the child reads the number from the shared page, writes its square
 * plus 7 next to it and pokes back; the parent prints what the child wrote, then sleeps
 * `ms` (checkpoints land there). Shared memory that came back as two copies would show
 * the child an old number.
 * stdout: `shm ready`, `round N: N*N+7`, `child exit S`.
 */
#include "common.h"

#include <sys/mman.h>
#include <sys/wait.h>

int main(int argc, char **argv)
{
    start_program();
    long rounds = arg_long(argc, argv, 1, 20, 1, 100000);
    long ms = arg_long(argc, argv, 2, 200, 0, 100000);
    volatile long *shm = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    int down[2], up[2];
    if (shm == MAP_FAILED || pipe(down) || pipe(up)) {
        perror("setup");
        return 2;
    }
    pid_t c = fork();
    if (c == 0) {
        close(down[1]);
        close(up[0]);
        char b;
        long seen = 0;
        while (read(down[0], &b, 1) == 1) {
            shm[1] = shm[0] * shm[0] + 7;
            seen++;
            if (write(up[1], &b, 1) != 1)
                break;
        }
        _exit((int)(seen % 200));
    }
    close(down[0]);
    close(up[1]);
    printf("shm ready\n");
    for (long r = 1; r <= rounds; r++) {
        shm[0] = r;
        char b = 'x';
        if (write(down[1], &b, 1) != 1 || read(up[0], &b, 1) != 1) {
            printf("round %ld: the child is gone\n", r);
            return 1;
        }
        printf("round %ld: %ld\n", r, shm[1]);
        sleep_ms(ms);
    }
    close(down[1]);
    int st = 0;
    waitpid(c, &st, 0);
    printf("child exit %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    return 0;
}
