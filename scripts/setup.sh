#!/usr/bin/env bash
# Prepares a Debian 12 machine (as root) to build and test MANA-rs, then builds the
# workspace. Idempotent: installs only what is missing, runs `apt-get update` only when
# something must be installed.
set -euo pipefail
cd "$(dirname "$0")/.."

# The C toolchain the tests compile their programs with (libc6-dev brings libc.a for the
# static-binary refusal test), mount/umount for the full-disk test, and MPICH (Hydra
# mpiexec.mpich, libmpich.so.12), which the lower half is linked with; Slurm and munge for
# the srun tests (they start their own slurmctld/slurmd: tests/src/slurm.rs); libclang for
# rsmpi's mpi-sys bindings (tests/rsmpi, built against MPICH: .cargo/config.toml); gdb, with
# which a test that times out prints its processes' stacks (tests/src/process.rs);
# gfortran and g++ for the Fortran and C++ MPI programs (mpif90.mpich, mpicxx.mpich);
# Open MPI only for the test that mana_launch refuses its programs (always name the MPI:
# installing Open MPI makes it Debian's default mpicc/mpiexec); binutils for readelf/strip;
# libhdf5-mpich-dev for the parallel-HDF5 client (tests/mpi/h5_parallel.c, built against
# libhdf5_mpich.so through pkg-config hdf5-mpich: tests/src/programs.rs);
# scalapack-mpi-test (ScaLAPACK's and BLACS's test programs built against MPICH: xdqr, xdlu,
# xFbtest) and nwchem-mpich (NWChem's MPICH build, nwchem.mpich) for the real-client tests
# (tests/tests/real_clients.rs): programs nobody here wrote, checkpointed and restarted.
packages=(gcc g++ gfortran libc6-dev make pkg-config util-linux mount binutils mpich libmpich-dev libopenmpi-dev openmpi-bin slurm-wlm munge libclang-dev clang gdb libhdf5-mpich-dev scalapack-mpi-test nwchem-mpich)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: missing packages ${missing[*]}; run as root (or install them) first" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# pympistandard (PyPI): the MPI standard's API as data; CI checks that the committed
# wrapper spec (mpi-wrappers/spec/) is what it gives.
if ! python3 -c "import pympistandard" 2>/dev/null; then
    echo "setup: installing pympistandard"
    python3 -m pip install -q "pympistandard==0.2.0"
fi

# Rust comes with the machine (rustup); make sure this shell finds it.
if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null; then
    echo "setup: cargo not found: install a Rust toolchain (rustup, with rustfmt and clippy) first" >&2
    exit 1
fi

cargo build --release --workspace
