/* MPI_THREAD_MULTIPLE: four threads per rank exchange messages with the partner rank
 * (rank ^ 1) concurrently, each on its own tag, keeping thread-local sums; rank 0 prints
 * every thread's result. Then 48 short-lived threads per rank do the same briefly (more
 * threads call MPI than MANA prepares lower-half TCBs for up front). Even number of
 * ranks. Built with mpicc.mpich -pthread.
 * `threads_multiple --loop N`: four threads per rank live across N rounds (20 ms apart, after
 * "threads_multiple ready"), each doing a Sendrecv, a Send and a Recv on its own tag every round;
 * joined at the end; prints "threads_multiple done: <checksum> failed <checks>". */
#include <mpi.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

/* --loop mode: the main thread opens each round with one barrier and waits for its end at
 * another; between rounds (while it sleeps) the workers wait at the first. */
static pthread_barrier_t round_start, round_end;
static unsigned long round_in[THREADS];
static int worker_failed[THREADS];

static void *loop_worker(void *arg)
{
    int t = (int)(long)arg, partner = rank ^ 1, failed = 0;
    tls_sum = 17 * (t + 1);
    for (int k = 0; k < rounds; k++) {
        pthread_barrier_wait(&round_start);
        unsigned long out = (unsigned long)rank * 1000003u + t * 7919u + k, in = 0, back = 0, reply;
        MPI_Sendrecv(&out, 1, MPI_UNSIGNED_LONG, partner, t, &in, 1, MPI_UNSIGNED_LONG, partner, t, MPI_COMM_WORLD,
                     MPI_STATUS_IGNORE);
        failed += in != (unsigned long)partner * 1000003u + t * 7919u + k;
        reply = in * 3 + rank;
        if (rank % 2 == 0) {
            MPI_Send(&reply, 1, MPI_UNSIGNED_LONG, partner, t, MPI_COMM_WORLD);
            MPI_Recv(&back, 1, MPI_UNSIGNED_LONG, partner, t, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        } else {
            MPI_Recv(&back, 1, MPI_UNSIGNED_LONG, partner, t, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            MPI_Send(&reply, 1, MPI_UNSIGNED_LONG, partner, t, MPI_COMM_WORLD);
        }
        failed += back != out * 3 + partner;
        tls_sum = (tls_sum * 31 + in) * 31 + back;
        round_in[t] = in ^ back;
        pthread_barrier_wait(&round_end);
    }
    results[t] = tls_sum;
    worker_failed[t] = failed;
    return NULL;
}

static int loop(void)
{
    pthread_t th[THREADS];
    pthread_barrier_init(&round_start, NULL, THREADS + 1);
    pthread_barrier_init(&round_end, NULL, THREADS + 1);
    for (long t = 0; t < THREADS; t++)
        pthread_create(&th[t], NULL, loop_worker, (void *)t);
    if (rank == 0) {
        printf("threads_multiple ready\n");
        fflush(stdout);
    }
    unsigned long long sum = 0;
    for (int k = 0; k < rounds; k++) {
        pthread_barrier_wait(&round_start);
        pthread_barrier_wait(&round_end);
        unsigned long long mine = k, all;
        for (int t = 0; t < THREADS; t++)
            mine = mine * 1000003u + round_in[t];
        MPI_Allreduce(&mine, &all, 1, MPI_UNSIGNED_LONG_LONG, MPI_BXOR, MPI_COMM_WORLD);
        sum = sum * 31 + all;
        usleep(20000);
    }
    int failed = 0, failed_all;
    for (int t = 0; t < THREADS; t++) {
        pthread_join(th[t], NULL);
        failed += worker_failed[t];
        sum = sum * 1000003u + results[t];
    }
    pthread_barrier_destroy(&round_start);
    pthread_barrier_destroy(&round_end);
    unsigned long long sums[64], total = 0;
    MPI_Gather(&sum, 1, MPI_UNSIGNED_LONG_LONG, sums, 1, MPI_UNSIGNED_LONG_LONG, 0, MPI_COMM_WORLD);
    MPI_Allreduce(&failed, &failed_all, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0) {
        for (int r = 0; r < size; r++)
            total = total * 1000003u + sums[r];
        printf("threads_multiple done: %llx failed %d\n", total, failed_all);
    }
    return failed_all;
}

int main(int argc, char **argv)
{
    int provided;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (argc > 1 && strcmp(argv[1], "--loop") == 0) {
        int failed = 1;
        rounds = argc > 2 ? atoi(argv[2]) : 0;
        if (rounds < 1 || provided < MPI_THREAD_MULTIPLE || size % 2 || size > 64) {
            if (rank == 0)
                fprintf(stderr, "usage: threads_multiple [--loop N] (N >= 1, MPI_THREAD_MULTIPLE, an even number "
                                "of ranks up to 64; provided %d)\n",
                        provided);
        } else
            failed = loop();
        MPI_Finalize();
        return failed ? 1 : 0;
    }
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
