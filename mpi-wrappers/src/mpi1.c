/* MPI-1 functions that MPI-3.0 removed and MPICH 4.0.2 still exports (old codes and
 * MPICH's own *_oldapi tests call them): each is its MPI-2 successor, called through this
 * library's own export so that handles, the checkpoint's records and the restart treat
 * the result like any other. */
#include "mana_wrap.h"

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

/* MPI_Type_extent, _lb, _ub: the bounds MPI_Type_get_extent gives. */
__attribute__((used)) static int mana_w_MPI_Type_extent(MPI_Datatype t, MPI_Aint *extent)
{
    MPI_Aint lb;
    return PMPI_Type_get_extent(t, &lb, extent);
}
MANA_EXPORT(mana_w_MPI_Type_extent, MPI_Type_extent)
MANA_EXPORT(mana_w_MPI_Type_extent, PMPI_Type_extent)

__attribute__((used)) static int mana_w_MPI_Type_lb(MPI_Datatype t, MPI_Aint *lb)
{
    MPI_Aint extent;
    return PMPI_Type_get_extent(t, lb, &extent);
}
MANA_EXPORT(mana_w_MPI_Type_lb, MPI_Type_lb)
MANA_EXPORT(mana_w_MPI_Type_lb, PMPI_Type_lb)

__attribute__((used)) static int mana_w_MPI_Type_ub(MPI_Datatype t, MPI_Aint *ub)
{
    MPI_Aint lb, extent;
    int r = PMPI_Type_get_extent(t, &lb, &extent);
    if (r == MPI_SUCCESS)
        *ub = lb + extent;
    return r;
}
MANA_EXPORT(mana_w_MPI_Type_ub, MPI_Type_ub)
MANA_EXPORT(mana_w_MPI_Type_ub, PMPI_Type_ub)

__attribute__((used)) static int mana_w_MPI_Type_hindexed(int count, int blocklengths[], MPI_Aint displacements[],
                                                          MPI_Datatype old, MPI_Datatype *new_type)
{
    return PMPI_Type_create_hindexed(count, blocklengths, displacements, old, new_type);
}
MANA_EXPORT(mana_w_MPI_Type_hindexed, MPI_Type_hindexed)
MANA_EXPORT(mana_w_MPI_Type_hindexed, PMPI_Type_hindexed)

__attribute__((used)) static int mana_w_MPI_Type_hvector(int count, int blocklength, MPI_Aint stride, MPI_Datatype old,
                                                         MPI_Datatype *new_type)
{
    return PMPI_Type_create_hvector(count, blocklength, stride, old, new_type);
}
MANA_EXPORT(mana_w_MPI_Type_hvector, MPI_Type_hvector)
MANA_EXPORT(mana_w_MPI_Type_hvector, PMPI_Type_hvector)

__attribute__((used)) static int mana_w_MPI_Type_struct(int count, int blocklengths[], MPI_Aint displacements[],
                                                        MPI_Datatype types[], MPI_Datatype *new_type)
{
    return PMPI_Type_create_struct(count, blocklengths, displacements, types, new_type);
}
MANA_EXPORT(mana_w_MPI_Type_struct, MPI_Type_struct)
MANA_EXPORT(mana_w_MPI_Type_struct, PMPI_Type_struct)
