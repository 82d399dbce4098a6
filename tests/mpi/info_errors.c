/* Info objects (create/set/get/get_nkeys/get_nthkey/dup/delete/free), error classes and
 * strings (Error_class/Error_string, Add_error_class/code/string), Get_version and
 * Get_library_version (only the version numbers are printed), Wtime/Wtick sanity,
 * Initialized/Finalized/Query_thread/Is_thread_main, and MPI_Init_thread with
 * MPI_THREAD_SERIALIZED. Deterministic output from rank 0; 2 or more ranks. Built with
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

int main(int argc, char **argv)
{
    int flag;
    MPI_Initialized(&flag);
    int init_before = flag;
    int provided;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_SERIALIZED, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
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
