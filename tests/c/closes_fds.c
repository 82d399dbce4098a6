/* closes_fds [steps]: a program that closes every descriptor above stdio, as daemons,
 * shells and process managers do (`close_range(3, ~0U, 0)` before a fork, a "closefrom"
 * loop), at start and then every 20 steps — while the runtime's own descriptors (its
 * coordinator connection, its lease) must survive it: they live in the checkpoint
 * thread's table, not the program's (issue 11's benchmark work, docs/process-state.md,
 * "Runtime cost").
 *
 * Each step it opens a pipe, pushes 64 bytes of the step's data through it, reads them
 * back and hashes them, keeps the pipe open until the next close-all, and sleeps 20 ms.
 * stdout: `closes_fds ready`, `step N hash H` every step, `final H`.
 */
#include "common.h"

#include <fcntl.h>

static void close_all_above_stdio(void)
{
    if (close_range(3, ~0U, 0) != 0) {
        perror("closes_fds: close_range");
        exit(1);
    }
}

int main(int argc, char **argv)
{
    start_program();
    long steps = arg_long(argc, argv, 1, 300, 1, 1000000);
    close_all_above_stdio();
    printf("closes_fds ready\n");
    uint64_t h = 1, seed = 42;
    for (long i = 0; i < steps; i++) {
        if (i % 20 == 0)
            close_all_above_stdio();
        int p[2];
        if (pipe(p) != 0) {
            perror("closes_fds: pipe");
            return 1;
        }
        unsigned char buf[64];
        for (int k = 0; k < 64; k++)
            buf[k] = (unsigned char)xorshift64(&seed);
        if (write(p[1], buf, sizeof buf) != sizeof buf) {
            perror("closes_fds: write");
            return 1;
        }
        unsigned char got[64];
        ssize_t n;
        while ((n = read(p[0], got, sizeof got)) < 0 && errno == EINTR)
            ;
        if (n != sizeof got) {
            perror("closes_fds: read");
            return 1;
        }
        h = hash_bytes(h, got, sizeof got);
        printf("step %ld hash %016llx\n", i, (unsigned long long)h);
        sleep_ms(20);
    }
    printf("final %016llx\n", (unsigned long long)h);
    return 0;
}
