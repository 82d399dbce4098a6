/* MPI-IO as real programs use it: one file (argv path, else ./mpiio_view.dat) opened
 * CREATE|RDWR and kept open for the whole run, a non-trivial view (etype MPI_INT, a
 * filetype that is a vector resized to a tile of the whole job, displacement strided by
 * rank), individual file pointers (MPI_File_seek, MPI_File_write, MPI_File_get_position),
 * the shared file pointer (MPI_File_write_ordered, MPI_File_write_shared taken in turns,
 * MPI_File_seek_shared, MPI_File_get_position_shared), collective MPI_File_write_all and
 * MPI_File_read_all, MPI_File_read_at and MPI_File_sync. 1 to 16 ranks.
 *
 * File layout (N rounds, P ranks): a 64-byte header written by rank 0; the shared region
 * (64 bytes in, contiguous int view common to all ranks) where each round appends, at the
 * shared pointer, rank r's r+1 ints in rank order (write_ordered) then 2 ints per rank in
 * turns (write_shared); the strided region after it, where each rank's view is
 * vector(2, 2, 2P) of MPI_INT resized to 4P ints at displacement 8*rank, so a rank owns
 * ints {2r, 2r+1, 2P+2r, 2P+2r+1} of each tile: each round it appends one tile with
 * MPI_File_write and one with MPI_File_write_all at its individual pointer, reads both
 * back with MPI_File_read_all and checks them. Switching views resets the pointers, so each
 * round seeks them back to where the last round left them (kept in the program).
 *
 * `--loop N` (for checkpoint/restart at random instants): the file stays open across N
 * rounds with a 20 ms pause each; rank 0 prints "mpiio_view ready" once it is open and
 * the final "mpiio_view done: ..." line. Plain run: 3 rounds, no pause. At the end rank 0
 * reads the whole file back (byte view), checks every int of both regions against what
 * the ranks wrote, and prints the file size, a checksum of its bytes and every rank's
 * final individual and shared pointer positions. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int rank, size, bad;
static char first_bad[200];

static void fail(const char *what, long a, long b)
{
    if (!bad++)
        snprintf(first_bad, sizeof first_bad, "%s: got %ld expected %ld", what, a, b);
}

static void check_eq(const char *what, long got, long want)
{
    if (got != want)
        fail(what, got, want);
}

/* Every MPI-IO call goes through this: a non-MPI_SUCCESS return (files default to
 * MPI_ERRORS_RETURN) is a failed check. */
