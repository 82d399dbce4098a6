/* MPI-IO state a restart must carry over: two files open for the whole run, each with a
 * view the application built and freed at once, pointers, atomicity and a pending request.
 *
 * * PATH (argv, else ./mpiio_restart.dat), handle `fh`, opened CREATE|RDWR with an info
 *   object (cb_buffer_size, romio_cb_write, romio_ds_write) freed right after the opens.
 *   Rank 0 writes a 256-byte header in the byte view, then every rank sets its own view:
 *   displacement 256, etype MPI_INT, filetype a subarray {2, 3P} -> {2, 3} starting at
 *   column 3*rank (freed right after MPI_File_set_view): a rank owns 6 ints of each tile of
 *   6P ints, the ranks' parts interleave row by row. Each round r uses the rank's view ints
 *   [24r, 24r+24) at its individual pointer, which is never set from the program's memory:
 *   MPI_File_write (6), seek -6 + MPI_File_read back, MPI_File_write_all (6), the split
 *   MPI_File_write_all_begin/end (6), seek -18 + the split MPI_File_read_all_begin/end
 *   (18) checked, MPI_File_write_at_all_begin/end at an explicit offset (3) read back with
 *   MPI_File_read_at, then MPI_File_iwrite (3) left pending until the next round, and a
 *   seek +3 past the explicit slot. At the start of a round (after waiting for the last
 *   iwrite and checking its data) the file's size is set to the round's end:
 *   MPI_File_preallocate every third round, MPI_File_set_size otherwise (which also drops
 *   whatever lies beyond); atomicity is r % 2 from then on.
 * * PATH.shared, handle `fs`, opened CREATE|EXCL|RDWR with the same info object (data
 *   sieving and collective buffering off: ROMIO's read-modify-write leaves stale bytes in
 *   the holes of a view written past the end of the file, and this file has holes and
 *   grows at its end), atomic mode for
 *   the whole run, one view common to all ranks (the shared pointer needs it):
 *   displacement 128, etype MPI_INT, filetype a vector (2 blocks of 3 ints, stride 4)
 *   resized to 8 ints, freed right after set_view. Each round appends at the shared
 *   pointer: MPI_File_write_ordered (rank+1 ints), MPI_File_write_shared (2 ints, ranks
 *   in turns), the split MPI_File_write_ordered_begin/end (2 ints); then seeks it back
 *   (MPI_File_seek_shared SEEK_SET), reads the first part with MPI_File_read_ordered,
 *   moves it to the round's end (SEEK_CUR), and checks the whole round with
 *   MPI_File_read_at_all after MPI_File_sync. The individual pointer of `fs` is parked at
 *   r + rank.
 *
 * After each round's pause, every piece of state is checked (file pointers, shared
 * pointer, atomicity of both handles). At the end the main file is truncated to its
 * logical end (MPI_File_set_size), both are closed, and rank 0 reopens them on
 * MPI_COMM_SELF, checks every int against what the ranks wrote (holes are zero) and
 * checksums their bytes. The done line mixes: everything read during the run, both
 * files' sizes and byte checksums, and every rank's final individual/shared pointer
 * positions, byte offset, atomicity, amode, view (displacement, etype, a structural
 * hash of the filetype MPI_File_get_view returns, its extent and size, datarep) and the
 * info hints set at the open, so any state a restart loses changes it.
 *
 * `--loop N`: N rounds with a 20 ms pause each (the iwrite is pending across it); rank 0
 * prints "mpiio_restart ready" once both files are open with their views and the final
 * "mpiio_restart done: ..." line. Plain run: 3 rounds, no pause, "mpiio_restart: ...".
 * 1 to 16 ranks. */
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

/* Every MPI-IO call goes through this: files default to MPI_ERRORS_RETURN, so a failed
 * call is a failed check (and a line on stderr). */
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

#define FNV0 14695981039346656037ULL

static unsigned long long mixv(unsigned long long h, unsigned long long v)
{
    h = (h ^ v) * 1099511628211ULL;
    return h ^ (h >> 29);
}

static unsigned long long csum = FNV0; /* everything this rank read */

static void mix(unsigned long long v)
{
    csum = mixv(csum, v);
}

/* kinds: 1 write, 2 write_all, 3 write_all_begin, 4 iwrite, 5 write_at_all_begin (main
 * file); 6 write_ordered, 7 write_shared, 8 write_ordered_begin (shared file) */
