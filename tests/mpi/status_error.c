/* Which calls set a status's MPI_ERROR field and which leave it alone (MPICH: Waitall and
 * Sendrecv_replace and Iprobe/Probe set it; Wait, Test, Recv, Sendrecv, Testall, the
 * any/some variants, Mprobe and Mrecv do not). Under MANA, where blocking calls are
 * nonblocking ones plus test loops, the application must see the same. 2 ranks.
 * `status_error --loop N` (even number of ranks, partner rank ^ 1): the same calls on a communicator
 * duplicated once, N rounds 20 ms apart after "status_error ready"; every round's MPI_ERROR fields
 * must equal the first round's; prints "status_error done: <checksum> failed <checks>". */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CALLS 15

/* One round of --loop mode: the calls of the no-argument mode, in the same order, on comm with
 * payloads made from the round number k. Stores each call's MPI_ERROR in err, counts wrong
 * payloads in *failed and returns a checksum of what arrived. */
static unsigned long long round_calls(MPI_Comm comm, int r, int o, int k, int err[CALLS], int *failed)
{
    int a, b, f, n, idx, ids[2], c = 0;
    MPI_Status st, sts[2];
    MPI_Request q[2];
    MPI_Message m;
    unsigned long long s = 0;
#define SEND(tag) (a = k * 1000 + r * 100 + (tag))
#define GOT(tag)                                                                         \
    *failed += b != k * 1000 + o * 100 + (tag);                                          \
    s = s * 31 + (unsigned)b
    st.MPI_ERROR = -7;
    SEND(1);
    MPI_Sendrecv(&a, 1, MPI_INT, o, 1, &b, 1, MPI_INT, o, 1, comm, &st);
    err[c++] = st.MPI_ERROR;
    GOT(1);
    st.MPI_ERROR = -7;
    b = SEND(1);
    MPI_Sendrecv_replace(&b, 1, MPI_INT, o, 1, o, 1, comm, &st);
    err[c++] = st.MPI_ERROR;
    GOT(1);
    st.MPI_ERROR = -7;
    SEND(2);
    MPI_Irecv(&b, 1, MPI_INT, o, 2, comm, &q[0]);
    MPI_Send(&a, 1, MPI_INT, o, 2, comm);
    MPI_Wait(&q[0], &st);
    err[c++] = st.MPI_ERROR;
    GOT(2);
    st.MPI_ERROR = -7;
    SEND(3);
    MPI_Irecv(&b, 1, MPI_INT, o, 3, comm, &q[0]);
    MPI_Send(&a, 1, MPI_INT, o, 3, comm);
    for (f = 0; !f;)
        MPI_Test(&q[0], &f, &st);
    err[c++] = st.MPI_ERROR;
    GOT(3);
    sts[0].MPI_ERROR = sts[1].MPI_ERROR = -7;
    SEND(4);
    MPI_Irecv(&b, 1, MPI_INT, o, 4, comm, &q[0]);
    MPI_Isend(&a, 1, MPI_INT, o, 4, comm, &q[1]);
    MPI_Waitall(2, q, sts);
    err[c++] = sts[0].MPI_ERROR + 100 * sts[1].MPI_ERROR;
    GOT(4);
    sts[0].MPI_ERROR = sts[1].MPI_ERROR = -7;
    SEND(5);
    MPI_Irecv(&b, 1, MPI_INT, o, 5, comm, &q[0]);
    MPI_Isend(&a, 1, MPI_INT, o, 5, comm, &q[1]);
    for (f = 0; !f;)
        MPI_Testall(2, q, &f, sts);
    err[c++] = sts[0].MPI_ERROR + 100 * sts[1].MPI_ERROR;
    GOT(5);
    st.MPI_ERROR = -7;
    SEND(6);
    MPI_Send(&a, 1, MPI_INT, o, 6, comm);
    MPI_Recv(&b, 1, MPI_INT, o, 6, comm, &st);
    err[c++] = st.MPI_ERROR;
    GOT(6);
    st.MPI_ERROR = -7;
    SEND(7);
    MPI_Send(&a, 1, MPI_INT, o, 7, comm);
    MPI_Probe(o, 7, comm, &st);
    err[c++] = st.MPI_ERROR;
    MPI_Recv(&b, 1, MPI_INT, o, 7, comm, &st);
    GOT(7);
    st.MPI_ERROR = -7;
    SEND(8);
    MPI_Irecv(&b, 1, MPI_INT, o, 8, comm, &q[0]);
    MPI_Send(&a, 1, MPI_INT, o, 8, comm);
    MPI_Waitany(1, q, &idx, &st);
    err[c++] = st.MPI_ERROR;
    GOT(8);
    st.MPI_ERROR = -7;
    SEND(9);
    MPI_Irecv(&b, 1, MPI_INT, o, 9, comm, &q[0]);
    MPI_Send(&a, 1, MPI_INT, o, 9, comm);
    for (f = 0; !f;)
        MPI_Testany(1, q, &idx, &f, &st);
    err[c++] = st.MPI_ERROR;
    GOT(9);
    sts[0].MPI_ERROR = -7;
    SEND(10);
    MPI_Irecv(&b, 1, MPI_INT, o, 10, comm, &q[0]);
    MPI_Send(&a, 1, MPI_INT, o, 10, comm);
    MPI_Waitsome(1, q, &n, ids, sts);
    err[c++] = sts[0].MPI_ERROR;
    GOT(10);
    sts[0].MPI_ERROR = -7;
    SEND(11);
    MPI_Irecv(&b, 1, MPI_INT, o, 11, comm, &q[0]);
    MPI_Send(&a, 1, MPI_INT, o, 11, comm);
    for (n = 0; !n;)
        MPI_Testsome(1, q, &n, ids, sts);
    err[c++] = sts[0].MPI_ERROR;
    GOT(11);
    st.MPI_ERROR = -7;
    SEND(12);
    MPI_Send(&a, 1, MPI_INT, o, 12, comm);
    for (f = 0; !f;)
        MPI_Iprobe(o, 12, comm, &f, &st);
    err[c++] = st.MPI_ERROR;
    st.MPI_ERROR = -7;
    MPI_Mprobe(o, 12, comm, &m, &st);
    err[c++] = st.MPI_ERROR;
    st.MPI_ERROR = -7;
    MPI_Mrecv(&b, 1, MPI_INT, &m, &st);
    err[c++] = st.MPI_ERROR;
    GOT(12);
#undef GOT
#undef SEND
    for (int i = 0; i < CALLS; i++)
        s = s * 31 + (unsigned)err[i];
    return s;
}

