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
# (tests/tests/real_clients.rs): programs nobody here wrote, checkpointed and restarted;
# python3-venv and python3-dev to build mpi4py from its sdist (below); strace records a
# checkpoint's file-system calls for the crash-consistency model (tests/src/crashmodel.rs).
packages=(gcc g++ gfortran strace libc6-dev make pkg-config util-linux mount passwd xz-utils tar binutils mpich libmpich-dev libopenmpi-dev openmpi-bin slurm-wlm munge libclang-dev clang gdb libhdf5-mpich-dev scalapack-mpi-test nwchem-mpich python3-venv python3-dev python3-pip)
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

# mpi4py (PyPI sdist) built against Debian's MPICH, with numpy, in a venv of its own, and the
# sdist's own test suite unpacked beside it (tests/src/mpi4py.rs, tests/tests/real_mpi4py.rs,
# tests/tests/init_phases.rs). The stamp is written last: a half-made venv is made again.
MPI4PY_VERSION=4.1.2
MPI4PY_VENV=/var/tmp/mana-mpi4py
if [ "$(cat "$MPI4PY_VENV/.mana-setup" 2>/dev/null)" != "mpi4py $MPI4PY_VERSION" ]; then
    echo "setup: building mpi4py $MPI4PY_VERSION against MPICH in $MPI4PY_VENV (a few minutes)"
    rm -rf "$MPI4PY_VENV"
    python3 -m venv "$MPI4PY_VENV"
    "$MPI4PY_VENV/bin/pip" install -q --disable-pip-version-check "numpy<3"
    mkdir -p "$MPI4PY_VENV/src"
    "$MPI4PY_VENV/bin/pip" download -q --disable-pip-version-check --no-deps --no-binary :all: \
        -d "$MPI4PY_VENV/src" "mpi4py==$MPI4PY_VERSION"
    tar -xzf "$MPI4PY_VENV/src/mpi4py-$MPI4PY_VERSION.tar.gz" -C "$MPI4PY_VENV/src"
    # -O1 -g0: Cython's MPI.c is huge; with Python's default -g -O2 the build took 9.5 min
    # on 2 cores here, with these 1.8 min.
    CFLAGS="-O1 -g0" MPICC=mpicc.mpich "$MPI4PY_VENV/bin/pip" install -q --disable-pip-version-check \
        --no-binary mpi4py "$MPI4PY_VENV/src/mpi4py-$MPI4PY_VERSION.tar.gz"
    # Fails here, not in a test: built, and against MPICH (not Open MPI's mpicc).
    "$MPI4PY_VENV/bin/python" -c "import numpy, mpi4py.MPI as M; assert 'MPICH' in M.Get_library_version()"
    echo "mpi4py $MPI4PY_VERSION" >"$MPI4PY_VENV/.mana-setup"
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