static int value(int kind, int r, int p, int j)
{
    return kind * 100000000 + r * 10000 + p * 100 + j;
}

#define HDR 256  /* main file: header bytes = view displacement */
#define SDISP 128 /* shared file: view displacement (the bytes before it stay zero) */
#define PER 24   /* view ints per rank per round in the main file */

/* main file: int index (from HDR) of rank p's k-th int of its subarray view */
static long main_index(int p, long k)
{
    long tile = k / 6, w = k % 6;
    return tile * 6L * size + (w / 3) * 3L * size + 3L * p + w % 3;
}

/* main file: its size once round r is done */
static MPI_Offset main_size(int r)
{
    return HDR + 4L * PER * size * (r + 1);
}

/* shared file: ints appended per round, and the int index (from SDISP) of view int k */
static long shared_per_round(void)
{
    return (long)size * (size + 1) / 2 + 4L * size;
}

static long shared_index(long k)
{
    long w = k % 6;
    return k / 6 * 8 + (w < 3 ? w : w + 1);
}

/* The expected int at main-file view position k of rank p. */
static int main_value(int p, long k)
{
    int r = (int)(k / PER), w = (int)(k % PER);
    if (w < 6)
        return value(1, r, p, w);
    if (w < 12)
        return value(2, r, p, w - 6);
    if (w < 18)
        return value(3, r, p, w - 12);
    if (w < 21)
        return value(4, r, p, w - 18);
    return value(5, r, p, w - 21);
}

/* The expected int at shared-file view position k. */
static int shared_value(long k)
{
    long per = shared_per_round(), w = k % per;
    int r = (int)(k / per);
    for (int q = 0; q < size; q++) {
        if (w < q + 1)
            return value(6, r, q, (int)w);
        w -= q + 1;
    }
    if (w < 2L * size)
        return value(7, r, (int)(w / 2), (int)(w % 2));
    w -= 2L * size;
    return value(8, r, (int)(w / 2), (int)(w % 2));
}

/* A structural hash of a datatype: its combiner and constructor arguments, recursively
 * (the derived datatypes MPI_Type_get_contents returns are freed). */
static unsigned long long type_hash(MPI_Datatype t, int depth)
{
    int ni, na, nd, comb;
    MPI_Type_get_envelope(t, &ni, &na, &nd, &comb);
    unsigned long long h = mixv(FNV0, (unsigned)comb);
    if (comb == MPI_COMBINER_NAMED) {
        MPI_Aint lb, ext;
        MPI_Type_get_extent(t, &lb, &ext);
        return mixv(mixv(h, t == MPI_INT), (unsigned long long)ext);
    }
    if (depth > 8)
        return h;
    int *ints = malloc((ni + 1) * sizeof(int));
    MPI_Aint *addrs = malloc((na + 1) * sizeof(MPI_Aint));
    MPI_Datatype *types = malloc((nd + 1) * sizeof(MPI_Datatype));
    MPI_Type_get_contents(t, ni, na, nd, ints, addrs, types);
    for (int i = 0; i < ni; i++)
        h = mixv(h, (unsigned)ints[i]);
    for (int i = 0; i < na; i++)
        h = mixv(h, (unsigned long long)addrs[i]);
    for (int i = 0; i < nd; i++) {
        h = mixv(h, type_hash(types[i], depth + 1));
        int a, b, c, k;
        MPI_Type_get_envelope(types[i], &a, &b, &c, &k);
        if (k != MPI_COMBINER_NAMED)
            MPI_Type_free(&types[i]);
    }
    free(ints);
    free(addrs);
    free(types);
    return h;
}

/* What a rank reports of a handle at the end. */
enum {
    S_IND, S_BYTE, S_SHARED, S_ATOM, S_AMODE, S_DISP, S_ETYPE, S_FTHASH, S_FTEXT, S_FTSIZE,
    S_REP, S_GROUP, S_INFO, S_N
};

static const char *hints[][2] = {
    {"cb_buffer_size", "2097152"},
    {"romio_cb_write", "enable"}, /* both "disable" for the shared file */
    {"romio_ds_write", "enable"},
};

