//! A Rust MPI program (rsmpi, linked with MPICH through mpi-sys): a ring, an all-reduce
//! and a gather; rank 0 prints the results. The tests run it natively and under
//! `mana_launch` and compare.

use mpi::collective::SystemOperation;
use mpi::traits::*;

fn main() {
    let universe = mpi::initialize().expect("MPI_Init");
    let world = universe.world();
    let (rank, size) = (world.rank(), world.size());
    let next = world.process_at_rank((rank + 1) % size);
    let prev = world.process_at_rank((rank + size - 1) % size);
    let token: i64 = if rank == 0 {
        next.send(&1i64);
        prev.receive::<i64>().0
    } else {
        let t = prev.receive::<i64>().0 + i64::from(rank);
        next.send(&t);
        t
    };
    let mut sum = 0i64;
    world.all_reduce_into(&(i64::from(rank) * 3 + 1), &mut sum, SystemOperation::sum());
    let mine = [f64::from(rank) * 0.5, f64::from(rank) + 0.25];
    let root = world.process_at_rank(0);
    if rank == 0 {
        let mut all = vec![0f64; 2 * size as usize];
        root.gather_into_root(&mine[..], &mut all[..]);
        println!("rsmpi ring size={size} token={token} sum={sum}");
        println!("gathered {all:?}");
    } else {
        root.gather_into(&mine[..]);
    }
}
