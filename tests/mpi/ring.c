/* Ring, nonblocking exchange, and collectives over MPI_COMM_WORLD (2 or more ranks:
 * with one, the blocking send to itself never completes, natively as well).
 * Deterministic output (rank 0 prints after gathering), built with mpicc.mpich. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    int next = (rank + 1) % size, prev = (rank + size - 1) % size;

    /* A token goes round the ring 3 times, each rank adding its rank. */
    long token = 0;
    for (int lap = 0; lap < 3; lap++) {
        if (rank == 0) {
            token += 1;
            MPI_Send(&token, 1, MPI_LONG, next, lap, MPI_COMM_WORLD);
            MPI_Recv(&token, 1, MPI_LONG, prev, lap, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        } else {
            MPI_Status st;
            MPI_Recv(&token, 1, MPI_LONG, prev, lap, MPI_COMM_WORLD, &st);
            if (st.MPI_SOURCE != prev || st.MPI_TAG != lap) {
                fprintf(stderr, "bad status\n");
                MPI_Abort(MPI_COMM_WORLD, 2);
            }
            token += rank;
            MPI_Send(&token, 1, MPI_LONG, next, lap, MPI_COMM_WORLD);
        }
    }

    /* Nonblocking halo exchange with Waitall. */
    double left = -1, right = -1, mine = rank * 1.5;
    MPI_Request req[4];
    MPI_Irecv(&left, 1, MPI_DOUBLE, prev, 7, MPI_COMM_WORLD, &req[0]);
    MPI_Irecv(&right, 1, MPI_DOUBLE, next, 8, MPI_COMM_WORLD, &req[1]);
    MPI_Isend(&mine, 1, MPI_DOUBLE, next, 7, MPI_COMM_WORLD, &req[2]);
    MPI_Isend(&mine, 1, MPI_DOUBLE, prev, 8, MPI_COMM_WORLD, &req[3]);
    MPI_Waitall(4, req, MPI_STATUSES_IGNORE);

    /* Collectives. */
    long sum = 0, max = 0;
    long v = (long)rank * rank + 1;
    MPI_Allreduce(&v, &sum, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
    MPI_Reduce(&v, &max, 1, MPI_LONG, MPI_MAX, 0, MPI_COMM_WORLD);
    int root_val = rank == 0 ? 4242 : 0;
    MPI_Bcast(&root_val, 1, MPI_INT, 0, MPI_COMM_WORLD);
    double halo[2] = {left, right};
    double *all = rank == 0 ? malloc(sizeof(double) * 2 * size) : NULL;
    MPI_Gather(halo, 2, MPI_DOUBLE, all, 2, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) {
        printf("ring size=%d token=%ld sum=%ld max=%ld bcast=%d\n", size, token, sum, max, root_val);
        for (int r = 0; r < size; r++)
            printf("rank %d halo %.1f %.1f\n", r, all[2 * r], all[2 * r + 1]);
        double t = MPI_Wtime();
        printf("wtime %s\n", t > 0 ? "ok" : "bad");
        free(all);
    }
    MPI_Finalize();
    return 0;
}
