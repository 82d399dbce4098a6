/* Distributed-graph communicators made and freed back to back, with the MPI_UNWEIGHTED and
 * MPI_WEIGHTS_EMPTY sentinels, and queried with MPI_UNWEIGHTED output arrays: a checkpoint
 * finds a rank about to pass a sentinel to MPI (parked at MANA's gate, or held at a
 * collective's entry). `dgraph_rush --loop N` (2 or more ranks):
 * rank 0 prints "dgraph_rush ready", then N rounds of
 *
 *   MPI_Dist_graph_create_adjacent   a ring (left and right neighbours), unweighted;
 *   MPI_Dist_graph_neighbors         500 times, with MPI_UNWEIGHTED weight arrays (where
 *                                    most checkpoints find the rank); a neighbour
 *                                    allgather over it, checked;
 *   MPI_Dist_graph_create            one edge to rank + k (k changes every round),
 *                                    unweighted; and on odd rounds one with no edge at all
 *                                    (MPI_WEIGHTS_EMPTY);
 *
 * and prints "dgraph_rush done: sum <S> failed <F>". */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    int rounds = 100;
    if (argc > 2 && strcmp(argv[1], "--loop") == 0)
        rounds = atoi(argv[2]);
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    const int left = (rank + size - 1) % size, right = (rank + 1) % size;
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) {
        printf("dgraph_rush ready\n");
        fflush(stdout);
    }
    long long sum = 0;
    int failed = 0;
    for (int r = 0; r < rounds; r++) {
        int nb[2] = {left, right};
        MPI_Comm ring;
        MPI_Dist_graph_create_adjacent(MPI_COMM_WORLD, 2, nb, MPI_UNWEIGHTED, 2, nb, MPI_UNWEIGHTED, MPI_INFO_NULL, 0,
                                       &ring);
        int indeg, outdeg, weighted, srcs[2], dsts[2];
        MPI_Dist_graph_neighbors_count(ring, &indeg, &outdeg, &weighted);
        for (int q = 0; q < 500; q++)
            MPI_Dist_graph_neighbors(ring, 2, srcs, MPI_UNWEIGHTED, 2, dsts, MPI_UNWEIGHTED);
        int x = rank * 100 + r, got[2] = {-1, -1};
        MPI_Neighbor_allgather(&x, 1, MPI_INT, got, 1, MPI_INT, ring);
        if (indeg != 2 || outdeg != 2 || weighted || srcs[0] != left || srcs[1] != right ||
            got[0] != left * 100 + r || got[1] != right * 100 + r) {
            fprintf(stderr, "rank %d round %d: ring %d %d %d, sources %d %d, got %d %d\n", rank, r, indeg, outdeg,
                    weighted, srcs[0], srcs[1], got[0], got[1]);
            failed++;
        }
        sum += got[0] + got[1];
        MPI_Comm_free(&ring);

        MPI_Comm one;
        int k = 1 + r % (size - 1), deg = 1, to = (rank + k) % size, y = -1;
        MPI_Dist_graph_create(MPI_COMM_WORLD, 1, &rank, &deg, &to, MPI_UNWEIGHTED, MPI_INFO_NULL, 0, &one);
        x = rank * 7 + r;
        MPI_Neighbor_allgather(&x, 1, MPI_INT, &y, 1, MPI_INT, one);
        if (y != (rank + size - k) % size * 7 + r) {
            fprintf(stderr, "rank %d round %d: one edge got %d\n", rank, r, y);
            failed++;
        }
        sum += y;
        MPI_Comm_free(&one);

        if (r % 2) {
            MPI_Comm none;
            int zero = 0;
            MPI_Dist_graph_create(MPI_COMM_WORLD, 1, &rank, &zero, &to, MPI_WEIGHTS_EMPTY, MPI_INFO_NULL, 0, &none);
            MPI_Dist_graph_neighbors_count(none, &indeg, &outdeg, &weighted);
            if (indeg != 0 || outdeg != 0) {
                fprintf(stderr, "rank %d round %d: empty graph %d %d\n", rank, r, indeg, outdeg);
                failed++;
            }
            MPI_Comm_free(&none);
        }
    }
    long long total;
    int failures;
    MPI_Reduce(&sum, &total, 1, MPI_LONG_LONG, MPI_SUM, 0, MPI_COMM_WORLD);
    MPI_Reduce(&failed, &failures, 1, MPI_INT, MPI_SUM, 0, MPI_COMM_WORLD);
    if (rank == 0) {
        printf("dgraph_rush done: sum %lld failed %d\n", total, failures);
        /* out before MPI_Finalize: the every-generation test judges an image taken after
         * it by the restart printing nothing more (unflushed, a pipe's buffer leaves at
         * exit, after such an image, and the restored rank would print it) */
        fflush(stdout);
    }
    MPI_Finalize();
    return 0;
}
