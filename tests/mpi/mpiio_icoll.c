/* Several nonblocking collective MPI-IO operations pending on one file at once, completed
 * by MPI_Waitall: ROMIO's MPI_File_iwrite_at_all / MPI_File_iread_at_all are state
 * machines that start their next nonblocking collective (allgather, allreduce, alltoall) on
 * the file's communicator each time their request is tested, so every rank must move them
 * on in the same order (MPICH's io/i_aggregation1 hung in a checkpoint's drain that tested
 * four of them in turn). 2 to 64 ranks.
 *
 * `--loop N [PATH]` (PATH default ./mpiio_icoll.dat): each round every rank posts K
 * collective writes of its own pieces (K × PIECE ints at interleaved offsets), sleeps
 * 2 ms, waits for all of them, then posts K collective reads of its right neighbour's
 * pieces of the round, sleeps, waits, and checks them. The done line mixes everything
 * read and the number of failed checks. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define K 4
#define PIECE 8192 /* ints */

static unsigned long long csum = 14695981039346656037ULL;

static void mix(unsigned long long v)
{
    csum = (csum ^ v) * 1099511628211ULL;
    csum ^= csum >> 29;
}

static int value(int round, int k, int rank, int i)
{
    return (int)((unsigned)round * 2654435761u ^ (unsigned)k * 40503u ^ (unsigned)rank * 69069u ^ (unsigned)i);
}

static MPI_Offset offset_of(int round, int k, int rank, int size)
{
    return ((MPI_Offset)(round * K + k) * size + rank) * PIECE * (MPI_Offset)sizeof(int);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size, rounds = 4;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    const char *path = "mpiio_icoll.dat";
    if (argc >= 3 && strcmp(argv[1], "--loop") == 0) {
        rounds = atoi(argv[2]);
        if (argc >= 4)
            path = argv[3];
    }
    if (rounds < 1 || size < 2 || size > 64) {
        if (rank == 0)
            fprintf(stderr, "usage: mpiio_icoll [--loop N [PATH]] (N >= 1, 2 to 64 ranks)\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    MPI_File fh;
    if (MPI_File_open(MPI_COMM_WORLD, path, MPI_MODE_CREATE | MPI_MODE_RDWR, MPI_INFO_NULL, &fh) != MPI_SUCCESS) {
        fprintf(stderr, "mpiio_icoll: cannot open %s\n", path);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    MPI_File_set_size(fh, 0);
    if (rank == 0) {
        printf("mpiio_icoll ready\n");
        fflush(stdout);
    }
    int *out = malloc((size_t)K * PIECE * sizeof(int)), *in = malloc((size_t)K * PIECE * sizeof(int));
    int bad = 0, right = (rank + 1) % size;
    MPI_Request req[K];
    MPI_Status st[K];
    for (int r = 0; r < rounds; r++) {
        for (int k = 0; k < K; k++) {
            for (int i = 0; i < PIECE; i++)
                out[k * PIECE + i] = value(r, k, rank, i);
            MPI_File_iwrite_at_all(fh, offset_of(r, k, rank, size), out + k * PIECE, PIECE, MPI_INT, &req[k]);
        }
        usleep(2000);
        MPI_Waitall(K, req, st);
        for (int k = 0; k < K; k++) {
            int n = -1;
            MPI_Get_count(&st[k], MPI_INT, &n);
            bad += n != PIECE;
        }
        memset(in, 0, (size_t)K * PIECE * sizeof(int));
        for (int k = 0; k < K; k++)
            MPI_File_iread_at_all(fh, offset_of(r, k, right, size), in + k * PIECE, PIECE, MPI_INT, &req[k]);
        usleep(2000);
        MPI_Waitall(K, req, st);
        for (int k = 0; k < K; k++)
            for (int i = 0; i < PIECE; i++) {
                bad += in[k * PIECE + i] != value(r, k, right, i);
                if (i % 512 == 0)
                    mix((unsigned)in[k * PIECE + i]);
            }
    }
    MPI_Offset bytes;
    MPI_File_get_size(fh, &bytes);
    mix((unsigned long long)bytes);
    MPI_File_close(&fh);
    unsigned long long sums[64];
    int total_bad = 0;
    MPI_Gather(&csum, 1, MPI_UNSIGNED_LONG_LONG, sums, 1, MPI_UNSIGNED_LONG_LONG, 0, MPI_COMM_WORLD);
    MPI_Reduce(&bad, &total_bad, 1, MPI_INT, MPI_SUM, 0, MPI_COMM_WORLD);
    if (rank == 0) {
        csum = 14695981039346656037ULL;
        for (int i = 0; i < size && i < 64; i++)
            mix(sums[i]);
        printf("mpiio_icoll done: %llx failed checks: %d\n", csum, total_bad);
    }
    free(out);
    free(in);
    MPI_Finalize();
    return 0;
}
