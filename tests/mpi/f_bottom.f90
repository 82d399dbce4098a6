! MPI_BOTTOM with absolute-address datatypes, as old Fortran codes do it (`use mpi`):
! MPI_Get_address of separate module variables and MPI_Type_create_struct with their
! absolute addresses as displacements, then sends and receives of MPI_BOTTOM (MPICH's
! Fortran binding recognises its MPI_BOTTOM common block and passes C's MPI_BOTTOM):
! MPI_Sendrecv, MPI_Sendrecv_replace on MPI_BOTTOM and on an array, a nonblocking
! MPI_Irecv/MPI_Isend pair on MPI_BOTTOM posted at the end of a round and completed in the
! next, persistent requests (MPI_Send_init/MPI_Recv_init on MPI_BOTTOM) started every
! round, and MPI_IN_PLACE in MPI_Allreduce and MPI_Reduce. 2 or more ranks.
!
! `--loop N` (for checkpoint/restart at random instants): the datatypes, the persistent
! requests and the pending MPI_BOTTOM requests are held across N rounds, a 20 ms pause each
! while the nonblocking pair is in flight; rank 0 prints "f_bottom ready" and the final
! "f_bottom done: ..." line. Plain run: 3 rounds, no pause, final line "f_bottom: ...".
module f_bottom_mod
  use mpi
  implicit none
  ! Every buffer reached through MPI_BOTTOM: volatile, so the compiler neither caches nor
  ! reorders them around the MPI calls that read or write them behind its back.
  integer, volatile, save :: s_i, r_i, s_k(4), r_k(4)
  real(kind=8), volatile, save :: s_x(3), r_x(3)
  integer, volatile, save :: pend_in_i, pend_out_i
  real(kind=8), volatile, save :: pend_in_x(2), pend_out_x(2)
  integer, volatile, save :: ps_a, pr_a, ps_b(2), pr_b(2)
  integer :: bad = 0
  integer(kind=8) :: csum = 17
contains
  subroutine check(ok, what)
    logical, intent(in) :: ok
    character(len=*), intent(in) :: what
    integer :: rank, ierr
    if (.not. ok) then
      bad = bad + 1
      if (bad == 1) then
        call MPI_Comm_rank(MPI_COMM_WORLD, rank, ierr)
        write (0, '(A,I0,A,A)') 'rank ', rank, ' first failure: ', what
      end if
    end if
  end subroutine check

  subroutine mix(v)
    integer(kind=8), intent(in) :: v
    integer(kind=8), parameter :: m = 2147483647_8
    csum = modulo(csum * 1000003_8 + modulo(v, m), m)
  end subroutine mix

  ! A struct datatype of absolute addresses (to be used with MPI_BOTTOM).
  subroutine absolute(n, blocks, addrs, types, newtype)
    integer, intent(in) :: n, blocks(n), types(n)
    integer(kind=MPI_ADDRESS_KIND), intent(in) :: addrs(n)
    integer, intent(out) :: newtype
    integer :: ierr
    call MPI_Type_create_struct(n, blocks, addrs, types, newtype, ierr)
    call MPI_Type_commit(newtype, ierr)
  end subroutine absolute
end module f_bottom_mod

program f_bottom
  use mpi
  use f_bottom_mod
  use, intrinsic :: iso_c_binding, only: c_int
  implicit none
  interface
    integer(c_int) function usleep(us) bind(C, name='usleep')
      import :: c_int
      integer(c_int), value :: us
    end function usleep
  end interface
  integer :: ierr, rank, size, rounds, r, i, nargs, next, prev, dummy, tot_bad, cnt
  logical :: loop, pending
  character(len=32) :: arg
  integer :: stype, rtype, pin_type, pout_type, ps_type, pr_type
  integer :: reqs(2), preqs(2), st(MPI_STATUS_SIZE), sts(MPI_STATUS_SIZE, 2)
  integer(kind=MPI_ADDRESS_KIND) :: a3(3), a2(2)
  integer :: arr(6), want(6), red(5), counts(2), totals(2)
  integer(kind=8) :: sums(64)

  call MPI_Init(ierr)
  call MPI_Comm_rank(MPI_COMM_WORLD, rank, ierr)
  call MPI_Comm_size(MPI_COMM_WORLD, size, ierr)
  rounds = 3
  loop = .false.
  nargs = command_argument_count()
  if (nargs >= 1) then
    call get_command_argument(1, arg)
    if (trim(arg) == '--loop' .and. nargs >= 2) then
      call get_command_argument(2, arg)
      read (arg, *, iostat=ierr) rounds
      if (ierr /= 0) rounds = 0
      loop = .true.
    else
      rounds = 0
    end if
  end if
  if (rounds < 1 .or. size < 2 .or. size > 64) then
    if (rank == 0) write (0, '(A)') 'usage: f_bottom [--loop N] (N >= 1, 2 to 64 ranks)'
    call MPI_Finalize(ierr)
    stop 2
  end if
  next = mod(rank + 1, size)
  prev = mod(rank + size - 1, size)

  ! Absolute-address types: an integer, three doubles and two of four integers (2 and 3).
  call MPI_Get_address(s_i, a3(1), ierr)
  call MPI_Get_address(s_x, a3(2), ierr)
  call MPI_Get_address(s_k(2), a3(3), ierr)
  call absolute(3, (/ 1, 3, 2 /), a3, (/ MPI_INTEGER, MPI_DOUBLE_PRECISION, MPI_INTEGER /), &
                stype)
  call MPI_Get_address(r_i, a3(1), ierr)
  call MPI_Get_address(r_x, a3(2), ierr)
  call MPI_Get_address(r_k(2), a3(3), ierr)
  call absolute(3, (/ 1, 3, 2 /), a3, (/ MPI_INTEGER, MPI_DOUBLE_PRECISION, MPI_INTEGER /), &
                rtype)
  call MPI_Get_address(pend_in_i, a2(1), ierr)
  call MPI_Get_address(pend_in_x, a2(2), ierr)
  call absolute(2, (/ 1, 2 /), a2, (/ MPI_INTEGER, MPI_DOUBLE_PRECISION /), pin_type)
  call MPI_Get_address(pend_out_i, a2(1), ierr)
  call MPI_Get_address(pend_out_x, a2(2), ierr)
  call absolute(2, (/ 1, 2 /), a2, (/ MPI_INTEGER, MPI_DOUBLE_PRECISION /), pout_type)
  call MPI_Get_address(ps_a, a2(1), ierr)
  call MPI_Get_address(ps_b, a2(2), ierr)
  call absolute(2, (/ 1, 2 /), a2, (/ MPI_INTEGER, MPI_INTEGER /), ps_type)
  call MPI_Get_address(pr_a, a2(1), ierr)
  call MPI_Get_address(pr_b, a2(2), ierr)
  call absolute(2, (/ 1, 2 /), a2, (/ MPI_INTEGER, MPI_INTEGER /), pr_type)

  ! Persistent requests on MPI_BOTTOM, started every round.
  call MPI_Send_init(MPI_BOTTOM, 1, ps_type, next, 50, MPI_COMM_WORLD, preqs(1), ierr)
  call MPI_Recv_init(MPI_BOTTOM, 1, pr_type, prev, 50, MPI_COMM_WORLD, preqs(2), ierr)

  if (loop .and. rank == 0) then
    write (*, '(A)') 'f_bottom ready'
    flush (6)
  end if

  pending = .false.
  do r = 0, rounds - 1
    ! The MPI_BOTTOM pair the last round left in flight.
    if (pending) then
      call MPI_Waitall(2, reqs, sts, ierr)
      call check(sts(MPI_SOURCE, 1) == prev .and. sts(MPI_TAG, 1) == 60 + mod(r - 1, 7), &
                 'pending status')
      call MPI_Get_count(sts(1, 1), pin_type, cnt, ierr)
      call check(cnt == 1, 'pending count')
      call check(pend_in_i == (r - 1) * 100 + prev .and. pend_in_x(1) == real(r - 1, 8) &
                 .and. pend_in_x(2) == real(prev, 8) * 0.5d0, 'pending data')
      call mix(int(pend_in_i, 8))
      call mix(int(pend_in_x(1) * 4 + pend_in_x(2) * 2, 8))
      pending = .false.
    end if

    ! MPI_Sendrecv between MPI_BOTTOM structs.
    s_i = r * 10 + rank
    s_x = (/ real(r, 8), real(rank, 8), 0.125d0 * r /)
    s_k = (/ -1, r + rank, r - rank, -4 /)
    r_i = -9
    r_x = -9d0
    r_k = -9
    call MPI_Sendrecv(MPI_BOTTOM, 1, stype, next, 7, MPI_BOTTOM, 1, rtype, prev, 7, &
                      MPI_COMM_WORLD, st, ierr)
    call MPI_Get_count(st, rtype, cnt, ierr)
    call check(cnt == 1 .and. st(MPI_SOURCE) == prev, 'bottom sendrecv status')
    call check(r_i == r * 10 + prev .and. r_x(1) == real(r, 8) .and. &
               r_x(2) == real(prev, 8) .and. r_x(3) == 0.125d0 * r, 'bottom sendrecv scalars')
    call check(r_k(1) == -9 .and. r_k(2) == r + prev .and. r_k(3) == r - prev .and. &
               r_k(4) == -9, 'bottom sendrecv array part')
    call mix(int(r_i, 8))
    call mix(int(r_k(2) * 1000 + r_k(3), 8))

    ! MPI_Sendrecv_replace in place on MPI_BOTTOM (r_* travels one more step)...
    call MPI_Sendrecv_replace(MPI_BOTTOM, 1, rtype, next, 8, prev, 8, MPI_COMM_WORLD, st, &
                              ierr)
    i = mod(prev + size - 1, size)
    call check(r_i == r * 10 + i .and. r_x(2) == real(i, 8) .and. r_k(2) == r + i, &
               'bottom sendrecv_replace')
    call mix(int(r_i, 8))
    ! ... and on an ordinary array.
    arr = (/ (rank * 100 + r + i, i = 1, 6) /)
    call MPI_Sendrecv_replace(arr, 6, MPI_INTEGER, prev, 9, next, 9, MPI_COMM_WORLD, st, ierr)
    want = (/ (next * 100 + r + i, i = 1, 6) /)
    call check(all(arr == want) .and. st(MPI_SOURCE) == next .and. st(MPI_TAG) == 9, &
               'array sendrecv_replace')
    call mix(int(sum(arr), 8))

    ! MPI_IN_PLACE.
    red = (/ (rank + r * i, i = 1, 5) /)
    call MPI_Allreduce(MPI_IN_PLACE, red, 5, MPI_INTEGER, MPI_SUM, MPI_COMM_WORLD, ierr)
    do i = 1, 5
      call check(red(i) == size * (size - 1) / 2 + size * r * i, 'in-place allreduce')
    end do
    call mix(int(sum(red), 8))
    red = (/ (rank * i + r, i = 1, 5) /)
    if (rank == mod(r, size)) then
      call MPI_Reduce(MPI_IN_PLACE, red, 5, MPI_INTEGER, MPI_MAX, mod(r, size), &
                      MPI_COMM_WORLD, ierr)
      do i = 1, 5
        call check(red(i) == (size - 1) * i + r, 'in-place reduce')
      end do
      call mix(int(sum(red), 8))
    else
      call MPI_Reduce(red, arr, 5, MPI_INTEGER, MPI_MAX, mod(r, size), MPI_COMM_WORLD, ierr)
    end if

    ! The persistent pair on MPI_BOTTOM.
    ps_a = r + 1000 * rank
    ps_b = (/ r * 2, rank * 3 /)
    pr_a = -1
    pr_b = -1
    call MPI_Startall(2, preqs, ierr)
    call MPI_Waitall(2, preqs, sts, ierr)
    call check(pr_a == r + 1000 * prev .and. pr_b(1) == r * 2 .and. pr_b(2) == prev * 3, &
               'persistent bottom data')
    call check(sts(MPI_SOURCE, 2) == prev .and. sts(MPI_TAG, 2) == 50, 'persistent status')
    call mix(int(pr_a + pr_b(2), 8))

    ! An MPI_BOTTOM pair left in flight over the pause.
    pend_out_i = r * 100 + rank
    pend_out_x = (/ real(r, 8), real(rank, 8) * 0.5d0 /)
    pend_in_i = -1
    pend_in_x = -1d0
    call MPI_Irecv(MPI_BOTTOM, 1, pin_type, prev, 60 + mod(r, 7), MPI_COMM_WORLD, reqs(1), &
                   ierr)
    call MPI_Isend(MPI_BOTTOM, 1, pout_type, next, 60 + mod(r, 7), MPI_COMM_WORLD, reqs(2), &
                   ierr)
    pending = .true.
    if (loop) dummy = usleep(20000_c_int)
  end do
  if (pending) then
    call MPI_Waitall(2, reqs, sts, ierr)
    call check(pend_in_i == (rounds - 1) * 100 + prev, 'last pending data')
    call mix(int(pend_in_i, 8))
  end if

  call MPI_Request_free(preqs(1), ierr)
  call MPI_Request_free(preqs(2), ierr)
  call MPI_Type_free(stype, ierr)
  call MPI_Type_free(rtype, ierr)
  call MPI_Type_free(pin_type, ierr)
  call MPI_Type_free(pout_type, ierr)
  call MPI_Type_free(ps_type, ierr)
  call MPI_Type_free(pr_type, ierr)
  counts = (/ bad, 0 /)
  call MPI_Allreduce(counts, totals, 2, MPI_INTEGER, MPI_SUM, MPI_COMM_WORLD, ierr)
  tot_bad = totals(1)
  call MPI_Gather(csum, 1, MPI_INTEGER8, sums, 1, MPI_INTEGER8, 0, MPI_COMM_WORLD, ierr)
  if (rank == 0) then
    csum = 17
    do i = 1, size
      call mix(sums(i))
    end do
    if (loop) then
      write (*, '(A)', advance='no') 'f_bottom done: '
    else
      write (*, '(A)', advance='no') 'f_bottom: '
    end if
    write (*, '(I0,A,I0)') csum, ' failed checks: ', tot_bad
  end if
  call MPI_Finalize(ierr)
  if (tot_bad /= 0) stop 1
end program f_bottom
