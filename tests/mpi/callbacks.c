/* User-defined reduction operations, communicator and window error handlers, and a
 * generalized request: callbacks MPI calls into
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

static __thread int win_handled_tls, greq_calls_tls;

static void on_win_error(MPI_Win *win, int *code, ...)
{
    (void)win;
    int cls;
    MPI_Error_class(*code, &cls);
    win_handled_tls = cls;
}

static int greq_query(void *extra, MPI_Status *st)
{
    greq_calls_tls++;
    MPI_Status_set_elements(st, MPI_INT, *(int *)extra);
    MPI_Status_set_cancelled(st, 0);
    st->MPI_SOURCE = MPI_UNDEFINED;
    st->MPI_TAG = MPI_UNDEFINED;
    return MPI_SUCCESS;
}

static int greq_free(void *extra)
{
    (void)extra;
    greq_calls_tls += 10;
    return MPI_SUCCESS;
}

static int greq_cancel(void *extra, int complete)
{
    (void)extra;
    (void)complete;
    return MPI_SUCCESS;
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

    /* A window error handler: a put to an invalid rank reaches it. */
    int wbuf[2] = {0, 0};
    MPI_Win win;
    MPI_Win_create(wbuf, sizeof wbuf, sizeof(int), MPI_INFO_NULL, MPI_COMM_WORLD, &win);
    MPI_Errhandler weh;
    MPI_Win_create_errhandler(on_win_error, &weh);
    MPI_Win_set_errhandler(win, weh);
    MPI_Win_fence(0, win);
    MPI_Put(&x, 1, MPI_INT, size + 3, 0, 1, MPI_INT, win);
    MPI_Win_fence(0, win);
    MPI_Win_free(&win);
    MPI_Errhandler_free(&weh);

    /* A generalized request: completed by the application, queried and freed by MPI. */
    int n_elems = 3, got_count = -1;
    MPI_Request greq;
    MPI_Grequest_start(greq_query, greq_free, greq_cancel, &n_elems, &greq);
    MPI_Grequest_complete(greq);
    MPI_Status gst;
    MPI_Wait(&greq, &gst);
    MPI_Get_count(&gst, MPI_INT, &got_count);

    if (rank == 0) {
        printf("absmax %ld %ld %ld op-ran-on-app-tls=%ld\n", r[0], r[1], r[2], any_called);
        printf("errhandler saw class %s (%d), call returned class %d\n",
               handled_tls == MPI_ERR_RANK ? "MPI_ERR_RANK" : "OTHER", handled_tls, cls1);
        printf("errors-return class %s: %s\n", cls2 == MPI_ERR_TAG ? "MPI_ERR_TAG" : "OTHER", msg);
        printf("window errhandler saw class %s; generalized request count %d, callbacks on app TLS %d\n",
               win_handled_tls == MPI_ERR_RANK ? "MPI_ERR_RANK" : "OTHER", got_count, greq_calls_tls);
    }
    MPI_Finalize();
    return 0;
}
