/* Communicators and groups: Comm_dup, Comm_split (odd/even), Comm_create and
 * Comm_create_group from groups built with Group_incl/excl/union/intersection (checked with
 * Group_translate_ranks/compare), Cart_create/Cart_coords/Cart_shift/Cart_sub,
 * Graph_create and Dist_graph_create_adjacent with neighbour queries, Intercomm_create/
 * Intercomm_merge, attributes with Comm_create_keyval (predefined null copy/delete
 * functions), Comm_set_name/get_name, Comm_compare, Comm_free. Every communicator is used
 * for a collective. Deterministic output from rank 0; 2 or more ranks. Built with
 * mpicc.mpich. */
#include <mpi.h>
#include <stdio.h>
#include <string.h>

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

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm w = MPI_COMM_WORLD;
    MPI_Comm_rank(w, &rank);
    MPI_Comm_size(w, &size);
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
