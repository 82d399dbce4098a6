/* One-sided communication over memory MPI gives the application: MPI_Alloc_mem and
 * MPI_Win_allocate (Put/Get/Accumulate with fences, passive-target lock/unlock), plus
 * MPI_Win_create over the application's own memory, MPI_Win_allocate_c, and a shared-memory
 * window (MPI_Win_allocate_shared on the node's communicator: direct loads and stores
 * through MPI_Win_shared_query, contiguity, the windows' flavors). Prints results from rank 0; prints
 * the addresses MPI returned on stderr (`rma-memory pid=… alloc_mem=… win_base=…`) so a test
 * can check they are upper-half memory. 2 or more ranks.
 * `rma --loop N`: the windows (Win_create on ordinary and on Alloc_mem memory, Win_allocate(_c),
 * Win_allocate_shared) and the node communicator are made once, "rma ready" is printed, then N rounds
 * of fence traffic 20 ms apart, with one window in a lock_all epoch for the whole loop and one
 * locked exclusively across each round's sleep; prints "rma done: <checksum> failed <checks>". */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define N 16

/* --loop mode: every long-lived object is used again in each round, with fences only (the
 * last fence of a round leaves an epoch open across the sleep). Each rank keeps a model of
 * its right neighbour's windows and checks what it reads back against it. */
