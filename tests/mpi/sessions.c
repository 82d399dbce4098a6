/* MPI-4's sessions model without MPI_Init: a library-style session, the mpi://WORLD and
 * mpi://SELF process sets, communicators made from their groups (MPICH's init/session*
 * tests do the same), point-to-point and collectives on them; one session stays open for
 * the whole run, the others are made and finalized each round (MPICH 4.0.2 cannot start
 * again once its last session is finalized: natively a SIGSEGV).
 * Under mana_launch MANA needs world ranks for its bookkeeping of such a group while
 * MPI_COMM_WORLD does not exist (it asks a session of its own, finalized at once: one left
 * open kept MPICH from finalizing, and mpiexec killed the job). Any number of ranks. */
#include <mpi.h>
#include <stdio.h>
#include <string.h>

static int round_trip(int round)
{
    MPI_Session s;
    MPI_Group world, self;
    MPI_Comm c;
    MPI_Session_init(MPI_INFO_NULL, MPI_ERRORS_RETURN, &s);
    int npsets = 0;
    MPI_Session_get_num_psets(s, MPI_INFO_NULL, &npsets);
    MPI_Group_from_session_pset(s, "mpi://WORLD", &world);
    MPI_Group_from_session_pset(s, "mpi://SELF", &self);
    MPI_Comm_create_from_group(world, "org.mana-rs.test.sessions", MPI_INFO_NULL, MPI_ERRORS_RETURN, &c);
    int rank, size, gsize, srank;
    MPI_Comm_rank(c, &rank);
    MPI_Comm_size(c, &size);
    MPI_Group_size(self, &gsize);
    MPI_Group_rank(self, &srank);
    /* A ring on the new communicator, then a sum. */
    int next = (rank + 1) % size, prev = (rank + size - 1) % size, got = -1, mine = rank * 10 + round;
    MPI_Sendrecv(&mine, 1, MPI_INT, next, 5, &got, 1, MPI_INT, prev, 5, c, MPI_STATUS_IGNORE);
    long v = got, sum = 0;
    MPI_Allreduce(&v, &sum, 1, MPI_LONG, MPI_SUM, c);
    int ok = got == prev * 10 + round && sum == 10L * size * (size - 1) / 2 + (long)round * size && gsize == 1 &&
             srank == 0 && npsets >= 2;
    int all_ok = 0;
    MPI_Reduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, 0, c);
    if (rank == 0)
        printf("round %d: %d ranks, sum %ld, %s\n", round, size, sum, all_ok ? "ok" : "WRONG");
    MPI_Group_free(&world);
    MPI_Group_free(&self);
    MPI_Comm_free(&c);
    MPI_Session_finalize(&s);
    return all_ok;
}

int main(void)
{
    MPI_Session keep;
    MPI_Session_init(MPI_INFO_NULL, MPI_ERRORS_RETURN, &keep);
    for (int r = 0; r < 3; r++)
        round_trip(r);
    MPI_Session_finalize(&keep); /* the last: MPICH finalizes here */
    return 0;
}
