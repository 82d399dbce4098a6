/* Derived datatypes: Type_contiguous, vector, hvector, indexed, hindexed, indexed_block,
 * create_struct, create_subarray, create_darray, create_resized, dup; Type_commit/free;
 * Type_get_envelope/get_contents on each; Type_size/get_extent/get_true_extent;
 * Pack/Unpack/Pack_size. Rank 0 sends one message of each type to every other rank, which
 * checks the data landed where the type map says (and nowhere else). Deterministic
 * output from rank 0; 2 or more ranks. Built with mpicc.mpich.
 * `--loop N` (for checkpoint/restart at random instants): one type of each constructor,
 * and of each large-count (_c) constructor (some built from intermediate types already freed) is held across N rounds that send with
 * them, read their contents back and make/free types of their own; prints
 * "datatypes ready", then "datatypes done: <checksum> failed checks: <n>". */
#include <mpi.h>
#include <stddef.h>
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

#define NB 256
struct particle {
    double pos[3];
    int id;
    char tag;
};

static const char *combiner_name(int c)
{
    switch (c) {
    case MPI_COMBINER_NAMED: return "named";
    case MPI_COMBINER_DUP: return "dup";
    case MPI_COMBINER_CONTIGUOUS: return "contiguous";
    case MPI_COMBINER_VECTOR: return "vector";
    case MPI_COMBINER_HVECTOR: return "hvector";
    case MPI_COMBINER_INDEXED: return "indexed";
    case MPI_COMBINER_HINDEXED: return "hindexed";
    case MPI_COMBINER_INDEXED_BLOCK: return "indexed_block";
    case MPI_COMBINER_STRUCT: return "struct";
    case MPI_COMBINER_SUBARRAY: return "subarray";
    case MPI_COMBINER_DARRAY: return "darray";
    case MPI_COMBINER_RESIZED: return "resized";
    default: return "other";
    }
}

/* Describes a type on rank 0's output: combiner, contents counts, size, extents. */
static void describe(const char *label, MPI_Datatype t, int expect_combiner)
{
    int ni, na, nd, comb;
    MPI_Type_get_envelope(t, &ni, &na, &nd, &comb);
    check(comb == expect_combiner, label);
    int ints[64];
    MPI_Aint addrs[16];
    MPI_Datatype types[16];
    if (comb != MPI_COMBINER_NAMED) {
        MPI_Type_get_contents(t, 64, 16, 16, ints, addrs, types);
        /* Contents' types that are derived must be freed by the caller. */
        for (int i = 0; i < nd; i++) {
            int a, b, c, tc;
            MPI_Type_get_envelope(types[i], &a, &b, &c, &tc);
            if (tc != MPI_COMBINER_NAMED)
                MPI_Type_free(&types[i]);
        }
    }
    int sz;
    MPI_Aint lb, ext, tlb, text;
    MPI_Type_size(t, &sz);
    MPI_Type_get_extent(t, &lb, &ext);
    MPI_Type_get_true_extent(t, &tlb, &text);
    long ic = 0;
    for (int i = 0; i < ni; i++)
        ic = ic * 7 + ints[i];
    if (rank == 0)
        printf("%-13s %-13s ints=%d(%ld) addrs=%d types=%d size=%d lb=%ld extent=%ld "
               "true_lb=%ld true_extent=%ld\n",
               label, combiner_name(comb), ni, comb == MPI_COMBINER_NAMED ? 0 : ic, na, nd, sz,
               (long)lb, (long)ext, (long)tlb, (long)text);
}

/* Rank 0 sends `count` of type t from a patterned buffer; the others receive into a
 * 0xEE-filled buffer and compare with a locally built reference (what a Pack/Unpack of the
 * same type through a byte buffer yields). */
