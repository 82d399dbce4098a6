//! Message drain (DESIGN.md §4, DRAIN.md): per-peer, per-communicator sent/received
//! counts and the buffers of drained messages. Implemented by the MPI checkpoint issue;
//! this crate is its home.