static void file_state(MPI_File f, int with_shared, long *s)
{
    MPI_Offset p;
    IO(MPI_File_get_position(f, &p));
    s[S_IND] = (long)p;
    MPI_Offset byte;
    IO(MPI_File_get_byte_offset(f, p, &byte));
    s[S_BYTE] = (long)byte;
    s[S_SHARED] = -1;
    if (with_shared) {
        IO(MPI_File_get_position_shared(f, &p));
        s[S_SHARED] = (long)p;
    }
    int flag;
    IO(MPI_File_get_atomicity(f, &flag));
    s[S_ATOM] = flag;
    int amode;
    IO(MPI_File_get_amode(f, &amode));
    s[S_AMODE] = amode;
    MPI_Offset disp;
    MPI_Datatype et, ft;
    char rep[MPI_MAX_DATAREP_STRING];
    IO(MPI_File_get_view(f, &disp, &et, &ft, rep));
    s[S_DISP] = (long)disp;
    s[S_ETYPE] = et == MPI_INT;
    s[S_FTHASH] = (long)(type_hash(ft, 0) & 0x7fffffffffffffffULL);
    MPI_Aint lb, ext;
    MPI_Type_get_extent(ft, &lb, &ext);
    s[S_FTEXT] = (long)ext;
    int tsz;
    MPI_Type_size(ft, &tsz);
    s[S_FTSIZE] = tsz;
    s[S_REP] = strcmp(rep, "native") == 0;
    int a, b, c, k;
    MPI_Type_get_envelope(ft, &a, &b, &c, &k);
    if (k != MPI_COMBINER_NAMED)
        MPI_Type_free(&ft);
    MPI_Type_get_envelope(et, &a, &b, &c, &k);
    if (k != MPI_COMBINER_NAMED)
        MPI_Type_free(&et);
    MPI_Group g, wg;
    IO(MPI_File_get_group(f, &g));
    MPI_Comm_group(MPI_COMM_WORLD, &wg);
    int cmp;
    MPI_Group_compare(g, wg, &cmp);
    s[S_GROUP] = cmp == MPI_IDENT;
    MPI_Group_free(&g);
    MPI_Group_free(&wg);
    MPI_Info info;
    IO(MPI_File_get_info(f, &info));
    unsigned long long h = FNV0;
    for (size_t i = 0; i < sizeof hints / sizeof hints[0]; i++) {
        char v[MPI_MAX_INFO_VAL + 1];
        int found = 0;
        MPI_Info_get(info, hints[i][0], MPI_MAX_INFO_VAL, v, &found);
        h = mixv(h, (unsigned)found);
        for (const char *c = found ? v : ""; *c; c++)
            h = mixv(h, (unsigned char)*c);
    }
    MPI_Info_free(&info);
    s[S_INFO] = (long)(h & 0x7fffffffffffffffULL);
}

/* Reads a whole file (rank 0, MPI_COMM_SELF, byte view) into a buffer. */
static unsigned char *read_file(const char *path, MPI_Offset *fsize)
{
    MPI_File f;
    *fsize = 0;
    IO(MPI_File_open(MPI_COMM_SELF, path, MPI_MODE_RDONLY, MPI_INFO_NULL, &f));
    IO(MPI_File_get_size(f, fsize));
    unsigned char *buf = calloc(*fsize + 4, 1);
    IO(MPI_File_read_at(f, 0, buf, (int)*fsize, MPI_BYTE, MPI_STATUS_IGNORE));
    IO(MPI_File_close(&f));
    return buf;
}

static unsigned long long bytes_sum(const unsigned char *b, MPI_Offset n)
{
    unsigned long long h = FNV0;
    for (MPI_Offset i = 0; i < n; i++)
        h = (h ^ b[i]) * 1099511628211ULL;
    return h;
}

/* Buffers of split collectives and of the pending iwrite: untouched until they complete. */
static int w3[6], w4[3], w5[3], o2[2], rd18[18];