static int loop(int rank, int size, int rounds)
{
    int right = (rank + 1) % size, failed = 0;
    unsigned *mem;
    MPI_Alloc_mem(N * sizeof(unsigned), MPI_INFO_NULL, &mem);
    MPI_Win wm;
    MPI_Win_create(mem, N * sizeof(unsigned), sizeof(unsigned), MPI_INFO_NULL, MPI_COMM_WORLD, &wm);
    unsigned *base;
    MPI_Win win;
    MPI_Win_allocate(N * sizeof(unsigned), sizeof(unsigned), MPI_INFO_NULL, MPI_COMM_WORLD, &base, &win);
    long *big;
    MPI_Win win_c;
    MPI_Win_allocate_c(4 * sizeof(long), sizeof(long), MPI_INFO_NULL, MPI_COMM_WORLD, &big, &win_c);
    unsigned own[N];
    MPI_Win w2;
    MPI_Win_create(own, sizeof own, sizeof(unsigned), MPI_INFO_NULL, MPI_COMM_WORLD, &w2);
    MPI_Comm node;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
    int nrank, nsize;
    MPI_Comm_rank(node, &nrank);
    MPI_Comm_size(node, &nsize);
    unsigned *shared;
    MPI_Win wsh;
    MPI_Win_allocate_shared((nrank + 1) * 4 * sizeof(unsigned), sizeof(unsigned), MPI_INFO_NULL, node, &shared,
                            &wsh);
    int nright = (nrank + 1) % nsize, unit;
    unsigned *theirs;
    MPI_Aint theirs_size;
    MPI_Win_shared_query(wsh, nright, &theirs_size, &unit, &theirs);
    unsigned sh_base[N], sh_mem[N], sh_own[N];
    long sh_big[4] = {0, 0, 0, 0};
    for (int i = 0; i < N; i++) {
        mem[i] = rank * 1000 + i;
        base[i] = rank * 100 + i;
        own[i] = rank * 10 + i;
        sh_mem[i] = right * 1000 + i;
        sh_base[i] = right * 100 + i;
        sh_own[i] = right * 10 + i;
    }
    for (int j = 0; j < 4; j++)
        big[j] = 0;
    MPI_Win_fence(0, win);
    MPI_Win_fence(0, wm);
    MPI_Win_fence(0, win_c);
    MPI_Win_fence(0, w2);
    if (rank == 0) {
        printf("rma ready\n");
        fflush(stdout);
    }
    /* Passive target: a window in a lock_all epoch for the whole loop (puts flushed each
     * round), and one locked exclusively at the neighbour across each round's sleep. */
    static unsigned lk_all[N], lk_one[N];
    MPI_Win wla, wlo;
    MPI_Win_create(lk_all, sizeof lk_all, sizeof(unsigned), MPI_INFO_NULL, MPI_COMM_WORLD, &wla);
    MPI_Win_create(lk_one, sizeof lk_one, sizeof(unsigned), MPI_INFO_NULL, MPI_COMM_WORLD, &wlo);
    MPI_Win_lock_all(0, wla);
    int left = (rank + size - 1) % size;
    unsigned long long sum = 0;
    for (int k = 0; k < rounds; k++) {
        unsigned v = 1000 * (rank + 1) + k, a = rank + k + 1, mv = rank * 31 + k * 17;
        long lv = 7L * (rank + 1) + k;
        MPI_Put(&v, 1, MPI_UNSIGNED, right, k % N, 1, MPI_UNSIGNED, win);
        MPI_Accumulate(&a, 1, MPI_UNSIGNED, right, (k + 1) % N, 1, MPI_UNSIGNED, MPI_SUM, win);
        MPI_Put(&mv, 1, MPI_UNSIGNED, right, k % N, 1, MPI_UNSIGNED, wm);
        MPI_Accumulate(&lv, 1, MPI_LONG, 0, k % 4, 1, MPI_LONG, MPI_SUM, win_c);
        MPI_Win_fence(0, win);
        MPI_Win_fence(0, wm);
        MPI_Win_fence(0, win_c);
        MPI_Win_fence(0, w2);
        unsigned g[N], gm[N], go;
        MPI_Get(g, N, MPI_UNSIGNED, right, 0, N, MPI_UNSIGNED, win);
        MPI_Get(gm, N, MPI_UNSIGNED, right, 0, N, MPI_UNSIGNED, wm);
        MPI_Get(&go, 1, MPI_UNSIGNED, right, k % N, 1, MPI_UNSIGNED, w2);
        long b = big[k % 4];
        MPI_Win_fence(0, win);
        MPI_Win_fence(0, wm);
        MPI_Win_fence(0, win_c);
        MPI_Win_fence(0, w2);
        own[(k + 5) % N] += k + 1;

        sh_base[k % N] = v;
        sh_base[(k + 1) % N] += a;
        sh_mem[k % N] = mv;
        unsigned long long s = go;
        for (int i = 0; i < N; i++) {
            failed += g[i] != sh_base[i];
            failed += gm[i] != sh_mem[i];
            s = s * 31 + g[i] * 7u + gm[i];
        }
        failed += go != sh_own[k % N];
        sh_own[(k + 5) % N] += k + 1;
        if (rank == 0) {
            sh_big[k % 4] += 7L * size * (size + 1) / 2 + (long)size * k;
            failed += b != sh_big[k % 4];
            s = s * 31 + (unsigned long long)b;
        }

        for (int i = 0; i < (nrank + 1) * 4; i++)
            shared[i] = nrank * 1000 + i + 3 * k;
        MPI_Win_fence(0, wsh);
        unsigned *now;
        MPI_Aint now_size;
        MPI_Win_shared_query(wsh, nright, &now_size, &unit, &now);
        failed += now != theirs || now_size != theirs_size;
        unsigned long long ssum = 0, node_sum;
        for (int i = 0; i < theirs_size / unit; i++) {
            failed += theirs[i] != (unsigned)(nright * 1000 + i + 3 * k);
            ssum = ssum * 3 + theirs[i];
        }
        MPI_Win_fence(0, wsh);
        MPI_Allreduce(&ssum, &node_sum, 1, MPI_UNSIGNED_LONG_LONG, MPI_SUM, node);
        s = s * 31 + node_sum;
        sum = sum * 1000003u + s + k;
        unsigned pv = 7000 * (rank + 1) + k, po = 300 * (rank + 1) + k;
        MPI_Put(&pv, 1, MPI_UNSIGNED, right, k % N, 1, MPI_UNSIGNED, wla);
        MPI_Win_flush(right, wla);
        MPI_Win_lock(MPI_LOCK_EXCLUSIVE, right, 0, wlo);
        MPI_Put(&po, 1, MPI_UNSIGNED, right, k % N, 1, MPI_UNSIGNED, wlo);
        usleep(20000);
        MPI_Win_unlock(right, wlo);
        MPI_Barrier(MPI_COMM_WORLD);
        MPI_Win_sync(wla);
        failed += lk_all[k % N] != 7000u * (left + 1) + k;
        failed += lk_one[k % N] != 300u * (left + 1) + k;
        sum = sum * 31 + lk_all[k % N] + lk_one[k % N];
        MPI_Barrier(MPI_COMM_WORLD);
    }
    MPI_Win_unlock_all(wla);
    MPI_Win_free(&wla);
    MPI_Win_free(&wlo);
    MPI_Win_free(&wsh);
    MPI_Comm_free(&node);
    MPI_Win_free(&w2);
    MPI_Win_free(&win_c);
    MPI_Win_free(&win);
    MPI_Win_free(&wm);
    MPI_Free_mem(mem);

    unsigned long long all[256], total = 0;
    int failed_all;
    MPI_Gather(&sum, 1, MPI_UNSIGNED_LONG_LONG, all, 1, MPI_UNSIGNED_LONG_LONG, 0, MPI_COMM_WORLD);
    MPI_Allreduce(&failed, &failed_all, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0) {
        for (int r = 0; r < size; r++)
            total = total * 1000003u + all[r];
        printf("rma done: %llx failed %d\n", total, failed_all);
    }
    return failed_all;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (argc > 1 && strcmp(argv[1], "--loop") == 0) {
        int rounds = argc > 2 ? atoi(argv[2]) : 0, failed = 1;
        if (rounds < 1 || size > 256) {
            if (rank == 0)
                fprintf(stderr, "usage: rma [--loop N] (N >= 1, at most 256 ranks)\n");
        } else
            failed = loop(rank, size, rounds);
        MPI_Finalize();
        return failed ? 1 : 0;
    }
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