static void exchange(const char *label, MPI_Datatype t, int count)
{
    unsigned char src[NB * 8], dst[NB * 8], ref[NB * 8], packed[NB * 8];
    for (int i = 0; i < (int)sizeof src; i++)
        src[i] = (unsigned char)(i * 13 + 5);
    memset(ref, 0xEE, sizeof ref);
    int psize, pos = 0;
    MPI_Pack_size(count, t, MPI_COMM_WORLD, &psize);
    check(psize <= (int)sizeof packed, "pack size");
    MPI_Pack(src, count, t, packed, sizeof packed, &pos, MPI_COMM_WORLD);
    int tsz;
    MPI_Type_size(t, &tsz);
    check(pos == tsz * count, "pack position");
    int upos = 0;
    MPI_Unpack(packed, pos, &upos, ref, count, t, MPI_COMM_WORLD);
    check(upos == pos, "unpack position");
    if (rank == 0) {
        for (int r = 1; r < size; r++)
            MPI_Send(src, count, t, r, 0, MPI_COMM_WORLD);
    } else {
        memset(dst, 0xEE, sizeof dst);
        MPI_Status st;
        MPI_Recv(dst, count, t, 0, 0, MPI_COMM_WORLD, &st);
        int n, elems;
        MPI_Get_count(&st, t, &n);
        MPI_Get_elements(&st, t, &elems);
        check(n == count, label);
        check(memcmp(dst, ref, sizeof dst) == 0, label);
    }
    /* A checksum of the typed data as seen by the receiver: the same on every rank. */
    long sum = 0;
    for (int i = 0; i < pos; i++)
        sum = (sum * 131 + packed[i]) % 1000003;
    if (rank == 0)
        printf("  %s: %d bytes packed, checksum %ld\n", label, pos, sum);
}

/* --loop mode. The long-lived types are made once; every round sends with them again,
 * reads their envelopes and contents back (the intermediate types a constructor was given
 * come back as new handles even after the program freed them), and makes, uses and frees
 * short-lived types of every kind. One "rolling" type is made in each round and freed in
 * the next, so it is alive across the pause, as the long-lived ones are. */
#define NKINDS 18

static const int kind_combiner[NKINDS] = {
    MPI_COMBINER_VECTOR, MPI_COMBINER_HVECTOR, MPI_COMBINER_INDEXED, MPI_COMBINER_HINDEXED,
    MPI_COMBINER_INDEXED_BLOCK, MPI_COMBINER_RESIZED, MPI_COMBINER_SUBARRAY,
    MPI_COMBINER_DARRAY, MPI_COMBINER_DUP, MPI_COMBINER_STRUCT,
    /* large-count constructors */
    MPI_COMBINER_VECTOR, MPI_COMBINER_HINDEXED_BLOCK, MPI_COMBINER_RESIZED, MPI_COMBINER_SUBARRAY,
    MPI_COMBINER_INDEXED, MPI_COMBINER_DARRAY, MPI_COMBINER_HINDEXED, MPI_COMBINER_INDEXED_BLOCK};
/* Counts that keep count * extent within the NB * 8 byte buffers for every variant. */
static const int kind_count[NKINDS] = {2, 4, 3, 2, 2, 5, 1, 1, 2, 3, 2, 4, 3, 1, 3, 1, 2, 2};

static unsigned long long csum = 14695981039346656037ULL;

/* Order-sensitive mixing: a value missed, repeated or reordered changes the result. */
static void mix(unsigned long long v)
{
    csum = (csum ^ v) * 1099511628211ULL;
    csum ^= csum >> 29;
}

static void mix_bytes(const unsigned char *p, int n)
{
    for (int i = 0; i < n; i++)
        mix(p[i]);
}

/* A committed type of the given kind; `v` varies its parameters (so a restart has to
 * re-create each type from its own arguments, not from a template). Kinds 0, 5, 8 and 9
 * are built from intermediate derived types that are freed here at once. */
