#!/usr/bin/env python3
"""Derive the wrapper generator's input from the MPI standard's machine-readable API.

Input:  apis.json of the PyPI package `pympistandard` (MPI 5.0), through its own
        rendering of ISO C prototypes (including the large-count `_c` variants).
Output: spec/mpi-5.0-iso-c.txt, one `NAME<TAB>PROTOTYPE` line per C-callable procedure,
        sorted, and spec/mpi-5.0-handles.txt, one `NAME<TAB>PARAM:KIND:DIRECTION:LENGTH ...`
        line per procedure with handle or status parameters (what the generator must
        translate; LENGTH is `-` for a scalar, a parameter name or `*` for an array).
        Committed, so building never needs pympistandard; re-run after upgrading
        it:  pip install pympistandard==0.2.0 && python3 gen/derive_spec.py
"""
import json
import os
import sys

import pympistandard as std

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "spec", "mpi-5.0-iso-c.txt")
OUT_HANDLES = os.path.join(HERE, "..", "spec", "mpi-5.0-handles.txt")

# Parameter kinds that are MPI handles or statuses in the C binding.
TRANSLATED = {
    "COMMUNICATOR", "GROUP", "DATATYPE", "REQUEST", "INFO", "ERRHANDLER", "OPERATION",
    "WINDOW", "MESSAGE", "KEYVAL", "SESSION", "FILE", "STATUS", "F90_STATUS", "F08_STATUS",
}


def load_apis():
    """The parameter records of apis.json (pympistandard renders prototypes, but does not
    expose parameter kinds and directions publicly), keyed by procedure name."""
    path = os.path.join(os.path.dirname(std.__file__), "data", "apis.json")
    with open(path) as f:
        return {p["name"]: p for p in json.load(f).values()}


def handle_params(record):
    out = []
    for p in record["parameters"]:
        if p["kind"] not in TRANSLATED or "c_parameter" in (p["suppress"] or ""):
            continue
        length = "-" if p["length"] is None else str(p["length"])
        out.append("%s:%s:%s:%s" % (p["name"], p["kind"], p["param_direction"], length))
    return out


def main():
    std.use_api_version(1)
    lines = {}
    handles = {}
    apis = load_apis()
    for proc in std.PROCEDURES.values():
        try:
            proto = str(proc.express.iso_c)
        except Exception:  # not expressible in C (Fortran-only, callbacks)
            continue
        if not proto or "(" not in proto:
            continue
        name = proto.split("(")[0].split()[-1].lstrip("*")
        lines[name] = proto
        names = [name]
        if proc.has_embiggenment():
            big = str(proc.express.embiggen.iso_c)
            names.append(big.split("(")[0].split()[-1].lstrip("*"))
            lines[names[-1]] = big
        params = handle_params(apis[name]) if name in apis else []
        if params:
            for n in names:
                handles[n] = " ".join(params)
    version = getattr(std, "__version__", "0.2.0")
    htext = "# Derived by gen/derive_spec.py from pympistandard %s (apis.json, MPI 5.0). Do not edit.\n" % version
    for name in sorted(handles):
        htext += "%s\t%s\n" % (name, handles[name])
    text = "# Derived by gen/derive_spec.py from pympistandard %s (apis.json, MPI 5.0). Do not edit.\n" % getattr(
        std, "__version__", "0.2.0")
    for name in sorted(lines):
        text += "%s\t%s\n" % (name, lines[name].replace("\\ldots", "..."))
    if "--check" in sys.argv:
        for path, content in ((OUT, text), (OUT_HANDLES, htext)):
            if open(path).read() != content:
                print("%s is stale: run python3 mpi-wrappers/gen/derive_spec.py" % os.path.relpath(path),
                      file=sys.stderr)
                sys.exit(1)
        return
    for path, content in ((OUT, text), (OUT_HANDLES, htext)):
        with open(path, "w") as f:
            f.write(content)
    print("%d prototypes -> %s" % (len(lines), os.path.relpath(OUT)), file=sys.stderr)


if __name__ == "__main__":
    main()
