! Fortran scratch files across checkpoints (issue 11, item 2: files deleted while open).
! gfortran's runtime creates an OPEN(STATUS='SCRATCH') file in $TMPDIR (or /tmp) and unlinks
! it at once: the process holds a file without a name. Each rank keeps two scratch units,
! one formatted and sequential (a record appended each round, then REWIND and read back
! whole), one unformatted direct-access (a record written at a position that walks, then
! every written record read back); the sums are combined with MPI_Allreduce.
!
! `--loop N`: N rounds with a 30 ms pause each; rank 0 prints "f_scratch ready" and the
! final "f_scratch done: ..." line. Plain run: 3 rounds, no pause.
program f_scratch
  use mpi
  implicit none
  integer :: ierr, rank, nranks, rounds, r, i, n, ios
  integer(kind=8) :: mine(2), all(2), v
  character(len=32) :: arg
  character(len=64) :: line
  integer :: rec(8)
  logical :: looping
  real(kind=8) :: t0

  call MPI_Init(ierr)
  call MPI_Comm_rank(MPI_COMM_WORLD, rank, ierr)
  call MPI_Comm_size(MPI_COMM_WORLD, nranks, ierr)
  looping = .false.
  rounds = 3
  if (command_argument_count() >= 2) then
    call get_command_argument(1, arg)
    if (trim(arg) == '--loop') then
      call get_command_argument(2, arg)
      read (arg, *) rounds
      looping = .true.
    end if
  end if
  open (unit=11, status='scratch', form='formatted', action='readwrite')
  open (unit=12, status='scratch', form='unformatted', access='direct', recl=32)
  if (rank == 0 .and. looping) then
    write (*, '(A)') 'f_scratch ready'
    flush (6)
  end if
  mine = 0
  do r = 1, rounds
    ! formatted: append one record, then read every record back
    do
      read (11, '(A)', iostat=ios) line
      if (ios /= 0) exit
    end do
    backspace (11, iostat=ios)
    write (11, '(A,I8,A,I4)') 'round', r, ' rank', rank
    rewind (11)
    n = 0
    do
      read (11, '(A)', iostat=ios) line
      if (ios /= 0) exit
      n = n + 1
      do i = 1, len_trim(line)
        mine(1) = mine(1) * 31 + ichar(line(i:i))
        mine(1) = mod(mine(1), 1000000007_8)
      end do
    end do
    ! unformatted direct: write record r at position 1 + mod(r * 7, 50), read all back
    rec = [(r * 100 + i + rank, i = 1, 8)]
    write (12, rec=1 + mod(r * 7, 50)) rec
    do i = 1, 50
      read (12, rec=i, iostat=ios) rec
      if (ios == 0) then
        v = sum(int(rec, 8)) * i
        mine(2) = mod(mine(2) * 7 + v, 1000000007_8)
      end if
    end do
    if (looping) then
      t0 = MPI_Wtime()
      do while (MPI_Wtime() - t0 < 0.03d0)
      end do
    end if
  end do
  call MPI_Allreduce(mine, all, 2, MPI_INTEGER8, MPI_SUM, MPI_COMM_WORLD, ierr)
  if (rank == 0) then
    if (looping) then
      write (*, '(A,I0,A,I0,A,I0)') 'f_scratch done: records ', n, ' formatted ', all(1), &
        ' direct ', all(2)
    else
      write (*, '(A,I0,A,I0,A,I0)') 'f_scratch: records ', n, ' formatted ', all(1), ' direct ', all(2)
    end if
    flush (6)
  end if
  close (11)
  close (12)
  call MPI_Finalize(ierr)
end program f_scratch
