/* Which calls set a status's MPI_ERROR field and which leave it alone (MPICH: Waitall and
 * Sendrecv_replace and Iprobe/Probe set it; Wait, Test, Recv, Sendrecv, Testall, the
 * any/some variants, Mprobe and Mrecv do not). Under MANA, where blocking calls are
 * nonblocking ones plus test loops, the application must see the same. 2 ranks. */
#include <mpi.h>
#include <stdio.h>

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int r, a = 1, b, f, n, idx, ids[2];
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
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