#define IO(call)                                                                           \
    do {                                                                                   \
        int rc_ = (call);                                                                  \
        if (rc_ != MPI_SUCCESS) {                                                          \
            char s_[MPI_MAX_ERROR_STRING];                                                 \
            int l_;                                                                        \
            MPI_Error_string(rc_, s_, &l_);                                                \
            fprintf(stderr, "rank %d: %s failed: %s\n", rank, #call, s_);                  \
            fail(#call, rc_, 0);                                                           \
        }                                                                                  \
    } while (0)

static unsigned long long csum = 14695981039346656037ULL;

static void mix(unsigned long long v)
{
    csum = (csum ^ v) * 1099511628211ULL;
    csum ^= csum >> 29;
}

/* The int a rank writes: kind 1 = MPI_File_write, 2 = write_all, 3 = write_ordered,
 * 4 = write_shared; round r, rank p, index j. */
static int value(int kind, int r, int p, int j)
{
    return kind * 100000000 + r * 10000 + p * 100 + j;
}

#define HDR 64

/* ints appended to the shared region per round */
static long shared_per_round(void)
{
    return (long)size * (size + 1) / 2 + 2L * size;
}

/* byte offset of the strided region for `rounds` rounds */
static MPI_Offset strided_base(int rounds)
{
    MPI_Offset end = HDR + (MPI_Offset)rounds * shared_per_round() * 4;
    return (end + 63) / 64 * 64;
}

/* file int index (from the strided base) of rank p's k-th int in its view */
static long strided_index(int p, long k)
{
    long tile = k / 4, w = k % 4;
    return tile * 4L * size + (w < 2 ? 2L * p + w : 2L * size + 2L * p + (w - 2));
}

static int run(const char *path, int rounds, int loop)
{
    MPI_File fh;
    if (rank == 0)
        MPI_File_delete(path, MPI_INFO_NULL); /* absent on a first run: its error is fine */
    MPI_Barrier(MPI_COMM_WORLD);
    IO(MPI_File_open(MPI_COMM_WORLD, path, MPI_MODE_CREATE | MPI_MODE_RDWR, MPI_INFO_NULL,
                     &fh));
    int amode;
    IO(MPI_File_get_amode(fh, &amode));
    check_eq("amode", amode, MPI_MODE_CREATE | MPI_MODE_RDWR);

    /* The header, in the default byte view, by explicit offset. */
    if (rank == 0) {
        char hdr[HDR];
        memset(hdr, 0, sizeof hdr);
        snprintf(hdr, sizeof hdr, "mpiio_view rounds=%d ranks=%d\n", rounds, size);
        IO(MPI_File_write_at(fh, 0, hdr, HDR, MPI_CHAR, MPI_STATUS_IGNORE));
    }

    /* The strided filetype: held for the whole run. */
    MPI_Datatype vec, filetype;
    MPI_Type_vector(2, 2, 2 * size, MPI_INT, &vec);
    MPI_Type_create_resized(vec, 0, 4L * size * sizeof(int), &filetype);
    MPI_Type_free(&vec);
    MPI_Type_commit(&filetype);
    MPI_Offset sbase = strided_base(rounds);
    MPI_Offset my_disp = sbase + 2L * rank * sizeof(int);

    /* The file's group, taken twice (MPI hands out one group, a reference per call) and
     * held across the rounds; compared and freed twice at the end. */
    MPI_Group fg1, fg2;
    IO(MPI_File_get_group(fh, &fg1));
    IO(MPI_File_get_group(fh, &fg2));

    if (loop && rank == 0) {
        printf("mpiio_view ready\n");
        fflush(stdout);
    }

    MPI_Offset ind_pos = 0, sh_pos = 0; /* where the last round left the pointers */
    for (int r = 0; r < rounds; r++) {
        /* Shared region: a view common to all ranks (required for the shared pointer). */
        IO(MPI_File_set_view(fh, HDR, MPI_INT, MPI_INT, "native", MPI_INFO_NULL));
        MPI_Offset p;
        IO(MPI_File_get_position_shared(fh, &p));
        check_eq("shared pointer after set_view", (long)p, 0);
        MPI_Barrier(MPI_COMM_WORLD); /* before rank 0 moves it */
        IO(MPI_File_seek_shared(fh, sh_pos, MPI_SEEK_SET));
        IO(MPI_File_get_position_shared(fh, &p));
        check_eq("shared pointer after seek_shared", (long)p, (long)sh_pos);
        MPI_Barrier(MPI_COMM_WORLD); /* before write_ordered moves it */
        int obuf[16];
        for (int j = 0; j <= rank; j++)
            obuf[j] = value(3, r, rank, j);
        MPI_Status st;
        IO(MPI_File_write_ordered(fh, obuf, rank + 1, MPI_INT, &st));
        int cnt;
        MPI_Get_count(&st, MPI_INT, &cnt);
        check_eq("write_ordered count", cnt, rank + 1);
        /* write_shared in rank order: one rank at a time, so the file is deterministic */
        for (int t = 0; t < size; t++) {
            if (t == rank) {
                int sbuf[2] = {value(4, r, rank, 0), value(4, r, rank, 1)};
                IO(MPI_File_write_shared(fh, sbuf, 2, MPI_INT, MPI_STATUS_IGNORE));
            }
            MPI_Barrier(MPI_COMM_WORLD);
        }
        IO(MPI_File_get_position_shared(fh, &p));
        check_eq("shared pointer after the round", (long)p,
                 (long)sh_pos + shared_per_round());
        /* read back this round's shared-region part (explicit offsets) and check it */
        {
            long n = shared_per_round();
            int *back = malloc(n * sizeof(int));
            IO(MPI_File_read_at(fh, sh_pos, back, (int)n, MPI_INT, MPI_STATUS_IGNORE));
            long k = 0;
            for (int q = 0; q < size; q++)
                for (int j = 0; j <= q; j++, k++)
                    check_eq("ordered data", back[k], value(3, r, q, j));
            for (int q = 0; q < size; q++)
                for (int j = 0; j < 2; j++, k++)
                    check_eq("shared data", back[k], value(4, r, q, j));
            for (long i = 0; i < n; i++)
                mix((unsigned)back[i]);
            free(back);
        }
        sh_pos = p;

        /* Strided region: each rank's own view; the individual pointer is sought back. */
        IO(MPI_File_set_view(fh, my_disp, MPI_INT, filetype, "native", MPI_INFO_NULL));
        MPI_Offset disp;
        MPI_Datatype et, ft;
        char rep[MPI_MAX_DATAREP_STRING];
        IO(MPI_File_get_view(fh, &disp, &et, &ft, rep));
        check_eq("view disp", (long)disp, (long)my_disp);
        check_eq("view etype", et == MPI_INT, 1);
        check_eq("view datarep", strcmp(rep, "native"), 0);
        MPI_Aint lb, ext;
        MPI_Type_get_extent(ft, &lb, &ext);
        check_eq("view filetype extent", (long)ext, 4L * size * (long)sizeof(int));
        int tsz;
        MPI_Type_size(ft, &tsz);
        check_eq("view filetype size", tsz, 4 * (int)sizeof(int));
        MPI_Type_free(&ft); /* a new datatype (the filetype is not predefined) */
        IO(MPI_File_get_position(fh, &p));
        check_eq("individual pointer after set_view", (long)p, 0);
        IO(MPI_File_seek(fh, ind_pos, MPI_SEEK_SET));
        int w1[4], w2[4];
        for (int j = 0; j < 4; j++) {
            w1[j] = value(1, r, rank, j);
            w2[j] = value(2, r, rank, j);
        }
        IO(MPI_File_write(fh, w1, 4, MPI_INT, &st));
        MPI_Get_count(&st, MPI_INT, &cnt);
        check_eq("write count", cnt, 4);
        IO(MPI_File_write_all(fh, w2, 4, MPI_INT, MPI_STATUS_IGNORE));
        IO(MPI_File_get_position(fh, &p));
        check_eq("individual pointer after writes", (long)p, (long)ind_pos + 8);
        IO(MPI_File_sync(fh)); /* collective: makes every rank's writes visible */
        IO(MPI_File_seek(fh, -8, MPI_SEEK_CUR));
        int back[8];
        IO(MPI_File_read_all(fh, back, 8, MPI_INT, &st));
        MPI_Get_count(&st, MPI_INT, &cnt);
        check_eq("read_all count", cnt, 8);
        for (int j = 0; j < 4; j++) {
            check_eq("write data", back[j], w1[j]);
            check_eq("write_all data", back[4 + j], w2[j]);
            mix((unsigned)back[j] * 3ULL + (unsigned)back[4 + j]);
        }
        IO(MPI_File_get_position(fh, &ind_pos));
        check_eq("individual pointer after read_all", (long)ind_pos, 8L * (r + 1));
        MPI_Offset byte;
        IO(MPI_File_get_byte_offset(fh, ind_pos, &byte));
        check_eq("byte offset of the pointer", (long)byte,
                 (long)(sbase + strided_index(rank, ind_pos) * 4));
        if (loop)
            usleep(20000);
    }

    MPI_Group wg;
    int cmp1, cmp2;
    MPI_Comm_group(MPI_COMM_WORLD, &wg);
    MPI_Group_compare(fg1, wg, &cmp1);
    MPI_Group_compare(fg2, wg, &cmp2);
    check_eq("file group", cmp1, MPI_IDENT);
    check_eq("file group again", cmp2, MPI_IDENT);
    MPI_Group_free(&fg1);
    MPI_Group_free(&fg2);
    MPI_Group_free(&wg);

    /* Final pointers, then the whole file read back by rank 0 in a byte view. */
    long pos[2] = {(long)ind_pos, (long)sh_pos};
    long *all = malloc(2 * size * sizeof(long));
    MPI_Gather(pos, 2, MPI_LONG, all, 2, MPI_LONG, 0, MPI_COMM_WORLD);
    IO(MPI_File_sync(fh));
    IO(MPI_File_set_view(fh, 0, MPI_BYTE, MPI_BYTE, "native", MPI_INFO_NULL));
    MPI_Offset fsize;
    IO(MPI_File_get_size(fh, &fsize));
    long expect_size = (long)(sbase + 4L * (strided_index(size - 1, 8L * rounds - 1) + 1));
    check_eq("file size", (long)fsize, expect_size);
    unsigned long long filesum = 14695981039346656037ULL;
    if (rank == 0) {
        unsigned char *f = calloc(fsize ? fsize : 1, 1);
        IO(MPI_File_read_at(fh, 0, f, (int)fsize, MPI_BYTE, MPI_STATUS_IGNORE));
        char hdr[HDR];
        memset(hdr, 0, sizeof hdr);
        snprintf(hdr, sizeof hdr, "mpiio_view rounds=%d ranks=%d\n", rounds, size);
        check_eq("header", memcmp(f, hdr, HDR), 0);
        const int *shared = (const int *)(f + HDR);
        long k = 0;
        for (int r = 0; r < rounds; r++) {
            for (int q = 0; q < size; q++)
                for (int j = 0; j <= q; j++)
                    check_eq("file: ordered", shared[k++], value(3, r, q, j));
            for (int q = 0; q < size; q++)
                for (int j = 0; j < 2; j++)
                    check_eq("file: shared", shared[k++], value(4, r, q, j));
        }
        const int *strided = (const int *)(f + sbase);
        for (int q = 0; q < size; q++)
            for (long i = 0; i < 8L * rounds; i++) {
                int r = (int)(i / 8), kind = (i % 8) < 4 ? 1 : 2, j = (int)(i % 4);
                check_eq("file: strided", strided[strided_index(q, i)], value(kind, r, q, j));
            }
        for (MPI_Offset i = 0; i < fsize; i++)
            filesum = (filesum ^ f[i]) * 1099511628211ULL;
        free(f);
    }
    IO(MPI_File_close(&fh));
    check_eq("closed handle", fh == MPI_FILE_NULL, 1);
    MPI_Type_free(&filetype);

    int total_bad;
    MPI_Allreduce(&bad, &total_bad, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    unsigned long long sums[64];
    MPI_Gather(&csum, 1, MPI_UNSIGNED_LONG_LONG, sums, 1, MPI_UNSIGNED_LONG_LONG, 0,
               MPI_COMM_WORLD);
    if (rank == 0) {
        csum = 14695981039346656037ULL;
        for (int i = 0; i < size; i++)
            mix(sums[i]);
        printf("mpiio_view positions:");
        for (int i = 0; i < size; i++)
            printf(" rank%d ind=%ld shared=%ld", i, all[2 * i], all[2 * i + 1]);
        printf("\n");
        printf("%s: %llx file bytes %ld file checksum %llx failed checks: %d\n",
               loop ? "mpiio_view done" : "mpiio_view", csum, (long)fsize, filesum,
               total_bad);
    }
    free(all);
    if (bad)
        fprintf(stderr, "rank %d: %d failed checks, first: %s\n", rank, bad, first_bad);
    return total_bad != 0;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    int rounds = 3, loop = 0;
    const char *path = "mpiio_view.dat";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--loop") == 0 && i + 1 < argc) {
            rounds = atoi(argv[++i]);
            loop = 1;
        } else {
            path = argv[i];
        }
    }
    if (rounds < 1 || rounds > 9999 || size > 16) {
        if (rank == 0)
            fprintf(stderr, "usage: mpiio_view [--loop N] [PATH]  (1 <= N <= 9999, <= 16 ranks)\n");
        MPI_Finalize();
        return 2;
    }
    int rc = run(path, rounds, loop);
    MPI_Finalize();
    return rc;
}
