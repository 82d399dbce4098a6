#!/usr/bin/env python3
"""Generate the MPICH-ABI wrapper library's C source.

Inputs (committed):
  spec/mpi-5.0-iso-c.txt       prototypes derived from the MPI standard (gen/derive_spec.py)
  spec/mpi-5.0-handles.txt     each function's handle and status parameters: kind,
                               direction, array length (gen/derive_spec.py)
  spec/libmpich.so.12.exports  what the real library exports (gen/exports.sh)
  gen/handwritten.txt          names the generator skips (their wrappers are in src/*.c)
Output:
  generated/wrappers.c         one wrapper per exported function, exported under the
                               MPI_ and PMPI_ names; storage for every exported data symbol

The export list decides what is emitted; the standard's prototypes give each function
its C signature. A function exported by MPICH but not in the standard (MPIX_*, removed
MPI-1 calls, MPICH internals) becomes a stub that reports MPI_ERR_UNSUPPORTED_OPERATION
naming itself.

Translation (DESIGN.md §3; src/handles.c, src/mana_wrap.h): handle parameters go in as
real handles (mana_h_real), come out as virtual ones (mana_h_virtual, only on success),
and in-out ones are reconciled after every call (mana_h_inout_done: a request MPI
completed, a communicator the application freed); arrays go through scratch copies.
Statuses are copied field by field into and out of a scratch status. The handle
conversions MPI_<Handle>_c2f/_f2c are identities on the application's values.
Regenerate with:  python3 mpi-wrappers/gen/generate.py
"""
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")


def read_lines(path):
    with open(os.path.join(ROOT, path)) as f:
        return [l.rstrip("\n") for l in f if l.strip() and not l.startswith("#")]


def split_params(params):
    out, depth, cur = [], 0, ""
    for ch in params:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


# apis.json kind → C type of a translated handle (MPI_File, a pointer in MPICH, is
# translated by src/files.c).
HANDLE_TYPES = {
    "COMMUNICATOR": "MPI_Comm", "GROUP": "MPI_Group", "DATATYPE": "MPI_Datatype",
    "REQUEST": "MPI_Request", "INFO": "MPI_Info", "ERRHANDLER": "MPI_Errhandler",
    "OPERATION": "MPI_Op", "WINDOW": "MPI_Win", "MESSAGE": "MPI_Message", "KEYVAL": "int",
    "SESSION": "MPI_Session",
}
# Collective operations (DRAIN.md §1): counted per communicator at their entry, where a
# pending checkpoint may hold the calling thread. Each also marks the thread as inside a
# collective until its lower call returns; nonblocking ones mark their request, which the
# drain completes; persistent ones (`_init`) also count their starts, each on its own
# counter (src/ckpt.c).
COLLECTIVES = (
    "Barrier", "Bcast", "Gather", "Gatherv", "Scatter", "Scatterv", "Allgather", "Allgatherv",
    "Alltoall", "Alltoallv", "Alltoallw", "Reduce", "Allreduce", "Reduce_scatter",
    "Reduce_scatter_block", "Scan", "Exscan", "Neighbor_allgather", "Neighbor_allgatherv",
    "Neighbor_alltoall", "Neighbor_alltoallv", "Neighbor_alltoallw",
)
# Communicator constructors (collective over their first communicator parameter): counted
# like a blocking collective, and the new communicator gets its identity (gid).
CONSTRUCTORS = (
    "Comm_dup", "Comm_dup_with_info", "Comm_idup", "Comm_idup_with_info", "Comm_split",
    "Comm_split_type", "Comm_create", "Comm_create_group", "Cart_create", "Cart_sub",
    "Graph_create", "Dist_graph_create", "Dist_graph_create_adjacent", "Intercomm_create",
    "Intercomm_merge",
)
# Other calls collective over a communicator (or a window: its fences, and
# MPI_Win_set_info, where MPICH synchronizes the window's group with a barrier — uncounted,
# a rank inside it waited for a peer parked at the closed gate: MPICH's rma/win_info under
# checkpoints): counted like blocking collectives.
OTHER_COLLECTIVE = ("Comm_free", "File_open", "Win_fence", "Win_set_info")
# Calls opening (+1) and closing (-1) a window's PSCW epoch (MPI_Win_test closes an
# exposure epoch when it answers true). An open epoch counts as a blocking collective does
# (src/ckpt.c, mana_win_epoch): no checkpoint lands inside one, as a restart could not open
# it again in the state its peers' epochs are in.
WIN_EPOCH = {"Win_start": 1, "Win_post": 1, "Win_complete": -1, "Win_wait": -1}
# Passive-target epochs are recorded to be opened again at restart: (hook arguments).
# MPI-IO (src/files.c). Calls collective over a file's group, counted on MANA's own
# communicator of the file like blocking collectives; split collectives' *_begin (their
# *_end is hand-written: index into files.c's split_ends); nonblocking collective I/O.
FILE_COLLECTIVE = ("File_set_view", "File_set_size", "File_preallocate", "File_sync", "File_seek_shared",
                   "File_set_atomicity", "File_set_info", "File_read_all", "File_write_all", "File_read_at_all",
                   "File_write_at_all", "File_read_ordered", "File_write_ordered")
