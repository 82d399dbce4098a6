/* MPI_THREAD_MULTIPLE: four threads per rank exchange messages with the partner rank
 * (rank ^ 1) concurrently, each on its own tag, keeping thread-local sums; rank 0 prints
 * every thread's result. Even number of ranks. Built with mpicc.mpich -pthread. */
#include <mpi.h>
#include <pthread.h>
#include <stdio.h>

#define THREADS 4
#define ROUNDS 300

static int rank, size;
static __thread unsigned long tls_sum;
static unsigned long results[THREADS];

static void *worker(void *arg)
{
    int t = (int)(long)arg, partner = rank ^ 1;
    tls_sum = 17 * (t + 1);
    for (int i = 0; i < ROUNDS; i++) {
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
    MPI_Finalize();
    return 0;
}
