/* Messages that a checkpoint's drain takes into the upper half, met afterwards by every kind
 * of probe and receive. 2 ranks.
 *
 * `drained GATE`: rank 1 sends fifteen small messages (tags 1..15, payload 100 + tag) to rank 0
 * on a duplicated communicator, then both ranks pass a barrier and rank 0 prints
 * "drained ready". Rank 0 then waits, outside MPI, until the file GATE exists (a test
 * checkpoints the job meanwhile: the messages are in flight or unexpected, so the drain
 * take them; rank 1 meanwhile waits in a receive from rank 0). Then rank 0 meets them in this order:
 *   Iprobe(tag 1), Mprobe(tag 2)+Mrecv, Improbe(tag 3)+Imrecv+Wait, Irecv(tag 4)+Wait,
 *   Irecv(tag 5)+Test, Irecv(tag 6)+Waitall, Irecv(tag 7)+Testall, Irecv(tag 8)+Waitany,
 *   Irecv(tag 9)+Testany, Irecv(tag 10)+Waitsome, Irecv(tag 11)+Testsome,
 *   Probe(ANY_TAG) (must see tag 1: non-overtaking), Recv(ANY_SOURCE, ANY_TAG) for tags 1,
 *   12, 13 in order, MPI_Isendrecv (send tag 20, receive tag 14)+Wait and
 *   MPI_Isendrecv_replace (send tag 21, receive tag 15)+Wait, whose sends rank 1 receives
 *   with MPI_Recv and checks;
 *   then two messages rank 0 sent itself on MPI_COMM_SELF with MPI_Isend before the
 *   barrier (tags 30 and 31, payloads 130 and 131: MPICH completes such a send only when a
 *   receive matches it): Recv(tag 31), Recv(ANY_TAG), Waitall of the two sends; and
 *   whether the MPI_Issend to itself rank 0 cancelled then (tag 40, waited for) was
 *   cancelled (one more, tag 41, cancelled and freed at once, must not be drained);
 * each status's MPI_ERROR starts as -7 and is printed as the call left it, with source, tag,
 * count and payload. With GATE existing from the start (a native run) nothing is drained:
 * the output must be the same. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static void show(const char *call, const MPI_Status *st, int payload)
{
    int n;
    MPI_Get_count(st, MPI_INT, &n);
    printf("%-8s source %d tag %d count %d MPI_ERROR %d payload %d\n", call, st->MPI_SOURCE, st->MPI_TAG, n,
           st->MPI_ERROR, payload);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int r, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (argc != 2 || size != 2) {
        if (r == 0)
            fprintf(stderr, "usage: drained GATE (2 ranks)\n");
        MPI_Finalize();
        return 2;
    }
    MPI_Comm comm;
    MPI_Comm_dup(MPI_COMM_WORLD, &comm);
    if (r == 1)
        for (int tag = 1; tag <= 15; tag++) {
            int v = 100 + tag;
            MPI_Send(&v, 1, MPI_INT, 0, tag, comm);
        }
    int to_self[2] = {130, 131}, cancelled = -1;
    MPI_Request self_sends[2];
    if (r == 0) {
        for (int i = 0; i < 2; i++)
            MPI_Isend(&to_self[i], 1, MPI_INT, 0, 30 + i, MPI_COMM_SELF, &self_sends[i]);
        /* Two more cancelled: one waited for, one freed. */
        int x = 140;
        MPI_Request c;
        MPI_Status cs;
        MPI_Issend(&x, 1, MPI_INT, 0, 40, MPI_COMM_SELF, &c);
        MPI_Cancel(&c);
        MPI_Wait(&c, &cs);
        MPI_Test_cancelled(&cs, &cancelled);
        MPI_Issend(&x, 1, MPI_INT, 0, 41, MPI_COMM_SELF, &c);
        MPI_Cancel(&c);
        MPI_Request_free(&c);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    if (r == 0) {
        printf("drained ready\n");
        fflush(stdout);
        while (access(argv[1], F_OK) != 0)
            usleep(10000);
        MPI_Status st;
        MPI_Message m;
        MPI_Request q[1];
        int b = -1, f = 0;
        st.MPI_ERROR = -7;
        while (!f)
            MPI_Iprobe(1, 1, comm, &f, &st);
        show("Iprobe", &st, b);
        st.MPI_ERROR = -7;
        MPI_Mprobe(1, 2, comm, &m, &st);
        show("Mprobe", &st, b);
        st.MPI_ERROR = -7;
        MPI_Mrecv(&b, 1, MPI_INT, &m, &st);
        show("Mrecv", &st, b);
        st.MPI_ERROR = -7;
        for (f = 0; !f;)
            MPI_Improbe(1, 3, comm, &f, &m, &st);
        show("Improbe", &st, b);
        st.MPI_ERROR = -7;
        MPI_Imrecv(&b, 1, MPI_INT, &m, &q[0]);
        MPI_Wait(&q[0], &st);
        show("Imrecv", &st, b);
        st.MPI_ERROR = -7;
        MPI_Irecv(&b, 1, MPI_INT, 1, 4, comm, &q[0]);
        MPI_Wait(&q[0], &st);
        show("Wait", &st, b);
        st.MPI_ERROR = -7;
        MPI_Irecv(&b, 1, MPI_INT, 1, 5, comm, &q[0]);
        for (f = 0; !f;)
            MPI_Test(&q[0], &f, &st);
        show("Test", &st, b);
        st.MPI_ERROR = -7;
        MPI_Irecv(&b, 1, MPI_INT, 1, 6, comm, &q[0]);
        MPI_Waitall(1, q, &st);
        show("Waitall", &st, b);
        st.MPI_ERROR = -7;
        MPI_Irecv(&b, 1, MPI_INT, 1, 7, comm, &q[0]);
        for (f = 0; !f;)
            MPI_Testall(1, q, &f, &st);
        show("Testall", &st, b);
        int idx, n;
        st.MPI_ERROR = -7;
        MPI_Irecv(&b, 1, MPI_INT, 1, 8, comm, &q[0]);
        MPI_Waitany(1, q, &idx, &st);
        show("Waitany", &st, b);
        st.MPI_ERROR = -7;
        MPI_Irecv(&b, 1, MPI_INT, 1, 9, comm, &q[0]);
        for (f = 0; !f;)
            MPI_Testany(1, q, &idx, &f, &st);
        show("Testany", &st, b);
        st.MPI_ERROR = -7;
        MPI_Irecv(&b, 1, MPI_INT, 1, 10, comm, &q[0]);
        MPI_Waitsome(1, q, &n, &idx, &st);
        show("Waitsome", &st, b);
        st.MPI_ERROR = -7;
        MPI_Irecv(&b, 1, MPI_INT, 1, 11, comm, &q[0]);
        for (n = 0; !n;)
            MPI_Testsome(1, q, &n, &idx, &st);
        show("Testsome", &st, b);
        st.MPI_ERROR = -7;
        MPI_Probe(MPI_ANY_SOURCE, MPI_ANY_TAG, comm, &st);
        show("Probe", &st, b);
        for (int i = 0; i < 3; i++) {
            st.MPI_ERROR = -7;
            MPI_Recv(&b, 1, MPI_INT, MPI_ANY_SOURCE, MPI_ANY_TAG, comm, &st);
            show("Recv", &st, b);
        }
        int out = 500;
        st.MPI_ERROR = -7;
        MPI_Isendrecv(&out, 1, MPI_INT, 1, 20, &b, 1, MPI_INT, 1, 14, comm, &q[0]);
        MPI_Wait(&q[0], &st);
        show("Isendrecv", &st, b);
        b = 600;
        st.MPI_ERROR = -7;
        MPI_Isendrecv_replace(&b, 1, MPI_INT, 1, 21, 1, 15, comm, &q[0]);
        MPI_Wait(&q[0], &st);
        show("Isendrecv_replace", &st, b);
        st.MPI_ERROR = -7;
        MPI_Recv(&b, 1, MPI_INT, 0, 31, MPI_COMM_SELF, &st);
        show("Recv self", &st, b);
        st.MPI_ERROR = -7;
        MPI_Recv(&b, 1, MPI_INT, 0, MPI_ANY_TAG, MPI_COMM_SELF, &st);
        show("Recv self", &st, b);
        MPI_Status self_st[2];
        MPI_Waitall(2, self_sends, self_st);
        printf("cancelled self send: %d\n", cancelled);
        MPI_Send(&b, 1, MPI_INT, 1, 99, MPI_COMM_WORLD);
    } else {
        /* Rank 1 waits in a point-to-point receive, not a collective: a checkpoint must not
         * need rank 0 to leave its wait for the gate. */
        int b, c;
        MPI_Recv(&b, 1, MPI_INT, 0, 20, comm, MPI_STATUS_IGNORE);
        MPI_Recv(&c, 1, MPI_INT, 0, 21, comm, MPI_STATUS_IGNORE);
        if (b != 500 || c != 600) {
            fprintf(stderr, "drained: rank 1 received %d and %d from the send-receives, not 500 and 600\n", b, c);
            MPI_Abort(MPI_COMM_WORLD, 3);
        }
        MPI_Recv(&b, 1, MPI_INT, 0, 99, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    }
    MPI_Comm_free(&comm);
    if (r == 0)
        printf("drained done\n");
    MPI_Finalize();
    return 0;
}