FILE_SPLIT_BEGIN = ("File_read_all_begin", "File_read_at_all_begin", "File_read_ordered_begin",
                    "File_write_all_begin", "File_write_at_all_begin", "File_write_ordered_begin")
FILE_NB_COLLECTIVE = ("File_iread_all", "File_iwrite_all", "File_iread_at_all", "File_iwrite_at_all")
WIN_LOCKS = {"Win_lock": "rank, lock_type, assert, 1", "Win_unlock": "rank, 0, 0, -1",
             "Win_lock_all": "-1, 0, assert, 1", "Win_unlock_all": "-1, 0, 0, -1"}
# Calls that may wait inside MPI for another rank's application thread — a lock a peer
# holds until its unlock (MPICH may request a lock only at the unlock or flush that needs
# it), a peer's post or complete: counted like blocking collectives, held at their entry
# while a checkpoint is pending (src/ckpt.c, mana_sync_enter). Also MPI_Comm_create_group,
# collective over its group only and therefore not counted on the parent: a member inside
# it waited for a member held at its gate until the gate gave up after 60 s (MPICH's suite,
# comm/comm_group_half 2, with a checkpoint requested at rank 0's first call); it now has
# a counter of its own per (parent, tag, group) instead (mana_cg_enter).
# So are MPI-4's MPI_Comm_create_from_group and MPI_Intercomm_create_from_groups
# (collective over a group, no parent to count on; MPICH's init/session_mult_init: a
# checkpoint found two ranks inside MPI_Comm_create_from_group and two held outside, and
# hung) and MPI_Session_finalize (which may synchronize).
# MPI_Win_post opens an epoch a peer's MPI_Win_start waits for: held at its entry too.
# MPI_Buffer_detach waits until the peers have received every buffered send still pending
# (MPICH's suite, pt2pt/bsendpending: the receiver sleeps 2 s before its receives; a
# checkpoint then waited at its closing gate for the sender to leave MPI_Buffer_detach,
# while the receiver, held at that gate, never received: the job timed out).
WAITS_FOR_PEERS = ("Win_lock", "Win_lock_all", "Win_unlock", "Win_unlock_all", "Win_flush", "Win_flush_all",
                   "Win_flush_local", "Win_flush_local_all", "Win_start", "Win_post", "Comm_create_group",
                   "Buffer_detach", "Buffer_detach_c", "Comm_create_from_group", "Intercomm_create_from_groups",
                   "Session_finalize")
# The calls closing a PSCW epoch (MPI_Win_complete, MPI_Win_wait) wait for peers too, but
# are never held at their entry, and need no count of their own: the epoch they close
# counts as blocking until they return (src/ckpt.c, mana_win_epoch).


def collective_kind(base):
    """'blocking', 'nonblocking', 'persistent', 'constructor' or None."""
    name = base[4:]
    if name.endswith("_c"):
        name = name[:-2]
    if name in COLLECTIVES or name in OTHER_COLLECTIVE:
        return "blocking"
    if name in CONSTRUCTORS:
        return "constructor"
    if name.startswith("I") and name[1:].capitalize() in COLLECTIVES:
        return "nonblocking"
    if name.endswith("_init") and name[:-5] in COLLECTIVES:
        return "persistent"
    return None


