"""A Python job that computes before it imports mpi4py.MPI (which runs MPI_Init_thread)
and after it calls MPI.Finalize(), so that a checkpoint can land outside its MPI
lifetime (issue 9 item 5): the same shape as tests/mpi/init_phases.c.

    init_phases.py [PRE_STEPS [POST_STEPS]]

Each step is a hash round over a numpy array and a 10 ms sleep (a checkpoint interrupts
the sleep; steps are counted, not timed).
"""

import hashlib
import os
import sys
import time

import numpy as np

pre = int(sys.argv[1]) if len(sys.argv) > 1 else 150
post = int(sys.argv[2]) if len(sys.argv) > 2 else 150
prank = int(os.environ.get("PMI_RANK", "0"))


def say(line):
    """One write per line: print() writes the text and the newline apart, and Hydra may
    then forward two ranks' lines as one."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def step(data, salt):
    h = hashlib.sha256(data.tobytes() + salt.to_bytes(8, "little")).digest()
    return np.roll(data, 1) ^ np.frombuffer(h * 128, dtype=np.uint64)


data = np.arange(512, dtype=np.uint64) * np.uint64(2654435761 + prank)
say(f"py_phases pre ready rank={prank}")
for i in range(pre):
    data = step(data, i)
    time.sleep(0.01)

from mpi4py import MPI  # noqa: E402  (MPI_Init_thread happens here, after the computing)

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
assert rank == prank, (rank, prank)
total = np.empty_like(data)
comm.Allreduce(data, total, op=MPI.BXOR)
say(f"py_phases mpi rank={rank} size={size} xor={int(total.sum()) & 0xFFFFFFFF:08x}")
MPI.Finalize()

say(f"py_phases post ready rank={rank}")
for i in range(post):
    data = step(data ^ total, i)
    time.sleep(0.01)
result = hashlib.sha256(data.tobytes()).hexdigest()[:16]
say(
    f"py_phases done rank={rank} initialized={int(MPI.Is_initialized())} "
    f"finalized={int(MPI.Is_finalized())} result={result}"
)
