/* Parallel HDF5 as a real MPI-IO client: the MPI-IO file driver (H5Pset_fapl_mpio) on
 * MPI_COMM_WORLD with collective metadata reads and writes, one file (argv path, else
 * ./h5_parallel.h5) created once and kept open across every round, so a checkpoint lands
 * while HDF5 holds its MPI_File (and its duplicated communicator and info) open.
 *
 * Objects, all created collectively:
 * * "grid": int, 2-D {rows, W}, chunked {P, W}, unlimited rows. Round r extends it to
 *   (r+1)*P rows (H5Dset_extent) and rank p writes row r*P+p collectively
 *   (H5FD_MPIO_COLLECTIVE); every rank then reads the whole grid back collectively and
 *   its own column independently (a strided selection);
 * * "indep": int, 3-D {rounds, P, K}, contiguous, made before the loop: rank p writes
 *   [r, p, :] independently (H5FD_MPIO_INDEPENDENT) and reads its right neighbour's slab
 *   independently after a flush and a barrier;
 * * "rounds/rNNNN": a new double dataset {P*M} per round (rank p writes its M elements
 *   collectively), with an int attribute "round"; closed, opened again and read back
 *   whole collectively;
 * * an int attribute "rounds_done" on the root group, rewritten every round.
 *
 * `--loop N`: N rounds with a 20 ms pause each; rank 0 prints "h5_parallel ready" once the
 * file is open and the final "h5_parallel done: ..." line. Plain run: 3 rounds, no pause,
 * "h5_parallel: ...". At the end the file is closed and opened again read-only on every
 * rank, and everything is read back and checked once more. The result line holds a
 * checksum of everything every rank read (during the rounds and at the end), the rounds,
 * the objects in the file, its size and the number of failed checks. 1 to 16 ranks. */
#include <hdf5.h>
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

/* Every HDF5 call goes through this: a negative return is a failed check (HDF5 prints its
 * error stack on stderr). */
