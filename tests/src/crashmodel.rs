//! A crash-consistency model of what a checkpoint writes (issue 10, item 6).
//!
//! The writers' file-system calls are recorded by `strace -f -y -xx` (an outside observer:
//! the runtime writes images with raw system calls, which an `LD_PRELOAD` shim would not
//! see). [`Trace::parse`] keeps the calls under one checkpoint directory, in the order they
//! completed; [`Model`] replays them as a small file system of objects (directories and
//! files), each with its own log of changes and of `fsync`s; [`Model::crash_state`] gives
//! what a disk could hold after a crash at any point of the trace:
//!
//! * what an object had when it was last synced (by `fsync`/`fdatasync` of that object)
//!   survives;
//! * of its later changes — file writes page by page (4 KiB), directory entries (create,
//!   rename, unlink) one by one — any may survive or not, in any combination ([`Keep`]:
//!   none, all, each at random, all but one directory change, only one). This is harsher
//!   than ext4 or XFS, whose journals keep a directory's changes in order: it is what
//!   POSIX promises, no more;
//! * syncing a file makes its data durable, not its name (the name is the directory's).
//!
//! [`Keep::Everything`] is a kill of every process at that point with no power loss;
//! [`Keep::Nothing`] a power loss that drops everything unsynced. [`Model::materialize`]
//! writes such a state
//! out as a real directory tree, which `mana_inspect` and `mana_restart` then judge.

use crate::Rng;
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The system calls the trace must record (`strace -e trace=…`): every call that can
/// change a file or a directory entry, and the positioning of a descriptor.
pub const TRACED_CALLS: &str = "open,openat,creat,write,pwrite64,writev,pwritev,pwritev2,\
lseek,fsync,fdatasync,sync_file_range,rename,renameat,renameat2,mkdir,mkdirat,unlink,unlinkat,\
rmdir,ftruncate,truncate,fallocate,link,linkat,symlink,symlinkat,copy_file_range,sendfile";

/// Bytes of each written buffer `strace` prints (`-s`): small writes (MANIFEST, LATEST,
/// leases) are recorded whole; the content of bigger ones is read back from the files.
pub const CAPTURED: usize = 4096;

/// One file-system change under the directory, paths relative to it ("" is the root).
#[derive(Debug, Clone)]
pub enum Call {
    Mkdir(String),
    Create(String),
    Write {
        file: String,
        off: Option<u64>,
        len: u64,
        data: Option<Vec<u8>>,
    },
    Seek(String, u64),
    Sync(String),
    Rename(String, String),
    Unlink(String),
    Truncate(String, u64),
}

/// The calls that changed something under `root`, in the order they completed.
pub struct Trace {
    pub calls: Vec<Call>,
}

impl Trace {
    /// Reads `strace -f -y -xx -s CAPTURED` output. A call under `root` the model does not
    /// know (`writev`, `fallocate`, links…) is a panic: the model would be wrong, not lenient.
    pub fn parse(text: &str, root: &Path) -> Trace {
        let root = root.to_str().expect("a UTF-8 root").trim_end_matches('/');
        let mut pending: HashMap<&str, String> = HashMap::new();
        let mut calls = Vec::new();
        for line in text.lines() {
            let Some((pid, rest)) = line.split_once(' ') else {
                continue;
            };
            let rest = rest.trim_start();
            if rest.starts_with("---") || rest.starts_with("+++") {
                continue;
            }
            let whole = if let Some(head) = rest.strip_suffix(" <unfinished ...>") {
                pending.insert(pid, head.to_string());
                continue;
            } else if rest.starts_with("<... ") {
                let tail = rest.split_once("resumed>").map_or("", |(_, t)| t);
                match pending.remove(pid) {
                    Some(head) => format!("{head}{tail}"),
                    None => continue,
                }
            } else {
                rest.to_string()
            };
            if let Some(call) = parse_call(&whole, root) {
                calls.push(call);
            }
        }
        Trace { calls }
    }
}

/// An argument of a traced call, decoded from `-y -xx` notation.
enum Arg {
    Fd(String),
    Str(Vec<u8>),
    Other(String),
}

