! Fortran 2008 bindings (`use mpi_f08`): handles as derived types (TYPE(MPI_Comm),
! TYPE(MPI_Datatype), TYPE(MPI_Op), TYPE(MPI_Request), TYPE(MPI_Status)), as real modern
! Fortran codes use them: a datatype for a Fortran derived type (MPI_Get_address +
! MPI_Type_create_struct + MPI_Type_create_resized), a vector (a row of a column-major
! matrix) and an indexed type; sends and receives of them with wildcard receives whose
! TYPE(MPI_Status) fields (MPI_SOURCE, MPI_TAG, MPI_ERROR) and MPI_Get_count /
! MPI_Get_elements are checked; nonblocking requests (an Irecv of derived-type elements and
! an Isend) posted at the end of a round and completed in the next; and MPI_Allreduce of the
! derived type with a user op written in Fortran (MPI_Op_create with a subroutine taking
! TYPE(C_PTR) buffers). 2 or more ranks.
!
! `--loop N` (for checkpoint/restart at random instants): the datatypes, the op and the
! pending requests are held across N rounds, a 20 ms pause each while the requests are
! in flight; rank 0 prints "f08_types ready" and the final "f08_types done: ..." line.
! Plain run: 3 rounds, no pause, final line "f08_types: ...".
module f08_types_mod
  use mpi_f08
  use, intrinsic :: iso_c_binding
  implicit none
  type :: particle
    integer :: id
    real(kind=8) :: pos(3)
    character(len=4) :: tag
    logical :: alive
  end type particle
  integer :: bad = 0, nop = 0
  integer(kind=8) :: csum = 17
  type(MPI_Datatype) :: ptype
  ! Buffers of the requests that stay pending across the pause.
  type(particle), asynchronous, save :: inbox(3), outbox(3)
contains
  ! The user op: id and pos summed, the larger tag, alive if all are.
  subroutine combine(invec, inoutvec, len, datatype)
    type(c_ptr), value :: invec, inoutvec
    integer :: len
    type(MPI_Datatype) :: datatype
    type(particle), pointer :: a(:), b(:)
    integer :: i
    nop = nop + 1
    call c_f_pointer(invec, a, (/ len /))
    call c_f_pointer(inoutvec, b, (/ len /))
    do i = 1, len
      if (a(i)%tag > b(i)%tag) b(i)%tag = a(i)%tag
      b(i)%id = b(i)%id + a(i)%id
      b(i)%pos = b(i)%pos + a(i)%pos
      b(i)%alive = b(i)%alive .and. a(i)%alive
    end do
    if (datatype /= ptype) b(1)%id = -999999
  end subroutine combine

  subroutine check(ok, what)
    logical, intent(in) :: ok
    character(len=*), intent(in) :: what
    integer :: rank
    if (.not. ok) then
      bad = bad + 1
      if (bad == 1) then
        call MPI_Comm_rank(MPI_COMM_WORLD, rank)
        write (0, '(A,I0,A,A)') 'rank ', rank, ' first failure: ', what
      end if
    end if
  end subroutine check

  subroutine mix(v)
    integer(kind=8), intent(in) :: v
    integer(kind=8), parameter :: m = 2147483647_8
    csum = modulo(csum * 1000003_8 + modulo(v, m), m)
  end subroutine mix

  type(particle) function make(r, q, j)
    integer, intent(in) :: r, q, j
    make%id = r * 1000 + q * 10 + j
    make%pos = (/ real(r, 8), real(q, 8) * 0.5d0, real(j, 8) * 0.25d0 /)
    write (make%tag, '(A,I1,I1,I1)') 'p', mod(r, 10), mod(q, 10), mod(j, 10)
    make%alive = mod(r + q + j, 7) /= 6
  end function make

  logical function same(a, b)
    type(particle), intent(in) :: a, b
    same = a%id == b%id .and. all(a%pos == b%pos) .and. a%tag == b%tag .and. &
           (a%alive .eqv. b%alive)
  end function same

  subroutine mixp(p)
    type(particle), intent(in) :: p
    call mix(int(p%id, 8))
    call mix(int(p%pos(1) * 4 + p%pos(2) * 16 + p%pos(3) * 64, 8))
    call mix(int(ichar(p%tag(2:2)) + ichar(p%tag(4:4)) * 256, 8))
    if (p%alive) call mix(1_8)
  end subroutine mixp
end module f08_types_mod

