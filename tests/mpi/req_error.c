/* Nonblocking receives that complete with an error (MPI_ERR_TRUNCATE: a message longer
 * than the buffer) while the application is not looking — the window in which a
 * checkpoint's drain finds them. MPICH completes and frees such a request when a test
 * reports the error; MPI_Request_get_status, MPI_Wait, MPI_Testall, MPI_Waitany and
 * MPI_Testsome must still report it exactly as natively (error class, MPI_ERR_IN_STATUS with each status's error, the
 * truncated message's source and tag). Pairs of ranks (0-1, 2-3, ...); 2 or more ranks,
 * an odd last rank idles. Deterministic output from rank 0.
 *
 * `req_error [--loop N]`: N rounds (default 30); with --loop it prints "req_error ready"
 * first. Every round sleeps 20 ms between the sends and the waits; every fifth round the
 * sender runs ahead into the next one. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int class_of(int rc)
{
    int c = rc;
    MPI_Error_class(rc, &c);
    return c;
}

int main(int argc, char **argv)
{
    int rounds = 30, loop = 0;
    if (argc > 2 && strcmp(argv[1], "--loop") == 0) {
        rounds = atoi(argv[2]);
        loop = 1;
    }
    if (rounds < 1) {
        fprintf(stderr, "usage: req_error [--loop N] (N >= 1)\n");
        return 2;
    }
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Comm comm;
    MPI_Comm_dup(MPI_COMM_WORLD, &comm);
    MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN);
    /* MPICH reports a freed request's error on MPI_COMM_WORLD's handler */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    if (loop && rank == 0) {
        printf("req_error ready\n");
        fflush(stdout);
    }
    const int receiver = rank % 2 == 1, peer = rank ^ 1, active = peer < size;
    unsigned long long sum = 0;
    int bad = 0;
    for (int r = 0; r < rounds && active; r++) {
        const int tag = r % 1000;
        if (!receiver) {
            int two[2] = {r, -r}, one = 7 * r;
            MPI_Send(two, 2, MPI_INT, peer, tag, comm); /* one int too many for the receiver */
            MPI_Send(&one, 1, MPI_INT, peer, tag + 1000, comm);
            if (r % 5 != 4) /* else the next round's messages wait unexpected at the receiver:
                               a checkpoint drains them, and its receives take them from there */
                usleep(20000);
            continue;
        }
        int small = -1, fits = -1;
        MPI_Request req[2];
        MPI_Status st[2];
        MPI_Irecv(&small, 1, MPI_INT, peer, tag, comm, &req[0]);
        MPI_Irecv(&fits, 1, MPI_INT, peer, tag + 1000, comm, &req[1]);
        usleep(20000); /* both complete meanwhile, the first with an error */
        int rc, cls[2] = {-1, -1};
        switch (r % 4) {
        case 0: { /* one by one, after a look that does not complete it */
            int seen = 0;
            MPI_Status s;
            int g = MPI_Request_get_status(req[0], &seen, &s);
            if (seen && class_of(g) != MPI_ERR_TRUNCATE)
                bad++; /* MPI_Request_get_status returns a finished request's error */
            for (int i = 0; i < 2; i++) {
                st[i].MPI_ERROR = -5;
                cls[i] = class_of(MPI_Wait(&req[i], &st[i]));
            }
            break;
        }
        case 1: { /* all at once: MPI_ERR_IN_STATUS and each status's error (MPI_Testall:
                     MANA's MPI_Waitall completes every request where MPICH's stops at the
                     first failed one, docs/mpi-checkpoint.md) */
            int flag = 0;
            do
                rc = MPI_Testall(2, req, &flag, st);
            while (!flag && rc != MPI_ERR_IN_STATUS);
            sum = sum * 31 + (unsigned)class_of(rc);
            for (int i = 0; i < 2; i++)
                if (rc == MPI_SUCCESS)
                    cls[i] = MPI_SUCCESS;
                else if (st[i].MPI_ERROR == MPI_ERR_PENDING)
                    cls[i] = class_of(MPI_Wait(&req[i], &st[i]));
                else
                    cls[i] = class_of(st[i].MPI_ERROR);
            break;
        }
        case 2: /* any: the completion order is MPI's, the result per index is not */
            for (int k = 0; k < 2; k++) {
                int idx = -1;
                MPI_Status s;
                rc = MPI_Waitany(2, req, &idx, &s);
                if (idx < 0 || idx > 1) {
                    bad++;
                    break;
                }
                st[idx] = s;
                cls[idx] = class_of(rc);
            }
            break;
        default: { /* some */
            int done = 0;
            while (done < 2) {
                int n = 0, idx[2];
                MPI_Status s[2];
                rc = MPI_Testsome(2, req, &n, idx, s);
                if (n == MPI_UNDEFINED)
                    break;
                for (int k = 0; k < n; k++) {
                    st[idx[k]] = s[k];
                    cls[idx[k]] = rc == MPI_ERR_IN_STATUS ? class_of(s[k].MPI_ERROR) : class_of(rc);
                    done++;
                }
            }
        }
        }
        if (cls[0] != MPI_ERR_TRUNCATE || cls[1] != MPI_SUCCESS)
            bad++;
        if (st[0].MPI_SOURCE != peer || st[0].MPI_TAG != tag || st[1].MPI_TAG != tag + 1000 || fits != 7 * r)
            bad++;
        sum = sum * 31 + (unsigned)(cls[0] * 100 + cls[1]) + (unsigned)small + (unsigned)fits;
    }
    unsigned long long total;
    int all_bad;
    MPI_Reduce(&sum, &total, 1, MPI_UNSIGNED_LONG_LONG, MPI_SUM, 0, MPI_COMM_WORLD);
    MPI_Reduce(&bad, &all_bad, 1, MPI_INT, MPI_SUM, 0, MPI_COMM_WORLD);
    if (rank == 0)
        printf("req_error done: %llx bad=%d\n", total, all_bad);
    MPI_Comm_free(&comm);
    MPI_Finalize();
    return 0;
}