static MPI_Datatype make_type(int kind, int v)
{
    MPI_Datatype t, inner, mid;
    switch (kind) {
    case 0:
        MPI_Type_contiguous(2 + v % 3, MPI_INT, &inner);
        MPI_Type_vector(3, 1, 2, inner, &t);
        MPI_Type_free(&inner);
        break;
    case 1: MPI_Type_create_hvector(3, 1, 24 + 4 * (v % 3), MPI_INT, &t); break;
    case 2: {
        int bl[3] = {2, 1, 3}, dl[3] = {0, 5 + v % 2, 9};
        MPI_Type_indexed(3, bl, dl, MPI_SHORT, &t);
        break;
    }
    case 3: {
        int bl[3] = {2, 1, 3};
        MPI_Aint hd[3] = {4, 40 + 8 * (v % 2), 100};
        MPI_Type_create_hindexed(3, bl, hd, MPI_FLOAT, &t);
        break;
    }
    case 4: {
        int ib[4] = {7, 1, 12 + v % 3, 4};
        MPI_Type_create_indexed_block(4, 2, ib, MPI_INT, &t);
        break;
    }
    case 5: {
        int sbl[3] = {3, 1, 1};
        MPI_Aint sdis[3] = {offsetof(struct particle, pos), offsetof(struct particle, id),
                            offsetof(struct particle, tag)};
        MPI_Datatype sty[3] = {MPI_DOUBLE, MPI_INT, MPI_CHAR};
        MPI_Type_create_struct(3, sbl, sdis, sty, &inner);
        MPI_Type_create_resized(inner, 0, sizeof(struct particle), &t);
        MPI_Type_free(&inner);
        break;
    }
    case 6: {
        int gs[2] = {6, 8}, ss[2] = {3, 4}, st[2] = {v % 4, 1 + v % 5};
        MPI_Type_create_subarray(2, gs, ss, st, MPI_ORDER_C, MPI_INT, &t);
        break;
    }
    case 7: {
        int dgs[2] = {8, 6}, distribs[2] = {MPI_DISTRIBUTE_CYCLIC, MPI_DISTRIBUTE_BLOCK};
        int dargs[2] = {2, MPI_DISTRIBUTE_DFLT_DARG}, psizes[2] = {2, 1};
        MPI_Type_create_darray(2, v % 2, 2, dgs, distribs, dargs, psizes, MPI_ORDER_C,
                               MPI_DOUBLE, &t);
        break;
    }
    case 8:
        MPI_Type_vector(3, 1, 3 + v % 2, MPI_LONG, &inner);
        MPI_Type_dup(inner, &t);
        MPI_Type_free(&inner);
        break;
    case 9: {
        /* Two levels of freed intermediates: struct of (hvector of contiguous, double). */
        MPI_Type_contiguous(3, MPI_INT, &inner);
        MPI_Type_create_hvector(2, 1, 16 + 4 * (v % 2), inner, &mid);
        MPI_Type_free(&inner);
        int bl[2] = {1, 2};
        MPI_Aint dis[2] = {0, 48};
        MPI_Datatype tys[2] = {mid, MPI_DOUBLE};
        MPI_Type_create_struct(2, bl, dis, tys, &t);
        MPI_Type_free(&mid);
        break;
    }
    /* Large-count constructors (MPI 4.0; mpi4py makes every derived type with them),
     * which MPICH describes with MPI_Type_get_envelope_c/get_contents_c only. */
    case 10:
        MPI_Type_contiguous_c(2 + v % 3, MPI_INT, &inner);
        MPI_Type_vector_c(3, 1, 2, inner, &t);
        MPI_Type_free(&inner);
        break;
    case 11: {
        MPI_Count hd[3] = {0, 16 + 8 * (v % 2), 48};
        MPI_Type_create_hindexed_block_c(3, 2, hd, MPI_INT, &t);
        break;
    }
    case 12: {
        MPI_Type_contiguous_c(3, MPI_INT, &inner);
        MPI_Type_create_hvector_c(2, 1, 16 + 4 * (v % 2), inner, &mid);
        MPI_Type_free(&inner);
        MPI_Count bl[2] = {1, 2}, dis[2] = {0, 48};
        MPI_Datatype tys[2] = {mid, MPI_DOUBLE};
        MPI_Type_create_struct_c(2, bl, dis, tys, &inner);
        MPI_Type_free(&mid);
        MPI_Type_create_resized_c(inner, 0, 80, &t);
        MPI_Type_free(&inner);
        break;
    }
    case 13: {
        MPI_Count gs[2] = {6, 8}, ss[2] = {3, 4}, st[2] = {v % 4, 1 + v % 5};
        MPI_Type_create_subarray_c(2, gs, ss, st, MPI_ORDER_C, MPI_INT, &t);
        break;
    }
    case 14: {
        MPI_Count bl[3] = {2, 1, 3}, dl[3] = {0, 5 + v % 2, 9};
        MPI_Type_indexed_c(3, bl, dl, MPI_SHORT, &t);
        break;
    }
    case 15: {
        MPI_Count dgs[2] = {8, 6};
        int distribs[2] = {MPI_DISTRIBUTE_CYCLIC, MPI_DISTRIBUTE_BLOCK};
        int dargs[2] = {2, MPI_DISTRIBUTE_DFLT_DARG}, psizes[2] = {2, 1};
        MPI_Type_create_darray_c(2, v % 2, 2, dgs, distribs, dargs, psizes, MPI_ORDER_C, MPI_DOUBLE, &t);
        break;
    }
    case 16: {
        MPI_Count bl[3] = {2, 1, 3}, hd[3] = {4, 40 + 8 * (v % 2), 100};
        MPI_Type_create_hindexed_c(3, bl, hd, MPI_FLOAT, &t);
        break;
    }
    default: {
        MPI_Count ib[4] = {7, 1, 12 + v % 3, 4};
        MPI_Type_create_indexed_block_c(4, 2, ib, MPI_INT, &t);
        break;
    }
    }
    MPI_Type_commit(&t);
    return t;
}

