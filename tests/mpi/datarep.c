/* MPI_Register_datarep under MANA behaves as MPICH's: MPICH 4.0's ROMIO refuses read and
 * write conversion functions, accepts a representation with only an extent function,
 * and then refuses any non-native representation in MPI_File_set_view — so the
 * application's callbacks are registered (through MANA's trampolines) but never called
 * by this MPI. The output (error classes and strings) must equal the native run's. */
#include <mpi.h>
#include <stdio.h>

static int extent_fn(MPI_Datatype dt, MPI_Aint *extent, void *extra)
{
    (void)dt;
    (void)extra;
    *extent = 4;
    return MPI_SUCCESS;
}

static int convert_fn(void *userbuf, MPI_Datatype dt, int count, void *filebuf, MPI_Offset pos, void *extra)
{
    (void)userbuf;
    (void)dt;
    (void)count;
    (void)filebuf;
    (void)pos;
    (void)extra;
    return MPI_SUCCESS;
}

static void report(const char *what, int r)
{
    char s[MPI_MAX_ERROR_STRING];
    int len, cls;
    MPI_Error_class(r, &cls);
    MPI_Error_string(r, s, &len);
    printf("%s: class %d: %s\n", what, cls, s);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_File_set_errhandler(MPI_FILE_NULL, MPI_ERRORS_RETURN);
    if (rank == 0) {
        report("register with conversions",
               MPI_Register_datarep("mana-converting", convert_fn, convert_fn, extent_fn, NULL));
        report("register with an extent function only",
               MPI_Register_datarep("mana-native", MPI_CONVERSION_FN_NULL, MPI_CONVERSION_FN_NULL, extent_fn, NULL));
        MPI_File f;
        int data[4] = {1, 2, 3, 4}, back[4] = {0};
        MPI_File_open(MPI_COMM_SELF, "datarep.bin", MPI_MODE_CREATE | MPI_MODE_RDWR | MPI_MODE_DELETE_ON_CLOSE,
                      MPI_INFO_NULL, &f);
        report("set_view with it", MPI_File_set_view(f, 0, MPI_INT, MPI_INT, "mana-native", MPI_INFO_NULL));
        MPI_File_write(f, data, 4, MPI_INT, MPI_STATUS_IGNORE);
        MPI_File_read_at(f, 0, back, 4, MPI_INT, MPI_STATUS_IGNORE);
        MPI_File_close(&f);
        printf("native view still works: %d %d %d %d\n", back[0], back[1], back[2], back[3]);
    }
    MPI_Finalize();
    return 0;
}
