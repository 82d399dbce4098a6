/* User-defined reduction operations and a user error handler: callbacks MPI calls into
 * application code. Both use thread-local state, which must be the application's own
 * (under MANA the call comes from the lower half's world). Also MPI_ERRORS_RETURN.
 * Deterministic output from rank 0; 2 or more ranks. Built with mpicc.mpich. */
#include <mpi.h>
#include <stdio.h>
#include <string.h>

static __thread long calls_tls = 100;
static __thread int handled_tls;

static void absmax(void *in, void *inout, int *len, MPI_Datatype *dt)
{
    (void)dt;
    long *a = in, *b = inout;
    for (int i = 0; i < *len; i++) {
        long x = a[i] < 0 ? -a[i] : a[i], y = b[i] < 0 ? -b[i] : b[i];
        b[i] = x > y ? x : y;
    }
    calls_tls++;
}

static void on_error(MPI_Comm *comm, int *code, ...)
{
    (void)comm;
    int cls;
    MPI_Error_class(*code, &cls);
    handled_tls = cls;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);

    MPI_Op op;
    MPI_Op_create(absmax, 1, &op);
    long v[3] = {rank * (rank % 2 ? -3 : 2), -rank, rank * 10 - 7}, r[3] = {0, 0, 0};
    MPI_Allreduce(v, r, 3, MPI_LONG, op, MPI_COMM_WORLD);
    long called = calls_tls > 100; /* the op ran on this thread's own TLS */
    long any_called;
    MPI_Allreduce(&called, &any_called, 1, MPI_LONG, MPI_MAX, MPI_COMM_WORLD);
    MPI_Op_free(&op);

    /* A user error handler: an invalid destination rank reaches it, not an abort. */
    MPI_Errhandler eh;
    MPI_Comm_create_errhandler(on_error, &eh);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, eh);
    int x = 1;
    int rc1 = MPI_Send(&x, 1, MPI_INT, size + 5, 0, MPI_COMM_WORLD);
    int cls1;
    MPI_Error_class(rc1, &cls1);

    /* MPI_ERRORS_RETURN: the call returns the error. */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    int rc2 = MPI_Send(&x, 1, MPI_INT, 0, -7, MPI_COMM_WORLD); /* negative tag */
    int cls2, len;
    char msg[MPI_MAX_ERROR_STRING];
    MPI_Error_class(rc2, &cls2);
    MPI_Error_string(cls2, msg, &len);
    MPI_Errhandler_free(&eh);

    if (rank == 0) {
        printf("absmax %ld %ld %ld op-ran-on-app-tls=%ld\n", r[0], r[1], r[2], any_called);
        printf("errhandler saw class %s (%d), call returned class %d\n",
               handled_tls == MPI_ERR_RANK ? "MPI_ERR_RANK" : "OTHER", handled_tls, cls1);
        printf("errors-return class %s: %s\n", cls2 == MPI_ERR_TAG ? "MPI_ERR_TAG" : "OTHER", msg);
    }
    MPI_Finalize();
    return 0;
}
