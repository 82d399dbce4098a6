/* Point-to-point: every send mode (Send, Ssend, Bsend with an attached buffer, Rsend to a
 * receive pre-posted before a barrier), Isend/Irecv/Issend, Sendrecv(_replace), wildcard
 * receives with status fields and MPI_Get_count, Probe/Iprobe, Mprobe/Mrecv and
 * Improbe/Imrecv, persistent requests (Send_init/Recv_init/Start/Startall), Test/Testall/
 * Waitany/Waitsome, Request_free, and Cancel of an unmatched Irecv with Test_cancelled.
 * Each rank counts its checks; rank 0 gathers them and prints a deterministic summary.
 * 2 or more ranks. Built with mpicc.mpich.
 *
 * `--loop N`: persistent requests and an attached Bsend buffer are made once, then N rounds of
 * the above, a message Mprobe'd before a 5 ms sleep and received after it, receives posted
 * before each 20 ms sleep (one with a datatype freed at once) and matched after it; rank 0 prints "p2p ready", then
 * "p2p done: <checksum> ...". */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int rank, size, bad;
static char first_bad[128];

static void check(int ok, const char *what)
{
    if (!ok && bad++ == 0)
        snprintf(first_bad, sizeof first_bad, "%s", what);
}

static void fill(int *buf, int n, int seed)
{
    for (int i = 0; i < n; i++)
        buf[i] = seed * 1000 + i;
}

static int filled(const int *buf, int n, int seed)
{
    for (int i = 0; i < n; i++)
        if (buf[i] != seed * 1000 + i)
            return 0;
    return 1;
}

/* ---- --loop mode ---- */

/* A checksum of what this rank received through MPI, folded in a fixed order (FNV-1a
 * over 64-bit values), so it is the same in every run and after any restart. */
static unsigned long long acc = 14695981039346656037ULL;

static void fold(long long v)
{
    acc = (acc ^ (unsigned long long)v) * 1099511628211ULL;
}

static void fold_buf(const int *buf, int n)
{
    for (int i = 0; i < n; i++)
        fold(buf[i]);
}

/* Message contents depend on the sender (seed) and the round; bounded to stay in an int. */
static int lval(int seed, int i, int round) { return seed * 1000 + i + round % 2000 * 1000000; }

static void lfill(int *buf, int n, int seed, int round)
{
    for (int i = 0; i < n; i++)
        buf[i] = lval(seed, i, round);
}

static int lfilled(const int *buf, int n, int seed, int round)
{
    for (int i = 0; i < n; i++)
        if (buf[i] != lval(seed, i, round))
            return 0;
    return 1;
}

