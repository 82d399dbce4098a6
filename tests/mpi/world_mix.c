/* An MPI job to checkpoint, kill and restart at random instants, using only what a restart
 * can re-create today (MPI_COMM_WORLD, predefined datatypes and operations, point-to-point
 * and collective requests): a ring of Isend/Irecv + Waitall, Sendrecv, wildcard receives
 * after Probe, Allreduce/Bcast, a nonblocking Iallreduce, and a message always in flight
 * across iterations (each rank sends its next iteration's message before it receives this
 * one's). The final checksum (hexadecimal float) must not depend on where checkpoints and
 * restarts fell. Prints "world_mix ready" first (rank 0). Any number of ranks >= 2;
 * arguments: iterations (default 300); "pair" to also hold a derived datatype and send
 * with it; "pallw" to hold a persistent MPI_Alltoallw_init request (its datatype arrays
 * alternate MPI_INT and a derived type) started every iteration; "session" to hold an
 * MPI session (which a restart cannot create again yet). */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define N 64

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    int iters = argc > 1 ? atoi(argv[1]) : 300;
    MPI_Datatype elem = MPI_DOUBLE;
    int elems = 64;
    if (argc > 2 && strcmp(argv[2], "pair") == 0) {
        MPI_Type_contiguous(2, MPI_DOUBLE, &elem);
        MPI_Type_commit(&elem);
        elems = 32;
    }
    MPI_Request pallw = MPI_REQUEST_NULL;
    int *aw_s = NULL, *aw_r = NULL, *aw_counts = NULL, *aw_displs = NULL;
    MPI_Datatype *aw_types = NULL;
    if (argc > 2 && strcmp(argv[2], "pallw") == 0) {
        aw_s = malloc(size * sizeof(int));
        aw_r = malloc(size * sizeof(int));
        aw_counts = malloc(size * sizeof(int));
        aw_displs = malloc(size * sizeof(int));
        aw_types = malloc(size * sizeof(MPI_Datatype));
        MPI_Datatype one_int;
        MPI_Type_contiguous(1, MPI_INT, &one_int);
        MPI_Type_commit(&one_int);
        for (int i = 0; i < size; i++) {
            aw_s[i] = rank;
            aw_counts[i] = 1;
            aw_displs[i] = i * (int)sizeof(int);
            aw_types[i] = i % 2 ? one_int : MPI_INT;
        }
        MPI_Alltoallw_init(aw_s, aw_counts, aw_displs, aw_types, aw_r, aw_counts, aw_displs, aw_types,
                           MPI_COMM_WORLD, MPI_INFO_NULL, &pallw);
        MPI_Start(&pallw);
        MPI_Wait(&pallw, MPI_STATUS_IGNORE);
    }
    MPI_Session session = MPI_SESSION_NULL;
    if (argc > 2 && strcmp(argv[2], "session") == 0)
        MPI_Session_init(MPI_INFO_NULL, MPI_ERRORS_RETURN, &session);
    if (rank == 0) {
        printf("world_mix ready\n");
        fflush(stdout);
    }
    int next = (rank + 1) % size, prev = (rank + size - 1) % size;
    double sbuf[N], rbuf[N], acc = 0;
    double ahead = rank, got_ahead;
    MPI_Request ahead_req;
    MPI_Isend(&ahead, 1, MPI_DOUBLE, next, 9, MPI_COMM_WORLD, &ahead_req);
    for (int it = 0; it < iters; it++) {
        for (int i = 0; i < N; i++)
            sbuf[i] = rank * 1000.0 + it + i * 0.001;
        MPI_Request rq[2];
        MPI_Status sts[2];
        MPI_Irecv(rbuf, elems, elem, prev, 1, MPI_COMM_WORLD, &rq[0]);
        MPI_Isend(sbuf, elems, elem, next, 1, MPI_COMM_WORLD, &rq[1]);
        MPI_Waitall(2, rq, sts);
        for (int i = 0; i < N; i++)
            acc += rbuf[i] * (i + 1);
        double x = acc * 1e-9 + rank, y;
        MPI_Sendrecv(&x, 1, MPI_DOUBLE, next, 2, &y, 1, MPI_DOUBLE, prev, 2, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        acc += y;
        /* Wildcards (tags 100+ are used for nothing else). */
        if (rank == 0) {
            for (int k = 1; k < size; k++) {
                MPI_Status st;
                int found = 0;
                while (!found)
                    for (int src = 1; src < size && !found; src++)
                        MPI_Iprobe(src, 100 + src, MPI_COMM_WORLD, &found, &st);
                long v;
                MPI_Recv(&v, 1, MPI_LONG, MPI_ANY_SOURCE, st.MPI_TAG, MPI_COMM_WORLD, &st);
                acc += v * (st.MPI_TAG - 99);
            }
        } else {
            long v = it * 31 + rank;
            MPI_Send(&v, 1, MPI_LONG, 0, 100 + rank, MPI_COMM_WORLD);
        }
        MPI_Recv(&got_ahead, 1, MPI_DOUBLE, prev, 9, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        MPI_Wait(&ahead_req, MPI_STATUS_IGNORE);
        acc += got_ahead;
        ahead = acc * 1e-12 + it;
        if (it + 1 < iters)
            MPI_Isend(&ahead, 1, MPI_DOUBLE, next, 9, MPI_COMM_WORLD, &ahead_req);
        double s, mine = acc * 1e-6;
        MPI_Request ir;
        MPI_Iallreduce(&mine, &s, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD, &ir);
        double mx;
        MPI_Allreduce(&mine, &mx, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        MPI_Wait(&ir, MPI_STATUS_IGNORE);
        int root = it % size;
        double b = rank == root ? s + mx : 0;
        MPI_Bcast(&b, 1, MPI_DOUBLE, root, MPI_COMM_WORLD);
        acc = acc * 0.5 + b * 1e-3;
        if (pallw != MPI_REQUEST_NULL) {
            for (int i = 0; i < size; i++)
                aw_s[i] = rank * 1000 + it * 7 + i;
            MPI_Start(&pallw);
            MPI_Wait(&pallw, MPI_STATUS_IGNORE);
            for (int i = 0; i < size; i++)
                acc += aw_r[i] * 1e-3;
        }
        usleep(3000);
    }
    double total;
    MPI_Reduce(&acc, &total, 1, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
    if (pallw != MPI_REQUEST_NULL) {
        MPI_Request_free(&pallw);
        free(aw_s);
        free(aw_r);
        free(aw_counts);
        free(aw_displs);
        MPI_Type_free(&aw_types[1]); /* the derived type of every odd entry */
        free(aw_types);
    }
    if (session != MPI_SESSION_NULL)
        MPI_Session_finalize(&session);
    if (rank == 0)
        printf("world_mix done: %a\n", total);
    MPI_Finalize();
    return 0;
}