/* Mixes what MPI says about a type: envelope, size, extents, and its contents, following
 * the derived types in the contents `depth` levels down (and freeing them, as the caller
 * of MPI_Type_get_contents must). */
static void mix_type(MPI_Datatype t, int expect_combiner, int depth)
{
    /* The large-count calls: they describe types from either kind of constructor. */
    MPI_Count ni, na, nc, nd;
    int comb, sz;
    MPI_Type_get_envelope_c(t, &ni, &na, &nc, &nd, &comb);
    if (expect_combiner >= 0)
        check(comb == expect_combiner, "loop envelope");
    MPI_Aint lb, ext, tlb, text;
    MPI_Type_size(t, &sz);
    MPI_Type_get_extent(t, &lb, &ext);
    MPI_Type_get_true_extent(t, &tlb, &text);
    mix(comb);
    mix(sz);
    mix(lb);
    mix(ext);
    mix(tlb);
    mix(text);
    if (comb == MPI_COMBINER_NAMED)
        return;
    int ints[64];
    MPI_Aint addrs[16];
    MPI_Count counts[64];
    MPI_Datatype types[16];
    check(ni <= 64 && na <= 16 && nc <= 64 && nd <= 16, "loop contents fit");
    if (ni > 64 || na > 16 || nc > 64 || nd > 16)
        return;
    MPI_Type_get_contents_c(t, ni, na, nc, nd, ints, addrs, counts, types);
    for (int i = 0; i < ni; i++)
        mix(ints[i]);
    for (int i = 0; i < na; i++)
        mix(addrs[i]);
    for (int i = 0; i < nc; i++)
        mix(counts[i]);
    for (int i = 0; i < nd; i++) {
        MPI_Count a, b, c, e;
        int tc;
        MPI_Type_get_envelope_c(types[i], &a, &b, &c, &e, &tc);
        if (tc == MPI_COMBINER_NAMED) {
            MPI_Type_size(types[i], &sz);
            mix(sz);
            continue;
        }
        if (depth > 0)
            mix_type(types[i], -1, depth - 1);
        MPI_Type_free(&types[i]);
    }
}

