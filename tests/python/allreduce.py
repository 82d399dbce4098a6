"""A numpy job through mpi4py: every round each rank contributes a vector derived from
its state, MPI sums the vectors (Allreduce on numpy buffers), passes a slice round a
ring (Sendrecv) and broadcasts a Python object (pickle); rank 0 prints a digest of
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
print(f"allreduce ready rank={rank}", flush=True)
for i in range(rounds):
    local = np.sin(state * (i + 1)) + rank
    total = np.empty_like(local)
    comm.Allreduce(local, total, op=MPI.SUM)
    left = np.empty(16)
    comm.Sendrecv(
        total[:16].copy(), dest=(rank + 1) % size, recvbuf=left, source=(rank - 1) % size
    )
    note = comm.bcast({"round": i, "first": float(total[0])} if rank == 0 else None, root=0)
    acc += total
    state = np.roll(total, 1) * 0.5 + left.mean() * 1e-3 + note["first"] * 1e-6
    digest.update(total.tobytes())
    time.sleep(0.005)
if rank == 0:
    print(
        f"allreduce done size={size} rounds={rounds} sum={acc.sum():.12e} "
        f"digest={digest.hexdigest()[:16]}",
        flush=True,
    )
