! Fortran (`use mpi`) attribute caching with Fortran callbacks, as real Fortran codes do it:
! MPI_Comm_create_keyval / MPI_Type_create_keyval / MPI_Win_create_keyval with Fortran copy
! and delete subroutines (INTEGER(MPI_ADDRESS_KIND) values, an extra_state the copy adds in)
! and the MPI-1 MPI_KEYVAL_CREATE with INTEGER values, next to MPI_COMM_DUP_FN and the NULL
! functions; attributes on MPI_COMM_WORLD, on duplicates (MPI_Comm_dup calls the copy
! callbacks, MPI_Comm_free the delete ones), on a datatype (MPI_Type_dup / MPI_Type_free),
! on the predefined MPI_INTEGER and on windows (MPI_Win_free); the predefined MPI_TAG_UB,
! MPI_APPNUM and MPI_WTIME_IS_GLOBAL; and integer handles (a communicator, a datatype, a
! Fortran user op, a group, persistent requests, a window) kept across rounds and still
! working. 2 or more ranks.
!
! `--loop N` (for checkpoint/restart at random instants): all of that is held across N
! rounds (20 ms pause each), one duplicate communicator is "rolling" (made in a round, freed
! in the next); rank 0 prints "f_attrs ready" and the final "f_attrs done: ..." line with
! the callbacks' call counts. Plain run: 3 rounds, no pause, final line "f_attrs: ...".
module f_attrs_cb
  use mpi
  implicit none
  integer :: ncopy = 0, ndel = 0, ntcopy = 0, ntdel = 0, nwdel = 0, nocopy = 0, nodel = 0
  integer :: nop = 0
  integer(kind=MPI_ADDRESS_KIND) :: seen = 0
  integer :: copied_from = -1, deleted_from = -1, type_seen = -1, win_seen = -1
  ! Buffers of the persistent requests and of the window: fixed addresses for the run.
  integer, save :: psend(2), precv(2), wbuf(4)
  integer :: bad = 0
  integer(kind=8) :: csum = 17
