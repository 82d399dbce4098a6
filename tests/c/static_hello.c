/* static_hello: a statically linked program. mana_launch must refuse it (LD_PRELOAD
 * cannot inject the runtime into it) with a clear message, without running it. */
#include "common.h"

int main(void)
{
    start_program();
    printf("hello from a static binary\n");
    return 0;
}
