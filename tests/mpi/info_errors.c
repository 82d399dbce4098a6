/* Info objects (create/set/get/get_nkeys/get_nthkey/dup/delete/free), error classes and
 * strings (Error_class/Error_string, Add_error_class/code/string), Get_version and
 * Get_library_version (only the version numbers are printed), Wtime/Wtick sanity,
 * Initialized/Finalized/Query_thread/Is_thread_main, and MPI_Init_thread with
 * MPI_THREAD_SERIALIZED. Deterministic output from rank 0; 2 or more ranks. Built with
 * mpicc.mpich.
 * `--loop N` (for checkpoint/restart at random instants): info objects, a communicator
 * duplicated with hints, a user error class with codes and strings, and a datatype are held
 * across N rounds that read them back and change them. */
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

/* --loop mode ----------------------------------------------------------------------- */

static unsigned long long csum = 14695981039346656037ULL;

/* Order-sensitive mixing: a value missed, repeated or reordered changes the result. */
static void mix(unsigned long long v)
{
    csum = (csum ^ v) * 1099511628211ULL;
    csum ^= csum >> 29;
}

static void mix_string(const char *s)
{
    mix(strlen(s));
    while (*s)
        mix((unsigned char)*s++);
}

/* What rank 0 tells the others about its info object each round (sent with a derived type
 * built from a struct type the program frees at once). */
struct record {
    int round;
    int nkeys;
    char value[24];
};

/* Reads key from info: checks it is there with the expected value (NULL: absent). */
static void expect_key(MPI_Info info, const char *key, const char *want, const char *what)
{
    char value[64];
    int flag, vlen, vflag;
    MPI_Info_get(info, key, sizeof value - 1, value, &flag);
    MPI_Info_get_valuelen(info, key, &vlen, &vflag);
    if (!want) {
        check(!flag && !vflag, what);
        return;
    }
    check(flag && vflag && strcmp(value, want) == 0 && vlen == (int)strlen(want), what);
    mix_string(value);
}

/* Mixes an info's keys in order. */
static int mix_keys(MPI_Info info)
{
    int n;
    char key[MPI_MAX_INFO_KEY + 1];
    MPI_Info_get_nkeys(info, &n);
    mix(n);
    for (int i = 0; i < n; i++) {
        MPI_Info_get_nthkey(info, i, key);
        mix_string(key);
    }
    return n;
}

/* The long-lived objects: an info object whose keys the rounds read back and change, an
 * info of hints, a communicator duplicated with those hints and set to MPI_ERRORS_RETURN,
 * a user error class with two codes and their strings (one string replaced each round;
 * numbered after a churn of added and deleted classes and codes, and a class and code
 * added and deleted each round),
 * and a derived datatype. Rolling (made in a round, freed in the next): a duplicate of the
 * info object and a duplicate of the communicator. */