def persistent_replay(base, plist, args, hp, fid, lower, ret, params):
    """A struct of a persistent collective's arguments (but its request) and a function that
    calls the lower `MPI_X_init` with them again, handles translated then."""
    kinds = {p[0]: p[1] for p in hp}
    request = next(p[0] for p in hp if p[1] == "REQUEST")
    members = [re.sub(r"(\w+)\s*\[\s*\]", r"*\1", p) for p, a in zip(plist, args) if a != request]
    # Datatype arrays (alltoallw): copies of the application's handles follow the struct,
    # their lengths first (mana_req_replayable_types); translated at each replay.
    arrays = [p[0] for p in hp if p[3] != "-"]
    tail = []
    if arrays:
        tail.append("    const size_t *n_ = (const size_t *)(a + 1);")
        tail.append("    const MPI_Datatype *t_ = (const MPI_Datatype *)(n_ + %d);" % len(arrays))
        for k, name in enumerate(arrays):
            at = " + ".join(["n_[%d]" % j for j in range(k)]) or "0"
            tail.append("    MANA_TMP(MPI_Datatype, %s_r_, n_[%d]);" % (name, k))
            tail.append("    for (size_t i_ = 0; i_ < %s_r__n_; i_++) %s_r_[i_] = mana_h_real(t_[%s + i_]);"
                        % (name, name, at))
    call = []
    for a in args:
        if a in arrays:
            call.append("n_[%d] ? %s_r_ : a->%s" % (arrays.index(a), a, a))
        elif a == request:
            call.append("out_")
        elif kinds.get(a) == "INFO":  # hints: the application may have freed them since
            call.append("mana_h_real_or(a->%s, MPI_INFO_NULL)" % a)
        elif a in kinds:
            call.append("mana_h_real(a->%s)" % a)
        else:
            call.append("a->%s" % a)
    return [
        "struct mana_pc_%s { %s; };" % (base, "; ".join(members)),
        "static int mana_pc_replay_%s(const void *a_, MPI_Request *out_) {" % base,
        "    const struct mana_pc_%s *a = a_;" % base,
        "    %s r_;" % ret,
    ] + tail + [
        "    MANA_CALL_LOWER_INTO(r_, %d, \"%s\", %s, (%s), (%s));" % (fid, lower, ret, params, ", ".join(call)),
    ] + ["    MANA_TMP_FREE(%s_r_);" % name for name in arrays] + [
        "    return r_;",
        "}",
    ]


C2F_HANDLES = ("Comm", "Type", "Group", "Request", "Info", "Errhandler", "Op", "Win", "Message", "Session")


def length_expr(fname, pname, length, params, ptypes):
    """C expression for the number of elements of array parameter `pname`."""
    if length == "*":
        if fname.startswith(("MPI_Neighbor_alltoallw", "MPI_Ineighbor_alltoallw")):
            return "mana_neighbor_len(comm, %d)" % (pname == "sendtypes")
        if "alltoallw" in fname.lower():
            return "mana_alltoallw_len(comm)"
        # Status arrays are as long as the request array beside them.
        for q, (kind, _d, qlen) in params.items():
            if kind == "REQUEST" and qlen != "-":
                return length_expr(fname, q, qlen, params, ptypes)
        raise SystemExit("%s: no length for %s" % (fname, pname))
    if "*" in ptypes[length]:
        return "(%s ? *%s : 0)" % (length, length)
    return length


