/* One-sided communication over memory MPI gives the application: MPI_Alloc_mem and
 * MPI_Win_allocate (Put/Get/Accumulate with fences, passive-target lock/unlock), plus
 * MPI_Win_create over the application's own memory, MPI_Win_allocate_c, and a shared-memory
 * window (MPI_Win_allocate_shared on the node's communicator: direct loads and stores
 * through MPI_Win_shared_query, contiguity, the windows' flavors). Prints results from rank 0; prints
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
    MPI_Comm node;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
    int nrank, nsize;
    MPI_Comm_rank(node, &nrank);
    MPI_Comm_size(node, &nsize);
    int *shared;
    MPI_Win wsh;
    MPI_Win_allocate_shared((nrank + 1) * 4 * sizeof(int), sizeof(int), MPI_INFO_NULL, node, &shared, &wsh);
    fprintf(stderr, "rma-memory pid=%d alloc_mem=%p win_base=%p win_c_base=%p win_shared=%p\n", (int)getpid(),
            (void *)mem, (void *)base, (void *)big, (void *)shared);
    {
        /* What backs the shared window (stderr, for the region test). */
        FILE *maps = fopen("/proc/self/maps", "r");
        char line[512];
        while (maps && fgets(line, sizeof line, maps)) {
            unsigned long a, b;
            if (sscanf(line, "%lx-%lx", &a, &b) == 2 && a <= (unsigned long)shared && (unsigned long)shared < b)
                fprintf(stderr, "rma-shared-map pid=%d %s", (int)getpid(), line);
        }
        if (maps)
            fclose(maps);
    }
    int *flavor, flag, flavor_alloc, flavor_shared;
    MPI_Win_get_attr(win, MPI_WIN_CREATE_FLAVOR, &flavor, &flag);
    flavor_alloc = *flavor;
    MPI_Win_get_attr(wsh, MPI_WIN_CREATE_FLAVOR, &flavor, &flag);
    flavor_shared = *flavor;
    MPI_Win_lock_all(0, wsh);
    for (int i = 0; i < (nrank + 1) * 4; i++)
        shared[i] = nrank * 1000 + i;
    MPI_Win_sync(wsh);
    MPI_Barrier(node);
    MPI_Win_sync(wsh);
    int nright = (nrank + 1) % nsize, *theirs, unit;
    MPI_Aint theirs_size;
    MPI_Win_shared_query(wsh, nright, &theirs_size, &unit, &theirs);
    long shared_sum = 0;
    for (int i = 0; i < theirs_size / unit; i++)
        shared_sum = shared_sum * 3 + theirs[i];
    int *first;
    MPI_Aint first_size;
    MPI_Win_shared_query(wsh, MPI_PROC_NULL, &first_size, &unit, &first);
    int contiguous = 1;
    for (int r = 0; r + 1 < nsize; r++) {
        int *a, *b;
        MPI_Aint sa, sb;
        MPI_Win_shared_query(wsh, r, &sa, &unit, &a);
        MPI_Win_shared_query(wsh, r + 1, &sb, &unit, &b);
        contiguous &= (char *)b == (char *)a + sa;
    }
    MPI_Win_unlock_all(wsh);
    MPI_Barrier(node);
    MPI_Win_free(&wsh);
    MPI_Comm_free(&node);
    if (rank == 0)
        printf("flavors: allocate %d shared %d; shared window: first segment %ld bytes, contiguous %d\n",
               flavor_alloc == MPI_WIN_FLAVOR_ALLOCATE, flavor_shared == MPI_WIN_FLAVOR_SHARED, (long)first_size,
               contiguous);
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

    long all[128];
    long mine[4] = {s1, got, big0, shared_sum};
    MPI_Gather(mine, 4, MPI_LONG, all, 4, MPI_LONG, 0, MPI_COMM_WORLD);
    if (rank == 0)
        for (int r = 0; r < size; r++)
            printf("rank %d window-sum %ld got %ld large-count-window %ld shared-neighbour-sum %ld\n", r, all[4 * r],
                   all[4 * r + 1], all[4 * r + 2], all[4 * r + 3]);
    MPI_Finalize();
    return 0;
}
