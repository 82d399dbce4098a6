/* MPI-1 functions that MPI-3.0 removed and MPICH 4.0.2 still exports (old codes and
 * MPICH's own *_oldapi tests call them). Error handlers and addresses are their MPI-2
 * successors, called through this library's own exports (trampolines, records); the
 * datatype constructors and bounds are MPICH's own, with handle translation: a restart
 * re-creates their types from MPI_Type_get_contents like any other. */
#include "mana_wrap.h"
#include <stdlib.h>

__attribute__((used)) static int mana_w_MPI_Address(void *location, MPI_Aint *address)
{
    return PMPI_Get_address(location, address);
}
MANA_EXPORT(mana_w_MPI_Address, MPI_Address)
MANA_EXPORT(mana_w_MPI_Address, PMPI_Address)

__attribute__((used)) static int mana_w_MPI_Errhandler_create(MPI_Comm_errhandler_function *fn, MPI_Errhandler *eh)
{
    return PMPI_Comm_create_errhandler(fn, eh);
}
MANA_EXPORT(mana_w_MPI_Errhandler_create, MPI_Errhandler_create)
MANA_EXPORT(mana_w_MPI_Errhandler_create, PMPI_Errhandler_create)

__attribute__((used)) static int mana_w_MPI_Errhandler_get(MPI_Comm comm, MPI_Errhandler *eh)
{
    return PMPI_Comm_get_errhandler(comm, eh);
}
MANA_EXPORT(mana_w_MPI_Errhandler_get, MPI_Errhandler_get)
MANA_EXPORT(mana_w_MPI_Errhandler_get, PMPI_Errhandler_get)

__attribute__((used)) static int mana_w_MPI_Errhandler_set(MPI_Comm comm, MPI_Errhandler eh)
{
    return PMPI_Comm_set_errhandler(comm, eh);
}
MANA_EXPORT(mana_w_MPI_Errhandler_set, MPI_Errhandler_set)
MANA_EXPORT(mana_w_MPI_Errhandler_set, PMPI_Errhandler_set)

/* The datatype functions go to MPICH's own MPI-1 entry points (the bounds of a type with
 * MPI_LB/MPI_UB markers are theirs), with the wrappers' handle translation. */
#define MANA_TYPE_BOUND(NAME, ID)                                                        \
    __attribute__((used)) static int mana_w_##NAME(MPI_Datatype t, MPI_Aint *out)         \
    {                                                                                    \
        int r;                                                                           \
        MPI_Datatype t_l = mana_h_real(t);                                               \
        MANA_FORWARD_INTO(r, ID, "P" #NAME, int, (MPI_Datatype, MPI_Aint *), (t_l, out)); \
        return r;                                                                        \
    }                                                                                    \
    MANA_EXPORT(mana_w_##NAME, NAME)                                                     \
    MANA_EXPORT(mana_w_##NAME, P##NAME)
MANA_TYPE_BOUND(MPI_Type_extent, 4473)
MANA_TYPE_BOUND(MPI_Type_lb, 4474)
MANA_TYPE_BOUND(MPI_Type_ub, 4475)

/* A new datatype from the lower half's `made` (or the error). */
static int new_type(int r, MPI_Datatype made, MPI_Datatype *new_type)
{
    if (r == MPI_SUCCESS && made)
        *new_type = mana_h_virtual(made);
    return r;
}

__attribute__((used)) static int mana_w_MPI_Type_hindexed(int count, int blocklengths[], MPI_Aint displacements[],
                                                          MPI_Datatype old, MPI_Datatype *new_type_)
{
    MPI_Datatype old_l = mana_h_real(old), made = 0;
    int r;
    MANA_FORWARD_INTO(r, 4476, "PMPI_Type_hindexed", int, (int, int *, MPI_Aint *, MPI_Datatype, MPI_Datatype *),
                      (count, blocklengths, displacements, old_l, &made));
    return new_type(r, made, new_type_);
}
MANA_EXPORT(mana_w_MPI_Type_hindexed, MPI_Type_hindexed)
MANA_EXPORT(mana_w_MPI_Type_hindexed, PMPI_Type_hindexed)

__attribute__((used)) static int mana_w_MPI_Type_hvector(int count, int blocklength, MPI_Aint stride, MPI_Datatype old,
                                                         MPI_Datatype *new_type_)
{
    MPI_Datatype old_l = mana_h_real(old), made = 0;
    int r;
    MANA_FORWARD_INTO(r, 4477, "PMPI_Type_hvector", int, (int, int, MPI_Aint, MPI_Datatype, MPI_Datatype *),
                      (count, blocklength, stride, old_l, &made));
    return new_type(r, made, new_type_);
}
MANA_EXPORT(mana_w_MPI_Type_hvector, MPI_Type_hvector)
MANA_EXPORT(mana_w_MPI_Type_hvector, PMPI_Type_hvector)

__attribute__((used)) static int mana_w_MPI_Type_struct(int count, int blocklengths[], MPI_Aint displacements[],
                                                        MPI_Datatype types[], MPI_Datatype *new_type_)
{
    if (count < 0)
        return PMPI_Type_create_struct(count, blocklengths, displacements, types, new_type_);
    MPI_Datatype *types_l = malloc((size_t)(count > 0 ? count : 1) * sizeof *types_l), made = 0;
    if (!types_l)
        return MPI_ERR_NO_MEM;
    for (int i = 0; i < count; i++)
        types_l[i] = mana_h_real(types[i]);
    int r;
    MANA_FORWARD_INTO(r, 4478, "PMPI_Type_struct", int, (int, int *, MPI_Aint *, MPI_Datatype *, MPI_Datatype *),
                      (count, blocklengths, displacements, types_l, &made));
    free(types_l);
    return new_type(r, made, new_type_);
}
MANA_EXPORT(mana_w_MPI_Type_struct, MPI_Type_struct)
MANA_EXPORT(mana_w_MPI_Type_struct, PMPI_Type_struct)
