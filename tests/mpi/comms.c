/* Communicators and groups: Comm_dup, Comm_split (odd/even), Comm_create and
 * Comm_create_group from groups built with Group_incl/excl/union/intersection (checked with
 * Group_translate_ranks/compare), Cart_create/Cart_coords/Cart_shift/Cart_sub,
 * Graph_create and Dist_graph_create_adjacent with neighbour queries, Intercomm_create/
 * Intercomm_merge, attributes with Comm_create_keyval (predefined null copy/delete
 * functions), Comm_set_name/get_name, Comm_compare, Comm_free. Every communicator is used
 * for a collective. Deterministic output from rank 0; 2 or more ranks. Built with
 * mpicc.mpich.
 *
 * `--loop N`: the communicators, topologies, groups, names and attributes above are made once,
 * then N rounds use them (with short-lived ones and nonblocking operations in flight across
 * each 20 ms sleep); rank 0 prints "comms ready", then "comms done: <checksum> ...". */
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int rank, size, bad;
static char first_bad[96];

static void check(int ok, const char *what)
{
    if (!ok && bad++ == 0)
        snprintf(first_bad, sizeof first_bad, "%s", what);
}

static int sum_over(MPI_Comm c, int v)
{
    int s;
    MPI_Allreduce(&v, &s, 1, MPI_INT, MPI_SUM, c);
    return s;
}

/* ---- --loop mode ---- */

/* A checksum of what this rank received through MPI, folded in a fixed order (FNV-1a
 * over 64-bit values), so it is the same in every run and after any restart. */
static unsigned long long acc = 14695981039346656037ULL;

static void fold(long long v)
{
    acc = (acc ^ (unsigned long long)v) * 1099511628211ULL;
}

/* The attribute callbacks count their calls and check the extra state they were given:
 * a restart must neither lose the callbacks nor call them on its own. */
static int extra_marker, copies, deletes;

static int copy_attr(MPI_Comm old, int key, void *extra, void *in, void *out, int *flag)
{
    (void)old;
    (void)key;
    check(extra == &extra_marker, "copy callback extra state");
    copies++;
    *(void **)out = in;
    *flag = 1;
    return MPI_SUCCESS;
}

static int delete_attr(MPI_Comm c, int key, void *v, void *extra)
{
    (void)c;
    (void)key;
    (void)v;
    check(extra == &extra_marker, "delete callback extra state");
    deletes++;
    return MPI_SUCCESS;
}

static void check_name(MPI_Comm c, const char *want)
{
    char name[MPI_MAX_OBJECT_NAME];
    int len;
    MPI_Comm_get_name(c, name, &len);
    check(strcmp(name, want) == 0 && len == (int)strlen(want), "name read back");
}