static void fill(unsigned char *buf, int salt)
{
    for (int i = 0; i < NB * 8; i++)
        buf[i] = (unsigned char)(i * 13 + 5 + salt * 29);
}

/* What `count` of t taken from src looks like once received into a 0xEE-filled buffer:
 * a Pack and an Unpack through a byte buffer, done locally. */
static void reference(MPI_Datatype t, int count, const unsigned char *src, unsigned char *ref)
{
    unsigned char packed[NB * 8];
    int pos = 0, upos = 0, psize;
    MPI_Aint lb, ext, tlb, text;
    MPI_Type_get_extent(t, &lb, &ext);
    MPI_Type_get_true_extent(t, &tlb, &text);
    check(tlb >= 0 && tlb + (count - 1) * ext + text <= NB * 8, "loop type fits the buffers");
    MPI_Pack_size(count, t, MPI_COMM_WORLD, &psize);
    check(psize <= (int)sizeof packed, "loop pack size");
    MPI_Pack(src, count, t, packed, sizeof packed, &pos, MPI_COMM_WORLD);
    memset(ref, 0xEE, NB * 8);
    MPI_Unpack(packed, pos, &upos, ref, count, t, MPI_COMM_WORLD);
    check(upos == pos, "loop unpack position");
}

static void check_received(MPI_Datatype t, int count, MPI_Status *st, const unsigned char *dst,
                           const unsigned char *ref)
{
    int n, elems;
    MPI_Get_count(st, t, &n);
    MPI_Get_elements(st, t, &elems);
    check(n == count, "loop count");
    check(memcmp(dst, ref, NB * 8) == 0, "loop received layout");
    mix(n);
    mix(elems);
    mix_bytes(dst, NB * 8);
}

/* Rank 0 sends to every other rank, which checks the data landed as the type map says. */
static void loop_exchange(MPI_Datatype t, int count, int salt)
{
    unsigned char src[NB * 8], dst[NB * 8], ref[NB * 8];
    fill(src, salt);
    reference(t, count, src, ref);
    if (rank == 0) {
        for (int r = 1; r < size; r++)
            MPI_Send(src, count, t, r, 1, MPI_COMM_WORLD);
        mix_bytes(ref, NB * 8);
    } else {
        MPI_Status st;
        memset(dst, 0xEE, sizeof dst);
        MPI_Recv(dst, count, t, 0, 1, MPI_COMM_WORLD, &st);
        check_received(t, count, &st, dst, ref);
    }
}

/* Every rank sends to the next and receives from the previous, data salted by the sender. */
static void loop_ring(MPI_Datatype t, int count, int salt)
{
    unsigned char src[NB * 8], dst[NB * 8], ref[NB * 8];
    int next = (rank + 1) % size, prev = (rank + size - 1) % size;
    fill(src, salt + rank);
    memset(dst, 0xEE, sizeof dst);
    MPI_Status st;
    MPI_Sendrecv(src, count, t, next, 2, dst, count, t, prev, 2, MPI_COMM_WORLD, &st);
    fill(src, salt + prev);
    reference(t, count, src, ref);
    check_received(t, count, &st, dst, ref);
}

