/* children_mpi: a parent with two children connected by pipes (tests/c/children.c) as the
 * ranks of an MPI job: every rank forks its children after MPI_Init, the sums added up
 * over the ranks each round, rank 0 printing (issue 11, item 5; the programs also as MPI
 * ranks). */
#define MPI_RANKS 1
#include "../c/children.c"
