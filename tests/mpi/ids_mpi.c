/* ids_mpi: ids (tests/c/ids.c) as the ranks of an MPI job: pids, thread ids, signals aimed by
 * id and mutexes held across checkpoints in every rank, rounds joined by an MPI_Allreduce,
 * rank 0 printing (issue 11, item 3; the programs also as MPI ranks). */
#define MPI_RANKS 1
#include "../c/ids.c"