static int loop_main(int rounds)
{
    /* Long-lived: one type of every kind, made before the loop. */
    MPI_Datatype keep[NKINDS];
    for (int k = 0; k < NKINDS; k++)
        keep[k] = make_type(k, 0);
    if (rank == 0) {
        printf("datatypes ready\n");
        fflush(stdout);
    }
    MPI_Datatype roll = MPI_DATATYPE_NULL;
    int roll_kind = 0;
    for (int r = 0; r < rounds; r++) {
        for (int k = 0; k < NKINDS; k++) {
            loop_exchange(keep[k], kind_count[k], r + k);
            mix_type(keep[k], kind_combiner[k], 2);
        }
        loop_ring(keep[r % NKINDS], kind_count[r % NKINDS], r);
        /* Particles broadcast with the long-lived struct type, from a rotating root. */
        struct particle ps[4];
        int root = r % size;
        memset(ps, 0, sizeof ps);
        if (rank == root)
            for (int i = 0; i < 4; i++) {
                ps[i].pos[0] = r + i * 0.25;
                ps[i].pos[1] = -r * i;
                ps[i].pos[2] = (r + 1) * 1e10 + i;
                ps[i].id = 1000 * r + i;
                ps[i].tag = (char)('a' + (r + i) % 26);
            }
        MPI_Bcast(ps, 4, keep[5], root, MPI_COMM_WORLD);
        for (int i = 0; i < 4; i++) {
            check(ps[i].pos[0] == r + i * 0.25 && ps[i].pos[1] == -r * i &&
                      ps[i].pos[2] == (r + 1) * 1e10 + i && ps[i].id == 1000 * r + i &&
                      ps[i].tag == 'a' + (r + i) % 26,
                  "loop particle bcast");
            unsigned long long bits[3];
            memcpy(bits, ps[i].pos, sizeof bits);
            mix(bits[0] ^ bits[1] ^ bits[2]);
            mix((unsigned long long)ps[i].id << 8 | (unsigned char)ps[i].tag);
        }
        /* Short-lived: a type of this round's kind and a dup of a long-lived one. */
        int k = r % NKINDS;
        MPI_Datatype t = make_type(k, r + 1), d;
        loop_exchange(t, kind_count[k], 3 * r);
        mix_type(t, kind_combiner[k], 2);
        MPI_Type_free(&t);
        int kd = (r + 3) % NKINDS;
        MPI_Type_dup(keep[kd], &d);
        MPI_Type_commit(&d);
        loop_ring(d, kind_count[kd], r + 7);
        mix_type(d, MPI_COMBINER_DUP, 1);
        MPI_Type_free(&d);
        /* Rolling: last round's type is used once more and freed; this round's is made. */
        if (roll != MPI_DATATYPE_NULL) {
            loop_ring(roll, kind_count[roll_kind], r + 11);
            MPI_Type_free(&roll);
        }
        roll_kind = (3 * r + 1) % NKINDS;
        roll = make_type(roll_kind, r + 2);
        loop_exchange(roll, kind_count[roll_kind], r + 13);
        usleep(20000);
    }
    MPI_Type_free(&roll);
    for (int k = 0; k < NKINDS; k++)
        MPI_Type_free(&keep[k]);

    unsigned long long sums[64];
    int total_bad;
    MPI_Gather(&csum, 1, MPI_UNSIGNED_LONG_LONG, sums, 1, MPI_UNSIGNED_LONG_LONG, 0,
               MPI_COMM_WORLD);
    MPI_Allreduce(&bad, &total_bad, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0) {
        /* Combined in rank order: the same whatever order the ranks finished in. */
        csum = 14695981039346656037ULL;
        for (int i = 0; i < size; i++)
            mix(sums[i]);
        printf("datatypes done: %llx failed checks: %d\n", csum, total_bad);
    }
    if (bad)
        fprintf(stderr, "rank %d: %d failed, first: %s\n", rank, bad, first_bad);
    return total_bad != 0;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (argc > 1 && strcmp(argv[1], "--loop") == 0) {
        int rounds = argc > 2 ? atoi(argv[2]) : 0;
        if (rounds < 1) {
            if (rank == 0)
                fprintf(stderr, "usage: datatypes [--loop N] (N >= 1)\n");
            MPI_Finalize();
            return 2;
        }
        int rc = loop_main(rounds);
        MPI_Finalize();
        return rc;
    }
    MPI_Datatype t;

    describe("int", MPI_INT, MPI_COMBINER_NAMED);

    MPI_Type_contiguous(5, MPI_INT, &t);
    MPI_Type_commit(&t);
    describe("contiguous", t, MPI_COMBINER_CONTIGUOUS);
    exchange("contiguous", t, 3);
    MPI_Type_free(&t);
    check(t == MPI_DATATYPE_NULL, "free nulls");

    MPI_Type_vector(4, 2, 5, MPI_DOUBLE, &t);
    MPI_Type_commit(&t);
    describe("vector", t, MPI_COMBINER_VECTOR);
    exchange("vector", t, 2);
    MPI_Type_free(&t);

    MPI_Type_create_hvector(3, 1, 24, MPI_INT, &t);
    MPI_Type_commit(&t);
    describe("hvector", t, MPI_COMBINER_HVECTOR);
    exchange("hvector", t, 4);
    MPI_Type_free(&t);

    int bl[3] = {2, 1, 3}, dl[3] = {0, 5, 9};
    MPI_Type_indexed(3, bl, dl, MPI_SHORT, &t);
    MPI_Type_commit(&t);
    describe("indexed", t, MPI_COMBINER_INDEXED);
    exchange("indexed", t, 3);
    MPI_Type_free(&t);

    MPI_Aint hd[3] = {4, 40, 100};
    MPI_Type_create_hindexed(3, bl, hd, MPI_FLOAT, &t);
    MPI_Type_commit(&t);
    describe("hindexed", t, MPI_COMBINER_HINDEXED);
    exchange("hindexed", t, 2);
    MPI_Type_free(&t);

    int ib[4] = {7, 1, 12, 4};
    MPI_Type_create_indexed_block(4, 2, ib, MPI_INT, &t);
    MPI_Type_commit(&t);
    describe("indexed_block", t, MPI_COMBINER_INDEXED_BLOCK);
    exchange("indexed_block", t, 2);
    MPI_Type_free(&t);

    /* A struct matching struct particle, resized to its C extent so arrays work. */
    int sbl[3] = {3, 1, 1};
    MPI_Aint sdis[3] = {offsetof(struct particle, pos), offsetof(struct particle, id),
                        offsetof(struct particle, tag)};
    MPI_Datatype sty[3] = {MPI_DOUBLE, MPI_INT, MPI_CHAR}, st0;
    MPI_Type_create_struct(3, sbl, sdis, sty, &st0);
    describe("struct", st0, MPI_COMBINER_STRUCT);
    MPI_Type_create_resized(st0, 0, sizeof(struct particle), &t);
    MPI_Type_commit(&t);
    describe("resized", t, MPI_COMBINER_RESIZED);
    exchange("struct+resized", t, 5);
    /* And real particles, checked field by field. */
    struct particle ps[4];
    memset(ps, 0, sizeof ps);
    if (rank == 0) {
        for (int i = 0; i < 4; i++) {
            ps[i].pos[0] = i + 0.5;
            ps[i].pos[1] = -i;
            ps[i].pos[2] = i * 1e10;
            ps[i].id = 100 + i;
            ps[i].tag = 'a' + i;
        }
    }
    MPI_Bcast(ps, 4, t, 0, MPI_COMM_WORLD);
    for (int i = 0; i < 4; i++)
        check(ps[i].pos[0] == i + 0.5 && ps[i].pos[2] == i * 1e10 && ps[i].id == 100 + i &&
                  ps[i].tag == 'a' + i,
              "struct bcast");
    MPI_Type_free(&t);
    MPI_Type_free(&st0);

    /* Subarray: the 3x4 interior of a 6x8 int array (C order) */
    int gs[2] = {6, 8}, ss[2] = {3, 4}, st[2] = {2, 1};
    MPI_Type_create_subarray(2, gs, ss, st, MPI_ORDER_C, MPI_INT, &t);
    MPI_Type_commit(&t);
    describe("subarray", t, MPI_COMBINER_SUBARRAY);
    exchange("subarray", t, 1);
    MPI_Type_free(&t);

    /* Darray: block-cyclic 2-D distribution of an 8x6 double array over a 2x1 grid,
     * for process 1 of 2 (the same on every rank) */
    int dgs[2] = {8, 6}, distribs[2] = {MPI_DISTRIBUTE_CYCLIC, MPI_DISTRIBUTE_BLOCK};
    int dargs[2] = {2, MPI_DISTRIBUTE_DFLT_DARG}, psizes[2] = {2, 1};
    MPI_Type_create_darray(2, 1, 2, dgs, distribs, dargs, psizes, MPI_ORDER_C, MPI_DOUBLE, &t);
    MPI_Type_commit(&t);
    describe("darray", t, MPI_COMBINER_DARRAY);
    exchange("darray", t, 1);
    MPI_Type_free(&t);

    /* Dup of a vector */
    MPI_Datatype v;
    MPI_Type_vector(3, 1, 3, MPI_LONG, &v);
    MPI_Type_dup(v, &t);
    MPI_Type_free(&v);
    MPI_Type_commit(&t);
    describe("dup", t, MPI_COMBINER_DUP);
    exchange("dup", t, 2);
    MPI_Type_free(&t);

    /* Named type sizes, and Pack/Unpack of mixed data through one buffer */
    int sizes[4];
    MPI_Type_size(MPI_CHAR, &sizes[0]);
    MPI_Type_size(MPI_SHORT, &sizes[1]);
    MPI_Type_size(MPI_LONG_LONG, &sizes[2]);
    MPI_Type_size(MPI_LONG_DOUBLE, &sizes[3]);
    char pbuf[256];
    int pos = 0, a[3] = {1, 2, 3}, a2[3];
    double d = 2.25, d2;
    char s[6] = "hello", s2[6];
    if (rank == 0) {
        MPI_Pack(a, 3, MPI_INT, pbuf, sizeof pbuf, &pos, MPI_COMM_WORLD);
        MPI_Pack(&d, 1, MPI_DOUBLE, pbuf, sizeof pbuf, &pos, MPI_COMM_WORLD);
        MPI_Pack(s, 6, MPI_CHAR, pbuf, sizeof pbuf, &pos, MPI_COMM_WORLD);
    }
    MPI_Bcast(&pos, 1, MPI_INT, 0, MPI_COMM_WORLD);
    MPI_Bcast(pbuf, pos, MPI_PACKED, 0, MPI_COMM_WORLD);
    int up = 0;
    MPI_Unpack(pbuf, pos, &up, a2, 3, MPI_INT, MPI_COMM_WORLD);
    MPI_Unpack(pbuf, pos, &up, &d2, 1, MPI_DOUBLE, MPI_COMM_WORLD);
    MPI_Unpack(pbuf, pos, &up, s2, 6, MPI_CHAR, MPI_COMM_WORLD);
    check(a2[0] == 1 && a2[2] == 3 && d2 == 2.25 && strcmp(s2, "hello") == 0 && up == pos,
          "pack mixed");

    int bads[64];
    MPI_Gather(&bad, 1, MPI_INT, bads, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (rank == 0) {
        printf("sizes char=%d short=%d long_long=%d long_double=%d packed mixed=%d bytes\n",
               sizes[0], sizes[1], sizes[2], sizes[3], pos);
        for (int r = 0; r < size; r++)
            printf("rank %d failed checks: %d\n", r, bads[r]);
    }
    if (bad)
        fprintf(stderr, "rank %d: %d failed, first: %s\n", rank, bad, first_bad);
    MPI_Finalize();
    return 0;
}
