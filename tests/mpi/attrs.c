/* Attribute caching with user copy/delete callbacks (which MPI calls into the
 * application; they use thread-local counters) and with MPI_COMM_DUP_FN /
 * MPI_TYPE_DUP_FN / MPI_WIN_DUP_FN and the NULL functions, on communicators, datatypes
 * and windows; the MPI-1 MPI_Keyval_create too. 2 or more ranks. */
#include <mpi.h>
#include <stdio.h>

static __thread int copies, deletes;

static int copy_fn(MPI_Comm c, int kv, void *extra, void *in, void *out, int *flag)
{
    (void)c;
    (void)kv;
    (void)extra;
    copies++;
    *(long *)out = (long)in * 10;
    *flag = 1;
    return MPI_SUCCESS;
}

static int delete_fn(MPI_Comm c, int kv, void *attr, void *extra)
{
    (void)c;
    (void)kv;
    (void)attr;
    (void)extra;
    deletes++;
    return MPI_SUCCESS;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    int kv_user, kv_dup, kv_null, kv_old, kv_type, kv_win, flag;
    MPI_Comm_create_keyval(copy_fn, delete_fn, &kv_user, NULL);
    MPI_Comm_create_keyval(MPI_COMM_DUP_FN, MPI_COMM_NULL_DELETE_FN, &kv_dup, NULL);
    MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, MPI_COMM_NULL_DELETE_FN, &kv_null, NULL);
    MPI_Keyval_create(copy_fn, delete_fn, &kv_old, NULL);
    MPI_Comm c1;
    MPI_Comm_dup(MPI_COMM_WORLD, &c1);
    MPI_Comm_set_attr(c1, kv_user, (void *)7L);
    MPI_Comm_set_attr(c1, kv_dup, (void *)11L);
    MPI_Comm_set_attr(c1, kv_null, (void *)13L);
    MPI_Attr_put(c1, kv_old, (void *)3L);
    MPI_Comm c2;
    MPI_Comm_dup(c1, &c2);
    void *v;
    long got_user = -1, got_dup = -1, got_old = -1;
    int has_null;
    MPI_Comm_get_attr(c2, kv_user, &v, &flag);
    if (flag)
        got_user = (long)v;
    MPI_Comm_get_attr(c2, kv_dup, &v, &flag);
    if (flag)
        got_dup = (long)v;
    MPI_Comm_get_attr(c2, kv_null, &v, &has_null);
    MPI_Comm_get_attr(c2, kv_old, &v, &flag);
    if (flag)
        got_old = (long)v;
    MPI_Comm_free(&c2);
    MPI_Comm_free(&c1);

    MPI_Type_create_keyval(MPI_TYPE_DUP_FN, (MPI_Type_delete_attr_function *)delete_fn, &kv_type, NULL);
    MPI_Datatype t1, t2;
    MPI_Type_contiguous(2, MPI_INT, &t1);
    MPI_Type_set_attr(t1, kv_type, (void *)5L);
    MPI_Type_dup(t1, &t2);
    long got_type = -1;
    MPI_Type_get_attr(t2, kv_type, &v, &flag);
    if (flag)
        got_type = (long)v;
    MPI_Type_free(&t2);
    MPI_Type_free(&t1);

    int buf[4];
    MPI_Win win;
    MPI_Win_create(buf, sizeof buf, sizeof(int), MPI_INFO_NULL, MPI_COMM_WORLD, &win);
    MPI_Win_create_keyval(MPI_WIN_DUP_FN, (MPI_Win_delete_attr_function *)delete_fn, &kv_win, NULL);
    MPI_Win_set_attr(win, kv_win, (void *)9L);
    MPI_Win_free(&win);

    MPI_Comm_free_keyval(&kv_user);
    MPI_Comm_free_keyval(&kv_dup);
    MPI_Comm_free_keyval(&kv_null);
    MPI_Keyval_free(&kv_old);
    MPI_Type_free_keyval(&kv_type);
    MPI_Win_free_keyval(&kv_win);

    int mine[2] = {copies, deletes}, sums[2];
    MPI_Reduce(mine, sums, 2, MPI_INT, MPI_SUM, 0, MPI_COMM_WORLD);
    if (rank == 0)
        printf("user copy->%ld dup->%ld null-copied=%d mpi1 copy->%ld type dup->%ld; "
               "callbacks on app TLS: copies %d deletes %d\n",
               got_user, got_dup, has_null, got_old, got_type, sums[0], sums[1]);
    MPI_Finalize();
    return 0;
}