def translation(fname, plist, args, handles):
    """(prologue, call arguments, epilogue) lines translating handles and statuses."""
    params = {}
    for item in handles.split():
        pname, kind, direction, length = item.split(":")
        params[pname] = (kind, direction, length)
    ptypes = dict(zip(args, plist))
    first, pro, post, call = [], [], [], list(args)
    sendtypes_len = None
    for i, a in enumerate(args):
        if a not in params:
            continue
        kind, direction, length = params[a]
        ptr = "*" in ptypes[a] or "[" in ptypes[a]
        if kind in ("F90_STATUS", "F08_STATUS"):
            first.append("%s = mana_translate_fstatus(%s);" % (a, a))
        elif kind == "STATUS" and length == "-":
            pro.append("MPI_Status %s_s, *%s_l = (%s && !mana_status_ignored(%s)) ? &%s_s : (MPI_Status *)%s;"
                       % (a, a, a, a, a, a))
            pro.append("if (%s_l != %s) mana_status_copy(%s_l, %s);" % (a, a, a, a))
            if direction != "in":
                post.append("if (%s_l != %s) mana_status_copy((MPI_Status *)%s, %s_l);" % (a, a, a, a))
            call[i] = "%s_l" % a
        elif kind == "STATUS":
            n = length_expr(fname, a, length, params, ptypes)
            pro.append("int %s_use = %s != NULL && !mana_status_ignored(%s);" % (a, a, a))
            pro.append("MANA_TMP(MPI_Status, %s_l, %s_use ? %s : 0);" % (a, a, n))
            pro.append("for (size_t i_ = 0; i_ < %s_l_n_; i_++) mana_status_copy(&%s_l[i_], &%s[i_]);" % (a, a, a))
            if direction != "in":
                post.append("for (size_t i_ = 0; i_ < %s_l_n_; i_++) mana_status_copy(&%s[i_], &%s_l[i_]);"
                            % (a, a, a))
            post.append("MANA_TMP_FREE(%s_l);" % a)
            call[i] = "%s_use ? %s_l : %s" % (a, a, a)
        elif kind in HANDLE_TYPES and not ptr:
            first.append("%s = mana_h_real(%s);" % (a, a))
        elif kind == "FILE" and not ptr:
            first.append("%s = mana_file_real(%s);" % (a, a))
        elif kind in HANDLE_TYPES and length == "-":
            t = HANDLE_TYPES[kind]
            # A NULL pointer goes down as NULL: MPI reports MPI_ERR_ARG through the
            # error handler (MPICH's errors/*_nullarg tests), and nothing is written.
            if direction == "in":
                pro.append("%s %s_l = %s ? mana_h_real(*%s) : 0;" % (t, a, a, a))
            elif direction == "out":
                pro.append("%s %s_l = 0;" % (t, a))
                post.append("if (%s) mana_out_handle(r_, %s, %s_l);" % (a, a, a))
            else:
                pro.append("%s %s_v = %s ? *%s : 0, %s_r = mana_h_real(%s_v), %s_l = %s_r;"
                           % (t, a, a, a, a, a, a, a))
                post.append("if (%s) *%s = mana_h_inout_done(%s_v, %s_r, %s_l);" % (a, a, a, a, a))
            call[i] = "%s ? &%s_l : NULL" % (a, a)
        elif kind in HANDLE_TYPES:
            t = HANDLE_TYPES[kind]
            n = length_expr(fname, a, length, params, ptypes)
            # Ignored arrays (MPI_IN_PLACE send side of alltoallw) are passed as they are.
            use = "%s != NULL" % a
            if a == "sendtypes":
                use += " && sendbuf != MPI_IN_PLACE"
            pro.append("int %s_use = %s;" % (a, use))
            pro.append("MANA_TMP(%s, %s_l, %s_use ? %s : 0);" % (t, a, a, n))
            if direction == "out":
                pro.append("for (size_t i_ = 0; i_ < %s_l_n_; i_++) %s_l[i_] = 0;" % (a, a))
                post.append("if (r_ == MPI_SUCCESS) for (size_t i_ = 0; i_ < %s_l_n_; i_++) "
                            "if (%s_l[i_]) %s[i_] = mana_h_virtual(%s_l[i_]);" % (a, a, a, a))
            else:
                pro.append("for (size_t i_ = 0; i_ < %s_l_n_; i_++) %s_l[i_] = mana_h_real(%s[i_]);" % (a, a, a))
            if direction == "inout":
                pro.append("MANA_TMP(%s, %s_r, %s_l_n_);" % (t, a, a))
                pro.append("for (size_t i_ = 0; i_ < %s_l_n_; i_++) %s_r[i_] = %s_l[i_];" % (a, a, a))
                post.append("for (size_t i_ = 0; i_ < %s_l_n_; i_++) "
                            "%s[i_] = mana_h_inout_done(%s[i_], %s_r[i_], %s_l[i_]);" % (a, a, a, a, a))
                post.append("MANA_TMP_FREE(%s_r);" % a)
            post.append("MANA_TMP_FREE(%s_l);" % a)
            call[i] = "%s_use ? %s_l : %s" % (a, a, a)
            if a == "sendtypes":
                sendtypes_len = n
            if a == "recvtypes" and sendtypes_len == n:
                # One array for both sides when the application passed one: MPICH checks
                # MPI_Alltoallw's buffers for aliasing only when the count and type
                # arrays are the same (MPICH errors/coll/noalias2).
                call[i] = "%s_use ? (%s == sendtypes && sendtypes_use ? sendtypes_l : %s_l) : %s" % (a, a, a, a)
    return first + pro, call, post


