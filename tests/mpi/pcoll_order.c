/* Persistent collectives started in different orders on different ranks (MPI 4.0 allows
 * it; MPICH's coll/p_order does it once): a checkpoint finds rank 0 inside one and rank 1
 * inside another. `pcoll_order --loop N` (2 or more ranks): rank 0 prints
 * "pcoll_order ready", then N rounds of
 *
 *   MPI_Start of three persistent collectives on MPI_COMM_WORLD — an MPI_Bcast_init from
 *   rank 0, an MPI_Allreduce_init (sum), an MPI_Barrier_init — in that order on even
 *   ranks and in the reverse order on odd ranks, 100 µs apart; MPI_Waitall; checked;
 *
 * and every 25 rounds an MPI_Allgather_init on a duplicate of MPI_COMM_WORLD made, started
 * once and freed with its communicator. Prints "pcoll_order done: sum <S> failed <F>". */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    int rounds = 100;
    if (argc > 2 && strcmp(argv[1], "--loop") == 0)
        rounds = atoi(argv[2]);
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    long long bval = 0, mine = 0, total = 0;
    MPI_Request req[3];
    MPI_Bcast_init(&bval, 1, MPI_LONG_LONG, 0, MPI_COMM_WORLD, MPI_INFO_NULL, &req[0]);
    MPI_Allreduce_init(&mine, &total, 1, MPI_LONG_LONG, MPI_SUM, MPI_COMM_WORLD, MPI_INFO_NULL, &req[1]);
    MPI_Barrier_init(MPI_COMM_WORLD, MPI_INFO_NULL, &req[2]);
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) {
        printf("pcoll_order ready\n");
        fflush(stdout);
    }
    long long sum = 0;
    int failed = 0;
    for (int r = 0; r < rounds; r++) {
        bval = rank == 0 ? 1000 + r : -1;
        mine = (long long)(rank + 1) * (r + 1);
        for (int i = 0; i < 3; i++) {
            MPI_Start(&req[rank % 2 ? 2 - i : i]);
            usleep(100);
        }
        MPI_Status st[3];
        MPI_Waitall(3, req, st);
        const long long want = (long long)size * (size + 1) / 2 * (r + 1);
        if (bval != 1000 + r || total != want) {
            fprintf(stderr, "rank %d round %d: bcast %lld, allreduce %lld (want %lld)\n", rank, r, bval, total, want);
            failed++;
        }
        sum += bval + total;
        if (r % 25 == 0) {
            MPI_Comm dup;
            MPI_Comm_dup(MPI_COMM_WORLD, &dup);
            int x = rank * 3 + r, *all = malloc((size_t)size * sizeof *all);
            MPI_Request g;
            MPI_Allgather_init(&x, 1, MPI_INT, all, 1, MPI_INT, dup, MPI_INFO_NULL, &g);
            MPI_Start(&g);
            MPI_Wait(&g, MPI_STATUS_IGNORE);
            for (int k = 0; k < size; k++) {
                if (all[k] != k * 3 + r) {
                    fprintf(stderr, "rank %d round %d: allgather[%d] %d\n", rank, r, k, all[k]);
                    failed++;
                }
                sum += all[k];
            }
            MPI_Request_free(&g);
            MPI_Comm_free(&dup);
            free(all);
        }
    }
    for (int i = 0; i < 3; i++)
        MPI_Request_free(&req[i]);
    long long all_sum;
    int failures;
    MPI_Reduce(&sum, &all_sum, 1, MPI_LONG_LONG, MPI_SUM, 0, MPI_COMM_WORLD);
    MPI_Reduce(&failed, &failures, 1, MPI_INT, MPI_SUM, 0, MPI_COMM_WORLD);
    if (rank == 0)
        printf("pcoll_order done: sum %lld failed %d\n", all_sum, failures);
    MPI_Finalize();
    return 0;
}
