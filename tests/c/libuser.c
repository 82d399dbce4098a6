/* libuser steps [sleep_ms]
 *
 * Calls a function of its own shared library (libstep.so, found by rpath) every step, so
 * a restart maps that library again from wherever it is on the node.
 *
 * stdout: `libuser ready`, `step K h=H` every 10 steps, `final calls=C h=H`.
 */
#include "common.h"

uint64_t step_mix(uint64_t x);
uint64_t step_calls(void);

int main(int argc, char **argv)
{
    start_program();
    long steps = arg_long(argc, argv, 1, 100, 1, 1000000);
    long sleep = arg_long(argc, argv, 2, 20, 0, 10000);
    uint64_t h = 0x5eed;
    printf("libuser ready\n");
    for (long k = 1; k <= steps; k++) {
        h = mix64(h, step_mix(h));
        if (k % 10 == 0)
            printf("step %ld h=%016llx\n", k, (unsigned long long)h);
        sleep_ms(sleep);
    }
    printf("final calls=%llu h=%016llx\n", (unsigned long long)step_calls(), (unsigned long long)h);
    return 0;
}