static int loop(int r, int size, int rounds)
{
    MPI_Comm comm;
    MPI_Comm_dup(MPI_COMM_WORLD, &comm);
    if (r == 0) {
        printf("status_error ready\n");
        fflush(stdout);
    }
    int first[CALLS], err[CALLS], failed = 0;
    unsigned long long sum = 0;
    for (int k = 0; k < rounds; k++) {
        sum = sum * 1000003u + round_calls(comm, r, r ^ 1, k, k ? err : first, &failed) + k;
        for (int i = 0; k && i < CALLS; i++)
            failed += err[i] != first[i];
        usleep(20000);
    }
    MPI_Comm_free(&comm);
    unsigned long long all[256], total = 0;
    int failed_all;
    MPI_Gather(&sum, 1, MPI_UNSIGNED_LONG_LONG, all, 1, MPI_UNSIGNED_LONG_LONG, 0, MPI_COMM_WORLD);
    MPI_Allreduce(&failed, &failed_all, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (r == 0) {
        for (int i = 0; i < size; i++)
            total = total * 1000003u + all[i];
        printf("status_error done: %llx failed %d\n", total, failed_all);
    }
    return failed_all;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int r, a = 1, b, f, n, idx, ids[2];
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    if (argc > 1 && strcmp(argv[1], "--loop") == 0) {
        int rounds = argc > 2 ? atoi(argv[2]) : 0, size, failed = 1;
        MPI_Comm_size(MPI_COMM_WORLD, &size);
        if (rounds < 1 || size % 2 || size > 256) {
            if (r == 0)
                fprintf(stderr, "usage: status_error [--loop N] (N >= 1, an even number of ranks up to 256)\n");
        } else
            failed = loop(r, size, rounds);
        MPI_Finalize();
        return failed ? 1 : 0;
    }
    int o = 1 - r;
    MPI_Status st, sts[2];
    MPI_Request q[2];
    MPI_Message m;
#define SHOW(name, x)                                                                    \
    if (r == 0)                                                                          \
    printf("%-18s MPI_ERROR %d\n", name, x)
    st.MPI_ERROR = -7;
    MPI_Sendrecv(&a, 1, MPI_INT, o, 1, &b, 1, MPI_INT, o, 1, MPI_COMM_WORLD, &st);
    SHOW("Sendrecv", st.MPI_ERROR);
    st.MPI_ERROR = -7;
    MPI_Sendrecv_replace(&a, 1, MPI_INT, o, 1, o, 1, MPI_COMM_WORLD, &st);
    SHOW("Sendrecv_replace", st.MPI_ERROR);
    st.MPI_ERROR = -7;
    MPI_Irecv(&b, 1, MPI_INT, o, 2, MPI_COMM_WORLD, &q[0]);
    MPI_Send(&a, 1, MPI_INT, o, 2, MPI_COMM_WORLD);
    MPI_Wait(&q[0], &st);
    SHOW("Wait", st.MPI_ERROR);
    st.MPI_ERROR = -7;
    MPI_Irecv(&b, 1, MPI_INT, o, 3, MPI_COMM_WORLD, &q[0]);
    MPI_Send(&a, 1, MPI_INT, o, 3, MPI_COMM_WORLD);
    for (f = 0; !f;)
        MPI_Test(&q[0], &f, &st);
    SHOW("Test", st.MPI_ERROR);
    sts[0].MPI_ERROR = sts[1].MPI_ERROR = -7;
    MPI_Irecv(&b, 1, MPI_INT, o, 4, MPI_COMM_WORLD, &q[0]);
    MPI_Isend(&a, 1, MPI_INT, o, 4, MPI_COMM_WORLD, &q[1]);
    MPI_Waitall(2, q, sts);
    SHOW("Waitall", sts[0].MPI_ERROR + 100 * sts[1].MPI_ERROR);
    sts[0].MPI_ERROR = sts[1].MPI_ERROR = -7;
    MPI_Irecv(&b, 1, MPI_INT, o, 5, MPI_COMM_WORLD, &q[0]);
    MPI_Isend(&a, 1, MPI_INT, o, 5, MPI_COMM_WORLD, &q[1]);
    for (f = 0; !f;)
        MPI_Testall(2, q, &f, sts);
    SHOW("Testall", sts[0].MPI_ERROR + 100 * sts[1].MPI_ERROR);
    st.MPI_ERROR = -7;
    MPI_Send(&a, 1, MPI_INT, o, 6, MPI_COMM_WORLD);
    MPI_Recv(&b, 1, MPI_INT, o, 6, MPI_COMM_WORLD, &st);
    SHOW("Recv", st.MPI_ERROR);
    st.MPI_ERROR = -7;
    MPI_Send(&a, 1, MPI_INT, o, 7, MPI_COMM_WORLD);
    MPI_Probe(o, 7, MPI_COMM_WORLD, &st);
    SHOW("Probe", st.MPI_ERROR);
    MPI_Recv(&b, 1, MPI_INT, o, 7, MPI_COMM_WORLD, &st);
    st.MPI_ERROR = -7;
    MPI_Irecv(&b, 1, MPI_INT, o, 8, MPI_COMM_WORLD, &q[0]);
    MPI_Send(&a, 1, MPI_INT, o, 8, MPI_COMM_WORLD);
    MPI_Waitany(1, q, &idx, &st);
    SHOW("Waitany", st.MPI_ERROR);
    st.MPI_ERROR = -7;
    MPI_Irecv(&b, 1, MPI_INT, o, 9, MPI_COMM_WORLD, &q[0]);
    MPI_Send(&a, 1, MPI_INT, o, 9, MPI_COMM_WORLD);
    for (f = 0; !f;)
        MPI_Testany(1, q, &idx, &f, &st);
    SHOW("Testany", st.MPI_ERROR);
    sts[0].MPI_ERROR = -7;
    MPI_Irecv(&b, 1, MPI_INT, o, 10, MPI_COMM_WORLD, &q[0]);
    MPI_Send(&a, 1, MPI_INT, o, 10, MPI_COMM_WORLD);
    MPI_Waitsome(1, q, &n, ids, sts);
    SHOW("Waitsome", sts[0].MPI_ERROR);
    sts[0].MPI_ERROR = -7;
    MPI_Irecv(&b, 1, MPI_INT, o, 11, MPI_COMM_WORLD, &q[0]);
    MPI_Send(&a, 1, MPI_INT, o, 11, MPI_COMM_WORLD);
    for (n = 0; !n;)
        MPI_Testsome(1, q, &n, ids, sts);
    SHOW("Testsome", sts[0].MPI_ERROR);
    st.MPI_ERROR = -7;
    MPI_Send(&a, 1, MPI_INT, o, 12, MPI_COMM_WORLD);
    for (f = 0; !f;)
        MPI_Iprobe(o, 12, MPI_COMM_WORLD, &f, &st);
    SHOW("Iprobe", st.MPI_ERROR);
    st.MPI_ERROR = -7;
    MPI_Mprobe(o, 12, MPI_COMM_WORLD, &m, &st);
    SHOW("Mprobe", st.MPI_ERROR);
    st.MPI_ERROR = -7;
    MPI_Mrecv(&b, 1, MPI_INT, &m, &st);
    SHOW("Mrecv", st.MPI_ERROR);
    MPI_Finalize();
    return 0;
}
