/* libstep.so: the shared library of `libuser` (tests/tests/mapped_files.rs). Its code and
 * its data (a counter and a table) are mapped privately from the file, like any library. */
#include <stdint.h>

static uint64_t calls;
static const uint64_t table[8] = { 3, 5, 7, 11, 13, 17, 19, 23 };

uint64_t step_mix(uint64_t x)
{
    calls++;
    x ^= x << 7;
    x ^= x >> 9;
    return x * table[calls % 8] + calls;
}

uint64_t step_calls(void)
{
    return calls;
}