static int loop_main(int rounds)
{
    MPI_Comm w = MPI_COMM_WORLD;
    if (size < 2 || size > 64) {
        if (rank == 0)
            fprintf(stderr, "comms --loop needs 2 to 64 ranks\n");
        MPI_Finalize();
        return 2;
    }
    int res, r2, s2;

    /* Long-lived objects, made once. A duplicate with a name and an attribute that its
     * copy callback passes on to duplicates. */
    MPI_Comm dup;
    MPI_Comm_dup(w, &dup);
    MPI_Comm_set_name(dup, "loop-dup");
    int kcopy, knull;
    MPI_Comm_create_keyval(copy_attr, delete_attr, &kcopy, &extra_marker);
    MPI_Comm_set_attr(dup, kcopy, (void *)(intptr_t)1000);

    /* Split odd/even with the order reversed, as in the single pass. */
    MPI_Comm half;
    MPI_Comm_split(w, rank % 2, -rank, &half);
    MPI_Comm_rank(half, &r2);
    MPI_Comm_size(half, &s2);
    MPI_Comm_set_name(half, rank % 2 ? "loop-odds" : "loop-evens");

    /* Groups held for the whole run, and communicators made from them. */
    MPI_Group world_g, evens, odds, lowhalf;
    MPI_Comm_group(w, &world_g);
    int ev[64], ne = 0, od[64], no = 0;
    for (int r = 0; r < size; r++) {
        if (r % 2 == 0)
            ev[ne++] = r;
        else
            od[no++] = r;
    }
    MPI_Group_incl(world_g, ne, ev, &evens);
    MPI_Group_excl(world_g, ne, ev, &odds);
    int lo[64], nlo = (size + 1) / 2;
    for (int i = 0; i < nlo; i++)
        lo[i] = i;
    MPI_Group_incl(world_g, nlo, lo, &lowhalf);
    MPI_Comm ecomm, lcomm = MPI_COMM_NULL;
    MPI_Comm_create(w, evens, &ecomm);
    if (rank < nlo)
        MPI_Comm_create_group(w, lowhalf, 7, &lcomm);

    /* Cartesian 2 x (size/2) grid, periodic in dimension 0, and its rows. */
    int dims[2] = {0, 0}, periods[2] = {1, 0}, coords[2];
    MPI_Dims_create(size, 2, dims);
    MPI_Comm cart, row;
    MPI_Cart_create(w, 2, dims, periods, 0, &cart);
    MPI_Comm_set_name(cart, "loop-cart");
    static int payload = 1234;
    MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, MPI_COMM_NULL_DELETE_FN, &knull, NULL);
    MPI_Comm_set_attr(cart, knull, &payload);
    int keep[2] = {0, 1};
    MPI_Cart_sub(cart, keep, &row);

    /* Graph ring (prev, next) and a distributed graph (out: next, next-next). */
    int index[64], edges[128];
    for (int r = 0; r < size; r++) {
        index[r] = 2 * (r + 1);
        edges[2 * r] = (r + size - 1) % size;
        edges[2 * r + 1] = (r + 1) % size;
    }
    MPI_Comm graph, dist;
    MPI_Graph_create(w, size, index, edges, 0, &graph);
    MPI_Comm_set_name(graph, "loop-graph");
    int dsts[2] = {(rank + 1) % size, (rank + 2) % size};
    int in_srcs[2] = {(rank + size - 1) % size, (rank + size - 2) % size};
    MPI_Dist_graph_create_adjacent(w, 2, in_srcs, MPI_UNWEIGHTED, 2, dsts, MPI_UNWEIGHTED,
                                   MPI_INFO_NULL, 0, &dist);
    MPI_Comm_set_name(dist, "loop-dist");

    /* Intercommunicator between the halves (leaders: each half's highest world rank, the
     * split reversed the order) and its merge, evens first. */
    int hi_even = (size - 1) % 2 ? size - 2 : size - 1;
    int hi_odd = (size - 1) % 2 ? size - 1 : size - 2;
    int remote_leader = rank % 2 == 0 ? hi_odd : hi_even;
    MPI_Comm ic, merged;
    MPI_Intercomm_create(half, 0, w, remote_leader, 42, &ic);
    MPI_Comm_set_name(ic, "loop-inter");
    MPI_Intercomm_merge(ic, rank % 2, &merged);
    MPI_Comm_set_name(merged, "loop-merged");
    int rsize, mrank;
    MPI_Comm_remote_size(ic, &rsize);
    MPI_Comm_rank(merged, &mrank);

    if (rank == 0) {
        printf("comms ready\n");
        fflush(stdout);
    }

    int want_deletes = 0, want_copies = 0;
    for (int round = 0; round < rounds; round++) {
        fold(round);

        /* Names, attributes, groups and topologies read back from the long-lived objects. */
        check_name(dup, "loop-dup");
        check_name(half, rank % 2 ? "loop-odds" : "loop-evens");
        check_name(cart, "loop-cart");
        check_name(graph, "loop-graph");
        check_name(dist, "loop-dist");
        check_name(ic, "loop-inter");
        check_name(merged, "loop-merged");
        void *v;
        int found;
        MPI_Comm_get_attr(dup, kcopy, &v, &found);
        check(found && (intptr_t)v == 1000 + round, "attribute of the previous round");
        /* Replacing the value calls the delete callback on the old one. */
        MPI_Comm_set_attr(dup, kcopy, (void *)(intptr_t)(1001 + round));
        want_deletes++;
        MPI_Comm_get_attr(cart, knull, &v, &found);
        check(found && v == &payload && *(int *)v == 1234, "cart attribute");
        MPI_Comm_get_attr(half, kcopy, &v, &found);
        check(!found, "attribute only where set");
        int *tagub;
        MPI_Comm_get_attr(dup, MPI_TAG_UB, &tagub, &found);
        check(found && *tagub >= 32767, "tag_ub");
        int tin[64], tout[64];
        for (int i = 0; i < no; i++)
            tin[i] = i;
        MPI_Group_translate_ranks(odds, no, tin, world_g, tout);
        for (int i = 0; i < no; i++)
            check(tout[i] == od[i], "translate ranks");
        MPI_Group_compare(evens, odds, &res);
        check(res == MPI_UNEQUAL, "group compare");
        MPI_Group hg;
        MPI_Comm_group(half, &hg);
        MPI_Group_compare(hg, rank % 2 ? odds : evens, &res);
        check(res == (s2 == 1 ? MPI_IDENT : MPI_SIMILAR), "half's group");
        MPI_Group_free(&hg);
        int topo;
        MPI_Topo_test(graph, &topo);
        check(topo == MPI_GRAPH, "topo graph");
        MPI_Topo_test(dist, &topo);
        check(topo == MPI_DIST_GRAPH, "topo dist graph");
        MPI_Comm_test_inter(ic, &found);
        check(found, "test_inter");

        /* Collectives on every intracommunicator. */
        int x = (rank + 1) * (round + 1), s, want = 0;
        MPI_Allreduce(&x, &s, 1, MPI_INT, MPI_SUM, dup);
        check(s == (round + 1) * size * (size + 1) / 2, "dup allreduce");
        fold(s);
        want = 0;
        for (int q = rank % 2; q < size; q += 2)
            want += q * round + 1;
        x = rank * round + 1;
        MPI_Allreduce(&x, &s, 1, MPI_INT, MPI_SUM, half);
        check(s == want, "split allreduce");
        fold(s);
        int hv[64];
        MPI_Allgather(&rank, 1, MPI_INT, hv, 1, MPI_INT, half);
        for (int i = 0; i < s2; i++) {
            check(hv[i] == (rank % 2 ? od : ev)[(s2 - 1) - i], "split order");
            fold(hv[i]);
        }
        if (ecomm != MPI_COMM_NULL) {
            int b = rank == 0 ? 77 + round : -1;
            MPI_Bcast(&b, 1, MPI_INT, 0, ecomm);
            check(b == 77 + round, "comm_create bcast");
            fold(b);
        }
        if (lcomm != MPI_COMM_NULL) {
            x = rank + round;
            MPI_Allreduce(&x, &s, 1, MPI_INT, MPI_MAX, lcomm);
            check(s == nlo - 1 + round, "comm_create_group allreduce");
            fold(s);
        }

        /* Cartesian: shift along the periodic dimension, neighbour allgather, rows. */
        MPI_Cart_coords(cart, rank, 2, coords);
        int src0, dst0, src1, dst1;
        MPI_Cart_shift(cart, 0, 1, &src0, &dst0);
        MPI_Cart_shift(cart, 1, 1, &src1, &dst1);
        x = rank * 100 + round;
        int y = -1;
        MPI_Sendrecv(&x, 1, MPI_INT, dst0, round, &y, 1, MPI_INT, src0, round, cart,
                     MPI_STATUS_IGNORE);
        check(y == src0 * 100 + round, "cart sendrecv");
        fold(y);
        int cn[4] = {-1, -1, -1, -1}, cwant[4] = {src0, dst0, src1, dst1};
        MPI_Neighbor_allgather(&x, 1, MPI_INT, cn, 1, MPI_INT, cart);
        for (int i = 0; i < 4; i++) {
            /* An edge's missing neighbour (MPI_PROC_NULL) leaves its slot untouched. */
            check(cn[i] == (cwant[i] == MPI_PROC_NULL ? -1 : cwant[i] * 100 + round),
                  "cart neighbor_allgather");
            fold(cn[i]);
        }
        MPI_Allreduce(&x, &s, 1, MPI_INT, MPI_SUM, row);
        want = 0;
        for (int q = 0; q < size; q++) {
            int qc[2];
            MPI_Cart_coords(cart, q, 2, qc);
            if (qc[0] == coords[0])
                want += q * 100 + round;
        }
        check(s == want, "cart_sub allreduce");
        fold(s);

        /* Graph and distributed graph neighbour collectives. */
        int gnb[2], gin[2] = {-1, -1};
        MPI_Graph_neighbors(graph, rank, 2, gnb);
        x = rank * 1000 + round;
        MPI_Neighbor_allgather(&x, 1, MPI_INT, gin, 1, MPI_INT, graph);
        for (int i = 0; i < 2; i++) {
            check(gin[i] == gnb[i] * 1000 + round, "graph neighbor_allgather");
            fold(gin[i]);
        }
        int dout[2] = {rank * 10 + round * 100, rank * 10 + 1 + round * 100}, din[2];
        MPI_Neighbor_alltoall(dout, 1, MPI_INT, din, 1, MPI_INT, dist);
        check(din[0] == in_srcs[0] * 10 + round * 100 &&
                  din[1] == in_srcs[1] * 10 + 1 + round * 100,
              "dist neighbor_alltoall");
        fold(din[0]);
        fold(din[1]);

        /* Intercommunicator: the remote group's sum, a broadcast from one side (alternating)
         * and the two leaders exchanging a message; then the merged communicator. */
        x = rank + round;
        MPI_Allreduce(&x, &s, 1, MPI_INT, MPI_SUM, ic);
        want = 0;
        for (int q = 1 - rank % 2; q < size; q += 2)
            want += q + round;
        check(s == want, "intercomm allreduce");
        fold(s);
        int root_side = round % 2, b = -1;
        if (rank % 2 == root_side) {
            b = 5000 + round;
            MPI_Bcast(&b, 1, MPI_INT, r2 == 0 ? MPI_ROOT : MPI_PROC_NULL, ic);
        } else {
            MPI_Bcast(&b, 1, MPI_INT, 0, ic);
            check(b == 5000 + round, "intercomm bcast");
            fold(b);
        }
        if (r2 == 0) {
            x = rank * 3 + round;
            MPI_Sendrecv(&x, 1, MPI_INT, 0, 9, &y, 1, MPI_INT, 0, 9, ic, MPI_STATUS_IGNORE);
            check(y == remote_leader * 3 + round, "intercomm leaders");
            fold(y);
        }
        int mv[64];
        MPI_Allgather(&rank, 1, MPI_INT, mv, 1, MPI_INT, merged);
        check(mv[mrank] == rank, "merged allgather");
        for (int i = 0; i < size; i++) {
            /* Evens first, each half in its split order. */
            check(mv[i] % 2 == (i < ne ? 0 : 1), "merged order");
            fold(mv[i]);
        }

        /* Short-lived objects: a duplicate (the copy callback passes the attribute on),
         * a split, an intercommunicator, a distributed graph, a keyval, a group. */
        MPI_Comm sdup;
        MPI_Comm_dup(dup, &sdup);
        want_copies++;
        MPI_Comm_get_attr(sdup, kcopy, &v, &found);
        check(found && (intptr_t)v == 1001 + round, "attribute copied");
        x = round;
        MPI_Allreduce(&x, &s, 1, MPI_INT, MPI_SUM, sdup);
        check(s == round * size, "short dup allreduce");
        fold(s);
        MPI_Comm_free(&sdup);
        want_deletes++;
        check(copies == want_copies && deletes == want_deletes, "callback counts");

        MPI_Comm sp;
        int color = (rank + round) % 3;
        MPI_Comm_split(w, color, rank, &sp);
        MPI_Allreduce(&rank, &s, 1, MPI_INT, MPI_SUM, sp);
        want = 0;
        for (int q = 0; q < size; q++)
            if ((q + round) % 3 == color)
                want += q;
        check(s == want, "short split allreduce");
        fold(s);
        MPI_Comm_free(&sp);

        MPI_Comm sic;
        MPI_Intercomm_create(half, 0, dup, remote_leader, 43, &sic);
        x = round * 2 + rank % 2;
        MPI_Allreduce(&x, &s, 1, MPI_INT, MPI_MAX, sic);
        check(s == round * 2 + 1 - rank % 2, "short intercomm allreduce");
        fold(s);
        MPI_Comm_free(&sic);

        /* One edge per rank to rank + k: every rank then has one source, rank - k. */
        MPI_Comm sdg;
        int k = 1 + round % (size - 1), one = 1, to = (rank + k) % size;
        MPI_Dist_graph_create(w, 1, &rank, &one, &to, MPI_UNWEIGHTED, MPI_INFO_NULL, 0, &sdg);
        int indeg, outdeg, weighted;
        MPI_Dist_graph_neighbors_count(sdg, &indeg, &outdeg, &weighted);
        check(indeg == 1 && outdeg == 1 && !weighted, "short dist graph counts");
        x = rank * 7 + round;
        y = -1;
        MPI_Neighbor_allgather(&x, 1, MPI_INT, &y, 1, MPI_INT, sdg);
        check(y == (rank + size - k) % size * 7 + round, "short dist graph allgather");
        fold(y);
        MPI_Comm_free(&sdg);

        int skey;
        MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, MPI_COMM_NULL_DELETE_FN, &skey, NULL);
        MPI_Comm_set_attr(half, skey, (void *)(intptr_t)round);
        MPI_Comm_get_attr(half, skey, &v, &found);
        check(found && (intptr_t)v == round, "short keyval");
        MPI_Comm_delete_attr(half, skey);
        MPI_Comm_free_keyval(&skey);

        MPI_Group sg;
        int range[1][3] = {{0, size - 1, 2}};
        MPI_Group_range_incl(world_g, 1, range, &sg);
        MPI_Group_compare(sg, evens, &res);
        check(res == MPI_IDENT, "short group range_incl");
        MPI_Group_free(&sg);

        /* In flight across the sleep: a receive posted before it and matched after it,
         * and nonblocking neighbour and intercommunicator collectives. */
        MPI_Request rq[4];
        MPI_Status sts[4];
        int prev = (rank + size - 1) % size, next = (rank + 1) % size;
        int pin = -1, pout = rank * 11 + round;
        int nout[2] = {rank + round, rank - round}, nin[2] = {-1, -1};
        int iv = rank * round, is = -1, gv = rank + 3 * round, gg[2] = {-1, -1};
        MPI_Irecv(&pin, 1, MPI_INT, prev, 500, dup, &rq[0]);
        MPI_Ineighbor_alltoall(nout, 1, MPI_INT, nin, 1, MPI_INT, dist, &rq[1]);
        MPI_Iallreduce(&iv, &is, 1, MPI_INT, MPI_SUM, ic, &rq[2]);
        MPI_Ineighbor_allgather(&gv, 1, MPI_INT, gg, 1, MPI_INT, graph, &rq[3]);
        usleep(20000);
        MPI_Send(&pout, 1, MPI_INT, next, 500, dup);
        MPI_Waitall(4, rq, sts);
        check(pin == prev * 11 + round, "irecv across the sleep");
        check(nin[0] == in_srcs[0] + round && nin[1] == in_srcs[1] - round,
              "ineighbor_alltoall across the sleep");
        want = 0;
        for (int q = 1 - rank % 2; q < size; q += 2)
            want += q * round;
        check(is == want, "intercomm iallreduce across the sleep");
        check(gg[0] == gnb[0] + 3 * round && gg[1] == gnb[1] + 3 * round,
              "ineighbor_allgather across the sleep");
        fold(pin);
        fold(nin[0]);
        fold(nin[1]);
        fold(is);
        fold(gg[0]);
        fold(gg[1]);
    }

    /* Free the long-lived objects: dup's attribute goes with it (one more delete). */
    MPI_Comm_free(&merged);
    MPI_Comm_free(&ic);
    MPI_Comm_free(&dist);
    MPI_Comm_free(&graph);
    MPI_Comm_free(&row);
    MPI_Comm_free(&cart);
    if (lcomm != MPI_COMM_NULL)
        MPI_Comm_free(&lcomm);
    if (ecomm != MPI_COMM_NULL)
        MPI_Comm_free(&ecomm);
    MPI_Comm_free(&half);
    MPI_Comm_free(&dup);
    check(deletes == want_deletes + 1 && copies == want_copies, "final callback counts");
    MPI_Comm_free_keyval(&kcopy);
    MPI_Comm_free_keyval(&knull);
    MPI_Group_free(&lowhalf);
    MPI_Group_free(&odds);
    MPI_Group_free(&evens);
    MPI_Group_free(&world_g);

    unsigned long long accs[64];
    MPI_Gather(&acc, 1, MPI_UNSIGNED_LONG_LONG, accs, 1, MPI_UNSIGNED_LONG_LONG, 0, w);
    int total_bad;
    MPI_Allreduce(&bad, &total_bad, 1, MPI_INT, MPI_SUM, w);
    if (rank == 0) {
        acc = 14695981039346656037ULL;
        for (int r = 0; r < size; r++)
            fold((long long)accs[r]);
        printf("comms done: %llx failed checks: %d\n", acc, total_bad);
    }
    if (bad)
        fprintf(stderr, "rank %d: %d failed, first: %s\n", rank, bad, first_bad);
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
    MPI_Comm w = MPI_COMM_WORLD;
    MPI_Comm_rank(w, &rank);
    MPI_Comm_size(w, &size);
    if (loop)
        return loop_main(rounds);
    int res, r2, s2;
    char line[8][160];
    int nlines = 0;

    /* Dup and compare */
    MPI_Comm dup;
    MPI_Comm_dup(w, &dup);
    MPI_Comm_compare(w, dup, &res);
    check(res == MPI_CONGRUENT, "dup congruent");
    MPI_Comm_compare(w, w, &res);
    check(res == MPI_IDENT, "ident");
    check(sum_over(dup, rank) == size * (size - 1) / 2, "dup allreduce");

    /* Names */
    char name[MPI_MAX_OBJECT_NAME];
    int len;
    MPI_Comm_get_name(w, name, &len);
    check(strcmp(name, "MPI_COMM_WORLD") == 0, "world name");
    MPI_Comm_set_name(dup, "my-dup");
    MPI_Comm_get_name(dup, name, &len);
    check(strcmp(name, "my-dup") == 0 && len == 6, "set name");

    /* Split odd/even, key reverses the order */
    MPI_Comm half;
    MPI_Comm_split(w, rank % 2, -rank, &half);
    MPI_Comm_rank(half, &r2);
    MPI_Comm_size(half, &s2);
    check(s2 == (size + 1 - rank % 2) / 2, "split size");
    check(r2 == (s2 - 1) - rank / 2, "split reversed rank");
    int hsum = sum_over(half, rank);
    MPI_Comm_compare(w, half, &res);
    check(res == (size == 1 ? MPI_CONGRUENT : MPI_UNEQUAL), "split unequal");
    MPI_Comm none;
    MPI_Comm_split(w, rank == 0 ? 0 : MPI_UNDEFINED, 0, &none);
    check((rank == 0) == (none != MPI_COMM_NULL), "split undefined");
    if (none != MPI_COMM_NULL)
        MPI_Comm_free(&none);

    /* Groups */
    MPI_Group world_g, evens, odds, first2, un, inter, lowhalf;
    MPI_Comm_group(w, &world_g);
    int ev[64], ne = 0, od[64], no = 0;
    for (int r = 0; r < size; r++) {
        if (r % 2 == 0)
            ev[ne++] = r;
        else
            od[no++] = r;
    }
    MPI_Group_incl(world_g, ne, ev, &evens);
    MPI_Group_excl(world_g, ne, ev, &odds);
    int f2[2] = {0, 1};
    MPI_Group_incl(world_g, 2, f2, &first2);
    MPI_Group_union(evens, odds, &un);
    MPI_Group_intersection(first2, odds, &inter);
    int gsz, gr;
    MPI_Group_size(un, &gsz);
    MPI_Group_compare(un, world_g, &res);
    check(gsz == size && res == (size <= 2 ? MPI_IDENT : MPI_SIMILAR), "union");
    MPI_Group_compare(world_g, world_g, &res);
    check(res == MPI_IDENT, "group ident");
    MPI_Group_size(inter, &gsz);
    check(gsz == 1, "intersection size");
    MPI_Group_rank(evens, &gr);
    check(gr == (rank % 2 == 0 ? rank / 2 : MPI_UNDEFINED), "group rank");
    int tin[64], tout[64];
    for (int i = 0; i < no; i++)
        tin[i] = i;
    MPI_Group_translate_ranks(odds, no, tin, world_g, tout);
    for (int i = 0; i < no; i++)
        check(tout[i] == od[i], "translate ranks");
    int q = 0;
    MPI_Group_translate_ranks(world_g, 1, &q, odds, tout);
    check(tout[0] == MPI_UNDEFINED, "translate undefined");
    MPI_Group_compare(evens, odds, &res);
    check(res == MPI_UNEQUAL, "group unequal");

    /* Comm_create (collective over world) from the evens group */
    MPI_Comm ecomm;
    MPI_Comm_create(w, evens, &ecomm);
    check((rank % 2 == 0) == (ecomm != MPI_COMM_NULL), "comm_create membership");
    int esum = -1;
    if (ecomm != MPI_COMM_NULL) {
        esum = sum_over(ecomm, rank);
        MPI_Comm_free(&ecomm);
        check(ecomm == MPI_COMM_NULL, "free nulls");
    }
    /* Comm_create_group (collective over the group only): the lower half of the ranks */
    int lo[64], nlo = (size + 1) / 2;
    for (int i = 0; i < nlo; i++)
        lo[i] = i;
    MPI_Group_incl(world_g, nlo, lo, &lowhalf);
    int losum = -1;
    if (rank < nlo) {
        MPI_Comm lcomm;
        MPI_Comm_create_group(w, lowhalf, 7, &lcomm);
        losum = sum_over(lcomm, rank + 1);
        MPI_Comm_free(&lcomm);
    }
    snprintf(line[nlines++], 160, "split-sum(rank0's half)=%d evens-sum=%d low-sum=%d", hsum,
             esum, losum);

    /* Cartesian: 2 x (size/2) periodic grid (size rounded down to even), Cart_sub rows */
    int dims[2] = {0, 0}, periods[2] = {1, 0}, coords[2];
    MPI_Dims_create(size, 2, dims);
    MPI_Comm cart;
    MPI_Cart_create(w, 2, dims, periods, 0, &cart);
    int topo;
    MPI_Topo_test(cart, &topo);
    check(topo == MPI_CART, "topo cart");
    MPI_Cart_coords(cart, rank, 2, coords);
    int back;
    MPI_Cart_rank(cart, coords, &back);
    check(back == rank, "cart rank");
    int src0, dst0, src1, dst1;
    MPI_Cart_shift(cart, 0, 1, &src0, &dst0);
    MPI_Cart_shift(cart, 1, 1, &src1, &dst1);
    check(dst0 != MPI_PROC_NULL, "periodic shift");
    check((coords[1] == dims[1] - 1) == (dst1 == MPI_PROC_NULL), "nonperiodic edge");
    int shifted = -1;
    MPI_Sendrecv(&rank, 1, MPI_INT, dst0, 0, &shifted, 1, MPI_INT, src0, 0, cart,
                 MPI_STATUS_IGNORE);
    check(shifted == src0, "cart sendrecv");
    int keep[2] = {0, 1};
    MPI_Comm row;
    MPI_Cart_sub(cart, keep, &row);
    int rs;
    MPI_Comm_size(row, &rs);
    check(rs == dims[1], "cart_sub size");
    int rowsum = sum_over(row, rank);
    int cdims[2], cper[2], ccoords[2];
    MPI_Cart_get(cart, 2, cdims, cper, ccoords);
    check(cdims[0] == dims[0] && cper[0] == 1 && ccoords[1] == coords[1], "cart_get");
    int all_rowsums[64];
    MPI_Gather(&rowsum, 1, MPI_INT, all_rowsums, 1, MPI_INT, 0, w);
    if (rank == 0) {
        int n = snprintf(line[nlines], 160, "cart %dx%d row sums:", dims[0], dims[1]);
        for (int r = 0; r < size; r++)
            n += snprintf(line[nlines] + n, 160 - n, " %d", all_rowsums[r]);
        nlines++;
    }
    MPI_Comm_free(&row);
    MPI_Comm_free(&cart);

    /* Graph: a ring; neighbours are prev and next */
    int index[64], edges[128];
    for (int r = 0; r < size; r++) {
        index[r] = 2 * (r + 1);
        edges[2 * r] = (r + size - 1) % size;
        edges[2 * r + 1] = (r + 1) % size;
    }
    MPI_Comm graph;
    MPI_Graph_create(w, size, index, edges, 0, &graph);
    MPI_Topo_test(graph, &topo);
    check(topo == MPI_GRAPH, "topo graph");
    int nn, nbrs[2], gn, ge;
    MPI_Graphdims_get(graph, &gn, &ge);
    check(gn == size && ge == 2 * size, "graphdims");
    MPI_Graph_neighbors_count(graph, rank, &nn);
    MPI_Graph_neighbors(graph, rank, 2, nbrs);
    check(nn == 2 && nbrs[0] == (rank + size - 1) % size && nbrs[1] == (rank + 1) % size,
          "graph neighbours");
    int nbvals[2] = {-1, -1};
    MPI_Neighbor_allgather(&rank, 1, MPI_INT, nbvals, 1, MPI_INT, graph);
    check(nbvals[0] == nbrs[0] && nbvals[1] == nbrs[1], "graph neighbor_allgather");
    MPI_Comm_free(&graph);

    /* Distributed graph: each rank sends to next and next-next, receives from prev-prev and prev */
    int dsts[2] = {(rank + 1) % size, (rank + 2) % size};
    int in_srcs[2] = {(rank + size - 1) % size, (rank + size - 2) % size};
    MPI_Comm dist;
    MPI_Dist_graph_create_adjacent(w, 2, in_srcs, MPI_UNWEIGHTED, 2, dsts, MPI_UNWEIGHTED,
                                   MPI_INFO_NULL, 0, &dist);
    MPI_Topo_test(dist, &topo);
    check(topo == MPI_DIST_GRAPH, "topo dist graph");
    int indeg, outdeg, weighted;
    MPI_Dist_graph_neighbors_count(dist, &indeg, &outdeg, &weighted);
    check(indeg == 2 && outdeg == 2 && !weighted, "dist graph counts");
    int gs[2], gd[2], gsw[2], gdw[2];
    MPI_Dist_graph_neighbors(dist, 2, gs, gsw, 2, gd, gdw);
    check(gs[0] == in_srcs[0] && gs[1] == in_srcs[1] && gd[0] == dsts[0] && gd[1] == dsts[1],
          "dist graph neighbours");
    int out[2] = {rank * 10, rank * 10 + 1}, in[2] = {-1, -1};
    MPI_Neighbor_alltoall(out, 1, MPI_INT, in, 1, MPI_INT, dist);
    /* prev sent me its element 0 (I am its first destination), prev-prev its element 1 */
    check(in[0] == in_srcs[0] * 10 && in[1] == in_srcs[1] * 10 + 1, "dist neighbor_alltoall");
    MPI_Comm_free(&dist);

    /* Intercommunicator between the two halves of the split, then merged */
    int isum = -1, mrank = -1;
    if (size >= 2) {
        MPI_Comm ic, merged;
        /* The other half's local leader (its rank 0) is its highest world rank: the split
         * key reversed the order. */
        int hi_even = (size - 1) % 2 ? size - 2 : size - 1;
        int hi_odd = (size - 1) % 2 ? size - 1 : size - 2;
        int remote_leader = rank % 2 == 0 ? hi_odd : hi_even;
        MPI_Intercomm_create(half, 0, w, remote_leader, 42, &ic);
        int flag, rsize;
        MPI_Comm_test_inter(ic, &flag);
        MPI_Comm_remote_size(ic, &rsize);
        check(flag && rsize == size - s2, "intercomm");
        /* Allreduce over an intercommunicator returns the remote group's sum */
        isum = sum_over(ic, rank);
        int expect = 0;
        for (int r = 0; r < size; r++)
            if (r % 2 != rank % 2)
                expect += r;
        check(isum == expect, "intercomm allreduce");
        MPI_Intercomm_merge(ic, rank % 2, &merged); /* evens first */
        int ms;
        MPI_Comm_rank(merged, &mrank);
        MPI_Comm_size(merged, &ms);
        check(ms == size, "merged size");
        check(sum_over(merged, mrank) == size * (size - 1) / 2, "merged ranks distinct");
        MPI_Comm_free(&merged);
        MPI_Comm_free(&ic);
    }
    int mranks[64];
    MPI_Gather(&mrank, 1, MPI_INT, mranks, 1, MPI_INT, 0, w);
    if (rank == 0) {
        int n = snprintf(line[nlines], 160, "merged ranks:");
        for (int r = 0; r < size; r++)
            n += snprintf(line[nlines] + n, 160 - n, " %d", mranks[r]);
        nlines++;
    }

    /* Attributes */
    int key;
    MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, MPI_COMM_NULL_DELETE_FN, &key, NULL);
    static int payload = 1234;
    int found;
    void *v;
    MPI_Comm_get_attr(dup, key, &v, &found);
    check(!found, "attr absent");
    MPI_Comm_set_attr(dup, key, &payload);
    MPI_Comm_get_attr(dup, key, &v, &found);
    check(found && v == &payload && *(int *)v == 1234, "attr set");
    MPI_Comm dup2;
    MPI_Comm_dup(dup, &dup2); /* the null copy function does not copy it */
    MPI_Comm_get_attr(dup2, key, &v, &found);
    check(!found, "attr not copied");
    MPI_Comm_delete_attr(dup, key);
    MPI_Comm_get_attr(dup, key, &v, &found);
    check(!found, "attr deleted");
    MPI_Comm_free_keyval(&key);
    check(key == MPI_KEYVAL_INVALID, "keyval freed");
    int *tagub;
    MPI_Comm_get_attr(w, MPI_TAG_UB, &tagub, &found);
    check(found && *tagub >= 32767, "tag_ub");
    MPI_Comm_free(&dup2);

    MPI_Group_free(&world_g);
    MPI_Group_free(&evens);
    MPI_Group_free(&odds);
    MPI_Group_free(&first2);
    MPI_Group_free(&un);
    MPI_Group_free(&inter);
    MPI_Group_free(&lowhalf);
    MPI_Comm_free(&half);
    MPI_Comm_free(&dup);
    check(dup == MPI_COMM_NULL, "dup freed");

    int bads[64];
    MPI_Gather(&bad, 1, MPI_INT, bads, 1, MPI_INT, 0, w);
    if (rank == 0) {
        printf("comms size=%d\n", size);
        for (int i = 0; i < nlines; i++)
            printf("%s\n", line[i]);
        for (int r = 0; r < size; r++)
            printf("rank %d failed checks: %d\n", r, bads[r]);
    }
    if (bad)
        fprintf(stderr, "rank %d: %d failed, first: %s\n", rank, bad, first_bad);
    MPI_Finalize();
    return 0;
}
