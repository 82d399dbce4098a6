/* timers_mpi: posix_timers (tests/c/posix_timers.c) as the ranks of an MPI job — POSIX
 * timers of every kind, setitimer and a sleep(5) in each rank, rounds joined by an
 * MPI_Allreduce, rank 0 printing (issue 11: the programs also as MPI ranks). */
#define MPI_RANKS 1
#include "../c/posix_timers.c"
