/* Many live datatypes and many vector shapes made and freed per message, packed and
 * unpacked: MANA's cache of vector datatypes (mpi-wrappers/src/typecache.c) keeps freed
 * lower-half objects alive, which moves the application's new datatypes to higher MPICH
 * handles — and MPICH 4.0.2 packs a contiguous derived datatype whose handle has bits
 * 8..15 above 1 short (it takes them for an element size: 2 from the 512th live datatype
 * on, 3 from the 768th). With 400 datatypes of its own alive, a program's new ones get
 * handles MPICH reads right natively; a cache that parked hundreds more objects made the
 * packs of odd sizes lose a byte (1,400 of 3,000 here), so the cache is bounded.
 *
 * Every rank keeps 400 datatypes alive, then for 3,000 rounds makes a vector of one of
 * 300 shapes (rows of doubles: blocklength 1; an odd number of contiguous blocks of 7
 * chars), commits it, packs a buffer with it, unpacks it elsewhere, checks both byte by
 * byte and frees it. The counts and checksums are reduced; the output is deterministic. */
#include <mpi.h>
#include <stdio.h>
#include <string.h>

#define HELD 400
#define SHAPES 300
#define ROUNDS 3000
#define MAXN 400

static unsigned char src[MAXN * 64], dst[MAXN * 64], packed[MAXN * 64];

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Datatype held[HELD];
    for (int i = 0; i < HELD; i++)
        MPI_Type_contiguous(i + 1, MPI_INT, &held[i]);
    for (int i = 0; i < MAXN * 64; i++)
        src[i] = (unsigned char)(i * 7 + rank);
    unsigned long long sum = 0;
    int short_packs = 0, wrong = 0;
    for (int round = 0; round < ROUNDS; round++) {
        const int k = (round * 7) % SHAPES;
        const int n = 100 + k + (k % 2 == 0); /* 100..400: odd for the blocks of chars */
        /* A row of doubles (blocklength 1, stride 8), or n contiguous blocks of 7 chars (an
         * odd size when n is: what a misread element size of 2 cuts short). */
        const int row = k % 2, piece = row ? 8 : 7, step = row ? 64 : 7;
        MPI_Datatype t;
        if (row)
            MPI_Type_vector(n, 1, 8, MPI_DOUBLE, &t);
        else
            MPI_Type_vector(n, 7, 7, MPI_CHAR, &t);
        MPI_Type_commit(&t);
        int size, pos = 0;
        MPI_Type_size(t, &size);
        MPI_Pack(src, 1, t, packed, sizeof packed, &pos, MPI_COMM_WORLD);
        if (pos != size)
            short_packs++;
        memset(dst, 0, sizeof dst);
        int in = 0;
        MPI_Unpack(packed, pos, &in, dst, 1, t, MPI_COMM_WORLD);
        for (int e = 0; e < n; e++) {
            if (memcmp(dst + e * step, src + e * step, piece) || memcmp(packed + e * piece, src + e * step, piece))
                wrong++;
            for (int b = 0; b < piece; b++)
                sum = sum * 1000003u + dst[e * step + b];
        }
        MPI_Type_free(&t);
    }
    for (int i = 0; i < HELD; i++)
        MPI_Type_free(&held[i]);
    int bad[2] = {short_packs, wrong}, all[2];
    MPI_Reduce(bad, all, 2, MPI_INT, MPI_SUM, 0, MPI_COMM_WORLD);
    unsigned long long total;
    MPI_Reduce(&sum, &total, 1, MPI_UNSIGNED_LONG_LONG, MPI_BXOR, 0, MPI_COMM_WORLD);
    if (rank == 0)
        printf("type_many: %d rounds, %d short packs, %d wrong elements, checksum %016llx\n", ROUNDS, all[0], all[1],
               total);
    MPI_Finalize();
    return 0;
}
