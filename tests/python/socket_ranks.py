"""Two ranks talking over Python's own socket module beside MPI (issue 11, item 2, with a
real client stack: CPython's socket, selectors-free blocking calls, mpi4py for the rest).

Rank 0 listens on the loopback (a port the kernel picks) and broadcasts the port; rank 1
connects. Each round rank 0 sends two numbers, sleeps, reads rank 1's answers (n * 3 + 1)
and prints them; every 5 rounds an allreduce of the answers. At the end rank 0 shuts its
side; rank 1 reads end-of-file and sends its count with MPI. Rank 0 alone prints.
Usage: socket_ranks.py ROUNDS MS
"""
import socket
import struct
import sys
import time

from mpi4py import MPI

comm = MPI.COMM_WORLD
rank = comm.Get_rank()
rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
ms = int(sys.argv[2]) if len(sys.argv) > 2 else 150


def recv_exact(s, n):
    b = b""
    while len(b) < n:
        chunk = s.recv(n - len(b))
        if not chunk:
            return None
        b += chunk
    return b


if rank == 0:
    srv = socket.create_server(("127.0.0.1", 0))
    port = comm.bcast(srv.getsockname()[1], root=0)
    s, _ = srv.accept()
    srv.close()
else:
    port = comm.bcast(None, root=0)
    s = socket.create_connection(("127.0.0.1", port))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
comm.Barrier()
if rank == 0:
    print("socket ranks ready", flush=True)
count = 0
for r in range(1, rounds + 1):
    mine = 0
    if rank == 0:
        s.sendall(struct.pack("<qq", r, r + 1000))
        time.sleep(ms / 1000)
        got = recv_exact(s, 16)
        if got is None:
            print(f"round {r}: the connection is gone", flush=True)
            comm.Abort(1)
        a, b = struct.unpack("<qq", got)
        print(f"round {r}: {a} {b}", flush=True)
        mine = a + b
    else:
        got = recv_exact(s, 16)
        if got is None:
            comm.Abort(1)
        a, b = struct.unpack("<qq", got)
        s.sendall(struct.pack("<qq", a * 3 + 1, b * 3 + 1))
        count += 1
    if r % 5 == 0:
        total = comm.allreduce(mine, op=MPI.SUM)
        if rank == 0:
            print(f"sum {total}", flush=True)
if rank == 0:
    s.shutdown(socket.SHUT_WR)
    print(f"rank 1 answered {comm.recv(source=1, tag=7)}", flush=True)
else:
    extra = 0
    while s.recv(1):
        extra += 1
    comm.send(count + extra * 1000000, dest=0, tag=7)
s.close()