contains
  subroutine comm_copy(oldcomm, keyval, extra, vin, vout, flag, ierr)
    integer :: oldcomm, keyval, ierr
    integer(kind=MPI_ADDRESS_KIND) :: extra, vin, vout
    logical :: flag
    ncopy = ncopy + 1
    copied_from = oldcomm
    seen = seen + vin
    vout = vin * 10 + extra
    flag = .true.
    ierr = MPI_SUCCESS
    if (keyval == MPI_KEYVAL_INVALID) ierr = MPI_ERR_OTHER
  end subroutine comm_copy

  subroutine comm_delete(comm, keyval, val, extra, ierr)
    integer :: comm, keyval, ierr
    integer(kind=MPI_ADDRESS_KIND) :: val, extra
    ndel = ndel + 1
    deleted_from = comm
    seen = seen + val + extra
    ierr = MPI_SUCCESS
    if (keyval == MPI_KEYVAL_INVALID) ierr = MPI_ERR_OTHER
  end subroutine comm_delete

  subroutine type_copy(oldtype, keyval, extra, vin, vout, flag, ierr)
    integer :: oldtype, keyval, ierr
    integer(kind=MPI_ADDRESS_KIND) :: extra, vin, vout
    logical :: flag
    ntcopy = ntcopy + 1
    type_seen = oldtype
    seen = seen + vin
    vout = vin + 1000 + extra
    flag = .true.
    ierr = MPI_SUCCESS
    if (keyval == MPI_KEYVAL_INVALID) ierr = MPI_ERR_OTHER
  end subroutine type_copy

  subroutine type_delete(dtype, keyval, val, extra, ierr)
    integer :: dtype, keyval, ierr
    integer(kind=MPI_ADDRESS_KIND) :: val, extra
    ntdel = ntdel + 1
    type_seen = dtype
    seen = seen + val + extra
    ierr = MPI_SUCCESS
    if (keyval == MPI_KEYVAL_INVALID) ierr = MPI_ERR_OTHER
  end subroutine type_delete

  subroutine win_delete(win, keyval, val, extra, ierr)
    integer :: win, keyval, ierr
    integer(kind=MPI_ADDRESS_KIND) :: val, extra
    nwdel = nwdel + 1
    win_seen = win
    seen = seen + val + extra
    ierr = MPI_SUCCESS
    if (keyval == MPI_KEYVAL_INVALID) ierr = MPI_ERR_OTHER
  end subroutine win_delete

  ! MPI-1 callbacks: INTEGER attribute values.
  subroutine old_copy(oldcomm, keyval, extra, vin, vout, flag, ierr)
    integer :: oldcomm, keyval, extra, vin, vout, ierr
    logical :: flag
    nocopy = nocopy + 1
    seen = seen + vin
    vout = vin * 10 + extra
    flag = .true.
    ierr = MPI_SUCCESS
    if (keyval == MPI_KEYVAL_INVALID .or. oldcomm == MPI_COMM_NULL) ierr = MPI_ERR_OTHER
  end subroutine old_copy

  subroutine old_delete(comm, keyval, val, extra, ierr)
    integer :: comm, keyval, val, extra, ierr
    nodel = nodel + 1
    seen = seen + val + extra
    ierr = MPI_SUCCESS
    if (keyval == MPI_KEYVAL_INVALID .or. comm == MPI_COMM_NULL) ierr = MPI_ERR_OTHER
  end subroutine old_delete

  ! A Fortran user reduction: a sum that counts its calls.
  subroutine fsum(invec, inoutvec, len, dtype)
    integer :: len, dtype
    integer :: invec(len), inoutvec(len)
    integer :: i
    nop = nop + 1
    do i = 1, len
      inoutvec(i) = inoutvec(i) + invec(i)
    end do
    if (dtype /= MPI_INTEGER) inoutvec(1) = -999999
  end subroutine fsum

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

  ! Order-sensitive mixing modulo 2^31-1.
  subroutine mix(v)
    integer(kind=8), intent(in) :: v
    integer(kind=8), parameter :: m = 2147483647_8
    csum = modulo(csum * 1000003_8 + modulo(v, m), m)
  end subroutine mix

  integer(kind=MPI_ADDRESS_KIND) function cattr(comm, kv)
    integer, intent(in) :: comm, kv
    logical :: flag
    integer :: ierr
    call MPI_Comm_get_attr(comm, kv, cattr, flag, ierr)
    if (.not. flag) cattr = -1
  end function cattr

  integer(kind=MPI_ADDRESS_KIND) function tattr(dtype, kv)
    integer, intent(in) :: dtype, kv
    logical :: flag
    integer :: ierr
    call MPI_Type_get_attr(dtype, kv, tattr, flag, ierr)
    if (.not. flag) tattr = -1
  end function tattr

  integer(kind=MPI_ADDRESS_KIND) function wattr(win, kv)
    integer, intent(in) :: win, kv
    logical :: flag
    integer :: ierr
    call MPI_Win_get_attr(win, kv, wattr, flag, ierr)
    if (.not. flag) wattr = -1
  end function wattr
end module f_attrs_cb

