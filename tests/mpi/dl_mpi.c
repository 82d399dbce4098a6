/* A program that is not linked with MPI: it loads the library named by argv[1] with
 * dlopen (a soname, an absolute path, the libmpich.so development link — what ctypes and
 * mpi4py's MPI4PY_LIBMPI do) and calls MPI through dlsym. Prints the sum of the ranks.
 *
 *   dl_mpi LIBRARY   →   "dl_mpi done: size 2 sum 1"
 */
#include <dlfcn.h>
#include <stdio.h>

typedef int MPI_Comm_t, MPI_Datatype_t, MPI_Op_t;
/* MPICH's ABI: handles are ints with these values. */
#define WORLD 0x44000000
#define INT 0x4c000405
#define SUM 0x58000003

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: dl_mpi LIBRARY\n");
        return 2;
    }
    void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        fprintf(stderr, "dl_mpi: %s\n", dlerror());
        return 1;
    }
    int (*init)(int *, char ***) = (int (*)(int *, char ***))dlsym(lib, "MPI_Init");
    int (*rank_of)(MPI_Comm_t, int *) = (int (*)(MPI_Comm_t, int *))dlsym(lib, "MPI_Comm_rank");
    int (*size_of)(MPI_Comm_t, int *) = (int (*)(MPI_Comm_t, int *))dlsym(lib, "MPI_Comm_size");
    int (*allreduce)(const void *, void *, int, MPI_Datatype_t, MPI_Op_t, MPI_Comm_t) =
        (int (*)(const void *, void *, int, MPI_Datatype_t, MPI_Op_t, MPI_Comm_t))dlsym(lib, "MPI_Allreduce");
    int (*finalize)(void) = (int (*)(void))dlsym(lib, "MPI_Finalize");
    if (!init || !rank_of || !size_of || !allreduce || !finalize) {
        fprintf(stderr, "dl_mpi: %s has no MPI\n", argv[1]);
        return 1;
    }
    int rank = -1, size = 0, sum = -1;
    init(&argc, &argv);
    rank_of(WORLD, &rank);
    size_of(WORLD, &size);
    allreduce(&rank, &sum, 1, INT, SUM, WORLD);
    if (rank == 0)
        printf("dl_mpi done: size %d sum %d\n", size, sum);
    finalize();
    return 0;
}
