"""A numpy job through mpi4py: every round each rank contributes a vector derived from
its state, MPI sums the vectors (Allreduce on numpy buffers), passes a slice round a
ring (Sendrecv), sends strided and indexed elements of it round the ring with two derived
datatypes held for the whole run (mpi4py makes them with the large-count constructors,
MPI_Type_vector_c and MPI_Type_indexed_c) and broadcasts a Python object (pickle); rank 0 prints a digest of
everything at the end. The result depends on every round, so a checkpoint that lost or
repeated one shows.

    allreduce.py [ROUNDS]
"""

import hashlib
import sys
import time

import numpy as np
from mpi4py import MPI

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 200

state = np.random.default_rng(1234 + rank).standard_normal(4096)
acc = np.zeros(4096)
digest = hashlib.sha256()
strided = MPI.DOUBLE.Create_vector(8, 1, 16).Commit()
picked = MPI.DOUBLE.Create_indexed([2, 1, 3], [0, 7, 40]).Commit()
print(f"allreduce ready rank={rank}", flush=True)
for i in range(rounds):
    local = np.sin(state * (i + 1)) + rank
    total = np.empty_like(local)
    comm.Allreduce(local, total, op=MPI.SUM)
    left = np.empty(16)
    comm.Sendrecv(
        total[:16].copy(), dest=(rank + 1) % size, recvbuf=left, source=(rank - 1) % size
    )
    got = np.zeros(8)
    comm.Sendrecv(
        [total, 1, strided], dest=(rank + 1) % size, recvbuf=got, source=(rank - 1) % size
    )
    few = np.zeros(6)
    comm.Sendrecv(
        [total, 1, picked], dest=(rank - 1) % size, recvbuf=few, source=(rank + 1) % size
    )
    left[:8] += got * 1e-2
    left[8:14] += few * 1e-2
    note = comm.bcast({"round": i, "first": float(total[0])} if rank == 0 else None, root=0)
    acc += total
    state = np.roll(total, 1) * 0.5 + left.mean() * 1e-3 + note["first"] * 1e-6
    digest.update(total.tobytes())
    time.sleep(0.005)
strided.Free()
picked.Free()
if rank == 0:
    print(
        f"allreduce done size={size} rounds={rounds} sum={acc.sum():.12e} "
        f"digest={digest.hexdigest()[:16]}",
        flush=True,
    )
