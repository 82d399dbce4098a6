! A Fortran ring (mpif90.mpich: the program links libmpichfort.so.12, which links
! libmpich.so.12): send/recv around the ring, an allreduce, and the predefined attribute
! MPI_TAG_UB read through the binding's MPII_Comm_get_attr.
program f_ring
  use mpi
  implicit none
  integer :: ierr, rank, nranks, token, i, total, st(MPI_STATUS_SIZE)
  integer(kind=MPI_ADDRESS_KIND) :: tagub
  logical :: flag
  call MPI_Init(ierr)
  call MPI_Comm_rank(MPI_COMM_WORLD, rank, ierr)
  call MPI_Comm_size(MPI_COMM_WORLD, nranks, ierr)
  token = 0
  do i = 1, 3
    if (rank == 0) then
      call MPI_Send(token, 1, MPI_INTEGER, mod(rank + 1, nranks), 0, MPI_COMM_WORLD, ierr)
      call MPI_Recv(token, 1, MPI_INTEGER, nranks - 1, 0, MPI_COMM_WORLD, st, ierr)
    else
      call MPI_Recv(token, 1, MPI_INTEGER, rank - 1, 0, MPI_COMM_WORLD, st, ierr)
      token = token + rank
      call MPI_Send(token, 1, MPI_INTEGER, mod(rank + 1, nranks), 0, MPI_COMM_WORLD, ierr)
    end if
  end do
  call MPI_Allreduce(rank, total, 1, MPI_INTEGER, MPI_SUM, MPI_COMM_WORLD, ierr)
  call MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, tagub, flag, ierr)
  if (rank == 0) write (*, '(a,i0,a,i0,a,l1)') 'f_ring done: token ', token, ' sum ', total, &
       ' tag_ub ok ', flag .and. tagub >= 32767
  call MPI_Finalize(ierr)
end program f_ring
