//! Generated MPI wrappers (DESIGN.md §3): the MPICH-ABI `libmpich.so.12` that forwards
//! application MPI calls into the lower half through virtual handles. Generation from
//! `apis.json` is the work of the split-process issue; this crate is its home.