def made(out):
    """The condition that a call made the object of out-handle parameter `out`: a success
    with a lower handle (MPICH returns MPI_SUCCESS after calling a C++ binding's error
    handler, having made nothing)."""
    return "r_ == MPI_SUCCESS && %s_l" % out


def file_hooks(base, handles, pre_hooks, post, post_hooks):
    """MPI-IO bookkeeping (src/files.c) around a call with a file parameter."""
    hp = [item.split(":") for item in handles.split()]
    fh = next((p[0] for p in hp if p[1] == "FILE" and p[2] == "in"), None)
    if not fh:
        return
    name = base[4:]
    if name.endswith("_c"):
        name = name[:-2]
    at = len(pre_hooks)
    request = next((p[0] for p in hp if p[1] == "REQUEST" and p[2] == "out"), None)
    counted = name in FILE_COLLECTIVE or name in FILE_SPLIT_BEGIN or name in FILE_NB_COLLECTIVE
    if counted:
        pre_hooks.append("const int mana_counted_ = mana_coll_enter(mana_file_comm(mana_fv_));")
        post_hooks.append("mana_coll_leave(mana_counted_);")
    if request:
        post.append("if (r_ == MPI_SUCCESS) mana_file_request(*%s, mana_fv_, %d);"
                    % (request, int(name in FILE_NB_COLLECTIVE)))
    if "_shared" in name or "_ordered" in name:
        post.append("if (r_ == MPI_SUCCESS) mana_file_used_shared(mana_fv_);")
    if name in FILE_SPLIT_BEGIN:
        post.append("if (r_ == MPI_SUCCESS) r_ = mana_file_split_begun(mana_fv_, %s, buf, %d);"
                    % (fh, FILE_SPLIT_BEGIN.index(name)))
    if name == "File_set_view":
        pre_hooks.append("const MPI_Datatype mana_et_ = etype, mana_ft_ = filetype;")
        post.append("if (r_ == MPI_SUCCESS) mana_file_view_set(mana_fv_, disp, mana_et_, mana_ft_, datarep, info);")
    if name == "File_set_info":
        post.append("if (r_ == MPI_SUCCESS) mana_file_info_set(mana_fv_, info);")
    if name == "File_set_errhandler":
        pre_hooks.append("const MPI_Errhandler mana_eh_ = errhandler;")
        post.append("if (r_ == MPI_SUCCESS) mana_file_errhandler_set(mana_fv_, mana_eh_);")
    if any("mana_fv_" in h for h in pre_hooks + post + post_hooks):
        pre_hooks.insert(at, "const MPI_File mana_fv_ = %s;" % fh)