static int run(const char *path, int rounds, int loop)
{
    char spath[4096];
    snprintf(spath, sizeof spath, "%s.shared", path);
    if (rank == 0) {
        /* absent on a first run: their errors are fine */
        MPI_File_delete(path, MPI_INFO_NULL);
        MPI_File_delete(spath, MPI_INFO_NULL);
    }
    MPI_Barrier(MPI_COMM_WORLD);

    MPI_Info info;
    MPI_Info_create(&info);
    for (size_t i = 0; i < sizeof hints / sizeof hints[0]; i++)
        MPI_Info_set(info, hints[i][0], hints[i][1]);
    MPI_File fh, fs;
    const int amode_fh = MPI_MODE_CREATE | MPI_MODE_RDWR;
    const int amode_fs = MPI_MODE_CREATE | MPI_MODE_EXCL | MPI_MODE_RDWR;
    IO(MPI_File_open(MPI_COMM_WORLD, path, amode_fh, info, &fh));
    /* ROMIO's read-modify-write (data sieving, collective buffering) leaves stale bytes in
     * the holes of a write past the end of the file: the shared file (holes in its view,
     * always written at its end) goes without both */
    MPI_Info_set(info, "romio_ds_write", "disable");
    MPI_Info_set(info, "romio_cb_write", "disable");
    IO(MPI_File_open(MPI_COMM_WORLD, spath, amode_fs, info, &fs));
    MPI_Info_free(&info); /* the application's: the files keep their hints */

    if (rank == 0) {
        char hdr[HDR];
        memset(hdr, 0, sizeof hdr);
        snprintf(hdr, sizeof hdr, "mpiio_restart rounds=%d ranks=%d\n", rounds, size);
        IO(MPI_File_write_at(fh, 0, hdr, HDR, MPI_CHAR, MPI_STATUS_IGNORE));
    }
    MPI_Barrier(MPI_COMM_WORLD); /* the header is written before views change */

    /* The main file's view: a subarray, freed at once. */
    MPI_Datatype ft;
    int sizes[2] = {2, 3 * size}, subsizes[2] = {2, 3}, starts[2] = {0, 3 * rank};
    MPI_Type_create_subarray(2, sizes, subsizes, starts, MPI_ORDER_C, MPI_INT, &ft);
    MPI_Type_commit(&ft);
    IO(MPI_File_set_view(fh, HDR, MPI_INT, ft, "native", MPI_INFO_NULL));
    MPI_Type_free(&ft);

    /* The shared file's view: a resized vector common to all ranks, freed at once. */
    MPI_Datatype vec, sft;
    MPI_Type_vector(2, 3, 4, MPI_INT, &vec);
    MPI_Type_create_resized(vec, 0, 8 * sizeof(int), &sft);
    MPI_Type_free(&vec);
    MPI_Type_commit(&sft);
    IO(MPI_File_set_view(fs, SDISP, MPI_INT, sft, "native", MPI_INFO_NULL));
    MPI_Type_free(&sft);
    IO(MPI_File_set_atomicity(fs, 1));

    if (loop && rank == 0) {
        printf("mpiio_restart ready\n");
        fflush(stdout);
    }

    const long S = shared_per_round(), ordered1 = (long)size * (size + 1) / 2;
    MPI_Request ireq = MPI_REQUEST_NULL;
    MPI_Status st;
    int cnt;
    for (int r = 0; r < rounds; r++) {
        /* Last round's iwrite, pending across the pause. */
        if (r > 0) {
            IO(MPI_Wait(&ireq, &st));
            MPI_Get_count(&st, MPI_INT, &cnt);
            check_eq("iwrite count", cnt, 3);
            int back[3];
            IO(MPI_File_read_at(fh, (MPI_Offset)PER * (r - 1) + 18, back, 3, MPI_INT,
                                MPI_STATUS_IGNORE));
            for (int j = 0; j < 3; j++) {
                check_eq("iwrite data", back[j], value(4, r - 1, rank, j));
                mix((unsigned)back[j]);
            }
        }
        MPI_Barrier(MPI_COMM_WORLD); /* no write in flight while the size changes */
        if (r % 3 == 1) {
            IO(MPI_File_preallocate(fh, main_size(r)));
        } else {
            IO(MPI_File_set_size(fh, main_size(r)));
            MPI_Offset fsz;
            IO(MPI_File_get_size(fh, &fsz));
            check_eq("size after set_size", (long)fsz, (long)main_size(r));
        }
        IO(MPI_File_set_atomicity(fh, r % 2));

        /* Main file, individual pointer (carried over from the last round by MPI). */
        MPI_Offset p;
        IO(MPI_File_get_position(fh, &p));
        check_eq("individual pointer at the round's start", (long)p, (long)PER * r);
        int w1[6], w2[6], back[6];
        for (int j = 0; j < 6; j++) {
            w1[j] = value(1, r, rank, j);
            w2[j] = value(2, r, rank, j);
            w3[j] = value(3, r, rank, j);
        }
        IO(MPI_File_write(fh, w1, 6, MPI_INT, &st));
        MPI_Get_count(&st, MPI_INT, &cnt);
        check_eq("write count", cnt, 6);
        IO(MPI_File_seek(fh, -6, MPI_SEEK_CUR));
        IO(MPI_File_read(fh, back, 6, MPI_INT, &st));
        MPI_Get_count(&st, MPI_INT, &cnt);
        check_eq("read count", cnt, 6);
        for (int j = 0; j < 6; j++)
            check_eq("read data", back[j], w1[j]);
        IO(MPI_File_write_all(fh, w2, 6, MPI_INT, MPI_STATUS_IGNORE));
        IO(MPI_File_write_all_begin(fh, w3, 6, MPI_INT));
        IO(MPI_File_write_all_end(fh, w3, &st));
        MPI_Get_count(&st, MPI_INT, &cnt);
        check_eq("write_all_end count", cnt, 6);
        IO(MPI_File_seek(fh, -18, MPI_SEEK_CUR));
        IO(MPI_File_read_all_begin(fh, rd18, 18, MPI_INT));
        IO(MPI_File_read_all_end(fh, rd18, &st));
        MPI_Get_count(&st, MPI_INT, &cnt);
        check_eq("read_all_end count", cnt, 18);
        for (int j = 0; j < 18; j++) {
            check_eq("read_all data", rd18[j], main_value(rank, (long)PER * r + j));
            mix((unsigned)rd18[j]);
        }
        IO(MPI_File_get_position(fh, &p));
        check_eq("individual pointer after read_all", (long)p, (long)PER * r + 18);
        for (int j = 0; j < 3; j++)
            w5[j] = value(5, r, rank, j);
        IO(MPI_File_write_at_all_begin(fh, (MPI_Offset)PER * r + 21, w5, 3, MPI_INT));
        IO(MPI_File_write_at_all_end(fh, w5, MPI_STATUS_IGNORE));
        IO(MPI_File_read_at(fh, (MPI_Offset)PER * r + 21, back, 3, MPI_INT, MPI_STATUS_IGNORE));
        for (int j = 0; j < 3; j++) {
            check_eq("write_at_all data", back[j], w5[j]);
            mix((unsigned)back[j]);
        }
        for (int j = 0; j < 3; j++)
            w4[j] = value(4, r, rank, j);
        IO(MPI_File_iwrite(fh, w4, 3, MPI_INT, &ireq)); /* waited for next round */
        IO(MPI_File_seek(fh, 3, MPI_SEEK_CUR));          /* past the explicit slot */
        MPI_Offset byte;
        IO(MPI_File_get_byte_offset(fh, (MPI_Offset)PER * (r + 1), &byte));
        check_eq("byte offset of the next round", (long)byte,
                 HDR + 4L * main_index(rank, (long)PER * (r + 1)));
        IO(MPI_File_sync(fh));

        /* Shared file, shared pointer (also carried over by MPI). */
        IO(MPI_File_get_position_shared(fs, &p));
        check_eq("shared pointer at the round's start", (long)p, S * r);
        MPI_Barrier(MPI_COMM_WORLD); /* before write_ordered moves it */
        int o1[16];
        for (int j = 0; j <= rank; j++)
            o1[j] = value(6, r, rank, j);
        IO(MPI_File_write_ordered(fs, o1, rank + 1, MPI_INT, &st));
        MPI_Get_count(&st, MPI_INT, &cnt);
        check_eq("write_ordered count", cnt, rank + 1);
        MPI_Barrier(MPI_COMM_WORLD); /* every rank has moved the pointer */
        for (int t = 0; t < size; t++) { /* in turns: the file is deterministic */
            if (t == rank) {
                int sb[2] = {value(7, r, rank, 0), value(7, r, rank, 1)};
                IO(MPI_File_write_shared(fs, sb, 2, MPI_INT, MPI_STATUS_IGNORE));
            }
            MPI_Barrier(MPI_COMM_WORLD);
        }
        o2[0] = value(8, r, rank, 0);
        o2[1] = value(8, r, rank, 1);
        IO(MPI_File_write_ordered_begin(fs, o2, 2, MPI_INT));
        IO(MPI_File_write_ordered_end(fs, o2, MPI_STATUS_IGNORE));
        /* An ordered call may return on a rank before the next rank has moved the
         * pointer (ROMIO passes a token forward): wait for every rank before looking. */
        MPI_Barrier(MPI_COMM_WORLD);
        IO(MPI_File_get_position_shared(fs, &p));
        check_eq("shared pointer after the writes", (long)p, S * (r + 1));
        MPI_Barrier(MPI_COMM_WORLD); /* before rank 0 moves it */
        IO(MPI_File_seek_shared(fs, (MPI_Offset)S * r, MPI_SEEK_SET));
        int rb[16];
        IO(MPI_File_read_ordered(fs, rb, rank + 1, MPI_INT, &st));
        MPI_Get_count(&st, MPI_INT, &cnt);
        check_eq("read_ordered count", cnt, rank + 1);
        MPI_Barrier(MPI_COMM_WORLD); /* every rank has moved the pointer */
        for (int j = 0; j <= rank; j++)
            check_eq("read_ordered data", rb[j], o1[j]);
        IO(MPI_File_get_position_shared(fs, &p));
        check_eq("shared pointer after read_ordered", (long)p, S * r + ordered1);
        MPI_Barrier(MPI_COMM_WORLD); /* before rank 0 moves it */
        IO(MPI_File_seek_shared(fs, (MPI_Offset)(S - ordered1), MPI_SEEK_CUR));
        IO(MPI_File_sync(fs));
        MPI_Barrier(MPI_COMM_WORLD);
        IO(MPI_File_sync(fs));
        int *all = malloc(S * sizeof(int));
        IO(MPI_File_read_at_all(fs, (MPI_Offset)S * r, all, (int)S, MPI_INT, &st));
        MPI_Get_count(&st, MPI_INT, &cnt);
        check_eq("read_at_all count", cnt, (int)S);
        for (long k = 0; k < S; k++) {
            check_eq("shared file data", all[k], shared_value(S * r + k));
            mix((unsigned)all[k]);
        }
        free(all);
        IO(MPI_File_seek(fs, r + rank, MPI_SEEK_SET));

        if (loop)
            usleep(20000);

        /* What must have survived the pause (and a checkpoint/restart in it). */
        int flag;
        IO(MPI_File_get_atomicity(fh, &flag));
        check_eq("main file atomicity", flag, r % 2);
        IO(MPI_File_get_atomicity(fs, &flag));
        check_eq("shared file atomicity", flag, 1);
        IO(MPI_File_get_position(fh, &p));
        check_eq("main file pointer after the pause", (long)p, (long)PER * (r + 1));
        IO(MPI_File_get_position(fs, &p));
        check_eq("shared file's individual pointer after the pause", (long)p, r + rank);
        IO(MPI_File_get_position_shared(fs, &p));
        check_eq("shared pointer after the pause", (long)p, S * (r + 1));
    }
    IO(MPI_Wait(&ireq, &st));
    MPI_Get_count(&st, MPI_INT, &cnt);
    check_eq("last iwrite count", cnt, 3);
    {
        int back[3];
        IO(MPI_File_read_at(fh, (MPI_Offset)PER * (rounds - 1) + 18, back, 3, MPI_INT,
                            MPI_STATUS_IGNORE));
        for (int j = 0; j < 3; j++) {
            check_eq("last iwrite data", back[j], value(4, rounds - 1, rank, j));
            mix((unsigned)back[j]);
        }
    }

    /* Every rank's final state of both handles. */
    long mine[2 * S_N];
    file_state(fh, 0, mine);
    file_state(fs, 1, mine + S_N);
    long *states = malloc(2 * S_N * size * sizeof(long));
    MPI_Gather(mine, 2 * S_N, MPI_LONG, states, 2 * S_N, MPI_LONG, 0, MPI_COMM_WORLD);

    MPI_Barrier(MPI_COMM_WORLD);
    IO(MPI_File_set_size(fh, main_size(rounds - 1))); /* the logical end */
    IO(MPI_File_sync(fh));
    IO(MPI_File_sync(fs));
    IO(MPI_File_close(&fh));
    IO(MPI_File_close(&fs));
    check_eq("closed handles", fh == MPI_FILE_NULL && fs == MPI_FILE_NULL, 1);

    unsigned long long msum = 0, ssum = 0;
    MPI_Offset msize = 0, ssize = 0;
    if (rank == 0) {
        unsigned char *m = read_file(path, &msize);
        check_eq("main file size", (long)msize, (long)main_size(rounds - 1));
        if (msize == main_size(rounds - 1)) {
            char hdr[HDR];
            memset(hdr, 0, sizeof hdr);
            snprintf(hdr, sizeof hdr, "mpiio_restart rounds=%d ranks=%d\n", rounds, size);
            check_eq("file: header", memcmp(m, hdr, HDR), 0);
            const int *ints = (const int *)(m + HDR);
            for (int q = 0; q < size; q++)
                for (long k = 0; k < (long)PER * rounds; k++)
                    check_eq("file: main data", ints[main_index(q, k)], main_value(q, k));
        }
        msum = bytes_sum(m, msize);
        free(m);

        unsigned char *s = read_file(spath, &ssize);
        long last = shared_index(S * rounds - 1);
        check_eq("shared file size", (long)ssize, SDISP + 4L * (last + 1));
        if (ssize == SDISP + 4L * (last + 1)) {
            for (int i = 0; i < SDISP; i++)
                check_eq("file: before the shared view", s[i], 0);
            const int *ints = (const int *)(s + SDISP);
            for (long i = 0; i <= last; i++)
                if (i % 8 == 3 || i % 8 == 7)
                    check_eq("file: shared hole", ints[i], 0);
            for (long k = 0; k < S * rounds; k++)
                check_eq("file: shared data", ints[shared_index(k)], shared_value(k));
        }
        ssum = bytes_sum(s, ssize);
        free(s);
    }

    int total_bad;
    MPI_Allreduce(&bad, &total_bad, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    unsigned long long sums[16];
    MPI_Gather(&csum, 1, MPI_UNSIGNED_LONG_LONG, sums, 1, MPI_UNSIGNED_LONG_LONG, 0,
               MPI_COMM_WORLD);
    if (rank == 0) {
        unsigned long long h = FNV0;
        for (int i = 0; i < size; i++)
            h = mixv(h, sums[i]);
        printf("mpiio_restart state:");
        for (int i = 0; i < size; i++) {
            const long *a = states + 2 * S_N * i, *b = a + S_N;
            printf(" rank%d main(ind=%ld byte=%ld atom=%ld amode=%ld disp=%ld etype=%ld "
                   "filetype=%lx/%ld/%ld rep=%ld group=%ld info=%lx)"
                   " shared(ind=%ld byte=%ld shared=%ld atom=%ld amode=%ld disp=%ld "
                   "etype=%ld filetype=%lx/%ld/%ld rep=%ld group=%ld info=%lx)",
                   i, a[S_IND], a[S_BYTE], a[S_ATOM], a[S_AMODE], a[S_DISP], a[S_ETYPE],
                   a[S_FTHASH], a[S_FTEXT], a[S_FTSIZE], a[S_REP], a[S_GROUP], a[S_INFO],
                   b[S_IND], b[S_BYTE], b[S_SHARED], b[S_ATOM], b[S_AMODE], b[S_DISP],
                   b[S_ETYPE], b[S_FTHASH], b[S_FTEXT], b[S_FTSIZE], b[S_REP], b[S_GROUP],
                   b[S_INFO]);
            for (int j = 0; j < 2 * S_N; j++)
                h = mixv(h, (unsigned long long)a[j]);
        }
        printf("\n");
        printf("%s: %llx main %ld bytes %llx shared %ld bytes %llx rounds %d failed checks: %d\n",
               loop ? "mpiio_restart done" : "mpiio_restart", h, (long)msize, msum,
               (long)ssize, ssum, rounds, total_bad);
        fflush(stdout);
    }
    free(states);
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
    const char *path = "mpiio_restart.dat";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--loop") == 0 && i + 1 < argc) {
            rounds = atoi(argv[++i]);
            loop = 1;
        } else {
            path = argv[i];
        }
    }
    if (rounds < 1 || rounds > 9999 || size > 16 || strlen(path) > 4000) {
        if (rank == 0)
            fprintf(stderr,
                    "usage: mpiio_restart [--loop N] [PATH]  (1 <= N <= 9999, <= 16 ranks)\n");
        MPI_Finalize();
        return 2;
    }
    int rc = run(path, rounds, loop);
    MPI_Finalize();
    return rc;
}
