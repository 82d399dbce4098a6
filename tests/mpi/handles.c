/* Handle and status semantics the application can observe, identical natively and under
 * MANA's virtual handles: the same object comes back as the same handle, callbacks see
 * the application's handles, freed and completed handles are released, statuses carry
 * every field, Fortran status conversions and sentinels work.
 *
 * With `--raw` (only under mana_launch) rank 0 also prints the raw values of handles it
 * got after many create/free cycles, so the test can check they are virtual and that
 * the table reuses released entries. Run with 2 or 4 ranks.
 *
 * With `--loop N` the communicators, groups (MPI_COMM_WORLD's taken twice), types, operation, error handler, keyval and
 * persistent requests are made once, then N rounds check their handles (operations in flight
 * across each 20 ms sleep); rank 0 prints "handles ready", then "handles done: <checksum> ...". */
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int rank, size;

/* Each rank collects its lines; rank 0 prints them all in rank order at the end (the
 * launcher would interleave ranks' output arbitrarily). */
static char out_buf[16384];
static int out_len;
#define say(...) (out_len += snprintf(out_buf + out_len, sizeof out_buf - out_len, __VA_ARGS__))

static void print_in_rank_order(void)
{
    int lens[64], displs[64], total = 0;
    MPI_Gather(&out_len, 1, MPI_INT, lens, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (rank == 0)
        for (int i = 0; i < size; i++) {
            displs[i] = total;
            total += lens[i];
        }
    static char all[16384 * 8];
    MPI_Gatherv(out_buf, out_len, MPI_CHAR, all, lens, displs, MPI_CHAR, 0, MPI_COMM_WORLD);
    if (rank == 0)
        fwrite(all, 1, total, stdout);
}
static MPI_Comm seen_comm;
static MPI_Datatype seen_type;

static void errh(MPI_Comm *comm, int *code, ...)
{
    seen_comm = *comm;
    (void)code;
}

static void sum_op(void *in, void *inout, int *len, MPI_Datatype *dt)
{
    seen_type = *dt;
    int *a = in, *b = inout;
    for (int i = 0; i < *len * 2; i++)
        b[i] += a[i];
}

static MPI_Comm copied_from;
static int copy_fn(MPI_Comm oldcomm, int keyval, void *extra, void *in, void *out, int *flag)
{
    (void)keyval;
    (void)extra;
    copied_from = oldcomm;
    *(void **)out = in;
    *flag = 1;
    return MPI_SUCCESS;
}

/* ---- --loop mode ---- */

static int bad;
static char first_bad[96];

static void check(int ok, const char *what)
{
    if (!ok && bad++ == 0)
        snprintf(first_bad, sizeof first_bad, "%s", what);
}

/* A checksum of what this rank received through MPI, folded in a fixed order (FNV-1a
 * over 64-bit values), so it is the same in every run and after any restart. */
static unsigned long long acc = 14695981039346656037ULL;

static void fold(long long v)
{
    acc = (acc ^ (unsigned long long)v) * 1099511628211ULL;
}

static int loop_main(int rounds)
{
    MPI_Comm w = MPI_COMM_WORLD;
    if (size > 64) {
        if (rank == 0)
            fprintf(stderr, "handles --loop needs at most 64 ranks\n");
        MPI_Finalize();
        return 2;
    }
    int peer = (rank + 1) % size, from = (rank + size - 1) % size;

    /* Long-lived: a duplicate with our error handler and an attribute (copy callback), its
     * group, two derived datatypes, a user operation, a periodic ring, and a persistent
     * send/receive pair of the derived type. Their handles must not change over the run. */
    MPI_Comm dup, ring;
    MPI_Comm_dup(w, &dup);
    MPI_Errhandler eh;
    MPI_Comm_create_errhandler(errh, &eh);
    MPI_Comm_set_errhandler(dup, eh);
    int kv;
    MPI_Comm_create_keyval(copy_fn, MPI_COMM_NULL_DELETE_FN, &kv, NULL);
    MPI_Comm_set_attr(dup, kv, (void *)42);
    MPI_Group g;
    MPI_Comm_group(dup, &g);
    /* MPI_COMM_WORLD's group taken twice (the same handle, two references), held across
     * every round and freed twice at the end: a restart must take two references again. */
    MPI_Group gw1, gw2;
    MPI_Comm_group(MPI_COMM_WORLD, &gw1);
    MPI_Comm_group(MPI_COMM_WORLD, &gw2);
    MPI_Datatype pair, vec;
    MPI_Type_contiguous(2, MPI_INT, &pair);
    MPI_Type_vector(3, 1, 2, pair, &vec);
    MPI_Type_commit(&pair);
    MPI_Type_commit(&vec);
    MPI_Op op;
    MPI_Op_create(sum_op, 1, &op);
    int dims[1] = {size}, periods[1] = {1};
    MPI_Cart_create(dup, 1, dims, periods, 0, &ring);
    int pout[2], pin[2];
    MPI_Request ps, pr;
    MPI_Send_init(pout, 1, pair, peer, 9, dup, &ps);
    MPI_Recv_init(pin, 1, pair, from, 9, dup, &pr);

    if (rank == 0) {
        printf("handles ready\n");
        fflush(stdout);
    }

    for (int round = 0; round < rounds; round++) {
        fold(round);

        /* The same object, the same handle: the communicator's group is the one we hold,
         * the vector's inner type is our pair. */
        MPI_Group g2;
        int cmp, gsize;
        MPI_Comm_group(dup, &g2);
        MPI_Group_compare(g, g2, &cmp);
        check(g2 == g && cmp == MPI_IDENT, "comm_group returns the held group");
        MPI_Group_free(&g2);
        MPI_Group_size(g, &gsize);
        check(g2 == MPI_GROUP_NULL && gsize == size, "held group survives a free");
        check(gw1 == gw2, "MPI_COMM_WORLD's group is one handle");
        int ni, na, nd, comb, ints[8];
        MPI_Aint addrs[8];
        MPI_Datatype types[8] = {MPI_DATATYPE_NULL, MPI_DATATYPE_NULL};
        MPI_Type_get_envelope(vec, &ni, &na, &nd, &comb);
        MPI_Type_get_contents(vec, 8, 8, 8, ints, addrs, types);
        check(comb == MPI_COMBINER_VECTOR && ni == 3 && nd == 1 && ints[0] == 3 &&
                  ints[1] == 1 && ints[2] == 2,
              "vector contents");
        check(types[0] == pair && types[1] == MPI_DATATYPE_NULL, "vector's inner type is ours");
        MPI_Type_free(&types[0]);
        int psize;
        MPI_Type_size(pair, &psize);
        check(psize == 2 * (int)sizeof(int), "pair size");

        /* Callbacks see the application's handles. */
        MPI_Errhandler got;
        MPI_Comm_get_errhandler(dup, &got);
        check(got == eh, "get_errhandler returns ours");
        MPI_Errhandler_free(&got);
        seen_comm = MPI_COMM_NULL;
        MPI_Comm_call_errhandler(dup, MPI_ERR_OTHER);
        check(seen_comm == dup, "error handler saw our communicator");
        int in[2] = {rank + round, 1}, out[2];
        seen_type = MPI_DATATYPE_NULL;
        MPI_Allreduce(in, out, 1, pair, op, dup);
        /* Not every rank applies the operation with every rank count (with 3 ranks rank 0
         * does not), so only the type of an actual call is checked. */
        check(seen_type == pair || seen_type == MPI_DATATYPE_NULL, "user op saw our datatype");
        check(out[0] == size * (size - 1) / 2 + size * round && out[1] == size, "user op result");
        fold(out[0]);
        fold(out[1]);
        void *val;
        int flag;
        MPI_Comm_get_attr(dup, kv, &val, &flag);
        check(flag && (intptr_t)val == 42 + round, "attribute of the previous round");
        MPI_Comm_set_attr(dup, kv, (void *)(intptr_t)(43 + round));
        MPI_Comm dup2;
        copied_from = MPI_COMM_NULL;
        MPI_Comm_dup(dup, &dup2);
        MPI_Comm_get_attr(dup2, kv, &val, &flag);
        check(copied_from == dup && flag && (intptr_t)val == 43 + round,
              "copy callback saw our communicator");
        MPI_Comm_get_errhandler(dup2, &got);
        check(got == eh, "duplicate inherits our error handler");
        MPI_Errhandler_free(&got);
        MPI_Comm_free(&dup2);

        /* Statuses of a derived type, single and arrays. */
        int buf[8], rbuf[8];
        for (int i = 0; i < 8; i++)
            buf[i] = rank * 100 + i + round * 1000;
        MPI_Status st;
        st.MPI_ERROR = 12345;
        MPI_Sendrecv(buf, 3, pair, peer, 7 + rank, rbuf, 4, pair, from, MPI_ANY_TAG, dup, &st);
        int count, elems;
        MPI_Get_count(&st, pair, &count);
        MPI_Get_elements(&st, MPI_INT, &elems);
        check(st.MPI_SOURCE == from && st.MPI_TAG == 7 + from && count == 3 && elems == 6 &&
                  st.MPI_ERROR == 12345,
              "sendrecv status");
        for (int i = 0; i < 6; i++) {
            check(rbuf[i] == from * 100 + i + round * 1000, "sendrecv data");
            fold(rbuf[i]);
        }
        fold(st.MPI_TAG);
        MPI_Request rq[4];
        MPI_Status sts[4];
        MPI_Irecv(rbuf, 2, MPI_INT, from, 1, dup, &rq[0]);
        MPI_Irecv(rbuf + 2, 2, pair, from, 2, dup, &rq[1]);
        MPI_Isend(buf, 1, pair, peer, 2, dup, &rq[2]);
        MPI_Isend(buf, 2, MPI_INT, peer, 1, dup, &rq[3]);
        MPI_Waitall(4, rq, sts);
        int c0, c1;
        MPI_Get_count(&sts[0], MPI_INT, &c0);
        MPI_Get_count(&sts[1], pair, &c1);
        check(sts[0].MPI_SOURCE == from && sts[0].MPI_TAG == 1 && c0 == 2 &&
                  sts[1].MPI_SOURCE == from && sts[1].MPI_TAG == 2 && c1 == 1,
              "waitall statuses");
        check(rq[0] == MPI_REQUEST_NULL && rq[3] == MPI_REQUEST_NULL, "waitall nulls requests");
        for (int i = 0; i < 4; i++)
            fold(rbuf[i]);

        /* The long-lived persistent pair, started three times; the handles stay. */
        MPI_Request both[2] = {pr, ps};
        for (int i = 0; i < 3; i++) {
            pout[0] = rank + i;
            pout[1] = round;
            MPI_Startall(2, both);
            MPI_Waitall(2, both, sts);
            check(pin[0] == from + i && pin[1] == round, "persistent data");
            fold(pin[0]);
        }
        check(both[0] == pr && both[1] == ps, "persistent requests kept");

        /* Alltoallw with derived and predefined types, and its neighbourhood variant. */
        int sc[64], sd[64], rc[64], rd[64];
        MPI_Datatype stypes[64], rtypes[64];
        int sbig[128], rbig[128];
        for (int i = 0; i < size; i++) {
            sc[i] = rc[i] = 1;
            sd[i] = rd[i] = i * 2 * (int)sizeof(int);
            stypes[i] = i % 2 ? pair : MPI_2INT;
            rtypes[i] = i % 2 ? MPI_2INT : pair;
            sbig[2 * i] = rank * 100 + i + round * 10000;
            sbig[2 * i + 1] = -rank - round;
        }
        MPI_Alltoallw(sbig, sc, sd, stypes, rbig, rc, rd, rtypes, dup);
        for (int i = 0; i < size; i++) {
            check(rbig[2 * i] == i * 100 + rank + round * 10000 && rbig[2 * i + 1] == -i - round,
                  "alltoallw");
            fold(rbig[2 * i]);
            fold(rbig[2 * i + 1]);
        }
        MPI_Datatype nt[2] = {pair, pair};
        int nc[2] = {1, 1};
        MPI_Neighbor_alltoallw(sbig, nc, (MPI_Aint[]){0, 8}, nt, rbig, nc, (MPI_Aint[]){0, 8},
                               nt, ring);
        /* From prev its block for its +1 neighbour, from next its block for -1 (with two
         * ranks both neighbours are the same rank: only the checksum counts then). */
        if (size > 2)
            check(rbig[0] == from * 100 + 1 + round * 10000 &&
                      rbig[2] == peer * 100 + round * 10000,
                  "neighbor_alltoallw");
        for (int i = 0; i < 4; i++)
            fold(rbig[i]);

        /* Fortran handle conversions round-trip to the same handles. */
        check(MPI_Comm_f2c(MPI_Comm_c2f(dup)) == dup && MPI_Type_f2c(MPI_Type_c2f(pair)) == pair &&
                  MPI_Op_f2c(MPI_Op_c2f(op)) == op &&
                  MPI_Errhandler_f2c(MPI_Errhandler_c2f(eh)) == eh &&
                  MPI_Group_f2c(MPI_Group_c2f(g)) == g &&
                  MPI_Request_f2c(MPI_Request_c2f(ps)) == ps,
              "c2f/f2c round trips");

        /* Short-lived objects: a duplicate type, an operation, an error handler, a keyval,
         * many requests and communicators created and released. */
        MPI_Datatype tdup;
        MPI_Type_dup(pair, &tdup);
        MPI_Sendrecv(buf, 2, tdup, peer, 20, rbuf, 2, tdup, from, 20, dup, MPI_STATUS_IGNORE);
        check(rbuf[3] == from * 100 + 3 + round * 1000, "type_dup sendrecv");
        fold(rbuf[3]);
        MPI_Type_free(&tdup);
        MPI_Op sop;
        MPI_Op_create(sum_op, 0, &sop);
        MPI_Reduce(in, out, 1, pair, sop, 0, dup);
        if (rank == 0) {
            check(out[0] == size * (size - 1) / 2 + size * round, "short op reduce");
            fold(out[0]);
        }
        MPI_Op_free(&sop);
        MPI_Errhandler seh;
        MPI_Comm sc2;
        MPI_Comm_create_errhandler(errh, &seh);
        MPI_Comm_dup(w, &sc2);
        MPI_Comm_set_errhandler(sc2, seh);
        seen_comm = MPI_COMM_NULL;
        MPI_Comm_call_errhandler(sc2, MPI_ERR_OTHER);
        check(seen_comm == sc2, "short error handler");
        MPI_Errhandler_free(&seh);
        MPI_Comm_free(&sc2);
        int skv;
        MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, MPI_COMM_NULL_DELETE_FN, &skv, NULL);
        MPI_Comm_set_attr(ring, skv, (void *)(intptr_t)round);
        MPI_Comm_get_attr(ring, skv, &val, &flag);
        check(flag && (intptr_t)val == round, "short keyval");
        MPI_Comm_free_keyval(&skv);
        check(skv == MPI_KEYVAL_INVALID, "keyval freed to invalid");
        for (int i = 0; i < 200; i++) {
            MPI_Irecv(rbuf, 1, MPI_INT, rank, 5, dup, &rq[0]);
            MPI_Send(buf, 1, MPI_INT, rank, 5, dup);
            MPI_Wait(&rq[0], MPI_STATUS_IGNORE);
        }
        fold(rbuf[0]);
        for (int i = 0; i < 20; i++) {
            MPI_Comm c;
            MPI_Comm_dup(MPI_COMM_SELF, &c);
            MPI_Comm_free(&c);
        }

        /* In flight across the sleep: a derived-type receive, the persistent receive and a
         * user-op reduction of the derived type, started before it and completed after. */
        int ain[4] = {-1, -1, -1, -1}, rin[2] = {rank * 3 + round, 2}, rout[2];
        MPI_Irecv(ain, 2, pair, from, 12, dup, &rq[0]);
        MPI_Start(&pr);
        rq[1] = pr;
        MPI_Iallreduce(rin, rout, 1, pair, op, dup, &rq[2]);
        usleep(20000);
        MPI_Send(buf, 2, pair, peer, 12, dup);
        pout[0] = rank * 7;
        pout[1] = round + 1;
        MPI_Start(&ps);
        rq[3] = ps;
        MPI_Waitall(4, rq, sts);
        check(rq[1] == pr && rq[3] == ps, "persistent requests kept across the sleep");
        MPI_Get_count(&sts[0], pair, &count);
        check(count == 2 && sts[0].MPI_SOURCE == from && ain[3] == from * 100 + 3 + round * 1000,
              "irecv across the sleep");
        check(pin[0] == from * 7 && pin[1] == round + 1, "persistent receive across the sleep");
        check(rout[0] == 3 * size * (size - 1) / 2 + size * round && rout[1] == 2 * size,
              "iallreduce across the sleep");
        for (int i = 0; i < 4; i++)
            fold(ain[i]);
        fold(pin[0]);
        fold(rout[0]);
    }

    MPI_Request_free(&ps);
    MPI_Request_free(&pr);
    MPI_Comm_free(&ring);
    MPI_Op_free(&op);
    MPI_Type_free(&vec);
    MPI_Type_free(&pair);
    MPI_Group_free(&g);
    MPI_Group_free(&gw1);
    MPI_Group_free(&gw2);
    MPI_Comm_free(&dup);
    MPI_Comm_free_keyval(&kv);
    MPI_Errhandler_free(&eh);

    unsigned long long accs[64];
    MPI_Gather(&acc, 1, MPI_UNSIGNED_LONG_LONG, accs, 1, MPI_UNSIGNED_LONG_LONG, 0, w);
    int total_bad;
    MPI_Allreduce(&bad, &total_bad, 1, MPI_INT, MPI_SUM, w);
    if (rank == 0) {
        acc = 14695981039346656037ULL;
        for (int r = 0; r < size; r++)
            fold((long long)accs[r]);
        printf("handles done: %llx failed checks: %d\n", acc, total_bad);
    }
    if (bad)
        fprintf(stderr, "rank %d: %d failed, first: %s\n", rank, bad, first_bad);
    MPI_Finalize();
    return total_bad != 0;
}