def main():
    spec = {}
    for line in read_lines("spec/mpi-5.0-iso-c.txt"):
        name, proto = line.split("\t")
        spec[name] = proto
    handles = dict(line.split("\t") for line in read_lines("spec/mpi-5.0-handles.txt"))
    exports = [l.split() for l in read_lines("spec/libmpich.so.12.exports")]
    functions = {e[1] for e in exports if e[0] == "F"}
    data = [(e[1], int(e[2])) for e in exports if e[0] == "D"]
    handwritten = set(read_lines("gen/handwritten.txt"))

    out = [
        "/* Generated by mpi-wrappers/gen/generate.py from spec/mpi-5.0-iso-c.txt and",
        "   spec/libmpich.so.12.exports. Do not edit: change the generator or its inputs. */",
        '#include "mana_wrap.h"',
        "",
    ]
    fid = 0
    done = set()
    for name in sorted(functions):
        base = name[1:] if name.startswith("PMPI") else name
        if base in done or base in handwritten or name in handwritten:
            continue
        done.add(base)
        aliases = [n for n in (base, "P" + base) if n in functions]
        proto = spec.get(base)
        if proto is None:
            for a in aliases:
                out.append("__attribute__((used)) static int mana_u_%s(void) { return mana_unsupported(\"%s\"); }" % (a, a))
                out.append("MANA_EXPORT(mana_u_%s, %s)" % (a, a))
            continue
        m = re.match(r"^(.*?)\b(%s)\((.*)\)$" % re.escape(base), proto)
        ret, params = m.group(1).strip(), m.group(3).strip()
        plist = [] if params in ("", "void") else split_params(params)
        args = [re.findall(r"[A-Za-z_]\w*", p)[-1] for p in plist]
        lower = "P" + base if "P" + base in functions else base
        header_at = len(out)
        out.append("__attribute__((used)) static %s mana_w_%s(%s) {" % (ret, base, params or "void"))
        m_c2f = re.match(r"^MPI_(%s)_(c2f|f2c)$" % "|".join(C2F_HANDLES), base)
        if m_c2f:
            # MPICH's handles are ints and these conversions are casts: the Fortran
            # value of a handle is the application's (virtual) value.
            out.append("    return (%s)%s;" % (ret, args[0]))
            out.append("}")
            for a in aliases:
                out.append("MANA_EXPORT(mana_w_%s, %s)" % (base, a))
            continue
        pro, call, post = translation(base, plist, args, handles.get(base, ""))
        # Sentinel addresses (MPI_UNWEIGHTED, MPI_WEIGHTS_EMPTY) are the upper library's;
        # the lower library recognises only its own. Translated while holding the gate,
        # like handles: a thread held at a collective's entry or parked at the gate may go
        # on in a restarted process, whose lower library has its sentinels elsewhere (MPICH's
        # suite, f90/topo/dgraph_unwgtf90 restarted from an instant where a rank waited at
        # MPI_Dist_graph_create_adjacent's entry: the old lower half's MPI_UNWEIGHTED reached
        # the new one, which read it as a weights array: SIGSEGV on every rank).
        pro = ["%s = mana_translate_weights(%s);" % (a, a) for a in args if a.endswith("weights")] + pro
        coll = collective_kind(base)
        pre_hooks, post_hooks = [], []
        if coll:
            hp = [item.split(":") for item in handles.get(base, "").split()]
            comm = next(p[0] for p in hp if p[1] in ("COMMUNICATOR", "WINDOW") and p[2] in ("in", "inout"))
            newcomm = next((p[0] for p in hp if p[1] == "COMMUNICATOR" and p[2] == "out"), None)
            request = next((p[0] for p in hp if p[1] == "REQUEST" and p[2] == "out"), None)
            pointer = "*" in plist[args.index(comm)]
            cv = "*" + comm if pointer else comm
            # MPI_Comm_create_group is collective over the group only: the parent's other
            # members do not call it, so it is not counted on the parent.
            # A persistent collective's initialization is collective too (MPI 4.0 §6.13),
            # ordered with the others: counted, so that a rank that has not initialized it
            # yet catches up before anyone's start of it is agreed on (its starts are
            # counted on its own counter, src/ckpt.c).
            counted = coll in ("blocking", "constructor", "nonblocking", "persistent") and base != "MPI_Comm_create_group"
            # Every counted call counts as blocking until its lower call returns: counted
            # at its entry, a thread that then parked at the closing gate had not issued
            # the collective it was counted for, and the drain waited for ever for the
            # peers' requests that needed it (tests/mpi/pcoll_order.c: 1 CI run in 3).
            pre_hooks.append("const int mana_cv_ = %s;" % cv)
            if counted:
                pre_hooks.append("const int mana_counted_ = mana_coll_enter(mana_cv_);")
            if base == "MPI_Comm_create_group":
                post.append("if (%s) mana_comm_created_group(mana_cv_, *%s, tag);" % (made(newcomm), newcomm))
            elif coll == "constructor" and newcomm and base in ("MPI_Comm_idup", "MPI_Comm_idup_with_info"):
                # The new communicator cannot be used before the request completes: what
                # it is comes from its parent.
                post.append("if (%s) mana_comm_created_dup(mana_cv_, *%s);" % (made(newcomm), newcomm))
            elif coll == "constructor" and newcomm:
                post.append("if (%s) mana_comm_created(mana_cv_, *%s);" % (made(newcomm), newcomm))
            if coll in ("nonblocking", "persistent", "constructor") and request:
                post.append("if (%s) mana_req_mark_coll(*%s, mana_cv_, %d);"
                            % (made(request), request, int(coll == "persistent")))
            # A persistent collective keeps its arguments and a function that initializes it
            # again in a new lower half (restart); with datatype arrays (alltoallw), copies
            # of the application's handles (as long as the call read them).
            if coll == "persistent":
                arrays = [p[0] for p in hp if p[3] != "-"]
                assert all(p[1] == "DATATYPE" and p[2] == "in" for p in hp if p[3] != "-"), base
                out[header_at:header_at] = persistent_replay(base, plist, args, hp, fid, lower, ret, params)
                pre_hooks.append("const struct mana_pc_%s mana_pc_ = {%s};"
                                 % (base, ", ".join(a for a in args if a != request)))
                if arrays:
                    post.append("if (" + made(request) + ") { const MPI_Datatype *mana_t_[] = {%s}; "
                                "const size_t mana_n_[] = {%s}; mana_req_replayable_types(*%s, "
                                "mana_pc_replay_%s, &mana_pc_, sizeof mana_pc_, mana_t_, mana_n_, %d); }"
                                % (", ".join(arrays), ", ".join("%s_l_n_" % a for a in arrays), request,
                                   base, len(arrays)))
                else:
                    post.append("if (%s) mana_req_replayable(*%s, mana_pc_replay_%s, &mana_pc_, "
                                "sizeof mana_pc_);" % (made(request), request, base))
            if counted:
                post_hooks.append("mana_coll_leave_rc(mana_counted_, mana_cv_, r_);")
        # A communicator's group is taken from the communicator again at restart (MPI hands
        # out the same group each time).
        if base == "MPI_Comm_group":
            pre_hooks.append("const int mana_comm_ = comm;")
            post.append("if (r_ == MPI_SUCCESS) mana_group_of_comm(*group, mana_comm_);")
        # So does MPI_File_get_group (ROMIO's MPI_Comm_group of the file's communicator):
        # taken again from MANA's communicator of the file, as often as the application
        # holds it (mpiio_view.c holds it twice across the checkpoint).
        if base == "MPI_File_get_group":
            pre_hooks.append("const MPI_File mana_fh_ = fh;")
            post.append("if (r_ == MPI_SUCCESS) mana_group_of_comm(*group, mana_file_comm(mana_fh_));")
        # A keyval the application frees may live on in MPI with the attributes that use it.
        if base in ("MPI_Comm_free_keyval", "MPI_Type_free_keyval", "MPI_Win_free_keyval", "MPI_Keyval_free"):
            kv = next(i.split(":")[0] for i in handles.get(base, "").split() if ":KEYVAL:" in i)
            pre_hooks.append("const int mana_kv_ = *%s, mana_kv_used_ = mana_keyval_free_begin(mana_kv_);" % kv)
            post.append("if (r_ == MPI_SUCCESS) mana_keyval_freed(mana_kv_, mana_kv_used_);")
        # User error classes, codes and strings are added again at restart (src/rebuild.c).
        if base == "MPI_Add_error_class":
            post.append("if (r_ == MPI_SUCCESS) mana_error_added(0, 0, *errorclass, NULL);")
        if base == "MPI_Add_error_code":
            post.append("if (r_ == MPI_SUCCESS) mana_error_added(1, errorclass, *errorcode, NULL);")
        if base == "MPI_Add_error_string":
            post.append("if (r_ == MPI_SUCCESS) mana_error_added(2, errorcode, 0, string);")
        # The attached Bsend buffer is attached again at restart (src/rebuild.c).
        if base in ("MPI_Buffer_attach", "MPI_Buffer_attach_c"):
            post.append("if (r_ == MPI_SUCCESS) mana_buffer_attached(buffer, (MPI_Count)size);")
        if base in ("MPI_Buffer_detach", "MPI_Buffer_detach_c"):
            post.append("if (r_ == MPI_SUCCESS) mana_buffer_attached(NULL, 0);")
        if base in ("MPI_Psend_init", "MPI_Precv_init"):
            post.append("if (%s) mana_req_mark_partitioned(*request);" % made("request"))
        # (`win` is the real handle by then: the application's is kept.)
        if base == "MPI_Win_fence":
            pre_hooks.append("const int mana_win_ = win;")
            post.append("if (r_ == MPI_SUCCESS) mana_win_fenced(mana_win_, assert);")
        if base[4:] in WIN_EPOCH:
            pre_hooks.append("const int mana_win_ = win;")
            post.append("if (r_ == MPI_SUCCESS) mana_win_epoch(mana_win_, %d);" % WIN_EPOCH[base[4:]])
        if base[4:] in WIN_LOCKS:
            pre_hooks.append("const int mana_win_ = win;")
            post.append("if (r_ == MPI_SUCCESS) mana_win_locked(mana_win_, %s);" % WIN_LOCKS[base[4:]])
        # Request-based one-sided operations: completed by the snapshot's flush (src/ckpt.c).
        if base[4:].removesuffix("_c") in ("Rput", "Rget", "Raccumulate", "Rget_accumulate"):
            post.append("if (r_ == MPI_SUCCESS) mana_req_mark_rma(*request);")
        if base == "MPI_Win_test":
            pre_hooks.append("const int mana_win_ = win;")
            post.append("if (r_ == MPI_SUCCESS && *flag) mana_win_epoch(mana_win_, -1);")
        if base == "MPI_Comm_create_group":
            pre_hooks.append("mana_cg_enter(comm, group, tag);")
            post_hooks.append("mana_sync_leave();")
        elif base[4:] in WAITS_FOR_PEERS:
            pre_hooks.append("mana_sync_enter();")
            post_hooks.append("mana_sync_leave();")
        # A group given to the application keeps its members as world ranks (restart).
        for item in handles.get(base, "").split():
            pname, kind, direction, length = item.split(":")
            if kind == "GROUP" and direction == "out" and length == "-":
                post.append("if (r_ == MPI_SUCCESS) mana_group_created(*%s);" % pname)
        file_hooks(base, handles.get(base, ""), pre_hooks, post, post_hooks)
        fwd = (fid, lower, ret, params or "void", ", ".join(call))
        if not pro and not post:
            out.append("    MANA_FORWARD(%d, \"%s\", %s, (%s), (%s));" % fwd)
        else:
            # Handles are translated while holding the gate: a thread that parks there
            # may continue in a restarted process whose objects have new real handles.
            out.extend("    " + l for l in pre_hooks)
            out.append("    mana_gate_enter();")
            out.extend("    " + l for l in pro)
            out.append("    %s r_;" % ret)
            out.append("    {")
            out.append("        MANA_CALL_LOWER_INTO(r_, %d, \"%s\", %s, (%s), (%s));" % fwd)
            out.append("    }")
            out.extend("    " + l for l in post)
            out.append("    mana_gate_leave();")
            out.extend("    " + l for l in post_hooks)
            out.append("    return r_;")
        out.append("}")
        for a in aliases:
            out.append("MANA_EXPORT(mana_w_%s, %s)" % (base, a))
        fid += 1
    out.append("")
    out.append("/* Data symbols of the real library (sentinel addresses, Fortran status handles). */")
    for name, size in data:
        if name not in handwritten:
            out.append("MANA_DATA(%s, %d)" % (name, max(size, 1)))
    text = "\n".join(out) + "\n"
    target = os.path.join(ROOT, "generated", "wrappers.c")
    if "--check" in sys.argv:
        with open(target) as f:
            if f.read() != text:
                print("generated/wrappers.c is stale: run python3 mpi-wrappers/gen/generate.py", file=sys.stderr)
                sys.exit(1)
        return
    with open(target, "w") as f:
        f.write(text)
    print("%d forwarding wrappers, %d stubs, %d data symbols" % (
        fid, sum(1 for l in out if l.startswith("MANA_EXPORT(mana_u_")), len(data)), file=sys.stderr)


if __name__ == "__main__":
    main()
