/* Synchronous sends in flight at a checkpoint stay incomplete until their receiver's
 * application receives them (MPI: an MPI_Ssend/MPI_Issend completes only once the matching
 * receive has started). 2 ranks, MPI_THREAD_MULTIPLE.
 *
 * `ssend_drain GATE`: every rank sends its peer three messages with tag 5 — MPI_Send (a),
 * MPI_Issend (b), MPI_Isend (c), in that order, so the drain receives the synchronous one
 * between two standard ones — and itself an MPI_Issend with tag 7 on a duplicate of
 * MPI_COMM_WORLD and one with tag 8 on MPI_COMM_SELF; a second thread blocks in MPI_Ssend to the peer with tag 11. Both ranks
 * pass a barrier and rank 0 prints "ssend ready". Every rank then waits, outside MPI, until
 * the file GATE exists (a test checkpoints the job meanwhile, and may kill and restart it:
 * the drain receives every message into the upper half). Then each rank tests its three
 * synchronous requests and looks whether the blocked thread returned — natively none can
 * have completed, since nobody has received yet: each one that did counts as "early" —,
 * passes a barrier, receives everything (checking values and order), waits for all and
 * joins the thread. A fifth synchronous send, to itself with tag 9, is cancelled after the
 * gate: natively MPICH cancels it; after a drain it can no longer be (it completes when
 * received) — either way its message must be gone if the status says cancelled, and
 * received with its value if not (else "wrong"). Rank 0 prints
 * "ssend_drain done: early <E> wrong <W>".
 *
 * Before src/ssend.c the drain's receive completed all four synchronous sends: early 8. */
#include <mpi.h>
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

static int rank, peer;
static volatile int thread_returned;

static void *blocked_ssend(void *arg)
{
    static int v;
    v = 1100 + rank;
    MPI_Ssend(&v, 1, MPI_INT, peer, 11, MPI_COMM_WORLD);
    thread_returned = 1;
    return arg;
}

int main(int argc, char **argv)
{
    int provided;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    if (provided != MPI_THREAD_MULTIPLE) {
        printf("ssend_drain: MPI_THREAD_MULTIPLE not provided\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    int size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    peer = (rank + 1) % size;
    MPI_Comm dup;
    MPI_Comm_dup(MPI_COMM_WORLD, &dup);
    int a = 100 + rank, b = 200 + rank, c = 300 + rank, d = 700 + rank, e8 = 800 + rank, f = 900 + rank;
    MPI_Request rq[5];
    MPI_Send(&a, 1, MPI_INT, peer, 5, MPI_COMM_WORLD);
    MPI_Issend(&b, 1, MPI_INT, peer, 5, MPI_COMM_WORLD, &rq[0]);
    MPI_Isend(&c, 1, MPI_INT, peer, 5, MPI_COMM_WORLD, &rq[1]);
    MPI_Issend(&d, 1, MPI_INT, rank, 7, dup, &rq[2]);
    MPI_Issend(&e8, 1, MPI_INT, 0, 8, MPI_COMM_SELF, &rq[3]);
    MPI_Issend(&f, 1, MPI_INT, rank, 9, MPI_COMM_WORLD, &rq[4]);
    pthread_t t;
    pthread_create(&t, NULL, blocked_ssend, NULL);
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) {
        printf("ssend ready\n");
        fflush(stdout);
    }
    const char *gate = argc > 1 ? argv[1] : "";
    while (*gate && access(gate, F_OK) != 0)
        usleep(10000);
    usleep(100000); /* a blocked thread's send that completed wrongly has returned by now */
    int early = 0, wrong = 0, flag;
    MPI_Test(&rq[0], &flag, MPI_STATUS_IGNORE);
    early += flag;
    MPI_Test(&rq[2], &flag, MPI_STATUS_IGNORE);
    early += flag;
    MPI_Test(&rq[3], &flag, MPI_STATUS_IGNORE);
    early += flag;
    early += thread_returned;
    /* Neither side can wait for the cancelled send first: if the cancel does not succeed,
     * the send completes only once this rank receives it. So: until the request completes,
     * receive the message whenever it is there. */
    MPI_Cancel(&rq[4]);
    MPI_Status cs;
    int cancelled = 0, there = 0, got = -1, done = 0;
    while (!done) {
        MPI_Test(&rq[4], &done, &cs);
        if (!done && got < 0) {
            MPI_Iprobe(rank, 9, MPI_COMM_WORLD, &there, MPI_STATUS_IGNORE);
            if (there)
                MPI_Recv(&got, 1, MPI_INT, rank, 9, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        }
    }
    MPI_Test_cancelled(&cs, &cancelled);
    if (!cancelled && got < 0)
        MPI_Recv(&got, 1, MPI_INT, rank, 9, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    there = 0;
    MPI_Iprobe(rank, 9, MPI_COMM_WORLD, &there, MPI_STATUS_IGNORE);
    wrong += there + (cancelled ? got >= 0 : got != 900 + rank);
    MPI_Barrier(MPI_COMM_WORLD);
    int in[6];
    for (int i = 0; i < 3; i++)
        MPI_Recv(&in[i], 1, MPI_INT, peer, 5, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    MPI_Recv(&in[3], 1, MPI_INT, rank, 7, dup, MPI_STATUS_IGNORE);
    MPI_Recv(&in[4], 1, MPI_INT, peer, 11, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    MPI_Recv(&in[5], 1, MPI_INT, 0, 8, MPI_COMM_SELF, MPI_STATUS_IGNORE);
    const int want[6] = {100 + peer, 200 + peer, 300 + peer, 700 + rank, 1100 + peer, 800 + rank};
    for (int i = 0; i < 6; i++)
        wrong += in[i] != want[i];
    MPI_Status st[4];
    MPI_Waitall(4, rq, st);
    pthread_join(t, NULL);
    MPI_Comm_free(&dup);
    int e = 0, w = 0;
    MPI_Reduce(&early, &e, 1, MPI_INT, MPI_SUM, 0, MPI_COMM_WORLD);
    MPI_Reduce(&wrong, &w, 1, MPI_INT, MPI_SUM, 0, MPI_COMM_WORLD);
    if (rank == 0)
        printf("ssend_drain done: early %d wrong %d\n", e, w);
    MPI_Finalize();
    return 0;
}