static int loop_main(int rounds)
{
    MPI_Info info, hints;
    MPI_Info_create(&info);
    MPI_Info_set(info, "alpha", "one");
    MPI_Info_set(info, "beta", "two");
    MPI_Info_set(info, "gamma", "three3");
    MPI_Info_set(info, "round", "none");
    MPI_Info_create(&hints);
    MPI_Info_set(hints, "mpi_assert_no_any_tag", "true");
    MPI_Comm c;
    MPI_Comm_dup_with_info(MPI_COMM_WORLD, hints, &c);
    MPI_Comm_set_errhandler(c, MPI_ERRORS_RETURN);
    int myclass, mycode1, mycode2, *lu, flag;
    /* Churn first (MPIX_Delete_error_*, MPI 4.1's MPI_Remove_error_*): MPICH hands deleted
     * numbers out again first, in the order they were deleted, so myclass and both codes
     * below get freed numbers, and each round's rolling class and code too: a restart must
     * number them as the first process did (the numbers go into the checksum). */
    int churn_class[3], churn_code[3][2];
    for (int i = 0; i < 3; i++) {
        MPI_Add_error_class(&churn_class[i]);
        for (int j = 0; j < 2; j++) {
            MPI_Add_error_code(churn_class[i], &churn_code[i][j]);
            MPI_Add_error_string(churn_code[i][j], "churned");
        }
    }
    /* A code's string is deleted before the code: MPICH 4.0.2's MPIX_Delete_error_code
     * frees the string but leaves the pointer, which the next string of a code given that
     * number frees again (heap corruption natively). */
    MPIX_Delete_error_string(churn_code[1][0]);
    MPIX_Delete_error_code(churn_code[1][0]);
    MPIX_Delete_error_string(churn_code[0][1]);
    MPIX_Delete_error_code(churn_code[0][1]);
    MPIX_Delete_error_class(churn_class[2]);
    MPIX_Delete_error_class(churn_class[0]);
    MPI_Add_error_class(&myclass);
    MPI_Add_error_code(myclass, &mycode1);
    MPI_Add_error_code(myclass, &mycode2);
    MPI_Add_error_string(myclass, "my class of errors");
    MPI_Add_error_string(mycode1, "my first error");
    MPI_Add_error_string(mycode2, "my second error, round none");
    MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_LASTUSEDCODE, &lu, &flag);
    int lastused = flag ? *lu : -1;
    MPI_Datatype st, rec_t;
    int bl[3] = {1, 1, 24};
    MPI_Aint dis[3] = {offsetof(struct record, round), offsetof(struct record, nkeys),
                       offsetof(struct record, value)};
    MPI_Datatype tys[3] = {MPI_INT, MPI_INT, MPI_CHAR};
    MPI_Type_create_struct(3, bl, dis, tys, &st);
    MPI_Type_create_resized(st, 0, sizeof(struct record), &rec_t);
    MPI_Type_free(&st);
    MPI_Type_commit(&rec_t);
    if (rank == 0) {
        printf("info_errors ready\n");
        fflush(stdout);
    }

    char round_value[24] = "none";
    char code2_string[MPI_MAX_ERROR_STRING] = "my second error, round none";
    MPI_Info iroll = MPI_INFO_NULL;
    char iroll_value[24] = "";
    MPI_Comm croll = MPI_COMM_NULL;
    for (int r = 0; r < rounds; r++) {
        /* The long-lived info holds what the last round left in it. */
        int nkeys = mix_keys(info);
        check(nkeys == (r % 2 ? 3 : 4), "loop info nkeys");
        expect_key(info, "alpha", "one", "loop info alpha");
        expect_key(info, "beta", r % 2 ? NULL : "two", "loop info beta");
        expect_key(info, "gamma", "three3", "loop info gamma");
        expect_key(info, "round", round_value, "loop info round");
        expect_key(info, "missing", NULL, "loop info missing");
        /* Rank 0's view, sent to everyone: each compares it with its own. */
        struct record rec, own = {r, nkeys, ""};
        snprintf(own.value, sizeof own.value, "%s", round_value);
        memset(&rec, 0, sizeof rec);
        if (rank == 0)
            rec = own;
        MPI_Bcast(&rec, 1, rec_t, 0, c);
        check(rec.round == own.round && rec.nkeys == own.nkeys &&
                  strcmp(rec.value, own.value) == 0,
              "loop record bcast");
        mix_string(rec.value);
        /* Change it from data exchanged this round; beta comes and goes. */
        long mine = (rank + 1) * (r + 3), s;
        MPI_Allreduce(&mine, &s, 1, MPI_LONG, MPI_SUM, c);
        mix(s);
        snprintf(round_value, sizeof round_value, "%d:%ld", r, s);
        MPI_Info_set(info, "round", round_value);
        if (r % 2)
            MPI_Info_set(info, "beta", "two");
        else
            MPI_Info_delete(info, "beta");

        /* Short-lived info objects: a dup (a snapshot) and a new one. */
        MPI_Info copy, fresh;
        MPI_Info_dup(info, &copy);
        MPI_Info_set(info, "scratch", "x");
        MPI_Info_delete(info, "scratch");
        check(mix_keys(copy) == (r % 2 ? 4 : 3), "loop info dup nkeys");
        expect_key(copy, "round", round_value, "loop info dup round");
        MPI_Info_free(&copy);
        MPI_Info_create(&fresh);
        MPI_Info_set(fresh, "mpi_assert_no_any_source", "true");
        expect_key(fresh, "mpi_assert_no_any_source", "true", "loop fresh info");
        /* Rolling info: last round's snapshot still holds that round's value. */
        if (iroll != MPI_INFO_NULL) {
            expect_key(iroll, "round", iroll_value, "loop rolling info");
            MPI_Info_free(&iroll);
        }
        MPI_Info_dup(info, &iroll);
        snprintf(iroll_value, sizeof iroll_value, "%s", round_value);

        /* The communicator: its hint, its error handler, a real error returned. */
        MPI_Info ci;
        MPI_Comm_get_info(c, &ci);
        expect_key(ci, "mpi_assert_no_any_tag", "true", "loop comm hint");
        MPI_Info_free(&ci);
        MPI_Errhandler eh;
        MPI_Comm_get_errhandler(c, &eh);
        check(eh == MPI_ERRORS_RETURN, "loop comm errhandler");
        MPI_Errhandler_free(&eh);
        int x = r, rc = MPI_Send(&x, -1, MPI_INT, 0, 0, c), cls;
        MPI_Error_class(rc, &cls);
        check(cls == MPI_ERR_COUNT, "loop negative count");
        mix(cls);
        /* A short-lived communicator with the fresh hints, and the rolling one. */
        MPI_Comm c2;
        MPI_Comm_dup_with_info(c, fresh, &c2);
        MPI_Info_free(&fresh);
        MPI_Comm_get_info(c2, &ci);
        expect_key(ci, "mpi_assert_no_any_source", "true", "loop short-lived comm hint");
        MPI_Info_free(&ci);
        long s2;
        MPI_Allreduce(&s, &s2, 1, MPI_LONG, MPI_MAX, c2);
        check(s2 == s, "loop short-lived comm");
        MPI_Comm_free(&c2);
        if (croll != MPI_COMM_NULL) {
            /* A duplicate keeps its parent's error handler (and an error is returned). */
            rc = MPI_Send(&x, 1, MPI_INT, size + 2, 0, croll);
            MPI_Error_class(rc, &cls);
            check(cls == MPI_ERR_RANK, "loop rolling comm errhandler");
            long y = r + rank, z;
            MPI_Allreduce(&y, &z, 1, MPI_LONG, MPI_SUM, croll);
            mix(z);
            MPI_Comm_free(&croll);
        }
        MPI_Comm_dup(c, &croll);

        /* User error class and codes: classes, strings, last used code, a raise. */
        int cls1, cls2, len;
        char s_class[MPI_MAX_ERROR_STRING], s_code[MPI_MAX_ERROR_STRING];
        MPI_Error_class(mycode1, &cls1);
        MPI_Error_class(mycode2, &cls2);
        check(cls1 == myclass && cls2 == myclass, "loop user codes' class");
        MPI_Error_string(myclass, s_class, &len);
        check(strcmp(s_class, "my class of errors") == 0, "loop user class string");
        MPI_Error_string(mycode1, s_code, &len);
        check(strcmp(s_code, "my first error") == 0, "loop user code string");
        MPI_Error_string(mycode2, s_code, &len);
        check(strcmp(s_code, code2_string) == 0, "loop replaced code string");
        mix_string(s_code);
        MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_LASTUSEDCODE, &lu, &flag);
        check(flag && *lu == lastused, "loop lastusedcode");
        rc = MPI_Comm_call_errhandler(c, mycode2);
        check(rc == MPI_SUCCESS || rc == mycode2, "loop call_errhandler returns");
        snprintf(code2_string, sizeof code2_string, "my second error, round %s", round_value);
        MPI_Add_error_string(mycode2, code2_string);
        /* A rolling class and code, deleted again: numbered from the free lists. */
        int roll_class, roll_code;
        MPI_Add_error_class(&roll_class);
        MPI_Add_error_code(roll_class, &roll_code);
        MPI_Add_error_string(roll_code, "rolling error");
        MPI_Error_string(roll_code, s_code, &len);
        check(strcmp(s_code, "rolling error") == 0, "loop rolling code string");
        MPI_Error_string(churn_code[2][1], s_code, &len);
        check(strcmp(s_code, "churned") == 0, "loop churned code string");
        mix((unsigned long long)roll_class);
        mix((unsigned long long)roll_code);
        MPIX_Delete_error_string(roll_code);
        MPIX_Delete_error_code(roll_code);
        MPIX_Delete_error_class(roll_class);
        usleep(20000);
    }
    MPI_Comm_free(&croll);
    MPI_Info_free(&iroll);
    MPI_Type_free(&rec_t);
    MPI_Comm_free(&c);
    MPI_Info_free(&hints);
    MPI_Info_free(&info);

    unsigned long long sums[64];
    int total_bad;
    MPI_Gather(&csum, 1, MPI_UNSIGNED_LONG_LONG, sums, 1, MPI_UNSIGNED_LONG_LONG, 0,
               MPI_COMM_WORLD);
    MPI_Allreduce(&bad, &total_bad, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0) {
        csum = 14695981039346656037ULL;
        for (int i = 0; i < size; i++)
            mix(sums[i]);
        printf("info_errors done: %llx failed checks: %d\n", csum, total_bad);
    }
    if (bad)
        fprintf(stderr, "rank %d: %d failed, first: %s\n", rank, bad, first_bad);
    return total_bad != 0;
}

