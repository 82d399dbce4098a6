#!/usr/bin/env python3
"""Derive the wrapper generator's input from the MPI standard's machine-readable API.

Input:  apis.json of the PyPI package `pympistandard` (MPI 5.0), through its own
        rendering of ISO C prototypes (including the large-count `_c` variants).
Output: spec/mpi-5.0-iso-c.txt, one `NAME<TAB>PROTOTYPE` line per C-callable procedure,
        sorted. Committed, so building never needs pympistandard; re-run after upgrading
        it:  pip install pympistandard==0.2.0 && python3 gen/derive_spec.py
"""
import os
import sys

import pympistandard as std

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "spec", "mpi-5.0-iso-c.txt")


def main():
    std.use_api_version(1)
    lines = {}
    for proc in std.PROCEDURES.values():
        try:
            proto = str(proc.express.iso_c)
        except Exception:  # not expressible in C (Fortran-only, callbacks)
            continue
        if not proto or "(" not in proto:
            continue
        name = proto.split("(")[0].split()[-1].lstrip("*")
        lines[name] = proto
        if proc.has_embiggenment():
            big = str(proc.express.embiggen.iso_c)
            lines[big.split("(")[0].split()[-1].lstrip("*")] = big
    text = "# Derived by gen/derive_spec.py from pympistandard %s (apis.json, MPI 5.0). Do not edit.\n" % getattr(
        std, "__version__", "0.2.0")
    for name in sorted(lines):
        text += "%s\t%s\n" % (name, lines[name].replace("\\ldots", "..."))
    if "--check" in sys.argv:
        if open(OUT).read() != text:
            print("spec/mpi-5.0-iso-c.txt is stale: run python3 mpi-wrappers/gen/derive_spec.py", file=sys.stderr)
            sys.exit(1)
        return
    with open(OUT, "w") as f:
        f.write(text)
    print("%d prototypes -> %s" % (len(lines), os.path.relpath(OUT)), file=sys.stderr)


if __name__ == "__main__":
    main()