int main(int argc, char **argv)
{
    int raw = argc > 1 && strcmp(argv[1], "--raw") == 0;
    int loop = argc > 1 && strcmp(argv[1], "--loop") == 0;
    int rounds = loop && argc > 2 ? atoi(argv[2]) : 0;
    if (loop && rounds < 1) {
        fprintf(stderr, "usage: %s [--raw | --loop N]   (N >= 1)\n", argv[0]);
        return 2;
    }
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (loop)
        return loop_main(rounds);

    /* The same object, the same handle. */
    MPI_Comm dup;
    MPI_Comm_dup(MPI_COMM_WORLD, &dup);
    MPI_Group g1, g2;
    MPI_Comm_group(dup, &g1);
    MPI_Comm_group(dup, &g2);
    int cmp;
    MPI_Group_compare(g1, g2, &cmp);
    say("rank %d: comm_group twice: same handle %d, compare %d\n", rank, g1 == g2, cmp == MPI_IDENT);
    MPI_Group_free(&g1);
    MPI_Group_free(&g2);
    say("rank %d: group freed to null %d\n", rank, g1 == MPI_GROUP_NULL && g2 == MPI_GROUP_NULL);

    MPI_Datatype pair, vec;
    MPI_Type_contiguous(2, MPI_INT, &pair);
    MPI_Type_vector(3, 1, 2, pair, &vec);
    MPI_Type_commit(&pair);
    MPI_Type_commit(&vec);
    int ni, na, nd, comb;
    MPI_Type_get_envelope(vec, &ni, &na, &nd, &comb);
    int ints[8];
    MPI_Aint addrs[8];
    MPI_Datatype types[8] = {MPI_DATATYPE_NULL, MPI_DATATYPE_NULL, MPI_DATATYPE_NULL};
    MPI_Type_get_contents(vec, 8, 8, 8, ints, addrs, types);
    say("rank %d: vector contents: combiner %d ints %d %d %d, inner type is ours %d, next untouched %d\n", rank,
           comb == MPI_COMBINER_VECTOR, ints[0], ints[1], ints[2], types[0] == pair, types[1] == MPI_DATATYPE_NULL);
    MPI_Type_free(&types[0]);
    int psize;
    MPI_Type_size(pair, &psize);
    say("rank %d: pair still valid after freeing the returned copy: size %d\n", rank, psize);

    /* Callbacks see the application's handles. */
    MPI_Errhandler eh;
    MPI_Comm_create_errhandler(errh, &eh);
    MPI_Comm_set_errhandler(dup, eh);
    MPI_Errhandler got;
    MPI_Comm_get_errhandler(dup, &got);
    say("rank %d: get_errhandler returns ours %d\n", rank, got == eh);
    MPI_Errhandler_free(&got);
    MPI_Comm_call_errhandler(dup, MPI_ERR_OTHER);
    say("rank %d: error handler saw our communicator %d\n", rank, seen_comm == dup);

    MPI_Op op;
    MPI_Op_create(sum_op, 1, &op);
    int in[2] = {rank, 1}, out[2];
    MPI_Allreduce(in, out, 1, pair, op, dup);
    say("rank %d: user op saw our datatype %d, result %d %d\n", rank, seen_type == pair, out[0], out[1]);
    MPI_Op_free(&op);

    int kv;
    MPI_Comm_create_keyval(copy_fn, MPI_COMM_NULL_DELETE_FN, &kv, NULL);
    MPI_Comm_set_attr(dup, kv, (void *)42);
    MPI_Comm dup2;
    MPI_Comm_dup(dup, &dup2);
    void *val;
    int flag;
    MPI_Comm_get_attr(dup2, kv, &val, &flag);
    say("rank %d: copy callback saw our communicator %d, attribute %d %ld\n", rank, copied_from == dup, flag,
           (long)val);
    MPI_Comm_free(&dup2);
    MPI_Comm_free_keyval(&kv);
    say("rank %d: keyval freed to invalid %d\n", rank, kv == MPI_KEYVAL_INVALID);

    /* Statuses: every field, single and arrays, ignore values. */
    int peer = (rank + 1) % size, from = (rank + size - 1) % size;
    int buf[6] = {rank, rank, rank, rank, rank, rank}, rbuf[6];
    MPI_Status st;
    st.MPI_ERROR = 12345;
    MPI_Sendrecv(buf, 3, MPI_INT, peer, 7 + rank, rbuf, 6, MPI_INT, from, MPI_ANY_TAG, dup, &st);
    int count;
    MPI_Get_count(&st, MPI_INT, &count);
    say("rank %d: sendrecv status source %d tag %d count %d error untouched %d\n", rank, st.MPI_SOURCE,
           st.MPI_TAG, count, st.MPI_ERROR == 12345);
    MPI_Request rq[4];
    MPI_Status sts[4];
    MPI_Irecv(rbuf, 2, MPI_INT, from, 1, dup, &rq[0]);
    MPI_Irecv(rbuf + 2, 2, MPI_INT, from, 2, dup, &rq[1]);
    MPI_Isend(buf, 1, MPI_INT, peer, 2, dup, &rq[2]);
    MPI_Isend(buf, 2, MPI_INT, peer, 1, dup, &rq[3]);
    MPI_Waitall(4, rq, sts);
    int c0, c1;
    MPI_Get_count(&sts[0], MPI_INT, &c0);
    MPI_Get_count(&sts[1], MPI_INT, &c1);
    say("rank %d: waitall statuses (%d,%d,%d) (%d,%d,%d), all null %d\n", rank, sts[0].MPI_SOURCE, sts[0].MPI_TAG,
           c0, sts[1].MPI_SOURCE, sts[1].MPI_TAG, c1,
           rq[0] == MPI_REQUEST_NULL && rq[1] == MPI_REQUEST_NULL && rq[2] == MPI_REQUEST_NULL &&
               rq[3] == MPI_REQUEST_NULL);
    MPI_Irecv(rbuf, 1, MPI_INT, from, 3, dup, &rq[0]);
    MPI_Send(buf, 1, MPI_INT, peer, 3, dup);
    int idx;
    MPI_Waitany(1, rq, &idx, MPI_STATUS_IGNORE);
    MPI_Status_set_elements(&st, MPI_INT, 5);
    MPI_Get_elements(&st, MPI_INT, &count);
    int cancelled;
    MPI_Status_set_cancelled(&st, 1);
    MPI_Test_cancelled(&st, &cancelled);
    say("rank %d: waitany index %d, set_elements %d, cancelled %d\n", rank, idx, count, cancelled);

    /* Persistent requests stay; messages from Mprobe are consumed by Mrecv. */
    MPI_Request ps;
    MPI_Send_init(buf, 1, MPI_INT, peer, 9, dup, &ps);
    MPI_Request pr;
    MPI_Recv_init(rbuf, 1, MPI_INT, from, 9, dup, &pr);
    MPI_Request both[2] = {pr, ps};
    for (int i = 0; i < 3; i++) {
        MPI_Startall(2, both);
        MPI_Waitall(2, both, MPI_STATUSES_IGNORE);
    }
    say("rank %d: persistent requests kept %d\n", rank, both[0] == pr && both[1] == ps);
    MPI_Request_free(&both[0]);
    MPI_Request_free(&both[1]);
    MPI_Isend(buf, 4, MPI_INT, peer, 11, dup, &rq[0]);
    MPI_Message msg;
    MPI_Mprobe(from, 11, dup, &msg, &st);
    MPI_Get_count(&st, MPI_INT, &count);
    MPI_Mrecv(rbuf, 4, MPI_INT, &msg, &st);
    MPI_Wait(&rq[0], MPI_STATUS_IGNORE);
    say("rank %d: mprobe count %d, message consumed %d\n", rank, count, msg == MPI_MESSAGE_NULL);

    /* Alltoallw with derived and predefined types, and its neighbourhood variant. */
    int sc[64], sd[64], rc[64], rd[64];
    MPI_Datatype stypes[64], rtypes[64];
    int sbig[128], rbig[128];
    for (int i = 0; i < size; i++) {
        sc[i] = rc[i] = 1;
        sd[i] = rd[i] = i * 2 * (int)sizeof(int);
        stypes[i] = i % 2 ? pair : MPI_2INT;
        rtypes[i] = i % 2 ? MPI_2INT : pair;
        sbig[2 * i] = rank * 100 + i;
        sbig[2 * i + 1] = -rank;
    }
    MPI_Alltoallw(sbig, sc, sd, stypes, rbig, rc, rd, rtypes, dup);
    say("rank %d: alltoallw", rank);
    for (int i = 0; i < size; i++)
        say(" %d/%d", rbig[2 * i], rbig[2 * i + 1]);
    say("\n");
    MPI_Comm ring;
    int dims[1] = {size}, periods[1] = {1};
    MPI_Cart_create(dup, 1, dims, periods, 0, &ring);
    MPI_Datatype nt[2] = {pair, pair};
    int nc[2] = {1, 1};
    MPI_Neighbor_alltoallw(sbig, nc, (MPI_Aint[]){0, 8}, nt, rbig, nc, (MPI_Aint[]){0, 8}, nt, ring);
    say("rank %d: neighbor_alltoallw %d/%d %d/%d\n", rank, rbig[0], rbig[1], rbig[2], rbig[3]);
    MPI_Comm_free(&ring);

    /* Fortran status conversions and sentinels. */
    MPI_Fint fst[MPI_F_STATUS_SIZE];
    MPI_Status back;
    st.MPI_SOURCE = 3;
    st.MPI_TAG = 4;
    MPI_Status_c2f(&st, fst);
    MPI_Status_f2c(fst, &back);
    say("rank %d: status c2f/f2c source %d tag %d\n", rank, back.MPI_SOURCE, back.MPI_TAG);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    int r = MPI_Status_f2c(MPI_F_STATUS_IGNORE, &back), cls;
    MPI_Error_class(r, &cls);
    say("rank %d: f2c(MPI_F_STATUS_IGNORE) class %d, MPI_F08_STATUS_IGNORE set %d\n", rank, cls,
           MPI_F08_STATUS_IGNORE != NULL && MPI_F08_STATUSES_IGNORE != NULL);
    say("rank %d: comm c2f/f2c round trip %d\n", rank, MPI_Comm_f2c(MPI_Comm_c2f(dup)) == dup);

    /* Many create/free cycles: released entries are reused. */
    MPI_Request last = MPI_REQUEST_NULL;
    for (int i = 0; i < 20000; i++) {
        MPI_Irecv(rbuf, 1, MPI_INT, rank, 5, dup, &rq[0]);
        last = rq[0];
        MPI_Send(buf, 1, MPI_INT, rank, 5, dup);
        MPI_Wait(&rq[0], MPI_STATUS_IGNORE);
    }
    MPI_Comm c = MPI_COMM_NULL;
    for (int i = 0; i < 6000; i++) {
        MPI_Comm_dup(MPI_COMM_SELF, &c);
        if (i < 5999)
            MPI_Comm_free(&c);
    }
    if (raw && rank == 0)
        printf("raw: dup %#x pair %#x request %#x comm %#x\n", (unsigned)dup, (unsigned)pair, (unsigned)last,
               (unsigned)c);
    MPI_Comm_free(&c);
    MPI_Type_free(&vec);
    MPI_Type_free(&pair);
    MPI_Errhandler_free(&eh);
    MPI_Comm_free(&dup);
    say("rank %d: done\n", rank);
    print_in_rank_order();
    MPI_Finalize();
    return 0;
}