int main(int argc, char **argv)
{
    int flag;
    MPI_Initialized(&flag);
    int init_before = flag;
    int provided;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_SERIALIZED, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (argc > 1 && strcmp(argv[1], "--loop") == 0) {
        int rounds = argc > 2 ? atoi(argv[2]) : 0;
        if (rounds < 1) {
            if (rank == 0)
                fprintf(stderr, "usage: info_errors [--loop N] (N >= 1)\n");
            MPI_Finalize();
            return 2;
        }
        int rc = loop_main(rounds);
        MPI_Finalize();
        return rc;
    }
    MPI_Initialized(&flag);
    int init_after = flag;
    MPI_Finalized(&flag);
    int fin_before = flag;
    int queried, is_main;
    MPI_Query_thread(&queried);
    MPI_Is_thread_main(&is_main);
    check(queried == provided, "query_thread");

    /* Info */
    MPI_Info info, copy;
    MPI_Info_create(&info);
    MPI_Info_set(info, "alpha", "1");
    MPI_Info_set(info, "beta", "two");
    MPI_Info_set(info, "gamma", "three3");
    MPI_Info_set(info, "alpha", "one"); /* replaces */
    int nkeys;
    MPI_Info_get_nkeys(info, &nkeys);
    char key[MPI_MAX_INFO_KEY + 1], value[64], keys[128] = "";
    for (int i = 0; i < nkeys; i++) {
        MPI_Info_get_nthkey(info, i, key);
        strcat(keys, key);
        strcat(keys, ",");
    }
    MPI_Info_get(info, "alpha", sizeof value - 1, value, &flag);
    check(flag && strcmp(value, "one") == 0, "info get");
    int vlen;
    MPI_Info_get_valuelen(info, "gamma", &vlen, &flag);
    check(flag && vlen == 6, "info valuelen");
    MPI_Info_get(info, "missing", sizeof value - 1, value, &flag);
    check(!flag, "info missing");
    MPI_Info_dup(info, &copy);
    MPI_Info_delete(info, "beta");
    int n_after, n_copy;
    MPI_Info_get_nkeys(info, &n_after);
    MPI_Info_get_nkeys(copy, &n_copy);
    MPI_Info_get(copy, "beta", sizeof value - 1, value, &flag);
    check(flag && strcmp(value, "two") == 0, "info dup keeps deleted key");
    MPI_Info_free(&info);
    MPI_Info_free(&copy);
    check(info == MPI_INFO_NULL && copy == MPI_INFO_NULL, "info free nulls");
    /* An info passed to a call that takes one */
    MPI_Info_create(&info);
    MPI_Info_set(info, "mpi_assert_no_any_tag", "false");
    MPI_Comm c;
    MPI_Comm_dup_with_info(MPI_COMM_WORLD, info, &c);
    MPI_Info_free(&info);
    int csize;
    MPI_Comm_size(c, &csize);
    check(csize == size, "dup_with_info");
    MPI_Comm_free(&c);

    /* Error classes and strings of predefined codes */
    int codes[] = {MPI_SUCCESS, MPI_ERR_BUFFER, MPI_ERR_COUNT, MPI_ERR_TYPE, MPI_ERR_TAG,
                   MPI_ERR_COMM, MPI_ERR_RANK, MPI_ERR_ARG, MPI_ERR_OTHER, MPI_ERR_TRUNCATE};
    int ncodes = sizeof codes / sizeof codes[0];
    char strings[10][MPI_MAX_ERROR_STRING];
    for (int i = 0; i < ncodes; i++) {
        int cls, len;
        MPI_Error_class(codes[i], &cls);
        check(cls == codes[i], "error class of a class");
        MPI_Error_string(codes[i], strings[i], &len);
        check(len == (int)strlen(strings[i]), "error string length");
    }
    /* A real error's code maps back to its class, and its string names the problem */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    int x = 0, rc = MPI_Send(&x, -1, MPI_INT, 0, 0, MPI_COMM_WORLD), rc_class;
    MPI_Error_class(rc, &rc_class);
    check(rc_class == MPI_ERR_COUNT, "negative count class");

    /* User-defined error class, codes and strings */
    int myclass, mycode1, mycode2, lastused, len;
    MPI_Add_error_class(&myclass);
    MPI_Add_error_code(myclass, &mycode1);
    MPI_Add_error_code(myclass, &mycode2);
    MPI_Add_error_string(myclass, "my class of errors");
    MPI_Add_error_string(mycode1, "my first error");
    int cls1, cls2;
    MPI_Error_class(mycode1, &cls1);
    MPI_Error_class(mycode2, &cls2);
    check(cls1 == myclass && cls2 == myclass && mycode1 != mycode2, "user codes' class");
    char s_class[MPI_MAX_ERROR_STRING], s_code[MPI_MAX_ERROR_STRING];
    MPI_Error_string(myclass, s_class, &len);
    MPI_Error_string(mycode1, s_code, &len);
    int *lu;
    MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_LASTUSEDCODE, &lu, &flag);
    lastused = flag ? *lu : -1;
    check(flag && lastused > 0, "lastusedcode");
    /* Raised through MPI_ERRORS_RETURN: the call returns (MPICH: MPI_SUCCESS) */
    int raised = MPI_Comm_call_errhandler(MPI_COMM_WORLD, mycode2);
    check(raised == MPI_SUCCESS || raised == mycode2, "call_errhandler returns");

    /* Versions */
    int ver, sub;
    MPI_Get_version(&ver, &sub);
    char lib[MPI_MAX_LIBRARY_VERSION_STRING];
    int liblen;
    int librc = MPI_Get_library_version(lib, &liblen);
    check(librc == MPI_SUCCESS && liblen > 0 && liblen == (int)strlen(lib), "library version");
    check(ver == MPI_VERSION && sub == MPI_SUBVERSION, "version matches header");

    /* Clocks */
    double t0 = MPI_Wtime(), tick = MPI_Wtick();
    volatile double spin = 0;
    for (int i = 0; i < 100000; i++)
        spin += i;
    double t1 = MPI_Wtime();
    int clocks_ok = t0 > 0 && t1 >= t0 && t1 - t0 < 60 && tick > 0 && tick < 1;
    int global_attr;
    int *gp;
    MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_WTIME_IS_GLOBAL, &gp, &flag);
    global_attr = flag;

    int oks[2] = {clocks_ok, bad == 0}, all_oks[2];
    MPI_Allreduce(oks, all_oks, 2, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    int bads[64];
    MPI_Gather(&bad, 1, MPI_INT, bads, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (rank == 0) {
        printf("initialized before=%d after=%d finalized=%d is_thread_main=%d\n", init_before,
               init_after, fin_before, is_main);
        printf("init_thread requested SERIALIZED provided>=requested: %s\n",
               provided >= MPI_THREAD_SERIALIZED ? "yes" : "no");
        printf("info keys %d: %s after delete %d, dup %d\n", nkeys, keys, n_after, n_copy);
        for (int i = 0; i < ncodes; i++)
            printf("error %d: %s\n", codes[i], strings[i]);
        printf("negative count -> %s\n",
               rc_class == MPI_ERR_COUNT ? "MPI_ERR_COUNT" : "other");
        printf("user class string: %s; code string: %s\n", s_class, s_code);
        printf("MPI version %d.%d, library version string %s\n", ver, sub,
               librc == MPI_SUCCESS ? "ok" : "bad");
        printf("wtime/wtick %s, wtime_is_global attribute %s\n", all_oks[0] ? "ok" : "bad",
               global_attr ? "present" : "absent");
        for (int r = 0; r < size; r++)
            printf("rank %d failed checks: %d\n", r, bads[r]);
    }
    if (bad)
        fprintf(stderr, "rank %d: %d failed, first: %s\n", rank, bad, first_bad);
    MPI_Finalize();
    MPI_Finalized(&flag);
    if (rank == 0)
        printf("finalized after=%d\n", flag);
    return 0;
}
