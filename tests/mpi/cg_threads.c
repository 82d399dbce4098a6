/* MPI_Comm_create_group from several threads of every rank at once, as MPICH's
 * threads/comm/comm_create_group_threads does: four threads per rank, each with its own
 * duplicate of MPI_COMM_WORLD, make a communicator of a group with MPI_Comm_create_group
 * (the thread's number as the tag; even rounds the whole world, odd rounds the ranks of
 * the thread's parity when there are more than two), reduce on it and free it, round after
 * round. MPI_Comm_create_group is collective over its group only: a checkpoint that held a
 * thread at its entry while a peer's thread waited inside for it never converged.
 *
 *   cg_threads --loop N   (2 or more ranks, MPI_THREAD_MULTIPLE)
 *
 * Rank 0 prints "cg_threads ready" once every thread has made its first communicator and
 * "cg_threads done: <checksum> bad=<n>" at the end. */
#include <mpi.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define THREADS 4

static int rank, size, rounds;
static MPI_Comm comms[THREADS];
static unsigned long long sums[THREADS];
static long bad[THREADS];
static pthread_barrier_t started;

static void one_round(int t, int r)
{
    MPI_Group world, g;
    MPI_Comm_group(comms[t], &world);
    int parity = rank % 2, members = 0, *ranks = malloc((size_t)size * sizeof *ranks);
    for (int q = 0; q < size; q++)
        if (r % 2 == 0 || size <= 2 || q % 2 == parity)
            ranks[members++] = q;
    MPI_Group_incl(world, members, ranks, &g);
    MPI_Comm c;
    MPI_Comm_create_group(comms[t], g, t, &c);
    long mine = (long)(rank + 1) * (t + 1) + r, sum = 0, want = 0;
    MPI_Allreduce(&mine, &sum, 1, MPI_LONG, MPI_SUM, c);
    for (int k = 0; k < members; k++)
        want += (long)(ranks[k] + 1) * (t + 1) + r;
    if (sum != want)
        bad[t]++;
    sums[t] = (sums[t] ^ (unsigned long long)sum) * 1099511628211ULL;
    MPI_Comm_free(&c);
    MPI_Group_free(&g);
    MPI_Group_free(&world);
    free(ranks);
}

static void *worker(void *arg)
{
    int t = (int)(long)arg;
    one_round(t, 0);
    pthread_barrier_wait(&started);
    for (int r = 1; r < rounds; r++) {
        one_round(t, r);
        if (r % 8 == 0)
            usleep(1000);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    int provided;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    rounds = argc > 2 && strcmp(argv[1], "--loop") == 0 ? atoi(argv[2]) : 50;
    if (provided < MPI_THREAD_MULTIPLE || size < 2 || rounds < 1) {
        if (rank == 0)
            fprintf(stderr, "cg_threads: needs MPI_THREAD_MULTIPLE, 2 or more ranks, --loop N >= 1\n");
        MPI_Finalize();
        return 2;
    }
    for (int t = 0; t < THREADS; t++)
        MPI_Comm_dup(MPI_COMM_WORLD, &comms[t]);
    pthread_barrier_init(&started, NULL, THREADS + 1);
    pthread_t th[THREADS];
    for (int t = 0; t < THREADS; t++)
        pthread_create(&th[t], NULL, worker, (void *)(long)t);
    pthread_barrier_wait(&started);
    if (rank == 0) {
        printf("cg_threads ready\n");
        fflush(stdout);
    }
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    unsigned long long h = 14695981039346656037ULL;
    long nbad = 0;
    for (int t = 0; t < THREADS; t++) {
        h = (h ^ sums[t]) * 1099511628211ULL;
        nbad += bad[t];
        MPI_Comm_free(&comms[t]);
    }
    h = (h ^ (unsigned long long)(rank + 1)) * 1099511628211ULL;
    unsigned long long all = 0;
    long allbad = 0;
    MPI_Reduce(&h, &all, 1, MPI_UNSIGNED_LONG_LONG, MPI_BXOR, 0, MPI_COMM_WORLD);
    MPI_Reduce(&nbad, &allbad, 1, MPI_LONG, MPI_SUM, 0, MPI_COMM_WORLD);
    if (rank == 0) {
        printf("cg_threads done: %llx bad=%ld\n", all, allbad);
        fflush(stdout);
    }
    MPI_Finalize();
    return 0;
}
