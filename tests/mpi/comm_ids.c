/* Many communicators alive at once, each with messages in flight at a checkpoint: the
 * drain tells them apart by their identities (gids), derived from the parent's and a
 * count, so those must never coincide. 2 ranks.
 *
 * `comm_ids GATE`: every rank makes 40 duplicates of MPI_COMM_WORLD and 100 of
 * MPI_COMM_SELF (all kept) and, on each, sends one message to itself (MPI_Isend, payload
 * from the communicator's index) and, on the duplicates of MPI_COMM_WORLD, one to the other
 * rank; both pass a barrier and rank 0 prints "comm_ids ready". Every rank then waits,
 * outside MPI, until the file GATE exists (a test checkpoints the job meanwhile: every
 * message is still in flight, and the drain must take each on its own communicator), then
 * receives them all, checks the payloads, frees everything and rank 0 prints
 * "comm_ids done: sum <S> failed <F>".
 *
 * With the first gid derivation, MPI_COMM_WORLD's 24th duplicate and MPI_COMM_SELF's 89th
 * had the same gid: the drain expected a message of each on both, and the checkpoint
 * failed after 120 s ("message(s) still in flight"). */
#include <mpi.h>
#include <stdio.h>
#include <unistd.h>

#define NW 40
#define NS 100

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    const int peer = (rank + 1) % size;
    MPI_Comm w[NW], s[NS];
    MPI_Request req[2 * NW + NS];
    int out[2 * NW + NS], in[2 * NW + NS], n = 0;
    for (int i = 0; i < NW; i++)
        MPI_Comm_dup(MPI_COMM_WORLD, &w[i]);
    for (int i = 0; i < NS; i++)
        MPI_Comm_dup(MPI_COMM_SELF, &s[i]);
    for (int i = 0; i < NW; i++) {
        out[n] = 1000 * rank + i;
        MPI_Isend(&out[n], 1, MPI_INT, rank, 1, w[i], &req[n]);
        n++;
        out[n] = 1000 * rank + 500 + i;
        MPI_Isend(&out[n], 1, MPI_INT, peer, 2, w[i], &req[n]);
        n++;
    }
    for (int i = 0; i < NS; i++) {
        out[n] = 100000 + 1000 * rank + i;
        MPI_Isend(&out[n], 1, MPI_INT, 0, 3, s[i], &req[n]);
        n++;
    }
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) {
        printf("comm_ids ready\n");
        fflush(stdout);
    }
    const char *gate = argc > 1 ? argv[1] : "";
    while (*gate && access(gate, F_OK) != 0)
        usleep(10000);
    long long sum = 0;
    int failed = 0, k = 0;
    for (int i = 0; i < NW; i++) {
        MPI_Recv(&in[k], 1, MPI_INT, rank, 1, w[i], MPI_STATUS_IGNORE);
        failed += in[k] != 1000 * rank + i;
        sum += in[k++];
        MPI_Recv(&in[k], 1, MPI_INT, peer, 2, w[i], MPI_STATUS_IGNORE);
        failed += in[k] != 1000 * peer + 500 + i;
        sum += in[k++];
    }
    for (int i = 0; i < NS; i++) {
        MPI_Recv(&in[k], 1, MPI_INT, 0, 3, s[i], MPI_STATUS_IGNORE);
        failed += in[k] != 100000 + 1000 * rank + i;
        sum += in[k++];
    }
    for (int i = 0; i < n; i++)
        MPI_Wait(&req[i], MPI_STATUS_IGNORE);
    for (int i = 0; i < NW; i++)
        MPI_Comm_free(&w[i]);
    for (int i = 0; i < NS; i++)
        MPI_Comm_free(&s[i]);
    long long total;
    int failures;
    MPI_Reduce(&sum, &total, 1, MPI_LONG_LONG, MPI_SUM, 0, MPI_COMM_WORLD);
    MPI_Reduce(&failed, &failures, 1, MPI_INT, MPI_SUM, 0, MPI_COMM_WORLD);
    if (rank == 0)
        printf("comm_ids done: sum %lld failed %d\n", total, failures);
    MPI_Finalize();
    return 0;
}
