//! What correct outcomes look like.
//!
//! A checkpointed job's processes — the launched one until it was killed, then each
//! restarted one — print pieces of the uninterrupted run's stdout. Lines printed after a
//! checkpoint and before the kill are printed again by the restored process (it resumes
//! from the checkpoint), so pieces may overlap, but put together they must be exactly the
//! uninterrupted run's output: [`assert_continues`]. The test programs make every stdout
//! line unique and end with a hash over all their state, so this cannot pass by accident.

use crate::process::Output;

fn lines(bytes: &[u8]) -> Vec<(usize, &[u8])> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'\n' {
            out.push((start, &bytes[start..=i]));
            start = i + 1;
        }
    }
    if start < bytes.len() {
        out.push((start, &bytes[start..]));
    }
    out
}

fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts that `pieces` (stdout of the launched process until it was killed, then of
/// each restarted process in order, the last one run to completion) together are the
/// uninterrupted run's stdout `native`, byte for byte:
/// * the first piece is a prefix of `native`;
/// * every later piece is a contiguous slice of `native` that starts after the start of
///   the piece before it (a restored process continues, it does not start over) and no
///   later than that piece's end (nothing is lost between them);
/// * the last piece ends where `native` ends.
pub fn assert_continues(native: &[u8], pieces: &[Vec<u8>]) {
    let native_lines = lines(native);
    assert!(
        !native_lines.is_empty(),
        "the uninterrupted run printed nothing"
    );
    for (i, (_, l)) in native_lines.iter().enumerate() {
        assert!(
            native_lines[..i].iter().all(|(_, m)| m != l),
            "test program bug: stdout line {:?} is not unique",
            show(l)
        );
    }
    let context = |k: usize| {
        let mut s = format!("--- uninterrupted run ---\n{}", show(native));
        for (i, p) in pieces.iter().enumerate() {
            s += &format!(
                "--- piece {i} ({}) ---\n{}",
                if i == 0 { "launched" } else { "restarted" },
                show(p)
            );
        }
        format!("piece {k}:\n{s}--- end ---")
    };
    assert!(!pieces.is_empty(), "no output pieces");
    assert!(
        native.starts_with(&pieces[0]),
        "the launched process's stdout is not a prefix of the uninterrupted run's: {}",
        context(0)
    );
    let (mut prev_start, mut prev_end) = (0usize, pieces[0].len());
    for (k, piece) in pieces.iter().enumerate().skip(1) {
        let Some(&(_, first)) = lines(piece).first() else {
            // A restored process checkpointed and killed again before its next line (a
            // chain's random instant can fall tens of milliseconds after a restart; seen
            // in CI under load): it continued with nothing; the next one must go on from
            // where the one before it was. The last process must print the run's end.
            if k + 1 < pieces.len() {
                continue;
            }
            panic!("restarted process printed nothing: {}", context(k));
        };
        let Some(&(start, _)) = native_lines.iter().find(|(_, l)| *l == first) else {
            panic!(
                "restarted process printed {:?}, which the uninterrupted run never printed: {}",
                show(first),
                context(k)
            );
        };
        assert!(
            native[start..].starts_with(piece),
            "restarted process's stdout differs from the uninterrupted run's from {:?} on: {}",
            show(first),
            context(k)
        );
        assert!(
            start > prev_start,
            "restarted process started over instead of continuing: {}",
            context(k)
        );
        assert!(
            start <= prev_end,
            "output between the previous process's last line and this one's first is lost: {}",
            context(k)
        );
        prev_start = start;
        prev_end = start + piece.len();
    }
    assert_eq!(
        prev_end,
        native.len(),
        "the last process did not print the run's end: {}",
        context(pieces.len() - 1)
    );
}

fn banners(stderr: &[u8]) -> Vec<String> {
    show(stderr)
        .lines()
        .filter(|l| l.starts_with("BANNER "))
        .map(str::to_string)
        .collect()
}

/// The launched program started exactly once, in the same process `mana_launch` was
/// (same pid).
pub fn assert_banner_once(out: &Output) {
    let b = banners(&out.stderr);
    assert_eq!(
        b,
        vec![format!("BANNER pid={}", out.pid)],
        "the program must start exactly once, as the process mana_launch was: {}",
        out.describe()
    );
}

/// A restored process continues: it never starts the program again.
pub fn assert_no_banner(out: &Output) {
    assert!(
        banners(&out.stderr).is_empty(),
        "the restored process started the program again (start banner printed): {}",
        out.describe()
    );
}

/// Asserts a clean refusal: exit with a non-zero code (not a crash by signal) and
/// exactly one non-empty line on stderr, which is returned.
pub fn refusal_line(out: &Output, what: &str) -> String {
    assert!(
        out.status.code().is_some_and(|c| c != 0),
        "{what}: expected a non-zero exit code, got {}: {}",
        out.status,
        out.describe()
    );
    let text = out.stderr_text();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "{what}: expected exactly one error line on stderr: {}",
        out.describe()
    );
    lines[0].to_string()
}

/// Asserts that `line` contains at least one of `words` (ASCII case-insensitive).
pub fn assert_mentions_any(line: &str, words: &[&str], what: &str) {
    let lower = line.to_ascii_lowercase();
    assert!(
        words
            .iter()
            .any(|w| lower.contains(&w.to_ascii_lowercase())),
        "{what}: the error line should mention one of {words:?}: {line:?}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const NATIVE: &[u8] = b"ready\nstep 10\nstep 20\nstep 30\nfinal 42\n";

    fn ok(pieces: &[&[u8]]) -> bool {
        let pieces: Vec<Vec<u8>> = pieces.iter().map(|p| p.to_vec()).collect();
        std::panic::catch_unwind(|| assert_continues(NATIVE, &pieces)).is_ok()
    }

    #[test]
    fn pieces_must_join_into_the_native_output() {
        assert!(ok(&[
            b"ready\nstep 10\n",
            b"step 10\nstep 20\nstep 30\nfinal 42\n"
        ]));
        assert!(ok(&[
            b"ready\n",
            b"step 10\nstep 20\n",
            b"step 20\nstep 30\nfinal 42\n"
        ]));
        assert!(ok(&[NATIVE, b"step 30\nfinal 42\n"]));
        // started over
        assert!(!ok(&[b"ready\n", NATIVE]));
        // lost a line
        assert!(!ok(&[b"ready\n", b"step 20\nstep 30\nfinal 42\n"]));
        // wrong final state
        assert!(!ok(&[b"ready\nstep 10\n", b"step 20\nstep 30\nfinal 43\n"]));
        // never finished
        assert!(!ok(&[b"ready\n", b"step 10\n"]));
        // restarted process printed nothing
        assert!(!ok(&[NATIVE, b""]));
    }
}
