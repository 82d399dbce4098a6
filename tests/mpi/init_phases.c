/* A job that computes before MPI_Init and after MPI_Finalize, so that a checkpoint can
 * land outside its MPI lifetime (issue 9 item 5).
 *
 *   init_phases [PRE_STEPS [POST_STEPS [--query] [--skew] [--late0=STEPS]]]
 *
 * Before MPI_Init each rank (PMI_RANK) advances a state in PRE_STEPS steps of 10 ms (a
 * heap buffer and a hash chain), printing `init_phases pre ready rank=R` first; MPI then
 * sums the ranks' states (MPI_Allreduce) and passes them round a ring; after MPI_Finalize
 * each rank prints `init_phases post ready rank=R`, advances its state with that sum in
 * POST_STEPS more steps, checks MPI_Initialized/MPI_Finalized, and prints
 * `init_phases done rank=R result=…` (and `init_phases init rank=R` right before
 * MPI_Init). With --query the program asks MPI_Initialized and
 * MPI_Get_version before computing (as Python bindings do at import; the latter loads a
 * lower half under MANA), so MPI exists but is not initialized while it computes. With
 * --skew rank 0 computes a tenth of PRE_STEPS only and waits inside MPI_Init for the
 * others. With --late0=STEPS rank 0 computes STEPS more steps between its last MPI call
 * and MPI_Finalize (`init_phases late rank=0` first), while the others finalize, print
 * their done line and exit. A checkpoint interrupts a sleep (EINTR): steps are counted, not timed, so the
 * result does not depend on when checkpoints come. */
#include <errno.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WORDS 4096

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static void nap(void)
{
    struct timespec ts = {0, 10 * 1000 * 1000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* One step: every word of the buffer moves, the state absorbs it. */
static uint64_t step(uint64_t *buf, uint64_t state, uint64_t salt)
{
    for (int i = 0; i < WORDS; i++) {
        buf[i] = mix(buf[i] ^ state ^ salt);
        state ^= buf[i] + (uint64_t)i;
    }
    return mix(state);
}

int main(int argc, char **argv)
{
    int pre = argc > 1 ? atoi(argv[1]) : 150;
    int post = argc > 2 ? atoi(argv[2]) : 150;
    int query = 0, skew = 0, late0 = 0;
    for (int i = 3; i < argc; i++) {
        query |= strcmp(argv[i], "--query") == 0;
        skew |= strcmp(argv[i], "--skew") == 0;
        if (strncmp(argv[i], "--late0=", 8) == 0)
            late0 = atoi(argv[i] + 8);
    }
    const char *r = getenv("PMI_RANK");
    int prank = r ? atoi(r) : 0;
    int flag = -1, version = 0, subversion = 0;
    if (query) {
        MPI_Initialized(&flag);
        MPI_Get_version(&version, &subversion);
    }
    if (skew && prank == 0)
        pre /= 10;
    uint64_t *buf = malloc(WORDS * sizeof *buf);
    for (int i = 0; i < WORDS; i++)
        buf[i] = mix((uint64_t)i * 7919 + (uint64_t)prank);
    uint64_t state = mix(0x1234u + (uint64_t)prank);
    printf("init_phases pre ready rank=%d initialized=%d version=%d.%d\n", prank, flag, version, subversion);
    fflush(stdout);
    for (int i = 0; i < pre; i++) {
        state = step(buf, state, (uint64_t)i);
        nap();
    }

    printf("init_phases init rank=%d\n", prank);
    fflush(stdout);
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (rank != prank) {
        fprintf(stderr, "init_phases: MPI rank %d but PMI_RANK %d\n", rank, prank);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    uint64_t sum = 0, left = 0;
    MPI_Allreduce(&state, &sum, 1, MPI_UINT64_T, MPI_SUM, MPI_COMM_WORLD);
    MPI_Sendrecv(&state, 1, MPI_UINT64_T, (rank + 1) % size, 7, &left, 1, MPI_UINT64_T,
                 (rank + size - 1) % size, 7, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    printf("init_phases mpi rank=%d size=%d sum=%016llx\n", rank, size, (unsigned long long)sum);
    fflush(stdout);
    if (rank == 0 && late0 > 0) {
        printf("init_phases late rank=0\n");
        fflush(stdout);
        for (int i = 0; i < late0; i++) {
            state = step(buf, state, sum ^ (uint64_t)i);
            nap();
        }
    }
    MPI_Finalize();

    printf("init_phases post ready rank=%d\n", rank);
    fflush(stdout);
    for (int i = 0; i < post; i++) {
        state = step(buf, state, sum ^ left ^ (uint64_t)i);
        nap();
    }
    int initialized = -1, finalized = -1;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    printf("init_phases done rank=%d initialized=%d finalized=%d result=%016llx\n", rank, initialized,
           finalized, (unsigned long long)state);
    free(buf);
    return 0;
}
