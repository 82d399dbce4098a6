/* Hand-written wrappers (listed in gen/handwritten.txt; the generator skips them). */
#include "mana_wrap.h"

/* Varargs cannot be forwarded generically; MPICH's MPI_Pcontrol only returns
 * MPI_SUCCESS, and so does this. */
int MPI_Pcontrol(const int level, ...)
{
    (void)level;
    return MPI_SUCCESS;
}
int PMPI_Pcontrol(const int level, ...) __attribute__((alias("MPI_Pcontrol")));
