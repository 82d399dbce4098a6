//! Medians and paired ratios with a distribution-free interval, for the benchmarks that
//! time MANA against native runs in turn.

use std::time::Duration;

pub fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The median of the pair-by-pair ratios (MANA run / the native run just before it) and a
/// distribution-free 95 % confidence interval for it: the order statistics k and n+1-k of
/// the sorted ratios, k the largest with P(Binomial(n, 1/2) < k) <= 2.5 %. Pairs cancel
/// the slow drift of a shared machine that medians of the two columns do not; the
/// interval says whether the run can decide the goal at all. `None` for the interval when
/// there are too few pairs (fewer than 6) for one.
pub fn paired_ratio(native: &[Duration], mana: &[Duration]) -> (f64, Option<(f64, f64)>) {
    let mut r: Vec<f64> = native
        .iter()
        .zip(mana)
        .map(|(n, m)| m.as_secs_f64() / n.as_secs_f64())
        .collect();
    r.sort_by(f64::total_cmp);
    let n = r.len();
    let med = if n % 2 == 1 {
        r[n / 2]
    } else {
        (r[n / 2 - 1] + r[n / 2]) / 2.0
    };
    // P(B < k) for B ~ Binomial(n, 1/2), accumulated term by term.
    let (mut k, mut below, mut term) = (0usize, 0.0f64, 0.5f64.powi(n as i32));
    while k < n / 2 && below + term <= 0.025 {
        below += term;
        term = term * (n - k) as f64 / (k + 1) as f64;
        k += 1;
    }
    let ci = (k >= 1).then(|| (r[k - 1], r[n - k]));
    (med, ci)
}

/// What a run says of the goal (MANA's time at most `goal` times native's).
pub fn verdict(ci: Option<(f64, f64)>, goal: f64) -> String {
    match ci {
        Some((_, hi)) if hi <= goal => format!("met: the whole interval is at or below {goal}x"),
        Some((lo, _)) if lo > goal => format!("MISSED: the whole interval is above {goal}x"),
        Some(_) => {
            format!("not decided: the interval contains {goal}x (more runs, a quieter machine)")
        }
        None => "not decided: too few pairs for an interval (--runs 6 or more)".into(),
    }
}
