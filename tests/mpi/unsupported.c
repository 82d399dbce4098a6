/* Calls a function MANA-rs does not support (an MPICH extension outside the standard):
 * with MPI_ERRORS_RETURN the call must return MPI_ERR_UNSUPPORTED_OPERATION (and MANA
 * names the function on stderr) instead of aborting or answering wrongly. */
#include <mpi.h>
#include <stdio.h>

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    int rc = MPIX_Comm_failure_ack(MPI_COMM_WORLD), cls = -1;
    MPI_Error_class(rc, &cls);
    if (rank == 0)
        printf("MPIX_Comm_failure_ack: class %d (%s)\n", cls,
               cls == MPI_ERR_UNSUPPORTED_OPERATION ? "MPI_ERR_UNSUPPORTED_OPERATION" : "other");
    MPI_Finalize();
    return 0;
}
