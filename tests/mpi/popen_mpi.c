/* popen_mpi: popen("sort") and system() in a loop (tests/c/popen_sort.c) as the ranks of
 * an MPI job, statuses added up over the ranks each round, rank 0 printing (issue 11,
 * item 5; the programs also as MPI ranks). */
#define MPI_RANKS 1
#include "../c/popen_sort.c"