program f08_types
  use mpi_f08
  use f08_types_mod
  use, intrinsic :: iso_c_binding
  implicit none
  interface
    integer(c_int) function usleep(us) bind(C, name='usleep')
      import :: c_int
      integer(c_int), value :: us
    end function usleep
  end interface
  integer :: rank, size, rounds, r, i, j, nargs, next, prev, cnt, ierr, dummy, tot_bad
  integer :: ni, na, nd, comb, tsize
  logical :: loop, pending
  character(len=32) :: arg
  type(particle) :: sample(2), ps(3), pr(3), red(3), want
  integer(kind=MPI_ADDRESS_KIND) :: addr(4), disp(4), base, ext, lb
  integer :: blocklens(4), iblk(3), idsp(3), counts(3), totals(3)
  type(MPI_Datatype) :: types(4), tmp, rowtype, idxtype
  type(MPI_Op) :: op
  type(MPI_Comm) :: comm
  type(MPI_Request) :: reqs(2)
  type(MPI_Status) :: st, sts(2)
  real :: mat(4, 5), row(5)
  integer :: ibuf(10), ibuf2(10)
  integer(kind=8) :: sums(64)

  call MPI_Init()
  call MPI_Comm_rank(MPI_COMM_WORLD, rank)
  call MPI_Comm_size(MPI_COMM_WORLD, size)
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
    if (rank == 0) write (0, '(A)') 'usage: f08_types [--loop N] (N >= 1, 2 to 64 ranks)'
    call MPI_Finalize()
    stop 2
  end if
  next = mod(rank + 1, size)
  prev = mod(rank + size - 1, size)
  call MPI_Comm_dup(MPI_COMM_WORLD, comm)

  ! The derived type's datatype, resized to the array stride.
  call MPI_Get_address(sample(1)%id, addr(1))
  call MPI_Get_address(sample(1)%pos, addr(2))
  call MPI_Get_address(sample(1)%tag, addr(3))
  call MPI_Get_address(sample(1)%alive, addr(4))
  call MPI_Get_address(sample(2), base)
  disp = addr - addr(1)
  ext = MPI_Aint_diff(base, addr(1))
  blocklens = (/ 1, 3, 4, 1 /)
  types = (/ MPI_INTEGER, MPI_DOUBLE_PRECISION, MPI_CHARACTER, MPI_LOGICAL /)
  call MPI_Type_create_struct(4, blocklens, disp, types, tmp)
  call MPI_Type_create_resized(tmp, 0_MPI_ADDRESS_KIND, ext, ptype)
  call MPI_Type_free(tmp)
  call MPI_Type_commit(ptype)
  call MPI_Type_size(ptype, tsize)
  call check(tsize == 4 + 24 + 4 + 4, 'particle type size')
  call MPI_Type_get_extent(ptype, lb, ext)
  call check(lb == 0 .and. ext == storage_size(sample(1)) / 8, 'particle type extent')

  ! A row of the column-major 4x5 matrix, and an indexed type.
  call MPI_Type_vector(5, 1, 4, MPI_REAL, rowtype)
  call MPI_Type_commit(rowtype)
  iblk = (/ 2, 1, 3 /)
  idsp = (/ 0, 3, 6 /)
  call MPI_Type_indexed(3, iblk, idsp, MPI_INTEGER, idxtype)
  call MPI_Type_commit(idxtype)
  call MPI_Type_get_envelope(idxtype, ni, na, nd, comb)
  call check(comb == MPI_COMBINER_INDEXED .and. ni == 7 .and. nd == 1, 'indexed envelope')

  call MPI_Op_create(combine, .true., op)

  if (loop .and. rank == 0) then
    write (*, '(A)') 'f08_types ready'
    flush (6)
  end if

  pending = .false.
  do r = 0, rounds - 1
    ! Complete what the last round left in flight.
    if (pending) then
      call MPI_Waitall(2, reqs, sts)
      call check(reqs(1) == MPI_REQUEST_NULL .and. reqs(2) == MPI_REQUEST_NULL, &
                 'requests completed')
      call check(sts(1)%MPI_SOURCE == prev .and. sts(1)%MPI_TAG == 200 + r - 1, &
                 'pending receive status')
      call MPI_Get_count(sts(1), ptype, cnt)
      call check(cnt == 3, 'pending receive count')
      do j = 1, 3
        call check(same(inbox(j), make(r - 1, prev, j)), 'pending receive data')
        call mixp(inbox(j))
      end do
      pending = .false.
    end if

    ! Derived-type send and wildcard receive: the status fields.
    do j = 1, 3
      ps(j) = make(r, rank, j)
    end do
    st%MPI_ERROR = 4242
    if (mod(rank, 2) == 0) then
      call MPI_Send(ps, 3, ptype, next, 100 + r, comm)
      call MPI_Recv(pr, 3, ptype, MPI_ANY_SOURCE, MPI_ANY_TAG, comm, st)
    else
      call MPI_Recv(pr, 3, ptype, MPI_ANY_SOURCE, MPI_ANY_TAG, comm, st)
      call MPI_Send(ps, 3, ptype, next, 100 + r, comm)
    end if
    call check(st%MPI_SOURCE == prev, 'status MPI_SOURCE')
    call check(st%MPI_TAG == 100 + r, 'status MPI_TAG')
    call check(st%MPI_ERROR == 4242 .or. st%MPI_ERROR == MPI_SUCCESS, 'status MPI_ERROR')
    call MPI_Get_count(st, ptype, cnt)
    call check(cnt == 3, 'MPI_Get_count (particle)')
    call MPI_Get_elements(st, ptype, cnt)
    call check(cnt == 3 * 9, 'MPI_Get_elements (particle)') ! 1 + 3 + 4 + 1 basic elements each
    do j = 1, 3
      call check(same(pr(j), make(r, prev, j)), 'particle data')
      call mixp(pr(j))
    end do

    ! The user op on the derived type.
    call MPI_Allreduce(ps, red, 3, ptype, op, comm)
    do j = 1, 3
      want = make(r, 0, j)
      do i = 1, size - 1
        ps(j) = make(r, i, j)
        want%tag = ps(j)%tag
        want%id = want%id + ps(j)%id
        want%pos = want%pos + ps(j)%pos
        want%alive = want%alive .and. ps(j)%alive
      end do
      call check(same(red(j), want), 'user op allreduce')
      call mixp(red(j))
    end do

    ! A matrix row (vector type) sent into a contiguous receive.
    do j = 1, 5
      do i = 1, 4
        mat(i, j) = real(r * 100 + rank * 20 + i * 5 + j)
      end do
    end do
    i = mod(r, 4) + 1
    call MPI_Sendrecv(mat(i, 1), 1, rowtype, next, 300, row, 5, MPI_REAL, prev, 300, comm, st)
    call MPI_Get_count(st, MPI_REAL, cnt)
    call check(cnt == 5 .and. st%MPI_SOURCE == prev .and. st%MPI_TAG == 300, 'row status')
    do j = 1, 5
      call check(row(j) == real(r * 100 + prev * 20 + i * 5 + j), 'row data')
      call mix(int(row(j), 8))
    end do

    ! An indexed type broadcast from a rotating root.
    ibuf = -1
    if (rank == mod(r, size)) ibuf = (/ (r * 10 + i, i = 1, 10) /)
    call MPI_Bcast(ibuf, 1, idxtype, mod(r, size), comm)
    ibuf2 = -1
    do i = 1, 3
      do j = 1, iblk(i)
        ibuf2(idsp(i) + j) = r * 10 + idsp(i) + j
      end do
    end do
    if (rank == mod(r, size)) ibuf2 = (/ (r * 10 + i, i = 1, 10) /)
    call check(all(ibuf == ibuf2), 'indexed bcast')
    call mix(int(sum(ibuf), 8))

    ! Requests left in flight over the pause: an Irecv of particles and an Isend.
    do j = 1, 3
      outbox(j) = make(r, rank, j)
    end do
    call MPI_Irecv(inbox, 3, ptype, prev, 200 + r, comm, reqs(1))
    call MPI_Isend(outbox, 3, ptype, next, 200 + r, comm, reqs(2))
    pending = .true.
    if (loop) dummy = usleep(20000_c_int)
  end do
  if (pending) then
    call MPI_Waitall(2, reqs, sts)
    do j = 1, 3
      call check(same(inbox(j), make(rounds - 1, prev, j)), 'last pending data')
      call mixp(inbox(j))
    end do
  end if

  call MPI_Op_free(op)
  call check(op == MPI_OP_NULL, 'op freed')
  call MPI_Type_free(idxtype)
  call MPI_Type_free(rowtype)
  call MPI_Type_free(ptype)
  call MPI_Comm_free(comm)
  counts = (/ min(nop, 1), bad, 0 /)
  call MPI_Allreduce(counts, totals, 3, MPI_INTEGER, MPI_SUM, MPI_COMM_WORLD)
  tot_bad = totals(2)
  call MPI_Gather(csum, 1, MPI_INTEGER8, sums, 1, MPI_INTEGER8, 0, MPI_COMM_WORLD)
  if (rank == 0) then
    csum = 17
    do i = 1, size
      call mix(sums(i))
    end do
    if (loop) then
      write (*, '(A)', advance='no') 'f08_types done: '
    else
      write (*, '(A)', advance='no') 'f08_types: '
    end if
    write (*, '(I0,A,I0,A,I0)') csum, ' ranks calling the op ', totals(1), &
      ' failed checks: ', tot_bad
  end if
  call MPI_Finalize()
  if (tot_bad /= 0) stop 1
end program f08_types
