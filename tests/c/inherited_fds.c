/* A program using descriptors it inherited from the shell that started it (issue 11,
 * item 1): `prog 7> >(cat > out) 8< <(printf data)`. Every step writes the line
 * `line N` to descriptor 7 (a pipe: a failed or short write ends the program with a
 * message; default SIGPIPE would kill it); at the end it reads descriptor 8 to its end.
 *
 * stdout: `inherited ready`, `step N` every 10 steps, `read B bytes hash H`, then
 * `final steps=N`. Arguments: steps (default 300), milliseconds per step (default 10).
 */
#include "common.h"

int main(int argc, char **argv)
{
    start_program();
    long steps = arg_long(argc, argv, 1, 300, 1, 1000000);
    long ms = arg_long(argc, argv, 2, 10, 0, 10000);
    printf("inherited ready\n");
    for (long i = 0; i < steps; i++) {
        char line[64];
        int n = snprintf(line, sizeof line, "line %ld\n", i);
        ssize_t w;
        while ((w = write(7, line, n)) < 0 && errno == EINTR)
            ;
        if (w != n) {
            fprintf(stderr, "write to descriptor 7 at step %ld: %s\n", i,
                    w < 0 ? strerror(errno) : "short");
            return 1;
        }
        if (i % 10 == 9)
            printf("step %ld\n", i + 1);
        sleep_ms(ms);
    }
    uint64_t h = 0;
    size_t total = 0;
    char buf[4096];
    for (;;) {
        ssize_t r = read(8, buf, sizeof buf);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            fprintf(stderr, "read descriptor 8: %s\n", strerror(errno));
            return 1;
        }
        if (r == 0)
            break;
        h = hash_bytes(h, buf, r);
        total += r;
    }
    printf("read %zu bytes hash %016llx\n", total, (unsigned long long)h);
    printf("final steps=%ld\n", steps);
    return 0;
}
