/* popen_sort: popen("sort") in a loop (issue 11, item 5).
 *
 * Each round writes `lines` lines in a scrambled order to `sort` through popen, waits
 * `ms` milliseconds with the lines unread or half read by sort (checkpoints land there:
 * the shell popen starts and sort are the program's descendants), then pclose: sort
 * prints them in order to the program's stdout, and its exit status is printed. Then a
 * system("exit 3") whose status is printed too.
 * stdout: `popen ready`, sorted lines `rR line NN`, `round R: sort status S, system S`.
 */
#include "common.h"

#include <sys/wait.h>

int main(int argc, char **argv)
{
    start_program();
    long rounds = arg_long(argc, argv, 1, 10, 1, 100000);
    long ms = arg_long(argc, argv, 2, 200, 0, 100000);
    long lines = arg_long(argc, argv, 3, 20, 1, 1000);
    printf("popen ready\n");
    for (long r = 1; r <= rounds; r++) {
        fflush(stdout);
        FILE *p = popen("sort", "w");
        if (!p) {
            perror("popen");
            return 2;
        }
        for (long i = 0; i < lines; i++)
            fprintf(p, "r%ld line %03ld\n", r, (i * 7) % lines);
        fflush(p);
        sleep_ms(ms);
        int st = pclose(p);
        int sys = system("exit 3");
        printf("round %ld: sort status %d, system %d\n", r, WIFEXITED(st) ? WEXITSTATUS(st) : -1,
               WIFEXITED(sys) ? WEXITSTATUS(sys) : -1);
    }
    return 0;
}