program f_attrs
  use mpi
  use f_attrs_cb
  use, intrinsic :: iso_c_binding, only: c_int
  implicit none
  interface
    integer(c_int) function usleep(us) bind(C, name='usleep')
      import :: c_int
      integer(c_int), value :: us
    end function usleep
  end interface
  integer :: ierr, rank, size, rounds, r, i, nargs, next, prev, res
  logical :: loop, flag
  character(len=32) :: arg
  integer(kind=MPI_ADDRESS_KIND) :: tag_ub, appnum, wtime_global, user, worldv, dupv, tval, pval
  integer(kind=MPI_ADDRESS_KIND) :: wval, roll_user, wsize, extra3, extra7, extra11, v
  integer :: kv_c, kv_dup, kv_null, kv_old, kv_t, kv_w, kv_tmp, extra5, oldv
  integer :: c1, c2, wc, croll, t1, t2, op, group, wgroup, win, w2, gone, reqs(2), tsize
  integer :: s, mine, pair(4), got(4), wput, local(2), ranks1(1), ranks2(1)
  integer :: stats(MPI_STATUS_SIZE, 2), dummy, counts(9), totals(9), tot_bad
  integer(kind=8) :: sums(64)
  logical :: commute
  integer(kind=MPI_ADDRESS_KIND) :: lb, ext

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
    if (rank == 0) write (0, '(A)') 'usage: f_attrs [--loop N] (N >= 1, 2 to 64 ranks)'
    call MPI_Finalize(ierr)
    stop 2
  end if
  next = mod(rank + 1, size)
  prev = mod(rank + size - 1, size)

  ! Predefined attributes: Fortran gets the value itself.
  call MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, tag_ub, flag, ierr)
  call check(flag .and. tag_ub >= 32767, 'MPI_TAG_UB')
  call MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_APPNUM, appnum, flag, ierr)
  if (.not. flag) appnum = -1
  call MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_WTIME_IS_GLOBAL, wtime_global, flag, ierr)
  if (.not. flag) wtime_global = -1
  call check(wtime_global == -1 .or. wtime_global == 0 .or. wtime_global == 1, &
             'MPI_WTIME_IS_GLOBAL')
  if (rank == 0) write (*, '(A,I0,A,I0,A,I0)') 'f_attrs predefined: tag_ub ', tag_ub, &
    ' appnum ', appnum, ' wtime_is_global ', wtime_global

  ! Keyvals of every kind, each with a distinct extra_state.
  extra3 = 3
  extra5 = 5
  extra7 = 7
  extra11 = 11
  call MPI_Comm_create_keyval(comm_copy, comm_delete, kv_c, extra3, ierr)
  call MPI_Comm_create_keyval(MPI_COMM_DUP_FN, MPI_COMM_NULL_DELETE_FN, kv_dup, extra3, ierr)
  call MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, MPI_COMM_NULL_DELETE_FN, kv_null, &
                              extra3, ierr)
  call MPI_Keyval_create(old_copy, old_delete, kv_old, extra5, ierr)
  call MPI_Type_create_keyval(type_copy, type_delete, kv_t, extra7, ierr)
  call MPI_Win_create_keyval(MPI_WIN_NULL_COPY_FN, win_delete, kv_w, extra11, ierr)

  call MPI_Comm_dup(MPI_COMM_WORLD, c1, ierr)
  user = 7
  worldv = 1
  dupv = 11
  call MPI_Comm_set_attr(c1, kv_c, user, ierr)
  call MPI_Comm_set_attr(MPI_COMM_WORLD, kv_c, worldv, ierr)
  call MPI_Comm_set_attr(c1, kv_dup, dupv, ierr)
  call MPI_Comm_set_attr(c1, kv_null, 13_MPI_ADDRESS_KIND, ierr)
  call MPI_Attr_put(c1, kv_old, 3, ierr)

  call MPI_Type_vector(2, 1, 2, MPI_INTEGER, t1, ierr)
  call MPI_Type_commit(t1, ierr)
  tval = 5
  call MPI_Type_set_attr(t1, kv_t, tval, ierr)
  pval = 21
  call MPI_Type_set_attr(MPI_INTEGER, kv_t, pval, ierr)

  call MPI_Op_create(fsum, .true., op, ierr)
  call MPI_Comm_group(c1, group, ierr)
  call MPI_Comm_group(MPI_COMM_WORLD, wgroup, ierr)
  call MPI_Send_init(psend, 2, MPI_INTEGER, next, 77, c1, reqs(1), ierr)
  call MPI_Recv_init(precv, 2, MPI_INTEGER, prev, 77, c1, reqs(2), ierr)

  ! The long-lived window is over a split of c1 (a split copies no attribute): MPI_Win_create
  ! duplicates its communicator, which runs the copy callbacks, and a restart that re-creates
  ! the window would not run them again (as in attrs.c); the short-lived windows get them.
  wbuf = 0
  call MPI_Comm_split(c1, 0, rank, wc, ierr)
  call MPI_Win_create(wbuf, 16_MPI_ADDRESS_KIND, 4, MPI_INFO_NULL, wc, win, ierr)
  call MPI_Comm_free(wc, ierr)
  wval = 9
  call MPI_Win_set_attr(win, kv_w, wval, ierr)

  if (loop .and. rank == 0) then
    write (*, '(A)') 'f_attrs ready'
    flush (6)
  end if

  croll = MPI_COMM_NULL
  roll_user = 0
  do r = 0, rounds - 1
    ! What the last round left.
    call check(cattr(c1, kv_c) == user .and. cattr(c1, kv_dup) == dupv .and. &
               cattr(c1, kv_null) == 13 .and. cattr(MPI_COMM_WORLD, kv_c) == worldv, &
               'c1/world attributes')
    call MPI_Attr_get(c1, kv_old, oldv, flag, ierr)
    call check(flag .and. oldv == 3, 'MPI-1 attribute')

    ! The Fortran user op, kept across rounds.
    mine = (rank + 1) * (r + 1)
    call MPI_Allreduce(mine, s, 1, MPI_INTEGER, op, c1, ierr)
    call check(s == (r + 1) * size * (size + 1) / 2, 'user op allreduce')
    call mix(int(s, 8))

    ! Replacing values runs the delete callback on the old ones.
    i = ndel
    user = mod(s, 1000) + r
    worldv = r + 2
    dupv = s * 3 + 1
    call MPI_Comm_set_attr(c1, kv_c, user, ierr)
    call check(ndel == i + 1 .and. deleted_from == c1, 'delete on replace (c1)')
    call MPI_Comm_set_attr(MPI_COMM_WORLD, kv_c, worldv, ierr)
    call check(ndel == i + 2 .and. deleted_from == MPI_COMM_WORLD, 'delete on replace (world)')
    call MPI_Comm_set_attr(c1, kv_dup, dupv, ierr)

    ! A short-lived duplicate: the Fortran copy callbacks run for c1.
    i = ncopy
    copied_from = -1
    call MPI_Comm_dup(c1, c2, ierr)
    call check(ncopy == i + 1 .and. copied_from == c1, 'copy callback on dup')
    call check(cattr(c2, kv_c) == user * 10 + 3 .and. cattr(c2, kv_dup) == dupv .and. &
               cattr(c2, kv_null) == -1, 'attributes of the dup')
    call MPI_Attr_get(c2, kv_old, oldv, flag, ierr)
    call check(flag .and. oldv == 35, 'MPI-1 attribute copied')
    call MPI_Allreduce(s, mine, 1, MPI_INTEGER, MPI_MAX, c2, ierr)
    call mix(int(mine, 8) + cattr(c2, kv_c))
    gone = c2
    i = ndel
    call MPI_Comm_free(c2, ierr)
    call check(c2 == MPI_COMM_NULL .and. ndel == i + 1 .and. deleted_from == gone, &
               'delete callback on free')

    ! The rolling duplicate: last round's is used and freed, this round's made.
    if (croll /= MPI_COMM_NULL) then
      call check(cattr(croll, kv_c) == roll_user * 10 + 3, 'rolling attribute')
      call MPI_Sendrecv(r, 1, MPI_INTEGER, next, 3, mine, 1, MPI_INTEGER, prev, 3, croll, &
                        MPI_STATUS_IGNORE, ierr)
      call check(mine == r, 'rolling sendrecv')
      call mix(int(mine, 8) + cattr(croll, kv_c))
      call MPI_Comm_free(croll, ierr)
    end if
    call MPI_Comm_dup(c1, croll, ierr)
    roll_user = user
    ! An attribute whose keyval the program frees at once (deleted with croll).
    call MPI_Comm_create_keyval(comm_copy, comm_delete, kv_tmp, extra3, ierr)
    call MPI_Comm_set_attr(croll, kv_tmp, int(100 + r, MPI_ADDRESS_KIND), ierr)
    call MPI_Comm_free_keyval(kv_tmp, ierr)
    call check(kv_tmp == MPI_KEYVAL_INVALID, 'freed keyval')

    ! The datatype: its attribute read back and replaced, MPI_Type_dup runs the copy
    ! callback, MPI_Type_free the delete one.
    call check(tattr(t1, kv_t) == tval, 'type attribute')
    tval = mod(s, 97) + r
    call MPI_Type_set_attr(t1, kv_t, tval, ierr)
    type_seen = -1
    i = ntcopy
    call MPI_Type_dup(t1, t2, ierr)
    call check(ntcopy == i + 1 .and. type_seen == t1, 'type copy callback')
    call check(tattr(t2, kv_t) == tval + 1007, 'dup type attribute')
    pair = (/ r, -1, rank, -1 /)
    got = -5
    call MPI_Sendrecv(pair, 1, t2, next, 4, got, 1, t2, prev, 4, c1, MPI_STATUS_IGNORE, ierr)
    call check(got(1) == r .and. got(2) == -5 .and. got(3) == prev .and. got(4) == -5, &
               'sendrecv with the dup type')
    call mix(int(got(1) * 64 + got(3), 8))
    gone = t2
    i = ntdel
    call MPI_Type_free(t2, ierr)
    call check(t2 == MPI_DATATYPE_NULL .and. ntdel == i + 1 .and. type_seen == gone, &
               'type delete callback')
    call check(tattr(MPI_INTEGER, kv_t) == pval, 'MPI_INTEGER attribute')
    pval = mod(s, 89) + 2 * r
    call MPI_Type_set_attr(MPI_INTEGER, kv_t, pval, ierr)
    call check(type_seen == MPI_INTEGER, 'delete on MPI_INTEGER')

    ! The other long-lived handles still work.
    call MPI_Comm_compare(c1, MPI_COMM_WORLD, res, ierr)
    call check(res == MPI_CONGRUENT, 'c1 congruent to world')
    call MPI_Group_compare(group, wgroup, res, ierr)
    call check(res == MPI_IDENT, 'group ident')
    ranks1(1) = next
    call MPI_Group_translate_ranks(group, 1, ranks1, wgroup, ranks2, ierr)
    call check(ranks2(1) == next, 'translate ranks')
    call MPI_Type_size(t1, tsize, ierr)
    call MPI_Type_get_extent(t1, lb, ext, ierr)
    call check(tsize == 8 .and. lb == 0 .and. ext == 12, 'vector size/extent')
    call MPI_Op_commutative(op, commute, ierr)
    call check(commute, 'op commutative')
    psend = (/ r, rank /)
    precv = -1
    call MPI_Startall(2, reqs, ierr)
    call MPI_Waitall(2, reqs, stats, ierr)
    call check(precv(1) == r .and. precv(2) == prev .and. reqs(1) /= MPI_REQUEST_NULL, &
               'persistent requests')
    call check(stats(MPI_SOURCE, 2) == prev .and. stats(MPI_TAG, 2) == 77, 'persistent status')
    call mix(int(precv(1) * 100 + precv(2), 8))

    ! The long-lived window: a fence epoch, its attribute read back and replaced.
    call MPI_Win_fence(MPI_MODE_NOPRECEDE, win, ierr)
    wput = r * 100 + rank
    call MPI_Put(wput, 1, MPI_INTEGER, next, int(mod(r, 4), MPI_ADDRESS_KIND), 1, &
                 MPI_INTEGER, win, ierr)
    call MPI_Win_fence(MPI_MODE_NOSUCCEED, win, ierr)
    call check(wbuf(mod(r, 4) + 1) == r * 100 + prev, 'window put')
    call mix(int(wbuf(mod(r, 4) + 1), 8))
    call check(wattr(win, kv_w) == wval, 'window attribute')
    wval = s + wbuf(mod(r, 4) + 1)
    win_seen = -1
    call MPI_Win_set_attr(win, kv_w, wval, ierr)
    call check(win_seen == win, 'window delete on replace')
    call MPI_Win_get_attr(win, MPI_WIN_SIZE, wsize, flag, ierr)
    call check(flag .and. wsize == 16, 'MPI_WIN_SIZE')
    call MPI_Win_get_attr(win, MPI_WIN_DISP_UNIT, v, flag, ierr)
    call check(flag .and. v == 4, 'MPI_WIN_DISP_UNIT')

    ! A short-lived window with an attribute.
    local = 0
    call MPI_Win_create(local, 8_MPI_ADDRESS_KIND, 4, MPI_INFO_NULL, c1, w2, ierr)
    call MPI_Win_set_attr(w2, kv_w, int(r + 40, MPI_ADDRESS_KIND), ierr)
    call MPI_Win_fence(0, w2, ierr)
    call MPI_Put(r, 1, MPI_INTEGER, prev, 1_MPI_ADDRESS_KIND, 1, MPI_INTEGER, w2, ierr)
    call MPI_Win_fence(0, w2, ierr)
    call check(local(2) == r .and. wattr(w2, kv_w) == r + 40, 'short-lived window')
    gone = w2
    i = nwdel
    call MPI_Win_free(w2, ierr)
    call check(w2 == MPI_WIN_NULL .and. nwdel == i + 1 .and. win_seen == gone, &
               'window delete on free')

    if (loop) dummy = usleep(20000_c_int)
  end do

  call MPI_Comm_free(croll, ierr)
  call MPI_Request_free(reqs(1), ierr)
  call MPI_Request_free(reqs(2), ierr)
  call MPI_Type_delete_attr(MPI_INTEGER, kv_t, ierr)
  call MPI_Comm_delete_attr(MPI_COMM_WORLD, kv_c, ierr)
  call MPI_Win_free(win, ierr)
  call MPI_Type_free(t1, ierr)
  call MPI_Comm_free(c1, ierr)
  call MPI_Group_free(group, ierr)
  call MPI_Group_free(wgroup, ierr)
  call MPI_Op_free(op, ierr)
  call check(op == MPI_OP_NULL, 'op freed')
  call MPI_Comm_free_keyval(kv_c, ierr)
  call MPI_Comm_free_keyval(kv_dup, ierr)
  call MPI_Comm_free_keyval(kv_null, ierr)
  call MPI_Keyval_free(kv_old, ierr)
  call MPI_Type_free_keyval(kv_t, ierr)
  call MPI_Win_free_keyval(kv_w, ierr)

  counts = (/ ncopy, ndel, ntcopy, ntdel, nwdel, nocopy, nodel, int(mod(seen, 1000000_8)), bad /)
  call MPI_Allreduce(counts, totals, 9, MPI_INTEGER, MPI_SUM, MPI_COMM_WORLD, ierr)
  tot_bad = totals(9)
  call MPI_Gather(csum, 1, MPI_INTEGER8, sums, 1, MPI_INTEGER8, 0, MPI_COMM_WORLD, ierr)
  if (rank == 0) then
    csum = 17
    do i = 1, size
      call mix(sums(i))
    end do
    if (loop) then
      write (*, '(A)', advance='no') 'f_attrs done: '
    else
      write (*, '(A)', advance='no') 'f_attrs: '
    end if
    write (*, '(I0,A,I0,A,I0,A,I0,A,I0,A,I0,A,I0,A,I0,A,I0,A,I0)') csum, ' comm copies ', &
      totals(1), ' deletes ', totals(2), ' type copies ', totals(3), ' deletes ', totals(4), &
      ' win deletes ', totals(5), ' mpi1 copies ', totals(6), ' deletes ', totals(7), &
      ' seen ', totals(8), ' failed checks: ', tot_bad
  end if
  call MPI_Finalize(ierr)
  if (tot_bad /= 0) stop 1
end program f_attrs
