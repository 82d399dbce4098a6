/* MPI_THREAD_MULTIPLE: four threads per rank exchange messages with the partner rank
 * (rank ^ 1) concurrently, each on its own tag, keeping thread-local sums; rank 0 prints
 * every thread's result. Then 48 short-lived threads per rank do the same briefly (more
 * threads call MPI than MANA prepares lower-half TCBs for up front). Even number of
 * ranks. Built with mpicc.mpich -pthread. */
#include <mpi.h>
#include <pthread.h>
#include <stdio.h>

#define THREADS 4
#define ROUNDS 300
#define MANY 48

static int rank, size, rounds = ROUNDS;
static __thread unsigned long tls_sum;
static unsigned long results[MANY];

static void *worker(void *arg)
{
    int t = (int)(long)arg, partner = rank ^ 1;
    tls_sum = 17 * (t + 1);
    for (int i = 0; i < rounds; i++) {
        unsigned long out = (unsigned long)rank * 1000003u + t * 7919u + i, in = 0;
        MPI_Sendrecv(&out, 1, MPI_UNSIGNED_LONG, partner, t, &in, 1, MPI_UNSIGNED_LONG, partner, t,
                     MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        tls_sum = tls_sum * 31 + in;
    }
    results[t] = tls_sum;
    return NULL;
}

int main(int argc, char **argv)
{
    int provided;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (provided < MPI_THREAD_MULTIPLE || size % 2) {
        if (rank == 0)
            printf("needs MPI_THREAD_MULTIPLE and an even number of ranks (provided %d)\n", provided);
        MPI_Finalize();
        return 0;
    }
    pthread_t th[THREADS];
    for (long t = 0; t < THREADS; t++)
        pthread_create(&th[t], NULL, worker, (void *)t);
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    unsigned long all[THREADS * 64];
    MPI_Gather(results, THREADS, MPI_UNSIGNED_LONG, all, THREADS, MPI_UNSIGNED_LONG, 0, MPI_COMM_WORLD);
    if (rank == 0) {
        printf("thread-multiple provided=%d ranks=%d threads=%d\n", provided, size, THREADS);
        for (int r = 0; r < size; r++)
            for (int t = 0; t < THREADS; t++)
                printf("rank %d thread %d sum %lx\n", r, t, all[r * THREADS + t]);
    }
    pthread_t many[MANY];
    rounds = 10;
    for (long t = 0; t < MANY; t++)
        pthread_create(&many[t], NULL, worker, (void *)t);
    for (int t = 0; t < MANY; t++)
        pthread_join(many[t], NULL);
    unsigned long mix = 0;
    for (int t = 0; t < MANY; t++)
        mix = mix * 1000003u + results[t];
    unsigned long mixes[64];
    MPI_Gather(&mix, 1, MPI_UNSIGNED_LONG, mixes, 1, MPI_UNSIGNED_LONG, 0, MPI_COMM_WORLD);
    if (rank == 0)
        for (int r = 0; r < size; r++)
            printf("rank %d: %d more threads, combined sum %lx\n", r, MANY, mixes[r]);
    MPI_Finalize();
    return 0;
}
