/* static_child: a program whose child process runs without the runtime (issue 11,
 * item 5). With an argument `child` it is that child: it sleeps `ms` milliseconds. Else
 * (`static_child ROUNDS CHILD`) it starts CHILD — a statically linked build of this
 * file, which LD_PRELOAD cannot reach — as its child, then counts `rounds` rounds of
 * 100 ms and waits for the child.
 * stdout: `static child ready`, `round N`, `child exit S`.
 */
#include "common.h"

#include <string.h>
#include <sys/wait.h>

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "child") == 0) {
        sleep_ms(arg_long(argc, argv, 2, 1000, 0, 1000000));
        return 5;
    }
    start_program();
    long rounds = arg_long(argc, argv, 1, 20, 1, 100000);
    if (argc < 3) {
        fprintf(stderr, "usage: static_child ROUNDS CHILD\n");
        return 2;
    }
    const char *child = argv[2];
    char ms[32];
    snprintf(ms, sizeof ms, "%ld", rounds * 100 + 500);
    pid_t c = fork();
    if (c == 0) {
        execl(child, child, "child", ms, (char *)NULL);
        _exit(127);
    }
    printf("static child ready\n");
    for (long r = 1; r <= rounds; r++) {
        sleep_ms(100);
        printf("round %ld\n", r);
    }
    int st = 0;
    waitpid(c, &st, 0);
    printf("child exit %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    return 0;
}