static int loop_main(int rounds)
{
    MPI_Comm w = MPI_COMM_WORLD;
    if (size < 2 || size > 30) {
        if (rank == 0)
            fprintf(stderr, "p2p --loop needs 2 to 30 ranks\n");
        MPI_Finalize();
        return 2;
    }
    int next = (rank + 1) % size, prev = (rank + size - 1) % size;
    enum { N = 64 };
    int sbuf[N], rbuf[N];
    MPI_Status st;
    int count, flag;

    /* Long-lived: a duplicate for the wildcard receives (so they can match nothing else),
     * a Bsend buffer attached for the whole run (room for 8 messages: Bsend and the
     * persistent Bsend each round), and two persistent pairs: Send_init/Recv_init around
     * the ring, started across the sleep, and Bsend_init/Recv_init the other way. */
    MPI_Comm wild;
    MPI_Comm_dup(w, &wild);
    int bsize;
    MPI_Pack_size(N, MPI_INT, w, &bsize);
    bsize = 8 * (bsize + MPI_BSEND_OVERHEAD);
    void *bbuf = malloc(bsize);
    MPI_Buffer_attach(bbuf, bsize);
    int pout = 0, pin = -1, bout[N], bin[N];
    MPI_Request ps, pr, pbs, pbr;
    MPI_Send_init(&pout, 1, MPI_INT, next, 80, w, &ps);
    MPI_Recv_init(&pin, 1, MPI_INT, prev, 80, w, &pr);
    MPI_Bsend_init(bout, N, MPI_INT, prev, 81, w, &pbs);
    MPI_Recv_init(bin, N, MPI_INT, next, 81, w, &pbr);

    if (rank == 0) {
        printf("p2p ready\n");
        fflush(stdout);
    }

    for (int round = 0; round < rounds; round++) {
        fold(round);

        /* Blocking send modes around the ring, rank 0 first (Bsend uses the buffer attached
         * once). */
        for (int mode = 0; mode < 3; mode++) {
            lfill(sbuf, N, rank + mode, round);
            for (int phase = 0; phase < 2; phase++) {
                if ((phase == 0) == (rank == 0)) {
                    if (mode == 0)
                        MPI_Send(sbuf, N, MPI_INT, next, 10 + mode, w);
                    else if (mode == 1)
                        MPI_Ssend(sbuf, N, MPI_INT, next, 10 + mode, w);
                    else
                        MPI_Bsend(sbuf, N, MPI_INT, next, 10 + mode, w);
                } else {
                    MPI_Recv(rbuf, N, MPI_INT, prev, 10 + mode, w, &st);
                    check(lfilled(rbuf, N, prev + mode, round), "blocking send mode data");
                    check(st.MPI_SOURCE == prev && st.MPI_TAG == 10 + mode, "blocking status");
                    fold_buf(rbuf, N);
                }
            }
        }

        /* Rsend to a receive posted before a barrier. */
        {
            MPI_Request r;
            MPI_Irecv(rbuf, N, MPI_INT, prev, 20, w, &r);
            MPI_Barrier(w);
            lfill(sbuf, N, rank + 20, round);
            MPI_Rsend(sbuf, N, MPI_INT, next, 20, w);
            MPI_Wait(&r, &st);
            check(lfilled(rbuf, N, prev + 20, round) && st.MPI_SOURCE == prev, "rsend");
            fold_buf(rbuf, N);
        }

        /* Isend/Irecv/Issend with Waitall, Testall and Test. */
        {
            int a[N], b[N];
            MPI_Request r[4];
            MPI_Status sts[4];
            lfill(sbuf, N, rank + 30, round);
            MPI_Irecv(a, N, MPI_INT, prev, 30, w, &r[0]);
            MPI_Irecv(b, N, MPI_INT, next, 31, w, &r[1]);
            MPI_Isend(sbuf, N, MPI_INT, next, 30, w, &r[2]);
            MPI_Issend(sbuf, N, MPI_INT, prev, 31, w, &r[3]);
            MPI_Waitall(4, r, sts);
            check(lfilled(a, N, prev + 30, round) && lfilled(b, N, next + 30, round),
                  "isend/issend data");
            check(sts[0].MPI_SOURCE == prev && sts[1].MPI_SOURCE == next, "waitall statuses");
            fold_buf(a, N);
            fold_buf(b, N);

            MPI_Irecv(a, N / 2, MPI_INT, prev, 32, w, &r[0]);
            MPI_Isend(sbuf, N / 2, MPI_INT, next, 32, w, &r[1]);
            flag = 0;
            while (!flag)
                MPI_Testall(2, r, &flag, sts);
            MPI_Get_count(&sts[0], MPI_INT, &count);
            check(count == N / 2 && lfilled(a, N / 2, prev + 30, round), "testall data");
            fold_buf(a, N / 2);
            fold(count);

            MPI_Irecv(a, N, MPI_INT, prev, 33, w, &r[0]);
            MPI_Isend(sbuf, 5, MPI_INT, next, 33, w, &r[1]);
            for (int done = 0; done < 2;) {
                MPI_Test(&r[done], &flag, &st);
                if (flag)
                    done++;
            }
            check(lfilled(a, 5, prev + 30, round), "test data");
            fold_buf(a, 5);
        }

        /* Sendrecv, then Sendrecv_replace back. */
        lfill(sbuf, N, rank + 40, round);
        MPI_Sendrecv(sbuf, N, MPI_INT, next, 40, rbuf, N, MPI_INT, prev, 40, w, &st);
        check(lfilled(rbuf, N, prev + 40, round) && st.MPI_TAG == 40, "sendrecv");
        fold_buf(rbuf, N);
        MPI_Sendrecv_replace(rbuf, N, MPI_INT, prev, 41, next, 41, w, &st);
        check(lfilled(rbuf, N, rank + 40, round) && st.MPI_SOURCE == next, "sendrecv_replace");
        fold_buf(rbuf, N);

        /* Wildcards on the duplicate: rank 0 takes (r+1+round%3) ints with tag 50+r from every
         * other rank in any order; folded in source order. The barrier keeps the next
         * wildcard messages out of these receives. */
        if (rank == 0) {
            int seen = 0, counts[64] = {0}, firsts[64] = {0};
            for (int i = 1; i < size; i++) {
                MPI_Recv(rbuf, N, MPI_INT, MPI_ANY_SOURCE, MPI_ANY_TAG, wild, &st);
                MPI_Get_count(&st, MPI_INT, &count);
                int src = st.MPI_SOURCE;
                check(st.MPI_TAG == 50 + src && count == src + 1 + round % 3, "wildcard status");
                check(lfilled(rbuf, count, src + 50, round), "wildcard data");
                seen |= 1 << src;
                counts[src] = count;
                firsts[src] = rbuf[0];
            }
            check(seen == ((1 << size) - 2), "wildcard sources");
            for (int src = 1; src < size; src++) {
                fold(counts[src]);
                fold(firsts[src]);
            }
        } else {
            lfill(sbuf, N, rank + 50, round);
            MPI_Send(sbuf, rank + 1 + round % 3, MPI_INT, 0, 50 + rank, wild);
        }
        MPI_Barrier(w);

        /* Probe for the size, then Iprobe with a wildcard source. */
        {
            MPI_Request r;
            lfill(sbuf, N, rank + 60, round);
            MPI_Isend(sbuf, 7 + (rank + round) % 5, MPI_INT, next, 60, w, &r);
            MPI_Probe(prev, 60, w, &st);
            MPI_Get_count(&st, MPI_INT, &count);
            check(count == 7 + (prev + round) % 5, "probe count");
            int *p = malloc(sizeof(int) * count);
            MPI_Recv(p, count, MPI_INT, prev, 60, w, MPI_STATUS_IGNORE);
            check(lfilled(p, count, prev + 60, round), "probe data");
            fold_buf(p, count);
            free(p);
            MPI_Wait(&r, MPI_STATUS_IGNORE);

            MPI_Isend(sbuf, 3, MPI_INT, next, 61, w, &r);
            flag = 0;
            while (!flag)
                MPI_Iprobe(MPI_ANY_SOURCE, 61, w, &flag, &st);
            MPI_Get_count(&st, MPI_INT, &count);
            check(st.MPI_SOURCE == prev && count == 3, "iprobe");
            MPI_Recv(rbuf, 3, MPI_INT, st.MPI_SOURCE, 61, w, MPI_STATUS_IGNORE);
            fold_buf(rbuf, 3);
            MPI_Wait(&r, MPI_STATUS_IGNORE);
            MPI_Iprobe(MPI_ANY_SOURCE, 62, w, &flag, MPI_STATUS_IGNORE);
            check(!flag, "iprobe empty");
        }

        /* The long-lived persistent Bsend pair, and a short-lived Ssend_init/Recv_init pair
         * started twice and freed. */
        {
            lfill(bout, N, rank + 81, round);
            MPI_Request r[2] = {pbr, pbs};
            MPI_Status sts[2];
            MPI_Startall(2, r);
            MPI_Waitall(2, r, sts);
            check(r[0] == pbr && r[1] == pbs, "persistent requests kept");
            check(lfilled(bin, N, next + 81, round) && sts[0].MPI_SOURCE == next,
                  "persistent bsend");
            fold_buf(bin, N);

            int sout, sin = -1;
            MPI_Ssend_init(&sout, 1, MPI_INT, next, 82, w, &r[1]);
            MPI_Recv_init(&sin, 1, MPI_INT, prev, 82, w, &r[0]);
            for (int k = 0; k < 2; k++) {
                sout = rank * 10 + k + round;
                MPI_Startall(2, r);
                MPI_Waitall(2, r, sts);
                check(sin == prev * 10 + k + round, "short persistent");
                fold(sin);
            }
            MPI_Request_free(&r[0]);
            MPI_Request_free(&r[1]);
        }

        /* Waitany and Waitsome over both neighbours. */
        {
            int a = -1, b = -1, v = rank + round;
            MPI_Request r[2], s[2];
            MPI_Status sts[2];
            MPI_Irecv(&a, 1, MPI_INT, prev, 90, w, &r[0]);
            MPI_Irecv(&b, 1, MPI_INT, next, 91, w, &r[1]);
            MPI_Isend(&v, 1, MPI_INT, next, 90, w, &s[0]);
            MPI_Isend(&v, 1, MPI_INT, prev, 91, w, &s[1]);
            int idx, got = 0;
            for (int i = 0; i < 2; i++) {
                MPI_Waitany(2, r, &idx, &st);
                check(idx == 0 || idx == 1, "waitany index");
                got |= 1 << idx;
            }
            check(got == 3 && a == prev + round && b == next + round, "waitany data");
            fold(a);
            fold(b);
            int outcount, idxs[2], total = 0;
            while (total < 2) {
                MPI_Waitsome(2, s, &outcount, idxs, sts);
                check(outcount != MPI_UNDEFINED, "waitsome");
                total += outcount;
            }
        }

        /* Request_free on an active send: the message still arrives. */
        {
            int v = rank + 1000 + round, in = 0;
            MPI_Request r;
            MPI_Isend(&v, 1, MPI_INT, next, 100, w, &r);
            MPI_Request_free(&r);
            MPI_Recv(&in, 1, MPI_INT, prev, 100, w, MPI_STATUS_IGNORE);
            check(in == prev + 1000 + round, "freed isend delivered");
            fold(in);
            /* v must outlive the send, which nothing here waits for: the barrier below
             * follows the matching receive on every rank. */
            MPI_Barrier(w);
        }

        /* Cancel a receive nobody will match. */
        {
            int in, cancelled = 0;
            MPI_Request r;
            MPI_Irecv(&in, 1, MPI_INT, prev, 110, w, &r);
            MPI_Cancel(&r);
            MPI_Wait(&r, &st);
            MPI_Test_cancelled(&st, &cancelled);
            check(cancelled, "cancelled");
        }

        /* A matched message held across a short sleep: Mprobe'd before it, Mrecv'd (or
         * Imrecv'd, every other round) after. */
        {
            int v = rank * 13 + round, in = -1;
            MPI_Message msg;
            MPI_Status mst;
            MPI_Request sr, rr;
            MPI_Isend(&v, 1, MPI_INT, next, 400, w, &sr);
            MPI_Mprobe(prev, 400, w, &msg, &mst);
            usleep(5000);
            if (round % 2) {
                MPI_Imrecv(&in, 1, MPI_INT, &msg, &rr);
                MPI_Wait(&rr, &mst);
            } else {
                MPI_Mrecv(&in, 1, MPI_INT, &msg, &mst);
            }
            MPI_Wait(&sr, MPI_STATUS_IGNORE);
            check(in == prev * 13 + round && mst.MPI_SOURCE == prev && mst.MPI_TAG == 400 &&
                      msg == MPI_MESSAGE_NULL,
                  "matched message across a sleep");
            fold(in);
        }

        /* In flight across the sleep: a receive, the long-lived persistent receive, and at
         * rank 0 a wildcard-source receive, all posted before it; the sends come after. */
        {
            MPI_Request r[3] = {MPI_REQUEST_NULL, MPI_REQUEST_NULL, MPI_REQUEST_NULL};
            MPI_Status sts[3];
            int a[N], wv = -1;
            /* Posted with a datatype freed right after (MPI allows it; a restart posts
             * the receive again with that datatype). */
            MPI_Datatype pairs;
            MPI_Type_contiguous(2, MPI_INT, &pairs);
            MPI_Type_commit(&pairs);
            MPI_Irecv(a, N / 2, pairs, prev, 200, w, &r[0]);
            MPI_Type_free(&pairs);
            MPI_Start(&pr);
            if (rank == 0)
                MPI_Irecv(&wv, 1, MPI_INT, MPI_ANY_SOURCE, 300, wild, &r[2]);
            usleep(20000);
            lfill(sbuf, N, rank + 200, round);
            MPI_Send(sbuf, N, MPI_INT, next, 200, w);
            pout = rank * 100 + round;
            MPI_Start(&ps);
            int v = rank * 7 + round;
            if (rank != 0)
                MPI_Send(&v, 1, MPI_INT, 0, 300, wild);
            r[1] = pr;
            MPI_Waitall(3, r, sts);
            MPI_Wait(&ps, MPI_STATUS_IGNORE);
            check(lfilled(a, N, prev + 200, round) && sts[0].MPI_SOURCE == prev,
                  "irecv across the sleep");
            check(pin == prev * 100 + round && sts[1].MPI_SOURCE == prev,
                  "persistent receive across the sleep");
            fold_buf(a, N);
            fold(pin);
            if (rank == 0) {
                /* The first wildcard message, then the others in any order. */
                int vals[64] = {0};
                vals[sts[2].MPI_SOURCE] = wv;
                for (int i = 2; i < size; i++) {
                    MPI_Recv(&wv, 1, MPI_INT, MPI_ANY_SOURCE, 300, wild, &st);
                    vals[st.MPI_SOURCE] = wv;
                }
                for (int src = 1; src < size; src++) {
                    check(vals[src] == src * 7 + round, "wildcard across the sleep");
                    fold(vals[src]);
                }
            }
        }
    }

    MPI_Request_free(&ps);
    MPI_Request_free(&pr);
    MPI_Request_free(&pbs);
    MPI_Request_free(&pbr);
    void *got;
    int gotsize;
    MPI_Buffer_detach(&got, &gotsize);
    check(got == bbuf && gotsize == bsize, "buffer_detach");
    free(bbuf);
    MPI_Comm_free(&wild);

    unsigned long long accs[64];
    MPI_Gather(&acc, 1, MPI_UNSIGNED_LONG_LONG, accs, 1, MPI_UNSIGNED_LONG_LONG, 0, w);
    int total_bad;
    MPI_Allreduce(&bad, &total_bad, 1, MPI_INT, MPI_SUM, w);
    if (rank == 0) {
        acc = 14695981039346656037ULL;
        for (int r = 0; r < size; r++)
            fold((long long)accs[r]);
        printf("p2p done: %llx failed checks: %d\n", acc, total_bad);
    }
    if (bad)
        fprintf(stderr, "rank %d first failure: %s\n", rank, first_bad);
    MPI_Finalize();
    return total_bad != 0;
}