#define H5(call)                                                                           \
    ({                                                                                     \
        __typeof__(call) rc_ = (call);                                                     \
        if (rc_ < 0) {                                                                     \
            fprintf(stderr, "rank %d: %s failed\n", rank, #call);                          \
            fail(#call, (long)rc_, 0);                                                     \
        }                                                                                  \
        rc_;                                                                               \
    })

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

static void mixd(double d)
{
    unsigned long long u;
    memcpy(&u, &d, sizeof u);
    mix(u);
}

#define W 16 /* grid columns */
#define K 8  /* indep: ints per rank per round */
#define M 4  /* round datasets: doubles per rank */

/* kind 1 grid, 2 indep; round r, rank p, index j */
static int value(int kind, int r, int p, int j)
{
    return kind * 100000000 + r * 10000 + p * 100 + j;
}

static double dvalue(int r, int p, int j)
{
    return r + p / 100.0 + j / 10000.0 + 0.5;
}

static hid_t xfer_coll, xfer_ind;

/* Reads the whole grid of `rows` rows collectively and checks it. */
static void read_grid(hid_t grid, int rows, const char *what)
{
    int *buf = malloc((size_t)rows * W * sizeof(int));
    H5(H5Dread(grid, H5T_NATIVE_INT, H5S_ALL, H5S_ALL, xfer_coll, buf));
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < W; j++) {
            check_eq(what, buf[i * W + j], value(1, i / size, i % size, j));
            mix((unsigned)buf[i * W + j]);
        }
    free(buf);
}

/* Reads dataset rounds/rNNNN (opened again) collectively and checks it and its attribute. */
static void read_round(hid_t file, int r, const char *what)
{
    char name[64];
    snprintf(name, sizeof name, "rounds/r%04d", r);
    hid_t d = H5(H5Dopen2(file, name, H5P_DEFAULT));
    double *buf = malloc((size_t)size * M * sizeof(double));
    H5(H5Dread(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, xfer_coll, buf));
    for (int p = 0; p < size; p++)
        for (int j = 0; j < M; j++) {
            check_eq(what, buf[p * M + j] == dvalue(r, p, j), 1);
            mixd(buf[p * M + j]);
        }
    free(buf);
    hid_t a = H5(H5Aopen(d, "round", H5P_DEFAULT));
    int v = -1;
    H5(H5Aread(a, H5T_NATIVE_INT, &v));
    check_eq("round attribute", v, r);
    mix((unsigned)v);
    H5(H5Aclose(a));
    H5(H5Dclose(d));
}

static hid_t open_fapl(void)
{
    MPI_Info info;
    MPI_Info_create(&info);
    MPI_Info_set(info, "romio_cb_write", "enable");
    MPI_Info_set(info, "cb_buffer_size", "1048576");
    hid_t fapl = H5(H5Pcreate(H5P_FILE_ACCESS));
    H5(H5Pset_fapl_mpio(fapl, MPI_COMM_WORLD, info)); /* HDF5 duplicates both */
    MPI_Info_free(&info);
    H5(H5Pset_all_coll_metadata_ops(fapl, 1));
    H5(H5Pset_coll_metadata_write(fapl, 1));
    return fapl;
}

static int run(const char *path, int rounds, int loop)
{
    xfer_coll = H5(H5Pcreate(H5P_DATASET_XFER));
    H5(H5Pset_dxpl_mpio(xfer_coll, H5FD_MPIO_COLLECTIVE));
    xfer_ind = H5(H5Pcreate(H5P_DATASET_XFER));
    H5(H5Pset_dxpl_mpio(xfer_ind, H5FD_MPIO_INDEPENDENT));

    hid_t fapl = open_fapl();
    hid_t file = H5(H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl));
    H5(H5Pclose(fapl));

    /* grid: chunked, unlimited rows */
    hsize_t gdims[2] = {0, W}, gmax[2] = {H5S_UNLIMITED, W}, gchunk[2] = {size, W};
    hid_t gspace = H5(H5Screate_simple(2, gdims, gmax));
    hid_t gdcpl = H5(H5Pcreate(H5P_DATASET_CREATE));
    H5(H5Pset_chunk(gdcpl, 2, gchunk));
    hid_t grid = H5(H5Dcreate2(file, "grid", H5T_NATIVE_INT, gspace, H5P_DEFAULT, gdcpl,
                               H5P_DEFAULT));
    H5(H5Pclose(gdcpl));
    H5(H5Sclose(gspace));

    /* indep: contiguous, the whole run's size */
    hsize_t idims[3] = {rounds, size, K};
    hid_t ispace = H5(H5Screate_simple(3, idims, NULL));
    hid_t indep = H5(H5Dcreate2(file, "indep", H5T_NATIVE_INT, ispace, H5P_DEFAULT,
                                H5P_DEFAULT, H5P_DEFAULT));

    hid_t grp = H5(H5Gcreate2(file, "rounds", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    hid_t scalar = H5(H5Screate(H5S_SCALAR));
    hid_t done_attr = H5(H5Acreate2(file, "rounds_done", H5T_NATIVE_INT, scalar, H5P_DEFAULT,
                                    H5P_DEFAULT));

    if (loop && rank == 0) {
        printf("h5_parallel ready\n");
        fflush(stdout);
    }

    for (int r = 0; r < rounds; r++) {
        /* grid: extend, each rank writes its row collectively */
        hsize_t ext[2] = {(hsize_t)(r + 1) * size, W};
        H5(H5Dset_extent(grid, ext));
        hid_t fspace = H5(H5Dget_space(grid));
        hsize_t start[2] = {(hsize_t)r * size + rank, 0}, count[2] = {1, W};
        H5(H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count, NULL));
        hid_t mspace = H5(H5Screate_simple(1, count + 1, NULL));
        int row[W];
        for (int j = 0; j < W; j++)
            row[j] = value(1, r, rank, j);
        H5(H5Dwrite(grid, H5T_NATIVE_INT, mspace, fspace, xfer_coll, row));
        H5(H5Sclose(mspace));
        H5(H5Sclose(fspace));

        /* indep: each rank its slab, independently */
        fspace = H5(H5Dget_space(indep));
        hsize_t istart[3] = {r, rank, 0}, icount[3] = {1, 1, K};
        H5(H5Sselect_hyperslab(fspace, H5S_SELECT_SET, istart, NULL, icount, NULL));
        mspace = H5(H5Screate_simple(1, icount + 2, NULL));
        int slab[K];
        for (int j = 0; j < K; j++)
            slab[j] = value(2, r, rank, j);
        H5(H5Dwrite(indep, H5T_NATIVE_INT, mspace, fspace, xfer_ind, slab));

        /* a new dataset with an attribute, written collectively */
        char name[64];
        snprintf(name, sizeof name, "r%04d", r);
        hsize_t rdims[1] = {(hsize_t)size * M};
        hid_t rspace = H5(H5Screate_simple(1, rdims, NULL));
        hid_t rd = H5(H5Dcreate2(grp, name, H5T_NATIVE_DOUBLE, rspace, H5P_DEFAULT,
                                 H5P_DEFAULT, H5P_DEFAULT));
        hsize_t rstart[1] = {(hsize_t)rank * M}, rcount[1] = {M};
        H5(H5Sselect_hyperslab(rspace, H5S_SELECT_SET, rstart, NULL, rcount, NULL));
        hid_t rmem = H5(H5Screate_simple(1, rcount, NULL));
        double dv[M];
        for (int j = 0; j < M; j++)
            dv[j] = dvalue(r, rank, j);
        H5(H5Dwrite(rd, H5T_NATIVE_DOUBLE, rmem, rspace, xfer_coll, dv));
        H5(H5Sclose(rmem));
        hid_t attr = H5(H5Acreate2(rd, "round", H5T_NATIVE_INT, scalar, H5P_DEFAULT,
                                   H5P_DEFAULT));
        H5(H5Awrite(attr, H5T_NATIVE_INT, &r)); /* every rank writes the same value */
        H5(H5Aclose(attr));
        H5(H5Dclose(rd));
        H5(H5Sclose(rspace));
        int n = r + 1;
        H5(H5Awrite(done_attr, H5T_NATIVE_INT, &n));

        /* every rank's writes on disk before anyone reads them */
        H5(H5Fflush(file, H5F_SCOPE_GLOBAL));
        MPI_Barrier(MPI_COMM_WORLD);

        read_grid(grid, (r + 1) * size, "grid data");
        /* own column of the grid, independently: a strided selection */
        fspace = H5(H5Dget_space(grid));
        hsize_t cstart[2] = {0, (hsize_t)rank % W}, ccount[2] = {(hsize_t)(r + 1) * size, 1};
        H5(H5Sselect_hyperslab(fspace, H5S_SELECT_SET, cstart, NULL, ccount, NULL));
        mspace = H5(H5Screate_simple(1, ccount, NULL));
        int *col = malloc(ccount[0] * sizeof(int));
        H5(H5Dread(grid, H5T_NATIVE_INT, mspace, fspace, xfer_ind, col));
        for (hsize_t i = 0; i < ccount[0]; i++) {
            check_eq("grid column", col[i], value(1, (int)i / size, (int)i % size, rank % W));
            mix((unsigned)col[i]);
        }
        free(col);
        H5(H5Sclose(mspace));
        H5(H5Sclose(fspace));
        /* right neighbour's indep slab, independently */
        fspace = H5(H5Dget_space(indep));
        int right = (rank + 1) % size;
        hsize_t nstart[3] = {r, right, 0};
        H5(H5Sselect_hyperslab(fspace, H5S_SELECT_SET, nstart, NULL, icount, NULL));
        mspace = H5(H5Screate_simple(1, icount + 2, NULL));
        H5(H5Dread(indep, H5T_NATIVE_INT, mspace, fspace, xfer_ind, slab));
        for (int j = 0; j < K; j++) {
            check_eq("indep data", slab[j], value(2, r, right, j));
            mix((unsigned)slab[j]);
        }
        H5(H5Sclose(mspace));
        H5(H5Sclose(fspace));
        read_round(file, r, "round data");
        n = -1;
        H5(H5Aread(done_attr, H5T_NATIVE_INT, &n));
        check_eq("rounds_done", n, r + 1);
        mix((unsigned)n);

        if (loop)
            usleep(20000);
    }
    H5(H5Aclose(done_attr));
    H5(H5Sclose(scalar));
    H5(H5Gclose(grp));
    H5(H5Sclose(ispace));
    H5(H5Dclose(indep));
    H5(H5Dclose(grid));
    H5(H5Fclose(file));

    /* Everything once more, from the file opened again read-only. */
    fapl = open_fapl();
    file = H5(H5Fopen(path, H5F_ACC_RDONLY, fapl));
    H5(H5Pclose(fapl));
    hsize_t fsize = 0;
    H5(H5Fget_filesize(file, &fsize));
    grid = H5(H5Dopen2(file, "grid", H5P_DEFAULT));
    hid_t gs = H5(H5Dget_space(grid));
    hsize_t got[2] = {0, 0};
    H5(H5Sget_simple_extent_dims(gs, got, NULL));
    H5(H5Sclose(gs));
    check_eq("grid rows", (long)got[0], (long)rounds * size);
    if (got[0] == (hsize_t)rounds * size && got[1] == W)
        read_grid(grid, rounds * size, "file: grid data");
    H5(H5Dclose(grid));
    indep = H5(H5Dopen2(file, "indep", H5P_DEFAULT));
    int *all = malloc((size_t)rounds * size * K * sizeof(int));
    H5(H5Dread(indep, H5T_NATIVE_INT, H5S_ALL, H5S_ALL, xfer_coll, all));
    for (int r = 0; r < rounds; r++)
        for (int p = 0; p < size; p++)
            for (int j = 0; j < K; j++) {
                int v = all[((size_t)r * size + p) * K + j];
                check_eq("file: indep data", v, value(2, r, p, j));
                mix((unsigned)v);
            }
    free(all);
    H5(H5Dclose(indep));
    for (int r = 0; r < rounds; r++)
        read_round(file, r, "file: round data");
    H5G_info_t gi;
    H5(H5Gget_info_by_name(file, "rounds", &gi, H5P_DEFAULT));
    check_eq("datasets in rounds/", (long)gi.nlinks, rounds);
    hid_t a = H5(H5Aopen(file, "rounds_done", H5P_DEFAULT));
    int n = -1;
    H5(H5Aread(a, H5T_NATIVE_INT, &n));
    check_eq("file: rounds_done", n, rounds);
    mix((unsigned)n);
    H5(H5Aclose(a));
    H5G_info_t ri;
    H5(H5Gget_info(file, &ri));
    H5(H5Fclose(file));
    H5(H5Pclose(xfer_coll));
    H5(H5Pclose(xfer_ind));

    int total_bad;
    MPI_Allreduce(&bad, &total_bad, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    unsigned long long sums[16];
    MPI_Gather(&csum, 1, MPI_UNSIGNED_LONG_LONG, sums, 1, MPI_UNSIGNED_LONG_LONG, 0,
               MPI_COMM_WORLD);
    if (rank == 0) {
        unsigned long long h = FNV0;
        for (int i = 0; i < size; i++)
            h = mixv(h, sums[i]);
        printf("%s: %llx rounds %d objects %lu+%lu file bytes %lu failed checks: %d\n",
               loop ? "h5_parallel done" : "h5_parallel", h, rounds,
               (unsigned long)ri.nlinks, (unsigned long)gi.nlinks, (unsigned long)fsize,
               total_bad);
        fflush(stdout);
    }
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
    const char *path = "h5_parallel.h5";
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
            fprintf(stderr, "usage: h5_parallel [--loop N] [PATH]  (1 <= N <= 9999, <= 16 ranks)\n");
        MPI_Finalize();
        return 2;
    }
    int rc = run(path, rounds, loop);
    MPI_Finalize();
    return rc;
}
