/* One-sided communication over memory MPI gives the application: MPI_Alloc_mem and
 * MPI_Win_allocate (Put/Get/Accumulate with fences, passive-target lock/unlock), plus
 * MPI_Win_create over the application's own memory, and MPI_Win_allocate_c. Prints results from rank 0; prints
 * the addresses MPI returned on stderr (`rma-memory pid=… alloc_mem=… win_base=…`) so a test
 * can check they are upper-half memory. 2 or more ranks. */
#include <mpi.h>
#include <stdio.h>
#include <unistd.h>

#define N 16

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    int *mem;
    MPI_Alloc_mem(N * sizeof(int), MPI_INFO_NULL, &mem);
    int *base;
    MPI_Win win;
    MPI_Win_allocate(N * sizeof(int), sizeof(int), MPI_INFO_NULL, MPI_COMM_WORLD, &base, &win);
    long *big;
    MPI_Win win_c;
    MPI_Win_allocate_c(4 * sizeof(long), sizeof(long), MPI_INFO_NULL, MPI_COMM_WORLD, &big, &win_c);
    fprintf(stderr, "rma-memory pid=%d alloc_mem=%p win_base=%p win_c_base=%p\n", (int)getpid(), (void *)mem,
            (void *)base, (void *)big);
    big[0] = 0;
    MPI_Win_fence(0, win_c);
    long lv = 7L * (rank + 1);
    MPI_Accumulate(&lv, 1, MPI_LONG, 0, 0, 1, MPI_LONG, MPI_SUM, win_c);
    MPI_Win_fence(0, win_c);
    long big0 = big[0];
    MPI_Win_free(&win_c);
    for (int i = 0; i < N; i++) {
        base[i] = rank * 100 + i;
        mem[i] = -1;
    }
    int right = (rank + 1) % size;
    MPI_Win_fence(0, win);
    int v = 1000 + rank;
    MPI_Put(&v, 1, MPI_INT, right, 0, 1, MPI_INT, win);
    MPI_Accumulate(&v, 1, MPI_INT, right, 1, 1, MPI_INT, MPI_SUM, win);
    MPI_Win_fence(0, win);
    MPI_Get(mem, N, MPI_INT, right, 0, N, MPI_INT, win);
    MPI_Win_fence(0, win);
    long s1 = 0;
    for (int i = 0; i < N; i++)
        s1 = s1 * 7 + mem[i];
    MPI_Win_lock(MPI_LOCK_EXCLUSIVE, right, 0, win);
    int one = 1;
    MPI_Accumulate(&one, 1, MPI_INT, right, 2, 1, MPI_INT, MPI_SUM, win);
    MPI_Win_unlock(right, win);
    MPI_Barrier(MPI_COMM_WORLD);
    MPI_Win_free(&win);

    int own[N];
    for (int i = 0; i < N; i++)
        own[i] = rank;
    MPI_Win w2;
    MPI_Win_create(own, sizeof own, sizeof(int), MPI_INFO_NULL, MPI_COMM_WORLD, &w2);
    MPI_Win_fence(0, w2);
    int got = -1;
    MPI_Get(&got, 1, MPI_INT, right, 3, 1, MPI_INT, w2);
    MPI_Win_fence(0, w2);
    MPI_Win_free(&w2);
    MPI_Free_mem(mem);

    long all[96];
    long mine[3] = {s1, got, big0};
    MPI_Gather(mine, 3, MPI_LONG, all, 3, MPI_LONG, 0, MPI_COMM_WORLD);
    if (rank == 0)
        for (int r = 0; r < size; r++)
            printf("rank %d window-sum %ld got %ld large-count-window %ld\n", r, all[3 * r], all[3 * r + 1],
                   all[3 * r + 2]);
    MPI_Finalize();
    return 0;
}