int main(int argc, char **argv)
{
    int loop = argc > 1 && strcmp(argv[1], "--loop") == 0;
    int rounds = loop && argc > 2 ? atoi(argv[2]) : 0;
    if (loop && rounds < 1) {
        fprintf(stderr, "usage: %s [--loop N]   (N >= 1)\n", argv[0]);
        return 2;
    }
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (loop)
        return loop_main(rounds);
    MPI_Comm w = MPI_COMM_WORLD;
    int next = (rank + 1) % size, prev = (rank + size - 1) % size;
    enum { N = 64 };
    int sbuf[N], rbuf[N];
    MPI_Status st;
    int count;

    /* 1. Blocking send modes around the ring: rank 0 sends first, every other rank
     *    receives first (a pipelined ring, so even Ssend cannot deadlock). */
    for (int mode = 0; mode < 3; mode++) {
        fill(sbuf, N, rank + mode);
        for (int phase = 0; phase < 2; phase++) {
            if ((phase == 0) == (rank == 0)) {
                if (mode == 0) {
                    MPI_Send(sbuf, N, MPI_INT, next, 10 + mode, w);
                } else if (mode == 1) {
                    MPI_Ssend(sbuf, N, MPI_INT, next, 10 + mode, w);
                } else {
                    int bsize, gotsize;
                    MPI_Pack_size(N, MPI_INT, w, &bsize);
                    bsize += MPI_BSEND_OVERHEAD;
                    void *bb = malloc(bsize), *got;
                    MPI_Buffer_attach(bb, bsize);
                    MPI_Bsend(sbuf, N, MPI_INT, next, 10 + mode, w);
                    MPI_Buffer_detach(&got, &gotsize);
                    check(got == bb && gotsize == bsize, "buffer_detach");
                    free(bb);
                }
            } else {
                MPI_Recv(rbuf, N, MPI_INT, prev, 10 + mode, w, &st);
                check(filled(rbuf, N, prev + mode), "blocking send mode data");
                check(st.MPI_SOURCE == prev && st.MPI_TAG == 10 + mode, "blocking status");
            }
        }
    }

    /* 2. Rsend: the receive is posted before a barrier, the ready send after it. */
    {
        MPI_Request r;
        MPI_Irecv(rbuf, N, MPI_INT, prev, 20, w, &r);
        MPI_Barrier(w);
        fill(sbuf, N, rank + 20);
        MPI_Rsend(sbuf, N, MPI_INT, next, 20, w);
        MPI_Wait(&r, &st);
        check(filled(rbuf, N, prev + 20) && st.MPI_SOURCE == prev, "rsend");
    }

    /* 3. Isend/Irecv/Issend with Waitall, then Testall polled to completion. */
    {
        int a[N], b[N];
        MPI_Request r[4];
        fill(sbuf, N, rank + 30);
        MPI_Irecv(a, N, MPI_INT, prev, 30, w, &r[0]);
        MPI_Irecv(b, N, MPI_INT, next, 31, w, &r[1]);
        MPI_Isend(sbuf, N, MPI_INT, next, 30, w, &r[2]);
        MPI_Issend(sbuf, N, MPI_INT, prev, 31, w, &r[3]);
        MPI_Status sts[4];
        MPI_Waitall(4, r, sts);
        check(filled(a, N, prev + 30) && filled(b, N, next + 30), "isend/issend data");
        check(sts[0].MPI_SOURCE == prev && sts[1].MPI_SOURCE == next, "waitall statuses");
        check(r[0] == MPI_REQUEST_NULL && r[3] == MPI_REQUEST_NULL, "waitall nulls requests");

        MPI_Irecv(a, N, MPI_INT, prev, 32, w, &r[0]);
        MPI_Isend(sbuf, N, MPI_INT, next, 32, w, &r[1]);
        int flag = 0;
        while (!flag)
            MPI_Testall(2, r, &flag, sts);
        check(filled(a, N, prev + 30), "testall data");

        MPI_Irecv(a, N, MPI_INT, prev, 33, w, &r[0]);
        MPI_Isend(sbuf, N, MPI_INT, next, 33, w, &r[1]);
        for (int done = 0; done < 2;) {
            MPI_Test(&r[done], &flag, &st);
            if (flag)
                done++;
        }
        check(filled(a, N, prev + 30), "test data");
    }

    /* 4. Sendrecv and Sendrecv_replace: shift right, then shift left in place. */
    {
        fill(sbuf, N, rank + 40);
        MPI_Sendrecv(sbuf, N, MPI_INT, next, 40, rbuf, N, MPI_INT, prev, 40, w, &st);
        check(filled(rbuf, N, prev + 40) && st.MPI_TAG == 40, "sendrecv");
        MPI_Sendrecv_replace(rbuf, N, MPI_INT, prev, 41, next, 41, w, &st);
        check(filled(rbuf, N, rank + 40) && st.MPI_SOURCE == next, "sendrecv_replace");
    }

    /* 5. Wildcards: every other rank sends rank 0 a message of (r+1) ints with tag 50+r;
     *    rank 0 receives them in any order with ANY_SOURCE/ANY_TAG. */
    long wildsum = 0;
    if (rank == 0) {
        int seen = 0;
        for (int i = 1; i < size; i++) {
            MPI_Recv(rbuf, N, MPI_INT, MPI_ANY_SOURCE, MPI_ANY_TAG, w, &st);
            MPI_Get_count(&st, MPI_INT, &count);
            int src = st.MPI_SOURCE;
            check(st.MPI_TAG == 50 + src && count == src + 1 && st.MPI_ERROR == MPI_SUCCESS,
                  "wildcard status");
            check(filled(rbuf, count, src + 50), "wildcard data");
            seen |= 1 << src;
            wildsum += count;
        }
        check(seen == ((1 << size) - 2), "wildcard sources");
    } else {
        fill(sbuf, N, rank + 50);
        MPI_Send(sbuf, rank + 1, MPI_INT, 0, 50 + rank, w);
    }
    /* No later message may reach rank 0's ANY_TAG receives. */
    MPI_Barrier(w);

    /* 6. Probe/Iprobe: probe the size before allocating the receive buffer. */
    {
        fill(sbuf, N, rank + 60);
        MPI_Request r;
        MPI_Isend(sbuf, 7 + rank, MPI_INT, next, 60, w, &r);
        MPI_Probe(prev, 60, w, &st);
        MPI_Get_count(&st, MPI_INT, &count);
        check(count == 7 + prev, "probe count");
        int *p = malloc(sizeof(int) * count);
        MPI_Recv(p, count, MPI_INT, prev, 60, w, MPI_STATUS_IGNORE);
        check(filled(p, count, prev + 60), "probe data");
        free(p);
        MPI_Wait(&r, MPI_STATUS_IGNORE);

        MPI_Isend(sbuf, 3, MPI_INT, next, 61, w, &r);
        int flag = 0;
        while (!flag)
            MPI_Iprobe(MPI_ANY_SOURCE, 61, w, &flag, &st);
        MPI_Get_count(&st, MPI_INT, &count);
        check(st.MPI_SOURCE == prev && count == 3, "iprobe");
        MPI_Recv(rbuf, 3, MPI_INT, st.MPI_SOURCE, 61, w, MPI_STATUS_IGNORE);
        MPI_Wait(&r, MPI_STATUS_IGNORE);
        /* Nothing is pending on tag 62. */
        MPI_Iprobe(MPI_ANY_SOURCE, 62, w, &flag, MPI_STATUS_IGNORE);
        check(!flag, "iprobe empty");
    }

    /* 7. Matched probes: Mprobe/Mrecv and Improbe/Imrecv. */
    {
        fill(sbuf, N, rank + 70);
        MPI_Request r;
        MPI_Message m;
        MPI_Isend(sbuf, 11, MPI_INT, next, 70, w, &r);
        MPI_Mprobe(prev, 70, w, &m, &st);
        MPI_Get_count(&st, MPI_INT, &count);
        MPI_Mrecv(rbuf, count, MPI_INT, &m, &st);
        check(count == 11 && filled(rbuf, 11, prev + 70) && m == MPI_MESSAGE_NULL, "mrecv");
        MPI_Wait(&r, MPI_STATUS_IGNORE);

        MPI_Isend(sbuf, 13, MPI_INT, next, 71, w, &r);
        int flag = 0;
        while (!flag)
            MPI_Improbe(MPI_ANY_SOURCE, 71, w, &flag, &m, &st);
        MPI_Request rr;
        MPI_Imrecv(rbuf, N, MPI_INT, &m, &rr);
        MPI_Wait(&rr, &st);
        MPI_Get_count(&st, MPI_INT, &count);
        check(count == 13 && filled(rbuf, 13, prev + 70) && st.MPI_SOURCE == prev, "imrecv");
        MPI_Wait(&r, MPI_STATUS_IGNORE);
    }

    /* 8. Persistent requests: 5 rounds of Startall + Waitall, then Start + Wait. */
    long persist = 0;
    {
        int out = 0, in = -1;
        MPI_Request r[2];
        MPI_Status sts[2];
        MPI_Recv_init(&in, 1, MPI_INT, prev, 80, w, &r[0]);
        MPI_Send_init(&out, 1, MPI_INT, next, 80, w, &r[1]);
        for (int round = 0; round < 5; round++) {
            out = rank * 100 + round;
            MPI_Startall(2, r);
            MPI_Waitall(2, r, sts);
            check(in == prev * 100 + round, "persistent round");
            persist += in;
            check(r[0] != MPI_REQUEST_NULL, "persistent request survives wait");
        }
        out = -5;
        MPI_Start(&r[0]);
        MPI_Start(&r[1]);
        MPI_Wait(&r[1], MPI_STATUS_IGNORE);
        MPI_Wait(&r[0], &st);
        check(in == -5 && st.MPI_SOURCE == prev, "persistent start");
        MPI_Request_free(&r[0]);
        MPI_Request_free(&r[1]);
        check(r[0] == MPI_REQUEST_NULL, "request_free nulls");
    }

    /* 9. Waitany and Waitsome over receives from both neighbours. */
    {
        int a = -1, b = -1, v = rank;
        MPI_Request r[2], s[2];
        MPI_Irecv(&a, 1, MPI_INT, prev, 90, w, &r[0]);
        MPI_Irecv(&b, 1, MPI_INT, next, 91, w, &r[1]);
        MPI_Isend(&v, 1, MPI_INT, next, 90, w, &s[0]);
        MPI_Isend(&v, 1, MPI_INT, prev, 91, w, &s[1]);
        int idx, got = 0;
        for (int i = 0; i < 2; i++) {
            MPI_Waitany(2, r, &idx, &st);
            check(idx == 0 || idx == 1, "waitany index");
            got |= 1 << idx;
        }
        MPI_Waitany(2, r, &idx, MPI_STATUS_IGNORE);
        check(idx == MPI_UNDEFINED, "waitany all null");
        check(got == 3 && a == prev && b == next, "waitany data");
        int outcount, idxs[2];
        MPI_Status sts[2];
        MPI_Waitsome(2, s, &outcount, idxs, sts);
        int total = outcount;
        while (total < 2) {
            MPI_Waitsome(2, s, &outcount, idxs, sts);
            check(outcount != MPI_UNDEFINED, "waitsome");
            total += outcount;
        }
        MPI_Waitsome(2, s, &outcount, idxs, sts);
        check(outcount == MPI_UNDEFINED, "waitsome all null");
    }

    /* 10. Request_free on an active send: the message still arrives. */
    {
        int v = rank + 1000, in = 0;
        MPI_Request r;
        MPI_Isend(&v, 1, MPI_INT, next, 100, w, &r);
        MPI_Request_free(&r);
        MPI_Recv(&in, 1, MPI_INT, prev, 100, w, MPI_STATUS_IGNORE);
        check(in == prev + 1000, "freed isend delivered");
    }

    /* 11. Cancel an Irecv nobody will match. */
    int cancelled = 0;
    {
        int in;
        MPI_Request r;
        MPI_Irecv(&in, 1, MPI_INT, prev, 110, w, &r);
        MPI_Cancel(&r);
        MPI_Wait(&r, &st);
        MPI_Test_cancelled(&st, &cancelled);
        check(cancelled, "cancelled");
    }
    MPI_Barrier(w);

    int bads[64] = {0};
    MPI_Gather(&bad, 1, MPI_INT, bads, 1, MPI_INT, 0, w);
    long psum;
    MPI_Reduce(&persist, &psum, 1, MPI_LONG, MPI_SUM, 0, w);
    if (rank == 0) {
        printf("p2p size=%d wildcard-ints=%ld persistent-sum=%ld cancelled=%d\n", size, wildsum,
               psum, cancelled);
        for (int r = 0; r < size; r++)
            printf("rank %d failed checks: %d\n", r, bads[r]);
        if (bad)
            printf("rank 0 first failure: %s\n", first_bad);
    }
    if (bad)
        fprintf(stderr, "rank %d first failure: %s\n", rank, first_bad);
    MPI_Finalize();
    return 0;
}