fn unhex(s: &str) -> Vec<u8> {
    s.split("\\x")
        .filter(|p| !p.is_empty())
        .map(|p| u8::from_str_radix(p, 16).unwrap_or_else(|_| panic!("bad strace hex {p:?}")))
        .collect()
}

fn decode(arg: &str) -> Arg {
    let arg = arg.trim();
    if let Some(body) = arg.strip_prefix('"') {
        let body = body.trim_end_matches("...").trim_end_matches('"');
        return Arg::Str(unhex(body));
    }
    if let Some((n, path)) = arg.split_once('<') {
        if n.chars().all(|c| c.is_ascii_digit()) && path.ends_with('>') {
            let bytes = unhex(&path[..path.len() - 1]);
            return Arg::Fd(String::from_utf8_lossy(&bytes).into_owned());
        }
    }
    Arg::Other(arg.to_string())
}

/// `path` relative to `root`, if it is `root` or under it.
fn under(path: &str, root: &str) -> Option<String> {
    if path == root {
        return Some(String::new());
    }
    path.strip_prefix(root)
        .and_then(|p| p.strip_prefix('/'))
        .map(str::to_string)
}

fn join(dir: &str, name: &str) -> String {
    if name.starts_with('/') {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

fn parse_call(whole: &str, root: &str) -> Option<Call> {
    let (left, ret) = whole.rsplit_once(" = ")?;
    let ret = ret.trim();
    if ret.starts_with('-') || ret.starts_with('?') {
        return None; // failed or never returned: changed nothing
    }
    let left = left.trim_end();
    let open = left.find('(')?;
    let name = &left[..open];
    let inner = left[open + 1..].strip_suffix(')')?;
    let args: Vec<Arg> = inner.split(", ").map(decode).collect();
    let fd = |i: usize| match args.get(i) {
        Some(Arg::Fd(p)) => Some(p.clone()),
        _ => None,
    };
    let string = |i: usize| match args.get(i) {
        Some(Arg::Str(b)) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    };
    // The directory a *at call's name is relative to (an absolute name ignores it).
    let at = |i: usize, j: usize| -> Option<String> {
        let name = string(j)?;
        if name.starts_with('/') {
            return Some(name);
        }
        Some(join(&fd(i)?, &name))
    };
    let rel = |p: Option<String>| p.and_then(|p| under(&p, root));
    let returned = || match decode(ret.split(' ').next().unwrap_or("")) {
        Arg::Fd(p) => Some(p),
        _ => None,
    };
    let num = |i: usize| match args.get(i) {
        Some(Arg::Other(s)) => s.parse::<u64>().ok(),
        _ => None,
    };
    Some(match name {
        "open" | "openat" | "creat" => {
            let flags = match (name, args.get(if name == "openat" { 2 } else { 1 })) {
                ("creat", _) => "O_CREAT|O_TRUNC".to_string(),
                (_, Some(Arg::Other(f))) => f.clone(),
                _ => String::new(),
            };
            let path = rel(returned())?;
            assert!(
                !flags.contains("O_TRUNC"),
                "the model does not know O_TRUNC (opening {path})"
            );
            if !flags.contains("O_CREAT") {
                return None;
            }
            Call::Create(path)
        }
        "write" | "pwrite64" => {
            let file = rel(fd(0))?;
            let len: u64 = ret.parse().ok()?;
            let data = match &args[1] {
                Arg::Str(b) if b.len() as u64 >= len => Some(b[..len as usize].to_vec()),
                _ => None,
            };
            let off = if name == "pwrite64" { num(3) } else { None };
            Call::Write {
                file,
                off,
                len,
                data,
            }
        }
        "lseek" => {
            let file = rel(fd(0))?;
            Call::Seek(file, ret.parse().ok()?)
        }
        "fsync" | "fdatasync" => Call::Sync(rel(fd(0))?),
        "mkdir" => Call::Mkdir(rel(string(0))?),
        "mkdirat" => Call::Mkdir(rel(at(0, 1))?),
        "rename" => Call::Rename(rel(string(0))?, rel(string(1))?),
        "renameat" | "renameat2" => Call::Rename(rel(at(0, 1))?, rel(at(2, 3))?),
        "unlink" | "rmdir" => Call::Unlink(rel(string(0))?),
        "unlinkat" => Call::Unlink(rel(at(0, 1))?),
        "ftruncate" => Call::Truncate(rel(fd(0))?, num(1)?),
        "truncate" => Call::Truncate(rel(string(0))?, num(1)?),
        other => {
            let touches = args.iter().any(|a| match a {
                Arg::Fd(p) => under(p, root).is_some(),
                Arg::Str(b) => under(&String::from_utf8_lossy(b), root).is_some(),
                Arg::Other(_) => false,
            });
            assert!(
                !touches,
                "the model does not know {other}, which touched the directory: {whole}"
            );
            return None;
        }
    })
}

type ObjId = usize;

/// A change to one object, with its place in the whole trace.
#[derive(Debug, Clone)]
enum Change {
    Link(String, ObjId),
    Unlink(String),
    Write { off: u64, len: u64, src: Src },
    Truncate(u64),
    Sync,
}

/// Where a write's bytes are: recorded in the trace, or in the file's final content.
#[derive(Debug, Clone)]
enum Src {
    Data(std::sync::Arc<Vec<u8>>, u64),
    Final(u64),
}

struct Obj {
    dir: bool,
    /// Its path when it was last linked (where its final content is).
    path: String,
    pos: u64,
    log: Vec<(usize, Change)>,
}

/// Which changes made after an object's last sync survive a crash.
#[derive(Debug, Clone, Copy)]
pub enum Keep {
    /// None: a power loss that drops everything unsynced.
    Nothing,
    /// All: every process killed at that point, the disk intact.
    Everything,
    /// Each change (each page of a write) with this chance.
    Random(f64),
    /// Every change but the k-th unsynced directory change.
    AllBut(usize),
    /// Only the k-th unsynced directory change (no unsynced file data).
    Only(usize),
}

/// What a crash left: each directory's entries and each file's surviving pieces.
#[derive(Default)]
pub struct CrashState {
    dirs: HashMap<ObjId, BTreeMap<String, ObjId>>,
    files: HashMap<ObjId, FileState>,
}

impl CrashState {
    /// Equal for equal states (to judge each distinct state once).
    pub fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let mut dirs: Vec<_> = self.dirs.iter().collect();
        dirs.sort_by_key(|(id, _)| **id);
        for (id, entries) in dirs {
            (id, entries).hash(&mut h);
        }
        let mut files: Vec<_> = self.files.iter().collect();
        files.sort_by_key(|(id, _)| **id);
        for (id, f) in files {
            (id, f.size).hash(&mut h);
            for (off, len, _) in &f.pieces {
                (off, len).hash(&mut h);
            }
        }
        h.finish()
    }
}

/// What a crash may leave of one file: its size and the written pieces that survived.
#[derive(Default)]
struct FileState {
    size: u64,
    pieces: Vec<(u64, u64, Src)>,
}

/// The trace replayed as objects with logs; see the module comment.
pub struct Model {
    objs: Vec<Obj>,
    /// How many changes the trace holds (a crash point is in `0..=len`).
    pub len: usize,
    /// (place, generation) where a sync of the root made `LATEST` name a generation: from
    /// there on, `mana_status` may have reported the generation committed.
    pub committed: Vec<(usize, String)>,
    /// Named stretches of the trace (for choosing crash points): per generation, its images
    /// being written, its MANIFEST, and the `LATEST` rename window.
    pub phases: Vec<(String, usize, usize)>,
}

impl Model {
    pub fn replay(trace: &Trace) -> Model {
        let mut objs = vec![Obj {
            dir: true,
            path: String::new(),
            pos: 0,
            log: Vec::new(),
        }];
        let mut names: HashMap<String, ObjId> = HashMap::from([(String::new(), 0)]);
        let mut committed = Vec::new();
        let mut open_phase: HashMap<String, usize> = HashMap::new();
        let mut renamed: std::collections::HashSet<String> = Default::default();
        let mut phases = Vec::new();
        let parent = |p: &str| -> (String, String) {
            match p.rsplit_once('/') {
                Some((d, n)) => (d.to_string(), n.to_string()),
                None => (String::new(), p.to_string()),
            }
        };
        let lookup = |names: &HashMap<String, ObjId>, p: &str| -> ObjId {
            *names
                .get(p)
                .unwrap_or_else(|| panic!("the trace uses {p:?}, which the model never saw made"))
        };
        for (seq, call) in trace.calls.iter().enumerate() {
            match call {
                Call::Mkdir(p) | Call::Create(p) => {
                    if p.is_empty() || names.contains_key(p) {
                        continue; // the root itself, or an existing file opened O_CREAT
                    }
                    let (d, n) = parent(p);
                    let id = objs.len();
                    objs.push(Obj {
                        dir: matches!(call, Call::Mkdir(_)),
                        path: p.clone(),
                        pos: 0,
                        log: Vec::new(),
                    });
                    let dir = lookup(&names, &d);
                    objs[dir].log.push((seq, Change::Link(n.clone(), id)));
                    names.insert(p.clone(), id);
                    if n.starts_with("rank-") {
                        open_phase.entry(format!("{d} images")).or_insert(seq);
                    } else if n.starts_with(".MANIFEST.tmp") {
                        open_phase.insert(format!("{d} MANIFEST"), seq);
                    } else if n.starts_with(".LATEST.tmp") {
                        open_phase.insert("LATEST rename".into(), seq);
                    }
                }
                Call::Write {
                    file,
                    off,
                    len,
                    data,
                } => {
                    let id = lookup(&names, file);
                    let o = &mut objs[id];
                    let at = off.unwrap_or(o.pos);
                    if off.is_none() {
                        o.pos = at + len;
                    }
                    let src = match data {
                        Some(d) => Src::Data(std::sync::Arc::new(d.clone()), 0),
                        None => Src::Final(at),
                    };
                    o.log.push((
                        seq,
                        Change::Write {
                            off: at,
                            len: *len,
                            src,
                        },
                    ));
                }
                Call::Seek(file, to) => objs[lookup(&names, file)].pos = *to,
                Call::Truncate(file, to) => {
                    let id = lookup(&names, file);
                    objs[id].log.push((seq, Change::Truncate(*to)));
                }
                Call::Sync(p) => {
                    let id = lookup(&names, p);
                    objs[id].log.push((seq, Change::Sync));
                    // The end of a phase: the last image synced, the generation's directory
                    // synced after its MANIFEST, the root synced after LATEST.
                    let key = if p.is_empty() {
                        "LATEST rename".to_string()
                    } else if objs[id].dir {
                        format!("{p} MANIFEST")
                    } else {
                        format!("{} images", parent(p).0)
                    };
                    // A MANIFEST's or LATEST's stretch ends at the sync after its rename.
                    let ends = key.ends_with("images") || renamed.contains(&key);
                    if let (Some(&start), true) = (open_phase.get(&key), ends) {
                        phases.retain(|(k, _, _)| k != &key || !key.ends_with("images"));
                        phases.push((key.clone(), start, seq + 1));
                        if !key.ends_with("images") {
                            open_phase.remove(&key);
                            renamed.remove(&key);
                        }
                    }
                    if p.is_empty() {
                        if let Some(&latest) = names.get("LATEST") {
                            let text = final_text(&objs[latest]);
                            committed.push((seq + 1, text.trim().to_string()));
                        }
                    }
                }
                Call::Rename(from, to) => {
                    let (fd, fname) = parent(from);
                    let (td, tname) = parent(to);
                    let id = lookup(&names, from);
                    let (fdir, tdir) = (lookup(&names, &fd), lookup(&names, &td));
                    objs[fdir].log.push((seq, Change::Unlink(fname)));
                    objs[tdir].log.push((seq, Change::Link(tname.clone(), id)));
                    names.remove(from);
                    names.insert(to.clone(), id);
                    objs[id].path = to.clone();
                    if to == "LATEST" {
                        renamed.insert("LATEST rename".to_string());
                    } else if tname == "MANIFEST" {
                        renamed.insert(format!("{td} MANIFEST"));
                    }
                    assert!(
                        !objs[id].dir,
                        "the model does not rename directories ({from})"
                    );
                }
                Call::Unlink(p) => {
                    let (d, n) = parent(p);
                    let dir = lookup(&names, &d);
                    objs[dir].log.push((seq, Change::Unlink(n)));
                    names.remove(p);
                }
            }
        }
        Model {
            objs,
            len: trace.calls.len(),
            committed,
            phases,
        }
    }

    /// The generation `mana_status` may have reported committed before a crash at `crash`.
    pub fn committed_before(&self, crash: usize) -> Option<&str> {
        self.committed
            .iter()
            .rev()
            .find(|(at, _)| *at <= crash)
            .map(|(_, g)| g.as_str())
    }

    /// How many directory changes (entries made, renamed, removed) are not yet synced at
    /// `crash`: what [`Keep::AllBut`] and [`Keep::Only`] count.
    pub fn unsynced_dir_changes(&self, crash: usize) -> usize {
        self.objs
            .iter()
            .filter(|o| o.dir)
            .map(|o| {
                let past = o.log.iter().filter(|(s, _)| *s < crash).count();
                let synced = o.log[..past]
                    .iter()
                    .rposition(|(_, c)| matches!(c, Change::Sync))
                    .map_or(0, |i| i + 1);
                past - synced
            })
            .sum()
    }

    /// What a crash at `crash` (the first `crash` changes happened) may leave: synced state
    /// kept, later changes as `keep` says.
    pub fn crash_state(&self, crash: usize, keep: Keep, rng: &mut Rng) -> CrashState {
        // The unsynced directory changes, numbered in trace order (for AllBut / Only).
        let mut numbered: Vec<(usize, ObjId, usize)> = Vec::new();
        let mut synced_upto = vec![0; self.objs.len()];
        for (id, o) in self.objs.iter().enumerate() {
            let past = o.log.iter().filter(|(s, _)| *s < crash).count();
            synced_upto[id] = o.log[..past]
                .iter()
                .rposition(|(_, c)| matches!(c, Change::Sync))
                .map_or(0, |i| i + 1);
            if o.dir {
                for i in synced_upto[id]..past {
                    numbered.push((o.log[i].0, id, i));
                }
            }
        }
        numbered.sort();
        let nth = |id: ObjId, i: usize| numbered.iter().position(|&(_, o, j)| o == id && j == i);
        let mut state = CrashState::default();
        for (id, o) in self.objs.iter().enumerate() {
            let past = o.log.iter().filter(|(s, _)| *s < crash).count();
            let mut kept: Vec<Change> = Vec::new();
            for (i, (_, c)) in o.log[..past].iter().enumerate() {
                let sure = i < synced_upto[id];
                let decide = |rng: &mut Rng| match keep {
                    Keep::Nothing => false,
                    Keep::Everything => true,
                    Keep::Random(p) => chance(rng, p),
                    Keep::AllBut(k) => !o.dir || nth(id, i) != Some(k),
                    Keep::Only(k) => o.dir && nth(id, i) == Some(k),
                };
                match c {
                    Change::Sync => {}
                    Change::Write { off, len, src } if !sure => {
                        // Page by page: a crash can keep any pages of a write.
                        let mut p = *off;
                        while p < off + len {
                            let end = ((p / 4096 + 1) * 4096).min(off + len);
                            if decide(rng) {
                                kept.push(Change::Write {
                                    off: p,
                                    len: end - p,
                                    src: shift(src, p - off),
                                });
                            }
                            p = end;
                        }
                    }
                    c if sure || decide(rng) => kept.push(c.clone()),
                    _ => {}
                }
            }
            if o.dir {
                let mut entries = BTreeMap::new();
                for c in kept {
                    match c {
                        Change::Link(n, obj) => {
                            entries.insert(n, obj);
                        }
                        Change::Unlink(n) => {
                            entries.remove(&n);
                        }
                        _ => {}
                    }
                }
                state.dirs.insert(id, entries);
            } else {
                let mut st = FileState::default();
                for c in kept {
                    match c {
                        Change::Write { off, len, src } => {
                            st.size = st.size.max(off + len);
                            st.pieces.push((off, len, src));
                        }
                        Change::Truncate(to) => {
                            st.size = to;
                            st.pieces.retain(|(o, _, _)| *o < to);
                        }
                        _ => {}
                    }
                }
                state.files.insert(id, st);
            }
        }
        state
    }

    /// Writes `state` out as a directory tree at `out` (created, mode 0700).
    /// `final_content(path)` gives a file's bytes at the end of the run, for writes the
    /// trace did not record whole.
    pub fn materialize(
        &self,
        state: &CrashState,
        out: &Path,
        final_content: &mut dyn FnMut(&str) -> Option<std::sync::Arc<Vec<u8>>>,
    ) {
        let (dirs, files) = (&state.dirs, &state.files);
        let mut seen = HashMap::new();
        self.write_dir(0, out, dirs, files, &mut seen, final_content);
    }

    fn write_dir(
        &self,
        id: ObjId,
        at: &Path,
        dirs: &HashMap<ObjId, BTreeMap<String, ObjId>>,
        files: &HashMap<ObjId, FileState>,
        seen: &mut HashMap<ObjId, PathBuf>,
        final_content: &mut dyn FnMut(&str) -> Option<std::sync::Arc<Vec<u8>>>,
    ) {
        fs::DirBuilder::new().mode(0o700).create(at).unwrap();
        for (name, &obj) in &dirs[&id] {
            let path = at.join(name);
            if let Some(first) = seen.get(&obj) {
                // One object under two names (a rename whose unlink of the old name was
                // lost): a hard link, as on disk; a directory only once.
                if !self.objs[obj].dir {
                    fs::hard_link(first, &path).unwrap();
                }
                continue;
            }
            seen.insert(obj, path.clone());
            if self.objs[obj].dir {
                self.write_dir(obj, &path, dirs, files, seen, final_content);
                continue;
            }
            let st = &files[&obj];
            let mut bytes = vec![0u8; st.size as usize];
            for (off, len, src) in &st.pieces {
                let end = (off + len).min(st.size);
                if end <= *off {
                    continue;
                }
                let n = (end - off) as usize;
                let piece = &mut bytes[*off as usize..end as usize];
                match src {
                    Src::Data(d, from) => piece.copy_from_slice(&d[*from as usize..][..n]),
                    Src::Final(from) => {
                        let all = final_content(&self.objs[obj].path).unwrap_or_else(|| {
                            panic!(
                                "the model needs the final content of {}, which is gone",
                                self.objs[obj].path
                            )
                        });
                        piece.copy_from_slice(&all[*from as usize..][..n]);
                    }
                }
            }
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .unwrap();
            f.write_all(&bytes).unwrap();
        }
    }
}

fn chance(rng: &mut Rng, keep: f64) -> bool {
    keep >= 1.0 || (keep > 0.0 && (rng.next_u64() % 1_000_000) as f64 / 1e6 < keep)
}

fn shift(src: &Src, by: u64) -> Src {
    match src {
        Src::Data(d, from) => Src::Data(d.clone(), from + by),
        Src::Final(from) => Src::Final(from + by),
    }
}

/// The text a small file (LATEST) was last given, from its recorded writes.
fn final_text(o: &Obj) -> String {
    let mut bytes = Vec::new();
    for (_, c) in &o.log {
        if let Change::Write {
            off,
            src: Src::Data(d, from),
            len,
        } = c
        {
            let end = (off + len) as usize;
            if bytes.len() < end {
                bytes.resize(end, 0);
            }
            bytes[*off as usize..end].copy_from_slice(&d[*from as usize..][..*len as usize]);
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A directory tree's file content by relative path, looked up in `stores` in turn.
pub fn content_from(stores: Vec<PathBuf>) -> impl FnMut(&str) -> Option<std::sync::Arc<Vec<u8>>> {
    let mut cache: HashMap<String, std::sync::Arc<Vec<u8>>> = HashMap::new();
    move |rel: &str| {
        if let Some(c) = cache.get(rel) {
            return Some(c.clone());
        }
        let bytes = stores.iter().find_map(|s| fs::read(s.join(rel)).ok())?;
        let c = std::sync::Arc::new(bytes);
        cache.insert(rel.to_string(), c.clone());
        Some(c)
    }
}
